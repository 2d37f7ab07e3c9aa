"""The ISO 8583 codec against the specs' sample frames, and its errors, as tables."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from switch.errors import MessageDecodeError, MessageEncodeError
from switch.wire.dialect import load_dialects
from switch.wire.framing import split_pos_frame
from switch.wire.iso8583 import FieldValue, Iso8583Codec, Iso8583Message
from switch.wire.samples import (
    BANK_REVERSAL,
    BANK_REVERSAL_FIELDS,
    BANK_SALE,
    BANK_SALE_FIELDS,
    PAN,
    POS_SALE,
    POS_SALE_APPROVAL,
    POS_SALE_APPROVAL_FIELDS,
    POS_SALE_APPROVAL_FRAME,
    POS_SALE_FIELDS,
    POS_SALE_FRAME,
    POS_SETTLEMENT,
    POS_SETTLEMENT_ANSWER,
    POS_SETTLEMENT_ANSWER_FIELDS,
    POS_SETTLEMENT_FIELDS,
)

DIALECTS = load_dialects(Path(__file__).resolve().parents[2] / "conf" / "dialects")
POS = Iso8583Codec(DIALECTS["cup-pos"])
BANK = Iso8583Codec(DIALECTS["h2h-ascii"])
CODECS = {"pos": POS, "bank": BANK}

SAMPLES = [
    pytest.param(POS, POS_SALE, "0200", POS_SALE_FIELDS, id="pos-sale"),
    pytest.param(POS, POS_SALE_APPROVAL, "0210", POS_SALE_APPROVAL_FIELDS, id="pos-approval"),
    pytest.param(POS, POS_SETTLEMENT, "0500", POS_SETTLEMENT_FIELDS, id="pos-settlement"),
    pytest.param(
        POS, POS_SETTLEMENT_ANSWER, "0510", POS_SETTLEMENT_ANSWER_FIELDS, id="pos-settlement-answer"
    ),
    pytest.param(BANK, BANK_SALE, "0200", BANK_SALE_FIELDS, id="bank-sale"),
    pytest.param(BANK, BANK_REVERSAL, "0400", BANK_REVERSAL_FIELDS, id="bank-reversal"),
]


@pytest.mark.parametrize(("codec", "data", "mti", "fields"), SAMPLES)
def test_sample_frames_decode(
    codec: Iso8583Codec, data: bytes, mti: str, fields: dict[int, FieldValue]
) -> None:
    assert codec.decode(data) == Iso8583Message(mti=mti, fields=fields)


@pytest.mark.parametrize(("codec", "data", "mti", "fields"), SAMPLES)
def test_sample_frames_encode_to_the_byte(
    codec: Iso8583Codec, data: bytes, mti: str, fields: dict[int, FieldValue]
) -> None:
    assert codec.encode(mti, fields) == data
    assert codec.encode(mti, dict(reversed(fields.items()))) == data  # any field order
    decoded = codec.decode(data)
    assert codec.encode(decoded.mti, decoded.fields) == data


def test_sample_approval_answers_the_sample_sale() -> None:
    """The approval frame is the sale's reply envelope around the encoded response."""
    envelope, _ = split_pos_frame(POS_SALE_FRAME[2:])
    reply = envelope.reply()
    message = POS.encode("0210", POS_SALE_APPROVAL_FIELDS)
    payload = reply.tpdu + reply.header + message
    assert len(payload).to_bytes(2, "big") + payload == POS_SALE_APPROVAL_FRAME


def patched(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new) :]


# Offsets in POS_SALE: MTI 0-1, bitmap 2-9, field 2 prefix 10 and data 11-20, 3 at 21,
# 4 at 24, 11 at 30, 14 at 33, 22 at 35, 25 at 37, 41 at 38, 42 at 46, 49 at 61, 60 at 64.
# In BANK_SALE: MTI 0-3, bitmap 4-11, field 2 prefix 12-13, 11 at 61, 41 at 104.
STRUCTURAL = "structural"
CONTENT = "content"
DECODE_ERRORS = [
    # (codec, data, field at fault, MTI read, kind)
    pytest.param("pos", b"", None, None, STRUCTURAL, id="empty"),
    pytest.param("pos", POS_SALE[:1], None, None, STRUCTURAL, id="truncated-mti"),
    pytest.param("pos", patched(POS_SALE, 0, b"\x0a"), None, None, STRUCTURAL, id="mti-not-bcd"),
    pytest.param("pos", POS_SALE[:6], None, "0200", STRUCTURAL, id="truncated-bitmap"),
    pytest.param("pos", patched(POS_SALE, 2, b"\xf0"), 1, "0200", STRUCTURAL, id="secondary"),
    pytest.param("pos", patched(POS_SALE, 2, b"\x78"), 5, "0200", STRUCTURAL, id="unknown-field"),
    pytest.param("pos", patched(POS_SALE, 10, b"\x1a"), 2, "0200", STRUCTURAL, id="prefix-not-bcd"),
    pytest.param("pos", patched(POS_SALE, 10, b"\x20"), 2, "0200", STRUCTURAL, id="prefix-too-big"),
    pytest.param("pos", POS_SALE[:15], 2, "0200", STRUCTURAL, id="truncated-variable"),
    pytest.param("pos", POS_SALE[:50], 42, "0200", STRUCTURAL, id="truncated-fixed-text"),
    pytest.param("pos", POS_SALE[:26], 4, "0200", STRUCTURAL, id="truncated-fixed-bcd"),
    pytest.param("pos", POS_SALE[:65], 60, "0200", STRUCTURAL, id="truncated-lll-prefix"),
    pytest.param("pos", POS_SALE[:68], 60, "0200", STRUCTURAL, id="truncated-lllvar"),
    pytest.param("pos", POS_SALE + b"\x00", None, "0200", STRUCTURAL, id="trailing-byte"),
    pytest.param("pos", patched(POS_SALE, 11, b"\x6a"), 2, "0200", CONTENT, id="pan-not-bcd"),
    pytest.param("pos", patched(POS_SALE, 20, b"\x11"), 2, "0200", CONTENT, id="pan-pad-nibble"),
    pytest.param("pos", patched(POS_SALE, 25, b"\x0f"), 4, "0200", CONTENT, id="amount-not-bcd"),
    pytest.param("pos", patched(POS_SALE, 35, b"\x10"), 22, "0200", CONTENT, id="leading-pad"),
    pytest.param("pos", patched(POS_SALE, 38, b"\x07"), 41, "0200", CONTENT, id="ans-control"),
    pytest.param("pos", patched(POS_SALE, 46, b"\xc3"), 42, "0200", CONTENT, id="ans-not-ascii"),
    pytest.param("pos", patched(POS_SALE, 61, b"!"), 49, "0200", CONTENT, id="an-punctuation"),
    pytest.param("pos", patched(POS_SALE, 67, b"\x0d"), 60, "0200", CONTENT, id="lllvar-not-bcd"),
    pytest.param("bank", b"02X0" + BANK_SALE[4:], None, None, STRUCTURAL, id="bank-mti"),
    pytest.param("bank", BANK_SALE[:10], None, "0200", STRUCTURAL, id="bank-bitmap"),
    pytest.param(
        "bank",
        b"0800" + b"\x80" + bytes(7) + bytes(4),
        None,
        "0800",
        STRUCTURAL,
        id="bank-truncated-secondary",
    ),
    pytest.param(
        "bank",
        b"0800" + b"\x80" + bytes(7) + b"\x80" + bytes(7),
        65,
        "0800",
        STRUCTURAL,
        id="bank-unknown-secondary-field",
    ),
    pytest.param("bank", patched(BANK_SALE, 12, b"1x"), 2, "0200", STRUCTURAL, id="bank-ll-text"),
    pytest.param("bank", patched(BANK_SALE, 12, b"20"), 2, "0200", STRUCTURAL, id="bank-ll-max"),
    pytest.param("bank", BANK_SALE[:120], 42, "0200", STRUCTURAL, id="bank-truncated"),
    pytest.param("bank", BANK_SALE + b"0", None, "0200", STRUCTURAL, id="bank-trailing"),
    pytest.param("bank", patched(BANK_SALE, 14, b"A"), 2, "0200", CONTENT, id="bank-pan-letter"),
    pytest.param("bank", patched(BANK_SALE, 61, b" "), 11, "0200", CONTENT, id="bank-n-space"),
    pytest.param("bank", patched(BANK_SALE, 104, b"\xff"), 41, "0200", CONTENT, id="bank-ans"),
]


@pytest.mark.parametrize(("codec_name", "data", "field", "mti", "kind"), DECODE_ERRORS)
def test_decode_errors_name_the_field(
    codec_name: str, data: bytes, field: int | None, mti: str | None, kind: str
) -> None:
    with pytest.raises(MessageDecodeError) as caught:
        CODECS[codec_name].decode(data)
    error = caught.value
    assert (error.field, error.mti) == (field, mti)
    assert error.response_code == "30"
    assert PAN not in str(error)  # no card data in error messages
    if kind == CONTENT:
        # Decoding went on past the bad field: every other field was read.
        expected = POS_SALE_FIELDS if codec_name == "pos" else BANK_SALE_FIELDS
        assert error.fields == {n: v for n, v in expected.items() if n != field}


def test_bad_pan_still_yields_stan_and_terminal() -> None:
    """Enough survives a bad field 2 to address a format-error (30) response."""
    with pytest.raises(MessageDecodeError) as caught:
        POS.decode(patched(POS_SALE, 12, b"\xee"))
    error = caught.value
    assert error.field == 2
    assert error.mti == "0200"
    assert error.fields[11] == "000123"
    assert error.fields[41] == "POS00001"
    assert 2 not in error.fields


def test_first_content_error_is_reported() -> None:
    data = patched(patched(POS_SALE, 38, b"\x00"), 25, b"\xaa")
    with pytest.raises(MessageDecodeError) as caught:
        POS.decode(data)
    assert caught.value.field == 4
    assert set(caught.value.fields) == set(POS_SALE_FIELDS) - {4, 41}


def test_structural_error_after_content_error_stops_there() -> None:
    data = patched(POS_SALE, 25, b"\xaa")[:50]
    with pytest.raises(MessageDecodeError) as caught:
        POS.decode(data)
    error = caught.value
    assert error.field == 42
    assert set(error.fields) == {2, 3, 11, 14, 22, 25, 41}
    assert "field 4" in str(error)


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = POS.encode("0800", {11: "000001", 52: b"\x01" * 8})
    for view in (bytearray(data), memoryview(data)):
        message = POS.decode(view)  # type: ignore[arg-type]  # what a careless caller passes
        assert message.fields == {11: "000001", 52: b"\x01" * 8}
        assert type(message.fields[52]) is bytes


ENCODE_ERRORS = [
    # (codec, MTI, fields, field at fault)
    pytest.param("pos", "020", {}, None, id="mti-short"),
    pytest.param("pos", "02a0", {}, None, id="mti-letter"),
    pytest.param("pos", "\u0660200", {}, None, id="mti-arabic-digit"),
    pytest.param("pos", 200, {}, None, id="mti-int"),
    pytest.param("pos", "0200", {2: 6222021000111122221}, 2, id="n-int"),
    pytest.param("pos", "0200", {2: "1" * 20}, 2, id="llvar-too-long"),
    pytest.param("pos", "0200", {2: "62220210001111a"}, 2, id="n-letter"),
    pytest.param("pos", "0200", {2: "6222\u0661"}, 2, id="n-arabic-digit"),
    pytest.param("pos", "0200", {4: "1" * 13}, 4, id="fixed-n-too-long"),
    pytest.param("pos", "0200", {4: b"100"}, 4, id="fixed-n-bytes"),
    pytest.param("pos", "0200", {4: "10.00"}, 4, id="fixed-n-dot"),
    pytest.param("pos", "0200", {3: "000000", 4: "-1000"}, 4, id="fixed-n-in-run"),
    pytest.param("pos", "0200", {35: "622202=28a"}, 35, id="z-letter"),
    pytest.param("pos", "0200", {35: "1" * 38}, 35, id="z-too-long"),
    pytest.param("pos", "0200", {37: "5326-4000123"}, 37, id="an-punctuation"),
    pytest.param("pos", "0200", {37: "5326140001234"}, 37, id="an-too-long"),
    pytest.param("pos", "0200", {41: "POS\x0001"}, 41, id="ans-control"),
    pytest.param("pos", "0200", {41: "POS\u00e90001"}, 41, id="ans-not-ascii"),
    pytest.param("pos", "0200", {41: "POS00001", 42: 898310048990001}, 42, id="ans-int"),
    pytest.param("pos", "0200", {44: "x" * 26}, 44, id="llvar-ans-too-long"),
    pytest.param("pos", "0200", {52: b"1234567"}, 52, id="b-short"),
    pytest.param("pos", "0200", {52: "12345678"}, 52, id="b-str"),
    pytest.param("pos", "0200", {55: b"x" * 256}, 55, id="lllvar-b-too-long"),
    pytest.param("pos", "0200", {5: "1"}, 5, id="not-in-dialect"),
    pytest.param("pos", "0200", {1: b"\x00" * 8}, 1, id="bitmap-as-field"),
    pytest.param("pos", "0200", {70: "001"}, 70, id="secondary-field"),
    pytest.param("pos", "0200", {"2": PAN}, None, id="str-key"),
    pytest.param("bank", "0200", {49: "CNY"}, 49, id="bank-n-letters"),
    pytest.param("bank", "0200", {90: "1" * 43}, 90, id="bank-n42-too-long"),
    pytest.param("bank", "0200", {54: "x" * 121}, 54, id="bank-lllvar-too-long"),
    pytest.param("bank", "0200", {35: "1234=x"}, 35, id="bank-z-letter"),
    pytest.param("bank", "0200", {128: b"x"}, 128, id="bank-not-in-dialect"),
]


@pytest.mark.parametrize(("codec_name", "mti", "fields", "field"), ENCODE_ERRORS)
def test_encode_errors_name_the_field(
    codec_name: str, mti: str, fields: Mapping[int, FieldValue], field: int | None
) -> None:
    with pytest.raises(MessageEncodeError) as caught:
        CODECS[codec_name].encode(mti, fields)
    assert caught.value.field == field
    assert caught.value.response_code == "96"
    assert PAN not in str(caught.value)


@pytest.mark.parametrize(
    ("codec_name", "fields", "decoded"),
    [
        pytest.param(
            "pos",
            {4: "100", 22: "21", 11: "", 49: "15", 38: "A", 41: "T1"},
            {4: "000000000100", 22: "021", 11: "000000", 49: "15 ", 38: "A     ", 41: "T1      "},
            id="pos-fixed-padding",
        ),
        pytest.param(
            "pos",
            {2: "", 32: "123", 44: "", 55: b"", 60: "2200004200"},
            {2: "", 32: "123", 44: "", 55: b"", 60: "2200004200"},
            id="pos-empty-variable",
        ),
        pytest.param(
            "bank",
            {4: "100", 49: "156", 43: "SHOP 1", 37: "RRN 1"},
            {4: "000000000100", 49: "156", 43: "SHOP 1".ljust(40), 37: "RRN 1       "},
            id="bank-fixed-padding",
        ),
    ],
)
def test_encode_pads_fixed_fields(
    codec_name: str, fields: dict[int, FieldValue], decoded: dict[int, FieldValue]
) -> None:
    codec = CODECS[codec_name]
    assert codec.decode(codec.encode("0200", fields)).fields == decoded


@pytest.mark.parametrize(
    ("codec_name", "track", "wire"),
    [
        pytest.param("pos", PAN + "=2812", "24" + PAN + "d2812", id="bcd-even"),
        pytest.param("pos", "6222=2812", "096222d28120", id="bcd-odd"),
        pytest.param("pos", "=", "01d0", id="bcd-separator-only"),
        pytest.param("bank", "6222=2812", b"096222=2812".hex(), id="ascii"),
    ],
)
def test_track_data_separator(codec_name: str, track: str, wire: str) -> None:
    codec = CODECS[codec_name]
    data = codec.encode("0200", {35: track})
    assert data.hex().endswith(wire)
    assert codec.decode(data).fields == {35: track}


def test_bcd_field_layouts() -> None:
    """Odd fixed n: leading 0 nibble; odd variable n: trailing 0 nibble; prefixes count digits."""
    data = POS.encode("0200", {2: "123", 22: "051", 60: "22000042001"})
    bitmap = (1 << 62 | 1 << 42 | 1 << 4).to_bytes(8, "big")
    assert data == b"\x02\x00" + bitmap + bytes.fromhex("03 1230 0051 0011 22000042 0010")


def test_secondary_bitmap_only_when_a_field_above_64_is_present() -> None:
    plain = BANK.encode("0800", {11: "000001"})
    assert plain == b"0800" + (1 << 53).to_bytes(8, "big") + b"000001"
    extended = BANK.encode("0800", {11: "000001", 70: "301"})
    assert extended[4:20] == (1 << 127 | 1 << 117 | 1 << 58).to_bytes(16, "big")
    assert BANK.decode(extended).fields == {11: "000001", 70: "301"}


def test_decode_accepts_a_secondary_bitmap_with_no_secondary_fields() -> None:
    data = b"0800" + (1 << 127 | 1 << 117).to_bytes(16, "big") + b"000001"
    assert BANK.decode(data) == Iso8583Message(mti="0800", fields={11: "000001"})


def test_memoised_layouts_stay_bounded() -> None:
    from switch.wire import iso8583

    codec = Iso8583Codec(DIALECTS["cup-pos"])
    for stan in range(iso8583.MAX_CACHED_LAYOUTS * 2):
        mti = f"{stan % 10000:04d}"
        message = codec.decode(codec.encode(mti, {11: "000123"}))
        assert message.fields == {11: "000123"}
    assert len(codec._decode_plans) <= iso8583.MAX_CACHED_LAYOUTS
    assert len(codec._encode_plans) <= iso8583.MAX_CACHED_LAYOUTS
