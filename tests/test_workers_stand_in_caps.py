"""Stand-in caps exact across two workers on one PostgreSQL journal, as real processes
(risk.md, "Stand-in processing (STIP)"; issue #24): sales raced at both workers at once
while the bank is down never stand in beyond a card's daily count nor beyond the
bank's pending cap, whatever each worker's tally had read of the other's. Each stood-in
approval claims the caps in its own commit (``store/stip_claim.py``); one the journal
refuses is answered 91, not stood in, its reason journaled."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from switch.net.clients import PosClient
from switch.terminal import Terminal
from tests.conftest import luhn_complete
from tests.switch_process import one_bank_config, start_switch, write_config
from tests.test_stand_in_crash import free_port
from tests.test_workers_shared import WORKERS, SharedSwitch, exchange

pytestmark = pytest.mark.slow

CARD_COUNT = 2
PENDING_CAP = 10_000
AMOUNT = 1_000
TERMINALS = 3


async def race(
    streams: list[tuple[Terminal, PosClient]], stans: list[int], pans: list[str]
) -> list[str]:
    """One sale on each stream, all at once; their 39s in the streams' order."""
    codes = [""] * len(streams)

    async def sale(index: int) -> None:
        terminal, client = streams[index]
        fields = await exchange(client, terminal.sale(stans[index], pans[index], AMOUNT))
        codes[index] = str(fields[39])

    async with trio.open_nursery() as nursery:
        for index in range(len(streams)):
            nursery.start_soon(sale, index)
    return codes


async def test_sales_raced_at_both_workers_never_stand_in_over_the_caps(
    tmp_path: Path, postgres_dsn: str
) -> None:
    bank_port = await free_port()  # nothing listens: the bank is down, no link
    settings = one_bank_config(tmp_path, bank_port)
    settings["banks"]["icbc"]["stand_in"] = {
        "enabled": True, "bins": ["622202"], "card_daily_count": CARD_COUNT,
        "card_daily_cap_fen": 10**9, "max_pending_fen": PENDING_CAP,
    }  # fmt: skip
    settings["journal"].update(backend="postgresql", dsn=postgres_dsn)
    settings["switch"]["workers"] = WORKERS
    switch = await start_switch(write_config(tmp_path, settings))
    try:
        await switch.wait_for_event("switch_started", count=WORKERS)
        shared = SharedSwitch(switch, switch, postgres_dsn, tmp_path / "unused.json")
        streams: list[tuple[Terminal, PosClient]] = []
        for _ in range(TERMINALS):  # each terminal at both workers
            terminal, here, there = await shared.terminal_at_both_workers()
            streams += [(terminal, here), (terminal, there)]
        n = len(streams)
        # One card at every stream at once: its daily count holds in total.
        card = luhn_complete("622202100077777777")
        one_card = await race(streams, list(range(1, n + 1)), [card] * n)
        # Other cards, rounds at once, until the bank's pending cap is reached and past.
        rounds = []
        for round_ in range(3):
            pans = [luhn_complete(f"62220210001{round_:02d}{index:05d}") for index in range(n)]
            stans = [100 + round_ * n + index for index in range(n)]
            rounds += await race(streams, stans, pans)
        assert await switch.stop() == 0, switch.output()
    finally:
        if switch.process.poll() is None:
            switch.process.kill()
            await switch.process.wait()
    assert sorted(one_card) == ["00"] * CARD_COUNT + ["91"] * (n - CARD_COUNT)
    stood_in = CARD_COUNT + rounds.count("00")
    assert stood_in * AMOUNT == PENDING_CAP  # as many as the cap allows, never more
    assert set(rounds) == {"00", "91"}
    advices = shared.rows(
        "SELECT count(*) AS n, sum(t.amount) AS amount FROM advice a JOIN txn t "
        "ON t.rrn = a.rrn WHERE a.bank = 'icbc'"
    )
    assert advices == [{"n": stood_in, "amount": PENDING_CAP}]
    not_stood_in = "SELECT count(*) AS n FROM txn WHERE code = '91' AND stand_in IS NULL"
    refused = shared.rows(not_stood_in)[0]["n"]
    assert refused == one_card.count("91") + rounds.count("91")
