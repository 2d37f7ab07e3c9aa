"""Differential test: our codec against pyiso8583, an independent implementation.

For each shipped dialect the test builds the equivalent pyiso8583 spec (from the same
dialect table, translated by the rules below), then checks in both directions that
messages encode to the same bytes and decode to the same values.

Translation to pyiso8583 (version 4):
- BCD dialect: MTI and bitmaps ``data_enc="b"`` (2 and 8 bytes); n and z fields are
  ``data_enc="b"`` hex strings with ``len_count="nibbles"`` and ``len_enc="bcd"``
  (LLVAR ``len_type=1``, LLLVAR ``len_type=2``), fixed odd ones ``left_pad="0"`` and
  variable odd ones ``right_pad="0"``; an/ans ``data_enc="ascii"``; b ``data_enc="b"``
  counting bytes.
- ASCII dialect: everything ``data_enc="ascii"`` and ``len_enc="ascii"`` (LLVAR
  ``len_type=2``, LLLVAR ``3``) except b fields and bitmaps, ``data_enc="b"``.
- pyiso8583 holds b fields as upper-case hex and BCD track data with ``D`` where we hold
  bytes and ``=``; values are converted both ways.

Nothing had to be restricted: pyiso8583 can express both dialects exactly. It does not
check character classes (an/ans/n in ASCII) or pad fixed fields, so the generated values
are valid ones at full width, which both implementations must agree on.
"""

from __future__ import annotations

from typing import Any

import iso8583
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.pyiso_oracle import pyiso_spec
from switch.wire.iso8583 import FieldValue, Iso8583Message
from tests.wire.test_iso8583 import SAMPLES
from tests.wire.test_iso8583_props import (
    CODECS,
    DIALECT_NAMES,
    DIALECTS,
    PROPERTY_SETTINGS,
    messages,
)

SPECS = {name: pyiso_spec(dialect) for name, dialect in DIALECTS.items()}
FORMATS = {name: {f.number: f.format for f in dialect.fields} for name, dialect in DIALECTS.items()}


def to_pyiso(name: str, message: Iso8583Message) -> dict[str, str]:
    bcd = DIALECTS[name].encoding == "bcd"
    document = {"t": message.mti}
    for number, value in message.fields.items():
        if isinstance(value, bytes):
            document[str(number)] = value.hex().upper()
        elif bcd and FORMATS[name][number] == "z":
            document[str(number)] = value.replace("=", "D")
        else:
            document[str(number)] = value
    return document


def from_pyiso(name: str, document: dict[str, str]) -> Iso8583Message:
    bcd = DIALECTS[name].encoding == "bcd"
    fields: dict[int, FieldValue] = {}
    for key, value in document.items():
        if not key.isdigit() or key == "1":
            continue  # MTI, bitmaps
        number = int(key)
        format = FORMATS[name][number]
        if format == "b":
            fields[number] = bytes.fromhex(value)
        elif bcd and format == "z":
            fields[number] = value.replace("D", "=")
        else:
            fields[number] = value
    return Iso8583Message(mti=document["t"], fields=fields)


def pyiso_encode(name: str, message: Iso8583Message) -> bytes:
    wire, _ = iso8583.encode(to_pyiso(name, message), SPECS[name])
    return bytes(wire)


def pyiso_decode(name: str, wire: bytes) -> Iso8583Message:
    document, _ = iso8583.decode(wire, SPECS[name])
    return from_pyiso(name, document)


def check_both_ways(name: str, message: Iso8583Message) -> None:
    codec = CODECS[name]
    ours = codec.encode(message.mti, message.fields)
    theirs = pyiso_encode(name, message)
    assert ours == theirs
    assert pyiso_decode(name, ours) == message
    assert codec.decode(theirs) == message


@pytest.mark.parametrize(("codec", "data", "mti", "fields"), SAMPLES)
def test_samples_agree_with_pyiso8583(
    codec: Any, data: bytes, mti: str, fields: dict[int, FieldValue]
) -> None:
    name = codec.dialect.name
    message = Iso8583Message(mti=mti, fields=fields)
    assert pyiso_decode(name, data) == message
    assert pyiso_encode(name, message) == data
    check_both_ways(name, message)


@pytest.mark.parametrize("name", DIALECT_NAMES)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_generated_messages_agree_with_pyiso8583(name: str, data: st.DataObject) -> None:
    check_both_ways(name, data.draw(messages(DIALECTS[name])))


@pytest.mark.parametrize("name", DIALECT_NAMES)
def test_every_field_at_its_extremes_agrees_with_pyiso8583(name: str) -> None:
    """Each field alone, empty (variable) or at its maximum length, odd and even."""
    for spec in DIALECTS[name].fields:
        lengths = {spec.max_length}
        if spec.length != "fixed":
            lengths |= {0, 1, spec.max_length - 1}
        for length in lengths:
            value: FieldValue
            if spec.format == "b":
                value = bytes(range(256))[:length].ljust(length, b"\xff")
            elif spec.format == "z":
                value = ("6222=" * 100)[:length]
            elif spec.format == "n":
                value = ("1234567890" * 100)[:length]
            elif spec.format == "an":
                value = ("Ab 9" * 250)[:length]
            else:
                value = ("Ab 9~" * 200)[:length]
            check_both_ways(name, Iso8583Message(mti="0200", fields={spec.number: value}))
