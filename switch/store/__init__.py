"""Durable state behind the journal port (``port.py``): one module per engine, card
data at rest (``crypto.py``)."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from switch.config import JournalSection, SwitchConfig
from switch.errors import ConfigError
from switch.store.port import (
    Journal,
    JournalError,
    JournalLock,
    JournalUnavailable,
    OperatorJournal,
)

if TYPE_CHECKING:
    from switch.store.ledger_store import LedgerStoreBase
    from switch.store.nonces import NonceStore
    from switch.store.settlement_port import SettlementStore


def journal_dsn(section: JournalSection) -> str:
    """The PostgreSQL journal's DSN: ``dsn_env``'s variable when it is set, else ``dsn``;
    ConfigError naming the key when neither gives one."""
    if section.dsn_env:
        from_environment = os.environ.get(section.dsn_env)
        if from_environment:
            return from_environment
        if not section.dsn:
            raise ConfigError(
                f"journal.dsn_env: the variable {section.dsn_env} is not set (and no dsn)"
            )
    if not section.dsn:
        raise ConfigError("journal.dsn: backend postgresql needs a dsn (or dsn_env)")
    return section.dsn


def open_journal(config: SwitchConfig, worker: int = 0) -> Journal:
    """The journal the config names (not yet running: run it in a nursery), written
    as ``worker`` (its index among the switch's workers)."""
    section = config.journal
    if section.backend == "postgresql":
        from switch.store.postgresql import JournalDatabase, PostgresJournal

        return PostgresJournal(
            JournalDatabase(journal_dsn(section)),
            durability=section.durability,
            queue_size=section.queue_size,
            max_group=section.max_group,
            worker=worker,
        )
    from switch.store.sqlite import JournalFile, SqliteJournal

    return SqliteJournal(
        JournalFile(config.path(section.path)),
        durability=section.durability,
        queue_size=section.queue_size,
        max_group=section.max_group,
    )


def lock_journal(config: SwitchConfig, worker: int = 0) -> JournalLock:
    """Locks the journal the config names for this process's life, before it is opened:
    JournalUnavailable if another switch holds it (or its folder cannot be written). On
    PostgreSQL the lock is ``worker``'s: each of the switch's workers holds its own."""
    if config.journal.backend == "postgresql":
        from switch.store.postgresql.journal import DatabaseLock

        database_lock = DatabaseLock(journal_dsn(config.journal), worker=worker)
        database_lock.acquire()
        return database_lock
    from switch.store.sqlite import LockFile

    lock = LockFile(config.path(config.journal.path))
    lock.acquire()
    return lock


def lock_host(config: SwitchConfig) -> JournalLock | None:
    """With ``[switch] hosts`` > 1, the host's claim on the shared journal, held by its
    supervisor (or its one process) for its life: JournalUnavailable when another
    switch holds the same ``host_id``. None for a switch alone on its journal."""
    if config.switch.hosts == 1 or config.journal.backend != "postgresql":
        return None
    from switch.store.postgresql.journal import HOST_LOCK_KEY, DatabaseLock

    host_id = config.switch.host_id
    lock = DatabaseLock(journal_dsn(config.journal), worker=host_id, key=HOST_LOCK_KEY)
    try:
        lock.acquire()
    except JournalUnavailable as exc:
        raise JournalUnavailable(
            f"[switch] host_id {host_id} is taken: another switch on this journal runs as "
            f"host {host_id} ({exc}); give each host its own host_id"
        ) from None
    return lock


def journal_problem(config: SwitchConfig) -> str | None:
    """Why ``switch run`` could not take the journal the config names now, or None;
    without creating or locking anything."""
    if config.journal.backend == "postgresql":
        from switch.store.postgresql.journal import database_problem

        if not (config.journal.dsn or config.journal.dsn_env):
            return None  # a problem of the config's, which config_problems names
        try:
            dsn = journal_dsn(config.journal)
        except ConfigError as exc:
            return str(exc)
        return database_problem(dsn)
    from switch.store.sqlite import LockFile

    return LockFile(config.path(config.journal.path)).check()


def claim_clock(config: SwitchConfig, kind: str) -> str:
    """Marks the journal the config names (opened: migrated) with the kind of business
    clock it runs on (``real`` or ``simulated``) the first time; returns the kind it is
    marked with. JournalError if it cannot be read."""
    if config.journal.backend == "postgresql":
        import psycopg

        from switch.store.postgresql import JournalDatabase
        from switch.store.postgresql import schema as postgresql_schema

        try:
            with JournalDatabase(journal_dsn(config.journal)).connect() as database:
                return postgresql_schema.claim_clock(database, kind)
        except psycopg.Error as exc:
            raise JournalError(f"the journal's clock cannot be read: {exc}") from exc
    import sqlite3

    from switch.store.sqlite import schema as sqlite_schema

    try:
        with contextlib.closing(sqlite3.connect(config.path(config.journal.path))) as connection:
            connection.execute("PRAGMA busy_timeout = 10000")
            return sqlite_schema.claim_clock(connection, kind)
    except sqlite3.Error as exc:
        raise JournalError(f"the journal's clock cannot be read: {exc}") from exc


def open_operator_journal(config: SwitchConfig) -> OperatorJournal:
    """The journal the config names, for an operator's command."""
    if config.journal.backend == "postgresql":
        from switch.store.postgresql.operator import PostgresOperatorJournal

        return PostgresOperatorJournal(journal_dsn(config.journal))
    from switch.store.sqlite import SqliteOperatorJournal

    return SqliteOperatorJournal(config.path(config.journal.path))


def open_settlement_store(config: SwitchConfig) -> SettlementStore:
    """The settlement store the config names (not yet open): a SQLite file beside a
    SQLite journal (which it attaches), or tables in a PostgreSQL journal's database."""
    if config.journal.backend == "postgresql":
        from switch.store.postgresql.settlement import PostgresSettlementStore

        return PostgresSettlementStore(journal_dsn(config.journal))
    from switch.store.sqlite.settlement import SqliteSettlementStore

    return SqliteSettlementStore(config.settlement_db_path(), config.path(config.journal.path))


def open_ledger_store(config: SwitchConfig) -> LedgerStoreBase:
    """The ledger store the config names (not yet open): ``ledger.sqlite3`` beside a
    SQLite journal, or tables in a PostgreSQL journal's database."""
    if config.journal.backend == "postgresql":
        from switch.store.postgresql.ledger import PostgresLedgerStore

        return PostgresLedgerStore(journal_dsn(config.journal))
    from switch.store.sqlite.ledger import SqliteLedgerStore

    return SqliteLedgerStore(config.path(config.journal.path).with_name("ledger.sqlite3"))


def open_nonce_store(config: SwitchConfig) -> NonceStore:
    """Where the online envelopes' nonces are kept: the journal's database (not yet
    open: open it in a thread)."""
    from switch.store.nonces import PostgresNonces, SqliteNonces

    if config.journal.backend == "postgresql":
        return PostgresNonces(journal_dsn(config.journal))
    return SqliteNonces(config.path(config.journal.path))
