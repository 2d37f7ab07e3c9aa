"""Length-prefixed framing and the POS envelope, as synchronous tables (no I/O)."""

from __future__ import annotations

import pytest

from switch.errors import FramingError
from switch.wire.framing import (
    LengthPrefixedFramer,
    PosEnvelope,
    join_pos_frame,
    split_pos_frame,
)

# pos-cup.md, "Sample frames": the sale request and its approval, with their 2-byte length.
POS_SALE = bytes.fromhex(
    "0051600003000060310031073002007024048000c08010196222021000111122"
    "22100000000000000100000001232812002100504f5330303030313839383331"
    "30303438393930303031313536000822000042"
)
POS_APPROVAL = bytes.fromhex(
    "006a60000000036031003107300210703800010ec08010196222021000111122"
    "2210000000000000010000000123143015112208489900003533323631343030"
    "303132334131423243333030504f533030303031383938333130303438393930"
    "303031313536000822000042"
)


def framer(prefix_bytes: int = 2, max_frame_bytes: int = 2048) -> LengthPrefixedFramer:
    return LengthPrefixedFramer(prefix_bytes=prefix_bytes, max_frame_bytes=max_frame_bytes)


def drain(f: LengthPrefixedFramer) -> list[bytes]:
    frames = []
    while (payload := f.next_frame()) is not None:
        frames.append(payload)
    return frames


# -- construction --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix_bytes", "max_frame_bytes"),
    [
        (1, 100),
        (3, 100),
        (8, 100),
        (2, 0),
        (2, 65536),
        (4, 0),
        (4, 1 << 32),
    ],
)
def test_bad_construction_is_refused(prefix_bytes: int, max_frame_bytes: int) -> None:
    with pytest.raises(ValueError):
        LengthPrefixedFramer(prefix_bytes=prefix_bytes, max_frame_bytes=max_frame_bytes)


@pytest.mark.parametrize(("prefix_bytes", "max_frame_bytes"), [(2, 1), (2, 65535), (4, 2**32 - 1)])
def test_limits_of_construction(prefix_bytes: int, max_frame_bytes: int) -> None:
    f = LengthPrefixedFramer(prefix_bytes=prefix_bytes, max_frame_bytes=max_frame_bytes)
    assert f.prefix_bytes == prefix_bytes
    assert f.max_frame_bytes == max_frame_bytes


# -- splitting a stream --------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix_bytes", "stream", "frames"),
    [
        (2, b"\x00\x03abc", [b"abc"]),
        (4, b"\x00\x00\x00\x03abc", [b"abc"]),
        (2, b"\x00\x01a\x00\x02bc\x00\x03def", [b"a", b"bc", b"def"]),
        (4, b"\x00\x00\x00\x01a\x00\x00\x00\x02bc", [b"a", b"bc"]),
        (2, b"\x01\x00" + bytes(range(256)), [bytes(range(256))]),
        (2, POS_SALE, [POS_SALE[2:]]),
        (2, POS_SALE + POS_APPROVAL, [POS_SALE[2:], POS_APPROVAL[2:]]),
    ],
)
def test_frames_in_one_feed(prefix_bytes: int, stream: bytes, frames: list[bytes]) -> None:
    f = framer(prefix_bytes)
    f.feed(stream)
    assert drain(f) == frames
    assert not f.has_partial_frame


@pytest.mark.parametrize("prefix_bytes", [2, 4])
def test_frames_split_byte_by_byte(prefix_bytes: int) -> None:
    payloads = [b"x", b"hello", bytes(300), POS_SALE[2:]]
    f = framer(prefix_bytes)
    stream = b"".join(f.frame(p) for p in payloads)
    received = []
    for index in range(len(stream)):
        f.feed(stream[index : index + 1])
        received.extend(drain(f))
    assert received == payloads
    assert not f.has_partial_frame


@pytest.mark.parametrize("prefix_bytes", [2, 4])
def test_a_frame_is_only_released_when_complete(prefix_bytes: int) -> None:
    f = framer(prefix_bytes)
    frame = f.frame(b"abcdef")
    for cut in range(len(frame)):
        f = framer(prefix_bytes)
        f.feed(frame[:cut])
        assert f.next_frame() is None
        assert f.has_partial_frame == (cut > 0)
        f.feed(frame[cut:])
        assert f.next_frame() == b"abcdef"
        assert f.next_frame() is None
        assert not f.has_partial_frame


def test_partial_frame_left_behind_after_whole_ones() -> None:
    f = framer(2)
    f.feed(b"\x00\x02ab\x00\x05abc")
    assert f.next_frame() == b"ab"
    assert f.next_frame() is None
    assert f.has_partial_frame
    f.feed(b"de")
    assert f.next_frame() == b"abcde"
    assert not f.has_partial_frame


def test_fresh_framer_has_no_partial_frame() -> None:
    f = framer(4)
    assert f.next_frame() is None
    assert not f.has_partial_frame


# -- bad lengths are refused as soon as the prefix is seen --------------------------


@pytest.mark.parametrize(
    ("prefix_bytes", "max_frame_bytes", "prefix"),
    [
        (2, 2048, b"\x00\x00"),
        (4, 65536, b"\x00\x00\x00\x00"),
        (2, 2048, (2049).to_bytes(2, "big")),
        (2, 2048, b"\xff\xff"),
        (4, 65536, (65537).to_bytes(4, "big")),
        (4, 65536, b"\xff\xff\xff\xff"),
    ],
)
def test_bad_length_raises_before_the_body(
    prefix_bytes: int, max_frame_bytes: int, prefix: bytes
) -> None:
    f = framer(prefix_bytes, max_frame_bytes)
    # Only part of the prefix: nothing to judge yet.
    f.feed(prefix[:-1])
    assert f.next_frame() is None
    # The whole prefix, no body at all: refused at once.
    f.feed(prefix[-1:])
    with pytest.raises(FramingError):
        f.next_frame()


def test_bad_length_after_good_frames() -> None:
    f = framer(2, 16)
    f.feed(b"\x00\x02ok\x00\x11")
    assert f.next_frame() == b"ok"
    with pytest.raises(FramingError):
        f.next_frame()


@pytest.mark.parametrize(("prefix_bytes", "max_frame_bytes"), [(2, 2048), (4, 65536)])
def test_maximum_length_is_allowed(prefix_bytes: int, max_frame_bytes: int) -> None:
    f = framer(prefix_bytes, max_frame_bytes)
    payload = bytes(max_frame_bytes)
    f.feed(max_frame_bytes.to_bytes(prefix_bytes, "big"))
    assert f.next_frame() is None
    f.feed(payload)
    assert f.next_frame() == payload


def test_framing_error_answers_30() -> None:
    f = framer(2)
    f.feed(b"\x00\x00")
    with pytest.raises(FramingError) as info:
        f.next_frame()
    assert info.value.response_code == "30"


# -- building frames -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix_bytes", "payload", "framed"),
    [
        (2, b"a", b"\x00\x01a"),
        (4, b"a", b"\x00\x00\x00\x01a"),
        (2, bytes(256), b"\x01\x00" + bytes(256)),
        (2, POS_SALE[2:], POS_SALE),
        (2, POS_APPROVAL[2:], POS_APPROVAL),
    ],
)
def test_frame(prefix_bytes: int, payload: bytes, framed: bytes) -> None:
    assert framer(prefix_bytes).frame(payload) == framed


@pytest.mark.parametrize("prefix_bytes", [2, 4])
@pytest.mark.parametrize("size", [1, 2, 255, 256, 1000, 2048])
def test_frame_round_trip(prefix_bytes: int, size: int) -> None:
    f = framer(prefix_bytes)
    payload = bytes(index % 251 for index in range(size))
    f.feed(f.frame(payload))
    assert f.next_frame() == payload
    assert f.next_frame() is None


@pytest.mark.parametrize(("prefix_bytes", "size"), [(2, 0), (2, 2049), (4, 0), (4, 2049)])
def test_frame_refuses_bad_payload_length(prefix_bytes: int, size: int) -> None:
    with pytest.raises(ValueError):
        framer(prefix_bytes, 2048).frame(bytes(size))


# -- the POS envelope (pos-cup.md, "Frame") -------------------------------------------


def test_split_pos_sample() -> None:
    envelope, message = split_pos_frame(POS_SALE[2:])
    assert envelope.tpdu == bytes.fromhex("6000030000")
    assert envelope.header == bytes.fromhex("603100310730")
    assert message[:2] == b"\x02\x00"
    assert message == POS_SALE[2 + 11 :]


def test_split_then_join_is_identity() -> None:
    for frame in (POS_SALE, POS_APPROVAL):
        envelope, message = split_pos_frame(frame[2:])
        assert join_pos_frame(envelope, message) == frame[2:]


@pytest.mark.parametrize(
    ("tpdu", "header", "reply_tpdu", "reply_header"),
    [
        # The sample: request TPDU 6000030000 -> response 6000000003.
        ("6000030000", "603100310730", "6000000003", "603100310730"),
        # The processing-requirement low nibble (third header byte) is cleared.
        ("6000030000", "603105310730", "6000000003", "603100310730"),
        ("6000030000", "60310f310730", "6000000003", "603100310730"),
        # ... but not its high nibble (terminal status), nor any other byte.
        ("6000030000", "6031a5310730", "6000000003", "6031a0310730"),
        ("6012345678", "ffffffffffff", "6056781234", "fffff0ffffff"),
    ],
)
def test_envelope_reply(tpdu: str, header: str, reply_tpdu: str, reply_header: str) -> None:
    envelope = PosEnvelope(tpdu=bytes.fromhex(tpdu), header=bytes.fromhex(header))
    reply = envelope.reply()
    assert reply.tpdu == bytes.fromhex(reply_tpdu)
    assert reply.header == bytes.fromhex(reply_header)
    # The request's envelope is left as it was.
    assert envelope.header == bytes.fromhex(header)


def test_sample_approval_envelope_is_the_sale_reply() -> None:
    sale_envelope, _ = split_pos_frame(POS_SALE[2:])
    approval_envelope, _ = split_pos_frame(POS_APPROVAL[2:])
    assert sale_envelope.reply() == approval_envelope


def test_reply_of_reply_swaps_back() -> None:
    envelope = PosEnvelope(tpdu=bytes.fromhex("6000030000"), header=bytes.fromhex("603100310730"))
    assert envelope.reply().reply() == envelope


@pytest.mark.parametrize("size", [0, 1, 5, 10, 11])
def test_too_short_pos_frame(size: int) -> None:
    with pytest.raises(FramingError):
        split_pos_frame(bytes(size))


def test_shortest_pos_frame_has_a_one_byte_message() -> None:
    envelope, message = split_pos_frame(bytes(range(12)))
    assert envelope.tpdu == bytes(range(5))
    assert envelope.header == bytes(range(5, 11))
    assert message == b"\x0b"
