"""Length-prefixed framing, as pure classes.

All three interfaces put an unsigned big-endian length before each message: two bytes
for POS terminals and banks, four for online clients. The POS frame also carries a TPDU
and a header before the ISO 8583 message (pos-cup.md, "Frame").
"""

from __future__ import annotations

from typing import Final

import msgspec

from switch.errors import FramingError

TPDU_ID: Final = 0x60
"""The TPDU's first byte on pos-cup.md's interface."""
TPDU_BYTES: Final = 5
POS_HEADER_BYTES: Final = 6
POS_ENVELOPE_BYTES: Final = TPDU_BYTES + POS_HEADER_BYTES


class LengthPrefixedFramer:
    """Splits a byte stream into frames; builds frames from payloads.

    Feed it whatever the socket gave, then take frames until ``next_frame`` says None.
    A length of 0 or above ``max_frame_bytes`` raises :class:`FramingError` as soon as
    the prefix is seen, so an oversized frame is never buffered.
    """

    __slots__ = ("_buffer", "max_frame_bytes", "prefix_bytes")

    def __init__(self, *, prefix_bytes: int, max_frame_bytes: int) -> None:
        if prefix_bytes not in (2, 4):
            raise ValueError(f"prefix_bytes must be 2 or 4, not {prefix_bytes}")
        limit = 1 << (8 * prefix_bytes)
        if not 0 < max_frame_bytes < limit:
            raise ValueError(f"max_frame_bytes must be 1..{limit - 1}, not {max_frame_bytes}")
        self.prefix_bytes = prefix_bytes
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next whole frame's payload, or None until more bytes are fed."""
        buffer = self._buffer
        prefix = self.prefix_bytes
        if len(buffer) < prefix:
            return None
        length = int.from_bytes(buffer[:prefix], "big")
        if length == 0:
            raise FramingError("frame length is 0")
        if length > self.max_frame_bytes:
            raise FramingError(f"frame length {length} exceeds maximum {self.max_frame_bytes}")
        end = prefix + length
        if len(buffer) < end:
            return None
        payload = bytes(buffer[prefix:end])
        del buffer[:end]
        return payload

    @property
    def buffered_bytes(self) -> int:
        """Bytes fed and not yet taken as frames (a whole frame among them, perhaps)."""
        return len(self._buffer)

    @property
    def has_partial_frame(self) -> bool:
        """True while some bytes of a frame have arrived but not all of it."""
        return bool(self._buffer)

    def frame(self, payload: bytes) -> bytes:
        """``payload`` behind its length prefix."""
        length = len(payload)
        if not 0 < length <= self.max_frame_bytes:
            raise ValueError(f"payload length {length} is outside 1..{self.max_frame_bytes}")
        return length.to_bytes(self.prefix_bytes, "big") + payload


class PosEnvelope(msgspec.Struct, frozen=True):
    """The TPDU and header that precede the ISO 8583 message in a POS frame."""

    tpdu: bytes
    header: bytes

    def reply(self) -> PosEnvelope:
        """The envelope of the response: TPDU addresses swapped, header copied with the
        processing-requirement low nibble cleared (pos-cup.md, "Frame")."""
        tpdu = self.tpdu
        header = bytearray(self.header)
        header[2] &= 0xF0
        return PosEnvelope(tpdu=tpdu[:1] + tpdu[3:5] + tpdu[1:3], header=bytes(header))


def split_pos_frame(payload: bytes) -> tuple[PosEnvelope, bytes]:
    """Splits a POS frame's payload into its envelope and the ISO 8583 message."""
    if len(payload) <= POS_ENVELOPE_BYTES:
        raise FramingError(
            f"POS frame of {len(payload)} bytes is too short for TPDU, header and message"
        )
    envelope = PosEnvelope(tpdu=payload[:TPDU_BYTES], header=payload[TPDU_BYTES:POS_ENVELOPE_BYTES])
    return envelope, payload[POS_ENVELOPE_BYTES:]


def join_pos_frame(envelope: PosEnvelope, message: bytes) -> bytes:
    """A POS frame's payload (without its length prefix)."""
    return envelope.tpdu + envelope.header + message
