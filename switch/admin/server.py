"""The admin interface's HTTP listener, in the switch's own trio process: h11 does the
protocol (it is sans-IO: bytes in, events out), this module only moves bytes between
trio streams and h11 and hands each whole request to its route (``routes.py``).

Who may ask (``auth.py``): a Host that is this listener's (on loopback: a loopback
name or address, so a DNS-rebinding page is refused), no foreign Origin (403), the
bearer token except for the read-only probes on loopback (401), and a POST's body a
JSON object sent as ``application/json`` (415, 400): a browser's cross-site form or
``text/plain`` request never gets through.

Bounded like the channels: ``max_connections`` at once; at the cap a new connection
takes the place of the oldest one waiting for a request (one that never finished a
request first), so half-open connections cannot keep the probes out; only when every
connection is answering is a new one closed at accept. A request's head must arrive
within ``head_deadline_s`` and the whole request within ``read_deadline_s`` (408; an
idle kept-alive connection is closed after ``head_deadline_s``), head and body within
``max_request_bytes`` (431, 413), and a client that does not read its answer is closed
after ``read_deadline_s``. A bad request gets its HTTP error (400, 401, 403, 404, 405,
409, 415, ...) with its reason and ends its own connection, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Final

import h11
import msgspec
import structlog
import trio

from switch.admin.auth import (
    OPEN_ON_LOOPBACK,
    authorized,
    foreign_host,
    foreign_origin,
    read_token,
    token_path,
)
from switch.admin.collect import StatusCollector
from switch.admin.metrics import metrics_registry
from switch.admin.peers import Peers
from switch.admin.port import SwitchView
from switch.admin.routes import AdminRequest, AdminResponse, admin_routes, json_response
from switch.admin.settings import is_loopback
from switch.config import SwitchConfig
from switch.store.settlement_port import SettlementError
from switch.tls import accept_tls, server_context

log = structlog.get_logger()

RECEIVE_BYTES: Final = 4096
LINGER_S: Final = 1.0
LINGER_BYTES: Final = 65536
"""After an error answer, what is read (and dropped) before closing: closing with
unread bytes sends a reset, which can destroy the answer before the client reads it."""
REFUSAL_LOG_INTERVAL_S: Final = 1.0


class _TooLarge(Exception):
    """The request's body is longer than ``max_request_bytes``."""


class AdminServer:
    """The admin listener of one switch; made with the app from the configuration it
    starts with (``[admin]`` changes only with a restart), reading the token file then
    (a bad one stops the start), served in its nursery (which makes the token file when
    there is none to read). It knows the switch only as a ``SwitchView``."""

    def __init__(
        self, config: SwitchConfig, switch: SwitchView, peers: Peers | None = None
    ) -> None:
        """``peers``: the other workers, when this is worker 0 of several."""
        self.config = config.admin
        self._switch_config = config
        # Read now, so that a bad token file stops the start (and `config check`); one
        # the switch makes is made when it starts to listen, not by a check.
        self.token = read_token(config, create=False)
        self.loopback = is_loopback(self.config.host)
        tls = config.tls_files("admin")
        self.tls = server_context("admin", *tls) if tls else None
        """HTTPS only (its handshake within ``read_deadline_s``), when the config says."""
        self.status = StatusCollector(switch, peers)
        self.registry = metrics_registry(self.status)
        self.routes = admin_routes(switch, self.status, self.registry)
        self.port = 0
        self.open: dict[_Connection, None] = {}
        """The connections being served, oldest first."""
        self.connections_refused = 0
        self.connections_evicted = 0
        self.requests = 0
        self.refusals: dict[int, int] = {}
        """Requests answered with an error, by HTTP status."""
        self._refusals_logged = 0
        self._next_refusal_log = 0.0

    @property
    def connections(self) -> int:
        return len(self.open)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listens until cancelled; reports the bound port as started."""
        section = self.config
        if self.token is None:
            self.token = read_token(self._switch_config)
        listeners = await trio.open_tcp_listeners(section.port, host=section.host)
        if section.port == 0:  # each address got a port of its own: one is reported
            for extra in listeners[1:]:
                await extra.aclose()
            listeners = listeners[:1]
        self.port = listeners[0].socket.getsockname()[1]
        log.info(
            "admin_listening", host=section.host, port=self.port,
            token_file=str(token_path(self._switch_config)),
        )  # fmt: skip
        async with trio.open_nursery() as connections:
            task_status.started(self.port)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=connections)

    async def _handle(self, stream: trio.SocketStream) -> None:
        if len(self.open) >= self.config.max_connections and not self._evict():
            self.connections_refused += 1
            self._refused(0, "too many admin connections, all answering")
            await trio.aclose_forcefully(stream)
            return
        connection = _Connection(self, stream)
        self.open[connection] = None
        try:
            with connection.scope:
                if self.tls is not None:
                    connection.stream = await accept_tls(
                        stream, self.tls, deadline_s=self.config.read_deadline_s, https=True
                    )
                await connection.serve()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            pass  # the client went away, or does not read its answers
        except Exception as exc:  # one bad client only ever ends its own connection
            log.error("admin_connection_failed", error=repr(exc))
        finally:
            self.open.pop(connection, None)
            await trio.aclose_forcefully(connection.stream)

    def _evict(self) -> bool:
        """Closes the connection that has waited longest for a request, one that never
        finished one first; False when every connection is answering one."""
        waiting = [connection for connection in self.open if not connection.answering]
        if not waiting:
            return False
        victim = min(waiting, key=lambda c: (c.served > 0, c.waiting_since))
        del self.open[victim]
        victim.scope.cancel()
        self.connections_evicted += 1
        self._refused(0, "admin connections at the cap: the longest waiting one closed")
        return True

    async def respond(self, request: AdminRequest) -> AdminResponse:
        """The answer to one whole request: where it comes from, the token, its route,
        its body, then its handler."""
        self.requests += 1
        refused = self._admit(request)
        if refused is not None:
            return refused
        route = self.routes.get(request.path)
        if route is None:
            return json_response(404, {"error": f"no such endpoint: {request.path}"})
        handler = route.get(request.method)
        if handler is None:
            allowed = ", ".join(sorted(route))
            return AdminResponse(
                status=405,
                body=f'{{"error": "{request.method} is not allowed here"}}\n'.encode(),
                headers=(("allow", allowed),),
            )
        if request.method == "POST":
            refused = _json_body_refused(request)
            if refused is not None:
                return refused
        try:
            return await handler(request)
        except SettlementError as exc:  # the settlement store cannot do what was asked
            return json_response(409, {"error": str(exc)})
        except Exception as exc:  # a bug in one endpoint answers 500, with its reason logged
            log.exception("admin_endpoint_failed", path=request.path, error=repr(exc))
            return json_response(500, {"error": f"internal error: {type(exc).__name__}"})

    def _admit(self, request: AdminRequest) -> AdminResponse | None:
        """The refusal of a request from the wrong place or without the token, or None."""
        host = request.headers.get("host")
        if self.loopback and host is not None and (why := foreign_host(host, self.port)):
            return json_response(403, {"error": why})
        origin = request.headers.get("origin")
        if origin is not None and (why := foreign_origin(origin, host)):
            return json_response(403, {"error": why})
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return json_response(403, {"error": "a cross-site request is refused"})
        probe = request.method == "GET" and request.path in OPEN_ON_LOOPBACK
        token = request.headers.get("authorization")
        if (self.loopback and probe) or (self.token is not None and authorized(token, self.token)):
            return None
        return AdminResponse(
            status=401,
            body=b'{"error": "a bearer token is required"}\n',
            headers=(("www-authenticate", 'Bearer realm="payswitch admin"'),),
        )

    def _refused(self, status: int, reason: str) -> None:
        """Counts a refused request (status 0: a connection closed at accept); one log
        line a second at most, with how many since the last."""
        self.refusals[status] = self.refusals.get(status, 0) + 1
        total = sum(self.refusals.values())
        now = trio.current_time()
        if now >= self._next_refusal_log:
            count, self._refusals_logged = total - self._refusals_logged, total
            log.warning("admin_request_refused", status=status, reason=reason, count=count)
            self._next_refusal_log = now + REFUSAL_LOG_INTERVAL_S


def _json_body_refused(request: AdminRequest) -> AdminResponse | None:
    """A POST's body must be a JSON object sent as such (``{}`` when it says nothing):
    415 for another content type, 400 for anything else."""
    content_type = request.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != "application/json":
        return json_response(415, {"error": "the body must be sent as application/json"})
    try:
        document = msgspec.json.decode(request.body)
    except msgspec.DecodeError as exc:
        return json_response(400, {"error": f"the body is not JSON: {exc}"})
    if not isinstance(document, dict):
        return json_response(400, {"error": "the body must be a JSON object ({} at least)"})
    return None


class _Connection:
    """One client's requests, one at a time (HTTP/1.1 keep-alive)."""

    def __init__(self, server: AdminServer, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream: trio.abc.Stream = stream
        """The socket's stream, or the TLS stream over it once its handshake is done."""
        self.limit = server.config.max_request_bytes
        self.deadline_s = server.config.read_deadline_s
        self.head_deadline_s = min(server.config.head_deadline_s, self.deadline_s)
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limit)
        self.received = 0
        self.scope = trio.CancelScope()
        """Cancelled when a newer connection takes this one's place."""
        self.answering = False
        self.served = 0
        self.waiting_since = trio.current_time()
        self._reading = trio.CancelScope()
        self._whole_by = 0.0

    async def serve(self) -> None:
        while True:
            self.received = 0
            self.waiting_since = now = trio.current_time()
            self._whole_by = now + self.deadline_s
            request: AdminRequest | None = None
            try:
                # The head's deadline first; the whole request's once the head is in.
                with trio.CancelScope(deadline=now + self.head_deadline_s) as self._reading:
                    request = await self._read_request()
            except h11.RemoteProtocolError as exc:
                await self._refuse(exc.error_status_hint, str(exc))
                return
            except _TooLarge:
                await self._refuse(413, f"the request is longer than {self.limit} bytes")
                return
            if self._reading.cancelled_caught:
                if self.received:  # begun and not finished; an idle one just closes
                    await self._refuse(408, "the request was not complete within the deadline")
                return
            if request is None:
                return  # the client closed
            self.answering = True
            response = await self.server.respond(request)
            if response.status >= 400:
                self.server._refused(response.status, f"{request.method} {request.path}")
            await self._send(response)
            self.answering = False
            self.served += 1
            if self.h11.our_state is h11.MUST_CLOSE:
                return
            self.h11.start_next_cycle()

    async def _read_request(self) -> AdminRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                if self.h11.they_are_waiting_for_100_continue:
                    await self._write(
                        self.h11.send(h11.InformationalResponse(status_code=100, headers=[]))
                    )
                data = await self.stream.receive_some(RECEIVE_BYTES)
                self.received += len(data)
                self.h11.receive_data(bytes(data))  # b"": the client closed its side
            elif isinstance(event, h11.Request):
                head = event
                self._reading.deadline = self._whole_by
                length = _header(event.headers, b"content-length")
                if length is not None and length.isdigit() and int(length) > self.limit:
                    raise _TooLarge
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.limit:
                    raise _TooLarge
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return _request(head, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None
            else:  # PAUSED cannot come before we answer; anything else is h11's
                raise h11.RemoteProtocolError(f"unexpected {event!r}", error_status_hint=400)

    async def _send(self, response: AdminResponse) -> None:
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            ("cache-control", "no-store"),
            *response.headers,
        ]
        data = self.h11.send(
            h11.Response(
                status_code=response.status,
                headers=headers,
                reason=HTTPStatus(response.status).phrase.encode(),
            )
        )
        data = (data or b"") + (self.h11.send(h11.Data(data=response.body)) or b"")
        await self._write(data + (self.h11.send(h11.EndOfMessage()) or b""))

    async def _write(self, data: bytes | None) -> None:
        if data:
            with trio.fail_after(self.deadline_s):  # a client that does not read is closed
                await self.stream.send_all(data)

    async def _refuse(self, status: int, reason: str) -> None:
        """Answers a bad request with its error (when h11 still may), then closes."""
        self.server._refused(status, reason)
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = f'{{"error": "{HTTPStatus(status).phrase.lower()}"}}\n'.encode()
        response = AdminResponse(status=status, body=body, headers=(("connection", "close"),))
        try:
            await self._send(response)
            if isinstance(self.stream, trio.abc.HalfCloseableStream):  # TLS cannot half-close
                await self.stream.send_eof()
        except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        with trio.move_on_after(LINGER_S):
            left = LINGER_BYTES
            while left > 0 and (data := await self.stream.receive_some(RECEIVE_BYTES)):
                left -= len(data)


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _request(head: h11.Request, body: bytes) -> AdminRequest:
    target = head.target.decode("latin-1")
    path, _, query = target.partition("?")
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key = name.decode("latin-1")  # h11 gives names in lower case
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return AdminRequest(
        method=head.method.decode("ascii", "replace"),
        path=path,
        query=query,
        headers=headers,
        body=body,
    )
