"""wallet.md's requests on the app desk (``app_desk.py``): the ``app:`` principal's
``wallet_open``, ``wallet_balance``, ``wallet_bind_account``, ``wallet_unbind_account``,
``wallet_withdraw``, ``wallet_history``, ``paycode_issue``, and the merchants'
``qr_create`` and ``qr_status``. Each handler runs wallet.md's checks in its order, the
store's in one transaction with the result kept (reads: nothing kept), and answers the
fields of wallet.md's results table; ``balance_after`` and ``class_left`` only ever go
to the app.

``wallet_pay`` and ``wallet_topup`` are payments through the transaction lifecycle, not
the desk's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from switch.core import ledger, paycode
from switch.core.app_desk import DeskType, approved, echo, next_date
from switch.core.clock import Stamp
from switch.core.credit.plan import TERMS as CREDIT_TERMS
from switch.core.ledger import TransferKey, TransferSpec
from switch.core.merchants import MerchantBook, MerchantTerms
from switch.core.riskgate import RiskGate
from switch.core.wallet import (
    BoundAccount,
    MoneyAsk,
    NotYourWallet,
    Refusal,
    WalletError,
    WalletSettings,
    qr_payload,
)
from switch.errors import TransactionRefused
from switch.net.app_desk import AppDesk, DeskCall
from switch.net.onus import RulesInStore
from switch.net.risk import keep_judged
from switch.store.credit_store import CreditSteps, CreditStopped
from switch.store.ledger_port import LedgerStore, QrRecord
from switch.wire import app as wire
from switch.wire.emvqr import new_qr_id

WITHDRAW_LEG: Final = "withdraw"
"""The leg (and history's kind) of a withdrawal's transfer."""
WITHDRAWALS_PAYABLE: Final = "withdrawals_payable"
MERCHANT_KINDS: Final = frozenset(("pay", "void", "refund"))
"""History items that name their merchant."""
QR_PAYMENTS_MAX: Final = 50

PaymentsOf = Callable[[QrRecord, DeskCall], Awaitable[list[wire.QrPaymentOut]]]


class WalletDesk:
    """The handlers, with what they need of the switch."""

    def __init__(
        self,
        settings: WalletSettings,
        *,
        merchants: Callable[[], MerchantBook],
        allocate_rrn: Callable[[Stamp], str],
    ) -> None:
        self.settings = settings
        self.paycodes = settings.paycodes()
        self.merchants = merchants
        """The merchants file as now loaded (it may be reloaded)."""
        self.allocate_rrn = allocate_rrn
        self.payments_of: PaymentsOf | None = None
        """A QR's payments for ``qr_status`` (``rrn``, ``amount``, ``time``,
        ``settlement_date``, ``refunded``), newest first: set by what records QR
        payments (``wallet_pay``)."""
        self.screen: RiskGate | None = None
        """risk.md's rules, judged where wallet.md puts them, inside the withdrawal's
        store step (after its account's check, before the class limit); set by the
        switch's wiring (None: no rules)."""

    def register(self, desk: AppDesk) -> None:
        for row, handler in (
            (DeskType(name="wallet_open", request=wire.WalletOpen, principal="app"),
             self.wallet_open),
            (DeskType(name="wallet_balance", request=wire.WalletBalance, principal="app",
                      read=True), self.wallet_balance),
            (DeskType(name="wallet_bind_account", request=wire.WalletBindAccount,
                      principal="app"), self.wallet_bind_account),
            (DeskType(name="wallet_unbind_account", request=wire.WalletUnbindAccount,
                      principal="app"), self.wallet_unbind_account),
            (DeskType(name="wallet_withdraw", request=wire.WalletWithdraw, principal="app"),
             self.wallet_withdraw),
            (DeskType(name="wallet_history", request=wire.WalletHistory, principal="app",
                      read=True), self.wallet_history),
            (DeskType(name="paycode_issue", request=wire.PaycodeIssue, principal="app"),
             self.paycode_issue),
            (DeskType(name="qr_create", request=wire.QrCreate, principal="merchant"),
             self.qr_create),
            (DeskType(name="qr_status", request=wire.QrStatus, principal="merchant",
                      read=True), self.qr_status),
        ):  # fmt: skip
            desk.register(row, handler)

    # -- wallets ----------------------------------------------------------------------

    async def wallet_open(self, message: wire.WalletOpen, call: DeskCall) -> bytes:
        def body(store: LedgerStore) -> tuple[wire.DeskResult, bool]:
            view = store.open_wallet(
                message.customer_id, call.principal, message.wallet_class, call.local_date,
                call.now,
            )  # fmt: skip
            return wire.WalletOpenResult(
                **approved(message), customer_id=view.customer_id,
                wallet_class=view.wallet_class, balance=view.available, opened=view.opened,
            ), True  # fmt: skip

        return await call.keep(body)

    async def wallet_balance(self, message: wire.WalletBalance, call: DeskCall) -> wire.DeskResult:
        view = await call.read(
            lambda store: store.wallet(message.customer_id, call.principal, call.local_date)
        )
        return wire.WalletBalanceResult(
            **approved(message), customer_id=view.customer_id, wallet_class=view.wallet_class,
            balance=view.available, class_left=view.class_left,
        )  # fmt: skip

    async def wallet_bind_account(self, message: wire.WalletBindAccount, call: DeskCall) -> bytes:
        account = BoundAccount(
            account=message.account, account_name=message.account_name,
            bank_code=message.bank_code,
        )  # fmt: skip

        def body(store: LedgerStore) -> tuple[wire.DeskResult, bool]:
            bound = store.bind_account(message.customer_id, call.principal, account, call.now)
            return wire.AccountsResult(**approved(message), accounts=_accounts(bound)), True

        return await call.keep(body)

    async def wallet_unbind_account(
        self, message: wire.WalletUnbindAccount, call: DeskCall
    ) -> bytes:
        def body(store: LedgerStore) -> tuple[wire.DeskResult, bool]:
            bound = store.unbind_account(
                message.customer_id, call.principal, message.account, message.bank_code
            )
            return wire.AccountsResult(**approved(message), accounts=_accounts(bound)), True

        return await call.keep(body)

    async def wallet_withdraw(self, message: wire.WalletWithdraw, call: DeskCall) -> bytes:
        """wallet.md: the wallet (14; another app's: 03), the account bound as bound
        (14), risk.md's rules (kind ``withdrawal``, funding ``wallet``, the customer's
        and the device's keys), the class limit (61), the balance (51); approved, the
        wallet is debited at once (``withdrawals_payable``) and the withdrawal is a row
        of its business date's withdrawals file. Every result carries its RRN and is
        kept (a repeat never debits twice, nor is it counted again: its kept result is
        answered without the step). A rule's reservation stands if approved, else it
        goes."""
        rrn = self.allocate_rrn(call.stamp)
        business_date = call.business_date
        customer_id = message.customer_id
        to = BoundAccount(
            account=message.account, account_name=message.account_name,
            bank_code=message.bank_code,
        )  # fmt: skip
        ask = MoneyAsk(
            customer_id=customer_id, amount=message.amount, counted="withdraw",
            funding="wallet", channel="none", local_date=call.local_date,
        )  # fmt: skip
        key = TransferKey(call.principal, message.id, WITHDRAW_LEG)
        spec = TransferSpec(
            key=key, debit=ledger.wallet_account(customer_id), credit=WITHDRAWALS_PAYABLE,
            amount=message.amount, kind=WITHDRAW_LEG, rrn=rrn, merchant_id="",
        )  # fmt: skip

        def refused(code: str, text: str) -> tuple[wire.DeskResult, bool]:
            return wire.WithdrawResult(
                **echo(message), code=code, approved=False, message=text, rrn=rrn,
                settlement_date=business_date,
            ), True  # fmt: skip

        gate = self.screen
        rules = RulesInStore(
            gate,
            RiskGate.desk_request("withdrawal", message.amount, message.device_id)
            if gate is not None and gate.rules.rules else None,
            float(call.stamp.epoch_s),
        )  # fmt: skip
        screen = rules.screen(customer_id, "wallet")
        approvals: list[bool] = []

        def body(store: LedgerStore) -> tuple[wire.DeskResult, bool]:
            approvals.clear()  # a step run again decides again
            try:
                reserved = store.reserve_payment(
                    ask, spec, self.settings, call.now, app=call.principal, withdraw_to=to,
                    order=(rrn, business_date), screen=screen,
                )  # fmt: skip
            except NotYourWallet:
                raise
            except WalletError as exc:  # raised before anything was written
                return refused(exc.response_code, str(exc))
            if isinstance(reserved, Refusal):
                return refused(reserved.code, reserved.message)
            store.end_payment(key, True, call.now)
            approvals.append(True)
            view = store.wallet(customer_id, None, call.local_date)
            return wire.WithdrawResult(
                **approved(message), rrn=reserved.transfer.spec.rrn,
                settlement_date=business_date, value_date=next_date(business_date),
                balance_after=view.available,
            ), True  # fmt: skip

        answer = await keep_judged(call, rules, body, rrn=rrn)
        rules.end(bool(approvals), type="wallet_withdraw", id=message.id)
        return answer

    async def wallet_history(self, message: wire.WalletHistory, call: DeskCall) -> wire.DeskResult:
        page = await call.read(
            lambda store: store.history(
                message.customer_id, call.principal, message.limit, message.cursor
            )
        )
        merchants = self.merchants()
        items = []
        for item in page.items:
            named = item.kind in MERCHANT_KINDS and bool(item.merchant_id)
            items.append(wire.HistoryItemOut(
                time=call.local_time(item.at), kind=item.kind, amount=item.amount,
                balance_after=item.balance_after, rrn=item.rrn,
                merchant_id=item.merchant_id if named else None,
                merchant_name=_name(merchants, item.merchant_id) if named else None,
            ))  # fmt: skip
        return wire.HistoryResult(**approved(message), items=items, next=page.next)

    async def paycode_issue(self, message: wire.PaycodeIssue, call: DeskCall) -> bytes:
        """wallet.md: the wallet (14); for ``credit``, credit.md: an account (14), not
        frozen (62); ``instalments`` 3, 6, 12 or 24 with ``credit`` only (30)."""
        if message.instalments is not None and (
            message.funding != "credit" or message.instalments not in CREDIT_TERMS
        ):
            raise TransactionRefused(
                "30", "3, 6, 12 or 24, with funding credit only", field="instalments"
            )

        def body(store: LedgerStore) -> tuple[wire.DeskResult, bool]:
            if message.funding == "credit":
                store.wallet(message.customer_id, call.principal, call.local_date)  # 14, 03
                assert isinstance(store, CreditSteps), "the ledger store keeps credit accounts"
                account = store.credit_account(message.customer_id, call.principal)  # 14
                if account.frozen:
                    raise CreditStopped("62", "credit account frozen")
            code = store.issue_paycode(
                message.customer_id, call.principal, message.funding, message.verification,
                call.now, self.paycodes, lambda: paycode.draw(self.paycodes.prefix),
                instalments=message.instalments,
            )  # fmt: skip
            return wire.PaycodeResult(
                **approved(message), paycode=code.code, expires=call.local_time(code.expires_at),
                funding=code.funding,
            ), True  # fmt: skip

        return await call.keep(body)

    # -- merchants' QR codes ----------------------------------------------------------

    def _own_terms(self, merchant_id: str) -> MerchantTerms:
        """Only merchants listed under their own id get QR codes (03, ``*`` profile)."""
        terms = self.merchants().terms(merchant_id)
        if terms is None or terms.merchant_id != merchant_id:
            raise TransactionRefused(
                "03", f"merchant {merchant_id} is not listed under its own id",
                field="merchant_id",
            )  # fmt: skip
        return terms

    async def qr_create(self, message: wire.QrCreate, call: DeskCall) -> bytes | wire.DeskResult:
        """wallet.md: a dynamic QR with ``amount`` (open ``expires_s``, default
        ``qr_expires_s``), a static one without; CNY only (57)."""
        if message.expires_s is not None and message.amount is None:
            raise TransactionRefused("30", "with amount only", field="expires_s")
        terms = self._own_terms(message.merchant_id)
        if message.currency is not None and message.currency != "CNY":
            return wire.DeskResult(
                **echo(message), code="57", approved=False, message="on-us money is CNY only"
            )
        if not terms.mcc:
            raise TransactionRefused("03", "merchant has no MCC in the merchants file",
                                     field="merchant_id")  # fmt: skip
        qr_id = new_qr_id()
        dynamic = message.amount is not None
        expires_at = (
            call.now + (message.expires_s or self.settings.qr_expires_s) if dynamic else None
        )
        payload = qr_payload(
            self.settings, merchant_id=message.merchant_id, name=terms.name, mcc=terms.mcc,
            city=getattr(terms, "city", None), qr_id=qr_id, amount=message.amount,
            order_id=message.order_id,
        )  # fmt: skip
        record = QrRecord(
            qr_id=qr_id, merchant_id=message.merchant_id,
            kind="dynamic" if dynamic else "static", payload=payload, created_at=call.now,
            amount=message.amount, order_id=message.order_id, online_id=message.id,
            expires_at=expires_at,
        )  # fmt: skip

        def body(store: LedgerStore) -> tuple[wire.DeskResult, bool]:
            store.create_qr(record)
            return wire.QrCreateResult(
                **approved(message), qr_id=qr_id, qr=payload, kind=record.kind,
                expires=call.local_time(expires_at) if expires_at is not None else None,
            ), True  # fmt: skip

        return await call.keep(body)

    async def qr_status(self, message: wire.QrStatus, call: DeskCall) -> wire.DeskResult:
        """The QR's state (dynamic: ``open``, ``paid`` or ``expired``; static:
        ``open``) and its payments, newest first (at most 50); another merchant's or no
        such QR: 25."""
        record = await call.read(lambda store: store.qr(message.qr_id))
        if record is None or record.merchant_id != message.merchant_id:
            return wire.DeskResult(
                **echo(message), code="25", approved=False,
                message="qr_id not found for this merchant",
            )  # fmt: skip
        if record.kind == "static":
            state = "open"
        elif record.state == "paid":
            state = "paid"
        elif record.expires_at is not None and call.now >= record.expires_at:
            state = "expired"
        else:
            state = "open"  # being paid: not paid until the payment is approved
        payments = await self._qr_payments(record, call)
        return wire.QrStatusResult(
            **approved(message), qr_id=record.qr_id, kind=record.kind, state=state,
            amount=record.amount,
            expires=call.local_time(record.expires_at) if record.expires_at is not None
            else None,
            payments=payments[:QR_PAYMENTS_MAX],
        )  # fmt: skip

    async def _qr_payments(self, record: QrRecord, call: DeskCall) -> list[wire.QrPaymentOut]:
        """The QR's payments, newest first: ``payments_of``'s (the QR payments' own
        records, kept by ``wallet_pay``), none without it."""
        if self.payments_of is None:
            return []
        return await self.payments_of(record, call)


def _accounts(bound: list[BoundAccount]) -> list[wire.BoundAccountOut]:
    return [
        wire.BoundAccountOut(account=b.account, account_name=b.account_name, bank_code=b.bank_code)
        for b in bound
    ]


def _name(merchants: MerchantBook, merchant_id: str) -> str:
    terms = merchants.terms(merchant_id)
    return terms.name if terms is not None and terms.merchant_id == merchant_id else ""
