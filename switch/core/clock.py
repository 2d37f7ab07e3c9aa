"""The business clock, transaction timestamps and the fields derived from them.

The business clock (:class:`BusinessClock`) is the switch's "now" for whatever it stamps
or decides by: fields 7, 12, 13 and 15, the RRN's day, the business date and its
cut-off and settlement deadline, card expiry, and the times the journal records. It is
the wall clock, or a simulated one that runs ``speed`` times real time from a chosen
start (``switch run --clock START --clock-speed N``). What protects the switch or the
network stays on real time whatever the business clock does: timeouts, deadlines,
backoffs, rate limits, and lifetimes counted in seconds (design.md lists each).

Every request is stamped once on arrival; fields 7 (UTC) and 12/13 (local) towards the
bank and 12/13 back to the terminal all come from that one stamp, as in the specs'
samples (14:30:15 local is 06:30:15 UTC at +8). The fields are formatted once, when the
stamp is made: each is read several times per transaction.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import msgspec

ClockKind = Literal["real", "simulated"]

MAX_SPEED: Final = 86_400.0
"""The fastest a simulated clock runs: a business day a real second. Bounded so that a
request's few real seconds between its stamp and its RRN stay within the days the RRN
allocator remembers (switch.core.numbers), and the years within what a date can hold."""


class BusinessClock:
    """The business clock: ``now()`` in epoch seconds.

    Real, it is the wall clock. Simulated, it is ``start`` plus ``speed`` times the real
    seconds elapsed, measured on a monotonic clock (``monotonic``: trio's
    ``current_time`` in tests, so that a MockClock drives it), so that the wall clock
    stepping (NTP) never moves it. ``elapsed_s`` is how long the clock had already run
    when this one was made: the workers of one switch, started at different moments,
    all read the supervisor's clock.

    No I/O: both sources are given (the standard library's clocks by default)."""

    __slots__ = ("_base", "_monotonic", "_started", "_wall", "kind", "speed", "start_s")

    def __init__(
        self,
        *,
        start_s: float | None = None,
        speed: float = 1.0,
        elapsed_s: float = 0.0,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(speed) and 0 < speed <= MAX_SPEED):
            raise ValueError(f"the clock's speed must be above 0 and at most {MAX_SPEED:g}")
        if start_s is None and speed != 1.0:
            raise ValueError("only a simulated clock (one with a start) runs at another speed")
        self.kind: ClockKind = "real" if start_s is None else "simulated"
        self.start_s = start_s
        """The business time at which the simulated clock started (None: real)."""
        self.speed = speed
        self._wall = wall
        self._monotonic = monotonic
        self._started = monotonic()
        self._base = (start_s or 0.0) + elapsed_s * speed

    @classmethod
    def real(cls, wall: Callable[[], float] = time.time) -> BusinessClock:
        return cls(wall=wall)

    @classmethod
    def simulated(
        cls,
        start: datetime,
        speed: float = 1.0,
        *,
        elapsed_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> BusinessClock:
        """Runs ``speed`` times real time from ``start`` (which must name its offset)."""
        if start.tzinfo is None:
            raise ValueError("a simulated clock's start must name its UTC offset")
        return cls(start_s=start.timestamp(), speed=speed, elapsed_s=elapsed_s, monotonic=monotonic)

    def now(self) -> float:
        """Business time, epoch seconds."""
        if self.start_s is None:
            return self._wall()
        return self._base + (self._monotonic() - self._started) * self.speed

    def stamp(self, utc_offset_h: int) -> Stamp:
        """The stamp of the business second now."""
        return Stamp.at(self.now(), utc_offset_h)

    def real_s(self, business_s: float) -> float:
        """The real seconds in which ``business_s`` business seconds pass: how long to
        sleep for the clock to reach a business moment that far ahead."""
        return business_s / self.speed

    def business_s(self, real_s: float) -> float:
        """The business seconds that pass in ``real_s`` real seconds."""
        return real_s * self.speed

    def describe(self) -> str:
        if self.start_s is None:
            return "real"
        start = datetime.fromtimestamp(self.start_s, UTC).isoformat()
        return f"simulated from {start} at {self.speed:g}x"


WALL_CLOCK: Final = BusinessClock()
"""The real business clock (the default of the parts tests build on their own)."""


def parse_clock_start(text: str) -> datetime:
    """``--clock``'s START: ISO 8601 with a UTC offset (``Z`` or ``+08:00``);
    ValueError saying what is wrong otherwise."""
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 date and time (e.g. 2027-01-31T22:59:00+08:00)"
        ) from None
    if start.tzinfo is None:
        raise ValueError(f"{text!r} names no UTC offset (e.g. 2027-01-31T22:59:00+08:00)")
    if not 2000 <= start.year <= 2099:
        raise ValueError(f"{text!r} is not in 2000-2099")
    return start


class Stamp(msgspec.Struct, frozen=True, gc=False):
    epoch_s: int
    """The whole second stamped."""
    utc: datetime
    local: datetime
    transmission: str
    """Field 7: MMDDhhmmss in UTC."""
    local_time: str
    """Field 12: hhmmss local."""
    local_date: str
    """Field 13: MMDD local."""
    rrn_day: str
    """The RRN's day prefix: last digit of the local year, day of the year."""

    @classmethod
    def at(cls, epoch_s: float, utc_offset_h: int) -> Stamp:
        """The stamp of the whole second ``epoch_s`` falls in: every field is to the
        second, so the transactions of one second share one (frozen) stamp."""
        second = int(epoch_s)
        last = _last_stamp.get(utc_offset_h)
        if last is not None and last[0] == second:
            return last[1]
        utc = datetime.fromtimestamp(second, UTC)
        local = utc + timedelta(hours=utc_offset_h)
        stamp = cls(
            epoch_s=second,
            utc=utc,
            local=local,
            transmission=(
                f"{utc.month:02d}{utc.day:02d}{utc.hour:02d}{utc.minute:02d}{utc.second:02d}"
            ),
            local_time=f"{local.hour:02d}{local.minute:02d}{local.second:02d}",
            local_date=f"{local.month:02d}{local.day:02d}",
            rrn_day=rrn_day(local),
        )
        _last_stamp[utc_offset_h] = (second, stamp)
        return stamp


def rrn_day(local: datetime) -> str:
    """The RRN's day prefix of a local time: last digit of the year, day of the year."""
    return f"{local.year % 10}{local.timetuple().tm_yday:03d}"


_last_stamp: dict[int, tuple[int, Stamp]] = {}
"""Per UTC offset, the last second stamped and its stamp."""
