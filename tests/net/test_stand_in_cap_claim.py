"""A stood-in approval's commit claims its bank's caps in a shared PostgreSQL journal
(``store/stip_claim.py``; issue #24): when the journal holds a stand-in this worker's
tally has not read yet (as another worker's, committed within the last read interval),
the commit is refused and the sale is answered 91, not stood in, with its reason
journaled, on both stand-in paths: a bank with no link (``no_link``) and a bank's 91
(``bank_91``). The tally is made stale as the other workers' would be: shared, and
not yet reading the journal."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
import trio
from psycopg.rows import dict_row

from switch.app import SwitchApp
from switch.core.stip import CAPS_TAKEN, RECENT_READS
from switch.store.rows import events_of
from switch.terminal import Terminal
from switch.wire.iso8583 import Iso8583Message
from tests.net.helpers import H2H, PAN_CITIC_CREDIT, pos_client
from tests.net.rogue_bank import Reply, RogueBank, echoed
from tests.net.test_stand_in_e2e import citic_down_config, free_port, start_without_citic


def rows(dsn: str, statement: str, *parameters: Any) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as connection:
        return connection.execute(statement, parameters).fetchall()


def as_shared_and_stale(app: SwitchApp) -> None:
    """The tally as on a shared journal, having read none of the journal's stand-ins
    (those decided here forgotten as after RECENT_READS reads that missed them)."""
    tally = app.stand_in.tally
    tally.share()
    for _ in range(RECENT_READS + 1):
        tally.replace([])


def on_postgresql(dsn: str, port: int, **stand_in: object) -> Any:
    config = citic_down_config(port, card_daily_count=1, **stand_in)
    return msgspec.structs.replace(
        config, journal=msgspec.structs.replace(config.journal, backend="postgresql", dsn=dsn)
    )


async def test_a_stand_in_over_a_cap_the_journal_holds_is_refused_at_commit(
    nursery: trio.Nursery, postgres_dsn: str
) -> None:
    app = await start_without_citic(nursery, on_postgresql(postgres_dsn, await free_port()))
    client = await pos_client(app)
    first = await client.request(client.terminal.sale(1, PAN_CITIC_CREDIT, 1000))
    as_shared_and_stale(app)  # the tally no longer knows the card's first stand-in
    again = await client.request(client.terminal.sale(2, PAN_CITIC_CREDIT, 1000))
    assert first.fields[39] == "00" and str(first.fields[38]).startswith("S")
    assert again.fields[39] == "91" and 38 not in again.fields
    rrn = str(again.fields[37])
    assert rows(postgres_dsn, "SELECT state, code, stand_in FROM txn WHERE rrn = %s", rrn) == [
        {"state": "not_sent", "code": "91", "stand_in": None}
    ]
    details = [
        detail
        for row in rows(postgres_dsn, "SELECT events FROM txn WHERE rrn = %s", rrn)
        for *_, detail in events_of(row["events"])
    ]
    assert any(str(d).endswith(f"not stood in: {CAPS_TAKEN}") for d in details), details
    assert rows(postgres_dsn, "SELECT count(*) AS n FROM advice") == [{"n": 1}]
    assert app.stand_in.declines.get(("citic", CAPS_TAKEN)) == 1


async def test_a_banks_91_stood_in_over_a_cap_is_answered_the_banks_91(
    nursery: trio.Nursery, postgres_dsn: str
) -> None:
    def answer(request: Iso8583Message) -> list[Reply]:
        if request.mti == "0200":
            return [echoed(request, "0210", f39="91")]
        return []  # advices never answered: they stay pending

    rogue = RogueBank(H2H, answer)
    port = await nursery.start(rogue.serve)
    app = await start_without_citic(nursery, on_postgresql(postgres_dsn, port))
    with trio.fail_after(10):
        await app.connectors["citic"].wait_up()
    client = await pos_client(app, Terminal(terminal_id="POS00002"))
    first = await client.request(client.terminal.sale(1, PAN_CITIC_CREDIT, 1000))
    as_shared_and_stale(app)
    again = await client.request(client.terminal.sale(2, PAN_CITIC_CREDIT, 1000))
    assert first.fields[39] == "00" and str(first.fields[38]).startswith("S")
    assert again.fields[39] == "91" and 38 not in again.fields
    rrn = str(again.fields[37])
    assert rows(postgres_dsn, "SELECT state, code, stand_in FROM txn WHERE rrn = %s", rrn) == [
        {"state": "declined", "code": "91", "stand_in": None}
    ]
    assert rows(postgres_dsn, "SELECT count(*) AS n FROM advice") == [{"n": 1}]
    assert app.stand_in.declines.get(("citic", CAPS_TAKEN)) == 1
    assert rows(postgres_dsn, "SELECT count(*) AS n FROM saf") == [{"n": 0}]  # no reversal
