"""The settlement store's port: what the settlement service, the admin and the operator
ask of it (settlement.md), one implementation per journal engine (``sqlite/`` settles
a SQLite journal it attaches, ``postgresql/`` one in the journal's own database).

Plain blocking calls: the trio layer runs them in a worker thread, one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import date
from typing import Any, Protocol

from switch.core.calendar import DateClosed
from switch.core.merchants import MerchantTerms
from switch.core.settlement import (
    ClearingFileStatus,
    LedgerBalance,
    LedgerOrder,
    PayoutLine,
    ReconLine,
    ReversalOrder,
    SettlementStatus,
)

StepHook = Callable[[str, float], None]
"""Called after each statement of a settlement with the statement and its seconds."""

CLEARING_COLUMNS = (
    "mti", "processing_code", "stan", "transmission", "rrn", "amount", "currency",
    "response_code", "auth_code", "terminal_id", "merchant_id", "masked_pan", "direction",
)  # fmt: skip
"""The order of a clearing record's fields, as ``accept_clearing_file`` takes them."""


class SettlementError(RuntimeError):
    """The settlement store cannot do what was asked; says why (for the operator)."""


class LedgerUnbalanced(SettlementError):
    """A settlement's postings did not balance: it was rolled back whole."""


class SettlementStore(Protocol):
    """Business days, cutovers, clearing files, the settlement of a date (payouts,
    reconciliation, ledger, reversal orders) and what the operator reads of them."""

    on_step: StepHook | None

    def open(self) -> None: ...
    def close(self) -> None: ...

    # business days
    def closes(self) -> list[DateClosed]: ...
    def first_open_date(self) -> date | None: ...
    def record_open(self, business_date: date, at: float) -> None: ...
    def record_close(self, close: DateClosed) -> None: ...
    def record_cutover(self, business_date: str, bank: str, code: str, at: float) -> None: ...
    def cutovers(self, business_date: str) -> dict[str, str]: ...
    def unsettled_closed_dates(self) -> list[str]: ...
    def is_settled(self, business_date: str) -> bool: ...
    def is_closed(self, business_date: str) -> bool: ...

    # clearing files
    def clearing_file(self, bank: str, business_date: str) -> ClearingFileStatus | None: ...
    def accept_clearing_file(
        self,
        bank: str,
        business_date: str,
        name: str,
        records: Iterable[Sequence[Any]],
        at: float,
    ) -> int: ...
    def reject_clearing_file(
        self, bank: str, business_date: str, name: str, reason: str, at: float
    ) -> None: ...
    def clearing_files(self, business_date: str) -> list[ClearingFileStatus]: ...

    # settling a date
    def settle(
        self,
        business_date: str,
        merchants: Sequence[MerchantTerms],
        *,
        at: float,
        own_merchants: Sequence[str] = (),
    ) -> bool: ...
    def record_files_written(self, business_date: str, at: float) -> None: ...
    def payout_lines(self, business_date: str) -> list[PayoutLine]: ...
    def recon_lines(self, business_date: str) -> list[ReconLine]: ...

    # reversals decided
    def pending_reversal_orders(self) -> list[ReversalOrder]: ...
    def reversal_orders_handed(self, rrns: Sequence[str], at: float) -> None: ...

    # the on-us ledger's transfers decided
    def pending_ledger_orders(self) -> list[LedgerOrder]: ...
    def ledger_orders_handed(self, orders: Sequence[LedgerOrder], at: float) -> None: ...

    # what the operator reads
    def status(self, business_date: str, banks: Sequence[str]) -> SettlementStatus: ...
    def latest_closed_date(self) -> str | None: ...
    def ledger_balances(self, account: str | None = None) -> list[LedgerBalance]: ...
    def ledger_totals(self) -> tuple[int, int]: ...
