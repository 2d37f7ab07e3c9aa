"""POS terminal messages (pos-cup.md) to the canonical model and back, as tables."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import msgspec
import pytest

from switch.core.batch import BatchTotals, SettlementResult, UploadRecord
from switch.core.clock import Stamp
from switch.core.model import (
    Acceptor,
    BalanceInquiry,
    BatchSettlement,
    BatchUpload,
    Card,
    Echo,
    OriginalRef,
    Outcome,
    Refund,
    Request,
    Reversal,
    Sale,
    SignOn,
    Void,
)
from switch.core.pos import (
    answer_fields,
    format_error_fields,
    request_from_pos,
    response_fields,
    response_mti,
    with_pin,
)
from switch.errors import TransactionRefused
from switch.security.port import LmkKey
from switch.wire.dialect import load_dialect
from switch.wire.framing import join_pos_frame, split_pos_frame
from switch.wire.iso8583 import Iso8583Codec
from switch.wire.samples import PAN, POS_SALE_FIELDS, POS_SETTLEMENT_FIELDS
from switch.wire.samples import POS_SALE_APPROVAL_FRAME as APPROVAL_FRAME
from switch.wire.samples import POS_SALE_FRAME as SALE_FRAME

CONF = Path(__file__).resolve().parents[2] / "conf" / "dialects"

TRACK2 = "6222021000111122221=28121010000000"
ACQUIRER = "48990000"
# 2025-11-22 06:30:15 UTC, 14:30:15 at +8: the samples' time.
STAMP = Stamp.at(datetime(2025, 11, 22, 6, 30, 15, tzinfo=UTC).timestamp(), 8)

Fields = dict[int, str | bytes]

# The sample sale's fields, as the cup-pos codec decodes them.
SALE: Fields = dict(POS_SALE_FIELDS)
SIGN_ON: Fields = {11: "000124", 41: "POS00001", 42: "898310048990001", 60: "00000042001"}
ECHO: Fields = {**SIGN_ON, 60: "00000042301"}
BALANCE: Fields = {**SALE, 3: "310000", 60: "01000042"}
del BALANCE[4]
VOID: Fields = {
    **SALE,
    3: "200000",
    11: "000125",
    37: "532614000123",
    60: "23000042",
    61: "0000420001231122",
}
REFUND: Fields = {**VOID, 3: "200000", 4: "000000002500", 60: "25000042"}
REVERSAL: Fields = {**SALE, 39: "98", 61: "0000420001231122"}
# pos-cup.md's sample settlement, and uploads of that batch.
SETTLEMENT: Fields = dict(POS_SETTLEMENT_FIELDS)
SETTLEMENT_48 = str(SETTLEMENT[48])
UPLOAD: Fields = {
    11: "000131",
    41: "POS00001",
    42: "898310048990001",
    48: "02" + "22000123000000010000" + "25000125000000002500",
    60: "00000042201",
}
LAST_UPLOAD: Fields = {**UPLOAD, 11: "000132", 48: "0002", 60: "00000042202"}

ACCEPTOR = Acceptor(channel="pos", terminal_id="POS00001", merchant_id="898310048990001")
CARD = Card(pan=PAN, expiry="2812", entry_mode="021", condition_code="00")
ORIGINAL = OriginalRef(rrn="532614000123", batch="000042", stan="000123", date="1122")


def with_(fields: Fields, **changes: str | bytes | None) -> Fields:
    """``fields`` with some changed (``f4="..."``) or removed (``f4=None``)."""
    result = dict(fields)
    for name, value in changes.items():
        number = int(name[1:])
        if value is None:
            result.pop(number, None)
        else:
            result[number] = value
    return result


@pytest.fixture(scope="module")
def cup_codec() -> Iso8583Codec:
    return Iso8583Codec(load_dialect(CONF / "cup-pos.toml"))


# -- messages to requests ------------------------------------------------------------

REQUESTS: list[tuple[str, str, Fields, Request]] = [
    (
        "sign-on",
        "0800",
        SIGN_ON,
        SignOn(acceptor=ACCEPTOR, stan="000124", batch="000042"),
    ),
    ("echo", "0820", ECHO, Echo(acceptor=ACCEPTOR, stan="000124", batch="000042")),
    (
        "sale",
        "0200",
        SALE,
        Sale(
            acceptor=ACCEPTOR,
            stan="000123",
            batch="000042",
            processing_code="000000",
            card=CARD,
            currency="156",
            amount=10000,
        ),
    ),
    (
        "balance",
        "0200",
        BALANCE,
        BalanceInquiry(
            acceptor=ACCEPTOR,
            stan="000123",
            batch="000042",
            processing_code="310000",
            card=CARD,
            currency="156",
        ),
    ),
    (
        "void",
        "0200",
        VOID,
        Void(
            acceptor=ACCEPTOR,
            stan="000125",
            batch="000042",
            processing_code="200000",
            card=CARD,
            currency="156",
            amount=10000,
            original=ORIGINAL,
        ),
    ),
    (
        "refund",
        "0220",
        REFUND,
        Refund(
            acceptor=ACCEPTOR,
            stan="000125",
            batch="000042",
            processing_code="200000",
            card=CARD,
            currency="156",
            amount=2500,
            original=ORIGINAL,
        ),
    ),
    (
        "reversal",
        "0400",
        REVERSAL,
        Reversal(
            acceptor=ACCEPTOR,
            stan="000123",
            batch="000042",
            processing_code="000000",
            card=CARD,
            currency="156",
            amount=10000,
            original=OriginalRef(batch="000042", stan="000123", date="1122"),
            reason="98",
        ),
    ),
    (
        "reversal-06-without-61",
        "0400",
        with_(REVERSAL, f39="06", f61=None),
        Reversal(
            acceptor=ACCEPTOR,
            stan="000123",
            batch="000042",
            processing_code="000000",
            card=CARD,
            currency="156",
            amount=10000,
            original=OriginalRef(batch="000042", stan="000123"),
            reason="06",
        ),
    ),
    (
        "reversal-without-39",
        "0400",
        with_(REVERSAL, f39=None),
        Reversal(
            acceptor=ACCEPTOR,
            stan="000123",
            batch="000042",
            processing_code="000000",
            card=CARD,
            currency="156",
            amount=10000,
            original=OriginalRef(batch="000042", stan="000123", date="1122"),
            reason="98",
        ),
    ),
    (
        "void-61-without-date",
        "0200",
        with_(VOID, f61="000042000123"),
        Void(
            acceptor=ACCEPTOR,
            stan="000125",
            batch="000042",
            processing_code="200000",
            card=CARD,
            currency="156",
            amount=10000,
            original=OriginalRef(rrn="532614000123", batch="000042", stan="000123"),
        ),
    ),
    (
        "padded-terminal-and-merchant",
        "0800",
        with_(SIGN_ON, f41="POS1    ", f42="8983100        "),
        SignOn(
            acceptor=Acceptor(channel="pos", terminal_id="POS1", merchant_id="8983100"),
            stan="000124",
            batch="000042",
        ),
    ),
    (
        "short-60-has-no-batch",
        "0800",
        with_(SIGN_ON, f60="00"),
        SignOn(acceptor=ACCEPTOR, stan="000124", batch="000000"),
    ),
    (
        "settlement",
        "0500",
        SETTLEMENT,
        BatchSettlement(
            acceptor=ACCEPTOR,
            stan="000130",
            batch="000042",
            totals=BatchTotals(debit_fen=10000, debit_count=1),
            field48=SETTLEMENT_48,
        ),
    ),
    (
        "settlement-60-with-more-than-60.3",
        "0500",
        with_(SETTLEMENT, f60="00000042201000"),
        BatchSettlement(
            acceptor=ACCEPTOR,
            stan="000130",
            batch="000042",
            totals=BatchTotals(debit_fen=10000, debit_count=1),
            field48=SETTLEMENT_48,
        ),
    ),
    (
        "batch-upload",
        "0320",
        UPLOAD,
        BatchUpload(
            acceptor=ACCEPTOR,
            stan="000131",
            batch="000042",
            records=(
                UploadRecord(kind="22", stan="000123", amount=10000),
                UploadRecord(kind="25", stan="000125", amount=2500),
            ),
        ),
    ),
    (
        "last-batch-upload",
        "0320",
        LAST_UPLOAD,
        BatchUpload(acceptor=ACCEPTOR, stan="000132", batch="000042", total=2),
    ),
]


@pytest.mark.parametrize(
    ("mti", "fields", "expected"),
    [case[1:] for case in REQUESTS],
    ids=[case[0] for case in REQUESTS],
)
def test_request_from_pos(mti: str, fields: Fields, expected: Request) -> None:
    # The request carries the MTI it came with: part of its identity for duplicates.
    assert request_from_pos(mti, fields) == msgspec.structs.replace(expected, request_mti=mti)


def test_sample_frame_decodes_to_the_sample_sale(cup_codec: Iso8583Codec) -> None:
    _, message = split_pos_frame(SALE_FRAME[2:])
    decoded = cup_codec.decode(message)
    assert decoded.fields == SALE
    request = request_from_pos(decoded.mti, decoded.fields)
    assert isinstance(request, Sale)
    assert request.amount == 10000
    assert request.card.pan == PAN


@pytest.mark.parametrize(
    ("fields", "expiry"),
    [
        (with_(SALE, f2=None, f14=None, f35=TRACK2), "2812"),
        # 14 wins over track 2's expiry when both are sent
        (with_(SALE, f2=None, f14="2911", f35=TRACK2), "2911"),
        # a track 2 too short to hold an expiry leaves it unknown
        (with_(SALE, f2=None, f14=None, f35="6222021000111122221=28"), None),
        (with_(SALE, f2=None, f14=None, f35="6222021000111122221"), None),
    ],
)
def test_pan_and_expiry_from_track_2(fields: Fields, expiry: str | None) -> None:
    request = request_from_pos("0200", fields)
    assert isinstance(request, Sale)
    assert request.card.pan == PAN
    assert request.card.expiry == expiry
    assert request.card.track2 == fields[35]


def test_a_reversal_is_taken_whatever_its_currency() -> None:
    # Its original was refused 57 and never sent: the reversal is still answered 00.
    request = request_from_pos("0400", with_(REVERSAL, f49="840"))
    assert isinstance(request, Reversal)


def test_a_configured_currency_is_taken_in_its_own_minor_units() -> None:
    request = request_from_pos("0200", with_(SALE, f49="392"), currencies=("156", "392"))
    assert isinstance(request, Sale)
    assert (request.currency, request.amount) == ("392", 10000)


@pytest.mark.parametrize(
    ("mti", "fields", "today", "refused"),
    [
        ("0200", with_(SALE, f14="2611"), date(2026, 12, 7), True),
        ("0200", with_(BALANCE, f14="2611"), date(2026, 12, 7), True),
        ("0200", with_(SALE, f14="2612"), date(2026, 12, 31), False),
        ("0200", with_(SALE, f14="2612"), date(2027, 1, 1), True),
        # track 2's expiry when 14 is absent
        ("0200", with_(SALE, f2=None, f14=None, f35=PAN + "=20011010000"), date(2026, 1, 1), True),
        # a void, a refund and a reversal are never refused for expiry
        ("0200", with_(VOID, f14="2001"), date(2026, 12, 7), False),
        ("0220", with_(REFUND, f14="2001"), date(2026, 12, 7), False),
        ("0400", with_(REVERSAL, f14="2001"), date(2026, 12, 7), False),
        ("0200", with_(SALE, f14="2001"), None, False),  # no date given: no date checked
    ],
)
def test_an_expired_card_is_refused_with_54(
    mti: str, fields: Fields, today: date | None, refused: bool
) -> None:
    if not refused:
        request_from_pos(mti, fields, today=today)
        return
    with pytest.raises(TransactionRefused) as info:
        request_from_pos(mti, fields, today=today)
    assert (info.value.response_code, info.value.field) == ("54", "14")


def test_pan_field_wins_over_track_2() -> None:
    request = request_from_pos("0200", with_(SALE, f35=TRACK2))
    assert isinstance(request, Sale)
    assert request.card.pan == PAN
    assert request.card.track2 == TRACK2


def test_pin_block_is_carried_only_once_the_channel_checked_it() -> None:
    """A 52 is not taken as it is (security.md: the channel checks 22, 53 and the block
    against the key set that verified the MAC, then adds it with its PIK)."""
    pin = bytes.fromhex("0123456789abcdef")
    request = request_from_pos("0200", with_(SALE, f52=pin))
    assert isinstance(request, Sale)
    assert request.card.pin_block is None
    pik = LmkKey(kind="pik", owner="POS00001", cipher="3des", kcv=b"\x01\x02\x03\x04", blob=b"x")
    request = with_pin(request, pin, pik)
    assert isinstance(request, Sale)
    assert request.card.pin_block == pin and request.card.pin_key == pik
    assert pin.hex() not in repr(request.card)
    assert PAN not in repr(request.card)


REFUSALS: list[tuple[str, str, Fields, str, str | None]] = [
    ("missing-11", "0200", with_(SALE, f11=None), "30", "11"),
    ("missing-41", "0200", with_(SALE, f41=None), "30", "41"),
    ("missing-42", "0200", with_(SALE, f42=None), "30", "42"),
    ("missing-60", "0200", with_(SALE, f60=None), "30", "60"),
    ("sign-on-missing-11", "0800", with_(SIGN_ON, f11=None), "30", "11"),
    ("sign-on-missing-60", "0800", with_(SIGN_ON, f60=None), "30", "60"),
    ("missing-3", "0200", with_(SALE, f3=None), "30", "3"),
    ("missing-4", "0200", with_(SALE, f4=None), "30", "4"),
    ("void-missing-4", "0200", with_(VOID, f4=None), "30", "4"),
    ("missing-22", "0200", with_(SALE, f22=None), "30", "22"),
    ("missing-25", "0200", with_(SALE, f25=None), "30", "25"),
    ("missing-49", "0200", with_(SALE, f49=None), "30", "49"),
    ("missing-2-and-35", "0200", with_(SALE, f2=None), "30", "2"),
    ("void-missing-37", "0200", with_(VOID, f37=None), "30", "37"),
    ("refund-missing-37", "0220", with_(REFUND, f37=None), "30", "37"),
    ("short-61", "0200", with_(VOID, f61="00004200"), "30", "61"),
    ("bytes-in-text-field", "0200", with_(SALE, f41=b"POS00001"), "30", "41"),
    ("bad-luhn", "0200", with_(SALE, f2="6222021000111122222"), "14", "2"),
    ("short-pan", "0200", with_(SALE, f2="62220210001"), "14", "2"),
    (
        "bad-luhn-in-track-2",
        "0200",
        with_(SALE, f2=None, f35="6222021000111122222=2812"),
        "14",
        "35",
    ),
    ("zero-amount-sale", "0200", with_(SALE, f4="000000000000"), "13", "4"),
    ("zero-amount-void", "0200", with_(VOID, f4="000000000000"), "13", "4"),
    ("zero-amount-refund", "0220", with_(REFUND, f4="000000000000"), "13", "4"),
    ("unsupported-mti-0600", "0600", SALE, "40", "mti"),
    ("unsupported-mti-0420", "0420", SALE, "40", "mti"),
    ("unsupported-processing-code", "0200", with_(SALE, f3="990000"), "40", "3"),
    ("refund-of-sale-code", "0220", with_(REFUND, f3="000000"), "40", "3"),
    ("bad-expiry-month", "0200", with_(SALE, f14="2813"), "30", "14"),
    ("expiry-month-00", "0200", with_(SALE, f14="2800"), "30", "14"),
    (
        "bad-expiry-in-track-2",
        "0200",
        with_(SALE, f2=None, f14=None, f35="6222021000111122221=2813101"),
        "30",
        "14",
    ),
    ("unknown-currency", "0200", with_(SALE, f49="999"), "57", "49"),
    ("usd-not-settled", "0200", with_(SALE, f49="840"), "57", "49"),
    ("jpy-not-settled", "0200", with_(SALE, f49="392"), "57", "49"),
    ("balance-usd-not-settled", "0200", with_(BALANCE, f49="840"), "57", "49"),
    ("currency-not-a-code", "0200", with_(SALE, f49="1 6"), "30", "49"),
    # batch settlement: 11, 41, 42, 49 = 156, 60 (00, batch, 201) and 48
    ("settlement-missing-11", "0500", with_(SETTLEMENT, f11=None), "30", "11"),
    ("settlement-missing-41", "0500", with_(SETTLEMENT, f41=None), "30", "41"),
    ("settlement-missing-42", "0500", with_(SETTLEMENT, f42=None), "30", "42"),
    ("settlement-missing-60", "0500", with_(SETTLEMENT, f60=None), "30", "60"),
    ("settlement-missing-49", "0500", with_(SETTLEMENT, f49=None), "30", "49"),
    ("settlement-missing-48", "0500", with_(SETTLEMENT, f48=None), "30", "48"),
    ("settlement-in-CNY-letters", "0500", with_(SETTLEMENT, f49="CNY"), "30", "49"),
    ("settlement-in-another-currency", "0500", with_(SETTLEMENT, f49="840"), "30", "49"),
    ("settlement-60.1-22", "0500", with_(SETTLEMENT, f60="22000042201"), "30", "60"),
    ("settlement-60.3-202", "0500", with_(SETTLEMENT, f60="00000042202"), "30", "60"),
    ("settlement-60.3-001", "0500", with_(SETTLEMENT, f60="00000042001"), "30", "60"),
    ("settlement-60-without-60.3", "0500", with_(SETTLEMENT, f60="00000042"), "30", "60"),
    ("settlement-48-short", "0500", with_(SETTLEMENT, f48=SETTLEMENT_48[:-1]), "30", "48"),
    (
        "settlement-48.5-not-0",
        "0500",
        with_(SETTLEMENT, f48=SETTLEMENT_48[:30] + "1" + SETTLEMENT_48[31:]),
        "30",
        "48",
    ),
    (
        "settlement-foreign-totals",
        "0500",
        with_(SETTLEMENT, f48=SETTLEMENT_48[:-1] + "1"),
        "30",
        "48",
    ),
    ("settlement-48-as-bytes", "0500", with_(SETTLEMENT, f48=b"\x00" * 31), "30", "48"),
    # batch upload: 11, 41, 42, 60 (00, batch, 201 or 202 for the last) and 48
    ("upload-missing-11", "0320", with_(UPLOAD, f11=None), "30", "11"),
    ("upload-missing-41", "0320", with_(UPLOAD, f41=None), "30", "41"),
    ("upload-missing-42", "0320", with_(UPLOAD, f42=None), "30", "42"),
    ("upload-missing-60", "0320", with_(UPLOAD, f60=None), "30", "60"),
    ("upload-missing-48", "0320", with_(UPLOAD, f48=None), "30", "48"),
    ("last-upload-missing-48", "0320", with_(LAST_UPLOAD, f48=None), "30", "48"),
    ("upload-60.1-25", "0320", with_(UPLOAD, f60="25000042201"), "30", "60"),
    ("upload-60.3-203", "0320", with_(UPLOAD, f60="00000042203"), "30", "60"),
    ("upload-60-without-60.3", "0320", with_(UPLOAD, f60="00000042"), "30", "60"),
    ("upload-count-mismatch", "0320", with_(UPLOAD, f48="03" + str(UPLOAD[48])[2:]), "30", "48"),
    ("upload-no-records", "0320", with_(UPLOAD, f48="00"), "30", "48"),
    ("upload-of-a-void", "0320", with_(UPLOAD, f48="01" + "23000124000000010000"), "30", "48"),
    ("upload-total-in-a-201", "0320", with_(UPLOAD, f48="0002"), "30", "48"),
    ("last-upload-with-records", "0320", with_(LAST_UPLOAD, f48=UPLOAD[48]), "30", "48"),
    ("last-upload-total-short", "0320", with_(LAST_UPLOAD, f48="002"), "30", "48"),
]


@pytest.mark.parametrize(
    ("mti", "fields", "code", "field"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_refusals(mti: str, fields: Fields, code: str, field: str | None) -> None:
    with pytest.raises(TransactionRefused) as info:
        request_from_pos(mti, fields)
    assert info.value.response_code == code
    assert info.value.field == field
    # The message never carries the card number.
    assert PAN not in str(info.value)


# -- responses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mti", "expected"),
    [("0200", "0210"), ("0220", "0230"), ("0400", "0410"), ("0800", "0810"), ("0820", "0830")],
)
def test_response_mti(mti: str, expected: str) -> None:
    assert response_mti(mti) == expected


def test_sample_approval_fields() -> None:
    outcome = Outcome(code="00", rrn="532614000123", auth_code="A1B2C3")
    assert response_fields(SALE, outcome, STAMP, ACQUIRER) == {
        2: PAN,
        3: "000000",
        4: "000000010000",
        11: "000123",
        12: "143015",
        13: "1122",
        32: ACQUIRER,
        37: "532614000123",
        38: "A1B2C3",
        39: "00",
        41: "POS00001",
        42: "898310048990001",
        49: "156",
        60: "22000042",
    }


def test_sample_approval_bytes(cup_codec: Iso8583Codec) -> None:
    envelope, message = split_pos_frame(SALE_FRAME[2:])
    request = cup_codec.decode(message)
    outcome = Outcome(
        code="00", rrn="532614000123", auth_code="A1B2C3", settlement_date="2026-11-22"
    )
    fields = response_fields(request.fields, outcome, STAMP, ACQUIRER)
    reply = cup_codec.encode(response_mti(request.mti), fields)
    payload = join_pos_frame(envelope.reply(), reply)
    assert len(payload).to_bytes(2, "big") + payload == APPROVAL_FRAME


@pytest.mark.parametrize(
    ("request_fields", "outcome", "present", "absent"),
    [
        # declined: no 38 even if the bank sent an auth code
        (
            SALE,
            Outcome(code="51", rrn="532614000123", auth_code="A1B2C3"),
            {37: "532614000123", 39: "51"},
            {38, 54},
        ),
        # approved without an auth code: no 38
        (SALE, Outcome(code="00", rrn="532614000123"), {39: "00"}, {38}),
        # refused before an RRN was assigned: no 37
        (SALE, Outcome(code="30"), {39: "30"}, {37, 38}),
        # a balance inquiry's answer carries 54
        (
            BALANCE,
            Outcome(code="00", rrn="532614000124", balance="1002156C000000012345"),
            {3: "310000", 39: "00", 54: "1002156C000000012345"},
            {4, 38},
        ),
        # what the request did not send is not echoed; 14, 22, 25 never are
        (with_(SALE, f2=None, f35=TRACK2), Outcome(code="00", rrn="1"), {}, {2, 14, 22, 25, 35}),
        (VOID, Outcome(code="00", rrn="1"), {}, {61, 14, 22, 25}),
    ],
)
def test_response_fields(
    request_fields: Fields, outcome: Outcome, present: dict[int, str], absent: set[int]
) -> None:
    fields = response_fields(request_fields, outcome, STAMP, ACQUIRER)
    for number in (3, 11, 41, 42, 49, 60):
        assert fields[number] == request_fields[number]
    assert fields[12] == "143015"
    assert fields[13] == "1122"
    assert fields[32] == ACQUIRER
    for number, value in present.items():
        assert fields[number] == value
    assert not absent & fields.keys()


def test_void_response_carries_its_own_rrn_not_the_originals() -> None:
    fields = response_fields(VOID, Outcome(code="00", rrn="532614000200"), STAMP, ACQUIRER)
    assert fields[37] == "532614000200"


@pytest.mark.parametrize(
    ("reserved", "batch", "rewritten"),
    [
        ("00000042001", "000043", "00000043001"),
        ("00000001001", "000002", "00000002001"),
        ("00999999001", "000000", "00000000001"),
        ("00000042", "000043", "00000043"),
    ],
)
def test_sign_on_starts_a_new_batch(reserved: str, batch: str, rewritten: str) -> None:
    outcome = Outcome(code="00", rrn="532614000001", batch=batch)
    fields = response_fields(with_(SIGN_ON, f60=reserved), outcome, STAMP, ACQUIRER)
    assert fields[60] == rewritten
    assert fields[37] == "532614000001"
    assert fields[39] == "00"
    assert not {2, 3, 4, 49} & fields.keys()


def test_echo_keeps_60() -> None:
    fields = response_fields(ECHO, Outcome(code="00"), STAMP, ACQUIRER)
    assert fields[60] == ECHO[60]
    assert fields[39] == "00"


@pytest.mark.parametrize(
    "partial",
    [
        {},
        {41: "POS00001", 42: "898310048990001"},
        {11: "000123", 42: "898310048990001"},
        {11: b"\x00\x01\x23", 41: "POS00001"},
        {11: "000123", 41: b"POS00001"},
    ],
)
def test_format_error_cannot_be_addressed(partial: Fields) -> None:
    assert format_error_fields(partial, STAMP, ACQUIRER) is None


def test_format_error_fields() -> None:
    partial: Fields = {3: "000000", 11: "000123", 41: "POS00001", 60: "22000042"}
    fields = format_error_fields(partial, STAMP, ACQUIRER)
    assert fields == {
        3: "000000",
        11: "000123",
        12: "143015",
        13: "1122",
        32: ACQUIRER,
        39: "30",
        41: "POS00001",
        60: "22000042",
    }


# -- batch settlement and upload answers ---------------------------------------------


def test_response_mti_of_batch_messages() -> None:
    assert (response_mti("0500"), response_mti("0320")) == ("0510", "0330")


@pytest.mark.parametrize("result", ["1", "2"])
def test_a_settlement_answer_echoes_48_with_the_result(result: SettlementResult) -> None:
    outcome = Outcome(
        code="00", rrn="532614000131", settlement_date="2025-11-23", batch_result=result
    )
    fields = answer_fields("0500", SETTLEMENT, outcome, STAMP, ACQUIRER)
    assert fields == {
        11: "000130",
        12: "143015",
        13: "1122",
        15: "1123",
        37: "532614000131",
        39: "00",
        41: "POS00001",
        42: "898310048990001",
        48: SETTLEMENT_48[:30] + result + SETTLEMENT_48[31:],
        49: "156",
        60: "00000042201",
    }


def test_a_refused_settlement_echoes_48_as_sent_and_has_no_37() -> None:
    outcome = Outcome(code="30", settlement_date="2025-11-22")
    fields = answer_fields("0500", SETTLEMENT, outcome, STAMP, ACQUIRER)
    assert fields[39] == "30" and fields[48] == SETTLEMENT_48 and fields[15] == "1122"
    assert not {32, 37, 38} & fields.keys()


@pytest.mark.parametrize("request_fields", [UPLOAD, LAST_UPLOAD])
@pytest.mark.parametrize("code", ["00", "30", "91", "96"])
def test_an_upload_answer_is_39_and_the_echoes_of_11_41_42_60(
    request_fields: Fields, code: str
) -> None:
    fields = answer_fields("0320", request_fields, Outcome(code=code), STAMP, ACQUIRER)
    assert fields == {n: request_fields[n] for n in (11, 41, 42, 60)} | {39: code}


def test_other_answers_keep_their_layout() -> None:
    outcome = Outcome(code="00", rrn="532614000123", auth_code="A1B2C3")
    assert answer_fields("0200", SALE, outcome, STAMP, ACQUIRER) == response_fields(
        SALE, outcome, STAMP, ACQUIRER
    )


def test_format_errors_of_batch_messages_answer_in_their_layout() -> None:
    partial: Fields = {11: "000130", 41: "POS00001", 48: "12", 60: "00000042201"}
    settlement = format_error_fields(partial, STAMP, ACQUIRER, mti="0500")
    assert settlement == {11: "000130", 12: "143015", 13: "1122", 39: "30", 41: "POS00001",
                          48: "12", 60: "00000042201"}  # fmt: skip
    upload = format_error_fields(partial, STAMP, ACQUIRER, mti="0320")
    assert upload == {11: "000130", 39: "30", 41: "POS00001", 60: "00000042201"}
