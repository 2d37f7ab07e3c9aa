"""The ledger store on PostgreSQL (``switch/store/ledger_store.py``, over the statements
of ``switch/store/ledger_sql.py``), in the journal's own database, shared by every
worker: each worker's store has a connection of its own.

Two workers debiting one wallet at the same moment take turns on its rows: a step
locks what it changes (``SELECT ... FOR UPDATE``: the wallet, the transfer, then the two
accounts in the order of their names) and decides on what it read under the lock, in
READ COMMITTED (each statement sees what committed before it). The accounts' CHECK
constraints hold a wallet at or above zero whatever a step decided. A deadlock, or a
transfer key another worker inserted first, runs the step again.

Plain blocking calls: the trio layer runs them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, TypeAlias

import psycopg
from psycopg.rows import DictRow, dict_row

from switch.store.credit_sql import credit_sql
from switch.store.ledger_port import Fault, LedgerUnavailable
from switch.store.ledger_sql import ledger_sql, migrations
from switch.store.ledger_store import LedgerStoreBase, Parameters, Row
from switch.store.postgresql.sql import DIALECT

Connection: TypeAlias = psycopg.Connection[DictRow]

CONNECT_TIMEOUT_S: Final = 5
APPLICATION_NAME: Final = "switch-ledger"
_MIGRATION_LOCK: Final = 0x5357_4C47  # "SWLG"
MIGRATIONS: Final[tuple[str, ...]] = migrations(DIALECT)
SCHEMA_VERSION: Final = len(MIGRATIONS)
SQL: Final = ledger_sql(DIALECT, lock=" FOR UPDATE")


def _cause(exc: BaseException) -> str:
    return str(exc).strip().replace("\n", " ") or type(exc).__name__


def _migrate(connection: Connection) -> None:
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        connection.execute(
            "CREATE TABLE IF NOT EXISTS ledger_schema_version (version INTEGER NOT NULL)"
        )
        row = connection.execute(
            "SELECT coalesce(max(version), 0) AS version FROM ledger_schema_version"
        ).fetchone()
        version = 0 if row is None else int(row["version"])
        if version > SCHEMA_VERSION:
            raise LedgerUnavailable(
                f"ledger store schema {version} is newer than this switch ({SCHEMA_VERSION})"
            )
        for number in range(version, SCHEMA_VERSION):
            connection.execute(MIGRATIONS[number])
            connection.execute("DELETE FROM ledger_schema_version")
            connection.execute(
                "INSERT INTO ledger_schema_version (version) VALUES (%s)", (number + 1,)
            )


class PostgresLedgerStore(LedgerStoreBase):
    sql = SQL
    errors = (psycopg.Error,)
    retry = (
        psycopg.errors.DeadlockDetected,
        psycopg.errors.SerializationFailure,
        psycopg.errors.UniqueViolation,
    )
    credit = credit_sql(DIALECT, lock=" FOR UPDATE")
    label = "ledger store (postgresql)"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._connection: Connection | None = None
        self.fault: Fault | None = None

    def _connect(self) -> Connection:
        return psycopg.connect(
            self.dsn,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=APPLICATION_NAME,
        )

    def open(self) -> None:
        """Connects and migrates; LedgerUnavailable naming the cause (never the password)."""
        try:
            connection = self._connect()
        except psycopg.Error as exc:
            raise LedgerUnavailable(f"ledger store (postgresql): {_cause(exc)}") from exc
        try:
            _migrate(connection)
        except psycopg.Error as exc:
            connection.close()
            raise LedgerUnavailable(f"ledger store (postgresql): {_cause(exc)}") from exc
        except LedgerUnavailable:
            connection.close()
            raise
        self._connection = connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @property
    def _db(self) -> Connection:
        """The store's connection, opened again if the server dropped the last one."""
        connection = self._connection
        if connection is None:
            raise LedgerUnavailable("the ledger store is not open")
        if connection.broken or connection.closed:
            connection.close()
            try:
                connection = self._connection = self._connect()
            except psycopg.Error as exc:
                raise LedgerUnavailable(f"ledger store (postgresql): {_cause(exc)}") from exc
        return connection

    def _execute(self, statement: str, parameters: Parameters = ()) -> list[Row]:
        cursor = self._db.execute(statement, parameters)
        return list(cursor.fetchall()) if cursor.description is not None else []

    def _change(self, statement: str, parameters: Parameters = ()) -> int:
        return self._db.execute(statement, parameters).rowcount

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._db.transaction():
            yield

    @staticmethod
    def _cause(exc: BaseException) -> str:
        return _cause(exc)
