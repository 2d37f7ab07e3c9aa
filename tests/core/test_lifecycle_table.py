"""The transaction machines' tables (switch.core.lifecycle), as synchronous tables of
cases: a sequence of events in, the phase and the kinds of action after each step out.
The table decides: each phase has one handler, the driver alone assigns the phase, and
an event a phase does not expect, or a move its row does not allow, is our own bug."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from switch.config import StandInSection
from switch.core import lifecycle
from switch.core.lifecycle import (
    HANDLERS,
    REVERSAL_HANDLERS,
    REVERSAL_TRANSITIONS,
    START,
    TRANSITIONS,
    AcquireLink,
    Admitted,
    BankAnswered,
    BankTimedOut,
    BankTransaction,
    Event,
    FirstElsewhere,
    FirstFinished,
    Journaled,
    JournalFailed,
    LinkGranted,
    LinkLost,
    NotSent,
    OriginalLoaded,
    Phase,
    Refused,
    ReversalPhase,
    Start,
    Stopped,
    TerminalReversal,
)
from switch.core.routing import BinTable
from switch.core.stip import StandInDesk
from switch.errors import LocalProtocolError
from tests.core.test_lifecycle import NOW, World, reversal_of, sale, void

Step = tuple[Event | Start, str, list[str]]
"""An event fed (START: the machine started), the phase it leads to, the actions."""

APPROVED = BankAnswered("0210", {39: "00", 38: "A1B2C3"})
UP_TO_THE_BANK: list[Step] = [
    (START, "admitting", ["Admit"]),
    (Admitted(), "waiting_for_link", ["AcquireLink"]),
    (LinkGranted("000007"), "journaling_request", ["Journal"]),
    (Journaled(), "at_bank", ["SendToBank"]),
]

SALES: dict[str, list[Step]] = {
    "approved": [
        *UP_TO_THE_BANK,
        (APPROVED, "journaling_answer", ["ReleaseLink", "Journal"]),
        (Journaled(), "answered", ["Answer"]),
    ],
    "declined": [
        *UP_TO_THE_BANK,
        (BankAnswered("0210", {39: "51"}), "journaling_answer", ["ReleaseLink", "Journal"]),
        (Journaled(), "answered", ["Answer"]),
    ],
    "no admission": [
        (START, "admitting", ["Admit"]),
        (Refused("busy"), "answered", ["Answer"]),
    ],
    "no link": [
        *UP_TO_THE_BANK[:2],
        (Refused("no link"), "answered", ["Answer"]),
    ],
    "request not journaled": [
        *UP_TO_THE_BANK[:3],
        (JournalFailed("disk full"), "answered", ["ReleaseLink", "Answer"]),
    ],
    "journaled first at another worker": [
        *UP_TO_THE_BANK[:3],
        (FirstElsewhere("repeat"), "loading_first", ["ReleaseLink", "LoadOriginal"]),
        (OriginalLoaded(None), "answered", ["Answer"]),
    ],
    "no answer in time": [
        *UP_TO_THE_BANK,
        (BankTimedOut(), "journaling_answer", ["ReleaseLink", "Journal"]),
        (Journaled(), "answered", ["NudgeReversals", "Answer"]),
    ],
    "link lost": [
        *UP_TO_THE_BANK,
        (LinkLost("reset"), "journaling_answer", ["ReleaseLink", "Journal"]),
        (Journaled(), "answered", ["NudgeReversals", "Answer"]),
    ],
    "never sent": [
        *UP_TO_THE_BANK,
        (NotSent("down"), "journaling_answer", ["ReleaseLink", "Journal"]),
        (Journaled(), "answered", ["Answer"]),
    ],
    "switch stopped": [
        *UP_TO_THE_BANK,
        (Stopped(), "journaling_answer", ["ReleaseLink", "Journal"]),
        (Journaled(), "answered", ["NudgeReversals", "Answer"]),
    ],
    "approval not journaled": [
        *UP_TO_THE_BANK,
        (APPROVED, "journaling_answer", ["ReleaseLink", "Journal"]),
        (JournalFailed("disk full"), "answered", ["ReverseUnjournaled", "Answer"]),
    ],
}


def run(machine: BankTransaction | TerminalReversal, steps: list[Step]) -> None:
    for event, phase, actions in steps:
        done = machine.start() if isinstance(event, Start) else machine.handle(event, NOW)
        assert (machine.phase, [type(a).__name__ for a in done]) == (phase, actions), event


@pytest.mark.parametrize("steps", SALES.values(), ids=SALES.keys())
def test_a_sales_phases_and_actions(steps: list[Step]) -> None:
    run(World().transaction(sale()), steps)


def test_a_repeat_of_a_first_in_flight_waits_for_it_then_takes_its_answer() -> None:
    world = World()
    first = world.transaction(sale())
    run(first, UP_TO_THE_BANK)
    assert first.rrn is not None
    world.in_flight.add(first.rrn)
    run(first, [(APPROVED, "journaling_answer", ["ReleaseLink", "Journal"])])
    run(
        world.transaction(sale()),
        [
            (START, "waiting_for_first", ["AwaitFirst"]),
            (FirstFinished(), "answered", ["Answer"]),
        ],
    )


def test_a_void_of_an_original_the_book_does_not_hold_is_loaded_first() -> None:
    run(
        World().transaction(void("633270000099")),
        [
            (START, "loading_original", ["LoadOriginal"]),
            (OriginalLoaded(None), "answered", ["Answer"]),  # 25: no such original
        ],
    )


def test_a_void_of_a_held_original_goes_to_its_bank() -> None:
    world = World()
    original = world.approved_sale()
    run(world.transaction(void(original.rrn)), UP_TO_THE_BANK)


def test_stand_in_off_answers_an_unavailable_bank_at_once() -> None:
    machine = World().transaction(sale())
    machine.stand_in = StandInDesk()  # off for every bank: answered as ever
    run(machine, [*UP_TO_THE_BANK[:2], (Refused("down", "no_link"), "answered", ["Answer"])])


def test_stand_in_on_journals_its_refusal_before_the_answer() -> None:
    machine = World().transaction(sale())  # no business date: not a sale it may take
    machine.stand_in = StandInDesk({"icbc": StandInSection(enabled=True)})
    run(
        machine,
        [
            *UP_TO_THE_BANK[:2],
            (Refused("down", "no_link"), "journaling_stand_in", ["Journal"]),
            (Journaled(), "answered", ["Answer"]),
        ],
    )


REVERSALS: dict[str, tuple[bool, list[Step]]] = {
    "of an approved sale": (
        True,
        [
            (START, "journaling", ["Journal"]),
            (Journaled(), "answered", ["NudgeReversals", "Answer"]),
        ],
    ),
    "not journaled": (
        True,
        [
            (START, "journaling", ["Journal"]),
            (JournalFailed("disk full"), "answered", ["ReverseUnjournaled", "Answer"]),
        ],
    ),
    "of nothing held": (
        False,
        [
            (START, "loading_original", ["LoadOriginal"]),
            (OriginalLoaded(None), "answered", ["Answer"]),
        ],
    ),
    "lookup refused": (
        False,
        [
            (START, "loading_original", ["LoadOriginal"]),
            (Refused("busy"), "answered", ["Answer"]),
        ],
    ),
}


@pytest.mark.parametrize(("approved", "steps"), REVERSALS.values(), ids=REVERSALS.keys())
def test_a_reversals_phases_and_actions(approved: bool, steps: list[Step]) -> None:
    world = World()
    # Not approved here: another worker's, not in this book.
    record = world.approved_sale() if approved else World().approved_sale()
    run(world.reversal(reversal_of(record)), steps)


# -- the tables themselves ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "handlers", "phases"),
    [
        (TRANSITIONS, HANDLERS, get_args(Phase)),
        (REVERSAL_TRANSITIONS, REVERSAL_HANDLERS, get_args(ReversalPhase)),
    ],
    ids=["transaction", "reversal"],
)
def test_every_phase_but_answered_has_one_handler_and_rows_that_lead_to_phases(
    table: dict[tuple[str, type], Any], handlers: dict[str, Any], phases: tuple[str, ...]
) -> None:
    assert set(handlers) == set(phases) - {"answered"}
    assert {phase for phase, _ in table} == set(handlers)
    for (phase, event_type), moves in table.items():
        targets = moves if isinstance(moves, tuple) else (moves,)
        assert targets and set(targets) <= set(phases), (phase, event_type)
        assert event_type is Start or event_type in get_args(Event), event_type
    # Every phase is reached by some row, and answered by a refusal from the start.
    assert {t for m in table.values() for t in (m if isinstance(m, tuple) else (m,))} == (
        set(phases) - {"received"}
    )


UNEXPECTED: list[tuple[list[Event], Event]] = [
    ([], Journaled()),  # admitting: it waits for a slot
    ([Admitted()], BankAnswered("0210", {39: "00"})),  # waiting_for_link: nothing sent
    ([Admitted(), LinkGranted("000007")], APPROVED),  # journaling_request: not yet sent
    ([Admitted(), LinkGranted("000007"), Journaled()], Journaled()),  # at_bank
]


@pytest.mark.parametrize(("before", "event"), UNEXPECTED)
def test_an_event_a_phase_does_not_expect_is_refused_and_changes_nothing(
    before: list[Event], event: Event
) -> None:
    machine = World().transaction(sale())
    machine.start()
    for earlier in before:
        machine.handle(earlier, NOW)
    phase = machine.phase
    with pytest.raises(LocalProtocolError, match=type(event).__name__):
        machine.handle(event, NOW)
    assert machine.phase == phase
    with pytest.raises(LocalProtocolError):
        machine.handle(START, NOW)  # type: ignore[arg-type]  # started once only


def test_an_answered_machine_expects_nothing() -> None:
    machine = World().transaction(sale())
    run(machine, SALES["no admission"])
    for event in (Admitted(), Journaled(), Refused("busy"), START):
        with pytest.raises(LocalProtocolError):
            machine.handle(event, NOW)  # type: ignore[arg-type]
    assert machine.phase == "answered"


def test_a_move_the_row_does_not_allow_is_our_bug_and_the_phase_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The handler chooses among the row's phases; the driver refuses any other choice
    rather than assigning it (the phase is assigned by the driver alone)."""
    machine = World().transaction(sale())
    machine.start()
    monkeypatch.setitem(HANDLERS, "admitting", lambda self, event, step: "at_bank")
    with pytest.raises(LocalProtocolError, match="led to at_bank"):
        machine.handle(Admitted(), NOW)
    assert machine.phase == "admitting"


def test_no_handler_assigns_a_phase() -> None:
    """Only the two drivers write ``.phase`` (and the constructors set ``received``)."""
    import inspect

    source = inspect.getsource(lifecycle)
    assignments = [line.strip() for line in source.splitlines() if "self.phase =" in line]
    assert sorted(assignments) == ["self.phase = to", "self.phase = to"]


def test_a_route_with_a_secondary_is_chosen_by_the_circuits_admission_found_open() -> None:
    """The circuits' state is an input (``Admitted.open_circuits``), not a call the
    machine makes into the trio layer."""
    world = World()
    table = BinTable([("622202", "icbc", "abc")])
    for open_circuits, bank, route in [
        (frozenset(), "icbc", "622202"),
        (frozenset({"icbc"}), "abc", "622202>abc"),
    ]:
        machine = world.transaction(sale(stan=f"0001{len(open_circuits)}"))
        machine.route = table.choose
        machine.start()
        assert machine.handle(Admitted(open_circuits), NOW)[-1] == AcquireLink(bank)
        assert (machine.bank, machine.route_name) == (bank, route)
