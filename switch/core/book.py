"""The book of transactions the switch has sent to banks, and the rules on originals.

Voids, refunds and reversals find their original here, by RRN (POS void/refund), by the
merchant's request id (online) or by the terminal's trace (POS reversal: terminal,
merchant, batch, STAN). Amounts being voided or refunded are reserved while the bank
decides, so two concurrent refunds can never together exceed the original.

This is the in-memory book: a cache of recent transactions bounded by ``max_records``
(the oldest are forgotten first). The journal holds them all; the switchboard reads an
original back from it when the book no longer has it. Pure Python, no I/O.

The transaction machines (``switch.core.lifecycle``) only read the book. What they
change in it they return as book changes (``Keep``, ``Reserve``, ``Settle``,
``MarkReversed``, ...: small frozen Structs, ``BookChange``), which the trio layer hands
to :meth:`TransactionBook.apply`, in order, at once after the step that returned them,
before it awaits anything: so two requests handed over together see each other's
reservations. :meth:`TransactionBook.preview` shows a step what its records will look
like once its changes are carried out (for the journal's snapshots), by the same code
on copies.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final, Literal

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
    customer_id: str | None = None
    """An on-us payment's customer (wallet.md: named, or found from its payment code),
    the risk rules' ``customer`` (risk.md); None for a card's."""
    funding: str | None = None
    """An on-us payment's funding (``wallet`` or ``credit``) once its code was found
    open; None for a card's (its funding, ``card`` or ``cobrand``, is its BIN's)."""
    risk_version: str | None = None
    """The risk rule set's version it was evaluated under (None: it met no rule)."""
    risk_rule: str | None = None
    """The rule that declined it."""
    risk_review: str | None = None
    """The ``review`` rules that flagged it, comma-separated."""
    risk_shadow: str | None = None
    """The ``shadow`` rules that hit, each ``id:action[:code]``, comma-separated."""
    hold_state: str | None = None
    """A pre-authorisation's (``Product.holds``): ``open`` once approved, then
    ``completed``, ``voided``, ``reversed`` or ``expired``; a completion's void or
    reversal makes it ``open`` again. None for every other kind."""
    hold_until: str | None = None
    """A pre-authorisation's last business date for a completion (YYYY-MM-DD): its
    date plus the ``expiry_days`` in force when it was made."""
    hold_max_pct: int | None = None
    """A pre-authorisation's ``completion_max_pct`` in force when it was made."""
    stand_in: str | None = None
    """Stood in by the switch (risk.md): why (``circuit_open``, ``no_link``,
    ``bank_91``); None for every other transaction."""
    advice: str | None = None
    """A stood-in sale's advice state as last journaled (``switch.core.stip``)."""

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


# -- book changes: what a machine returns, what apply() carries out ------------------


Find = Callable[[str], TxnRecord | None]
"""How a change finds an original by RRN: in the book, or among a preview's copies."""
Own = Callable[[TxnRecord], TxnRecord]
"""Which copy of a record a change names is written: the book's own, or a preview's."""


class Keep(msgspec.Struct, frozen=True, gc=False):
    """Hold a record the machine made (indexed by RRN, trace, request, online id)."""

    record: TxnRecord

    def write(self, own: Own, find: Find) -> TxnRecord | None:
        return None  # the book's indexes only


class Forget(msgspec.Struct, frozen=True, gc=False):
    """Forget a record the machine made and will never journal (``discard``)."""

    record: TxnRecord

    def write(self, own: Own, find: Find) -> TxnRecord | None:
        return None  # the book's indexes only


class Reserve(msgspec.Struct, frozen=True, gc=False):
    """Reserve on ``original`` what a void, refund or completion takes of it while the
    bank decides (``reserves``: its product's), checked first by
    :meth:`TransactionBook.check_reserve`."""

    original: TxnRecord
    reserves: str
    amount: int

    def write(self, own: Own, find: Find) -> TxnRecord | None:
        _reserve(own(self.original), self.reserves, self.amount)
        return None


class Settle(msgspec.Struct, frozen=True, gc=False):
    """Record the answer (or its absence) and release what the record reserved on its
    original (found by RRN when carried out)."""

    record: TxnRecord
    state: State
    code: str | None
    auth_code: str | None = None
    balance: str | None = None

    def write(self, own: Own, find: Find) -> TxnRecord | None:
        return _settle(own(self.record), self.state, self.code, self.auth_code, self.balance, find)


class MarkSent(msgspec.Struct, frozen=True, gc=False):
    """The request left (or is about to leave) for its bank as this message."""

    record: TxnRecord
    processing_code: str
    sent: OriginalData

    def write(self, own: Own, find: Find) -> TxnRecord | None:
        record = own(self.record)
        record.bank_processing_code, record.sent = self.processing_code, self.sent
        return None


class MarkStoodIn(msgspec.Struct, frozen=True, gc=False):
    """Stood in by the switch (``why``), its advice queued; None: not stood in after all
    (the journal refused it: other workers' stand-ins took the caps)."""

    record: TxnRecord
    why: str | None

    def write(self, own: Own, find: Find) -> TxnRecord | None:
        record = own(self.record)
        record.stand_in, record.advice = self.why, None if self.why is None else "queued"
        return None


class MarkCustomer(msgspec.Struct, frozen=True, gc=False):
    """An on-us payment's customer and funding, and what the risk rules kept of it
    (``Verdict.journal_fields``; None: the rules kept nothing)."""

    record: TxnRecord
    customer_id: str | None
    funding: str | None
    risk: dict[str, str | None] | None = None

    def write(self, own: Own, find: Find) -> TxnRecord | None:
        record, risk = own(self.record), self.risk
        record.customer_id, record.funding = self.customer_id, self.funding
        if risk is not None:
            record.risk_version = risk["risk_version"]
            record.risk_rule = risk["risk_rule"]
            record.risk_review = risk["risk_review"]
            record.risk_shadow = risk["risk_shadow"]
        return None


class MarkReversed(msgspec.Struct, frozen=True, gc=False):
    """A reversal of the record is queued (or done on the ledger): undo its effect on
    its original."""

    record: TxnRecord

    def write(self, own: Own, find: Find) -> TxnRecord | None:
        return _mark_reversed(own(self.record), find)


class MarkState(msgspec.Struct, frozen=True, gc=False):
    """The record's state (and code) as the journal will say it, nothing else moved: an
    answer not journaled, reversed from memory (``no_answer``)."""

    record: TxnRecord
    state: State
    code: str | None

    def write(self, own: Own, find: Find) -> TxnRecord | None:
        record = own(self.record)
        record.state, record.code = self.state, self.code
        return None


class Unvoid(msgspec.Struct, frozen=True, gc=False):
    """A void done in the switch was not journaled: its original stands again."""

    original: TxnRecord

    def write(self, own: Own, find: Find) -> TxnRecord | None:
        own(self.original).voided = False
        return None


class MoveHold(msgspec.Struct, frozen=True, gc=False):
    """A pre-authorisation held by RRN moves to ``hold_state`` (its completion voided or
    reversed: ``open``; that undone: ``completed``), if it is ``open`` or ``completed``."""

    rrn: str
    hold_state: str

    def write(self, own: Own, find: Find) -> TxnRecord | None:
        held = find(self.rrn)
        if held is not None and held.hold_state in ("open", "completed"):
            held.hold_state = self.hold_state
        return None


BookChange = (
    Keep | Forget | Reserve | Settle | MarkSent | MarkStoodIn | MarkCustomer | MarkReversed
    | MarkState | Unvoid | MoveHold
)  # fmt: skip
"""Each writes what it changes on records (``write``: on ``own(record)`` for the record
it names, on ``find(rrn)`` for one it finds by RRN, and returns the original a
``Settle`` or ``MarkReversed`` changed); :meth:`TransactionBook.apply` adds the
indexes' part."""
BOOK_CHANGES: Final = (
    Keep, Forget, Reserve, Settle, MarkSent, MarkStoodIn, MarkCustomer, MarkReversed,
    MarkState, Unvoid, MoveHold,
)  # fmt: skip
"""The book changes' types, for ``isinstance``."""
BOOK_CHANGE_TYPES: Final = frozenset(BOOK_CHANGES)
"""The same, for a driver's ``type(action) in``: one look-up, not one test a type."""


class TransactionBook:
    __slots__ = (
        "_by_authorisation", "_by_online_id", "_by_request", "_by_rrn", "_by_trace",
        "max_records", "shared",
    )  # fmt: skip

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
        self._by_authorisation: dict[AuthorisationKey, list[TxnRecord]] = {}

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
        if record.hold_state is not None:
            self._index_authorisation(record)
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
        if record.hold_state is not None and record.auth_code is not None:
            held = self._by_authorisation.get(_authorisation_of(record))
            if held is not None and record in held:
                held.remove(record)
                if not held:
                    del self._by_authorisation[_authorisation_of(record)]

    def _index_authorisation(self, record: TxnRecord) -> None:
        """A pre-authorisation, approved: found by a completion's 38 and 61.3."""
        if record.auth_code is None:
            return
        held = self._by_authorisation.setdefault(_authorisation_of(record), [])
        if record not in held:
            held.append(record)

    def by_authorisation(
        self, merchant_id: str, auth_code: str, local_date: str
    ) -> list[TxnRecord]:
        """The pre-authorisations of a merchant with this authorisation code and local
        date (MMDD), as the book holds them."""
        return list(self._by_authorisation.get((merchant_id, auth_code, local_date), ()))

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
        if original.hold_state is not None:
            _check_open(original)
            return original
        if original.state != "approved" or original.reversed:
            raise TransactionRefused(
                "25", "original transaction was not approved", field="original"
            )
        if original.voided or original.void_pending:
            raise TransactionRefused("12", "original transaction is voided", field="original")
        return original

    def still_live(self, original: TxnRecord) -> bool:
        """Whether ``original``, found by :meth:`find_original` or :meth:`find_held`,
        would still be found: not voided, completed, reversed or reserved since."""
        if original.void_pending or original.reversed or original.state != "approved":
            return False
        if original.hold_state is not None:
            return hold_open(original)
        return not original.voided

    def find_held(
        self,
        *,
        merchant_id: str,
        auth_code: str,
        local_date: str,
        matches: Callable[[TxnRecord], bool],
        kinds: tuple[str, ...],
    ) -> TxnRecord:
        """The open pre-authorisation a completion names by 38 and 61.3 (``matches``
        checks its card, and 61.1, 61.2 and 37 when given): 25 if there is none, 12 if
        it is not open."""
        found = [
            record
            for record in self.by_authorisation(merchant_id, auth_code, local_date)
            if record.kind in kinds and matches(record)
        ]
        if not found:
            raise TransactionRefused("25", "pre-authorisation not found", field="original")
        open_ones = [record for record in found if hold_open(record)]
        _check_open(open_ones[0] if open_ones else found[-1])
        return open_ones[0]

    def check_reserve(self, product: Product, original: TxnRecord, amount: int) -> Reserve | None:
        """What ``product`` takes of ``original`` (its ``reserves``: the whole original,
        or part of what is left of its amount), as the change that reserves it until the
        bank decides; refused (64, 12, 61) when that is not there to take. Reads only:
        the reservation is made when the change is carried out (:meth:`apply`). None: it
        reserves nothing."""
        if product.reserves == "whole":
            _check_void(original, amount)
        elif product.reserves == "remaining":
            _check_refund(original, amount)
        elif product.reserves == "hold":
            _check_hold(original, amount)
        else:
            return None
        return Reserve(original, product.reserves, amount)

    def reserve(self, product: Product, original: TxnRecord, amount: int) -> None:
        """Checks and makes the reservation at once (:meth:`check_reserve`, :meth:`apply`)."""
        change = self.check_reserve(product, original, amount)
        if change is not None:
            _reserve(change.original, change.reserves, change.amount)

    def reserve_hold(self, original: TxnRecord, amount: int) -> None:
        """A completion of ``original`` (an open pre-authorisation): 1 fen up to its
        amount times its ``completion_max_pct`` (61); one at a time (12)."""
        _check_hold(original, amount)
        original.void_pending = True

    def reserve_void(self, original: TxnRecord, amount: int) -> None:
        _check_void(original, amount)
        original.void_pending = True

    def reserve_refund(self, original: TxnRecord, amount: int) -> None:
        _check_refund(original, amount)
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
        touched = _settle(record, state, code, auth_code, balance, self._by_rrn.get)
        if record.hold_state == "open" and state == "approved":
            self._index_authorisation(record)
        return touched

    def mark_reversed(self, record: TxnRecord) -> TxnRecord | None:
        """A reversal of ``record`` is queued: undo its effect on its original. Returns
        the original it changed, if any (to be journaled with the record)."""
        return _mark_reversed(record, self._by_rrn.get)

    def expire(self, record: TxnRecord) -> bool:
        """An open pre-authorisation whose last completion date has closed becomes
        ``expired`` (its reversal is queued with it); False if it is not open or a
        completion or void of it is at its bank (it is looked at again at the next
        close)."""
        if not hold_open(record) or record.void_pending:
            return False
        record.hold_state = "expired"
        record.reversed = True
        return True

    # -- book changes --------------------------------------------------------------

    def apply(self, change: BookChange) -> None:
        """Carries out one change a machine returned (the trio layer calls this, in the
        order the step gave them, before it awaits anything)."""
        if isinstance(change, Keep):
            self.add(change.record)
        elif isinstance(change, Forget):
            self.discard(change.record)
        else:
            change.write(_same, self._by_rrn.get)
            if isinstance(change, Settle):  # an approved pre-authorisation: found by 38, 61.3
                record = change.record
                if record.hold_state == "open" and record.state == "approved":
                    self._index_authorisation(record)

    def preview(self, changes: Sequence[BookChange]) -> Preview:
        """The records ``changes`` touch as they will be once carried out, as copies
        (the book is left as it is): what a step journals of the records it changes."""
        view = Preview(self._by_rrn.get)
        own, find = view.copy, view.find
        for change in changes:
            touched = change.write(own, find)
            if touched is not None:
                view.touched(change, touched)
        return view


class Preview:
    """Copies of the records a step's book changes touch, changed as :meth:`apply`
    will change the book's (:meth:`TransactionBook.preview`)."""

    __slots__ = ("_copies", "_held", "_originals")

    def __init__(self, held: Find) -> None:
        self._held = held
        self._copies: dict[int, TxnRecord] = {}
        self._originals: dict[int, TxnRecord] | None = None

    def __call__(self, record: TxnRecord) -> TxnRecord:
        """``record`` as the changes leave it: its copy, or itself if they do not touch it."""
        return self._copies.get(id(record), record)

    def copy(self, record: TxnRecord) -> TxnRecord:
        """``record``'s copy (made on first use): the one the changes are written to, and
        one a journal change may keep."""
        key, copies = id(record), self._copies
        copied = copies.get(key)
        if copied is None:
            # msgspec's own copy, as copy.copy makes it, without copy's dispatch
            copied = copies[key] = record.__copy__()  # type: ignore[attr-defined]
        return copied

    def find(self, rrn: str) -> TxnRecord | None:
        held = self._held(rrn)
        return None if held is None else self.copy(held)

    def original(self, change: BookChange) -> TxnRecord | None:
        """The original a ``Settle`` or ``MarkReversed`` of this preview changed (its
        copy), if it changed one: what is journaled of the original with the record."""
        return None if self._originals is None else self._originals.get(id(change))

    def touched(self, change: BookChange, original: TxnRecord) -> None:
        if self._originals is None:
            self._originals = {}
        self._originals[id(change)] = original


def _same(record: TxnRecord) -> TxnRecord:
    return record


def _reserve(original: TxnRecord, reserves: str, amount: int) -> None:
    if reserves == "remaining":
        original.refund_reserved += amount
    else:  # whole, hold: one at a time
        original.void_pending = True


def _check_hold(original: TxnRecord, amount: int) -> None:
    """A completion of ``original`` (an open pre-authorisation): 1 fen up to its amount
    times its ``completion_max_pct`` (61); one at a time (12)."""
    _check_open(original)
    limit = original.amount * (original.hold_max_pct or 100) // 100
    if not 1 <= amount <= limit:
        raise TransactionRefused("61", f"completion must be 1 to {limit} fen", field="amount")


def _check_void(original: TxnRecord, amount: int) -> None:
    if amount != original.amount:
        raise TransactionRefused("64", "void amount differs from the original", field="amount")
    if original.refunded or original.refund_reserved:
        raise TransactionRefused("12", "original transaction is partly refunded", field="original")


def _check_refund(original: TxnRecord, amount: int) -> None:
    left = original.amount - original.refunded - original.refund_reserved
    if amount > left:
        raise TransactionRefused(
            "61", f"refund exceeds what is left of the original ({left})", field="amount"
        )


def _settle(
    record: TxnRecord,
    state: State,
    code: str | None,
    auth_code: str | None,
    balance: str | None,
    find: Find,
) -> TxnRecord | None:
    record.state = state
    record.code = code
    record.auth_code = auth_code
    record.balance = balance
    if state == "approved" and product(record.kind).holds:
        record.hold_state = "open"
    if record.original_rrn is None:
        return None
    original = find(record.original_rrn)
    if original is None:
        return None
    approved = state == "approved"
    reserves = product(record.kind).reserves
    if reserves == "whole":
        original.void_pending = False
        original.voided = original.voided or approved
        if approved and original.hold_state is not None:
            original.hold_state = "voided"
    elif reserves == "remaining":
        original.refund_reserved -= record.amount
        if approved:
            original.refunded += record.amount
    elif reserves == "hold":
        original.void_pending = False
        if approved:
            original.hold_state = "completed"
    return original


def _mark_reversed(record: TxnRecord, find: Find) -> TxnRecord | None:
    if record.reversed:
        return None
    record.reversed = True
    if record.hold_state == "open":
        record.hold_state = "reversed"
    if record.state != "approved" or record.original_rrn is None:
        return None
    original = find(record.original_rrn)
    if original is None:
        return None
    reserves = product(record.kind).reserves
    if reserves == "whole":
        original.voided = False
        if original.hold_state == "voided":
            original.hold_state = "open"
    elif reserves == "remaining":
        original.refunded -= record.amount
    elif reserves == "hold" and original.hold_state == "completed":
        original.hold_state = "open"
    return original


def hold_open(record: TxnRecord) -> bool:
    """Whether a pre-authorisation is ``open``: approved, and not completed, voided,
    reversed or expired."""
    return record.state == "approved" and record.hold_state == "open" and not record.reversed


def _check_open(record: TxnRecord) -> None:
    """12 for a pre-authorisation that is not open (risk.md: a completion or a void of
    one that is not open; a completed one is voided by voiding its completion first),
    or has a completion or void at its bank (one at a time); 25 for one never approved."""
    if record.state != "approved":
        raise TransactionRefused("25", "original transaction was not approved", field="original")
    if not hold_open(record):
        state = "reversed" if record.reversed and record.hold_state == "open" else record.hold_state
        raise TransactionRefused("12", f"pre-authorisation is {state}", field="original")
    if record.void_pending:
        raise TransactionRefused(
            "12", "pre-authorisation has a completion or void in progress", field="original"
        )


AuthorisationKey = tuple[str, str, str]
"""merchant, authorisation code, local date (MMDD): how a completion names its
pre-authorisation (38, 61.3)."""


def _authorisation_of(record: TxnRecord) -> AuthorisationKey:
    return (record.merchant_id, record.auth_code or "", record.local_date)


def _trace_of(record: TxnRecord) -> TerminalTrace:
    return (record.terminal_id, record.merchant_id, record.batch, record.stan)
