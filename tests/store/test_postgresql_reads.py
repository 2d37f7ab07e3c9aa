"""The PostgreSQL journal's reads from the event loop (``pipeline.LoopReader``): no
thread asked once connected, the server's refusal as JournalError with the connection
kept, a connection lost mid-read opened again, and a read cancelled mid-flight leaving
nothing behind for the next. It is the journal's by default, so the port's contract
(``test_journal_port.py``) runs on it too.

A read is held on the server by a lock on ``txn`` taken by another session, so that
the test can act while it is in flight."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
import trio
from psycopg.rows import dict_row

from switch.core.book import TxnRecord
from switch.store.port import JournalError, TxnStarted
from switch.store.postgresql import JournalDatabase, PostgresJournal
from tests.store.records import make_record

FIRST, SECOND = "632600000001", "632600000002"


def stored(rrn: str) -> TxnRecord:
    """A record as the journal reads it back: journaled at 100.0, received then."""
    return make_record(rrn, received_at=100.0)


@pytest.fixture
async def journal(postgres_dsn: str) -> AsyncIterator[PostgresJournal]:
    """A journal of one read connection (each read takes the one the last read used),
    with two sales in it."""
    async with trio.open_nursery() as nursery:
        journal = PostgresJournal(JournalDatabase(postgres_dsn, read_connections=1))
        await nursery.start(journal.run)
        await journal.commit(
            TxnStarted.of(make_record(FIRST), 100.0), TxnStarted.of(make_record(SECOND), 100.0)
        )
        assert (await journal.transaction_by_rrn(FIRST)) is not None  # connected
        yield journal
        nursery.cancel_scope.cancel()


def _rows(dsn: str, statement: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row, autocommit=True) as connection:
        return connection.execute(statement).fetchall()


def _reader_pids(dsn: str) -> list[int]:
    """The server processes whose last query was a look-up by RRN: the reader's."""
    rows = _rows(
        dsn,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'switch-journal' AND query LIKE '%FROM txn WHERE rrn = $1'",
    )
    return [row["pid"] for row in rows]


@contextmanager
def _txn_locked(dsn: str) -> Iterator[None]:
    """``txn`` locked by another session: a read of it waits on the server until the
    block ends."""
    with psycopg.connect(dsn) as connection:
        connection.execute("LOCK TABLE txn IN ACCESS EXCLUSIVE MODE")
        yield
        connection.rollback()


async def _waiting_read(dsn: str) -> int:
    """The server process of the read waiting for the lock, once it waits."""
    with trio.fail_after(10):
        while True:
            rows = _rows(
                dsn, "SELECT pid FROM pg_locks WHERE NOT granted AND relation = 'txn'::regclass"
            )
            if rows:
                return int(rows[0]["pid"])
            await trio.sleep(0.01)


async def test_reads_ask_no_thread_once_connected(
    journal: PostgresJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_thread(*_: object, **__: object) -> None:
        raise AssertionError("a read ran in a thread")

    record = stored(SECOND)
    with monkeypatch.context() as patched:  # the journal's closing may use one
        patched.setattr(trio.to_thread, "run_sync", no_thread)
        assert await journal.transaction_by_rrn(SECOND) == record
        found = await journal.transaction_by_trace(
            record.terminal_id, record.merchant_id, record.batch, record.stan
        )
        assert found == record
        assert await journal.transaction_by_online_id(record.merchant_id, "none") is None
        assert await journal.online_result(record.merchant_id, "none") is None


async def test_a_read_the_server_refuses_fails_and_its_connection_serves_the_next(
    journal: PostgresJournal, postgres_dsn: str
) -> None:
    (pid,) = _reader_pids(postgres_dsn)
    with _txn_locked(postgres_dsn):
        async with trio.open_nursery() as nursery:

            async def refused() -> None:
                with pytest.raises(JournalError, match="journal read failed: canceling statement"):
                    await journal.transaction_by_rrn(SECOND)

            nursery.start_soon(refused)
            assert await _waiting_read(postgres_dsn) == pid
            _rows(postgres_dsn, f"SELECT pg_cancel_backend({pid})")  # the server's error
    assert await journal.transaction_by_rrn(SECOND) == stored(SECOND)
    assert _reader_pids(postgres_dsn) == [pid]  # the same connection


async def test_a_connection_lost_mid_read_fails_that_read_and_the_next_reconnects(
    journal: PostgresJournal, postgres_dsn: str
) -> None:
    (pid,) = _reader_pids(postgres_dsn)
    with _txn_locked(postgres_dsn):
        async with trio.open_nursery() as nursery:

            async def lost() -> None:
                with pytest.raises(JournalError, match="journal read failed"):
                    await journal.transaction_by_rrn(SECOND)

            nursery.start_soon(lost)
            await _waiting_read(postgres_dsn)
            _rows(postgres_dsn, f"SELECT pg_terminate_backend({pid})")
    assert await journal.transaction_by_rrn(SECOND) == stored(SECOND)
    (again,) = _reader_pids(postgres_dsn)
    assert again != pid


async def test_a_read_cancelled_in_flight_leaves_no_answer_for_the_next(
    journal: PostgresJournal, postgres_dsn: str
) -> None:
    (pid,) = _reader_pids(postgres_dsn)
    with _txn_locked(postgres_dsn):
        async with trio.open_nursery() as nursery:

            async def abandoned() -> None:
                await journal.transaction_by_rrn(FIRST)
                raise AssertionError("not cancelled")

            nursery.start_soon(abandoned)
            await _waiting_read(postgres_dsn)
            nursery.cancel_scope.cancel()
    # The cancelled read's answer (FIRST) is never taken for this one's.
    assert await journal.transaction_by_rrn(SECOND) == stored(SECOND)
    assert await journal.transaction_by_rrn(FIRST) == stored(FIRST)
    assert pid not in _reader_pids(postgres_dsn)  # its connection was closed


async def test_reads_in_flight_at_once_each_get_their_own_answer(postgres_dsn: str) -> None:
    async with trio.open_nursery() as nursery:
        journal = PostgresJournal(JournalDatabase(postgres_dsn))
        await nursery.start(journal.run)
        rrns = [f"6326{index:08d}" for index in range(20)]
        await journal.commit(*(TxnStarted.of(make_record(rrn), 100.0) for rrn in rrns))
        found: dict[str, Any] = {}

        async def read(rrn: str) -> None:
            found[rrn] = await journal.transaction_by_rrn(rrn)

        async with trio.open_nursery() as readers:
            for rrn in rrns:
                readers.start_soon(read, rrn)
        assert found == {rrn: stored(rrn) for rrn in rrns}
        nursery.cancel_scope.cancel()


async def test_a_read_whose_prepared_statement_the_server_refuses_is_prepared_again(
    journal: PostgresJournal, postgres_dsn: str
) -> None:
    """A column's type changed under a running switch: the server refuses the statement
    prepared before (its result type changed) once, and the next read prepares it anew."""
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("ALTER TABLE txn ALTER COLUMN auth_code TYPE varchar(6)")
    with pytest.raises(JournalError, match="cached plan must not change result type"):
        await journal.transaction_by_rrn(SECOND)
    assert await journal.transaction_by_rrn(SECOND) == stored(SECOND)
