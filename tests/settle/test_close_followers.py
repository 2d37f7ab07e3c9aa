"""Several workers, one business calendar: worker 0 closes the dates; the others read
its closes from the settlement store. An operator's close is recorded CLOSE_NOTICE_S
before it takes effect, so a follower polling the store dates by it from the same
second as worker 0, and no cutover leaves before it takes effect. Under trio's
MockClock, the store shared as the workers' database is: SQLite's files, or the
PostgreSQL database (where several workers run)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, time
from functools import partial

import trio

from switch.core.calendar import BusinessCalendar, DateClosed
from switch.net.settlement import CLOSE_NOTICE_S, follow_closes
from tests.settle.ledger_days import Place
from tests.settle.test_business_day import local, run_with_clock, service, stores, until

NOTICE_S = 30 * CLOSE_NOTICE_S


def test_an_operators_close_is_followed_by_the_other_workers_before_it_takes_effect(
    place: Place,
) -> None:
    async def main(wall: Callable[[], float]) -> None:
        settlement, banks = service(place, wall)
        # Far above the production notice: under autojump the mock clock runs on while
        # the store's thread works, and a loaded machine's thread outran 2 s of it.
        settlement.close_notice_s = NOTICE_S
        store, _ = stores(place)  # a follower's own connection to the store
        store.open()
        follower = BusinessCalendar(cutoff=time(23, 0), utc_offset_h=8, closes=store.closes())
        closed: list[DateClosed] = []

        async def operator() -> None:
            closed.append(await settlement.close_now())

        async with trio.open_nursery() as nursery:
            await nursery.start(settlement.journal.run)
            await nursery.start(settlement.run)
            nursery.start_soon(partial(follow_closes, store, follower, interval_s=0.5))
            asked_at = wall()
            nursery.start_soon(operator)
            await until(lambda: follower.close_of(date(2026, 11, 22)) is not None)
            close = follower.close_of(date(2026, 11, 22))
            assert close is not None and close.forced
            assert wall() < close.at and close.at >= asked_at + NOTICE_S
            assert banks["icbc"].asked == []  # not before it takes effect
            for calendar in (follower, settlement.calendar):
                assert calendar.date_at(close.at - 1) == date(2026, 11, 22)
                assert calendar.date_at(close.at) == date(2026, 11, 23)
            await until(lambda: len(banks["icbc"].asked) == 1)
            assert banks["icbc"].asked[0][1] >= close.at
            await until(lambda: closed == [close])
            nursery.cancel_scope.cancel()
        settlement.store.close()
        store.close()

    run_with_clock("2026-11-22 15:00:00", main)


def test_a_follower_takes_the_natural_and_forced_closes_it_did_not_know(place: Place) -> None:
    async def main(wall: Callable[[], float]) -> None:
        store, _ = stores(place)
        store.open()
        follower = BusinessCalendar(cutoff=time(23, 0), utc_offset_h=8, closes=store.closes())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(follow_closes, store, follower, interval_s=0.5))
            natural = DateClosed(date(2026, 11, 22), local("2026-11-22 23:00:00"), forced=False)
            forced = DateClosed(date(2026, 11, 23), local("2026-11-23 10:00:00"), forced=True)
            for close in (natural, forced):
                store.record_close(close)
            await until(lambda: len(follower.closes) == 2)
            assert follower.closes == [natural, forced]
            assert follower.date_at(local("2026-11-23 10:00:00")) == date(2026, 11, 24)
            nursery.cancel_scope.cancel()
        store.close()

    run_with_clock("2026-11-22 15:00:00", main)
