"""Advices of stood-in sales (risk.md, "Advices"): one task per bank sends the advices
queued in the journal, one at a time in the order of stand-in, while the bank's circuit
is closed and a link of it is signed on.

The head of the queue (the oldest advice without a final answer that is not
``manual``) is marked ``sent`` in the journal before its first send leaves, so a
switch that stops at any moment repeats it as a 0221 and never reports it as new: the
bank identifies an advice by 37, 41 and 42 and applies it once. A send that got no
answer within ``issuer_timeout_s``, lost its link, or was answered 91 or 96 is
repeated (0221, new 11 and 7) with the reversal SAF's backoff; after ``max_attempts``
sent it waits ``manual`` (``switch saf retry A<id>``) and the next goes. 0230 with 00
accepts it: its send becomes the sale's bank message (what a void or a reversal names
in 90). Any other 39 refuses it finally: the switch bears the loss.

A stood-in sale voided or reversed in the switch before its advice was ever sent has
its advice cancelled here, when it comes to the head: nothing is sent for it. One the
terminal reversed while its advice was out gets its 0400 queued (to the reversal SAF)
in the commit that records the advice's acceptance, or none if it is refused.

The book's copy of the sale (``TransactionBook``) learns each state when it is decided,
before it is journaled: a void or a reversal of the sale, decided on that copy, never
races an advice being sent (risk.md's table by advice state).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Final

import structlog
import trio

from switch.config import SafSection
from switch.core import bank as bankmsg
from switch.core.bank import AdviceSubject, Institution, OriginalData
from switch.core.book import TransactionBook, TxnRecord
from switch.core.calendar import BusinessCalendar
from switch.core.clock import WALL_CLOCK, BusinessClock
from switch.core.lifecycle import Cards
from switch.core.stip import StandInDesk
from switch.errors import CardDataUnreadable
from switch.net.bank_link import BankConnector
from switch.net.send_once import send_once
from switch.store.port import (
    AdviceAttempted,
    Change,
    DueAdvice,
    Journal,
    JournalError,
    ReversalQueued,
)
from switch.wire.iso8583 import FieldValue

log = structlog.get_logger()

JOURNAL_TROUBLE_LOG_S: Final = 10.0


class _Sent:
    """What one send gave: the bank's 39 (or why there was none), whether it reached
    the bank, whether it never can (a field its dialect cannot carry), and the send's
    identity (MTI, 11, 7)."""

    __slots__ = ("code", "never", "result", "sent", "trace")

    def __init__(
        self,
        result: str,
        *,
        sent: bool,
        code: str | None = None,
        never: bool = False,
        trace: OriginalData | None = None,
    ) -> None:
        self.result = result
        self.sent = sent
        self.code = code
        self.never = never
        self.trace = trace


class AdviceForwarder:
    def __init__(
        self,
        connector: BankConnector,
        journal: Journal,
        cards: Cards,
        institution: Institution,
        config: SafSection,
        desk: StandInDesk,
        calendar: BusinessCalendar,
        *,
        utc_offset_h: int,
        clock: BusinessClock = WALL_CLOCK,
        book: TransactionBook | None = None,
    ) -> None:
        self.connector = connector
        self.book = book
        """The switchboard's book: its copy of each sale learns the advice's state."""
        self.bank = connector.name
        self.journal = journal
        self.cards = cards
        self.institution = institution
        self.config = config
        """The SAF's: backoff, attempt limit, poll interval."""
        self.desk = desk
        self.calendar = calendar
        self.utc_offset_h = utc_offset_h
        self.clock = clock
        self._wake = trio.Event()
        self._next_trouble_log = 0.0
        self.nudge_reversals: Callable[[str], None] = lambda bank: None
        """Tells the bank's reversal SAF that a reversal was queued."""
        self.on_accepted: Callable[[TxnRecord], None] = lambda record: None
        """Told each stood-in sale whose advice the bank accepted (credit.md: a co-brand
        sale earns its points then)."""
        self.accepted = 0
        self.refused = 0
        self.failed_attempts = 0
        self.cancelled = 0

    def nudge(self) -> None:
        """An advice was queued, or the bank may be back: look now."""
        self._wake.set()

    def statistics(self) -> dict[str, object]:
        return {
            "bank": self.bank,
            "accepted": self.accepted,
            "refused": self.refused,
            "failed_attempts": self.failed_attempts,
            "cancelled": self.cancelled,
        }

    async def run(self) -> None:
        while True:
            self._wake = trio.Event()
            try:
                # Claimed only when it can be sent from here: a worker whose links to
                # the bank are down leaves it to another (one sender per bank).
                head = await self.journal.advice_head(self.bank, claim=self._ready())
            except JournalError as exc:
                self._journal_trouble("advice_queue_unreadable", exc)
                head = None
            if head is not None and head.next_attempt_at <= self.clock.now():
                try:
                    moved_on = await self._attempt(head)
                except JournalError as exc:
                    self._journal_trouble("advice_not_recorded", exc)
                    moved_on = False
                if moved_on:
                    continue  # the next one at once: they go one at a time, in order
            with trio.move_on_after(self.config.poll_interval_s):
                await self._wake.wait()

    async def _attempt(self, head: DueAdvice) -> bool:
        """One attempt at the head; whether it has a final answer now (or went manual
        or was cancelled), so the next may go."""
        record = head.record
        held = self.book.by_rrn(record.rrn) if self.book is not None else None
        if head.state == "queued" and (record.voided or record.reversed):
            self.cancelled += 1
            log.info("advice_cancelled", bank=self.bank, rrn=record.rrn)
            self._learn(held, "cancelled")
            await self._record(head, "cancelled", head.attempts, "its sale was undone first")
            # Its void or reversal released what it held of the caps.
            self.desk.advised(self.bank, "cancelled", record.amount, final=False, on=self._today())
            return True
        if head.state == "queued" and held is not None and (
            held.voided or held.void_pending or held.reversed
        ):
            return False  # its void or reversal is being journaled: cancelled next time
        try:
            pan = self.cards.open(record.pan_sealed)
        except CardDataUnreadable as exc:
            log.error("advice_card_data_unreadable", bank=self.bank, rrn=record.rrn)
            await self._record(head, "manual", head.attempts, str(exc))
            self.desk.advised(self.bank, "manual", record.amount, final=False, on=self._today())
            return True
        if not self._ready():
            return False
        if head.state == "queued":
            # On disk before it leaves: after a stop, it is repeated as a 0221.
            self._learn(held, "sent")
            await self._record(head, "sent", head.attempts, "sending", at=head.next_attempt_at)
        sent = await self._send(head, pan, repeat=head.state == "sent" or head.attempts > 0)
        if sent.never:
            log.error("advice_not_encodable", bank=self.bank, rrn=record.rrn, reason=sent.result)
            await self._record(head, "manual", head.attempts, sent.result)
            self.desk.advised(self.bank, "manual", record.amount, final=False, on=self._today())
            return True
        if not sent.sent:
            # Not an attempt: the bank never saw it. Tried again at the next poll.
            await self._record(
                head, head.state, head.attempts, sent.result, at=self._next_at(0)
            )
            return False
        attempts = head.attempts + 1
        if sent.code == bankmsg.ADVICE_ACCEPTED:
            self.accepted += 1
            today = self._today()
            log.info("advice_accepted", bank=self.bank, rrn=record.rrn, attempts=attempts)
            held = self.book.by_rrn(record.rrn) if self.book is not None else None
            self._learn(held, "accepted", sent.trace)
            # A terminal reversed it while its advice was out: its 0400 goes now, 90
            # naming the accepted advice.
            reversed_ = record.reversed or (held is not None and held.reversed)
            also: tuple[Change, ...] = (
                ReversalQueued(rrn=record.rrn, bank=self.bank, at=self.clock.now(),
                               reason="terminal reversal, behind its advice"),
            ) if reversed_ else ()  # fmt: skip
            await self._record(
                head, "accepted", attempts, "00", trace=sent.trace, accepted_date=today,
                also=also,
            )  # fmt: skip
            if reversed_:
                self.nudge_reversals(self.bank)
            self.desk.advised(self.bank, "accepted", record.amount, final=True, on=today)
            if not reversed_:
                self.on_accepted(record)
            return True
        if sent.code is not None and sent.code not in bankmsg.ADVICE_AGAIN:
            self.refused += 1
            log.warning(
                "advice_refused", bank=self.bank, rrn=record.rrn, code=sent.code,
                amount_fen=record.amount,
            )  # fmt: skip
            self._learn(self.book.by_rrn(record.rrn) if self.book is not None else None, "refused")
            await self._record(head, "refused", attempts, sent.code)
            self.desk.advised(self.bank, "refused", record.amount, final=True, on=self._today())
            return True
        self.failed_attempts += 1
        if attempts >= self.config.max_attempts:
            log.warning("advice_manual", bank=self.bank, rrn=record.rrn, attempts=attempts,
                        result=sent.result)  # fmt: skip
            self._learn(self.book.by_rrn(record.rrn) if self.book is not None else None, "manual")
            await self._record(head, "manual", attempts, sent.result)
            self.desk.advised(self.bank, "manual", record.amount, final=False, on=self._today())
            return True
        log.warning("advice_retry", bank=self.bank, rrn=record.rrn, attempts=attempts,
                    result=sent.result)  # fmt: skip
        await self._record(head, "sent", attempts, sent.result, at=self._next_at(attempts - 1))
        self.desk.advised(self.bank, "retry", record.amount, final=False, on=self._today())
        return False

    @staticmethod
    def _learn(held: TxnRecord | None, state: str, trace: OriginalData | None = None) -> None:
        if held is not None:
            held.advice = state
            if trace is not None:
                held.sent = trace

    def _ready(self) -> bool:
        """Its circuit closed and a link signed on (risk.md)."""
        return not self.connector.circuit_open()

    async def _send(self, head: DueAdvice, pan: str, *, repeat: bool) -> _Sent:
        record = head.record
        subject = AdviceSubject(
            pan=pan, processing_code=record.bank_processing_code, amount=record.amount,
            currency=record.currency, local_time=head.local_time,
            local_date=record.local_date, mcc=head.mcc, entry_mode=head.entry_mode,
            condition_code=head.condition_code, rrn=record.rrn,
            auth_code=record.auth_code or "", terminal_id=record.terminal_id,
            merchant_id=record.merchant_id,
        )  # fmt: skip
        traces: list[OriginalData] = []

        def build(stan: str) -> tuple[str, dict[int, FieldValue]]:
            stamp = self.clock.stamp(self.utc_offset_h)
            mti, fields = bankmsg.advice_request(
                subject, stan, stamp, self.institution, repeat=repeat
            )
            traces.append(OriginalData(mti=mti, stan=stan, transmission=stamp.transmission))
            return mti, fields

        sent = await send_once(
            self.connector, build, response_mti=bankmsg.ADVICE_RESPONSE_MTI, what="an advice"
        )
        if sent.response is None:
            return _Sent(sent.result, sent=sent.sent, never=sent.never)
        code = sent.response.fields.get(39)
        if not isinstance(code, str) or len(code) != 2:
            return _Sent("bank answer has no valid field 39", sent=True)
        return _Sent(code, sent=True, code=code, trace=traces[0])

    def _today(self) -> str:
        return self.calendar.date_at(self.clock.now()).isoformat()

    def _next_at(self, attempts: int) -> float:
        backoff: float = min(self.config.backoff_max_s, self.config.backoff_min_s * 2.0**attempts)
        return self.clock.now() + self.clock.business_s(backoff * random.uniform(0.5, 1.0))

    async def _record(
        self,
        head: DueAdvice,
        state: str,
        attempts: int,
        result: str,
        *,
        at: float | None = None,
        trace: OriginalData | None = None,
        accepted_date: str | None = None,
        also: tuple[Change, ...] = (),
    ) -> None:
        now = self.clock.now()
        attempted = AdviceAttempted(
            advice_id=head.advice_id, rrn=head.record.rrn, state=state, attempts=attempts,
            next_attempt_at=now if at is None else at, result=result, at=now, sent=trace,
            accepted_date=accepted_date,
        )  # fmt: skip
        await self.journal.commit(attempted, *also, durable=True)

    def _journal_trouble(self, event: str, exc: JournalError) -> None:
        now = time.monotonic()
        if now >= self._next_trouble_log:
            self._next_trouble_log = now + JOURNAL_TROUBLE_LOG_S
            log.error(event, bank=self.bank, error=str(exc))
