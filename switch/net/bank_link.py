"""Bank connectors: per bank, ``links`` persistent TCP links, each owned by one task.

A link connects with backoff, signs on (0800, 70 = 001) before any traffic, echoes
(0800, 70 = 301) when idle, and carries up to ``window`` requests at once, matched to
their responses by fields 11 and 41. When every link of a bank is full or down, a
request is refused at once (91): there is no queue to wait in. A link that drops fails
its in-flight requests with :class:`LinkDown` and starts over.
"""

from __future__ import annotations

import random
from typing import Literal

import structlog
import trio

from switch.config import BankSection
from switch.core import bank as bankmsg
from switch.core.clock import Stamp
from switch.core.numbers import StanSequence
from switch.errors import MessageEncodeError, SwitchError
from switch.net.framed import FrameReader, FrameWriter
from switch.wire.framing import LengthPrefixedFramer
from switch.wire.iso8583 import FieldValue, Iso8583Codec, Iso8583Message

log = structlog.get_logger()

BANK_MAX_FRAME_BYTES = 8192
LinkStatus = Literal["down", "connecting", "signing_on", "up"]
MatchKey = tuple[str, str | None]


class LinkDown(SwitchError):
    """The link dropped (or was never up) while a request was on it: answered 91."""

    response_code = "91"


class LinkNotSent(LinkDown):
    """The request never left: the link was down or could not take it. Nothing to
    reverse."""


class BankUnavailable(SwitchError):
    """Every link of the bank is down or has its window full: answered 91 at once."""

    response_code = "91"


class _Pending:
    __slots__ = ("error", "event", "response")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.response: Iso8583Message | None = None
        self.error: SwitchError | None = None


class BankLink:
    """One TCP link to a bank, with its in-flight window."""

    def __init__(
        self,
        bank: str,
        index: int,
        config: BankSection,
        codec: Iso8583Codec,
        stans: StanSequence,
        *,
        utc_offset_h: int,
    ) -> None:
        self.bank = bank
        self.index = index
        self.config = config
        self.window = config.window
        self._codec = codec
        self._stans = stans
        self._utc_offset_h = utc_offset_h
        self._framer = LengthPrefixedFramer(prefix_bytes=2, max_frame_bytes=BANK_MAX_FRAME_BYTES)
        self.status: LinkStatus = "down"
        self.in_flight = 0
        self._pending: dict[MatchKey, _Pending] = {}
        self._writer: FrameWriter | None = None
        self._last_received = 0.0
        self._up_event = trio.Event()
        self.connects = 0
        self.late_responses = 0

    # -- used by the switch, per request ------------------------------------------

    def try_reserve(self) -> bool:
        """Takes one slot of the window if the link is up and has room."""
        if self.status != "up" or self.in_flight >= self.window:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight -= 1

    async def exchange(self, mti: str, fields: dict[int, FieldValue]) -> Iso8583Message:
        """Sends a request on a reserved slot and waits for its response.

        The caller holds the deadline (a cancel scope); when it fires, the request is
        forgotten here and a response arriving later is logged as late and dropped.
        Raises LinkDown if the link drops first. The caller releases the slot.
        """
        if self.status != "up":
            raise LinkNotSent(f"link {self.bank}/{self.index} is down")
        return await self._exchange(mti, fields)

    async def _exchange(self, mti: str, fields: dict[int, FieldValue]) -> Iso8583Message:
        writer = self._writer
        if writer is None:
            raise LinkNotSent(f"link {self.bank}/{self.index} is not connected")
        key = (str(fields[11]), _terminal(fields))
        if key in self._pending:
            raise LinkNotSent(f"STAN {key[0]} is already in flight on {self.bank}/{self.index}")
        pending = _Pending()
        self._pending[key] = pending
        try:
            frame = self._framer.frame(self._codec.encode(mti, fields))
            try:
                writer.send_nowait(frame)
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                # Nothing of it was written: a failed write leaves the socket untouched.
                raise LinkNotSent(f"link {self.bank}/{self.index} cannot send") from None
            await pending.event.wait()
        finally:
            if self._pending.get(key) is pending:
                del self._pending[key]
        if pending.error is not None:
            raise pending.error
        assert pending.response is not None
        return pending.response

    async def wait_up(self) -> None:
        await self._up_event.wait()

    def statistics(self) -> dict[str, object]:
        return {
            "status": self.status,
            "in_flight": self.in_flight,
            "window": self.window,
            "pending": len(self._pending),
            "connects": self.connects,
            "late_responses": self.late_responses,
        }

    # -- the link's own task -------------------------------------------------------

    async def run(self) -> None:
        """Keeps the link up until cancelled: connect, sign on, serve, and after a drop
        start again with exponential backoff and jitter."""
        backoff = self.config.reconnect_min_s
        bound = structlog.contextvars.bound_contextvars
        with bound(bank=self.bank, link=self.index):
            while True:
                self.status = "connecting"
                try:
                    with trio.fail_after(self.config.connect_timeout_s):
                        stream = await trio.open_tcp_stream(self.config.host, self.config.port)
                    self.connects += 1
                    log.info("link_connected", host=self.config.host, port=self.config.port)
                    async with stream:
                        await self._serve(stream)
                except* _LINK_FAILURES as group:
                    log.warning("link_down", reason=_reason(_first_leaf(group)))
                finally:
                    self._fail_pending(f"link {self.bank}/{self.index} dropped")
                    self.status = "down"
                    self._writer = None
                if self._up_event.is_set():  # it had signed on: start the backoff over
                    backoff = self.config.reconnect_min_s
                    self._up_event = trio.Event()
                await trio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self.config.reconnect_max_s)

    async def _serve(self, stream: trio.SocketStream) -> None:
        """Runs one connection until it fails: sign on, then keep it alive."""
        self._framer = LengthPrefixedFramer(prefix_bytes=2, max_frame_bytes=BANK_MAX_FRAME_BYTES)
        reader = FrameReader(stream, self._framer, read_deadline_s=self.config.issuer_timeout_s)
        self._last_received = trio.current_time()
        async with trio.open_nursery() as nursery:
            # Room for a full window plus the link's own echo and answers to the bank.
            self._writer = FrameWriter(stream, capacity=self.window + 8, nursery=nursery)
            nursery.start_soon(self._read_responses, reader)
            self.status = "signing_on"
            await self._sign_on()
            self.status = "up"
            self._up_event.set()
            log.info("link_signed_on")
            await self._keep_alive()

    async def _sign_on(self) -> None:
        with trio.fail_after(self.config.sign_on_timeout_s):
            response = await self._network_exchange(bankmsg.SIGN_ON)
        code = response.fields.get(39)
        if code != "00":
            raise LinkDown(f"sign-on answered {code!r}")

    async def _keep_alive(self) -> None:
        """Echoes when nothing has been received for ``echo_interval_s``; a failed echo
        drops the link (it is then reconnected and signed on again)."""
        interval = self.config.echo_interval_s
        while True:
            idle_until = self._last_received + interval
            await trio.sleep_until(idle_until)
            if trio.current_time() < self._last_received + interval:
                continue
            try:
                with trio.fail_after(self.config.issuer_timeout_s):
                    response = await self._network_exchange(bankmsg.ECHO)
            except trio.TooSlowError:
                log.warning("echo_failed", reason="no answer")
                raise
            if response.fields.get(39) != "00":
                log.warning("echo_failed", code=response.fields.get(39))
                raise LinkDown("echo test refused")

    async def _network_exchange(self, code: str) -> Iso8583Message:
        stan = self._stans.next()
        mti, fields = bankmsg.network_request(code, stan, Stamp.now(self._utc_offset_h))
        return await self._exchange(mti, fields)

    async def _read_responses(self, reader: FrameReader) -> None:
        """Matches every frame from the bank to its request. When the bank closes the
        link or sends what does not decode, raising ends the whole connection."""
        codec = self._codec
        while True:
            frame = await reader.receive_frame()
            if frame is None:
                raise LinkDown("bank closed the link")
            self._last_received = trio.current_time()
            self._dispatch(codec.decode(frame))
            del frame  # a quiet link holds nothing of its last response (card data)

    def _dispatch(self, message: Iso8583Message) -> None:
        """Hands a response to the request waiting for it (a late one is logged and
        dropped); a request from the bank is answered here."""
        if message.mti[2] in "02468":
            self._answer_bank_request(message)
            return
        fields = message.fields
        waiter = self._pending.pop((str(fields.get(11)), _terminal(fields)), None)
        if waiter is None:
            self.late_responses += 1
            log.warning(
                "bank_response_late",
                mti=message.mti,
                bank_stan=fields.get(11),
                rrn=fields.get(37),
                code=fields.get(39),
            )
            return
        waiter.response = message
        waiter.event.set()

    def _answer_bank_request(self, message: Iso8583Message) -> None:
        """A bank may test the link too: answer its 0800 echo; refuse anything else."""
        mti = message.mti[:2] + str(int(message.mti[2]) + 1) + message.mti[3]
        fields: dict[int, FieldValue] = {
            n: message.fields[n] for n in (7, 11, 70) if n in message.fields
        }
        fields[39] = "00" if message.mti == "0800" else "40"
        writer = self._writer
        if writer is None:
            return
        try:
            writer.send_nowait(self._framer.frame(self._codec.encode(mti, fields)))
        except (
            trio.WouldBlock,
            trio.ClosedResourceError,
            trio.BrokenResourceError,
            MessageEncodeError,
        ) as exc:
            log.warning("bank_request_unanswered", mti=message.mti, reason=_reason(exc))

    def _fail_pending(self, reason: str) -> None:
        waiters = list(self._pending.values())
        self._pending.clear()
        for waiter in waiters:
            waiter.error = LinkDown(reason)
            waiter.event.set()


_LINK_FAILURES = (
    OSError,
    trio.TooSlowError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    SwitchError,
)
"""What ends one connection of a link (and is followed by a reconnect); anything else
is a bug and propagates."""


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _terminal(fields: dict[int, FieldValue]) -> str | None:
    terminal = fields.get(41)
    return terminal if isinstance(terminal, str) else None


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class BankConnector:
    """All links to one bank, and the choice of link for each request."""

    def __init__(
        self,
        name: str,
        config: BankSection,
        codec: Iso8583Codec,
        *,
        utc_offset_h: int,
        stans: StanSequence | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.stans = stans or StanSequence()
        self.links = [
            BankLink(name, index, config, codec, self.stans, utc_offset_h=utc_offset_h)
            for index in range(config.links)
        ]
        self._next_link = 0
        self._timeouts_in_a_row = 0
        self._open_until: float | None = None
        self._probing = False

    # -- the circuit: a bank that keeps timing out is refused at once for a while ----

    def circuit_open(self) -> bool:
        """True while requests to this bank are refused at once: every link is down,
        or it timed out ``circuit_timeouts`` times in a row less than
        ``circuit_open_s`` ago (or a probe is out to see whether it is back)."""
        return self._circuit_refuses() or not any(link.status == "up" for link in self.links)

    def _circuit_refuses(self) -> bool:
        """Opened by timeouts and not yet due for its probe, or its probe is out."""
        if self._open_until is None:
            return False
        return self._probing or trio.current_time() < self._open_until

    def record_result(self, *, answered: bool | None) -> None:
        """Called at the end of every request that held a link slot: answered (True),
        timed out or lost with its link (False), or never sent (None: no verdict on the
        bank, but a probe that was never sent must not hold the circuit open)."""
        if answered is None:
            self._probing = False
            return
        if answered:
            if self._open_until is not None:
                log.info("circuit_closed", bank=self.name)
            self._timeouts_in_a_row, self._open_until, self._probing = 0, None, False
            return
        self._timeouts_in_a_row += 1
        if self._probing or self._timeouts_in_a_row >= self.config.circuit_timeouts:
            self._open_until = trio.current_time() + self.config.circuit_open_s
            self._probing = False
            log.warning("circuit_opened", bank=self.name, timeouts=self._timeouts_in_a_row)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs every link; reports started at once (a bank that is down must not stop
        the switch from starting: its requests are refused 91 until a link is up)."""
        async with trio.open_nursery() as nursery:
            for link in self.links:
                nursery.start_soon(link.run, name=f"bank-link:{self.name}:{link.index}")
            task_status.started()

    async def wait_up(self) -> None:
        """Waits until every link is signed on; for tests and start-up."""
        for link in self.links:
            await link.wait_up()

    def has_room(self) -> bool:
        """Whether a request could take a slot now (without taking it)."""
        if self._circuit_refuses():
            return False
        return any(link.status == "up" and link.in_flight < link.window for link in self.links)

    def reserve_link(self) -> BankLink:
        """A link with room in its window, taking its slot; round robin so load spreads.
        Raises BankUnavailable (91) at once when every link is down or full."""
        if self._circuit_refuses():
            raise BankUnavailable(f"bank {self.name}: circuit open")
        # Half-open: past circuit_open_s, this one request finds out whether it is back.
        probe = self._open_until is not None
        links = self.links
        count = len(links)
        start = self._next_link
        for offset in range(count):
            link = links[(start + offset) % count]
            if link.try_reserve():
                self._next_link = (start + offset + 1) % count
                self._probing = probe
                return link
        raise BankUnavailable(f"bank {self.name}: every link is down or its window is full")

    def statistics(self) -> dict[str, object]:
        return {
            "bank": self.name,
            "circuit_open": self.circuit_open(),
            "links": [link.statistics() for link in self.links],
        }
