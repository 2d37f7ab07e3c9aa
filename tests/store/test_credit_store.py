"""Credit accounts in the ledger store on both engines (real SQLite files, a real
PostgreSQL server): credit.md's statement sample walked through the store's steps and
closes to the fen, with its postings on the shared ledger; closes run again post
nothing twice; purchases refused in credit.md's order."""

from __future__ import annotations

from datetime import date

import pytest

from switch.core.credit.book import InstalmentLine, PenaltyLine, PurchaseLine, RepaymentLine
from switch.core.credit.plan import Terms
from switch.core.ledger import TransferKey, TransferSpec
from switch.store.credit_store import CreditStopped, NoCreditAccount
from switch.store.ledger_store import LedgerStoreBase
from tests.store.ledgers import ledger_store as ledger_store

APP = "app:wallet"
C = "C100000001"
TERMS = Terms()


def d(text: str) -> date:
    return date.fromisoformat(text)


def balance(store: LedgerStoreBase, name: str) -> int:
    view = store.account(name)
    return 0 if view is None else view.balances.balance


def open_account(store: LedgerStoreBase, customer: str = C, opened: str = "2026-01-05") -> None:
    store.open_wallet(customer, APP, 2, opened, 0.0)
    store.credit_open(customer, APP, 2_000_000, statement_day=1, grace_days=9,
                      business_date=d(opened), at=0.0)  # fmt: skip


def fund_wallet(store: LedgerStoreBase, amount: int, customer: str = C) -> None:
    spec = TransferSpec(key=TransferKey(APP, f"topup-{customer}", "topup"),
                        debit="bank_clearing:icbc", credit=f"wallet:{customer}", amount=amount,
                        kind="topup")  # fmt: skip
    store.transfer(spec, 0.0)


def buy(store: LedgerStoreBase, purchase_id: str, merchant: str, amount: int,
        instalments: int | None = None, customer: str = C) -> None:  # fmt: skip
    key = TransferKey("pos:test", purchase_id, "pay")
    store.credit_purchase(customer, key=key, purchase_id=purchase_id, merchant_id=merchant,
                          amount_fen=amount, instalments=instalments, terms=TERMS,
                          at=1.0)  # fmt: skip
    store.credit_end_purchase(customer, key, purchase_id, True, 2.0)


def repay(store: LedgerStoreBase, rrn: str, amount: int) -> None:
    store.credit_repay_from_wallet(C, key=TransferKey(APP, rrn, "repay"), rrn=rrn,
                                   amount_fen=amount, purchase_id=None, at=3.0)  # fmt: skip


def walk_sample(store: LedgerStoreBase) -> None:
    """credit.md, Samples, "A statement", through the store."""
    open_account(store)
    fund_wallet(store, 1_000_000)
    store.credit_close(d("2026-01-11"), TERMS, 10.0)
    buy(store, "601210000101", "898110000012345", 600_000, 3)
    store.credit_close(d("2026-01-19"), TERMS, 10.0)
    buy(store, "602015000102", "898310048990001", 46_000)
    store.credit_close(d("2026-02-07"), TERMS, 10.0)
    repay(store, "603920000104", 100_000)
    for day in ("2026-02-08", "2026-02-09", "2026-02-10", "2026-02-11", "2026-02-12",
                "2026-02-13"):  # fmt: skip
        store.credit_close(d(day), TERMS, 10.0)
    assert store.credit_status(C).due_fen == 149_225
    repay(store, "604521000105", 149_225)
    store.credit_close(d("2026-02-15"), TERMS, 10.0)
    buy(store, "604719000103", "898310048990001", 120_000)
    store.credit_close(d("2026-02-28"), TERMS, 10.0)


def test_statement_sample_through_the_store(ledger_store: LedgerStoreBase) -> None:
    walk_sample(ledger_store)
    (february,) = ledger_store.credit_statements(d("2026-02-01"))
    assert (february.customer_id, february.statement.new_balance_fen) == (C, 249_000)
    (row,) = ledger_store.credit_statements(d("2026-03-01"))
    march = row.statement
    assert (march.period, march.due_date, march.previous_balance_fen) == (
        "2026-03", d("2026-03-10"), 249_000,
    )  # fmt: skip
    assert [(type(line), line.date, line.ref, line.amount_fen) for line in march.lines] == [
        (RepaymentLine, d("2026-02-08"), "603920000104", -100_000),
        (RepaymentLine, d("2026-02-14"), "604521000105", -149_225),
        (PenaltyLine, d("2026-02-13"), "", 225),
        (InstalmentLine, d("2026-01-12"), "601210000101", 203_000),
        (PurchaseLine, d("2026-02-16"), "604719000103", 120_000),
    ]
    assert march.new_balance_fen == 323_000
    # "After it credit_receivable:C100000001 holds 5,230.00 owed ...;
    # instalment_fee_income 60.00; penalty_income 2.25."
    assert balance(ledger_store, f"credit_receivable:{C}") == -523_000
    assert balance(ledger_store, "instalment_fee_income") == 6_000
    assert balance(ledger_store, "penalty_income") == 225
    status = ledger_store.credit_status(C)
    figures = (status.payoff_fen, status.due_fen, status.available_fen)
    assert figures == (523_000, 323_000, 2_000_000 - 520_000)
    assert status.statement is not None and status.statement.unpaid_fen == 323_000
    assert status.next_statement_date == d("2026-04-01")
    assert ledger_store.verify() == []


def test_a_close_run_again_changes_nothing(ledger_store: LedgerStoreBase) -> None:
    walk_sample(ledger_store)
    before = (ledger_store.credit_account(C), ledger_store.accounts(), ledger_store.totals())
    again = ledger_store.credit_close(d("2026-02-28"), TERMS, 99.0)
    assert (again.accounts, again.statements, again.penalties_fen, again.fees_fen) == (0, 0, 0, 0)
    after = (ledger_store.credit_account(C), ledger_store.accounts(), ledger_store.totals())
    assert after == before
    assert len(ledger_store.credit_statements(d("2026-03-01"))) == 1


def test_overdue_freezes_after_thirty_days_and_a_repayment_lifts_it(
    ledger_store: LedgerStoreBase,
) -> None:
    open_account(ledger_store)
    fund_wallet(ledger_store, 1_000_000)
    ledger_store.credit_close(d("2026-01-11"), TERMS, 1.0)
    buy(ledger_store, "601210000101", "898110000012345", 46_000)
    ledger_store.credit_close(d("2026-03-11"), TERMS, 1.0)  # due 02-10: D + 29
    assert ledger_store.credit_status(C).frozen_by == []
    closed = ledger_store.credit_close(d("2026-03-12"), TERMS, 1.0)  # D + 30
    assert closed.frozen == 1
    status = ledger_store.credit_status(C)
    assert (status.state, status.frozen_by, status.overdue_days) == ("frozen", ["overdue"], 31)
    # 30 closes of 0.05% of 460.00 = 23 fen each (round_half_up(23.0)).
    assert balance(ledger_store, "penalty_income") == 30 * 23
    with pytest.raises(CreditStopped) as refused:
        buy(ledger_store, "603130000102", "898110000012345", 100)
    assert refused.value.response_code == "62"
    repay(ledger_store, "603130000103", status.due_fen)
    after = ledger_store.credit_status(C)
    assert (after.state, after.due_fen, after.overdue_fen) == ("open", 0, 0)
    assert ledger_store.verify() == []


def test_purchases_refused_in_credit_mds_order(ledger_store: LedgerStoreBase) -> None:
    with pytest.raises(NoCreditAccount):
        buy(ledger_store, "1", "898110000012345", 100)
    open_account(ledger_store)
    with pytest.raises(CreditStopped) as exists:
        ledger_store.credit_open(C, APP, 1, statement_day=1, grace_days=9,
                                 business_date=d("2026-01-05"), at=0.0)  # fmt: skip
    assert exists.value.response_code == "12"
    for amount, instalments, code in ((9_999, 3, "13"), (2_000_001, None, "51")):
        with pytest.raises(CreditStopped) as refused:
            buy(ledger_store, f"p{amount}", "898110000012345", amount, instalments)
        assert refused.value.response_code == code
    ledger_store.credit_freeze(C, True, "lost phone", 1.0)
    with pytest.raises(CreditStopped) as frozen:
        buy(ledger_store, "p1", "898110000012345", 100)
    assert frozen.value.response_code == "62"
    assert ledger_store.credit_status(C).frozen_by == ["app"]
    # Nothing was written by a refusal.
    assert balance(ledger_store, f"credit_receivable:{C}") == 0
    assert ledger_store.verify() == []


def test_a_voided_pending_purchase_frees_the_limit(ledger_store: LedgerStoreBase) -> None:
    open_account(ledger_store)
    key = TransferKey("pos:test", "p1", "pay")
    made = ledger_store.credit_purchase(C, key=key, purchase_id="p1", merchant_id="M1",
                                        amount_fen=2_000_000, instalments=None, terms=TERMS,
                                        at=1.0)  # fmt: skip
    assert made.account.available_fen == 0
    again = ledger_store.credit_purchase(C, key=key, purchase_id="p1", merchant_id="M1",
                                         amount_fen=2_000_000, instalments=None, terms=TERMS,
                                         at=1.0)  # fmt: skip
    assert again.again
    ledger_store.credit_end_purchase(C, key, "p1", False, 2.0)
    assert ledger_store.credit_status(C).available_fen == 2_000_000
    assert balance(ledger_store, f"credit_receivable:{C}") == 0
    assert ledger_store.verify() == []


def test_a_credit_payments_end_reads_its_book_for_a_void_only(
    ledger_store: LedgerStoreBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #23: the end of a credit payment (the desk's ``end_payment``) locks its
    account's row; its book is decoded only when it is voided (the purchase dropped,
    its principal freed), not for the post (the purchase already in the book)."""
    import switch.store.credit_store as credit_store

    open_account(ledger_store)
    decoded: list[str] = []
    account_of = credit_store._account

    def counted(row: object) -> object:
        decoded.append("book")
        return account_of(row)  # type: ignore[arg-type]

    for purchase_id, approved in (("p1", True), ("p2", False)):
        key = TransferKey("pos:test", purchase_id, "pay")
        ledger_store.credit_purchase(C, key=key, purchase_id=purchase_id, merchant_id="M1",
                                     amount_fen=500_000, instalments=None, terms=TERMS,
                                     at=1.0)  # fmt: skip
        monkeypatch.setattr(credit_store, "_account", counted)
        ledger_store.end_payment(key, approved, 2.0)
        monkeypatch.setattr(credit_store, "_account", account_of)
        assert decoded == ([] if approved else ["book"])
    assert ledger_store.credit_status(C).available_fen == 1_500_000  # p2 freed
    assert balance(ledger_store, "merchant:M1") == 500_000  # p1 posted, once
    assert ledger_store.verify() == []
