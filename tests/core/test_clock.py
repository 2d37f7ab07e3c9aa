"""The business clock, synchronously: real (the wall clock) or simulated (a start and a
speed over a monotonic clock), and ``--clock``'s START as an operator types it."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from switch.core.clock import MAX_SPEED, BusinessClock, Stamp, parse_clock_start

CST = timezone(timedelta(hours=8))
START = datetime(2027, 1, 31, 22, 59, 0, tzinfo=CST)


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self, at: float = 1000.0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def test_the_real_clock_is_the_wall_clock_whatever_the_monotonic_one_does() -> None:
    wall = [1_700_000_000.0]
    clock = BusinessClock.real(wall=lambda: wall[0])
    assert clock.kind == "real"
    assert clock.now() == 1_700_000_000.0
    wall[0] += 5
    assert clock.now() == 1_700_000_005.0
    assert clock.real_s(60) == 60
    assert clock.business_s(60) == 60
    assert clock.describe() == "real"


@pytest.mark.parametrize(
    ("speed", "real_elapsed_s", "business"),
    [
        (1, 0, START),
        (1, 30, START + timedelta(seconds=30)),
        (600, 0.1, START + timedelta(minutes=1)),  # 23:00 a tenth of a second later
        (1440, 60, START + timedelta(days=1)),  # a day a minute
        (86_400, 30, START + timedelta(days=30)),  # a month in half a minute
        (0.5, 10, START + timedelta(seconds=5)),
    ],
)
def test_a_simulated_clock_runs_speed_times_real_time_from_its_start(
    speed: float, real_elapsed_s: float, business: datetime
) -> None:
    ticks = Ticks()
    clock = BusinessClock.simulated(START, speed, monotonic=ticks)
    assert clock.kind == "simulated"
    assert clock.now() == START.timestamp()
    ticks.at += real_elapsed_s
    assert clock.now() == pytest.approx(business.timestamp(), abs=1e-6)


def test_a_simulated_clock_ignores_the_wall_clock() -> None:
    ticks = Ticks()
    clock = BusinessClock(start_s=START.timestamp(), speed=60, wall=lambda: 0.0, monotonic=ticks)
    ticks.at += 1
    assert clock.now() == START.timestamp() + 60


def test_waits_convert_between_business_and_real_seconds() -> None:
    clock = BusinessClock.simulated(START, 1440, monotonic=Ticks())
    assert clock.real_s(86_400) == 60  # until tomorrow's cut-off: a real minute
    assert clock.business_s(30) == 30 * 1440  # a 30 s backoff, on the business clock


def test_a_worker_started_later_reads_the_supervisors_clock() -> None:
    """``elapsed_s``: the clock had run that long when this process made its own."""
    ticks = Ticks()
    first = BusinessClock.simulated(START, 600, monotonic=ticks)
    ticks.at += 2.5
    later = BusinessClock.simulated(START, 600, elapsed_s=2.5, monotonic=ticks)
    assert later.now() == first.now()
    ticks.at += 1
    assert later.now() == first.now() == START.timestamp() + 3.5 * 600


def test_the_stamp_is_of_the_business_second() -> None:
    ticks = Ticks()
    clock = BusinessClock.simulated(START, 600, monotonic=ticks)
    stamp = clock.stamp(8)
    assert (stamp.transmission, stamp.local_time, stamp.local_date) == (
        "0131145900", "225900", "0131",
    )  # fmt: skip
    assert stamp.rrn_day == "7031"
    ticks.at += 0.2  # two business minutes: past 23:00, still 31 January
    assert clock.stamp(8).local_time == "230100"
    ticks.at += 6  # an hour more: 1 February
    stamp = clock.stamp(8)
    assert (stamp.local_date, stamp.rrn_day) == ("0201", "7032")
    assert stamp == Stamp.at(clock.now(), 8)


@pytest.mark.parametrize("speed", [0, -1, math.inf, math.nan, MAX_SPEED * 2])
def test_a_speed_out_of_range_is_refused(speed: float) -> None:
    with pytest.raises(ValueError, match="speed"):
        BusinessClock.simulated(START, speed)


def test_the_real_clock_has_one_speed() -> None:
    with pytest.raises(ValueError, match="simulated"):
        BusinessClock(speed=2)


def test_a_start_without_an_offset_is_refused() -> None:
    with pytest.raises(ValueError, match="offset"):
        BusinessClock.simulated(datetime(2027, 1, 31, 22, 59), 600)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2027-01-31T22:59:00+08:00", START),
        ("2027-01-31T14:59:00Z", START),
        ("2027-01-31 22:59+08:00", START),
        ("2027-01-31T22:59:00.5+08:00", START + timedelta(milliseconds=500)),
    ],
)
def test_clock_start_as_an_operator_types_it(text: str, expected: datetime) -> None:
    parsed = parse_clock_start(text)
    assert parsed == expected
    assert parsed.astimezone(UTC) == expected.astimezone(UTC)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2027-01-31T22:59:00", "names no UTC offset"),
        ("2027-01-31", "names no UTC offset"),
        ("tomorrow", "is not an ISO 8601 date and time"),
        ("2027-02-30T10:00:00+08:00", "is not an ISO 8601 date and time"),
        ("1999-12-31T23:59:00+08:00", "is not in 2000-2099"),
    ],
)
def test_a_bad_clock_start_says_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_clock_start(text)
