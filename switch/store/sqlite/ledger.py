"""The ledger store on SQLite (``switch/store/ledger_store.py``, over the statements of
``switch/store/ledger_sql.py``): a database of its own beside the journal
(``ledger.sqlite3``), so that neither the journal's writer nor a settlement's long
transaction waits on it. One process writes it (SQLite's switch has one worker); each
step is a ``BEGIN IMMEDIATE`` transaction, which serialises steps on the file.

Plain blocking calls: the trio layer runs them in a worker thread.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from switch.files import make_private_folder, open_private
from switch.store.credit_sql import credit_sql
from switch.store.ledger_port import Fault, LedgerUnavailable
from switch.store.ledger_sql import ledger_sql, migrations
from switch.store.ledger_store import LedgerStoreBase, Parameters, Row
from switch.store.sqlite.sql import DIALECT

BUSY_TIMEOUT_MS: Final = 10_000
MIGRATIONS: Final[tuple[str, ...]] = migrations(DIALECT)
SQL: Final = ledger_sql(DIALECT, lock="")


class SqliteLedgerStore(LedgerStoreBase):
    sql = SQL
    errors = (sqlite3.Error,)
    retry = ()
    credit = credit_sql(DIALECT, lock="")
    label = "ledger store"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self.fault: Fault | None = None

    def open(self) -> None:
        """Opens (creating and migrating) the store; LedgerUnavailable naming the file."""
        try:
            if not self.path.exists():  # 0600 before SQLite makes it
                make_private_folder(self.path.parent)
                os.close(open_private(self.path, os.O_RDONLY))
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA foreign_keys = ON")
            connection.row_factory = sqlite3.Row
            _migrate(connection)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerUnavailable(f"ledger store {self.path}: {exc}") from exc
        self._connection = connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise LedgerUnavailable("the ledger store is not open")
        return self._connection

    def _execute(self, statement: str, parameters: Parameters = ()) -> list[Row]:
        return list(self._db.execute(statement, parameters))

    def _change(self, statement: str, parameters: Parameters = ()) -> int:
        count: int = self._db.execute(statement, parameters).rowcount
        return count

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def _migrate(connection: sqlite3.Connection) -> None:
    version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise LedgerUnavailable(
            f"ledger store schema {version} is newer than this switch ({len(MIGRATIONS)})"
        )
    for number in range(version, len(MIGRATIONS)):
        connection.executescript(
            f"BEGIN;\n{MIGRATIONS[number]}\nPRAGMA user_version = {number + 1};\nCOMMIT;"
        )
