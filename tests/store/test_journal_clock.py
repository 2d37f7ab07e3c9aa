"""The journal's clock mark, on each engine: the first start writes the kind of clock
it runs on, a start on the other kind is refused, and a journal written before there
was a mark (an upgrade) counts as written on the real clock."""

from __future__ import annotations

import pytest
import trio

from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.store.postgresql.schema import MIGRATIONS as POSTGRESQL_MIGRATIONS
from switch.store.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from switch.terminal import Terminal
from tests.net.helpers import PAN_ICBC, pos_client
from tests.net.test_business_clock_e2e import refusal, simulated, start_on, stop
from tests.store.engines import ENGINES, Configure, config_maker, journal_rows


@pytest.fixture(params=ENGINES)
def configure(request: pytest.FixtureRequest) -> Configure:
    return config_maker(request)


def mark(config: SwitchConfig) -> list[str]:
    return [row["kind"] for row in journal_rows(config, "SELECT kind FROM journal_clock")]


async def test_the_first_start_marks_the_journal_and_the_other_kind_is_refused(
    nursery: trio.Nursery, configure: Configure
) -> None:
    config = configure()
    await stop(await start_on(nursery, config, simulated()))
    assert mark(config) == ["simulated"]
    assert "first run on a simulated clock" in await refusal(nursery, SwitchApp(config))
    await stop(await start_on(nursery, config, simulated("2027-02-01T08:00:00+08:00")))
    assert mark(config) == ["simulated"]


def _before_the_mark(migrations: tuple[str, ...]) -> int:
    """The schema version just before the migration that made the mark."""
    return next(n for n, text in enumerate(migrations) if "CREATE TABLE journal_clock" in text)


UNDO_AFTER_THE_MARK = (
    # Each migration after the mark's, undone (newest first): the history in the row,
    # the stand-in caps' claim, on-us payments' customer and funding (and on PostgreSQL
    # the advices' claims, gone with their table), the risk rules', the stand-in's, then
    # the pre-authorisations'.
    "ALTER TABLE txn DROP COLUMN events",
    "DROP TABLE stip_cap",
    "ALTER TABLE txn DROP COLUMN funding",
    "ALTER TABLE txn DROP COLUMN customer_id",
    *(f"ALTER TABLE txn DROP COLUMN {column}" for column in (
        "device_id", "risk_version", "risk_rule", "risk_review", "risk_shadow",
    )),
    "DROP TABLE advice",
    "ALTER TABLE txn DROP COLUMN advice_state",
    "ALTER TABLE txn DROP COLUMN stand_in",
    "DROP INDEX txn_by_authorisation",
    "DROP INDEX txn_holds_open",
    "ALTER TABLE txn DROP COLUMN hold_state",
    "ALTER TABLE txn DROP COLUMN hold_until",
    "ALTER TABLE txn DROP COLUMN hold_max_pct",
)


def _unmark(config: SwitchConfig) -> None:
    """The journal as the version before the mark left it."""
    if config.journal.backend == "postgresql":
        import psycopg

        assert config.journal.dsn is not None
        with psycopg.connect(config.journal.dsn, autocommit=True) as connection:
            for statement in ("DROP INDEX txn_by_updated", *UNDO_AFTER_THE_MARK,
                              "DROP TABLE journal_clock"):  # fmt: skip
                connection.execute(statement)
            connection.execute(
                "UPDATE journal_schema_version SET version = %s",
                (_before_the_mark(POSTGRESQL_MIGRATIONS),),
            )
        return
    import sqlite3

    with sqlite3.connect(config.path(config.journal.path), isolation_level=None) as connection:
        for statement in (*UNDO_AFTER_THE_MARK, "DROP TABLE journal_clock"):
            connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {_before_the_mark(SQLITE_MIGRATIONS)}")


async def test_a_journal_written_before_the_mark_counts_as_the_real_clocks(
    nursery: trio.Nursery, configure: Configure
) -> None:
    config = configure()
    app = await start_on(nursery, config, None)
    client = await pos_client(app, Terminal())
    assert (await client.request(client.terminal.sale(1, PAN_ICBC, 100))).fields[39] == "00"
    await client.aclose()
    await stop(app)
    _unmark(config)
    refused = await refusal(nursery, SwitchApp(config, clock=simulated()))
    assert "first run on the real clock" in refused
    assert mark(config) == ["real"]
