"""A terminal's batch settlement (0500) and batch upload (0320) as the switch answers
them: state machines in the manner of ``switch.core.lifecycle``, events in, actions
out, no I/O. ``switch.net.switchboard`` carries the actions out.

A settlement::

    received ── admitting ── loading_settled ─┬─ (a repeat: the same totals) ───────── answered
                  (91)            (96)        └─ loading_totals ── journaling ──────── answered
                                                      (96)            (96)

A repeat of a 0500 (the same terminal, merchant, batch and totals) gets the answer the
batch was given, 48.5, RRN and business date alike, and writes nothing. A 0500 with
other totals for a batch already settled is compared with the journal again and its
answer replaces the one before (and the upload that followed it): the terminal's
record changed, and an answer about totals it no longer sends would tell it nothing
true. The result is journaled before the answer leaves.

An upload::

    received ── admitting ── journaling ── answered
                  (91)          (96)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

import msgspec

from switch.core.batch import BALANCED, BatchTotals, SettledBatch, settlement_result
from switch.core.changes import BatchRecordsUploaded, BatchSettled, BatchUploadEnded, Change
from switch.core.clock import Stamp
from switch.core.lifecycle import (
    Admit,
    Admitted,
    Answer,
    Journal,
    Journaled,
    JournalFailed,
    Refused,
)
from switch.core.model import BatchSettlement, BatchUpload, Outcome
from switch.core.numbers import RrnExhausted
from switch.errors import LocalProtocolError

BatchKey = tuple[str, str, str]
"""terminal, merchant, batch: what identifies a terminal's batch (pos-cup.md)."""

# -- events and actions of their own (the rest are the lifecycle's) --------------------


class SettledBatchLoaded(msgspec.Struct, frozen=True):
    """The journal's answer to LoadSettledBatch (None: never settled)."""

    settled: SettledBatch | None


class BatchTotalsLoaded(msgspec.Struct, frozen=True):
    totals: BatchTotals


class LoadSettledBatch(msgspec.Struct, frozen=True):
    """Read how the batch was last settled, if it was."""

    key: BatchKey


class LoadBatchTotals(msgspec.Struct, frozen=True):
    """Read the switch's totals of the batch from its journal (pos-cup.md's rules)."""

    key: BatchKey


BatchEvent = Admitted | Refused | SettledBatchLoaded | BatchTotalsLoaded | Journaled | JournalFailed
BatchAction = Admit | LoadSettledBatch | LoadBatchTotals | Journal | Answer

SettlementPhase = Literal[
    "received", "admitting", "loading_settled", "loading_totals", "journaling", "answered"
]
SETTLEMENT_TRANSITIONS: Final[
    dict[tuple[SettlementPhase, type], SettlementPhase | tuple[SettlementPhase, ...]]
] = {
    ("admitting", Admitted): "loading_settled",
    ("admitting", Refused): "answered",
    ("loading_settled", SettledBatchLoaded): ("loading_totals", "answered"),
    ("loading_settled", JournalFailed): "answered",
    ("loading_totals", BatchTotalsLoaded): ("journaling", "answered"),
    ("loading_totals", JournalFailed): "answered",
    ("journaling", Journaled): "answered",
    ("journaling", JournalFailed): "answered",
}

UploadPhase = Literal["received", "admitting", "journaling", "answered"]
UPLOAD_TRANSITIONS: Final[dict[tuple[UploadPhase, type], UploadPhase]] = {
    ("admitting", Admitted): "journaling",
    ("admitting", Refused): "answered",
    ("journaling", Journaled): "answered",
    ("journaling", JournalFailed): "answered",
}


def _shed(event: Refused) -> Outcome:
    return Outcome(code="91", message=event.reason, shed=True)


def _journal_failure(event: JournalFailed) -> Outcome:
    return Outcome(code="96", message="system malfunction", detail=event.error)


class TerminalSettlement:
    """One 0500, from the channel's hand-over to its 0510. Build it, call
    :meth:`start`, carry out the actions, feed what happened to :meth:`handle` until
    an action is :class:`Answer`."""

    def __init__(
        self,
        request: BatchSettlement,
        stamp: Stamp,
        *,
        business_date: str,
        allocate_rrn: Callable[[Stamp], str],
        now: float,
    ) -> None:
        self.request = request
        self.stamp = stamp
        self.business_date = business_date
        self.allocate_rrn = allocate_rrn
        self.now = now
        acceptor = request.acceptor
        self.key: BatchKey = (acceptor.terminal_id, acceptor.merchant_id, request.batch)
        self.phase: SettlementPhase = "received"
        self.settled: SettledBatch | None = None
        """What is journaled (or, for a repeat, was) as the batch's settlement."""

    def start(self) -> list[BatchAction]:
        if self.phase != "received":
            raise LocalProtocolError("a settlement starts once")
        self.phase = "admitting"
        return [Admit()]

    def handle(self, event: BatchEvent, now: float) -> list[BatchAction]:
        moves = SETTLEMENT_TRANSITIONS.get((self.phase, type(event)))
        if moves is None:
            raise LocalProtocolError(f"{type(event).__name__} in phase {self.phase}")
        self.now = now
        actions: list[BatchAction]
        match event:
            case Refused():
                actions = self._answer(_shed(event))
            case JournalFailed():
                actions = self._answer(_journal_failure(event))
            case Admitted():
                self.phase = "loading_settled"
                actions = [LoadSettledBatch(self.key)]
            case SettledBatchLoaded(settled=settled):
                if settled is not None and settled.terminal_totals == self.request.totals:
                    self.settled = settled
                    actions = self._answer(self._outcome(settled, route="duplicate"))
                else:
                    self.phase = "loading_totals"
                    actions = [LoadBatchTotals(self.key)]
            case BatchTotalsLoaded(totals=totals):
                actions = self._settle(totals)
            case Journaled():
                assert self.settled is not None
                actions = self._answer(self._outcome(self.settled))
            case _:
                raise LocalProtocolError(f"{type(event).__name__} in phase {self.phase}")
        allowed = moves if isinstance(moves, tuple) else (moves,)
        assert self.phase in allowed, f"{type(event).__name__}: moved to {self.phase}"
        return actions

    def _settle(self, switch_totals: BatchTotals) -> list[BatchAction]:
        try:
            rrn = self.allocate_rrn(self.stamp)
        except RrnExhausted as exc:
            return self._answer(Outcome(code="96", message="system malfunction", detail=str(exc)))
        terminal_id, merchant_id, batch = self.key
        self.settled = SettledBatch(
            terminal_id=terminal_id,
            merchant_id=merchant_id,
            batch=batch,
            terminal_totals=self.request.totals,
            switch_totals=switch_totals,
            result=settlement_result(self.request.totals, switch_totals),
            business_date=self.business_date,
            rrn=rrn,
            settled_at=self.now,
        )
        self.phase = "journaling"
        return [Journal((BatchSettled(self.settled),))]

    def _outcome(self, settled: SettledBatch, route: str | None = None) -> Outcome:
        balanced = settled.result == BALANCED
        return Outcome(
            code="00",
            message="balanced" if balanced else "not balanced: upload the batch",
            rrn=settled.rrn,
            settlement_date=settled.business_date,
            batch_result=settled.result,
            route=route,
        )

    def _answer(self, outcome: Outcome) -> list[BatchAction]:
        self.phase = "answered"
        if outcome.settlement_date is None:  # refusals name the date too, as 0210s do
            outcome = msgspec.structs.replace(outcome, settlement_date=self.business_date)
        return [Answer(outcome)]


class TerminalUpload:
    """One 0320: its records (or the last one's total) journaled, then 0330 00."""

    def __init__(self, request: BatchUpload, *, now: float) -> None:
        self.request = request
        self.now = now
        self.phase: UploadPhase = "received"

    def start(self) -> list[BatchAction]:
        if self.phase != "received":
            raise LocalProtocolError("an upload starts once")
        self.phase = "admitting"
        return [Admit()]

    def handle(self, event: BatchEvent, now: float) -> list[BatchAction]:
        moved = UPLOAD_TRANSITIONS.get((self.phase, type(event)))
        if moved is None:
            raise LocalProtocolError(f"{type(event).__name__} in phase {self.phase}")
        self.now = now
        self.phase = moved
        match event:
            case Refused():
                return [Answer(_shed(event))]
            case JournalFailed():
                return [Answer(_journal_failure(event))]
            case Admitted():
                return [Journal((self._change(),))]
            case Journaled():
                return [Answer(Outcome(code="00"))]
        raise LocalProtocolError(f"{type(event).__name__} in phase {self.phase}")

    def _change(self) -> Change:
        request = self.request
        acceptor = request.acceptor
        if request.total is not None:
            return BatchUploadEnded(
                terminal_id=acceptor.terminal_id, merchant_id=acceptor.merchant_id,
                batch=request.batch, total=request.total, at=self.now,
            )  # fmt: skip
        return BatchRecordsUploaded(
            terminal_id=acceptor.terminal_id, merchant_id=acceptor.merchant_id,
            batch=request.batch, records=request.records, at=self.now,
        )  # fmt: skip
