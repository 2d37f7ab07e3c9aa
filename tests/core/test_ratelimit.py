"""Token buckets and the sign-on limiter: synchronous, times given."""

from __future__ import annotations

import pytest

from switch.core.ratelimit import KeyedBuckets, SignOnLimiter, TokenBucket


def limiter(**overrides: float) -> SignOnLimiter:
    settings: dict[str, float] = {
        "rate_per_s": 1.0,
        "burst": 10,
        "source_rate_per_s": 1.0,
        "source_burst": 5,
        "terminal_rate_per_s": 0.5,
        "terminal_burst": 2,
        "max_tracked": 100,
    } | overrides
    return SignOnLimiter(**settings)  # type: ignore[arg-type]


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s(0.0) == pytest.approx(0.5)
    assert not bucket.ready(0.4) and bucket.ready(0.5)
    assert bucket.take(100.0) and bucket.take(100.0) and bucket.take(100.0)
    assert not bucket.take(100.0)  # never more than the burst, however long it rested


def test_keyed_buckets_forget_the_least_recently_used_beyond_their_maximum() -> None:
    buckets: KeyedBuckets[str] = KeyedBuckets(rate_per_s=0.001, burst=1, max_keys=2)
    assert buckets.bucket("a").take(0.0) and buckets.bucket("b").take(0.0)
    assert not buckets.bucket("a").ready(0.0)  # "a" is now the most recently used
    buckets.bucket("c")
    assert len(buckets) == 2 and buckets.evicted == 1
    assert not buckets.bucket("a").ready(0.0)  # kept
    assert buckets.bucket("b").ready(0.0)  # forgotten: it starts afresh


@pytest.mark.parametrize(
    ("sign_ons", "refused_by"),
    [
        # (terminal, source) of each sign-on at t = 0; the limit that refuses the last.
        ([("T1", "A")] * 3, "terminal"),
        ([(f"T{n}", "A") for n in range(6)], "source"),
        ([(f"T{n}", f"A{n % 3}") for n in range(11)], "switch_wide"),
    ],
)
def test_the_narrowest_exhausted_limit_refuses(
    sign_ons: list[tuple[str, str]], refused_by: str
) -> None:
    limits = limiter()
    answers = [limits.take((terminal, "M1"), source, 0.0) for terminal, source in sign_ons]
    assert answers[:-1] == [None] * (len(sign_ons) - 1)
    assert answers[-1] is not None
    statistics = limits.statistics()
    assert statistics[f"refused_{refused_by}"] == 1 and limits.refused == 1


def test_a_refused_sign_on_takes_nothing_from_the_wider_limits() -> None:
    limits = limiter(burst=4, source_burst=4)
    for _ in range(50):  # one terminal in a loop
        limits.take(("LOOP", "M1"), "A", 0.0)
    assert limits.refused_terminal == 48
    # Its address and the switch still had only its two: two others sign on there.
    assert limits.take(("T2", "M1"), "A", 0.0) is None
    assert limits.take(("T3", "M1"), "A", 0.0) is None
    assert limits.take(("T4", "M1"), "A", 0.0) is not None  # the address's 4 are used
    assert limits.take(("T5", "M1"), "B", 0.0) is not None  # and so are the switch's
    assert limits.refused_switch_wide == 1


def test_a_terminal_is_its_id_at_its_merchant_and_refills_in_time() -> None:
    limits = limiter()
    assert limits.take(("T1", "M1"), "A", 0.0) is None
    assert limits.take(("T1", "M1"), "A", 0.0) is None
    assert limits.take(("T1", "M1"), "A", 0.0) is not None
    assert limits.take(("T1", "M2"), "A", 0.0) is None  # another merchant's terminal
    assert limits.take(("T1", "M1"), "A", 1.9) is not None
    assert limits.take(("T1", "M1"), "A", 2.0) is None  # one token at 0.5 a second


def test_memory_is_bounded_whatever_a_flood_invents() -> None:
    limits = limiter(max_tracked=10, burst=1e9, source_burst=1e9)
    for n in range(1000):
        limits.take((f"T{n}", "M1"), f"10.0.{n // 256}.{n % 256}", float(n))
    statistics = limits.statistics()
    assert statistics["terminals_tracked"] == statistics["sources_tracked"] == 10
