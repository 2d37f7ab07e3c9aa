"""Transactions as the switchboard makes them, for tests of the journal."""

from __future__ import annotations

from typing import Any

from switch.core.bank import OriginalData
from switch.core.book import TxnRecord


def make_record(rrn: str = "632600000001", **fields: Any) -> TxnRecord:
    """A sale sent to icbc, with ``fields`` overriding any of its fields."""
    values: dict[str, Any] = {
        "kind": "sale",
        "rrn": rrn,
        "bank": "icbc",
        "channel": "pos",
        "request_mti": "0200",
        "terminal_id": "POS00001",
        "merchant_id": "898310048990001",
        "stan": rrn[-6:],
        "batch": "000001",
        "local_date": "1122",
        "pan_masked": "622202*********2221",
        "pan_hmac": b"\x01" + b"h" * 32,
        "pan_sealed": b"\x01sealed",
        "amount": 10000,
        "currency": "156",
        "bank_processing_code": "000000",
        "sent": OriginalData(mti="0200", stan=rrn[-6:], transmission="1122063015"),
    }
    values.update(fields)
    return TxnRecord(**values)
