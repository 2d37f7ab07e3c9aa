"""Store-and-forward of reversals: one task per bank sends the reversals queued in the
journal until the bank answers them.

Each reversal has its own schedule (exponential backoff with jitter), and several are
in flight at once, so one that keeps failing never holds back the others; after
``max_attempts`` it waits in state ``manual`` until an operator retries it
(``switch saf retry ID``, which the task sees at its next poll). The first attempt is a
0400; repeats are 0401.
"""

from __future__ import annotations

import random
import time
from typing import Final

import structlog
import trio

from switch.config import SafSection
from switch.core import bank as bankmsg
from switch.core.bank import Institution
from switch.core.book import TxnRecord
from switch.core.clock import Stamp
from switch.errors import SwitchError
from switch.net.bank_link import BankConnector, LinkNotSent
from switch.store.crypto import CardVault
from switch.store.port import Journal, JournalError, ReversalAttempted, SafState

log = structlog.get_logger()

BANK_ANSWERED: Final = "00"
"""bank-h2h.md: a bank answers every reversal 00, even of what it never saw."""


class ReversalForwarder:
    def __init__(
        self,
        connector: BankConnector,
        journal: Journal,
        vault: CardVault,
        institution: Institution,
        config: SafSection,
        *,
        utc_offset_h: int,
    ) -> None:
        self.connector = connector
        self.bank = connector.name
        self.journal = journal
        self.vault = vault
        self.institution = institution
        self.config = config
        self.utc_offset_h = utc_offset_h
        self._wake = trio.Event()
        self._in_progress: set[int] = set()
        self.delivered = 0
        self.failed_attempts = 0

    def nudge(self) -> None:
        """A reversal was queued: look now rather than at the next poll."""
        self._wake.set()

    def statistics(self) -> dict[str, object]:
        return {
            "bank": self.bank,
            "in_progress": len(self._in_progress),
            "delivered": self.delivered,
            "failed_attempts": self.failed_attempts,
        }

    async def run(self) -> None:
        limiter = trio.CapacityLimiter(self.config.concurrency)
        async with trio.open_nursery() as attempts:
            while True:
                self._wake = trio.Event()
                due = await self.journal.due_reversals(
                    self.bank, time.time(), self.config.concurrency * 4
                )
                for reversal in due:
                    saf_id, attempt_count, record = (
                        reversal.saf_id,
                        reversal.attempts,
                        reversal.record,
                    )
                    if saf_id in self._in_progress:
                        continue
                    await limiter.acquire_on_behalf_of(saf_id)
                    self._in_progress.add(saf_id)
                    attempts.start_soon(self._attempt, saf_id, attempt_count, record, limiter)
                with trio.move_on_after(self.config.poll_interval_s):
                    await self._wake.wait()

    async def _attempt(
        self, saf_id: int, attempt_count: int, record: TxnRecord, limiter: trio.CapacityLimiter
    ) -> None:
        try:
            result = await self._send(record, repeat=attempt_count > 0)
            await self._record(saf_id, attempt_count + 1, record, result)
        except JournalError as exc:
            log.error("reversal_not_recorded", rrn=record.rrn, error=str(exc))
        finally:
            self._in_progress.discard(saf_id)
            limiter.release_on_behalf_of(saf_id)

    async def _send(self, record: TxnRecord, *, repeat: bool) -> str:
        """The bank's response code, or why there was none."""
        subject = record.reversal_subject(self.vault.open(record.pan_sealed))
        if subject is None:
            return BANK_ANSWERED  # never left the switch: nothing to reverse
        connector = self.connector
        try:
            link = connector.reserve_link()
        except SwitchError as exc:
            return f"not sent: {exc}"
        answered: bool | None = None
        try:
            mti, fields = bankmsg.reversal_request(
                subject,
                connector.stans.next(),
                Stamp.now(self.utc_offset_h),
                self.institution,
                repeat=repeat,
            )
            with trio.move_on_after(connector.config.issuer_timeout_s):
                response = await link.exchange(mti, fields)
                answered = True
                return str(response.fields.get(39))
            answered = False
            return "no answer in time"
        except LinkNotSent as exc:
            return f"not sent: {exc}"
        except SwitchError as exc:
            answered = False
            return f"link failed: {exc}"
        finally:
            link.release()
            # A reversal may be the circuit's probe: its verdict must reach the circuit.
            connector.record_result(answered=answered)

    async def _record(self, saf_id: int, attempts: int, record: TxnRecord, result: str) -> None:
        now = time.time()
        state: SafState
        if result == BANK_ANSWERED:
            state, next_at = "delivered", now
            self.delivered += 1
            log.info("reversal_delivered", bank=self.bank, rrn=record.rrn, attempts=attempts)
        else:
            self.failed_attempts += 1
            backoff = min(
                self.config.backoff_max_s, self.config.backoff_min_s * 2 ** (attempts - 1)
            )
            next_at = now + backoff * random.uniform(0.5, 1.0)
            state = "manual" if attempts >= self.config.max_attempts else "pending"
            event = "reversal_manual" if state == "manual" else "reversal_retry"
            log.warning(event, bank=self.bank, rrn=record.rrn, attempts=attempts, result=result)
        await self.journal.commit(
            ReversalAttempted(
                saf_id=saf_id,
                state=state,
                attempts=attempts,
                next_attempt_at=next_at,
                result=result,
                at=now,
            )
        )
