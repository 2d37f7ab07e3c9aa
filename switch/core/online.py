"""Online channel requests (online.md) to the canonical model, outcomes back, and the
channel's idempotency rules. Pure Python, no I/O."""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Callable, Collection
from datetime import date
from typing import Final, Literal, get_args

import msgspec

from switch.core import products, validate
from switch.core.changes import Change, OnlineResultKept
from switch.core.model import (
    REQUEST_TYPES,
    Acceptor,
    Card,
    OriginalRef,
    Outcome,
    Request,
    balance_amount,
)
from switch.errors import LocalProtocolError, TransactionRefused
from switch.wire import online as wire

ONLINE_ENTRY_MODE: Final = "012"
"""Field 22 towards banks: card number keyed, no PIN."""
ONLINE_CONDITION_CODE: Final = "08"
"""Field 25 towards banks: card not present (mail, telephone or electronic order)."""

SETTLEMENT_CURRENCY: Final = "156"
"""What a balance inquiry, which names no currency, asks in."""
ONLINE_PRODUCTS: Final[dict[type, products.Product]] = {
    request_type: products.BY_ONLINE_TYPE[request_type.__struct_config__.tag]
    for request_type in get_args(wire.OnlineRequest)
    if request_type.__struct_config__.tag in products.BY_ONLINE_TYPE
}
"""Each online request Struct's product, by its ``type`` (online.md)."""

_FIELD_CODES: Final = {"amount": "13", "card.pan": "14"}
"""Decode errors in these fields answer with their own code rather than 30."""

MESSAGES: Final = {
    "00": "approved",
    "03": "invalid merchant",
    "05": "do not honour",
    "12": "invalid transaction",
    "13": "invalid amount",
    "14": "invalid card number",
    "25": "original transaction not found",
    "30": "format error",
    "40": "function not supported",
    "51": "insufficient funds",
    "54": "expired card",
    "57": "transaction not permitted",
    "61": "exceeds amount limit",
    "64": "original amount incorrect",
    "65": "exceeds frequency limit",
    "68": "response received too late",
    "91": "issuer or switch inoperative",
    "92": "no route to issuer",
    "94": "duplicate transmission",
    "96": "system malfunction",
}


BANK_FIELD_NAMES: Final = {2: "card.pan", 4: "amount", 42: "merchant_id"}
"""The request field each bank field of an online request is made of, so a value the
bank's dialect cannot carry is refused naming the client's field."""


def check_free_text(request: wire.OnlineRequest) -> None:
    """``order_id`` and ``memo`` are echoed and kept with the result: text holding a
    card number or track data (the log's detector), or the request's own CVV2, is
    refused (30 naming the field), never stored."""
    cvv2 = (
        request.card.cvv2
        if isinstance(request, wire.Purchase | wire.Balance | wire.WalletTopup)
        and request.card is not None
        else None
    )
    for name in ("order_id", "memo"):
        text = getattr(request, name)
        if text is None:
            continue
        if validate.holds_card_data(text):
            raise TransactionRefused("30", "must not hold a card number", field=name)
        if cvv2 is not None and re.search(f"(?<![0-9]){cvv2}(?![0-9])", text):
            raise TransactionRefused("30", "must not hold the card's CVV2", field=name)


def _card(card: wire.Card, today: date | None) -> Card:
    validate.check_pan(card.pan, field="card.pan")
    validate.check_expiry(card.expiry, field="card.expiry")
    if today is not None:
        validate.check_not_expired(card.expiry, today, field="card.expiry")
    return Card(
        pan=card.pan,
        expiry=card.expiry,
        cvv2=card.cvv2,
        entry_mode=ONLINE_ENTRY_MODE,
        condition_code=ONLINE_CONDITION_CODE,
    )


online_card = _card
"""An online request's ``card`` checked (14, 30, 54) into the canonical card."""


def request_from_online(
    request: wire.FinancialRequest,
    *,
    terminal_id: str,
    stan: str,
    currencies: Collection[str] = validate.SETTLED_CURRENCIES,
    today: date | None = None,
) -> Request:
    """The canonical request; payment-rule failures raise TransactionRefused.
    ``currencies``: those the switch settles (57 for another). ``today``: the local date
    of the request's stamp, by which its card has expired (54); None checks no date."""
    acceptor = Acceptor(channel="online", terminal_id=terminal_id, merchant_id=request.merchant_id)
    product = ONLINE_PRODUCTS[type(request)]
    fields: dict[str, object] = {}
    amount = getattr(request, "amount", None)
    if amount is not None:
        validate.check_amount(amount, field="amount")
        fields["amount"] = amount
    if isinstance(request, wire.Purchase | wire.Balance) and (
        request.paycode is not None or request.card is None
    ):
        return _paycode_request(request, acceptor, stan, currencies)
    if product.original == "none":
        currency = getattr(request, "currency", None)
        fields["currency"] = (
            SETTLEMENT_CURRENCY  # a balance inquiry names none (online.md)
            if currency is None
            else validate.settled_currency(currency, currencies, field="currency")
        )
        fields["card"] = _card(request.card, today)  # type: ignore[union-attr,arg-type]
    else:
        fields["original"] = _original(request)  # type: ignore[arg-type]
    return REQUEST_TYPES[product.kind](
        acceptor=acceptor,
        stan=stan,
        online_id=request.id,
        processing_code=product.online_code,
        device_id=request.device_id,
        **fields,
    )


ONUS_CURRENCY: Final = "156"


def _original(request: wire.Void | wire.Refund) -> OriginalRef:
    """What a void or refund names: ``original_id``, or (wallet.md, an on-us payment)
    ``original_rrn``; exactly one (30 naming ``original_id``)."""
    if (request.original_id is None) == (request.original_rrn is None):
        raise TransactionRefused(
            "30", "exactly one of original_id and original_rrn", field="original_id"
        )
    if request.original_rrn is not None:
        return OriginalRef(rrn=request.original_rrn)
    return OriginalRef(online_id=request.original_id)


def _paycode_request(
    request: wire.Purchase | wire.Balance,
    acceptor: Acceptor,
    stan: str,
    currencies: Collection[str],
) -> Request:
    """A merchant's purchase or pre-authorisation by payment code (wallet.md): on the
    ledger, CNY only (57); a balance inquiry with a code is 57; exactly one of ``card``
    and ``paycode`` (30)."""
    if request.paycode is None:
        raise TransactionRefused("30", "card or paycode is required", field="card")
    if request.card is not None:
        raise TransactionRefused("30", "card and paycode both given", field="paycode")
    if isinstance(request, wire.Balance):
        raise TransactionRefused("57", "a balance inquiry with a payment code", field="paycode")
    validate.check_amount(request.amount, field="amount")
    currency = validate.settled_currency(request.currency, currencies, field="currency")
    if currency != ONUS_CURRENCY:
        raise TransactionRefused("57", "on-us money is CNY only", field="currency")
    # Its card product's on-us twin: a purchase's is the code's sale, a pre-authorisation's
    # the code's hold (risk.md, "On-us funding").
    product = products.LEDGER_TWINS[ONLINE_PRODUCTS[type(request)].kind]
    return REQUEST_TYPES[product.kind](
        acceptor=acceptor, stan=stan, online_id=request.id,
        processing_code=product.online_code, amount=request.amount, currency=currency,
        card=Card(pan=request.paycode, entry_mode="032", condition_code=ONLINE_CONDITION_CODE),
    )  # fmt: skip


def result(request: wire.OnlineRequest, outcome: Outcome) -> wire.Result:
    product = ONLINE_PRODUCTS.get(type(request))
    # Those never paid (a balance inquiry, a pre-authorisation, its void) name no date.
    settles = product is not None and (product.counts != "none" or product.kind == "sale")
    return wire.Result(
        id=request.id,
        code=outcome.code,
        approved=outcome.approved,
        rrn=outcome.rrn,
        auth_code=outcome.auth_code if outcome.approved else None,
        message=outcome.message or MESSAGES.get(outcome.code, "declined"),
        balance=balance_amount(outcome.balance) if isinstance(request, wire.Balance) else None,
        settlement_date=outcome.settlement_date if settles else None,
        last_completion_date=outcome.hold_until if outcome.approved else None,
        order_id=request.order_id,
        memo=request.memo,
        funding=outcome.funding,
        plan=None if outcome.plan is None else msgspec.to_builtins(outcome.plan),
    )


def response(request: wire.OnlineRequest, outcome: Outcome) -> wire.Result | wire.Error:
    """The answer to a request that went through the switchboard: its result, or an
    error naming the field when a value failed the bank's format (30 with a bank field,
    nothing sent, nothing kept)."""
    if outcome.code == "30" and outcome.field is not None and outcome.field.isdigit():
        name = BANK_FIELD_NAMES.get(int(outcome.field), f"bank field {outcome.field}")
        message = outcome.message or MESSAGES["30"]
        return wire.Error(id=request.id, code="30", message=f"{message} (field {name})")
    return result(request, outcome)


def refusal(request_id: str | None, exc: TransactionRefused) -> wire.Error:
    where = f" (field {exc.field})" if exc.field else ""
    return wire.Error(id=request_id, code=exc.response_code, message=f"{exc}{where}")


def decode_error(exc: wire.OnlineDecodeError) -> wire.Error:
    code = _FIELD_CODES.get(exc.field_path or "", "30")
    return wire.Error(id=exc.request_id, code=code, message=str(exc))


# -- idempotency (online.md, "Idempotency") -------------------------------------------


class IdempotencyEntry(msgspec.Struct, gc=False):
    fingerprint: bytes
    created_s: float
    response: bytes
    """The encoded result: a repeat gets these very bytes."""


_fingerprint_encoder: Final = msgspec.msgpack.Encoder()


def fingerprint_content(request: wire.OnlineRequest) -> bytes:
    """What two requests with the same id compare by: the request's content, CVV2 left
    out (nothing kept may confirm a guess of it). Only its keyed digest is kept, since
    the content holds a card number."""
    if (
        isinstance(request, wire.Purchase | wire.Balance | wire.WalletTopup)
        and request.card is not None
        and request.card.cvv2 is not None
    ):
        request = msgspec.structs.replace(
            request, card=msgspec.structs.replace(request.card, cvv2=None)
        )
    return _fingerprint_encoder.encode(request)


Matches = Callable[[bytes, bytes], bool]
"""(content, stored keyed digest) -> whether the digest is of that content, under any
card key still held (``CardVault.matches``)."""


class IdempotencyBook:
    """Online results by (merchant, id), kept ``keep_s`` (7 days by default).

    The in-memory window over the journal, which keeps every result for ``keep_s``:
    bounded by ``max_entries``, past which the oldest results leave memory early
    (counted in ``statistics()["evicted_early"]``); from then on the online channel asks
    the journal about an id the window does not hold. A request still in flight is
    held apart and never leaves early: a repeat of it must be refused, not sent again
    (there are as many as the connections' windows allow).
    """

    __slots__ = (
        "_done", "_in_flight", "evicted_early", "keep_s", "matches", "max_entries", "shared",
    )  # fmt: skip

    def __init__(
        self, *, keep_s: float, max_entries: int, matches: Matches, shared: bool = False
    ) -> None:
        self.keep_s = keep_s
        self.max_entries = max_entries
        self.matches = matches
        self.shared = shared
        """Other workers keep results in the same journal (a client's repeat may come
        through any of them): the journal is always asked about an id not held."""
        self.evicted_early = 0
        self._done: OrderedDict[tuple[str, str], IdempotencyEntry] = OrderedDict()
        self._in_flight: dict[tuple[str, str], bytes] = {}

    @property
    def journal_has_more(self) -> bool:
        """Whether an id this window does not hold may still be in the journal."""
        return self.shared or self.evicted_early > 0

    def statistics(self) -> dict[str, int]:
        return {
            "entries": len(self._done),
            "in_flight": len(self._in_flight),
            "evicted_early": self.evicted_early,
        }

    def _expire(self, now_s: float) -> None:
        entries = self._done
        while entries:
            oldest = next(iter(entries.values()))
            if oldest.created_s > now_s - self.keep_s and len(entries) <= self.max_entries:
                return
            if oldest.created_s > now_s - self.keep_s:
                self.evicted_early += 1
            entries.popitem(last=False)

    def begin(
        self, merchant_id: str, request_id: str, content: bytes, fingerprint: bytes
    ) -> bytes | None:
        """Claims the id for a new request (``fingerprint``: the keyed digest of its
        ``content``) and returns None, or returns the stored response of an earlier
        identical one. A different request under the same id, or one still in flight,
        is refused with 94."""
        key = (merchant_id, request_id)
        claimed = self._in_flight.get(key)
        if claimed is not None:
            if not self.matches(content, claimed):
                raise TransactionRefused(
                    "94", "this id was used before with different content", field="id"
                )
            raise TransactionRefused("94", "a request with this id is in progress", field="id")
        entry = self._done.get(key)
        if entry is None:
            self._in_flight[key] = fingerprint
            return None
        if not self.matches(content, entry.fingerprint):
            raise TransactionRefused(
                "94", "this id was used before with different content", field="id"
            )
        return entry.response

    def load(
        self, merchant_id: str, request_id: str, digest: bytes, response: bytes, created_s: float
    ) -> None:
        """An entry from the journal, at start-up (oldest first)."""
        self._done[(merchant_id, request_id)] = IdempotencyEntry(
            fingerprint=digest, created_s=created_s, response=response
        )

    def expire(self, now_s: float) -> None:
        self._expire(now_s)

    def finish(self, merchant_id: str, request_id: str, response: bytes, *, now_s: float) -> None:
        """The claimed request has its result, journaled: repeats get it from now on."""
        key = (merchant_id, request_id)
        fingerprint = self._in_flight.pop(key, None)
        if fingerprint is None:
            return
        self._done[key] = IdempotencyEntry(
            fingerprint=fingerprint, created_s=now_s, response=response
        )
        self._expire(now_s)

    def remember(
        self, merchant_id: str, request_id: str, fingerprint: bytes, response: bytes, now_s: float
    ) -> None:
        """A result read back from the journal (the window had forgotten it early)."""
        self._done[(merchant_id, request_id)] = IdempotencyEntry(
            fingerprint=fingerprint, created_s=now_s, response=response
        )
        self._expire(now_s)

    def abandon(self, merchant_id: str, request_id: str) -> None:
        """Forgets a claim whose request never reached a result (so a retry may run)."""
        self._in_flight.pop((merchant_id, request_id), None)

    def stored(self, merchant_id: str, request_id: str) -> bytes | None:
        entry = self._done.get((merchant_id, request_id))
        return None if entry is None else entry.response


# -- one request's id, from its claim to its answer (online.md, "Idempotency") -----------
#
# As a POS repeat is the lifecycle's to decide, an online id is this machine's: whether
# the journal is asked about it first, whether a first at another worker is watched,
# what a repeat gets back and whether the result is kept. The online channel only
# carries its actions out (a journal read, a watch, the switchboard) and feeds back
# what happened; the table decides, as the lifecycle's does.


class ReadKept(msgspec.Struct, frozen=True):
    """Read the result the journal keeps for this id: KeptRead."""


class WatchFirst(msgspec.Struct, frozen=True):
    """Watch the journal's transaction of this id (another worker's) until it has
    ended, for a bounded time: FirstSeen."""


class Process(msgspec.Struct, frozen=True):
    """Take the request through the switchboard with :meth:`OnlineRun.keep` as its
    finalizer: Processed."""


class Reply(msgspec.Struct, frozen=True):
    """The final action: this payload answers the request."""

    payload: bytes
    outcome: Outcome | None = None
    """The switchboard's outcome, when the request went through it (for its log line)."""


class Claimed(msgspec.Struct, frozen=True):
    """The id was claimed for this request: what ``start()`` feeds the machine."""


class KeptRead(msgspec.Struct, frozen=True):
    """The journal's kept result for the id (None: none, or the journal could not say)."""

    fingerprint: bytes | None = None
    response: bytes | None = None


class FirstSeen(msgspec.Struct, frozen=True):
    """What the watch of a first at another worker found."""

    reached_bank: bool
    """False: none was journaled, it never left the switch, or the journal could not
    say; this request goes ahead."""


class Processed(msgspec.Struct, frozen=True):
    outcome: Outcome


class NotProcessed(msgspec.Struct, frozen=True):
    """Refused by the channel's own checks ahead of the lifecycle (an app's
    transaction, wallet.md): this payload answers it; nothing was journaled or kept."""

    payload: bytes


OnlineEvent = Claimed | KeptRead | FirstSeen | Processed | NotProcessed
OnlineAction = ReadKept | WatchFirst | Process | Reply

OnlinePhase = Literal[
    "claimed", "reading_kept", "watching_first", "reading_kept_again", "processing",
    "answered",
]  # fmt: skip

ONLINE_TRANSITIONS: Final[dict[tuple[OnlinePhase, type], tuple[OnlinePhase, ...]]] = {
    ("claimed", Claimed): ("reading_kept", "processing"),
    ("reading_kept", KeptRead): ("answered", "watching_first", "processing"),
    ("watching_first", FirstSeen): ("reading_kept_again", "processing"),
    ("reading_kept_again", KeptRead): ("answered",),
    ("processing", Processed): ("answered",),
    ("processing", NotProcessed): ("answered",),
}
"""(phase, event) -> the phases it may lead to; the phase's handler chooses."""



class OnlineRun:
    """One claimed online request (``IdempotencyBook.begin`` returned None for it),
    from its claim to its answer. Whichever way it ends, the claim is finished (its
    result kept in the window: it was journaled with an outcome that reached a bank) or
    let go (a retry may run); :meth:`abandon` lets it go if the carrier gives up."""

    __slots__ = (
        "_kept", "answer_of", "book", "content", "fingerprint", "message", "now_s", "owner",
        "phase", "result_of",
    )  # fmt: skip

    def __init__(
        self,
        book: IdempotencyBook,
        message: wire.FinancialRequest | wire.AppTransaction,
        content: bytes,
        fingerprint: bytes,
        now_s: float,
        *,
        owner: str | None = None,
        result_of: Callable[[Outcome], msgspec.Struct] | None = None,
        answer_of: Callable[[Outcome], msgspec.Struct] | None = None,
    ) -> None:
        self.book = book
        self.message = message
        self.owner: str = getattr(message, "merchant_id", "") if owner is None else owner
        """Whose id it is: the merchant's (a merchant key's request), or the principal
        that signed it (an app's); the window and the journal key results by (owner, id)."""
        self.result_of = result_of or functools.partial(result, message)
        """The result kept for an outcome that reached a bank (online.md's ``result``)."""
        self.answer_of = answer_of or functools.partial(response, message)
        """The answer to the outcome (a field error for a value its bank cannot take)."""
        self.content = content
        self.fingerprint = fingerprint
        self.now_s = now_s
        """Real time (an id's memory is on real time, never the business clock)."""
        self.phase: OnlinePhase = "claimed"
        self._kept: tuple[msgspec.Struct, bytes] | None = None

    def start(self) -> OnlineAction:
        return self.handle(Claimed(), self.now_s)

    def handle(self, event: OnlineEvent, now_s: float) -> OnlineAction:
        phase = self.phase
        moves = ONLINE_TRANSITIONS.get((phase, type(event)))
        if moves is None:
            raise LocalProtocolError(f"{type(event).__name__} in phase {phase}")
        self.now_s = now_s
        to, action = ONLINE_HANDLERS[phase](self, event)
        if to not in moves:
            raise LocalProtocolError(f"{type(event).__name__} in phase {phase} led to {to}")
        self.phase = to
        return action

    def keep(self, outcome: Outcome) -> list[Change]:
        """The finalizer: the result, encoded once, journaled with an outcome that
        reached a bank, so a repeat finds it after a restart (what never reached one is
        not kept: a retry is then safe)."""
        message = self.message
        kept = self.result_of(outcome)
        payload = wire.encode_response(kept)  # type: ignore[arg-type]
        self._kept = (kept, payload)
        return [
            OnlineResultKept(
                merchant_id=self.owner, online_id=message.id,
                fingerprint=self.fingerprint, response=payload, at=self.now_s,
            )
        ]  # fmt: skip

    def abandon(self) -> None:
        self.book.abandon(self.owner, self.message.id)

    # -- the handlers --------------------------------------------------------------

    def _on_claimed(self, event: OnlineEvent) -> tuple[OnlinePhase, OnlineAction]:
        if self.book.journal_has_more:
            # The window has forgotten some ids before their time, or other workers
            # keep results too: the journal, which has them all, has the last word.
            return "reading_kept", ReadKept()
        return "processing", Process()

    def _on_reading_kept(self, event: OnlineEvent) -> tuple[OnlinePhase, OnlineAction]:
        assert isinstance(event, KeptRead)
        if event.response is not None:
            return "answered", self._kept_answer(event)
        if self.book.shared:
            return "watching_first", WatchFirst()
        return "processing", Process()

    def _on_watching_first(self, event: OnlineEvent) -> tuple[OnlinePhase, OnlineAction]:
        assert isinstance(event, FirstSeen)
        if event.reached_bank:
            return "reading_kept_again", ReadKept()
        return "processing", Process()

    def _on_reading_kept_again(self, event: OnlineEvent) -> tuple[OnlinePhase, OnlineAction]:
        assert isinstance(event, KeptRead)
        if event.response is not None:
            return "answered", self._kept_answer(event)
        self.abandon()  # its first reached a bank and has no result yet
        return "answered", Reply(wire.encode_response(refusal(
            self.message.id,
            TransactionRefused("96", "the first request with this id is still in doubt"),
        )))

    def _on_processing(self, event: OnlineEvent) -> tuple[OnlinePhase, OnlineAction]:
        if isinstance(event, NotProcessed):
            self.abandon()
            return "answered", Reply(event.payload)
        assert isinstance(event, Processed)
        message, outcome, kept = self.message, event.outcome, self._kept
        answer = self.answer_of(outcome)
        if kept is not None and kept[0] == answer:
            payload = kept[1]  # the very bytes journaled: encoded once
            self.book.finish(self.owner, message.id, payload, now_s=self.now_s)
        else:  # not journaled (nothing reached a bank, or the journal failed)
            payload = wire.encode_response(answer)  # type: ignore[arg-type]
            self.abandon()
        return "answered", Reply(payload, outcome)

    def _kept_answer(self, event: KeptRead) -> Reply:
        message = self.message
        assert event.fingerprint is not None and event.response is not None
        self.abandon()
        if not self.book.matches(self.content, event.fingerprint):
            return Reply(wire.encode_response(refusal(
                message.id,
                TransactionRefused("94", "this id was used before with different content"),
            )))
        self.book.remember(
            self.owner, message.id, event.fingerprint, event.response, self.now_s
        )
        return Reply(event.response)


OnlineHandler = Callable[[OnlineRun, OnlineEvent], tuple[OnlinePhase, OnlineAction]]
ONLINE_HANDLERS: Final[dict[OnlinePhase, OnlineHandler]] = {
    "claimed": OnlineRun._on_claimed,
    "reading_kept": OnlineRun._on_reading_kept,
    "watching_first": OnlineRun._on_watching_first,
    "reading_kept_again": OnlineRun._on_reading_kept_again,
    "processing": OnlineRun._on_processing,
}
