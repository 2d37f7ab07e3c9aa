"""What a SQLite store of its own (settlement's, the ledger's) does the same way: its file
made 0600 before SQLite creates it, WAL with full syncs, and versioned migrations kept in
``PRAGMA user_version``, each applied with its version in one transaction."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import ClassVar

from switch.files import make_private_folder, open_private


def open_store_file(
    path: Path,
    migrations: tuple[str, ...],
    *,
    name: str,
    error: type[Exception],
    busy_timeout_ms: int,
    foreign_keys: bool = False,
) -> sqlite3.Connection:
    """The store's connection, created and migrated; ``error`` naming the file."""
    try:
        if not path.exists():  # 0600 before SQLite makes it (and its -wal, -shm)
            make_private_folder(path.parent)
            os.close(open_private(path, os.O_RDONLY))
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        connection.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        if foreign_keys:
            connection.execute("PRAGMA foreign_keys = ON")
        connection.row_factory = sqlite3.Row
        version: int = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > len(migrations):
            connection.close()
            raise error(
                f"{name} store schema {version} is newer than this switch ({len(migrations)})"
            )
        for number in range(version, len(migrations)):
            connection.executescript(
                f"BEGIN;\n{migrations[number]}\nPRAGMA user_version = {number + 1};\nCOMMIT;"
            )
    except (OSError, sqlite3.Error) as exc:
        raise error(f"{name} store {path}: {exc}") from exc
    return connection


class OwnFile:
    """The connection of a SQLite store of its own: ``open`` creates and migrates its
    file, ``_db`` is the connection, a closed store's use its ``store_error``."""

    store_name: ClassVar[str]
    """``settlement``, ``ledger``: in errors."""
    store_error: ClassVar[type[Exception]]
    migrations: ClassVar[tuple[str, ...]]
    busy_timeout_ms: ClassVar[int]
    foreign_keys: ClassVar[bool] = False

    path: Path
    _connection: sqlite3.Connection | None

    def open(self) -> None:
        """Opens (creating and migrating) the store; its error naming the file."""
        self._connection = open_store_file(
            self.path, self.migrations, name=self.store_name, error=self.store_error,
            busy_timeout_ms=self.busy_timeout_ms, foreign_keys=self.foreign_keys,
        )  # fmt: skip

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise self.store_error(f"the {self.store_name} store is not open")
        return self._connection
