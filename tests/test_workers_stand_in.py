"""Stand-in with two workers on one PostgreSQL journal, as real processes (risk.md,
"Stand-in processing (STIP)"): a card's daily caps count the sales stood in at either
worker, and a bank's advices have one sender across the workers, so the bank gets each
advice once, in the order of stand-in. The bank is down while the sales are stood in,
then comes back as a simulator in the test's process: what it received is known."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import trio

from switch.net.clients import PosClient
from switch.sim.server import BankSimulator
from tests.conftest import luhn_complete, make_config
from tests.net.helpers import H2H, PAN_ICBC
from tests.switch_process import one_bank_config, start_switch, write_config
from tests.test_stand_in_crash import free_port
from tests.test_workers_shared import WORKERS, SharedSwitch, exchange

pytestmark = pytest.mark.slow

SYNC_S = 0.5
"""Time for the other worker to read the journal's stood-in sales (every 0.05 s)."""


async def test_caps_count_both_workers_and_each_advice_is_sent_once(
    tmp_path: Path, postgres_dsn: str
) -> None:
    bank_port = await free_port()  # nothing listens: the bank is down
    settings = one_bank_config(tmp_path, bank_port)
    settings["banks"]["icbc"]["stand_in"] = {
        "enabled": True, "bins": ["622202"], "card_daily_count": 2,
        "card_daily_cap_fen": 10**9,
    }  # fmt: skip
    settings["saf"] = {"poll_interval_s": 0.05, "backoff_min_s": 0.05, "backoff_max_s": 0.2}
    settings["journal"].update(backend="postgresql", dsn=postgres_dsn)
    settings["switch"]["workers"] = WORKERS
    switch = await start_switch(write_config(tmp_path, settings))
    try:
        await switch.wait_for_event("switch_started", count=WORKERS)
        shared = SharedSwitch(switch, switch, postgres_dsn, tmp_path / "unused.json")
        terminal, here, there = await shared.terminal_at_both_workers()
        clients: tuple[PosClient, PosClient] = (here, there)

        # One card at both workers: its count cap (2) holds across them.
        codes = []
        for stan in (1, 2, 3):
            fields = await exchange(clients[stan % 2 == 0], terminal.sale(stan, PAN_ICBC, 1000))
            codes.append((fields[39], fields.get(38)))
            await trio.sleep(SYNC_S)
        assert [code for code, _ in codes] == ["00", "00", "91"]
        assert all(str(auth).startswith("S") for _, auth in codes[:2])

        # More stood-in sales, other cards, at both workers: their advices queue.
        for stan in range(4, 12):
            pan = luhn_complete(f"62220210001{stan:07d}")
            fields = await exchange(clients[stan % 2], terminal.sale(stan, pan, 500 + stan))
            assert fields[39] == "00"
        order = [r["rrn"] for r in shared.rows("SELECT rrn FROM advice ORDER BY id")]
        assert len(order) == 10

        # The bank comes back, slow to answer: each worker's links sign on, and both
        # workers' advice queues look at the same head.
        section = make_config().banks["icbc"]
        section = msgspec.structs.replace(
            section, port=bank_port, sim=msgspec.structs.replace(section.sim, latency_ms=150)
        )
        simulator = BankSimulator("icbc", section, H2H)
        async with trio.open_nursery() as bank_side:
            await bank_side.start(simulator.serve)
            with trio.fail_after(60):
                while shared.rows(
                    "SELECT count(*) AS n FROM advice WHERE state != 'accepted'"
                )[0]["n"]:
                    await trio.sleep(0.05)
            bank_side.cancel_scope.cancel()
        assert await switch.stop() == 0, switch.output()
    finally:
        if switch.process.poll() is None:
            switch.process.kill()
            await switch.process.wait()

    sends: dict[str, list[str]] = {}
    for message in simulator.received:
        if message.mti in ("0220", "0221"):
            sends.setdefault(str(message.fields[37]), []).append(message.mti)
    assert sends == {rrn: ["0220"] for rrn in order}  # once each, none repeated
    firsts = [str(m.fields[37]) for m in simulator.received if m.mti in ("0220", "0221")]
    assert firsts == order  # in the order of stand-in
    claims = shared.rows("SELECT DISTINCT claimed_by FROM advice WHERE claimed_by IS NOT NULL")
    assert claims  # claimed by a worker
