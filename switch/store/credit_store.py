"""Credit accounts in the ledger store (credit.md), for both engines: the steps that
lock an account's row, ask the sans-IO core (``switch.core.credit``) and write the
account, its statements and its transfers on the shared ledger in one transaction.

Mixed into ``LedgerStoreBase``: every step is its ``_step`` (one transaction, run again
on a deadlock), and an account's row is locked first (``FOR UPDATE`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite), so a credit line used by two workers at once takes
turns: the limit check and the pending purchase are one atomic step.

The close of a business date (``credit_close``) runs accounts in batches, each batch one
transaction: an account's new book, its statement and its postings commit together, so
a close killed half-way leaves each account closed or not, and running it again closes
the rest (a closed account is skipped; transfer keys post nothing twice).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from functools import partial
from typing import Any, ClassVar, Final, TypeVar

import msgspec

from switch.core import ledger
from switch.core.credit import book as books
from switch.core.credit.billing import (
    BOOK_DECODER,
    BOOK_ENCODER,
    CLOSE_PRINCIPAL,
    AccountView,
    CreditAccount,
    CreditAsk,
    CreditTotals,
    account_view,
    add_back,
    add_repay,
    close_account,
    credit_purchase,
    drop_purchase,
    drop_repay,
    find_back,
    find_repay,
    open_date,
    plans_of,
    purchase_refusal,
    receivable,
    repay_account,
    statement_of,
    take_back,
)
from switch.core.credit.book import Allocation, Back, CardRepay, Statement
from switch.core.credit.plan import TERMS, CreditRefused, Terms
from switch.core.ledger import (
    LedgerDamaged,
    LedgerError,
    Plan,
    TransferKey,
    TransferNotFound,
    TransferSpec,
)
from switch.core.wallet import (
    BadField,
    MoneyAsk,
    NoSuchWallet,
    NotYourWallet,
    Refusal,
    Usage,
    Wallet,
    WalletSettings,
    money_check,
)
from switch.store.credit_sql import CreditSql
from switch.store.ledger_sql import LedgerSql
from switch.store.ledger_steps import LedgerSteps
from switch.store.own_sql import OwnSql

T = TypeVar("T")
Row = Mapping[str, Any]
Parameters = Sequence[Any] | dict[str, Any]

RECEIVABLE: Final = "credit_receivable:"
CARD_REPAY_KIND: Final = "repay_card"
"""The kind (and leg) of a repayment by card's transfer."""

CLOSE_BATCH: Final = 200
"""Accounts closed in one transaction."""


class CreditStopped(LedgerError):
    """A credit request refused with credit.md's code (12, 13, 14, 25, 51, 62)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.response_code = code


class NoCreditAccount(CreditStopped):
    def __init__(self, customer_id: str) -> None:
        super().__init__("14", f"no credit account of {customer_id}")


class Purchased(msgspec.Struct, frozen=True, kw_only=True):
    purchase_id: str
    transfer: ledger.Transfer
    account: AccountView
    again: bool = False


class Converted(msgspec.Struct, frozen=True, kw_only=True):
    business_date: date
    plan: books.PlanView
    account: AccountView


class Repaid(msgspec.Struct, frozen=True, kw_only=True):
    allocation: Allocation | None
    """None when the key had repaid before (``again``)."""
    account: AccountView
    again: bool = False


class ClosedDay(msgspec.Struct, frozen=True, kw_only=True):
    """What one run of a date's close did (0 everywhere when it had run before)."""

    business_date: date
    accounts: int
    statements: int
    penalties_fen: int
    fees_fen: int
    frozen: int


class StatementRow(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    statement: Statement


_STATEMENT_DECODER = msgspec.json.Decoder(Statement)


def _account(row: Row) -> CreditAccount:
    return CreditAccount(
        customer_id=row["customer_id"],
        app=row["app"],
        limit_fen=row["limit_fen"],
        frozen_app=bool(row["frozen_app"]),
        frozen_overdue=bool(row["frozen_overdue"]),
        app_reason=row["app_reason"],
        book=BOOK_DECODER.decode(row["book"]),
    )


class CreditSteps(LedgerSteps):
    """The credit steps of the ledger store (mixed into ``LedgerStoreBase``)."""

    credit: ClassVar[CreditSql]
    sql: ClassVar[LedgerSql]
    own: ClassVar[OwnSql]

    # Given by LedgerStoreBase, beside LedgerSteps.
    def _ensure_account(self, name: str) -> None:
        raise NotImplementedError

    def _lock_transfer(self, key: TransferKey) -> ledger.Transfer | None:
        raise NotImplementedError

    def _lock_account(self, name: str) -> ledger.Balances:
        raise NotImplementedError

    def _wallet(self, customer_id: str, app: str | None, *, lock: bool) -> Wallet:
        raise NotImplementedError

    def _usage(self, wallet: Wallet, today: str) -> Usage:
        raise NotImplementedError

    # -- rows -----------------------------------------------------------------------------

    def _credit_account(self, customer_id: str, app: str | None, *, lock: bool) -> CreditAccount:
        statement = self.credit.lock_account if lock else self.credit.read_account
        row = self._first(statement, (customer_id,))
        if row is None:
            raise NoCreditAccount(customer_id)
        if app is not None and row["app"] != app:
            raise NotYourWallet(f"credit account of {customer_id} is another app's")
        return _account(row)

    def _save(self, account: CreditAccount, at: float) -> None:
        book = account.book
        self._execute(
            self.credit.update_account,
            (
                BOOK_ENCODER.encode(book).decode(),
                None if book.last_closed is None else book.last_closed.isoformat(),
                account.frozen_overdue, at, books.outstanding_principal_fen(book),
                books.overdue_fen(book, open_date(account)), account.customer_id,
            ),
        )  # fmt: skip

    # -- opening and reading --------------------------------------------------------------

    def credit_open(
        self,
        customer_id: str,
        app: str,
        limit_fen: int,
        *,
        statement_day: int,
        grace_days: int,
        business_date: date,
        at: float,
    ) -> AccountView:
        """``credit_open``: the customer's wallet must exist (14), opened by ``app``
        (03); an account already there: 12."""
        if not 0 <= limit_fen <= 100_000_000:
            raise ValueError(f"limit_fen {limit_fen} is not in 0..100000000")
        book = books.open_book(business_date, statement_day=statement_day, grace_days=grace_days)

        def body() -> AccountView:
            wallet = self._first(self.credit.wallet_app, (customer_id,))
            if wallet is None:
                raise NoSuchWallet(f"no wallet of {customer_id}")
            if wallet["app"] != app:
                raise NotYourWallet(f"wallet of {customer_id} is another app's")
            if self._first(self.credit.read_account, (customer_id,)) is not None:
                raise CreditStopped("12", f"credit account of {customer_id} exists already")
            self._ensure_account(receivable(customer_id))
            self._execute(
                self.credit.insert_account,
                (
                    customer_id, app, limit_fen, statement_day, grace_days,
                    business_date.isoformat(), False, False, "", None,
                    BOOK_ENCODER.encode(book).decode(), at,
                ),
            )  # fmt: skip
            return account_view(self._credit_account(customer_id, None, lock=False))

        return self._step("credit_open", body)

    def credit_account(self, customer_id: str, app: str | None = None) -> CreditAccount:
        return self._read(lambda: self._credit_account(customer_id, app, lock=False))

    def credit_status(self, customer_id: str, app: str | None = None) -> AccountView:
        return account_view(self.credit_account(customer_id, app))

    def credit_set_limit(
        self, customer_id: str, limit_fen: int, at: float, *, app: str | None = None
    ) -> AccountView:
        """``credit_limit``: a limit below the outstanding principal calls nothing in
        (available reads 0); 0 stops borrowing."""
        if not 0 <= limit_fen <= 100_000_000:
            raise ValueError(f"limit_fen {limit_fen} is not in 0..100000000")

        def body() -> AccountView:
            self._credit_account(customer_id, app, lock=True)
            self._execute(self.credit.set_limit, (limit_fen, at, customer_id))
            return account_view(self._credit_account(customer_id, None, lock=False))

        return self._step("credit_set_limit", body)

    def credit_freeze(
        self, customer_id: str, frozen: bool, reason: str, at: float, *, app: str | None = None
    ) -> AccountView:
        """``credit_freeze`` / ``credit_unfreeze`` (the ``app`` reason only; the account
        stays frozen while ``overdue`` holds)."""

        def body() -> AccountView:
            self._credit_account(customer_id, app, lock=True)
            self._execute(self.credit.set_app_freeze, (frozen, reason, at, customer_id))
            return account_view(self._credit_account(customer_id, None, lock=False))

        return self._step("credit_freeze", body)

    # -- purchases and repayments ---------------------------------------------------------

    def credit_purchase(
        self,
        customer_id: str,
        *,
        key: TransferKey,
        purchase_id: str,
        merchant_id: str,
        amount_fen: int,
        instalments: int | None,
        terms: Terms,
        at: float,
    ) -> Purchased:
        """An approved credit purchase's checks and pending transfer
        ``credit_receivable:<c>`` → ``merchant:<m>``, one atomic step under the
        account's lock (14, 62, 13, 51: CreditStopped, nothing written). Its business
        date is the account's current one. The same key again: the purchase made
        before."""

        def body() -> Purchased:
            account = self._credit_account(customer_id, None, lock=True)
            transfer = self._lock_transfer(key)
            if transfer is not None:
                return Purchased(purchase_id=purchase_id, transfer=transfer,
                                 account=account_view(account), again=True)  # fmt: skip
            refusal = purchase_refusal(account, amount_fen, instalments, terms)
            if refusal is not None:
                raise CreditStopped(refusal.code, refusal.message)
            plan = None
            if instalments is not None:
                from switch.core.credit.plan import make_plan

                plan = make_plan(amount_fen, instalments, terms.fee_bps_of(instalments))
            book = books.purchase(
                account.book, purchase_id=purchase_id,
                business_date=_today(account), merchant_id=merchant_id,
                amount_fen=amount_fen, plan=plan,
            )  # fmt: skip
            spec = TransferSpec(key=key, debit=receivable(customer_id),
                                credit=ledger.merchant_account(merchant_id), amount=amount_fen,
                                kind="credit_purchase", rrn=purchase_id,
                                merchant_id=merchant_id)  # fmt: skip
            moved = self._move("reserve", key, at, spec=spec)
            assert moved.after is not None
            account = msgspec.structs.replace(account, book=book)
            self._save(account, at)
            return Purchased(purchase_id=purchase_id, transfer=moved.after,
                             account=account_view(account))  # fmt: skip

        return self._step("credit_purchase", body)

    def credit_end_purchase(
        self, customer_id: str, key: TransferKey, purchase_id: str, approved: bool, at: float
    ) -> Plan:
        """The answer journaled: posts the purchase's pending transfer, or voids it and
        the purchase never stood (frees its principal)."""

        def body() -> Plan:
            account = self._credit_account(customer_id, None, lock=True)
            plan = self._move("post" if approved else "void", key, at)
            if plan.changes and not approved:
                kept = tuple(p for p in account.book.purchases if p.purchase_id != purchase_id)
                book = msgspec.structs.replace(account.book, purchases=kept)
                self._save(msgspec.structs.replace(account, book=book), at)
            return plan

        return self._step("credit_end_purchase", body)

    def credit_repay_from_wallet(
        self,
        customer_id: str,
        *,
        key: TransferKey,
        rrn: str,
        amount_fen: int,
        purchase_id: str | None,
        at: float,
        app: str | None = None,
        counted: tuple[str, WalletSettings] | None = None,
    ) -> Repaid:
        """A repayment from the wallet, posted at once (``wallet:<c>`` →
        ``credit_receivable:<c>``): the wallet's (14; another app's: 03), 1 to the
        payoff (else 13), then, ``counted`` (today's local date and ``[wallet]``), the
        wallet's class limit as a payment (61), the wallet's spendable balance at least
        the amount (else 51); allocated as credit.md says. The wallet's row is locked
        before the account's, as a payment's checks lock them."""

        def body() -> Repaid:
            wallet_row = self._wallet(customer_id, app, lock=True) if counted else None
            account = self._credit_account(customer_id, app, lock=True)
            if self._lock_transfer(key) is not None:  # repaid before: nothing moves again
                return Repaid(allocation=None, account=account_view(account), again=True)
            try:
                account, allocation = repay_account(
                    account, ref=rrn, amount_fen=amount_fen, purchase_id=purchase_id
                )
            except CreditRefused as refused:
                raise CreditStopped(refused.code, refused.message) from None
            wallet = ledger.wallet_account(customer_id)
            self._ensure_account(wallet)
            if wallet_row is not None and counted is not None:
                local_date, settings = counted
                ask = MoneyAsk(customer_id=customer_id, amount=amount_fen, counted="repay",
                               local_date=local_date)  # fmt: skip
                usage = self._usage(wallet_row, local_date)
                available = self._lock_account(wallet).available
                refusal = money_check(wallet_row, usage, ask, available, settings)
                if refusal is not None:
                    raise CreditStopped(refusal.code, refusal.message)
                self._execute(
                    self.sql.insert_count,
                    (key.principal, key.id, key.leg, customer_id, local_date,
                     local_date[:4], amount_fen, True, False, False),
                )  # fmt: skip
            row = self._first(self.credit.spendable, (wallet,))
            if row is None or row["spendable"] < amount_fen:
                raise CreditStopped("51", "the wallet's balance is short")
            spec = TransferSpec(key=key, debit=wallet, credit=receivable(customer_id),
                                amount=amount_fen, kind="repay", rrn=rrn)  # fmt: skip
            self._move("transfer", key, at, spec=spec)
            self._save(account, at)
            return Repaid(allocation=allocation, account=account_view(account))

        return self._step("credit_repay", body)

    # -- credit as a funding source (the lifecycle's ledger steps) -----------------------

    def _credit_code_check(self, customer_id: str, funding: str, instalments: int | None) -> None:
        """``paycode_issue``'s credit checks (credit.md): ``instalments`` 3, 6, 12 or 24
        and only with ``credit`` (30); a credit code needs an account (14) that is not
        frozen (62)."""
        if instalments is not None and (funding != "credit" or instalments not in TERMS):
            raise BadField("instalments", "3, 6, 12 or 24, with funding credit only")
        if funding == "credit":
            account = self._credit_account(customer_id, None, lock=False)
            if account.frozen:
                raise CreditStopped("62", "the credit account is frozen")

    def _credit_lock(self, customer_id: str) -> CreditAccount | None:
        """The account's row locked for a payment's checks (None: no account, 14 when
        its turn comes among the checks)."""
        row = self._first(self.credit.lock_account, (customer_id,))
        return None if row is None else _account(row)

    def _credit_checks(
        self,
        account: CreditAccount | None,
        ask: CreditAsk,
        *,
        merchant_id: str,
        amount_fen: int,
    ) -> CreditAccount | Refusal:
        """credit.md's checks in place of the balance check: no account 14, frozen 62, a
        plan under `min_plan_fen` 13, above available 51; else the account with the
        purchase in its book (saved by the caller once its transfer is reserved)."""
        if account is None:
            return Refusal("14", "no credit account")
        made = credit_purchase(account, ask, merchant_id=merchant_id, amount_fen=amount_fen)
        if isinstance(made, CreditRefused):
            return Refusal(made.code, made.message)
        return made

    def _credit_of_transfer(self, transfer: ledger.Transfer | None) -> CreditAccount | None:
        """The account a transfer moves, locked, when it is a credit purchase or its
        void, reversal or refund (``credit_receivable:<c>`` against ``merchant:<m>``);
        locked before the ledger's accounts, as a payment's checks lock it."""
        row = self._credit_row_of_transfer(transfer)
        return None if row is None else _account(row)

    def _credit_row_of_transfer(self, transfer: ledger.Transfer | None) -> Row | None:
        """``_credit_of_transfer``'s row, locked, its book not yet decoded."""
        if transfer is None:
            return None
        spec = transfer.spec
        names = (spec.debit, spec.credit)
        customer = next((n for n in names if n.startswith(RECEIVABLE)), None)
        if customer is None or not any(n.startswith("merchant:") for n in names):
            return None
        return self._first(self.credit.lock_account, (customer[len(RECEIVABLE) :],))

    def _credit_ended(
        self, transfer: ledger.Transfer | None, at: float
    ) -> Callable[[Plan], None] | None:
        """Before a credit purchase's pending transfer (locked by the caller) is posted or
        voided: what to do after (a void: the purchase never stood, its principal freed)."""
        row = self._credit_row_of_transfer(transfer)  # locked; its book read for a void only
        if row is None or transfer is None or transfer.spec.debit != receivable(row["customer_id"]):
            return None
        purchase_id = transfer.spec.rrn

        def after(plan: Plan) -> None:
            assert row is not None
            if plan.changes and plan.after is not None and plan.after.state == "voided":
                self._save(drop_purchase(_account(row), purchase_id), at)

        return after

    def credit_reserve_back(
        self, spec: TransferSpec, purchase_id: str, whole: bool, at: float
    ) -> Plan:
        """A void, reversal or refund of a credit purchase, at receipt: its pending
        transfer ``merchant:<m>`` → ``credit_receivable:<c>`` for the whole amount, and
        the book told to take it when it is posted (credit.md, "Ledger"). Again: the
        same."""
        customer_id = spec.credit[len(RECEIVABLE) :]

        def body() -> Plan:
            account = self._credit_account(customer_id, None, lock=True)
            plan = self._move("reserve", spec.key, at, spec=spec)
            key = spec.key
            back = Back(principal=key.principal, id=key.id, leg=key.leg,
                        purchase_id=purchase_id, whole=whole)  # fmt: skip
            if plan.changes:
                self._save(add_back(account, back), at)
            return plan

        return self._step("credit_reserve_back", body)

    def _credit_back(self, key: TransferKey) -> tuple[CreditAccount, Back] | None:
        transfer = self._lock_transfer(key)
        account = self._credit_of_transfer(transfer)
        if account is None:
            return None
        back = find_back(account, key.principal, key.id, key.leg)
        return None if back is None else (account, back)

    def _credit_post_back(
        self, account: CreditAccount, back: Back, key: TransferKey, at: float
    ) -> Plan:
        """Posts a credit void's, reversal's or refund's pending transfer: the book takes
        it now, and what it takes off the receivable is posted; what had been repaid
        goes to the wallet, ``merchant:<m>`` → ``wallet:<c>``, posted with it (leg
        ``<leg>_wallet``). The rest of the hold is released."""
        transfer = self._lock_transfer(key)
        assert transfer is not None
        if transfer.state != "pending":
            return self._move("post", key, at)  # posted before: nothing again
        try:
            account, split = take_back(account, back, transfer.spec.amount)
        except CreditRefused as refused:
            raise LedgerDamaged(f"credit {back.purchase_id}: {refused.message}") from None
        to_receivable = split.receivable_fen
        if to_receivable:
            plan = self._move("post", key, at, amount=min(to_receivable, transfer.spec.amount))
        else:
            plan = self._move("void", key, at)
        if split.wallet_fen:
            spec = transfer.spec
            wallet_key = TransferKey(key.principal, key.id, f"{key.leg}_wallet")
            wallet = ledger.wallet_account(account.customer_id)
            self._move("transfer", wallet_key, at, spec=TransferSpec(
                key=wallet_key, debit=spec.debit, credit=wallet, amount=split.wallet_fen,
                kind=spec.kind, rrn=spec.rrn, merchant_id=spec.merchant_id,
            ))  # fmt: skip
        self._save(account, at)
        return plan

    # -- repayments by card (credit.md, "Repayment") -------------------------------------

    def credit_reserve_repay(
        self,
        customer_id: str,
        app: str | None,
        *,
        key: TransferKey,
        bank: str,
        amount_fen: int,
        merchant_id: str,
        purchase_id: str | None,
        at: float,
    ) -> bool:
        """Before a repayment's card sale leaves: the account (14; another app's: 03),
        1 to the payoff (13), then the pending transfer ``bank_clearing:<bank>`` →
        ``credit_receivable:<c>``, noted in the book. False: the key has its transfer
        already (the same request, seen before)."""

        def body() -> bool:
            account = self._credit_account(customer_id, app, lock=True)
            if self._lock_transfer(key) is not None:
                return False
            payoff = books.payoff_fen(account.book)
            if not 1 <= amount_fen <= payoff:
                raise CreditStopped("13", f"the amount must be 1 to the payoff {payoff}")
            spec = TransferSpec(key=key, debit=f"bank_clearing:{bank}",
                                credit=receivable(customer_id), amount=amount_fen,
                                kind=CARD_REPAY_KIND, rrn="", merchant_id=merchant_id)  # fmt: skip
            self._move("reserve", key, at, spec=spec)
            repay = CardRepay(principal=key.principal, id=key.id, leg=key.leg,
                              purchase_id=purchase_id)  # fmt: skip
            self._save(add_repay(account, repay), at)
            return True

        return self._step("credit_reserve_repay", body)

    def _credit_repay_of(self, key: TransferKey) -> tuple[CreditAccount, CardRepay] | None:
        """A repayment by card's account (locked) and note, when ``key`` names one."""
        transfer = self._lock_transfer(key)
        if transfer is None or transfer.spec.kind != CARD_REPAY_KIND:
            return None
        customer = transfer.spec.credit
        if not customer.startswith(RECEIVABLE):
            return None
        account = self._credit_lock(customer[len(RECEIVABLE) :])
        if account is None:
            return None
        repay = find_repay(account, key)
        return None if repay is None else (account, repay)

    def _credit_post_repay(
        self, account: CreditAccount, repay: CardRepay, key: TransferKey, ref: str, at: float
    ) -> tuple[Plan, Allocation | None, CreditAccount]:
        """The bank approved: the book allocates the repayment (at most the payoff now:
        what a repayment meanwhile left over goes to the wallet, no credit balance is
        kept) and the transfer is posted."""
        transfer = self._lock_transfer(key)
        assert transfer is not None
        account = drop_repay(account, repay)
        amount = transfer.spec.amount
        payoff = books.payoff_fen(account.book)
        allocation = None
        taken = min(amount, payoff)
        if taken:
            account, allocation = repay_account(
                account, ref=ref, amount_fen=taken, purchase_id=repay.purchase_id
            )
            plan = self._move("post", key, at, amount=taken)
        else:
            plan = self._move("void", key, at)
        # Kept for settlement, which may undo it (credit.md: not paid, amount_mismatch).
        kept = None if allocation is None else msgspec.json.encode(allocation).decode()
        self._execute(self.own.insert_repay, (
            ref, account.customer_id, transfer.spec.debit.partition(":")[2], taken,
            amount - taken, kept, "standing", at,
        ))  # fmt: skip
        if amount > taken:
            spec = transfer.spec
            wallet_key = TransferKey(key.principal, key.id, f"{key.leg}_wallet")
            self._move("transfer", wallet_key, at, spec=TransferSpec(
                key=wallet_key, debit=spec.debit, credit=ledger.wallet_account(account.customer_id),
                amount=amount - taken, kind=spec.kind, rrn=ref, merchant_id=spec.merchant_id,
            ))  # fmt: skip
        self._save(account, at)
        return plan, allocation, account

    def credit_end_repay(self, key: TransferKey, approved: bool, ref: str, at: float) -> Repaid:
        """A repayment by card's sale answered: approved, allocated and posted; else its
        hold voided (nothing was repaid)."""

        def body() -> Repaid:
            found = self._credit_repay_of(key)
            if found is None:
                raise TransferNotFound(f"no repayment by card {key}")
            account, repay = found
            if approved:
                _, allocation, account = self._credit_post_repay(account, repay, key, ref, at)
                return Repaid(allocation=allocation, account=account_view(account))
            self._move("void", key, at)
            account = drop_repay(account, repay)
            self._save(account, at)
            return Repaid(allocation=None, account=account_view(account))

        return self._step("credit_end_repay", body)

    def credit_plan(self, customer_id: str, purchase_id: str) -> books.PlanView:
        """A purchase's plan with its schedule (25: none)."""
        try:
            return books.plan_view(self.credit_account(customer_id).book, purchase_id)
        except CreditRefused as refused:
            raise CreditStopped(refused.code, refused.message) from None

    def credit_convert(
        self,
        customer_id: str,
        app: str | None,
        *,
        purchase_id: str,
        instalments: int,
        terms: Terms,
        at: float,
        screen: Callable[[int], Refusal | None] | None = None,
    ) -> Converted:
        """``credit_convert`` (credit.md): a plan of a standing purchase of the customer
        (25) that has none, until the close of its first due date (12), on its unpaid
        principal (13); then risk.md's rules (``screen``, given that principal: its
        refusal's code); a frozen account 62. An amended statement bills period 1's fee
        at once (``credit_receivable:<c>`` → ``instalment_fee_income``)."""

        def body() -> Converted:
            account = self._credit_account(customer_id, app, lock=True)
            on = open_date(account)
            try:
                book, conversion = books.convert(
                    account.book, on=on, purchase_id=purchase_id, instalments=instalments,
                    terms=terms,
                )  # fmt: skip
            except CreditRefused as refused:
                raise CreditStopped(refused.code, refused.message) from None
            if screen is not None:
                screened = screen(conversion.plan.principal_fen)
                if screened is not None:
                    raise CreditStopped(screened.code, screened.message)
            if account.frozen:
                raise CreditStopped("62", "the credit account is frozen")
            if conversion.amended is not None and conversion.plan.fee_fen:
                key = TransferKey(CLOSE_PRINCIPAL, f"{customer_id}:{purchase_id}", "convert_fee")
                spec = TransferSpec(key=key, debit=receivable(customer_id),
                                    credit="instalment_fee_income",
                                    amount=conversion.plan.fee_fen, kind="instalment_fee",
                                    rrn=purchase_id)  # fmt: skip
                self._move("transfer", key, at, spec=spec)
            if conversion.amended is not None:
                self._execute(
                    self.credit.amend_statement,
                    (conversion.amended.new_balance_fen,
                     msgspec.json.encode(conversion.amended).decode(), customer_id,
                     conversion.amended.statement_date.isoformat()),
                )  # fmt: skip
            account = msgspec.structs.replace(account, book=book)
            self._save(account, at)
            return Converted(business_date=on, plan=books.plan_view(book, purchase_id),
                             account=account_view(account))  # fmt: skip

        return self._step("credit_convert", body)

    def credit_statement(
        self, customer_id: str, period: str, app: str | None = None
    ) -> Statement:
        """A statement already made (25: none of that period)."""
        book = self.credit_account(customer_id, app).book
        try:
            return statement_of(book, period)
        except CreditRefused as refused:
            raise CreditStopped(refused.code, refused.message) from None

    def credit_plans(
        self, customer_id: str, purchase_id: str | None, app: str | None = None
    ) -> list[books.PlanView]:
        """``credit_plans``: that purchase's plan with its schedule (25), or every plan
        with anything unbilled or unpaid, oldest first, without."""
        book = self.credit_account(customer_id, app).book
        try:
            return plans_of(book, purchase_id)
        except CreditRefused as refused:
            raise CreditStopped(refused.code, refused.message) from None

    # -- the close ------------------------------------------------------------------------

    def credit_close(
        self, business_date: date, terms: Terms, at: float, *, batch: int = CLOSE_BATCH
    ) -> ClosedDay:
        """credit.md's close of ``business_date`` for every account opened by then:
        penalties, freezes, statements, in batches of ``batch`` accounts a transaction.
        Idempotent: accounts closed already are skipped."""
        day = business_date.isoformat()
        after = ""
        totals = {"accounts": 0, "statements": 0, "penalties_fen": 0, "fees_fen": 0, "frozen": 0}
        while True:
            ids = self._ids_to_close(day, after, batch)
            if not ids:
                break
            done = self._step(
                "credit_close", partial(self._close_batch, ids, business_date, terms, at)
            )
            for name, value in done.items():
                totals[name] += value
            after = ids[-1]
        return ClosedDay(business_date=business_date, **totals)

    def _ids_to_close(self, day: str, after: str, batch: int) -> list[str]:
        rows = self._read(partial(self._execute, self.credit.to_close, (day, day, after, batch)))
        return [row["customer_id"] for row in rows]

    def _close_batch(
        self, ids: list[str], business_date: date, terms: Terms, at: float
    ) -> dict[str, int]:
        done = {"accounts": 0, "statements": 0, "penalties_fen": 0, "fees_fen": 0, "frozen": 0}
        for customer_id in ids:
            account = self._credit_account(customer_id, None, lock=True)
            last = account.book.last_closed
            if last is not None and last >= business_date:
                continue  # another worker closed it meanwhile
            was_frozen = account.frozen_overdue
            account, closes, postings = close_account(account, business_date, terms)
            for posting in postings:
                key = TransferKey(CLOSE_PRINCIPAL, posting.id, posting.leg)
                spec = TransferSpec(key=key, debit=posting.debit, credit=posting.credit,
                                    amount=posting.amount, kind=posting.kind)  # fmt: skip
                self._move("transfer", key, at, spec=spec)
                done["penalties_fen" if posting.leg == "penalty" else "fees_fen"] += posting.amount
            for close in closes:
                statement = close.statement
                if statement is None:
                    continue
                self._execute(
                    self.credit.insert_statement,
                    (
                        customer_id, statement.statement_date.isoformat(), statement.period,
                        statement.due_date.isoformat(), statement.previous_balance_fen,
                        statement.new_balance_fen,
                        msgspec.json.encode(statement).decode(),
                    ),
                )  # fmt: skip
                done["statements"] += 1
            done["frozen"] += int(account.frozen_overdue and not was_frozen)
            self._save(account, at)
            done["accounts"] += 1
        return done

    def credit_statements(self, statement_date: date) -> list[StatementRow]:
        """The statements of a statement date, by customer: the day's file."""
        rows = self._read(
            lambda: self._execute(self.credit.statements_of, (statement_date.isoformat(),))
        )
        return [
            StatementRow(customer_id=row["customer_id"],
                         statement=_STATEMENT_DECODER.decode(row["statement"]))
            for row in rows
        ]  # fmt: skip

    def credit_totals(self) -> CreditTotals:
        def body() -> tuple[Row | None, Row | None]:
            return self._first(self.credit.counts), self._first(
                self.credit.penalties, ("penalty_income",)
            )

        row, penalties = self._read(body)
        assert row is not None
        return CreditTotals(
            accounts=int(row["accounts"]), frozen=int(row["frozen"]),
            outstanding_fen=int(row["outstanding_fen"]), overdue_fen=int(row["overdue_fen"]),
            overdue=int(row["overdue"]),
            penalties_fen=0 if penalties is None else int(penalties["credits_posted"]),
        )  # fmt: skip


def _today(account: CreditAccount) -> date:
    from switch.core.credit.billing import open_date

    return open_date(account)
