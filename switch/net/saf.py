"""Store-and-forward of reversals: one task per bank sends the reversals queued in the
journal until the bank answers them.

Each reversal has its own schedule (exponential backoff with jitter), and several are
in flight at once, so one that keeps failing never holds back the others. Only
attempts that reached the bank count: the first one sent is a 0400, repeats are 0401,
and after ``max_attempts`` sent without an answer of 00 it waits in state ``manual``
until an operator retries it (``switch saf retry ID``, seen at the next poll). One
that could not be sent (the bank's circuit open, its links down or full) is tried
again later as if it had never been tried. One that can never be sent as it is (a field
the bank's dialect cannot carry) goes to ``manual`` at once with the reason; it is no
verdict on the bank, so it never counts towards its circuit.

When the journal itself fails, a reversal the switch owes is kept in memory instead
(``reverse_unjournaled``) and delivered the same way; its record in the journal still
says ``sending``, so if the switch stops first, the next start reverses it again (a
bank applies a reversal once, however often it is sent).
"""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Final

import structlog
import trio

from switch.config import SafSection
from switch.core import bank as bankmsg
from switch.core.bank import Institution
from switch.core.book import TxnRecord
from switch.core.changes import SafState
from switch.core.clock import WALL_CLOCK, BusinessClock
from switch.core.lifecycle import Cards
from switch.errors import CardDataUnreadable
from switch.net.bank_link import BankConnector
from switch.net.send_once import send_once
from switch.store.port import Journal, JournalError, ReversalAttempted, TxnUpdated
from switch.wire.iso8583 import FieldValue

log = structlog.get_logger()

BANK_ANSWERED: Final = "00"
"""bank-h2h.md: a bank answers every reversal 00, even of what it never saw."""
UNJOURNALED_LIMIT: Final = 10_000
"""Reversals kept in memory at most while the journal fails; past it the oldest is
left to the next start's recovery (its journal record says ``sending``)."""
JOURNAL_TROUBLE_LOG_S: Final = 10.0


class _Unjournaled:
    """A reversal owed while the journal cannot record it."""

    __slots__ = ("attempts", "next_attempt_at", "reason", "record")

    def __init__(self, record: TxnRecord, reason: str) -> None:
        self.record = record
        self.reason = reason
        self.attempts = 0
        self.next_attempt_at = 0.0


class _Sent:
    """What one attempt gave: the bank's answer (or why there was none), whether the
    reversal reached the bank at all, and whether it never can (its bank's dialect
    cannot carry one of its fields)."""

    __slots__ = ("never", "result", "sent")

    def __init__(self, result: str, *, sent: bool, never: bool = False) -> None:
        self.result = result
        self.sent = sent
        self.never = never


class ReversalForwarder:
    def __init__(
        self,
        connector: BankConnector,
        journal: Journal,
        cards: Cards,
        institution: Institution,
        config: SafSection,
        *,
        utc_offset_h: int,
        clock: BusinessClock = WALL_CLOCK,
    ) -> None:
        self.connector = connector
        self.clock = clock
        """Business time: the reversal's stamp and the queue's times, which the journal
        keeps with the transaction's. Its backoffs are real seconds, scaled onto it."""
        self.bank = connector.name
        self.journal = journal
        self.cards = cards
        self.institution = institution
        self.config = config
        self.utc_offset_h = utc_offset_h
        self._wake = trio.Event()
        self._in_progress: set[int] = set()  # saf ids
        self._unjournaled: deque[_Unjournaled] = deque()
        self._unjournaled_in_progress: set[_Unjournaled] = set()
        self._next_trouble_log = 0.0
        self.delivered = 0
        self.failed_attempts = 0
        self.not_sent = 0
        self.unreadable = 0
        self.unencodable = 0

    def nudge(self) -> None:
        """A reversal was queued: look now rather than at the next poll."""
        self._wake.set()

    def reverse_unjournaled(self, record: TxnRecord, reason: str) -> None:
        """Reverse ``record`` from memory: the journal could not queue it."""
        if len(self._unjournaled) >= UNJOURNALED_LIMIT:
            left = self._unjournaled.popleft()
            log.critical("reversal_left_to_recovery", bank=self.bank, rrn=left.record.rrn)
        self._unjournaled.append(_Unjournaled(record, reason))
        self._wake.set()

    def statistics(self) -> dict[str, object]:
        return {
            "bank": self.bank,
            "in_progress": len(self._in_progress) + len(self._unjournaled_in_progress),
            "unjournaled": len(self._unjournaled),
            "delivered": self.delivered,
            "failed_attempts": self.failed_attempts,
            "not_sent": self.not_sent,
            "unreadable": self.unreadable,
            "unencodable": self.unencodable,
        }

    async def run(self) -> None:
        limiter = trio.CapacityLimiter(self.config.concurrency)
        async with trio.open_nursery() as attempts:
            while True:
                self._wake = trio.Event()
                now = self.clock.now()
                for owed in list(self._unjournaled):
                    if owed.next_attempt_at <= now and owed not in self._unjournaled_in_progress:
                        await limiter.acquire_on_behalf_of(owed)
                        self._unjournaled_in_progress.add(owed)
                        attempts.start_soon(self._attempt_unjournaled, owed, limiter)
                try:
                    due = await self.journal.due_reversals(
                        self.bank, now, self.config.concurrency * 4
                    )
                except JournalError as exc:
                    self._journal_trouble("reversal_queue_unreadable", exc)
                    due = []
                for reversal in due:
                    if reversal.saf_id in self._in_progress:
                        continue
                    await limiter.acquire_on_behalf_of(reversal.saf_id)
                    self._in_progress.add(reversal.saf_id)
                    attempts.start_soon(
                        self._attempt, reversal.saf_id, reversal.attempts, reversal.record, limiter
                    )
                with trio.move_on_after(self.config.poll_interval_s):
                    await self._wake.wait()

    async def _attempt(
        self, saf_id: int, attempts: int, record: TxnRecord, limiter: trio.CapacityLimiter
    ) -> None:
        try:
            try:
                # A bank's own record carries no card number the switch could seal.
                pan = self.cards.open(record.pan_sealed) if record.state != "bank_only" else None
            except CardDataUnreadable as exc:
                # Keys replaced: nothing can send it. An operator must restore the key
                # (then `switch saf retry ID`); the switch goes on with the others.
                self.unreadable += 1
                log.error("reversal_card_data_unreadable", bank=self.bank, rrn=record.rrn)
                await self._record(saf_id, attempts, "manual", self.clock.now(), str(exc))
                return
            sent = await self._send(record, pan, repeat=attempts > 0)
            now = self.clock.now()
            if sent.never:
                # No attempt will ever encode it: an operator must settle it with the
                # bank; counted as no attempt and never as a timeout of the bank.
                self.unencodable += 1
                log.error(
                    "reversal_not_encodable", bank=self.bank, rrn=record.rrn, reason=sent.result
                )
                await self._record(saf_id, attempts, "manual", now, sent.result)
            elif sent.result == BANK_ANSWERED:
                self.delivered += 1
                log.info(
                    "reversal_delivered", bank=self.bank, rrn=record.rrn, attempts=attempts + 1
                )
                await self._record(saf_id, attempts + 1, "delivered", now, sent.result)
            elif not sent.sent:
                self.not_sent += 1  # not an attempt: the bank never saw it
                await self._record(
                    saf_id, attempts, "pending", self._next_at(attempts), sent.result
                )
            else:
                attempts += 1
                self.failed_attempts += 1
                state: SafState = "manual" if attempts >= self.config.max_attempts else "pending"
                event = "reversal_manual" if state == "manual" else "reversal_retry"
                log.warning(
                    event, bank=self.bank, rrn=record.rrn, attempts=attempts, result=sent.result
                )
                await self._record(
                    saf_id, attempts, state, self._next_at(attempts - 1), sent.result
                )
        except JournalError as exc:
            self._journal_trouble("reversal_not_recorded", exc)
        finally:
            self._in_progress.discard(saf_id)
            limiter.release_on_behalf_of(saf_id)

    async def _attempt_unjournaled(self, owed: _Unjournaled, limiter: trio.CapacityLimiter) -> None:
        record = owed.record
        try:
            try:
                pan = self.cards.open(record.pan_sealed)
            except CardDataUnreadable:
                self.unreadable += 1
                self._unjournaled.remove(owed)
                log.critical("reversal_card_data_unreadable", bank=self.bank, rrn=record.rrn)
                return
            sent = await self._send(record, pan, repeat=owed.attempts > 0)
            if sent.never:
                self.unencodable += 1
                self._unjournaled.remove(owed)
                log.critical(
                    "reversal_not_encodable", bank=self.bank, rrn=record.rrn, reason=sent.result
                )
                return
            if sent.result != BANK_ANSWERED:
                if sent.sent:
                    owed.attempts += 1
                    self.failed_attempts += 1
                owed.next_attempt_at = self._next_at(owed.attempts)
                return
            self.delivered += 1
            self._unjournaled.remove(owed)
            log.warning("reversal_delivered_without_journal", bank=self.bank, rrn=record.rrn)
            try:  # best effort: if the journal is still failing, the next start reverses it
                await self.journal.commit(
                    TxnUpdated.of(
                        record, self.clock.now(), f"reversed without the journal: {owed.reason}"
                    )
                )
            except JournalError as exc:
                self._journal_trouble("reversal_not_recorded", exc)
        finally:
            self._unjournaled_in_progress.discard(owed)
            limiter.release_on_behalf_of(owed)

    def _next_at(self, attempts: int) -> float:
        """When the next attempt is due, on the business clock: a backoff of real
        seconds (it protects the bank), whatever the clock's speed."""
        backoff: float = min(self.config.backoff_max_s, self.config.backoff_min_s * 2.0**attempts)
        return self.clock.now() + self.clock.business_s(backoff * random.uniform(0.5, 1.0))

    async def _send(self, record: TxnRecord, pan: str | None, *, repeat: bool) -> _Sent:
        subject = record.reversal_subject(pan)
        if subject is None:
            return _Sent(BANK_ANSWERED, sent=False)  # never left the switch: nothing to undo

        def build(stan: str) -> tuple[str, dict[int, FieldValue]]:
            stamp = self.clock.stamp(self.utc_offset_h)
            return bankmsg.reversal_request(subject, stan, stamp, self.institution, repeat=repeat)

        sent = await send_once(self.connector, build, response_mti="0410", what="a reversal")
        return _Sent(sent.result, sent=sent.sent, never=sent.never)

    async def _record(
        self, saf_id: int, attempts: int, state: SafState, next_at: float, result: str
    ) -> None:
        await self.journal.commit(
            ReversalAttempted(
                saf_id=saf_id,
                state=state,
                attempts=attempts,
                next_attempt_at=next_at,
                result=result,
                at=self.clock.now(),
            )
        )

    def _journal_trouble(self, event: str, exc: JournalError) -> None:
        """The journal fails: said at most once every JOURNAL_TROUBLE_LOG_S."""
        now = time.monotonic()
        if now >= self._next_trouble_log:
            self._next_trouble_log = now + JOURNAL_TROUBLE_LOG_S
            log.error(event, bank=self.bank, error=str(exc))
