"""A newcomer's first five minutes: a fresh clone of this repository, the README's run
command (the demo, on its own ports), then the README's "Five things to try" exactly as
written there, each checked for what the README says it does."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import trio

from tests.switch_process import REPO, SWITCH, Process

pytestmark = pytest.mark.slow

DEMO_PORTS = (8583, 8584, 8585, 9101, 9102, 9103, 9104)


def _readme_block(heading: str) -> list[str]:
    """The commands of the first ``sh`` block under ``## heading`` in the README."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def _ports_free() -> bool:
    for port in DEMO_PORTS:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _clone(into: Path) -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("no git, or this is no clone: nothing to clone from")
    clone = into / "payswitch"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    return clone


def _run(clone: Path, command: str, rrn: str | None) -> subprocess.CompletedProcess[str]:
    """One README command, with ``.venv/bin/switch`` as this interpreter running the
    clone's code, and RRN replaced by the one the first sale printed."""
    words = shlex.split(command)
    assert words[0] == ".venv/bin/switch", command
    arguments = [rrn if word == "RRN" and rrn is not None else word for word in words[1:]]
    environment = {key: value for key, value in os.environ.items() if key != "SWITCH_CONFIG"}
    environment["PYTHONPATH"] = str(clone)
    return subprocess.run(
        [*SWITCH, *arguments], cwd=clone, env=environment, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


async def test_a_fresh_clone_runs_the_readme_and_its_five_things_to_try(tmp_path: Path) -> None:
    if not _ports_free():
        pytest.skip("the demo's ports (8583-8585, 9101-9104) are taken on this machine")
    clone = _clone(tmp_path)
    [run_command] = [line for line in _readme_block("The two commands") if "switch run" in line]
    run_words = shlex.split(run_command.split("&&")[-1])
    assert run_words[:2] == [".venv/bin/switch", "run"], run_command
    switch = await Process.start(run_words[1:], tmp_path, env={"PYTHONPATH": str(clone)}, cwd=clone)
    try:
        await switch.wait_for_event("switch_started")
        await switch.wait_for_event("link_signed_on", count=4)
        commands = [
            part.strip() for line in _readme_block("Five things to try") for part in line.split(";")
        ]
        assert len(commands) == 6, commands  # five things, the last two commands
        rrn = None
        results = {}
        for command in commands:
            result = await trio.to_thread.run_sync(_run, clone, command, rrn)
            results[command] = result
            if rrn is None and " pos sale " in f" {command} ":
                printed = json.loads(result.stdout)
                assert printed["response_code"] == "00", (command, result.stdout, result.stderr)
                rrn = printed["fields"]["37"]
        _sale, declined, online, show, cutoff, status = (results[c] for c in commands)
        assert json.loads(declined.stdout)["response_code"] == "51", declined.stdout
        assert online.returncode == 0, (online.stdout, online.stderr)
        bought = json.loads(online.stdout)
        assert (bought["code"], bought["approved"], bought["signed"]) == ("00", True, True)
        assert show.returncode == 0 and rrn is not None and rrn in show.stdout, show.stderr
        assert cutoff.returncode == 0, (cutoff.stdout, cutoff.stderr)
        assert status.returncode == 0, (status.stdout, status.stderr)
        stored = b"".join(p.read_bytes() for p in (clone / "var").rglob("*") if p.is_file())
        assert b"6222021000111122221" not in stored  # the demo card, never in the clear
    finally:
        switch.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await switch.process.wait()
    assert switch.process.returncode == 0, switch.output()
