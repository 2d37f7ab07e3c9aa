"""The PostgreSQL journal's group commit from the event loop (``pipeline.LoopWriter``):
the rows the writer thread writes, the server's refusals as JournalError, and a
connection the server dropped opened again. It is the journal's by default, so the
port's contract (``test_journal_port.py``) and the engine's own tests run on it too."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import trio
from psycopg.rows import dict_row

from switch.store.port import JournalError, TxnStarted, TxnUpdated
from switch.store.postgresql import JournalDatabase, PostgresJournal
from switch.store.postgresql.journal import Writer
from switch.store.postgresql.pipeline import numbered
from tests.conftest import PostgresServer
from tests.store.records import make_record


@pytest.fixture
async def loop_journal(postgres_dsn: str) -> AsyncIterator[PostgresJournal]:
    async with trio.open_nursery() as nursery:
        journal = PostgresJournal(JournalDatabase(postgres_dsn), writer="loop")
        await nursery.start(journal.run)
        yield journal
        nursery.cancel_scope.cancel()


def _rows(dsn: str, statement: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as connection:
        return connection.execute(statement).fetchall()


async def _sale_through(writer: Writer, dsn: str) -> None:
    """A sale's two commits, at fixed times, through a journal with that writer."""
    record = make_record("632600000001", amount=123456, pan_hmac=b"\x00\xff" * 16)
    async with trio.open_nursery() as nursery:
        journal = PostgresJournal(JournalDatabase(dsn), writer=writer)
        await nursery.start(journal.run)
        await journal.commit(TxnStarted.of(record, 100.25))
        record.state, record.code, record.auth_code = "approved", "00", "A1B2C3"
        record.balance = "1001156C000000012345"
        await journal.commit(TxnUpdated.of(record, 101.5, "answered"))
        assert await journal.transaction_by_rrn(record.rrn) == record
        nursery.cancel_scope.cancel()


async def test_a_sale_writes_the_same_rows_from_the_loop_as_from_the_thread(
    postgres_server: PostgresServer,
) -> None:
    by_thread, by_loop = postgres_server.create_database(), postgres_server.create_database()
    await _sale_through("thread", by_thread)
    await _sale_through("loop", by_loop)
    for table in ("txn",):  # its history included (the row's events)
        rows = _rows(by_loop, f"SELECT * FROM {table} ORDER BY 1")
        assert rows and rows == _rows(by_thread, f"SELECT * FROM {table} ORDER BY 1")


async def test_a_statement_the_server_refuses_fails_its_whole_group(
    loop_journal: PostgresJournal,
) -> None:
    await loop_journal.commit(TxnStarted.of(make_record("632600000001"), 100.0))
    twice = TxnStarted.of(make_record("632600000001"), 101.0)  # its rrn is taken
    with pytest.raises(JournalError, match="journal commit failed: duplicate key"):
        await loop_journal.commit(TxnStarted.of(make_record("632600000002"), 101.0), twice)
    assert await loop_journal.transaction_by_rrn("632600000002") is None  # none of the group
    await loop_journal.commit(TxnStarted.of(make_record("632600000003"), 102.0))
    assert await loop_journal.transaction_by_rrn("632600000003") is not None
    statistics = loop_journal.statistics()
    assert statistics.failures == 1 and statistics.writable


async def test_a_dropped_connection_fails_one_commit_and_is_opened_again(
    loop_journal: PostgresJournal, postgres_dsn: str
) -> None:
    await loop_journal.commit(TxnStarted.of(make_record("632600000001"), 100.0))
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'switch-journal' AND datname = current_database()"
        )
    with pytest.raises(JournalError, match="journal commit failed"):
        await loop_journal.commit(TxnStarted.of(make_record("632600000002"), 101.0))
    await loop_journal.commit(TxnStarted.of(make_record("632600000003"), 102.0))
    rows = _rows(postgres_dsn, "SELECT rrn FROM txn ORDER BY rrn")
    assert [row["rrn"] for row in rows] == ["632600000001", "632600000003"]


def test_placeholders_become_the_servers_own() -> None:
    assert numbered("UPDATE t SET a = %s WHERE b = %s") == b"UPDATE t SET a = $1 WHERE b = $2"
    assert numbered("DELETE FROM t") == b"DELETE FROM t"
    with pytest.raises(ValueError, match="only %s"):
        numbered("SELECT %(named)s")


async def test_a_large_group_of_mixed_parameter_types_commits_whole(
    loop_journal: PostgresJournal, postgres_dsn: str
) -> None:
    """More statements than go out between two turns of the loop and than the socket
    takes at once (its send buffer made small), and amounts whose types differ (int2,
    int4, int8: each a statement prepared of its own), twice."""
    await loop_journal.commit(TxnStarted.of(make_record("632699999999"), 99.0))
    writer = loop_journal.database.writer()  # the loop's connection, open now
    with socket.socket(fileno=os.dup(writer.pgconn.socket)) as shared:
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    amounts = [7, 40_000, 3_000_000_000]
    for first in (0, 300):
        started = [
            TxnStarted.of(make_record(f"6326{index:08d}", amount=amounts[index % 3]), 100.0)
            for index in range(first, first + 300)
        ]
        await loop_journal.commit(*started)
    rows = _rows(
        postgres_dsn,
        "SELECT amount, count(*) AS n FROM txn WHERE rrn < '632699999999' GROUP BY 1 ORDER BY 1",
    )
    assert rows == [{"amount": amount, "n": 200} for amount in amounts]
    assert loop_journal.statistics().commits == 3
