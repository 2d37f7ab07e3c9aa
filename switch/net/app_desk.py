"""The app desk: the online channel's requests that are not card or ledger payments
through the transaction lifecycle (wallet.md's ``wallet_open``, ``wallet_balance``,
``wallet_bind_account``, ... ``paycode_issue``, ``qr_create``, ``qr_status``; credit.md's
``credit_*``; the co-brand's types). A registry, type -> handler, in front of the
ledger store.

How a request goes: the online channel (``switch/net/online.py``) checks the envelope
(security.md steps 1-5) and hands the desk a body whose ``type`` is registered here;
``accept`` decodes it into the type's Struct (``error`` 30 naming the field), checks
that the type is open to the key's principal and that a merchant names its own
``merchant_id`` (``error`` 03), and the free text; once the nonce is claimed,
``respond`` runs the type's handler:

- a **read** (online.md: ``wallet_balance``, ``wallet_history``, ``qr_status``, ...)
  is answered from the current state, its ``id`` checked, not stored;
- any other type has online.md's idempotency per principal and ``id``: a repeat while
  the first is in flight waits for it (then ``error`` 94 "in progress"); a result kept
  is answered again byte for byte, or ``error`` 94 if the content differs; the handler
  keeps its result **in the same store transaction as what it changed**
  (``DeskCall.keep``), so a repeat after a crash finds both or neither.

A handler refuses by raising ``TransactionRefused`` or a ``LedgerError`` (the store's
refusals): 03, 30 and 94 become an ``error`` (naming the field when there is one),
every other code the type's bare ``result``; nothing raised is kept.

**Registering a type** (credit.md's ``credit_*``, the co-brand's ``cobrand_*``, ...):

1. its request Struct on ``switch.wire.app.AppRequest`` (an ``app:`` type about one
   customer) or ``MerchantRequest``, tagged with the type's name, constraints as
   ``Annotated`` metadata; its result on ``DeskResult`` (fields absent when refused);
2. an ``async def handle(message, call: DeskCall) -> DeskResult | bytes``: reads go
   through ``await call.read(lambda store: ...)``; a state-changing type returns
   ``await call.keep(lambda store: (result, keep))`` whose function runs in the store's
   worker thread, in one transaction with the kept result (``keep`` False: a refusal
   that changed nothing, answered and not kept); a result decided off the store (after
   a bank's answer, say) is kept alone by ``call.keep(lambda store: (result, True))``;
3. ``desk.register(DeskType(name=..., request=..., principal="app", read=...), handle)``
   where the app builds the desk (``switch/app.py``, after the wallet types:
   ``switch/net/wallet_desk.py`` shows all of it).

Payments that go through the lifecycle (``wallet_pay``, ``wallet_topup``) are not the
desk's: they are products (``switch/core/products.py``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar, get_args

import msgspec
import structlog
import trio

from switch.core import online
from switch.core.app_desk import (
    ERROR_CODES,
    DeskDecodeError,
    DeskDecoder,
    DeskType,
    content,
    local_time,
    principal_of,
    probe_type,
    refusal_error,
    refused_result,
)
from switch.core.clock import WALL_CLOCK, BusinessClock, Stamp
from switch.core.ledger import LedgerError
from switch.core.model import Origin, Outcome
from switch.errors import TransactionRefused
from switch.net.channel import log_transaction
from switch.net.onus import LedgerDesk
from switch.store.ledger_port import LedgerStore
from switch.store.port import JournalError
from switch.wire import app as wire
from switch.wire import online as online_wire

log = structlog.get_logger()

T = TypeVar("T")

Handler = Callable[[Any, "DeskCall"], Awaitable["wire.DeskResult | bytes"]]
"""A type's handler: its result, or the bytes ``DeskCall.keep`` gave."""


class DeskWork(msgspec.Struct, gc=False):
    """A request the desk accepted, to be answered once its nonce is claimed."""

    row: DeskType
    message: wire.DeskRequest
    principal: str
    """The ``id`` space: ``app:<name>`` or ``merchant:<id>``."""
    origin: Origin


class _InFlight(msgspec.Struct, gc=False):
    fingerprint: bytes
    done: trio.Event


class DeskCall:
    """What a handler is given: its request, who asks, the time, and the store."""

    def __init__(self, desk: AppDesk, work: DeskWork, stamp: Stamp, fingerprint: bytes) -> None:
        self.desk = desk
        self.message = work.message
        self.principal = work.principal
        self.owner = work.principal.partition(":")[2]
        """The app's name, or the merchant's id."""
        self.stamp = stamp
        """Business time: ``local_date`` (wallet.md's "today") and the business date."""
        self.now = desk.wall_clock()
        """Wall time: payment codes, QR expiries, results kept."""
        self._content = content(work.message)
        self._fingerprint = fingerprint

    @property
    def local_date(self) -> str:
        return self.stamp.local.date().isoformat()

    @property
    def business_date(self) -> str:
        return self.desk.business_date(self.stamp)

    def local_time(self, at: float) -> str:
        """wallet.md's time of ``at``: ISO 8601 local time with its offset."""
        return local_time(at, self.desk.utc_offset_h)

    @property
    def store(self) -> LedgerStore:
        return self.desk.ledger.store

    async def read(self, body: Callable[[LedgerStore], T]) -> T:
        """``body(store)`` in the store's worker thread; nothing kept."""
        store = self.store
        return await self.desk.ledger.call(lambda: body(store))

    async def keep(self, body: Callable[[LedgerStore], tuple[wire.DeskResult, bool]]) -> bytes:
        """``body(store)``'s steps and its result (kept when its flag says so) in one
        store transaction; the result kept before for this id instead, if another
        worker's first got there (``error`` 94 if its content differs)."""
        store = self.store
        message = self.message

        def step() -> tuple[bytes, bool]:
            result, keep = body(store)
            return wire.encode_result(result), keep

        kept = await self.desk.ledger.call(
            lambda: store.desk_kept(self.principal, message.id, self._fingerprint, self.now, step)
        )
        if kept.again and not self.desk.matches(self._content, kept.fingerprint):
            return _conflict(message.id)
        return kept.response


CARD_TYPES: Final = frozenset(
    member.__struct_config__.tag for member in get_args(online_wire.OnlineRequest)
)
"""The types ``switch.wire.online`` decodes (purchase, void...): never the desk's."""

_said = msgspec.msgpack.Decoder(dict[str, Any])
"""A kept answer's ``code`` and ``message``, for its log line."""


def _conflict(request_id: str) -> bytes:
    refusal = TransactionRefused("94", "this id was used before with different content")
    return online_wire.encode_response(refusal_error(request_id, refusal))


class AppDesk:
    """The registry of the desk's types and how they are answered."""

    def __init__(
        self,
        ledger: LedgerDesk,
        *,
        digest: Callable[[bytes], bytes],
        matches: Callable[[bytes, bytes], bool],
        business_date: Callable[[Stamp], str],
        utc_offset_h: int,
        stats: Any,
        in_flight_wait_s: float = 11.0,
        keep_s: float = 7 * 86400.0,
        clock: BusinessClock = WALL_CLOCK,
        wall_clock: Callable[[], float] = time.time,
        card_result: Callable[[str, str], Awaitable[object | None]] | None = None,
    ) -> None:
        self.ledger = ledger
        self.card_result = card_result
        """The journal's online result of (merchant_id, id), if any: a merchant's id
        is unique across its card requests and its desk requests (94)."""
        self.digest = digest
        """The keyed digest of a request's content (what is kept, as for card requests:
        a withdrawal's content holds an account number)."""
        self.matches = matches
        self.business_date = business_date
        self.utc_offset_h = utc_offset_h
        self.stats = stats
        self.in_flight_wait_s = in_flight_wait_s
        """How long a repeat waits for its first (online.md); then ``error`` 94."""
        self.keep_s = keep_s
        self.clock = clock
        self.wall_clock = wall_clock
        self._rows: dict[str, tuple[DeskType, Handler]] = {}
        self._decoder = DeskDecoder(())
        self._in_flight: dict[tuple[str, str], _InFlight] = {}
        self._kept_since_purge = 0
        self._waiting = 0

    # -- the registry -----------------------------------------------------------------

    def register(self, row: DeskType, handler: Handler) -> None:
        tag = row.request.__struct_config__.tag
        if tag != row.name:
            raise ValueError(f"desk type {row.name}: its Struct is tagged {tag!r}")
        if row.name in self._rows:
            raise ValueError(f"desk type {row.name} registered twice")
        if row.name in CARD_TYPES:  # the card types' decoder would take it first
            raise ValueError(f"desk type {row.name} is a card type of online.md")
        self._rows[row.name] = (row, handler)
        self._decoder = DeskDecoder(r.request for r, _ in self._rows.values())

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._rows)

    def statistics(self) -> dict[str, int]:
        return {
            "types": len(self._rows),
            "in_flight": len(self._in_flight),
            "repeats_waiting": self._waiting,
        }

    # -- accepting --------------------------------------------------------------------

    def accept(self, body: bytes, principal: str, origin: Origin) -> DeskWork | bytes | None:
        """A body of a registered type: its work, or its immediate ``error`` (30, 03);
        None when the body's ``type`` is not the desk's."""
        name = probe_type(body)
        if name is None or name not in self._rows:
            return None
        row = self._rows[name][0]
        try:
            message = self._decoder.decode(body)
        except DeskDecodeError as exc:
            error = online_wire.Error(id=online_wire.probe_id(body), code="30", message=str(exc))
            self._log(name, error.code, error.message, origin.received_at, None)
            return online_wire.encode_response(error)
        merchant = message.merchant_id if isinstance(message, wire.MerchantRequest) else None
        try:
            owner = principal_of(row, message, principal)
            online.check_free_text(message)  # type: ignore[arg-type]
        except TransactionRefused as exc:
            error = refusal_error(message.id, exc)
            self._log(name, error.code, error.message, origin.received_at, merchant)
            return online_wire.encode_response(error)
        return DeskWork(row, message, owner, origin)

    # -- answering --------------------------------------------------------------------

    async def respond(self, work: DeskWork) -> bytes:
        message = work.message
        stamp = self.clock.stamp(self.utc_offset_h)
        subject = content(message)
        fingerprint = self.digest(subject)
        call = DeskCall(self, work, stamp, fingerprint)
        if work.row.read:
            return await self._handle(work, call)
        key = (work.principal, message.id)
        while (first := self._in_flight.get(key)) is not None:
            if not self.matches(subject, first.fingerprint):
                return _conflict(message.id)
            self._waiting += 1
            try:
                with trio.move_on_after(self.in_flight_wait_s):
                    await first.done.wait()
            finally:
                self._waiting -= 1
            if not first.done.is_set():
                refusal = TransactionRefused("94", "in progress")
                return online_wire.encode_response(refusal_error(message.id, refusal))
        claim = self._in_flight[key] = _InFlight(fingerprint, trio.Event())
        try:
            try:
                kept = await self.ledger.call(
                    lambda: call.store.desk_result(work.principal, message.id)
                )
            except LedgerError as exc:
                return self._refused(work, exc.response_code, str(exc), None)
            if kept is not None:
                if not self.matches(subject, kept.fingerprint):
                    return _conflict(message.id)
                return kept.response
            if isinstance(message, wire.MerchantRequest) and self.card_result is not None:
                try:
                    used = await self.card_result(message.merchant_id, message.id)
                except JournalError as exc:
                    return self._refused(work, "96", str(exc), None)
                if used is not None:  # a purchase's, a void's...: another request's id
                    return _conflict(message.id)
            answer = await self._handle(work, call)
            await self._purge_now_and_then(call.now)
            return answer
        finally:
            del self._in_flight[key]
            claim.done.set()

    async def _handle(self, work: DeskWork, call: DeskCall) -> bytes:
        message = work.message
        handler = self._rows[work.row.name][1]
        try:
            answer = await handler(message, call)
        except TransactionRefused as exc:
            return self._refused(work, exc.response_code, str(exc), exc.field)
        except LedgerError as exc:
            return self._refused(work, exc.response_code, str(exc), getattr(exc, "field", None))
        except (ValueError, AssertionError) as exc:  # our own misuse: a bug, answered 96
            log.exception("desk_handler_failed", type=work.row.name)
            return self._refused(work, "96", str(exc), None)
        if isinstance(answer, wire.DeskResult):
            self._log(work.row.name, answer.code, answer.message, work.origin.received_at,
                      self._merchant(work))  # fmt: skip
            return wire.encode_result(answer)
        said = _said.decode(answer)
        self._log(work.row.name, str(said.get("code", "")), str(said.get("message", "")),
                  work.origin.received_at, self._merchant(work))  # fmt: skip
        return answer

    def _refused(self, work: DeskWork, code: str, text: str, field: str | None) -> bytes:
        message = work.message
        if code in ("91", "96"):
            log.error("desk_store_failed", type=work.row.name, code=code, error=text)
            text = "system malfunction" if code == "96" else "switch busy"
        self._log(work.row.name, code, text, work.origin.received_at, self._merchant(work))
        if code in ERROR_CODES:
            error = refusal_error(message.id, TransactionRefused(code, text, field=field))
            return online_wire.encode_response(error)
        return wire.encode_result(refused_result(message, code, text))

    @staticmethod
    def _merchant(work: DeskWork) -> str | None:
        message = work.message
        return message.merchant_id if isinstance(message, wire.MerchantRequest) else None

    async def _purge_now_and_then(self, now: float) -> None:
        """Results kept longer than ``keep_s`` are forgotten, every 1000th request."""
        self._kept_since_purge += 1
        if self._kept_since_purge < 1000:
            return
        self._kept_since_purge = 0
        before = now - self.keep_s
        try:
            await self.ledger.call(lambda: self.ledger.store.desk_purge(before))
        except LedgerError as exc:
            log.warning("desk_purge_failed", error=str(exc))

    def _log(
        self, kind: str, code: str, text: str, received_at: float, merchant: str | None
    ) -> None:
        log_transaction(
            None, Outcome(code=code, message=text), stats=self.stats, channel="online",
            kind=kind, received_at=received_at, merchant=merchant,
        )  # fmt: skip
