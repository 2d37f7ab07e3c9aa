"""Clients of the switch's own channels, over real TCP: the CLI's smoke test, the
end-to-end tests and the bench drive the switch through these, as terminals and
checkouts built from the specs would."""

from __future__ import annotations

import re
import ssl
import time
from collections import deque
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
from switch.terminal import (
    MAC_MTIS,
    Terminal,
    TerminalKeyError,
    TerminalKeySet,
    TerminalSecurity,
    decode_pos_response,
    encode_pos_request,
    with_pin,
)
from switch.wire import envelope
from switch.wire import online as wire
from switch.wire.framing import LengthPrefixedFramer, PosEnvelope, join_pos_frame, split_pos_frame
from switch.wire.iso8583 import FieldValue, Iso8583Codec, Iso8583Message

PIN_MTIS: Final = frozenset({"0100", "0200"})
AUTO_SIGN_ON_STAN: Final = 999_999
"""The STAN of the sign-ons the client makes by itself."""
SHARED_KEYS_MAX: Final = 4096


class MacMismatch(Exception):
    """A response whose 64 verifies under none of the terminal's MAKs: a terminal
    takes it as no response (security.md)."""


class _Demo:
    """The default of :meth:`PosClient.connect`: the demo TMK, its key sets shared by
    every connection of one terminal id to one switch (as one terminal's are)."""


DEMO_KEYS: Final = _Demo()
_shared: dict[tuple[str, int, str], TerminalSecurity] = {}


def shared_demo_security(host: str, port: int, terminal_id: str) -> TerminalSecurity:
    key = (host, port, terminal_id)
    security = _shared.get(key)
    if security is None:
        if len(_shared) >= SHARED_KEYS_MAX:
            del _shared[next(iter(_shared))]
        security = _shared[key] = TerminalSecurity.demo()
    return security


def _wants_pin(fields: dict[int, FieldValue]) -> bool:
    entry_mode = fields.get(22)
    return isinstance(entry_mode, str) and len(entry_mode) >= 3 and entry_mode[2] == "1"


class PosClient:
    """One terminal connection: sends a request, reads one response.

    With ``security`` (a :class:`TerminalSecurity`) it is a terminal of security.md: an
    0810's keys are taken, every request that takes a MAC is MAC'd and every response
    MAC checked (:class:`MacMismatch`); with ``auto_sign_on`` it signs on by itself
    before a request when it has no keys or (``3des``) its keys are of another batch
    (the 0800's 60.2 one less, so that the 0810 opens the request's batch), and
    :meth:`request` signs on again and resends once after a 77 or an A0. ``pin``: entered for a
    0100 or 0200 whose 22 says a PIN is sent and that carries no PIN fields; without
    one, such a request goes as one without a PIN (22's third digit 2)."""

    def __init__(
        self,
        stream: trio.SocketStream,
        codec: Iso8583Codec,
        terminal: Terminal,
        *,
        security: TerminalSecurity | None = None,
        auto_sign_on: bool = True,
        pin: str | None = None,
    ) -> None:
        self.stream = stream
        self.codec = codec
        self.terminal = terminal
        self.framer = LengthPrefixedFramer(prefix_bytes=2, max_frame_bytes=65535)
        self.security = security
        self.auto_sign_on = auto_sign_on
        self.pin = pin
        self.sign_ons = 0
        self.keys: TerminalKeySet | None = None
        """The key set this connection signed on with: a connection stays with one
        worker of the switch, whose keys these are, so each connection signs on before
        its first request that takes a MAC (workers do not share keys)."""
        self.stale = False
        """The switch refused the keys (77, A0): sign on before the next request."""
        self.last_mac: bytes | None = None
        """The verified 64 of the last response (it is taken out of its fields)."""
        self._queued: deque[bytes] = deque()
        self._closed = False

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        codec: Iso8583Codec,
        terminal: Terminal,
        *,
        security: TerminalSecurity | _Demo | None = DEMO_KEYS,
        auto_sign_on: bool = True,
        pin: str | None = None,
    ) -> PosClient:
        """``security``: the demo TMK by default (the demo and test configurations'
        ``*`` terminal entry); None for a terminal without keys (no MAC)."""
        if isinstance(security, _Demo):
            security = shared_demo_security(host, port, terminal.terminal_id)
        stream = await trio.open_tcp_stream(host, port)
        return cls(stream, codec, terminal, security=security, auto_sign_on=auto_sign_on, pin=pin)

    def encode(self, message: tuple[str, dict[int, FieldValue]]) -> bytes:
        """The frame's payload (no length prefix) as this terminal sends it: with its
        PIN (``pin``) and MAC when it has keys."""
        mti, fields = message
        security = self.security
        if security is None:
            return encode_pos_request(self.codec, self.terminal, message)
        keys = self.keys or security.current
        if (
            mti in PIN_MTIS
            and keys is not None
            and _wants_pin(fields)
            and not any(number in fields for number in (52, 53, 62))
        ):
            if self.pin is not None:
                mti, fields = with_pin((mti, fields), security, self.pin, keys)
            else:  # no PIN entered: sent as a request without one (22 digit 3 = 2)
                fields = {**fields, 22: str(fields[22])[:2] + "2"}
        return join_pos_frame(
            self.terminal.envelope, security.encode(self.codec, mti, fields, keys)
        )

    async def send(self, message: tuple[str, dict[int, FieldValue]]) -> None:
        mti, fields = message
        security = self.security
        if (
            security is not None
            and self.auto_sign_on
            and mti in MAC_MTIS
            and (self.stale or self.keys is None or security.needs_sign_on(mti, fields, self.keys))
        ):
            try:
                await self.sign_on_for(fields)
            except EOFError:
                # The switch closed the connection instead: the request is not sent,
                # and the next receive says so.
                self._closed = True
                return
        await self.stream.send_all(self.framer.frame(self.encode(message)))

    async def sign_on_for(self, fields: dict[int, FieldValue]) -> Iso8583Message:
        """A sign-on whose 0810 opens the batch of ``fields`` (60.2); responses to
        earlier requests that arrive meanwhile are kept for :meth:`receive`."""
        reserved = fields.get(60)
        batch = reserved[2:8] if isinstance(reserved, str) and reserved[2:8].isdigit() else "000001"
        before = msgspec.structs.replace(self.terminal, batch=(int(batch) - 1) % 1_000_000)
        stan = AUTO_SIGN_ON_STAN  # its own, not the request's: the log tells them apart
        assert self.security is not None
        layout = self.security.layout
        await self.stream.send_all(
            self.framer.frame(
                encode_pos_request(self.codec, before, before.sign_on(stan, layout))
            )
        )
        while True:
            frame = await self._next_frame()
            _, message = decode_pos_response(self.codec, frame)
            if message.mti == "0810":
                self._take_keys(message)
                return message
            self._queued.append(frame)

    async def _next_frame(self) -> bytes:
        while True:
            frame = self.framer.next_frame()
            if frame is not None:
                return frame
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("switch closed the connection")
            self.framer.feed(data)

    def _take_keys(self, message: Iso8583Message) -> None:
        fields = message.fields
        keys, reserved = fields.get(62), fields.get(60)
        if self.security is None or fields.get(39) != "00" or not isinstance(keys, bytes):
            return
        batch = reserved[2:8] if isinstance(reserved, str) else "000000"
        try:
            self.keys = self.security.accept_sign_on(keys, batch)
        except TerminalKeyError:
            return  # it keeps neither key, and signs on again (security.md)
        self.stale = False
        self.sign_ons += 1

    async def receive(self) -> tuple[PosEnvelope, Iso8583Message]:
        """The next response; raises EOFError if the switch closed the connection,
        :class:`MacMismatch` for one whose MAC does not verify."""
        if self._closed and not self._queued:
            raise EOFError("switch closed the connection")
        frame = self._queued.popleft() if self._queued else await self._next_frame()
        envelope, message = decode_pos_response(self.codec, frame)
        self.last_mac = None
        if self.security is not None:
            if message.mti == "0810":
                self._take_keys(message)
                return envelope, message
            data = split_pos_frame(frame)[1]
            verified = self.security.verify(data, message.fields, self.keys)
            if verified is False:
                raise MacMismatch(f"the MAC of a {message.mti} does not verify")
            if verified:
                # Checked: the response as the terminal's application sees it, without 64.
                fields = dict(message.fields)
                mac = fields.pop(64)
                self.last_mac = mac if isinstance(mac, bytes) else None
                message = Iso8583Message(message.mti, fields)
        return envelope, message

    async def request(self, message: tuple[str, dict[int, FieldValue]]) -> Iso8583Message:
        await self.send(message)
        response = (await self.receive())[1]
        if (
            response.fields.get(39) in ("77", "A0")
            and self.security is not None
            and self.auto_sign_on
            and message[0] in MAC_MTIS
        ):
            # The switch lost the keys (a restart), or holds others for this terminal
            # (another connection of it signed on since, or another worker): again.
            self.stale = True
            await self.send(message)
            response = (await self.receive())[1]
        return response

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
