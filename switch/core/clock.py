"""Transaction timestamps and the fields derived from them.

Every request is stamped once on arrival; fields 7 (UTC) and 12/13 (local) towards the
bank and 12/13 back to the terminal all come from that one stamp, as in the specs'
samples (14:30:15 local is 06:30:15 UTC at +8).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import msgspec


class Stamp(msgspec.Struct, frozen=True, gc=False):
    utc: datetime
    local: datetime

    @classmethod
    def at(cls, epoch_s: float, utc_offset_h: int) -> Stamp:
        utc = datetime.fromtimestamp(epoch_s, UTC)
        return cls(utc=utc, local=utc + timedelta(hours=utc_offset_h))

    @classmethod
    def now(cls, utc_offset_h: int) -> Stamp:
        return cls.at(time.time(), utc_offset_h)

    @property
    def transmission(self) -> str:
        """Field 7: MMDDhhmmss in UTC."""
        return self.utc.strftime("%m%d%H%M%S")

    @property
    def local_time(self) -> str:
        """Field 12: hhmmss local."""
        return self.local.strftime("%H%M%S")

    @property
    def rrn_day(self) -> str:
        """The RRN's day prefix: last digit of the local year, day of the year."""
        return f"{self.local.year % 10}{self.local.timetuple().tm_yday:03d}"

    @property
    def local_date(self) -> str:
        """Field 13: MMDD local."""
        return self.local.strftime("%m%d")
