"""The credit line's part of each close (credit.md, "Overdue"; settlement.md: "the close
of a date also runs credit.md's close"): at every business date closed, the ledger
store closes every credit account (penalties, freezes, statements, their postings) and
the statements made are written as the day's file. Hooked into ``SettlementService``'s
close beside the pre-authorisations' expiry; a store that fails leaves the accounts
unclosed, and the next close catches them up (each account closes each date in turn).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import msgspec
import structlog
import trio

from switch.core.credit.billing import CreditTotals
from switch.core.credit.plan import Terms
from switch.core.credit.statement_file import statement_file, statement_file_name
from switch.core.ledger import AccountsBalance, LedgerError, LedgerFigures, WalletTotals
from switch.files import write_private
from switch.store.credit_store import ClosedDay
from switch.store.ledger_store import LedgerStoreBase

log = structlog.get_logger()


class CreditBilling:
    def __init__(
        self,
        store: LedgerStoreBase,
        terms: Terms,
        out_dir: Path,
        clock: Callable[[], float],
        *,
        wallet_totals_interval_s: float = 60.0,
    ) -> None:
        self.store = store
        self.terms = terms
        self.out_dir = out_dir
        self.clock = clock
        self._lock = trio.Lock()
        self.last: ClosedDay | None = None
        self.wallet_totals_interval_s = wallet_totals_interval_s
        """The wallets' total is read again at most this often (``[admin]``)."""
        self._wallets: WalletTotals | None = None
        self._wallets_due = 0.0
        """When (trio's clock) the wallets' total is to be read again."""

    async def close(self, business_date: str) -> ClosedDay | None:
        """The credit close of a business date; its statements' file when the next day
        is a statement date of any account. None when the store failed (logged)."""
        day = date.fromisoformat(business_date)
        async with self._lock:
            try:
                closed = await trio.to_thread.run_sync(
                    self.store.credit_close, day, self.terms, self.clock()
                )
                statement_date = day + timedelta(1)
                rows = await trio.to_thread.run_sync(self.store.credit_statements, statement_date)
                if rows:
                    data = statement_file((row.customer_id, row.statement) for row in rows)
                    path = self.out_dir / statement_file_name(statement_date)
                    await trio.to_thread.run_sync(write_private, path, data)
            except (LedgerError, ValueError, msgspec.MsgspecError, OSError) as exc:
                # The store down, an account it cannot read, the file not written: the
                # switch goes on, and the next close catches every account up (each
                # closes each date in turn); a statement file is written again then
                # only if that close makes statements.
                log.error("credit_close_failed", business_date=business_date, error=str(exc))
                return None
        self.last = closed
        log.info(
            "credit_closed", business_date=business_date, accounts=closed.accounts,
            statements=closed.statements, penalties_fen=closed.penalties_fen,
            fees_fen=closed.fees_fen, frozen=closed.frozen,
        )  # fmt: skip
        return closed

    async def ledger(self) -> LedgerFigures:
        """The ledger's transfers by state and sums per unit, for the metrics, with the
        wallets' total as read at most ``wallet_totals_interval_s`` ago: it reads every
        wallet's account, so not at each scrape (raises LedgerError)."""
        async with self._lock:
            figures = await trio.to_thread.run_sync(self.store.figures)
            if self._wallets is None or trio.current_time() >= self._wallets_due:
                self._wallets = await trio.to_thread.run_sync(self.store.wallet_totals)
                self._wallets_due = trio.current_time() + self.wallet_totals_interval_s
        return msgspec.structs.replace(figures, wallets=self._wallets)

    async def balances(self, account: str | None) -> list[AccountsBalance]:
        """The on-us ledger's balances for the operator (``LedgerStoreBase.balances``;
        raises LedgerError)."""
        async with self._lock:
            return await trio.to_thread.run_sync(self.store.balances, account)

    async def totals(self) -> CreditTotals:
        """The credit line's figures for the metrics (raises LedgerError)."""
        store = self.store

        def read() -> CreditTotals:
            totals = store.credit_totals()
            return msgspec.structs.replace(totals, cobrand=store.cobrand_totals())

        async with self._lock:
            return await trio.to_thread.run_sync(read)
