"""Journals and clearing records for settlement tests: a business date's transactions
written through the journal's own writes, and a bank's records of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from switch.core.book import TxnRecord
from switch.core.calendar import DateClosed
from switch.core.changes import TxnStarted
from switch.store.sqlite import JournalFile
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
    from datetime import date

    for number, day in enumerate(closed):
        store.record_close(DateClosed(date.fromisoformat(day), 1000.0 + number, False))
    return store
