"""The machines' book changes (issue #20: book changes are actions the machine returns,
not calls it makes), synchronously: each step of the plain machines, the book changes
it returns first, in order; the book untouched by the step itself, and changed only
when the changes are carried out (``TransactionBook.apply``), as the switchboard does
at once after the step."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from switch.config import StandInSection
from switch.core.book import (
    BOOK_CHANGES,
    Forget,
    Keep,
    MarkReversed,
    MarkSent,
    MarkState,
    MarkStoodIn,
    Reserve,
    Settle,
    TransactionBook,
    TxnRecord,
)
from switch.core.changes import ReversalQueued, TxnStarted, TxnUpdated
from switch.core.lifecycle import (
    Action,
    Admitted,
    Answer,
    BankAnswered,
    BankTimedOut,
    BankTransaction,
    Event,
    FirstElsewhere,
    Journal,
    Journaled,
    JournalFailed,
    LinkGranted,
    Refused,
    ReverseUnjournaled,
    Start,
    TerminalReversal,
)
from switch.core.stip import StandInDesk
from tests.core.test_lifecycle import (
    CARDS,
    INSTITUTION,
    NOW,
    STAMP,
    World,
    refund,
    reversal_of,
    route,
    sale,
    void,
)


def plain(world: World, request: Any) -> BankTransaction:
    """The machine itself: its book changes are returned, not carried out."""
    return BankTransaction(
        request, STAMP, book=world.book, cards=CARDS, route=route, institution=INSTITUTION,
        allocate_rrn=lambda stamp: world.rrns.allocate(stamp.local, stamp.rrn_day),
        in_flight=world.in_flight.__contains__, now=NOW,
    )  # fmt: skip


def plain_reversal(world: World, record: TxnRecord) -> TerminalReversal:
    return TerminalReversal(
        reversal_of(record), book=world.book, cards=CARDS, now=NOW,
        in_flight=world.in_flight.__contains__,
    )  # fmt: skip


def state_of(book: TransactionBook) -> list[tuple[Any, ...]]:
    """Everything the book holds, by value."""
    return [msgspec.structs.astuple(record) for record in book._by_rrn.values()] + [
        (len(book._by_trace), len(book._by_request), len(book._by_online_id))
    ]


def step(
    book: TransactionBook, machine: BankTransaction | TerminalReversal, event: Event | Start
) -> list[Action]:
    """One step: the book as it was until the changes are carried out, then carried out
    in order, as the switchboard does."""
    before = state_of(book)
    actions = machine.start() if isinstance(event, Start) else machine.handle(event, NOW)
    assert state_of(book) == before, "a step changed the book itself"
    booked = [action for action in actions if isinstance(action, BOOK_CHANGES)]
    assert actions[: len(booked)] == booked, "book changes come first"
    for change in booked:
        book.apply(change)
    return actions


def names(actions: list[Action]) -> list[str]:
    return [type(action).__name__ for action in actions]


AT_BANK = (Start(), Admitted(), LinkGranted("000007"), Journaled())

# (case, request, events, what each step returns)
STEPS: list[tuple[str, Any, tuple[Event | Start, ...], list[list[str]]]] = [
    (
        "a sale approved",
        lambda original: sale(stan="000500"),
        (*AT_BANK, BankAnswered("0210", {39: "00", 38: "A1B2C3"}), Journaled()),
        [
            ["Admit"],
            ["Keep", "AcquireLink"],
            ["MarkSent", "Journal"],
            ["SendToBank"],
            ["Settle", "ReleaseLink", "Journal"],
            ["Answer"],
        ],
    ),
    (
        "a void approved",
        lambda original: void(original.rrn),
        (*AT_BANK, BankAnswered("0210", {39: "00"}), Journaled()),
        [
            ["Admit"],
            ["Reserve", "Keep", "AcquireLink"],
            ["MarkSent", "Journal"],
            ["SendToBank"],
            ["Settle", "ReleaseLink", "Journal"],
            ["Answer"],
        ],
    ),
    (
        "a refund without an answer: reversed",
        lambda original: refund(original.rrn, 4000),
        (*AT_BANK, BankTimedOut(), Journaled()),
        [
            ["Admit"],
            ["Reserve", "Keep", "AcquireLink"],
            ["MarkSent", "Journal"],
            ["SendToBank"],
            ["Settle", "MarkReversed", "ReleaseLink", "Journal"],
            ["NudgeReversals", "Answer"],
        ],
    ),
    (
        "a refund no link takes: released",
        lambda original: refund(original.rrn, 4000),
        (Start(), Admitted(), Refused("no link")),
        [["Admit"], ["Reserve", "Keep", "AcquireLink"], ["Settle", "Answer"]],
    ),
    (
        "a void approved, its answer not journaled",
        lambda original: void(original.rrn),
        (*AT_BANK, BankAnswered("0210", {39: "00"}), JournalFailed("disk full")),
        [
            ["Admit"],
            ["Reserve", "Keep", "AcquireLink"],
            ["MarkSent", "Journal"],
            ["SendToBank"],
            ["Settle", "ReleaseLink", "Journal"],
            ["MarkReversed", "MarkState", "ReverseUnjournaled", "Answer"],
        ],
    ),
    (
        "a void whose start is not journaled",
        lambda original: void(original.rrn),
        (Start(), Admitted(), LinkGranted("000007"), JournalFailed("disk full")),
        [
            ["Admit"],
            ["Reserve", "Keep", "AcquireLink"],
            ["MarkSent", "Journal"],
            ["Settle", "ReleaseLink", "Answer"],
        ],
    ),
    (
        "a refund over what is left: refused, nothing reserved or kept",
        lambda original: refund(original.rrn, 10001),
        (Start(), Admitted()),
        [["Admit"], ["Answer"]],
    ),
]


@pytest.mark.parametrize(
    ("case", "request_of", "events", "expected"), STEPS, ids=[case[0] for case in STEPS]
)
def test_each_step_returns_its_book_changes_and_leaves_the_book_to_the_driver(
    case: str, request_of: Any, events: tuple[Event | Start, ...], expected: list[list[str]]
) -> None:
    world = World()
    original = world.approved_sale()
    machine = plain(world, request_of(original))
    returned = [names(step(world.book, machine, event)) for event in events]
    assert returned == expected
    assert machine.phase == "answered"


def test_the_changes_name_what_they_change() -> None:
    world = World()
    original = world.approved_sale()
    machine = plain(world, refund(original.rrn, 4000))
    step(world.book, machine, Start())
    admitted = step(world.book, machine, Admitted())
    record = machine.record
    assert record is not None
    assert admitted[:2] == [Reserve(original, "remaining", 4000), Keep(record)]
    assert original.refund_reserved == 4000 and world.book.by_rrn(record.rrn) is record
    [sent, journal] = step(world.book, machine, LinkGranted("000007"))
    assert isinstance(sent, MarkSent) and sent.record is record and sent.sent.stan == "000007"
    assert isinstance(journal, Journal)
    [started] = journal.changes
    # The journal's copy is the record as the change leaves it; the book's is that now.
    assert isinstance(started, TxnStarted) and started.record is not record
    assert started.record.sent == sent.sent == record.sent
    step(world.book, machine, Journaled())
    answered = machine.handle(BankAnswered("0210", {39: "00"}), NOW)
    assert answered[0] == Settle(record, "approved", "00", None, None)
    # Not carried out yet: the book still says what it said before the answer ...
    assert (record.state, original.refunded, original.refund_reserved) == ("sending", 0, 4000)
    # ... while the journal's changes say what it will say.
    journal = answered[-1]
    assert isinstance(journal, Journal)
    updated, of_original = journal.changes
    assert isinstance(updated, TxnUpdated) and updated.rrn == record.rrn
    assert updated.state == "approved"
    assert isinstance(of_original, TxnUpdated) and of_original.rrn == original.rrn
    assert of_original.refunded == 4000 and "refunded 40.00 yuan" in (of_original.detail or "")
    world.book.apply(answered[0])
    assert (record.state, original.refunded, original.refund_reserved) == ("approved", 4000, 0)


def test_no_answer_reverses_in_the_same_step_and_journals_it_reversed() -> None:
    world = World()
    original = world.approved_sale()
    machine = plain(world, void(original.rrn))
    for event in AT_BANK:
        step(world.book, machine, event)
    actions = step(world.book, machine, BankTimedOut())
    record = machine.record
    assert record is not None
    assert actions[:2] == [Settle(record, "no_answer", "68", None, None), MarkReversed(record)]
    journal = actions[-1]
    assert isinstance(journal, Journal)
    queued, updated, of_original = journal.changes
    assert isinstance(queued, ReversalQueued) and queued.rrn == record.rrn
    assert isinstance(updated, TxnUpdated) and (updated.state, updated.reversed) == (
        "no_answer", True,
    )  # fmt: skip
    assert isinstance(of_original, TxnUpdated) and not of_original.voided
    assert record.reversed and not original.voided and not original.void_pending


def test_a_journal_failure_after_approval_reverses_from_the_state_the_changes_leave() -> None:
    world = World()
    original = world.approved_sale()
    machine = plain(world, void(original.rrn))
    for event in (*AT_BANK, BankAnswered("0210", {39: "00"})):
        step(world.book, machine, event)
    assert original.voided
    record = machine.record
    assert record is not None
    actions = step(world.book, machine, JournalFailed("disk full"))
    assert actions[:2] == [MarkReversed(record), MarkState(record, "no_answer", "00")]
    reverse = actions[2]
    assert isinstance(reverse, ReverseUnjournaled) and reverse.record is not record
    assert (reverse.record.state, reverse.record.reversed) == ("no_answer", True)
    assert not original.voided  # the sale stands again
    assert isinstance(actions[-1], Answer) and actions[-1].outcome.code == "96"


def test_a_request_refused_as_a_repeat_releases_and_forgets_its_record() -> None:
    world = World()
    original = world.approved_sale()
    machine = plain(world, void(original.rrn))
    for event in (Start(), Admitted(), LinkGranted("000009")):
        step(world.book, machine, event)
    assert original.void_pending
    record = machine.record
    assert record is not None
    # The journal refused its start: another worker journaled this request first.
    actions = step(world.book, machine, FirstElsewhere("already journaled"))
    assert actions[:2] == [Settle(record, "not_sent", None, None, None), Forget(record)]
    assert names(actions[2:]) == ["ReleaseLink", "LoadOriginal"]
    assert not original.void_pending and world.book.by_rrn(record.rrn) is None


def test_a_terminal_reversal_marks_its_original_reversed_as_a_change() -> None:
    world = World()
    original = world.approved_sale()
    machine = plain_reversal(world, original)
    actions = step(world.book, machine, Start())
    assert actions[0] == MarkReversed(original)
    assert names(actions[1:]) == ["Journal"]
    journal = actions[1]
    assert isinstance(journal, Journal)
    updated = journal.changes[-1]
    assert isinstance(updated, TxnUpdated) and updated.reversed
    assert original.reversed


def test_two_refunds_handed_over_together_see_each_others_reservation() -> None:
    """The invariant the changes' timing keeps: carried out right after the step that
    returned them, before the next request's step, a reservation is seen at once."""
    world = World()
    original = world.approved_sale()
    first = plain(world, refund(original.rrn, 6000, stan="000301"))
    second = plain(world, refund(original.rrn, 6000, stan="000302"))
    step(world.book, first, Start())
    step(world.book, second, Start())
    assert names(step(world.book, first, Admitted())) == ["Reserve", "Keep", "AcquireLink"]
    refused = step(world.book, second, Admitted())
    assert names(refused) == ["Answer"]
    assert isinstance(refused[-1], Answer) and refused[-1].outcome.code == "61"
    assert original.refund_reserved == 6000


def test_a_reservation_not_yet_carried_out_is_not_seen() -> None:
    """Why the driver must carry the changes out at once: the book is what the next
    request reads, and a change still in hand is in no book."""
    world = World()
    original = world.approved_sale()
    first = plain(world, refund(original.rrn, 6000, stan="000301"))
    second = plain(world, refund(original.rrn, 6000, stan="000302"))
    first.start()
    second.start()
    held_back = first.handle(Admitted(), NOW)
    assert isinstance(held_back[0], Reserve)
    also = second.handle(Admitted(), NOW)
    assert isinstance(also[0], Reserve)  # both would reserve: 12,000 of 10,000


def test_a_sale_stood_in_settles_and_marks_its_record_as_changes() -> None:
    world = World()
    request = sale()
    request = msgspec.structs.replace(
        request, card=msgspec.structs.replace(request.card, expiry="2812")
    )
    machine = BankTransaction(
        request, STAMP, book=world.book, cards=CARDS, route=route, institution=INSTITUTION,
        allocate_rrn=lambda stamp: world.rrns.allocate(stamp.local, stamp.rrn_day),
        in_flight=world.in_flight.__contains__, now=NOW, business_date="2025-11-22", mcc="5411",
        stand_in=StandInDesk({"icbc": StandInSection(enabled=True, bins=["622202"])}),
    )  # fmt: skip
    step(world.book, machine, Start())
    step(world.book, machine, Admitted())
    record = machine.record
    assert record is not None
    actions = step(world.book, machine, Refused("bank icbc: every link is down", "no_link"))
    settle, mark, journal = actions
    assert isinstance(settle, Settle) and (settle.record, settle.state, settle.code) == (
        record, "approved", "00",
    )  # fmt: skip
    assert mark == MarkStoodIn(record, "no_link")
    assert isinstance(journal, Journal) and journal.durable
    started = journal.changes[0]
    assert isinstance(started, TxnStarted) and started.record is not record
    assert (started.record.state, started.record.stand_in, started.record.advice) == (
        "approved", "no_link", "queued",
    )  # fmt: skip
    assert (record.state, record.stand_in, record.advice) == ("approved", "no_link", "queued")
