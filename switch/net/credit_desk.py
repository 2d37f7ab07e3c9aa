"""credit.md's online requests on the app desk (``app_desk.py``): the ``app:``
principal's ``credit_open``, ``credit_limit``, ``credit_freeze``, ``credit_unfreeze``,
``credit_convert``, ``credit_repay``, and the reads ``credit_status``,
``credit_statement`` and ``credit_plans``. Each handler runs the credit store's step
(``switch/store/credit_store.py``: the account locked, the sans-IO core deciding, the
ledger's transfers) in one transaction with its kept result, and answers credit.md's
result maps (``account``, ``plan``, ``statement``) with their keys in the spec's order.

A customer whose wallet another app principal opened is ``error`` 03, as wallet.md
answers it; the store's refusals (12, 13, 14, 25, 51, 61, 62) are the type's bare
result.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any, Final

import msgspec

from switch.core.app_desk import DeskType, approved
from switch.core.clock import Stamp
from switch.core.credit.billing import AccountView, statement_of
from switch.core.credit.book import PlanView, Statement, statement_unpaid_fen
from switch.core.credit.plan import CreditRefused
from switch.core.credit.settings import CreditSettings
from switch.core.ledger import TransferKey
from switch.core.wallet import WalletSettings
from switch.errors import TransactionRefused
from switch.net.app_desk import AppDesk, DeskCall
from switch.store.credit_store import CreditSteps, CreditStopped
from switch.store.ledger_port import LedgerStore
from switch.wire import app as desk_wire
from switch.wire import credit as wire

REPAY_LEG: Final = "repay"
"""The leg of a repayment's transfer (and the wallet history's kind)."""


def account_map(view: AccountView) -> dict[str, Any]:
    mapped: dict[str, Any] = msgspec.to_builtins(view)
    return mapped


def plan_map(view: PlanView, *, schedule: bool = True) -> dict[str, Any]:
    mapped: dict[str, Any] = msgspec.to_builtins(view)
    if not schedule:
        del mapped["schedule"]
    return mapped


def statement_map(statement: Statement, unpaid_fen: int) -> dict[str, Any]:
    """credit.md's ``statement``: its figures, ``unpaid_fen``, then its lines."""
    mapped: dict[str, Any] = msgspec.to_builtins(statement)
    lines = mapped.pop("lines")
    return {**mapped, "unpaid_fen": unpaid_fen, "lines": lines}


def _credit(store: LedgerStore) -> CreditSteps:
    assert isinstance(store, CreditSteps), "the ledger store keeps the credit accounts"
    return store


class CreditDesk:
    """The handlers, with what they need of the switch."""

    def __init__(
        self,
        settings: CreditSettings,
        wallet: WalletSettings,
        *,
        allocate_rrn: Callable[[Stamp], str],
    ) -> None:
        self.settings = settings
        self.terms = settings.terms()
        self.wallet = wallet
        self.allocate_rrn = allocate_rrn

    def register(self, desk: AppDesk) -> None:
        for row, handler in (
            (DeskType(name="credit_open", request=wire.CreditOpen, principal="app"),
             self.credit_open),
            (DeskType(name="credit_limit", request=wire.CreditLimit, principal="app"),
             self.credit_limit),
            (DeskType(name="credit_freeze", request=wire.CreditFreeze, principal="app"),
             self.credit_freeze),
            (DeskType(name="credit_unfreeze", request=wire.CreditUnfreeze, principal="app"),
             self.credit_freeze),
            (DeskType(name="credit_convert", request=wire.CreditConvert, principal="app"),
             self.credit_convert),
            (DeskType(name="credit_repay", request=wire.CreditRepay, principal="app"),
             self.credit_repay),
            (DeskType(name="credit_status", request=wire.CreditStatus, principal="app",
                      read=True), self.credit_status),
            (DeskType(name="credit_statement", request=wire.CreditStatement, principal="app",
                      read=True), self.credit_statement),
            (DeskType(name="credit_plans", request=wire.CreditPlans, principal="app",
                      read=True), self.credit_plans),
        ):  # fmt: skip
            desk.register(row, handler)

    # -- the account --------------------------------------------------------------------

    async def credit_open(self, message: wire.CreditOpen, call: DeskCall) -> bytes:
        """The customer's wallet (14; another app's: 03); one account (12)."""
        opening = date.fromisoformat(call.business_date)

        def body(store: LedgerStore) -> tuple[desk_wire.DeskResult, bool]:
            view = _credit(store).credit_open(
                message.customer_id, call.principal, message.limit_fen,
                statement_day=message.statement_day or self.settings.statement_day,
                grace_days=message.grace_days or self.settings.grace_days,
                business_date=opening, at=call.now,
            )  # fmt: skip
            return wire.AccountResult(**approved(message), account=account_map(view)), True

        return await call.keep(body)

    async def credit_limit(self, message: wire.CreditLimit, call: DeskCall) -> bytes:
        def body(store: LedgerStore) -> tuple[desk_wire.DeskResult, bool]:
            view = _credit(store).credit_set_limit(
                message.customer_id, message.limit_fen, call.now, app=call.principal
            )
            return wire.AccountResult(**approved(message), account=account_map(view)), True

        return await call.keep(body)

    async def credit_freeze(
        self, message: wire.CreditFreeze | wire.CreditUnfreeze, call: DeskCall
    ) -> bytes:
        """The ``app`` reason set or lifted (its ``reason`` kept); ``overdue`` stays."""
        frozen = isinstance(message, wire.CreditFreeze)

        def body(store: LedgerStore) -> tuple[desk_wire.DeskResult, bool]:
            view = _credit(store).credit_freeze(
                message.customer_id, frozen, message.reason or "", call.now, app=call.principal
            )
            return wire.AccountResult(**approved(message), account=account_map(view)), True

        return await call.keep(body)

    # -- plans and repayments -------------------------------------------------------------

    async def credit_convert(self, message: wire.CreditConvert, call: DeskCall) -> bytes:
        """credit.md: the purchase (25), not planned and until the close of its first
        due date (12), its unpaid principal (13), frozen (62)."""

        def body(store: LedgerStore) -> tuple[desk_wire.DeskResult, bool]:
            converted = _credit(store).credit_convert(
                message.customer_id, call.principal, purchase_id=message.purchase_id,
                instalments=message.instalments, terms=self.terms, at=call.now,
            )  # fmt: skip
            return wire.ConvertResult(
                **approved(message), settlement_date=converted.business_date.isoformat(),
                plan=plan_map(converted.plan),
            ), True  # fmt: skip

        return await call.keep(body)

    async def credit_repay(self, message: wire.CreditRepay, call: DeskCall) -> bytes:
        """credit.md: 1 to the payoff (13); from the wallet, counted in its class limit
        (61), its balance (51); allocated penalties first, then billed amounts past due,
        the rest billed, then prepayment (``purchase_id`` first)."""
        if (message.card is None) != (message.source == "wallet"):
            raise TransactionRefused("30", "present exactly when from is card", field="card")
        if message.source == "card":
            raise TransactionRefused("57", "repayment by card is not offered")
        rrn = self.allocate_rrn(call.stamp)
        key = TransferKey(call.principal, message.id, REPAY_LEG)

        def body(store: LedgerStore) -> tuple[desk_wire.DeskResult, bool]:
            repaid = _credit(store).credit_repay_from_wallet(
                message.customer_id, key=key, rrn=rrn, amount_fen=message.amount,
                purchase_id=message.purchase_id, at=call.now, app=call.principal,
                counted=(call.local_date, self.wallet),
            )  # fmt: skip
            allocation = repaid.allocation
            assert allocation is not None, "a new id: its result is not kept yet"
            return wire.RepayResult(
                **approved(message), rrn=rrn, settlement_date=call.business_date,
                allocated=wire.Allocated(
                    penalty_fen=allocation.penalty_fen, fee_fen=allocation.fee_fen,
                    principal_fen=allocation.principal_fen,
                    prepaid_fen=allocation.prepaid_fen,
                ),
                waived_fee_fen=allocation.waived_fee_fen, account=account_map(repaid.account),
            ), True  # fmt: skip

        return await call.keep(body)

    # -- reads ----------------------------------------------------------------------------

    async def credit_status(self, message: wire.CreditStatus, call: DeskCall) -> bytes:
        view = await call.read(
            lambda store: _credit(store).credit_status(message.customer_id, call.principal)
        )
        return desk_wire.encode_result(
            wire.AccountResult(**approved(message), account=account_map(view))
        )

    async def credit_statement(self, message: wire.CreditStatement, call: DeskCall) -> bytes:
        def read(store: LedgerStore) -> dict[str, Any]:
            book = _credit(store).credit_account(message.customer_id, call.principal).book
            try:
                statement = statement_of(book, message.period)
            except CreditRefused as refused:  # no statement of that period (yet)
                raise CreditStopped(refused.code, refused.message) from None
            return statement_map(statement, statement_unpaid_fen(book, statement.statement_date))

        mapped = await call.read(read)
        return desk_wire.encode_result(wire.StatementResult(**approved(message), statement=mapped))

    async def credit_plans(self, message: wire.CreditPlans, call: DeskCall) -> bytes:
        views = await call.read(
            lambda store: _credit(store).credit_plans(
                message.customer_id, message.purchase_id, call.principal
            )
        )
        whole = message.purchase_id is not None
        return desk_wire.encode_result(wire.PlansResult(
            **approved(message), plans=[plan_map(view, schedule=whole) for view in views],
        ))  # fmt: skip
