"""Prometheus's ``promtool`` for the tests of the shipped alert rules and Prometheus
configuration (ops/prometheus/): found on PATH, or installed from Debian's
``prometheus`` package if it is missing and we may (root with apt-get, as CI is).

Nothing here is the switch's: only its tests and an operator checking the rules use it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

APT_TIMEOUT_S: Final = 600
"""An install from Debian's registry on a fresh machine."""


class PromtoolUnavailable(RuntimeError):
    """No promtool here, and none could be installed; says why."""


def find_promtool() -> Path | None:
    found = shutil.which("promtool")
    return Path(found) if found is not None else None


def install_promtool() -> Path:
    """promtool's path, installing Debian's ``prometheus`` (which ships it) when it is
    missing; only as root with apt-get. PromtoolUnavailable says why not."""
    found = find_promtool()
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PromtoolUnavailable(
            "promtool is not on PATH, and apt-get cannot install it here (needs root and "
            "apt-get): install Debian's prometheus package"
        )
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"]
    for command in (["apt-get", "update", "-q"], install):
        done = subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=APT_TIMEOUT_S
        )
        if done.returncode != 0:
            raise PromtoolUnavailable(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    found = find_promtool()
    if found is None:
        raise PromtoolUnavailable("prometheus was installed but promtool is not on PATH")
    return found


if __name__ == "__main__":  # python -m switch.devtools.promtool: install it, say where
    print(install_promtool())
