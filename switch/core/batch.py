"""A terminal's batch: field 48 of its settlement (0500/0510) and upload (0320), as
pos-cup.md "Batch settlement" lays them out, and the switch's record of a settlement.

Pure functions and frozen Structs, no I/O. A 0500's 48 is 62 digits::

    48.1 debit total n12 | 48.2 count n3 | 48.3 credit total n12 | 48.4 count n3
    48.5 result n1 (0 asked, 1 balanced, 2 not) | 48.6-48.10 foreign cards, 31 zeros

A 0320's 48 is a record count n2 (1-8) and that many records of 20 digits (kind n2,
the original's STAN n6, amount n12); the last 0320 (60.3 = 202) carries only the total
of records uploaded, n4. What a terminal sends that breaks this is refused 30, naming
field 48.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from switch.core import products
from switch.errors import TransactionRefused

SettlementResult = Literal["1", "2"]
BALANCED: Final[SettlementResult] = "1"
NOT_BALANCED: Final[SettlementResult] = "2"

UploadKind = Literal["22", "25", "20"]
"""60.1 of the uploaded transaction: 22 sale, 25 refund, 20 completion (the products that count as a
debit or a credit: ``products.UPLOAD_KINDS``, which a test holds this to)."""
UPLOAD_KINDS: Final[dict[str, UploadKind]] = {code: code for code in products.UPLOAD_KINDS}  # type: ignore[misc]
_UPLOAD_NAMES: Final = [f"{code} ({row.kind})" for code, row in products.UPLOAD_KINDS.items()]
_UPLOAD_KINDS_TEXT: Final = (
    "neither " + " nor ".join(_UPLOAD_NAMES)
    if len(_UPLOAD_NAMES) == 2
    else "none of " + ", ".join(_UPLOAD_NAMES)
)

SETTLEMENT_DIGITS: Final = 62
RESULT_AT: Final = 30
"""48.5's offset in a 0500's 48."""
FOREIGN_DIGITS: Final = 31
MAX_RECORDS_PER_UPLOAD: Final = 8
RECORD_DIGITS: Final = 20
UPLOAD_TOTAL_DIGITS: Final = 4

_AMOUNT_MAX: Final = 10**12 - 1
_COUNT_MAX: Final = 999


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


class BatchTotals(msgspec.Struct, frozen=True, gc=False):
    """48.1-48.4: what a batch's standing sales and refunds add up to, in fen."""

    debit_fen: int = 0
    debit_count: int = 0
    credit_fen: int = 0
    credit_count: int = 0

    @property
    def fits(self) -> bool:
        """Whether field 48 can hold these totals (12 digits of fen, 3 of count)."""
        return (
            0 <= self.debit_fen <= _AMOUNT_MAX
            and 0 <= self.credit_fen <= _AMOUNT_MAX
            and 0 <= self.debit_count <= _COUNT_MAX
            and 0 <= self.credit_count <= _COUNT_MAX
        )

    def field48(self, result: str = "0", *, saturate: bool = False) -> str:
        """The 62 digits of a 0500 (``result`` "0") or 0510 with these totals.
        ValueError if they do not fit; with ``saturate`` a part that does not is
        written at its largest (the journal's totals of an outsized batch, kept for
        the record: they cannot equal a terminal's, which always fit)."""
        parts = [
            (self.debit_fen, _AMOUNT_MAX, 12),
            (self.debit_count, _COUNT_MAX, 3),
            (self.credit_fen, _AMOUNT_MAX, 12),
            (self.credit_count, _COUNT_MAX, 3),
        ]
        if not saturate and not self.fits:
            raise ValueError(f"batch totals do not fit field 48: {self!r}")
        text = "".join(f"{min(max(value, 0), most):0{width}d}" for value, most, width in parts)
        return text + result + "0" * FOREIGN_DIGITS

    @classmethod
    def from_layout(cls, text: str) -> BatchTotals:
        """Totals as the journal keeps them, in field 48's layout (trusted: the
        switch wrote them)."""
        return cls(int(text[0:12]), int(text[12:15]), int(text[15:27]), int(text[27:30]))


def settlement_totals(field48: str) -> BatchTotals:
    """The terminal's totals from a 0500's 48; refused 30 (field 48) unless it is 62
    digits with 48.5 = 0 and the foreign part all zeros (pos-cup.md)."""
    if len(field48) != SETTLEMENT_DIGITS or not _digits(field48):
        raise TransactionRefused(
            "30", f"field 48 of a 0500 must be {SETTLEMENT_DIGITS} digits", field="48"
        )
    if field48[RESULT_AT] != "0":
        raise TransactionRefused("30", "field 48.5 must be 0 in a 0500", field="48")
    if field48[RESULT_AT + 1 :] != "0" * FOREIGN_DIGITS:
        raise TransactionRefused(
            "30", "field 48.6-48.10 (foreign cards) must be zeros on this interface", field="48"
        )
    return BatchTotals.from_layout(field48)


def settlement_result(terminal: BatchTotals, switch: BatchTotals) -> SettlementResult:
    """48.5 of the answer: balanced when all four parts agree."""
    return BALANCED if terminal == switch else NOT_BALANCED


def answer_field48(request_field48: str, result: SettlementResult) -> str:
    """A 0510's 48: the 0500's, echoed, with 48.5 set."""
    return request_field48[:RESULT_AT] + result + request_field48[RESULT_AT + 1 :]


class UploadRecord(msgspec.Struct, frozen=True, gc=False):
    """One transaction of the terminal's record of its batch, as a 0320 carries it."""

    kind: UploadKind
    stan: str
    """The uploaded transaction's own STAN (n6)."""
    amount: int
    """In fen."""

    def digits(self) -> str:
        if not (len(self.stan) == 6 and _digits(self.stan)) or not 0 <= self.amount <= _AMOUNT_MAX:
            raise ValueError(f"upload record does not fit field 48: {self!r}")
        return f"{self.kind}{self.stan}{self.amount:012d}"


def upload_records(field48: str) -> tuple[UploadRecord, ...]:
    """The records of a 0320 (60.3 = 201); refused 30 (field 48) unless 48 is a count
    of 1 to 8 followed by exactly that many 20-digit records of an upload kind."""
    if not _digits(field48) or len(field48) < 2:
        raise TransactionRefused("30", "field 48 of a 0320 must be digits", field="48")
    count = int(field48[:2])
    if not 1 <= count <= MAX_RECORDS_PER_UPLOAD:
        raise TransactionRefused(
            "30", f"field 48 must hold 1 to {MAX_RECORDS_PER_UPLOAD} records, not {count}",
            field="48",
        )  # fmt: skip
    if len(field48) != 2 + count * RECORD_DIGITS:
        raise TransactionRefused(
            "30", f"field 48 says {count} records but holds {len(field48) - 2} digits of them",
            field="48",
        )  # fmt: skip
    records = []
    for start in range(2, len(field48), RECORD_DIGITS):
        record = field48[start : start + RECORD_DIGITS]
        kind = UPLOAD_KINDS.get(record[:2])
        if kind is None:
            raise TransactionRefused(
                "30", f"upload record kind {record[:2]!r} is {_UPLOAD_KINDS_TEXT}",
                field="48",
            )  # fmt: skip
        records.append(UploadRecord(kind=kind, stan=record[2:8], amount=int(record[8:])))
    return tuple(records)


def upload_total(field48: str) -> int:
    """The last 0320's (60.3 = 202) total of records uploaded; refused 30 (field 48)
    unless it is 4 digits."""
    if len(field48) != UPLOAD_TOTAL_DIGITS or not _digits(field48):
        raise TransactionRefused(
            "30", f"field 48 of the last 0320 must be {UPLOAD_TOTAL_DIGITS} digits", field="48"
        )
    return int(field48)


def upload_field48(records: tuple[UploadRecord, ...] | list[UploadRecord]) -> str:
    """A 0320's 48 for 1 to 8 records; ValueError otherwise."""
    if not 1 <= len(records) <= MAX_RECORDS_PER_UPLOAD:
        raise ValueError(
            f"a 0320 carries 1 to {MAX_RECORDS_PER_UPLOAD} records, not {len(records)}"
        )
    return f"{len(records):02d}" + "".join(record.digits() for record in records)


def upload_end_field48(total: int) -> str:
    """The last 0320's 48: how many records were uploaded in all; ValueError past 9999."""
    if not 0 <= total < 10**UPLOAD_TOTAL_DIGITS:
        raise ValueError(f"an upload total is 4 digits, not {total}")
    return f"{total:04d}"


class SettledBatch(msgspec.Struct, frozen=True, kw_only=True):
    """A terminal's batch as the switch last settled it: its 0500 and the answer."""

    terminal_id: str
    merchant_id: str
    batch: str
    terminal_totals: BatchTotals
    """48.1-48.4 as the terminal sent them."""
    switch_totals: BatchTotals
    """The journal's totals of the batch when it was settled."""
    result: SettlementResult
    business_date: str
    """YYYY-MM-DD: the answer's field 15."""
    rrn: str
    """The answer's field 37: a repeat of the 0500 is answered with it again."""
    settled_at: float
    upload_count: int | None = None
    """Records the terminal's last 0320 (60.3 = 202) says it uploaded; None: no
    upload has ended for this settlement."""
