"""A small log-linear latency histogram, HdrHistogram's idea without the dependency.

Values are whole microseconds. Below ``2**SUB_BUCKET_BITS`` each value has its own
bucket; above, every power of two is split into ``2**(SUB_BUCKET_BITS - 1)`` equal
buckets, so a reported percentile is within 1/64 (1.6 %) of the true value at any
magnitude. Buckets live in a sparse dict, so a histogram is cheap to send between
processes and to merge.
"""

from __future__ import annotations

from typing import Final

import msgspec

SUB_BUCKET_BITS: Final = 7
"""Precision: 2**(bits-1) buckets per power of two above 2**bits microseconds."""
_LINEAR_LIMIT: Final = 1 << SUB_BUCKET_BITS
_HALF: Final = 1 << (SUB_BUCKET_BITS - 1)

PERCENTILES: Final = (50.0, 90.0, 99.0, 99.9)


def bucket_of(value_us: int) -> int:
    """The bucket index of a value (negative values count as 0)."""
    if value_us < _LINEAR_LIMIT:
        return max(value_us, 0)
    shift = value_us.bit_length() - SUB_BUCKET_BITS
    return shift * _HALF + (value_us >> shift)


def bucket_ceiling(index: int) -> int:
    """The highest value that lands in bucket ``index`` (what a percentile reports, so
    a percentile is never understated)."""
    if index < _LINEAR_LIMIT:
        return index
    shift, mantissa = divmod(index - _LINEAR_LIMIT, _HALF)
    shift += 1
    return ((mantissa + _HALF + 1) << shift) - 1


class LatencySummary(msgspec.Struct, frozen=True, kw_only=True):
    """Percentiles in milliseconds, as reports show them."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    p99_9: float
    max: float


class LatencyHistogram:
    """Counts of latencies in microseconds; record, merge, read percentiles."""

    __slots__ = ("buckets", "count", "max_us", "total_us")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total_us = 0
        self.max_us = 0

    def record(self, value_us: int) -> None:
        index = bucket_of(value_us)
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + 1
        self.count += 1
        self.total_us += value_us
        if value_us > self.max_us:
            self.max_us = value_us

    def merge(self, other: LatencyHistogram) -> None:
        for index, count in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + count
        self.count += other.count
        self.total_us += other.total_us
        self.max_us = max(self.max_us, other.max_us)

    def percentile_us(self, percent: float) -> int:
        """The smallest bucket ceiling at or below which ``percent`` of values lie; the
        exact maximum for 100."""
        if self.count == 0:
            return 0
        if percent >= 100.0:
            return self.max_us
        wanted = max(1, -(-self.count * percent // 100))  # ceiling, at least one value
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= wanted:
                return min(bucket_ceiling(index), self.max_us)
        return self.max_us

    def summary(self) -> LatencySummary:
        def ms(value_us: float) -> float:
            return round(value_us / 1000, 3)

        p50, p90, p99, p99_9 = (self.percentile_us(p) for p in PERCENTILES)
        return LatencySummary(
            count=self.count,
            mean=ms(self.total_us / self.count) if self.count else 0.0,
            p50=ms(p50),
            p90=ms(p90),
            p99=ms(p99),
            p99_9=ms(p99_9),
            max=ms(self.max_us),
        )

    # -- transport between processes -------------------------------------------------

    def to_wire(self) -> HistogramWire:
        return HistogramWire(
            buckets=sorted(self.buckets.items()),
            count=self.count,
            total_us=self.total_us,
            max_us=self.max_us,
        )

    @classmethod
    def from_wire(cls, wire: HistogramWire) -> LatencyHistogram:
        histogram = cls()
        histogram.buckets = dict(wire.buckets)
        histogram.count = wire.count
        histogram.total_us = wire.total_us
        histogram.max_us = wire.max_us
        return histogram


class HistogramWire(msgspec.Struct, frozen=True, kw_only=True):
    """A histogram as a worker process sends it (JSON has no int keys)."""

    buckets: list[tuple[int, int]] = []
    count: int = 0
    total_us: int = 0
    max_us: int = 0
