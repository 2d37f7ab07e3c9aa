"""A bank of the tests' own that misbehaves on purpose: a real TCP server speaking
bank-h2h.md's framing and dialect, which signs links on and answers echoes as a bank
does, and answers everything else as the test says (or floods the link with messages
nobody asked for). It takes the key change under the demo ZMK, as every test bank, and
MACs what it sends under the link's ZAK (security.md), so its misbehaviour is its
answers', not its keys'."""

from __future__ import annotations

from collections.abc import Callable

import trio

from switch.core import bank as bankmsg
from switch.security import algorithms as alg
from switch.security.setup import DEMO_ZMK
from switch.wire.framing import LengthPrefixedFramer
from switch.wire.iso8583 import FieldValue, Iso8583Codec, Iso8583Message

Reply = tuple[str, dict[int, FieldValue]]
Answerer = Callable[[Iso8583Message], list[Reply]]
ECHOED = (2, 3, 4, 7, 11, 32, 37, 41, 42, 49)


def echoed(request: Iso8583Message, mti: str, **extra: FieldValue) -> Reply:
    """A response to ``request`` with the fields a bank echoes, plus ``extra`` (by
    field number as ``f39="00"``)."""
    fields = {n: request.fields[n] for n in ECHOED if n in request.fields}
    fields.update({int(key[1:]): value for key, value in extra.items()})
    return mti, fields


def approve(request: Iso8583Message) -> list[Reply]:
    return [echoed(request, request.mti[:2] + "1" + request.mti[3], f39="00", f38="R0GUE1")]


class RogueBank:
    def __init__(self, codec: Iso8583Codec, answer: Answerer = approve, *, flood: int = 0) -> None:
        self.codec = codec
        self.answer = answer
        self.flood = flood
        """Unsolicited 0210s sent on each link once it has signed on and changed keys."""
        self.port = 0
        self.connections = 0
        self.received: list[Iso8583Message] = []
        self._sending: dict[trio.SocketStream, trio.Lock] = {}
        """Per link: a flood and an answer never write at once."""

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._link, listeners, handler_nursery=nursery)

    async def _link(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        framer = LengthPrefixedFramer(prefix_bytes=2, max_frame_bytes=8192)
        zak: list[alg.X919Key] = []  # the link's, from its latest key change
        self._sending[stream] = trio.Lock()
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    framer.feed(data)
                    while (frame := framer.next_frame()) is not None:
                        request = self.codec.decode(frame)
                        self.received.append(request)
                        if request.mti == "0800" and request.fields.get(70) == "101":
                            raw = bytes.fromhex(str(request.fields[48]))
                            zak[:] = [alg.X919Key(alg.unwrap_key("3des", DEMO_ZMK, raw[20:36]))]
                        if request.mti == "0800":
                            await self._send(stream, framer, [echoed(request, "0810", f39="00")])
                            # Up once its keys are changed (security.md): then it floods.
                            keyed = request.fields.get(70) == "101"
                            if keyed and self.flood:
                                nursery.start_soon(self._flood, stream, framer)
                        else:
                            await self._send(stream, framer, self.answer(request), zak)
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the switch dropped the link

    async def _send(
        self,
        stream: trio.SocketStream,
        framer: LengthPrefixedFramer,
        replies: list[Reply],
        zak: list[alg.X919Key] | None = None,
    ) -> None:
        for mti, fields in replies:
            if zak and bankmsg.carries_mac(mti):
                message = self.codec.encode(mti, bankmsg.with_mac_placeholder(mti, fields))
                message = message[:-8] + zak[0].mac(message[:-8])
            else:
                message = self.codec.encode(mti, fields)
            async with self._sending[stream]:
                await stream.send_all(framer.frame(message))

    async def _flood(self, stream: trio.SocketStream, framer: LengthPrefixedFramer) -> None:
        unasked = [
            ("0210", {11: f"{900000 + n % 99999:06d}", 39: "00", 41: "NOBODY00"})
            for n in range(self.flood)
        ]
        burst = b"".join(framer.frame(self.codec.encode(mti, f)) for mti, f in unasked)  # type: ignore[arg-type]
        try:
            async with self._sending[stream]:
                await stream.send_all(burst)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
