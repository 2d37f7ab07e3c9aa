"""Messages shown field by field for a person (the message trace, ``switch decode``),
in the manner of jPOS's protected log: card data masked, secrets never shown.

What is shown of each field:

- the PAN (2; a payment code too) and any card number in track 2 (35): masked, first 6
  and last 4 digits; the rest of track 2 (expiry, service code, discretionary data)
  replaced by ``*``;
- the card's expiry (14), ICC data (55), PIN blocks (52), keys and SM4 PIN blocks (62),
  MACs (64, 96, 128), and 48 in a network-management message (08xx: a key change's
  keys): never, only ``[hidden: N bytes]``;
- anything else as it is; in free text (a variable ``ans`` field) any Luhn-valid run
  of 12 to 19 digits is masked as a card number (numeric and fixed fields, such as 53
  or an RRN, are shown as they are: a Luhn check there would only hide good data);
- MessagePack (online): each key by its path; ``card.pan``, ``pan``, ``paycode`` and
  ``account`` masked, ``card.expiry``, ``cvv2``, ``pin``, ``sig``, ``secret`` and keys
  hidden; an envelope's ``body`` (bytes) decoded in its place.

Plain functions, no I/O: ``switch.net.trace`` logs these lines, ``switch decode``
prints them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

import msgspec

from switch.wire.dialect import Dialect
from switch.wire.framing import POS_ENVELOPE_BYTES, split_pos_frame
from switch.wire.iso8583 import FieldValue, Iso8583Codec

MASKED_FIELDS: Final = frozenset({2, 35, 45})
HIDDEN_FIELDS: Final = frozenset({14, 52, 55, 62, 64, 96, 128})
HIDDEN_IN_NETWORK_MANAGEMENT: Final = frozenset({48})
"""A key change carries the new keys (under the ZMK) in 48 (security.md)."""
MASKED_KEYS: Final = frozenset({"pan", "paycode", "account", "card_number"})
HIDDEN_KEYS: Final = frozenset(
    {"expiry", "cvv2", "cvv", "pin", "pin_block", "sig", "secret", "key", "mac", "track2"}
)
PLAIN_KEYS: Final = frozenset(
    {"id", "rrn", "original_rrn", "original_id", "merchant_id", "customer_id", "order_id",
     "key_id", "nonce", "auth_code", "qr_id", "purchase_id"}
)  # fmt: skip
"""Switch-assigned numbers and ids: never a card number, shown as they are."""
_DIGITS: Final = re.compile(r"\d{12,19}")


def mask_number(digits: str) -> str:
    """First 6 and last 4 digits, the rest starred (PCI DSS 3.3)."""
    if len(digits) < 11:
        return "*" * len(digits)
    return f"{digits[:6]}{'*' * (len(digits) - 10)}{digits[-4:]}"


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def mask_card_numbers(text: str) -> str:
    """Any Luhn-valid run of 12 to 19 digits masked."""
    return _DIGITS.sub(
        lambda match: mask_number(match.group(0)) if _luhn(match.group(0)) else match.group(0),
        text,
    )


def hidden(size: int) -> str:
    return f"[hidden: {size} bytes]"


def shown_field(number: int, value: FieldValue, mti: str, *, free_text: bool = True) -> str:
    """One ISO 8583 field's value as a trace shows it (see the module); ``free_text``:
    a variable ``ans`` field (where a card number is looked for)."""
    size = len(value)
    if number in HIDDEN_FIELDS or (number in HIDDEN_IN_NETWORK_MANAGEMENT and mti.startswith("08")):
        return hidden(size)
    if isinstance(value, bytes):
        return value.hex().upper()
    if number in MASKED_FIELDS:
        pan, separator, rest = value.replace("D", "=").partition("=")
        return mask_number(pan) + (separator + "*" * len(rest) if separator else "")
    return mask_card_numbers(value) if free_text else value


def _free_text(dialect: Dialect) -> frozenset[int]:
    return frozenset(
        spec.number for spec in dialect.fields if spec.format == "ans" and spec.length != "fixed"
    )


def iso_lines(mti: str, fields: Mapping[int, FieldValue], dialect: Dialect) -> list[str]:
    """The MTI, then each field: number, name, value (masked or hidden)."""
    names = {spec.number: spec.name for spec in dialect.fields}
    lines = [f"MTI {mti}"]
    for number, shown in iso_fields(mti, fields, dialect).items():
        lines.append(f"{number:>3} {names.get(int(number), '')[:44]:<44} {shown}")
    return lines


def iso_fields(mti: str, fields: Mapping[int, FieldValue], dialect: Dialect) -> dict[str, str]:
    """Each field as the trace logs it, by number."""
    free = _free_text(dialect)
    return {
        str(number): shown_field(number, fields[number], mti, free_text=number in free)
        for number in sorted(fields)
    }


# -- MessagePack ---------------------------------------------------------------------


def _walk(value: Any, path: str) -> Iterator[tuple[str, str]]:
    key = path.rsplit(".", 1)[-1]
    if key in HIDDEN_KEYS:
        size = len(value) if isinstance(value, str | bytes) else 0
        yield path, hidden(size)
    elif key in MASKED_KEYS and isinstance(value, str):
        yield path, mask_number(value) if value.isdigit() else "*" * len(value)
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _walk(item, f"{path}.{name}" if path else str(name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")
    elif isinstance(value, bytes):
        if key == "body":
            try:
                inner = msgspec.msgpack.decode(value)
            except msgspec.DecodeError:
                yield path, hidden(len(value))
            else:
                yield from _walk(inner, path)
        else:
            yield path, hidden(len(value))
    elif isinstance(value, str):
        yield path, value if key in PLAIN_KEYS else mask_card_numbers(value)
    else:
        yield path, mask_card_numbers(repr(value))


def msgpack_fields(payload: bytes) -> dict[str, str]:
    """A MessagePack map (an online frame's payload, or a body alone) key by key, by
    path (``card.pan``, ``body.amount``); raises msgspec.DecodeError if it is not."""
    value = msgspec.msgpack.decode(payload)
    if not isinstance(value, dict):
        raise msgspec.DecodeError("not a MessagePack map")
    return dict(_walk(value, ""))


# -- a frame of any of the switch's interfaces (switch decode) -------------------------


class DecodeProblem(ValueError):
    """The bytes are no frame this decoder knows."""


def _length_prefixed(data: bytes, width: int) -> bool:
    return len(data) > width and int.from_bytes(data[:width], "big") == len(data) - width


def identify(data: bytes) -> str:
    """Which interface's frame ``data`` is: ``pos`` (2-byte length, TPDU 0x60),
    ``bank`` (2-byte length, an ASCII MTI), ``online`` (4-byte length, a MessagePack
    map), ``msgpack`` (a MessagePack map alone, as online.md's bodies are shown)."""
    if _length_prefixed(data, 2) and len(data) > 2 + POS_ENVELOPE_BYTES and data[2] == 0x60:
        return "pos"
    if _length_prefixed(data, 2) and data[2:6].isdigit():
        return "bank"
    if _length_prefixed(data, 4) and (data[4] & 0xF0 == 0x80 or data[4] in (0xDE, 0xDF)):
        return "online"
    if data and (data[0] & 0xF0 == 0x80 or data[0] in (0xDE, 0xDF)):
        return "msgpack"
    raise DecodeProblem(
        "not a frame of the switch's: a POS frame (2-byte length, TPDU 60...), a bank "
        "frame (2-byte length, ASCII MTI), an online frame (4-byte length, MessagePack) "
        "or a MessagePack map"
    )


def decode_lines(data: bytes, kind: str, codecs: Mapping[str, Iso8583Codec]) -> list[str]:
    """``data`` (a whole frame, length prefix included) as lines for a person.
    ``kind``: pos, bank, online or msgpack (:func:`identify`); ``codecs``: ``pos`` and
    ``bank``'s ISO 8583 codecs."""
    if kind == "pos":
        envelope, message = split_pos_frame(data[2:])
        decoded = codecs["pos"].decode(message)
        return [
            f"POS frame, {len(data) - 2} bytes",
            f"TPDU {envelope.tpdu.hex().upper()}  header {envelope.header.hex().upper()}",
            *iso_lines(decoded.mti, decoded.fields, codecs["pos"].dialect),
        ]
    if kind == "bank":
        decoded = codecs["bank"].decode(data[2:])
        return [
            f"bank frame, {len(data) - 2} bytes",
            *iso_lines(decoded.mti, decoded.fields, codecs["bank"].dialect),
        ]
    if kind in ("online", "msgpack"):
        payload = data[4:] if kind == "online" else data
        what = "online frame" if kind == "online" else "MessagePack map"
        fields = msgpack_fields(payload)
        width = max((len(path) for path in fields), default=0)
        return [
            f"{what}, {len(payload)} bytes",
            *(f"{path:<{width}} {shown}" for path, shown in fields.items()),
        ]
    raise DecodeProblem(f"unknown kind {kind!r}: pos, bank, online or msgpack")
