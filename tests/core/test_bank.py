"""Canonical requests to bank host-to-host messages (bank-h2h.md), as tables."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import msgspec
import pytest

from switch.core import bank as bankmsg
from switch.core.bank import (
    CUTOVER,
    ECHO,
    SIGN_OFF,
    SIGN_ON,
    BankTrace,
    Institution,
    OriginalData,
    ReversalSubject,
    bank_request,
    network_request,
    outcome_from_bank,
    reversal_request,
)
from switch.core.clock import Stamp
from switch.core.model import (
    Acceptor,
    BalanceInquiry,
    BankBound,
    Card,
    OriginalRef,
    Refund,
    Sale,
    Void,
)
from switch.core.pos import request_from_pos
from switch.wire.dialect import load_dialect
from switch.wire.framing import split_pos_frame
from switch.wire.iso8583 import Iso8583Codec
from switch.wire.samples import BANK_SALE_FIELDS

CONF = Path(__file__).resolve().parents[2] / "conf" / "dialects"

PAN = "6222021000111122221"
ACQUIRER = "48990000"
RRN = "532614000123"
INSTITUTION = Institution(acquirer_id=ACQUIRER)


def utc_stamp(hour: int, minute: int, second: int) -> Stamp:
    """The samples' day, 2025-11-22, at a UTC time; local time is UTC+8."""
    return Stamp.at(datetime(2025, 11, 22, hour, minute, second, tzinfo=UTC).timestamp(), 8)


SALE_STAMP = utc_stamp(6, 30, 15)
REVERSAL_STAMP = utc_stamp(6, 35, 20)

# pos-cup.md's sample sale, with its 2-byte length.
POS_SALE_FRAME = bytes.fromhex(
    "0051600003000060310031073002007024048000c08010196222021000111122"
    "22100000000000000100000001232812002100504f5330303030313839383331"
    "30303438393930303031313536000822000042"
)
# bank-h2h.md's samples, with their 2-byte length.
BANK_SALE_FRAME = bytes.fromhex(
    "0082303230307238048108c08000313936323232303231303030313131313232"
    "3232313030303030303030303030303031303030303131323230363330313530"
    "3030303037313433303135313132323032313030303834383939303030303533"
    "32363134303030313233504f5330303030313839383331303034383939303030"
    "31313536"
)
BANK_REVERSAL_FRAME = bytes.fromhex(
    "00a530343030f220000108c08000000000400000000031393632323230323130"
    "3030313131313232323231303030303030303030303030303130303030313132"
    "3230363335323030303030313930383438393930303030353332363134303030"
    "313233504f533030303031383938333130303438393930303031313536303230"
    "3030303030303731313232303633303135303030343839393030303030303030"
    "30303030303030"
)

ACCEPTOR = Acceptor(channel="pos", terminal_id="POS00001", merchant_id="898310048990001")
CARD = Card(pan=PAN, expiry="2812", entry_mode="021", condition_code="00")
SALE = Sale(
    acceptor=ACCEPTOR,
    stan="000123",
    batch="000042",
    processing_code="000000",
    card=CARD,
    currency="156",
    amount=10000,
)
SALE_TRACE = BankTrace(stan="000007", rrn=RRN, stamp=SALE_STAMP)
SALE_SENT = OriginalData(mti="0200", stan="000007", transmission="1122063015")

# bank-h2h.md's first sample frame, field by field.
SAMPLE_SALE_FIELDS = BANK_SALE_FIELDS


@pytest.fixture(scope="module")
def h2h() -> Iso8583Codec:
    return Iso8583Codec(load_dialect(CONF / "h2h-ascii.toml"))


@pytest.fixture(scope="module")
def cup() -> Iso8583Codec:
    return Iso8583Codec(load_dialect(CONF / "cup-pos.toml"))


def test_stamp_gives_the_samples_times() -> None:
    assert SALE_STAMP.transmission == "1122063015"
    assert SALE_STAMP.local_time == "143015"
    assert SALE_STAMP.local_date == "1122"
    assert REVERSAL_STAMP.transmission == "1122063520"


def test_sample_sale_fields() -> None:
    mti, fields = bank_request(SALE, SALE_TRACE, INSTITUTION)
    assert mti == "0200"
    assert fields == SAMPLE_SALE_FIELDS


def test_sample_sale_bytes(h2h: Iso8583Codec) -> None:
    mti, fields = bank_request(SALE, SALE_TRACE, INSTITUTION)
    assert h2h.encode(mti, fields) == BANK_SALE_FRAME[2:]
    assert len(BANK_SALE_FRAME) - 2 == int.from_bytes(BANK_SALE_FRAME[:2], "big")


def test_sample_sale_from_the_pos_frame(cup: Iso8583Codec, h2h: Iso8583Codec) -> None:
    """pos-cup.md's sample frame in, bank-h2h.md's sample frame out."""
    _, message = split_pos_frame(POS_SALE_FRAME[2:])
    decoded = cup.decode(message)
    request = request_from_pos(decoded.mti, decoded.fields)
    assert isinstance(request, Sale)
    mti, fields = bank_request(request, SALE_TRACE, INSTITUTION)
    assert h2h.encode(mti, fields) == BANK_SALE_FRAME[2:]


def test_sample_reversal(h2h: Iso8583Codec) -> None:
    subject = ReversalSubject(
        pan=PAN,
        processing_code="000000",
        amount=10000,
        currency="156",
        rrn=RRN,
        terminal_id="POS00001",
        merchant_id="898310048990001",
        original=SALE_SENT,
    )
    mti, fields = reversal_request(subject, "000019", REVERSAL_STAMP, INSTITUTION)
    assert mti == "0400"
    assert fields[90] == "0200" + "000007" + "1122063015" + "00048990000" + "00000000000"
    assert fields[11] == "000019"
    assert fields[7] == "1122063520"
    assert fields[37] == RRN
    assert h2h.encode(mti, fields) == BANK_REVERSAL_FRAME[2:]

    repeat_mti, repeat_fields = reversal_request(
        subject, "000019", REVERSAL_STAMP, INSTITUTION, repeat=True
    )
    assert repeat_mti == "0401"
    assert repeat_fields == fields


def test_reversal_sends_no_card_secrets() -> None:
    subject = ReversalSubject(
        pan=PAN,
        processing_code="000000",
        amount=10000,
        currency="156",
        rrn=RRN,
        terminal_id="POS00001",
        merchant_id="898310048990001",
        original=SALE_SENT,
    )
    _, fields = reversal_request(subject, "000019", REVERSAL_STAMP, INSTITUTION)
    assert not {12, 13, 14, 22, 25, 35, 52} & fields.keys()


def _with_card(request: BankBound, **changes: object) -> BankBound:
    assert request.card is not None
    return msgspec.structs.replace(request, card=msgspec.structs.replace(request.card, **changes))


VOID = Void(
    acceptor=ACCEPTOR,
    stan="000125",
    batch="000042",
    processing_code="200000",
    card=CARD,
    currency="156",
    amount=10000,
    original=OriginalRef(rrn=RRN),
)
REFUND = Refund(
    acceptor=ACCEPTOR,
    stan="000126",
    batch="000042",
    processing_code="200000",
    card=CARD,
    currency="156",
    amount=2500,
    original=OriginalRef(rrn=RRN),
)
BALANCE = BalanceInquiry(
    acceptor=ACCEPTOR,
    stan="000127",
    batch="000042",
    processing_code="310000",
    card=CARD,
    currency="156",
)


@pytest.mark.parametrize(
    ("request_", "original", "processing_code", "amount"),
    [
        (SALE, None, "000000", "000000010000"),
        (msgspec.structs.replace(SALE, processing_code="001000"), None, "001000", "000000010000"),
        (BALANCE, None, "310000", "000000000000"),
        (VOID, SALE_SENT, "020000", "000000010000"),
        (msgspec.structs.replace(VOID, processing_code="201000"), SALE_SENT, "021000", None),
        (REFUND, SALE_SENT, "200000", "000000002500"),
    ],
    ids=["sale", "sale-account-type", "balance", "void", "void-account-type", "refund"],
)
def test_processing_codes_and_field_90(
    request_: BankBound, original: OriginalData | None, processing_code: str, amount: str | None
) -> None:
    mti, fields = bank_request(request_, SALE_TRACE, INSTITUTION, original)
    assert mti == "0200"
    assert fields[3] == processing_code
    if amount is not None:
        assert fields[4] == amount
    if original is None:
        assert 90 not in fields
    else:
        assert fields[90] == "0200000007112206301500048990000" + "0" * 11
        assert len(fields[90]) == 42


def test_void_and_refund_encode(h2h: Iso8583Codec) -> None:
    for request in (VOID, REFUND):
        mti, fields = bank_request(request, SALE_TRACE, INSTITUTION, SALE_SENT)
        assert h2h.decode(h2h.encode(mti, fields)).fields == fields


@pytest.mark.parametrize(
    ("card_changes", "present", "absent"),
    [
        ({}, {}, {14, 33, 35, 52}),
        ({"track2": PAN + "=28121010000000"}, {35: PAN + "=28121010000000"}, {14, 52}),
        (
            {"pin_block": bytes.fromhex("0123456789abcdef")},
            {52: bytes.fromhex("0123456789abcdef")},
            {14, 35},
        ),
        ({"cvv2": "123"}, {}, {14, 35, 52}),
        ({"expiry": None}, {}, {14}),
        (
            {"entry_mode": "012", "condition_code": "08"},
            {14: "2812", 22: "012", 25: "08"},
            {35, 52},
        ),
        ({"entry_mode": "011", "expiry": None}, {22: "011"}, {14}),
        ({"entry_mode": "051"}, {22: "051"}, {14}),
    ],
    ids=["plain", "track-2", "pin", "cvv2", "no-expiry", "keyed", "keyed-no-expiry", "chip"],
)
def test_card_fields(
    h2h: Iso8583Codec,
    card_changes: dict[str, object],
    present: dict[int, str | bytes],
    absent: set[int],
) -> None:
    mti, fields = bank_request(_with_card(SALE, **card_changes), SALE_TRACE, INSTITUTION)
    for number, value in present.items():
        assert fields[number] == value
    assert not absent & fields.keys()
    assert "123" not in {value for value in fields.values() if isinstance(value, str)}
    assert h2h.decode(h2h.encode(mti, fields)).fields == fields


def test_forwarding_institution(h2h: Iso8583Codec) -> None:
    institution = Institution(acquirer_id=ACQUIRER, forwarding_id="12345678")
    mti, fields = bank_request(VOID, SALE_TRACE, institution, SALE_SENT)
    assert fields[32] == ACQUIRER
    assert fields[33] == "12345678"
    assert fields[90] == "0200000007112206301500048990000" + "00012345678"
    assert h2h.decode(h2h.encode(mti, fields)).fields == fields

    subject = ReversalSubject(
        pan=PAN,
        processing_code="000000",
        amount=10000,
        currency="156",
        rrn=RRN,
        terminal_id="POS00001",
        merchant_id="898310048990001",
        original=SALE_SENT,
    )
    _, reversal = reversal_request(subject, "000019", REVERSAL_STAMP, institution)
    assert reversal[33] == "12345678"
    assert str(reversal[90]).endswith("00012345678")


@pytest.mark.parametrize(
    ("code", "expected"),
    [(SIGN_ON, "001"), (SIGN_OFF, "002"), (ECHO, "301")],
)
def test_network_request(h2h: Iso8583Codec, code: str, expected: str) -> None:
    mti, fields = network_request(code, "000001", SALE_STAMP)
    assert (mti, fields) == ("0800", {7: "1122063015", 11: "000001", 70: expected})
    # 70 needs the secondary bitmap.
    assert h2h.decode(h2h.encode(mti, fields)).fields == fields


def test_cutover_request_names_the_closed_date_in_15(h2h: Iso8583Codec) -> None:
    mti, fields = network_request(CUTOVER, "000002", SALE_STAMP, business_date=date(2025, 11, 22))
    assert (mti, fields) == ("0800", {7: "1122063015", 11: "000002", 15: "1122", 70: "201"})
    assert h2h.decode(h2h.encode(mti, fields)).fields == fields


# -- answers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "code", "auth_code", "balance", "settlement"),
    [
        ({39: "00", 38: "A1B2C3"}, "00", "A1B2C3", None, None),
        ({39: "51"}, "51", None, None, None),
        ({39: "00", 54: "1002156C000000012345"}, "00", None, "1002156C000000012345", None),
        # the bank's 15 is not the switch's business date: never taken over
        ({39: "00", 15: "1123"}, "00", None, None, None),
        ({39: "96"}, "96", None, None, None),  # the bank's own malfunction is an answer
        # garbled or missing 39: no final answer (None: the lifecycle reverses it)
        ({}, None, None, None, None),
        ({38: "A1B2C3"}, None, None, None, None),
        ({39: "0"}, None, None, None, None),
        ({39: "000"}, None, None, None, None),
        ({39: ""}, None, None, None, None),
        ({39: b"00"}, None, None, None, None),
        ({39: "0 "}, None, None, None, None),
        # wrong types elsewhere are dropped, not trusted
        ({39: "00", 38: b"A1B2C3", 54: b"x", 15: b"11"}, "00", None, None, None),
    ],
)
def test_outcome_from_bank(
    fields: dict[int, str | bytes],
    code: str | None,
    auth_code: str | None,
    balance: str | None,
    settlement: str | None,
) -> None:
    outcome = outcome_from_bank(fields, rrn=RRN, bank="bank-a")
    if code is None:
        assert outcome is None
        return
    assert outcome is not None
    assert outcome.code == code
    assert outcome.approved is (code == "00")
    assert outcome.rrn == RRN
    assert outcome.bank == "bank-a"
    assert outcome.auth_code == auth_code
    assert outcome.balance == balance
    assert outcome.settlement_date == settlement


# -- keys and MAC (security.md) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("mti", "numbers", "where"),
    [
        ("0200", (2, 3, 4, 11, 41), 64),  # no secondary bitmap
        ("0400", (2, 3, 11, 90), 128),  # 90: a secondary bitmap, so 128
        ("0410", (2, 3, 11, 39), 64),
        ("0221", (2, 3, 11, 39), 64),
        ("0800", (7, 11, 70), None),  # network messages carry none
        ("0810", (7, 11, 39, 70), None),
    ],
)
def test_the_mac_goes_in_64_or_128_as_the_last_8_bytes(
    mti: str, numbers: tuple[int, ...], where: int | None
) -> None:
    fields: dict[int, str | bytes] = {n: "1" for n in numbers}
    placed = bankmsg.with_mac_placeholder(mti, fields)
    if where is None:
        assert placed == fields and not bankmsg.carries_mac(mti)
        return
    other = 64 if where == 128 else 128
    assert placed[where] == bytes(8) and other not in placed
    message = b"MAB..." + b"\x01" * 8
    assert bankmsg.split_mac(message, {**fields, where: b"\x01" * 8}) == (b"MAB...", b"\x01" * 8)
    # In the wrong field, of the wrong size, or not last: no MAC.
    assert bankmsg.split_mac(message, {**fields, other: b"\x01" * 8}) is None
    assert bankmsg.split_mac(message, {**fields, where: b"\x01" * 7}) is None
    assert bankmsg.split_mac(b"MAB..." + b"\x02" * 8, {**fields, where: b"\x01" * 8}) is None


def test_a_verified_a0_is_96_to_the_terminal() -> None:
    outcome = bankmsg.outcome_from_bank({39: "A0"}, rrn="532614000123", bank="icbc")
    assert outcome is not None and outcome.code == "96"


# risk.md's advice samples: 88.00 CNY stood in at 15:40:05 local on 22 November (RRN
# 532614000150), sent at 16:05:12 local with STAN 000088, and its acceptance.
ADVICE_FRAME = bytes.fromhex(
    "008b30323230723844810ec08000313636323538303830303030313233343533"
    "3030303030303030303030303030383830303131323230383035313230303030"
    "3838313534303035313132323534313130323230303038343839393030303035"
    "33323631343030303135305330303135303030504f5330303030333839383331"
    "30303534313130303031313536"
)
ADVICE_ACCEPTED_FRAME = bytes.fromhex(
    "007230323330722000010ac08000313636323538303830303030313233343533"
    "3030303030303030303030303030383830303131323230383035313230303030"
    "3838303834383939303030303533323631343030303135303030504f53303030"
    "3033383938333130303534313130303031313536"
)
ADVICE_SUBJECT = bankmsg.AdviceSubject(
    pan="6258080000123453", processing_code="000000", amount=8800, currency="156",
    local_time="154005", local_date="1122", mcc="5411", entry_mode="022",
    condition_code="00", rrn="532614000150", auth_code="S00150", terminal_id="POS00003",
    merchant_id="898310054110001",
)  # fmt: skip


def test_advice_is_the_sample_to_the_byte(h2h: Iso8583Codec) -> None:
    mti, fields = bankmsg.advice_request(
        ADVICE_SUBJECT, "000088", utc_stamp(8, 5, 12), INSTITUTION
    )
    assert mti == "0220"
    assert h2h.encode(mti, fields) == ADVICE_FRAME[2:]


def test_advice_repeat_is_0221_with_its_new_trace(h2h: Iso8583Codec) -> None:
    mti, fields = bankmsg.advice_request(
        ADVICE_SUBJECT, "000090", utc_stamp(8, 6, 40), INSTITUTION, repeat=True
    )
    assert mti == "0221"
    assert (fields[11], fields[7]) == ("000090", "1122080640")
    first = h2h.decode(ADVICE_FRAME[2:]).fields
    assert {k: v for k, v in fields.items() if k not in (7, 11)} == {
        k: v for k, v in first.items() if k not in (7, 11)
    }


def test_advice_acceptance_sample_decodes(h2h: Iso8583Codec) -> None:
    answer = h2h.decode(ADVICE_ACCEPTED_FRAME[2:])
    assert answer.mti == "0230"
    assert answer.fields[39] == "00"
    assert (answer.fields[37], answer.fields[41], answer.fields[42]) == (
        "532614000150", "POS00003", "898310054110001"
    )


# -- the payment to a card (credit.md, bank-h2h.md: 0200, 3 = 280030, "as sale") --------


def test_payment_to_card_is_the_sample_sale_with_3_280030(h2h: Iso8583Codec) -> None:
    """bank-h2h.md publishes no frame of its own for a payment to a card: it is "as
    sale", 3 = 280030. Built from the sample sale's fields, it is the sample frame to
    the byte with only field 3's six digits changed."""
    from switch.core.model import CardPayment
    from switch.core.products import by_bank

    payment = CardPayment(
        acceptor=ACCEPTOR, stan="000123", processing_code="280030",
        card=Card(pan=PAN, entry_mode="021", condition_code="00"), currency="156",
        amount=10000,
    )  # fmt: skip
    mti, fields = bank_request(payment, SALE_TRACE, INSTITUTION)
    assert mti == "0200"
    assert fields == {**SAMPLE_SALE_FIELDS, 3: "280030"}
    frame = h2h.encode(mti, fields)
    sample = BANK_SALE_FRAME[2:]
    at = 4 + 8 + 2 + len(PAN)  # MTI, bitmap, 2's LLVAR: then field 3
    assert sample[at : at + 6] == b"000000"
    assert frame == sample[:at] + b"280030" + sample[at + 6 :]
    assert by_bank("0200", "280030").kind == "card_payment"
    assert bankmsg.outcome_from_bank({39: "12", 37: RRN}, rrn=RRN, bank="citic") is not None
