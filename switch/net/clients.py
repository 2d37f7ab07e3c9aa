"""Clients of the switch's own channels, over real TCP: the CLI's smoke test, the
end-to-end tests and the bench drive the switch through these, as terminals and
checkouts built from the specs would."""

from __future__ import annotations

import re
import ssl
import time
from pathlib import Path
from typing import Final

import msgspec
import trio

from switch.errors import FramingError, SwitchError
from switch.security.algorithms import macs_equal, online_signature
from switch.security.software import (
    DEMO_APP_KEY_ID,
    DEMO_MERCHANT_KEY_PREFIX,
    DEMO_ONLINE_SECRET,
)
from switch.terminal import Terminal, decode_pos_response, encode_pos_request
from switch.wire import envelope
from switch.wire import online as wire
from switch.wire.framing import LengthPrefixedFramer, PosEnvelope
from switch.wire.iso8583 import FieldValue, Iso8583Codec, Iso8583Message


class PosClient:
    """One terminal connection: sends a request, reads one response."""

    def __init__(self, stream: trio.SocketStream, codec: Iso8583Codec, terminal: Terminal) -> None:
        self.stream = stream
        self.codec = codec
        self.terminal = terminal
        self.framer = LengthPrefixedFramer(prefix_bytes=2, max_frame_bytes=65535)

    @classmethod
    async def connect(
        cls, host: str, port: int, codec: Iso8583Codec, terminal: Terminal
    ) -> PosClient:
        return cls(await trio.open_tcp_stream(host, port), codec, terminal)

    async def send(self, message: tuple[str, dict[int, FieldValue]]) -> None:
        payload = encode_pos_request(self.codec, self.terminal, message)
        await self.stream.send_all(self.framer.frame(payload))

    async def receive(self) -> tuple[PosEnvelope, Iso8583Message]:
        """The next response; raises EOFError if the switch closed the connection."""
        while True:
            frame = self.framer.next_frame()
            if frame is not None:
                return decode_pos_response(self.codec, frame)
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("switch closed the connection")
            self.framer.feed(data)

    async def request(self, message: tuple[str, dict[int, FieldValue]]) -> Iso8583Message:
        await self.send(message)
        return (await self.receive())[1]

    async def aclose(self) -> None:
        await self.stream.aclose()


class UnverifiedAnswer(SwitchError):
    """A signed answer whose signature or timestamp does not verify: no answer
    (security.md: the client takes it as no response)."""


DEFAULT_DEMO_MERCHANT: Final = "SHOP01"


class OnlineKey:
    """A principal's online key as its client holds it: the key id and the 32-byte
    secret its delivery file holds. Signs requests into envelopes and checks the signed
    answers (security.md). The client's side only: the switch's keys stay in its
    security module."""

    __slots__ = ("_secret", "key_id")

    def __init__(self, key_id: str, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError("an online secret is 32 bytes")
        self.key_id = key_id
        self._secret = secret

    def __repr__(self) -> str:
        return f"OnlineKey({self.key_id!r})"

    @classmethod
    def from_file(cls, key_id: str, path: Path) -> OnlineKey:
        """The key whose secret is in ``path`` (64 hexadecimal characters, as ``switch
        keys online new`` delivers it)."""
        text = path.read_text(encoding="ascii", errors="replace").strip()
        if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise ValueError(f"{path} does not hold 64 hexadecimal characters")
        return cls(key_id, bytes.fromhex(text))

    @classmethod
    def demo_merchant(cls, merchant_id: str) -> OnlineKey:
        """The DEMO key of ``merchant:<merchant_id>`` (``[security] demo_keys``)."""
        return cls(DEMO_MERCHANT_KEY_PREFIX + merchant_id, DEMO_ONLINE_SECRET)

    @classmethod
    def demo_app(cls) -> OnlineKey:
        """The DEMO key of ``app:wallet``."""
        return cls(DEMO_APP_KEY_ID, DEMO_ONLINE_SECRET)

    def seal(self, body: bytes, *, ts: int | None = None, nonce: str | None = None) -> bytes:
        """The envelope of ``body``, signed now (or at ``ts``) with a new nonce."""
        ts = int(time.time()) if ts is None else ts
        nonce = envelope.new_nonce() if nonce is None else nonce
        sig = online_signature(self._secret, self.key_id, ts, nonce, body)
        return envelope.encode(envelope.Envelope(self.key_id, ts, nonce, body, sig))

    def open(self, signed: envelope.Envelope, *, now: float | None = None) -> bytes:
        """The body of an answer signed with this key; UnverifiedAnswer when its
        signature or its timestamp (±300 s) fails."""
        expected = online_signature(self._secret, signed.key_id, signed.ts, signed.nonce,
                                    signed.body)  # fmt: skip
        if signed.key_id != self.key_id or not macs_equal(expected, signed.sig):
            raise UnverifiedAnswer(f"answer under key {signed.key_id}: bad signature")
        now = time.time() if now is None else now
        if abs(signed.ts - now) > envelope.MAX_SKEW_S:
            raise UnverifiedAnswer(f"answer's timestamp {signed.ts} is outside ±300 s")
        return signed.body


_merchant_probe: Final = msgspec.msgpack.Decoder(dict[str, object])
_DEMO_MERCHANT: Final = re.compile(r"[A-Za-z0-9._:-]{1,15}")


def _merchant_of(payload: bytes) -> str:
    try:
        found = _merchant_probe.decode(payload).get("merchant_id")
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, AttributeError):
        return DEFAULT_DEMO_MERCHANT
    # A merchant id no key id can carry (a test of the body's own checks) is signed
    # under the default merchant's key: the body is then refused for what it is.
    if isinstance(found, str) and _DEMO_MERCHANT.fullmatch(found):
        return found
    return DEFAULT_DEMO_MERCHANT


class OnlineClient:
    """One online connection; requests may be pipelined, responses come in any order.

    Every request goes in a signed envelope (security.md): under ``key`` when one is
    given, else under the DEMO key of the request's ``merchant_id`` (``demo-m-<id>``,
    for a switch with ``[security] demo_keys``). Answers are checked and unwrapped:
    ``receive_raw`` gives the body of a signed answer (UnverifiedAnswer when it does
    not verify) or an unsigned error as it came (``last_signed`` says which)."""

    def __init__(self, stream: trio.abc.Stream, key: OnlineKey | None = None) -> None:
        self.stream = stream
        self.key = key
        self.framer = LengthPrefixedFramer(prefix_bytes=4, max_frame_bytes=1 << 24)
        self._keys: dict[str, OnlineKey] = {} if key is None else {key.key_id: key}
        self.last_signed = False

    @classmethod
    async def connect(
        cls, host: str, port: int, *, tls: ssl.SSLContext | None = None,
        key: OnlineKey | None = None,
    ) -> OnlineClient:  # fmt: skip
        """Connected over TCP, or with ``tls`` over TLS (the handshake done: a server
        that refuses it raises trio.BrokenResourceError here)."""
        if tls is None:
            return cls(await trio.open_tcp_stream(host, port), key)
        stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=tls)
        try:
            await stream.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return cls(stream, key)

    def key_for(self, body: bytes) -> OnlineKey:
        key = self.key or OnlineKey.demo_merchant(_merchant_of(body))
        self._keys.setdefault(key.key_id, key)
        return key

    async def send(self, request: wire.OnlineRequest) -> None:
        await self.send_raw(wire.encode_request(request))

    async def send_raw(self, payload: bytes) -> None:
        """``payload`` as the body of a signed envelope."""
        await self.send_frame(self.key_for(payload).seal(payload))

    def signed_frame(self, payload: bytes) -> bytes:
        """The frame (length prefix included) of ``payload`` in a signed envelope."""
        return self.framer.frame(self.key_for(payload).seal(payload))

    async def send_frame(self, frame: bytes) -> None:
        """``frame`` as it is: no envelope added."""
        await self.stream.send_all(self.framer.frame(frame))

    async def receive_raw(self) -> bytes:
        """The next answer's body (signed and verified), or an unsigned error."""
        frame = await self.receive_frame()
        try:
            signed = envelope.decode(frame)
        except envelope.EnvelopeDecodeError:
            self.last_signed = False
            return frame
        key = self._keys.get(signed.key_id)
        if key is None:
            raise UnverifiedAnswer(f"answer under key {signed.key_id}, which we never used")
        self.last_signed = True
        return key.open(signed)

    async def receive_frame(self) -> bytes:
        """The next frame as it came."""
        while True:
            try:
                frame = self.framer.next_frame()
            except FramingError as exc:
                raise EOFError(str(exc)) from None
            if frame is not None:
                return frame
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("switch closed the connection")
            self.framer.feed(data)

    async def receive(self) -> wire.OnlineResponse:
        return wire.decode_response(await self.receive_raw())

    async def request(self, request: wire.OnlineRequest) -> wire.OnlineResponse:
        await self.send(request)
        return await self.receive()

    async def aclose(self) -> None:
        await self.stream.aclose()
