"""The book of transactions the switch has sent to banks, and the rules on originals.

Voids, refunds and reversals find their original here, by RRN (POS void/refund), by the
merchant's request id (online) or by the terminal's trace (POS reversal: terminal,
merchant, batch, STAN). Amounts being voided or refunded are reserved while the bank
decides, so two concurrent refunds can never together exceed the original.

This is the in-memory book: a cache of recent transactions bounded by ``max_records``
(the oldest are forgotten first). The journal holds them all; the switchboard reads an
original back from it when the book no longer has it. Pure Python, no I/O.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from typing import Literal

import msgspec

from switch.core.bank import OriginalData, ReversalSubject
from switch.core.products import Product, product
from switch.errors import TransactionRefused

State = Literal["sending", "approved", "declined", "no_answer", "not_sent", "bank_only"]
"""``sending``: written and maybe at the bank; ``no_answer``: it may have reached the
bank and got no final answer (a reversal is queued); ``not_sent``: it never left;
``bank_only``: never the switch's, found standing in a bank's clearing file (reversed,
with no card number: the switch never had one)."""


class TxnRecord(msgspec.Struct, kw_only=True, gc=False):
    """One bank-bound transaction and what has happened to it since.

    The card number is held as the journal holds it: masked, keyed HMAC (to compare)
    and sealed (to send again); the clear number lives only in the request in flight.
    Not tracked by the cyclic garbage collector (``gc=False``): it refers only to
    strings, numbers and another untracked Struct, so it can be in no cycle, and a
    book of many thousands would otherwise lengthen every full collection.
    """

    kind: str
    """Its product's kind (``switch.core.products``); ``unknown`` for a bank's record of
    no product."""
    rrn: str
    bank: str
    channel: str
    request_mti: str
    terminal_id: str
    merchant_id: str
    stan: str
    batch: str
    local_date: str
    pan_masked: str
    pan_hmac: bytes
    pan_sealed: bytes
    amount: int
    currency: str
    bank_processing_code: str
    business_date: str = ""
    """YYYY-MM-DD: the business date it settles on (settlement.md), fixed on receipt."""
    online_id: str | None = None
    request_digest: bytes | None = None
    """Keyed digest of what the terminal asked: a repeat must ask the same."""
    original_rrn: str | None = None
    """For a void or refund: the sale it acts on."""
    sent: OriginalData | None = None
    """Set once the message left for the bank: what a reversal's field 90 repeats."""
    state: State = "sending"
    code: str | None = None
    auth_code: str | None = None
    balance: str | None = None
    refunded: int = 0
    refund_reserved: int = 0
    voided: bool = False
    void_pending: bool = False
    reversed: bool = False
    received_at: float = 0.0
    """When it was received (epoch seconds; the journal's ``created_at``): the moment
    the risk rules' windows count it at."""
    device_id: str | None = None
    """The online request's ``device_id`` (risk.md), sent to no bank."""
    risk_version: str | None = None
    """The risk rule set's version it was evaluated under (None: it met no rule)."""
    risk_rule: str | None = None
    """The rule that declined it."""
    risk_review: str | None = None
    """The ``review`` rules that flagged it, comma-separated."""
    risk_shadow: str | None = None
    """The ``shadow`` rules that hit, each ``id:action[:code]``, comma-separated."""

    @property
    def request_key(self) -> RequestKey:
        return (
            self.terminal_id, self.merchant_id, self.batch, self.stan, self.local_date,
            self.request_mti,
        )  # fmt: skip

    def reversal_subject(self, pan: str | None) -> ReversalSubject | None:
        """What a reversal of this message repeats (``pan`` opened from ``pan_sealed``);
        None if it never left for a bank."""
        if self.sent is None:
            return None
        return ReversalSubject(
            pan=pan,
            processing_code=self.bank_processing_code,
            amount=self.amount,
            currency=self.currency,
            rrn=self.rrn,
            terminal_id=self.terminal_id,
            merchant_id=self.merchant_id,
            original=self.sent,
        )

    def __repr__(self) -> str:
        return f"TxnRecord(kind={self.kind!r}, rrn={self.rrn!r}, state={self.state!r})"


TerminalTrace = tuple[str, str, str, str]
RequestKey = tuple[str, str, str, str, str, str]
"""terminal, merchant, batch, STAN, local date, MTI: a POS request's identity. A
repeat with the same key is a duplicate (pos-cup.md terminals resend on time-out)."""


class TransactionBook:
    __slots__ = ("_by_online_id", "_by_request", "_by_rrn", "_by_trace", "max_records", "shared")

    def __init__(self, *, max_records: int, shared: bool = False) -> None:
        self.max_records = max_records
        self.shared = shared
        """The journal is shared with other worker processes: a record held here may
        since have been answered, voided or reversed by another worker, so an original
        is read from the journal unless this process has it in flight; a first held
        ``sending`` is watched in the journal, and one held nowhere is found by the
        journal refusing its repeat (``RequestRepeated``)."""
        self._by_rrn: OrderedDict[str, TxnRecord] = OrderedDict()
        self._by_trace: dict[TerminalTrace, TxnRecord] = {}
        self._by_request: dict[RequestKey, TxnRecord] = {}
        self._by_online_id: dict[tuple[str, str], TxnRecord] = {}

    def __len__(self) -> int:
        return len(self._by_rrn)

    def add(self, record: TxnRecord) -> None:
        # Fields that repeat across many records (a terminal's id, the date, the batch)
        # are shared rather than held once per record.
        record.terminal_id = sys.intern(record.terminal_id)
        record.merchant_id = sys.intern(record.merchant_id)
        record.batch = sys.intern(record.batch)
        record.local_date = sys.intern(record.local_date)
        record.request_mti = sys.intern(record.request_mti)
        record.currency = sys.intern(record.currency)
        record.bank_processing_code = sys.intern(record.bank_processing_code)
        self._by_rrn[record.rrn] = record
        self._by_trace[_trace_of(record)] = record
        self._by_request[record.request_key] = record
        if record.online_id is not None:
            self._by_online_id[(record.merchant_id, record.online_id)] = record
        while len(self._by_rrn) > self.max_records:
            _, oldest = self._by_rrn.popitem(last=False)
            self._forget(oldest)

    def take_fresh(self, record: TxnRecord) -> TxnRecord:
        """A record just read from the journal, as the book is to hold it; returns the
        copy now held. On one process's journal the copy held, if any, is the newer
        (its changes are journaled after they are made here), so it is kept. On a
        shared journal the read one replaces it, unless a void or refund of this
        process's is pending on the held copy (a reservation the journal never sees)."""
        held = self._by_rrn.get(record.rrn)
        if held is None or (
            self.shared and not held.void_pending and not held.refund_reserved
        ):
            if held is not None:
                self._forget(held)
            self.add(record)
            return record
        return held

    def discard(self, record: TxnRecord) -> None:
        """Forgets a record this process made and will never journal (the journal
        refused it as a repeat of another worker's)."""
        if self._by_rrn.get(record.rrn) is record:
            del self._by_rrn[record.rrn]
        self._forget(record)

    def _forget(self, record: TxnRecord) -> None:
        trace = _trace_of(record)
        if self._by_trace.get(trace) is record:
            del self._by_trace[trace]
        if self._by_request.get(record.request_key) is record:
            del self._by_request[record.request_key]
        if record.online_id is not None:
            key = (record.merchant_id, record.online_id)
            if self._by_online_id.get(key) is record:
                del self._by_online_id[key]

    def by_rrn(self, rrn: str) -> TxnRecord | None:
        return self._by_rrn.get(rrn)

    def by_online_id(self, merchant_id: str, online_id: str) -> TxnRecord | None:
        return self._by_online_id.get((merchant_id, online_id))

    def by_request(self, key: RequestKey) -> TxnRecord | None:
        return self._by_request.get(key)

    def by_trace(
        self, terminal_id: str, merchant_id: str, batch: str, stan: str
    ) -> TxnRecord | None:
        return self._by_trace.get((terminal_id, merchant_id, batch, stan))

    # -- rules on originals ---------------------------------------------------------

    def find_sale(self, *, merchant_id: str, rrn: str | None, online_id: str | None) -> TxnRecord:
        """The approved, live sale a void or refund acts on, or 25."""
        return self.find_original(
            merchant_id=merchant_id, rrn=rrn, online_id=online_id, kinds=("sale",)
        )

    def find_original(
        self,
        *,
        merchant_id: str,
        rrn: str | None,
        online_id: str | None,
        kinds: tuple[str, ...],
    ) -> TxnRecord:
        """The approved, live original of one of ``kinds`` (its product's
        ``original_kinds``) that a request finds by reference, or 25 (12: voided)."""
        if rrn is not None:
            original = self.by_rrn(rrn)
        elif online_id is not None:
            original = self.by_online_id(merchant_id, online_id)
        else:
            original = None
        if original is None or original.merchant_id != merchant_id or original.kind not in kinds:
            raise TransactionRefused("25", "original transaction not found", field="original")
        if original.state != "approved" or original.reversed:
            raise TransactionRefused(
                "25", "original transaction was not approved", field="original"
            )
        if original.voided or original.void_pending:
            raise TransactionRefused("12", "original transaction is voided", field="original")
        return original

    def reserve(self, product: Product, original: TxnRecord, amount: int) -> None:
        """Reserves on ``original`` what ``product`` takes of it (its ``reserves``:
        the whole original, or part of what is left of its amount) until the bank
        decides; refused (64, 12, 61) when that is not there to take."""
        if product.reserves == "whole":
            self.reserve_void(original, amount)
        elif product.reserves == "remaining":
            self.reserve_refund(original, amount)

    def reserve_void(self, original: TxnRecord, amount: int) -> None:
        if amount != original.amount:
            raise TransactionRefused("64", "void amount differs from the original", field="amount")
        if original.refunded or original.refund_reserved:
            raise TransactionRefused(
                "12", "original transaction is partly refunded", field="original"
            )
        original.void_pending = True

    def reserve_refund(self, original: TxnRecord, amount: int) -> None:
        left = original.amount - original.refunded - original.refund_reserved
        if amount > left:
            raise TransactionRefused(
                "61", f"refund exceeds what is left of the original ({left})", field="amount"
            )
        original.refund_reserved += amount

    def settle(
        self,
        record: TxnRecord,
        *,
        state: State,
        code: str | None,
        auth_code: str | None = None,
        balance: str | None = None,
    ) -> TxnRecord | None:
        """Records a bank's answer (or its absence) and releases what was reserved.
        Returns the original it changed, if any (to be journaled with the record)."""
        record.state = state
        record.code = code
        record.auth_code = auth_code
        record.balance = balance
        if record.original_rrn is None:
            return None
        original = self._by_rrn.get(record.original_rrn)
        if original is None:
            return None
        approved = state == "approved"
        reserves = product(record.kind).reserves
        if reserves == "whole":
            original.void_pending = False
            original.voided = original.voided or approved
        elif reserves == "remaining":
            original.refund_reserved -= record.amount
            if approved:
                original.refunded += record.amount
        return original

    def mark_reversed(self, record: TxnRecord) -> TxnRecord | None:
        """A reversal of ``record`` is queued: undo its effect on its original. Returns
        the original it changed, if any (to be journaled with the record)."""
        if record.reversed:
            return None
        record.reversed = True
        if record.state != "approved" or record.original_rrn is None:
            return None
        original = self._by_rrn.get(record.original_rrn)
        if original is None:
            return None
        reserves = product(record.kind).reserves
        if reserves == "whole":
            original.voided = False
        elif reserves == "remaining":
            original.refunded -= record.amount
        return original


def _trace_of(record: TxnRecord) -> TerminalTrace:
    return (record.terminal_id, record.merchant_id, record.batch, record.stan)
