"""A newcomer's first five minutes: a fresh clone of this repository, the README's run
command (the demo, on its own ports), then the README's "Five things to try" exactly as
written there, each checked for what the README says it does; then, from "More to try",
the wallet, QR and payment-code walkthrough and the risk rule's (tried, met in shadow,
enforced after a reload)."""

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


def _readme_blocks(heading: str) -> list[list[str]]:
    """The commands of every ``sh`` block under ``## heading`` in the README."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = [part.split("```", 1)[0] for part in section.split("```sh\n")[1:]]
    return [
        [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
        for block in blocks
    ]


def _block_with(heading: str, word: str) -> list[str]:
    [block] = [b for b in _readme_blocks(heading) if any(word in line for line in b)]
    return block


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


def _run(
    clone: Path, command: str, rrn: str | None, values: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """One README command, with ``.venv/bin/switch`` as this interpreter running the
    clone's code, RRN replaced by the one the first sale printed and each of ``values``'
    placeholders (a word, or what follows a word's ``=``) by what an answer gave."""
    words = shlex.split(command)
    assert words[0] == ".venv/bin/switch", command
    given = dict(values or {}) | ({"RRN": rrn} if rrn is not None else {})
    arguments = [_filled(word, given) for word in words[1:]]
    environment = {key: value for key, value in os.environ.items() if key != "SWITCH_CONFIG"}
    environment["PYTHONPATH"] = str(clone)
    return subprocess.run(
        [*SWITCH, *arguments], cwd=clone, env=environment, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def _filled(word: str, values: dict[str, str]) -> str:
    name, equals, value = word.rpartition("=")
    if equals and value in values:
        return f"{name}={values[value]}"
    return values.get(word, word)


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
        await _wallet_qr_and_code(clone)
        await _a_risk_rule(clone)
        stored = b"".join(p.read_bytes() for p in (clone / "var").rglob("*") if p.is_file())
        assert b"6222021000111122221" not in stored  # the demo card, never in the clear
    finally:
        switch.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await switch.process.wait()
    assert switch.process.returncode == 0, switch.output()


async def _readme_command(
    clone: Path, command: str, values: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = await trio.to_thread.run_sync(_run, clone, command, None, values)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result


async def _wallet_qr_and_code(clone: Path) -> None:
    """More to try's wallet walkthrough, in the README's order, each answer as its
    comment says; and the same QR paid again is 94, as the line below it says."""
    commands = _block_with("More to try", "wallet_pay")
    assert [c.split()[1:3] for c in commands] == [
        ["online", "send"], ["online", "send"], ["online", "send"], ["online", "send"],
        ["online", "send"], ["online", "send"], ["pos", "sale"], ["wallet", "balance"],
    ], commands  # fmt: skip
    opened, topup, qr, pay, qr_status, issued, sale, balance = commands
    answer = json.loads((await _readme_command(clone, opened)).stdout)
    assert (answer["code"], answer["balance"]) == ("00", 0), answer
    answer = json.loads((await _readme_command(clone, topup)).stdout)
    assert (answer["code"], answer["balance_after"]) == ("00", 50000), answer
    made = json.loads((await _readme_command(clone, qr)).stdout)
    assert made["code"] == "00", made
    values = {"QR": made["qr"], "QRID": made["qr_id"]}
    answer = json.loads((await _readme_command(clone, pay, values)).stdout)
    assert (answer["code"], answer["balance_after"]) == ("00", 41200), answer
    again = json.loads((await _readme_command(clone, pay, values)).stdout)
    assert again["code"] == "94", again
    answer = json.loads((await _readme_command(clone, qr_status, values)).stdout)
    assert answer["state"] == "paid" and answer["payments"][0]["amount"] == 8800, answer
    answer = json.loads((await _readme_command(clone, issued)).stdout)
    assert answer["code"] == "00", answer
    paid = json.loads((await _readme_command(clone, sale, {"CODE": answer["paycode"]})).stdout)
    assert (paid["response_code"], paid["fields"]["63"]) == ("00", "WAL"), paid
    shown = (await _readme_command(clone, balance)).stdout
    assert "balance: 40000" in shown.splitlines(), shown


async def _a_risk_rule(clone: Path) -> None:
    """More to try's rule: tried (hit, approve: it is in shadow), met by a sale that is
    approved all the same and journaled as a hit; then, its mode set to enforce and the
    switch reloaded as the README says, the reload names the new rules and the same sale
    is declined 61."""
    tried, sale, hits = _block_with("More to try", "risk test")
    printed = (await _readme_command(clone, tried)).stdout.splitlines()
    assert printed == ["pos-card-over-2000  hit", "approve"], printed
    approved = json.loads((await _readme_command(clone, sale)).stdout)
    assert approved["response_code"] == "00", approved
    rrn = approved["fields"]["37"]
    [hit] = [
        line for line in (await _readme_command(clone, hits)).stdout.splitlines() if rrn in line
    ]
    assert hit.split()[1:4] == ["pos-card-over-2000", "shadow", "decline"], hit
    assert hit.split()[-1] == "61", hit
    rules = clone / "conf" / "risk.toml"
    text = rules.read_text()
    assert text.count('mode = "shadow"') == 1, text
    rules.write_text(text.replace('mode = "shadow"', 'mode = "enforce"'))
    reloaded = (await _readme_command(clone, ".venv/bin/switch reload")).stdout
    assert "  risk.rules " in reloaded, reloaded
    declined = json.loads((await _readme_command(clone, sale)).stdout)
    assert declined["response_code"] == "61", declined
