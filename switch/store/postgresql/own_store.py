"""What a store of its own in the journal's PostgreSQL database (settlement's, the
ledger's) does the same way: one autocommit connection, opened again when the server
dropped it; versioned migrations under an advisory lock, so that workers starting
together migrate once. Plain blocking calls: the trio layer runs them in a thread."""

from __future__ import annotations

from typing import ClassVar, Final, TypeAlias

import psycopg
from psycopg.rows import DictRow, dict_row

Connection: TypeAlias = psycopg.Connection[DictRow]

CONNECT_TIMEOUT_S: Final = 5


def cause(exc: BaseException) -> str:
    """An error's text on one line (psycopg's name the server's words, never the DSN)."""
    return str(exc).strip().replace("\n", " ") or type(exc).__name__


def migrate(
    connection: Connection,
    migrations: tuple[str, ...],
    *,
    name: str,
    lock: int,
    error: type[Exception],
) -> None:
    """Applies the migrations ``<name>_schema_version`` lacks, each with its version,
    in one transaction under the advisory lock ``lock``; ``error`` for a newer schema."""
    table = f"{name}_schema_version"
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
        connection.execute(f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER NOT NULL)")
        row = connection.execute(
            f"SELECT coalesce(max(version), 0) AS version FROM {table}"
        ).fetchone()
        version = 0 if row is None else int(row["version"])
        if version > len(migrations):
            raise error(
                f"{name} store schema {version} is newer than this switch ({len(migrations)})"
            )
        for number in range(version, len(migrations)):
            connection.execute(migrations[number])
            connection.execute(f"DELETE FROM {table}")
            connection.execute(f"INSERT INTO {table} (version) VALUES (%s)", (number + 1,))


class OwnConnection:
    """The connection of a store of its own: ``open`` connects and migrates, ``_db``
    is the connection (connected again if the server dropped it), each failure the
    store's ``store_error`` naming the store and the cause."""

    store_name: ClassVar[str]
    """``settlement``, ``ledger``: in errors, the version table and the session's name."""
    store_error: ClassVar[type[Exception]]
    migrations: ClassVar[tuple[str, ...]]
    migration_lock: ClassVar[int]
    application_name: ClassVar[str]
    """The session's name on the server (``pg_stat_activity``)."""

    dsn: str
    _connection: Connection | None

    def _connect(self) -> Connection:
        return psycopg.connect(
            self.dsn,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=self.application_name,
        )

    def _failed(self, exc: BaseException) -> Exception:
        return self.store_error(f"{self.store_name} store (postgresql): {cause(exc)}")

    def open(self) -> None:
        """Connects and migrates; the store's error naming the cause (never the password)."""
        try:
            connection = self._connect()
        except psycopg.Error as exc:
            raise self._failed(exc) from exc
        try:
            migrate(
                connection, self.migrations, name=self.store_name, lock=self.migration_lock,
                error=self.store_error,
            )  # fmt: skip
        except psycopg.Error as exc:
            connection.close()
            raise self._failed(exc) from exc
        except self.store_error:
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
            raise self.store_error(f"the {self.store_name} store is not open")
        if connection.broken or connection.closed:
            connection.close()
            try:
                connection = self._connection = self._connect()
            except psycopg.Error as exc:
                raise self._failed(exc) from exc
        return connection

    @staticmethod
    def _cause(exc: BaseException) -> str:
        return cause(exc)
