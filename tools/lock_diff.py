"""Print how the packages installed in this Python differ from a lock file (requirements.lock): the drift that
`make test-latest` / `make test-lowest` test. Usage: python tools/lock_diff.py requirements.lock"""
from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path


def locked(path: Path) -> dict[str, str]:
    """{normalised name: version} of every `name==version` line of a pip requirements lock."""
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if m:
            pins[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return pins


def installed() -> dict[str, str]:
    return {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in importlib.metadata.distributions()}


def main(lock: str) -> int:
    pins, here = locked(Path(lock)), installed()
    changed = sorted(n for n in pins if n in here and here[n] != pins[n])
    extra = sorted(n for n in here if n not in pins and n != "lorabench")
    missing = sorted(n for n in pins if n not in here)
    print(f"against {lock}: {len(changed)} other versions, {len(extra)} not in the lock, {len(missing)} missing")
    for n in changed:
        print(f"  {n}: {pins[n]} (lock) -> {here[n]}")
    for n in extra:
        print(f"  {n}: {here[n]} (not in the lock)")
    for n in missing:
        print(f"  {n}: {pins[n]} (lock; not installed)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "requirements.lock"))
