"""The settlement store (``settlement_port.py``) written once for both engines: business
days, clearing files, the settlement of a date, payouts, the reconciliation, reversal
orders and the ledger, over the statements of ``settlement_sql.py``. Each engine's
``settlement.py`` gives its statements and how it connects, runs a statement, holds a
transaction, settles in one snapshot of the journal, and loads a file's records.

Plain blocking calls: the trio layer runs them in a worker thread.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import date, timedelta
from typing import Any, ClassVar, TypeAlias

from switch.core.calendar import DateClosed
from switch.core.merchants import DEFAULT_PROFILE, MerchantTerms
from switch.core.settlement import (
    HOLD_DATES,
    CategoryCount,
    ClearingFileStatus,
    LedgerBalance,
    LedgerOrder,
    PayoutLine,
    ReconLine,
    ReversalOrder,
    SettlementStatus,
)
from switch.store.settlement_port import LedgerUnbalanced, SettlementError, StepHook
from switch.store.settlement_sql import SettlementSql

Row: TypeAlias = Mapping[str, Any]
"""A row as either engine gives it, read by column name."""
Parameters: TypeAlias = Sequence[Any] | dict[str, Any]


def _day(text: str, days: int) -> str:
    return (date.fromisoformat(text) + timedelta(days=days)).isoformat()


class SettlementStoreBase(ABC):
    """The settlement store port, but for what each engine gives (the abstract methods)."""

    sql: ClassVar[SettlementSql]
    """The engine's statements."""
    errors: ClassVar[tuple[type[Exception], ...]]
    """What the engine's driver raises when a statement fails."""
    label: ClassVar[str]
    """How the operator's messages name the store."""

    on_step: StepHook | None = None
    """A debugging hook (the bench's): called after each statement of a settlement with
    the statement and the seconds it took."""

    # -- what each engine gives ---------------------------------------------------------

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _execute(self, statement: str, parameters: Parameters = ()) -> Iterable[Row]:
        """Runs a statement on the store's connection; its rows."""

    @abstractmethod
    def _executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None: ...

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[None]:
        """A write transaction: committed at the block's end, rolled back on an error."""

    @abstractmethod
    def _settling(self) -> AbstractContextManager[None]:
        """The transaction of a date's settlement: one consistent snapshot of the
        journal, and one settlement at a time."""

    @abstractmethod
    def _insert_records(
        self, bank: str, business_date: str, records: Iterable[Sequence[Any]]
    ) -> int:
        """Loads a file's records (each in ``CLEARING_COLUMNS`` order) inside the
        caller's transaction; their count."""

    @abstractmethod
    def _take_turns_with_settlements(self) -> None:
        """Inside a transaction that changes the clearing records: waits for a
        settlement under way (whose snapshot would miss the change)."""

    @staticmethod
    def _cause(exc: BaseException) -> str:
        """A driver's error as the operator reads it (never a password)."""
        return str(exc)

    # -- rows -----------------------------------------------------------------------

    def _first(self, statement: str, parameters: Parameters = ()) -> Row | None:
        return next(iter(self._execute(statement, parameters)), None)

    def _one(self, statement: str, parameters: Parameters = ()) -> Row:
        row = self._first(statement, parameters)
        assert row is not None  # an aggregate's row
        return row

    # -- business days --------------------------------------------------------------

    def closes(self) -> list[DateClosed]:
        try:  # read by every worker, polling: its failure is theirs to log and retry
            rows = list(self._execute(self.sql.closes))
        except self.errors as exc:
            raise SettlementError(f"{self.label}: {self._cause(exc)}") from exc
        return [
            DateClosed(
                date.fromisoformat(row["business_date"]), row["closed_at"], bool(row["forced"])
            )
            for row in rows
        ]

    def first_open_date(self) -> date | None:
        """The earliest date opened and not closed."""
        first = self._one(self.sql.first_open_date)["d"]
        return None if first is None else date.fromisoformat(first)

    def record_open(self, business_date: date, at: float) -> None:
        self._execute(self.sql.open_date, (business_date.isoformat(), at))

    def record_close(self, close: DateClosed) -> None:
        day = close.business_date.isoformat()
        with self._transaction():
            self._execute(self.sql.open_date, (day, close.at))
            self._execute(self.sql.close_date, (close.at, close.forced, day))
            next_day = (close.business_date + timedelta(days=1)).isoformat()
            self._execute(self.sql.open_date, (next_day, close.at))

    def record_cutover(self, business_date: str, bank: str, code: str, at: float) -> None:
        self._execute(self.sql.put_cutover, (business_date, bank, code, at))

    def cutovers(self, business_date: str) -> dict[str, str]:
        rows = self._execute(self.sql.cutovers, (business_date,))
        return {row["bank"]: row["code"] for row in rows}

    def unsettled_closed_dates(self) -> list[str]:
        return [row["business_date"] for row in self._execute(self.sql.unsettled_closed_dates)]

    def is_settled(self, business_date: str) -> bool:
        row = self._first(self.sql.settled_at, (business_date,))
        return row is not None and row["settled_at"] is not None

    def is_closed(self, business_date: str) -> bool:
        row = self._first(self.sql.closed_at, (business_date,))
        return row is not None and row["closed_at"] is not None

    # -- clearing files --------------------------------------------------------------

    def clearing_file(self, bank: str, business_date: str) -> ClearingFileStatus | None:
        row = self._first(self.sql.clearing_file, (bank, business_date))
        return None if row is None else ClearingFileStatus(**row)

    def accept_clearing_file(
        self,
        bank: str,
        business_date: str,
        name: str,
        records: Iterable[Sequence[Any]],
        at: float,
    ) -> int:
        """Keeps a file's records (each in ``CLEARING_COLUMNS`` order), replacing a
        rejected earlier delivery; an accepted file is final. Returns the count kept."""
        with self._transaction():
            self._take_turns_with_settlements()
            known = self._first(self.sql.clearing_file_status, (bank, business_date))
            if known is not None and known["status"] == "accepted":
                raise SettlementError(f"{bank}'s file of {business_date} is already accepted")
            self._execute(self.sql.clear_records, (bank, business_date))
            count = self._insert_records(bank, business_date, records)
            self._execute(
                self.sql.put_clearing_file,
                (bank, business_date, name, "accepted", None, count, at),
            )
        return count

    def reject_clearing_file(
        self, bank: str, business_date: str, name: str, reason: str, at: float
    ) -> None:
        self._execute(
            self.sql.put_clearing_file, (bank, business_date, name, "rejected", reason, 0, at)
        )

    def clearing_files(self, business_date: str) -> list[ClearingFileStatus]:
        rows = self._execute(self.sql.clearing_files, (business_date,))
        return [ClearingFileStatus(**row) for row in rows]

    # -- settling a date -------------------------------------------------------------

    def settle(
        self,
        business_date: str,
        merchants: Sequence[MerchantTerms],
        *,
        at: float,
        own_merchants: Sequence[str] = (),
    ) -> bool:
        """Settles a closed date, in one transaction: True if it did now, False if it
        was settled before (then nothing is posted again). Banks whose file for the
        date is missing or rejected simply have no records: their transactions are
        held as ``switch_only``. ``own_merchants`` (the switch's own: ``[credit]
        own_merchant_id``, ``[wallet] topup_merchant_id``) are matched like any other and
        in no payout."""
        try:
            with self._settling():
                row = self._first(self.sql.date_to_settle, (business_date,))
                if row is None or row["closed_at"] is None:
                    raise SettlementError(f"business date {business_date} is not closed")
                if row["settled_at"] is not None:
                    return False
                self._settle(business_date, merchants, own_merchants)
                self._execute(self.sql.mark_settled, (at, business_date))
        except self.errors as exc:  # rolled back whole: nothing of it stays
            raise SettlementError(f"settling {business_date} failed: {self._cause(exc)}") from exc
        return True

    def _settle(
        self, day: str, merchants: Sequence[MerchantTerms], own_merchants: Sequence[str] = ()
    ) -> None:
        """Everything a date's settlement writes, inside the caller's transaction."""
        sql, on_step = self.sql, self.on_step
        parameters = {"d": day, "d_hold": _day(day, -HOLD_DATES), "hold": HOLD_DATES}
        for statement in sql.temp_tables:
            self._execute(statement)
        terms = [
            (terms.merchant_id, terms.account, terms.mdr_bps, terms.fee_min_fen, terms.fee_cap_fen)
            for terms in merchants
        ]
        if not any(terms.merchant_id == DEFAULT_PROFILE for terms in merchants):
            terms.append(("*", "", 0, 0, 0))
        self._executemany(sql.put_terms, terms)
        self._executemany(sql.put_own_merchant, [(m,) for m in own_merchants if m])
        for statement in sql.settle_steps:
            started = time.perf_counter()
            self._execute(statement, parameters)
            if on_step is not None:
                on_step(statement, time.perf_counter() - started)
        started = time.perf_counter()
        unbalanced = self._first(sql.unbalanced, {"d": day})
        if on_step is not None:
            on_step(sql.unbalanced, time.perf_counter() - started)
        if unbalanced is not None:
            raise LedgerUnbalanced(
                f"posting {unbalanced['posting']} is off by {unbalanced['off']} fen"
            )
        for statement in sql.drop_temp_tables:
            self._execute(statement)

    def record_files_written(self, business_date: str, at: float) -> None:
        self._execute(self.sql.mark_files_written, (at, business_date))

    def payout_lines(self, business_date: str) -> list[PayoutLine]:
        return [PayoutLine(**row) for row in self._execute(self.sql.payout_lines, (business_date,))]

    def recon_lines(self, business_date: str) -> list[ReconLine]:
        return [ReconLine(**row) for row in self._execute(self.sql.recon_lines, (business_date,))]

    # -- reversals decided -----------------------------------------------------------

    def pending_reversal_orders(self) -> list[ReversalOrder]:
        return [
            ReversalOrder(**{**row, "known": bool(row["known"])})
            for row in self._execute(self.sql.pending_reversal_orders)
        ]

    def reversal_orders_handed(self, rrns: Sequence[str], at: float) -> None:
        with self._transaction():
            self._executemany(self.sql.mark_order_handed, [(at, rrn) for rrn in rrns])

    # -- the on-us ledger's transfers decided -----------------------------------------

    def pending_ledger_orders(self) -> list[LedgerOrder]:
        return [LedgerOrder(**row) for row in self._execute(self.sql.pending_ledger_orders)]

    def ledger_orders_handed(self, orders: Sequence[LedgerOrder], at: float) -> None:
        with self._transaction():
            self._executemany(
                self.sql.mark_ledger_order_handed,
                [(at, o.business_date, o.request_id, o.leg) for o in orders],
            )

    # -- what the operator reads -----------------------------------------------------

    def status(self, business_date: str, banks: Sequence[str]) -> SettlementStatus:
        sql = self.sql
        day = self._first(sql.date_status, (business_date,))
        files = self.clearing_files(business_date)
        accepted = {status.bank for status in files if status.status == "accepted"}
        counts = [
            CategoryCount(
                category=row["category"],
                action=row["action"],
                count=row["count"],
                switch_fen=row["switch_fen"] or 0,
                bank_fen=row["bank_fen"] or 0,
            )
            for row in self._execute(sql.category_counts, {"d": business_date})
        ]
        sums = self._one(sql.payout_sums, (business_date,))
        queued = self._one(sql.reversals_queued, (business_date,))["n"]
        return SettlementStatus(
            business_date=business_date,
            closed_at=day["closed_at"] if day is not None else None,
            forced=bool(day["forced"]) if day is not None else False,
            settled_at=day["settled_at"] if day is not None else None,
            files_written_at=day["files_at"] if day is not None else None,
            cutovers=self.cutovers(business_date),
            files=files,
            missing=[bank for bank in banks if bank not in accepted],
            categories=counts,
            merchants=sums["merchants"],
            sales_fen=sums["sales"] or 0,
            refunds_fen=sums["refunds"] or 0,
            fees_fen=sums["fees"] or 0,
            payout_fen=sums["payout"] or 0,
            carried_out_fen=sums["carried_out"] or 0,
            held_fen=sums["held"] or 0,
            reversals_queued=queued,
        )

    def latest_closed_date(self) -> str | None:
        latest: str | None = self._one(self.sql.latest_closed_date)["d"]
        return latest

    def ledger_balances(self, account: str | None = None) -> list[LedgerBalance]:
        rows = (
            self._execute(self.sql.account_balance, (account,))
            if account
            else self._execute(self.sql.ledger_balances)
        )
        return [
            LedgerBalance(account=row["account"], debit_fen=row["debit"], credit_fen=row["credit"])
            for row in rows
        ]

    def ledger_totals(self) -> tuple[int, int]:
        """All debits and all credits ever posted: equal, or the store is damaged."""
        row = self._one(self.sql.ledger_totals)
        return row["debit"], row["credit"]
