"""The stand-in caps across workers (risk.md, "Stand-in processing (STIP)"): with
several workers on one journal, each worker's tally follows what the journal says of
every worker's stood-in sales (docs/design.md, "Stand-in across workers")."""

from __future__ import annotations

import structlog
import trio

from switch.core.clock import BusinessClock, Stamp
from switch.core.stip import StandInDesk
from switch.store.port import Journal, JournalError

log = structlog.get_logger()


async def share_stand_ins(
    journal: Journal, desk: StandInDesk, clock: BusinessClock, utc_offset_h: int,
    interval_s: float,
) -> None:  # fmt: skip
    """Every ``interval_s``, while stand-in is on for a bank, the journal's stood-in
    sales of today and yesterday (local dates, across midnight) and every one whose
    advice has no final answer, of every worker, become this worker's tally. Runs for
    the life of the worker; a journal that cannot be read is tried again next time."""
    desk.tally.share()
    failing = False
    while True:
        await trio.sleep(interval_s)
        if not any(section.enabled for section in desk.banks.values()):
            continue
        now = clock.now()
        days = sorted({Stamp.at(now, utc_offset_h).local_date,
                       Stamp.at(now - 86400, utc_offset_h).local_date})  # fmt: skip
        try:
            rows = await journal.stood_in(days)
        except JournalError as exc:
            if not failing:
                log.warning("stand_in_share_failed", error=str(exc))
            failing = True
            continue
        failing = False
        desk.tally.replace(
            (row.rrn, row.bank, row.card_key, row.local_date, row.amount, row.standing,
             row.pending)
            for row in rows
        )  # fmt: skip
