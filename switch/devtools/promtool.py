"""Prometheus's ``promtool`` for the tests of the shipped alert rules and Prometheus
configuration (ops/prometheus/): found on PATH, or installed from Debian's
``prometheus`` package if it is missing and we may (root with apt-get, as CI is).

Nothing here is the switch's: only its tests and an operator checking the rules use it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from switch.devtools.apt import NotInstalled, apt_install


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
    try:
        apt_install("prometheus", why_missing="promtool is not on PATH")
    except NotInstalled as exc:
        raise PromtoolUnavailable(str(exc)) from None
    found = find_promtool()
    if found is None:
        raise PromtoolUnavailable("prometheus was installed but promtool is not on PATH")
    return found


if __name__ == "__main__":  # python -m switch.devtools.promtool: install it, say where
    print(install_promtool())
