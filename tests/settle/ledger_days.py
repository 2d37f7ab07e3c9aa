"""Journals and clearing records for settlement tests: a business date's transactions
written through the journal's own writes, and a bank's records of them, on either
engine (:class:`Place`: SQLite files in a folder, or one PostgreSQL database)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from switch.core.book import TxnRecord
from switch.core.calendar import DateClosed
from switch.core.changes import TxnStarted
from switch.store.ledger_store import LedgerStoreBase
from switch.store.port import Change
from switch.store.postgresql import JournalDatabase
from switch.store.postgresql import sql as postgresql_sql
from switch.store.postgresql.ledger import PostgresLedgerStore
from switch.store.postgresql.settlement import PostgresSettlementStore
from switch.store.settlement_port import SettlementStore
from switch.store.sqlite import JournalFile
from switch.store.sqlite.ledger import SqliteLedgerStore
from switch.store.sqlite.settlement import SqliteSettlementStore
from switch.store.sqlite.sql import writes_of
from tests.store.records import make_record

_counter = [0]


def txn(business_date: str, amount: int, **fields: Any) -> TxnRecord:
    """An approved sale of ``business_date`` unless ``fields`` say otherwise."""
    _counter[0] += 1
    rrn = fields.pop("rrn", f"6326{_counter[0]:08d}")
    values: dict[str, Any] = {"state": "approved", "code": "00", "auth_code": "000001"}
    values.update(fields)
    return make_record(rrn, amount=amount, business_date=business_date, **values)


def write_journal(path: Path, records: list[TxnRecord]) -> None:
    journal = JournalFile(path)
    journal.open()
    try:
        journal.apply(
            write for record in records for write in writes_of(TxnStarted.of(record, 1.0))
        )
    finally:
        journal.close()


def record_of(
    txn: TxnRecord, *, amount: int | None = None, reversal: bool = False
) -> tuple[Any, ...]:
    """The bank's clearing record of ``txn`` (or of its reversal), in the store's order."""
    direction = {"sale": "D", "void": "C", "refund": "C"}[txn.kind]
    if reversal:
        direction = "C" if direction == "D" else "D"
    processing = {"sale": "000000", "void": "020000", "refund": "200000"}[txn.kind]
    return (
        "0400" if reversal else "0200", processing, txn.stan, "1122063015", txn.rrn,
        txn.amount if amount is None else amount, "156", "00", "" if reversal else "000001",
        txn.terminal_id, txn.merchant_id, txn.pan_masked, direction,
    )  # fmt: skip


def open_store(tmp_path: Path, closed: list[str]) -> SqliteSettlementStore:
    store = SqliteSettlementStore(tmp_path / "settlement.sqlite3", tmp_path / "journal.sqlite3")
    store.open()
    for number, day in enumerate(closed):
        store.record_close(DateClosed(date.fromisoformat(day), 1000.0 + number, False))
    return store


class Place:
    """Where a settlement test keeps its journal and settlement store, as the switch
    does on each engine: SQLite files in ``folder`` (the journal attached by the store),
    or one PostgreSQL database at ``dsn`` holding both (written through the PostgreSQL
    journal's own statements)."""

    def __init__(self, folder: Path, dsn: str | None = None) -> None:
        self.folder = folder
        self.dsn = dsn
        self.engine = "sqlite" if dsn is None else "postgresql"

    def apply(self, changes: Iterable[Change]) -> None:
        """The journal's writes of each change, one change after the other, in order."""
        if self.dsn is None:
            file = JournalFile(self.folder / "journal.sqlite3")
            file.open()
            try:
                for change in changes:
                    file.apply(writes_of(change))
            finally:
                file.close()
            return
        database = JournalDatabase(self.dsn)
        database.open()
        try:
            for change in changes:
                database.apply(postgresql_sql.writes_of(change))
        finally:
            database.close()

    def write_journal(self, records: list[TxnRecord]) -> None:
        if self.dsn is None:
            write_journal(self.folder / "journal.sqlite3", records)
            return
        database = JournalDatabase(self.dsn)
        database.open()
        try:
            database.apply(
                write
                for record in records
                for write in postgresql_sql.writes_of(TxnStarted.of(record, 1.0))
            )
        finally:
            database.close()

    def open_ledger(self) -> LedgerStoreBase:
        """The on-us ledger store beside the journal, open: ``ledger.sqlite3`` in the
        folder (where the SQLite settlement store attaches it), or the database's."""
        ledger: LedgerStoreBase = (
            SqliteLedgerStore(self.folder / "ledger.sqlite3")
            if self.dsn is None
            else PostgresLedgerStore(self.dsn)
        )
        ledger.open()
        return ledger

    def open_store(self, closed: list[str]) -> SettlementStore:
        if self.dsn is None:
            return open_store(self.folder, closed)
        store = PostgresSettlementStore(self.dsn)
        store.open()
        for number, day in enumerate(closed):
            store.record_close(DateClosed(date.fromisoformat(day), 1000.0 + number, False))
        return store


def place_on(engine: str, folder: Path, request: pytest.FixtureRequest) -> Place:
    """A place on ``engine``: ``folder`` for SQLite, a new database of the session's
    PostgreSQL server (skipped, or failed in CI, where none runs) for PostgreSQL."""
    if engine == "sqlite":
        return Place(folder)
    server: Any = request.getfixturevalue("postgres_server")
    return Place(folder, server.create_database())
