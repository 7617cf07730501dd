"""Installs that are the same on every machine (issue 21): requirements.lock pins every package pyproject.toml asks
for (with its extras and everything they pull in) to one version and file hash, for Python 3.11 and the CPU torch;
`make setup` installed exactly that here; pyproject keeps ranges whose lower bounds `make test-lowest` tries."""
import importlib.metadata
import os
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from lock_diff import installed, locked  # noqa: E402


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]


def test_the_lock_pins_every_requirement_with_hashes_for_python_311_and_cpu_torch():
    text = (ROOT / "requirements.lock").read_text()
    pins = locked(ROOT / "requirements.lock")
    for req in requirements():
        name = norm(re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0])
        assert name in pins, f"{req} is not in requirements.lock: make lock"
    assert pins["torch"] == "2.13.0+cpu"
    assert "--python-version 3.11" in text
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)  # one block per pinned package: its line and its hashes
    unhashed = [b.split()[0] for b in blocks if "==" in b.split("\n")[0] and "--hash=sha256:" not in b]
    assert unhashed == [], unhashed
    assert len(pins) > 100  # every transitive dependency, not only the direct ones


def test_the_ranges_admit_the_locked_versions():
    from packaging.requirements import Requirement
    pins = locked(ROOT / "requirements.lock")
    for req in map(Requirement, requirements()):
        assert req.specifier.contains(pins[norm(req.name)], prereleases=True), (str(req), pins[norm(req.name)])


@pytest.mark.skipif(os.environ.get("LORABENCH_UNLOCKED") == "1", reason="make test-latest / test-lowest: not the lock")
def test_this_environment_holds_exactly_the_lock():
    pins, here = locked(ROOT / "requirements.lock"), installed()
    differ = {n: (v, here.get(n)) for n, v in pins.items() if here.get(n) != v}
    assert differ == {}, f"installed versions differ from requirements.lock (make setup rebuilds .venv): {differ}"
    assert importlib.metadata.version("torch") == "2.13.0+cpu"
