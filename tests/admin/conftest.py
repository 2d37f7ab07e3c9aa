"""Fixtures of the admin interface's process tests: a ``switch run`` of the demo config
shared by a module's tests, and tmux for the one test that drives a real terminal."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from switch.devtools.apt import NotInstalled, apt_install
from tests.conftest import REPO
from tests.switch_process import SWITCH, demo_config, write_config

START_S = 30.0
DEMO_LINKS = 8  # four simulated banks, two links each


class SwitchRun(msgspec.Struct, frozen=True, kw_only=True):
    """A running ``switch run``: its config file, its ports (from its log lines)."""

    config: Path
    log: Path
    pos_port: int
    online_port: int
    admin_port: int

    @property
    def url(self) -> str:
        """Its admin interface (the config says port 0: the log says which it got)."""
        return f"http://127.0.0.1:{self.admin_port}"

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_bytes().splitlines() if line]


def wait_until_up(process: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    """The switch's switch_started line, once every demo link has signed on."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        records = [json.loads(line) for line in log.read_bytes().splitlines() if line]
        started = [r for r in records if r.get("event") == "switch_started"]
        links = {(r["bank"], r["link"]) for r in records if r.get("event") == "link_signed_on"}
        if started and len(links) >= DEMO_LINKS:
            return started[0]
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"switch run did not start: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def running_switch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwitchRun]:
    """The demo config (every port 0, four simulated banks, the admin interface on) in a
    ``switch run`` of its own, for the module's tests; stopped with SIGTERM after them."""
    folder = tmp_path_factory.mktemp("admin-cli")
    settings = demo_config(folder)
    assert settings["admin"]["enabled"] is True  # the demo config's own
    with switch_running(folder, settings) as run:
        yield run


@contextlib.contextmanager
def switch_running(folder: Path, settings: dict[str, Any]) -> Iterator[SwitchRun]:
    """``settings`` written to ``folder`` and run by a ``switch run`` until the block
    ends (SIGTERM, then it must exit 0)."""
    config = write_config(folder, settings)
    log = folder / "switch.out"
    with log.open("wb") as out, (folder / "switch.err").open("wb") as err:
        process = subprocess.Popen(
            [*SWITCH, "run", "--config", str(config)],
            stdout=out,
            stderr=err,
            cwd=REPO,
            env={k: v for k, v in os.environ.items() if k != "SWITCH_CARD_KEYS"},
        )
    try:
        started = wait_until_up(process, log)
        records = [json.loads(line) for line in log.read_bytes().splitlines() if line]
        [listening] = [r for r in records if r.get("event") == "admin_listening"]
        assert listening["port"] == started["admin_port"]
        yield SwitchRun(
            config=config,
            log=log,
            pos_port=int(started["pos_port"]),
            online_port=int(started["online_port"]),
            admin_port=int(listening["port"]),
        )
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()[-3000:]


def _skip_loudly(reason: str) -> None:
    message = f"tmux is not installed, so `switch top` was not tried in a real terminal: {reason}"
    warnings.warn(message, pytest.PytestWarning, stacklevel=2)
    pytest.skip(message)


@pytest.fixture(scope="session")
def tmux() -> str:
    """tmux's path; installed with apt-get when missing and this process may (root, on
    Debian, as CI runs), else the test that needs it is skipped with a warning."""
    found = shutil.which("tmux")
    if found is not None:
        return found
    try:
        apt_install("tmux", why_missing="tmux is not on PATH")
    except NotInstalled as exc:
        _skip_loudly(str(exc))
    found = shutil.which("tmux")
    if found is None:
        _skip_loudly("tmux was installed but is not on PATH")
    assert found is not None
    return found
