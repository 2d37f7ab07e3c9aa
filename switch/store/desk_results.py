"""The ledger store's steps for the app desk's kept results (``desk_sql.py``): mixed
into ``LedgerStoreBase``, as ``CreditSteps`` is."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any, ClassVar, TypeVar

import msgspec

from switch.core.ledger import TransferKey, TransferSpec
from switch.core.wallet import WithdrawalLine
from switch.store.desk_sql import FILE_LEG, DeskSql
from switch.store.ledger_steps import LedgerSteps

T = TypeVar("T")

STRAGGLER_DAYS = 7
"""How far back a date's withdrawals file looks for withdrawals no file took (one that
committed after its own date's file was read)."""
Row = Mapping[str, Any]
Parameters = Sequence[Any] | dict[str, Any]


class KeptResult(msgspec.Struct, frozen=True, kw_only=True):
    """A request's kept result: ``fingerprint`` (the keyed digest of its content) and
    the ``response`` body; ``again``: it was there before this call."""

    fingerprint: bytes
    response: bytes
    at: float
    again: bool = False
    kept: bool = True
    """False: the body's result, not kept (a refusal that changed nothing)."""


def _kept(row: Row, *, again: bool) -> KeptResult:
    return KeptResult(
        fingerprint=bytes.fromhex(row["fingerprint"]),
        response=bytes.fromhex(row["response"]),
        at=row["at"],
        again=again,
    )


class DeskResultSteps(LedgerSteps):
    """``desk_kept``, ``desk_result``, ``desk_purge``."""

    desk: ClassVar[DeskSql]

    def desk_result(self, principal: str, request_id: str) -> KeptResult | None:
        """The result kept for (principal, id), if any."""
        row = self._read(lambda: self._first(self.desk.read_result, (principal, request_id)))
        return None if row is None else _kept(row, again=True)

    def desk_kept(
        self,
        principal: str,
        request_id: str,
        fingerprint: bytes,
        at: float,
        body: Callable[[], tuple[bytes, bool]],
    ) -> KeptResult:
        """``body`` (the request's own steps, then its encoded result and whether to
        keep it) and the result kept, in one transaction: the result kept before for
        this (principal, id) instead, if there is one (``again``; ``body`` is not run).
        What ``body`` raises rolls everything back."""

        def step() -> KeptResult:
            row = self._first(self.desk.lock_result, (principal, request_id))
            if row is not None:
                return _kept(row, again=True)
            response, keep = body()
            if not keep:
                return KeptResult(fingerprint=fingerprint, response=response, at=at, kept=False)
            self._execute(
                self.desk.insert_result,
                (principal, request_id, fingerprint.hex(), response.hex(), at),
            )
            return KeptResult(fingerprint=fingerprint, response=response, at=at)

        return self._step("desk_kept", step)

    def file_withdrawals(self, business_date: str, at: float) -> list[WithdrawalLine]:
        """The rows of ``business_date``'s withdrawals file (wallet.md), one step. The
        first time: every approved withdrawal of that date, or of the
        ``STRAGGLER_DAYS`` before it, that no file has taken yet is posted
        ``withdrawals_payable`` to ``payouts`` under this date (keyed by the date and
        its RRN), and the date is marked as taken. Every time: the rows posted under it,
        by RRN (so the file written again is the same, and a withdrawal that commits
        after it goes to the next date's file, never to one already handed over)."""

        def step() -> list[WithdrawalLine]:
            if self._first(self.desk.file_taken, (business_date,)) is None:
                since = (date.fromisoformat(business_date) - timedelta(STRAGGLER_DAYS)).isoformat()
                for row in self._execute(self.desk.unfiled_withdrawals, (business_date, since)):
                    spec = TransferSpec(
                        key=TransferKey(business_date, f"withdraw:{row['rrn']}", FILE_LEG),
                        debit="withdrawals_payable", credit="payouts", amount=row["amount"],
                        kind="withdrawals_file", rrn=row["rrn"],
                    )  # fmt: skip
                    self._move("transfer", spec.key, at, spec=spec)
                self._execute(self.desk.take_file, (business_date, at))
            rows = self._execute(self.desk.filed_withdrawals, (business_date,))
            return [WithdrawalLine(**{k: row[k] for k in WithdrawalLine.__struct_fields__})
                    for row in rows]  # fmt: skip

        return self._step("file_withdrawals", step)

    def desk_purge(self, before: float) -> None:
        """Forgets results kept before ``before`` (online.md: kept at least 7 days)."""
        self._step("desk_purge", lambda: self._execute(self.desk.purge_results, (before,)))
