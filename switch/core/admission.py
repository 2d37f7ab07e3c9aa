"""Switch-wide admission: who may start work now, who waits, and who is told "busy".

Plain Python, no I/O: times are given by the caller. The trio layer
(``switch.net.admission``) parks a waiting request until this core grants it a slot.

The switch has ``slots`` transactions in progress at most. A request that finds every
slot taken waits in a bounded queue, at most ``max_wait_s``; it is refused (91) at once
only when the queue is full, or when the switch is *overloaded*, and then only when it
would wait longer than ``target_s`` (what is queued, at the rate slots were handed out
in the last interval). Overloaded means that,
over each of the last ``OVERLOAD_INTERVALS`` intervals of ``interval_s``, new requests
arrived faster than slots were handed out (by more than ``overload_margin``, and by
more than ``MIN_EXCESS``); it ends once demand is back within half the margin for
``CALM_INTERVALS``. A queue that only holds a steady population of terminals (a
closed loop: each sends its next request when answered), or a burst of them, is served
however long, within ``max_wait_s``; a queue fed faster than it drains, interval after
interval, is kept at about ``target_s`` of work, so that what is accepted is answered
quickly and the excess is refused at once rather than at the end of its wait.

Retries (a request from a connection refused moments before) are counted apart: a
terminal that resends the moment its 91 arrives would otherwise look like new demand,
keep the switch "overloaded" and spin in a loop of refusals.

Waiting requests are served fairly: the channels (POS, online) take turns, and within
a channel its connections take turns, each connection's requests in their order. One
client with many pipelined requests cannot take the capacity of every terminal.

Each channel may also have a *share* of the slots: while another channel has requests
in progress or waiting, a channel holds at most its share (the rest wait their turn);
alone, it may use every slot. With shares that add up to at most 1, each channel is
guaranteed its share whatever the other does. This matters even when the slots are
not all taken: the switch's time (its event loop, the journal's group commits) is
shared by whatever is in progress, in proportion, so a client that keeps many requests
in flight slows every terminal's answers unless its share of them is bounded.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Final, Literal

import msgspec

TicketState = Literal["waiting", "admitted", "refused", "withdrawn"]

OVERLOAD_INTERVALS: Final = 3
"""Intervals in a row of more demand than service before the switch is overloaded: a
burst, or a fleet of terminals connecting over a few tenths of a second, fills the
queue and is served."""
CALM_INTERVALS: Final = 2
"""Intervals in a row of demand near service (half the margin) that end an overload."""
MIN_EXCESS: Final = 8
"""More arrivals than grants by at least this, in an interval, to count: at low rates
a handful either way is noise."""
RETRY_WINDOW_S: Final = 0.25
"""A request read this soon after its connection was answered 91 is a retry (a
person retrying takes seconds; a program in a loop, milliseconds)."""


class AdmissionConfig(msgspec.Struct, frozen=True, kw_only=True):
    slots: int
    queue_limit: int
    max_wait_s: float
    target_s: float = 0.02
    interval_s: float = 0.1
    overload_margin: float = 0.25
    shares: dict[str, float] = msgspec.field(default_factory=dict)
    """Per channel, the share of ``slots`` it holds at most while another channel has
    requests in progress or waiting; a channel not named has no bound."""


class Ticket:
    """One request's place: admitted, waiting, refused (with why) or withdrawn."""

    __slots__ = ("arrived_at", "channel", "connection", "reason", "state")

    def __init__(self, channel: str, connection: int, arrived_at: float) -> None:
        self.channel = channel
        self.connection = connection
        self.arrived_at = arrived_at
        self.state: TicketState = "waiting"
        self.reason = ""

    @property
    def admitted(self) -> bool:
        return self.state == "admitted"

    def __repr__(self) -> str:
        return f"Ticket({self.channel}/{self.connection}, {self.state})"


class AdmissionStatistics(msgspec.Struct, frozen=True, kw_only=True):
    slots: int
    in_use: int
    waiting: int
    queue_limit: int
    overloaded: bool
    admitted: int
    refused_queue_full: int
    refused_overload: int
    expired: int
    oldest_wait_s: float
    in_use_by_channel: dict[str, int] = msgspec.field(default_factory=dict)


class AdmissionQueue:
    def __init__(self, config: AdmissionConfig) -> None:
        self.config = config
        self.in_use = 0
        self.waiting = 0
        self.held: dict[str, int] = {}
        """Slots in use by channel."""
        self.overloaded = False
        # Per channel, per connection, that connection's waiting tickets in order; the
        # channels' turn order. A connection leaves its channel's queue when it has
        # nothing waiting.
        self._queues: dict[str, OrderedDict[int, deque[Ticket]]] = {}
        self._turns: deque[str] = deque()
        self._interval_ends = 0.0
        self._excess_intervals = 0
        self._calm_intervals = 0
        self._service_rate = 0.0  # slots handed out per second, smoothed over intervals
        self._arrivals = 0  # new (not retried) requests in the current interval
        self._grants = 0  # slots handed out in the current interval
        self.admitted = 0
        self.refused_queue_full = 0
        self.refused_overload = 0
        self.expired = 0

    # -- events ----------------------------------------------------------------------

    def at_the_door(self, now: float, *, retry: bool = False) -> str | None:
        """A request that will need a slot has been read: the reason it is refused at
        once, when the queue is full, or when the switch is overloaded and it would
        wait longer than ``target_s``; None: it goes on, and asks for its slot with
        :meth:`arrive` (unless a rule answers it first). Decided before any work is
        spent on it: under overload refusing must be cheap. A refused one counts as
        demand (unless a retry), as does every one that asks for its slot."""
        self._tick(now)
        if self.waiting >= self.config.queue_limit:
            self.refused_queue_full += 1
            reason = f"busy: {self.waiting} requests waiting"
        elif self.overloaded and self.waiting > self._service_rate * self.config.target_s:
            self.refused_overload += 1
            reason = "busy: requests arrive faster than they are served"
        else:
            return None
        if not retry:
            self._arrivals += 1
        return reason

    def arrive(self, channel: str, connection: int, now: float, *, retry: bool = False) -> Ticket:
        """A request let in at the door asks for its slot. The ticket comes back
        admitted, waiting (the caller waits for :meth:`release` to grant it, at most
        ``max_wait_s``) or refused when the queue filled meanwhile."""
        self._tick(now)
        if not retry:
            self._arrivals += 1
        ticket = Ticket(channel, connection, now)
        # Others may wait while slots are free only when their channel is at its share.
        if (
            self.in_use < self.config.slots
            and not self._queues.get(channel)
            and self._under_share(channel)
        ):
            self._admit(ticket)
            return ticket
        if self.waiting >= self.config.queue_limit:
            self.refused_queue_full += 1
            return self._refuse(ticket, f"busy: {self.waiting} requests waiting")
        self._enqueue(ticket)
        return ticket

    def release(self, now: float, channel: str) -> list[Ticket]:
        """A transaction of ``channel`` ended: its slot goes to the next waiting ticket
        in turn, or stays free. The tickets admitted now (more than one when the
        channel's last one ended, and another channel's share no longer applies)."""
        self._tick(now)
        self.in_use -= 1
        self.held[channel] = self.held.get(channel, 0) - 1
        return self._grant()

    def withdraw(self, ticket: Ticket, now: float, *, expired: bool) -> list[Ticket]:
        """A waiting ticket gives up its place: it waited ``max_wait_s`` (expired), or
        its request was cancelled. An admitted one is released instead. The tickets
        admitted now (its channel no longer waiting, another's share may not apply)."""
        if ticket.state != "waiting":
            return []
        ticket.state = "withdrawn"
        self.waiting -= 1
        if expired:
            self.expired += 1
        queue = self._queues[ticket.channel]
        tickets = queue[ticket.connection]
        tickets.remove(ticket)
        if not tickets:
            del queue[ticket.connection]
        self._tick(now)
        return self._grant()

    # -- state -----------------------------------------------------------------------

    def oldest_wait_s(self, now: float) -> float:
        """How long the longest waiting has waited (looks at every connection's first:
        for statistics, not for the hot path)."""
        heads = (
            tickets[0].arrived_at for queue in self._queues.values() for tickets in queue.values()
        )
        return now - min(heads, default=now)

    def statistics(self, now: float) -> AdmissionStatistics:
        return AdmissionStatistics(
            slots=self.config.slots,
            in_use=self.in_use,
            waiting=self.waiting,
            queue_limit=self.config.queue_limit,
            overloaded=self.overloaded,
            admitted=self.admitted,
            refused_queue_full=self.refused_queue_full,
            refused_overload=self.refused_overload,
            expired=self.expired,
            oldest_wait_s=round(self.oldest_wait_s(now), 6),
            in_use_by_channel={channel: held for channel, held in self.held.items() if held},
        )

    # -- inside ------------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        """At the end of each interval: did new requests outnumber the slots handed out,
        with requests waiting? Overloaded after OVERLOAD_INTERVALS such intervals in a
        row. (An idle gap of several intervals counts as one quiet interval.)"""
        if now < self._interval_ends:
            return
        demand, served = self._arrivals, self._grants
        margin = self.config.overload_margin
        # Smoothed: an interval in which few slots came free (a disk stall, a burst of
        # refusals to write) must not make every newcomer look as if it would wait.
        self._service_rate = (self._service_rate + served / self.config.interval_s) / 2
        if not self.overloaded:
            excess = demand > served * (1 + margin) + MIN_EXCESS and bool(self.waiting)
            self._excess_intervals = self._excess_intervals + 1 if excess else 0
            self.overloaded = self._excess_intervals >= OVERLOAD_INTERVALS
            self._calm_intervals = 0
        else:
            # While shedding the queue is kept short on purpose, so its length says
            # nothing: only demand falling back near what is served ends the overload.
            calm = demand <= served * (1 + margin / 2) + MIN_EXCESS
            self._calm_intervals = self._calm_intervals + 1 if calm else 0
            self.overloaded = self._calm_intervals < CALM_INTERVALS
            self._excess_intervals = 0
        self._arrivals = self._grants = 0
        self._interval_ends = now + self.config.interval_s

    def _under_share(self, channel: str) -> bool:
        """Whether ``channel`` may take one more slot: it has no share, it holds less
        than its share, or no other channel has anything in progress or waiting."""
        share = self.config.shares.get(channel)
        if share is None or self.held.get(channel, 0) < max(1, int(share * self.config.slots)):
            return True
        return not any(
            held for other, held in self.held.items() if other != channel
        ) and not any(queue for other, queue in self._queues.items() if other != channel)

    def _grant(self) -> list[Ticket]:
        """Free slots to the waiting, in turn, as long as a channel under its share
        has someone waiting."""
        granted: list[Ticket] = []
        while self.in_use < self.config.slots and self.waiting:
            ticket = self._next_in_turn()
            if ticket is None:
                break
            self._admit(ticket)
            granted.append(ticket)
        return granted

    def _admit(self, ticket: Ticket) -> None:
        ticket.state = "admitted"
        self.in_use += 1
        self.held[ticket.channel] = self.held.get(ticket.channel, 0) + 1
        self.admitted += 1
        self._grants += 1

    def _refuse(self, ticket: Ticket, reason: str) -> Ticket:
        ticket.state = "refused"
        ticket.reason = reason
        return ticket

    def _enqueue(self, ticket: Ticket) -> None:
        queue = self._queues.get(ticket.channel)
        if queue is None:
            queue = self._queues[ticket.channel] = OrderedDict()
            self._turns.append(ticket.channel)
        tickets = queue.get(ticket.connection)
        if tickets is None:
            tickets = queue[ticket.connection] = deque()
        tickets.append(ticket)
        self.waiting += 1

    def _next_in_turn(self) -> Ticket | None:
        """The next channel with anyone waiting and under its share takes its turn;
        within it, the connection at the front (then it goes to the back, if it has
        more). None when every channel waiting is at its share."""
        if not self.waiting:
            return None
        turns = self._turns
        for _ in range(len(turns)):
            channel = turns[0]
            turns.rotate(-1)
            queue = self._queues[channel]
            if not queue or not self._under_share(channel):
                continue
            connection, tickets = next(iter(queue.items()))
            ticket = tickets.popleft()
            if tickets:
                queue.move_to_end(connection)
            else:
                del queue[connection]
            self.waiting -= 1
            return ticket
        return None
