"""What happened, as the journal must keep it: the changes a transaction's lifecycle
hands to the journal port (``switch.store.port``) to commit together.

Plain data. Changes capture values when they are made, not when they are written: a
TxnRecord is mutable (the book settles it in place), so a change snapshots what it
needs of it.
"""

from __future__ import annotations

import copy
from typing import Literal

import msgspec

from switch.core.bank import OriginalData
from switch.core.batch import SettledBatch, UploadRecord
from switch.core.book import TxnRecord

SafState = Literal["pending", "delivered", "manual"]


class TxnStarted(msgspec.Struct, frozen=True, tag=True):
    """A bank-bound transaction, as it is before it leaves (or as it was refused)."""

    record: TxnRecord
    at: float

    @classmethod
    def of(cls, record: TxnRecord, at: float) -> TxnStarted:
        if not record.received_at:  # received when started, unless the lifecycle said
            record.received_at = at
        return cls(record=copy.copy(record), at=at)


class TxnUpdated(msgspec.Struct, frozen=True, tag=True):
    """A transaction's state and what hangs on it (refunded, voided, reversed) now."""

    rrn: str
    state: str
    code: str | None
    auth_code: str | None
    balance: str | None
    refunded: int
    voided: bool
    reversed: bool
    at: float
    detail: str | None = None
    hold_state: str | None = None
    """A pre-authorisation's state (``TxnRecord.hold_state``); None for other kinds."""

    @classmethod
    def of(cls, record: TxnRecord, at: float, detail: str | None = None) -> TxnUpdated:
        return cls(
            rrn=record.rrn, state=record.state, code=record.code, auth_code=record.auth_code,
            balance=record.balance, refunded=record.refunded, voided=record.voided,
            reversed=record.reversed, at=at, detail=detail, hold_state=record.hold_state,
        )  # fmt: skip


class RiskMarked(msgspec.Struct, frozen=True, tag=True):
    """What the risk rules saw and decided of an on-us payment, known only once its
    payment code was found open (wallet.md: the rules come after the code's look-up,
    on the ledger, when its row is journaled already): its customer and funding, the
    rule set's version, the deciding rule, the review rules and the shadow hits."""

    rrn: str
    customer_id: str | None
    funding: str | None
    risk_version: str | None
    risk_rule: str | None
    risk_review: str | None
    risk_shadow: str | None
    at: float

    @classmethod
    def of(cls, record: TxnRecord, at: float) -> RiskMarked:
        return cls(
            rrn=record.rrn, customer_id=record.customer_id, funding=record.funding,
            risk_version=record.risk_version, risk_rule=record.risk_rule,
            risk_review=record.risk_review, risk_shadow=record.risk_shadow, at=at,
        )  # fmt: skip


class HoldMoved(msgspec.Struct, frozen=True, tag=True):
    """A pre-authorisation's state moved by what happened to its completion (voided or
    reversed: ``open`` again; that undone: ``completed``), written without its record,
    which the book may no longer hold."""

    rrn: str
    hold_state: str
    at: float
    detail: str


class ReversalQueued(msgspec.Struct, frozen=True, tag=True):
    """The reversal of a transaction, queued for its bank's store-and-forward."""

    rrn: str
    bank: str
    reason: str
    at: float


class ReversalAttempted(msgspec.Struct, frozen=True, tag=True):
    """What one attempt at a queued reversal gave. ``attempts`` counts only attempts
    that were sent to the bank (a repeat is a 0401)."""

    saf_id: int
    state: SafState
    attempts: int
    next_attempt_at: float
    result: str
    at: float


class BankOnlyFound(msgspec.Struct, frozen=True, tag=True):
    """A bank's clearing record of a transaction the switch never sent, kept with its
    reversal queued (settlement.md, ``bank_only``). Written once, however often the
    settlement that found it hands it over."""

    record: TxnRecord
    reason: str
    at: float


class AdviceQueued(msgspec.Struct, frozen=True, tag=True):
    """A stood-in sale's advice, queued for its bank (risk.md): committed with the
    sale's approval, before the answer leaves."""

    rrn: str
    bank: str
    reason: str
    """Why it was stood in: ``circuit_open``, ``no_link`` or ``bank_91``."""
    at: float
    local_time: str
    """The sale's 12 (hhmmss local); its 13 is the record's local date."""
    entry_mode: str
    """The sale's 22..."""
    condition_code: str
    """...25..."""
    mcc: str | None
    """...and 18, as the advice repeats them (bank-h2h.md)."""
    caps: tuple[int, int, int] | None = None
    """On a journal several workers share: (``card_daily_cap_fen``,
    ``card_daily_count``, ``max_pending_fen``) of its bank, claimed in this commit
    against what the journal holds of every worker's stand-ins (the commit fails,
    ``StandInCapTaken``, if it would exceed one); None: not claimed (one worker's tally,
    decided and kept in one process, is exact)."""


class AdviceAttempted(msgspec.Struct, frozen=True, tag=True):
    """What one attempt at an advice gave (``switch.core.stip.AdviceState``), kept on
    the advice and on its sale's row. ``attempts`` counts those sent (a repeat is a
    0221). An accepted advice's send (MTI, 11, 7) becomes its sale's bank message:
    what a later void or reversal names in 90, what the bank's file lists."""

    advice_id: int
    rrn: str
    state: str
    attempts: int
    next_attempt_at: float
    result: str
    at: float
    sent: OriginalData | None = None
    accepted_date: str | None = None
    """YYYY-MM-DD: the business date it was accepted on (its clearing file's)."""


class OnlineResultKept(msgspec.Struct, frozen=True, tag=True):
    """An online request's result, kept so that a repeat of its id gets it back."""

    merchant_id: str
    online_id: str
    fingerprint: bytes
    response: bytes
    at: float


class OnlineResultsPurged(msgspec.Struct, frozen=True, tag=True):
    """Online results older than they must be kept are forgotten."""

    before: float


class BatchSettled(msgspec.Struct, frozen=True, tag=True):
    """A terminal's 0500 as answered: it replaces what an earlier 0500 of the batch left
    (its settlement and any upload, which belonged to other totals)."""

    settled: SettledBatch


class BatchRecordsUploaded(msgspec.Struct, frozen=True, tag=True):
    """Records of a terminal's 0320; a record uploaded again replaces the one before."""

    terminal_id: str
    merchant_id: str
    batch: str
    records: tuple[UploadRecord, ...]
    at: float


class BatchUploadEnded(msgspec.Struct, frozen=True, tag=True):
    """The last 0320 (60.3 = 202): how many records the terminal says it uploaded, kept
    on the batch's settlement (a batch with none on record has nowhere to keep it)."""

    terminal_id: str
    merchant_id: str
    batch: str
    total: int
    at: float


Change = (
    TxnStarted | TxnUpdated | ReversalQueued | ReversalAttempted | OnlineResultKept
    | OnlineResultsPurged | BankOnlyFound | BatchSettled | BatchRecordsUploaded
    | BatchUploadEnded | HoldMoved | AdviceQueued | AdviceAttempted | RiskMarked
)  # fmt: skip
