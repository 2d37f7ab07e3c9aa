"""The online envelopes' nonces, in the journal's database (security.md: a nonce counts,
across all the switch's processes, once it passes; refused again with its key for 10
minutes).

One table, ``online_nonces`` (key id, nonce, when accepted), beside the journal's on
either engine, made here if missing (it holds nothing that outlives ten minutes, so it
takes no part in the journal's migrations). Where workers share the database
(PostgreSQL), a claim is an insert that either adds the nonce or finds it accepted
within ``memory_s``: one statement decides, so two workers that get the same envelope
at once cannot both accept it. A switch of one process (SQLite: its journal is one
process's) decides in memory and writes its nonces here behind, for its next start
(``remember``, ``recent``), so no claim waits for the journal's write lock. Rows
older than ``memory_s`` are purged; the table is bounded by the request rate times ten
minutes.

Claims are not made durable on their own (SQLite ``synchronous = OFF`` on this
connection, PostgreSQL ``synchronous_commit = off``): a crash may forget the last few
milliseconds' nonces, while every envelope still has to pass the ±300 s timestamp check;
in exchange a claim never waits for a disk flush. Plain blocking calls, for a thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from switch.store.port import JournalError

SQLITE_TABLE = """
CREATE TABLE IF NOT EXISTS online_nonces (
    key_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    accepted_at REAL NOT NULL,
    PRIMARY KEY (key_id, nonce)
) WITHOUT ROWID
"""
SQLITE_CLAIM = """
INSERT INTO online_nonces (key_id, nonce, accepted_at) VALUES (?, ?, ?)
ON CONFLICT (key_id, nonce) DO UPDATE SET accepted_at = excluded.accepted_at
WHERE online_nonces.accepted_at < ?
"""
SQLITE_PURGE = "DELETE FROM online_nonces WHERE accepted_at < ?"
SQLITE_REMEMBER = (
    "INSERT OR REPLACE INTO online_nonces (key_id, nonce, accepted_at) VALUES (?, ?, ?)"
)
SQLITE_RECENT = (
    "SELECT key_id, nonce, accepted_at FROM online_nonces WHERE accepted_at >= ? "
    "ORDER BY accepted_at"
)

POSTGRESQL_TABLE = """
CREATE TABLE IF NOT EXISTS online_nonces (
    key_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    accepted_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key_id, nonce)
)
"""
POSTGRESQL_CLAIM = """
INSERT INTO online_nonces AS kept (key_id, nonce, accepted_at)
SELECT k, n, %(now)s FROM unnest(%(keys)s::text[], %(nonces)s::text[]) AS claimed(k, n)
ON CONFLICT (key_id, nonce) DO UPDATE SET accepted_at = excluded.accepted_at
WHERE kept.accepted_at < %(cutoff)s
RETURNING key_id, nonce
"""
POSTGRESQL_PURGE = "DELETE FROM online_nonces WHERE accepted_at < %s"
POSTGRESQL_REMEMBER = """
INSERT INTO online_nonces (key_id, nonce, accepted_at) VALUES (%s, %s, %s)
ON CONFLICT (key_id, nonce) DO UPDATE SET accepted_at = excluded.accepted_at
"""
POSTGRESQL_RECENT = (
    "SELECT key_id, nonce, accepted_at FROM online_nonces WHERE accepted_at >= %s "
    "ORDER BY accepted_at"
)


class NonceStore(Protocol):
    def open(self) -> None: ...

    def claim(self, claims: Sequence[tuple[str, str]], now: float, memory_s: float) -> list[bool]:
        """For each distinct (key id, nonce), whether it is accepted now (False: it was
        accepted within ``memory_s`` before ``now``, by any process)."""
        ...

    def purge(self, before: float) -> int: ...

    def remember(self, accepted: Sequence[tuple[str, str, float]]) -> None:
        """Nonces already decided (by one process's memory), kept for its next start."""
        ...

    def recent(self, since: float) -> list[tuple[str, str, float]]:
        """The nonces accepted at ``since`` or later, oldest first."""
        ...

    def close(self) -> None: ...


class SqliteNonces:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None

    def open(self) -> None:
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA busy_timeout = 10000")
            connection.execute("PRAGMA synchronous = OFF")
            # Checkpoints are the journal's (its writer runs them on their own): none
            # inside a claim's commit.
            connection.execute("PRAGMA wal_autocheckpoint = 0")
            connection.execute(SQLITE_TABLE)
        except sqlite3.Error as exc:
            raise JournalError(f"online nonces in {self.path}: {exc}") from exc
        self._connection = connection

    def claim(self, claims: Sequence[tuple[str, str]], now: float, memory_s: float) -> list[bool]:
        connection = self._connection
        assert connection is not None, "nonce store is not open"
        cutoff = now - memory_s
        accepted = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for key_id, nonce in claims:
                    cursor = connection.execute(SQLITE_CLAIM, (key_id, nonce, now, cutoff))
                    accepted.append(cursor.rowcount == 1)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise JournalError(f"online nonces: {exc}") from exc
        return accepted

    def purge(self, before: float) -> int:
        connection = self._connection
        assert connection is not None, "nonce store is not open"
        try:
            return connection.execute(SQLITE_PURGE, (before,)).rowcount
        except sqlite3.Error as exc:
            raise JournalError(f"online nonces: {exc}") from exc

    def remember(self, accepted: Sequence[tuple[str, str, float]]) -> None:
        connection = self._connection
        assert connection is not None, "nonce store is not open"
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(SQLITE_REMEMBER, accepted)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise JournalError(f"online nonces: {exc}") from exc

    def recent(self, since: float) -> list[tuple[str, str, float]]:
        connection = self._connection
        assert connection is not None, "nonce store is not open"
        try:
            rows = connection.execute(SQLITE_RECENT, (since,)).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"online nonces: {exc}") from exc
        return [(str(k), str(n), float(t)) for k, n, t in rows]

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class PostgresNonces:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._connection: object | None = None

    def open(self) -> None:
        import psycopg

        try:
            connection = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
            connection.execute("SET synchronous_commit = off")
            # Another worker may make it at the same moment.
            with contextlib.suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
                connection.execute(POSTGRESQL_TABLE)
        except psycopg.Error as exc:
            raise JournalError(f"online nonces: {exc}") from exc
        self._connection = connection

    def claim(self, claims: Sequence[tuple[str, str]], now: float, memory_s: float) -> list[bool]:
        import psycopg

        connection = self._connection
        assert isinstance(connection, psycopg.Connection), "nonce store is not open"
        parameters = {
            "now": now,
            "cutoff": now - memory_s,
            "keys": [key_id for key_id, _ in claims],
            "nonces": [nonce for _, nonce in claims],
        }
        try:
            rows = connection.execute(POSTGRESQL_CLAIM, parameters).fetchall()
        except psycopg.Error as exc:
            raise JournalError(f"online nonces: {exc}") from exc
        taken = {(row[0], row[1]) for row in rows}
        return [claim in taken for claim in claims]

    def purge(self, before: float) -> int:
        import psycopg

        connection = self._connection
        assert isinstance(connection, psycopg.Connection), "nonce store is not open"
        try:
            return connection.execute(POSTGRESQL_PURGE, (before,)).rowcount
        except psycopg.Error as exc:
            raise JournalError(f"online nonces: {exc}") from exc

    def remember(self, accepted: Sequence[tuple[str, str, float]]) -> None:
        import psycopg

        connection = self._connection
        assert isinstance(connection, psycopg.Connection), "nonce store is not open"
        try:
            with connection.transaction(), connection.cursor() as cursor:
                cursor.executemany(POSTGRESQL_REMEMBER, accepted)
        except psycopg.Error as exc:
            raise JournalError(f"online nonces: {exc}") from exc

    def recent(self, since: float) -> list[tuple[str, str, float]]:
        import psycopg

        connection = self._connection
        assert isinstance(connection, psycopg.Connection), "nonce store is not open"
        try:
            rows = connection.execute(POSTGRESQL_RECENT, (since,)).fetchall()
        except psycopg.Error as exc:
            raise JournalError(f"online nonces: {exc}") from exc
        return [(str(k), str(n), float(t)) for k, n, t in rows]

    def close(self) -> None:
        import psycopg

        if isinstance(self._connection, psycopg.Connection):
            self._connection.close()
        self._connection = None
