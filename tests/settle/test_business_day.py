"""The business day's clock, under trio's MockClock: the cut-off closes the date at
23:00 local and not at midnight, a forced cut-off starts the next date at once, closes
survive a restart (dates that ended while the switch was down are closed and cut over
when it comes back), and a date whose files never come settles at the deadline. On each
engine: SQLite's files, or the journal's PostgreSQL database holding the store too."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from time import perf_counter

import trio
import trio.testing

from switch.core.calendar import BusinessCalendar
from switch.core.clock import BusinessClock
from switch.core.merchants import MerchantBook
from switch.core.settlement import SettlementStatus
from switch.net.settlement import SettlementService
from switch.store.port import Journal
from switch.store.postgresql import JournalDatabase, PostgresJournal
from switch.store.postgresql.settlement import PostgresSettlementStore
from switch.store.settlement_port import SettlementStore
from switch.store.sqlite import JournalFile, SqliteJournal
from switch.store.sqlite.settlement import SqliteSettlementStore
from tests.conftest import thread_aware_mock_clock
from tests.settle.ledger_days import Place

CST = timedelta(hours=8)
WRITTEN_WITHIN_S = 30.0
BANKS = ["abc", "icbc"]


def local(text: str) -> float:
    return (datetime.fromisoformat(text) - CST).replace(tzinfo=UTC).timestamp()


class CutoverRecorder:
    """A bank connector's cutover, as the service uses it: what was asked, and when."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.asked: list[tuple[date, float]] = []

    async def cutover(self, business_date: date) -> str:
        self.asked.append((business_date, self.clock()))
        return "00"


def stores(place: Place) -> tuple[SettlementStore, Journal]:
    """The settlement store and the journal of ``place``, as ``switch run`` opens them."""
    store: SettlementStore
    journal: Journal
    if place.dsn is None:
        folder = place.folder
        store = SqliteSettlementStore(folder / "settlement.sqlite3", folder / "journal.sqlite3")
        journal = SqliteJournal(JournalFile(folder / "journal.sqlite3"), durability="sync",
                                queue_size=16, max_group=16)  # fmt: skip
    else:
        store = PostgresSettlementStore(place.dsn)
        journal = PostgresJournal(JournalDatabase(place.dsn), durability="sync",
                                  queue_size=16, max_group=16)  # fmt: skip
    return store, journal


def service(
    place: Place, clock: Callable[[], float], *, speed: float = 1.0
) -> tuple[SettlementService, dict[str, CutoverRecorder]]:
    folder = place.folder
    store, journal = stores(place)
    store.open()
    calendar = BusinessCalendar(cutoff=time(23, 0), utc_offset_h=8, closes=store.closes())
    connectors = {bank: CutoverRecorder(clock) for bank in BANKS}
    return SettlementService(
        store=store, journal=journal, calendar=calendar, merchants=MerchantBook.open_to_all(),
        connectors=connectors,  # type: ignore[arg-type]
        clearing_dir=lambda bank: folder / "clearing", out_dir=folder / "out",
        banks=lambda: BANKS, institution_of=lambda bank: "0", settle_deadline="03:00",
        utc_offset_h=8, nudge=lambda bank: None, clock=clock, speed=speed,
    ), connectors  # fmt: skip


async def until(condition: Callable[[], bool]) -> None:
    """Polls for up to WRITTEN_WITHIN_S of real time: the store works in threads (or, on
    PostgreSQL, a socket away), during which the mock clock jumps on."""
    deadline = perf_counter() + WRITTEN_WITHIN_S
    while not condition():
        if perf_counter() >= deadline:
            raise AssertionError("never happened")
        await trio.sleep(0.001)


async def until_real(
    condition: Callable[[], bool], *, step_s: float = 0.001, state: Callable[[], object] = str
) -> None:
    """Polls for up to WRITTEN_WITHIN_S of real time (as written() does): for work of
    several store calls, which a loaded machine's PostgreSQL takes a while to do."""
    deadline = perf_counter() + WRITTEN_WITHIN_S
    while not condition():
        assert perf_counter() < deadline, f"never happened: {state()}"
        await trio.sleep(step_s)


async def written(settlement: SettlementService, business_date: str) -> SettlementStatus:
    """The date's status once its files are written, asked again and again for up to
    WRITTEN_WITHIN_S of real time (a loaded machine's PostgreSQL takes a while to
    settle even an empty date; the mock clock barely moves meanwhile)."""
    deadline = perf_counter() + WRITTEN_WITHIN_S
    while (status := await settlement.status(business_date)).files_written_at is None:
        assert perf_counter() < deadline, f"{business_date}'s files never written"
    return status


def run_with_clock(start: str, main: Callable[..., object], *args: object) -> None:
    """Runs ``main(wall_clock, *args)`` under an autojumping MockClock whose wall time
    starts at the local time ``start``."""
    mock = trio.testing.MockClock(autojump_threshold=0)
    base = local(start)

    def wall() -> float:
        return base + trio.current_time()

    trio.run(main, wall, *args, clock=mock)  # type: ignore[arg-type]


def test_the_cutoff_closes_at_23_local_midnight_changes_nothing(place: Place) -> None:
    async def main(wall: Callable[[], float]) -> None:
        settlement, banks = service(place, wall)
        async with trio.open_nursery() as nursery:
            await nursery.start(settlement.journal.run)
            await nursery.start(settlement.run)
            assert settlement.calendar.date_at(wall()) == date(2026, 11, 22)
            await trio.sleep(local("2026-11-22 23:00:00") - wall() - 0.5)
            assert banks["icbc"].asked == []  # not yet
            await until(lambda: len(banks["icbc"].asked) == 1 and len(banks["abc"].asked) == 1)
            # The cut-off: 22 November closed at 23:00 and cut over at every bank.
            assert [d for d, _ in banks["icbc"].asked] == [date(2026, 11, 22)]
            closes = {close.business_date: close for close in settlement.calendar.closes}
            assert closes[date(2026, 11, 22)].at == local("2026-11-22 23:00:00")
            # (the mock clock runs on while the store works, in threads or on PostgreSQL's
            # socket: seconds, a minute on a loaded machine, not hours)
            assert 0 <= banks["abc"].asked[0][1] - local("2026-11-22 23:00:00") < 60
            assert settlement.calendar.date_at(wall()) == date(2026, 11, 23)
            # Midnight is not a cut-off.
            await trio.sleep(local("2026-11-23 00:30:00") - wall())
            assert len(banks["icbc"].asked) == 1
            assert settlement.calendar.date_at(wall()) == date(2026, 11, 23)
            # No bank's file came: at 03:00 on the 23rd the 22nd settles all the same.
            await trio.sleep(local("2026-11-23 02:59:58") - wall())
            assert (await settlement.status("2026-11-22")).settled_at is None
            await trio.sleep(3)
            status = await written(settlement, "2026-11-22")
            assert status.settled_at is not None and status.missing == BANKS
            assert status.settled_at >= local("2026-11-23 03:00:00")
            nursery.cancel_scope.cancel()
        settlement.store.close()

    run_with_clock("2026-11-22 22:00:00", main)


def test_a_forced_cutoff_opens_the_next_date_and_survives_a_restart(place: Place) -> None:
    async def before(wall: Callable[[], float]) -> None:
        settlement, banks = service(place, wall)
        async with trio.open_nursery() as nursery:
            await nursery.start(settlement.journal.run)
            await nursery.start(settlement.run)
            closed = await settlement.close_now()
            await until(lambda: len(banks["icbc"].asked) == 1)
            assert closed.business_date == date(2026, 11, 22) and closed.forced
            assert [d for d, _ in banks["icbc"].asked] == [date(2026, 11, 22)]
            # From the next second on it is the 23rd, though the local date is the 22nd.
            assert settlement.calendar.date_at(wall()) == date(2026, 11, 23)
            nursery.cancel_scope.cancel()
        settlement.store.close()

    run_with_clock("2026-11-22 15:00:00", before)

    async def after(wall: Callable[[], float]) -> None:
        # Back on the 25th at 09:00: the 23rd and the 24th ended while it was down.
        settlement, banks = service(place, wall)
        assert settlement.calendar.date_at(local("2026-11-22 16:00:00")) == date(2026, 11, 23)
        async with trio.open_nursery() as nursery:
            await nursery.start(settlement.journal.run)
            await nursery.start(settlement.run)
            await until(lambda: len(banks["icbc"].asked) == 2)
            assert [d for d, _ in banks["icbc"].asked] == [date(2026, 11, 23), date(2026, 11, 24)]
            assert settlement.calendar.date_at(wall()) == date(2026, 11, 25)
            closes = {c.business_date: c for c in settlement.calendar.closes}
            assert closes[date(2026, 11, 22)].forced
            assert closes[date(2026, 11, 23)].at == local("2026-11-23 23:00:00")
            nursery.cancel_scope.cancel()
        settlement.store.close()

    run_with_clock("2026-11-25 09:00:00", after)


def test_on_a_simulated_clock_each_cutoff_happens_as_the_business_clock_passes_it(
    place: Place,
) -> None:
    """A day a minute (--clock-speed 1440): the service waits real seconds = business
    seconds / speed, so each date closes at its own 23:00, is cut over then, and settles
    at its own 03:00 deadline, three dates in three (mock) minutes."""

    async def main() -> None:
        clock = BusinessClock.simulated(
            datetime.fromisoformat("2027-01-30T22:00:00+08:00"), 1440,
            monotonic=trio.current_time,
        )  # fmt: skip
        settlement, banks = service(place, clock.now, speed=clock.speed)
        async with trio.open_nursery() as nursery:
            await nursery.start(settlement.journal.run)
            await nursery.start(settlement.run)
            assert settlement.calendar.date_at(clock.now()) == date(2027, 1, 30)
            # 1 February's 23:00 is 49 business hours away: 122.5 real seconds. Looked at
            # often: the mock clock jumps to the next deadline while a thread works.
            await until_real(
                lambda: len(banks["icbc"].asked) >= 3,
                step_s=0.05,
                state=lambda: banks["icbc"].asked,
            )
            asked = banks["icbc"].asked[:3]
            days = [date(2027, 1, 30), date(2027, 1, 31), date(2027, 2, 1)]
            assert [day for day, _ in asked] == days
            closes = {close.business_date: close for close in settlement.calendar.closes}
            for day, at in asked:
                cutoff = local(f"{day} 23:00:00")
                assert closes[day].at == cutoff and not closes[day].forced
                # Cut over once the clock passed 23:00, and in order. How long after
                # depends on the store: the clock waits for the SQLite store's threads,
                # but runs on while PostgreSQL answers on a socket, a few seconds that
                # are business days here on a loaded machine. Sleeping business seconds
                # as real ones, the service would have slept 60 business days before
                # its first cut-off.
                assert cutoff <= at < cutoff + 30 * 86400, (day, at - cutoff)
            assert [at for _, at in asked] == sorted(at for _, at in asked)
            status = await written(settlement, "2027-01-30")
            assert status.settled_at is not None and status.missing == BANKS
            assert status.settled_at >= local("2027-01-31 03:00:00")
            nursery.cancel_scope.cancel()
        settlement.store.close()

    trio.run(main, clock=thread_aware_mock_clock())


def test_cutoffs_the_clock_passed_at_once_close_each_date_at_its_own(place: Place) -> None:
    """The business clock passed three cut-offs while the service waited for the first
    (a fast simulated clock, or a machine suspended): each of those dates closes at its
    own cut-off and is cut over, in order, none skipped."""

    async def main(wall: Callable[[], float]) -> None:
        jumped = [0.0]
        settlement, banks = service(place, lambda: wall() + jumped[0])
        async with trio.open_nursery() as nursery:
            await nursery.start(settlement.journal.run)
            await nursery.start(settlement.run)
            await trio.sleep(1800)  # waiting for the 22nd's cut-off, the clock jumps:
            jumped[0] = 2 * 86400.0 + 1800  # 22:30 on the 22nd reads 23:00 on the 24th
            await trio.sleep(1800)  # the wait ends (at 23:30 on the 24th)
            await until_real(
                lambda: len(banks["icbc"].asked) == 3, state=lambda: banks["icbc"].asked
            )
            days = [date(2026, 11, 22), date(2026, 11, 23), date(2026, 11, 24)]
            assert [day for day, _ in banks["icbc"].asked] == days
            closes = {close.business_date: close for close in settlement.calendar.closes}
            assert [closes[day].at for day in days] == [local(f"{day} 23:00:00") for day in days]
            assert settlement.calendar.date_at(wall() + jumped[0]) == date(2026, 11, 25)
            nursery.cancel_scope.cancel()
        settlement.store.close()

    run_with_clock("2026-11-22 22:00:00", main)
