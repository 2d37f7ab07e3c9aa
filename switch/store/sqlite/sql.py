"""The SQL of the SQLite journal: each change of the port as the statements it writes,
and each question as a query. Kept in one place, over the schema in ``schema.py``."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from switch.core.batch import BatchTotals, SettledBatch, UploadRecord
from switch.core.book import TxnRecord
from switch.store import writes
from switch.store.dialect import Dialect
from switch.store.port import (
    Change,
    DueReversal,
    OnlineResult,
    ReversalBacklog,
)
from switch.store.rows import (
    SETTLED_BATCH_COLUMNS,
    record_from_row,
    settled_batch_from_row,
)
from switch.store.writes import Statements, Write

Query = Callable[[sqlite3.Connection], Any]

DIALECT = Dialect(
    positional="?",
    named=":{}",
    text="TEXT",
    integer="INTEGER",
    real="REAL",
    flag="INTEGER",
    row_id="INTEGER PRIMARY KEY",
    true="1",
    false="0",
    journal="j.",
    temp_table="CREATE TEMP TABLE {name} ({columns})",
    temp_index="CREATE INDEX temp.{name} ON {table} {definition}",
    drop_temp_before="DROP TABLE IF EXISTS temp.{}",
    drop_temp_after="DROP TABLE temp.{}",
    cross_join="CROSS JOIN",
    least="min",
    greatest="max",
    any_of="max",
    count_if="sum({})",
    whole="{}",
    as_text="{}",
    day_before="date({}, '-1 day')",
    days_between="julianday({0}) - julianday({1})",
    newest_first="created_at DESC",
    oldest_first="created_at",
)
"""What SQLite spells its own way (``switch/store/dialect.py``)."""

TXN_COLUMNS = (
    "rrn", "kind", "channel", "request_mti", "terminal_id", "merchant_id", "stan", "batch",
    "local_date", "online_id", "request_digest", "pan_masked", "pan_hmac", "pan_sealed",
    "amount", "currency", "bank", "bank_mti", "bank_stan", "transmission",
    "bank_processing_code", "original_rrn", "state", "code", "auth_code", "balance",
    "refunded", "voided", "reversed", "created_at", "updated_at", "business_date",
)  # fmt: skip
_TXN_SELECT = ", ".join(TXN_COLUMNS)

_INSERT_TXN = f"INSERT INTO txn ({_TXN_SELECT}) VALUES ({', '.join('?' * len(TXN_COLUMNS))})"
_INSERT_EVENT = "INSERT INTO txn_event (rrn, at, state, code, detail) VALUES (?, ?, ?, ?, ?)"
_UPDATE_TXN = (
    "UPDATE txn SET state = ?, code = ?, auth_code = ?, balance = ?, refunded = ?, "
    "voided = ?, reversed = ?, updated_at = ? WHERE rrn = ?"
)
_INSERT_SAF = (
    "INSERT OR IGNORE INTO saf (rrn, bank, reason, state, next_attempt_at, created_at, "
    "updated_at) VALUES (?, ?, ?, 'pending', ?, ?, ?)"
)
_UPDATE_SAF = (
    "UPDATE saf SET state = ?, attempts = ?, next_attempt_at = ?, last_result = ?, "
    "updated_at = ? WHERE id = ?"
)
_PUT_IDEMPOTENCY = (
    "INSERT OR REPLACE INTO idempotency (merchant_id, online_id, fingerprint, response, "
    "created_at) VALUES (?, ?, ?, ?, ?)"
)
_PURGE_IDEMPOTENCY = "DELETE FROM idempotency WHERE created_at < ?"
_PUT_BATCH_SETTLEMENT = (
    "INSERT OR REPLACE INTO batch_settlement (terminal_id, merchant_id, batch, "
    "terminal_totals, switch_totals, result, business_date, rrn, upload_count, settled_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)"
)
_CLEAR_BATCH_UPLOAD = (
    "DELETE FROM batch_upload WHERE terminal_id = ? AND merchant_id = ? AND batch = ?"
)
_PUT_BATCH_UPLOAD = (
    "INSERT OR REPLACE INTO batch_upload (terminal_id, merchant_id, batch, kind, stan, "
    "amount, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_END_BATCH_UPLOAD = (
    "UPDATE batch_settlement SET upload_count = ? "
    "WHERE terminal_id = ? AND merchant_id = ? AND batch = ?"
)


_STATEMENTS = Statements(
    insert_txn=_INSERT_TXN,
    insert_txn_once=_INSERT_TXN.replace("INSERT", "INSERT OR IGNORE", 1),
    insert_event=_INSERT_EVENT,
    update_txn=_UPDATE_TXN,
    insert_saf=_INSERT_SAF,
    update_saf=_UPDATE_SAF,
    put_idempotency=_PUT_IDEMPOTENCY,
    purge_idempotency=_PURGE_IDEMPOTENCY,
    put_batch_settlement=_PUT_BATCH_SETTLEMENT,
    clear_batch_upload=_CLEAR_BATCH_UPLOAD,
    put_batch_upload=_PUT_BATCH_UPLOAD,
    end_batch_upload=_END_BATCH_UPLOAD,
    flag=int,
)


def writes_of(change: Change) -> tuple[Write, ...]:
    """The statements one change writes."""
    return writes.writes_of(change, _STATEMENTS)


# -- the switch's questions ------------------------------------------------------------


def _one_record(sql: str, *parameters: Any) -> Query:
    def query(connection: sqlite3.Connection) -> TxnRecord | None:
        row = connection.execute(sql, parameters).fetchone()
        return None if row is None else record_from_row(row)

    return query


def record_by_rrn(rrn: str) -> Query:
    return _one_record(f"SELECT {_TXN_SELECT} FROM txn WHERE rrn = ?", rrn)


def record_by_online_id(merchant_id: str, online_id: str) -> Query:
    return _one_record(
        f"SELECT {_TXN_SELECT} FROM txn WHERE merchant_id = ? AND online_id = ? "
        "ORDER BY created_at DESC LIMIT 1",
        merchant_id,
        online_id,
    )


def record_by_trace(terminal_id: str, merchant_id: str, batch: str, stan: str) -> Query:
    return _one_record(
        f"SELECT {_TXN_SELECT} FROM txn WHERE terminal_id = ? AND merchant_id = ? "
        "AND stan = ? AND batch = ? ORDER BY created_at DESC LIMIT 1",
        terminal_id,
        merchant_id,
        stan,
        batch,
    )


def records_in_doubt(connection: sqlite3.Connection) -> list[TxnRecord]:
    rows = connection.execute(
        f"SELECT {_TXN_SELECT} FROM txn WHERE state = 'sending' ORDER BY created_at"
    ).fetchall()
    return [record_from_row(row) for row in rows]


def recent_records(since: float, limit: int) -> Query:
    def query(connection: sqlite3.Connection) -> list[TxnRecord]:
        rows = connection.execute(
            f"SELECT {_TXN_SELECT} FROM txn WHERE created_at >= ? ORDER BY created_at DESC LIMIT ?",
            (since, limit),
        ).fetchall()
        return [record_from_row(row) for row in reversed(rows)]

    return query


def highest_rrn_sequence(day: str) -> Query:
    def query(connection: sqlite3.Connection) -> int:
        row = connection.execute(
            "SELECT max(rrn) FROM txn WHERE rrn >= ? AND rrn < ?", (day, f"{day}~")
        ).fetchone()
        return -1 if row[0] is None else int(row[0][4:])

    return query


def last_bank_stan(bank: str) -> Query:
    def query(connection: sqlite3.Connection) -> int | None:
        row = connection.execute(
            "SELECT bank_stan FROM txn WHERE bank = ? AND bank_stan IS NOT NULL "
            "ORDER BY created_at DESC LIMIT 1",
            (bank,),
        ).fetchone()
        return None if row is None else int(row[0])

    return query


_IDEMPOTENCY_SELECT = "SELECT merchant_id, online_id, fingerprint, response, created_at"


def _online_result(row: sqlite3.Row) -> OnlineResult:
    return OnlineResult(
        merchant_id=row[0],
        online_id=row[1],
        fingerprint=bytes(row[2]),
        response=bytes(row[3]),
        created_at=row[4],
    )


def online_result(merchant_id: str, online_id: str) -> Query:
    def query(connection: sqlite3.Connection) -> OnlineResult | None:
        row = connection.execute(
            f"{_IDEMPOTENCY_SELECT} FROM idempotency WHERE merchant_id = ? AND online_id = ?",
            (merchant_id, online_id),
        ).fetchone()
        return None if row is None else _online_result(row)

    return query


def online_results_since(since: float) -> Query:
    def query(connection: sqlite3.Connection) -> list[OnlineResult]:
        rows = connection.execute(
            f"{_IDEMPOTENCY_SELECT} FROM idempotency WHERE created_at >= ? ORDER BY created_at",
            (since,),
        )
        return [_online_result(row) for row in rows]

    return query


def due_reversals(bank: str, at: float, limit: int) -> Query:
    def query(connection: sqlite3.Connection) -> list[DueReversal]:
        rows = connection.execute(
            f"SELECT saf.id AS saf_id, saf.attempts AS saf_attempts, "
            f"{', '.join('txn.' + column for column in TXN_COLUMNS)} "
            "FROM saf JOIN txn ON txn.rrn = saf.rrn "
            "WHERE saf.bank = ? AND saf.state = 'pending' AND saf.next_attempt_at <= ? "
            "ORDER BY saf.next_attempt_at LIMIT ?",
            (bank, at, limit),
        ).fetchall()
        return [
            DueReversal(
                saf_id=row["saf_id"], attempts=row["saf_attempts"], record=record_from_row(row)
            )
            for row in rows
        ]

    return query


# Delivered reversals are never purged: the banks are found by a loose index scan
# (one seek of saf_due a bank), then each bank's undelivered ones by seeks, never a
# scan of the whole history.
_REVERSAL_BACKLOG = """
WITH RECURSIVE banks(bank) AS (
    SELECT min(bank) FROM saf
    UNION ALL
    SELECT (SELECT min(bank) FROM saf WHERE bank > banks.bank) FROM banks
    WHERE banks.bank IS NOT NULL
)
SELECT saf.bank, saf.state, count(*), min(saf.created_at)
FROM banks JOIN saf ON saf.bank = banks.bank AND saf.state IN ('pending', 'manual')
GROUP BY saf.bank, saf.state
"""


def reversal_backlog(connection: sqlite3.Connection) -> list[ReversalBacklog]:
    found: dict[str, tuple[int, int, float]] = {}
    for bank, state, count, oldest in connection.execute(_REVERSAL_BACKLOG):
        pending, manual, earliest = found.get(bank, (0, 0, oldest))
        if state == "pending":
            pending = count
        else:
            manual = count
        found[bank] = (pending, manual, min(earliest, oldest))
    return [
        ReversalBacklog(bank=bank, pending=pending, manual=manual, oldest_created_at=oldest)
        for bank, (pending, manual, oldest) in sorted(found.items())
    ]


# -- a terminal's batch ------------------------------------------------------------------

# pos-cup.md's rules, over the batch's rows (txn_by_batch): approved sales neither
# voided nor reversed are its debits, approved refunds not reversed its credits.
_BATCH_TOTALS = """
SELECT
    coalesce(sum(CASE WHEN kind = 'sale' THEN amount END), 0),
    count(CASE WHEN kind = 'sale' THEN 1 END),
    coalesce(sum(CASE WHEN kind = 'refund' THEN amount END), 0),
    count(CASE WHEN kind = 'refund' THEN 1 END)
FROM txn
WHERE terminal_id = ? AND merchant_id = ? AND batch = ?
    AND channel = 'pos' AND state = 'approved' AND reversed = 0
    AND (kind = 'refund' OR (kind = 'sale' AND voided = 0))
"""


def batch_totals(terminal_id: str, merchant_id: str, batch: str) -> Query:
    def query(connection: sqlite3.Connection) -> BatchTotals:
        row = connection.execute(_BATCH_TOTALS, (terminal_id, merchant_id, batch)).fetchone()
        return BatchTotals(
            debit_fen=row[0], debit_count=row[1], credit_fen=row[2], credit_count=row[3]
        )

    return query


def settled_batch(terminal_id: str, merchant_id: str, batch: str) -> Query:
    def query(connection: sqlite3.Connection) -> SettledBatch | None:
        row = connection.execute(
            f"SELECT {SETTLED_BATCH_COLUMNS} FROM batch_settlement "
            "WHERE terminal_id = ? AND merchant_id = ? AND batch = ?",
            (terminal_id, merchant_id, batch),
        ).fetchone()
        return None if row is None else settled_batch_from_row(row)

    return query


def batch_upload(terminal_id: str, merchant_id: str, batch: str) -> Query:
    def query(connection: sqlite3.Connection) -> list[UploadRecord]:
        rows = connection.execute(
            "SELECT kind, stan, amount FROM batch_upload "
            "WHERE terminal_id = ? AND merchant_id = ? AND batch = ? ORDER BY kind, stan",
            (terminal_id, merchant_id, batch),
        )
        return [UploadRecord(kind=row[0], stan=row[1], amount=row[2]) for row in rows]

    return query
