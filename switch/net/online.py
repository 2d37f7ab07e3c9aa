"""The online channel: where a checkout's MessagePack request enters the switch and
its result leaves (online.md), with the channel's idempotency rules."""

from __future__ import annotations

import time

import msgspec

from switch.core import online
from switch.core.clock import Stamp
from switch.core.model import KIND_NAMES, Outcome, Request
from switch.core.numbers import StanSequence
from switch.errors import TransactionRefused
from switch.net.channel import log_transaction
from switch.net.switchboard import Switchboard
from switch.store.crypto import CardVault
from switch.store.port import Change, OnlineResultKept
from switch.wire import online as wire


class OnlineWork(msgspec.Struct, gc=False):
    message: wire.Purchase | wire.Balance | wire.Void | wire.Refund
    request: Request
    fingerprint: bytes
    stamp: Stamp
    received_at: float


class StatusWork(msgspec.Struct, gc=False):
    """A status query the in-memory window cannot answer: the journal may."""

    message: wire.Status


class OnlineProtocol:
    name = "online"
    prefix_bytes = 4

    def __init__(
        self,
        switchboard: Switchboard,
        idempotency: online.IdempotencyBook,
        vault: CardVault,
        *,
        terminal_id: str,
        utc_offset_h: int,
    ) -> None:
        self.switchboard = switchboard
        self.idempotency = idempotency
        self.vault = vault
        self.terminal_id = terminal_id
        self.utc_offset_h = utc_offset_h
        self._stans = StanSequence()

    def accept(self, frame: bytes, received_at: float) -> OnlineWork | StatusWork | bytes:
        try:
            message = wire.decode_request(frame)
        except wire.OnlineDecodeError as exc:
            error = online.decode_error(exc)
            self._log_error(error, received_at, kind="unreadable")
            return wire.encode_response(error)
        if isinstance(message, wire.Status):
            stored = self.idempotency.stored(message.merchant_id, message.original_id)
            if stored is None and self.idempotency.evicted_early:
                return StatusWork(message)  # forgotten early here: the journal has it
            return self._status(message, stored)
        merchant_id, request_id = message.merchant_id, message.id
        fingerprint = online.fingerprint(message, self.vault.digest)
        try:
            stored = self.idempotency.begin(merchant_id, request_id, fingerprint, now_s=time.time())
        except TransactionRefused as exc:
            return self._refuse(message, exc, received_at)
        if stored is not None:
            return stored
        try:
            request = online.request_from_online(
                message, terminal_id=self.terminal_id, stan=self._stans.next()
            )
        except TransactionRefused as exc:
            # Refused before it reached the switchboard: the client may correct the
            # request and send it again under the same id.
            self.idempotency.abandon(merchant_id, request_id)
            return self._refuse(message, exc, received_at)
        return OnlineWork(message, request, fingerprint, Stamp.now(self.utc_offset_h), received_at)

    def busy(self, work: OnlineWork | StatusWork) -> bytes:
        if isinstance(work, OnlineWork):
            self.idempotency.abandon(work.message.merchant_id, work.message.id)
        refusal = TransactionRefused("91", "busy: too many requests in flight")
        return wire.encode_response(online.refusal(work.message.id, refusal))

    async def respond(self, work: OnlineWork | StatusWork) -> bytes:
        if isinstance(work, StatusWork):
            status = work.message
            entry = await self._journal_entry(status.merchant_id, status.original_id)
            return self._status(status, entry[1] if entry is not None else None)
        message = work.message
        if self.idempotency.evicted_early:
            # The in-memory window has forgotten some ids before their time: the
            # journal, which keeps them all, has the last word on this one.
            earlier = await self._journaled_result(message, work.fingerprint)
            if earlier is not None:
                return earlier
        kept: list[bytes] = []

        def keep_result(outcome: Outcome) -> list[Change]:
            """The result, journaled with the outcome so a retry finds it after a
            restart; not when nothing reached a bank (a retry is then safe)."""
            payload = wire.encode_response(online.result(message, outcome))
            kept.append(payload)
            if outcome.code == "91" and outcome.bank_stan is None:
                return []
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
            outcome = await self.switchboard.process(work.request, work.stamp, keep_result)
        except BaseException:
            self.idempotency.abandon(message.merchant_id, message.id)
            raise
        payload = wire.encode_response(online.result(message, outcome))
        if kept and kept[-1] == payload and (outcome.code != "91" or outcome.bank_stan):
            self.idempotency.finish(message.merchant_id, message.id, payload)
        else:  # not journaled (nothing reached a bank, or the journal failed)
            self.idempotency.abandon(message.merchant_id, message.id)
        log_transaction(
            work.request,
            outcome,
            channel=self.name,
            kind=KIND_NAMES[type(work.request)],
            received_at=work.received_at,
        )
        return payload

    async def _journaled_result(
        self, message: wire.Purchase | wire.Balance | wire.Void | wire.Refund, fingerprint: bytes
    ) -> bytes | None:
        entry = await self._journal_entry(message.merchant_id, message.id)
        if entry is None:
            return None
        digest, response = entry
        if digest != fingerprint:
            self.idempotency.abandon(message.merchant_id, message.id)
            refusal = TransactionRefused("94", "this id was used before with different content")
            return wire.encode_response(online.refusal(message.id, refusal))
        self.idempotency.finish(message.merchant_id, message.id, response)
        return response

    async def _journal_entry(self, merchant_id: str, online_id: str) -> tuple[bytes, bytes] | None:
        """The (fingerprint, response) the journal keeps for an id, if any."""
        entry = await self.switchboard.journal.online_result(merchant_id, online_id)
        return None if entry is None else (entry.fingerprint, entry.response)

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
            channel=self.name,
            kind=kind,
            received_at=received_at,
            terminal=self.terminal_id,
            merchant=merchant,
            stan=error.id,
        )
