"""Settlement's corrections of the switch's own merchants, under trio (settlement.md,
"Merchants"): once a date is settled, each reconciliation line of ``[credit]
own_merchant_id`` whose category changes the money undoes its repayment by card, and
books it again at the bank's amount for a mismatch (credit.md, "Repayment"). A payment
to a card of the same merchant is co-brand's (``CobrandDesk.settled``); top-ups are
on-us settlement's. What a line means is decided here; the money moves in the ledger
store's keyed steps (``switch/store/own_store.py``), so a date settled again corrects
nothing twice."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Protocol

import structlog

from switch.core.settlement import ReconLine

log = structlog.get_logger()


class OwnStore(Protocol):
    """The ledger store's steps used here (``switch/store/own_store.py``)."""

    def credit_repay_settled(self, rrn: str, bank_fen: int, at: float) -> int: ...


def final_bank_fen(line: ReconLine) -> int | None:
    """What the bank finally pays of a line's transaction when its category changes the
    money, else None: a ``switch_only`` whose reversal is queued after its hold, 0; an
    ``amount_mismatch``, the bank's amount (settlement.md)."""
    if line.category == "switch_only" and line.action == "reversal_queued":
        return 0
    if line.category == "amount_mismatch" and line.bank_fen is not None:
        return line.bank_fen
    return None


class OwnMerchantSettlement:
    """The corrections of repayments by card at settlement (credit.md)."""

    def __init__(
        self,
        store: OwnStore,
        call: Callable[[Callable[[], Any]], Awaitable[Any]],
        *,
        own_merchant_id: str,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.call = call
        """Runs a store step in the store's thread, one at a time (``LedgerDesk.call``)."""
        self.own_merchant_id = own_merchant_id
        self.wall_clock = wall_clock
        self.corrected = 0
        """Repayments by card a settlement undid or booked again."""

    async def settled(self, business_date: str, recon: list[ReconLine]) -> None:
        """A date settled: each repayment by card that the bank finally does not pay is
        undone, one it pays at another amount booked again at that amount. Never raises
        (logged per line)."""
        store = self.store
        for line in recon:
            bank_fen = final_bank_fen(line)
            if bank_fen is None or line.merchant_id != self.own_merchant_id:
                continue
            try:
                moved = await self.call(
                    partial(store.credit_repay_settled, line.rrn, bank_fen, self.wall_clock())
                )
            except Exception as exc:  # one line's correction: the others go on
                log.error("card_repay_correction_failed", business_date=business_date,
                          rrn=line.rrn, error=str(exc), error_type=type(exc).__name__)  # fmt: skip
                continue
            if moved:
                self.corrected += 1
                log.info("card_repay_corrected", business_date=business_date, rrn=line.rrn,
                         category=line.category, bank_fen=bank_fen, moved_fen=moved)  # fmt: skip


def chain(
    *hooks: Callable[[str, list[ReconLine]], Awaitable[object]] | None,
) -> Callable[[str, list[ReconLine]], Awaitable[None]] | None:
    """Several ``on_settled`` hooks as one, called in order (None: none given)."""
    given: Sequence[Callable[[str, list[ReconLine]], Awaitable[object]]] = [
        hook for hook in hooks if hook is not None
    ]
    if not given:
        return None

    async def settled(business_date: str, recon: list[ReconLine]) -> None:
        for hook in given:
            await hook(business_date, recon)

    return settled
