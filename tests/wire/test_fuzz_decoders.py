"""Hostile input, property by property: every framer and decoder a peer's bytes reach
only ever raises its declared error, whatever the bytes.

The ISO 8583 codec itself is covered by test_iso8583_props.py; this file covers what
sits around it: the length-prefixed framers, the POS envelope, the online MessagePack
decoder, the mapping of decoded messages into the model (POS and online), and the POS
channel's ``accept`` (a frame in, an answer or a piece of work out).
"""

from __future__ import annotations

import itertools
import re
import string
from typing import Any

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from switch.core import validate
from switch.core.batch import BatchTotals, UploadRecord
from switch.core.model import Echo, Origin, Outcome, Request, SignOn
from switch.core.online import request_from_online
from switch.core.pos import request_from_pos
from switch.core.stats import TransactionStats
from switch.errors import FramingError, MessageDecodeError, TransactionRefused
from switch.net.channel import CloseConnection
from switch.net.pos import REQUEST_CLASSES, PosProtocol, PosWork
from switch.terminal import DEFAULT_ENVELOPE, Terminal
from switch.wire import online as wire
from switch.wire.framing import (
    POS_ENVELOPE_BYTES,
    LengthPrefixedFramer,
    PosEnvelope,
    join_pos_frame,
    split_pos_frame,
)
from switch.wire.iso8583 import FieldValue, Iso8583Codec
from tests.wire.test_iso8583_props import CODECS, DIALECTS, field_values

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

POS_DIALECT = DIALECTS["cup-pos"]
POS_CODEC: Iso8583Codec = CODECS["cup-pos"]
POS_SPECS = {spec.number: spec for spec in POS_DIALECT.fields}

PAN = "6222021000111122221"  # pos-cup.md's sample card
TERMINAL = Terminal()


# -- LengthPrefixedFramer ---------------------------------------------------------------


def reference_split(
    stream: bytes, prefix_bytes: int, max_frame_bytes: int
) -> tuple[list[bytes], bool, bytes]:
    """The frames of a whole stream read at once, whether a bad length ends it, and the
    bytes left over: an independent reading of the framing rules."""
    frames: list[bytes] = []
    pos = 0
    while len(stream) - pos >= prefix_bytes:
        length = int.from_bytes(stream[pos : pos + prefix_bytes], "big")
        if not 1 <= length <= max_frame_bytes:
            return frames, True, stream[pos:]
        if len(stream) - pos - prefix_bytes < length:
            break
        frames.append(stream[pos + prefix_bytes : pos + prefix_bytes + length])
        pos += prefix_bytes + length
    return frames, False, stream[pos:]


@st.composite
def framed_streams(draw: st.DrawFn, prefix_bytes: int, max_frame_bytes: int) -> bytes:
    """Byte streams that are mostly frames, with lengths of 0, over the maximum, at the
    maximum, truncated frames and plain garbage mixed in."""
    width = prefix_bytes

    def prefixed(length: int, body: bytes) -> bytes:
        return length.to_bytes(width, "big") + body

    segment = st.one_of(
        st.binary(min_size=1, max_size=min(max_frame_bytes, 200)).map(
            lambda body: prefixed(len(body), body)
        ),
        st.binary(max_size=40),  # garbage: almost always a bad or huge length
        st.just(prefixed(0, b"")),
        st.integers(max_frame_bytes + 1, (1 << (8 * width)) - 1).map(lambda n: prefixed(n, b"")),
        st.just(prefixed(max_frame_bytes, bytes(max_frame_bytes))),
        st.binary(min_size=1, max_size=200).flatmap(
            lambda body: st.integers(0, len(body) + width - 1).map(
                lambda cut: prefixed(len(body), body)[:cut]
            )
        ),
    )
    return b"".join(draw(st.lists(segment, max_size=12)))


def chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(stream) + 1) for cut in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in itertools.pairwise(points)]


@pytest.mark.parametrize(("prefix_bytes", "max_frame_bytes"), [(2, 2048), (4, 65536), (2, 1)])
@FUZZ
@given(data=st.data())
def test_framer_on_any_stream_in_any_chunks_yields_frames_or_framing_error(
    prefix_bytes: int, max_frame_bytes: int, data: st.DataObject
) -> None:
    stream = data.draw(
        st.one_of(
            st.binary(max_size=300),
            framed_streams(prefix_bytes, max_frame_bytes),
        ),
        label="stream",
    )
    cuts = data.draw(st.lists(st.integers(0, 1 << 16), max_size=20), label="cuts")
    framer = LengthPrefixedFramer(prefix_bytes=prefix_bytes, max_frame_bytes=max_frame_bytes)
    frames: list[bytes] = []
    failed = False
    for chunk in chunked(stream, cuts):
        framer.feed(chunk)
        try:
            while (frame := framer.next_frame()) is not None:
                frames.append(frame)
        except FramingError:
            failed = True
            break

    expected_frames, expected_failure, rest = reference_split(stream, prefix_bytes, max_frame_bytes)
    # However the stream is cut, the same frames come out and a bad length is found.
    assert frames == expected_frames
    assert failed == expected_failure
    assert all(1 <= len(frame) <= max_frame_bytes for frame in frames)
    # The frames put back behind their prefixes are the stream they came from.
    rebuilt = b"".join(framer.frame(frame) for frame in frames)
    assert stream.startswith(rebuilt)
    if not failed:
        assert rebuilt + rest == stream
        assert framer.has_partial_frame == bool(rest)
        # A second framer fed the rebuilt frames in one go gives them back too.
        again = LengthPrefixedFramer(prefix_bytes=prefix_bytes, max_frame_bytes=max_frame_bytes)
        again.feed(rebuilt)
        assert [again.next_frame() for _ in frames] == frames
        assert again.next_frame() is None and not again.has_partial_frame


@pytest.mark.parametrize(("prefix_bytes", "max_frame_bytes"), [(2, 2048), (4, 65536)])
@FUZZ
@given(payload=st.binary(max_size=3000))
def test_frame_refuses_only_with_value_error_and_round_trips(
    prefix_bytes: int, max_frame_bytes: int, payload: bytes
) -> None:
    framer = LengthPrefixedFramer(prefix_bytes=prefix_bytes, max_frame_bytes=max_frame_bytes)
    try:
        framed = framer.frame(payload)
    except ValueError:
        assert not 1 <= len(payload) <= max_frame_bytes
        return
    framer.feed(framed)
    assert framer.next_frame() == payload
    assert not framer.has_partial_frame


# -- the POS envelope -------------------------------------------------------------------


@FUZZ
@given(payload=st.binary(max_size=64))
def test_split_pos_frame_raises_only_framing_error(payload: bytes) -> None:
    try:
        envelope, message = split_pos_frame(payload)
    except FramingError:
        assert len(payload) <= POS_ENVELOPE_BYTES
        return
    assert len(envelope.tpdu) == 5 and len(envelope.header) == 6 and message
    assert join_pos_frame(envelope, message) == payload
    reply = envelope.reply()
    assert (len(reply.tpdu), len(reply.header)) == (5, 6)
    assert reply.reply().tpdu == envelope.tpdu
    assert reply.header[2] & 0x0F == 0


# -- the online decoder -----------------------------------------------------------------

REQUEST_ID = re.compile(wire.REQUEST_ID_PATTERN)

CARD: dict[str, Any] = {"pan": PAN, "expiry": "2812", "cvv2": "123"}
PURCHASE: dict[str, Any] = {
    "type": "purchase",
    "id": "order-1",
    "merchant_id": "898310048990001",
    "amount": 10000,
    "currency": "CNY",
    "card": CARD,
    "order_id": "o-1",
    "memo": "thank you",
}
VALID_ONLINE: list[dict[str, Any]] = [
    PURCHASE,
    {"type": "balance", "id": "bal-1", "merchant_id": "M1", "card": CARD},
    {"type": "void", "id": "void-1", "merchant_id": "M1", "original_id": "order-1"},
    {
        "type": "refund",
        "id": "refund-1",
        "merchant_id": "M1",
        "original_id": "order-1",
        "amount": 2500,
    },
    {"type": "status", "id": "status-1", "merchant_id": "M1", "original_id": "order-1"},
]

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 63), (1 << 64) - 1),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.sampled_from(["purchase", "balance", "void", "refund", "status", "CNY", PAN, "2812"]),
)
KEYS = st.one_of(
    st.sampled_from(sorted({key for raw in VALID_ONLINE for key in raw} | {"pan", "expiry"})),
    st.text(max_size=10),
    st.integers(-5, 5),
)
MSGPACK_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(KEYS, children, max_size=5)
    ),
    max_leaves=25,
)


def check_decode_request(payload: bytes) -> wire.OnlineRequest | wire.OnlineDecodeError:
    """Decodes ``payload``; anything but OnlineDecodeError fails the test."""
    try:
        request = wire.decode_request(payload)
    except wire.OnlineDecodeError as exc:
        event(f"decode error, id {'known' if exc.request_id else 'unknown'}")
        assert exc.request_id is None or REQUEST_ID.match(exc.request_id)
        assert exc.field_path is None or isinstance(exc.field_path, str)
        assert exc.response_code == "30"
        return exc
    event(f"request: {type(request).__name__}")
    assert wire.decode_request(wire.encode_request(request)) == request
    return request


@FUZZ
@given(payload=st.binary(max_size=200))
def test_decode_request_of_any_bytes_raises_only_decode_error(payload: bytes) -> None:
    check_decode_request(payload)


@FUZZ
@given(value=MSGPACK_VALUES)
def test_decode_request_of_any_msgpack_raises_only_decode_error(value: object) -> None:
    check_decode_request(msgspec.msgpack.encode(value))


@st.composite
def mutated_requests(draw: st.DrawFn) -> tuple[dict[Any, Any], str, object]:
    """A valid request with one key (top level or in its card) deleted, replaced with
    anything, or added; and which key and what was done."""
    raw: dict[Any, Any] = {**draw(st.sampled_from(VALID_ONLINE))}
    target: dict[Any, Any] = raw
    if "card" in raw and draw(st.booleans()):
        target = raw["card"] = {**raw["card"]}
    action = draw(st.sampled_from(["delete", "replace", "add"]))
    key = draw(KEYS) if action == "add" else draw(st.sampled_from(sorted(target)))
    if action == "delete":
        target.pop(key, None)
    else:
        target[key] = draw(MSGPACK_VALUES)
    return raw, action, key


@FUZZ
@given(mutation=mutated_requests())
def test_decode_request_of_near_valid_requests_raises_only_decode_error(
    mutation: tuple[dict[Any, Any], str, object],
) -> None:
    raw, _, _ = mutation
    outcome = check_decode_request(msgspec.msgpack.encode(raw))
    if isinstance(outcome, wire.OnlineDecodeError):
        request_id = raw.get("id")
        readable = isinstance(request_id, str) and REQUEST_ID.match(request_id)
        if readable and all(isinstance(key, str) for key in raw):
            # The id could be read, so the error answer carries it.
            assert outcome.request_id == request_id
        elif not readable:
            assert outcome.request_id is None


@settings(FUZZ, report_multiple_bugs=False, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(data=st.data())
def test_decode_request_of_damaged_encodings_raises_only_decode_error(
    data: st.DataObject,
) -> None:
    """Valid requests' bytes with 1 to 3 bytes replaced, inserted or deleted."""
    encoded = bytearray(msgspec.msgpack.encode(data.draw(st.sampled_from(VALID_ONLINE))))
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(encoded)))
        byte = data.draw(st.integers(0, 255))
        action = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "replace" and position < len(encoded):
            encoded[position] = byte
        elif action == "insert":
            encoded.insert(position, byte)
        elif action == "delete" and position < len(encoded):
            del encoded[position]
    check_decode_request(bytes(encoded))


def _with_bad_utf8(raw: dict[str, Any], text: str) -> bytes:
    """``raw`` encoded, with the last character of the str ``text`` made a 0xFF byte."""
    encoded = msgspec.msgpack.encode(raw)
    assert encoded.count(text.encode()) == 1
    return encoded.replace(text.encode(), text[:-1].encode() + b"\xff")


@pytest.mark.parametrize(
    "payload",
    [
        _with_bad_utf8(PURCHASE, "2812"),  # card.expiry
        _with_bad_utf8(PURCHASE, "order-1"),  # id
        _with_bad_utf8(PURCHASE, "purchase"),  # the type tag
        _with_bad_utf8(PURCHASE, "merchant_id"),  # a key
    ],
    ids=["value", "id", "tag", "key"],
)
def test_decode_request_of_invalid_utf8_raises_only_decode_error(payload: bytes) -> None:
    with pytest.raises(wire.OnlineDecodeError):
        wire.decode_request(payload)


@pytest.mark.parametrize(
    "where",
    ["id", "memo after type", "memo before type", "card"],
)
def test_decode_request_of_deeply_nested_msgpack_raises_only_decode_error(where: str) -> None:
    nested = b"\x91" * 2000 + b"\xc0"  # [[[...[nil]...]]], 2,001 bytes
    payloads = {
        "id": b"\x81\xa2id" + nested,
        "memo after type": b"\x82\xa4type\xa8purchase\xa4memo" + nested,
        "memo before type": b"\x82\xa4memo" + nested + b"\xa4type\xa8purchase",
        "card": b"\x82\xa4type\xa8purchase\xa4card" + nested,
    }
    with pytest.raises(wire.OnlineDecodeError):
        wire.decode_request(payloads[where])


# -- POS fields to the model ------------------------------------------------------------

SALE_MESSAGE = TERMINAL.sale(123, PAN, 10000)
VALID_POS: list[tuple[str, dict[int, FieldValue]]] = [
    SALE_MESSAGE,
    TERMINAL.balance(124, PAN),
    TERMINAL.void(125, PAN, 10000, "532614000123", 123),
    TERMINAL.refund(126, PAN, 2500, "532614000123", 123),
    TERMINAL.reversal(SALE_MESSAGE),
    TERMINAL.sign_on(127),
    TERMINAL.echo(128),
    TERMINAL.settlement(129, BatchTotals(debit_fen=10000, debit_count=1)),
    TERMINAL.batch_upload(130, [UploadRecord(kind="22", stan="000123", amount=10000)]),
    TERMINAL.batch_upload(131, [], last_total=1),
    ("0200", {**SALE_MESSAGE[1], 35: f"{PAN}=28121010000000"}),
]
POS_MTIS = st.one_of(
    st.sampled_from(
        ["0200", "0220", "0400", "0800", "0820", "0500", "0320", "0100", "0210", "0600"]
    ),
    st.text(string.digits, min_size=4, max_size=4),
)
POS_NUMBERS = st.integers(2, 64)
ANY_VALUE: st.SearchStrategy[FieldValue] = st.one_of(st.text(max_size=40), st.binary(max_size=20))


def codec_values(number: int) -> st.SearchStrategy[FieldValue]:
    """Values the cup-pos codec can decode for a field (anything, for one it lacks)."""
    spec = POS_SPECS.get(number)
    return ANY_VALUE if spec is None else field_values(spec)


@st.composite
def mutated_pos(
    draw: st.DrawFn, values: Any, numbers: st.SearchStrategy[int] = POS_NUMBERS
) -> tuple[str, dict[int, FieldValue]]:
    """A valid POS request with 1 to 3 fields deleted, replaced or added (numbers drawn
    from ``numbers``, values from ``values(number)``), and now and then another MTI."""
    mti, fields = draw(st.sampled_from(VALID_POS))
    fields = dict(fields)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["delete", "set"]))
        if action == "delete" and fields:
            del fields[draw(st.sampled_from(sorted(fields)))]
        else:
            number = draw(st.one_of(st.sampled_from(sorted(fields) or [2]), numbers))
            fields[number] = draw(values(number))
    if draw(st.integers(0, 9)) == 0:
        mti = draw(POS_MTIS)
    return mti, fields


def check_request_from_pos(mti: str, fields: dict[int, FieldValue]) -> None:
    try:
        request = request_from_pos(mti, fields)
    except TransactionRefused as exc:
        event(f"refused {exc.response_code}")
        assert exc.response_code in {"13", "14", "30", "40", "57"}
        return
    event(f"request: {type(request).__name__}")
    assert isinstance(request, Request)
    assert request.acceptor.channel == "pos"
    assert request.stan == fields[11]
    card = getattr(request, "card", None)
    if card is not None:
        validate.check_pan(card.pan, field="2")
    amount = getattr(request, "amount", None)
    if amount is not None and mti != "0400":
        assert 0 <= amount <= validate.MAX_AMOUNT


@FUZZ
@given(mti=POS_MTIS, fields=st.dictionaries(POS_NUMBERS, ANY_VALUE, max_size=20))
def test_request_from_pos_of_any_fields_raises_only_refusal(
    mti: str, fields: dict[int, FieldValue]
) -> None:
    check_request_from_pos(mti, fields)


@FUZZ
@given(message=mutated_pos(codec_values))
def test_request_from_pos_of_decodable_mutations_raises_only_refusal(
    message: tuple[str, dict[int, FieldValue]],
) -> None:
    """Every value here is one the codec could have decoded: the real contract."""
    check_request_from_pos(*message)


@FUZZ
@given(message=mutated_pos(lambda number: ANY_VALUE if number != 4 else codec_values(4)))
def test_request_from_pos_of_any_mutations_raises_only_refusal(
    message: tuple[str, dict[int, FieldValue]],
) -> None:
    """Any text or bytes in any field but 4 (whose non-digits are the xfail below)."""
    check_request_from_pos(*message)


@pytest.mark.parametrize("amount", ["", "12.00", "abc", "0x10"])
def test_request_from_pos_with_a_non_digit_amount_is_refused(amount: str) -> None:
    mti, fields = SALE_MESSAGE
    with pytest.raises(TransactionRefused):
        request_from_pos(mti, {**fields, 4: amount})


# -- online requests to the model -------------------------------------------------------

IDS = st.from_regex(wire.REQUEST_ID_PATTERN, fullmatch=True)
MERCHANTS = st.from_regex(r"[!-~](?:[ -~]{0,13}[!-~])?", fullmatch=True)
"""What decode_request accepts as merchant_id (wire.ACCEPTOR_ID_PATTERN, 1..15)."""
AMOUNTS = st.one_of(
    st.integers(-(1 << 63), (1 << 64) - 1),
    st.integers(-2, 2),
    st.integers(validate.MAX_AMOUNT - 2, validate.MAX_AMOUNT + 2),
)
PANS = st.one_of(
    st.text(max_size=25),
    st.text(string.digits, min_size=10, max_size=21),
    st.text("0123456789٠١٢٣٤٥٦٧٨٩０１２３", min_size=12, max_size=19),
    st.just(PAN),
)
EXPIRIES = st.one_of(st.text(max_size=6), st.text(string.digits, min_size=4, max_size=4))
CARDS = st.builds(
    wire.Card,
    pan=PANS,
    expiry=EXPIRIES,
    cvv2=st.one_of(st.none(), st.from_regex(r"^[0-9]{3}\Z", fullmatch=True)),
)
ONLINE_REQUESTS = st.one_of(
    st.builds(
        wire.Purchase,
        id=IDS,
        merchant_id=MERCHANTS,
        amount=AMOUNTS,
        currency=st.one_of(
            st.sampled_from(["CNY", "USD", "XXX"]),
            st.text(string.ascii_uppercase, min_size=3, max_size=3),
        ),
        card=CARDS,
    ),
    st.builds(wire.Balance, id=IDS, merchant_id=MERCHANTS, card=CARDS),
    st.builds(wire.Void, id=IDS, merchant_id=MERCHANTS, original_id=IDS),
    st.builds(wire.Refund, id=IDS, merchant_id=MERCHANTS, original_id=IDS, amount=AMOUNTS),
)


@FUZZ
@given(request=ONLINE_REQUESTS)
def test_request_from_online_of_decoded_requests_raises_only_refusal(
    request: wire.Purchase | wire.Balance | wire.Void | wire.Refund,
) -> None:
    # Through the wire first: only what decode_request accepts reaches the mapping.
    decoded = wire.decode_request(wire.encode_request(request))
    assert decoded == request
    assert not isinstance(decoded, wire.Status)
    try:
        model = request_from_online(decoded, terminal_id="ONLINE01", stan="000001")
    except TransactionRefused as exc:
        event(f"refused {exc.response_code} ({exc.field})")
        assert exc.response_code in {"13", "14", "30", "57"}
        assert exc.field in {"amount", "currency", "card.pan", "card.expiry"}
        return
    assert model.online_id == request.id
    card = getattr(model, "card", None)
    if card is not None:
        assert card.pan.isascii() and card.pan.isdigit() and validate.luhn_valid(card.pan)
    amount = getattr(model, "amount", None)
    if amount is not None and not isinstance(request, wire.Balance):
        assert 1 <= amount <= validate.MAX_AMOUNT


# -- the channels' accept: a frame in, an answer or work out ----------------------------


class NetworkOnlySwitchboard:
    """accept reaches the switchboard only for what waits for nothing (sign-on, echo),
    and counts what it answers; everything else is respond's, and any other use is a
    test failure."""

    stats = TransactionStats()

    def network_management(self, request: SignOn | Echo, stamp: object, origin: object) -> Outcome:
        assert isinstance(request, SignOn | Echo)
        return Outcome(code="00")

    paycode_prefix = "88"  # payment codes served (wallet.md): their mapping is fuzzed too

    def check_merchant(self, merchant_id: str) -> None:
        pass  # every merchant is served here

    def business_date(self, stamp: object) -> str:
        return "2026-11-22"  # refusals of financial requests name their date

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"accept used switchboard.{name}")


def pos_protocol() -> PosProtocol:
    return PosProtocol(
        POS_CODEC,
        NetworkOnlySwitchboard(),  # type: ignore[arg-type]
        acquirer_id="48990000",
        utc_offset_h=8,
    )


def in_trio(function: Any, *args: Any) -> Any:
    """Runs a plain function under trio (accept logs with trio's clock)."""

    async def main() -> Any:
        return function(*args)

    return trio.run(main)


def request_fields_of(frame: bytes) -> dict[int, FieldValue]:
    """The fields of a POS frame's message that could be decoded."""
    try:
        return POS_CODEC.decode(split_pos_frame(frame)[1]).fields
    except MessageDecodeError as exc:
        return exc.fields


def check_pos_accept(protocol: PosProtocol, frame: bytes) -> None:
    try:
        answer = in_trio(protocol.accept, frame, Origin("pos", 1, 0.0))
    except (FramingError, CloseConnection) as exc:
        event(f"closed: {type(exc).__name__}")
        return
    event(f"answered: {type(answer).__name__}")
    envelope, _ = split_pos_frame(frame)
    if isinstance(answer, PosWork):
        assert answer.envelope == envelope
        assert answer.message.mti[2] in REQUEST_CLASSES
        return
    assert isinstance(answer, bytes)
    # An immediate answer is a whole, decodable response to this frame's envelope.
    reply_envelope, message = split_pos_frame(answer)
    assert reply_envelope == envelope.reply()
    response = POS_CODEC.decode(message)
    assert response.mti[2] in "1357"
    if response.fields[39] == "00":  # a sign-on or an echo test, answered at once
        assert response.mti in {"0810", "0830"}, response.mti
    else:
        assert response.fields[39] in {"13", "14", "30", "40", "54", "57"}
    request_fields = request_fields_of(frame)
    for number in (11, 41):
        if number in request_fields:
            assert response.fields[number] == request_fields[number]


POS_ENVELOPES = st.one_of(
    st.just(DEFAULT_ENVELOPE),
    st.builds(
        PosEnvelope,
        tpdu=st.binary(min_size=5, max_size=5),
        header=st.binary(min_size=6, max_size=6),
    ),
)


@FUZZ
@given(frame=st.binary(max_size=300))
@example(frame=b"")
@example(frame=bytes(POS_ENVELOPE_BYTES + 1))
def test_pos_accept_of_any_frame_answers_or_closes(frame: bytes) -> None:
    check_pos_accept(pos_protocol(), frame)


@FUZZ
@given(data=st.data())
def test_pos_accept_of_damaged_requests_answers_or_closes(data: st.DataObject) -> None:
    mti, fields = data.draw(mutated_pos(codec_values, st.sampled_from(sorted(POS_SPECS))))
    message = bytearray(POS_CODEC.encode(mti, fields))
    for _ in range(data.draw(st.integers(0, 3))):
        position = data.draw(st.integers(0, len(message)))
        byte = data.draw(st.integers(0, 255))
        action = data.draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        if action == "replace" and position < len(message):
            message[position] = byte
        elif action == "insert":
            message.insert(position, byte)
        elif action == "delete" and position < len(message):
            del message[position]
        elif action == "cut":
            del message[position:]
    envelope = data.draw(POS_ENVELOPES)
    check_pos_accept(pos_protocol(), join_pos_frame(envelope, bytes(message)))
