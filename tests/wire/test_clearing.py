"""Bank clearing files (settlement.md, "Bank clearing file"), as synchronous tables."""

from __future__ import annotations

import contextlib
import itertools
from datetime import UTC, date, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from switch.errors import LocalProtocolError, RemoteProtocolError
from switch.wire.clearing import (
    DETAIL_LENGTH,
    HEADER_LENGTH,
    TRAILER_LENGTH,
    ClearingDecoder,
    ClearingFile,
    ClearingFileRejected,
    ClearingHeader,
    ClearingRecord,
    RejectionReason,
    _diagnose,  # the slow path, checked against the fast
    clearing_file_name,
    decode_clearing_file,
    encode_clearing_file,
    encode_header,
    encode_record,
    encode_trailer,
)

HEADER = ClearingHeader(
    business_date=date(2025, 11, 22),
    institution_id="1020000",
    created=datetime(2025, 11, 22, 15, 0, 5, tzinfo=UTC),
)
SALE = ClearingRecord(
    mti="0200",
    processing_code="000000",
    stan="000007",
    transmission="1122063015",
    rrn="532614000123",
    amount=10_000,
    currency="156",
    response_code="00",
    auth_code="A1B2C3",
    terminal_id="POS00001",
    merchant_id="898310048990001",
    masked_pan="622202*********2221",
    direction="D",
)
REVERSAL = ClearingRecord(
    mti="0400",
    processing_code="000000",
    stan="000019",
    transmission="1122063520",
    rrn="532614000123",
    amount=10_000,
    currency="156",
    response_code="00",
    auth_code="",
    terminal_id="T1",
    merchant_id="SHOP01",
    masked_pan="622848******0001",
    direction="C",
)
REFUND = ClearingRecord(
    mti="0200",
    processing_code="200000",
    stan="000031",
    transmission="1122070000",
    rrn="532614000130",
    amount=2_550,
    currency="156",
    response_code="00",
    auth_code="000042",
    terminal_id="POS00001",
    merchant_id="898310048990001",
    masked_pan="622202*********2221",
    direction="C",
)


# -- the layout, to the byte ---------------------------------------------------------


def test_a_detail_line_is_the_spec_table_field_by_field() -> None:
    by_hand = (
        "D"
        + "0200"  # MTI (4)
        + "000000"  # processing code (6)
        + "000007"  # STAN, field 11 (6)
        + "1122063015"  # field 7 (10)
        + "532614000123"  # RRN, field 37 (12)
        + "000000010000"  # amount (12), zero-padded on the left
        + "156"  # currency (3)
        + "00"  # response code (2)
        + "A1B2C3"  # authorisation code (6)
        + "POS00001"  # terminal id (8)
        + "898310048990001"  # merchant id (15)
        + "622202*********2221"  # masked PAN (19)
        + "D"  # direction (1)
    )
    assert len(by_hand) == DETAIL_LENGTH == 105
    assert encode_record(SALE) == (by_hand + "\n").encode("ascii")


def test_text_fields_are_space_padded_on_the_right() -> None:
    by_hand = (
        "D0400000000000019112206352053261400012300000001000015600"
        + "      "  # no authorisation code on a reversal
        + "T1      "
        + "SHOP01         "
        + "622848******0001   "
        + "C\n"
    )
    assert encode_record(REVERSAL) == by_hand.encode("ascii")


def test_header_and_trailer_lines() -> None:
    assert encode_header(HEADER) == b"H20251122" + b"00001020000" + b"20251122150005\n"
    assert len(encode_header(HEADER)) == HEADER_LENGTH + 1
    trailer = encode_trailer(3, 10_000, 12_550)
    assert trailer == b"T000000003" + b"000000000010000" + b"000000000012550\n"
    assert len(trailer) == TRAILER_LENGTH + 1


def test_the_created_time_is_written_in_utc() -> None:
    local = datetime(2025, 11, 22, 23, 0, 5, tzinfo=timezone(timedelta(hours=8)))
    header = ClearingHeader(HEADER.business_date, HEADER.institution_id, local)
    assert encode_header(header) == encode_header(HEADER)


def test_the_file_name() -> None:
    assert clearing_file_name("icbc", date(2025, 11, 22)) == "icbc-20251122.clr"


# -- round trips ---------------------------------------------------------------------


def test_round_trip() -> None:
    records = [SALE, REVERSAL, REFUND]
    data = encode_clearing_file(HEADER, records)
    assert data.count(b"\n") == 5 and data.endswith(b"\n")
    decoded = decode_clearing_file(data)
    assert decoded == ClearingFile(
        header=HEADER, records=(SALE, REVERSAL, REFUND), debits_fen=10_000, credits_fen=12_550
    )
    assert decoded.record_count == 3


def test_an_empty_day_is_a_header_and_a_trailer() -> None:
    data = encode_clearing_file(HEADER, [])
    assert data == encode_header(HEADER) + b"T" + b"0" * 39 + b"\n"
    assert decode_clearing_file(data) == ClearingFile(HEADER, (), 0, 0)


def test_an_institution_id_of_zeros_decodes_as_0() -> None:
    header = ClearingHeader(HEADER.business_date, "0", HEADER.created)
    assert decode_clearing_file(encode_clearing_file(header, [])).header == header


_text = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E))


def _digits(width: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=width, max_size=width)


# Text fields round-trip without trailing spaces (the padding), which is all a bank
# can mean; inner spaces are kept.
_records = st.builds(
    ClearingRecord,
    mti=_digits(4),
    processing_code=_digits(6),
    stan=_digits(6),
    transmission=_digits(10),
    rrn=_text.filter(lambda t: len(t) <= 12),
    amount=st.integers(0, 10**12 - 1),
    currency=_digits(3),
    response_code=_text.filter(lambda t: len(t) <= 2),
    auth_code=st.from_regex(r"\A([!-~]([ -~]{0,4}[!-~])?)?\Z"),
    terminal_id=_text.filter(lambda t: len(t) <= 8),
    merchant_id=_text.filter(lambda t: len(t) <= 15),
    masked_pan=_text.filter(lambda t: len(t) <= 19),
    direction=st.sampled_from(["D", "C"]),
)


def _as_masked(value: str) -> str:
    """settlement.md's masked PAN: first 6, ``*``s, last 4; what is not is masked."""
    if len(value) <= 10 or set(value[6:-4]) == {"*"}:
        return value
    return value[:6] + "*" * (len(value) - 10) + value[-4:]


@given(st.lists(_records, max_size=20))
def test_round_trip_of_any_records(records: list[ClearingRecord]) -> None:
    decoded = decode_clearing_file(encode_clearing_file(HEADER, records))
    assert decoded.records == tuple(
        msgspec.structs.replace(r, masked_pan=_as_masked(r.masked_pan)) for r in records
    )
    assert decoded.pans_masked == sum(_as_masked(r.masked_pan) != r.masked_pan for r in records)
    assert decoded.debits_fen == sum(r.amount for r in records if r.direction == "D")
    assert decoded.credits_fen == sum(r.amount for r in records if r.direction == "C")


# -- rejections ----------------------------------------------------------------------

GOOD = encode_clearing_file(HEADER, [SALE, REVERSAL, REFUND])
LINES = GOOD.decode("ascii").split("\n")[:-1]
"""Line 1 the header, 2-4 the details, 5 the trailer."""


def _file(*lines: str, end: str = "\n") -> bytes:
    return ("\n".join(lines) + end).encode("latin-1")


def _replace(line: int, text: str) -> bytes:
    lines = list(LINES)
    lines[line - 1] = text
    return _file(*lines)


def _poke(line: int, column: int, text: str) -> bytes:
    """GOOD with ``text`` written over line ``line`` from 1-based ``column``."""
    original = LINES[line - 1]
    return _replace(line, original[: column - 1] + text + original[column - 1 + len(text) :])


REJECTIONS: list[tuple[str, bytes, int, RejectionReason, str]] = [
    ("empty file", b"", 1, "no_header", "empty"),
    ("only an LF", b"\n", 1, "no_header", "empty"),
    ("a detail first", _file(*LINES[1:]), 1, "no_header", "begins with a D record"),
    ("a trailer first", _file(LINES[4]), 1, "no_header", "begins with a T record"),
    ("record type X first", _replace(1, "X" + LINES[0][1:]), 1, "record_type", "'X'"),
    ("a short header", _replace(1, LINES[0][:-1]), 1, "line_length", "33 characters, not 34"),
    ("a long header", _replace(1, LINES[0] + " "), 1, "line_length", "35 characters, not 34"),
    ("a short detail", _replace(3, LINES[2][:-1]), 3, "line_length", "104 characters, not 105"),
    ("a long detail", _replace(2, LINES[1] + "D"), 2, "line_length", "106 characters, not 105"),
    ("a short trailer", _replace(5, LINES[4][:-1]), 5, "line_length", "39 characters, not 40"),
    (
        "CRLF line ends",
        GOOD.replace(b"\n", b"\r\n"),
        1,
        "line_length",
        "35 characters, not 34 (a CR before the LF?)",
    ),
    ("an empty line", _file(*LINES[:2], "", *LINES[2:]), 3, "line_length", "empty"),
    ("a second header", _file(*LINES[:2], LINES[0], *LINES[2:]), 3, "record_type", "second header"),
    ("record type X", _replace(4, "X" + LINES[3][1:]), 4, "record_type", "'X' is none of H, D, T"),
    ("lowercase d", _replace(2, "d" + LINES[1][1:]), 2, "record_type", "'d'"),
    ("no trailer", _file(*LINES[:4]), 4, "no_trailer", "ends at line 4 without a trailer"),
    ("no records, no trailer", _file(LINES[0]), 1, "no_trailer", "without a trailer"),
    ("a line after the trailer", _file(*LINES, LINES[1]), 6, "after_trailer", "line 6 follows"),
    ("an empty line at the end", _file(*LINES, ""), 6, "after_trailer", "follows the trailer"),
    ("two trailers", _file(*LINES, LINES[4]), 6, "after_trailer", "follows the trailer"),
    ("a trailer amid records", _file(*LINES[:2], LINES[4], *LINES[2:]), 4, "after_trailer", ""),
    ("no final LF", _file(*LINES, end=""), 5, "unterminated", "does not end in LF"),
    ("header date not numeric", _poke(1, 2, "2025-1-2"), 1, "not_numeric", "business date"),
    ("institution not numeric", _poke(1, 10, " "), 1, "not_numeric", "institution id"),
    ("created not numeric", _poke(1, 34, "Z"), 1, "not_numeric", "created time"),
    ("no such business date", _poke(1, 2, "20251131"), 1, "bad_date", "'20251131' is not a date"),
    ("no such created time", _poke(1, 29, "24"), 1, "bad_date", "created time"),
    ("MTI not numeric", _poke(2, 2, "02A0"), 2, "not_numeric", "MTI '02A0' (columns 2-5)"),
    ("processing code", _poke(3, 6, " "), 3, "not_numeric", "processing code"),
    ("STAN not numeric", _poke(2, 12, "00000x"), 2, "not_numeric", "STAN"),
    ("field 7 not numeric", _poke(2, 18, "-"), 2, "not_numeric", "field 7"),
    ("amount with a space", _poke(4, 40, " "), 4, "not_numeric", "amount ' 00000002550'"),
    ("amount with a sign", _poke(2, 40, "-"), 2, "not_numeric", "amount"),
    ("currency not numeric", _poke(2, 52, "CNY"), 2, "not_numeric", "currency 'CNY'"),
    ("direction X", _poke(3, 105, "X"), 3, "bad_direction", "'X' (column 105)"),
    ("direction lowercase", _poke(2, 105, "d"), 2, "bad_direction", "neither D nor C"),
    ("direction space", _poke(2, 105, " "), 2, "bad_direction", "neither D nor C"),
    ("trailer count not numeric", _poke(5, 2, "x"), 5, "not_numeric", "record count"),
    ("trailer debits not numeric", _poke(5, 11, "x"), 5, "not_numeric", "total of D"),
    ("trailer credits not numeric", _poke(5, 40, "x"), 5, "not_numeric", "total of C"),
    ("trailer count +1", _poke(5, 2, "000000004"), 5, "trailer_count", "counts 4 records"),
    ("trailer count -1", _poke(5, 2, "000000002"), 5, "trailer_count", "the file has 3"),
    (
        "trailer debits off",
        _poke(5, 11, "000000000010001"),
        5,
        "trailer_debits",
        "total of D amounts is 10001, the records add up to 10000",
    ),
    (
        "trailer credits off",
        _poke(5, 26, "000000000012549"),
        5,
        "trailer_credits",
        "total of C amounts is 12549, the records add up to 12550",
    ),
    ("a record's amount changed", _poke(2, 51, "1"), 5, "trailer_debits", ""),
    ("a record's direction flipped", _poke(2, 105, "C"), 5, "trailer_debits", ""),
    ("a record dropped", _file(*LINES[:1], *LINES[2:]), 4, "trailer_count", ""),
    ("a tab in a text field", _poke(2, 75, "\t"), 2, "not_printable", "merchant id has"),
    ("a NUL in the RRN", _poke(3, 28, "\x00"), 3, "not_printable", "'\\x00' at column 28"),
    ("DEL in the masked PAN", _poke(4, 90, "\x7f"), 4, "not_printable", "masked PAN"),
    ("non-ASCII in a text field", _poke(3, 71, "\u00e9"), 3, "not_ascii", "0xe9 at column 71"),
    ("non-ASCII digit", _poke(2, 40, "\u00b2"), 2, "not_ascii", "0xb2 at column 40"),
    ("non-ASCII in the header", _poke(1, 2, "\u00ff"), 1, "not_ascii", "0xff at column 2"),
]


@pytest.mark.parametrize(
    ("data", "line", "reason", "words"),
    [case[1:] for case in REJECTIONS],
    ids=[case[0] for case in REJECTIONS],
)
def test_rejections(data: bytes, line: int, reason: RejectionReason, words: str) -> None:
    with pytest.raises(ClearingFileRejected) as caught:
        decode_clearing_file(data)
    assert (caught.value.line, caught.value.reason) == (line, reason)
    message = str(caught.value)
    assert message.startswith(f"line {line}: ")
    assert words in message


def test_the_first_fault_is_the_one_named() -> None:
    data = _file(LINES[0], LINES[1][:-1], "X", *LINES[3:5], LINES[4])
    with pytest.raises(ClearingFileRejected) as caught:
        decode_clearing_file(data)
    assert (caught.value.line, caught.value.reason) == (2, "line_length")


def test_a_rejection_is_a_remote_protocol_error() -> None:
    assert issubclass(ClearingFileRejected, RemoteProtocolError)


@given(st.binary(max_size=400))
def test_any_bytes_decode_or_are_rejected(data: bytes) -> None:
    with contextlib.suppress(ClearingFileRejected):
        decode_clearing_file(data)


@given(st.integers(0, len(GOOD) - 1), st.integers(0, 255))
def test_any_one_byte_changed_decodes_or_is_rejected(position: int, value: int) -> None:
    data = bytearray(GOOD)
    data[position] = value
    try:
        decoded = decode_clearing_file(bytes(data))
    except ClearingFileRejected:
        return
    # The line-by-line walk that names faults finds none in what the fast path took.
    _diagnose(bytes(data))
    # What still decodes is a file in the format: writing it again gives its bytes,
    # but for padding a changed text field may have lost (and a PAN column it masked).
    again = encode_clearing_file(decoded.header, decoded.records)
    assert decode_clearing_file(again) == msgspec.structs.replace(
        decoded, pans_masked=0, first_masked_line=0
    )


# -- read a chunk at a time ---------------------------------------------------------


def _fed(data: bytes, cuts: list[int]) -> ClearingFile:
    """``data`` fed to a decoder in pieces cut at ``cuts``."""
    decoder = ClearingDecoder()
    bounds = [0, *sorted(cuts), len(data)]
    for start, end in itertools.pairwise(bounds):
        decoder.feed(data[start:end])
    return decoder.close()


@pytest.mark.parametrize("size", [1, 2, 7, 105, 106, 107, 4096])
def test_a_file_fed_in_chunks_decodes_as_a_whole(size: int) -> None:
    data = encode_clearing_file(HEADER, [SALE, REVERSAL, REFUND] * 20)
    cuts = list(range(size, len(data), size))
    assert _fed(data, cuts) == decode_clearing_file(data)


@pytest.mark.parametrize(
    ("data", "line", "reason"),
    [case[1:4] for case in REJECTIONS],
    ids=[case[0] for case in REJECTIONS],
)
@pytest.mark.parametrize("size", [1, 3, 106])
def test_a_fault_is_named_alike_whatever_the_chunks(
    data: bytes, line: int, reason: RejectionReason, size: int
) -> None:
    with pytest.raises(ClearingFileRejected) as caught:
        _fed(data, list(range(size, len(data), size)))
    assert (caught.value.line, caught.value.reason) == (line, reason)


@given(st.lists(st.integers(0, len(GOOD)), max_size=8), st.integers(0, len(GOOD) - 1),
       st.integers(0, 255))  # fmt: skip
def test_any_chunks_of_any_changed_file_decode_as_the_whole(
    cuts: list[int], position: int, value: int
) -> None:
    data = bytearray(GOOD)
    data[position] = value
    try:
        whole: ClearingFile | ClearingFileRejected = decode_clearing_file(bytes(data))
    except ClearingFileRejected as exc:
        whole = exc
    try:
        fed: ClearingFile | ClearingFileRejected = _fed(bytes(data), cuts)
    except ClearingFileRejected as exc:
        fed = exc
    if isinstance(whole, ClearingFileRejected):
        assert isinstance(fed, ClearingFileRejected)
        assert (fed.line, fed.reason, str(fed)) == (whole.line, whole.reason, str(whole))
    else:
        assert fed == whole


# -- a card number in the masked PAN column -------------------------------------------


@pytest.mark.parametrize(
    ("column", "kept"),
    [
        ("6222021234567890", "622202******7890"),  # a full 16-digit PAN
        ("6222021234567890123", "622202*********0123"),  # 19 digits: the whole column
        ("622202123456789", "622202*****6789"),
        ("62220212345", "622202*2345"),
        ("6222 0212 3456 7890", "6222 0*********7890"),  # separators: masked alike
        ("622202****56789012", "622202********9012"),  # starred, but not enough
        ("622202*********2221", "622202*********2221"),  # as settlement.md: kept
        ("622848******0001", "622848******0001"),
        ("", ""),  # no card (a reversal without field 2)
        ("1234567890", "1234567890"),  # 10 characters: nothing between 6 and 4
    ],
)
def test_a_pan_column_not_masked_is_masked_on_the_way_in(column: str, kept: str) -> None:
    records = [REVERSAL, msgspec.structs.replace(SALE, masked_pan=column), REFUND]
    decoded = decode_clearing_file(encode_clearing_file(HEADER, records))
    assert decoded.records[1] == msgspec.structs.replace(SALE, masked_pan=kept)
    assert decoded.records[0] == REVERSAL and decoded.records[2] == REFUND
    changed = kept != column
    assert (decoded.pans_masked, decoded.first_masked_line) == ((1, 3) if changed else (0, 0))


def test_every_full_pan_of_a_file_is_masked_and_counted_on_either_path() -> None:
    full = msgspec.structs.replace(SALE, masked_pan="6222021234567890")
    data = encode_clearing_file(HEADER, [SALE, full, REVERSAL, full])
    for decoded in (decode_clearing_file(data), _fed(data, list(range(1, len(data))))):
        assert [r.masked_pan for r in decoded.records] == [
            SALE.masked_pan, "622202******7890", REVERSAL.masked_pan, "622202******7890",
        ]  # fmt: skip
        assert (decoded.pans_masked, decoded.first_masked_line) == (2, 3)
        assert decoded.debits_fen == 3 * SALE.amount  # the records count as they are


# -- our own misuse ------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"stan": "1234567"},
        {"mti": "02x0"},
        {"rrn": "5326140001234"},
        {"terminal_id": "POS\n0001"},
        {"merchant_id": "caf\u00e9"},
        {"amount": -1},
        {"amount": 10**12},
        {"direction": "X"},
    ],
)
def test_encoding_a_record_that_does_not_fit_is_our_bug(change: dict[str, object]) -> None:
    record = msgspec.structs.replace(SALE, **change)
    with pytest.raises(LocalProtocolError):
        encode_record(record)


def test_encoding_a_naive_created_time_is_our_bug() -> None:
    header = ClearingHeader(HEADER.business_date, HEADER.institution_id, datetime(2025, 11, 22))
    with pytest.raises(LocalProtocolError):
        encode_header(header)


def test_encoding_an_institution_id_too_long_is_our_bug() -> None:
    header = ClearingHeader(HEADER.business_date, "123456789012", HEADER.created)
    with pytest.raises(LocalProtocolError):
        encode_header(header)
