"""A POS request journaled once among those that went to a bank, whichever worker took
it: two journals on one database are two workers, and the second start of one POS
identity is refused (RequestRepeated) while the other callers of its group commit.
Both writers (from the event loop, in a thread) behave the same."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
import trio
from psycopg.rows import dict_row

from switch.core.book import TxnRecord
from switch.store.port import (
    Durability,
    JournalUnavailable,
    RequestRepeated,
    TxnStarted,
    TxnUpdated,
)
from switch.store.postgresql import JournalDatabase, PostgresJournal, sql
from switch.store.postgresql.journal import Writer
from tests.store.records import make_record

WRITERS: list[Writer] = ["loop", "thread"]


@asynccontextmanager
async def two_workers(
    dsn: str, writer: Writer, durability: Durability = "sync"
) -> AsyncIterator[tuple[PostgresJournal, PostgresJournal]]:
    async with trio.open_nursery() as nursery:
        journals = tuple(
            PostgresJournal(
                JournalDatabase(dsn), worker=worker, writer=writer, durability=durability
            )
            for worker in (0, 1)
        )
        for journal in journals:
            await nursery.start(journal.run)
        yield journals
        nursery.cancel_scope.cancel()


def _rows(dsn: str, statement: str, *parameters: object) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as connection:
        return connection.execute(statement, parameters).fetchall()


def _sale(rrn: str, stan: str, **fields: Any) -> TxnRecord:
    return make_record(rrn, stan=stan, state="sending", **fields)


@pytest.mark.parametrize("writer", WRITERS)
async def test_a_second_start_of_one_pos_request_is_refused_and_its_group_commits(
    postgres_dsn: str, writer: Writer
) -> None:
    async with two_workers(postgres_dsn, writer) as (here, there):
        first = _sale("632600000001", "000077")
        await here.commit(TxnStarted.of(first, 100.0))
        repeat = _sale("632600000102", "000077")  # the same request, at the other worker
        others = [
            TxnStarted.of(_sale("632600000104", "000078"), 101.0),
            TxnStarted.of(_sale("632600000106", "000077", channel="online"), 101.0),
            TxnStarted.of(_sale("632600000108", "000077", local_date="1123"), 101.0),
        ]
        refused: list[RequestRepeated] = []
        apart: list[int] = []  # groups committed caller by caller, and how many callers
        one_by_one = there._commit_one_by_one

        async def spied(groups: list[Any]) -> None:
            apart.append(len(groups))
            await one_by_one(groups)

        there._commit_one_by_one = spied  # type: ignore[method-assign]

        async def start_repeat() -> None:
            with pytest.raises(RequestRepeated) as raised:
                await there.commit(TxnStarted.of(repeat, 101.0))
            refused.append(raised.value)

        async with trio.open_nursery() as nursery:  # one group: the writer takes them all
            nursery.start_soon(there.commit, others[0])
            nursery.start_soon(start_repeat)
            for change in others[1:]:
                nursery.start_soon(there.commit, change)
        [error] = refused
        assert apart == [1 + len(others)]
        assert error.key == first.request_key
        assert "terminal POS00001" in str(error) and "STAN 000077" in str(error)
        stats = there.statistics()
        assert (stats.failures, stats.writable) == (0, True)
        assert stats.changes == len(others)
        # The repeat wrote nothing; everyone else's rows are there.
        rrns = {row["rrn"] for row in _rows(postgres_dsn, "SELECT rrn FROM txn")}
        assert repeat.rrn not in rrns  # nor its history, kept in its row
        assert rrns == {first.rrn} | {change.record.rrn for change in others}
        # The journal goes on: the next commit of that worker is fine.
        await there.commit(TxnUpdated.of(others[0].record, 102.0))


@pytest.mark.parametrize("writer", WRITERS)
async def test_a_first_that_never_reached_a_bank_may_be_started_again(
    postgres_dsn: str, writer: Writer
) -> None:
    async with two_workers(postgres_dsn, writer) as (here, there):
        first = _sale("632600000001", "000077")
        await here.commit(TxnStarted.of(first, 100.0))
        first.state, first.code = "not_sent", "91"
        await here.commit(TxnUpdated.of(first, 100.5, "every link is down"))
        again = _sale("632600000102", "000077")
        await there.commit(TxnStarted.of(again, 101.0))
        # Sent this time: a third start of it is refused, at either worker.
        for journal in (here, there):
            with pytest.raises(RequestRepeated):
                await journal.commit(TxnStarted.of(_sale("632600000203", "000077"), 102.0))
    states = _rows(postgres_dsn, "SELECT rrn, state FROM txn ORDER BY rrn")
    assert states == [
        {"rrn": first.rrn, "state": "not_sent"}, {"rrn": again.rrn, "state": "sending"}
    ]


async def test_a_repeat_is_refused_with_async_durability_too(postgres_dsn: str) -> None:
    """Its caller must know before it sends anything: the start of a POS request is
    waited for whatever the durability."""
    async with two_workers(postgres_dsn, "loop", durability="async") as (here, there):
        await here.commit(TxnStarted.of(_sale("632600000001", "000077"), 100.0))
        with pytest.raises(RequestRepeated):
            await there.commit(TxnStarted.of(_sale("632600000102", "000077"), 101.0))


async def test_a_journal_already_holding_a_repeat_twice_refuses_the_upgrade_in_one_line(
    postgres_dsn: str,
) -> None:
    async with two_workers(postgres_dsn, "loop"):
        pass  # migrated
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("DROP INDEX txn_pos_request")
        connection.execute("UPDATE journal_schema_version SET version = 3")
    # What a version without the index let happen: one request sent by both workers.
    database = JournalDatabase(postgres_dsn)
    for rrn in ("632600000001", "632600000102"):
        database.apply(sql.writes_of(TxnStarted.of(_sale(rrn, "000077"), 100.0)))
    database.close()
    with pytest.raises(JournalUnavailable) as refused:
        await PostgresJournal(JournalDatabase(postgres_dsn)).run()
    message = str(refused.value)
    assert "\n" not in message
    assert "two POS requests of one identity" in message and "(POS00001, " in message
