"""Stand-in across SIGKILL (risk.md, "Advices"): a real ``switch run`` process killed
while it stands sales in, and again while it delivers their advices, loses no advice
(every sale it answered 00 has one, journaled with it) and sends none twice as new
(a repeat after a kill is a 0221; the bank applies each once). The bank is a
simulator in the test's process, so what it received is known to the byte."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from switch.config import BankSection
from switch.net.clients import PosClient
from switch.sim.server import BankSimulator
from switch.terminal import Terminal
from tests.conftest import make_config
from tests.net.helpers import H2H, PAN_ICBC, POS_CODEC
from tests.switch_process import Process, demo_config, start_switch, write_config

pytestmark = pytest.mark.slow

SALES = 40


async def free_port() -> int:
    probe = trio.socket.socket()
    await probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


def config_file(tmp_path: Path, bank_port: int) -> Path:
    config = demo_config(tmp_path)
    icbc = config["banks"]["icbc"]
    icbc.update(port=bank_port, simulate=False, links=1, reconnect_min_s=0.05,
                reconnect_max_s=0.1,
                stand_in={"enabled": True, "bins": ["622202"], "card_daily_count": 0,
                          "card_daily_cap_fen": 10**9})  # fmt: skip
    config["banks"] = {"icbc": icbc}
    config["routes"] = [route for route in config["routes"] if route["bank"] == "icbc"]
    config["saf"] = {"poll_interval_s": 0.05, "backoff_min_s": 0.05, "backoff_max_s": 0.2}
    return write_config(tmp_path, config)


def journal_rows(tmp_path: Path, statement: str) -> list[dict[str, Any]]:
    with sqlite3.connect(tmp_path / "journal.sqlite3") as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute(statement)]


async def started(tmp_path: Path, life: int) -> tuple[Process, int]:
    process = await start_switch(tmp_path / "switch.toml", name=f"switch-{life}")
    event = await process.wait_for_event("switch_started")
    return process, int(event["pos_port"])


async def kill(process: Process) -> None:
    process.process.send_signal(signal.SIGKILL)
    with trio.fail_after(10):
        await process.process.wait()


async def sell(port: int, terminal_id: str, answers: dict[str, str], first: int) -> None:
    """Sales one after the other until the connection dies; each RRN answered 00 kept."""
    try:
        client = await PosClient.connect(
            "127.0.0.1", port, POS_CODEC, Terminal(terminal_id=terminal_id)
        )
        for stan in range(first, first + SALES):
            response = await client.request(client.terminal.sale(stan, PAN_ICBC, 1000 + stan))
            if response.fields[39] == "00":
                answers[str(response.fields[37])] = str(response.fields[38])
    except Exception:
        return  # killed under it


async def test_sigkill_while_standing_in_and_while_advising_loses_no_advice_and_repeats_none(
    tmp_path: Path,
) -> None:
    bank_port = await free_port()
    config_file(tmp_path, bank_port)

    # 1. The bank is down: sales are stood in; the switch is killed among them.
    switch, pos_port = await started(tmp_path, 1)
    answers: dict[str, str] = {}
    async with trio.open_nursery() as terminals:
        for number in range(4):
            terminals.start_soon(sell, pos_port, f"POS0000{number}", answers, 1 + 100 * number)
        with trio.fail_after(30):
            while len(answers) < 20:
                await trio.sleep(0.005)
        await kill(switch)
    stood = journal_rows(tmp_path, "SELECT rrn, auth_code FROM txn WHERE stand_in IS NOT NULL")
    queued = journal_rows(tmp_path, "SELECT rrn FROM advice ORDER BY id")
    # Every approval answered has its advice; every stood-in sale journaled has one.
    assert set(answers) <= {row["rrn"] for row in stood}
    assert {row["rrn"] for row in queued} == {row["rrn"] for row in stood}
    assert all(answers[rrn] == "S" + rrn[-5:] for rrn in answers)

    # 2. The bank is back: advices go out; the switch is killed among them, restarted.
    bank: BankSection = msgspec.structs.replace(make_config().banks["icbc"], port=bank_port)
    simulator = BankSimulator("icbc", bank, H2H)
    async with trio.open_nursery() as bank_side:
        await bank_side.start(simulator.serve)
        switch, _ = await started(tmp_path, 2)
        with trio.fail_after(30):
            while sum(1 for m in simulator.received if m.mti in ("0220", "0221")) < 5:
                await trio.sleep(0.002)
        await kill(switch)
        switch, _ = await started(tmp_path, 3)
        with trio.fail_after(60):
            while journal_rows(tmp_path, "SELECT count(*) AS n FROM advice "
                               "WHERE state != 'accepted'")[0]["n"]:  # fmt: skip
                await trio.sleep(0.05)
        await switch.stop()
        bank_side.cancel_scope.cancel()

    advices = [m for m in simulator.received if m.mti in ("0220", "0221")]
    order = [row["rrn"] for row in queued]
    sends: dict[str, list[str]] = {}
    for message in advices:
        sends.setdefault(str(message.fields[37]), []).append(message.mti)
    assert set(sends) == set(order)  # none lost
    for rrn, mtis in sends.items():  # none sent twice as new: one 0220, any repeats 0221
        assert mtis[0] == "0220" or mtis == ["0221"] * len(mtis), (rrn, mtis)
        assert mtis.count("0220") <= 1, (rrn, mtis)
    firsts = list(dict.fromkeys(str(m.fields[37]) for m in advices))
    assert firsts == order  # in the order of stand-in
    assert simulator.statistics() is not None
    applied = [r for r in simulator._bank.open_records() if r.mti == "0220"]
    assert sorted(r.rrn for r in applied) == sorted(order)  # each applied once
