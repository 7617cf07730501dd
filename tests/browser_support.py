"""Headless Chromium for the browser tests (the report, the serve page): Debian's package, driven by Playwright;
installed here where it is missing (as root, with apt-get: ~35 s on the 2-core VM). The `chromium` fixture (in
conftest.py) skips, saying why, only when that cannot be done. Playwright's own browser download is never used."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT_COPY = "/tmp/lorabench-report-screenshot.png"  # a stable place for a person to look at
# Chromium as root, in a sandbox with no outside network: no sandbox, no GPU, nothing that phones home
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def _install_chromium() -> str | None:
    """Install Debian's chromium package; return why it could not be, or None when it is there."""
    if os.path.exists(CHROMIUM):
        return None
    if os.geteuid() != 0:
        return f"{CHROMIUM} is missing and installing it needs root (apt-get install chromium)"
    if shutil.which("apt-get") is None:
        return f"{CHROMIUM} is missing and there is no apt-get to install it with"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lock = ["-o", "DPkg::Lock::Timeout=300"]  # another install (CI's PostgreSQL, say) may hold the lock
    try:
        for cmd in (["apt-get", *lock, "update", "-q"],
                    ["apt-get", *lock, "install", "-y", "-q", "--no-install-recommends", "chromium"]):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
                return f"`{' '.join(cmd)}` failed (exit {done.returncode}): {tail[0]}"
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"installing chromium failed: {e}"
    return None if os.path.exists(CHROMIUM) else f"apt-get installed chromium but {CHROMIUM} is still missing"


def chromium_or_skip():
    """Playwright's sync API and the path of Debian's Chromium, installed here if missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: `make setup` installs it (pip install -e '.[browser]')")
    why = _install_chromium()
    if why:
        pytest.skip(f"no headless Chromium: {why}")
    return sync_playwright, CHROMIUM


