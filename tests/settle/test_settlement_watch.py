"""What an operator alerts on in settlement (``/metrics``): a clearing file rejected, a
date not settled past its deadline, the reconciliation's categories by count and
amount, the payouts. The settlement service under trio's MockClock, over real files
and both journal engines; the metric families made from what it reads."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, time
from types import SimpleNamespace
from typing import Any, cast

import trio
from prometheus_client.metrics_core import Metric

from switch.admin.metrics import _settlement
from switch.admin.status import StatusDocument
from switch.core.calendar import BusinessCalendar
from switch.core.merchants import MerchantBook
from switch.core.settlement import SettlementWatch
from switch.net.settlement import SettlementService
from tests.settle.ledger_days import Place
from tests.settle.test_business_day import CutoverRecorder, local, run_with_clock, stores
from tests.settle.test_clearing_files import _clearing_file, _path, _record, _tick

DAY = date(2026, 11, 22)


def _service(place: Place, clock: Callable[[], float], banks: list[str]) -> SettlementService:
    store, journal = stores(place)
    store.open()
    calendar = BusinessCalendar(cutoff=time(23, 0), utc_offset_h=8, closes=store.closes())
    return SettlementService(
        store=store, journal=journal, calendar=calendar, merchants=MerchantBook.open_to_all(),
        connectors={bank: CutoverRecorder(clock) for bank in banks},  # type: ignore[misc]
        clearing_dir=lambda bank: place.folder / "clearing", out_dir=place.folder / "out",
        banks=lambda: banks, institution_of=lambda bank: "0", settle_deadline="03:00",
        utc_offset_h=8, nudge=lambda bank: None, clock=clock,
    )  # fmt: skip


def families(watch: SettlementWatch) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The settlement's metric families, each sample by its labels."""
    document = cast(StatusDocument, SimpleNamespace(settlement=watch))
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    family: Metric
    for family in _settlement(document):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_rejected_file_overdue_date_recon_and_payouts_are_in_the_metrics(place: Place) -> None:
    (place.folder / "clearing").mkdir()
    # good: one sale the switch never journaled; bad: a folder where its file should be.
    _path(place, "good").write_bytes(_clearing_file(_record("532614000001", "622202******1111")))
    _path(place, "bad").mkdir()
    seen: dict[str, Any] = {}

    async def main(wall: Callable[[], float]) -> None:
        settlement = _service(place, wall, ["bad", "good"])
        async with trio.open_nursery() as nursery:
            await nursery.start(settlement.journal.run)
            service = trio.CancelScope()

            async def run_service(task_status: trio.TaskStatus[None]) -> None:
                with service:
                    await settlement.run(task_status=task_status)

            await nursery.start(run_service)
            await trio.sleep(local("2026-11-22 23:00:00") - wall() + 2)
            # While the store's threads answer, a near deadline keeps the mock clock
            # from jumping on to the deadline (where the service would settle the date).
            ticking = trio.CancelScope()
            nursery.start_soon(_tick, ticking)
            while len((await settlement.status(DAY.isoformat())).files) < 2:
                await trio.sleep(0.001)
            seen["closed"] = await settlement.watch()
            ticking.cancel()
            assert wall() < local("2026-11-23 03:00:00")
            # The service stops (a settler that keeps failing would do the same): at
            # 03:30 the date is half an hour past its deadline, unsettled.
            service.cancel()
            await trio.sleep(max(0.0, local("2026-11-23 03:30:00") - wall()))
            seen["overdue"] = await settlement.watch()
            await settlement.settle(DAY.isoformat())
            seen["settled"] = await settlement.watch()
            nursery.cancel_scope.cancel()
        settlement.store.close()

    run_with_clock("2026-11-22 22:00:00", main)

    closed = families(seen["closed"])
    assert closed["payswitch_settlement_unsettled_dates"] == {(): 1}
    assert closed["payswitch_settlement_overdue_dates"] == {(): 0}
    assert closed["payswitch_settlement_latest_settled"] == {(): 0}
    assert closed["payswitch_clearing_file"] == {
        (("bank", "bad"), ("status", "rejected")): 1,
        (("bank", "good"), ("status", "accepted")): 1,
    }

    overdue = families(seen["overdue"])
    assert overdue["payswitch_settlement_overdue_dates"] == {(): 1}
    assert overdue["payswitch_settlement_overdue_seconds"][()] >= 1800

    settled = families(seen["settled"])
    assert settled["payswitch_settlement_unsettled_dates"] == {(): 0}
    assert settled["payswitch_settlement_overdue_seconds"] == {(): 0}
    assert settled["payswitch_settlement_latest_settled"] == {(): 1}
    counts = settled["payswitch_recon_transactions"]
    assert sum(counts.values()) == 1  # the sale only the bank had
    [labels] = counts
    assert settled["payswitch_recon_bank_amount_fen"][labels] == 10_000
    assert settled["payswitch_recon_switch_amount_fen"][labels] == 0
    assert settled["payswitch_settlement_payout_fen"] == {(): 0}  # nothing the switch approved
    assert "payswitch_settlement_merchants" in settled
