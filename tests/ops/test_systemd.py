"""ops/systemd/payswitch.service: ``systemd-analyze verify`` accepts it (where systemd
is installed), and its commands work as systemd would run them: ExecStartPre's config
check, ExecStart's switch (as its main process), ExecReload's SIGHUP re-reading the
config, KillSignal draining it to exit 0 within TimeoutStopSec, and a refused start's
exit status being the one RestartPreventExitStatus names."""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from switch.supervisor import REFUSED
from tests.ops.conftest import OPS
from tests.switch_process import Process, demo_config, write_config

pytestmark = pytest.mark.slow  # switch processes

UNIT = OPS / "systemd" / "payswitch.service"
INSTALLED_SWITCH = "/opt/payswitch/venv/bin/switch"
INSTALLED_CONFIG = "/etc/payswitch/switch.toml"
SWITCH_HERE = str(Path(sys.executable).parent / "switch")


def unit() -> dict[str, dict[str, list[str]]]:
    """The unit's sections, each key's values in order (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def here(command: str, config: Path) -> list[str]:
    """A unit's command line as it runs in this checkout: the installed paths replaced."""
    return shlex.split(command.replace(INSTALLED_SWITCH, SWITCH_HERE)
                       .replace(INSTALLED_CONFIG, str(config)))  # fmt: skip


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit's commands are run below")
    copy = tmp_path / "payswitch.service"
    copy.write_text(UNIT.read_text().replace(INSTALLED_SWITCH, SWITCH_HERE))
    verified = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                              timeout=60)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stderr == ""


async def test_the_units_commands_start_reload_and_drain_the_switch(tmp_path: Path) -> None:
    service = unit()["Service"]
    assert service["KillSignal"] == ["SIGTERM"] and service["KillMode"] == ["mixed"]
    assert service["RestartPreventExitStatus"] == [str(REFUSED)]
    settings = demo_config(tmp_path)
    config = write_config(tmp_path, settings)
    grace_s = float(settings["switch"]["shutdown_grace_s"])
    stop_within_s = float(service["TimeoutStopSec"][0])
    assert stop_within_s > grace_s + 10  # the drain, then the journal's close

    [pre] = service["ExecStartPre"]
    checked = await trio.run_process(here(pre, config), capture_stdout=True,
                                     capture_stderr=True, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stderr

    [start] = service["ExecStart"]
    argv = here(start, config)
    assert argv[0] == SWITCH_HERE and await trio.Path(SWITCH_HERE).exists()
    out, err = tmp_path / "switch.out", tmp_path / "switch.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = await trio.lowlevel.open_process(argv, stdout=stdout, stderr=stderr)
    switch = Process(process, out, err)  # as systemd starts it: the console script
    try:
        await switch.wait_for_event("switch_started")
        [reload] = service["ExecReload"]
        command = reload.replace("$MAINPID", str(switch.process.pid))
        assert shlex.split(command)[:2] == ["/bin/kill", "-HUP"]
        await trio.run_process(shlex.split(command))
        await switch.wait_for_event("config_reloaded")
        switch.process.send_signal(signal.Signals[service["KillSignal"][0]])
        with trio.fail_after(stop_within_s):
            assert await switch.process.wait() == 0, switch.output()
        assert len(switch.events("switch_stopped")) == 1
    finally:
        if switch.process.poll() is None:
            switch.process.kill()

    # A config the switch refuses: the exit status systemd is told not to restart on.
    settings["journal"]["durability"] = "sometimes"
    refused = await trio.run_process(here(start, write_config(tmp_path, settings, "bad.toml")),
                                     capture_stderr=True, check=False)  # fmt: skip
    assert refused.returncode == REFUSED, refused.stderr
