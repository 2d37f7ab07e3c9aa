"""What the PostgreSQL journal does beyond the port's contract: its start-up refusals,
its durability setting, coming back after the server dropped it, and its config."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import psycopg
import pytest
import trio
from psycopg.conninfo import conninfo_to_dict

from switch.errors import ConfigError
from switch.store import journal_dsn, journal_problem, open_journal
from switch.store.port import JournalError, JournalUnavailable, TxnStarted
from switch.store.postgresql import JournalDatabase, PostgresJournal, describe_dsn
from switch.store.postgresql.journal import DatabaseLock
from tests.conftest import make_config
from tests.store.records import make_record


@pytest.fixture
async def journal(postgres_dsn: str) -> AsyncIterator[PostgresJournal]:
    async with trio.open_nursery() as nursery:
        journal = PostgresJournal(JournalDatabase(postgres_dsn))
        await nursery.start(journal.run)
        yield journal
        nursery.cancel_scope.cancel()


def _admin(dsn: str, statement: str) -> None:
    """Runs a statement on the test's database; ``{database}`` in it names that database."""
    database = conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(statement.format(database=f'"{database}"'))


async def test_commits_wait_for_the_wal_flush(postgres_dsn: str) -> None:
    _admin(postgres_dsn, "ALTER DATABASE {database} SET synchronous_commit = off")
    with JournalDatabase(postgres_dsn).connect() as connection:
        row = connection.execute("SHOW synchronous_commit").fetchone()
    assert row == {"synchronous_commit": "on"}  # whatever the database's default


async def test_a_read_only_database_refuses_the_start(postgres_dsn: str) -> None:
    _admin(postgres_dsn, "ALTER DATABASE {database} SET default_transaction_read_only = on")
    journal = PostgresJournal(JournalDatabase(postgres_dsn))
    with pytest.raises(JournalUnavailable, match=r"cannot be written: .*read-only"):
        await journal.run()


async def test_a_database_of_a_newer_switch_refuses_the_start(postgres_dsn: str) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(PostgresJournal(JournalDatabase(postgres_dsn)).run)
        nursery.cancel_scope.cancel()
    _admin(postgres_dsn, "UPDATE journal_schema_version SET version = 99")
    with pytest.raises(JournalUnavailable, match="version 99 is newer"):
        await PostgresJournal(JournalDatabase(postgres_dsn)).run()


async def test_an_unreachable_server_names_the_database_never_the_password() -> None:
    dsn = "host=127.0.0.1 port=1 dbname=journal user=switch password=hunter2"
    with pytest.raises(JournalUnavailable) as refused:
        await PostgresJournal(JournalDatabase(dsn)).run()
    message = str(refused.value)
    assert "port=1 dbname=journal" in message and "hunter2" not in message
    assert "hunter2" not in describe_dsn("postgresql://switch:hunter2@db.example/journal")


async def test_the_journal_comes_back_when_the_server_dropped_its_connections(
    journal: PostgresJournal, postgres_dsn: str
) -> None:
    """A server restarted (or failed over) ends every connection: what is asked then
    fails (96), and the journal reconnects on the next commit and read by itself."""
    await journal.commit(TxnStarted.of(make_record("632600000001"), 100.0))
    assert await journal.transaction_by_rrn("632600000001") is not None
    _admin(
        postgres_dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'switch-journal' AND datname = current_database()",
    )
    failed = 0
    for index in range(2, 5):
        try:
            await journal.commit(TxnStarted.of(make_record(f"63260000000{index}"), 100.0))
        except JournalError:
            failed += 1
    assert failed <= 1  # the one commit that found its connection gone
    for _ in range(2):  # likewise the reader, once
        try:
            found = await journal.transaction_by_rrn("632600000004")
        except JournalError:
            continue
        assert found is not None
        break
    else:
        raise AssertionError("reads did not come back")
    assert journal.statistics().writable


def test_a_postgresql_journal_without_a_dsn_is_a_config_problem() -> None:
    with pytest.raises(ConfigError, match=r"^journal\.dsn: backend postgresql needs a dsn"):
        make_config(journal={"backend": "postgresql"})


def test_the_dsn_comes_from_its_variable_when_it_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    section = make_config(
        journal={"backend": "postgresql", "dsn": "dbname=fallback", "dsn_env": "SWITCH_TEST_DSN"}
    ).journal
    monkeypatch.delenv("SWITCH_TEST_DSN", raising=False)
    assert journal_dsn(section) == "dbname=fallback"
    monkeypatch.setenv("SWITCH_TEST_DSN", "dbname=from_env")
    assert journal_dsn(section) == "dbname=from_env"
    only_env = make_config(journal={"backend": "postgresql", "dsn_env": "SWITCH_TEST_DSN"})
    monkeypatch.delenv("SWITCH_TEST_DSN")
    with pytest.raises(ConfigError, match=r"journal\.dsn_env: the variable SWITCH_TEST_DSN"):
        journal_dsn(only_env.journal)


def test_the_backend_picks_the_engine(postgres_dsn: str) -> None:
    config = make_config(journal={"backend": "postgresql", "dsn": postgres_dsn})
    assert isinstance(open_journal(config), PostgresJournal)
    assert journal_problem(config) is None
    unreachable = make_config(journal={"backend": "postgresql", "dsn": "host=127.0.0.1 port=1"})
    problem = journal_problem(unreachable)
    assert problem is not None and problem.startswith("journal postgresql (host=127.0.0.1 port=1")


def test_a_second_switch_on_the_database_is_refused_naming_the_first(postgres_dsn: str) -> None:
    first = DatabaseLock(postgres_dsn, wait_s=0.1)
    first.acquire()
    config = make_config(journal={"backend": "postgresql", "dsn": postgres_dsn})
    try:
        second = DatabaseLock(postgres_dsn, wait_s=0.1)
        with pytest.raises(
            JournalUnavailable, match=rf"in use by another switch \(switch-lock pid {os.getpid()}"
        ):
            second.acquire()
        problem = journal_problem(config)
        assert problem is not None and "in use by another switch" in problem
    finally:
        first.release()
    assert journal_problem(config) is None
    again = DatabaseLock(postgres_dsn, wait_s=0.1)
    again.acquire()  # released with its connection
    again.release()
