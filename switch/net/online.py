"""The online channel: where a checkout's MessagePack request enters the switch and
its result leaves (online.md), with the channel's idempotency rules."""

from __future__ import annotations

import time

import msgspec

from switch.core import online
from switch.core.changes import Change, OnlineResultKept
from switch.core.clock import WALL_CLOCK, BusinessClock, Stamp
from switch.core.lifecycle import Cards
from switch.core.model import KIND_NAMES, Origin, Outcome, Request
from switch.core.numbers import StanSequence
from switch.errors import TransactionRefused
from switch.net.channel import Reply, log_transaction
from switch.net.switchboard import Switchboard
from switch.store.port import JournalError
from switch.wire import online as wire


class OnlineWork(msgspec.Struct, gc=False):
    message: wire.FinancialRequest
    request: Request
    content: bytes
    """What a repeat of its id must match (online.fingerprint_content)."""
    fingerprint: bytes
    """The keyed digest of ``content``, which is what is kept."""
    stamp: Stamp
    origin: Origin


class StatusWork(msgspec.Struct, gc=False):
    """A status query the in-memory window cannot answer: the journal may."""

    message: wire.Status
    origin: Origin


class OnlineProtocol:
    name = "online"
    prefix_bytes = 4

    def __init__(
        self,
        switchboard: Switchboard,
        idempotency: online.IdempotencyBook,
        cards: Cards,
        *,
        terminal_id: str,
        utc_offset_h: int,
        stans: StanSequence | None = None,
        clock: BusinessClock = WALL_CLOCK,
    ) -> None:
        self.switchboard = switchboard
        self.idempotency = idempotency
        self.cards = cards
        self.terminal_id = terminal_id
        self.utc_offset_h = utc_offset_h
        self.clock = clock
        """Business time: the stamp. An id's memory (idempotency) stays on real time."""
        self._stans = stans or StanSequence()
        """Field 11 of the online terminal's requests (a block of them per worker)."""

    def accept(self, frame: bytes, origin: Origin) -> OnlineWork | StatusWork | bytes:
        received_at = origin.received_at
        try:
            message = wire.decode_request(frame)
        except wire.OnlineDecodeError as exc:
            error = online.decode_error(exc)
            self._log_error(error, received_at, kind="unreadable")
            return wire.encode_response(error)
        try:
            online.check_free_text(message)
        except TransactionRefused as exc:
            return self._refuse(message, exc, received_at)
        if isinstance(message, wire.Status):
            stored = self.idempotency.stored(message.merchant_id, message.original_id)
            if stored is None and self.idempotency.journal_has_more:
                return StatusWork(message, origin)  # forgotten early here: the journal has it
            return self._status(message, stored)
        merchant_id, request_id = message.merchant_id, message.id
        content = online.fingerprint_content(message)
        fingerprint = self.cards.digest(content)
        try:
            stored = self.idempotency.begin(merchant_id, request_id, content, fingerprint)
        except TransactionRefused as exc:
            return self._refuse(message, exc, received_at)
        if stored is not None:
            return stored
        stamp = self.clock.stamp(self.utc_offset_h)
        try:
            request = online.request_from_online(
                message,
                terminal_id=self.terminal_id,
                stan=self._stans.next(),
                today=stamp.local.date(),  # the date of its 13 towards the bank
            )
            self.switchboard.check_merchant(merchant_id)
        except TransactionRefused as exc:
            # Refused before it reached the switchboard: the client may correct the
            # request and send it again under the same id.
            self.idempotency.abandon(merchant_id, request_id)
            return self._refuse(message, exc, received_at)
        return OnlineWork(message, request, content, fingerprint, stamp, origin)

    def sheddable(self, work: OnlineWork | StatusWork) -> bool:
        return isinstance(work, OnlineWork)

    def busy(self, work: OnlineWork | StatusWork, reason: str) -> bytes:
        message = work.message
        if isinstance(work, OnlineWork):  # never reached a bank: the id may be used again
            self.idempotency.abandon(message.merchant_id, message.id)
        outcome = Outcome(code="91", message=reason)
        if isinstance(work, OnlineWork):
            outcome = msgspec.structs.replace(
                outcome, settlement_date=self.switchboard.business_date(work.stamp)
            )
        if isinstance(message, wire.Status):
            return wire.encode_response(wire.Error(id=message.id, code="91", message=reason))
        return wire.encode_response(online.result(message, outcome))

    async def respond(self, work: OnlineWork | StatusWork) -> Reply:
        if isinstance(work, StatusWork):
            status = work.message
            try:
                entry = await self.switchboard.journal.online_result(
                    status.merchant_id, status.original_id
                )
            except JournalError:
                error = wire.Error(id=status.id, code="96", message="system malfunction")
                return Reply(wire.encode_response(error))
            return Reply(self._status(status, entry.response if entry is not None else None))
        message = work.message
        if self.idempotency.journal_has_more:
            # The in-memory window has forgotten some ids before their time, or other
            # workers keep results too: the journal, which has them all, has the last
            # word on this one.
            earlier = await self._journaled_result(work)
            if earlier is None and self.idempotency.shared:
                earlier = await self._result_of_first_elsewhere(work)
            if earlier is not None:
                return Reply(earlier)
        kept: list[bytes] = []

        def keep_result(outcome: Outcome) -> list[Change]:
            """The result, journaled with an outcome that reached a bank, so a repeat
            finds it after a restart (what never reached one is not kept: a retry is
            then safe)."""
            payload = wire.encode_response(online.result(message, outcome))
            kept.append(payload)
            return [
                OnlineResultKept(
                    merchant_id=message.merchant_id,
                    online_id=message.id,
                    fingerprint=work.fingerprint,
                    response=payload,
                    at=time.time(),
                )
            ]

        try:
            outcome = await self.switchboard.process(
                work.request, work.stamp, work.origin, keep_result
            )
        except BaseException:
            self.idempotency.abandon(message.merchant_id, message.id)
            raise
        payload = wire.encode_response(online.response(message, outcome))
        if kept and kept[-1] == payload:
            self.idempotency.finish(message.merchant_id, message.id, payload, now_s=time.time())
        else:  # not journaled (nothing reached a bank, or the journal failed)
            self.idempotency.abandon(message.merchant_id, message.id)
        if not outcome.shed:
            log_transaction(
                work.request,
                outcome,
                stats=self.switchboard.stats,
                channel=self.name,
                kind=KIND_NAMES[type(work.request)],
                received_at=work.origin.received_at,
            )
        return Reply(payload, shed=outcome.shed)

    async def _result_of_first_elsewhere(self, work: OnlineWork) -> bytes | None:
        """A repeat whose first went through another worker and has no result kept yet:
        its result once it has ended; a 96 if it is still in doubt; None if no first
        reached a bank (this one goes ahead)."""
        message = work.message
        try:
            first = await self.switchboard.online_first(message.merchant_id, message.id)
        except JournalError:
            return None  # the switchboard's own journal use will say what is wrong
        if first is None or first.state == "not_sent":
            return None
        kept = await self._journaled_result(work)
        if kept is not None:
            return kept
        self.idempotency.abandon(message.merchant_id, message.id)
        refusal = TransactionRefused("96", "the first request with this id is still in doubt")
        return wire.encode_response(online.refusal(message.id, refusal))

    async def _journaled_result(self, work: OnlineWork) -> bytes | None:
        message = work.message
        try:
            entry = await self.switchboard.journal.online_result(message.merchant_id, message.id)
        except JournalError:
            return None  # the switchboard's own journal use will say what is wrong
        if entry is None:
            return None
        if not self.cards.matches(work.content, entry.fingerprint):
            self.idempotency.abandon(message.merchant_id, message.id)
            refusal = TransactionRefused("94", "this id was used before with different content")
            return wire.encode_response(online.refusal(message.id, refusal))
        self.idempotency.abandon(message.merchant_id, message.id)
        self.idempotency.remember(
            message.merchant_id, message.id, entry.fingerprint, entry.response, time.time()
        )
        return entry.response

    def _status(self, message: wire.Status, stored: bytes | None) -> bytes:
        if stored is None:
            return wire.encode_response(
                wire.Error(id=message.id, code="25", message="no result stored for original_id")
            )
        result = wire.decode_response(stored)
        return wire.encode_response(msgspec.structs.replace(result, id=message.id))

    def _refuse(
        self, message: wire.OnlineRequest, exc: TransactionRefused, received_at: float
    ) -> bytes:
        error = online.refusal(message.id, exc)
        self._log_error(
            error, received_at, kind=type(message).__name__.lower(), merchant=message.merchant_id
        )
        return wire.encode_response(error)

    def _log_error(
        self, error: wire.Error, received_at: float, *, kind: str, merchant: str | None = None
    ) -> None:
        log_transaction(
            None,
            Outcome(code=error.code, message=error.message),
            stats=self.switchboard.stats,
            channel=self.name,
            kind=kind,
            received_at=received_at,
            terminal=self.terminal_id,
            merchant=merchant,
            stan=error.id,
        )
