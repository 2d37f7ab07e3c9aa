"""The risk rules in the sans-IO lifecycle: where they run, what a decline journals and
sends (nothing), when a reservation is given back, and what leaves the windows."""

from __future__ import annotations

from typing import Any

import pytest

from switch.core.changes import TxnStarted
from switch.core.lifecycle import (
    Admitted,
    BankAnswered,
    BankTimedOut,
    BankTransaction,
    Event,
    Journaled,
    JournalFailed,
    LinkGranted,
    Refused,
    TerminalReversal,
)
from switch.core.model import OriginalRef, Reversal, Void
from switch.core.risk import RiskEngine, load_rules
from switch.core.riskgate import RiskGate
from tests.core import test_preauth as preauth_tests
from tests.core.booked import BookedReversal, BookedTransaction
from tests.core.test_lifecycle import (
    CARDS,
    INSTITUTION,
    NOW,
    PAN,
    POS,
    STAMP,
    World,
    answer_of,
    drive,
    journal_of,
    kinds,
    reversal_of,
    route,
    sale,
)

RULES = b"""
[[rules]]
id = "cap"
mode = "enforce"
kind = "amount_cap"
max_fen = 50000
action = "decline"
code = "61"

[[rules]]
id = "watch"
mode = "shadow"
kind = "amount_cap"
max_fen = 100
action = "decline"
code = "59"

[[rules]]
id = "day"
mode = "enforce"
kind = "velocity"
key = "card"
window = "day"
counts = "approved"
max_fen = 30000
action = "decline"
code = "61"
"""


def gate() -> RiskGate:
    rules = load_rules(RULES, source="risk.toml", read_beside=lambda name: b"")
    return RiskGate(RiskEngine(rules), card_hashes=CARDS.card_hashes)


class RiskWorld(World):
    def __init__(self) -> None:
        super().__init__()
        self.risk = gate()

    def transaction(self, request: object, finalize: object = None) -> BankTransaction:
        return BookedTransaction(
            request, STAMP, book=self.book, cards=CARDS, route=route,  # type: ignore[arg-type]
            institution=INSTITUTION,
            allocate_rrn=lambda stamp: self.rrns.allocate(stamp.local, stamp.rrn_day),
            in_flight=self.in_flight.__contains__, now=NOW, risk=self.risk,
        )  # fmt: skip

    def reversal(self, request: Reversal) -> TerminalReversal:
        return BookedReversal(
            request, book=self.book, cards=CARDS, now=NOW,
            in_flight=self.in_flight.__contains__, risk=self.risk,
        )  # fmt: skip

    def held(self) -> int:
        """The card's amount in the ``day`` window."""
        hashes = CARDS.card_hashes(PAN)
        return self.risk.engine.window("day").held(hashes[0], NOW)[1]


def test_a_decline_is_journaled_declined_with_its_rule_and_asks_for_no_link() -> None:
    world = RiskWorld()
    machine = world.transaction(sale(60000))
    actions = drive(machine, Admitted())
    assert kinds(actions) == ["Journal"]  # no AcquireLink: nothing goes to a bank
    [started] = journal_of(actions)
    assert isinstance(started, TxnStarted)
    record = started.record
    assert (record.state, record.code, record.sent) == ("declined", "61", None)
    assert (record.risk_rule, record.risk_shadow) == ("cap", "watch:decline:59")
    assert record.risk_version == world.risk.rules.version
    outcome = answer_of(machine.handle(Journaled(), NOW))
    assert (outcome.code, outcome.message, outcome.risk_rule) == (
        "61",
        "exceeds amount limit",
        "cap",
    )
    assert outcome.rrn == record.rrn and outcome.risk_shadow == "watch"
    assert world.held() == 0  # a declined request reserves nothing


def test_a_decline_whose_journal_fails_is_still_a_decline() -> None:
    machine = RiskWorld().transaction(sale(60000))
    outcome = answer_of(drive(machine, Admitted(), JournalFailed("disk gone")))
    assert outcome.code == "61" and outcome.detail is not None and "disk gone" in outcome.detail


AT_BANK: tuple[Event, ...] = (Admitted(), LinkGranted("000007"), Journaled())


@pytest.mark.parametrize(
    ("case", "events", "stands"),
    [
        ("approved", (*AT_BANK, BankAnswered("0210", {39: "00", 38: "A1"}), Journaled()), True),
        ("declined by the bank", (*AT_BANK, BankAnswered("0210", {39: "51"}), Journaled()), False),
        ("no answer", (*AT_BANK, BankTimedOut(), Journaled()), False),
        ("no link", (Admitted(), Refused("no link up")), False),
        ("answer not journaled", (*AT_BANK, BankAnswered("0210", {39: "00"}), JournalFailed("x")),
         False),
    ],
)  # fmt: skip
def test_a_reservation_stands_only_when_the_request_is_approved_and_journaled(
    case: str, events: tuple[Event, ...], stands: bool
) -> None:
    world = RiskWorld()
    machine = world.transaction(sale(20000))
    drive(machine, *events)
    assert machine.phase == "answered", case
    assert world.held() == (20000 if stands else 0), case
    assert machine.record is not None and machine.record.risk_version is not None


def test_the_windows_decide_a_second_sale_and_a_void_takes_the_first_out() -> None:
    world = RiskWorld()
    first = world.transaction(sale(20000, stan="000001"))
    drive(first, *AT_BANK, BankAnswered("0210", {39: "00", 38: "A1"}), Journaled())
    second = world.transaction(sale(20000, stan="000002"))
    assert answer_of(drive(second, Admitted(), Journaled())).code == "61"  # 40000 > 30000
    assert first.record is not None
    void = world.transaction(
        Void(
            acceptor=POS, stan="000003", batch="000042", request_mti="0200",
            processing_code="200000", amount=20000, currency="156",
            original=OriginalRef(rrn=first.record.rrn),
        )
    )  # fmt: skip
    answered = drive(void, *AT_BANK, BankAnswered("0210", {39: "00"}), Journaled())
    assert answer_of(answered).code == "00"
    assert void.record is not None and void.record.risk_version is None  # voids meet no rule
    assert world.held() == 0
    third = world.transaction(sale(20000, stan="000004"))
    assert kinds(drive(third, Admitted())) == ["AcquireLink"]


def test_a_terminals_reversal_takes_its_approved_sale_out_once() -> None:
    world = RiskWorld()
    first = world.transaction(sale(20000, stan="000001"))
    drive(first, *AT_BANK, BankAnswered("0210", {39: "00", 38: "A1"}), Journaled())
    assert first.record is not None and world.held() == 20000
    reversal = world.reversal(reversal_of(first.record))
    assert kinds(reversal.start()) == ["Journal"]
    assert answer_of(reversal.handle(Journaled(), NOW)).code == "00"
    assert world.held() == 0
    assert world.risk.remove(first.record, NOW) == 0  # gone already: never twice


# -- pre-authorisations and completions ---------------------------------------------------

PREAUTH_RULES = b"""
[[rules]]
id = "preauth-cap"
mode = "enforce"
kind = "amount_cap"
kinds = ["preauth"]
max_fen = 60000
action = "decline"
code = "61"

[[rules]]
id = "card-day"
mode = "enforce"
kind = "velocity"
key = "card"
window = "day"
counts = "approved"
max_count = 1
action = "decline"
code = "65"
"""


class PreauthWorld(preauth_tests.World):
    def __init__(self, blocked: tuple[str, ...] = ()) -> None:
        super().__init__()
        text = PREAUTH_RULES
        if blocked:
            values = ", ".join(f'"{value}"' for value in blocked)
            text += (
                b'\n[[rules]]\nid = "stolen"\nmode = "enforce"\nkind = "blocklist"\n'
                b'key = "card"\naction = "decline"\ncode = "62"\nvalues = [' + values.encode()
                + b"]\n"
            )  # fmt: skip
        rules = load_rules(text, source="risk.toml", read_beside=lambda name: b"")
        self.risk = RiskGate(RiskEngine(rules), card_hashes=preauth_tests.CARDS.card_hashes)

    def transaction(self, request: Any, *, business_date: str = "2025-11-22") -> BankTransaction:
        machine = super().transaction(request, business_date=business_date)
        machine.risk = self.risk
        return machine


def test_a_preauth_meets_every_rule_and_a_completion_only_the_blocklists() -> None:
    world = PreauthWorld()
    capped, _ = world.run(preauth_tests.preauth(70000, stan="000301"), None)
    assert answer_of(capped.handle(Journaled(), NOW)).code == "61"
    assert capped.record is not None and capped.record.risk_rule == "preauth-cap"
    record = world.preauth(50000)  # approved: one in the card's day window
    second, _ = world.run(preauth_tests.preauth(100, stan="000302"), None)
    assert answer_of(second.handle(Journaled(), NOW)).code == "65"
    # A completion counts nowhere and meets no velocity or cap: sent to the bank.
    done, _ = world.run(
        preauth_tests.completion(52000), BankAnswered("0210", {39: "00", 38: "C00001"})
    )
    assert answer_of(done.last).code == "00", answer_of(done.last)  # type: ignore[attr-defined]
    assert done.record is not None and done.record.risk_version is not None
    assert world.risk.past(done.record) is None  # never counted, nor rebuilt
    assert record.hold_state == "completed"


def test_a_completion_of_a_card_blocked_since_its_preauth_is_declined() -> None:
    world = PreauthWorld()
    world.preauth(50000)
    stolen = preauth_tests.CARDS.card_hashes(preauth_tests.PAN)[0]
    blocked = PreauthWorld(blocked=(stolen,))
    blocked.book, blocked.rrns = world.book, world.rrns  # the same pre-authorisation
    machine, _ = blocked.run(preauth_tests.completion(52000), None)
    outcome = answer_of(machine.handle(Journaled(), NOW))
    assert (outcome.code, outcome.risk_rule) == ("62", "stolen")
    assert machine.record is not None and machine.record.state == "declined"
