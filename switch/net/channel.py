"""Channel listeners: one task per connection, a bounded window of requests per
connection, and a drain for graceful shutdown.

A channel's protocol (POS or online) turns each frame into either an immediate answer
or a piece of work; this module runs the work concurrently up to the connection's
window and keeps one peer's trouble inside its own connection. A connection whose
window is full is simply not read until a request ends: a pipelining peer is slowed
down by TCP, not refused (switch-wide capacity is the switchboard's admission, which
queues and refuses fairly across connections). Immediate answers (sign-on, echo test,
format errors) are rate-limited per connection the same way: a peer in a loop of them
slows itself down, not the switch.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import ssl
from collections.abc import Mapping
from typing import Final, Generic, Protocol, TypeVar

import msgspec
import structlog
import trio

from switch.config import ListenerSection
from switch.core.admission import RETRY_WINDOW_S
from switch.core.model import Origin, Outcome, Request
from switch.core.ratelimit import TokenBucket
from switch.core.stats import TransactionStats
from switch.errors import FramingError
from switch.log import info_line
from switch.net.admission import Admission
from switch.net.framed import FrameReader, FrameWriter
from switch.net.trace import Tracer
from switch.tls import accept_tls
from switch.wire.framing import LengthPrefixedFramer

log = structlog.get_logger()

Work = TypeVar("Work")

WRITER_DRAIN_S: Final = 5.0
"""How long a closing connection may take to flush its last answers."""
SHED_LOG_INTERVAL_S: Final = 1.0
IMMEDIATE_ANSWERS_PER_S: Final = 10.0
IMMEDIATE_ANSWERS_BURST: Final = 20.0
"""Sign-ons, echo tests and format errors a connection is answered at once; beyond
this rate its next frames are read more slowly (a terminal sends a few an hour)."""


class CloseConnection(Exception):
    """The peer sent what cannot be answered: close this connection, nothing else."""


class Reply(msgspec.Struct, frozen=True, gc=False):
    payload: bytes
    shed: bool = False
    """A 91 for want of capacity: counted and logged once a second, not one by one."""


class ChannelProtocol(Protocol[Work]):
    """What a channel knows of its own messages; everything here is per frame."""

    name: str
    prefix_bytes: int

    def accept(self, frame: bytes, origin: Origin) -> Work | bytes:
        """Decodes a frame into work, or an immediate answer (payload bytes).
        Raises CloseConnection when the frame cannot be answered at all."""
        ...

    def sheddable(self, work: Work) -> bool:
        """Whether the work needs a switch-wide slot (and may be refused at the door);
        a reversal or a status query does not."""
        ...

    def busy(self, work: Work, reason: str) -> bytes:
        """The 91 answer for work refused at the door: it costs as little as possible
        and is counted, not logged one by one (a line per refusal would add to
        overload)."""
        ...

    async def respond(self, work: Work) -> Reply | None:
        """Processes the work; the answer, or None for no answer."""
        ...


_connection_ids = itertools.count(1)

LISTEN_BACKLOG: Final = 65535
"""As trio's open_tcp_listeners asks (the kernel caps it at somaxconn)."""


async def open_reuse_port_listeners(port: int, *, host: str) -> list[trio.SocketListener]:
    """trio.open_tcp_listeners, with SO_REUSEPORT on each socket (trio never sets it):
    several processes listen on one port, each with its own accept queue."""
    addresses = await trio.socket.getaddrinfo(
        host, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    try:
        for family, kind, protocol, _, address in addresses:
            sock = trio.socket.socket(family, kind, protocol)
            try:
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
                if family == trio.socket.AF_INET6:
                    sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(LISTEN_BACKLOG)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


class ChannelServer(Generic[Work]):
    def __init__(
        self,
        config: ListenerSection,
        protocol: ChannelProtocol[Work],
        admission: Admission,
        *,
        reuse_port: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.tls = tls
        """Each connection speaks TLS (its handshake within ``read_deadline_s``)."""
        self.reuse_port = reuse_port
        """Listen with SO_REUSEPORT, beside the other workers of the switch on the same
        port (the kernel spreads new connections over them); one process does not, so
        that a second switch on its port is refused, not admitted beside it."""
        self.protocol = protocol
        self.admission = admission
        self.port = 0
        self.listening = False
        """Bound and accepting (not yet, or no longer: drained)."""
        self.connections = 0
        self.refused = 0
        self._accept_scope = trio.CancelScope()
        self._tasks: trio.Nursery | None = None  # connections, their requests, flushes
        self._read_scopes: set[trio.CancelScope] = set()
        self._draining = False
        self.tracer: Tracer | None = None
        """The message trace (switch.net.trace), when the switch has one."""
        self.shed = 0
        self._shed_logged = 0
        self._next_shed_log = 0.0
        self.slowed = 0
        """Times a connection's reading was held back: its window full, or immediate
        answers over their rate."""

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listens until drained (or cancelled); returns once every connection ended.
        Reports the bound port as started."""
        if self.reuse_port:
            listeners = await open_reuse_port_listeners(self.config.port, host=self.config.host)
        else:
            listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
        self.port = listeners[0].socket.getsockname()[1]
        log.info(
            "listener_started", channel=self.protocol.name, host=self.config.host, port=self.port,
            tls=self.tls is not None,
        )  # fmt: skip
        async with trio.open_nursery() as connections:
            self._tasks = connections
            with self._accept_scope:
                self.listening = True
                task_status.started(self.port)
                try:
                    await trio.serve_listeners(self._handle, listeners, handler_nursery=connections)
                finally:
                    self.listening = False
            for scope in self._read_scopes:
                scope.cancel()
        log.info("listener_stopped", channel=self.protocol.name)

    def _shed(self) -> None:
        self.shed += 1
        now = trio.current_time()
        if now >= self._next_shed_log:
            shed_now, self._shed_logged = self.shed - self._shed_logged, self.shed
            log.warning("requests_shed", channel=self.protocol.name, count=shed_now)
            self._next_shed_log = now + SHED_LOG_INTERVAL_S

    def drain(self) -> None:
        """Stops accepting and stops reading new requests; in-flight ones finish."""
        self._draining = True
        self._accept_scope.cancel()
        for scope in self._read_scopes:
            scope.cancel()

    def statistics(self) -> dict[str, object]:
        return {
            "channel": self.protocol.name,
            "connections": self.connections,
            "refused": self.refused,
            "shed": self.shed,
            "slowed": self.slowed,
        }

    async def _handle(self, stream: trio.SocketStream) -> None:
        if self.connections >= self.config.max_connections or self._draining:
            self.refused += 1
            log.warning(
                "connection_refused", channel=self.protocol.name, reason="too many connections"
            )
            await stream.aclose()
            return
        self.connections += 1
        connection: trio.abc.Stream = stream
        try:
            # Bound for good, not for a with block: this task is the connection's alone
            # (trio gives each task its own copy of the context), and ends with it.
            structlog.contextvars.bind_contextvars(
                channel=self.protocol.name, peer=_peer_name(stream)
            )
            source = _source(stream)
            if self.tls is not None:
                try:
                    connection = await accept_tls(
                        stream, self.tls, deadline_s=self.config.read_deadline_s
                    )
                except (trio.BrokenResourceError, trio.TooSlowError) as exc:
                    log.info("connection_lost", reason=_handshake_failure(exc))
                    return
            framer = LengthPrefixedFramer(
                prefix_bytes=self.protocol.prefix_bytes,
                max_frame_bytes=self.config.max_frame_bytes,
            )
            reader = FrameReader(connection, framer, read_deadline_s=self.config.read_deadline_s)
            # A connection's requests and its writer's flush task run in the listener's
            # nursery, not one of the connection's own (a nursery for each idle
            # connection costs memory); it still waits for its requests, then its flush.
            tasks = self._tasks
            assert tasks is not None, "connections are handled only while serving"
            # The answer queue has room for every request in flight, plus immediate
            # answers; when it is full the reader waits for room, so a pipelining peer
            # is slowed down, not cut off, and one that stops reading its answers for
            # write_deadline_s is closed.
            writer = FrameWriter(
                connection,
                capacity=self.config.max_in_flight_per_connection + 16,
                nursery=tasks,
                raise_failures=False,
            )
            await _Connection(self, writer, framer, source).serve(reader, tasks)
            # Every accepted request has been answered (or its peer is gone): what is
            # still queued is flushed, within WRITER_DRAIN_S (closing the stream then
            # ends a flush still waiting for the peer).
            writer.close()
            with trio.move_on_after(WRITER_DRAIN_S):
                await writer.wait_flushed()
        except Exception as exc:  # one bad peer only ever ends its own task
            log.error("connection_failed", channel=self.protocol.name, error=repr(exc))
        finally:
            self.connections -= 1
            # TLS says goodbye (close_notify) within the write deadline; the socket is
            # closed either way.
            with trio.CancelScope(shield=True), trio.move_on_after(self.config.write_deadline_s):
                try:
                    await connection.aclose()
                except (trio.BrokenResourceError, OSError) as exc:  # TLS's goodbye failed
                    log.info("connection_lost", reason=repr(exc))
            if connection is not stream:
                await trio.aclose_forcefully(stream)


class _Connection(Generic[Work]):
    """One peer's requests: read, answered at once or run, answered. Its state is held
    in slots rather than a closure's cells: most connections are idle, and each holds
    this as long as it stays connected."""

    __slots__ = (
        "_all_answered",
        "_framer",
        "_id",
        "_immediate",
        "_in_flight",
        "_read_scope",
        "_refused_at",
        "_room",
        "_server",
        "_source",
        "_traced",
        "_writer",
    )

    def __init__(
        self,
        server: ChannelServer[Work],
        writer: FrameWriter,
        framer: LengthPrefixedFramer,
        source: str,
    ) -> None:
        self._server = server
        self._source = source
        self._writer = writer
        self._framer = framer
        self._id = next(_connection_ids)
        self._in_flight = 0
        self._refused_at = -math.inf
        self._all_answered: trio.Event | None = None  # made only if reading ends first
        self._room: trio.Event | None = None  # made only while the window is full
        self._immediate: TokenBucket | None = None  # made at the first immediate answer
        self._read_scope = trio.CancelScope()
        self._traced = False
        """A request of it was traced: so is everything on it from then."""

    def _trace(self, direction: str, payload: bytes) -> None:
        tracer = self._server.tracer
        if tracer is not None and (tracer.active or self._traced):
            self._traced = tracer.channel(
                self._server.protocol.name, direction, payload, peer=self._source,
                traced=self._traced,
            )  # fmt: skip

    async def serve(self, reader: FrameReader, requests: trio.Nursery) -> None:
        """Reads requests and starts them in ``requests`` until the peer closes or the
        reading is stopped; returns once every request started has been answered."""
        server = self._server
        protocol = server.protocol
        admission = server.admission
        channel = protocol.name
        cap = server.config.max_in_flight_per_connection
        writer, framer = self._writer, self._framer
        write_deadline_s = server.config.write_deadline_s
        read_scope = self._read_scope
        source = self._source
        with read_scope:
            server._read_scopes.add(read_scope)
            try:
                while True:
                    if self._in_flight >= cap:  # its window is full: read on when one ends
                        server.slowed += 1
                        self._room = trio.Event()
                        await self._room.wait()
                    frame = await reader.receive_frame()
                    if frame is None:
                        break
                    self._trace("in", frame)
                    received_at = trio.current_time()
                    retry = received_at - self._refused_at < RETRY_WINDOW_S
                    origin = Origin(channel, self._id, received_at, retry, source)
                    work = protocol.accept(frame, origin)
                    if isinstance(work, bytes):
                        self._trace("out", work)
                        await _answer(writer, framer.frame(work), write_deadline_s)
                        await self._pace_immediate_answers(received_at)
                    elif protocol.sheddable(work) and (
                        refused := admission.at_the_door(retry=retry)
                    ):
                        # Refused before a task or anything else is spent on it.
                        server._shed()
                        self._refused_at = received_at
                        busy = protocol.busy(work, refused)
                        self._trace("out", busy)
                        await _answer(writer, framer.frame(busy), write_deadline_s)
                    else:
                        self._in_flight += 1
                        requests.start_soon(self._run, work)
                    # Waiting for the next request, hold nothing of this one: its
                    # decoded fields (the clear card number among them) would live as
                    # long as an idle terminal stays connected.
                    del frame, work, origin
            except (FramingError, CloseConnection) as exc:
                log.warning("connection_closed", reason=str(exc))
            except trio.TooSlowError:
                log.warning(
                    "connection_closed", reason="frame not completed within the read deadline"
                )
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.info("connection_lost", reason=repr(exc))
            except Exception as exc:
                # A bug met on this peer's input: stop reading from it, but let what it
                # already sent finish (cancelling could leave a bank's approval behind).
                log.error("connection_failed", error=repr(exc))
            finally:
                server._read_scopes.discard(read_scope)
        if self._in_flight:
            self._all_answered = trio.Event()
            await self._all_answered.wait()

    async def _pace_immediate_answers(self, now: float) -> None:
        """Beyond their rate, the next frame is read only once a token is there."""
        bucket = self._immediate
        if bucket is None:
            bucket = self._immediate = TokenBucket(
                rate_per_s=IMMEDIATE_ANSWERS_PER_S, burst=IMMEDIATE_ANSWERS_BURST
            )
        if not bucket.take(now):
            self._server.slowed += 1
            await trio.sleep(bucket.wait_s(now))
            bucket.take(trio.current_time())

    async def _run(self, work: Work) -> None:
        try:
            server = self._server
            reply = await server.protocol.respond(work)
            if reply is not None:
                if reply.shed:
                    server._shed()
                    self._refused_at = trio.current_time()
                self._trace("out", reply.payload)
                frame = self._framer.frame(reply.payload)
                await _answer(self._writer, frame, server.config.write_deadline_s)
        except CloseConnection as exc:
            log.warning("connection_closed", reason=str(exc))
            self._read_scope.cancel()
        except Exception as exc:
            # A bug met on this request: it runs in the listener's nursery, where it
            # would end every connection; it ends its own (the others it has in flight
            # still finish, as when its reader fails).
            log.error("connection_failed", error=repr(exc))
            self._read_scope.cancel()
        finally:
            self._in_flight -= 1
            if self._room is not None:
                self._room.set()
                self._room = None
            if self._in_flight == 0 and self._all_answered is not None:
                self._all_answered.set()


async def _answer(writer: FrameWriter, frame: bytes, write_deadline_s: float) -> None:
    try:
        writer.send_nowait(frame)  # the usual case: room in the queue, no deadline needed
        return
    except trio.WouldBlock:
        pass
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        return  # the peer has gone; its answer has nowhere to go
    try:
        with trio.fail_after(write_deadline_s):
            await writer.send(frame)
    except trio.TooSlowError:
        raise CloseConnection("peer does not read its answers") from None
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        pass  # the peer has gone; its answer has nowhere to go


def _handshake_failure(exc: BaseException) -> str:
    """Why a TLS handshake failed, for the connection's log line."""
    if isinstance(exc, trio.TooSlowError):
        return "TLS handshake not completed within the read deadline"
    cause = exc.__cause__
    reason = getattr(cause, "reason", None) or str(cause or exc) or type(exc).__name__
    return f"TLS handshake failed: {reason}"


def _source(stream: trio.SocketStream) -> str:
    """The peer's address, as limits per source count it: an IPv4 address, or an IPv6
    address's /64 (one host is given a whole /64, and picks addresses in it at will)."""
    try:
        host = str(stream.socket.getpeername()[0])
    except OSError:
        return "?"
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return host


def _peer_name(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


def log_transaction(
    request: Request | None,
    outcome: Outcome,
    *,
    stats: TransactionStats,
    channel: str,
    kind: str,
    received_at: float,
    terminal: str | None = None,
    merchant: str | None = None,
    stan: str | None = None,
    extra: Mapping[str, object] | None = None,
) -> None:
    """The one canonical line per transaction, and its counts for the admin interface;
    ``extra``: what a kind of message adds to it (a batch settlement's batch and result)."""
    card = getattr(request, "card", None)
    amount = getattr(request, "amount", None)
    if request is not None:
        terminal = request.acceptor.terminal_id
        merchant = request.acceptor.merchant_id
        stan = request.stan
    latency_ms = round((trio.current_time() - received_at) * 1000, 3)
    stats.record(
        channel=channel,
        kind=kind,
        bank=outcome.bank,
        code=outcome.code,
        latency_ms=latency_ms,
        journal_ms=outcome.journal_ms,
        bank_ms=outcome.bank_ms,
        amount=amount if isinstance(amount, int) else None,
    )
    fields: dict[str, object] = {
        "channel": channel,
        "kind": kind,
        "terminal": terminal,
        "merchant": merchant,
        "pan": card.masked_pan if card is not None else None,
        "amount_fen": amount,
        "route": outcome.route,
        "bank": outcome.bank,
        "stan": stan,
        "bank_stan": outcome.bank_stan,
        "rrn": outcome.rrn,
        "code": outcome.code,
        "latency_ms": latency_ms,
        "journal_ms": outcome.journal_ms,
        "bank_ms": outcome.bank_ms,
        **_reason(outcome),
        **_risk(outcome),
        **(extra or {}),
    }
    info_line("txn", fields)


def _risk(outcome: Outcome) -> dict[str, str]:
    """``risk_rule``, ``risk_review``, ``risk_shadow`` (risk.md), each absent when empty."""
    if outcome.risk_rule is None and outcome.risk_review is None and outcome.risk_shadow is None:
        return {}
    fields = {}
    if outcome.risk_rule is not None:
        fields["risk_rule"] = outcome.risk_rule
    if outcome.risk_review is not None:
        fields["risk_review"] = outcome.risk_review
    if outcome.risk_shadow is not None:
        fields["risk_shadow"] = outcome.risk_shadow
    return fields


def _reason(outcome: Outcome) -> dict[str, object]:
    """Why a transaction was not approved, for the operator: the internal detail when
    there is one (the client only ever sees the message)."""
    if outcome.code == "00":
        return {"stand_in": True, "stand_in_reason": outcome.stand_in} if outcome.stand_in else {}
    reason = outcome.detail or outcome.message
    return {"reason": reason} if reason else {}
