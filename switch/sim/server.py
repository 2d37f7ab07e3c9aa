"""The bank simulator's trio layer: a real TCP server speaking bank-h2h.md.

It only moves bytes: frames in through :class:`LengthPrefixedFramer` and the dialect's
codec, decisions from :class:`switch.sim.ledger.SimulatedBank`, frames back out.

Each request is answered in its own task after ``latency_s``, so responses may leave
out of order, as the spec allows. The ledger decides when that latency is over, just
before the response is written: a link dropped during the latency cancels the task, and
the request was never applied, which is what a bank that never received or processed
it looks like. (A link that breaks while the response is being written leaves the
request applied and unanswered: the other real-world case, a lost response.)

After answering a cutover, the server delivers the clearing file the ledger made:
``<bank>-<YYYYMMDD>.clr`` in ``clearing_dir``, written under a hidden ``.part`` name
in the same folder and renamed when complete, so a reader never sees half a file.
"""

from __future__ import annotations

import collections
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec
import structlog
import trio

from switch.config import BankSection, ClearingFaults
from switch.core import bank as bankmsg
from switch.core.clock import WALL_CLOCK, BusinessClock
from switch.errors import FramingError, MessageDecodeError, MessageEncodeError
from switch.files import write_private
from switch.security.setup import DEMO_ZMK
from switch.sim.ledger import (
    BankReply,
    ClearingDelivery,
    LedgerTotals,
    LinkKeys,
    LinkSession,
    SimulatedBank,
)
from switch.wire.clearing import ClearingRecord, clearing_file_name
from switch.wire.framing import LengthPrefixedFramer
from switch.wire.iso8583 import Iso8583Codec, Iso8583Message

log = structlog.get_logger()

PREFIX_BYTES: Final = 2
RECEIVE_BYTES: Final = 65536
MAX_IN_FLIGHT_PER_CONNECTION: Final = 1024
"""The default cap of requests waiting out their latency on one link; beyond it a
request is answered 91 at once."""
RECEIVED_KEPT: Final = 10_000


class SimulatorStatistics(msgspec.Struct, frozen=True, kw_only=True):
    connections: int
    """Links open now."""
    connections_total: int
    requests: int
    """Requests decoded, on every link since start."""
    responses: int
    """Responses written."""
    pending: int
    """Requests waiting out their latency now."""
    busy: int
    """Requests answered 91 at once because their link had too many in flight."""
    unanswered: int
    """Requests the bank chose never to answer (test hook 68, responses sent to it)."""
    protocol_errors: int
    """Links closed because the peer sent a bad frame or an undecodable message."""
    mac_failures: int = 0
    """Requests answered A0: their MAC did not verify."""
    clearing_files: int
    """Clearing files delivered (written and renamed into clearing_dir)."""


class _Link:
    """One accepted connection: its stream, the lock that keeps writes whole, its
    session state at the bank, and the cancel scope that ends it."""

    __slots__ = (
        "cancel_scope",
        "dropped",
        "in_flight",
        "peer",
        "send_lock",
        "session",
        "stream",
    )

    def __init__(self, stream: trio.SocketStream, peer: str, max_in_flight: int) -> None:
        self.stream = stream
        self.peer = peer
        self.send_lock = trio.Lock()
        self.session = LinkSession()
        self.in_flight = trio.CapacityLimiter(max_in_flight)
        self.cancel_scope = trio.CancelScope()
        self.dropped = False


class BankSimulator:
    """An issuing bank's host-to-host server, for demos, tests and bench.

    ``latency_s`` may be changed at run time; a request waits the value current when it
    was read. So may ``clearing_faults``: a cutover writes the faults current when it
    is applied. ``clearing_dir`` None delivers no files (the dates still close).
    """

    def __init__(
        self,
        name: str,
        bank: BankSection,
        codec: Iso8583Codec,
        *,
        max_frame_bytes: int = 4096,
        max_in_flight: int = MAX_IN_FLIGHT_PER_CONNECTION,
        clearing_dir: Path | None = None,
        clock: BusinessClock = WALL_CLOCK,
        zmk: bytes | None = DEMO_ZMK,
    ) -> None:
        """``zmk``: the bank's ZMK (the published demo ZMK by default, as every demo
        bank's; None takes no key change and checks no MAC or PIN)."""
        self.name = name
        self.clearing_dir = clearing_dir
        self._bank_config = bank
        self._codec = codec
        self._max_frame_bytes = max_frame_bytes
        self._max_in_flight = max_in_flight
        self._out_framer = LengthPrefixedFramer(
            prefix_bytes=PREFIX_BYTES, max_frame_bytes=max_frame_bytes
        )
        """Only builds frames (never fed), so every link can share it."""
        # The bank's dates (expiry, its clearing files' dates) by the business clock;
        # its latency is real.
        self._bank = SimulatedBank(
            bank.sim,
            institution_id=bank.institution_id,
            clock=lambda: datetime.fromtimestamp(clock.now(), UTC),
            zmk=zmk,
        )
        self.port = bank.port
        """The bound port once :meth:`serve` has started (the configured one before)."""
        self.latency_s = bank.sim.latency_ms / 1000
        self.bad_macs = 0
        """Test hook: the next this many MAC'd answers go out with a wrong MAC."""
        self.refuse_macs = 0
        """Test hook: the next this many MAC'd requests are taken as failing their MAC
        (answered A0, not applied)."""
        self.received: collections.deque[Iso8583Message] = collections.deque(maxlen=RECEIVED_KEPT)
        """The latest requests decoded, oldest first, for tests to inspect."""
        self._links: set[_Link] = set()
        self._connections_total = 0
        self._requests = 0
        self._responses = 0
        self._pending = 0
        self._busy = 0
        self._unanswered = 0
        self._protocol_errors = 0
        self._clearing_files = 0

    @property
    def clearing_faults(self) -> ClearingFaults:
        return self._bank.clearing_faults

    @clearing_faults.setter
    def clearing_faults(self, faults: ClearingFaults) -> None:
        self._bank.clearing_faults = faults

    # -- queries -------------------------------------------------------------------

    def totals(self) -> LedgerTotals:
        return self._bank.totals()

    def balance(self, pan: str) -> int:
        return self._bank.balance(pan)

    def held(self, pan: str) -> int:
        """Fen held on the card by open pre-authorisations."""
        return self._bank.held(pan)

    def open_records(self) -> list[ClearingRecord]:
        """The open business date's clearing records so far."""
        return self._bank.open_records()

    def statistics(self) -> SimulatorStatistics:
        return SimulatorStatistics(
            connections=len(self._links),
            connections_total=self._connections_total,
            requests=self._requests,
            responses=self._responses,
            pending=self._pending,
            busy=self._busy,
            unanswered=self._unanswered,
            protocol_errors=self._protocol_errors,
            clearing_files=self._clearing_files,
            mac_failures=self._bank.mac_failures,
        )

    # -- control -------------------------------------------------------------------

    def drop_links(self) -> None:
        """Closes every current connection at once; requests still waiting out their
        latency on them are never applied."""
        for link in self._links:
            link.cancel_scope.cancel()
            link.dropped = True

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listens on the configured host and port (0 picks one), reports the bound
        port through ``task_status`` and serves until cancelled."""
        config = self._bank_config
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
        # With port 0 and a host name that resolves to several addresses, each listener
        # got its own port: keep only the first, so the reported port reaches them all.
        for extra in listeners[1:]:
            await extra.aclose()
        listener = listeners[0]
        self.port = listener.socket.getsockname()[1]
        log.info("bank_sim_listening", bank=self.name, host=config.host, port=self.port)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(self.port)
                await trio.serve_listeners(self._serve_link, [listener], handler_nursery=nursery)
        finally:
            log.info("bank_sim_stopped", bank=self.name, port=self.port)

    # -- one link ------------------------------------------------------------------

    async def _serve_link(self, stream: trio.SocketStream) -> None:
        try:
            host, port, *_ = stream.socket.getpeername()
            peer = f"{host}:{port}"
        except OSError:
            peer = "?"
        link = _Link(stream, peer, self._max_in_flight)
        self._links.add(link)
        self._connections_total += 1
        log.info("bank_sim_link_connected", bank=self.name, peer=peer)
        reason = "cancelled"
        try:
            with link.cancel_scope:
                async with trio.open_nursery() as nursery:
                    reason = await self._read_requests(link, nursery)
                    nursery.cancel_scope.cancel()
        finally:
            self._links.discard(link)
            if link.dropped:
                reason = "dropped"
            await trio.aclose_forcefully(stream)
            log.info("bank_sim_link_disconnected", bank=self.name, peer=peer, reason=reason)

    async def _read_requests(self, link: _Link, nursery: trio.Nursery) -> str:
        """Reads and dispatches requests until the link ends; says why it ended."""
        framer = LengthPrefixedFramer(
            prefix_bytes=PREFIX_BYTES, max_frame_bytes=self._max_frame_bytes
        )
        while True:
            try:
                data = await link.stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return "broken"
            if not data:
                return "closed by peer"
            framer.feed(data)
            try:
                while (frame := framer.next_frame()) is not None:
                    request = self._codec.decode(frame)
                    await self._dispatch(link, request, nursery, frame)
            except (FramingError, MessageDecodeError) as exc:
                # A bad peer ends only its own link.
                self._protocol_errors += 1
                return f"protocol error: {exc}"

    async def _dispatch(
        self, link: _Link, request: Iso8583Message, nursery: trio.Nursery, frame: bytes = b""
    ) -> None:
        self._requests += 1
        self.received.append(request)
        # The keys the request came under: its answer is MAC'd (and its PIN read) under
        # them, even if the link's keys change meanwhile.
        keys = link.session.keys
        fail = self.refuse_macs > 0 and request.mti in bankmsg.MAC_REQUEST_MTIS
        self.refuse_macs -= fail
        refused = self._bank.check_mac(request.mti, request.fields, frame, link.session, fail=fail)
        if refused is not None:
            await self._send(link, refused, keys)
            return
        token = object()
        try:
            link.in_flight.acquire_on_behalf_of_nowait(token)
        except trio.WouldBlock:
            self._busy += 1
            await self._send(link, self._bank.busy(request.mti, request.fields), keys)
            return
        self._pending += 1
        nursery.start_soon(self._answer, link, request, token, self.latency_s, keys)

    async def _answer(
        self,
        link: _Link,
        request: Iso8583Message,
        token: object,
        latency_s: float,
        keys: LinkKeys | None,
    ) -> None:
        try:
            await trio.sleep(latency_s)
            reply = self._bank.respond(request.mti, request.fields, link.session, keys=keys)
        finally:
            self._pending -= 1
            link.in_flight.release_on_behalf_of(token)
        await self._send(link, reply, keys)
        if reply is not None and reply.clearing is not None:
            await self._deliver(reply.clearing)

    async def _deliver(self, delivery: ClearingDelivery) -> None:
        folder = self.clearing_dir
        name = clearing_file_name(self.name, delivery.business_date)
        if folder is None:
            log.info("bank_sim_clearing_not_delivered", bank=self.name, file=name)
            return
        try:
            await trio.to_thread.run_sync(_write_whole, folder, name, delivery.data)
        except OSError as exc:
            # The date is closed at the bank all the same: the file is lost, as when a
            # real bank's transfer fails; the switch's settlement waits for it.
            log.error("bank_sim_clearing_failed", bank=self.name, file=name, error=str(exc))
            return
        self._clearing_files += 1
        log.info(
            "bank_sim_clearing_delivered",
            bank=self.name,
            file=str(folder / name),
            bytes=len(delivery.data),
        )

    async def _send(
        self, link: _Link, reply: BankReply | None, keys: LinkKeys | None = None
    ) -> None:
        if reply is None:
            self._unanswered += 1
            return
        mac = keys is not None and bankmsg.carries_mac(reply.mti)
        fields = bankmsg.with_mac_placeholder(reply.mti, reply.fields) if mac else reply.fields
        try:
            payload = self._codec.encode(reply.mti, fields)
            if mac:
                assert keys is not None
                mab = payload[: -bankmsg.MAC_BYTES]
                payload = mab + keys.mac(mab)
                if self.bad_macs > 0:
                    self.bad_macs -= 1
                    payload = mab + bytes(b ^ 0xFF for b in payload[-bankmsg.MAC_BYTES :])
        except MessageEncodeError as exc:
            # Our own bug (a field echoed that the dialect cannot carry): skip this
            # response rather than take the link down.
            log.error("bank_sim_encode_failed", bank=self.name, mti=reply.mti, error=str(exc))
            return
        frame = self._out_framer.frame(payload)
        try:
            async with link.send_lock:
                await link.stream.send_all(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            link.cancel_scope.cancel()
            return
        self._responses += 1


def _write_whole(folder: Path, name: str, data: bytes) -> None:
    """Writes ``folder/name`` so that it only ever appears complete: its bytes reach
    the disk under a hidden name before the rename gives it its own."""
    write_private(folder / name, data, partial=folder / f".{name}.part")  # 0600, folder 0700
