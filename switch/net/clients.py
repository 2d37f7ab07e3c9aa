"""Clients of the switch's own channels, over real TCP: the CLI's smoke test, the
end-to-end tests and the bench drive the switch through these, as terminals and
checkouts built from the specs would."""

from __future__ import annotations

import ssl

import trio

from switch.errors import FramingError
from switch.terminal import Terminal, decode_pos_response, encode_pos_request
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


class OnlineClient:
    """One online connection; requests may be pipelined, responses come in any order."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.framer = LengthPrefixedFramer(prefix_bytes=4, max_frame_bytes=1 << 24)

    @classmethod
    async def connect(
        cls, host: str, port: int, *, tls: ssl.SSLContext | None = None
    ) -> OnlineClient:
        """Connected over TCP, or with ``tls`` over TLS (the handshake done: a server
        that refuses it raises trio.BrokenResourceError here)."""
        if tls is None:
            return cls(await trio.open_tcp_stream(host, port))
        stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=tls)
        try:
            await stream.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return cls(stream)

    async def send(self, request: wire.OnlineRequest) -> None:
        await self.stream.send_all(self.framer.frame(wire.encode_request(request)))

    async def send_raw(self, payload: bytes) -> None:
        await self.stream.send_all(self.framer.frame(payload))

    async def receive_raw(self) -> bytes:
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
