"""Transaction timestamps and the fields derived from them.

Every request is stamped once on arrival; fields 7 (UTC) and 12/13 (local) towards the
bank and 12/13 back to the terminal all come from that one stamp, as in the specs'
samples (14:30:15 local is 06:30:15 UTC at +8). The fields are formatted once, when the
stamp is made: each is read several times per transaction.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import msgspec


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

    @classmethod
    def now(cls, utc_offset_h: int) -> Stamp:
        return cls.at(time.time(), utc_offset_h)


def rrn_day(local: datetime) -> str:
    """The RRN's day prefix of a local time: last digit of the year, day of the year."""
    return f"{local.year % 10}{local.timetuple().tm_yday:03d}"


_last_stamp: dict[int, tuple[int, Stamp]] = {}
"""Per UTC offset, the last second stamped and its stamp."""
