"""The business calendar: which date a moment settles on, around midnight and the
cut-off, with forced closes, and after a restart (settlement.md)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from switch.core.calendar import (
    BusinessCalendar,
    DateClosed,
    DateNotBegun,
    date_from_mmdd,
    mmdd,
    parse_local_time,
)

CST = timedelta(hours=8)


def at(local: str) -> float:
    """Epoch seconds of a local (UTC+8) time ``YYYY-MM-DD hh:mm:ss``."""
    return (datetime.fromisoformat(local) - CST).replace(tzinfo=UTC).timestamp()


def calendar(**kwargs: object) -> BusinessCalendar:
    return BusinessCalendar(cutoff=time(23, 0), utc_offset_h=8, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("2026-11-22 00:00:00", "2026-11-22"),  # just after midnight: that local date
        ("2026-11-22 14:30:15", "2026-11-22"),  # the spec's sample sale settles on 1122
        ("2026-11-22 22:59:59", "2026-11-22"),  # the last second before the cut-off
        ("2026-11-22 23:00:00", "2026-11-23"),  # from the cut-off on: the next date
        ("2026-11-22 23:59:59", "2026-11-23"),
        ("2026-11-23 00:00:00", "2026-11-23"),  # midnight changes nothing after the cut-off
        ("2026-12-31 23:00:00", "2027-01-01"),  # across the year
        ("2028-02-28 23:30:00", "2028-02-29"),
    ],
)
def test_a_moment_belongs_to_the_local_date_before_the_cutoff_and_the_next_after(
    local: str, expected: str
) -> None:
    assert calendar().date_at(at(local)).isoformat() == expected


def test_the_sample_sale_is_1122_in_field_15() -> None:
    assert mmdd(calendar().date_at(at("2026-11-22 14:30:15"))) == "1122"


def test_a_forced_close_starts_the_next_date_from_the_next_second() -> None:
    days = calendar()
    moment = at("2026-11-22 15:00:00") + 0.4
    close = days.force_close(moment)
    assert close == DateClosed(date(2026, 11, 22), at("2026-11-22 15:00:01"), forced=True)
    # The rest of the second stays on the closed date: stamps are to the second.
    assert days.date_at(moment) == date(2026, 11, 22)
    assert days.date_at(at("2026-11-22 15:00:01")) == date(2026, 11, 23)
    # A request stamped before the close keeps its date when it is asked about later.
    assert days.date_at(at("2026-11-22 14:59:59")) == date(2026, 11, 22)
    # The new date keeps its own natural cut-off, on its own local date.
    assert days.date_at(at("2026-11-22 23:30:00")) == date(2026, 11, 23)
    assert days.date_at(at("2026-11-23 22:59:59")) == date(2026, 11, 23)
    assert days.date_at(at("2026-11-23 23:00:00")) == date(2026, 11, 24)


def test_a_forced_close_given_notice_starts_the_next_date_after_it() -> None:
    """With several workers the close is announced before it takes effect."""
    days = calendar()
    close = days.force_close(at("2026-11-22 15:00:00") + 0.4, notice_s=2.0)
    assert close.at == at("2026-11-22 15:00:03")
    assert days.date_at(at("2026-11-22 15:00:02")) == date(2026, 11, 22)
    assert days.date_at(at("2026-11-22 15:00:03")) == date(2026, 11, 23)
    assert days.close_of(date(2026, 11, 22)) == close
    assert days.close_of(date(2026, 11, 23)) is None


def test_a_date_opened_early_cannot_be_closed_before_its_day_begins() -> None:
    days = calendar()
    days.force_close(at("2026-11-22 10:00:00"))
    for moment in ("2026-11-22 11:00:00", "2026-11-22 22:59:59"):
        with pytest.raises(DateNotBegun, match=r"2026-11-23 has not begun.*2026-11-22 23:00"):
            days.force_close(at(moment))
    assert days.date_at(at("2026-11-22 12:00:00")) == date(2026, 11, 23)
    assert [close.business_date for close in days.closes] == [date(2026, 11, 22)]
    # From the 22nd's cut-off on, the 23rd is the calendar's own date: it may close early.
    second = days.force_close(at("2026-11-22 23:30:00"))
    assert second.business_date == date(2026, 11, 23)
    assert days.date_at(at("2026-11-22 23:45:00")) == date(2026, 11, 24)


def test_closes_read_back_after_a_restart_give_the_same_dates() -> None:
    before = calendar()
    close = before.force_close(at("2026-11-22 15:00:00"))
    after = calendar(closes=before.closes)
    for local in ("2026-11-22 14:00:00", "2026-11-22 16:00:00", "2026-11-23 23:30:00"):
        assert after.date_at(at(local)) == before.date_at(at(local))
    assert after.last_closed() == close.business_date


def test_dates_that_ended_while_the_switch_was_down_are_due_closes() -> None:
    days = calendar(closes=[DateClosed(date(2026, 11, 21), at("2026-11-21 23:00:00"), False)])
    # Down from the evening of the 22nd to the morning of the 25th.
    due = days.due_closes(at("2026-11-25 09:00:00"), first_open=date(2026, 11, 22))
    assert [close.business_date.isoformat() for close in due] == [
        "2026-11-22", "2026-11-23", "2026-11-24",
    ]  # fmt: skip
    assert due[0].at == at("2026-11-22 23:00:00") and not due[0].forced
    assert days.due_closes(at("2026-11-22 22:00:00"), first_open=date(2026, 11, 22)) == []


def test_natural_end_is_the_cutoff_on_the_dates_own_local_day() -> None:
    assert calendar().natural_end(date(2026, 11, 22)) == at("2026-11-22 23:00:00")
    midnight = BusinessCalendar(cutoff=time(0, 0), utc_offset_h=8)
    assert midnight.natural_end(date(2026, 11, 22)) == at("2026-11-22 00:00:00")
    assert midnight.date_at(at("2026-11-21 12:00:00")) == date(2026, 11, 22)


@pytest.mark.parametrize(
    ("text", "near", "expected"),
    [
        ("1122", date(2026, 11, 23), date(2026, 11, 22)),
        ("1231", date(2027, 1, 1), date(2026, 12, 31)),  # the year before
        ("0101", date(2026, 12, 31), date(2027, 1, 1)),  # the year after
        ("0229", date(2028, 3, 1), date(2028, 2, 29)),
    ],
)
def test_mmdd_names_the_nearest_date(text: str, near: date, expected: date) -> None:
    assert date_from_mmdd(text, near) == expected


def test_local_times_parse() -> None:
    assert parse_local_time("23:00") == time(23, 0)
    assert parse_local_time("03:05") == time(3, 5)
