"""What the switch writes to the journal and reads back: SQL over the schema, kept in
one place. Every write is an Operation for the journal's writer; every read a query
function for ``Journal.read`` (or the operator commands, on their own connection)."""

from __future__ import annotations

import sqlite3
from typing import Any

from switch.core.bank import OriginalData
from switch.core.book import TxnRecord
from switch.store.journal import Operation, Write

_TXN_COLUMNS = (
    "rrn, kind, channel, request_mti, terminal_id, merchant_id, stan, batch, local_date, "
    "online_id, request_digest, pan_masked, pan_hmac, pan_sealed, amount, currency, bank, "
    "bank_mti, bank_stan, transmission, bank_processing_code, original_rrn, state, code, "
    "auth_code, balance, refunded, voided, reversed, created_at, updated_at"
)


# Statement ranks: within a group, rows are inserted before they are updated.
_RANK_INSERT_TXN, _RANK_EVENT, _RANK_UPDATE_TXN = 10, 20, 30
_RANK_INSERT_SAF, _RANK_UPDATE_SAF, _RANK_IDEMPOTENCY, _RANK_PURGE = 40, 50, 60, 70

_INSERT_TXN = (
    f"INSERT INTO txn ({_TXN_COLUMNS}) VALUES ({', '.join('?' * len(_TXN_COLUMNS.split(',')))})"
)
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


def insert_txn(record: TxnRecord, at: float) -> Operation:
    sent = record.sent
    row = (
        record.rrn, record.kind, record.channel, record.request_mti, record.terminal_id,
        record.merchant_id, record.stan, record.batch, record.local_date, record.online_id,
        record.request_digest, record.pan_masked, record.pan_hmac, record.pan_sealed,
        record.amount, record.currency, record.bank,
        sent.mti if sent else None, sent.stan if sent else None,
        sent.transmission if sent else None, record.bank_processing_code, record.original_rrn,
        record.state, record.code, record.auth_code, record.balance, record.refunded,
        int(record.voided), int(record.reversed), at, at,
    )  # fmt: skip
    return (
        Write(_RANK_INSERT_TXN, _INSERT_TXN, row),
        Write(_RANK_EVENT, _INSERT_EVENT, (record.rrn, at, record.state, record.code, None)),
    )


def update_txn(record: TxnRecord, at: float, *, detail: str | None = None) -> Operation:
    """The record's state and what hangs on it (refunded, voided, reversed), as now."""
    values = (
        record.state, record.code, record.auth_code, record.balance, record.refunded,
        int(record.voided), int(record.reversed), at, record.rrn,
    )  # fmt: skip
    return (
        Write(_RANK_UPDATE_TXN, _UPDATE_TXN, values),
        Write(_RANK_EVENT, _INSERT_EVENT, (record.rrn, at, record.state, record.code, detail)),
    )


def insert_saf(record: TxnRecord, reason: str, at: float) -> Operation:
    """Queues the reversal of ``record`` for its bank's store-and-forward task."""
    return (Write(_RANK_INSERT_SAF, _INSERT_SAF, (record.rrn, record.bank, reason, at, at, at)),)


def update_saf(
    saf_id: int, *, state: str, attempts: int, next_attempt_at: float, result: str, at: float
) -> Operation:
    values = (state, attempts, next_attempt_at, result, at, saf_id)
    return (Write(_RANK_UPDATE_SAF, _UPDATE_SAF, values),)


def put_idempotency(
    merchant_id: str, online_id: str, fingerprint: bytes, response: bytes, at: float
) -> Operation:
    values = (merchant_id, online_id, fingerprint, response, at)
    return (Write(_RANK_IDEMPOTENCY, _PUT_IDEMPOTENCY, values),)


def purge_idempotency(before: float) -> Operation:
    return (Write(_RANK_PURGE, "DELETE FROM idempotency WHERE created_at < ?", (before,)),)


# -- reads -------------------------------------------------------------------------


def record_from_row(row: sqlite3.Row) -> TxnRecord:
    sent = (
        OriginalData(mti=row["bank_mti"], stan=row["bank_stan"], transmission=row["transmission"])
        if row["bank_mti"] is not None
        else None
    )
    return TxnRecord(
        kind=row["kind"],
        rrn=row["rrn"],
        bank=row["bank"],
        channel=row["channel"],
        request_mti=row["request_mti"],
        terminal_id=row["terminal_id"],
        merchant_id=row["merchant_id"],
        stan=row["stan"],
        batch=row["batch"],
        local_date=row["local_date"],
        pan_masked=row["pan_masked"],
        pan_hmac=row["pan_hmac"],
        pan_sealed=row["pan_sealed"],
        amount=row["amount"],
        currency=row["currency"],
        bank_processing_code=row["bank_processing_code"],
        online_id=row["online_id"],
        request_digest=row["request_digest"],
        original_rrn=row["original_rrn"],
        sent=sent,
        state=row["state"],
        code=row["code"],
        auth_code=row["auth_code"],
        balance=row["balance"],
        refunded=row["refunded"],
        voided=bool(row["voided"]),
        reversed=bool(row["reversed"]),
    )


def recent_records(since: float, limit: int) -> Any:
    """The newest ``limit`` transactions created since ``since``, oldest first."""

    def query(connection: sqlite3.Connection) -> list[TxnRecord]:
        rows = connection.execute(
            f"SELECT {_TXN_COLUMNS} FROM txn WHERE created_at >= ? "
            "ORDER BY created_at DESC LIMIT ?",
            (since, limit),
        ).fetchall()
        return [record_from_row(row) for row in reversed(rows)]

    return query


def record_by_rrn(rrn: str) -> Any:
    def query(connection: sqlite3.Connection) -> TxnRecord | None:
        row = connection.execute(f"SELECT {_TXN_COLUMNS} FROM txn WHERE rrn = ?", (rrn,)).fetchone()
        return None if row is None else record_from_row(row)

    return query


def record_by_online_id(merchant_id: str, online_id: str) -> Any:
    def query(connection: sqlite3.Connection) -> TxnRecord | None:
        row = connection.execute(
            f"SELECT {_TXN_COLUMNS} FROM txn WHERE merchant_id = ? AND online_id = ? "
            "ORDER BY created_at DESC LIMIT 1",
            (merchant_id, online_id),
        ).fetchone()
        return None if row is None else record_from_row(row)

    return query


def record_by_trace(terminal_id: str, merchant_id: str, batch: str, stan: str) -> Any:
    """The latest transaction a terminal sent with this batch and STAN."""

    def query(connection: sqlite3.Connection) -> TxnRecord | None:
        row = connection.execute(
            f"SELECT {_TXN_COLUMNS} FROM txn WHERE terminal_id = ? AND merchant_id = ? "
            "AND stan = ? AND batch = ? ORDER BY created_at DESC LIMIT 1",
            (terminal_id, merchant_id, stan, batch),
        ).fetchone()
        return None if row is None else record_from_row(row)

    return query


def records_in_doubt(connection: sqlite3.Connection) -> list[TxnRecord]:
    """Transactions written before they left for a bank and never settled: after a
    crash, each may or may not have reached its bank."""
    rows = connection.execute(
        f"SELECT {_TXN_COLUMNS} FROM txn WHERE state = 'sending' ORDER BY created_at"
    ).fetchall()
    return [record_from_row(row) for row in rows]


def highest_rrn_sequence(day: str) -> Any:
    """The highest RRN sequence journaled for a day (``YDDD``), or -1."""

    def query(connection: sqlite3.Connection) -> int:
        row = connection.execute(
            "SELECT max(rrn) FROM txn WHERE rrn >= ? AND rrn < ?", (day, f"{day}~")
        ).fetchone()
        return -1 if row[0] is None else int(row[0][4:])

    return query


def last_bank_stan(bank: str) -> Any:
    """The STAN of the bank's most recently journaled request, or None."""

    def query(connection: sqlite3.Connection) -> int | None:
        row = connection.execute(
            "SELECT bank_stan FROM txn WHERE bank = ? AND bank_stan IS NOT NULL "
            "ORDER BY created_at DESC LIMIT 1",
            (bank,),
        ).fetchone()
        return None if row is None else int(row[0])

    return query


def idempotency_entry(merchant_id: str, online_id: str) -> Any:
    def query(connection: sqlite3.Connection) -> tuple[bytes, bytes] | None:
        row = connection.execute(
            "SELECT fingerprint, response FROM idempotency WHERE merchant_id = ? AND online_id = ?",
            (merchant_id, online_id),
        ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    return query


def idempotency_since(since: float) -> Any:
    def query(connection: sqlite3.Connection) -> list[tuple[str, str, bytes, bytes, float]]:
        return [
            tuple(row)
            for row in connection.execute(
                "SELECT merchant_id, online_id, fingerprint, response, created_at "
                "FROM idempotency WHERE created_at >= ? ORDER BY created_at",
                (since,),
            )
        ]

    return query


def due_reversals(bank: str, at: float, limit: int) -> Any:
    """Pending reversals of ``bank`` whose next attempt is due, with what they repeat."""

    def query(connection: sqlite3.Connection) -> list[tuple[int, int, TxnRecord]]:
        rows = connection.execute(
            f"SELECT saf.id AS saf_id, saf.attempts AS saf_attempts, "
            f"{', '.join('txn.' + c.strip() for c in _TXN_COLUMNS.split(','))} "
            "FROM saf JOIN txn ON txn.rrn = saf.rrn "
            "WHERE saf.bank = ? AND saf.state = 'pending' AND saf.next_attempt_at <= ? "
            "ORDER BY saf.next_attempt_at LIMIT ?",
            (bank, at, limit),
        ).fetchall()
        return [(row["saf_id"], row["saf_attempts"], record_from_row(row)) for row in rows]

    return query


def next_reversal_due(bank: str) -> Any:
    def query(connection: sqlite3.Connection) -> float | None:
        row = connection.execute(
            "SELECT min(next_attempt_at) FROM saf WHERE bank = ? AND state = 'pending'", (bank,)
        ).fetchone()
        return None if row[0] is None else float(row[0])

    return query
