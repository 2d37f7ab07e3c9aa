"""The ledger store on both engines (real SQLite files, a real PostgreSQL server):
wallet.md's sample day posted step by step, the wallet checks in their order, QR codes
paid at most once, payment codes, and a commit that fails leaving nothing behind."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from switch.core.ledger import InsufficientFunds, TransferConflict, TransferKey, TransferSpec
from switch.core.paycode import PaycodeSettings, make_code
from switch.core.wallet import (
    AccountNotBound,
    BoundAccount,
    MoneyAsk,
    NoSuchWallet,
    NotYourWallet,
    Refusal,
    TooManyAccounts,
    WalletSettings,
)
from switch.store.ledger_port import LedgerUnavailable, QrHold, QrRecord, Reserved
from switch.store.ledger_store import LedgerStoreBase
from tests.store.ledgers import ledger_store as ledger_store

APP = "app:wallet"
C = "C100000001"
M = "898110054110001"
TODAY = "2026-12-07"
SETTINGS = WalletSettings()
ACCOUNT = BoundAccount(account="6222021000111133335", account_name="张三", bank_code="102100099996")


def balance(store: LedgerStoreBase, name: str) -> int:
    view = store.account(name)
    return 0 if view is None else view.balances.balance


def pay_spec(request_id: str, amount: int, debit: str = f"wallet:{C}") -> TransferSpec:
    return TransferSpec(
        key=TransferKey(APP, request_id, "pay"), debit=debit, credit=f"merchant:{M}",
        amount=amount, kind="pay", rrn="634110000131", merchant_id=M,
    )  # fmt: skip


def ask(amount: int, **fields: object) -> MoneyAsk:
    base: dict[str, object] = {
        "customer_id": C, "amount": amount, "counted": "pay", "channel": "qr_dynamic",
        "verification": "B", "local_date": TODAY,
    }  # fmt: skip
    return MoneyAsk(**{**base, **fields})  # type: ignore[arg-type]


def top_up(store: LedgerStoreBase, amount: int, request_id: str = "topup-1") -> None:
    key = TransferKey(APP, request_id, "topup")
    spec = TransferSpec(key=key, debit="bank_clearing:icbc", credit=f"wallet:{C}", amount=amount,
                        kind="topup", rrn="634110000100")  # fmt: skip
    store.reserve_topup(spec, "icbc", TODAY, 1.0)
    store.end_payment(key, True, 2.0)


def test_the_sample_day_of_wallet_md(ledger_store: LedgerStoreBase) -> None:
    store = ledger_store
    store.open_wallet(C, APP, 2, TODAY, 0.0)
    accounts = [f"wallet:{C}", f"merchant:{M}", "bank_clearing:icbc", "withdrawals_payable",
                "merchant_fee_income", "payouts"]  # fmt: skip

    def row() -> list[int]:
        return [balance(store, name) for name in accounts]

    topup = TransferKey(APP, "topup-1", "topup")
    store.reserve_topup(
        TransferSpec(key=topup, debit="bank_clearing:icbc", credit=f"wallet:{C}", amount=50000,
                     kind="topup", rrn="634110000100"), "icbc", TODAY, 1.0,
    )  # fmt: skip
    assert row() == [0, 0, 0, 0, 0, 0]
    assert store.wallet(C, APP, TODAY).available == 0  # a pending credit is not spendable
    store.end_payment(topup, True, 2.0)
    assert row() == [50000, 0, -50000, 0, 0, 0]
    pay = pay_spec("pay-20261207-0001", 8800)
    reserved = store.reserve_payment(ask(8800), pay, SETTINGS, 3.0, app=APP)
    assert isinstance(reserved, Reserved) and reserved.available_after == 41200
    assert row() == [50000, 0, -50000, 0, 0, 0]
    assert store.wallet(C, APP, TODAY).available == 41200
    store.end_payment(pay.key, True, 4.0)
    assert row() == [41200, 8800, -50000, 0, 0, 0]
    refund = TransferKey(f"merchant:{M}", "refund-1", "refund")
    store.reserve(TransferSpec(key=refund, debit=f"merchant:{M}", credit=f"wallet:{C}",
                               amount=2000, kind="refund", merchant_id=M), 5.0)  # fmt: skip
    store.post(refund, 6.0)
    assert row() == [43200, 6800, -50000, 0, 0, 0]
    store.bind_account(C, APP, ACCOUNT, 7.0)
    withdraw = TransferSpec(key=TransferKey(APP, "wd-1", "withdraw"), debit=f"wallet:{C}",
                            credit="withdrawals_payable", amount=10000, kind="withdraw",
                            rrn="634114000140")  # fmt: skip
    reserved = store.reserve_payment(
        ask(10000, counted="withdraw", channel="none", verification=None), withdraw, SETTINGS,
        8.0, app=APP, withdraw_to=ACCOUNT, order=("634114000140", TODAY),
    )  # fmt: skip
    assert isinstance(reserved, Reserved)
    store.end_payment(withdraw.key, True, 9.0)
    assert row() == [33200, 6800, -50000, 10000, 0, 0]
    [line] = store.withdrawals(TODAY)
    assert (line.rrn, line.account, line.account_name, line.amount) == (
        "634114000140", ACCOUNT.account, "张三", 10000)  # fmt: skip
    store.transfer(TransferSpec(key=TransferKey(TODAY, "withdrawals", "634114000140"),
                                debit="withdrawals_payable", credit="payouts", amount=10000,
                                kind="withdrawals_file"), 10.0)  # fmt: skip
    assert row() == [33200, 6800, -50000, 0, 0, 10000]
    store.transfer(
        TransferSpec(
            key=TransferKey(TODAY, "fee", M),
            debit=f"merchant:{M}",
            credit="merchant_fee_income",
            amount=33,
            kind="fee",
        ),
        11.0,
    )
    assert row() == [33200, 6767, -50000, 0, 33, 10000]
    store.transfer(
        TransferSpec(
            key=TransferKey(TODAY, "payout", M),
            debit=f"merchant:{M}",
            credit="payouts",
            amount=6767,
            kind="payout",
        ),
        12.0,
    )
    assert row() == [33200, 0, -50000, 0, 33, 16767]
    # Every step again: nothing changes.
    store.end_payment(pay.key, True, 13.0)
    store.post(refund, 13.0)
    store.transfer(
        TransferSpec(
            key=TransferKey(TODAY, "payout", M),
            debit=f"merchant:{M}",
            credit="payouts",
            amount=6767,
            kind="payout",
        ),
        13.0,
    )
    assert row() == [33200, 0, -50000, 0, 33, 16767]
    assert store.verify() == []
    history = store.history(C, APP, 20, None)
    assert [(i.kind, i.amount, i.balance_after) for i in history.items] == [
        ("withdraw", -10000, 33200), ("refund", 2000, 43200), ("pay", -8800, 41200),
        ("topup", 50000, 50000),
    ]  # fmt: skip
    assert history.next is None
    first = store.history(C, APP, 3, None)
    assert first.next is not None and len(first.items) == 3
    rest = store.history(C, APP, 3, first.next)
    assert [i.kind for i in rest.items] == ["topup"] and rest.next is None


def test_a_wallet_is_its_apps_only(ledger_store: LedgerStoreBase) -> None:
    store = ledger_store
    with pytest.raises(NoSuchWallet):
        store.wallet(C, APP, TODAY)
    store.open_wallet(C, APP, 1, TODAY, 0.0)
    with pytest.raises(NotYourWallet) as raised:
        store.open_wallet(C, "app:other", 2, TODAY, 0.0)
    assert raised.value.response_code == "03"
    with pytest.raises(NotYourWallet):
        store.wallet(C, "app:other", TODAY)
    top_up(store, 500)
    view = store.open_wallet(C, APP, 3, TODAY, 1.0)  # sets the class, keeps the balance
    assert (view.wallet_class, view.balance) == (3, 500)


def test_the_checks_come_in_wallet_md_order(ledger_store: LedgerStoreBase) -> None:
    store = ledger_store
    store.open_wallet(C, APP, 1, TODAY, 0.0)
    top_up(store, 200_000)
    # Class I: ¥1,000 since opening, before the daily cap (C: ¥1,000) and the balance.
    refusal = store.reserve_payment(ask(100_001, verification="C"), pay_spec("p1", 100_001),
                                    SETTINGS, 1.0)  # fmt: skip
    assert refusal == Refusal("61", "class 1 limit")
    store.open_wallet(C, APP, 2, TODAY, 0.0)
    refusal = store.reserve_payment(ask(100_001, verification="C"), pay_spec("p1", 100_001),
                                    SETTINGS, 1.0)  # fmt: skip
    assert refusal == Refusal("61", "daily cap of tier C")
    refusal = store.reserve_payment(ask(50_001, channel="qr_static"), pay_spec("p1", 50_001),
                                    SETTINGS, 1.0)  # fmt: skip
    assert refusal == Refusal("61", "daily cap of static QR payments")
    refusal = store.reserve_payment(ask(200_001, verification="A"), pay_spec("p1", 200_001),
                                    SETTINGS, 1.0)  # fmt: skip
    assert refusal == Refusal("51", "balance too low")
    # A credit payment counts in the daily caps, not in the class limit nor the balance.
    credit = store.reserve_payment(
        ask(300_000, funding="credit", verification="B"),
        pay_spec("p2", 300_000, debit=f"credit_receivable:{C}"), SETTINGS, 1.0,
    )  # fmt: skip
    assert isinstance(credit, Reserved)
    refusal = store.reserve_payment(ask(200_001, verification="B"), pay_spec("p3", 200_001),
                                    SETTINGS, 1.0)  # fmt: skip
    assert refusal == Refusal("61", "daily cap of tier B")
    # Its void takes it out of the daily count again.
    store.end_payment(TransferKey(APP, "p2", "pay"), False, 2.0)
    assert isinstance(
        store.reserve_payment(ask(200_000), pay_spec("p3", 200_000), SETTINGS, 3.0), Reserved
    )
    assert store.verify() == []


def test_a_dynamic_qr_is_paid_at_most_once(ledger_store: LedgerStoreBase) -> None:
    store = ledger_store
    store.open_wallet(C, APP, 2, TODAY, 0.0)
    top_up(store, 50000)
    store.create_qr(
        QrRecord(
            qr_id="K7Q2M9X4D8P3A6TB",
            merchant_id=M,
            kind="dynamic",
            payload="...",
            created_at=0.0,
            amount=8800,
            expires_at=300.0,
        )
    )
    hold = QrHold(qr_id="K7Q2M9X4D8P3A6TB", merchant_id=M, kind="dynamic", amount=8800)
    wrong = QrHold(qr_id="K7Q2M9X4D8P3A6TB", merchant_id="M2", kind="dynamic", amount=8800)
    assert store.reserve_payment(ask(8800), pay_spec("a", 8800), SETTINGS, 1.0,
                                 qr=wrong) == Refusal("14", "QR not as issued")  # fmt: skip
    assert store.reserve_payment(ask(8800), pay_spec("a", 8800), SETTINGS, 300.0,
                                 qr=hold) == Refusal("54", "QR expired")  # fmt: skip
    assert store.reserve_payment(ask(8000), pay_spec("a", 8000), SETTINGS, 1.0, qr=hold) == Refusal(
        "13", "amount other than the QR's"
    )
    assert isinstance(store.reserve_payment(ask(8800), pay_spec("a", 8800), SETTINGS, 1.0,
                                            qr=hold), Reserved)  # fmt: skip
    qr = store.qr(hold.qr_id)
    assert qr is not None and qr.state == "paying"
    assert store.reserve_payment(ask(8800), pay_spec("b", 8800), SETTINGS, 2.0, qr=hold) == Refusal(
        "94", "QR paid or being paid"
    )
    store.end_payment(TransferKey(APP, "a", "pay"), False, 3.0, qr_id=hold.qr_id)  # open again
    assert isinstance(store.reserve_payment(ask(8800), pay_spec("b", 8800), SETTINGS, 4.0,
                                            qr=hold), Reserved)  # fmt: skip
    store.end_payment(TransferKey(APP, "b", "pay"), True, 5.0, qr_id=hold.qr_id)
    qr = store.qr(hold.qr_id)
    assert qr is not None and qr.state == "paid"
    assert store.reserve_payment(ask(8800), pay_spec("c", 8800), SETTINGS, 6.0, qr=hold) == Refusal(
        "94", "QR paid or being paid"
    )
    assert balance(store, f"wallet:{C}") == 50000 - 8800


def test_bound_accounts(ledger_store: LedgerStoreBase) -> None:
    store = ledger_store
    store.open_wallet(C, APP, 2, TODAY, 0.0)
    for n in range(5):
        store.bind_account(C, APP, BoundAccount(account=f"6222{n:010d}", account_name="张三",
                                                bank_code="102100099996"), 1.0)  # fmt: skip
    again = store.bind_account(
        C,
        APP,
        BoundAccount(account=f"6222{0:010d}", account_name="张三", bank_code="102100099996"),
        2.0,
    )
    assert len(again) == 5
    with pytest.raises(TooManyAccounts) as raised:
        store.bind_account(C, APP, ACCOUNT, 3.0)
    assert raised.value.response_code == "12"
    assert len(store.unbind_account(C, APP, f"6222{0:010d}", "102100099996")) == 4
    with pytest.raises(AccountNotBound):
        store.unbind_account(C, APP, f"6222{0:010d}", "102100099996")
    top_up(store, 1000)
    withdraw = TransferSpec(
        key=TransferKey(APP, "wd", "withdraw"),
        debit=f"wallet:{C}",
        credit="withdrawals_payable",
        amount=100,
        kind="withdraw",
    )
    with pytest.raises(AccountNotBound):
        store.reserve_payment(ask(100, counted="withdraw", channel="none", verification=None),
                              withdraw, SETTINGS, 4.0, withdraw_to=ACCOUNT)  # fmt: skip


def test_payment_codes_on_the_wall_clock(ledger_store: LedgerStoreBase) -> None:
    store = ledger_store
    store.open_wallet(C, APP, 2, TODAY, 0.0)
    settings = PaycodeSettings(max_open=2, probe_limit=3)
    draws = iter(["2750318846129057", "2750318846129057", "1111111111111111",
                  "2222222222222222", "3333333333333333"])  # fmt: skip

    def draw() -> str:
        return make_code("88", next(draws))

    now = 1_000_000.0
    first = store.issue_paycode(C, APP, "wallet", "B", now, settings, draw)
    assert first.code == "8827503188461290572" and first.expires_at == now + 60
    second = store.issue_paycode(C, APP, "wallet", "B", now + 1, settings, draw)  # redrawn
    assert second.code != first.code
    store.issue_paycode(C, APP, "wallet", "B", now + 2, settings, draw)  # cancels the oldest
    assert store.take_paycode(first.code, "T1", now + 3, settings).response_code == "14"
    taken = store.take_paycode(second.code, "T1", now + 3, settings)
    assert taken.response_code == "00" and taken.paycode is not None
    assert (taken.paycode.customer_id, taken.paycode.verification) == (C, "B")
    assert store.take_paycode(second.code, "T2", now + 4, settings).response_code == "14"  # used
    # A credit code needs a credit account (credit.md: none is 14).
    store.credit_open(C, APP, 0, statement_day=1, grace_days=9,
                      business_date=datetime.date(2026, 12, 7), at=now)  # fmt: skip
    late = store.issue_paycode(C, APP, "credit", "A", now, settings, draw)
    assert store.take_paycode(late.code, "T2", now + 60, settings).response_code == "14"
    assert store.take_paycode("8827503188461290573", "T2", now + 61, settings).response_code == (
        "14"
    )  # Luhn
    # T2 has had 3 answers of 14 in 10 minutes: 65 for every code, until they age out.
    assert store.take_paycode(late.code, "T2", now + 62, settings).response_code == "65"
    assert store.take_paycode(late.code, "T2", now + 4 + 600, settings).response_code == "14"


def test_a_failed_commit_leaves_nothing(ledger_store: LedgerStoreBase) -> None:
    store = ledger_store
    store.open_wallet(C, APP, 2, TODAY, 0.0)
    top_up(store, 1000)

    class Crash(Exception):
        pass

    def fail(step: str) -> None:
        raise Crash(step)

    store.fault = fail
    with pytest.raises(Crash):
        store.reserve_payment(ask(800), pay_spec("p", 800), SETTINGS, 1.0)
    store.fault = None
    assert store.transfer_of(TransferKey(APP, "p", "pay")) is None
    assert store.wallet(C, APP, TODAY).available == 1000
    assert isinstance(store.reserve_payment(ask(800), pay_spec("p", 800), SETTINGS, 1.0), Reserved)
    with pytest.raises(InsufficientFunds):
        store.reserve(pay_spec("q", 201), 2.0)
    with pytest.raises(TransferConflict):
        store.reserve(pay_spec("p", 801), 2.0)
    assert store.verify() == []


def test_every_statement_is_one_its_engine_accepts(ledger_store: LedgerStoreBase) -> None:
    """Each of the store's statements, in its engine's form, is accepted against the real
    schema (the tests above run most; this finds a slip in any of the rest)."""
    import re
    import sqlite3

    import psycopg
    from psycopg import pq

    from switch.store.postgresql.ledger import PostgresLedgerStore
    from switch.store.postgresql.pipeline import numbered
    from switch.store.sqlite.ledger import SqliteLedgerStore

    sql = ledger_store.sql
    shown = {field: getattr(sql, field) for field in sql.__struct_fields__}
    refused = []
    if isinstance(ledger_store, SqliteLedgerStore):
        for name, statement in shown.items():
            parameters: object = dict.fromkeys(re.findall(r"(?<![:\w]):(\w+)", statement)) or (
                None,
            ) * statement.count("?")
            try:
                ledger_store._db.execute(f"EXPLAIN {statement}", parameters)  # type: ignore[arg-type]
            except sqlite3.Error as exc:
                refused.append(f"{name}: {exc}")
    else:
        assert isinstance(ledger_store, PostgresLedgerStore)
        with psycopg.connect(ledger_store.dsn, autocommit=True) as connection:
            for number, (name, statement) in enumerate(shown.items()):
                names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", statement)))
                positional = (
                    re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m[1]) + 1}", statement)  # noqa: B023
                    .encode()
                    if names
                    else numbered(statement)
                )  # fmt: skip
                result = connection.pgconn.prepare(f"ledger_{number}".encode(), positional)
                if result.status != pq.ExecStatus.COMMAND_OK:
                    refused.append(f"{name}: {(result.error_message or b'').decode().strip()}")
    assert len(shown) > 40 and not refused, "\n".join(refused)


def test_pay_by_code_takes_the_code_and_reserves_in_one_step(
    ledger_store: LedgerStoreBase,
) -> None:
    """A payment-code sale's one transaction: the code used whatever the payment's
    outcome (a 51 keeps it used, reserves nothing), a code not open is 14 and a probe,
    and a commit that fails leaves the code open and nothing reserved."""
    from switch.core.paycode import Paycode

    store = ledger_store
    store.open_wallet(C, APP, 2, TODAY, 0.0)
    top_up(store, 1_000)
    settings = SETTINGS.paycodes()
    draws = iter(["2750318846129057", "2750318846129065", "2750318846129073"])

    def issue() -> str:
        return store.issue_paycode(C, APP, "wallet", "B", 100.0, settings,
                                   lambda: make_code("88", next(draws))).code  # fmt: skip

    def make(amount: int, request_id: str) -> Any:
        def build(code: Paycode) -> tuple[MoneyAsk, TransferSpec]:
            assert code.customer_id == C
            return ask(amount, channel="code"), pay_spec(request_id, amount)

        return build

    low = issue()
    taken, done = store.pay_by_code(low, "T:M", 101.0, SETTINGS, make(1_001, "p-1"))
    assert taken.response_code == "00" and done == Refusal("51", "balance too low")
    again, nothing = store.pay_by_code(low, "T:M", 102.0, SETTINGS, make(10, "p-2"))
    assert (again.response_code, nothing) == ("14", None)  # used by the 51
    assert store.pending_transfers() == []
    good = issue()

    def fail(step: str) -> None:
        raise RuntimeError(f"disk gone at {step}")

    store.fault = fail
    store.errors = (*store.errors, RuntimeError)  # type: ignore[misc]
    with pytest.raises(LedgerUnavailable):
        store.pay_by_code(good, "T:M", 103.0, SETTINGS, make(400, "p-3"))
    store.fault = None
    taken, done = store.pay_by_code(good, "T:M", 104.0, SETTINGS, make(400, "p-3"))
    assert taken.response_code == "00" and isinstance(done, Reserved)
    assert store.wallet(C, APP, TODAY).available == 600
    assert store.verify() == []


def test_grouped_calls_share_one_transaction_each_its_own(ledger_store: LedgerStoreBase) -> None:
    """``grouped`` (the transaction path's steps that wait together): one commit, each
    call's steps as they would be alone: a refusal or a failure rolls back what that
    call wrote, never what the others did; each gets its own result or exception."""
    from switch.store.ledger_store import Refused

    store = ledger_store
    store.open_wallet(C, APP, 2, TODAY, 0.0)
    top_up(store, 50_000)

    def refused() -> object:
        def body() -> object:
            store.open_wallet("C100000009", APP, 2, TODAY, 0.0)  # written, then refused
            raise Refused(Refusal("51", "not sufficient funds"))

        return store._step("refused", body)

    def failed() -> object:
        def body() -> object:
            store.open_wallet("C100000008", APP, 2, TODAY, 0.0)  # written, then failed
            raise TransferConflict("not this one")

        return store._step("failed", body)

    names: list[str] = []
    store.fault = names.append
    results = store.grouped([
        lambda: store.reserve_payment(ask(2_000), pay_spec("p-1", 2_000), SETTINGS, 3.0),
        refused, failed,
        lambda: store.open_wallet("C100000007", APP, 2, TODAY, 0.0),
    ])  # fmt: skip
    store.fault = None
    assert names == ["reserve_payment", "open_wallet", "grouped"]  # one commit
    assert isinstance(results[0][0], Reserved) and results[0][1] is None
    assert results[1] == (Refusal("51", "not sufficient funds"), None)
    assert results[2][0] is None and isinstance(results[2][1], TransferConflict)
    assert results[3][1] is None
    store.end_payment(pay_spec("p-1", 2_000).key, True, 4.0)
    assert balance(store, f"wallet:{C}") == 48_000
    assert store.wallet("C100000007", APP, TODAY) is not None
    for gone in ("C100000009", "C100000008"):
        with pytest.raises(NoSuchWallet):
            store.wallet(gone, APP, TODAY)
    assert store.verify() == []
