"""wallet.md's withdrawals file, written at each business date's close (settlement.md:
beside the payout file, in ``[settlement] out_dir``): ``withdrawals-<YYYYMMDD>.csv``,
one row per withdrawal approved on the date, by RRN, each row posted
``withdrawals_payable`` to ``payouts`` in the same store step (keyed by date and RRN,
so writing it again posts nothing and gives the same bytes). No bank file is awaited: a
withdrawal's answer is in the ledger store with its debit (the app desk's one step), so
every withdrawal received before the cut-off has its answer when the date closes.

One received just before the cut-off whose store step commits after the file was
written is taken by the next date's file (it was not yet in the store when this one
was read): paid a day later, never twice, never lost.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog
import trio

from switch.core.ledger import LedgerError
from switch.core.wallet import withdrawals_file, withdrawals_file_name
from switch.files import write_private
from switch.store.ledger_port import LedgerStore

log = structlog.get_logger()


class WithdrawalsFiles:
    def __init__(self, store: LedgerStore, out_dir: Path, clock: Callable[[], float]) -> None:
        self.store = store
        self.out_dir = out_dir
        self.clock = clock

    async def close(self, business_date: str) -> Path | None:
        """The date's file, written whole (0600); None when the store or the disk
        failed (logged): the next date's file takes the withdrawals no file has taken,
        and ``switch wallet withdrawals DATE`` writes this one again."""
        try:
            lines = await trio.to_thread.run_sync(
                self.store.file_withdrawals, business_date, self.clock()
            )
            path = self.out_dir / withdrawals_file_name(business_date)
            await trio.to_thread.run_sync(
                write_private, path, withdrawals_file(business_date, lines)
            )
        except (LedgerError, OSError) as exc:
            log.error("withdrawals_file_failed", business_date=business_date, error=str(exc))
            return None
        log.info("withdrawals_file_written", business_date=business_date, rows=len(lines),
                 amount_fen=sum(line.amount for line in lines))  # fmt: skip
        return path
