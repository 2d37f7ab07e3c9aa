"""The settlement store on SQLite (``switch/store/settlement_store.py``, over the
statements of ``switch/store/settlement_sql.py``, whose notes hold for this one): a
database of its own beside the journal. Settling a date of a million transactions
writes for seconds, and the journal's writer (every approval's commit) must never wait
on that. The journal is attached read-only (WAL: the switch keeps committing while a
settlement reads one consistent snapshot of it).

Plain blocking calls: the trio layer runs them in a worker thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from switch.core.ledger import LedgerError
from switch.store.settlement_port import LedgerUnbalanced as LedgerUnbalanced
from switch.store.settlement_port import SettlementError as SettlementError
from switch.store.settlement_port import StepHook as StepHook
from switch.store.settlement_sql import migrations, settlement_sql
from switch.store.settlement_store import Parameters, Row, SettlementStoreBase
from switch.store.sqlite.ledger import SqliteLedgerStore
from switch.store.sqlite.own_file import OwnFile
from switch.store.sqlite.sql import DIALECT

BUSY_TIMEOUT_MS: Final = 30_000
"""Two settlements of one date (the switch's own and an operator's) take turns."""

MIGRATIONS: Final[tuple[str, ...]] = migrations(DIALECT)

SQL: Final = settlement_sql(DIALECT)


class SqliteSettlementStore(OwnFile, SettlementStoreBase):
    sql = SQL
    errors = (sqlite3.Error,)
    label = "settlement store"
    store_name = "settlement"
    store_error = SettlementError
    migrations = MIGRATIONS
    busy_timeout_ms = BUSY_TIMEOUT_MS

    def __init__(self, path: Path, journal_path: Path, ledger_path: Path | None = None) -> None:
        self.path = path
        self.journal_path = journal_path
        self.ledger_path = (
            journal_path.with_name("ledger.sqlite3") if ledger_path is None else ledger_path
        )
        """The on-us ledger (wallet.md), attached read-only as ``l``: on-us payments
        are reconciled against its transfers."""
        self._connection: sqlite3.Connection | None = None
        self.on_step: StepHook | None = None

    # -- opening ------------------------------------------------------------------

    def open(self) -> None:
        """Opens (creating and migrating) the store, and the on-us ledger's file with
        its tables, which a settlement reads, if the switch has not made it yet."""
        super().open()
        ledger = SqliteLedgerStore(self.ledger_path)
        try:
            ledger.open()
        except LedgerError as exc:
            self.close()
            raise SettlementError(str(exc)) from exc
        ledger.close()

    def _attach_journal(self) -> None:
        """The journal, read-only, as ``j``: a settlement's one snapshot of it; the
        on-us ledger beside it as ``l``."""
        names = [row[1] for row in self._db.execute("PRAGMA database_list")]
        if "j" not in names:
            if not self.journal_path.exists():
                raise SettlementError(f"no journal at {self.journal_path}")
            self._db.execute("ATTACH DATABASE ? AS j", (f"file:{self.journal_path}?mode=ro",))
        if "l" not in names:
            self._db.execute("ATTACH DATABASE ? AS l", (f"file:{self.ledger_path}?mode=ro",))

    # -- what the shared store asks of the engine ---------------------------------------

    def _execute(self, statement: str, parameters: Parameters = ()) -> Iterable[Row]:
        rows: Iterable[Row] = self._db.execute(statement, parameters)
        return rows

    def _executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(statement, rows)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def _settling(self) -> Iterator[None]:
        """The journal attached, then a write transaction: a second settlement (the
        switch's own and an operator's) waits for it (``BUSY_TIMEOUT_MS``)."""
        self._attach_journal()
        with self._transaction():
            yield

    def _take_turns_with_settlements(self) -> None:
        """Nothing to do: BEGIN IMMEDIATE has waited for a settlement's transaction."""

    def _insert_records(
        self, bank: str, business_date: str, records: Iterable[Sequence[Any]]
    ) -> int:
        rows = (
            (bank, business_date, "04" if record[0].startswith("04") else "02", *record)
            for record in records
        )
        count: int = self._db.executemany(SQL.insert_record, rows).rowcount
        return count
