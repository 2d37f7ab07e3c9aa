"""The online channel: where a checkout's MessagePack request enters the switch and
its result leaves (online.md), with the channel's idempotency rules, inside security.md's
signed envelopes.

Each frame is checked in security.md's order: the envelope's form (30), its key (A0
"unknown key"), its signature (A0), its timestamp on the wall clock (A0), at once on
the frame; then its nonce, once per switch across the workers (A0 "nonce replayed"),
before anything of the request is answered or done; then the body, whose type must be
open to the key's principal and whose ``merchant_id`` must be a merchant key's own (03).
Answers to the first five are unsigned errors; every other answer is an envelope signed
with the request's key."""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from switch.core import online
from switch.core.changes import Change, OnlineResultKept
from switch.core.clock import WALL_CLOCK, BusinessClock, Stamp
from switch.core.lifecycle import Cards
from switch.core.model import KIND_NAMES, Origin, Outcome, Request
from switch.core.numbers import StanSequence
from switch.core.products import BY_ONLINE_TYPE
from switch.errors import TransactionRefused
from switch.net.app_desk import AppDesk, DeskWork
from switch.net.channel import Reply, log_transaction
from switch.net.nonces import NonceGuard
from switch.net.switchboard import Switchboard
from switch.security.errors import UnknownKeyError
from switch.security.port import SecurityModule
from switch.security.software import security_event
from switch.store.port import JournalError
from switch.wire import envelope
from switch.wire import online as wire

MERCHANT_TYPES = frozenset((*BY_ONLINE_TYPE, "status"))
"""online.md's types open to a ``merchant:`` principal: every product offered online (the
product table's), and ``status``."""


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


class SignedWork(msgspec.Struct, gc=False):
    """A frame whose envelope passed steps 1-4: its nonce is claimed before ``inner``
    (the body's work, or its immediate answer) is run or sent, and the answer signed."""

    key_id: str
    nonce: str
    request_id: str | None
    inner: OnlineWork | StatusWork | DeskWork | bytes


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
        security: SecurityModule,
        nonces: NonceGuard,
        stans: StanSequence | None = None,
        clock: BusinessClock = WALL_CLOCK,
        wall_clock: Callable[[], float] = time.time,
        desk: AppDesk | None = None,
    ) -> None:
        self.desk = desk
        """The types that are not payments through the lifecycle (app_desk.py)."""
        self.security = security
        self.nonces = nonces
        self.wall_clock = wall_clock
        """Unix time for the envelopes' ``ts`` (never the business clock, which may be
        simulated: a client signs by the real time)."""
        self.switchboard = switchboard
        self.idempotency = idempotency
        self.cards = cards
        self.terminal_id = terminal_id
        self.utc_offset_h = utc_offset_h
        self.clock = clock
        """Business time: the stamp. An id's memory (idempotency) stays on real time."""
        self._stans = stans or StanSequence()
        """Field 11 of the online terminal's requests (a block of them per worker)."""

    def accept(self, frame: bytes, origin: Origin) -> SignedWork | bytes:
        """Steps 1-4 of security.md on the envelope (an unsigned error when one fails),
        then the body as online.md says; its answer waits for the nonce's claim."""
        received_at = origin.received_at
        try:
            signed = envelope.decode(frame)
        except envelope.EnvelopeDecodeError as exc:
            where = f" (field {exc.key})" if exc.key else ""
            return self._unsigned(exc.request_id, "30", f"{exc}{where}", received_at)
        try:
            principal = self.security.online_principal(signed.key_id)
        except UnknownKeyError:
            return self._refuse_envelope(signed, "unknown key", received_at)
        if not self.security.verify_online(
            signed.key_id, signed.ts, signed.nonce, signed.body, signed.sig
        ):
            return self._refuse_envelope(signed, "bad signature", received_at)
        if abs(signed.ts - self.wall_clock()) > envelope.MAX_SKEW_S:
            return self._refuse_envelope(
                signed, f"timestamp outside ±{envelope.MAX_SKEW_S} s", received_at
            )
        inner = self._accept_body(signed.body, origin, principal)
        # The id for an unsigned refusal of its nonce: the request's, read from the body
        # again only for an answer made at once (rare: errors and repeats).
        request_id = _body_id(signed.body) if isinstance(inner, bytes) else inner.message.id
        return SignedWork(signed.key_id, signed.nonce, request_id, inner)

    def _accept_body(
        self, frame: bytes, origin: Origin, principal: str
    ) -> OnlineWork | StatusWork | DeskWork | bytes:
        received_at = origin.received_at
        try:
            message = wire.decode_request(frame)
        except wire.OnlineDecodeError as exc:
            desk = self.desk.accept(frame, principal, origin) if self.desk is not None else None
            if desk is not None:  # a type of the desk's (not the card types' decoder's)
                return desk
            error = online.decode_error(exc)
            self._log_error(error, received_at, kind="unreadable")
            return wire.encode_response(error)
        kind, _, owner = principal.partition(":")
        if kind != "merchant" or type(message).__struct_config__.tag not in MERCHANT_TYPES:
            refusal = TransactionRefused("03", f"type not open to the key's principal {kind}")
            return self._refuse(message, refusal, received_at)
        if message.merchant_id != owner:
            refusal = TransactionRefused(
                "03", "not the merchant of the key that signed it", field="merchant_id"
            )
            return self._refuse(message, refusal, received_at)
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

    def sheddable(self, work: SignedWork) -> bool:
        return isinstance(work.inner, OnlineWork)

    def busy(self, work: SignedWork, reason: str) -> bytes:
        """A 91 before the nonce was claimed: the client sends again with a new one."""
        # The desk's work takes no switch-wide slot (no bank): it is never shed.
        assert not isinstance(work.inner, bytes | DeskWork), "an immediate answer is never shed"
        return self._sign(work.key_id, self._busy(work.inner, reason))

    async def respond(self, work: SignedWork) -> Reply:
        inner = work.inner
        try:
            fresh = await self.nonces.claim(work.key_id, work.nonce)
        except JournalError:
            self._forget(inner)
            return Reply(self._unsigned(work.request_id, "96", "nonce check unavailable", None))
        if not fresh:
            self._forget(inner)
            security_event("online_refused", channel=self.name, key=work.key_id,
                           check="nonce replayed", id=work.request_id or "")  # fmt: skip
            return Reply(self._unsigned(work.request_id, "A0", "nonce replayed", None))
        if isinstance(inner, bytes):
            return Reply(self._sign(work.key_id, inner))
        if isinstance(inner, DeskWork):
            assert self.desk is not None
            return Reply(self._sign(work.key_id, await self.desk.respond(inner)))
        reply = await self._respond(inner)
        return Reply(self._sign(work.key_id, reply.payload), shed=reply.shed)

    def _forget(self, inner: OnlineWork | StatusWork | DeskWork | bytes) -> None:
        """A request refused at its nonce: its id's claim is let go."""
        if isinstance(inner, OnlineWork):
            self.idempotency.abandon(inner.message.merchant_id, inner.message.id)

    def _sign(self, key_id: str, body: bytes) -> bytes:
        """The answer's envelope: the request's key, the switch's time, a new nonce."""
        ts, nonce = int(self.wall_clock()), envelope.new_nonce()
        try:
            sig = self.security.sign_online(key_id, ts, nonce, body)
        except UnknownKeyError:  # revoked meanwhile: the client gets no signed answer
            return self._unsigned(_body_id(body), "A0", "unknown key", None)
        return envelope.encode(envelope.Envelope(key_id, ts, nonce, body, sig))

    def _refuse_envelope(self, signed: envelope.Envelope, check: str, received_at: float) -> bytes:
        request_id = _body_id(signed.body)
        security_event("online_refused", channel=self.name, key=signed.key_id, check=check,
                       id=request_id or "")  # fmt: skip
        return self._unsigned(request_id, "A0", check, received_at)

    def _unsigned(
        self, request_id: str | None, code: str, message: str, received_at: float | None
    ) -> bytes:
        error = wire.Error(id=request_id, code=code, message=message)
        if received_at is not None:
            self._log_error(error, received_at, kind="envelope")
        return wire.encode_response(error)

    def _busy(self, work: OnlineWork | StatusWork, reason: str) -> bytes:
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

    async def _respond(self, work: OnlineWork | StatusWork) -> Reply:
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


def _body_id(body: bytes) -> str | None:
    """The ``id`` of a body, when it is a map with a well-formed one (for an error)."""
    return wire.probe_id(body)
