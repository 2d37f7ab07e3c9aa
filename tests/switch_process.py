"""``switch`` commands as an operator runs them, for the start-up and operator tests:
real processes, their JSON log lines in a file, their stderr in another."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w
import trio

from tests.conftest import DIALECTS, REPO

SWITCH = (sys.executable, "-m", "switch")
KEY_ENV = "SWITCH_TEST_CARD_KEYS_UNSET"
"""The key variable the test configs name: never set, so the key file is what counts."""


def demo_config(tmp_path: Path) -> dict[str, Any]:
    """conf/switch.toml as a dict: every port 0, every file absolute, the journal in
    ``tmp_path``, a short shutdown grace."""
    config = tomllib.loads((REPO / "conf" / "switch.toml").read_text())
    config["switch"]["dialects_dir"] = str(DIALECTS)
    config["switch"]["shutdown_grace_s"] = 5.0
    config["pos"]["port"] = 0
    config["online"]["port"] = 0
    for bank in config["banks"].values():
        bank["port"] = 0
    config["admin"]["port"] = 0
    config["journal"].update(
        path=str(tmp_path / "journal.sqlite3"),
        key_file=str(REPO / "conf" / "card-keys.toml"),
        key_env=KEY_ENV,
    )
    config["settlement"].update(
        merchants_file=str(REPO / "conf" / "merchants.csv"),
        out_dir=str(tmp_path / "settlement"),
    )
    # The demo's risk rule and its own merchant for repayments by card are the README's
    # walkthroughs' (tests/test_newcomer.py): tests start from neither, and add their own.
    config.pop("risk", None)
    config.get("credit", {}).pop("own_merchant_id", None)
    # DEMO keys as conf/switch.toml has them, made in the test's folder.
    config["security"].update(
        key_store=str(tmp_path / "key-store.json"), lmk_file=str(tmp_path / "lmk")
    )
    return config


def one_bank_config(tmp_path: Path, bank_port: int) -> dict[str, Any]:
    """The demo config with one bank, icbc, not simulated: a stand-alone simulator
    listens on ``bank_port``, so what connects to it can be counted."""
    config = demo_config(tmp_path)
    icbc = config["banks"]["icbc"]
    icbc.update(port=bank_port, simulate=False, reconnect_min_s=0.05, reconnect_max_s=0.2)
    config["banks"] = {"icbc": icbc}
    config["routes"] = [route for route in config["routes"] if route["bank"] == "icbc"]
    return config


def write_config(tmp_path: Path, config: dict[str, Any], name: str = "switch.toml") -> Path:
    path = tmp_path / name
    path.write_text(tomli_w.dumps(config))
    return path


def _environment() -> dict[str, str]:
    """The test's environment, but the variables an operator's shell may have set that
    would change what the commands read (card keys, the config of SWITCH_CONFIG)."""
    unset = ("SWITCH_CARD_KEYS", "SWITCH_CONFIG")
    return {key: value for key, value in os.environ.items() if key not in unset}


class Process:
    """A ``switch`` process with stdout (its JSON log) and stderr in files."""

    def __init__(self, process: trio.Process, stdout: Path, stderr: Path) -> None:
        self.process = process
        self.stdout_path = stdout
        self.stderr_path = stderr

    @classmethod
    async def start(
        cls,
        args: Sequence[str],
        directory: Path,
        *,
        name: str = "switch",
        preexec_fn: Callable[[], None] | None = None,
        env: Mapping[str, str] | None = None,
        wrapper: Sequence[str] = (),
        cwd: Path = REPO,
    ) -> Process:
        """``env``: variables set for this process beside the tests' own; ``wrapper``
        runs it (e.g. in a mount namespace), exec'ing it in the same process; ``cwd``:
        where it runs (the repository's root by default)."""
        stdout, stderr = directory / f"{name}.out", directory / f"{name}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = await trio.lowlevel.open_process(
                [*wrapper, *SWITCH, *args],
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=_environment() | dict(env or {}),
                preexec_fn=preexec_fn,
            )
        return cls(process, stdout, stderr)

    def lines(self) -> list[bytes]:
        """The complete lines written so far: a line still being written (no newline
        yet) is left for the next read."""
        written = self.stdout_path.read_bytes()
        return written[: written.rfind(b"\n") + 1].splitlines()

    def records(self) -> list[dict[str, Any]]:
        """Every log line, parsed: each must be one JSON object."""
        return [json.loads(line) for line in self.lines()]

    def events(self, event: str) -> list[dict[str, Any]]:
        return [record for record in self.records() if record.get("event") == event]

    async def wait_for_event(self, event: str, count: int = 1) -> dict[str, Any]:
        """The ``count``-th line of ``event``, once the process has written it."""
        with trio.fail_after(20):
            while len(seen := self.events(event)) < count:
                assert self.process.poll() is None, self.output()
                await trio.sleep(0.02)
        return seen[count - 1]

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        with trio.fail_after(20):
            while True:
                for record in self.records():
                    if predicate(record):
                        return record
                assert self.process.poll() is None, self.output()
                await trio.sleep(0.02)

    def output(self) -> str:
        return self.stdout_path.read_text() + self.stderr_path.read_text()

    async def stop(self) -> int:
        """SIGTERM, then the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            return await self.process.wait()


async def start_switch(
    config: Path,
    *,
    name: str = "switch",
    preexec_fn: Callable[[], None] | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    wrapper: Sequence[str] = (),
) -> Process:
    """``switch run`` (and ``args``), its log lines in ``<config's folder>/<name>.out``."""
    return await Process.start(
        ["run", "--config", str(config), *args],
        config.parent,
        name=name,
        preexec_fn=preexec_fn,
        env=env,
        wrapper=wrapper,
    )


async def start_sim_bank(config: Path, bank: str = "icbc") -> tuple[Process, int]:
    """A stand-alone ``switch sim-bank`` on a free port, and that port."""
    sim = await Process.start(
        ["sim-bank", "--config", str(config), "--bank", bank, "--port", "0"],
        config.parent,
        name=f"sim-{bank}",
    )
    started = await sim.wait_for_event("simulator_started")
    return sim, int(started["port"])


def run_switch(
    args: Sequence[str],
    *,
    wrapper: Sequence[str] = (),
    preexec_fn: Callable[[], None] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO,
) -> subprocess.CompletedProcess[str]:
    """A ``switch`` command to its end (``wrapper`` runs it, e.g. in a mount namespace),
    from the repository's root unless ``cwd`` is another folder."""
    return subprocess.run(
        [*wrapper, *SWITCH, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=_environment() | dict(env or {}),
        preexec_fn=preexec_fn,
        check=False,
    )


def assert_refused_in_one_line(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Exit status 2, one line on stderr saying each of ``expected``, no traceback, and
    a log (stdout) of JSON lines only."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    for line in result.stdout.splitlines():
        json.loads(line)
