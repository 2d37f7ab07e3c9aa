"""Installing a Debian package the tests or the demo need (PostgreSQL's server,
Prometheus's promtool) where it is missing: only as root with apt-get, as CI runs on a
fresh machine. Nothing here is the switch's."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Final

APT_TIMEOUT_S: Final = 600
"""An install from Debian's registry on a fresh machine."""


class NotInstalled(RuntimeError):
    """The package could not be installed here; says why."""


def apt_install(package: str, *, why_missing: str) -> None:
    """``apt-get update`` then ``apt-get install package``; NotInstalled naming the cause
    (``why_missing`` first, when this process may not install: not root, no apt-get)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise NotInstalled(
            f"{why_missing}, and apt-get cannot install it here (needs root and apt-get): "
            f"install Debian's {package} package"
        )
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    for command in (["apt-get", "update", "-q"], install):
        done = subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=APT_TIMEOUT_S
        )
        if done.returncode != 0:
            raise NotInstalled(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
