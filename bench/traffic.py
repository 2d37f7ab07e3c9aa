"""The load generator's messages, built once and patched per request (no I/O here).

A terminal's sale is encoded once with the switch's own codec; each request then only
has its STAN's three BCD bytes replaced. An online purchase is encoded once per
connection with a fixed-width id whose sequence digits are replaced. Responses are
decoded only as far as the generator needs: who it is for and its response code.
"""

from __future__ import annotations

from typing import Final

import msgspec

from switch.core.validate import luhn_valid
from switch.errors import MessageDecodeError
from switch.net.clients import OnlineKey
from switch.terminal import Terminal, TerminalSecurity, encode_pos_request, with_pin
from switch.wire import online as online_wire
from switch.wire.framing import POS_ENVELOPE_BYTES, join_pos_frame
from switch.wire.iso8583 import Iso8583Codec

MERCHANT_ID: Final = "898310048990001"
AMOUNT_FEN: Final = 100
"""1.00 CNY: ends in 00, so the simulator approves it (05/51/54/61/68 are its hooks)."""
MAX_STAN: Final = 999_999
NO_CODE: Final = "echo"
"""The 'response code' of an answer without field 39: what the echo server sends back."""
UNDECODABLE: Final = "undecodable"


def luhn_complete(partial: str) -> str:
    """``partial`` with the check digit that makes it Luhn-valid."""
    for digit in "0123456789":
        if luhn_valid(partial + digit):
            return partial + digit
    raise AssertionError("unreachable: one of ten digits always completes a Luhn number")


def card_number(bin_prefix: str, index: int) -> str:
    """A 19-digit Luhn-valid card of ``bin_prefix`` for terminal (or connection) ``index``:
    one card each, so no card runs out of balance at the simulator."""
    return luhn_complete(f"{bin_prefix}{index:012d}")


def terminal_id(worker: int, index: int) -> str:
    """Field 41, ans8, unique across the run's workers: ``W`` + worker + index."""
    return f"W{worker:02d}{index:05d}"


PIN: Final = "123456"
"""The simulator's default PIN: what a terminal that signed on enters with each sale."""


class PosSaleTemplate:
    """One terminal's sale frame (length prefix included), re-used for every STAN. With
    ``security`` (a terminal signed on, security.md) the sale carries the PIN's block
    under the PIK (encrypted once) and each frame's 64 is made afresh under the MAK."""

    __slots__ = ("_frame", "_security", "_stan_at", "terminal_id")

    def __init__(
        self,
        codec: Iso8583Codec,
        terminal: Terminal,
        pan: str,
        amount_fen: int,
        security: TerminalSecurity | None = None,
    ) -> None:
        self.terminal_id = terminal.terminal_id
        self._security = security
        first = self._frame_bytes(codec, terminal, terminal.sale(111111, pan, amount_fen))
        second = self._frame_bytes(codec, terminal, terminal.sale(222222, pan, amount_fen))
        self._stan_at = _only_difference(first[:-8], second[:-8], width=3)
        self._frame = first

    def _frame_bytes(
        self, codec: Iso8583Codec, terminal: Terminal, message: tuple[str, dict[int, str | bytes]]
    ) -> bytes:
        security = self._security
        if security is None:
            payload = encode_pos_request(codec, terminal, message)
        else:
            message = with_pin(message, security, PIN)
            payload = join_pos_frame(terminal.envelope, security.encode(codec, *message))
        return len(payload).to_bytes(2, "big") + payload

    def frame(self, stan: int) -> bytes:
        at = self._stan_at
        frame = self._frame[:at] + bytes.fromhex(f"{stan:06d}") + self._frame[at + 3 :]
        if self._security is None:
            return frame
        mab = frame[2 + POS_ENVELOPE_BYTES : -8]
        return frame[:-8] + self._security.mac(mab)


def echo_test_frame(codec: Iso8583Codec, terminal: Terminal, stan: int) -> bytes:
    """An 0820 echo test: what an idle terminal sends to check its line."""
    payload = encode_pos_request(codec, terminal, terminal.echo(stan))
    return len(payload).to_bytes(2, "big") + payload


def next_stan(stan: int) -> int:
    return 1 if stan >= MAX_STAN else stan + 1


class PosAnswer(msgspec.Struct, frozen=True, gc=False):
    terminal_id: str
    stan: int
    code: str


def read_pos_answer(codec: Iso8583Codec, payload: bytes) -> PosAnswer:
    """Fields 41, 11 and 39 of a response frame's payload (after the length prefix)."""
    try:
        fields = codec.decode(payload[POS_ENVELOPE_BYTES:]).fields
    except MessageDecodeError as exc:
        fields = exc.fields
        if 39 not in fields:
            return PosAnswer(str(fields.get(41, "")), -1, UNDECODABLE)
    stan = fields.get(11)
    return PosAnswer(
        str(fields.get(41, "")),
        int(stan) if isinstance(stan, str) and stan.isdigit() else -1,
        str(fields.get(39, NO_CODE)),
    )


# The online channel.

ONLINE_SEQUENCE_DIGITS: Final = 10


def online_request_id(job: int, worker: int, connection: int, sequence: int) -> str:
    """Unique per merchant across the run: ``j<job>w<worker>c<connection>n<sequence>``."""
    return f"j{job}w{worker:02d}c{connection:05d}n{sequence:0{ONLINE_SEQUENCE_DIGITS}d}"


def online_sequence(request_id: str | None) -> int:
    """The sequence number at the end of one of our request ids; -1 for anything else."""
    digits = (request_id or "")[-ONLINE_SEQUENCE_DIGITS:]
    return int(digits) if len(digits) == ONLINE_SEQUENCE_DIGITS and digits.isdigit() else -1


class OnlinePurchaseTemplate:
    """One connection's purchase frame (length prefix included), re-used per sequence;
    with ``sign``, its body in an envelope signed then (security.md) under the DEMO key
    of the bench's merchant, as a merchant's back end signs each request."""

    __slots__ = ("_frame", "_key", "_sequence_at")

    def __init__(
        self, job: int, worker: int, connection: int, pan: str, amount_fen: int,
        *, sign: bool = True,
    ) -> None:  # fmt: skip
        placeholder = online_request_id(job, worker, connection, 0)
        request = online_wire.Purchase(
            id=placeholder,
            merchant_id=MERCHANT_ID,
            amount=amount_fen,
            currency="CNY",
            card=online_wire.Card(pan=pan, expiry="2812"),
        )
        payload = online_wire.encode_request(request)
        frame = len(payload).to_bytes(4, "big") + payload
        at = frame.index(placeholder.encode("ascii"))
        self._sequence_at = at + len(placeholder) - ONLINE_SEQUENCE_DIGITS
        self._frame = frame
        self._key = OnlineKey.demo_merchant(MERCHANT_ID) if sign else None

    def frame(self, sequence: int) -> bytes:
        at = self._sequence_at
        digits = f"{sequence:0{ONLINE_SEQUENCE_DIGITS}d}".encode("ascii")
        frame = self._frame[:at] + digits + self._frame[at + ONLINE_SEQUENCE_DIGITS :]
        if self._key is None:
            return frame
        signed = self._key.seal(frame[4:])
        return len(signed).to_bytes(4, "big") + signed


class OnlineAnswer(msgspec.Struct, frozen=True, gc=False):
    """The two keys of a result or error the generator reads; msgspec skips the rest."""

    code: str
    id: str | None = None


_online_answer_decoder: Final = msgspec.msgpack.Decoder(OnlineAnswer)


class _SignedAnswer(msgspec.Struct, frozen=True, gc=False):
    body: bytes | None = None


_signed_answer_decoder: Final = msgspec.msgpack.Decoder(_SignedAnswer)


def read_online_answer(payload: bytes) -> OnlineAnswer:
    """An answer's code and id: from a signed answer's body (not verified: the bench
    measures the switch), or from an unsigned error."""
    try:
        signed = _signed_answer_decoder.decode(payload)
        if signed.body is not None:
            payload = signed.body
        return _online_answer_decoder.decode(payload)
    except msgspec.DecodeError:
        return OnlineAnswer(code=UNDECODABLE)


def _only_difference(first: bytes, second: bytes, *, width: int) -> int:
    """Where two same-length frames differ, checked to be one run of ``width`` bytes."""
    if len(first) != len(second):
        raise ValueError("templates differ in length: the STAN is not a fixed field")
    positions = [i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b]
    if len(positions) != width or positions[-1] - positions[0] != width - 1:
        raise ValueError(f"templates differ at {positions}, not in one {width}-byte run")
    return positions[0]
