"""What the switch counts as it works, for the admin interface (metrics, status, the
console): plain integers and fixed buckets, bumped on the hot path, read on a scrape.

Plain Python, no I/O and no metrics library: recording a transaction is a few dict
and list operations; turning the counts into Prometheus families or a status document
happens only when someone asks (``switch.admin``).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

import msgspec

LATENCY_BOUNDS_MS: Final = (
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
)  # fmt: skip
"""Upper bounds of the latency buckets (ms); one more bucket above the last."""


class HistogramSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A histogram as read at one moment: cumulative since the switch started."""

    bounds_ms: tuple[float, ...]
    counts: tuple[int, ...]
    """One a bucket: the last counts what exceeded every bound."""
    sum_ms: float
    count: int

    def minus(self, earlier: HistogramSnapshot) -> HistogramSnapshot:
        """What happened between ``earlier`` and this one (same bounds)."""
        return HistogramSnapshot(
            bounds_ms=self.bounds_ms,
            counts=tuple(a - b for a, b in zip(self.counts, earlier.counts, strict=True)),
            sum_ms=self.sum_ms - earlier.sum_ms,
            count=self.count - earlier.count,
        )

    def plus(self, other: HistogramSnapshot) -> HistogramSnapshot:
        """Both together (same bounds): e.g. a bank's over every channel."""
        return HistogramSnapshot(
            bounds_ms=self.bounds_ms,
            counts=tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)),
            sum_ms=round(self.sum_ms + other.sum_ms, 3),
            count=self.count + other.count,
        )

    @classmethod
    def empty(cls, bounds_ms: tuple[float, ...] = LATENCY_BOUNDS_MS) -> HistogramSnapshot:
        return cls(bounds_ms=bounds_ms, counts=(0,) * (len(bounds_ms) + 1), sum_ms=0.0, count=0)

    def quantile_ms(self, q: float) -> float | None:
        """The upper bound of the bucket holding the ``q`` quantile (never understated;
        None when empty, the last bound when it lies beyond every bound)."""
        if self.count <= 0:
            return None
        rank = q * self.count
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank and count:
                return self.bounds_ms[min(index, len(self.bounds_ms) - 1)]
        return self.bounds_ms[-1]


class LatencyHistogram:
    """Fixed buckets of milliseconds; ``record`` is a bisect and two additions."""

    __slots__ = ("counts", "sum_ms")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        self.sum_ms = 0.0

    def record(self, ms: float) -> None:
        self.counts[bisect_left(LATENCY_BOUNDS_MS, ms)] += 1
        self.sum_ms += ms

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(
            bounds_ms=LATENCY_BOUNDS_MS,
            counts=tuple(self.counts),
            sum_ms=round(self.sum_ms, 3),
            count=sum(self.counts),
        )


TxnKey = tuple[str, str, str, str]
"""(channel, kind, bank or "", response code)."""
PathKey = tuple[str, str]
"""(channel, bank or "")."""


class TransactionStats:
    """Every transaction's canonical facts, counted: by channel, kind, bank and
    response code; and latency histograms (end to end, waiting for the journal,
    waiting for the bank) by channel and bank."""

    __slots__ = ("amounts", "bank_ms", "counts", "journal_ms", "latency_ms")

    def __init__(self) -> None:
        self.counts: dict[TxnKey, int] = {}
        self.amounts: dict[TxnKey, int] = {}
        """The fen asked, by the same key (transactions that carry an amount)."""
        self.latency_ms: dict[PathKey, LatencyHistogram] = {}
        self.journal_ms: dict[PathKey, LatencyHistogram] = {}
        self.bank_ms: dict[PathKey, LatencyHistogram] = {}

    def record(
        self,
        *,
        channel: str,
        kind: str,
        bank: str | None,
        code: str,
        latency_ms: float,
        journal_ms: float | None,
        bank_ms: float | None,
        amount: int | None = None,
    ) -> None:
        bank = bank or ""
        key = (channel, kind, bank, code)
        self.counts[key] = self.counts.get(key, 0) + 1
        if amount is not None:
            self.amounts[key] = self.amounts.get(key, 0) + amount
        path = (channel, bank)
        _histogram(self.latency_ms, path).record(latency_ms)
        if journal_ms is not None:
            _histogram(self.journal_ms, path).record(journal_ms)
        if bank_ms is not None:
            _histogram(self.bank_ms, path).record(bank_ms)


def _histogram(histograms: dict[PathKey, LatencyHistogram], key: PathKey) -> LatencyHistogram:
    histogram = histograms.get(key)
    if histogram is None:
        histogram = histograms[key] = LatencyHistogram()
    return histogram
