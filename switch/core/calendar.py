"""The business calendar: which business date a moment belongs to (settlement.md).

A transaction belongs to the business date current when the switch received it: the
local date before the daily cut-off, the next local date from the cut-off on. An
operator may close the open date early (a forced cut-off); the next date then begins
at once, and keeps its own natural cut-off. Every close is remembered (the settlement
store persists them), so the answer for a moment never changes: a request stamped
before a close is of the closed date even when it is answered after it.

Closes take effect on whole seconds, the resolution of a request's stamp: a close
asked for during second s takes effect at s + 1.

Pure Python, no I/O: times are epoch seconds, the caller's clock.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

import msgspec


class DateNotBegun(ValueError):
    """An early close of a date whose own calendar day has not begun: refused, so that
    cut-offs asked again and again cannot run the business date ahead of the clock."""


class DateClosed(msgspec.Struct, frozen=True):
    """A business date closed: from ``at`` (epoch seconds, a whole second) on, the
    next date is open."""

    business_date: date
    at: float
    forced: bool


def parse_local_time(text: str) -> time:
    """``HH:MM`` (the config's format) as a time of day."""
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


class BusinessCalendar:
    __slots__ = ("_close_at", "_close_floor", "_closes", "_cutoff", "_last", "_offset")

    def __init__(
        self, *, cutoff: time, utc_offset_h: int, closes: Iterable[DateClosed] = ()
    ) -> None:
        self._cutoff = cutoff
        self._offset = timedelta(hours=utc_offset_h)
        self._closes: list[DateClosed] = sorted(closes, key=lambda close: close.at)
        self._close_at = [close.at for close in self._closes]
        self._close_floor = [close.business_date + timedelta(days=1) for close in self._closes]
        self._last: tuple[int, date] | None = None
        """The last second asked about and its date: a second's requests share one."""

    @property
    def closes(self) -> list[DateClosed]:
        return list(self._closes)

    def last_closed(self) -> date | None:
        return max((close.business_date for close in self._closes), default=None)

    def natural_date(self, epoch_s: float) -> date:
        """The date by the cut-off alone, ignoring forced closes."""
        local = datetime.fromtimestamp(int(epoch_s), UTC) + self._offset
        return local.date() + timedelta(days=1) if local.time() >= self._cutoff else local.date()

    def date_at(self, epoch_s: float) -> date:
        """The business date of a request received at ``epoch_s``."""
        second = int(epoch_s)
        last = self._last
        if last is not None and last[0] == second:
            return last[1]
        natural = self.natural_date(second)
        index = bisect.bisect_right(self._close_at, second)
        # Dates only move forward, so the latest close before the moment is the floor.
        found = max(natural, self._close_floor[index - 1]) if index else natural
        self._last = (second, found)
        return found

    def natural_end(self, business_date: date) -> float:
        """When ``business_date`` closes by the cut-off: its local date at the cut-off."""
        local = datetime.combine(business_date, self._cutoff)
        return (local - self._offset).replace(tzinfo=UTC).timestamp()

    def due_closes(self, epoch_s: float, first_open: date) -> list[DateClosed]:
        """The dates from ``first_open`` that have ended by ``epoch_s`` and are not yet
        recorded as closed, oldest first (after a restart, possibly several), each
        closed at its natural end."""
        last = self.last_closed()
        first = max(first_open, last + timedelta(days=1)) if last is not None else first_open
        return [
            DateClosed(business_date=day, at=self.natural_end(day), forced=False)
            for day in _dates_between(first, self.date_at(epoch_s))
        ]

    def force_close(self, epoch_s: float, notice_s: float = 0.0) -> DateClosed:
        """Closes the date open at ``epoch_s`` early: from the next whole second on
        (after ``notice_s``, the time other processes need to learn of it), the next
        date is open. DateNotBegun when the open date is itself one a close opened
        early and its day by the cut-off has not begun: one early close per day."""
        open_date = self.date_at(epoch_s)
        if open_date > self.natural_date(epoch_s):
            begins = datetime.combine(open_date - timedelta(days=1), self._cutoff)
            raise DateNotBegun(
                f"business date {open_date} has not begun: it was opened early by the "
                f"close of {open_date - timedelta(days=1)}, and can be closed from "
                f"{begins:%Y-%m-%d %H:%M} local time on"
            )
        close = DateClosed(
            business_date=open_date,
            at=float(math.floor(epoch_s + notice_s) + 1),
            forced=True,
        )
        self.record(close)
        return close

    def close_of(self, business_date: date) -> DateClosed | None:
        return next((c for c in self._closes if c.business_date == business_date), None)

    def record(self, close: DateClosed) -> None:
        """Remembers a close (forced, natural, or read back from the store)."""
        if any(known.business_date == close.business_date for known in self._closes):
            return
        index = bisect.bisect_right(self._close_at, close.at)
        self._closes.insert(index, close)
        self._close_at.insert(index, close.at)
        self._close_floor.insert(index, close.business_date + timedelta(days=1))
        self._last = None


def _dates_between(first: date, end: date) -> list[date]:
    """first, first + 1, ... up to but not including end."""
    return [first + timedelta(days=n) for n in range((end - first).days)]


def mmdd(business_date: date) -> str:
    """Field 15's form of a date."""
    return f"{business_date.month:02d}{business_date.day:02d}"


def date_from_mmdd(text: str, near: date) -> date:
    """The date with month and day ``text`` (MMDD) nearest to ``near``: field 15 and
    clearing dates carry no year, and a date is never more than months away."""
    month, day = int(text[:2]), int(text[2:])
    candidates = []
    for year in (near.year - 1, near.year, near.year + 1):
        try:
            candidates.append(date(year, month, day))
        except ValueError:  # 29 February of a year without one
            continue
    return min(candidates, key=lambda candidate: abs((candidate - near).days))
