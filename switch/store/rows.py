"""A transaction as a row of the journal's ``txn`` table, for every engine: the values
an insert writes (in ``TXN_COLUMNS`` order) and the record read back from a row.

The engines differ in their SQL, not in what a transaction's row holds; each engine's
``sql.py`` and the shared questions (``questions.py``) use these, so a column added to
the table is added here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from switch.core.bank import OriginalData
from switch.core.batch import BatchTotals, SettledBatch
from switch.core.book import TxnRecord

TXN_COLUMNS = (
    "rrn", "kind", "channel", "request_mti", "terminal_id", "merchant_id", "stan", "batch",
    "local_date", "online_id", "request_digest", "pan_masked", "pan_hmac", "pan_sealed",
    "amount", "currency", "bank", "bank_mti", "bank_stan", "transmission",
    "bank_processing_code", "original_rrn", "state", "code", "auth_code", "balance",
    "refunded", "voided", "reversed", "created_at", "updated_at", "business_date",
    "device_id", "risk_version", "risk_rule", "risk_review", "risk_shadow",
    "hold_state", "hold_until", "hold_max_pct",
    "stand_in", "advice_state", "customer_id", "funding",
)  # fmt: skip
"""The columns of a ``txn`` row that the switch writes and reads, on every engine."""


def txn_values(record: TxnRecord, at: float) -> tuple[Any, ...]:
    """The row of ``record`` created at ``at``, in ``TXN_COLUMNS`` order."""
    sent = record.sent
    return (
        record.rrn, record.kind, record.channel, record.request_mti, record.terminal_id,
        record.merchant_id, record.stan, record.batch, record.local_date, record.online_id,
        record.request_digest, record.pan_masked, record.pan_hmac, record.pan_sealed,
        record.amount, record.currency, record.bank,
        sent.mti if sent else None, sent.stan if sent else None,
        sent.transmission if sent else None, record.bank_processing_code, record.original_rrn,
        record.state, record.code, record.auth_code, record.balance, record.refunded,
        record.voided, record.reversed, record.received_at or at, at, record.business_date,
        record.device_id, record.risk_version, record.risk_rule, record.risk_review,
        record.risk_shadow,
        record.hold_state, record.hold_until, record.hold_max_pct, record.stand_in,
        record.advice, record.customer_id, record.funding,
    )  # fmt: skip


EVENTS_COLUMN = "events"
"""The ``txn`` column holding the transaction's history (design.md, "A transaction's
history in its row"): one JSON line ``[at, state, code, detail]`` an event, appended by
the statement that changes the row. Events before it was added are ``txn_event`` rows."""

_encode_event = msgspec.json.Encoder().encode
_decode_event = msgspec.json.Decoder(tuple[float, str, str | None, str | None]).decode


def event_line(at: float, state: str, code: str | None, detail: str | None) -> str:
    """One event of a transaction as its row's history holds it (a line, its newline
    included: JSON escapes any in the detail)."""
    return _encode_event((at, state, code, detail)).decode() + "\n"


def events_of(history: str | None) -> list[tuple[float, str, str | None, str | None]]:
    """The events (at, state, code, detail) a row's history holds, oldest first."""
    if not history:
        return []
    return [_decode_event(line) for line in history.splitlines() if line]


def record_from_row(row: Mapping[str, Any]) -> TxnRecord:
    """The record of a ``txn`` row, whatever the engine gave for bytes (memoryview or
    bytes) and flags (0/1 or booleans)."""
    sent = (
        OriginalData(mti=row["bank_mti"], stan=row["bank_stan"], transmission=row["transmission"])
        if row["bank_mti"] is not None
        else None
    )
    digest = row["request_digest"]
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
        business_date=row["business_date"],
        pan_masked=row["pan_masked"],
        pan_hmac=bytes(row["pan_hmac"]),
        pan_sealed=bytes(row["pan_sealed"]),
        amount=row["amount"],
        currency=row["currency"],
        bank_processing_code=row["bank_processing_code"],
        online_id=row["online_id"],
        request_digest=None if digest is None else bytes(digest),
        original_rrn=row["original_rrn"],
        sent=sent,
        state=row["state"],
        code=row["code"],
        auth_code=row["auth_code"],
        balance=row["balance"],
        refunded=row["refunded"],
        voided=bool(row["voided"]),
        reversed=bool(row["reversed"]),
        received_at=row["created_at"],
        device_id=row["device_id"],
        risk_version=row["risk_version"],
        risk_rule=row["risk_rule"],
        risk_review=row["risk_review"],
        risk_shadow=row["risk_shadow"],
        hold_state=row["hold_state"],
        hold_until=row["hold_until"],
        hold_max_pct=row["hold_max_pct"],
        stand_in=row["stand_in"],
        advice=row["advice_state"],
        customer_id=row["customer_id"],
        funding=row["funding"],
    )


SETTLED_BATCH_COLUMNS = (
    "terminal_id, merchant_id, batch, terminal_totals, switch_totals, result, "
    "business_date, rrn, settled_at, upload_count"
)
"""What :func:`settled_batch_from_row` reads of a batch_settlement row."""


def settled_batch_from_row(row: Mapping[str, Any]) -> SettledBatch:
    """A batch_settlement row (SETTLED_BATCH_COLUMNS, by name) as the port returns it."""
    return SettledBatch(
        terminal_id=row["terminal_id"],
        merchant_id=row["merchant_id"],
        batch=row["batch"],
        terminal_totals=BatchTotals.from_layout(row["terminal_totals"]),
        switch_totals=BatchTotals.from_layout(row["switch_totals"]),
        result=row["result"],
        business_date=row["business_date"],
        rrn=row["rrn"],
        settled_at=row["settled_at"],
        upload_count=row["upload_count"],
    )
