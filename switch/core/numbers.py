"""Numbers the switch assigns: trace numbers (STANs) and retrieval reference numbers.

RRNs are 12 digits, unique per day per switch.

Layout: the last digit of the local year, the day of the year (3 digits), then an
8-digit sequence that starts again each local day (100 million a day). So that a
restart on the same day does not hand out numbers again, a day's sequence starts at
the later of the seconds since local midnight times 1,000 and the highest number the
journal holds for the day (``resume``), plus one.

With N worker processes (``[switch] workers``) the sequences are interleaved: worker i
of N hands out only the numbers whose sequence is i modulo N, so no two workers can
give the same RRN, whatever each has journaled, without asking one another. The
layout stays 12 digits (terminals and banks see nothing new) and the worker that gave
an RRN is its sequence modulo N. With one process (N = 1) every number is its own,
as before.
"""

from __future__ import annotations

import itertools
from datetime import datetime

from switch.core.clock import rrn_day

SEQUENCE_LIMIT = 100_000_000


class RrnExhausted(RuntimeError):
    """The day's sequence ran out: refuse rather than repeat a number."""


class RrnAllocator:
    """Keeps a sequence per local day (the last few), because requests stamped either
    side of midnight may ask for their RRNs out of order."""

    __slots__ = ("_floored", "_next", "_stride", "_worker")

    DAYS_KEPT = 40
    """A day forgotten would start again at its time of day x 1000 and could repeat a
    number. A request is stamped at most a few real seconds before its RRN is taken;
    on a simulated clock at its fastest (switch.core.clock.MAX_SPEED, a day a second)
    that is a few days, well within these."""

    def __init__(self, *, worker: int = 0, workers: int = 1) -> None:
        if not 0 <= worker < workers:
            raise ValueError(f"worker {worker} is not one of {workers}")
        self._worker = worker
        self._stride = workers
        self._next: dict[str, int] = {}
        self._floored: set[str] = set()
        """Days whose sequence has been raised to the time of day it was first used."""

    def resume(self, day: str, sequence: int) -> None:
        """Never hands out a number of ``day`` below ``sequence`` (the journal's
        high-water mark after a restart)."""
        self._next[day] = max(sequence, self._next.get(day, 0))

    def allocate(self, local: datetime, day: str | None = None) -> str:
        """The next RRN of ``local``'s day; ``day`` is that day's prefix when the caller
        has it already (a Stamp's ``rrn_day``)."""
        if day is None:
            day = rrn_day(local)
        if day in self._floored:
            sequence = self._next[day]
        else:
            # A day's first number is at least its time of day x 1000, as a fresh start
            # would choose, so numbers given before a restart (journaled or not) stay
            # behind it.
            time_of_day = (local.hour * 3600 + local.minute * 60 + local.second) * 1000
            sequence = max(self._next.get(day, 0), time_of_day)
            self._floored.add(day)
            while len(self._next) >= self.DAYS_KEPT and day not in self._next:
                forgotten = next(iter(self._next))
                del self._next[forgotten]
                self._floored.discard(forgotten)
        sequence += (self._worker - sequence) % self._stride  # this worker's next one
        if sequence >= SEQUENCE_LIMIT:
            raise RrnExhausted(f"RRN sequence for day {day} is exhausted")
        self._next[day] = sequence + 1
        return f"{day}{sequence:08d}"


class StanSequence:
    """Trace numbers 000001..999999, then around again. One sequence serves all of a
    bank's links, so a STAN is unique on its link (and across the bank's links) among
    requests in flight.

    With N worker processes each has a block of its own, 999,999 // N numbers (worker
    i's start at i x block + 1), and goes around within it: the workers' links to one
    bank never send the same STAN (a bank takes a STAN seen again within moments for a
    duplicate). One process has the whole range, as before."""

    __slots__ = ("_block", "_counter", "_low")

    def __init__(self, start: int = 1, *, worker: int = 0, workers: int = 1) -> None:
        if not 0 <= worker < workers:
            raise ValueError(f"worker {worker} is not one of {workers}")
        self._block = 999_999 // workers
        self._low = worker * self._block + 1
        self._counter = itertools.count(start - 1)

    def next(self) -> str:
        return f"{self._low + next(self._counter) % self._block:06d}"

    def resume_after(self, stan: int, margin: int) -> None:
        """Continues ``margin`` past ``stan``, the last one journaled before a restart:
        messages not journaled (echoes, reversal repeats) used a few in between, and a
        bank that sees a STAN again in the same second takes it for a duplicate. A STAN
        outside this worker's block (another worker's) changes nothing."""
        if self._low <= stan < self._low + self._block:
            self._counter = itertools.count(stan - self._low + 1 + margin)
