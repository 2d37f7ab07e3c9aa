"""Properties of the ISO 8583 codec, for both shipped dialects.

Decoding any bytes only ever raises MessageDecodeError; encoding anything only ever
raises MessageEncodeError; and ``decode(encode(x)) == x`` for valid messages. The
strategies here are also used by the differential test against pyiso8583.
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switch.errors import MessageDecodeError, MessageEncodeError
from switch.wire.dialect import Dialect, FieldSpec, load_dialects
from switch.wire.iso8583 import FieldValue, Iso8583Codec, Iso8583Message

DIALECTS = load_dialects(Path(__file__).resolve().parents[2] / "conf" / "dialects")
CODECS = {name: Iso8583Codec(dialect) for name, dialect in DIALECTS.items()}
DIALECT_NAMES = sorted(DIALECTS)

ALPHABETS = {
    "n": string.digits,
    "z": string.digits + "=",
    "an": string.ascii_letters + string.digits + " ",
    "ans": "".join(map(chr, range(0x20, 0x7F))),
}

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def field_values(spec: FieldSpec) -> st.SearchStrategy[FieldValue]:
    """Valid values of a field; fixed fields at full width, as decode returns them."""
    low = spec.max_length if spec.length == "fixed" else 0
    if spec.format == "b":
        return st.binary(min_size=low, max_size=spec.max_length)
    return st.text(ALPHABETS[spec.format], min_size=low, max_size=spec.max_length)


def mtis() -> st.SearchStrategy[str]:
    return st.text(string.digits, min_size=4, max_size=4)


def messages(dialect: Dialect) -> st.SearchStrategy[Iso8583Message]:
    """Valid messages of a dialect: any subset of its fields."""
    optional = {spec.number: field_values(spec) for spec in dialect.fields}
    return st.builds(Iso8583Message, mtis(), st.fixed_dictionaries({}, optional=optional))


@pytest.mark.parametrize("name", DIALECT_NAMES)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_decode_of_encode_is_identity(name: str, data: st.DataObject) -> None:
    codec = CODECS[name]
    message = data.draw(messages(DIALECTS[name]))
    wire = codec.encode(message.mti, message.fields)
    assert codec.decode(wire) == message
    assert codec.encode(message.mti, dict(sorted(message.fields.items()))) == wire


def check_decode(codec: Iso8583Codec, data: bytes) -> None:
    """Decodes ``data``; anything but MessageDecodeError fails the test."""
    try:
        message = codec.decode(data)
    except MessageDecodeError as exc:
        assert exc.field is None or 1 <= exc.field <= 128
        assert all(2 <= number <= 128 for number in exc.fields)
    else:
        # What decodes re-encodes to the same bytes, but for a secondary bitmap that
        # announces no field (encode sends one only when a field above 64 is present).
        wire = codec.encode(message.mti, message.fields)
        if wire != data:
            size = codec._mti_size
            assert data[size] & 0x80 and all(number <= 64 for number in message.fields)
            primary = bytes([data[size] & 0x7F]) + data[size + 1 : size + 8]
            assert wire == data[:size] + primary + data[size + 16 :]


@pytest.mark.parametrize("name", DIALECT_NAMES)
@PROPERTY_SETTINGS
@given(data=st.binary(max_size=300))
def test_decode_of_any_bytes_raises_only_decode_error(name: str, data: bytes) -> None:
    check_decode(CODECS[name], data)


def heads(dialect: Dialect) -> st.SearchStrategy[bytes]:
    """A valid MTI and bitmap(s) announcing fields of the dialect (now and then others)."""
    numbers = [spec.number for spec in dialect.fields]
    codec = CODECS[dialect.name]

    def head(mti: str, chosen: list[int], stray: list[int]) -> bytes:
        bits = 0
        for number in chosen + stray:
            bits |= 1 << (128 - number)
        if bits & (1 << 64) - 1 and dialect.secondary_bitmap:
            bitmap = (bits | 1 << 127).to_bytes(16, "big")
        else:
            bitmap = (bits >> 64).to_bytes(8, "big")
        raw_mti = bytes.fromhex(mti) if dialect.encoding == "bcd" else mti.encode()
        assert len(raw_mti) == codec._mti_size
        return raw_mti + bitmap

    stray = st.lists(st.integers(2, 128 if dialect.secondary_bitmap else 64), max_size=1)
    return st.builds(head, mtis(), st.lists(st.sampled_from(numbers), max_size=8), stray)


@pytest.mark.parametrize("name", DIALECT_NAMES)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_decode_of_bytes_after_a_valid_head_raises_only_decode_error(
    name: str, data: st.DataObject
) -> None:
    head = data.draw(heads(DIALECTS[name]))
    check_decode(CODECS[name], head + data.draw(st.binary(max_size=200)))


@pytest.mark.parametrize("name", DIALECT_NAMES)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_decode_of_damaged_messages_raises_only_decode_error(
    name: str, data: st.DataObject
) -> None:
    codec = CODECS[name]
    message = data.draw(messages(DIALECTS[name]))
    wire = bytearray(codec.encode(message.mti, message.fields))
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(wire)))
        action = data.draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        byte = data.draw(st.integers(0, 255))
        if action == "replace" and position < len(wire):
            wire[position] = byte
        elif action == "insert":
            wire.insert(position, byte)
        elif action == "delete" and position < len(wire):
            del wire[position]
        elif action == "cut":
            del wire[position:]
    check_decode(codec, bytes(wire))


ANYTHING = st.one_of(
    st.text(max_size=50),
    st.binary(max_size=50),
    st.integers(),
    st.none(),
    st.text(string.digits, max_size=50),
)


@pytest.mark.parametrize("name", DIALECT_NAMES)
@PROPERTY_SETTINGS
@given(
    mti=st.one_of(mtis(), ANYTHING),
    fields=st.dictionaries(st.one_of(st.integers(-1, 130), st.text(max_size=3)), ANYTHING),
)
def test_encode_of_anything_raises_only_encode_error(
    name: str, mti: str, fields: dict[int, FieldValue]
) -> None:
    codec = CODECS[name]
    try:
        wire = codec.encode(mti, fields)
    except MessageEncodeError:
        return
    decoded = codec.decode(wire)
    assert decoded.mti == mti
    assert set(decoded.fields) == set(fields)
