"""Bank clearing files (settlement.md, "Bank clearing file"), as plain Python (no I/O).

A file is ASCII lines ending in LF: one header, a detail record for every transaction
the bank approved or applied, one trailer with the count and the totals of the
details. Numeric fields are zero-padded on the left, text fields space-padded on the
right. :class:`ClearingDecoder` takes a file a chunk at a time as it is read (and
:func:`decode_clearing_file` a whole file's bytes) and either returns it or rejects it
whole, naming the line and what is wrong; :func:`encode_clearing_file` writes one.

Text fields are printable ASCII. Decoded values: text fields (RRN, response and
authorisation codes, terminal, merchant, masked PAN) lose their space padding;
fixed-width numeric fields (MTI, processing code, STAN, field 7, currency) keep their
digits as the bank-h2h.md fields carry them; amounts are ints in fen. The institution
id is n..11 on the wire (fields 32 and 33), so its zero padding is dropped (an id of
zeros is ``"0"``): compare ids by value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Final, Literal

import msgspec

from switch.errors import LocalProtocolError, RemoteProtocolError

HEADER_LENGTH: Final = 34
DETAIL_LENGTH: Final = 105
TRAILER_LENGTH: Final = 40
"""Line lengths without the LF."""

FILE_SUFFIX: Final = ".clr"

MAX_AMOUNT: Final = 10**12 - 1
MAX_COUNT: Final = 10**9 - 1
MAX_TOTAL: Final = 10**15 - 1

Direction = Literal["D", "C"]

RejectionReason = Literal[
    "not_ascii",
    "unterminated",
    "line_length",
    "record_type",
    "not_numeric",
    "not_printable",
    "bad_date",
    "bad_direction",
    "no_header",
    "no_trailer",
    "after_trailer",
    "trailer_count",
    "trailer_debits",
    "trailer_credits",
    "wrong_date",
    "wrong_institution",
]


class ClearingFileRejected(RemoteProtocolError):
    """A clearing file breaks settlement.md's format: it is rejected whole.

    ``line`` is the 1-based line at fault, ``reason`` the kind of fault (for counting
    and tests); the message names both in words, for the log and the status command.
    """

    def __init__(self, line: int, reason: RejectionReason, detail: str) -> None:
        super().__init__(f"line {line}: {detail}")
        self.line = line
        self.reason: RejectionReason = reason


class ClearingHeader(msgspec.Struct, frozen=True):
    business_date: date
    institution_id: str
    """The bank's institution id, at most 11 digits."""
    created: datetime
    """When the bank wrote the file, UTC (whole seconds on the wire)."""


class ClearingRecord(msgspec.Struct, frozen=True, gc=False):
    """One detail record: an approved 0200 or an applied 0400/0401."""

    mti: str
    processing_code: str
    stan: str
    """Field 11 of the request."""
    transmission: str
    """Field 7 of the request, MMDDhhmmss UTC."""
    rrn: str
    """Field 37: a reversal carries its original's."""
    amount: int
    """Fen."""
    currency: str
    response_code: str
    auth_code: str
    """Empty for a reversal."""
    terminal_id: str
    merchant_id: str
    masked_pan: str
    direction: Direction
    """D: the cardholder pays the merchant (a sale, a reversed void or refund);
    C: the merchant pays back (a void, a refund, a reversed sale)."""


class ClearingFile(msgspec.Struct, frozen=True):
    header: ClearingHeader
    records: tuple[ClearingRecord, ...]
    debits_fen: int
    """The trailer's total of D amounts (it agrees with the records)."""
    credits_fen: int
    """The trailer's total of C amounts (it agrees with the records)."""
    pans_masked: int = 0
    """Records whose masked PAN column held more than settlement.md's first 6 and last
    4 (a full card number): masked on the way in (:class:`ClearingDecoder`)."""
    first_masked_line: int = 0
    """The line of the first of them (0: none), for the bank to be told where."""

    @property
    def record_count(self) -> int:
        return len(self.records)


def clearing_file_name(bank: str, business_date: date) -> str:
    """``<bank>-<YYYYMMDD>.clr``: the bank's name in the switch's configuration."""
    return f"{bank}-{business_date:%Y%m%d}{FILE_SUFFIX}"


# -- encoding ------------------------------------------------------------------------


def encode_header(header: ClearingHeader) -> bytes:
    created = header.created
    if created.tzinfo is None:
        raise LocalProtocolError("a clearing header's created time must be timezone-aware")
    institution = header.institution_id
    _check_digits("institution id", institution, 11)
    line = f"H{header.business_date:%Y%m%d}{institution:0>11}{created.astimezone(UTC):%Y%m%d%H%M%S}"
    if len(line) != HEADER_LENGTH:  # a year before 1000 would be written short
        raise LocalProtocolError(f"a clearing header does not fit in {HEADER_LENGTH}: {line!r}")
    return f"{line}\n".encode("ascii")


def encode_record(record: ClearingRecord) -> bytes:
    """One detail line with its LF."""
    r = record
    for name, value, width in (
        ("MTI", r.mti, 4),
        ("processing code", r.processing_code, 6),
        ("STAN", r.stan, 6),
        ("field 7", r.transmission, 10),
        ("currency", r.currency, 3),
    ):
        _check_digits(name, value, width)
    for name, value, width in (
        ("RRN", r.rrn, 12),
        ("response code", r.response_code, 2),
        ("authorisation code", r.auth_code, 6),
        ("terminal id", r.terminal_id, 8),
        ("merchant id", r.merchant_id, 15),
        ("masked PAN", r.masked_pan, 19),
    ):
        _check_text(name, value, width)
    if not 0 <= r.amount <= MAX_AMOUNT:
        raise LocalProtocolError(f"amount {r.amount} does not fit in 12 digits")
    if r.direction not in ("D", "C"):
        raise LocalProtocolError(f"direction {r.direction!r} is neither D nor C")
    return (
        f"D{r.mti:0>4}{r.processing_code:0>6}{r.stan:0>6}{r.transmission:0>10}{r.rrn:<12}"
        f"{r.amount:012d}{r.currency:0>3}{r.response_code:<2}{r.auth_code:<6}"
        f"{r.terminal_id:<8}{r.merchant_id:<15}{r.masked_pan:<19}{r.direction}\n"
    ).encode("ascii")


def encode_trailer(record_count: int, debits_fen: int, credits_fen: int) -> bytes:
    """A trailer as given: :func:`encode_clearing_file` computes it from the records
    (a caller writes one that disagrees only to test a rejection)."""
    if not 0 <= record_count <= MAX_COUNT:
        raise LocalProtocolError(f"{record_count} records do not fit in 9 digits")
    for name, total in (("debits", debits_fen), ("credits", credits_fen)):
        if not 0 <= total <= MAX_TOTAL:
            raise LocalProtocolError(f"a total of {name} of {total} does not fit in 15 digits")
    return f"T{record_count:09d}{debits_fen:015d}{credits_fen:015d}\n".encode("ascii")


def trailer_totals(records: Iterable[ClearingRecord]) -> tuple[int, int, int]:
    """(count, total of D amounts, total of C amounts): what a trailer says."""
    count = debits = credits = 0
    for record in records:
        count += 1
        if record.direction == "D":
            debits += record.amount
        else:
            credits += record.amount
    return count, debits, credits


def encode_clearing_file(header: ClearingHeader, records: Sequence[ClearingRecord]) -> bytes:
    """The whole file: header, one line a record in the order given, trailer."""
    trailer = encode_trailer(*trailer_totals(records))
    return b"".join([encode_header(header), *map(encode_record, records), trailer])


def _check_digits(name: str, value: str, width: int) -> None:
    if not (value.isascii() and value.isdigit() and len(value) <= width):
        raise LocalProtocolError(f"{name} {value!r} is not at most {width} digits")


def _check_text(name: str, value: str, width: int) -> None:
    if not (value.isascii() and value.isprintable() and len(value) <= width):
        raise LocalProtocolError(f"{name} {value!r} is not at most {width} printable ASCII")


# -- decoding ------------------------------------------------------------------------

_HEADER = re.compile(r"H(\d{8})(\d{11})(\d{14})", re.ASCII)
_TRAILER = re.compile(r"T(\d{9})(\d{15})(\d{15})", re.ASCII)
_DETAIL_LINES = re.compile(
    r"^D(\d{4})(\d{6})(\d{6})(\d{10})([ -~]{12})(\d{12})(\d{3})([ -~]{2})([ -~]{6})"
    r"([ -~]{8})([ -~]{15})([ -~]{19})([DC])\n",
    re.ASCII | re.MULTILINE,
)
"""Every well-formed detail line of a block, each with its LF (a line that is not one
is skipped by findall: the caller compares the count with the block's lines)."""

_DETAIL_FIELDS: Final = (
    # (name, start, end, numeric): 0-based offsets in the line, whose 0 is the "D".
    ("MTI", 1, 5, True),
    ("processing code", 5, 11, True),
    ("STAN", 11, 17, True),
    ("field 7", 17, 27, True),
    ("RRN", 27, 39, False),
    ("amount", 39, 51, True),
    ("currency", 51, 54, True),
    ("response code", 54, 56, False),
    ("authorisation code", 56, 62, False),
    ("terminal id", 62, 70, False),
    ("merchant id", 70, 85, False),
    ("masked PAN", 85, 104, False),
)


def decode_clearing_file(data: bytes) -> ClearingFile:
    """A whole clearing file, or :class:`ClearingFileRejected` naming its first fault
    (:class:`ClearingDecoder` fed once)."""
    decoder = ClearingDecoder()
    decoder.feed(data)
    return decoder.close()


class ClearingDecoder:
    """A clearing file decoded as it is read: :meth:`feed` each chunk (any size, cut
    anywhere), then :meth:`close` for the file, or :class:`ClearingFileRejected` (from
    either) naming the first fault. Only the records and one incomplete line are kept,
    never the file's bytes.

    The complete lines of a chunk are matched by one regular expression (the checking
    and slicing of a million lines stay in C); only a chunk that fails it is walked
    line by line, to name the first line at fault.

    A masked PAN column that is not first 6, ``*``s, last 4 (a bank that wrote the
    full card number there) is masked on the way in, every character between its
    first 6 and its last 4 becoming ``*``: the record is kept, matched and paid as
    any other (its RRN, MTI and amount decide), and no card number goes further.
    :attr:`ClearingFile.pans_masked` counts them.
    """

    def __init__(self) -> None:
        self._partial = bytearray()
        """The last line fed, while its LF has not come."""
        self._lines = 0
        """Complete lines taken."""
        self._header: ClearingHeader | None = None
        self._trailer: re.Match[str] | None = None
        self._trailer_line = 0
        self._records: list[ClearingRecord] = []
        self._debits = 0
        self._credits = 0
        self._pans_masked = 0
        self._first_masked_line = 0

    @property
    def lines(self) -> int:
        """Complete lines taken so far."""
        return self._lines

    def feed(self, data: bytes) -> None:
        end = data.rfind(b"\n") + 1
        if end == 0:
            self._partial += data
            return
        if self._partial:
            self._partial += data[:end]
            block = bytes(self._partial)
            self._partial.clear()
        else:
            block = data[:end]
        self._partial += data[end:]
        self._take(block)

    def close(self) -> ClearingFile:
        """The file: everything has been fed."""
        if self._partial:
            number = self._lines + 1
            if self._trailer is not None:
                raise _after_trailer(number)
            line = self._partial.decode("latin-1")
            _check_ascii(number, line)
            raise ClearingFileRejected(number, "unterminated", "the last line does not end in LF")
        if self._header is None:
            raise ClearingFileRejected(1, "no_header", "the file is empty: no header")
        if self._trailer is None:
            raise ClearingFileRejected(
                self._lines, "no_trailer", f"the file ends at line {self._lines} without a trailer"
            )
        _check_trailer(
            self._trailer_line, len(self._records), self._debits, self._credits, self._trailer
        )
        return ClearingFile(
            self._header,
            tuple(self._records),
            self._debits,
            self._credits,
            pans_masked=self._pans_masked,
            first_masked_line=self._first_masked_line,
        )

    def _take(self, block: bytes) -> None:
        """Complete lines, each with its LF."""
        if not block.isascii():
            self._walk(block.decode("latin-1"))
            raise AssertionError("a line that is not ASCII was not rejected")
        text = block.decode("ascii")
        start = 0
        if self._header is None:
            start = text.find("\n") + 1
            self._line(self._lines + 1, text[: start - 1])
            self._lines += 1
        if start == len(text):
            return
        if self._trailer is None:
            count = text.count("\n", start)
            rows = _DETAIL_LINES.findall(text, start)
            if len(rows) == count:
                self._add(rows, self._lines + 1)
                self._lines += count
                return
            last = text.rfind("\n", start, len(text) - 1) + 1
            if len(rows) == count - 1 and text[last] == "T":
                trailer = _TRAILER.fullmatch(text, last, len(text) - 1)
                if trailer is not None:  # every other line is a detail record
                    self._add(rows, self._lines + 1)
                    self._lines += count
                    self._trailer, self._trailer_line = trailer, self._lines
                    return
        self._walk(text[start:])

    def _walk(self, text: str) -> None:
        """Complete lines, one at a time: the slow path that names a fault."""
        for line in text.split("\n")[:-1]:
            self._lines += 1
            self._line(self._lines, line)

    def _line(self, number: int, line: str) -> None:
        """One line, checked field by field: raises at its first fault, else takes it."""
        if self._trailer is not None:
            raise _after_trailer(number)
        _check_ascii(number, line)
        kind = line[:1]
        if self._header is None:
            if kind != "H":
                if kind == "":
                    raise ClearingFileRejected(1, "no_header", "the file is empty: no header")
                if kind in ("D", "T"):
                    raise ClearingFileRejected(
                        1, "no_header", f"the file begins with a {kind} record, not a header"
                    )
                raise ClearingFileRejected(1, "record_type", f"record type {kind!r} is not H")
            _diagnose_header(line)
            self._header = _header_or_none(line)
            assert self._header is not None, "a header that passes its checks decodes"
        elif kind == "D":
            _diagnose_detail(number, line)
            self._add(_DETAIL_LINES.findall(f"{line}\n"), number)
        elif kind == "T":
            self._trailer, self._trailer_line = _diagnose_trailer(number, line), number
        elif kind == "H":
            raise ClearingFileRejected(number, "record_type", "a second header")
        elif kind == "":
            raise ClearingFileRejected(number, "line_length", "the line is empty")
        else:
            raise ClearingFileRejected(
                number, "record_type", f"record type {kind!r} is none of H, D, T"
            )

    def _add(self, rows: list[tuple[str, ...]], first_line: int) -> None:
        """Detail rows, one a line from ``first_line`` on."""
        records = _records(rows)
        debits = sum([record.amount for record in records if record.direction == "D"])
        self._debits += debits
        self._credits += sum([record.amount for record in records]) - debits
        # A well-masked column has only "*"s between its first 6 and last 4.
        if any([record.masked_pan[6:-4].strip("*") for record in records]):
            for index, record in enumerate(records):
                masked = mask_pan_column(record.masked_pan)
                if masked != record.masked_pan:
                    records[index] = msgspec.structs.replace(record, masked_pan=masked)
                    if not self._pans_masked:
                        self._first_masked_line = first_line + index
                    self._pans_masked += 1
        self._records.extend(records)


def mask_pan_column(value: str) -> str:
    """A masked PAN column's value as settlement.md defines it: first 6 and last 4
    characters kept, every one between them ``*`` (a value of 10 or fewer characters
    has nothing between them). A value in that form already is returned as it is."""
    if len(value) <= 10 or not value[6:-4].strip("*"):
        return value
    return f"{value[:6]}{'*' * (len(value) - 10)}{value[-4:]}"


def _records(rows: list[tuple[str, ...]]) -> list[ClearingRecord]:
    # Text fields are mostly unpadded: testing the last character is cheaper than rstrip.
    return [
        ClearingRecord(
            mti,
            processing_code,
            stan,
            transmission,
            rrn if rrn[-1] != " " else rrn.rstrip(" "),
            int(amount),
            currency,
            code if code[-1] != " " else code.rstrip(" "),
            auth if auth[-1] != " " else auth.rstrip(" "),
            terminal if terminal[-1] != " " else terminal.rstrip(" "),
            merchant if merchant[-1] != " " else merchant.rstrip(" "),
            pan if pan[-1] != " " else pan.rstrip(" "),
            direction,  # type: ignore[arg-type]  # the pattern allows only D or C
        )
        for (
            mti,
            processing_code,
            stan,
            transmission,
            rrn,
            amount,
            currency,
            code,
            auth,
            terminal,
            merchant,
            pan,
            direction,
        ) in rows
    ]


def _check_ascii(number: int, line: str) -> None:
    if not line.isascii():
        column = next(i for i, char in enumerate(line, start=1) if not char.isascii())
        byte = ord(line[column - 1])
        raise ClearingFileRejected(
            number, "not_ascii", f"byte {byte:#04x} at column {column} is not ASCII"
        )


def _after_trailer(number: int) -> ClearingFileRejected:
    return ClearingFileRejected(number, "after_trailer", f"line {number} follows the trailer")


def _check_trailer(
    line: int, count: int, debits: int, credits: int, trailer: re.Match[str]
) -> None:
    said_count, said_debits, said_credits = (int(value) for value in trailer.groups())
    if said_count != count:
        raise ClearingFileRejected(
            line, "trailer_count", f"the trailer counts {said_count} records, the file has {count}"
        )
    if said_debits != debits:
        raise ClearingFileRejected(
            line,
            "trailer_debits",
            f"the trailer's total of D amounts is {said_debits}, the records add up to {debits}",
        )
    if said_credits != credits:
        raise ClearingFileRejected(
            line,
            "trailer_credits",
            f"the trailer's total of C amounts is {said_credits}, the records add up to {credits}",
        )


def _header_or_none(line: str) -> ClearingHeader | None:
    match = _HEADER.fullmatch(line)
    if match is None:
        return None
    day, institution, created = match.groups()
    try:
        return ClearingHeader(
            business_date=_date(day),
            institution_id=institution.lstrip("0") or "0",
            created=_utc_time(created),
        )
    except ValueError:
        return None


def _date(text: str) -> date:
    """YYYYMMDD; ValueError when no such day."""
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def _utc_time(text: str) -> datetime:
    """YYYYMMDDhhmmss, UTC; ValueError when no such moment."""
    year, month, day = int(text[:4]), int(text[4:6]), int(text[6:8])
    hour, minute, second = int(text[8:10]), int(text[10:12]), int(text[12:14])
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def _diagnose(data: bytes) -> None:
    """Walks the file line by line and raises for the first fault; returns when it
    finds none (what the fast path takes, it does too)."""
    decoder = ClearingDecoder()
    end = data.rfind(b"\n") + 1
    decoder._walk(data[:end].decode("latin-1"))
    decoder._partial += data[end:]
    decoder.close()


def _check_length(number: int, line: str, what: str, length: int) -> None:
    if len(line) != length:
        crlf = " (a CR before the LF?)" if line.endswith("\r") else ""
        raise ClearingFileRejected(
            number,
            "line_length",
            f"the {what} is {len(line)} characters, not {length}{crlf}",
        )


def _check_numeric(number: int, line: str, name: str, start: int, end: int) -> None:
    value = line[start:end]
    if not value.isdigit():
        raise ClearingFileRejected(
            number, "not_numeric", f"{name} {value!r} (columns {start + 1}-{end}) is not numeric"
        )


def _diagnose_header(line: str) -> None:
    _check_length(1, line, "header", HEADER_LENGTH)
    for name, start, end in (
        ("business date", 1, 9),
        ("institution id", 9, 20),
        ("created time", 20, 34),
    ):
        _check_numeric(1, line, name, start, end)
    try:
        _date(line[1:9])
    except ValueError:
        raise ClearingFileRejected(
            1, "bad_date", f"business date {line[1:9]!r} is not a date"
        ) from None
    try:
        _utc_time(line[20:34])
    except ValueError:
        raise ClearingFileRejected(
            1, "bad_date", f"created time {line[20:34]!r} is not a date and time"
        ) from None


def _diagnose_detail(number: int, line: str) -> tuple[int, str]:
    _check_length(number, line, "detail record", DETAIL_LENGTH)
    for name, start, end, numeric in _DETAIL_FIELDS:
        if numeric:
            _check_numeric(number, line, name, start, end)
        elif not line[start:end].isprintable():
            column = next(i for i in range(start, end) if not line[i].isprintable()) + 1
            raise ClearingFileRejected(
                number,
                "not_printable",
                f"{name} has control character {line[column - 1]!r} at column {column}",
            )
    direction = line[104]
    if direction not in ("D", "C"):
        raise ClearingFileRejected(
            number, "bad_direction", f"direction {direction!r} (column 105) is neither D nor C"
        )
    return int(line[39:51]), direction


def _diagnose_trailer(number: int, line: str) -> re.Match[str]:
    _check_length(number, line, "trailer", TRAILER_LENGTH)
    for name, start, end in (
        ("record count", 1, 10),
        ("total of D amounts", 10, 25),
        ("total of C amounts", 25, 40),
    ):
        _check_numeric(number, line, name, start, end)
    match = _TRAILER.fullmatch(line)
    assert match is not None
    return match
