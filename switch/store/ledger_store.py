"""The ledger store (``ledger_port.py``) written once for both engines, over the
statements of ``ledger_sql.py``. Each engine's ``ledger.py`` gives its statements and
how it connects, runs a statement and holds a write transaction.

Every step is one transaction: it locks what it changes (the wallet's row for a
payment's checks, the transfer's row, then the two accounts in the order of their
names, so that two steps never wait on each other in a circle), asks the core
(``switch.core.ledger.decide``, ``switch.core.wallet.money_check``) what to do, and
writes it. A step that meets a deadlock, a serialization failure or a key inserted by
another worker at the same moment is run again from the start (bounded); one that meets
the store down is LedgerUnavailable (91).

Plain blocking calls: the trio layer runs them in a worker thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Final, NamedTuple, TypeAlias, TypeVar

from switch.core import ledger
from switch.core.credit.billing import CreditAsk, drop_back, drop_repay
from switch.core.credit.plan import Terms
from switch.core.ledger import (
    TRANSFER_STATES,
    AccountsBalance,
    Balances,
    LedgerDamaged,
    LedgerFigures,
    LedgerTotals,
    Plan,
    Transfer,
    TransferKey,
    TransferNotFound,
    TransferSpec,
    WalletTotals,
)
from switch.core.paycode import (
    PROBE_WINDOW_S,
    CodeTaken,
    Funding,
    Paycode,
    PaycodeSettings,
    Verification,
    well_formed,
)
from switch.core.wallet import (
    MAX_BOUND,
    AccountNotBound,
    BadField,
    BoundAccount,
    MoneyAsk,
    NoSuchWallet,
    NotYourWallet,
    Refusal,
    TooManyAccounts,
    Usage,
    Wallet,
    WalletSettings,
    WithdrawalLine,
    class_left,
    money_check,
    year_of,
)
from switch.store.desk_results import DeskResultSteps
from switch.store.hold_store import HoldSteps
from switch.store.ledger_port import (
    AccountView,
    Fault,
    History,
    HistoryItem,
    LedgerUnavailable,
    QrHold,
    QrRecord,
    Reserved,
    WalletView,
)
from switch.store.ledger_sql import LedgerSql
from switch.store.own_store import OwnMerchantSteps
from switch.store.risk_events import RiskEventSteps

Row: TypeAlias = Mapping[str, Any]
Parameters: TypeAlias = Sequence[Any] | dict[str, Any]
T = TypeVar("T")

MAX_ATTEMPTS: Final = 8
"""A step run again after a deadlock or a key another worker inserted at the same
moment; past this many, the answer is 91."""


Grouped: TypeAlias = tuple[Any, BaseException | None]
"""One call's outcome in ``grouped``: its result, or (None, the exception it raised)."""


def _capture(call: Callable[[], Any]) -> Grouped:
    try:
        return call(), None
    except BaseException as exc:  # the caller's to raise, in its own task
        return None, exc


class Refused(Exception):
    """Inside a step: its checks refused it; the transaction rolls back (nothing it
    wrote stays) and the step returns the refusal."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def _transfer(row: Row) -> Transfer:
    spec = TransferSpec(
        key=TransferKey(row["principal"], row["request_id"], row["leg"]),
        debit=row["debit_account"],
        credit=row["credit_account"],
        amount=row["amount"],
        kind=row["kind"],
        rrn=row["rrn"],
        merchant_id=row["merchant_id"],
    )
    return Transfer(spec=spec, state=row["state"], posted_amount=row["posted_amount"])


def _balances(row: Row) -> Balances:
    return Balances(
        name=row["name"],
        debit_cap=row["debit_cap"],
        debits_pending=row["debits_pending"],
        debits_posted=row["debits_posted"],
        credits_pending=row["credits_pending"],
        credits_posted=row["credits_posted"],
    )


def _qr(row: Row) -> QrRecord:
    return QrRecord(**{name: row[name] for name in QrRecord.__struct_fields__})


class Locked(NamedTuple):
    """What a step locked before its move (``_move``): the transfer under the key (None:
    none there), and its accounts' sums (None: not yet locked)."""

    transfer: Transfer | None
    balances: dict[str, Balances] | None


class LedgerStoreBase(HoldSteps, OwnMerchantSteps, DeskResultSteps, RiskEventSteps, ABC):
    """The ledger store port, but for what each engine gives (the abstract methods)."""

    sql: ClassVar[LedgerSql]
    errors: ClassVar[tuple[type[Exception], ...]]
    """What the engine's driver raises when a statement fails."""
    retry: ClassVar[tuple[type[Exception], ...]]
    """What makes a step run again: a deadlock, a serialization failure, a unique key
    another worker inserted first."""
    label: ClassVar[str]

    fault: Fault | None = None

    # -- what each engine gives ---------------------------------------------------------

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _execute(self, statement: str, parameters: Parameters = ()) -> list[Row]:
        """Runs a statement; its rows."""

    @abstractmethod
    def _change(self, statement: str, parameters: Parameters = ()) -> int:
        """Runs a statement that writes; how many rows it changed."""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[None]:
        """A write transaction: committed at the block's end, rolled back on an error."""

    @staticmethod
    def _cause(exc: BaseException) -> str:
        return str(exc).strip().replace("\n", " ") or type(exc).__name__

    # -- steps --------------------------------------------------------------------------

    _in_step: bool = False
    _grouping: bool = False
    _in_item: bool = False

    lazy_ends: ClassVar[bool] = False
    """Whether ``grouped(..., durable=False)`` commits without its own fsync: SQLite's
    file, beside the one process that writes it (design.md, "The ledger's post without
    its own fsync"). PostgreSQL's commits stay synchronous: its server can lose an
    asynchronous commit while the switch lives on, and no start-up would end the
    transfer left pending."""
    _durable: bool = True
    """The commit of the steps running now waits for the disk (``grouped``)."""

    def grouped(self, calls: Sequence[Callable[[], Any]], *, durable: bool = True) -> list[Grouped]:
        """Several callers' store calls in one transaction, one commit: each call's
        steps as they would be alone, each in a savepoint of its own, so that one's
        refusal or failure rolls back its own writes only (each outcome is that call's
        result, or the exception it raised). An engine error or a conflict is the whole group's: run
        again as a step is, and when it still fails, each call on its own, in a
        transaction of its own, as if never grouped. ``durable`` False (every call an
        end whose answer is journaled, :attr:`lazy_ends`): committed without an fsync
        of its own."""
        self._durable = durable or not self.lazy_ends
        try:
            return self._grouped(calls)
        finally:
            self._durable = True

    def _grouped(self, calls: Sequence[Callable[[], Any]]) -> list[Grouped]:
        if len(calls) == 1:
            return [_capture(calls[0])]

        def body() -> list[Grouped]:
            self._grouping = True
            try:
                return [_capture(call) for call in calls]
            finally:
                self._grouping = False

        try:
            return self._step("grouped", body)
        except LedgerUnavailable:
            return [_capture(call) for call in calls]

    def _savepoint(self, name: str, body: Callable[[], T]) -> T:
        """One grouped call's step (``grouped``): what a transaction of its own would be."""
        self._in_item = True
        try:
            self._change("SAVEPOINT grouped_step")
            try:
                result = body()
                if self.fault is not None:
                    self.fault(name)
            except Refused as refused:
                self._change("ROLLBACK TO SAVEPOINT grouped_step")
                result = refused.refusal  # type: ignore[assignment]
            except (*self.errors, *self.retry):
                raise  # the group's: rolled back, then run again or each call alone
            except BaseException:
                self._change("ROLLBACK TO SAVEPOINT grouped_step")
                self._change("RELEASE SAVEPOINT grouped_step")
                raise
            self._change("RELEASE SAVEPOINT grouped_step")
            return result
        finally:
            self._in_item = False

    def _step(self, name: str, body: Callable[[], T]) -> T:
        """``body`` in one transaction, run again on a conflict with another worker. A
        step called from another's body is part of that one's transaction."""
        if self._in_step:
            if self._grouping and not self._in_item:
                return self._savepoint(name, body)
            try:
                return body()
            except Refused as refused:
                return refused.refusal  # type: ignore[return-value]
        self._in_step = True
        try:
            return self._run_step(name, body)
        finally:
            self._in_step = False

    def _run_step(self, name: str, body: Callable[[], T]) -> T:
        for attempt in range(MAX_ATTEMPTS):
            try:
                with self._transaction():
                    result = body()
                    if self.fault is not None:
                        self.fault(name)
                return result
            except Refused as refused:
                return refused.refusal  # type: ignore[return-value]
            except self.retry as exc:
                if attempt == MAX_ATTEMPTS - 1:
                    raise LedgerUnavailable(f"{self.label}: {name}: {self._cause(exc)}") from exc
            except self.errors as exc:
                raise LedgerUnavailable(f"{self.label}: {name}: {self._cause(exc)}") from exc
        raise AssertionError("unreachable")

    def _read(self, body: Callable[[], T]) -> T:
        try:
            return body()
        except self.errors as exc:
            raise LedgerUnavailable(f"{self.label}: {self._cause(exc)}") from exc

    def _first(self, statement: str, parameters: Parameters = ()) -> Row | None:
        rows = self._execute(statement, parameters)
        return rows[0] if rows else None

    # -- the ledger -----------------------------------------------------------------------

    def _ensure_account(self, name: str) -> None:
        found = ledger.account_class(name)
        self._execute(self.sql.ensure_account, (name, found.type, found.unit, found.debit_cap))

    def _lock_account(self, name: str) -> Balances:
        row = self._first(self.sql.lock_account, (name,))
        if row is None:
            raise LedgerDamaged(f"account {name} is not there")
        return _balances(row)

    def _lock_accounts(self, names: Sequence[str], *, ensure: bool = False) -> dict[str, Balances]:
        """A transfer's accounts, locked in the order of their names, as every step locks
        them; ``ensure``: one not there yet (a merchant's first payment) made first. (One
        statement a row: on SQLite a statement of two rows costs more than two of one.)"""
        locked = {}
        for name in sorted(set(names)):
            row = self._first(self.sql.lock_account, (name,))
            if row is None and ensure:
                self._ensure_account(name)
                row = self._first(self.sql.lock_account, (name,))
            if row is None:
                raise LedgerDamaged(f"account {name} is not there")
            locked[name] = _balances(row)
        return locked

    def _lock_transfer(self, key: TransferKey) -> Transfer | None:
        row = self._first(self.sql.lock_transfer, (key.principal, key.id, key.leg))
        return None if row is None else _transfer(row)

    def _move(
        self,
        operation: ledger.Operation,
        key: TransferKey,
        at: float,
        *,
        spec: TransferSpec | None = None,
        amount: int | None = None,
        locked: Locked | None = None,
    ) -> Plan:
        """One operation of the two-phase machine, inside the caller's transaction.
        ``locked``: what the caller already locked in it (the transfer under ``key``,
        and its accounts' sums), not read again; its balances become those after."""
        existing = self._lock_transfer(key) if locked is None else locked.transfer
        balances = None if locked is None else locked.balances
        if balances is None:
            if existing is not None:
                balances = self._lock_accounts((existing.spec.debit, existing.spec.credit))
            elif spec is not None:
                balances = self._lock_accounts((spec.debit, spec.credit), ensure=True)
            else:
                raise TransferNotFound(f"{operation} of {key}: no such transfer")
        plan = ledger.decide(operation, existing, balances, spec=spec, amount=amount)
        if plan.after is not None:
            self._apply(plan, balances, at)
        return plan

    def _apply(self, plan: Plan, balances: dict[str, Balances], at: float) -> None:
        after = plan.after
        assert after is not None
        spec, key = after.spec, after.spec.key
        if plan.before is None:
            self._execute(
                self.sql.insert_transfer,
                (
                    key.principal, key.id, key.leg, spec.debit, spec.credit, spec.amount,
                    spec.kind, spec.rrn, spec.merchant_id, after.state, after.posted_amount,
                    at, at,
                ),
            )  # fmt: skip
        else:
            ended = self._change(
                self.sql.end_transfer,
                (after.state, after.posted_amount, at, key.principal, key.id, key.leg),
            )
            if ended != 1:
                raise LedgerDamaged(f"transfer {key} was not pending")
        for name, account in balances.items():
            sums = {"debits_pending": 0, "debits_posted": 0, "credits_pending": 0,
                    "credits_posted": 0}  # fmt: skip
            for delta in plan.deltas:
                if delta.account == name:
                    sums[delta.field] += delta.amount
            changed = self._change(self.sql.update_account, (*sums.values(), name))
            if changed != 1:
                raise LedgerDamaged(f"account {name} changed {changed} times")
            balances[name] = ledger.apply(account, plan.deltas)
        for name, moved in plan.posted():
            self._execute(
                self.sql.insert_movement,
                (
                    name, key.principal, key.id, key.leg, moved, balances[name].balance,
                    spec.kind, spec.rrn, spec.merchant_id, at,
                ),
            )  # fmt: skip

    def reserve(self, spec: TransferSpec, at: float) -> Plan:
        """A pending transfer (wallet.md: at receipt); again: nothing changes."""
        return self._step("reserve", lambda: self._move("reserve", spec.key, at, spec=spec))

    def transfer(self, spec: TransferSpec, at: float) -> Plan:
        """A transfer posted at once (settlement's fees and payouts, the withdrawals
        file's rows, recon corrections)."""
        return self._step("transfer", lambda: self._move("transfer", spec.key, at, spec=spec))

    def transfers(self, specs: Sequence[TransferSpec], at: float) -> None:
        """Posted transfers, all in one transaction (a settlement's fees and payouts: one
        commit for many merchants); again: nothing changes."""

        def body() -> None:
            for spec in specs:
                self._move("transfer", spec.key, at, spec=spec)

        self._step("transfers", body)

    def post(
        self,
        key: TransferKey,
        at: float,
        *,
        amount: int | None = None,
        uncount: TransferKey | None = None,
        rrn: str | None = None,
    ) -> Plan:
        """Posts a pending transfer (its answer journaled), all of it or ``amount`` of
        it; ``uncount`` names the payment a void or reversal takes out of the wallet's
        counts (wallet.md); ``rrn`` is the journal's RRN of its request, under which a
        repayment by card is booked (start-up: settlement finds it by that RRN)."""

        def body() -> Plan:
            credit = self._credit_back(key) if amount is None else None
            repay = self._credit_repay_of(key) if amount is None and credit is None else None
            if credit is not None:  # a credit purchase's void, reversal or refund
                plan = self._credit_post_back(*credit, key, at)
            elif repay is not None:  # a repayment by card the journal approved (start-up)
                plan = self._credit_post_repay(*repay, key, rrn or key.id, at)[0]
            else:
                plan = self._move("post", key, at, amount=amount)
            if uncount is not None and plan.changes:
                self._uncount(uncount)
            return plan

        return self._step("post", body)

    def void(self, key: TransferKey, at: float) -> Plan:
        """Voids a pending transfer (a decline, a timeout, a reversal that came first):
        its amount is released, and what it counted is no longer counted."""

        def body() -> Plan:
            credit = self._credit_back(key)
            repay = self._credit_repay_of(key) if credit is None else None
            plan = self._move("void", key, at)
            if plan.changes:
                self._uncount(key)
                if credit is not None:  # a credit void or refund that never was
                    self._save(drop_back(*credit), at)
                if repay is not None:  # a repayment by card the bank did not approve
                    self._save(drop_repay(*repay), at)
            return plan

        return self._step("void", body)

    def _uncount(self, key: TransferKey) -> None:
        self._execute(self.sql.cancel_count, (True, key.principal, key.id, key.leg))

    def transfer_of(self, key: TransferKey) -> Transfer | None:
        row = self._read(
            lambda: self._first(self.sql.transfer_by_key, (key.principal, key.id, key.leg))
        )
        return None if row is None else _transfer(row)

    def pending_transfers(self) -> list[Transfer]:
        """What start-up settles by the journal's answers (wallet.md)."""
        rows = self._read(lambda: self._execute(self.sql.pending_transfers))
        return [_transfer(row) for row in rows]

    def account(self, name: str) -> AccountView | None:
        row = self._read(lambda: self._first(self.sql.account, (name,)))
        return None if row is None else _view(row)

    def accounts(self) -> list[AccountView]:
        return [_view(row) for row in self._read(lambda: self._execute(self.sql.accounts))]

    def totals(self) -> list[LedgerTotals]:
        rows = self._read(lambda: self._execute(self.sql.totals))
        return [LedgerTotals(**dict(row)) for row in rows]

    def figures(self) -> LedgerFigures:
        """Transfers by state and the sums per unit (one aggregate each, for the
        metrics)."""

        def body() -> LedgerFigures:
            transfers = dict.fromkeys(TRANSFER_STATES, 0)
            for row in self._execute(self.sql.transfer_states):
                transfers[row["state"]] = int(row["n"])
            totals = [LedgerTotals(**dict(row)) for row in self._execute(self.sql.totals)]
            return LedgerFigures(transfers=transfers, totals=totals)

        return self._read(body)

    def wallet_totals(self) -> WalletTotals:
        """Every wallet's account summed (reads each: the metrics ask at an interval)."""
        row = self._read(lambda: self._first(self.sql.wallet_totals))
        if row is None:
            return WalletTotals(posted_fen=0, pending_fen=0)
        return WalletTotals(posted_fen=int(row["posted"]), pending_fen=int(row["pending"]))

    def balances(self, account: str | None = None) -> list[AccountsBalance]:
        """The operator's balances: every account, those kept per customer summed per
        kind (``wallet:*``); or the one ``account`` (none: empty)."""
        if account is None:
            rows = self._read(lambda: self._execute(self.sql.balances))
        else:
            rows = self._read(lambda: self._execute(self.sql.balance_of, (account,)))
        return [
            AccountsBalance(
                account=str(row["account"]), unit=str(row["unit"]), accounts=int(row["accounts"]),
                debits_posted=int(row["debits_posted"]), credits_posted=int(row["credits_posted"]),
                debits_pending=int(row["debits_pending"]),
                credits_pending=int(row["credits_pending"]),
            )
            for row in rows
        ]  # fmt: skip

    def verify(self) -> list[str]:
        """Every invariant of the stored ledger that does not hold (none: empty):
        debits equal credits per unit and phase; each account's sums are its
        transfers'; each account's posted movements add up to its balance; no capped
        account past its cap."""

        def body() -> list[str]:
            problems = [problem for total in self.totals() for problem in total.problems()]
            for row in self._execute(self.sql.drifted_accounts):
                problems.append(f"{row['name']}: sums differ from its transfers'")
            for row in self._execute(self.sql.drifted_movements):
                problems.append(f"{row['name']}: movements differ from its balance")
            for row in self._execute(self.sql.over_cap):
                problems.append(f"{row['name']}: past its cap")
            return problems

        return self._read(body)

    # -- wallets --------------------------------------------------------------------------

    def _wallet(self, customer_id: str, app: str | None, *, lock: bool) -> Wallet:
        statement = self.sql.lock_wallet if lock else self.sql.read_wallet
        row = self._first(statement, (customer_id,))
        if row is None:
            raise NoSuchWallet(f"no wallet of {customer_id}")
        if app is not None and row["app"] != app:
            raise NotYourWallet(f"wallet of {customer_id} is another app's")
        return Wallet(
            customer_id=row["customer_id"], app=row["app"], wallet_class=row["class"],
            opened=row["opened"],
        )  # fmt: skip

    def _usage(self, wallet: Wallet, today: str) -> Usage:
        row = self._first(
            self.sql.usage,
            {
                "t": True, "f": False, "year": year_of(today), "today": today,
                "customer": wallet.customer_id, "all_years": wallet.wallet_class == 1,
            },
        )  # fmt: skip
        assert row is not None
        return Usage(**dict(row))

    def _wallet_view(self, wallet: Wallet, today: str) -> WalletView:
        row = self._first(self.sql.account, (ledger.wallet_account(wallet.customer_id),))
        balances = _balances(row) if row is not None else Balances(name="", debit_cap=0)
        return WalletView(
            customer_id=wallet.customer_id,
            wallet_class=wallet.wallet_class,
            balance=balances.balance,
            available=balances.available,
            class_left=class_left(wallet.wallet_class, self._usage(wallet, today)),
            opened=wallet.opened,
        )

    def open_wallet(
        self, customer_id: str, app: str, wallet_class: int, today: str, at: float
    ) -> WalletView:
        """wallet.md's ``wallet_open``: a wallet with balance 0, or the class of one
        already there (its balance and counts kept); another app's: NotYourWallet."""
        if wallet_class not in (1, 2, 3):
            raise ValueError(f"wallet class {wallet_class}")

        def body() -> WalletView:
            row = self._first(self.sql.lock_wallet, (customer_id,))
            if row is None:
                self._execute(self.sql.insert_wallet, (customer_id, app, wallet_class, today, at))
                self._ensure_account(ledger.wallet_account(customer_id))
            elif row["app"] != app:
                raise NotYourWallet(f"wallet of {customer_id} is another app's")
            else:
                self._execute(self.sql.set_class, (wallet_class, customer_id))
            return self._wallet_view(self._wallet(customer_id, app, lock=False), today)

        return self._step("open_wallet", body)

    def wallet(self, customer_id: str, app: str | None, today: str) -> WalletView:
        """``wallet_balance``: NoSuchWallet (14), NotYourWallet (03)."""
        return self._read(
            lambda: self._wallet_view(self._wallet(customer_id, app, lock=False), today)
        )

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
    ) -> Reserved | Refusal:
        """A wallet payment's, withdrawal's or repayment's checks and pending transfer,
        in one step (wallet.md): the wallet (14, 03); the withdrawal account bound, as
        bound (14); the QR as issued and open (14, 54, 94, 13); then the money checks
        (61, 61, 51). Refused: nothing is written. The same key again: the transfer
        reserved before, nothing counted twice. ``order`` (rrn, business date) records
        a withdrawal for its file. ``credit``: a payment with funding ``credit``, whose
        balance check is credit.md's (14, 62, 13, 51) and which makes its purchase.
        ``screen``: risk.md's rules, asked where wallet.md puts them (after the account's
        and the QR's checks, before the money checks); its refusal refuses the step."""

        def body() -> Reserved:
            wallet = self._wallet(ask.customer_id, app, lock=True)
            existing = self._lock_transfer(spec.key)
            if existing is not None:
                plan = ledger.decide("reserve", existing, {}, spec=spec)
                assert plan.after is None
                account = self._lock_account(spec.debit)
                return Reserved(transfer=existing, available_after=account.available, again=True)
            # The credit account's row is locked before the ledger's accounts, as every
            # credit step locks them.
            lent = self._credit_lock(ask.customer_id) if credit is not None else None
            if withdraw_to is not None:
                bound = self._execute(self.sql.bound, (ask.customer_id,))
                if not any(BoundAccount(**dict(row)) == withdraw_to for row in bound):
                    raise AccountNotBound("the account is not bound to the wallet")
            if qr is not None:
                self._hold_qr(qr, ask, at)
            if screen is not None:
                screened = screen()
                if screened is not None:
                    raise Refused(screened)
            # Both accounts locked now, in the order of their names as every step locks
            # them (locking the debit first would wait in a circle with a refund's post).
            locked = self._lock_accounts((spec.debit, spec.credit), ensure=True)
            available = locked[spec.debit].available
            refusal = money_check(wallet, self._usage(wallet, ask.local_date), ask,
                                  available, settings)  # fmt: skip
            if refusal is None and credit is not None:
                checked = self._credit_checks(lent, credit, merchant_id=spec.merchant_id,
                                              amount_fen=ask.amount)  # fmt: skip
                refusal = checked if isinstance(checked, Refusal) else None
                lent = None if isinstance(checked, Refusal) else checked
            if refusal is not None:
                raise Refused(refusal)
            # What is locked is moved as it is (its sums after, in ``locked``).
            plan = self._move("reserve", spec.key, at, spec=spec, locked=Locked(None, locked))
            assert plan.after is not None
            if lent is not None:
                self._save(lent, at)
            key = spec.key
            self._execute(
                self.sql.insert_count,
                (
                    key.principal, key.id, key.leg, ask.customer_id, ask.local_date,
                    year_of(ask.local_date), ask.amount, ask.counts_in_class, ask.counts_daily,
                    ask.channel == "qr_static",
                ),
            )  # fmt: skip
            if qr is not None and qr.kind == "dynamic":
                paying = f"{key.principal} {key.id}"
                if self._change(self.sql.set_qr_state, ("paying", paying, qr.qr_id, "open")) != 1:
                    raise Refused(Refusal("94", "QR paid or being paid"))
            if qr is not None:  # the QR's payments, for qr_status
                self._execute(
                    self.sql.insert_qr_payment,
                    (key.principal, key.id, qr.qr_id, spec.rrn, ask.amount, at),
                )
            if withdraw_to is not None and order is not None:
                rrn, business_date = order
                self._execute(
                    self.sql.insert_order,
                    (
                        key.principal, key.id, "withdraw", ask.customer_id, rrn, ask.amount,
                        "", withdraw_to.account, withdraw_to.account_name,
                        withdraw_to.bank_code, business_date, at, at,
                    ),
                )  # fmt: skip
            return Reserved(transfer=plan.after, available_after=locked[spec.debit].available)

        return self._step("reserve_payment", body)

    def _hold_qr(self, hold: QrHold, ask: MoneyAsk, at: float) -> None:
        """wallet.md's QR checks after the payload: as issued to its merchant (14);
        dynamic: not expired (54), neither paid nor being paid (94); the amount (13)."""
        row = self._first(self.sql.lock_qr, (hold.qr_id,))
        if row is None or (row["merchant_id"], row["kind"], row["amount"]) != (
            hold.merchant_id,
            hold.kind,
            hold.amount if hold.kind == "dynamic" else None,
        ):
            raise Refused(Refusal("14", "QR not as issued"))
        if row["kind"] == "dynamic":
            if row["expires_at"] is not None and at >= row["expires_at"]:
                raise Refused(Refusal("54", "QR expired"))
            if row["state"] != "open":
                raise Refused(Refusal("94", "QR paid or being paid"))
            if ask.amount != row["amount"]:
                raise Refused(Refusal("13", "amount other than the QR's"))
        elif ask.amount < 1:
            raise Refused(Refusal("13", "a static QR needs an amount"))

    def end_payment(
        self, key: TransferKey, approved: bool, at: float, *, qr_id: str | None = None
    ) -> Plan:
        """The answer journaled: posts the pending transfer (approved) or voids it; a
        dynamic QR it reserved becomes ``paid``, or ``open`` again; a withdrawal's or
        top-up's record takes the answer."""

        def body() -> Plan:
            transfer = self._lock_transfer(key)
            credit = self._credit_ended(transfer, at)  # a credit purchase: its account locked
            plan = self._move("post" if approved else "void", key, at,
                              locked=Locked(transfer, None))  # fmt: skip
            if credit is not None:
                credit(plan)
            if plan.changes:
                if not approved:
                    self._uncount(key)
                if qr_id is not None:
                    state = "paid" if approved else "open"
                    paying = f"{key.principal} {key.id}" if approved else None
                    self._execute(self.sql.set_qr_state, (state, paying, qr_id, "paying"))
                if key.principal.startswith("app:"):  # an app's QR payment (wallet_pay)
                    self._execute(
                        self.sql.end_qr_payment,
                        ("approved" if approved else "declined", key.principal, key.id),
                    )
                self._execute(
                    self.sql.end_order,
                    ("approved" if approved else "declined", at, key.principal, key.id),
                )
            return plan

        return self._step("end_payment", body)

    def reserve_topup(self, spec: TransferSpec, bank: str, business_date: str, at: float) -> Plan:
        """A top-up sent to the bank: pending ``bank_clearing:<bank>`` to ``wallet:<c>``,
        posted by ``end_payment`` when the approval is journaled."""
        customer_id = spec.credit.partition(":")[2]

        def body() -> Plan:
            self._wallet(customer_id, None, lock=True)
            plan = self._move("reserve", spec.key, at, spec=spec)
            key = spec.key
            self._execute(
                self.sql.insert_order,
                (
                    key.principal, key.id, "topup", customer_id, spec.rrn, spec.amount, bank,
                    "", "", "", business_date, at, at,
                ),
            )  # fmt: skip
            return plan

        return self._step("reserve_topup", body)

    def end_topup(self, key: TransferKey, approved: bool, rrn: str, at: float) -> Plan:
        """A top-up's sale answered: its transfer and order take the sale's RRN, then
        it is posted (the approval journaled: the wallet credited) or voided."""

        def body() -> Plan:
            if rrn:
                self._execute(self.sql.set_transfer_rrn, (rrn, key.principal, key.id, key.leg))
                self._execute(self.sql.set_order_rrn, (rrn, key.principal, key.id))
            plan = self._move("post" if approved else "void", key, at)
            if plan.changes:
                self._execute(
                    self.sql.end_order,
                    ("approved" if approved else "declined", at, key.principal, key.id),
                )
            return plan

        return self._step("end_topup", body)

    def qr_payments(self, qr_id: str, limit: int) -> list[tuple[str, int, float]]:
        """The QR's approved ``wallet_pay`` payments, newest first: (RRN, amount, when)."""
        rows = self._read(lambda: self._execute(self.sql.qr_payments, (qr_id, limit)))
        return [(str(row["rrn"]), int(row["amount"]), float(row["at"])) for row in rows]

    def qr_paying(self, key: TransferKey) -> str | None:
        """The dynamic QR the payment ``key`` holds ``paying`` (start-up recovery)."""
        paying = f"{key.principal} {key.id}"
        row = self._read(lambda: self._first(self.sql.qr_by_paying, (paying,)))
        return None if row is None else str(row["qr_id"])

    def bind_account(
        self, customer_id: str, app: str, account: BoundAccount, at: float
    ) -> list[BoundAccount]:
        """Binds a withdrawal account: at most 5 (12); one already bound: unchanged."""

        def body() -> list[BoundAccount]:
            self._wallet(customer_id, app, lock=True)
            bound = self._bound(customer_id)
            if any((b.account, b.bank_code) == (account.account, account.bank_code) for b in bound):
                return bound
            if len(bound) >= MAX_BOUND:
                raise TooManyAccounts("a sixth withdrawal account")
            self._execute(
                self.sql.bind,
                (customer_id, account.account, account.bank_code, account.account_name, at),
            )
            return self._bound(customer_id)

        return self._step("bind_account", body)

    def unbind_account(
        self, customer_id: str, app: str, account: str, bank_code: str
    ) -> list[BoundAccount]:
        def body() -> list[BoundAccount]:
            self._wallet(customer_id, app, lock=True)
            if self._change(self.sql.unbind, (customer_id, account, bank_code)) != 1:
                raise AccountNotBound("the account is not bound")
            return self._bound(customer_id)

        return self._step("unbind_account", body)

    def _bound(self, customer_id: str) -> list[BoundAccount]:
        return [BoundAccount(**dict(row)) for row in self._execute(self.sql.bound, (customer_id,))]

    def bound_accounts(self, customer_id: str) -> list[BoundAccount]:
        return self._read(lambda: self._bound(customer_id))

    def history(self, customer_id: str, app: str | None, limit: int, cursor: str | None) -> History:
        """The wallet's posted movements, newest first; ``next`` continues."""

        def body() -> History:
            self._wallet(customer_id, app, lock=False)
            name = ledger.wallet_account(customer_id)
            if cursor is None:
                rows = self._execute(self.sql.movements, (name, limit + 1))
            else:
                if not cursor.isdigit() or len(cursor) > 18:
                    raise BadField("cursor", "not a result's next")
                rows = self._execute(self.sql.movements_before, (name, int(cursor), limit + 1))
            items = [
                HistoryItem(
                    at=row["at"], kind=row["kind"], amount=row["amount"],
                    balance_after=row["balance_after"], rrn=row["rrn"],
                    merchant_id=row["merchant_id"],
                )
                for row in rows[:limit]
            ]  # fmt: skip
            following = str(rows[limit - 1]["id"]) if len(rows) > limit else None
            return History(items=items, next=following)

        return self._read(body)

    def withdrawals(self, business_date: str) -> list[WithdrawalLine]:
        """The withdrawals approved on a business date, its file's rows, by RRN."""
        rows = self._read(lambda: self._execute(self.sql.withdrawals, (business_date,)))
        return [WithdrawalLine(**{k: row[k] for k in WithdrawalLine.__struct_fields__})
                for row in rows]  # fmt: skip

    # -- QR codes -------------------------------------------------------------------------

    def create_qr(self, record: QrRecord) -> None:
        def body() -> None:
            self._execute(
                self.sql.insert_qr,
                (
                    record.qr_id, record.merchant_id, record.kind, record.amount,
                    record.order_id, record.online_id, record.payload, record.created_at,
                    record.expires_at,
                ),
            )  # fmt: skip

        self._step("create_qr", body)

    def qr_by_online_id(self, merchant_id: str, online_id: str) -> QrRecord | None:
        """The merchant's QR made by its ``qr_create`` of ``online_id``."""

        def body() -> QrRecord | None:
            found = self._first(self.sql.qr_by_online_id, (merchant_id, online_id))
            if found is None:
                return None
            row = self._first(self.sql.read_qr, (found["qr_id"],))
            return None if row is None else _qr(row)

        return self._read(body)

    def qr(self, qr_id: str) -> QrRecord | None:
        row = self._read(lambda: self._first(self.sql.read_qr, (qr_id,)))
        return None if row is None else _qr(row)

    # -- payment codes (wall clock) ---------------------------------------------------------

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
    ) -> Paycode:
        """A new code (redrawn while it equals a code kept: those of the last 24 hours);
        past ``max_open`` open codes the customer's oldest is cancelled. A ``credit``
        code needs a credit account (14) not frozen (62), credit.md; ``instalments``
        only with ``credit`` (30)."""

        def body() -> Paycode:
            self._wallet(customer_id, app, lock=True)
            self._credit_code_check(customer_id, funding, instalments)
            for _ in range(MAX_ATTEMPTS):
                code = draw()
                inserted = self._change(
                    self.sql.insert_paycode,
                    (code, customer_id, funding, verification, now, now + settings.ttl_s,
                     instalments),
                )  # fmt: skip
                if inserted == 1:
                    break
            else:
                raise LedgerDamaged("no new payment code could be drawn")
            open_codes = [row["code"] for row in self._execute(
                self.sql.open_paycodes, (customer_id, now))]  # fmt: skip
            for old in open_codes[: max(0, len(open_codes) - settings.max_open)]:
                self._execute(self.sql.cancel_paycode, (old,))
            return Paycode(
                code=code, customer_id=customer_id, funding=funding, verification=verification,
                issued_at=now, expires_at=now + settings.ttl_s, instalments=instalments,
            )  # fmt: skip

        return self._step("issue_paycode", body)

    def take_paycode(
        self, code: str, terminal: str, now: float, settings: PaycodeSettings
    ) -> CodeTaken:
        """A scanned code (wallet.md): 65 while the terminal has ``probe_limit`` answers
        of 14 in the last 10 minutes; 14 for a code unknown, expired, used, cancelled or
        failing Luhn (counted as a probe); else the code, now used (whatever the sale's
        outcome)."""

        def body() -> CodeTaken:
            since = now - PROBE_WINDOW_S
            # Taken (used) in one statement: open, not expired, the probes below 65's.
            taking = (code, now, terminal, since, settings.probe_limit)
            row = (
                self._first(self.sql.take_paycode, taking)
                if well_formed(code, settings.prefix)
                else None
            )
            if row is not None:
                return CodeTaken(response_code="00", paycode=Paycode(**dict(row)))
            probes = self._first(self.sql.probes, (terminal, since))
            if probes is not None and probes["n"] >= settings.probe_limit:
                return CodeTaken(response_code="65")  # the code, if open, left open
            self._execute(self.sql.insert_probe, (terminal, now))
            return CodeTaken(response_code="14")

        return self._step("take_paycode", body)

    def pay_by_code(
        self,
        code: str,
        terminal: str,
        now: float,
        settings: WalletSettings,
        make: Callable[[Paycode], tuple[MoneyAsk, TransferSpec] | Refusal],
        *,
        credit_terms: Terms | None = None,
    ) -> tuple[CodeTaken, Reserved | Refusal | None]:
        """A payment-code sale's ledger step, one transaction (wallet.md): the code taken
        (65, 14: nothing more), then ``make``'s payment for its customer checked and
        reserved as ``reserve_payment`` does. A refusal of the payment (61, 51, or
        ``make``'s) still commits the code's use: it is used whatever the outcome."""

        def body() -> tuple[CodeTaken, Reserved | Refusal | None]:
            taken = self.take_paycode(code, terminal, now, settings.paycodes())
            if taken.paycode is None:
                return taken, None
            made = make(taken.paycode)
            if isinstance(made, Refusal):
                return taken, made
            ask, spec = made
            credit = None
            if ask.funding == "credit":
                if credit_terms is None:
                    return taken, Refusal("57", "credit funding is not offered")
                credit = CreditAsk(purchase_id=spec.rrn, instalments=taken.paycode.instalments,
                                   terms=credit_terms)  # fmt: skip
            return taken, self.reserve_payment(ask, spec, settings, now, credit=credit)

        return self._step("pay_by_code", body)

    def purge_paycodes(self, before: float) -> None:
        """Forgets codes issued, and probes made, before ``before`` (issue: now minus a
        day; the probe window is 10 minutes)."""

        def body() -> None:
            self._execute(self.sql.purge_paycodes, (before,))
            self._execute(self.sql.purge_probes, (before,))

        self._step("purge_paycodes", body)


def _view(row: Row) -> AccountView:
    return AccountView(balances=_balances(row), type=row["type"], unit=row["unit"])
