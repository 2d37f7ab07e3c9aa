"""The ledger store's port: the on-us engine's storage (wallet.md's Ledger, Wallets,
QR codes and payment codes), one implementation per journal engine (``sqlite/ledger.py``,
a file of its own beside the journal; ``postgresql/ledger.py``, tables in the journal's
database, shared by every worker).

Plain blocking calls, each one transaction: the trio layer runs them in a worker
thread. Every call that moves money is one atomic step: its checks, its transfer and
what it counts commit together or not at all.

How the transaction machine drives it (``PostToLedger``, ``switch/net/onus.py``): a
request journaled as received reserves its pending transfer (``reserve``, or
``pay_by_code``: the code taken and ``reserve_payment``'s checks, one step); the answer
journaled posts it (``post``) or a decline voids it (``void``); a reversal voids a
pending transfer, or reserves and posts the compensating one of a posted payment. At
start-up each of ``pending_transfers`` is posted or voided as the journal's answer says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from switch.core.credit.billing import CreditAsk
from switch.core.credit.book import PlanView
from switch.core.credit.plan import Terms
from switch.core.ledger import (
    AccountsBalance,
    Balances,
    LedgerError,
    LedgerFigures,
    LedgerTotals,
    Plan,
    Transfer,
    TransferKey,
    WalletTotals,
)
from switch.core.ledger import TransferSpec as TransferSpec
from switch.core.paycode import CodeTaken, Funding, Paycode, PaycodeSettings, Verification
from switch.core.riskgate import RiskEvent
from switch.core.wallet import BoundAccount, MoneyAsk, Refusal, WalletSettings, WithdrawalLine
from switch.store.desk_results import KeptResult

if TYPE_CHECKING:
    from switch.store.hold_store import Hold, HoldTaken


class LedgerUnavailable(LedgerError):
    """The store cannot be reached, or stayed busy through every retry: 91."""

    response_code = "91"


class AccountView(msgspec.Struct, frozen=True, kw_only=True):
    balances: Balances
    type: str
    unit: str


class WalletView(msgspec.Struct, frozen=True, kw_only=True):
    """What ``wallet_open`` and ``wallet_balance`` answer (wallet.md)."""

    customer_id: str
    wallet_class: int
    balance: int
    """Posted credits minus posted debits."""
    available: int
    """What can be spent: posted credits minus posted and pending debits."""
    class_left: int
    opened: str


class Reserved(msgspec.Struct, frozen=True, kw_only=True):
    """A payment or withdrawal that passed its checks: its pending transfer holds the
    amount (``again``: the same key was reserved before, nothing new was counted)."""

    transfer: Transfer
    available_after: int
    again: bool = False


class HistoryItem(msgspec.Struct, frozen=True, kw_only=True):
    at: float
    kind: str
    amount: int
    balance_after: int
    rrn: str
    merchant_id: str


class History(msgspec.Struct, frozen=True, kw_only=True):
    items: list[HistoryItem]
    next: str | None


class QrRecord(msgspec.Struct, frozen=True, kw_only=True):
    qr_id: str
    merchant_id: str
    kind: str
    payload: str
    created_at: float
    amount: int | None = None
    order_id: str | None = None
    online_id: str | None = None
    expires_at: float | None = None
    state: str = "open"
    paying: str | None = None


class QrHold(msgspec.Struct, frozen=True, kw_only=True):
    """The QR a ``wallet_pay`` pays, as its payload read: checked again, locked, in the
    payment's atomic step."""

    qr_id: str
    merchant_id: str
    kind: str
    amount: int | None


Fault = Callable[[str], None]
"""Called inside each step's transaction just before its commit (tests inject commit
failures through it: what it raises rolls the step back)."""


class LedgerStore(Protocol):
    fault: Fault | None

    def open(self) -> None: ...
    def close(self) -> None: ...

    # the ledger
    def reserve(self, spec: TransferSpec, at: float) -> Plan: ...
    def transfer(self, spec: TransferSpec, at: float) -> Plan: ...
    def transfers(self, specs: Sequence[TransferSpec], at: float) -> None: ...
    def post(
        self,
        key: TransferKey,
        at: float,
        *,
        amount: int | None = None,
        uncount: TransferKey | None = None,
        rrn: str | None = None,
    ) -> Plan: ...
    def void(self, key: TransferKey, at: float) -> Plan: ...
    def transfer_of(self, key: TransferKey) -> Transfer | None: ...
    def pending_transfers(self) -> list[Transfer]: ...
    def account(self, name: str) -> AccountView | None: ...
    def accounts(self) -> list[AccountView]: ...
    def totals(self) -> list[LedgerTotals]: ...

    def figures(self) -> LedgerFigures: ...
    def wallet_totals(self) -> WalletTotals: ...
    def balances(self, account: str | None = None) -> list[AccountsBalance]: ...
    def verify(self) -> list[str]: ...

    # wallets
    def open_wallet(
        self, customer_id: str, app: str, wallet_class: int, today: str, at: float
    ) -> WalletView: ...
    def wallet(self, customer_id: str, app: str | None, today: str) -> WalletView: ...
    def reserve_payment(
        self,
        ask: MoneyAsk,
        spec: TransferSpec,
        settings: WalletSettings,
        at: float,
        *,
        app: str | None = None,
        qr: QrHold | None = None,
        withdraw_to: BoundAccount | None = None,
        order: tuple[str, str] | None = None,
        credit: CreditAsk | None = None,
        screen: Callable[[], Refusal | None] | None = None,
    ) -> Reserved | Refusal: ...
    def reserve_topup(
        self, spec: TransferSpec, bank: str, business_date: str, at: float
    ) -> Plan: ...
    def end_payment(
        self, key: TransferKey, approved: bool, at: float, *, qr_id: str | None = None
    ) -> Plan: ...
    def grouped(
        self, calls: Sequence[Callable[[], Any]], *, durable: bool = True
    ) -> list[tuple[Any, BaseException | None]]: ...
    def end_topup(self, key: TransferKey, approved: bool, rrn: str, at: float) -> Plan: ...
    def qr_paying(self, key: TransferKey) -> str | None: ...
    def qr_payments(self, qr_id: str, limit: int) -> list[tuple[str, int, float]]: ...
    def bind_account(
        self, customer_id: str, app: str, account: BoundAccount, at: float
    ) -> list[BoundAccount]: ...
    def unbind_account(
        self, customer_id: str, app: str, account: str, bank_code: str
    ) -> list[BoundAccount]: ...
    def bound_accounts(self, customer_id: str) -> list[BoundAccount]: ...
    def history(
        self, customer_id: str, app: str | None, limit: int, cursor: str | None
    ) -> History: ...
    def withdrawals(self, business_date: str) -> list[WithdrawalLine]: ...

    # QR codes
    def create_qr(self, record: QrRecord) -> None: ...
    def qr(self, qr_id: str) -> QrRecord | None: ...
    def qr_by_online_id(self, merchant_id: str, online_id: str) -> QrRecord | None: ...

    # payment codes (wall clock)
    def issue_paycode(
        self,
        customer_id: str,
        app: str,
        funding: Funding,
        verification: Verification,
        now: float,
        settings: PaycodeSettings,
        draw: Callable[[], str],
        *,
        instalments: int | None = None,
    ) -> Paycode: ...
    def take_paycode(
        self, code: str, terminal: str, now: float, settings: PaycodeSettings
    ) -> CodeTaken: ...
    def pay_by_code(
        self,
        code: str,
        terminal: str,
        now: float,
        settings: WalletSettings,
        make: Callable[[Paycode], tuple[MoneyAsk, TransferSpec] | Refusal],
        *,
        credit_terms: Terms | None = None,
    ) -> tuple[CodeTaken, Reserved | Refusal | None]: ...
    def purge_paycodes(self, before: float) -> None: ...

    # credit as a funding source (credit.md; the account steps are credit_store.py's)
    def credit_reserve_back(
        self, spec: TransferSpec, purchase_id: str, whole: bool, at: float
    ) -> Plan: ...
    def credit_plan(self, customer_id: str, purchase_id: str) -> PlanView: ...

    # on-us pre-authorisations' holds (risk.md, "On-us funding"; hold_store.py)
    def hold_keep(
        self, spec: TransferSpec, *, customer_id: str, funding: str, verification: str,
        instalments: int | None, at: float,
    ) -> None: ...  # fmt: skip
    def hold_of(self, preauth: str) -> Hold | None: ...
    def hold_of_completion(self, completion_rrn: str) -> Hold | None: ...
    def hold_complete(
        self, preauth: str, key: TransferKey, *, amount: int, rrn: str,
        local_date: str, settings: WalletSettings, terms: Terms | None, at: float,
    ) -> HoldTaken | Refusal: ...  # fmt: skip
    def hold_end_completion(
        self, preauth: str, key: TransferKey, *, amount: int, rrn: str,
        approved: bool, terms: Terms | None, at: float,
    ) -> None: ...  # fmt: skip
    def hold_release(self, preauth: str, at: float) -> bool: ...
    def hold_renew(self, preauth: str, terms: Terms | None, at: float) -> bool: ...
    def hold_restand_check(
        self, preauth: str, amount: int, terms: Terms | None = None
    ) -> Refusal | None: ...
    def hold_refund(
        self, preauth: str, key: TransferKey, *, completion_rrn: str, amount: int, rrn: str,
        at: float,
    ) -> str: ...  # fmt: skip
    def hold_restand(
        self, preauth: str, completion: TransferKey, key: TransferKey, *, amount: int,
        rrn: str, at: float, terms: Terms | None = None,
    ) -> None: ...  # fmt: skip
    def hold_uncomplete(
        self, preauth: str, completion: TransferKey, key: TransferKey, *,
        completion_rrn: str, rrn: str, kind: str, at: float,
    ) -> bool | Refusal: ...  # fmt: skip
    def hold_end_uncompletion(
        self, preauth: str, completion: TransferKey, key: TransferKey, *,
        approved: bool, rehold: bool, terms: Terms | None, at: float,
    ) -> bool: ...  # fmt: skip

    # the app desk's kept results (desk_results.py)
    def desk_result(self, principal: str, request_id: str) -> KeptResult | None: ...
    def desk_kept(
        self,
        principal: str,
        request_id: str,
        fingerprint: bytes,
        at: float,
        body: Callable[[], tuple[bytes, bool]],
    ) -> KeptResult: ...
    def desk_purge(self, before: float) -> None: ...
    # the risk rules' records of desk requests (risk_events.py)
    def add_risk_event(self, event: RiskEvent) -> None: ...
    def risk_events(self, since: float) -> list[RiskEvent]: ...
    def risk_events_written(self, since: float) -> list[RiskEvent]: ...
    def risk_events_marked(self, before: float, limit: int) -> list[RiskEvent]: ...
    def file_withdrawals(self, business_date: str, at: float) -> list[WithdrawalLine]: ...
