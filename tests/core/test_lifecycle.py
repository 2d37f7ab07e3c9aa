"""The transaction lifecycle, synchronously: every transition of both machines, fed
events by hand and checked by the actions they return."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import pytest

from switch.core.bank import Institution, OriginalData
from switch.core.book import TransactionBook, TxnRecord
from switch.core.changes import OnlineResultKept, ReversalQueued, TxnStarted, TxnUpdated
from switch.core.clock import Stamp
from switch.core.lifecycle import (
    REVERSAL_TRANSITIONS,
    TRANSITIONS,
    Action,
    Admit,
    Admitted,
    Answer,
    AwaitFirst,
    BankAnswered,
    BankTimedOut,
    BankTransaction,
    Event,
    FirstElsewhere,
    FirstFinished,
    Journal,
    Journaled,
    JournalFailed,
    LinkGranted,
    LinkLost,
    LoadOriginal,
    NotSent,
    NudgeReversals,
    OriginalLoaded,
    Refused,
    ReleaseLink,
    ReverseUnjournaled,
    SendToBank,
    Stopped,
    TerminalReversal,
    recovery_changes,
)
from switch.core.model import (
    Acceptor,
    BalanceInquiry,
    Card,
    OriginalRef,
    Outcome,
    Refund,
    Reversal,
    Sale,
    Void,
)
from switch.core.numbers import RrnAllocator
from switch.errors import LocalProtocolError, TransactionRefused
from switch.store.crypto import CardKey, CardKeyFile, CardVault
from switch.wire.dialect import load_dialect
from switch.wire.iso8583 import Iso8583Codec
from tests.conftest import DIALECTS
from tests.core.booked import BookedReversal, BookedTransaction

PAN = "6222021000111122221"
OTHER_PAN = "6222021000111122239"
POS = Acceptor(channel="pos", terminal_id="POS00001", merchant_id="898310048990001")
ONLINE = Acceptor(channel="online", terminal_id="ONLINE01", merchant_id="SHOP01")
STAMP = Stamp.at(1763793015.0, 8)  # 2025-11-22 06:30:15 UTC, 14:30:15 local
CARDS = CardVault(
    CardKeyFile(active=1, keys=(CardKey(id=1, hmac_key="11" * 32, aes_key="22" * 32),))
)
INSTITUTION = Institution("48990000")
NOW = 1000.0


def sale(
    amount: int = 10000, *, stan: str = "000123", pan: str = PAN, acceptor: Acceptor = POS
) -> Sale:
    return Sale(
        acceptor=acceptor, stan=stan, batch="000042", request_mti="0200",
        processing_code="000000", card=Card(pan=pan, entry_mode="021"), currency="156",
        amount=amount,
    )  # fmt: skip


def route(pan: str) -> tuple[str, str]:
    if not pan.startswith("622202"):
        raise TransactionRefused("92", "no route for this card's BIN", field="pan")
    return "622202", "icbc"


class World:
    """The sans-IO machines' surroundings: a book, RRNs, and what is "in flight"."""

    def __init__(self) -> None:
        self.book = TransactionBook(max_records=1000)
        self.rrns = RrnAllocator()
        self.in_flight: set[str] = set()

    def transaction(self, request: Any, finalize: Any = None) -> BankTransaction:
        return BookedTransaction(
            request, STAMP, book=self.book, cards=CARDS, route=route, institution=INSTITUTION,
            allocate_rrn=lambda stamp: self.rrns.allocate(stamp.local, stamp.rrn_day),
            in_flight=self.in_flight.__contains__, now=NOW, finalize=finalize,
        )  # fmt: skip

    def reversal(self, request: Reversal) -> TerminalReversal:
        return BookedReversal(
            request, book=self.book, cards=CARDS, now=NOW, in_flight=self.in_flight.__contains__
        )

    def approved_sale(self, amount: int = 10000, stan: str = "000123") -> TxnRecord:
        """A sale taken through the machine to its approval."""
        machine = self.transaction(sale(amount, stan=stan))
        drive(machine, Admitted(), LinkGranted("000007"), Journaled())
        drive(machine, BankAnswered("0210", {39: "00", 38: "A1B2C3"}), Journaled())
        assert machine.record is not None
        return machine.record


def drive(machine: BankTransaction | TerminalReversal, *events: Event) -> list[Action]:
    """Starts the machine if it has not started, feeds it the events; the last step's
    actions."""
    actions = machine.start() if machine.phase == "received" else []
    for event in events:
        actions = machine.handle(event, NOW)
    return actions


def kinds(actions: Sequence[Action]) -> list[str]:
    return [type(action).__name__ for action in actions]


def answer_of(actions: Sequence[Action]) -> Outcome:
    last = actions[-1]
    assert isinstance(last, Answer), actions
    return last.outcome


def journal_of(actions: Sequence[Action]) -> tuple[Any, ...]:
    last = actions[-1]
    assert isinstance(last, Journal), actions
    return last.changes


# -- the way a sale is meant to go ------------------------------------------------------


def test_a_sale_is_admitted_linked_journaled_sent_answered_and_journaled_again() -> None:
    world = World()
    machine = world.transaction(sale())
    assert kinds(machine.start()) == ["Admit"]
    assert machine.rrn is None  # refusals at the door use none of the day's RRNs
    assert kinds(machine.handle(Admitted(), NOW)) == ["AcquireLink"]
    assert machine.phase == "waiting_for_link" and machine.rrn is not None
    record = machine.record
    assert record is not None and world.book.by_rrn(record.rrn) is record
    started = journal_of(machine.handle(LinkGranted("000007"), NOW))
    assert [type(c) for c in started] == [TxnStarted]
    assert started[0].record.state == "sending" and started[0].record.sent.stan == "000007"
    exchange = machine.handle(Journaled(), NOW)[-1]
    assert isinstance(exchange, SendToBank) and exchange.mti == "0200"
    assert exchange.fields[11] == "000007" and exchange.fields[37] == record.rrn
    settled = machine.handle(BankAnswered("0210", {39: "00", 38: "A1B2C3"}), NOW)
    assert settled[0] == ReleaseLink(answered=True)
    [update] = journal_of(settled)
    assert isinstance(update, TxnUpdated) and (update.state, update.code) == ("approved", "00")
    outcome = answer_of(machine.handle(Journaled(), NOW))
    assert (outcome.code, outcome.auth_code, outcome.rrn) == ("00", "A1B2C3", record.rrn)
    assert (outcome.bank, outcome.route, outcome.bank_stan) == ("icbc", "622202", "000007")
    assert machine.phase == "answered"


# -- every way it can end ------------------------------------------------------------------

AT_BANK = (Admitted(), LinkGranted("000007"), Journaled())

ENDINGS: list[tuple[str, tuple[Event, ...], str, str | None, bool, bool]] = [
    # (case, events after start, answer code, state journaled, reversal queued, reversed
    #  without the journal)
    (
        "declined",
        (*AT_BANK, BankAnswered("0210", {39: "51"}), Journaled()),
        "51",
        "declined",
        False,
        False,
    ),
    ("no answer in time", (*AT_BANK, BankTimedOut(), Journaled()), "68", "no_answer", True, False),
    (
        "link lost after sending",
        (*AT_BANK, LinkLost("link icbc/0 dropped"), Journaled()),
        "91",
        "no_answer",
        True,
        False,
    ),
    (
        "never sent",
        (*AT_BANK, NotSent("link icbc/0 is down"), Journaled()),
        "91",
        "not_sent",
        False,
        False,
    ),
    ("switch stopped", (*AT_BANK, Stopped(), Journaled()), "96", "no_answer", True, False),
    (
        "answer of the wrong type",
        (*AT_BANK, BankAnswered("0410", {39: "00"}), Journaled()),
        "96",
        "no_answer",
        True,
        False,
    ),
    (
        "answer of a response class for another request",
        (*AT_BANK, BankAnswered("0230", {39: "00"}), Journaled()),
        "96",
        "no_answer",
        True,
        False,
    ),
    (
        "answer without 39",
        (*AT_BANK, BankAnswered("0210", {38: "A1B2C3"}), Journaled()),
        "96",
        "no_answer",
        True,
        False,
    ),
    (
        "answer with a garbled 39",
        (*AT_BANK, BankAnswered("0210", {39: "0"}), Journaled()),
        "96",
        "no_answer",
        True,
        False,
    ),
    (
        "approval not journaled",
        (*AT_BANK, BankAnswered("0210", {39: "00"}), JournalFailed("disk full")),
        "96",
        None,
        False,
        True,
    ),
    (
        "no answer not journaled",
        (*AT_BANK, BankTimedOut(), JournalFailed("disk full")),
        "96",
        None,
        True,
        True,
    ),
    (
        "decline not journaled",
        (*AT_BANK, BankAnswered("0210", {39: "51"}), JournalFailed("disk full")),
        "96",
        None,
        False,
        False,
    ),
    (
        "request not journaled",
        (Admitted(), LinkGranted("000007"), JournalFailed("disk full")),
        "96",
        None,
        False,
        False,
    ),
    ("no slot", (Refused("busy: 9 requests waiting"),), "91", None, False, False),
    ("no link", (Admitted(), Refused("bank icbc: every link is down")), "91", None, False, False),
]


@pytest.mark.parametrize(
    ("case", "events", "code", "state", "reversal", "unjournaled"),
    ENDINGS,
    ids=[ending[0] for ending in ENDINGS],
)
def test_every_ending_of_a_sale(
    case: str,
    events: tuple[Event, ...],
    code: str,
    state: str | None,
    reversal: bool,
    unjournaled: bool,
) -> None:
    world = World()
    machine = world.transaction(sale())
    machine.start()
    journaled: list[Any] = []  # what the commits reported Journaled wrote
    pending: tuple[Any, ...] = ()
    actions: list[Action] = []
    for event in events:
        if isinstance(event, Journaled):
            journaled.extend(pending)
        actions = machine.handle(event, NOW)
        pending = actions[-1].changes if isinstance(actions[-1], Journal) else ()
    outcome = answer_of(actions)
    assert outcome.code == code
    assert machine.phase == "answered"
    updates = [c for c in journaled if isinstance(c, TxnUpdated)]
    if state is None:
        assert not updates
    else:
        assert updates[-1].state == state
        assert any(isinstance(c, ReversalQueued) for c in journaled) is reversal
    assert any(isinstance(a, ReverseUnjournaled) for a in actions) is unjournaled
    assert any(isinstance(a, NudgeReversals) for a in actions) is (reversal and not unjournaled)
    if code == "96" and "journaled" in case:
        assert outcome.message == "system malfunction"  # never the journal's own text
        assert outcome.detail == "disk full"
    record = machine.record
    if record is not None and (reversal or unjournaled):
        assert record.reversed and record.state == "no_answer"


def test_nothing_reaches_a_bank_before_it_is_journaled() -> None:
    """Along every path, a SendToBank comes only after a Journal of TxnStarted has been
    reported Journaled."""
    for _, events, *_ in ENDINGS:
        machine = World().transaction(sale())
        actions = machine.start()
        started_and_durable = False
        pending_start = False
        for event in events:
            if isinstance(event, Journaled) and pending_start:
                started_and_durable = True
            actions = machine.handle(event, NOW)
            last = actions[-1]
            pending_start = isinstance(last, Journal) and isinstance(last.changes[0], TxnStarted)
            if isinstance(last, SendToBank):
                assert started_and_durable


def test_a_request_its_banks_dialect_cannot_carry_is_refused_30_with_nothing_written() -> None:
    """Encoded with the granted link's encoder before it is journaled: a field the
    dialect refuses answers 30 naming it, gives the slot back with no verdict on the
    bank, journals nothing and releases what a void reserved."""
    world = World()
    original = world.approved_sale(9000)
    codec = Iso8583Codec(load_dialect(DIALECTS / "h2h-ascii.toml"))

    def control_character_in_42(mti: str, fields: dict[int, str | bytes]) -> bytes:
        return codec.encode(mti, {**fields, 42: "SH\x01P"})

    void = Void(
        acceptor=POS, stan="000124", batch="000042", request_mti="0200",
        processing_code="020000", card=Card(pan=PAN, entry_mode="021"), currency="156",
        amount=9000, original=OriginalRef(rrn=original.rrn),
    )  # fmt: skip
    full_width = sale(acceptor=msgspec.structs.replace(ONLINE, merchant_id="ＳＨＯＰ"))
    for request, encode in ((full_width, codec.encode), (void, control_character_in_42)):
        machine = world.transaction(request)
        drive(machine, Admitted())
        actions = machine.handle(LinkGranted("000008", encode=encode), NOW)
        assert kinds(actions) == ["ReleaseLink", "Answer"]
        assert actions[0] == ReleaseLink(answered=None)
        outcome = answer_of(actions)
        assert (outcome.code, outcome.field) == ("30", "42") and "field 42" in outcome.message
        assert machine.record is not None and machine.record.state == "not_sent"
    kept = world.book.by_rrn(original.rrn)
    assert kept is not None and not kept.voided and not kept.void_pending
    machine = world.transaction(sale(stan="000125"))
    drive(machine, Admitted())
    started = journal_of(machine.handle(LinkGranted("000009", encode=codec.encode), NOW))
    assert [type(c) for c in started] == [TxnStarted]
    exchange = machine.handle(Journaled(), NOW)[-1]
    assert isinstance(exchange, SendToBank)
    assert exchange.encoded == codec.encode(exchange.mti, exchange.fields)  # encoded once


def test_the_link_slot_is_given_back_exactly_once_with_the_banks_verdict() -> None:
    verdicts: list[tuple[Event, bool | None]] = [
        (BankAnswered("0210", {39: "00"}), True),
        (BankAnswered("0410", {39: "00"}), True),  # the bank answered: the circuit is fine
        (BankTimedOut(), False),
        (LinkLost("dropped"), False),
        (NotSent("down"), None),
        (Stopped(), False),
    ]
    for event, verdict in verdicts:
        machine = World().transaction(sale())
        released = [a for a in drive(machine, *AT_BANK, event) if isinstance(a, ReleaseLink)]
        assert released == [ReleaseLink(answered=verdict)], event
    machine = World().transaction(sale())
    released = drive(machine, Admitted(), LinkGranted("000007"), JournalFailed("disk full"))
    assert [a for a in released if isinstance(a, ReleaseLink)] == [ReleaseLink(answered=None)]


def test_an_event_a_phase_does_not_expect_is_a_bug() -> None:
    machine = World().transaction(sale())
    machine.start()
    with pytest.raises(LocalProtocolError):
        machine.handle(Journaled(), NOW)
    with pytest.raises(LocalProtocolError):
        machine.start()
    for (phase, event_type), moves in TRANSITIONS.items():
        assert phase != "answered" and moves, (phase, event_type)


def test_refusals_before_the_bank_write_nothing_and_keep_no_result() -> None:
    kept: list[Outcome] = []

    def finalize(outcome: Outcome) -> list[Any]:
        kept.append(outcome)
        return []

    world = World()
    unrouted = world.transaction(sale(pan="4111111111111111"), finalize)
    assert answer_of(unrouted.start()).code == "92"  # refused before a slot is taken
    no_slot = world.transaction(sale(), finalize)
    assert answer_of(drive(no_slot, Refused("busy"))).code == "91"
    no_link = world.transaction(sale(stan="000124"), finalize)
    assert answer_of(drive(no_link, Admitted(), Refused("queue full"))).code == "91"
    never_sent = world.transaction(sale(stan="000125"), finalize)
    drive(never_sent, *AT_BANK, NotSent("down"), Journaled())
    assert kept == []
    reached = world.transaction(sale(stan="000126"), finalize)
    drive(reached, *AT_BANK, BankTimedOut(), Journaled())
    assert [o.code for o in kept] == ["68"]


def test_the_channels_changes_are_committed_with_an_outcome_that_reached_a_bank() -> None:
    kept = OnlineResultKept(
        merchant_id="SHOP01", online_id="o-1", fingerprint=b"f", response=b"r", at=NOW
    )
    machine = World().transaction(sale(acceptor=ONLINE), lambda outcome: [kept])
    changes = journal_of(drive(machine, *AT_BANK, BankAnswered("0210", {39: "00"})))
    assert changes[-1] is kept


# -- repeats ------------------------------------------------------------------------------


def test_a_repeat_gets_the_first_answer_and_the_bank_sees_it_once() -> None:
    world = World()
    first = world.approved_sale()
    repeat = world.transaction(sale())
    outcome = answer_of(repeat.start())
    assert (outcome.code, outcome.rrn, outcome.auth_code, outcome.route) == (
        "00", first.rrn, "A1B2C3", "duplicate",
    )  # fmt: skip


def test_a_repeat_of_one_in_flight_waits_for_it() -> None:
    world = World()
    first = world.transaction(sale())
    drive(first, Admitted(), LinkGranted("000007"), Journaled())
    assert first.rrn is not None
    world.in_flight.add(first.rrn)
    repeat = world.transaction(sale())
    assert repeat.start() == [AwaitFirst(first.rrn)]
    drive(first, BankAnswered("0210", {39: "00", 38: "A1B2C3"}), Journaled())
    world.in_flight.discard(first.rrn)
    assert answer_of(repeat.handle(FirstFinished(), NOW)).auth_code == "A1B2C3"


def test_a_repeat_that_asks_something_else_is_94() -> None:
    world = World()
    world.approved_sale()
    assert answer_of(world.transaction(sale(20000)).start()).code == "94"


def test_a_repeat_found_only_once_admitted_is_answered_as_a_repeat() -> None:
    world = World()
    late = world.transaction(sale())
    late.start()  # waits for a slot while its twin goes all the way
    first = world.approved_sale()
    outcome = answer_of(late.handle(Admitted(), NOW))
    assert (outcome.rrn, outcome.route) == (first.rrn, "duplicate")


def test_a_request_that_never_reached_a_bank_may_be_sent_again() -> None:
    world = World()
    drive(world.transaction(sale()), Admitted(), Refused("every link is down"))
    assert kinds(world.transaction(sale()).start()) == ["Admit"]


# -- voids and refunds ------------------------------------------------------------------


def void(original_rrn: str, amount: int = 10000, pan: str = PAN, stan: str = "000200") -> Void:
    return Void(
        acceptor=POS, stan=stan, batch="000042", request_mti="0200",
        processing_code="200000", card=Card(pan=pan), currency="156", amount=amount,
        original=OriginalRef(rrn=original_rrn),
    )  # fmt: skip


def refund(original_rrn: str, amount: int, stan: str = "000300") -> Refund:
    return Refund(
        acceptor=POS, stan=stan, batch="000042", request_mti="0220",
        processing_code="200000", card=Card(pan=PAN), currency="156", amount=amount,
        original=OriginalRef(rrn=original_rrn),
    )  # fmt: skip


def test_a_void_goes_to_its_originals_bank_with_field_90_and_voids_it() -> None:
    world = World()
    original = world.approved_sale()
    machine = world.transaction(void(original.rrn))
    assert kinds(machine.start()) == ["Admit"]
    drive(machine, Admitted(), LinkGranted("000008"))
    exchange = machine.handle(Journaled(), NOW)[-1]
    assert isinstance(exchange, SendToBank)
    assert str(exchange.fields[3]).startswith("02")
    assert str(exchange.fields[90]).startswith("0200000007")
    assert original.void_pending
    changes = journal_of(machine.handle(BankAnswered("0210", {39: "00"}), NOW))
    assert [c.rrn for c in changes if isinstance(c, TxnUpdated)] == [machine.rrn, original.rrn]
    assert original.voided and not original.void_pending


def test_an_original_the_book_does_not_hold_is_loaded_from_the_journal() -> None:
    world = World()
    original = world.approved_sale()
    world.book = TransactionBook(max_records=1000)  # forgotten by the book, not the journal
    machine = world.transaction(void(original.rrn))
    assert machine.start() == [LoadOriginal(rrn=original.rrn)]
    assert kinds(machine.handle(OriginalLoaded(original), NOW)) == ["Admit"]
    assert world.book.by_rrn(original.rrn) is original


ORIGINAL_RULES: list[tuple[str, Callable[[World, TxnRecord], Any], str]] = [
    ("no such original", lambda w, o: void("632600999999"), "25"),
    ("another card", lambda w, o: void(o.rrn, pan=OTHER_PAN), "25"),
    ("void of another amount", lambda w, o: void(o.rrn, amount=5000), "64"),
    ("refund above the original", lambda w, o: refund(o.rrn, 10001), "61"),
]


@pytest.mark.parametrize(
    ("case", "make", "code"), ORIGINAL_RULES, ids=[r[0] for r in ORIGINAL_RULES]
)
def test_the_rules_on_originals(
    case: str, make: Callable[[World, TxnRecord], Any], code: str
) -> None:
    world = World()
    original = world.approved_sale()
    machine = world.transaction(make(world, original))
    actions = machine.start()
    if isinstance(actions[-1], LoadOriginal):  # not in the book: nor in the journal
        actions = machine.handle(OriginalLoaded(None), NOW)
    if isinstance(actions[-1], Admit):  # rules that need a reservation: once admitted
        actions = machine.handle(Admitted(), NOW)
    assert answer_of(actions).code == code


def test_an_original_not_found_never_takes_a_slot() -> None:
    world = World()
    voided = world.approved_sale()
    drive(world.transaction(void(voided.rrn)), *AT_BANK, BankAnswered("0210", {39: "00"}))
    again = world.transaction(void(voided.rrn, stan="000201"))  # voided already: 12 at once
    assert answer_of(again.start()).code == "12"
    unknown = World().transaction(void("632600999999"))
    assert kinds(unknown.start()) == ["LoadOriginal"]  # a read, not a slot
    assert answer_of(unknown.handle(OriginalLoaded(None), NOW)).code == "25"


def test_concurrent_refunds_never_together_exceed_the_original() -> None:
    world = World()
    original = world.approved_sale()
    first = world.transaction(refund(original.rrn, 6000, stan="000301"))
    drive(first, Admitted())
    second = world.transaction(refund(original.rrn, 6000, stan="000302"))
    assert answer_of(drive(second, Admitted())).code == "61"
    drive(first, LinkGranted("000009"), Journaled(), BankTimedOut(), Journaled())
    # The first got no final answer: reversed, so what it reserved is free again.
    third = world.transaction(refund(original.rrn, 10000, stan="000303"))
    assert kinds(drive(third, Admitted())) == ["AcquireLink"]


def test_a_void_whose_approval_is_not_journaled_leaves_the_sale_live() -> None:
    world = World()
    original = world.approved_sale()
    machine = world.transaction(void(original.rrn))
    drive(machine, *AT_BANK, BankAnswered("0210", {39: "00"}))
    actions = machine.handle(JournalFailed("disk full"), NOW)
    assert kinds(actions) == ["ReverseUnjournaled", "Answer"]
    assert not original.voided and not original.void_pending


def test_an_original_whose_card_data_no_key_opens_is_96_not_a_crash() -> None:
    world = World()
    original = world.approved_sale()
    original.pan_sealed = b"\x09" + original.pan_sealed[1:]  # sealed under a key not held
    outcome = answer_of(drive(world.transaction(void(original.rrn)), Admitted()))
    assert outcome.code == "96" and "card key 9" in outcome.message


# -- balance inquiries -------------------------------------------------------------------


def test_a_balance_inquiry_carries_the_banks_field_54_back() -> None:
    inquiry = BalanceInquiry(
        acceptor=POS, stan="000400", batch="000042", request_mti="0200",
        processing_code="310000", card=Card(pan=PAN), currency="156",
    )  # fmt: skip
    machine = World().transaction(inquiry)
    drive(machine, *AT_BANK, BankAnswered("0210", {39: "00", 54: "1002156C000000012345"}))
    assert answer_of(machine.handle(Journaled(), NOW)).balance == "1002156C000000012345"


# -- a terminal's reversal ------------------------------------------------------------------


def reversal_of(record: TxnRecord, pan: str = PAN) -> Reversal:
    return Reversal(
        acceptor=POS, stan=record.stan, batch=record.batch, request_mti="0400",
        processing_code="000000", card=Card(pan=pan), currency="156", amount=record.amount,
        original=OriginalRef(batch=record.batch, stan=record.stan), reason="98",
    )  # fmt: skip


def test_a_reversal_of_an_approved_sale_is_queued_and_answered_00() -> None:
    world = World()
    original = world.approved_sale()
    machine = world.reversal(reversal_of(original))
    changes = journal_of(machine.start())
    assert [type(c) for c in changes] == [ReversalQueued, TxnUpdated]
    assert original.reversed
    actions = machine.handle(Journaled(), NOW)
    assert actions[0] == NudgeReversals("icbc")
    assert (answer_of(actions).code, answer_of(actions).rrn) == ("00", original.rrn)


def test_the_originals_history_names_its_void_and_the_voids_reversal() -> None:
    world = World()
    original = world.approved_sale()
    machine = world.transaction(void(original.rrn))
    drive(machine, *AT_BANK)
    changes = journal_of(machine.handle(BankAnswered("0210", {39: "00"}), NOW))
    [of_original] = [c for c in changes if isinstance(c, TxnUpdated) and c.rrn == original.rrn]
    assert of_original.detail == f"voided by void RRN {machine.rrn}"
    assert machine.record is not None
    reversal = world.reversal(reversal_of(machine.record))
    changes = journal_of(reversal.start())
    [undone] = [c for c in changes if isinstance(c, TxnUpdated) and c.rrn == original.rrn]
    assert undone.detail == f"its void RRN {machine.rrn} reversed (terminal reversal 98)"
    assert not original.voided

    declined = world.transaction(refund(original.rrn, 500))
    drive(declined, *AT_BANK)
    changes = journal_of(declined.handle(BankAnswered("0210", {39: "51"}), NOW))
    [of_original] = [c for c in changes if isinstance(c, TxnUpdated) and c.rrn == original.rrn]
    assert of_original.detail == f"refund RRN {declined.rrn} declined (51): it stands as it was"


def test_a_reversal_waits_for_its_original_still_in_flight() -> None:
    world = World()
    first = world.transaction(sale())
    drive(first, Admitted(), LinkGranted("000007"), Journaled())
    assert first.rrn is not None and first.record is not None
    world.in_flight.add(first.rrn)
    machine = world.reversal(reversal_of(first.record))
    assert machine.start() == [AwaitFirst(first.rrn)]
    drive(first, BankAnswered("0210", {39: "00"}), Journaled())
    assert kinds(machine.handle(FirstFinished(), NOW)) == ["Journal"]


def test_reversals_of_what_needs_no_reversal_are_simply_acknowledged() -> None:
    unknown = World()
    machine = unknown.reversal(reversal_of(unknown.approved_sale(stan="000999")))
    machine.book = TransactionBook(max_records=10)  # not in the book: read from the journal
    assert kinds(machine.start()) == ["LoadOriginal"]
    assert answer_of(machine.handle(OriginalLoaded(None), NOW)).code == "00"
    other_card = World()
    record = other_card.approved_sale()
    assert answer_of(other_card.reversal(reversal_of(record, OTHER_PAN)).start()).code == "00"
    assert not record.reversed
    again = World()
    record = again.approved_sale()
    first = again.reversal(reversal_of(record))
    drive(first, Journaled())
    assert answer_of(again.reversal(reversal_of(record)).start()).code == "00"


def test_a_reversal_the_journal_cannot_queue_is_reversed_from_memory_and_answered_96() -> None:
    world = World()
    original = world.approved_sale()
    machine = world.reversal(reversal_of(original))
    machine.start()
    actions = machine.handle(JournalFailed("read-only"), NOW)
    assert kinds(actions) == ["ReverseUnjournaled", "Answer"]
    assert answer_of(actions).code == "96"  # the terminal sends its reversal again


def test_the_reversal_table_ends_only_in_answered() -> None:
    for (phase, _), moves in REVERSAL_TRANSITIONS.items():
        assert phase != "answered" and moves


# -- recovery -------------------------------------------------------------------------------


def test_what_a_crash_left_sending_is_settled_no_answer_and_reversed() -> None:
    world = World()
    machine = world.transaction(sale())
    drive(machine, Admitted(), LinkGranted("000007"))  # journaled "sending", then a crash
    record = machine.record
    assert record is not None and record.sent == OriginalData("0200", "000007", "1122063015")
    changes = recovery_changes(TransactionBook(max_records=10), [record], NOW)
    assert [type(c) for c in changes] == [ReversalQueued, TxnUpdated]
    assert (record.state, record.code, record.reversed) == ("no_answer", "96", True)


# -- on a journal shared by several workers ------------------------------------------------


def two_workers() -> tuple[World, World]:
    """Two workers on one journal, each with a book and RRNs of its own; what one
    journaled reaches the other (whose book knows it is shared) only as the journal's
    rows, copies of the first's records."""
    here, there = World(), World()
    here.rrns, there.rrns = RrnAllocator(worker=0, workers=2), RrnAllocator(worker=1, workers=2)
    there.book = TransactionBook(max_records=1000, shared=True)
    return here, there


def row(record: TxnRecord, **changes: Any) -> TxnRecord:
    """``record`` as the journal gives it back: a copy, as of now."""
    return msgspec.structs.replace(copy.deepcopy(record), **changes)


TRACE = ("POS00001", "898310048990001", "000042", "000123")


def refused_as_repeat(machine: BankTransaction, *before: Event) -> list[Action]:
    """Takes a request through admission to its journaling, where the journal refuses
    it as a repeat of a first another worker journaled; the actions that follow."""
    assert kinds(drive(machine, *before, Admitted(), LinkGranted("000009"))) == ["Journal"]
    return machine.handle(FirstElsewhere("already journaled"), NOW)


def test_a_new_sale_on_a_shared_journal_reads_nothing_before_admission() -> None:
    _, there = two_workers()
    machine = there.transaction(sale())
    assert kinds(machine.start()) == ["Admit"]
    assert kinds(machine.handle(Admitted(), NOW)) == ["AcquireLink"]
    changes = journal_of(machine.handle(LinkGranted("000009"), NOW))
    assert [type(change) for change in changes] == [TxnStarted]
    assert kinds(machine.handle(Journaled(), NOW)) == ["SendToBank"]


def test_a_repeat_of_another_workers_sale_refused_by_the_journal_is_answered_as_its() -> None:
    here, there = two_workers()
    first = here.approved_sale()
    repeat = there.transaction(sale())
    actions = refused_as_repeat(repeat)
    # Nothing sent: its slot back without a verdict, its first read by the trace.
    # Taken into the book only if it is the first of this request (its identity).
    key = (*TRACE, "1122", "0200")
    assert actions == [ReleaseLink(answered=None), LoadOriginal(trace=TRACE, only_key=key)]
    assert repeat.phase == "loading_first"
    burnt = repeat.rrn
    assert burnt is not None and there.book.by_rrn(burnt) is None  # not left "sending"
    outcome = answer_of(repeat.handle(OriginalLoaded(row(first)), NOW))
    assert (outcome.code, outcome.rrn, outcome.auth_code, outcome.route) == (
        "00", first.rrn, "A1B2C3", "duplicate",
    )  # fmt: skip
    assert there.book.by_request(first.request_key).rrn == first.rrn  # type: ignore[union-attr]
    # Held now: the next repeat at this worker is answered from the book.
    assert answer_of(there.transaction(sale()).start()).rrn == first.rrn


def test_a_repeat_refused_by_the_journal_that_asks_something_else_is_94() -> None:
    here, there = two_workers()
    first = here.approved_sale()
    other = there.transaction(sale(20000))
    refused_as_repeat(other)
    assert answer_of(other.handle(OriginalLoaded(row(first)), NOW)).code == "94"


def test_a_repeat_of_a_first_still_at_another_workers_bank_watches_it_end() -> None:
    here, there = two_workers()
    first = here.transaction(sale())
    drive(first, Admitted(), LinkGranted("000007"), Journaled())  # at the bank, there
    assert first.record is not None
    repeat = there.transaction(sale())
    refused_as_repeat(repeat)
    actions = repeat.handle(OriginalLoaded(row(first.record)), NOW)
    assert actions == [AwaitFirst(first.record.rrn, elsewhere=True)]
    drive(first, BankAnswered("0210", {39: "00", 38: "A1B2C3"}), Journaled())
    outcome = answer_of(repeat.handle(FirstFinished(row(first.record)), NOW))
    assert (outcome.code, outcome.auth_code, outcome.route) == ("00", "A1B2C3", "duplicate")
    # Never ended within the wait (its worker died and is not back yet): in doubt, 96.
    stuck = there.transaction(sale(stan="000124"))
    other = here.transaction(sale(stan="000124"))
    drive(other, Admitted(), LinkGranted("000008"), Journaled())
    assert other.record is not None
    refused_as_repeat(stuck)
    stuck.handle(OriginalLoaded(row(other.record)), NOW)
    assert answer_of(stuck.handle(FirstFinished(row(other.record)), NOW)).code == "96"


def test_a_repeat_whose_first_is_not_found_is_96_and_sent_nowhere() -> None:
    here, there = two_workers()
    yesterday = row(here.approved_sale(), local_date="1121")  # the latest by its trace
    for loaded in (OriginalLoaded(None), OriginalLoaded(yesterday)):
        machine = there.transaction(sale())
        refused_as_repeat(machine)
        actions = machine.handle(loaded, NOW)
        assert kinds(actions) == ["Answer"] and answer_of(actions).code == "96"
        assert there.book.by_request(yesterday.request_key) is None
    unread = there.transaction(sale())
    refused_as_repeat(unread)
    assert answer_of(unread.handle(JournalFailed("server gone"), NOW)).code == "96"
    busy = there.transaction(sale())
    refused_as_repeat(busy)
    assert answer_of(busy.handle(Refused("busy"), NOW)).code == "91"


def test_a_void_refused_as_a_repeat_gives_its_reservation_back() -> None:
    here, there = two_workers()
    original = here.approved_sale()
    voided = there.transaction(void(original.rrn))
    actions = refused_as_repeat(voided, OriginalLoaded(row(original)))
    held = there.book.by_rrn(original.rrn)
    assert held is not None and not held.void_pending
    trace = ("POS00001", "898310048990001", "000042", "000200")
    assert actions[-1] == LoadOriginal(trace=trace, only_key=(*trace, "1122", "0200"))


def test_a_void_on_a_shared_journal_reads_the_original_again_even_when_held() -> None:
    here, there = two_workers()
    original = here.approved_sale()
    there.book.add(row(original))  # an old copy: another worker voided it since
    machine = there.transaction(void(original.rrn))
    assert machine.start() == [LoadOriginal(rrn=original.rrn)]
    outcome = answer_of(machine.handle(OriginalLoaded(row(original, voided=True)), NOW))
    assert outcome.code == "12"
    assert there.book.by_rrn(original.rrn).voided  # type: ignore[union-attr]


def test_a_copy_with_this_workers_refund_pending_is_kept_over_the_journals() -> None:
    here, there = two_workers()
    original = here.approved_sale()
    there.book.add(row(original))
    first = there.transaction(refund(original.rrn, 6000))
    drive(first, OriginalLoaded(row(original)), Admitted())
    assert there.book.by_rrn(original.rrn).refund_reserved == 6000  # type: ignore[union-attr]
    second = there.transaction(refund(original.rrn, 6000, stan="000301"))
    drive(second, OriginalLoaded(row(original)))
    assert answer_of(second.handle(Admitted(), NOW)).code == "61"


def test_a_reversal_on_a_shared_journal_reads_its_original_and_waits_for_it_to_end() -> None:
    here, there = two_workers()
    first = here.transaction(sale())
    drive(first, Admitted(), LinkGranted("000007"), Journaled())
    assert first.record is not None
    there.book.add(row(first.record))  # held, but not in flight here
    machine = there.reversal(reversal_of(first.record))
    assert kinds(machine.start()) == ["LoadOriginal"]
    actions = machine.handle(OriginalLoaded(row(first.record)), NOW)
    assert actions == [AwaitFirst(first.record.rrn, elsewhere=True)]
    drive(first, BankAnswered("0210", {39: "00", 38: "A1B2C3"}), Journaled())
    changes = journal_of(machine.handle(FirstFinished(row(first.record)), NOW))
    assert [type(c) for c in changes] == [ReversalQueued, TxnUpdated]
    updated = changes[-1]
    assert isinstance(updated, TxnUpdated)
    assert (updated.state, updated.reversed) == ("approved", True)


def test_a_reversal_of_a_first_that_stays_in_flight_elsewhere_is_96_and_queues_nothing() -> None:
    here, there = two_workers()
    first = here.transaction(sale())
    drive(first, Admitted(), LinkGranted("000007"), Journaled())
    assert first.record is not None
    machine = there.reversal(reversal_of(first.record))
    machine.start()
    machine.handle(OriginalLoaded(row(first.record)), NOW)
    actions = machine.handle(FirstFinished(row(first.record)), NOW)
    assert kinds(actions) == ["Answer"] and answer_of(actions).code == "96"
    assert not there.book.by_rrn(first.record.rrn).reversed  # type: ignore[union-attr]
