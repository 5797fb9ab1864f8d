"""A real Chromium for the browser tests (DESIGN.md §8): Playwright cannot download its own
here, so the tests drive a system one through `executable_path`, and install Debian's
`chromium` package when they run as root and find none."""

from __future__ import annotations

import os
import shutil
import subprocess

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_TIMEOUT_S = 900


def find_chromium() -> str | None:
    configured = os.environ.get("PM_CHROMIUM")
    if configured:
        return configured
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def install_chromium() -> str | None:
    """Install Debian's Chromium (root only); return its path, or None if that is not
    possible on this machine."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]):
        subprocess.run(command, check=True, env=env, timeout=INSTALL_TIMEOUT_S,
                       stdout=subprocess.DEVNULL)
    return find_chromium()


def launch_args() -> list[str]:
    # Chromium's sandbox refuses to run as root; /dev/shm is small in containers.
    return ["--disable-dev-shm-usage", *(["--no-sandbox"] if os.geteuid() == 0 else [])]
