"""The simulated bank's clearing: what each request adds to its open business date, the
cutover that closes a date and the file it makes, and the faults, as synchronous
tables (no I/O)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime

import msgspec
import pytest

from switch.config import ClearingFaults, SimulatorSection
from switch.core.model import mask_pan
from switch.core.validate import luhn_valid
from switch.sim.ledger import ClearingDelivery, LinkSession, SimulatedBank
from switch.wire.clearing import (
    ClearingFile,
    ClearingFileRejected,
    ClearingHeader,
    ClearingRecord,
    decode_clearing_file,
)
from tests.sim.test_ledger import (
    ACQUIRER,
    DATE_TIME,
    OPENING,
    PAN,
    Fields,
    code,
    inquiry,
    refund,
    reversal,
    sale,
    send,
    void,
)

NOW = datetime(2025, 11, 22, 15, 30, 0, tzinfo=UTC)
"""The bank's clock: the business date 2025-11-22 closes at 23:00 local (15:00 UTC)."""
DAY = date(2025, 11, 22)
INSTITUTION = "1020000"

_rrns: Iterator[int] = itertools.count(532614000200)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def bank(clock: Clock) -> SimulatedBank:
    sim = SimulatorSection(opening_balance=OPENING)
    return SimulatedBank(sim, institution_id=INSTITUTION, clock=clock)


@pytest.fixture
def link() -> LinkSession:
    session = LinkSession()
    session.signed_on = True
    return session


def with_rrn(fields: Fields) -> Fields:
    """``fields`` with an RRN of its own (the ledger tests' helpers share one)."""
    return fields | {37: f"{next(_rrns):012d}"}


def cutover(day: date | str, stan: str = "000900") -> Fields:
    mmdd = day if isinstance(day, str) else f"{day:%m%d}"
    return {7: DATE_TIME, 11: stan, 15: mmdd, 70: "201"}


def close(bank: SimulatedBank, link: LinkSession, day: date = DAY) -> ClearingFile:
    """Cuts ``day`` over and decodes the file the bank hands over."""
    reply = send(bank, link, "0800", cutover(day))
    assert reply.response_code == "00"
    assert reply.clearing is not None and reply.clearing.business_date == day
    return decode_clearing_file(reply.clearing.data)


def cleared(
    request: Fields,
    *,
    mti: str = "0200",
    auth: str = "",
    direction: str = "D",
    amount: int | None = None,
    pan: str = PAN,
) -> ClearingRecord:
    """The record that ``request`` makes when approved or applied."""
    stan, when, rrn, processing = request[11], request[7], request[37], request[3]
    assert isinstance(stan, str) and isinstance(when, str) and isinstance(rrn, str)
    assert isinstance(processing, str)
    value = request[4]
    assert isinstance(value, str)
    return ClearingRecord(
        mti=mti,
        processing_code=processing,
        stan=stan,
        transmission=when,
        rrn=rrn,
        amount=int(value) if amount is None else amount,
        currency="156",
        response_code="00",
        auth_code=auth,
        terminal_id="POS00001",
        merchant_id="898310048990001",
        masked_pan=mask_pan(pan),
        direction=direction,  # type: ignore[arg-type]
    )


def approved(bank: SimulatedBank, link: LinkSession, mti: str, request: Fields) -> str:
    """Sends ``request``, which must be approved; its authorisation code."""
    reply = send(bank, link, mti, request)
    assert reply.response_code == "00"
    auth = reply.fields[38]
    assert isinstance(auth, str)
    return auth


# -- the cutover ---------------------------------------------------------------------


def test_cutover_is_answered_00_echoing_70_then_the_file(
    bank: SimulatedBank, link: LinkSession
) -> None:
    reply = send(bank, link, "0800", cutover(DAY, "000042"))
    assert (reply.mti, reply.fields) == (
        "0810",
        {7: DATE_TIME, 11: "000042", 39: "00", 70: "201"},
    )
    assert isinstance(reply.clearing, ClearingDelivery)
    assert reply.clearing.business_date == DAY
    assert decode_clearing_file(reply.clearing.data) == ClearingFile(
        ClearingHeader(DAY, INSTITUTION, NOW), (), 0, 0
    )
    assert bank.last_closed == DAY


@pytest.mark.parametrize(
    ("now", "mmdd", "expected"),
    [
        (NOW, "1122", date(2025, 11, 22)),
        (NOW, "1121", date(2025, 11, 21)),
        (datetime(2026, 1, 1, 0, 5, tzinfo=UTC), "1231", date(2025, 12, 31)),
        (datetime(2025, 12, 31, 16, 0, tzinfo=UTC), "0101", date(2026, 1, 1)),
    ],
)
def test_the_year_of_the_mmdd_is_the_nearest(
    bank: SimulatedBank, link: LinkSession, clock: Clock, now: datetime, mmdd: str, expected: date
) -> None:
    clock.now = now
    reply = send(bank, link, "0800", cutover(mmdd))
    assert reply.clearing is not None and reply.clearing.business_date == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({7: DATE_TIME, 11: "000001", 70: "201"}, "30"),  # no 15
        ({11: "000001", 15: "1122", 70: "201"}, "30"),  # no 7
        ({7: DATE_TIME, 15: "1122", 70: "201"}, "30"),  # no 11
        (cutover("1340"), "30"),
        (cutover("0000"), "30"),
        (cutover("11x2"), "30"),
        (cutover("112"), "30"),
    ],
)
def test_a_malformed_cutover_is_30_and_closes_nothing(
    bank: SimulatedBank, link: LinkSession, fields: Fields, expected: str
) -> None:
    reply = send(bank, link, "0800", fields)
    assert (reply.response_code, reply.fields.get(70), reply.clearing) == (expected, "201", None)
    assert bank.last_closed is None


def test_a_cutover_on_a_link_not_signed_on_is_91(bank: SimulatedBank) -> None:
    reply = send(bank, LinkSession(), "0800", cutover(DAY))
    assert (reply.response_code, reply.clearing) == ("91", None)
    assert bank.last_closed is None


def test_a_repeated_cutover_is_00_and_changes_nothing(
    bank: SimulatedBank, link: LinkSession
) -> None:
    first = with_rrn(sale(1_000))
    auth = approved(bank, link, "0200", first)
    assert close(bank, link).records == (cleared(first, auth=auth),)
    later = with_rrn(sale(2_000))
    approved(bank, link, "0200", later)
    for day in (DAY, date(2025, 11, 21)):  # the same date again, or an older one
        reply = send(bank, link, "0800", cutover(day))
        assert (reply.response_code, reply.clearing) == ("00", None)
    assert [record.rrn for record in bank.open_records()] == [later[37]]
    assert bank.last_closed == DAY


# -- what is cleared -----------------------------------------------------------------


def test_the_file_lists_every_approval_and_every_reversal_applied(
    bank: SimulatedBank, link: LinkSession
) -> None:
    sold = with_rrn(sale(10_000))
    sold_auth = approved(bank, link, "0200", sold)
    voided = with_rrn(sale(4_000))
    voided_auth = approved(bank, link, "0200", voided)
    voiding = with_rrn(void(voided, 4_000))
    voiding_auth = approved(bank, link, "0200", voiding)
    refunding = with_rrn(refund(sold, 2_500))
    refunding_auth = approved(bank, link, "0200", refunding)
    reversed_sale = with_rrn(sale(7_000))
    reversed_auth = approved(bank, link, "0200", reversed_sale)

    # Declines, balance inquiries and a sale never answered are not cleared.
    assert code(bank, link, "0200", with_rrn(sale(100_51))) == "51"
    assert code(bank, link, "0200", with_rrn(sale(0))) == "13"
    assert code(bank, link, "0200", with_rrn(void(reversed_sale, 1))) == "64"
    assert code(bank, link, "0200", with_rrn(inquiry())) == "00"
    assert bank.respond("0200", with_rrn(sale(100_68)), link) is None

    undo_sale = reversal(reversed_sale)
    assert code(bank, link, "0400", undo_sale) == "00"
    assert code(bank, link, "0401", reversal(reversed_sale, "0401")) == "00"  # applied once
    undo_refund = reversal(refunding, "0401")  # its 0400 lost: the repeat is what applies
    assert code(bank, link, "0401", undo_refund) == "00"
    assert code(bank, link, "0400", reversal(with_rrn(sale(500)))) == "00"  # never seen

    file = close(bank, link)
    assert file.header == ClearingHeader(DAY, INSTITUTION, NOW)
    assert file.records == (
        cleared(sold, auth=sold_auth),
        cleared(voided, auth=voided_auth),
        cleared(voiding, auth=voiding_auth, direction="C"),
        cleared(refunding, auth=refunding_auth, direction="C"),
        cleared(reversed_sale, auth=reversed_auth),
        cleared(undo_sale, mti="0400", direction="C"),
        cleared(undo_refund, mti="0401", direction="D"),
    )
    debits, credits = 10_000 + 4_000 + 7_000 + 2_500, 4_000 + 2_500 + 7_000
    assert (file.debits_fen, file.credits_fen) == (debits, credits)


def test_a_reversal_is_cleared_at_its_original_amount(
    bank: SimulatedBank, link: LinkSession
) -> None:
    sold = with_rrn(sale(10_000))
    approved(bank, link, "0200", sold)
    short = reversal(sold) | {4: "000000000001"}
    assert code(bank, link, "0400", short) == "00"
    assert close(bank, link).records[-1].amount == 10_000


def test_a_request_after_the_cutover_belongs_to_the_next_date(
    bank: SimulatedBank, link: LinkSession
) -> None:
    before = with_rrn(sale(1_000))
    approved(bank, link, "0200", before)
    assert [r.rrn for r in close(bank, link).records] == [before[37]]
    after = with_rrn(sale(2_000))
    approved(bank, link, "0200", after)
    undo = reversal(before)  # of yesterday's sale: cleared today
    assert code(bank, link, "0400", undo) == "00"
    next_file = close(bank, link, date(2025, 11, 23))
    assert [(r.rrn, r.mti, r.direction) for r in next_file.records] == [
        (after[37], "0200", "D"),
        (before[37], "0400", "C"),
    ]


# -- a reversal without a card -------------------------------------------------------


def cardless(original: Fields, mti: str = "0400") -> Fields:
    """The reversal of ``original`` as the switch sends it for a record it never sent:
    no 2, no 35; 90 and 37 name it."""
    return {n: v for n, v in reversal(original, mti).items() if n != 2}


def test_a_cardless_reversal_finds_its_original_by_90_and_37(
    bank: SimulatedBank, link: LinkSession
) -> None:
    sold = with_rrn(sale(10_000))
    approved(bank, link, "0200", sold)
    request = cardless(sold)
    reply = send(bank, link, "0400", request)
    assert reply.response_code == "00" and 2 not in reply.fields
    assert code(bank, link, "0401", cardless(sold, "0401")) == "00"
    totals = bank.totals()
    assert (totals.reversed, totals.reversals, totals.net) == (10_000, 1, 0)
    assert bank.balance(PAN) == OPENING
    assert close(bank, link).records[-1] == cleared(request, mti="0400", direction="C")


@pytest.mark.parametrize(
    "change",
    [
        {37: "999999999999"},  # the wrong RRN
        {90: "0200" + "999999" + DATE_TIME + ACQUIRER.zfill(11) + "0" * 11},  # the wrong 11
    ],
)
def test_a_cardless_reversal_naming_nothing_held_is_00_and_applies_nothing(
    bank: SimulatedBank, link: LinkSession, change: Fields
) -> None:
    sold = with_rrn(sale(10_000))
    approved(bank, link, "0200", sold)
    for mti in ("0400", "0401"):
        assert code(bank, link, mti, cardless(sold, mti) | change) == "00"
    totals = bank.totals()
    assert (totals.reversals, totals.unmatched_reversals, totals.net) == (0, 1, 10_000)
    assert [r.mti for r in close(bank, link).records] == ["0200"]


def test_a_cardless_reversal_still_needs_90(bank: SimulatedBank, link: LinkSession) -> None:
    sold = with_rrn(sale(10_000))
    approved(bank, link, "0200", sold)
    request = {n: v for n, v in cardless(sold).items() if n != 90}
    assert code(bank, link, "0400", request) == "30"
    assert code(bank, link, "0400", cardless(sold) | {90: "0200"}) == "30"
    assert bank.totals().reversals == 0


def test_a_reversal_with_a_card_is_keyed_by_the_card_as_before(
    bank: SimulatedBank, link: LinkSession
) -> None:
    sold = with_rrn(sale(10_000))
    approved(bank, link, "0200", sold)
    other_card = reversal(sold) | {2: "6222021000111133331"}
    assert code(bank, link, "0400", other_card) == "00"
    assert bank.totals().reversals == 0


# -- faults --------------------------------------------------------------------------


def three_sales(bank: SimulatedBank, link: LinkSession) -> list[Fields]:
    sales = [with_rrn(sale(amount)) for amount in (1_000, 2_000, 3_000)]
    for request in sales:
        approved(bank, link, "0200", request)
    return sales


def rrn(request: Fields) -> str:
    value = request[37]
    assert isinstance(value, str)
    return value


def test_fault_drop(bank: SimulatedBank, link: LinkSession) -> None:
    first, second, third = three_sales(bank, link)
    bank.clearing_faults = ClearingFaults(drop_rrns=(rrn(second),))
    file = close(bank, link)
    assert [r.rrn for r in file.records] == [rrn(first), rrn(third)]
    assert file.debits_fen == 4_000


def test_fault_amount(bank: SimulatedBank, link: LinkSession) -> None:
    *_, third = three_sales(bank, link)
    bank.clearing_faults = ClearingFaults(amount_rrns=(rrn(third),))
    file = close(bank, link)
    assert [r.amount for r in file.records] == [1_000, 2_000, 3_001]
    assert file.debits_fen == 6_001
    assert bank.totals().approved == 6_000  # only the file is wrong


def test_fault_next_date_moves_a_record_once(bank: SimulatedBank, link: LinkSession) -> None:
    first, second, third = three_sales(bank, link)
    bank.clearing_faults = ClearingFaults(next_date_rrns=(rrn(first),))
    assert [r.rrn for r in close(bank, link).records] == [rrn(second), rrn(third)]
    later = with_rrn(sale(4_000))
    approved(bank, link, "0200", later)
    assert [r.rrn for r in close(bank, link, date(2025, 11, 23)).records] == [
        rrn(first),
        rrn(later),
    ]
    assert close(bank, link, date(2025, 11, 24)).records == ()


def test_fault_extra_records(bank: SimulatedBank, link: LinkSession) -> None:
    three_sales(bank, link)
    bank.clearing_faults = ClearingFaults(extra_records=2)
    file = close(bank, link)
    extras = file.records[3:]
    assert len(file.records) == 5 and len(extras) == 2
    assert len({r.rrn for r in extras}) == 2
    for record in extras:
        assert record.rrn.startswith("S") and len(record.rrn) == 12
        assert (record.mti, record.processing_code, record.direction) == ("0200", "000000", "D")
        assert (record.response_code, len(record.auth_code)) == ("00", 6)
        assert record.masked_pan.startswith("622202") and "*" in record.masked_pan
        assert record.terminal_id and record.merchant_id and record.amount > 0
    totals = bank.totals()
    assert totals.approvals == 5  # the bank holds them as approved sales
    # Each date's file has its own.
    again = close(bank, link, date(2025, 11, 23))
    assert len(again.records) == 2 and not {r.rrn for r in again.records} & {
        r.rrn for r in extras
    }


def test_an_extra_record_is_reversed_by_a_cardless_reversal(
    bank: SimulatedBank, link: LinkSession
) -> None:
    three_sales(bank, link)
    bank.clearing_faults = ClearingFaults(extra_records=1)
    extra = close(bank, link).records[-1]
    bank.clearing_faults = ClearingFaults()
    # What the switch sends for a bank_only record: the record's 11, 7 and 37, and the
    # switch's own 32 and 33 as the original's, with no card.
    request: Fields = {
        3: extra.processing_code,
        4: f"{extra.amount:012d}",
        7: "1123010000",
        11: "000777",
        32: ACQUIRER,
        37: extra.rrn,
        41: extra.terminal_id,
        42: extra.merchant_id,
        49: extra.currency,
        90: f"0200{extra.stan}{extra.transmission}{ACQUIRER.zfill(11)}{'0' * 11}",
    }
    assert code(bank, link, "0400", request) == "00"
    assert bank.totals().reversals == 1
    undo = close(bank, link, date(2025, 11, 23)).records
    assert [(r.rrn, r.mti, r.amount, r.direction, r.auth_code) for r in undo] == [
        (extra.rrn, "0400", extra.amount, "C", "")
    ]
    assert undo[0].masked_pan == extra.masked_pan


def test_extra_records_have_valid_card_numbers(bank: SimulatedBank, link: LinkSession) -> None:
    bank.clearing_faults = ClearingFaults(extra_records=3)
    close(bank, link)
    held = [key[0] for key in bank._applied]  # the cards of the invented sales
    assert len(held) == 3 and all(luhn_valid(pan) and len(pan) == 19 for pan in held)


def test_fault_corrupt_trailer(bank: SimulatedBank, link: LinkSession) -> None:
    three_sales(bank, link)
    bank.clearing_faults = ClearingFaults(corrupt_trailer=True)
    reply = send(bank, link, "0800", cutover(DAY))
    assert reply.clearing is not None
    with pytest.raises(ClearingFileRejected) as caught:
        decode_clearing_file(reply.clearing.data)
    assert (caught.value.line, caught.value.reason) == (5, "trailer_count")


def test_faults_from_the_config(link: LinkSession, clock: Clock) -> None:
    faults = ClearingFaults(extra_records=1, corrupt_trailer=True)
    sim = msgspec.structs.replace(SimulatorSection(), clearing=faults)
    bank = SimulatedBank(sim, clock=clock)
    assert bank.clearing_faults == faults
    reply = send(bank, link, "0800", cutover(DAY))
    assert reply.clearing is not None
    with pytest.raises(ClearingFileRejected):
        decode_clearing_file(reply.clearing.data)
