"""The trio side of switch-wide admission: a request that must wait for a slot parks
here until the core (``switch.core.admission``) hands it one, or until it has waited
as long as it may."""

from __future__ import annotations

import trio

from switch.core.admission import AdmissionConfig, AdmissionQueue, AdmissionStatistics, Ticket
from switch.errors import SwitchError


class Busy(SwitchError):
    """No slot for this request now (the queue is full, the switch is overloaded, or it
    waited as long as it may): answered 91 at once."""

    response_code = "91"


class Admission:
    """Shared by every listener and the switchboard: ``admit`` before a transaction's
    bank path, ``release`` once it no longer needs its slot."""

    def __init__(self, config: AdmissionConfig) -> None:
        self.queue = AdmissionQueue(config)
        self._waiters: dict[Ticket, trio.Event] = {}

    @property
    def max_wait_s(self) -> float:
        return self.queue.config.max_wait_s

    def at_the_door(self, *, retry: bool) -> str | None:
        """Why a request just read is refused at once, or None (AdmissionQueue)."""
        return self.queue.at_the_door(trio.current_time(), retry=retry)

    async def admit(
        self, channel: str, connection: int, *, arrived_at: float, retry: bool
    ) -> Ticket:
        """A slot for one request (read at ``arrived_at``, trio time), or Busy. Waits at
        most until ``arrived_at + max_wait_s``; cancelling the wait gives the place up."""
        queue = self.queue
        now = trio.current_time()
        ticket = queue.arrive(channel, connection, now, retry=retry)
        if ticket.state == "admitted":
            return ticket
        if ticket.state == "refused":
            raise Busy(ticket.reason)
        granted = self._waiters[ticket] = trio.Event()
        waited = trio.move_on_at(arrived_at + queue.config.max_wait_s)
        try:
            with waited:
                await granted.wait()
        except BaseException:
            if ticket.admitted:  # granted, then cancelled before it ran on
                self.release(ticket)
            raise
        finally:
            del self._waiters[ticket]
            self._wake(queue.withdraw(ticket, trio.current_time(), expired=waited.cancelled_caught))
        if not ticket.admitted:
            raise Busy(f"busy: waited {queue.config.max_wait_s:g} s for a slot")
        return ticket

    def release(self, ticket: Ticket) -> None:
        """The ticket's transaction no longer needs its slot (at most once a ticket)."""
        if not ticket.admitted:
            return
        ticket.state = "withdrawn"
        self._wake(self.queue.release(trio.current_time(), ticket.channel))

    def _wake(self, granted: list[Ticket]) -> None:
        for ticket in granted:
            self._waiters[ticket].set()

    def statistics(self) -> AdmissionStatistics:
        return self.queue.statistics(trio.current_time())
