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

from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, Final

import msgspec
import trio

from switch.core import online
from switch.core.app_desk import DeskType, approved, echo
from switch.core.book import TxnRecord
from switch.core.clock import Stamp
from switch.core.credit.billing import AccountView, statement_of
from switch.core.credit.book import Allocation, PlanView, Statement, statement_unpaid_fen
from switch.core.credit.plan import CreditRefused
from switch.core.credit.settings import CreditSettings
from switch.core.ledger import TransferKey
from switch.core.model import Origin, Outcome, Request
from switch.core.numbers import StanSequence
from switch.core.online import MESSAGES
from switch.core.onus import app_online_id
from switch.core.riskgate import RiskGate
from switch.core.wallet import Refusal, WalletSettings
from switch.errors import TransactionRefused
from switch.net.app_desk import AppDesk, DeskCall
from switch.net.onus import RulesInStore
from switch.net.risk import keep_judged
from switch.net.switchboard import Switchboard
from switch.store.credit_store import CARD_REPAY_KIND, CreditSteps, CreditStopped
from switch.store.ledger_port import LedgerStore
from switch.wire import app as desk_wire
from switch.wire import credit as wire
from switch.wire import online as online_wire

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


def repaid_result(
    message: wire.CreditRepay,
    rrn: str | None,
    settlement_date: str | None,
    allocation: Allocation,
    account: AccountView,
) -> wire.RepayResult:
    """An approved repayment's result: what it paid, in credit.md's allocation order."""
    return wire.RepayResult(
        **approved(message), rrn=rrn, settlement_date=settlement_date,
        allocated=wire.Allocated(
            penalty_fen=allocation.penalty_fen, fee_fen=allocation.fee_fen,
            principal_fen=allocation.principal_fen, prepaid_fen=allocation.prepaid_fen,
        ),
        waived_fee_fen=allocation.waived_fee_fen, account=account_map(account),
    )  # fmt: skip


def statement_map(statement: Statement, unpaid_fen: int) -> dict[str, Any]:
    """credit.md's ``statement``: its figures, ``unpaid_fen``, then its lines."""
    mapped: dict[str, Any] = msgspec.to_builtins(statement)
    lines = mapped.pop("lines")
    return {**mapped, "unpaid_fen": unpaid_fen, "lines": lines}


class CardSales:
    """A repayment's card sale through the switchboard, as an online purchase of
    ``[credit] own_merchant_id`` at ``own_terminal_id`` (journaled as the app's request:
    ``online_id`` = ``app:<name> <id>``)."""

    def __init__(
        self,
        switchboard: Switchboard,
        card_types: Callable[[], Mapping[str, str]],
        stans: StanSequence,
    ) -> None:
        self.switchboard = switchboard
        self.card_types = card_types
        """The routes' card types as now configured (a reload may change them)."""
        self.stans = stans

    def sale(self, message: wire.CreditRepay, call: DeskCall, settings: CreditSettings) -> Request:
        """The canonical sale (TransactionRefused for a card that fails online.md's
        checks: 14, 54, 30)."""
        assert message.card is not None
        purchase = online_wire.Purchase(
            id=message.id, merchant_id=settings.own_merchant_id, amount=message.amount,
            currency="CNY", card=message.card, device_id=message.device_id,
        )  # fmt: skip
        request = online.request_from_online(
            purchase, terminal_id=settings.own_terminal_id, stan=self.stans.next(),
            today=call.stamp.local.date(),
        )  # fmt: skip
        return msgspec.structs.replace(request, online_id=app_online_id(call.principal, message.id))

    def route(self, request: Request) -> str:
        """The bank of the card's route; "92" none, "57" not a debit card."""
        card = getattr(request, "card", None)
        assert card is not None, "a sale has its card"
        found = self.switchboard.bins.route_or_none(card.pan)
        if found is None:
            return "92"
        prefix, bank, _ = found
        if self.card_types().get(prefix, "credit") != "debit":
            return "57"
        return bank

    async def answered(self, merchant_id: str, online_id: str) -> TxnRecord | None:
        """The journal's record of a repayment's sale."""
        return await self.switchboard.journal.transaction_by_online_id(merchant_id, online_id)

    async def process(self, request: Request, call: DeskCall) -> Outcome:
        origin = Origin(channel="online", connection=0, received_at=trio.current_time())
        return await self.switchboard.process(request, call.stamp, origin)


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
        cards: CardSales | None = None,
    ) -> None:
        self.settings = settings
        self.terms = settings.terms()
        self.wallet = wallet
        self.allocate_rrn = allocate_rrn
        self.cards = cards
        """Repayments by card: their sales through the switchboard (None: 57)."""
        self.screen: RiskGate | None = None
        """risk.md's rules, judged where credit.md puts them, inside a conversion's
        store step (kind ``conversion``, funding ``credit``); set by the switch's wiring
        (None: no rules). A repayment by card meets them as the sale it is (kind
        ``sale``, funding ``card``), in the lifecycle."""

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
        due date (12), its unpaid principal (13), risk.md's rules (kind ``conversion``,
        funding ``credit``, the amount that principal), frozen (62). A rule's
        reservation stands if converted, else it goes."""
        gate = self.screen
        rules = RulesInStore(
            gate,
            RiskGate.desk_request("conversion", 0, message.device_id)
            if gate is not None and gate.rules.rules else None,
            float(call.stamp.epoch_s),
        )  # fmt: skip
        approvals: list[bool] = []

        def screen(principal_fen: int) -> Refusal | None:
            return rules.refusal(message.customer_id, "credit", principal_fen)

        def body(store: LedgerStore) -> tuple[desk_wire.DeskResult, bool]:
            approvals.clear()
            converted = _credit(store).credit_convert(
                message.customer_id, call.principal, purchase_id=message.purchase_id,
                instalments=message.instalments, terms=self.terms, at=call.now,
                screen=screen,
            )  # fmt: skip
            approvals.append(True)
            return wire.ConvertResult(
                **approved(message), settlement_date=converted.business_date.isoformat(),
                plan=plan_map(converted.plan),
            ), True  # fmt: skip

        answer = await keep_judged(call, rules, body)
        rules.end(bool(approvals), type="credit_convert", id=message.id)
        return answer

    async def credit_repay(self, message: wire.CreditRepay, call: DeskCall) -> bytes:
        """credit.md: 1 to the payoff (13); from the wallet, counted in its class limit
        (61), its balance (51); allocated penalties first, then billed amounts past due,
        the rest billed, then prepayment (``purchase_id`` first)."""
        if (message.card is None) != (message.source == "wallet"):
            raise TransactionRefused("30", "present exactly when from is card", field="card")
        if message.source == "card":
            return await self._repay_by_card(message, call)
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
            return repaid_result(
                message, rrn, call.business_date, allocation, repaid.account
            ), True  # fmt: skip

        return await call.keep(body)

    async def _repay_by_card(self, message: wire.CreditRepay, call: DeskCall) -> bytes:
        """credit.md: a debit card by its BIN route (92 none; another card 57), the
        account and the payoff (14, 13), then a sale to the card through its route (41
        ``own_terminal_id``, 42 ``own_merchant_id``; risk.md's rules as for any sale): its
        pending transfer ``bank_clearing:<bank>`` → ``credit_receivable:<c>`` reserved
        before it leaves, posted and allocated on the bank's 00, voided otherwise (the
        bank's code; no answer 68, the sale reversed as any sale's)."""
        cards = self.cards
        assert message.card is not None
        if cards is None or not self.settings.own_merchant_id:
            raise TransactionRefused("57", "repayment by card is not offered")
        request = cards.sale(message, call, self.settings)
        found = cards.route(request)
        if found in ("92", "57"):
            text = "no route to issuer" if found == "92" else "a repayment card must be debit"
            return desk_wire.encode_result(wire.RepayResult(
                **echo(message), code=found, approved=False, message=text,
                settlement_date=call.business_date,
            ))  # fmt: skip
        key = TransferKey(call.principal, message.id, CARD_REPAY_KIND)
        reserved = await call.read(
            lambda store: _credit(store).credit_reserve_repay(
                message.customer_id, call.principal, key=key, bank=found,
                amount_fen=message.amount, merchant_id=self.settings.own_merchant_id,
                purchase_id=message.purchase_id, at=call.now,
            )
        )  # fmt: skip
        if not reserved:  # the same id in progress, or ended without its result kept
            return await self._repay_seen_before(message, call, key)
        outcome = await cards.process(request, call)
        paid = outcome.approved
        rrn = outcome.rrn or ""

        def body(store: LedgerStore) -> tuple[desk_wire.DeskResult, bool]:
            repaid = _credit(store).credit_end_repay(key, paid, rrn, call.now)
            if not paid:
                code = outcome.code
                return wire.RepayResult(
                    **echo(message), code=code, approved=False,
                    message=outcome.message or MESSAGES.get(code, "declined"),
                    rrn=outcome.rrn, settlement_date=outcome.settlement_date,
                ), True  # fmt: skip
            # None: a repayment meanwhile left nothing owed; it all went to the wallet.
            allocation = repaid.allocation or Allocation(
                penalty_fen=0, fee_fen=0, principal_fen=0, prepaid_fen=0, waived_fee_fen=0,
                paid=(), prepaid=(),
            )  # fmt: skip
            return repaid_result(
                message, outcome.rrn, outcome.settlement_date, allocation, repaid.account
            ), True  # fmt: skip

        return await call.keep(body)

    async def _repay_seen_before(
        self, message: wire.CreditRepay, call: DeskCall, key: TransferKey
    ) -> bytes:
        """A repayment by card whose transfer exists without a kept result (the same id
        at another worker now, or a crash between the bank's answer and its result):
        while its transfer is pending, 94 "in progress"; once ended (at start-up, as the
        journal said), the journal's answer, kept. Its allocation is not known again
        here: the result carries the account as it stands."""
        assert self.cards is not None
        transfer = await call.read(lambda store: store.transfer_of(key))
        if transfer is None or transfer.state == "pending":
            raise TransactionRefused("94", "in progress", field="id")
        record = await self.cards.answered(
            self.settings.own_merchant_id, app_online_id(call.principal, message.id)
        )
        if record is None or record.code is None:
            raise TransactionRefused("94", "in progress", field="id")
        code = record.code if transfer.state == "voided" else "00"

        def body(store: LedgerStore) -> tuple[desk_wire.DeskResult, bool]:
            view = _credit(store).credit_status(message.customer_id, call.principal)
            fields = approved(message) if code == "00" else {
                **echo(message), "code": code, "approved": False,
                "message": MESSAGES.get(code, "declined"),
            }  # fmt: skip
            return wire.RepayResult(
                **fields, rrn=record.rrn, settlement_date=record.business_date or None,
                account=account_map(view) if code == "00" else None,
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
