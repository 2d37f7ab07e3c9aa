"""A transaction's life as explicit state machines: events in, actions out.

Plain Python, no I/O (h11's design): :class:`BankTransaction` (a sale, balance inquiry,
void or refund on its way to a bank, or a product on the switch's ledger) and
:class:`TerminalReversal` (a terminal's 0400) each hold their phase and, for every event
the trio layer feeds them, say what to do next: look an original up in the journal,
wait for a slot, journal these changes, send this to the bank (``SendToBank``) or post
this to the ledger (``PostToLedger``), queue a reversal, answer.
``switch.net.switchboard`` only carries the actions out and reports what happened as
the next event.

The tables decide. ``TRANSITIONS`` (``REVERSAL_TRANSITIONS``) maps (phase, event type)
to the phase the event leads to, or to the phases it may lead to; ``HANDLERS``
(``REVERSAL_HANDLERS``) maps each phase to its handler, which, where the row names more
than one phase, is the guard that chooses by what the event says, and which appends the
step's actions. One driver, ``_step``, looks the row up, calls the handler, checks its
choice against the row and assigns the phase: no phase is assigned anywhere else.
``start()`` feeds the event ``Start``. An event a phase does not expect, or a handler's
choice its row does not allow, is our own bug (LocalProtocolError). A new product is a
row of ``switch.core.products``; it needs a phase only if it waits on something no
product waited on before (then: a phase, its rows, its handler).

What the machine needs of the trio layer it is given, never asks for: a journal read
(``LoadOriginal``) or a slot is an action whose result is the next event, and the
circuits open at admission ride on ``Admitted`` (``open_circuits``: a route with a
secondary bank is chosen by ``BinTable.choose``, in the core). What reaches the
journal leaves as ``Journal`` changes.

The transaction book (``switch.core.book``, the in-memory window of recent
transactions) is an input the machine reads, never a collaborator it writes: it is
given at construction and read directly (repeats by request identity, originals by
reference and the rules on them, what a reservation would take); records read back
from the journal are fed in as events (``OriginalLoaded``, ``FirstFinished``) carrying
the copies the book holds once the trio layer took them in (``take_fresh``; a
``LoadOriginal`` with ``only_key`` takes in only a record of that request identity).
Every change to the book is an action the step returns (``Keep``, ``Forget``,
``Reserve``, ``Settle``, ``MarkSent``, ``MarkStoodIn``, ``MarkCustomer``,
``MarkReversed``, ``MarkState``, ``Unvoid``, ``MoveHold``: ``BookChange``), ahead of
the step's other actions and in the order decided; the trio layer carries them out
(``TransactionBook.apply``) in that order, synchronously, as soon as the step returns
and before it awaits anything, so that two requests handed over together see each
other's reservations at once. What a step journals of a record it changes is the
record as its changes will leave it (``TransactionBook.preview``: the same code, on
copies).

A bank-bound transaction::

    received ─┬─ (repeat of one in flight) ─ waiting_for_first ───────────┐ (answered)
              ├─ (original not in the book) ─ loading_original ──┐        │
              └──────────────────────────────────────────────────┴─ admitting
    admitting ── waiting_for_link ── journaling_request ── at_bank ── journaling_answer ── answered
       (91)            (91)                 │  (96)                       (96: reversed without
                                            │                              the journal)
                 (shared journal: a first   └─ loading_first ─┬─ waiting_for_first ── answered
                  of it journaled elsewhere)                  └─ answered

Invariants, each tested in ``tests/core/test_lifecycle.py`` (the book changes in
``tests/core/test_lifecycle_book.py``):

- nothing reaches a bank before it is journaled (``journaling_request`` precedes
  ``at_bank``), and a journal failure there answers 96 with nothing sent;
- a request that may have reached its bank and got no final answer (no answer in time,
  the link lost after sending, an answer of the wrong type or without a valid 39, the
  switch stopped) is settled ``no_answer`` with its reversal queued in the same commit;
- an approval is answered 00 only once it is journaled; if that commit fails, it is
  answered 96 and reversed at the bank without the journal (``ReverseUnjournaled``), as
  is a request that got no final answer;
- a step changes the book only through the book changes it returns, which come before
  its other actions; a reservation carried out at once is seen by the next request
  (two refunds handed over together never exceed their original);
- one a risk rule declines (risk.md) is journaled declined, with the rule's id, and
  sent nowhere (``journaling_decline``);
- requests refused before a bank (no slot, no link, no route) write nothing, but
  for one its bank's stand-in could have taken (``switch.core.stip``): journaled
  ``not_sent`` 91 with why it was not stood in;
- a sale stood in (its bank known not to have acted: circuit open, no link, or 91) is
  answered 00 only once it is journaled with its advice queued in the same commit;
- a request is encoded in its bank's dialect before it is journaled: one holding a value
  the dialect cannot carry is refused 30 naming the field, writes nothing and gives its
  slot back with no verdict on the bank (never a timeout for its circuit);
- on a journal shared by several workers, a POS request is not looked up before it is
  admitted: the journal refuses a second request of one identity (``RequestRepeated``)
  and the request, sent nowhere, is answered as the repeat of the first it names.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import Final, Literal, Protocol

import msgspec

from switch.core import bank as bankmsg
from switch.core import onus_hold, products
from switch.core.bank import BankTrace, Institution, OriginalData
from switch.core.book import (
    BookChange,
    Forget,
    Keep,
    MarkCustomer,
    MarkReversed,
    MarkSent,
    MarkState,
    MarkStoodIn,
    MoveHold,
    Preview,
    RequestKey,
    Settle,
    State,
    TransactionBook,
    TxnRecord,
    Unvoid,
)
from switch.core.changes import (
    AdviceQueued,
    Change,
    HoldMoved,
    ReversalQueued,
    RiskMarked,
    TxnStarted,
    TxnUpdated,
)
from switch.core.clock import Stamp
from switch.core.model import (
    PRODUCT_OF,
    BankBound,
    Card,
    OriginalRef,
    Outcome,
    Reversal,
    original_of,
)
from switch.core.numbers import RrnExhausted
from switch.core.onus import (
    LEDGER_ROUTE,
    REVERSAL_LEG,
    EndTransfer,
    LedgerAnswered,
    PostToLedger,
    ReserveBack,
    payment_step,
    record_key,
)
from switch.core.risk import RiskRequest, Verdict
from switch.core.riskgate import MESSAGES as RISK_MESSAGES
from switch.core.riskgate import RiskGate
from switch.core.stip import (
    CAPS_TAKEN,
    NoStandIn,
    StandIn,
    StandInDesk,
    StandInReason,
    StandInRequest,
)
from switch.core.stip import auth_code as stand_in_auth_code
from switch.core.terminal_keys import BANK_SECURITY_CONTROL
from switch.errors import (
    CardDataUnreadable,
    LocalProtocolError,
    MessageEncodeError,
    RemoteProtocolError,
    TransactionRefused,
)
from switch.security.errors import PinBlockFieldError, SecurityError
from switch.security.port import LmkKey


class Cards(Protocol):
    """What the lifecycle needs of card data protection (``switch.store.crypto``)."""

    def lookup(self, pan: str) -> bytes: ...

    def digest(self, text: str | bytes) -> bytes: ...

    def matches(self, text: str | bytes, stored: bytes) -> bool:
        """Whether ``stored`` is the look-up HMAC of ``text`` under any key held."""
        ...

    def seal(self, pan: str) -> bytes: ...

    def open(self, sealed: bytes) -> str:
        """The card number; CardDataUnreadable if no key held opens it."""
        ...


Router = Callable[..., tuple[str, str]]
"""Card number (and ``secondary=False``: never a route's secondary bank;
``open_circuits``: the banks ``Admitted`` says are open) -> (route as logged, bank);
raises TransactionRefused (92) without one. ``BinTable.choose``: a decision of the
core, on what the trio layer supplies."""
Finalizer = Callable[[Outcome], Sequence[Change]]
"""Changes a channel wants committed with an outcome that reached a bank (online
results, kept for repeats of the same id)."""


# -- events: what happened ---------------------------------------------------------------


class OriginalLoaded(msgspec.Struct, frozen=True):
    """The journal's answer to LoadOriginal (None: it has no such transaction)."""

    record: TxnRecord | None
    others: tuple[TxnRecord, ...] = ()
    """More candidates (a completion's pre-authorisations by 38 and 61.3)."""


class FirstFinished(msgspec.Struct, frozen=True):
    """The transaction a repeat (or a reversal) waited for has ended."""

    record: TxnRecord | None = None
    """For a first at another worker (``AwaitFirst.elsewhere``): its record as the
    journal has it now (still ``sending`` if the wait ran out, None if unreadable)."""


class Admitted(msgspec.Struct, frozen=True):
    open_circuits: frozenset[str] = frozenset()
    """The banks whose circuit the trio layer found open at admission: the input a route
    with a secondary bank is chosen by (``BinTable.choose``)."""


class Refused(msgspec.Struct, frozen=True):
    """No slot or no link for it now: 91, and nothing was written."""

    reason: str
    unavailable: StandInReason | None = None
    """Set when the bank is known not to have acted (``circuit_open``, ``no_link``),
    rather than busy: a sale may be stood in."""


BankEncoder = Callable[[str, dict[int, str | bytes]], bytes]
"""(MTI, fields) -> the message in the bank's dialect; MessageEncodeError naming the
field the dialect cannot carry."""


class PinToSend(msgspec.Struct, frozen=True, gc=False):
    """A PIN on its way to a bank (security.md, "PIN"): the terminal's block under its
    PIK, and that block translated to format 0 under the link's ZPK ``zpk``. The link
    translates again when its keys changed before it sends. In memory only; its repr
    shows neither block."""

    block: bytes
    pik: LmkKey
    pan: str
    translated: bytes
    zpk: LmkKey

    def __repr__(self) -> str:
        return f"PinToSend({self.pik!r} -> {self.zpk!r})"

    __str__ = __repr__


PinTranslator = Callable[[LmkKey, bytes, str], tuple[bytes, LmkKey]]
"""(PIK, the terminal's block, PAN) -> (format 0 block under the link's ZPK, that ZPK);
the security module's errors: 99 for no valid block, 30 for a block of the wrong size."""


class LinkGranted(msgspec.Struct, frozen=True):
    stan: str
    """The bank STAN the link's sequence gave this request."""
    encode: BankEncoder | None = None
    """The granted link's encoder: the request is encoded with it before it is
    journaled, so a value its bank cannot take is refused (30) with nothing written."""
    translate_pin: PinTranslator | None = None
    """The granted link's PIN translation (its ZPK): a PIN block that is none under the
    terminal's PIK is refused (99) before anything is written or sent."""


class Journaled(msgspec.Struct, frozen=True):
    pass


class JournalFailed(msgspec.Struct, frozen=True):
    error: str
    """For the operator's log, never for a client."""
    cap_taken: bool = False
    """A stood-in approval refused by the journal: other workers' stand-ins committed
    first took its card's or bank's caps (``StandInCapTaken``); nothing was written."""


class FirstElsewhere(msgspec.Struct, frozen=True):
    """The journal refused the request's start (``RequestRepeated``): it holds a first
    of the same POS identity that went to a bank, one another worker journaled (or one
    this process's bounded book no longer holds)."""

    error: str
    """For the operator's log."""


class BankAnswered(msgspec.Struct, frozen=True):
    mti: str
    fields: dict[int, str | bytes]


class BankTimedOut(msgspec.Struct, frozen=True):
    pass


class LinkLost(msgspec.Struct, frozen=True):
    """The link dropped after the request was sent: it may have reached the bank."""

    reason: str


class NotSent(msgspec.Struct, frozen=True):
    """The request never left (the link went down or could not take it)."""

    reason: str


class Stopped(msgspec.Struct, frozen=True):
    """The switch is stopping and cancelled the wait for the bank's answer."""


class Start(msgspec.Struct, frozen=True):
    """The channel handed the request over: what ``start()`` feeds the machine."""


START: Final = Start()


Event = (
    OriginalLoaded | FirstFinished | Admitted | Refused | LinkGranted | Journaled
    | JournalFailed | FirstElsewhere | BankAnswered | BankTimedOut | LinkLost | NotSent
    | Stopped | LedgerAnswered
)  # fmt: skip


# -- actions: what to do ------------------------------------------------------------------


class LoadOriginal(msgspec.Struct, frozen=True, kw_only=True):
    """Read an original the book does not hold: by RRN, online id or terminal trace."""

    rrn: str | None = None
    merchant_id: str | None = None
    online_id: str | None = None
    trace: tuple[str, str, str, str] | None = None
    authorisation: tuple[str, str] | None = None
    """A completion's pre-authorisations: (38, 61.3) at ``merchant_id``."""
    only_key: RequestKey | None = None
    """What is read is taken into the book (``OriginalLoaded`` carries the copies the
    book then holds) but, with this, only a record of this request identity (a repeat's
    first read by trace: the trace's latest request may be another's)."""


class AwaitFirst(msgspec.Struct, frozen=True):
    """Wait until the transaction with this RRN, still in flight, has ended."""

    rrn: str
    elsewhere: bool = False
    """In flight at another worker (its journal row still ``sending``): watched in the
    journal, for a bounded time, rather than waited for here."""


class Admit(msgspec.Struct, frozen=True):
    """Take a switch-wide slot (or wait for one, boundedly): Admitted or Refused."""


class AcquireLink(msgspec.Struct, frozen=True):
    """Take a slot in one of the bank's link windows (or wait for one, boundedly):
    LinkGranted or Refused."""

    bank: str


class Journal(msgspec.Struct, frozen=True):
    changes: tuple[Change, ...]
    durable: bool | None = None
    """None: as the journal's durability says; True: on disk whatever it says."""


class SendToBank(msgspec.Struct, frozen=True):
    """Send on the granted link and wait for the answer within the issuer timeout:
    BankAnswered, BankTimedOut, LinkLost, NotSent or Stopped. (A bank is one destination;
    the ledger's twin of this action is ``PostToLedger``.)"""

    mti: str
    fields: dict[int, str | bytes]
    encoded: bytes | None = None
    """The message as ``LinkGranted.encode`` made it (None: the link encodes it)."""
    pin: PinToSend | None = None
    """Its PIN, translated again by the link if its ZPK changed before it is sent."""


Exchange = SendToBank
"""The former name of :class:`SendToBank`."""


class ReleaseLink(msgspec.Struct, frozen=True):
    """Give the link slot back, with the bank's verdict for its circuit: answered
    (True), timed out or lost (False), never sent (None)."""

    answered: bool | None


class NudgeReversals(msgspec.Struct, frozen=True):
    """A reversal was queued for this bank: its store-and-forward should look now."""

    bank: str


class ReverseUnjournaled(msgspec.Struct, frozen=True):
    """The journal failed: reverse this at its bank from memory (its record in the
    journal still says ``sending``, so a restart reverses it again, harmlessly)."""

    record: TxnRecord
    reason: str


class Answer(msgspec.Struct, frozen=True):
    """The final action: answer the channel with this outcome."""

    outcome: Outcome


Action = (
    LoadOriginal | AwaitFirst | Admit | AcquireLink | Journal | SendToBank | ReleaseLink
    | NudgeReversals | ReverseUnjournaled | Answer | PostToLedger | BookChange
)  # fmt: skip
WAITS: Final = (
    LoadOriginal, AwaitFirst, Admit, AcquireLink, Journal, SendToBank, PostToLedger
)  # fmt: skip
"""Actions whose result is the next event; every step ends with one, or with Answer."""


Phase = Literal[
    "received",
    "loading_first",
    "waiting_for_first",
    "loading_original",
    "admitting",
    "journaling_decline",
    "waiting_for_link",
    "journaling_request",
    "at_bank",
    "journaling_answer",
    "journaling_stand_in",
    "answered",
    # on-us (a product whose destination is the ledger): the ledger's pending transfer
    # where a card's request is at its bank, then its end
    "at_ledger",
    "ending_ledger",
]

TRANSITIONS: Final[dict[tuple[Phase, type], Phase | tuple[Phase, ...]]] = {
    ("received", Start): ("waiting_for_first", "loading_original", "admitting", "answered"),
    ("waiting_for_first", FirstFinished): "answered",
    ("loading_original", OriginalLoaded): ("admitting", "answered"),
    ("loading_original", Refused): "answered",
    ("loading_original", JournalFailed): "answered",
    ("admitting", Admitted): (
        "waiting_for_link", "answered", "waiting_for_first", "journaling_stand_in",
        "journaling_decline", "journaling_request",
    ),
    ("admitting", Refused): "answered",
    ("journaling_decline", Journaled): "answered",
    ("journaling_decline", JournalFailed): "answered",
    ("journaling_decline", FirstElsewhere): "loading_first",
    ("waiting_for_link", LinkGranted): ("journaling_request", "answered"),
    ("waiting_for_link", Refused): ("answered", "journaling_stand_in"),
    ("journaling_stand_in", Journaled): "answered",
    ("journaling_stand_in", JournalFailed): ("answered", "journaling_stand_in"),
    ("journaling_request", Journaled): ("at_bank", "at_ledger"),
    ("journaling_request", JournalFailed): "answered",
    ("journaling_request", FirstElsewhere): "loading_first",
    ("loading_first", OriginalLoaded): ("waiting_for_first", "answered"),
    ("loading_first", Refused): "answered",
    ("loading_first", JournalFailed): "answered",
    ("at_bank", BankAnswered): "journaling_answer",
    ("at_bank", BankTimedOut): "journaling_answer",
    ("at_bank", LinkLost): "journaling_answer",
    ("at_bank", NotSent): "journaling_answer",
    ("at_bank", Stopped): "journaling_answer",
    ("journaling_answer", Journaled): ("answered", "ending_ledger"),
    ("journaling_answer", JournalFailed): ("answered", "ending_ledger", "journaling_answer"),
    ("at_ledger", LedgerAnswered): "journaling_answer",
    ("ending_ledger", LedgerAnswered): "answered",
}
"""(phase, event) -> the phase (or phases: which one is decided by what the event
says) a bank-bound transaction moves to."""


class _Step:
    """A step's actions: its book changes, zero or more other effects, then one wait or
    the answer."""

    __slots__ = ("actions", "booked", "view")

    def __init__(self) -> None:
        self.actions: list[Action] = []
        self.booked: list[BookChange] = []
        """The book changes, returned first, in the order they were decided."""
        self.view: Preview | None = None
        """The records as the book changes leave them, once previewed (``_settlement``)."""

    def preview(self, book: TransactionBook) -> Preview:
        self.view = view = book.preview(self.booked)
        return view


class BankTransaction:
    """One sale, balance inquiry, void or refund, from the channel's hand-over to its
    answer. Build it, call :meth:`start`, carry out the actions it returns, and feed
    what happened to :meth:`handle` until an action is :class:`Answer`."""

    def __init__(
        self,
        request: BankBound,
        stamp: Stamp,
        *,
        book: TransactionBook,
        cards: Cards,
        route: Router,
        institution: Institution,
        allocate_rrn: Callable[[Stamp], str],
        in_flight: Callable[[str], bool],
        now: float,
        business_date: str = "",
        mcc: str | None = None,
        finalize: Finalizer | None = None,
        hold_terms: tuple[int, int] = (30, 115),
        stand_in: StandInDesk | None = None,
        risk: RiskGate | None = None,
    ) -> None:
        self.request = request
        self.stand_in = stand_in
        """Stand-in processing (risk.md): None, or off for its bank, never stands in."""
        self._stood_in: StandInRequest | None = None
        self._not_stood_in: str | None = None
        self._unsent: str = ""
        """Why the bank was not asked (no link, circuit open): a refusal's message."""
        self._bank_91: Outcome | None = None
        """The bank's 91 that a stand-in replaced (answered if the journal refuses it)."""
        self._in_switch: TxnRecord | None = None
        """A stood-in sale this void undoes in the switch (its advice never sent, or
        refused): nothing goes to the bank."""
        self.product = PRODUCT_OF[type(request)]
        """Its row of ``switch.core.products``: how it finds its original, what it
        reserves, the answer that closes it, whether it is reversed on no answer."""
        self.stamp = stamp
        self.business_date = business_date
        """YYYY-MM-DD: the date it settles on, by when it was received (settlement.md)."""
        self.mcc = mcc
        self.hold_terms = hold_terms
        """``[preauth]``'s (expiry_days, completion_max_pct), kept by a
        pre-authorisation made now."""
        self.rrn: str | None = None
        """Given once admitted (refusals at the door use none of the day's numbers)."""
        self.allocate_rrn = allocate_rrn
        self.book = book
        self.cards = cards
        self.route = route
        self.institution = institution
        self.now = now
        self.received = now
        """When it was received: the moment the risk rules count it at."""
        self.finalize = finalize
        self.in_flight = in_flight
        self.risk = risk
        self.verdict: Verdict | None = None
        """The risk rules' verdict, once evaluated (risk.md)."""
        self.phase: Phase = "received"
        self.record: TxnRecord | None = None
        """The transaction's record, from the moment it holds a bank-path slot."""
        self.bank: str | None = None
        self.route_name: str | None = None
        self.original: TxnRecord | None = None
        self.first: TxnRecord | None = None
        self._resolved: BankBound = request
        self._exchange: SendToBank | None = None
        self._state: State = "not_sent"
        self._outcome: Outcome | None = None
        self._reversal_queued = False
        self.on_ledger = self.product.destination == "ledger"
        """Carried out on the switch's own ledger (wallet.md), not at a bank."""
        self._code: LedgerAnswered | None = None
        """The payment code taken (its customer, funding and tier)."""
        self._reserved = True
        """Whether a ledger step that may hold a transfer ran (not for a code not open)."""
        self._onus_risk: RiskRequest | None = None
        """An on-us payment's request for the risk rules, but its customer and funding."""
        self._rehold = False
        """An on-us completion's void: whether the ledger can hold its pre-authorisation
        again (``core/onus_hold.py``); else the pre-authorisation ends ``voided``."""
        self._final: Outcome | None = None
        self._lookup: bytes | None = None
        """The request card's look-up HMAC under the active key, once computed."""
        self._card_matched: set[str] = set()
        """RRNs of originals whose look-up HMAC this request's card matched (a
        completion's pre-authorisation): checked once, and its card number taken from
        the request rather than opened from the sealed copy."""
        self._found: TxnRecord | None = None
        """The original found before admission (``_check``), looked at again after it."""

    # -- driving ---------------------------------------------------------------------

    def start(self) -> list[Action]:
        if self.phase != "received":
            raise LocalProtocolError("a transaction starts once")
        return self._step(START, self.now)

    def handle(self, event: Event, now: float) -> list[Action]:
        """The actions that follow ``event`` (at ``now``, the wall clock's seconds)."""
        return self._step(event, now)

    def _step(self, event: Event | Start, now: float) -> list[Action]:
        """The one driver: the table says where ``event`` may lead from this phase, the
        phase's handler says which of those (its guard) and what to do, and the phase
        is assigned here and nowhere else. A refusal on the way answers at once."""
        phase = self.phase
        moves = TRANSITIONS.get((phase, type(event)))
        if moves is None:
            raise LocalProtocolError(f"{type(event).__name__} in phase {phase}")
        self.now = now
        step = _Step()
        try:
            to = HANDLERS[phase](self, event, step)
        except TransactionRefused as exc:
            to = self._answer(step, self._refusal(exc))
        if to != moves and (type(moves) is not tuple or to not in moves):
            raise LocalProtocolError(f"{type(event).__name__} in phase {phase} led to {to}")
        self.phase = to
        if step.booked:
            booked: list[Action] = step.booked  # type: ignore[assignment]
            booked += step.actions
            return booked
        return step.actions

    # -- before admission: repeats and originals (reads only) ---------------------------

    def _on_received(self, event: Event | Start, step: _Step) -> Phase:
        return self._answer_repeat(step) or self._load_or_admit(step)

    def _load_or_admit(self, step: _Step) -> Phase:
        load = self._original_to_load()
        if load is not None:
            step.actions.append(load)
            return "loading_original"
        return self._admit(step)

    def _check(self) -> None:
        """The rules that need nothing but the book, checked before a slot is taken so
        that a request bound to be refused (no route, no original) never holds one."""
        request = self.request
        if self.product.original == "none":
            assert request.card is not None
            if not self.on_ledger:  # a payment code is never routed to a bank
                self.route(request.card.pan)
        else:
            self._found = self._find_original()

    def _found_again(self) -> TxnRecord:
        """After admission, the original ``_check`` found before it, without a second
        search when the book still indexes that very record and it may still be acted
        on (the rules on originals, the hold's expiry, asked again: a void, completion
        or reversal another request made meanwhile shows there); otherwise, as when a
        fresher copy read back from a journal replaced it, the search again."""
        found = self._found
        if (
            found is None
            or self.book.by_rrn(found.rrn) is not found
            or not self.book.still_live(found)
            or self._expired(found)
        ):
            return self._find_original()
        return found

    def _expired(self, original: TxnRecord) -> bool:
        return bool(
            original.hold_until is not None
            and self.business_date
            and self.business_date > original.hold_until
        )

    def _find_original(self) -> TxnRecord:
        """The original the request acts on, by its product's ``original``; refused
        (25, 12) when there is none it may act on."""
        request, product = self.request, self.product
        ref = original_of(request)
        merchant_id = request.acceptor.merchant_id
        if product.original == "authorisation" and ref.online_id is None:
            card = request.card
            if card is None or ref.auth_code is None or ref.date is None:
                raise TransactionRefused("30", "a completion names 38 and 61", field="61")
            original = self.book.find_held(
                merchant_id=merchant_id, auth_code=ref.auth_code, local_date=ref.date,
                matches=lambda held: self._names(held, ref, card.pan),
                kinds=product.original_kinds,
            )  # fmt: skip
        else:
            original = self.book.find_original(
                merchant_id=merchant_id,
                rrn=ref.rrn,
                online_id=ref.online_id,
                kinds=self._original_kinds(),
            )
            if ref.auth_code is not None and ref.auth_code != original.auth_code:
                raise TransactionRefused("25", "38 is not the original's", field="38")
        if self._expired(original):
            raise TransactionRefused("12", "pre-authorisation is expired", field="original")
        return original

    def _names(self, held: TxnRecord, ref: OriginalRef, pan: str) -> bool:
        """Whether a completion's card, 61.1, 61.2 and 37 name ``held`` (risk.md: 61.1
        and 61.2 when not zero, 37 when sent); the card is compared once."""
        if ref.batch and ref.batch.strip("0") and ref.batch != held.batch:
            return False
        if ref.stan and ref.stan.strip("0") and ref.stan != held.stan:
            return False
        if ref.rrn is not None and ref.rrn != held.rrn:
            return False
        if held.rrn in self._card_matched:
            return True
        if self._lookup is None:  # the record's own, computed once (_make_record's)
            self._lookup = self.cards.lookup(pan)
        if held.pan_hmac == self._lookup or self.cards.matches(pan, held.pan_hmac):
            self._card_matched.add(held.rrn)
            return True
        return False

    def _on_waiting_for_first(self, event: Event | Start, step: _Step) -> Phase:
        assert self.first is not None and isinstance(event, FirstFinished)
        if event.record is not None:  # as the book holds it now (taken in as it was read)
            self.first = event.record
        return self._answer(step, self._first_answer(self.first))

    def _on_loading_original(self, event: Event | Start, step: _Step) -> Phase:
        if not isinstance(event, OriginalLoaded):
            return self._not_loaded(event, step)
        # The records read are in the book (taken in as they were read): searched there.
        return self._admit(step)

    def _not_loaded(self, event: Event | Start, step: _Step) -> Phase:
        """A read from the journal that did not come back: answered."""
        if isinstance(event, Refused):
            return self._answer(step, Outcome(code="91", message=event.reason, shed=True))
        assert isinstance(event, JournalFailed)
        return self._answer(step, self._journal_failure(event))

    def _admit(self, step: _Step) -> Phase:
        self._check()
        step.actions.append(Admit())
        return "admitting"

    def _on_admitting(self, event: Event | Start, step: _Step) -> Phase:
        if isinstance(event, Refused):
            return self._answer(step, Outcome(code="91", message=event.reason, shed=True))
        # Looked at again now that it holds a slot: a first may have arrived meanwhile.
        repeat = self._answer_repeat(step)
        if repeat is not None:
            return repeat
        try:
            self.rrn = self.allocate_rrn(self.stamp)
        except RrnExhausted as exc:
            raise TransactionRefused("96", str(exc)) from None
        assert isinstance(event, Admitted)
        self._resolve(event.open_circuits, step)
        if self.on_ledger:
            self._assess(step)  # the rules' request; the ledger names its customer
            return self._to_ledger(step)
        if self._in_switch is not None:
            return self._void_in_switch(step, self._in_switch)
        declined = self._assess(step)
        if declined is not None:
            return declined
        assert self.bank is not None
        step.actions.append(AcquireLink(self.bank))
        return "waiting_for_link"

    def _answer_repeat(self, step: _Step) -> Phase | None:
        """A POS request that repeats one the bank has seen (same terminal, merchant,
        batch, STAN, date and MTI) gets the first's answer; the bank sees it once. One
        asking something else under that identity is refused 94. None: no repeat."""
        first = self._repeated()
        if first is None:
            return None
        self.first = first
        if self.in_flight(first.rrn):
            step.actions.append(AwaitFirst(first.rrn))
            return "waiting_for_first"
        if first.state == "sending":  # at another worker's bank, or its in doubt
            step.actions.append(AwaitFirst(first.rrn, elsewhere=True))
            return "waiting_for_first"
        return self._answer(step, self._first_answer(first))

    def _repeat_key(self) -> RequestKey | None:
        """A POS request's identity, which a repeat shares (None: not a POS request)."""
        request = self.request
        if request.acceptor.channel != "pos" or request.card is None:
            return None  # online repeats are the idempotency book's
        acceptor = request.acceptor
        return (
            acceptor.terminal_id, acceptor.merchant_id, request.batch, request.stan,
            self.stamp.local_date, request.request_mti,
        )  # fmt: skip

    def _repeated(self) -> TxnRecord | None:
        request = self.request
        key = self._repeat_key()
        if key is None or request.card is None:
            return None
        first = self.book.by_request(key)
        if first is None or first.state == "not_sent":
            return None  # unseen, or never reached a bank: safe to process (again)
        if first.request_digest is None or not self.cards.matches(
            _digest_text(request, request.card.pan), first.request_digest
        ):
            raise TransactionRefused("94", "duplicate transmission with different content")
        return first

    def _first_answer(self, first: TxnRecord) -> Outcome:
        return Outcome(
            code=first.code or "96",
            rrn=first.rrn,
            auth_code=first.auth_code,
            balance=first.balance,
            bank=first.bank,
            route="duplicate",
            bank_stan=first.sent.stan if first.sent else None,
            settlement_date=first.business_date or None,
        )

    def _original_to_load(self) -> LoadOriginal | None:
        """The book is a bounded cache of recent transactions: an original it does not
        hold is read back from the journal."""
        request = self.request
        if self.product.original not in ("reference", "authorisation"):
            return None
        ref, merchant_id = original_of(request), request.acceptor.merchant_id
        # On a shared journal another worker may have voided or refunded it since.
        shared = self.book.shared
        if self.product.original == "authorisation" and ref.online_id is None:
            if ref.auth_code is None or ref.date is None:
                return None  # refused by the rules
            if shared or not self.book.by_authorisation(merchant_id, ref.auth_code, ref.date):
                return LoadOriginal(
                    merchant_id=merchant_id, authorisation=(ref.auth_code, ref.date)
                )
            return None
        if ref.rrn is not None:
            if shared or self.book.by_rrn(ref.rrn) is None:
                return LoadOriginal(rrn=ref.rrn)
        elif ref.online_id is not None and (
            shared or self.book.by_online_id(merchant_id, ref.online_id) is None
        ):
            return LoadOriginal(merchant_id=merchant_id, online_id=ref.online_id)
        return None

    # -- admitted: the rules, the record -------------------------------------------------

    def _resolve(self, open_circuits: frozenset[str], step: _Step) -> None:
        """Routes the request (to its card's bank, or its original's), applies the rules
        on originals and reserves what it voids or refunds (``Reserve``), and makes its
        record (``Keep``)."""
        request, product = self.request, self.product
        if product.original == "none":
            assert request.card is not None and request.amount is not None
            pan = request.card.pan
            if self.on_ledger:
                self.route_name, self.bank = LEDGER_ROUTE, products.LEDGER_BANK
            else:
                # A hold is its card's own bank's: never a route's secondary (risk.md).
                if product.holds or product.own_bank:
                    route = self.route(pan, secondary=False)
                elif open_circuits:  # a secondary bank is chosen only with one open
                    route = self.route(pan, open_circuits=open_circuits)
                else:
                    route = self.route(pan)
                self.route_name, self.bank = route
            amount = request.amount
        else:
            original = self._found_again()
            product = self._on_ledger_if(original)
            if (
                original.stand_in is not None
                and original.advice != "accepted"
                and _undone_in_switch(product.reserves, original.advice)
            ):
                self._in_switch = original
            if original.rrn in self._card_matched:
                pan = request.card.pan  # type: ignore[union-attr]  # its look-up HMAC matched
            else:
                try:
                    pan = self.cards.open(original.pan_sealed)
                except CardDataUnreadable as exc:
                    raise TransactionRefused("96", str(exc), field="original") from None
                if request.card is not None and request.card.pan != pan:
                    raise TransactionRefused("25", "card differs from the original's", field="pan")
            amount = original.amount if request.amount is None else request.amount
            reserve = self.book.check_reserve(product, original, amount)
            if reserve is not None:
                step.booked.append(reserve)
            self.original = original
            self.route_name, self.bank = "original", original.bank
            self._resolved = msgspec.structs.replace(
                request,
                card=request.card or Card(pan=pan),
                amount=amount,
                currency=request.currency or original.currency,
            )
        self.record = self._make_record(pan, amount)
        if product.holds:
            expiry_days, max_pct = self.hold_terms
            until = last_completion_date(self.business_date, expiry_days)
            self.record.hold_until, self.record.hold_max_pct = until, max_pct
        step.booked.append(Keep(self.record))

    def _assess(self, step: _Step) -> Phase | None:
        """The risk rules (risk.md), once routed and any original found, before a bank:
        whether a rule declined it (then its row is journaled, declined with the rule's
        code and id, and nothing goes to a bank)."""
        risk, kind, record = self.risk, self.product.risk_kind, self.record
        if risk is None or kind is None or record is None or not risk.rules.rules:
            return None
        request = self._resolved
        assert request.card is not None
        completion = self.product.original == "authorisation"  # blocklists only
        if self.on_ledger:  # evaluated on the ledger once its code names the customer
            self._onus_risk = risk.onus_request_of(request, kind, self.mcc, completion=completion)
            return None
        verdict = self.verdict = risk.evaluate(
            risk.request_of(request, request.card.pan, kind, self.mcc, completion=completion),
            self.received,
            record,
        )
        if not verdict.declined:
            return None
        assert verdict.code is not None
        step.booked.append(Settle(record, "declined", verdict.code))
        step.actions.append(Journal((_started(step.preview(self.book).copy(record), self.now),)))
        return "journaling_decline"

    def _on_journaling_decline(self, event: Event | Start, step: _Step) -> Phase:
        verdict = self.verdict
        assert verdict is not None and verdict.code is not None
        if isinstance(event, FirstElsewhere):
            return self._first_elsewhere(step)
        outcome = Outcome(
            code=verdict.code, message=RISK_MESSAGES.get(verdict.code, "declined"),
            rrn=self.rrn, bank=self.bank, route=self.route_name,
        )  # fmt: skip
        if isinstance(event, JournalFailed):  # declined all the same: nothing was sent
            outcome = msgspec.structs.replace(outcome, detail=f"not journaled: {event.error}")
        return self._answer(step, outcome)

    def _make_record(self, pan: str, amount: int) -> TxnRecord:
        request = self._resolved
        acceptor = request.acceptor
        assert request.currency is not None and self.bank is not None and self.rrn is not None
        card = request.card
        return TxnRecord(
            kind=self.product.kind,
            rrn=self.rrn,
            bank=self.bank,
            channel=acceptor.channel,
            request_mti=request.request_mti,
            terminal_id=acceptor.terminal_id,
            merchant_id=acceptor.merchant_id,
            stan=request.stan,
            batch=request.batch,
            local_date=self.stamp.local_date,
            business_date=self.business_date,
            pan_masked=card.masked_pan if card else "",
            pan_hmac=self._lookup if self._lookup is not None else self.cards.lookup(pan),
            pan_sealed=self.cards.seal(pan),
            amount=amount,
            currency=request.currency,
            bank_processing_code=request.processing_code,
            online_id=request.online_id,
            request_digest=self.cards.digest(_digest_text(request, pan)),
            original_rrn=self.original.rrn if self.original is not None else None,
            received_at=self.received,
            device_id=request.device_id,
        )

    # -- the bank path ---------------------------------------------------------------

    def _on_waiting_for_link(self, event: Event | Start, step: _Step) -> Phase:
        record = self.record
        assert record is not None
        if isinstance(event, Refused):
            if event.unavailable is not None:
                stood = self._stand_in_unsent(step, event.unavailable, event.reason)
                if stood is not None:
                    return stood
            self._settle_in_memory(step, "not_sent", "91")
            return self._answer(step, Outcome(code="91", message=event.reason, rrn=self.rrn))
        assert isinstance(event, LinkGranted)
        mti, fields = bankmsg.bank_request(
            self._resolved,
            BankTrace(stan=event.stan, rrn=record.rrn, stamp=self.stamp),
            self.institution,
            self.original.sent if self.original is not None else None,
            mcc=self.mcc,
            original_auth=(
                self.original.auth_code
                if self.original is not None and self.product.sends_original_auth
                else None
            ),
        )
        pin = self._translated_pin(event, fields, step)
        encoded = None
        if event.encode is not None:
            try:
                encoded = event.encode(mti, fields)
            except MessageEncodeError as exc:
                # A value this bank's dialect cannot carry (a merchant id in full-width
                # letters, say): refused before anything is written or sent, and never
                # a verdict on the bank.
                step.actions.append(ReleaseLink(answered=None))
                self._settle_in_memory(step, "not_sent", "30")
                field = str(exc.field) if exc.field is not None else None
                raise TransactionRefused(
                    "30", f"bank {self.bank} cannot take it: {exc}", field=field
                ) from None
        sent = OriginalData(mti=mti, stan=event.stan, transmission=self.stamp.transmission)
        step.booked.append(MarkSent(record, str(fields[3]), sent))
        self._exchange = SendToBank(mti, fields, encoded, pin)
        # On disk before it leaves: after a crash it is known, and reversed.
        step.actions.append(Journal((_started(step.preview(self.book).copy(record), self.now),)))
        return "journaling_request"

    def _translated_pin(
        self, event: LinkGranted, fields: dict[int, str | bytes], step: _Step
    ) -> PinToSend | None:
        """The request's PIN under the link's ZPK in 52, with 53 (security.md); 99 (or
        30 for a block of the wrong size) refuses it with nothing written or sent. A
        block that cannot be translated (no security module) is never sent."""
        card = self._resolved.card
        fields.pop(52, None)
        if card is None or card.pin_block is None or card.pin_key is None:
            return None
        if event.translate_pin is None:
            return None
        try:
            translated, zpk = event.translate_pin(card.pin_key, card.pin_block, card.pan)
        except (SecurityError, RemoteProtocolError) as exc:
            step.actions.append(ReleaseLink(answered=None))
            code = "30" if isinstance(exc, PinBlockFieldError) else exc.response_code
            self._settle_in_memory(step, "not_sent", code)
            field = str(exc.field) if isinstance(exc, PinBlockFieldError) else "52"
            raise TransactionRefused(code, "PIN block error", field=field) from None
        fields[52] = translated
        fields[53] = BANK_SECURITY_CONTROL
        return PinToSend(card.pin_block, card.pin_key, card.pan, translated, zpk)

    def _on_journaling_request(self, event: Event | Start, step: _Step) -> Phase:
        if isinstance(event, Journaled) and self.on_ledger:
            return self._at_ledger(step)
        if isinstance(event, JournalFailed):
            self._release_link(step)
            self._settle_in_memory(step, "not_sent", "96")
            return self._answer(step, self._journal_failure(event))
        if isinstance(event, FirstElsewhere):
            self._release_link(step)
            return self._first_elsewhere(step)
        assert self._exchange is not None
        step.actions.append(self._exchange)
        return "at_bank"

    def _first_elsewhere(self, step: _Step) -> Phase:
        """Another worker journaled this request first (a terminal that reconnected
        sent it there too): nothing was sent, nothing written. It has given its slot
        back; it undoes what it reserved, leaves the book (its RRN is not used again)
        and is answered as the repeat of that first, read from the journal."""
        record = self.record
        assert record is not None
        self._settle_in_memory(step, "not_sent", None)
        step.booked.append(Forget(record))
        self.record = None
        acceptor, request = self.request.acceptor, self.request
        step.actions.append(LoadOriginal(
            trace=(acceptor.terminal_id, acceptor.merchant_id, request.batch, request.stan),
            only_key=self._repeat_key(),
        ))  # fmt: skip
        return "loading_first"

    def _on_loading_first(self, event: Event | Start, step: _Step) -> Phase:
        """The first the journal named when it refused this request, read by its trace
        (the latest request the terminal sent with this batch and STAN)."""
        if not isinstance(event, OriginalLoaded):
            return self._not_loaded(event, step)
        # The first read is in the book if it is of this identity (``only_key``).
        repeat = self._answer_repeat(step)
        if repeat is not None:
            return repeat
        # Refused as a repeat, yet no first that reached a bank is found now: sent
        # nowhere, so the terminal may send it again.
        return self._answer(step, Outcome(
            code="96", message="system malfunction",
            detail="refused by the journal as a repeat, but its first is not found",
            bank=self.bank, route=self.route_name,
        ))  # fmt: skip

    def _on_at_bank(self, event: Event | Start, step: _Step) -> Phase:
        """The bank's answer, or why there is none, settles the transaction."""
        record = self.record
        assert record is not None and record.sent is not None
        base = Outcome(
            code="68", rrn=record.rrn, bank=record.bank, route=self.route_name,
            bank_stan=record.sent.stan, settlement_date=self.business_date or None,
        )  # fmt: skip
        state: State = "no_answer"  # it may be at the bank: without a final answer, reversed
        verdict: bool | None = False
        match event:
            case BankAnswered(mti=mti, fields=fields):
                outcome, final = _bank_answer(base, mti, self.product.bank_response_mti, fields)
                if final:
                    state = "approved" if outcome.approved else "declined"
                verdict = True
            case BankTimedOut():
                outcome = msgspec.structs.replace(base, message="issuer did not answer in time")
            case LinkLost(reason=reason):
                outcome = msgspec.structs.replace(base, code="91", message=reason)
            case NotSent(reason=reason):
                state, verdict = "not_sent", None
                outcome = msgspec.structs.replace(base, code="91", message=reason)
            case Stopped():
                outcome = msgspec.structs.replace(
                    base, code="96", message="switch stopped before the bank answered"
                )
            case _:
                raise LocalProtocolError(f"{type(event).__name__} at the bank")
        step.actions.append(ReleaseLink(answered=verdict))
        if self.product.holds and state == "approved":
            outcome = msgspec.structs.replace(outcome, hold_until=record.hold_until)
        if state == "declined" and outcome.code == "91":
            outcome, state = self._stand_in_after_91(outcome, state, step)
        self._outcome = outcome
        self._state = state
        durable = True if outcome.stand_in is not None else None  # its advice queued
        step.actions.append(Journal(self._settlement(outcome, state, step), durable=durable))
        return "journaling_answer"

    def _settlement(self, outcome: Outcome, state: State, step: _Step) -> tuple[Change, ...]:
        """The changes of a settled transaction, committed together: the record, its
        original, the reversal of what got no final answer, and the channel's own; the
        book's (``Settle``, ``MarkReversed``, ``MoveHold``) on ``step``."""
        record = self.record
        assert record is not None
        now = self.now
        settle = Settle(record, state, outcome.code, outcome.auth_code, outcome.balance)
        step.booked.append(settle)
        changes: list[Change] = []
        if state == "no_answer" and self.product.reversed_on_no_answer:
            reason = f"no final answer ({outcome.code})"
            changes.extend(_queue_reversal(self.book, record, reason, now, step.booked)[0])
            self._reversal_queued = True
        view = step.preview(self.book)
        detail = outcome.message or None
        if self._not_stood_in is not None:
            detail = f"{detail or '91'}; not stood in: {self._not_stood_in}"
        changes.append(TxnUpdated.of(view(record), now, detail))
        if outcome.stand_in is not None:
            changes.append(self._advice_queued(outcome.stand_in))
        touched = view.original(settle)
        if touched is not None:  # the original's history names what happened to it
            changes.append(TxnUpdated.of(touched, now, _effect_on_original(view(record), state)))
            changes.extend(_hold_moved(self.book, touched, now, step.booked))
        if self.finalize is not None and state != "not_sent":
            changes.extend(self.finalize(outcome))
        if (
            state == "approved" and self.risk is not None and self.original is not None
            and self.product.reserves == "whole"
        ):  # a void: its original leaves the risk rules' approved windows
            self.risk.remove(self.original, now)
        return tuple(changes)

    def _on_journaling_answer(self, event: Event | Start, step: _Step) -> Phase:
        outcome, record = self._outcome, self.record
        assert outcome is not None and record is not None
        if self.on_ledger:
            return self._ledger_answer_journaled(event, step)
        if isinstance(event, JournalFailed) and event.cap_taken and self._bank_91 is not None:
            # Other workers' stand-ins took the caps first: the bank's 91, not stood in.
            self._stand_in_refused_at_commit(step)
            outcome, self._bank_91 = self._bank_91, None
            self._outcome, self._state = outcome, "declined"
            step.actions.append(Journal(self._settlement(outcome, "declined", step)))
            return "journaling_answer"
        if isinstance(event, JournalFailed):
            self._stand_in_not_journaled()
            if self._state in ("approved", "no_answer"):
                if not record.reversed:
                    step.booked.append(MarkReversed(record))
                step.booked.append(MarkState(record, "no_answer", record.code))
                step.actions.append(ReverseUnjournaled(
                    step.preview(self.book).copy(record), "answer not journaled: " + event.error
                ))  # fmt: skip
            return self._answer(step, self._journal_failure(event))
        if self._reversal_queued:
            step.actions.append(NudgeReversals(record.bank))
        return self._answer(step, outcome)

    # -- on the ledger (wallet.md) -----------------------------------------------------

    def _original_kinds(self) -> tuple[str, ...]:
        """The kinds of original it may act on: its row's, and, for a request that
        carries no card (an online void or refund: by id), its on-us twin's."""
        twin = products.LEDGER_TWINS.get(self.product.kind)
        if twin is None or self.request.card is not None:
            return self.product.original_kinds
        if self.request.acceptor.channel != "pos" and original_of(self.request).rrn:
            return twin.original_kinds  # online by RRN: an on-us payment only (wallet.md)
        return self.product.original_kinds + twin.original_kinds

    def _on_ledger_if(self, original: TxnRecord) -> products.Product:
        """An original on the ledger makes the request its on-us twin (wallet.md)."""
        twin = products.LEDGER_TWINS.get(self.product.kind)
        if twin is not None and not self.on_ledger and original.kind in twin.original_kinds:
            self.product, self.on_ledger = twin, True
        return self.product

    def _release_link(self, step: _Step) -> None:
        if not self.on_ledger:  # a ledger product never holds a link slot
            step.actions.append(ReleaseLink(answered=None))

    def _to_ledger(self, step: _Step) -> Phase:
        """Admitted: journaled first, as a card's request before its bank (a repeat a
        shared journal refuses is answered as the first's before its code is looked at)."""
        record = self.record
        assert record is not None
        step.actions.append(Journal((TxnStarted.of(record, self.now),)))
        return "journaling_request"

    def _at_ledger(self, step: _Step) -> Phase:
        """The request is journaled: a sale's code taken and its payment checked and
        reserved, in one step; a void's or refund's compensating transfer reserved."""
        record, original = self.record, self.original
        assert record is not None
        key = record_key(record)
        if original is None:
            step.actions.append(PostToLedger(payment_step(
                self.request, record, key, self.stamp.local.date().isoformat(),
                risk=self._onus_risk, received=self.received if self._onus_risk else 0.0,
                holds=self.product.holds,
            )))  # fmt: skip
        elif onus_hold.acts_on_hold(self.product, original):  # risk.md, "On-us funding"
            step.actions.append(PostToLedger(onus_hold.receipt_step(
                self.product, record, original, key, record_key(original),
                self.stamp.local.date().isoformat(), risk=self._onus_risk,
                received=self.received if self._onus_risk else 0.0,
            )))  # fmt: skip
        elif (refund := onus_hold.refund_step(record, original, key)) is not None:
            step.actions.append(PostToLedger(refund))
        else:
            step.actions.append(PostToLedger(ReserveBack(
                original=record_key(original), key=key, amount=record.amount,
                kind=key.leg, rrn=record.rrn, merchant_id=record.merchant_id,
            )))  # fmt: skip
        return "at_ledger"

    def _on_at_ledger(self, event: Event | Start, step: _Step) -> Phase:
        """The ledger's verdict settles the transaction, as a bank's answer would. A code
        not open (14) or the probe limit (65) reserved nothing; an open one was used,
        and its funding is in the answer (63.1)."""
        assert isinstance(event, LedgerAnswered)
        if self.original is None:
            self._code = event if event.funding is not None else None
            self._reserved = event.funding is not None
            if self.record is not None and event.customer_id is not None:
                risk = None
                if event.verdict is not None:  # the rules ran on the ledger (risk.md)
                    self.verdict = event.verdict
                    verdict = event.verdict  # what the journal keeps of it (RiskGate.mark)
                    risk = verdict.journal_fields() if verdict.version else None
                step.booked.append(
                    MarkCustomer(self.record, event.customer_id, event.funding, risk)
                )
        elif self.record is not None and event.customer_id is not None:  # a completion
            risk = None
            if event.verdict is not None:
                self.verdict = verdict = event.verdict
                risk = verdict.journal_fields() if verdict.version else None
            step.booked.append(MarkCustomer(self.record, event.customer_id, event.funding, risk))
        self._rehold = bool(event.rehold)
        step.actions.append(self._settle_on_ledger(event, step))
        return "journaling_answer"

    def _settle_on_ledger(self, event: LedgerAnswered, step: _Step) -> Journal:
        assert self.record is not None
        outcome = Outcome(
            code=event.code, message=event.message or ("approved" if event.ok else ""),
            detail=event.detail, rrn=self.record.rrn, bank=self.bank, route=self.route_name,
            settlement_date=self.business_date or None,
            auth_code=event.auth_code if event.ok else None,
            funding=(self._code.funding if self._code is not None
                     else (event.funding or "wallet") if self.original is not None else None),
            plan=event.plan if event.ok else None,
            balance_after=event.balance_after if event.ok else None,
        )  # fmt: skip
        state: State = "approved" if event.ok else "declined"
        if self.product.holds and event.ok:  # risk.md: its last completion date
            outcome = msgspec.structs.replace(outcome, hold_until=self.record.hold_until)
        self._outcome, self._state = outcome, state
        changes = self._settlement(outcome, state, step)
        if event.ok and event.rehold is False:
            changes = (*changes, *self._hold_ended(self.original, step))
        assert step.view is not None
        record = step.view(self.record)
        if record.customer_id is not None:  # the rules' keys and what they decided
            changes = (*changes, RiskMarked.of(record, self.now))
        return Journal(changes)

    def _hold_ended(self, completion: TxnRecord | None, step: _Step) -> list[Change]:
        """A completion undone whose funds are gone: its pre-authorisation ends
        ``voided`` rather than ``open`` (risk.md, "On-us funding")."""
        if completion is None or completion.original_rrn is None:
            return []
        return _hold_voided(completion.original_rrn, self.now, step.booked)

    def _ledger_answer_journaled(self, event: Event | Start, step: _Step) -> Phase:
        """The answer journaled: the pending transfer is posted (approved) or voided; the
        answer leaves once that is done. Not journaled: voided, answered 96 (the journal
        still says ``sending``: a restart settles it as no answer, and voids again)."""
        record, outcome = self.record, self._outcome
        assert record is not None and outcome is not None
        approved = self._state == "approved"
        if isinstance(event, JournalFailed):
            if approved:
                step.booked.append(MarkReversed(record))
            step.booked.append(MarkState(record, "no_answer", record.code))
            approved = False
            self._final = self._journal_failure(event)
        else:
            self._final = outcome
        if not self._reserved:  # a code not open: nothing on the ledger to end
            return self._answer(step, self._final)
        key = record_key(record)
        original = self.original
        if original is None and self.product.holds and approved:
            return self._answer(step, self._final)  # the hold stands while open
        if onus_hold.acts_on_hold(self.product, original):
            assert original is not None
            end = onus_hold.end_step(
                self.product, record, original, key, record_key(original), approved=approved,
                rehold=self._rehold,
            )  # fmt: skip
            if end is None:
                return self._answer(step, self._final)
            step.actions.append(PostToLedger(end))
            return "ending_ledger"
        step.actions.append(PostToLedger(EndTransfer(
            key=key, approved=approved, payment=self.original is None,
            uncount=(record_key(self.original)
                     if approved and self.product.reserves == "whole" and self.original
                     else None),
            qr_id=self._code.qr_id if self._code is not None else None,
        )))  # fmt: skip
        return "ending_ledger"

    def _on_ending_ledger(self, event: Event | Start, step: _Step) -> Phase:
        assert isinstance(event, LedgerAnswered) and self._final is not None
        if not event.ok and self._final.approved:
            # Journaled as approved, yet not posted: not answered 00 (the terminal
            # reverses, which voids the pending transfer; a restart posts it otherwise).
            return self._answer(step, Outcome(
                code="96", message="system malfunction", rrn=self.rrn, bank=self.bank,
                route=self.route_name,
                detail=f"ledger post failed: {event.detail or event.message}",
            ))  # fmt: skip
        return self._answer(step, self._final)

    # -- stand-in (risk.md, "Stand-in processing (STIP)") ---------------------------

    def _stand_in_request(self) -> StandInRequest | None:
        record, request = self.record, self._resolved
        if record is None or request.card is None or request.currency is None:
            return None
        try:
            business_date = date.fromisoformat(self.business_date)
        except ValueError:
            return None
        card = request.card
        return StandInRequest(
            kind=self.product.kind, channel=record.channel, pan=card.pan,
            card_key=record.pan_hmac, amount=record.amount, currency=request.currency,
            expiry=card.expiry, has_pin=card.pin_block is not None, has_chip=card.chip,
            mcc=self.mcc, local_date=record.local_date, business_date=business_date,
            rrn=record.rrn,
        )  # fmt: skip

    def _decide_stand_in(self, why: StandInReason) -> StandIn | NoStandIn | None:
        """None: stand-in is off for the bank (the request is answered as ever)."""
        desk, bank = self.stand_in, self.bank
        if desk is None or bank is None or not desk.enabled(bank):
            return None
        wanted = self._stand_in_request()
        if wanted is None:
            return NoStandIn("not a card sale")
        verdict = desk.decide(bank, wanted, why)
        if isinstance(verdict, StandIn):
            self._stood_in = wanted
        else:
            self._not_stood_in = verdict.reason
        return verdict

    def _stood_in_outcome(self, why: StandInReason, base: Outcome) -> Outcome:
        record = self.record
        assert record is not None
        return msgspec.structs.replace(
            base, code="00", message="", detail=None, rrn=record.rrn, bank=record.bank,
            auth_code=stand_in_auth_code(record.rrn), route=self.route_name,
            settlement_date=self.business_date or None, stand_in=why,
        )  # fmt: skip

    def _stand_in_unsent(self, step: _Step, why: StandInReason, reason: str) -> Phase | None:
        """The bank's circuit is open or no link of it is signed on: the sale is stood
        in (journaled approved, its advice queued) or, stand-in being on for the bank,
        its refusal journaled with why. None: stand-in is off, answered as ever."""
        verdict = self._decide_stand_in(why)
        if verdict is None:
            return None
        record = self.record
        assert record is not None
        self._unsent = reason
        if isinstance(verdict, NoStandIn):
            step.booked.append(Settle(record, "not_sent", "91"))
            self._outcome = Outcome(code="91", message=reason, rrn=self.rrn, bank=self.bank,
                                    route=self.route_name)  # fmt: skip
            settled = step.preview(self.book).copy(record)
            step.actions.append(Journal((
                _started(settled, self.now),
                TxnUpdated.of(settled, self.now, f"{reason}; not stood in: {verdict.reason}"),
            )))  # fmt: skip
            return "journaling_stand_in"
        outcome = self._stood_in_outcome(why, Outcome(code="00"))
        step.booked.append(Settle(record, "approved", "00", outcome.auth_code))
        step.booked.append(MarkStoodIn(record, why))
        self._outcome, self._state = outcome, "approved"
        changes: list[Change] = [
            _started(step.preview(self.book).copy(record), self.now),
            self._advice_queued(why),
        ]
        if self.finalize is not None:
            changes.extend(self.finalize(outcome))
        step.actions.append(Journal(tuple(changes), durable=True))
        return "journaling_stand_in"

    def _advice_queued(self, why: str) -> AdviceQueued:
        record, card = self.record, self._resolved.card
        assert record is not None and card is not None
        caps = self.stand_in.claimed_caps(record.bank) if self.stand_in is not None else None
        return AdviceQueued(
            rrn=record.rrn, bank=record.bank, reason=why, at=self.now,
            local_time=self.stamp.local_time, entry_mode=card.entry_mode,
            condition_code=card.condition_code, mcc=self.mcc, caps=caps,
        )  # fmt: skip

    def _void_in_switch(self, step: _Step, original: TxnRecord) -> Phase:
        """risk.md: a stood-in sale whose advice was never sent (it is cancelled) or was
        refused (the loss is cancelled) is voided in the switch, answered 00."""
        record = self.record
        assert record is not None
        settle = Settle(record, "approved", "00")
        step.booked.append(settle)
        view = step.preview(self.book)
        touched = view.original(settle)
        self._outcome = Outcome(
            code="00", rrn=record.rrn, bank=record.bank, route=self.route_name,
            settlement_date=self.business_date or None,
        )  # fmt: skip
        self._state = "approved"
        why = "its advice not sent: cancelled" if original.advice == "queued" else (
            "its advice refused: the loss cancelled"
        )  # fmt: skip
        settled = view.copy(record)
        changes: list[Change] = [
            _started(settled, self.now),
            TxnUpdated.of(settled, self.now, f"voided in the switch: stood in, {why}"),
        ]
        if touched is not None:
            changes.append(TxnUpdated.of(touched, self.now, f"voided in the switch by void RRN "
                                                             f"{record.rrn} ({why})"))
        if self.finalize is not None:
            changes.extend(self.finalize(self._outcome))
        if self.stand_in is not None:
            self.stand_in.undone(original)
        if self.risk is not None:  # the void takes its original out of the windows
            self.risk.remove(original, self.now)
        step.actions.append(Journal(tuple(changes), durable=True))
        return "journaling_stand_in"

    def _on_journaling_stand_in(self, event: Event | Start, step: _Step) -> Phase:
        outcome = self._outcome
        assert outcome is not None
        if isinstance(event, JournalFailed) and self._in_switch is not None:
            # Nothing written: the sale stands as it was, the terminal may try again.
            step.booked.append(Unvoid(self._in_switch))
            if self.stand_in is not None:
                self.stand_in.redone(self._in_switch)
            return self._answer(step, self._journal_failure(event))
        if isinstance(event, JournalFailed) and event.cap_taken and outcome.stand_in is not None:
            # Other workers' stand-ins took the caps first: 91, not stood in, journaled.
            self._stand_in_refused_at_commit(step)
            record = self.record
            assert record is not None
            step.booked.append(Settle(record, "not_sent", "91"))
            self._state = "not_sent"
            self._outcome = Outcome(code="91", message=self._unsent, rrn=self.rrn,
                                    bank=self.bank, route=self.route_name)  # fmt: skip
            settled = step.preview(self.book).copy(record)
            step.actions.append(Journal((
                _started(settled, self.now),
                TxnUpdated.of(settled, self.now,
                              f"{self._unsent}; not stood in: {self._not_stood_in}"),
            )))  # fmt: skip
            return "journaling_stand_in"
        if isinstance(event, JournalFailed) and outcome.stand_in is not None:
            # Nothing was sent and nothing written: 96, the terminal may try again.
            self._stand_in_not_journaled()
            self._settle_in_memory(step, "not_sent", "96")
            return self._answer(step, self._journal_failure(event))
        return self._answer(step, outcome)

    def _stand_in_after_91(
        self, outcome: Outcome, state: State, step: _Step
    ) -> tuple[Outcome, State]:
        """The bank answered 91: it did not act. A sale may be stood in."""
        verdict = self._decide_stand_in("bank_91")
        if not isinstance(verdict, StandIn):
            return outcome, state
        record = self.record
        assert record is not None
        step.booked.append(MarkStoodIn(record, "bank_91"))
        self._bank_91 = outcome
        return self._stood_in_outcome("bank_91", outcome), "approved"

    def _stand_in_refused_at_commit(self, step: _Step) -> None:
        """The journal refused the stood-in approval (``JournalFailed.cap_taken``): as
        if it had been refused for its caps when decided (``MarkStoodIn`` of None)."""
        wanted, desk, record = self._stood_in, self.stand_in, self.record
        assert record is not None
        if wanted is not None and desk is not None and self.bank is not None:
            desk.refused_at_commit(self.bank, wanted)
            self._stood_in = None
        step.booked.append(MarkStoodIn(record, None))
        self._not_stood_in = CAPS_TAKEN

    def _stand_in_not_journaled(self) -> None:
        wanted, desk = self._stood_in, self.stand_in
        if wanted is not None and desk is not None and self.bank is not None:
            desk.undo(self.bank, wanted)
            self._stood_in = None

    # -- answers -----------------------------------------------------------------------

    def _settle_in_memory(self, step: _Step, state: State, code: str | None) -> None:
        """A record that never went further than the switch: settled in the book (which
        releases what it reserved), never journaled."""
        if self.record is not None:
            step.booked.append(Settle(self.record, state, code))

    def _journal_failure(self, event: JournalFailed) -> Outcome:
        return Outcome(
            code="96", message="system malfunction", detail=event.error, rrn=self.rrn,
            bank=self.bank, route=self.route_name,
        )  # fmt: skip

    def _refusal(self, exc: TransactionRefused) -> Outcome:
        return Outcome(code=exc.response_code, message=str(exc), field=exc.field, rrn=self.rrn)

    def _answer(self, step: _Step, outcome: Outcome) -> Literal["answered"]:
        verdict = self.verdict
        if verdict is not None:
            if verdict.hold is not None and not (outcome.approved and self._state == "approved"):
                assert self.risk is not None  # declined, timed out, not sent: it goes
                self.risk.release(verdict.hold, self.now)
            if verdict.hits:
                fields = verdict.log_fields()
                outcome = msgspec.structs.replace(
                    outcome, risk_rule=fields.get("risk_rule"),
                    risk_review=fields.get("risk_review"), risk_shadow=fields.get("risk_shadow"),
                )  # fmt: skip
        if outcome.settlement_date is None and self.business_date:
            # Every financial answer names its date, declines and refusals included.
            outcome = msgspec.structs.replace(outcome, settlement_date=self.business_date)
        step.actions.append(Answer(outcome))
        return "answered"


Handler = Callable[[BankTransaction, "Event | Start", _Step], Phase]
HANDLERS: Final[dict[Phase, Handler]] = {
    "received": BankTransaction._on_received,
    "waiting_for_first": BankTransaction._on_waiting_for_first,
    "loading_original": BankTransaction._on_loading_original,
    "admitting": BankTransaction._on_admitting,
    "journaling_decline": BankTransaction._on_journaling_decline,
    "waiting_for_link": BankTransaction._on_waiting_for_link,
    "journaling_request": BankTransaction._on_journaling_request,
    "loading_first": BankTransaction._on_loading_first,
    "at_bank": BankTransaction._on_at_bank,
    "journaling_answer": BankTransaction._on_journaling_answer,
    "journaling_stand_in": BankTransaction._on_journaling_stand_in,
    "at_ledger": BankTransaction._on_at_ledger,
    "ending_ledger": BankTransaction._on_ending_ledger,
}
"""Each phase's handler: given the event, it chooses among the phases the table allows
(the guard of a row with more than one), appends the step's actions and returns its
choice, which :meth:`BankTransaction._step` assigns. ``answered`` expects nothing."""


def _undone_in_switch(reserves: str, advice: str | None) -> bool:
    """risk.md's table for a stood-in sale whose advice is not accepted: whether its void
    is done in the switch (True); else refused here (91; a refund of a refused one 12)."""
    if reserves == "whole" and advice in ("queued", "refused"):
        return True
    if reserves != "whole" and advice == "refused":
        raise TransactionRefused("12", "its stood-in sale was refused by its bank")
    raise TransactionRefused("91", "its stood-in sale's advice has no answer from its bank yet")


def _bank_answer(
    base: Outcome, mti: str, expected_mti: str, fields: dict[int, str | bytes]
) -> tuple[Outcome, bool]:
    """The outcome of a bank's answer, and whether it is a final one. An answer of the
    wrong message type, or without a valid 39, says nothing of what the bank did with
    the request: no final answer (96), so it is reversed."""
    if mti != expected_mti:
        return msgspec.structs.replace(
            base, code="96", message=f"bank answered {mti} to a {base_mti(expected_mti)}"
        ), False
    answer = bankmsg.outcome_from_bank(fields, rrn=base.rrn or "", bank=base.bank or "")
    if answer is None:
        return msgspec.structs.replace(
            base, code="96", message="bank answer has no valid field 39"
        ), False
    return msgspec.structs.replace(
        answer, route=base.route, bank_stan=base.bank_stan, settlement_date=base.settlement_date
    ), True


def base_mti(response_mti: str) -> str:
    return response_mti[:2] + str(int(response_mti[2]) - 1) + response_mti[3]


def _digest_text(request: BankBound, pan: str) -> str:
    """What a repeat must ask again: card, amount, processing code and currency."""
    amount = "" if request.amount is None else str(request.amount)
    return f"{pan}|{amount}|{request.processing_code}|{request.currency}"


def _effect_on_original(record: TxnRecord, state: str) -> str:
    """What a void's or refund's answer did to its original, in the original's history:
    ``voided by void RRN 633270000012``, ``refunded 12.00 by refund RRN ...``."""
    if state != "approved":
        return f"{record.kind} RRN {record.rrn} {state} ({record.code}): it stands as it was"
    if record.kind == "void":
        return f"voided by void RRN {record.rrn}"
    if record.kind == "refund":
        yuan = f"{record.amount // 100}.{record.amount % 100:02d}"
        return f"refunded {yuan} yuan ({record.amount} fen) by refund RRN {record.rrn}"
    return f"{record.kind} RRN {record.rrn} approved"


def _started(record: TxnRecord, at: float) -> TxnStarted:
    """``TxnStarted`` of a copy the step made (``Preview.copy``): kept as it is."""
    if not record.received_at:  # received when started, unless the lifecycle said
        record.received_at = at
    return TxnStarted(record=record, at=at)


def _queue_reversal(
    book: TransactionBook,
    record: TxnRecord,
    reason: str,
    now: float,
    booked: list[BookChange],
) -> tuple[list[Change], Preview]:
    """Marks ``record`` reversed (``MarkReversed`` on ``booked``, after the book changes
    the step made before: it undoes its effect on its original) and returns the changes
    that queue its reversal, the original's included, and the records as the book
    changes leave them. The caller journals the record itself after these, so that it
    carries ``reversed``."""
    changes: list[Change] = [
        ReversalQueued(rrn=record.rrn, bank=record.bank, reason=reason, at=now)
    ]
    mark = MarkReversed(record)
    booked.append(mark)
    view = book.preview(booked)
    original = view.original(mark)
    if original is not None:
        undone = f"its {record.kind} RRN {record.rrn} reversed ({reason})"
        changes.append(TxnUpdated.of(original, now, undone))
        # a completion's void undone
        changes.extend(_hold_moved(book, original, now, booked))
    elif view(record).state == "approved":  # a completion whose pre-authorisation is not held
        changes.extend(_hold_moved(book, view(record), now, booked))
    return changes, view


@functools.lru_cache(maxsize=64)
def last_completion_date(business_date: str, expiry_days: int) -> str:
    """The last business date (YYYY-MM-DD) a pre-authorisation of ``business_date`` can
    be completed on: ``expiry_days`` later (risk.md). Cached: a day's are all the same."""
    return (date.fromisoformat(business_date) + timedelta(days=expiry_days)).isoformat()


def _hold_moved(
    book: TransactionBook, changed: TxnRecord, now: float, booked: list[BookChange]
) -> list[Change]:
    """A completion (``changed``, as the step's book changes leave it) stopped standing
    (voided, reversed: its pre-authorisation is ``open`` again) or stands again (its
    void reversed: ``completed``). The pre-authorisation is moved by RRN, in the book
    if held there (``MoveHold`` on ``booked``) and in the journal whether or not."""
    if products.product(changed.kind).reserves != "hold" or changed.original_rrn is None:
        return []
    standing = changed.state == "approved" and not changed.voided and not changed.reversed
    state = "completed" if standing else "open"
    booked.append(MoveHold(changed.original_rrn, state))
    why = "its completion stands again" if standing else "its completion voided or reversed"
    return [HoldMoved(rrn=changed.original_rrn, hold_state=state, at=now, detail=why)]


def _hold_voided(rrn: str, now: float, booked: list[BookChange]) -> list[Change]:
    """The on-us pre-authorisation ``rrn`` ends ``voided``: its completion was undone
    and its funds could not be held again (risk.md, "On-us funding"); in the book if
    held there (``MoveHold`` on ``booked``)."""
    booked.append(MoveHold(rrn, "voided"))
    why = "its completion undone; the funds are gone: not held again"
    return [HoldMoved(rrn=rrn, hold_state="voided", at=now, detail=why)]


def expiry_changes(
    book: TransactionBook, open_holds: Sequence[TxnRecord], now: float
) -> list[Change]:
    """At the cut-off that closes their last completion date, the open
    pre-authorisations (as the journal has them) become ``expired``, each with its
    reversal queued (a 0400 naming its 0100): the hold is released the day a
    completion stops being possible (risk.md). One with a completion or void at its
    bank is left for the next close. An on-us one (its hold on the ledger) queues no
    reversal: the trio layer voids its hold once this is journaled. Not a machine's
    step: the trio layer's, at the close, and it changes the book itself."""
    changes: list[Change] = []
    for found in open_holds:
        record = book.take_fresh(found)
        if not book.expire(record):
            continue
        if not onus_hold.holds_on_ledger(record.kind):
            changes.append(
                ReversalQueued(rrn=record.rrn, bank=record.bank, reason="expired", at=now)
            )
        detail = f"expired: last completion date {record.hold_until}"
        changes.append(TxnUpdated.of(record, now, detail))
    return changes


# -- a terminal's reversal ---------------------------------------------------------------

ReversalPhase = Literal[
    "received", "loading_original", "waiting_for_first", "journaling", "answered",
    "reserving_back", "ending_ledger",
]

REVERSAL_TRANSITIONS: Final[
    dict[tuple[ReversalPhase, type], ReversalPhase | tuple[ReversalPhase, ...]]
] = {
    ("received", Start): (
        "loading_original", "waiting_for_first", "journaling", "answered", "reserving_back"
    ),
    ("loading_original", OriginalLoaded): (
        "waiting_for_first", "journaling", "answered", "reserving_back"
    ),
    ("loading_original", Refused): "answered",
    ("loading_original", JournalFailed): "answered",
    ("waiting_for_first", FirstFinished): ("journaling", "answered", "reserving_back"),
    ("journaling", Journaled): ("answered", "ending_ledger"),
    ("journaling", JournalFailed): ("answered", "ending_ledger"),
    # an on-us original (wallet.md): the compensating transfer reserved, the reversal
    # journaled, the transfer posted (or voided if the journal failed), then the answer
    ("reserving_back", LedgerAnswered): ("journaling", "answered"),
    ("ending_ledger", LedgerAnswered): "answered",
}


class TerminalReversal:
    """A terminal's 0400: answered 00 whether or not its original reached a bank
    (pos-cup.md). If it did, the switch waits for it to end (a reversal never overtakes
    its original) and queues its reversal for store-and-forward. Driven as
    :class:`BankTransaction` is: ``REVERSAL_TRANSITIONS`` says where an event may lead,
    ``REVERSAL_HANDLERS`` which handler chooses, and :meth:`_step` assigns the phase."""

    def __init__(
        self,
        request: Reversal,
        *,
        book: TransactionBook,
        cards: Cards,
        now: float,
        in_flight: Callable[[str], bool],
        stand_in: StandInDesk | None = None,
        risk: RiskGate | None = None,
    ) -> None:
        self.request = request
        self.stand_in = stand_in
        self.risk = risk
        self.book = book
        self.cards = cards
        self.now = now
        self.in_flight = in_flight
        self.phase: ReversalPhase = "received"
        self.record: TxnRecord | None = None
        self._final: Outcome | None = None
        self._rehold = False
        """A reversed on-us completion: whether its pre-authorisation is held again."""
        acceptor, ref = request.acceptor, request.original
        self.trace = (
            acceptor.terminal_id, acceptor.merchant_id, ref.batch or request.batch,
            ref.stan or request.stan,
        )  # fmt: skip

    def start(self) -> list[Action]:
        if self.phase != "received":
            raise LocalProtocolError("a reversal starts once")
        return self._step(START, self.now)

    def handle(self, event: Event, now: float) -> list[Action]:
        return self._step(event, now)

    def _step(self, event: Event | Start, now: float) -> list[Action]:
        phase = self.phase
        moves = REVERSAL_TRANSITIONS.get((phase, type(event)))
        if moves is None:
            raise LocalProtocolError(f"{type(event).__name__} in phase {phase}")
        self.now = now
        actions: list[Action] = []
        to = REVERSAL_HANDLERS[phase](self, event, actions)
        if to != moves and (type(moves) is not tuple or to not in moves):
            raise LocalProtocolError(f"{type(event).__name__} in phase {phase} led to {to}")
        self.phase = to
        return actions

    # -- the handlers, one a phase --------------------------------------------------

    def _on_received(self, event: Event | Start, actions: list[Action]) -> ReversalPhase:
        record = self.book.by_trace(*self.trace)
        # Older than the book holds, or, on a shared journal, maybe another worker's.
        if record is None or (self.book.shared and not self.in_flight(record.rrn)):
            actions.append(LoadOriginal(trace=self.trace))
            return "loading_original"
        return self._found(record, actions)

    def _on_loading_original(self, event: Event | Start, actions: list[Action]) -> ReversalPhase:
        match event:
            case Refused(reason=reason):
                actions.append(Answer(Outcome(code="91", message=reason, shed=True)))
                return "answered"
            case JournalFailed(error=error):
                actions.append(
                    Answer(Outcome(code="96", message="system malfunction", detail=error))
                )
                return "answered"
        assert isinstance(event, OriginalLoaded)
        return self._found(event.record, actions)  # as the book holds it (taken in as read)

    def _on_waiting_for_first(self, event: Event | Start, actions: list[Action]) -> ReversalPhase:
        assert self.record is not None and isinstance(event, FirstFinished)
        if event.record is not None:  # as the book holds it now (taken in as it was read)
            self.record = event.record
        if self.record.state == "sending":
            # Still at another worker's bank: reversing it now would race that
            # worker's answer; the terminal sends its reversal again.
            actions.append(Answer(Outcome(
                code="96", message="system malfunction",
                detail="original still in flight at another worker",
            )))  # fmt: skip
            return "answered"
        return self._reverse(self.record, actions)

    def _on_journaling(self, event: Event | Start, actions: list[Action]) -> ReversalPhase:
        record = self.record
        assert record is not None
        if self._on_ledger():
            return self._reversal_journaled_on_ledger(event, actions)
        if isinstance(event, JournalFailed):
            actions.append(
                ReverseUnjournaled(copy.copy(record), "reversal not journaled: " + event.error)
            )
            actions.append(
                Answer(Outcome(code="96", message="system malfunction", detail=event.error))
            )
            return "answered"
        rrn, bank = record.rrn, record.bank
        actions.append(NudgeReversals(bank))
        actions.append(Answer(Outcome(code="00", rrn=rrn, bank=bank, route="original")))
        return "answered"

    def _on_reserving_back(self, event: Event | Start, actions: list[Action]) -> ReversalPhase:
        record = self.record
        assert record is not None and isinstance(event, LedgerAnswered)
        if not event.ok:
            # Busy or broken: 96, the terminal sends it again. Refused (a reversed
            # void whose money the wallet has spent): answered 00 as every reversal
            # is, the operator told.
            code = "96" if event.code in ("91", "96") else "00"
            actions.append(Answer(Outcome(
                code=code, rrn=record.rrn, bank=record.bank,
                message="system malfunction" if code == "96" else "",
                detail=f"ledger refused the reversal: {event.code} {event.message}",
            )))  # fmt: skip
            return "answered"
        changes: list[Change] = []
        self._rehold = bool(event.rehold)
        if self.risk is not None and onus_hold.holds_on_ledger(record.kind):
            self.risk.remove(record, self.now)  # it leaves the approved windows
        mark = MarkReversed(record)
        booked: list[BookChange] = [mark]
        view = self.book.preview(booked)
        original = view.original(mark)
        if original is not None:
            if event.rehold is False:  # risk.md: the funds are gone, not held again
                original.hold_state = "voided"  # the preview's copy, as the journal says
                booked.append(MoveHold(original.rrn, "voided"))
            undone = f"its {record.kind} RRN {record.rrn} reversed by the terminal"
            changes.append(TxnUpdated.of(original, self.now, undone))
            if original.kind == onus_hold.COMPLETION_KIND:  # it stands again: completed
                changes.extend(_hold_moved(self.book, original, self.now, booked))
        elif event.rehold is not None and record.original_rrn is not None:
            # An on-us pre-authorisation the book no longer holds: moved by RRN.
            state = "open" if event.rehold else "voided"
            if record.kind == onus_hold.COMPLETION_KIND:
                changes.extend(_hold_moved(self.book, view(record), self.now, booked)
                               if event.rehold
                               else _hold_voided(record.original_rrn, self.now, booked))
            else:
                why = "its void reversed by the terminal"
                changes.append(HoldMoved(rrn=record.original_rrn, hold_state=state,
                                         at=self.now, detail=why))  # fmt: skip
        changes.append(TxnUpdated.of(view(record), self.now, "reversal requested by terminal"))
        actions.extend(booked)
        actions.append(Journal(tuple(changes)))
        return "journaling"

    def _on_ending_ledger(self, event: Event | Start, actions: list[Action]) -> ReversalPhase:
        assert isinstance(event, LedgerAnswered) and self._final is not None
        if not event.ok and self._final.approved:
            actions.append(Answer(Outcome(
                code="96", message="system malfunction",
                detail=f"ledger post failed: {event.detail or event.message}",
            )))  # fmt: skip
        else:
            actions.append(Answer(self._final))
        return "answered"

    # -- guards and their actions ----------------------------------------------------

    def _found(self, record: TxnRecord | None, actions: list[Action]) -> ReversalPhase:
        if record is None or not self.cards.matches(self.request.card.pan, record.pan_hmac):
            actions.append(Answer(Outcome(code="00", message="no original reached a bank")))
            return "answered"
        self.record = record
        if self.in_flight(record.rrn):
            actions.append(AwaitFirst(record.rrn))
            return "waiting_for_first"
        if record.state == "sending":  # at another worker's bank, or its in doubt
            actions.append(AwaitFirst(record.rrn, elsewhere=True))
            return "waiting_for_first"
        return self._reverse(record, actions)

    def _on_ledger(self) -> bool:
        return self.record is not None and (
            products.product(self.record.kind).destination == "ledger"
        )

    def _voided_of(self, record: TxnRecord) -> TxnRecord | None:
        """An on-us completion's void's completion, as the book holds it (None: another
        kind, or one the book no longer holds)."""
        if record.kind != onus_hold.COMPLETION_VOID_KIND or record.original_rrn is None:
            return None
        return self.book.by_rrn(record.original_rrn)

    def _reverse_on_ledger(self, record: TxnRecord, actions: list[Action]) -> ReversalPhase:
        """An on-us original: nothing to reverse unless it was approved (a decline's
        pending transfer was voided before its answer left). A pre-authorisation's hold
        is released once the reversal is journaled; a completion's is given back and
        held again (``core/onus_hold.py``)."""
        if record.reversed or record.state != "approved":
            actions.append(Answer(Outcome(code="00", rrn=record.rrn, bank=record.bank)))
            return "answered"
        held = onus_hold.reversal_step(
            record, record_key(record), record_key(record, REVERSAL_LEG), self._voided_of(record)
        )
        if held is not None:
            actions.append(PostToLedger(held))
            return "reserving_back"
        if record.kind in onus_hold.NOT_REVERSED:
            # risk.md's pre-authorisation void or completion void reversed would hold
            # or complete again: not done on the ledger (docs/behaviour.md); answered
            # 00 as every reversal is, the void standing.
            actions.append(Answer(Outcome(
                code="00", rrn=record.rrn, bank=record.bank,
                detail=f"{record.kind} not reversed on the ledger: it stands",
            )))  # fmt: skip
            return "answered"
        actions.append(PostToLedger(ReserveBack(
            original=record_key(record), key=record_key(record, REVERSAL_LEG),
            amount=record.amount, kind="void", rrn=record.rrn,
            merchant_id=record.merchant_id, reversal=True,
        )))  # fmt: skip
        return "reserving_back"

    def _reversal_journaled_on_ledger(
        self, event: Event | Start, actions: list[Action]
    ) -> ReversalPhase:
        """An on-us reversal journaled (or not): its compensating transfer is posted
        (or voided), then answered."""
        record = self.record
        assert record is not None
        failed = isinstance(event, JournalFailed)
        self._final = (
            Outcome(code="96", message="system malfunction", detail=event.error)
            if isinstance(event, JournalFailed)
            else Outcome(code="00", rrn=record.rrn, bank=record.bank, route="original")
        )
        payment = record.kind == "onus_sale"
        voided = self._voided_of(record)
        held = onus_hold.reversal_end(
            record, record_key(record), record_key(record, REVERSAL_LEG), approved=not failed,
            rehold=self._rehold, original=voided,
            original_key=record_key(voided) if voided is not None else None,
        )
        if held is not None or onus_hold.reversed_by_steps(record.kind):
            if held is None:
                actions.append(Answer(self._final))
                return "answered"
            actions.append(PostToLedger(held))
            return "ending_ledger"
        actions.append(PostToLedger(EndTransfer(
            key=record_key(record, REVERSAL_LEG), approved=not failed,
            uncount=record_key(record) if payment and not failed else None,
        )))  # fmt: skip
        return "ending_ledger"

    def _reverse(self, record: TxnRecord, actions: list[Action]) -> ReversalPhase:
        if products.product(record.kind).destination == "ledger":
            return self._reverse_on_ledger(record, actions)
        if record.stand_in is not None and record.advice != "accepted" and not record.reversed:
            return self._reverse_stood_in(record, actions)
        if record.sent is None or record.reversed or record.state == "not_sent":
            actions.append(Answer(Outcome(code="00", rrn=record.rrn, bank=record.bank)))
            return "answered"
        reason = f"terminal reversal {self.request.reason}"
        if self.risk is not None and record.state == "approved":
            self.risk.remove(record, self.now)  # it leaves the approved windows
        booked: list[BookChange] = []
        changes, view = _queue_reversal(self.book, record, reason, self.now, booked)
        changes.append(TxnUpdated.of(view(record), self.now, "reversal requested by terminal"))
        actions.extend(booked)
        actions.append(Journal(tuple(changes)))
        return "journaling"

    def _reverse_stood_in(self, record: TxnRecord, actions: list[Action]) -> ReversalPhase:
        """risk.md: a stood-in sale whose advice is not accepted is reversed in the
        switch (advice not sent: cancelled; refused: the loss cancelled) or, its advice
        sent without a final answer, its 0400 is queued by the advice's acceptance
        (dropped if refused). Answered 00."""
        mark = MarkReversed(record)
        view = self.book.preview((mark,))
        if self.stand_in is not None:
            self.stand_in.undone(record)
        note = _reverse_stood_in_note(record.advice)
        actions.append(mark)
        actions.append(Journal((TxnUpdated.of(view(record), self.now, note),)))
        return "journaling"


ReversalHandler = Callable[[TerminalReversal, "Event | Start", list[Action]], ReversalPhase]
REVERSAL_HANDLERS: Final[dict[ReversalPhase, ReversalHandler]] = {
    "received": TerminalReversal._on_received,
    "loading_original": TerminalReversal._on_loading_original,
    "waiting_for_first": TerminalReversal._on_waiting_for_first,
    "journaling": TerminalReversal._on_journaling,
    "reserving_back": TerminalReversal._on_reserving_back,
    "ending_ledger": TerminalReversal._on_ending_ledger,
}
"""Each phase's handler: it chooses, among the phases the table allows, where the
event leads, and says what to do. ``answered`` expects nothing."""


def _reverse_stood_in_note(advice: str | None) -> str:
    if advice == "queued":
        return "reversed in the switch: stood in, its advice not sent (cancelled)"
    if advice == "refused":
        return "reversed in the switch: stood in, its advice refused (the loss cancelled)"
    return "reversal requested by terminal: its 0400 goes once its advice is accepted"


def recovery_changes(
    book: TransactionBook, in_doubt: Sequence[TxnRecord], now: float
) -> list[Change]:
    """At start-up, what a crash left ``sending`` may have reached its bank: each is
    settled ``no_answer`` (96) with its reversal queued. Not a machine's step: it is
    the trio layer's, before any request, and carries its book changes out itself."""
    changes: list[Change] = []
    for record in in_doubt:
        booked: list[BookChange] = [MarkState(record, "no_answer", "96")]
        if products.product(record.kind).reversed_on_no_answer:
            changes.extend(_queue_reversal(book, record, "in doubt after restart", now, booked)[0])
        for change in booked:
            book.apply(change)
        changes.append(TxnUpdated.of(record, now, "in doubt after restart"))
    return changes
