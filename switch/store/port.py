"""The journal port: what the switch asks of durable storage, in its own terms.

The switch never sees SQL, a connection or a row: it hands the journal *changes*
(typed, frozen records of what happened: a transaction started, settled, a reversal
queued or attempted, an online result kept) to commit together, and asks it domain
questions (the original with this RRN, what was left in doubt, which reversals are
due). Each storage engine implements this port in a module of its own under
``switch/store/``; its contract tests (``tests/store/test_journal_port.py``) run
against every engine.

The changes themselves are the core's vocabulary (``switch.core.changes``): the
lifecycle decides what happened, the journal makes it durable.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

import msgspec
import trio

from switch.core.batch import BatchTotals, SettledBatch, UploadRecord
from switch.core.book import RequestKey, TxnRecord
from switch.core.changes import (
    AdviceAttempted,
    AdviceQueued,
    BankOnlyFound,
    BatchRecordsUploaded,
    BatchSettled,
    BatchUploadEnded,
    Change,
    HoldMoved,
    OnlineResultKept,
    OnlineResultsPurged,
    ReversalAttempted,
    ReversalQueued,
    RiskMarked,
    SafState,
    TxnStarted,
    TxnUpdated,
)
from switch.core.stats import HistogramSnapshot
from switch.errors import SwitchError

__all__ = [
    "AdviceAttempted",
    "AdviceQueued",
    "BankOnlyFound",
    "BatchRecordsUploaded",
    "BatchSettled",
    "BatchUploadEnded",
    "Change",
    "HoldMoved",
    "OnlineResultKept",
    "OnlineResultsPurged",
    "ReversalAttempted",
    "ReversalQueued",
    "RiskMarked",
    "SafState",
    "TxnStarted",
    "TxnUpdated",
]

Durability = Literal["sync", "async"]


class JournalError(SwitchError):
    """The journal could not commit or read: nothing that depended on it may be
    answered 00. Its text is for the operator's log, never for a client."""

    response_code = "96"


class StandInCapTaken(JournalError):
    """A commit of a stood-in approval (its ``AdviceQueued`` with ``caps``) was
    refused: with it, the card's standing stood-in sales on its local date or the
    bank's pending amount, as the journal holds every worker's, would exceed a cap
    (risk.md), stand-ins the other workers committed first having taken it. Nothing of
    the refused commit is written, and the other callers' commits are not affected;
    the caller answers 91, not stood in."""


class RequestRepeated(JournalError):
    """A commit starting a POS request (its ``TxnStarted``) was refused: the journal
    already holds a request of the same identity (``TxnRecord.request_key``: terminal,
    merchant, batch, STAN, local date, MTI) that went to a bank, that is, in any state
    but ``not_sent``. On a journal shared by several workers it is how a repeat that
    reached another worker is found; the caller answers it as that first's repeat and
    sends nothing. Nothing of the refused commit is written, and the other callers'
    commits are not affected. Only a journal that several processes write (PostgreSQL)
    raises it; the SQLite journal's one process finds its repeats in its own book."""

    def __init__(self, key: RequestKey) -> None:
        self.key = key
        terminal, merchant, batch, stan, local_date, mti = key
        super().__init__(
            f"request {mti} of terminal {terminal} merchant {merchant} batch {batch} "
            f"STAN {stan} of {local_date} is already journaled"
        )


class JournalUnavailable(JournalError):
    """The journal cannot be opened for writing at start-up (read-only, unwritable,
    disk full, in use by another switch): the switch refuses to start."""


class JournalLock(Protocol):
    """Held by the switch that runs on a journal, for its whole life: another switch
    on the same journal refuses to start (JournalUnavailable, naming the holder)."""

    def release(self) -> None: ...


# -- answers -------------------------------------------------------------------------


class DueReversal(msgspec.Struct, frozen=True):
    """A queued reversal whose next attempt is due, with the transaction it reverses."""

    saf_id: int
    attempts: int
    record: TxnRecord


class DueAdvice(msgspec.Struct, frozen=True, kw_only=True):
    """The head of a bank's advice queue (the oldest stood-in sale whose advice has no
    final answer and is not ``manual``), with its sale."""

    advice_id: int
    state: str
    attempts: int
    next_attempt_at: float
    local_time: str
    entry_mode: str
    condition_code: str
    mcc: str | None
    record: TxnRecord


class StoodIn(msgspec.Struct, frozen=True, kw_only=True):
    """A stood-in sale as the stand-in tally is rebuilt from (``switch.core.stip``)."""

    bank: str
    card_key: bytes
    local_date: str
    amount: int
    standing: bool
    pending: bool
    rrn: str = ""


class AdviceBacklog(msgspec.Struct, frozen=True, kw_only=True):
    """One bank's advices without a final answer."""

    bank: str
    pending: int
    pending_fen: int
    manual: int
    oldest_created_at: float


class OnlineResult(msgspec.Struct, frozen=True):
    merchant_id: str
    online_id: str
    fingerprint: bytes
    response: bytes
    created_at: float


class ReversalBacklog(msgspec.Struct, frozen=True, kw_only=True):
    """One bank's reversals not yet delivered."""

    bank: str
    pending: int
    manual: int
    oldest_created_at: float
    """When the oldest of them (pending or manual) was queued."""


class JournalStatistics(msgspec.Struct, frozen=True, kw_only=True):
    commits: int
    changes: int
    failures: int
    queued: int
    wal_resets: int = 0
    backend: str = ""
    writable: bool = True
    """Running, and its latest commit did not fail."""
    commit_latency: HistogramSnapshot | None = None
    """Each group commit's time in its thread, ms."""
    group_size: HistogramSnapshot | None = None
    """Changes per group commit (the bounds read as counts)."""


class Journal(Protocol):
    """The switch's journal. ``run`` opens it and commits until cancelled; every other
    method is used while it runs."""

    durability: Durability

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Opens the journal (JournalUnavailable if it cannot be written), reports
        started, then commits until cancelled; what is queued then is still committed."""
        ...

    async def commit(self, *changes: Change, durable: bool | None = None) -> None:
        """Commits the changes together (all or none). Waits until they are on disk
        when the journal is "sync" (or ``durable=True``); JournalError if they failed,
        RequestRepeated (one) if a POS request they start repeats one the journal holds
        (another caller's changes committed with them are not failed by it)."""
        ...

    def statistics(self) -> JournalStatistics: ...

    # -- the switch's questions; each raises JournalError if the journal cannot answer

    async def transaction_by_rrn(self, rrn: str) -> TxnRecord | None: ...

    async def transaction_by_online_id(
        self, merchant_id: str, online_id: str
    ) -> TxnRecord | None: ...

    async def transaction_by_trace(
        self, terminal_id: str, merchant_id: str, batch: str, stan: str
    ) -> TxnRecord | None:
        """The latest transaction a terminal sent with this batch and STAN."""
        ...

    async def holds_by_authorisation(
        self, merchant_id: str, auth_code: str, local_date: str
    ) -> list[TxnRecord]:
        """The pre-authorisations of a merchant with this authorisation code (38) and
        local date (MMDD, 61.3): what a completion may name."""
        ...

    async def holds_open_until(self, business_date: str) -> list[TxnRecord]:
        """The open pre-authorisations whose last completion date is ``business_date``
        or earlier: those its close expires."""
        ...

    async def transactions_in_doubt(self) -> list[TxnRecord]:
        """Written before they left for a bank and never settled: after a crash, each
        may or may not have reached its bank."""
        ...

    def in_doubt(self) -> AbstractAsyncContextManager[list[TxnRecord]]:
        """The transactions in doubt that this process's start-up recovery is to take,
        held for it until the block ends (its recovery is committed inside): on one
        process's journal all of them; on a journal of several workers, this worker's
        own and those of workers that are not running, each to one recoverer."""
        ...

    async def recent_transactions(self, since: float, limit: int) -> list[TxnRecord]:
        """The newest ``limit`` transactions created since ``since``, oldest first."""
        ...

    async def risk_history(self, since: float) -> list[TxnRecord]:
        """The requests the risk rules count (risk.md) received since ``since``,
        oldest first: what a rebuild of their windows reads."""
        ...

    async def risk_changes(self, since: float) -> list[tuple[TxnRecord, float, bool]]:
        """Those written or changed since ``since``, each with when it last changed and
        whether this worker wrote it (on a journal of one process, every one)."""
        ...

    async def last_bank_stan(self, bank: str) -> int | None:
        """The STAN of the bank's most recently journaled request (on a journal of
        several workers, of this worker's)."""
        ...

    async def highest_rrn_sequence(self, day: str) -> int:
        """The highest RRN sequence journaled for a day (``YDDD``), or -1."""
        ...

    async def online_result(self, merchant_id: str, online_id: str) -> OnlineResult | None: ...

    async def online_results_since(self, since: float) -> list[OnlineResult]:
        """Oldest first."""
        ...

    async def due_reversals(self, bank: str, at: float, limit: int) -> list[DueReversal]:
        """Pending reversals of ``bank`` due at ``at``, the longest due first."""
        ...

    async def reversal_backlog(self) -> list[ReversalBacklog]:
        """Per bank with any, the reversals not yet delivered (pending and manual), by
        bank name; cheap however long the history of delivered ones."""
        ...

    async def advice_head(self, bank: str, *, claim: bool = True) -> DueAdvice | None:
        """The next advice of ``bank`` to send, in the order of stand-in. On a journal
        shared by several workers, ``claim`` makes this worker its one sender for a
        lease (None while another worker holds it); without ``claim`` it is only read
        (and not while another worker holds it)."""
        ...

    async def stood_in(self, local_dates: list[str]) -> list[StoodIn]:
        """Stood-in sales of these local dates (MMDD) and those whose advice is pending."""
        ...

    async def advice_backlog(self) -> list[AdviceBacklog]:
        """Per bank with any, its advices without a final answer."""
        ...

    # A terminal's batch. These see every change whose commit was asked for before
    # them, even with "async" durability: a terminal settles right after its last sale.

    async def batch_totals(self, terminal_id: str, merchant_id: str, batch: str) -> BatchTotals:
        """The switch's totals of a terminal's batch (pos-cup.md): its approved POS sales
        neither voided nor reversed (debit), its approved refunds not reversed (credit);
        nothing else counts."""
        ...

    async def settled_batch(
        self, terminal_id: str, merchant_id: str, batch: str
    ) -> SettledBatch | None:
        """How the batch was last settled (its 0500 and the answer), if it was."""
        ...

    async def batch_upload(
        self, terminal_id: str, merchant_id: str, batch: str
    ) -> list[UploadRecord]:
        """The records the terminal uploaded for the batch, by kind and STAN."""
        ...


# -- the operator's view -------------------------------------------------------------


class TxnView(msgspec.Struct, frozen=True, kw_only=True):
    """A transaction as an operator sees it: everything but the HMAC, the sealed card
    number and the request digest."""

    rrn: str
    kind: str
    channel: str
    request_mti: str
    terminal_id: str
    merchant_id: str
    stan: str
    batch: str
    local_date: str
    online_id: str | None
    pan_masked: str
    amount: int
    currency: str
    bank: str
    bank_mti: str | None
    bank_stan: str | None
    transmission: str | None
    original_rrn: str | None
    state: str
    code: str | None
    auth_code: str | None
    refunded: int
    voided: bool
    reversed: bool
    created_at: float
    updated_at: float


class TxnEventView(msgspec.Struct, frozen=True, kw_only=True):
    at: float
    state: str
    code: str | None
    detail: str | None


class ReversalView(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    bank: str
    rrn: str
    state: str
    attempts: int
    next_attempt_at: float
    last_result: str | None
    reason: str
    created_at: float
    updated_at: float


class AdviceView(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    bank: str
    rrn: str
    state: str
    attempts: int
    next_attempt_at: float
    last_result: str | None
    reason: str
    amount: int
    accepted_date: str | None
    created_at: float
    updated_at: float


class TxnHistory(msgspec.Struct, frozen=True, kw_only=True):
    transaction: TxnView
    events: list[TxnEventView]
    reversal: ReversalView | None


class OperatorError(Exception):
    """What the operator asked for is not there (or cannot be done); says what."""


class OperatorJournal(Protocol):
    """What an operator's command asks of the journal while a switch may be running.
    Plain blocking calls: a command does one thing and exits."""

    def close(self) -> None: ...

    def transaction(self, rrn: str) -> TxnHistory:
        """OperatorError if there is none."""
        ...

    def terminal_transactions(
        self, terminal_id: str, local_date: str, since: float, until: float
    ) -> list[TxnView]:
        """A terminal's transactions of a local date (MMDD) created in [since, until)."""
        ...

    def risk_marked(self, before: float, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` requests created before ``before`` that risk rules declined,
        flagged or hit in shadow, newest first (``operator_journal.RISK_MARKED``)."""
        ...

    def reversals(self, *, bank: str | None, state: str | None) -> list[ReversalView]:
        """Queued reversals; those not yet delivered when ``state`` is None."""
        ...

    def retry_reversal(self, saf_id: int, at: float) -> ReversalView:
        """Puts a reversal not yet delivered back in the queue, due at ``at``."""
        ...

    def advices(self, *, bank: str | None, state: str | None) -> list[AdviceView]:
        """Queued advices; those without a final answer when ``state`` is None."""
        ...

    def retry_advice(self, advice_id: int, at: float) -> AdviceView:
        """Puts a ``manual`` advice back in its queue (its attempts start again)."""
        ...
