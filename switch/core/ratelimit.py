"""Token buckets: at most ``burst`` at once, refilled at ``rate_per_s``; and the
sign-on limiter built of them (per terminal, per source address, switch-wide). Plain
Python; the caller gives the time (any monotonic clock)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


class TokenBucket:
    __slots__ = ("_at", "_tokens", "burst", "rate_per_s")

    def __init__(self, *, rate_per_s: float, burst: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None

    def _refill(self, now: float) -> None:
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now

    def take(self, now: float) -> bool:
        """Takes a token if there is one."""
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def ready(self, now: float) -> bool:
        """Whether a token is there now; takes nothing."""
        self._refill(now)
        return self._tokens >= 1

    def wait_s(self, now: float) -> float:
        """How long until a token is there (0: one is there now); takes nothing."""
        self._refill(now)
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate_per_s


class KeyedBuckets(Generic[Key]):
    """A token bucket per key, for at most ``max_keys`` keys: the least recently used
    is forgotten to make room (it starts full if its key comes again), so memory is
    bounded whatever the number of keys a peer invents."""

    __slots__ = ("_buckets", "burst", "evicted", "max_keys", "rate_per_s")

    def __init__(self, *, rate_per_s: float, burst: float, max_keys: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Key, TokenBucket] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def bucket(self, key: Key) -> TokenBucket:
        """The key's bucket (made full if it has none), now the most recently used."""
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is not None:
            buckets.move_to_end(key)
            return bucket
        if len(buckets) >= self.max_keys:
            buckets.popitem(last=False)
            self.evicted += 1
        bucket = buckets[key] = TokenBucket(rate_per_s=self.rate_per_s, burst=self.burst)
        return bucket


class SignOnLimiter:
    """Sign-ons allowed per terminal (terminal id and merchant), per source address,
    and switch-wide. Each sign-on takes an RRN of the day's sequence, so switch-wide
    they are bounded; the narrower buckets are looked at first, and a sign-on refused
    by any of them takes a token from none, so one looping terminal or one flooding
    source exhausts only its own bucket, never the switch-wide one the others share."""

    def __init__(
        self,
        *,
        rate_per_s: float,
        burst: float,
        source_rate_per_s: float,
        source_burst: float,
        terminal_rate_per_s: float,
        terminal_burst: float,
        max_tracked: int,
    ) -> None:
        self.switch_wide = TokenBucket(rate_per_s=rate_per_s, burst=burst)
        self.sources: KeyedBuckets[str] = KeyedBuckets(
            rate_per_s=source_rate_per_s, burst=source_burst, max_keys=max_tracked
        )
        self.terminals: KeyedBuckets[tuple[str, str]] = KeyedBuckets(
            rate_per_s=terminal_rate_per_s, burst=terminal_burst, max_keys=max_tracked
        )
        self.refused_terminal = 0
        self.refused_source = 0
        self.refused_switch_wide = 0

    def take(self, terminal: tuple[str, str], source: str, now: float) -> str | None:
        """A sign-on of ``terminal`` (terminal id, merchant id) from ``source``: None
        when allowed (a token taken from each of its three buckets), otherwise why it
        is refused (nothing taken)."""
        by_terminal = self.terminals.bucket(terminal)
        if not by_terminal.ready(now):
            self.refused_terminal += 1
            return "too many sign-ons from this terminal: try again later"
        by_source = self.sources.bucket(source)
        if not by_source.ready(now):
            self.refused_source += 1
            return "too many sign-ons from this address: try again shortly"
        if not self.switch_wide.ready(now):
            self.refused_switch_wide += 1
            return "too many sign-ons: try again shortly"
        by_terminal.take(now)
        by_source.take(now)
        self.switch_wide.take(now)
        return None

    @property
    def refused(self) -> int:
        return self.refused_terminal + self.refused_source + self.refused_switch_wide

    def statistics(self) -> dict[str, int]:
        return {
            "refused_terminal": self.refused_terminal,
            "refused_source": self.refused_source,
            "refused_switch_wide": self.refused_switch_wide,
            "terminals_tracked": len(self.terminals),
            "sources_tracked": len(self.sources),
            "evicted": self.terminals.evicted + self.sources.evicted,
        }
