"""An HTTP client for tests of the admin interface: h11 over a real trio TCP stream,
one connection kept alive for as many requests as a test makes on it."""

from __future__ import annotations

import json
from typing import Any

import h11
import msgspec
import trio

RECEIVE_BYTES = 65536


class Answer(msgspec.Struct, frozen=True):
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpConnection:
    def __init__(self, stream: trio.SocketStream, authority: str) -> None:
        self.stream = stream
        self.authority = authority
        """The Host header sent unless a request names its own."""
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> HttpConnection:
        return cls(await trio.open_tcp_stream(host, port), f"{host}:{port}")

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def request(
        self,
        path: str,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> Answer:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        given = {name.lower(): value for name, value in (headers or {}).items()}
        sent = [("host", given.pop("host", self.authority)), *given.items()]
        if body or method == "POST":
            sent.append(("content-length", str(len(body))))
        data = self.h11.send(h11.Request(method=method, target=path, headers=sent))
        data = (data or b"") + (self.h11.send(h11.Data(data=body)) or b"") if body else data
        await self.stream.send_all((data or b"") + (self.h11.send(h11.EndOfMessage()) or b""))
        with trio.fail_after(10):
            return await self._answer()

    async def _answer(self) -> Answer:
        head: h11.Response | None = None
        body = bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.stream.receive_some(RECEIVE_BYTES))
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers = {name.decode(): value.decode() for name, value in head.headers}
                return Answer(head.status_code, headers, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                raise EOFError("the server closed the connection without an answer")


async def get(
    port: int, path: str, *, host: str = "127.0.0.1", headers: dict[str, str] | None = None
) -> Answer:
    """One request on a connection of its own."""
    connection = await HttpConnection.open(port, host)
    try:
        return await connection.request(path, headers=headers)
    finally:
        await connection.aclose()


async def post(
    port: int,
    path: str,
    *,
    token: str | None,
    body: bytes = b"{}",
    headers: dict[str, str] | None = None,
) -> Answer:
    """One POST, as the switch's own client sends it (JSON, the token) unless
    ``headers`` say otherwise, on a connection of its own."""
    sent = {"content-type": "application/json"}
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    connection = await HttpConnection.open(port)
    try:
        return await connection.request(
            path, method="POST", headers={**sent, **(headers or {})}, body=body
        )
    finally:
        await connection.aclose()


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Sends ``data`` as it is and reads whatever comes back until the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        answer = bytearray()
        with trio.fail_after(10):
            while True:
                try:
                    chunk = await stream.receive_some(RECEIVE_BYTES)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                answer += chunk
    return bytes(answer)
