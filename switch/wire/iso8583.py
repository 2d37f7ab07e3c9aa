"""ISO 8583 messages: one codec compiled per dialect.

:class:`Iso8583Codec` turns a :class:`~switch.wire.dialect.Dialect` into a closure per
field, built once, and a table per bitmap byte of the fields it announces. The layout
of a message (its MTI and bitmaps) selects a *plan*: the steps that decode or encode its
fields, where a run of consecutive fixed-width fields is one step (one ``bytes.hex`` or
``bytes.fromhex`` for a run of BCD fields). Plans are memoised per layout, so a message
of a known shape costs one pass of slices and C-level ``str`` checks, with no look-up of
a field's spec.

Decoding tells *content* errors (a field whose bounds are known holds bad characters)
from *structural* ones (the bounds of what follows are lost). A content error does not
stop decoding: the field is skipped and the rest still read, so the caller can address a
format-error (30) response with fields 11 and 41. Error messages never quote field
values, so no PAN or track data reaches a log through them.
"""

from __future__ import annotations

import itertools
import operator
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import msgspec

from switch.errors import MessageDecodeError, MessageEncodeError
from switch.wire.dialect import Dialect, FieldSpec

FieldValue = str | bytes

Problems = list[tuple[int, str]]
"""Content errors met while decoding: (field number, what is wrong)."""
DecodeStep = Callable[[bytes, int, dict[int, FieldValue], Problems], int]
"""Decodes one field, or a run of fixed-width fields, from ``data`` at ``pos`` into
``fields``; returns the position after. Bad content is appended to the problems and the
field left out; a structural error raises :class:`_StructuralError`."""
EncodeStep = Callable[[Mapping[int, FieldValue]], bytes]
"""Encodes one field, or a run of fixed-width fields, of a message; raises
MessageEncodeError for a bad value."""

MAX_CACHED_LAYOUTS: Final = 512
"""Plans memoised per direction. The memo is emptied when full, so a peer sending ever
new bitmaps costs time, never memory."""

_DIGITS: Final = b"0123456789"
_ALLOWED_BYTES: Final = {
    "n": _DIGITS,
    "z": _DIGITS + b"=",
    "an": (string.ascii_letters + string.digits + " ").encode("ascii"),
    "ans": bytes(range(0x20, 0x7F)),
}
"""Per text format, every byte its data may hold: the exact check."""

_QUICK_CHECK: Final[dict[str, Callable[[str], bool]]] = {
    "n": str.isdigit,
    "z": str.isdigit,
    "an": str.isalnum,
    "ans": str.isprintable,
}
"""Per text format, a C-speed check (after ``isascii``) that passes most valid values;
it fails an empty value, an ``an`` value with spaces and a track with ``=``, which are
then given the exact, slower check."""

_CHARACTER_CLASS: Final = {
    "n": "digits",
    "z": "digits and '='",
    "an": "letters, digits and spaces",
    "ans": "printable ASCII",
}
_PREFIX_DIGITS: Final = {"LLVAR": 2, "LLLVAR": 3}

_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


class Iso8583Message(msgspec.Struct, frozen=True, gc=False):
    """A decoded message: its type and data elements 2..128 (bitmaps are implied)."""

    mti: str
    """Message type indicator, four ASCII digits such as ``"0200"``."""
    fields: dict[int, FieldValue]


class _StructuralError(Exception):
    """A field's bounds cannot be known: decoding must stop here."""

    def __init__(self, number: int, problem: str) -> None:
        super().__init__(problem)
        self.number = number


# Length prefixes.


def _prefix_width(encoding: str, length: str) -> int:
    """Bytes taken by a length prefix: BCD packs two digits a byte."""
    digits = _PREFIX_DIGITS[length]
    return (digits + 1) // 2 if encoding == "bcd" else digits


def _prefix_bytes(encoding: str, spec: FieldSpec) -> list[bytes]:
    """The prefix stating each length 0..max_length, indexed by length."""
    width = _prefix_width(encoding, spec.length)
    counts = range(spec.max_length + 1)
    if encoding == "bcd":
        return [bytes.fromhex(f"{count:0{width * 2}d}") for count in counts]
    return [f"{count:0{width}d}".encode("ascii") for count in counts]


def _prefix_lengths(encoding: str, spec: FieldSpec) -> dict[bytes, int]:
    """Every valid prefix mapped to the length it states.

    One dict look-up then both parses and bounds-checks a prefix; anything missing from
    it (truncated, not digits, above the maximum) is diagnosed on the error path.
    """
    return {raw: count for count, raw in enumerate(_prefix_bytes(encoding, spec))}


def _bad_prefix(spec: FieldSpec, encoding: str, raw: bytes) -> _StructuralError:
    """Why ``raw`` is not a valid length prefix of the field (error path only)."""
    width = _prefix_width(encoding, spec.length)
    if len(raw) < width:
        problem = f"length prefix truncated: {len(raw)} of {width} bytes"
    else:
        text = raw.hex() if encoding == "bcd" else raw.decode("latin-1")
        if text.isascii() and text.isdigit():
            problem = f"length {int(text)} exceeds maximum {spec.max_length}"
        else:
            problem = f"length prefix is not {encoding.upper()} digits"
    return _StructuralError(spec.number, problem)


def _truncated(number: int, need: int, have: int) -> _StructuralError:
    return _StructuralError(number, f"truncated: {max(have, 0)} of {need} bytes")


def _exactly_valid(text: str, allowed: bytes) -> bool:
    """The exact character check behind a failed quick one."""
    return text.isascii() and not text.encode("ascii").translate(None, allowed)


# Decoders of single fields: a factory per layout, each returning a closure over the
# field's constants.


def _fixed_bcd_decoder(spec: FieldSpec) -> DecodeStep:
    """n, fixed, packed BCD; an odd digit count is right-aligned behind a 0 nibble."""
    number = spec.number
    size = (spec.max_length + 1) // 2
    nibbles = size * 2
    if spec.max_length & 1:

        def decode_odd(
            data: bytes, pos: int, fields: dict[int, FieldValue], problems: Problems
        ) -> int:
            end = pos + size
            text = data[pos:end].hex()
            if len(text) != nibbles:
                raise _truncated(number, size, len(data) - pos)
            if not text.isdigit():
                problems.append((number, "not BCD digits"))
            elif text[0] != "0":
                problems.append((number, "leading pad nibble is not 0"))
            else:
                fields[number] = text[1:]
            return end

        return decode_odd

    def decode_even(
        data: bytes, pos: int, fields: dict[int, FieldValue], problems: Problems
    ) -> int:
        end = pos + size
        text = data[pos:end].hex()
        if len(text) != nibbles:
            raise _truncated(number, size, len(data) - pos)
        if text.isdigit():
            fields[number] = text
        else:
            problems.append((number, "not BCD digits"))
        return end

    return decode_even


def _variable_bcd_decoder(spec: FieldSpec) -> DecodeStep:
    """n or z, LLVAR/LLLVAR, packed BCD left-aligned before a 0 pad nibble when odd.

    The prefix counts digits. Track data (z) carries '=' as nibble D.
    """
    number = spec.number
    lengths = _prefix_lengths("bcd", spec)
    width = _prefix_width("bcd", spec.length)
    track = spec.format == "z"

    def decode(data: bytes, pos: int, fields: dict[int, FieldValue], problems: Problems) -> int:
        start = pos + width
        raw = data[pos:start]
        count = lengths.get(raw)
        if count is None:
            raise _bad_prefix(spec, "bcd", raw)
        size = (count + 1) >> 1
        end = start + size
        text = data[start:end].hex()
        if len(text) != size * 2:
            raise _truncated(number, size, len(data) - start)
        if count & 1:
            if text[-1] != "0":
                problems.append((number, "trailing pad nibble is not 0"))
                return end
            text = text[:-1]
        if text.isdigit() or not text:
            fields[number] = text
        elif track and _exactly_valid(text.replace("d", "="), _ALLOWED_BYTES["z"]):
            fields[number] = text.replace("d", "=")
        else:
            problems.append((number, "not BCD track data" if track else "not BCD digits"))
        return end

    return decode


def _fixed_text_decoder(spec: FieldSpec) -> DecodeStep:
    """an/ans (and ASCII n), fixed width, returned with its padding."""
    number = spec.number
    size = spec.max_length
    quick_check = _QUICK_CHECK[spec.format]
    allowed = _ALLOWED_BYTES[spec.format]
    problem = f"not {_CHARACTER_CLASS[spec.format]}"

    def decode(data: bytes, pos: int, fields: dict[int, FieldValue], problems: Problems) -> int:
        end = pos + size
        raw = data[pos:end]
        if len(raw) != size:
            raise _truncated(number, size, len(data) - pos)
        text = raw.decode("latin-1")
        if (text.isascii() and quick_check(text)) or not raw.translate(None, allowed):
            fields[number] = text
        else:
            problems.append((number, problem))
        return end

    return decode


def _variable_text_decoder(spec: FieldSpec, encoding: str) -> DecodeStep:
    """an/ans (and ASCII n/z), LLVAR/LLLVAR; the prefix counts bytes."""
    number = spec.number
    lengths = _prefix_lengths(encoding, spec)
    width = _prefix_width(encoding, spec.length)
    quick_check = _QUICK_CHECK[spec.format]
    allowed = _ALLOWED_BYTES[spec.format]
    problem = f"not {_CHARACTER_CLASS[spec.format]}"

    def decode(data: bytes, pos: int, fields: dict[int, FieldValue], problems: Problems) -> int:
        start = pos + width
        raw = data[pos:start]
        count = lengths.get(raw)
        if count is None:
            raise _bad_prefix(spec, encoding, raw)
        end = start + count
        raw = data[start:end]
        if len(raw) != count:
            raise _truncated(number, count, len(data) - start)
        text = raw.decode("latin-1")
        if (text.isascii() and quick_check(text)) or not raw.translate(None, allowed):
            fields[number] = text
        else:
            problems.append((number, problem))
        return end

    return decode


def _fixed_binary_decoder(spec: FieldSpec) -> DecodeStep:
    number = spec.number
    size = spec.max_length

    def decode(data: bytes, pos: int, fields: dict[int, FieldValue], problems: Problems) -> int:
        end = pos + size
        raw = data[pos:end]
        if len(raw) != size:
            raise _truncated(number, size, len(data) - pos)
        fields[number] = raw
        return end

    return decode


def _variable_binary_decoder(spec: FieldSpec, encoding: str) -> DecodeStep:
    number = spec.number
    lengths = _prefix_lengths(encoding, spec)
    width = _prefix_width(encoding, spec.length)

    def decode(data: bytes, pos: int, fields: dict[int, FieldValue], problems: Problems) -> int:
        start = pos + width
        raw = data[pos:start]
        count = lengths.get(raw)
        if count is None:
            raise _bad_prefix(spec, encoding, raw)
        end = start + count
        raw = data[start:end]
        if len(raw) != count:
            raise _truncated(number, count, len(data) - start)
        fields[number] = raw
        return end

    return decode


def _unknown_field_decoder(number: int) -> DecodeStep:
    """Stands in for a bit the dialect does not define: nothing after it can be read."""

    def decode(data: bytes, pos: int, fields: dict[int, FieldValue], problems: Problems) -> int:
        raise _StructuralError(number, "announced by the bitmap, but not in the dialect")

    return decode


def _decoder(spec: FieldSpec, encoding: str) -> DecodeStep:
    if spec.format == "b":
        if spec.length == "fixed":
            return _fixed_binary_decoder(spec)
        return _variable_binary_decoder(spec, encoding)
    if encoding == "bcd" and spec.format in ("n", "z"):
        if spec.length == "fixed":
            return _fixed_bcd_decoder(spec)
        return _variable_bcd_decoder(spec)
    if spec.length == "fixed":
        return _fixed_text_decoder(spec)
    return _variable_text_decoder(spec, encoding)


# Decoders of runs of fixed-width fields (at least two). Each checks the whole run with a
# few C calls and, on any problem, hands it to the single-field decoders, which find and
# report it exactly.


def _bcd_run_decoder(specs: Sequence[FieldSpec], singles: Sequence[DecodeStep]) -> DecodeStep:
    """Consecutive fixed BCD n fields: one ``bytes.hex`` and one ``isdigit``."""
    slices: list[tuple[int, int, int]] = []
    pad_positions: list[int] = []
    nibbles = 0
    for spec in specs:
        if spec.max_length & 1:
            pad_positions.append(nibbles)
            nibbles += 1
        slices.append((spec.number, nibbles, nibbles + spec.max_length))
        nibbles += spec.max_length
    size = nibbles // 2
    read_pads = operator.itemgetter(*pad_positions) if pad_positions else None
    zero_pads = read_pads("0" * nibbles) if read_pads else None

    def decode(data: bytes, pos: int, fields: dict[int, FieldValue], problems: Problems) -> int:
        end = pos + size
        text = data[pos:end].hex()
        if (
            len(text) == nibbles
            and text.isdigit()
            and (read_pads is None or read_pads(text) == zero_pads)
        ):
            for number, start, stop in slices:
                fields[number] = text[start:stop]
            return end
        for single in singles:
            pos = single(data, pos, fields, problems)
        return pos

    return decode


def _text_run_decoder(specs: Sequence[FieldSpec], singles: Sequence[DecodeStep]) -> DecodeStep:
    """Consecutive fixed an/ans (or ASCII n) fields: one slice and one ``decode``."""
    slices: list[tuple[int, int, int, Callable[[str], bool]]] = []
    size = 0
    for spec in specs:
        slices.append((spec.number, size, size + spec.max_length, _QUICK_CHECK[spec.format]))
        size += spec.max_length

    def decode(data: bytes, pos: int, fields: dict[int, FieldValue], problems: Problems) -> int:
        end = pos + size
        raw = data[pos:end]
        text = raw.decode("latin-1")
        if len(raw) == size and text.isascii():
            for number, start, stop, quick_check in slices:
                value = text[start:stop]
                if not quick_check(value):
                    break
                fields[number] = value
            else:
                return end
        for single in singles:
            pos = single(data, pos, fields, problems)
        return pos

    return decode


# Encoders of single fields: the same layouts, checking each value's type, length and
# characters.


class _FieldEncodeErrors:
    """Builds a field's MessageEncodeError (error path only)."""

    def __init__(self, spec: FieldSpec) -> None:
        self.spec = spec
        self.where = f"field {spec.number} ({spec.name})"

    def _error(self, problem: str) -> MessageEncodeError:
        return MessageEncodeError(f"{self.where}: {problem}", field=self.spec.number)

    def wrong_type(self, value: object) -> MessageEncodeError:
        expected = "bytes" if self.spec.format == "b" else "str"
        return self._error(f"expected {expected}, got {type(value).__name__}")

    def too_long(self, length: int) -> MessageEncodeError:
        unit = {"n": "digits", "b": "bytes"}.get(self.spec.format, "characters")
        return self._error(f"{length} {unit}, at most {self.spec.max_length}")

    def wrong_length(self, length: int) -> MessageEncodeError:
        return self._error(f"{length} bytes, expecting exactly {self.spec.max_length}")

    def bad_characters(self) -> MessageEncodeError:
        return self._error(f"may hold only {_CHARACTER_CLASS[self.spec.format]}")


def _fixed_bcd_encoder(spec: FieldSpec) -> EncodeStep:
    """n, fixed, packed BCD; shorter values are zero-padded on the left."""
    number = spec.number
    digits = spec.max_length
    nibbles = digits + (digits & 1)
    errors = _FieldEncodeErrors(spec)

    def encode(fields: Mapping[int, FieldValue]) -> bytes:
        value = fields[number]
        if not isinstance(value, str):
            raise errors.wrong_type(value)
        if len(value) > digits:
            raise errors.too_long(len(value))
        if not (value.isdigit() and value.isascii()) and value:
            raise errors.bad_characters()
        return bytes.fromhex(value.zfill(nibbles))

    return encode


def _variable_bcd_encoder(spec: FieldSpec) -> EncodeStep:
    """n or z, LLVAR/LLLVAR, packed BCD with a trailing 0 nibble when odd."""
    number = spec.number
    max_length = spec.max_length
    prefixes = _prefix_bytes("bcd", spec)
    allowed = _ALLOWED_BYTES[spec.format]
    errors = _FieldEncodeErrors(spec)

    def encode(fields: Mapping[int, FieldValue]) -> bytes:
        value = fields[number]
        if not isinstance(value, str):
            raise errors.wrong_type(value)
        count = len(value)
        if count > max_length:
            raise errors.too_long(count)
        if not (value.isdigit() and value.isascii()):
            if not _exactly_valid(value, allowed):
                raise errors.bad_characters()
            value = value.replace("=", "d")
        if count & 1:
            value += "0"
        return prefixes[count] + bytes.fromhex(value)

    return encode


def _fixed_text_encoder(spec: FieldSpec) -> EncodeStep:
    """Fixed an/ans padded right with spaces; fixed ASCII n padded left with zeros."""
    number = spec.number
    size = spec.max_length
    quick_check = _QUICK_CHECK[spec.format]
    allowed = _ALLOWED_BYTES[spec.format]
    pad = str.zfill if spec.format == "n" else str.ljust
    errors = _FieldEncodeErrors(spec)

    def encode(fields: Mapping[int, FieldValue]) -> bytes:
        value = fields[number]
        if not isinstance(value, str):
            raise errors.wrong_type(value)
        if len(value) > size:
            raise errors.too_long(len(value))
        if not (value.isascii() and quick_check(value)) and not _exactly_valid(value, allowed):
            raise errors.bad_characters()
        return pad(value, size).encode("ascii")

    return encode


def _variable_text_encoder(spec: FieldSpec, encoding: str) -> EncodeStep:
    number = spec.number
    max_length = spec.max_length
    prefixes = _prefix_bytes(encoding, spec)
    quick_check = _QUICK_CHECK[spec.format]
    allowed = _ALLOWED_BYTES[spec.format]
    errors = _FieldEncodeErrors(spec)

    def encode(fields: Mapping[int, FieldValue]) -> bytes:
        value = fields[number]
        if not isinstance(value, str):
            raise errors.wrong_type(value)
        if len(value) > max_length:
            raise errors.too_long(len(value))
        if not (value.isascii() and quick_check(value)) and not _exactly_valid(value, allowed):
            raise errors.bad_characters()
        return prefixes[len(value)] + value.encode("ascii")

    return encode


def _fixed_binary_encoder(spec: FieldSpec) -> EncodeStep:
    number = spec.number
    size = spec.max_length
    errors = _FieldEncodeErrors(spec)

    def encode(fields: Mapping[int, FieldValue]) -> bytes:
        value = fields[number]
        if not isinstance(value, bytes):
            raise errors.wrong_type(value)
        if len(value) != size:
            raise errors.wrong_length(len(value))
        return bytes(value)

    return encode


def _variable_binary_encoder(spec: FieldSpec, encoding: str) -> EncodeStep:
    number = spec.number
    max_length = spec.max_length
    prefixes = _prefix_bytes(encoding, spec)
    errors = _FieldEncodeErrors(spec)

    def encode(fields: Mapping[int, FieldValue]) -> bytes:
        value = fields[number]
        if not isinstance(value, bytes):
            raise errors.wrong_type(value)
        if len(value) > max_length:
            raise errors.too_long(len(value))
        return prefixes[len(value)] + bytes(value)

    return encode


def _encoder(spec: FieldSpec, encoding: str) -> EncodeStep:
    if spec.format == "b":
        if spec.length == "fixed":
            return _fixed_binary_encoder(spec)
        return _variable_binary_encoder(spec, encoding)
    if encoding == "bcd" and spec.format in ("n", "z"):
        if spec.length == "fixed":
            return _fixed_bcd_encoder(spec)
        return _variable_bcd_encoder(spec)
    if spec.length == "fixed":
        return _fixed_text_encoder(spec)
    return _variable_text_encoder(spec, encoding)


# Encoders of runs of fixed-width fields (at least two). Each takes the common case (full
# width values) with a few C calls and hands anything else (a short, empty or bad value)
# to the single-field encoders.


def _getter(numbers: Sequence[int], specs: Sequence[FieldSpec], format: str) -> Any:
    """An itemgetter of the numbers whose spec has ``format``, or None if there are none.

    Joined with ``"".join``, its result is the concatenation of those values whether it
    returns one (a str) or several (a tuple).
    """
    chosen = [number for number, spec in zip(numbers, specs, strict=True) if spec.format == format]
    return operator.itemgetter(*chosen) if chosen else None


def _bcd_run_encoder(specs: Sequence[FieldSpec], singles: Sequence[EncodeStep]) -> EncodeStep:
    """Consecutive fixed BCD n fields: one ``isdigit`` and one ``bytes.fromhex``."""
    read_values = operator.itemgetter(*[spec.number for spec in specs])
    lengths = tuple(spec.max_length for spec in specs)
    odd = any(length & 1 for length in lengths)
    # A leading 0 nibble before each odd-length value.
    template = "".join("0%s" if length & 1 else "%s" for length in lengths)

    def encode(fields: Mapping[int, FieldValue]) -> bytes:
        values = read_values(fields)
        try:
            joined = "".join(values)
        except TypeError:  # a value is not a str
            return b"".join([single(fields) for single in singles])
        if joined.isdigit() and joined.isascii() and tuple(map(len, values)) == lengths:
            return bytes.fromhex(template % values if odd else joined)
        return b"".join([single(fields) for single in singles])

    return encode


def _text_run_encoder(specs: Sequence[FieldSpec], singles: Sequence[EncodeStep]) -> EncodeStep:
    """Consecutive fixed an/ans (or ASCII n) fields: one ``str.encode``."""
    numbers = [spec.number for spec in specs]
    read_values = operator.itemgetter(*numbers)
    lengths = tuple(spec.max_length for spec in specs)
    read_alphanumerics = _getter(numbers, specs, "an")
    read_digits = _getter(numbers, specs, "n")

    def encode(fields: Mapping[int, FieldValue]) -> bytes:
        values = read_values(fields)
        try:
            joined = "".join(values)
        except TypeError:  # a value is not a str
            return b"".join([single(fields) for single in singles])
        if (
            joined.isascii()
            and joined.isprintable()
            and tuple(map(len, values)) == lengths
            and (read_alphanumerics is None or "".join(read_alphanumerics(fields)).isalnum())
            and (read_digits is None or "".join(read_digits(fields)).isdigit())
        ):
            return joined.encode("ascii")
        return b"".join([single(fields) for single in singles])

    return encode


_DecodePlan = tuple[DecodeStep, ...]
_EncodePlan = tuple[EncodeStep, ...]


class Iso8583Codec:
    """Encodes and decodes the messages of one dialect.

    Build one per dialect at start-up and share it: it holds no per-message state, only
    memoised plans. ``decode`` takes the ISO 8583 message alone (MTI, bitmaps, fields),
    without the length prefix or the POS TPDU and header.
    """

    __slots__ = (
        "_bcd",
        "_bitmap_tables",
        "_decode_plans",
        "_decoders",
        "_encode_plans",
        "_encoders",
        "_mti_size",
        "_run_kinds",
        "_specs",
        "dialect",
    )

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        encoding = dialect.encoding
        self._bcd = encoding == "bcd"
        self._mti_size = 2 if self._bcd else 4
        self._specs = {spec.number: spec for spec in dialect.fields}
        self._decoders = {spec.number: _decoder(spec, encoding) for spec in dialect.fields}
        self._encoders = {spec.number: _encoder(spec, encoding) for spec in dialect.fields}
        self._run_kinds: dict[int, str] = {}
        """Field number -> kind of run it may join ("bcd" or "text"), fixed fields only."""
        for spec in dialect.fields:
            if spec.length != "fixed" or spec.format == "b":
                continue
            self._run_kinds[spec.number] = "bcd" if self._bcd and spec.format == "n" else "text"
        tables: list[tuple[tuple[int, ...], ...]] = []
        for index in range(16 if dialect.secondary_bitmap else 8):
            tables.append(
                tuple(
                    tuple(
                        index * 8 + bit + 1
                        for bit in range(8)
                        if value & (0x80 >> bit) and index * 8 + bit > 0
                    )
                    for value in range(256)
                )
            )
        self._bitmap_tables = tuple(tables)
        """Per bitmap byte, per value of it: the fields it announces, in order (bit 1, the
        secondary bitmap, is not a field)."""
        self._decode_plans: dict[bytes, tuple[str, _DecodePlan]] = {}
        """MTI and bitmap bytes -> (MTI, steps decoding the fields)."""
        self._encode_plans: dict[tuple[object, ...], tuple[bytes, _EncodePlan]] = {}
        """(MTI, field numbers in the caller's order) -> (MTI and bitmaps, encode steps)."""

    def __repr__(self) -> str:
        return f"Iso8583Codec({self.dialect.name!r})"

    def decode(self, data: bytes) -> Iso8583Message:
        """The message in ``data``; any problem raises MessageDecodeError.

        A field with bad content is skipped and the rest still decoded; then the first
        such problem is raised, carrying the MTI and every good field.
        """
        if type(data) is not bytes:
            data = bytes(data)  # a bytearray or memoryview would leak into b fields
        pos = self._mti_size + 8
        if len(data) > self._mti_size and data[self._mti_size] & 0x80:
            pos += 8
        layout = self._decode_plans.get(data[:pos])
        if layout is None:
            layout = self._decode_layout(data, pos)
        mti, plan = layout

        fields: dict[int, FieldValue] = {}
        problems: Problems = []
        try:
            for step in plan:
                pos = step(data, pos, fields, problems)
        except _StructuralError as exc:
            message = f"{self._where(exc.number)}: {exc}"
            if problems:
                number, problem = problems[0]
                message += f" (and before it, {self._where(number)}: {problem})"
            raise MessageDecodeError(message, field=exc.number, mti=mti, fields=fields) from None
        if pos != len(data):
            raise MessageDecodeError(
                f"{len(data) - pos} bytes after the last field", mti=mti, fields=fields
            )
        if problems:
            number, problem = problems[0]
            raise MessageDecodeError(
                f"{self._where(number)}: {problem}", field=number, mti=mti, fields=fields
            )
        return Iso8583Message(mti, fields)

    def encode(self, mti: str, fields: Mapping[int, FieldValue]) -> bytes:
        """The wire form of a message; ``fields`` may come in any order.

        The bitmap is computed; a secondary bitmap is sent only when a field above 64
        is present.
        """
        key = (mti, *fields)
        try:
            layout = self._encode_plans.get(key)
        except TypeError:  # an unhashable MTI
            layout = None
        if layout is None:
            layout = self._encode_layout(mti, fields, key)
        head, plan = layout
        parts = [head]
        append = parts.append
        for step in plan:
            append(step(fields))
        return b"".join(parts)

    def _decode_layout(self, data: bytes, head_size: int) -> tuple[str, _DecodePlan]:
        """Reads and checks the MTI and bitmaps; plans and memoises the fields they announce."""
        mti_size = self._mti_size
        raw_mti = data[:mti_size]
        if len(raw_mti) < mti_size:
            raise MessageDecodeError(f"message of {len(data)} bytes has no whole MTI")
        mti = raw_mti.hex() if self._bcd else raw_mti.decode("latin-1")
        if not (mti.isdigit() and mti.isascii()):
            raise MessageDecodeError("MTI is not 4 digits")
        bitmap = data[mti_size:head_size]
        if len(bitmap) < 8:
            raise MessageDecodeError("primary bitmap truncated", mti=mti)
        tables = self._bitmap_tables
        if bitmap[0] & 0x80:
            if len(tables) == 8:
                raise MessageDecodeError(
                    f"dialect {self.dialect.name} has no secondary bitmap, but bit 1 is set",
                    field=1,
                    mti=mti,
                )
            if len(bitmap) < 16:
                raise MessageDecodeError("secondary bitmap truncated", mti=mti)
        numbers = [n for table, value in zip(tables, bitmap, strict=False) for n in table[value]]
        steps: list[DecodeStep] = []
        for kind, group in itertools.groupby(numbers, key=self._run_kinds.get):
            run = list(group)
            singles = [self._decoders.get(n) or _unknown_field_decoder(n) for n in run]
            if kind is None or len(run) == 1:
                steps.extend(singles)
            else:
                specs = [self._specs[n] for n in run]
                make = _bcd_run_decoder if kind == "bcd" else _text_run_decoder
                steps.append(make(specs, singles))
        layout = (mti, tuple(steps))
        _memoise(self._decode_plans, data[:head_size], layout)
        return layout

    def _encode_layout(
        self, mti: object, fields: Mapping[int, FieldValue], key: tuple[object, ...]
    ) -> tuple[bytes, _EncodePlan]:
        """Checks the MTI and field numbers, computes the bitmap; plans and memoises."""
        if not (isinstance(mti, str) and len(mti) == 4 and mti.isdigit() and mti.isascii()):
            raise MessageEncodeError("MTI must be 4 ASCII digits")
        bits = 0
        for number in fields:
            if type(number) is not int or number not in self._encoders:
                raise MessageEncodeError(
                    f"field {number!r} is not in dialect {self.dialect.name}",
                    field=number if type(number) is int else None,
                )
            bits |= 1 << (128 - number)
        if bits & 0xFFFF_FFFF_FFFF_FFFF:
            bitmap = (bits | 1 << 127).to_bytes(16, "big")
        else:
            bitmap = (bits >> 64).to_bytes(8, "big")
        head = (bytes.fromhex(mti) if self._bcd else mti.encode("ascii")) + bitmap
        steps: list[EncodeStep] = []
        for kind, group in itertools.groupby(sorted(fields), key=self._run_kinds.get):
            run = list(group)
            singles = [self._encoders[n] for n in run]
            if kind is None or len(run) == 1:
                steps.extend(singles)
            else:
                specs = [self._specs[n] for n in run]
                make = _bcd_run_encoder if kind == "bcd" else _text_run_encoder
                steps.append(make(specs, singles))
        layout = (head, tuple(steps))
        _memoise(self._encode_plans, key, layout)
        return layout

    def _where(self, number: int) -> str:
        spec = self._specs.get(number)
        return f"field {number} ({spec.name})" if spec else f"field {number}"


def _memoise(memo: dict[_Key, _Value], key: _Key, value: _Value) -> None:
    """Stores ``value``, first emptying a full memo so it stays bounded."""
    if len(memo) >= MAX_CACHED_LAYOUTS:
        memo.clear()
    memo[key] = value
