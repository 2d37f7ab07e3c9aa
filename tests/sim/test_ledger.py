"""The simulated bank's rules, as synchronous tables (no I/O)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from switch.config import SimulatorSection
from switch.sim.ledger import (
    BankReply,
    FieldValues,
    LedgerTotals,
    LinkSession,
    SimulatedBank,
    response_mti,
)

PAN = "6222021000111122221"
OTHER_PAN = "6222021000111133331"
ACQUIRER = "48990000"
DATE_TIME = "1122063015"
OPENING = 1_000_000

Fields = dict[int, str | bytes]


@pytest.fixture
def bank() -> SimulatedBank:
    return SimulatedBank(SimulatorSection(opening_balance=OPENING))


@pytest.fixture
def link() -> LinkSession:
    session = LinkSession()
    session.signed_on = True
    return session


_stans: Iterator[int] = itertools.count(1)


def _stan() -> str:
    return f"{next(_stans) % 1_000_000:06d}"


def network(code: str, stan: str = "000001") -> Fields:
    return {7: DATE_TIME, 11: stan, 70: code}


def financial(
    processing: str, amount: int, *, pan: str = PAN, original: Fields | None = None
) -> Fields:
    fields: Fields = {
        2: pan,
        3: processing,
        4: f"{amount:012d}",
        7: DATE_TIME,
        11: _stan(),
        12: "143015",
        13: "1122",
        22: "021",
        25: "00",
        32: ACQUIRER,
        37: "532614000123",
        41: "POS00001",
        42: "898310048990001",
        49: "156",
    }
    if original is not None:
        fields[90] = original_data(original)
    return fields


def original_data(original: Fields, mti: str = "0200") -> str:
    stan, when, acquirer = original[11], original[7], original[32]
    assert isinstance(stan, str) and isinstance(when, str) and isinstance(acquirer, str)
    forwarding = original.get(33, "0")
    assert isinstance(forwarding, str)
    return f"{mti}{stan}{when}{acquirer.zfill(11)}{forwarding.zfill(11)}"


def sale(amount: int, *, pan: str = PAN) -> Fields:
    return financial("000000", amount, pan=pan)


def void(original: Fields, amount: int) -> Fields:
    pan = original[2]
    assert isinstance(pan, str)
    return financial("020000", amount, pan=pan, original=original)


def refund(original: Fields, amount: int) -> Fields:
    pan = original[2]
    assert isinstance(pan, str)
    return financial("200000", amount, pan=pan, original=original)


def reversal(original: Fields, mti: str = "0400") -> Fields:
    fields = {n: original[n] for n in (2, 3, 4, 32, 37, 41, 42, 49)}
    fields[7] = "1122063520"
    fields[11] = _stan()
    fields[90] = original_data(original)
    return fields


def inquiry(pan: str = PAN) -> Fields:
    return financial("310000", 0, pan=pan)


def send(bank: SimulatedBank, link: LinkSession, mti: str, fields: FieldValues) -> BankReply:
    reply = bank.respond(mti, fields, link)
    assert reply is not None
    return reply


def code(bank: SimulatedBank, link: LinkSession, mti: str, fields: FieldValues) -> str:
    return send(bank, link, mti, fields).response_code


def approve(bank: SimulatedBank, link: LinkSession, amount: int, *, pan: str = PAN) -> Fields:
    request = sale(amount, pan=pan)
    assert code(bank, link, "0200", request) == "00"
    return request


# -- MTIs and network management ----------------------------------------------------


@pytest.mark.parametrize(
    ("request_mti", "expected"),
    [
        ("0200", "0210"),
        ("0400", "0410"),
        ("0401", "0410"),
        ("0800", "0810"),
        ("0100", "0110"),
        ("0210", None),
        ("0810", None),
        ("02x0", None),
        ("020", None),
    ],
)
def test_response_mti(request_mti: str, expected: str | None) -> None:
    assert response_mti(request_mti) == expected


def test_sign_on_echoes_and_marks_the_link(bank: SimulatedBank) -> None:
    link = LinkSession()
    reply = send(bank, link, "0800", network("001", "000042"))
    assert reply == BankReply("0810", {7: DATE_TIME, 11: "000042", 39: "00", 70: "001"})
    assert link.signed_on


def test_echo_and_sign_off(bank: SimulatedBank, link: LinkSession) -> None:
    assert send(bank, link, "0800", network("301")).fields == {
        7: DATE_TIME,
        11: "000001",
        39: "00",
        70: "301",
    }
    assert link.signed_on
    assert code(bank, link, "0800", network("002")) == "00"
    assert not link.signed_on
    assert code(bank, link, "0200", sale(100)) == "91"


@pytest.mark.parametrize(
    ("mti", "fields"),
    [
        ("0200", sale(100)),
        ("0200", inquiry()),
        ("0400", reversal(sale(100))),
        ("0401", reversal(sale(100))),
        ("0800", network("301")),
        ("0800", network("002")),
    ],
)
def test_not_signed_on_answers_91(bank: SimulatedBank, mti: str, fields: Fields) -> None:
    link = LinkSession()
    reply = send(bank, link, mti, fields)
    assert reply.mti == response_mti(mti)
    assert reply.response_code == "91"
    assert bank.totals() == LedgerTotals()


def test_links_sign_on_separately(bank: SimulatedBank) -> None:
    first, second = LinkSession(), LinkSession()
    send(bank, first, "0800", network("001"))
    assert code(bank, first, "0200", sale(100)) == "00"
    assert code(bank, second, "0200", sale(100)) == "91"


@pytest.mark.parametrize(
    ("mti", "fields", "expected"),
    [
        ("0800", network("999"), "40"),
        ("0800", {7: DATE_TIME, 11: "000001", 70: "301", 41: "POS00001"}, "00"),
        ("0800", {11: "000001", 70: "301"}, "30"),
        ("0100", sale(100), "40"),  # a 0100 of no product (3 = 00): function not supported
        ("0600", sale(100), "12"),
        ("0200", financial("990000", 100), "40"),
        ("0200", {k: v for k, v in sale(100).items() if k != 3}, "30"),
        ("0200", {k: v for k, v in sale(100).items() if k != 41}, "30"),
        ("0200", {k: v for k, v in sale(100).items() if k != 2}, "30"),
        ("0200", sale(100) | {4: "00000000001x"}, "30"),
        ("0200", financial("020000", 100), "30"),  # a void without 90
        ("0200", financial("200000", 100) | {90: "0200"}, "30"),
        ("0400", {k: v for k, v in reversal(sale(100)).items() if k != 90}, "30"),
    ],
)
def test_unknown_and_malformed_requests(
    bank: SimulatedBank, link: LinkSession, mti: str, fields: Fields, expected: str
) -> None:
    assert code(bank, link, mti, fields) == expected
    assert bank.totals().approved == 0


def test_responses_are_never_answered(bank: SimulatedBank, link: LinkSession) -> None:
    assert bank.respond("0210", sale(100), link) is None
    assert bank.respond("0810", network("001"), LinkSession()) is None


def test_busy_answers_91_without_touching_the_ledger(bank: SimulatedBank) -> None:
    reply = bank.busy("0200", sale(100))
    assert reply is not None and reply.mti == "0210" and reply.response_code == "91"
    assert bank.busy("0210", sale(100)) is None
    assert bank.totals() == LedgerTotals()


# -- sales ----------------------------------------------------------------------------


def test_sale_approval_echoes_and_adds_38_and_15(bank: SimulatedBank, link: LinkSession) -> None:
    request = sale(10_000) | {12: "143015", 33: "12345", 43: "SHOP"}
    reply = send(bank, link, "0200", request)
    assert reply.mti == "0210"
    echoed = {n: request[n] for n in (2, 3, 4, 7, 11, 32, 37, 41, 42, 49)}
    assert reply.fields == echoed | {39: "00", 38: "000001", 15: "1122"}
    auth = send(bank, link, "0200", sale(100)).fields[38]
    assert auth == "000002"
    assert bank.balance(PAN) == OPENING - 10_100


def test_track2_only_sale_uses_the_pan_of_track2(bank: SimulatedBank, link: LinkSession) -> None:
    request = {k: v for k, v in sale(100).items() if k != 2} | {35: f"{PAN}=2512101"}
    assert code(bank, link, "0200", request) == "00"
    assert bank.balance(PAN) == OPENING - 100


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (10_000, "00"),
        (12_345, "00"),
        (100_05, "05"),
        (100_51, "51"),
        (100_54, "54"),
        (100_61, "61"),
        (5, "05"),
        (0, "13"),
        (OPENING, "00"),
        (OPENING + 100, "51"),  # more than the balance
    ],
)
def test_sale_decisions(bank: SimulatedBank, link: LinkSession, amount: int, expected: str) -> None:
    reply = send(bank, link, "0200", sale(amount))
    assert reply.response_code == expected
    assert (38 in reply.fields) == (expected == "00")
    approved = amount if expected == "00" else 0
    assert bank.totals().approved == approved
    assert bank.totals().declines == (0 if expected == "00" else 1)
    assert bank.balance(PAN) == OPENING - approved


@pytest.mark.parametrize(
    ("expiry", "expected"), [("2612", "00"), ("2701", "00"), ("2611", "54"), ("2001", "54")]
)
def test_a_past_expiry_in_14_is_declined_54(expiry: str, expected: str, link: LinkSession) -> None:
    bank = SimulatedBank(
        SimulatorSection(opening_balance=OPENING),
        clock=lambda: datetime(2026, 12, 31, 23, 59, tzinfo=UTC),
    )
    assert code(bank, link, "0200", {**sale(10_000), 14: expiry}) == expected
    assert code(bank, link, "0200", {**inquiry(), 14: expiry}) == expected
    assert bank.totals().approved == (10_000 if expected == "00" else 0)
    assert code(bank, link, "0200", {**sale(10_000), 14: "2613"}) == "30"


def test_sale_ending_68_is_never_answered(bank: SimulatedBank, link: LinkSession) -> None:
    assert bank.respond("0200", sale(100_68), link) is None
    assert bank.totals() == LedgerTotals()


def test_balance_runs_out(bank: SimulatedBank, link: LinkSession) -> None:
    approve(bank, link, OPENING - 1_000)
    assert code(bank, link, "0200", sale(1_001)) == "51"
    assert code(bank, link, "0200", sale(1_000)) == "00"
    assert bank.balance(PAN) == 0
    assert bank.balance(OTHER_PAN) == OPENING


def test_duplicate_sale_is_94(bank: SimulatedBank, link: LinkSession) -> None:
    request = approve(bank, link, 100)
    assert code(bank, link, "0200", request) == "94"
    assert bank.totals().approvals == 1


# -- balance inquiry ------------------------------------------------------------------


def test_balance_inquiry(bank: SimulatedBank, link: LinkSession) -> None:
    reply = send(bank, link, "0200", inquiry())
    assert reply.response_code == "00"
    assert reply.fields[54] == f"1002156C{OPENING:012d}"
    approve(bank, link, 12_345)
    approve(bank, link, 100, pan=OTHER_PAN)
    assert send(bank, link, "0200", inquiry()).fields[54] == f"1002156C{OPENING - 12_345:012d}"
    assert 38 not in reply.fields


def test_balance_inquiry_uses_the_configured_currency(link: LinkSession) -> None:
    bank = SimulatedBank(SimulatorSection(opening_balance=500, currency="344"))
    assert send(bank, link, "0200", inquiry()).fields[54] == "1002344C000000000500"


# -- void -----------------------------------------------------------------------------


def test_void(bank: SimulatedBank, link: LinkSession) -> None:
    original = approve(bank, link, 10_000)
    reply = send(bank, link, "0200", void(original, 10_000))
    assert reply.response_code == "00"
    assert 38 in reply.fields and reply.fields[15] == "1122"
    assert bank.balance(PAN) == OPENING
    totals = bank.totals()
    assert (totals.voided, totals.voids, totals.net) == (10_000, 1, 0)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda sale_: void(sale_ | {11: "999999"}, 10_000), "25"),  # unknown STAN
        (lambda sale_: void(sale_ | {7: "1122063016"}, 10_000), "25"),
        (lambda sale_: void(sale_ | {32: "1"}, 10_000), "25"),
        (lambda sale_: void(sale_ | {33: "1"}, 10_000), "25"),
        (lambda sale_: void(sale_ | {2: OTHER_PAN}, 10_000), "25"),
        (lambda sale_: void(sale_, 9_999), "64"),
        (lambda sale_: void(sale_, 10_001), "64"),
        (lambda sale_: void(sale_, 10_005), "64"),  # the decline hooks do not apply
    ],
)
def test_void_refused(
    bank: SimulatedBank, link: LinkSession, make: Callable[[Fields], Fields], expected: str
) -> None:
    original = approve(bank, link, 10_000)
    assert code(bank, link, "0200", make(original)) == expected
    assert bank.totals().voided == 0
    assert bank.balance(PAN) == OPENING - 10_000


def test_void_twice_is_12(bank: SimulatedBank, link: LinkSession) -> None:
    original = approve(bank, link, 10_000)
    assert code(bank, link, "0200", void(original, 10_000)) == "00"
    assert code(bank, link, "0200", void(original, 10_000)) == "12"
    assert bank.totals().voids == 1


def test_void_of_a_reversed_sale_is_12(bank: SimulatedBank, link: LinkSession) -> None:
    original = approve(bank, link, 10_000)
    assert code(bank, link, "0400", reversal(original)) == "00"
    assert code(bank, link, "0200", void(original, 10_000)) == "12"


def test_void_of_a_declined_sale_is_25(bank: SimulatedBank, link: LinkSession) -> None:
    declined = sale(100_51)
    assert code(bank, link, "0200", declined) == "51"
    assert code(bank, link, "0200", void(declined, 100_51)) == "25"


def test_void_of_a_refunded_sale_is_12(bank: SimulatedBank, link: LinkSession) -> None:
    original = approve(bank, link, 10_000)
    assert code(bank, link, "0200", refund(original, 1_000)) == "00"
    assert code(bank, link, "0200", void(original, 10_000)) == "12"


# -- refund ---------------------------------------------------------------------------


def test_refund_in_parts(bank: SimulatedBank, link: LinkSession) -> None:
    original = approve(bank, link, 10_000)
    assert code(bank, link, "0200", refund(original, 6_000)) == "00"
    assert code(bank, link, "0200", refund(original, 4_001)) == "61"
    assert code(bank, link, "0200", refund(original, 4_000)) == "00"
    assert code(bank, link, "0200", refund(original, 1)) == "61"
    totals = bank.totals()
    assert (totals.refunded, totals.refunds, totals.net, totals.declines) == (10_000, 2, 0, 2)
    assert bank.balance(PAN) == OPENING


@pytest.mark.parametrize(
    ("amount", "expected"),
    [(10_000, "00"), (10_001, "61"), (1_005, "00"), (1_068, "00"), (0, "13")],
)
def test_refund_decisions(
    bank: SimulatedBank, link: LinkSession, amount: int, expected: str
) -> None:
    original = approve(bank, link, 10_000)
    assert code(bank, link, "0200", refund(original, amount)) == expected


def test_refund_refused(bank: SimulatedBank, link: LinkSession) -> None:
    original = approve(bank, link, 10_000)
    assert code(bank, link, "0200", refund(original | {11: "999999"}, 100)) == "25"
    assert code(bank, link, "0200", void(original, 10_000)) == "00"
    assert code(bank, link, "0200", refund(original, 100)) == "12"


def test_refund_cannot_refer_to_a_refund(bank: SimulatedBank, link: LinkSession) -> None:
    original = approve(bank, link, 10_000)
    first = refund(original, 100)
    assert code(bank, link, "0200", first) == "00"
    assert code(bank, link, "0200", refund(first, 100)) == "25"


# -- reversal -------------------------------------------------------------------------


@pytest.mark.parametrize("mti", ["0400", "0401"])
def test_reversal_of_a_sale(bank: SimulatedBank, link: LinkSession, mti: str) -> None:
    original = approve(bank, link, 10_000)
    request = reversal(original, mti)
    reply = send(bank, link, mti, request)
    assert reply.mti == "0410"
    echoed = {n: request[n] for n in (2, 3, 4, 7, 11, 32, 37, 41, 42, 49)}
    assert reply.fields == echoed | {39: "00"}
    totals = bank.totals()
    assert (totals.reversed, totals.reversals, totals.net) == (10_000, 1, 0)
    assert bank.balance(PAN) == OPENING


def test_repeated_reversal_is_applied_once(bank: SimulatedBank, link: LinkSession) -> None:
    original = approve(bank, link, 10_000)
    assert code(bank, link, "0400", reversal(original)) == "00"
    for _ in range(3):
        assert code(bank, link, "0401", reversal(original, "0401")) == "00"
    totals = bank.totals()
    assert (totals.reversed, totals.reversals, totals.net) == (10_000, 1, 0)
    assert bank.balance(PAN) == OPENING


def test_reversal_of_an_unknown_original(bank: SimulatedBank, link: LinkSession) -> None:
    never_seen = sale(10_000)
    assert code(bank, link, "0400", reversal(never_seen)) == "00"
    assert code(bank, link, "0401", reversal(never_seen)) == "00"
    totals = bank.totals()
    assert (totals.reversals, totals.unmatched_reversals, totals.net) == (0, 1, 0)
    # The original arriving after its reversal must not take effect.
    assert code(bank, link, "0200", never_seen) == "12"
    assert bank.balance(PAN) == OPENING


def test_reversal_of_a_declined_sale_changes_nothing(
    bank: SimulatedBank, link: LinkSession
) -> None:
    declined = sale(100_05)
    assert code(bank, link, "0200", declined) == "05"
    assert code(bank, link, "0400", reversal(declined)) == "00"
    assert bank.totals().net == 0


def test_reversal_of_a_void_unvoids_the_sale(bank: SimulatedBank, link: LinkSession) -> None:
    original = approve(bank, link, 10_000)
    voiding = void(original, 10_000)
    assert code(bank, link, "0200", voiding) == "00"
    assert code(bank, link, "0400", reversal(voiding)) == "00"
    assert code(bank, link, "0401", reversal(voiding)) == "00"
    totals = bank.totals()
    assert (totals.voided, totals.reversed_voids, totals.net) == (10_000, 10_000, 10_000)
    assert bank.balance(PAN) == OPENING - 10_000
    # The sale stands again: it can be voided anew.
    assert code(bank, link, "0200", void(original, 10_000)) == "00"
    assert bank.totals().net == 0


def test_reversal_of_a_refund_gives_back_its_amount(bank: SimulatedBank, link: LinkSession) -> None:
    original = approve(bank, link, 10_000)
    first = refund(original, 7_000)
    assert code(bank, link, "0200", first) == "00"
    assert code(bank, link, "0200", refund(original, 3_001)) == "61"
    assert code(bank, link, "0400", reversal(first)) == "00"
    assert code(bank, link, "0401", reversal(first)) == "00"
    totals = bank.totals()
    assert (totals.refunded, totals.reversed_refunds, totals.net) == (7_000, 7_000, 10_000)
    assert code(bank, link, "0200", refund(original, 10_000)) == "00"
    assert bank.balance(PAN) == OPENING


def test_reversal_of_a_sale_takes_its_refunds_and_void_with_it(
    bank: SimulatedBank, link: LinkSession
) -> None:
    refunded = approve(bank, link, 10_000)
    part = refund(refunded, 2_500)
    assert code(bank, link, "0200", part) == "00"
    voided = approve(bank, link, 4_000)
    assert code(bank, link, "0200", void(voided, 4_000)) == "00"
    assert code(bank, link, "0400", reversal(refunded)) == "00"
    assert code(bank, link, "0400", reversal(voided)) == "00"
    totals = bank.totals()
    assert totals.net == 0
    assert (totals.reversed_refunds, totals.reversed_voids) == (2_500, 4_000)
    assert bank.balance(PAN) == OPENING
    # Reversing the refund afterwards changes nothing more.
    assert code(bank, link, "0401", reversal(part)) == "00"
    assert bank.totals() == totals


# -- totals ---------------------------------------------------------------------------


def test_totals_arithmetic(bank: SimulatedBank, link: LinkSession) -> None:
    a = approve(bank, link, 10_000)
    b = approve(bank, link, 20_000)
    c = approve(bank, link, 30_000, pan=OTHER_PAN)
    approve(bank, link, 40_000)
    assert code(bank, link, "0200", sale(100_51)) == "51"
    assert bank.respond("0200", sale(100_68), link) is None
    assert code(bank, link, "0400", reversal(a)) == "00"
    voiding = void(b, 20_000)
    assert code(bank, link, "0200", voiding) == "00"
    assert code(bank, link, "0200", refund(c, 5_000)) == "00"
    returned = refund(c, 1_000)
    assert code(bank, link, "0200", returned) == "00"
    assert code(bank, link, "0400", reversal(returned)) == "00"
    assert code(bank, link, "0400", reversal(sale(1))) == "00"
    assert bank.totals() == LedgerTotals(
        approved=100_000,
        voided=20_000,
        refunded=6_000,
        reversed=10_000,
        reversed_voids=0,
        reversed_refunds=1_000,
        net=100_000 - 10_000 - 20_000 - 6_000 + 1_000,
        approvals=4,
        voids=1,
        refunds=2,
        declines=1,
        reversals=2,
        unmatched_reversals=1,
    )
    assert bank.balance(PAN) == OPENING - 40_000
    assert bank.balance(OTHER_PAN) == OPENING - 25_000


def advice(amount: int, *, rrn: str = "532614000150") -> Fields:
    return sale(amount) | {37: rrn, 38: "S" + rrn[-5:], 39: "00", 41: "POS00003"}


def test_an_advice_is_posted_once_and_a_repeat_gets_the_same_answer(
    bank: SimulatedBank, link: LinkSession
) -> None:
    """bank-h2h.md: an advice is identified by 37, 41 and 42; a repeat of one already
    answered gets the same answer and is applied once."""
    first = advice(8800)
    assert send(bank, link, "0220", first).mti == "0230"
    assert code(bank, link, "0220", first) == "00"
    assert code(bank, link, "0221", first | {11: "000099"}) == "00"
    assert bank.totals().approved == 8800
    assert bank.balance(PAN) == OPENING - 8800
    [record] = bank.open_records()
    assert (record.mti, record.rrn, record.direction) == ("0220", "532614000150", "D")
    assert record.stan == first[11]  # the send accepted


def test_a_refusing_bank_refuses_advices_for_good_but_91_and_96_ask_again(
    bank: SimulatedBank, link: LinkSession
) -> None:
    bank.refuse_advices = "96"
    assert code(bank, link, "0220", advice(100, rrn="532614000151")) == "96"
    bank.refuse_advices = None  # the bank is back: the repeat is posted
    assert code(bank, link, "0221", advice(100, rrn="532614000151")) == "00"
    bank.refuse_advices = "05"
    assert code(bank, link, "0220", advice(200, rrn="532614000152")) == "05"
    bank.refuse_advices = None
    assert code(bank, link, "0221", advice(200, rrn="532614000152")) == "05"  # final
    assert bank.totals().approved == 100


# -- payments to a card (credit.md, bank-h2h.md: 0200, 3 = 280030) ----------------------


def payment(amount: int, *, pan: str = PAN) -> Fields:
    return financial("280030", amount, pan=pan)


def test_a_payment_to_the_card_credits_it_and_clears_as_c(
    bank: SimulatedBank, link: LinkSession
) -> None:
    paid = payment(299_900)
    reply = send(bank, link, "0200", paid)
    assert reply.response_code == "00" and len(str(reply.fields[38])) == 6
    assert reply.fields[3] == "280030"
    assert bank.balance(PAN) == OPENING + 299_900
    assert code(bank, link, "0200", void(paid, 299_900)) == "25"  # never voided
    assert code(bank, link, "0200", refund(paid, 100)) == "25"  # nor refunded
    assert code(bank, link, "0400", reversal(paid)) == "00"
    assert bank.balance(PAN) == OPENING
    assert code(bank, link, "0400", reversal(paid)) == "00"  # applied once
    assert bank.balance(PAN) == OPENING
    records = bank.open_records()
    assert [(r.processing_code, r.amount, r.direction) for r in records] == [
        ("280030", 299_900, "C"),
        ("280030", 299_900, "D"),
    ]
    totals = bank.totals()
    assert (totals.payments, totals.reversed_payments, totals.net) == (299_900, 299_900, 0)


@pytest.mark.parametrize("hook", ["12", "05", "51", "54", "61"])
def test_a_payment_declined_by_its_test_mode(
    bank: SimulatedBank, link: LinkSession, hook: str
) -> None:
    assert code(bank, link, "0200", payment(299_800 + int(hook))) == hook
    assert bank.balance(PAN) == OPENING
    assert bank.open_records() == []


def test_a_payment_not_answered_by_its_test_mode(bank: SimulatedBank, link: LinkSession) -> None:
    unanswered = payment(299_868)
    assert bank.respond("0200", unanswered, link) is None
    assert bank.balance(PAN) == OPENING
    # Its reversal overtakes it: answered 00, and the payment sent again is refused.
    assert code(bank, link, "0400", reversal(unanswered)) == "00"
    assert bank.balance(PAN) == OPENING
