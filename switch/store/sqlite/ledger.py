"""The ledger store on SQLite (``switch/store/ledger_store.py``, over the statements of
``switch/store/ledger_sql.py``): a database of its own beside the journal
(``ledger.sqlite3``), so that neither the journal's writer nor a settlement's long
transaction waits on it. One process writes it (SQLite's switch has one worker); each
step is a ``BEGIN IMMEDIATE`` transaction, which serialises steps on the file.

Plain blocking calls: the trio layer runs them in a worker thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from switch.store.cobrand_sql import cobrand_sql
from switch.store.credit_sql import credit_sql
from switch.store.desk_sql import desk_sql
from switch.store.ledger_port import Fault, LedgerUnavailable
from switch.store.ledger_sql import ledger_sql, migrations
from switch.store.ledger_store import Grouped, LedgerStoreBase, Parameters, Row, _capture
from switch.store.own_sql import own_sql
from switch.store.sqlite.own_file import OwnFile
from switch.store.sqlite.sql import DIALECT

BUSY_TIMEOUT_MS: Final = 10_000
WAL_AUTOCHECKPOINT: Final = 1000
"""SQLite's default: pages of WAL past which a commit checkpoints."""
MIGRATIONS: Final[tuple[str, ...]] = migrations(DIALECT)
SQL: Final = ledger_sql(DIALECT, lock="")


def _busy(error: BaseException | None) -> bool:
    """Whether ``error`` is SQLite's "busy": a lock another connection holds (in
    ``grouped_now``, which does not wait: settlement's, an operator command's)."""
    if not isinstance(error, sqlite3.Error):
        return False
    return (error.sqlite_errorcode & 0xFF) == sqlite3.SQLITE_BUSY


class SqliteLedgerStore(OwnFile, LedgerStoreBase):
    sql = SQL
    errors = (sqlite3.Error,)
    retry = ()
    credit = credit_sql(DIALECT, lock="")
    cobrand = cobrand_sql(DIALECT, lock="")
    desk = desk_sql(DIALECT, lock="")
    own = own_sql(DIALECT, lock="")
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
    """``synchronous = FULL`` and the WAL's checkpoints on, as ``open`` leaves them."""
    _now: sqlite3.Connection | None = None
    """``grouped_now``'s connection: ``synchronous = NORMAL``, no automatic checkpoint
    (the next ``FULL`` commit, in the store's thread, checkpoints a WAL grown past the
    mark), no busy wait (a write lock held elsewhere: the step goes to the thread)."""

    def open(self) -> None:
        super().open()
        self._synced_now = True
        try:
            now = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            for pragma in ("busy_timeout = 0", "synchronous = NORMAL", "wal_autocheckpoint = 0",
                           "foreign_keys = ON"):  # fmt: skip
                now.execute(f"PRAGMA {pragma}")
        except sqlite3.Error as exc:
            self.close()
            raise LedgerUnavailable(f"ledger store {self.path}: {exc}") from exc
        now.row_factory = sqlite3.Row
        self._now = now

    def close(self) -> None:
        if self._now is not None:
            self._now.close()
            self._now = None
        super().close()

    def _synced(self, durable: bool) -> None:
        """The next commit's level on the store's connection: ``FULL`` (the WAL's
        fsync), or ``NORMAL`` (none) with the automatic checkpoint off, as ``_now``."""
        if durable != self._synced_now:
            db = self._db
            db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            db.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT if durable else 0}")
            self._synced_now = durable

    def grouped_now(self, call: Callable[[], Any]) -> Grouped | None:
        main, now = self._connection, self._now
        if main is None or now is None:
            return None
        self._connection = now
        try:
            outcome = _capture(call)
        finally:
            self._connection = main
        error = outcome[1]
        if isinstance(error, LedgerUnavailable) and _busy(error.__cause__):
            return None  # rolled back: nothing done
        return outcome

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        db = self._db
        if db is not self._now:
            self._synced(self._durable)
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
