"""A property test of the ledger store: random sequences of every operation (wallets
opened, top-ups, payments with their checks, posts, partial posts, voids, one-phase
transfers, repeats of any key) with commit failures injected at random, against a
model. After every step the store's invariants hold (debits equal credits, each
account's sums are its transfers', no wallet below zero), every account is what the
model says, and nothing was posted twice. SQLite at length, PostgreSQL shorter."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from switch.core.ledger import LedgerError, TransferKey, TransferSpec
from switch.core.wallet import MoneyAsk, WalletSettings
from switch.store.ledger_port import Reserved
from switch.store.ledger_store import LedgerStoreBase
from switch.store.postgresql.ledger import PostgresLedgerStore
from switch.store.sqlite.ledger import SqliteLedgerStore

APP = "app:wallet"
TODAY = "2026-12-07"
SETTINGS = WalletSettings()
_examples = itertools.count()


class Crash(Exception):
    """An injected failure of a step's commit."""


class Model:
    """What the ledger should hold: each transfer's spec, state and posted amount."""

    def __init__(self) -> None:
        self.transfers: dict[TransferKey, tuple[TransferSpec, str, int]] = {}

    def sums(self, account: str) -> tuple[int, int, int, int]:
        dq = dp = cq = cp = 0
        for spec, state, posted in self.transfers.values():
            pending = spec.amount if state == "pending" else 0
            if spec.debit == account:
                dq, dp = dq + pending, dp + posted
            if spec.credit == account:
                cq, cp = cq + pending, cp + posted
        return dq, dp, cq, cp

    def available(self, account: str) -> int:
        dq, dp, _, cp = self.sums(account)
        return cp - dp - dq


class LedgerMachine(RuleBasedStateMachine):
    store: LedgerStoreBase
    """Set by each test's subclass."""

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.ns = next(_examples)
        self.customers = [f"C{self.ns}x{n}" for n in range(3)]
        self.merchants = [f"merchant:M{self.ns}x{n}" for n in range(2)]
        self.opened: set[str] = set()
        self.serial = itertools.count()
        self.crash_next = False
        payouts = self.store.account("payouts")  # shared by every example: its sums before
        self.before = (0, 0, 0, 0) if payouts is None else (
            payouts.balances.debits_pending, payouts.balances.debits_posted,
            payouts.balances.credits_pending, payouts.balances.credits_posted,
        )  # fmt: skip

    # -- faults --------------------------------------------------------------------

    def _fault(self, step: str) -> None:
        if self.crash_next:
            raise Crash(step)

    def _run(self, crash: bool, action: object) -> tuple[bool, object]:
        """Runs ``action`` (a callable); crashed: True and nothing."""
        self.crash_next = crash
        self.store.fault = self._fault
        try:
            return False, action()  # type: ignore[operator]
        except Crash:
            return True, None
        finally:
            self.crash_next = False
            self.store.fault = None

    def _key(self, leg: str) -> TransferKey:
        return TransferKey(APP, f"{self.ns}-{next(self.serial)}", leg)

    def _keys(self, state: str | None = None) -> list[TransferKey]:
        return [k for k, (_, s, _) in self.model.transfers.items() if state in (None, s)]

    # -- rules ------------------------------------------------------------------------

    @initialize()
    def open_first(self) -> None:
        self.store.open_wallet(self.customers[0], APP, 3, TODAY, 0.0)
        self.opened.add(self.customers[0])

    @rule(n=st.integers(0, 2), wallet_class=st.sampled_from([1, 2, 3]), crash=st.booleans())
    def open_wallet(self, n: int, wallet_class: int, crash: bool) -> None:
        customer = self.customers[n]
        crashed, _ = self._run(
            crash, lambda: self.store.open_wallet(customer, APP, wallet_class, TODAY, 1.0)
        )
        if not crashed:
            self.opened.add(customer)

    @rule(n=st.integers(0, 2), amount=st.integers(1, 50_000), approve=st.booleans(),
          crash=st.booleans())  # fmt: skip
    def top_up(self, n: int, amount: int, approve: bool, crash: bool) -> None:
        customer = self.customers[n]
        if customer not in self.opened:
            return
        key = self._key("topup")
        spec = TransferSpec(
            key=key,
            debit=f"bank_clearing:b{self.ns}",
            credit=f"wallet:{customer}",
            amount=amount,
            kind="topup",
        )
        crashed, _ = self._run(crash, lambda: self.store.reserve_topup(spec, "b", TODAY, 1.0))
        if crashed:
            return
        self.model.transfers[key] = (spec, "pending", 0)
        self.store.end_payment(key, approve, 2.0)
        self.model.transfers[key] = (spec, "posted", amount) if approve else (spec, "voided", 0)

    @rule(
        n=st.integers(0, 2),
        m=st.integers(0, 1),
        amount=st.integers(1, 30_000),
        channel=st.sampled_from(["none", "code", "qr_static"]),
        crash=st.booleans(),
    )
    def pay(self, n: int, m: int, amount: int, channel: str, crash: bool) -> None:
        customer = self.customers[n]
        if customer not in self.opened:
            return
        key = self._key("pay")
        spec = TransferSpec(key=key, debit=f"wallet:{customer}", credit=self.merchants[m],
                            amount=amount, kind="pay")  # fmt: skip
        ask = MoneyAsk(
            customer_id=customer,
            amount=amount,
            counted="pay",
            channel=channel,
            verification="A" if channel != "none" else None,
            local_date=TODAY,
        )  # type: ignore[arg-type]
        available = self.model.available(f"wallet:{customer}")
        crashed, result = self._run(
            crash, lambda: self.store.reserve_payment(ask, spec, SETTINGS, 1.0)
        )
        if crashed:
            return
        if isinstance(result, Reserved):
            assert amount <= available
            self.model.transfers[key] = (spec, "pending", 0)
        else:
            assert result is not None
            assert result.code in ("51", "61")  # type: ignore[attr-defined]

    @rule(data=st.data(), crash=st.booleans(), partial=st.booleans())
    def post(self, data: st.DataObject, crash: bool, partial: bool) -> None:
        pending = self._keys("pending")
        if not pending:
            return
        key = data.draw(st.sampled_from(pending))
        spec = self.model.transfers[key][0]
        amount = data.draw(st.integers(1, spec.amount)) if partial else None
        crashed, _ = self._run(crash, lambda: self.store.post(key, 3.0, amount=amount))
        if not crashed:
            self.model.transfers[key] = (spec, "posted", amount or spec.amount)

    @rule(data=st.data(), crash=st.booleans())
    def void(self, data: st.DataObject, crash: bool) -> None:
        pending = self._keys("pending")
        if not pending:
            return
        key = data.draw(st.sampled_from(pending))
        crashed, _ = self._run(crash, lambda: self.store.void(key, 3.0))
        if not crashed:
            self.model.transfers[key] = (self.model.transfers[key][0], "voided", 0)

    @rule(m=st.integers(0, 1), amount=st.integers(1, 20_000), crash=st.booleans())
    def payout(self, m: int, amount: int, crash: bool) -> None:
        key = self._key("payout")
        spec = TransferSpec(key=key, debit=self.merchants[m], credit="payouts", amount=amount,
                            kind="payout")  # fmt: skip
        crashed, _ = self._run(crash, lambda: self.store.transfer(spec, 4.0))
        if not crashed:
            self.model.transfers[key] = (spec, "posted", amount)

    @rule(data=st.data())
    def repeat(self, data: st.DataObject) -> None:
        """Any operation on a key again changes nothing, or is refused as the table says."""
        keys = self._keys()
        if not keys:
            return
        key = data.draw(st.sampled_from(keys))
        spec, state, _ = self.model.transfers[key]
        self.store.reserve(spec, 5.0)  # creating a key again: nothing
        operation = data.draw(st.sampled_from(["post", "void"]))
        if (state, operation) in (("posted", "post"), ("voided", "void")):
            getattr(self.store, operation)(key, 5.0)
        elif state != "pending":
            with pytest.raises(LedgerError):
                getattr(self.store, operation)(key, 5.0)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def the_ledger_holds(self) -> None:
        assert self.store.verify() == []
        accounts = {spec.debit for spec, _, _ in self.model.transfers.values()} | {
            spec.credit for spec, _, _ in self.model.transfers.values()
        }
        for name in accounts:
            view = self.store.account(name)
            assert view is not None
            b = view.balances
            stored = (b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted)
            expected = self.model.sums(name)
            if name == "payouts":
                expected = tuple(a + b for a, b in zip(expected, self.before, strict=True))
            assert stored == expected, name
            if name.startswith("wallet:"):
                assert b.available >= 0
        for key, (_, state, posted) in self.model.transfers.items():
            found = self.store.transfer_of(key)
            assert found is not None and (found.state, found.posted_amount) == (state, posted)


def test_the_ledger_on_sqlite(tmp_path: Path) -> None:
    store = SqliteLedgerStore(tmp_path / "ledger.sqlite3")
    store.open()

    class OnSqlite(LedgerMachine):
        pass

    OnSqlite.store = store
    try:
        run_state_machine_as_test(OnSqlite, settings=settings(
            max_examples=60, stateful_step_count=30, deadline=None,
            suppress_health_check=[HealthCheck.too_slow]))  # fmt: skip
    finally:
        store.close()


def test_the_ledger_on_postgresql(postgres_dsn: str) -> None:
    store = PostgresLedgerStore(postgres_dsn)
    store.open()

    class OnPostgresql(LedgerMachine):
        pass

    OnPostgresql.store = store
    try:
        run_state_machine_as_test(OnPostgresql, settings=settings(
            max_examples=12, stateful_step_count=20, deadline=None,
            suppress_health_check=[HealthCheck.too_slow]))  # fmt: skip
    finally:
        store.close()
