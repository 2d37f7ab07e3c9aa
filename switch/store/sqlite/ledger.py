"""The ledger store on SQLite (``switch/store/ledger_store.py``, over the statements of
``switch/store/ledger_sql.py``): a database of its own beside the journal
(``ledger.sqlite3``), so that neither the journal's writer nor a settlement's long
transaction waits on it. One process writes it (SQLite's switch has one worker); each
step is a ``BEGIN IMMEDIATE`` transaction, which serialises steps on the file.

Plain blocking calls: the trio layer runs them in a worker thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from switch.store.cobrand_sql import cobrand_sql
from switch.store.credit_sql import credit_sql
from switch.store.desk_sql import desk_sql
from switch.store.hold_sql import hold_sql
from switch.store.ledger_port import Fault, LedgerUnavailable
from switch.store.ledger_sql import ledger_sql, migrations
from switch.store.ledger_store import LedgerStoreBase, Parameters, Row
from switch.store.own_sql import own_sql
from switch.store.risk_sql import risk_sql
from switch.store.sqlite.own_file import OwnFile
from switch.store.sqlite.sql import DIALECT

BUSY_TIMEOUT_MS: Final = 10_000
MIGRATIONS: Final[tuple[str, ...]] = migrations(DIALECT)
SQL: Final = ledger_sql(DIALECT, lock="")


class SqliteLedgerStore(OwnFile, LedgerStoreBase):
    sql = SQL
    errors = (sqlite3.Error,)
    retry = ()
    credit = credit_sql(DIALECT, lock="")
    cobrand = cobrand_sql(DIALECT, lock="")
    desk = desk_sql(DIALECT, lock="")
    own = own_sql(DIALECT, lock="")
    risk = risk_sql(DIALECT)
    hold = hold_sql(DIALECT, lock="")
    label = "ledger store"
    store_name = "ledger"
    store_error = LedgerUnavailable
    migrations = MIGRATIONS
    busy_timeout_ms = BUSY_TIMEOUT_MS
    foreign_keys = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self.fault: Fault | None = None

    def _execute(self, statement: str, parameters: Parameters = ()) -> list[Row]:
        return list(self._db.execute(statement, parameters))

    def _change(self, statement: str, parameters: Parameters = ()) -> int:
        count: int = self._db.execute(statement, parameters).rowcount
        return count

    lazy_ends = True
    _synced_now = True
    """``synchronous = FULL``, as ``open`` leaves it."""

    def open(self) -> None:
        super().open()
        self._synced_now = True

    def _synced(self, durable: bool) -> None:
        """The next commit's level: ``FULL`` (the WAL's fsync) or ``NORMAL`` (none; a
        checkpoint it makes still fsyncs the WAL before copying it)."""
        if durable != self._synced_now:
            self._db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._synced_now = durable

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        db = self._db
        self._synced(self._durable)
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
