"""Bank connectors: per bank, ``links`` persistent TCP links, each owned by one task.

A link connects with backoff, signs on (0800, 70 = 001) before any traffic, echoes
(0800, 70 = 301) when idle, and carries up to ``window`` requests at once, matched to
their responses by fields 11 and 41 (41 without its space padding: ans8 on the wire).
When every window of a bank is full, a request waits in the bank's bounded queue for a
slot (as a host queues for a bank link), at most until its own deadline. The queue is
served fairly (``switch.core.fairqueue``): the channels take turns, then within a
channel its connections, each connection's requests in order; so one online client
with many requests in flight cannot keep the bank's windows from the terminals. A full
queue,
an open circuit or a bank with every link down is refused at once (91). A link that
drops fails its in-flight requests with :class:`LinkDown` and starts over.

A cutover (:meth:`BankConnector.cutover`) is a network message like the echo: it
goes on one signed-on link, outside the windows, and waits for its 0810.

What a bank sends unasked (a response to nothing in flight, a late one, a request of
its own) is counted and logged at most once a second per link; a link that gets more
than ``unsolicited_limit_per_s`` of them within a second is dropped and re-established.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable
from datetime import date
from typing import Final, Literal, NamedTuple

import structlog
import trio

from switch.config import BankSection
from switch.core import bank as bankmsg
from switch.core.clock import WALL_CLOCK, BusinessClock
from switch.core.fairqueue import FairQueue
from switch.core.lifecycle import PinToSend
from switch.core.numbers import StanSequence
from switch.errors import MessageEncodeError, SwitchError
from switch.net.framed import FrameReader, FrameWriter
from switch.net.trace import Tracer
from switch.security.errors import KeyUsageError
from switch.security.port import BankKeys, KeyName, LmkKey, SecurityModule, operator_kcv
from switch.security.software import security_event
from switch.wire.framing import LengthPrefixedFramer
from switch.wire.iso8583 import FieldValue, Iso8583Codec, Iso8583Message

log = structlog.get_logger()

BANK_MAX_FRAME_BYTES: Final = 8192
LinkStatus = Literal["down", "connecting", "signing_on", "up"]
MatchKey = tuple[str, str | None]
UNSOLICITED_LOG_INTERVAL_S: Final = 1.0
FRAMES_PER_TURN: Final = 64
"""Frames a link's reader handles before it lets the other tasks run: a bank that
floods its link must not hold the event loop."""


class LinkDown(SwitchError):
    """The link dropped (or was never up) while a request was on it: answered 91."""

    response_code = "91"


class LinkNotSent(LinkDown):
    """The request never left: the link was down or could not take it. Nothing to
    reverse."""


class NotEncodable(LinkNotSent):
    """The message cannot be encoded in the bank's dialect (a field it cannot carry):
    never sent, and never will be as it is. Not a verdict on the bank."""

    def __init__(self, message: str, *, field: int | None) -> None:
        super().__init__(message)
        self.field = field


class BankUnavailable(SwitchError):
    """No slot on any of the bank's links for this request: its circuit is open, every
    link is down, its queue is full, or it waited as long as it may. Answered 91."""

    response_code = "91"


class CutoverFailed(SwitchError):
    """A cutover got no answer: no link was up, it could not be sent, its link dropped,
    or no 0810 came within the bank's issuer timeout. Whether the bank applied it is
    unknown; sending it again is safe (a repeated cutover changes nothing)."""


class BankSecurity(NamedTuple):
    """A bank's keys as its links use them: the security module and the bank's ZMK by
    name. Each link holds its own ZPK and ZAK (under the LMK), never a clear key."""

    module: SecurityModule
    zmk: KeyName


class _Pending:
    __slots__ = ("error", "event", "keys", "response")

    def __init__(self, keys: BankKeys | None) -> None:
        self.event = trio.Event()
        self.response: Iso8583Message | None = None
        self.error: SwitchError | None = None
        self.keys = keys
        """The keys its request was MAC'd under: its response's MAC is checked under
        them, even after a key change."""


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
        on_room: Callable[[], None] = lambda: None,
        clock: BusinessClock = WALL_CLOCK,
        security: BankSecurity | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.bank = bank
        self.index = index
        self.tracer = tracer
        """The message trace (switch.net.trace), when the switch has one."""
        self._security = security
        """None: no key change and no MAC (a bank reached only in tests of the link)."""
        self._keys: BankKeys | None = None
        self._keying: trio.Event | None = None
        """Set while a key change is out: every other message waits for its 0810."""
        self._rekey_due = trio.Event()
        self._next_key_change = math.inf
        self.key_changes = 0
        self.mac_failures = 0
        """Responses whose MAC did not verify (each is no answer, and changes the keys)."""
        self.config = config
        self.window = config.window
        self._codec = codec
        self._stans = stans
        self._utc_offset_h = utc_offset_h
        self._clock = clock
        """Business time, for the 0800s' 7 (and a cutover's 15 is the caller's date);
        echo intervals, timeouts and the circuit stay on trio's real clock."""
        self._on_room = on_room
        self._framer = LengthPrefixedFramer(prefix_bytes=2, max_frame_bytes=BANK_MAX_FRAME_BYTES)
        self.status: LinkStatus = "down"
        self.state_changes = 0
        """Times ``status`` changed (down, connecting, signing_on, up): a flapping link."""
        self.in_flight = 0
        self._pending: dict[MatchKey, _Pending] = {}
        self._writer: FrameWriter | None = None
        self._last_received = 0.0
        self._up_event = trio.Event()
        self.connects = 0
        self.unsolicited = 0
        """Messages from the bank that answered nothing in flight, or asked something."""
        self.flood_drops = 0
        self._unsolicited_second = (0.0, 0)  # (when the current second began, count in it)
        self._unsolicited_logged = 0
        self._next_unsolicited_log = 0.0

    # -- used by the switch, per request ------------------------------------------

    def try_reserve(self) -> bool:
        """Takes one slot of the window if the link is up and has room."""
        if self.status != "up" or self.in_flight >= self.window:
            return False
        self.in_flight += 1
        return True

    @property
    def key_expires_in_s(self) -> float | None:
        """Until the keys' change is due (below 0: overdue); None: no keys."""
        if self._keys is None or self._next_key_change == math.inf:
            return None
        return round(self._next_key_change - trio.current_time(), 3)

    @property
    def has_room(self) -> bool:
        return self.status == "up" and self.in_flight < self.window

    def encode(self, mti: str, fields: dict[int, FieldValue]) -> bytes:
        """The message in this bank's dialect; MessageEncodeError naming the field it
        cannot carry. One that carries a MAC has 8 zero bytes in its place, filled in as
        it is sent (under the keys in force then)."""
        if self._security is not None:
            fields = bankmsg.with_mac_placeholder(mti, fields)
        return self._codec.encode(mti, fields)

    def translate_pin(self, pik: LmkKey, block: bytes, pan: str) -> tuple[bytes, LmkKey]:
        """A terminal's PIN block (under its PIK) as a format 0 block under this link's
        ZPK, in the security module (security.md, "PIN"), and that ZPK."""
        if self._security is None or self._keys is None:
            raise KeyUsageError(f"link {self.bank}/{self.index} has no ZPK")
        zpk = self._keys.zpk
        return self._security.module.translate_pin(pik, zpk, block, pan), zpk

    async def exchange(
        self,
        mti: str,
        fields: dict[int, FieldValue],
        *,
        encoded: bytes | None = None,
        pin: PinToSend | None = None,
    ) -> Iso8583Message:
        """Sends a request on a reserved slot and waits for its response; ``encoded``
        is the message as :meth:`encode` made it, if the caller already has it.

        The caller holds the deadline (a cancel scope); when it fires, the request is
        forgotten here and a response arriving later is counted as unsolicited.
        Raises LinkNotSent if it could not be sent (NotEncodable if the dialect cannot
        carry it), LinkDown if the link drops after. The caller releases the slot
        (``BankConnector.release``).
        """
        if self.status != "up":
            raise LinkNotSent(f"link {self.bank}/{self.index} is down")
        return await self._exchange(mti, fields, encoded, pin=pin)

    async def _exchange(
        self,
        mti: str,
        fields: dict[int, FieldValue],
        encoded: bytes | None = None,
        *,
        key_change: bool = False,
        pin: PinToSend | None = None,
    ) -> Iso8583Message:
        # security.md: nothing else goes between a key change's 0800 and its 0810.
        while not key_change and self._keying is not None:
            await self._keying.wait()
        if pin is not None and self._keys is not None and self._keys.zpk != pin.zpk:
            # The keys changed since it was translated: under the ZPK in force now.
            fields = {**fields, 52: self.translate_pin(pin.pik, pin.block, pin.pan)[0]}
            encoded = None
        if encoded is None:
            try:
                encoded = self.encode(mti, fields)
            except MessageEncodeError as exc:
                raise NotEncodable(
                    f"bank {self.bank} cannot take it: {exc}", field=exc.field
                ) from None
        writer = self._writer
        if writer is None:
            raise LinkNotSent(f"link {self.bank}/{self.index} is not connected")
        key = (str(fields[11]), _terminal(fields))
        if key in self._pending:
            raise LinkNotSent(f"STAN {key[0]} is already in flight on {self.bank}/{self.index}")
        keys = self._keys
        if self._security is not None and bankmsg.carries_mac(mti):
            if keys is None:
                raise LinkNotSent(f"link {self.bank}/{self.index} has no keys yet")
            mab = encoded[: -bankmsg.MAC_BYTES]
            encoded = mab + self._security.module.make_bank_mac(keys.zak, mab)
        pending = _Pending(keys)
        self._pending[key] = pending
        if self.tracer is not None and self.tracer.active:
            self.tracer.bank(self.bank, self.index, "out", mti, fields)
        try:
            frame = self._framer.frame(encoded)
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
            "state_changes": self.state_changes,
            "unsolicited": self.unsolicited,
            "flood_drops": self.flood_drops,
            "key_changes": self.key_changes,
            "mac_failures": self.mac_failures,
        }

    # -- the link's own task -------------------------------------------------------

    async def run(self) -> None:
        """Keeps the link up until cancelled: connect, sign on, serve, and after a drop
        start again with exponential backoff and jitter."""
        backoff = self.config.reconnect_min_s
        bound = structlog.contextvars.bound_contextvars
        with bound(bank=self.bank, link=self.index):
            while True:
                self._set_status("connecting")
                flooded = False
                try:
                    with trio.fail_after(self.config.connect_timeout_s):
                        stream = await trio.open_tcp_stream(self.config.host, self.config.port)
                    self.connects += 1
                    log.info("link_connected", host=self.config.host, port=self.config.port)
                    async with stream:
                        await self._serve(stream)
                except* _LINK_FAILURES as group:
                    leaf = _first_leaf(group)
                    flooded = isinstance(leaf, _Flooded)
                    log.warning("link_down", reason=_reason(leaf))
                finally:
                    self._fail_pending(f"link {self.bank}/{self.index} dropped")
                    self._set_status("down")
                    self._writer = None
                    # A new connection signs on and changes its keys afresh.
                    self._keys, self._next_key_change = None, math.inf
                    self._rekey_due = trio.Event()
                # A link that signed on starts its backoff over, unless the bank flooded
                # it: then it backs off as if it had never come up.
                if self._up_event.is_set():
                    if not flooded:
                        backoff = self.config.reconnect_min_s
                    self._up_event = trio.Event()
                await trio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self.config.reconnect_max_s)

    def _set_status(self, status: LinkStatus) -> None:
        if status != self.status:
            self.state_changes += 1
            self.status = status

    async def _serve(self, stream: trio.SocketStream) -> None:
        """Runs one connection until it fails: sign on, then keep it alive."""
        self._framer = LengthPrefixedFramer(prefix_bytes=2, max_frame_bytes=BANK_MAX_FRAME_BYTES)
        reader = FrameReader(stream, self._framer, read_deadline_s=self.config.issuer_timeout_s)
        self._last_received = trio.current_time()
        async with trio.open_nursery() as nursery:
            # Room for a full window plus the link's own echo and answers to the bank.
            self._writer = FrameWriter(stream, capacity=self.window + 8, nursery=nursery)
            nursery.start_soon(self._read_responses, reader)
            self._set_status("signing_on")
            await self._sign_on()
            await self._change_keys("sign-on")
            self._set_status("up")
            self._up_event.set()
            log.info("link_signed_on")
            self._on_room()
            await self._keep_alive()

    async def _sign_on(self) -> None:
        with trio.fail_after(self.config.sign_on_timeout_s):
            response = await self.network_exchange(bankmsg.SIGN_ON)
        code = response.fields.get(39)
        if code != "00":
            raise LinkDown(f"sign-on answered {code!r}")

    async def _change_keys(self, reason: str) -> None:
        """A key change (0800, 70 = 101): new ZPK and ZAK under the bank's ZMK in 48.
        Requests wait meanwhile; from its 0810 (00) on, new messages are MAC'd under the
        new keys. A refusal or no answer within ``sign_on_timeout_s`` writes a security
        event and drops the link (it connects and signs on again)."""
        security = self._security
        if security is None:
            return
        owner = f"{self.bank}.{self.index}"
        keys = security.module.make_bank_keys(security.zmk, owner)
        done = trio.Event()
        self._keying = done
        try:
            with trio.fail_after(self.config.sign_on_timeout_s):
                response = await self.network_exchange(bankmsg.KEY_CHANGE, field_48=keys.field_48())
            code = response.fields.get(39)
            if code != "00":
                raise LinkDown(f"key change answered {code!r}")
        except (trio.TooSlowError, LinkDown) as exc:
            reason_failed = "no answer in time" if isinstance(exc, trio.TooSlowError) else str(exc)
            security_event(
                "bank_key_change_failed", bank=self.bank, link=self.index, reason=reason_failed
            )
            raise
        finally:
            self._keying = None
            done.set()
        self._keys = keys
        self.key_changes += 1
        self._next_key_change = trio.current_time() + self.config.key_change_h * 3600
        security_event(
            "bank_key_change", bank=self.bank, link=self.index, reason=reason,
            zpk_kcv=operator_kcv(keys.zpk.kcv), zak_kcv=operator_kcv(keys.zak.kcv),
        )  # fmt: skip

    async def _keep_alive(self) -> None:
        """Echoes when nothing has been received for ``echo_interval_s``; a failed echo
        drops the link (it is then reconnected and signed on again). Changes the keys
        every ``key_change_h`` and after a MAC failure."""
        interval = self.config.echo_interval_s
        while True:
            idle_until = self._last_received + interval
            with trio.move_on_at(min(idle_until, self._next_key_change)):
                await self._rekey_due.wait()
            if self._rekey_due.is_set() or trio.current_time() >= self._next_key_change:
                reason = "mac failure" if self._rekey_due.is_set() else "key_change_h"
                self._rekey_due = trio.Event()
                await self._change_keys(reason)
                continue
            if trio.current_time() < self._last_received + interval:
                continue
            try:
                with trio.fail_after(self.config.issuer_timeout_s):
                    response = await self.network_exchange(bankmsg.ECHO)
            except trio.TooSlowError:
                log.warning("echo_failed", reason="no answer")
                raise
            if response.fields.get(39) != "00":
                log.warning("echo_failed", code=response.fields.get(39))
                raise LinkDown("echo test refused")

    async def network_exchange(
        self, code: str, *, business_date: date | None = None, field_48: str | None = None
    ) -> Iso8583Message:
        """One 0800 (70 = ``code``; a cutover's 15 from ``business_date``, a key change's
        48) and its 0810, outside the window; the caller holds the deadline. LinkDown
        when the link drops or the bank answers with another MTI, LinkNotSent when it
        cannot be sent."""
        stan = self._stans.next()
        stamp = self._clock.stamp(self._utc_offset_h)
        if field_48 is not None:
            mti, fields = bankmsg.key_change_request(stan, stamp, field_48)
        else:
            mti, fields = bankmsg.network_request(code, stan, stamp, business_date=business_date)
        response = await self._exchange(mti, fields, key_change=field_48 is not None)
        if response.mti != "0810":
            raise LinkDown(f"bank answered {response.mti} to an 0800 (70 = {code})")
        return response

    async def _read_responses(self, reader: FrameReader) -> None:
        """Matches every frame from the bank to its request. When the bank closes the
        link or sends what does not decode, raising ends the whole connection."""
        codec = self._codec
        handled = 0
        while True:
            frame = await reader.receive_frame()
            if frame is None:
                raise LinkDown("bank closed the link")
            self._last_received = trio.current_time()
            message = codec.decode(frame)
            if self.tracer is not None and self.tracer.active:
                self.tracer.bank(self.bank, self.index, "in", message.mti, message.fields)
            self._dispatch(message, frame)
            del message
            del frame  # a quiet link holds nothing of its last response (card data)
            handled += 1
            if handled % FRAMES_PER_TURN == 0:
                await trio.lowlevel.checkpoint()

    def _dispatch(self, message: Iso8583Message, frame: bytes = b"") -> None:
        """Hands a response to the request waiting for it (its MTI is for the waiter to
        judge); what answers nothing in flight is counted, and a request from the bank
        is answered here. A response whose MAC does not verify reaches its waiter
        without its 39: no final answer."""
        if message.mti[2] in "02468":
            self._unsolicited(message)
            self._answer_bank_request(message)
            return
        fields = message.fields
        waiter = self._pending.pop((str(fields.get(11)), _terminal(fields)), None)
        if waiter is None:
            self._unsolicited(message)
            return
        if self._security is not None and bankmsg.carries_mac(message.mti):
            message = self._checked(message, frame, waiter.keys)
        waiter.response = message
        waiter.event.set()

    def _checked(
        self, message: Iso8583Message, frame: bytes, keys: BankKeys | None
    ) -> Iso8583Message:
        """The response if its MAC verifies under ``keys`` (its request's); else the
        response without its 39, and the link's keys are changed. A verified A0 (the
        bank refused our MAC) changes them too."""
        assert self._security is not None
        fields = message.fields
        split = bankmsg.split_mac(frame, fields)
        if (
            keys is not None
            and split is not None
            and self._security.module.verify_bank_mac(keys.zak, *split)
        ):
            if fields.get(39) == "A0":
                security_event(
                    "bank_refused_mac",
                    bank=self.bank,
                    link=self.index,
                    bank_stan=str(fields.get(11)),
                )
                self._rekey_due.set()
            return message
        self.mac_failures += 1
        security_event(
            "bank_mac_failed", bank=self.bank, link=self.index, mti=message.mti,
            bank_stan=str(fields.get(11)), rrn=str(fields.get(37)),
        )  # fmt: skip
        self._rekey_due.set()
        return Iso8583Message(message.mti, {n: v for n, v in fields.items() if n != 39})

    def _unsolicited(self, message: Iso8583Message) -> None:
        """Counts a message that answered nothing in flight (late, or never asked) or
        asked something; logs at most one line a second for them; past the limit, the
        link is dropped (raised through the reader)."""
        self.unsolicited += 1
        now = trio.current_time()
        began, count = self._unsolicited_second
        if now - began >= 1.0:
            began, count = now, 0
        count += 1
        self._unsolicited_second = (began, count)
        if now >= self._next_unsolicited_log:
            fields = message.fields
            log.warning(
                "bank_unsolicited",
                count=self.unsolicited - self._unsolicited_logged,
                mti=message.mti,
                bank_stan=fields.get(11),
                rrn=fields.get(37),
                code=fields.get(39),
            )
            self._unsolicited_logged = self.unsolicited
            self._next_unsolicited_log = now + UNSOLICITED_LOG_INTERVAL_S
        if count > self.config.unsolicited_limit_per_s:
            self.flood_drops += 1
            raise _Flooded(
                f"bank sent more than {self.config.unsolicited_limit_per_s} unsolicited "
                "messages in a second"
            )

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


class _Flooded(LinkDown):
    """The bank sent more unsolicited messages than the limit: the link is dropped."""


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
    """Field 41 as a match key: without the space padding of ans8, which a bank echoes
    while the switch's own request holds the terminal's id as given."""
    terminal = fields.get(41)
    return terminal.rstrip(" ") if isinstance(terminal, str) else None


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _LinkWaiter:
    __slots__ = ("channel", "connection", "event", "link")

    def __init__(self, channel: str, connection: Hashable) -> None:
        self.channel = channel
        self.connection = connection
        self.event = trio.Event()
        self.link: BankLink | None = None


class BankConnector:
    """All links to one bank, the choice of link for each request, the fair queue of
    those waiting for a slot, and the bank's circuit."""

    def __init__(
        self,
        name: str,
        config: BankSection,
        codec: Iso8583Codec,
        *,
        utc_offset_h: int,
        stans: StanSequence | None = None,
        clock: BusinessClock = WALL_CLOCK,
        security: BankSecurity | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self.config = config
        self.stans = stans or StanSequence()
        self.links = [
            BankLink(
                name,
                index,
                config,
                codec,
                self.stans,
                utc_offset_h=utc_offset_h,
                on_room=self._hand_out,
                clock=clock,
                security=security,
                tracer=tracer,
            )
            for index in range(config.links)
        ]
        self._next_link = 0
        self._waiting: FairQueue[_LinkWaiter] = FairQueue()
        self._timeouts_in_a_row = 0
        self._open_until: float | None = None
        self._probing = False
        self.queued_total = 0
        self.refused_queue_full = 0
        self.expired = 0
        self._idle: trio.Event | None = None  # made when someone waits for it

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
            self._refuse_waiting()

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

    # -- cutover -------------------------------------------------------------------

    async def cutover(self, business_date: date) -> str:
        """Closes ``business_date`` at the bank (bank-h2h.md, "Cutover and clearing"):
        one 0800 with 70 = 201 and 15 = its MMDD on the first signed-on link, and the
        bank's 39 ("00": it will deliver that date's clearing file).

        Waits ``issuer_timeout_s`` at most. Raises :class:`CutoverFailed` when no link
        is up or no answer comes; a bank's refusal is its code, returned.
        """
        link = next((candidate for candidate in self.links if candidate.status == "up"), None)
        if link is None:
            raise CutoverFailed(f"bank {self.name}: no link is up for the cutover")
        when = business_date.isoformat()
        failure = code = None
        with trio.move_on_after(self.config.issuer_timeout_s) as waited:
            try:
                response = await link.network_exchange(bankmsg.CUTOVER, business_date=business_date)
            except LinkDown as exc:  # dropped, not sent, or not an 0810
                failure = str(exc)
            else:
                code = response.fields.get(39)
                if not isinstance(code, str) or not code:
                    failure = f"answered without a response code: {code!r}"
        if waited.cancelled_caught:
            failure = f"no answer within {self.config.issuer_timeout_s:g} s"
        if failure is not None or not isinstance(code, str):
            log.warning("bank_cutover_failed", bank=self.name, business_date=when, reason=failure)
            raise CutoverFailed(f"bank {self.name}: cutover of {when}: {failure}")
        log.info("bank_cutover", bank=self.name, link=link.index, business_date=when, code=code)
        return code

    # -- slots -------------------------------------------------------------------

    def try_reserve_link(self) -> BankLink | None:
        """A link with room in its window, taking its slot (round robin, so load
        spreads), or None when none has room now or others wait before this one.
        Raises BankUnavailable when the bank refuses at once (circuit open)."""
        if self._circuit_refuses():
            raise BankUnavailable(f"bank {self.name}: circuit open")
        if self._waiting:
            return None
        return self._reserve_any()

    async def acquire_link(
        self, *, deadline: float, channel: str = "", connection: Hashable = 0
    ) -> BankLink:
        """A link slot, waiting in the bank's queue when every window is full, until
        ``deadline`` (trio time) at most; the queue takes ``channel`` and, within it,
        ``connection`` in turn. BankUnavailable at once when the circuit is open, every
        link is down or the queue is full; when the deadline passes."""
        link = self.try_reserve_link()
        if link is not None:
            return link
        if not any(candidate.status == "up" for candidate in self.links):
            raise BankUnavailable(f"bank {self.name}: every link is down")
        if len(self._waiting) >= self.config.queue:
            self.refused_queue_full += 1
            raise BankUnavailable(f"bank {self.name}: {len(self._waiting)} requests queued")
        waiter = _LinkWaiter(channel, connection)
        self._waiting.push(channel, connection, waiter)
        self.queued_total += 1
        try:
            with trio.move_on_at(deadline):
                await waiter.event.wait()
        except BaseException:
            if waiter.link is not None:  # handed a slot, then cancelled before it ran on
                self.release(waiter.link)
            raise
        finally:
            if waiter.link is None and not waiter.event.is_set():
                self._waiting.remove(channel, connection, waiter)
        if waiter.link is None:
            if waiter.event.is_set():
                raise BankUnavailable(f"bank {self.name}: circuit open")
            self.expired += 1
            raise BankUnavailable(f"bank {self.name}: no link slot within the wait allowed")
        return waiter.link

    def release(self, link: BankLink) -> None:
        """A request is done with its slot: it goes to the first waiting, if any."""
        link.in_flight -= 1
        self._hand_out()
        if self._idle is not None and not self._busy():
            self._idle.set()

    def _busy(self) -> bool:
        return bool(self._waiting) or any(link.in_flight for link in self.links)

    async def wait_idle(self) -> None:
        """Returns once nothing is in flight on the bank's links and nothing waits for
        them (a reload's replaced connector, before its links close)."""
        while self._busy():
            self._idle = trio.Event()
            await self._idle.wait()

    def _hand_out(self) -> None:
        """Slots with room go to those waiting, in turn (a slot freed, a link up)."""
        while self._waiting:
            link = self._reserve_any()
            if link is None:
                return
            waiter = self._waiting.pop()
            assert waiter is not None
            waiter.link = link
            waiter.event.set()

    def _reserve_any(self) -> BankLink | None:
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
        return None

    def _refuse_waiting(self) -> None:
        for waiter in self._waiting.drain():
            waiter.event.set()  # set without a link: refused

    @property
    def queued(self) -> int:
        """Requests waiting now for a slot in this bank's windows."""
        return len(self._waiting)

    def statistics(self) -> dict[str, object]:
        return {
            "bank": self.name,
            "circuit_open": self.circuit_open(),
            "queued": self.queued,
            "queued_by_channel": self._waiting.waiting_by_channel(),
            "queued_total": self.queued_total,
            "refused_queue_full": self.refused_queue_full,
            "expired": self.expired,
            "links": [link.statistics() for link in self.links],
        }
