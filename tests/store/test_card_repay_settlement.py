"""Settlement's corrections of repayments by card in the ledger store, on both engines
(real SQLite files, a real PostgreSQL server): credit.md, "Repayment": a repayment by card
that settlement finally does not pay is undone (what it paid is owed again as before,
the periods it removed come back with their fees), an ``amount_mismatch`` undoes it and
books it again at the bank's amount; each once."""

from __future__ import annotations

from datetime import date

from switch.core.credit.plan import Terms
from switch.core.ledger import TransferKey, TransferSpec
from switch.store.ledger_store import LedgerStoreBase
from tests.store.ledgers import ledger_store as ledger_store

APP = "app:wallet"
C = "C100000001"
OWN = "898310099990001"
TERMS = Terms()
RECEIVABLE = f"credit_receivable:{C}"


def balance(store: LedgerStoreBase, name: str) -> int:
    view = store.account(name)
    return 0 if view is None else view.balances.balance


def opened(store: LedgerStoreBase) -> None:
    store.open_wallet(C, APP, 2, "2026-01-05", 0.0)
    store.credit_open(C, APP, 2_000_000, statement_day=1, grace_days=9,
                      business_date=date(2026, 1, 5), at=0.0)  # fmt: skip
    for purchase_id, amount, instalments in (("P1", 300_000, 3), ("P2", 50_000, None)):
        key = TransferKey("pos:test", purchase_id, "pay")
        store.credit_purchase(C, key=key, purchase_id=purchase_id, merchant_id="SHOP01",
                              amount_fen=amount, instalments=instalments, terms=TERMS,
                              at=1.0)  # fmt: skip
        store.credit_end_purchase(C, key, purchase_id, True, 2.0)
    store.credit_close(date(2026, 1, 31), TERMS, 3.0)  # the statement of 02-01


def repay_by_card(store: LedgerStoreBase, request_id: str, rrn: str, amount: int) -> None:
    key = TransferKey(APP, request_id, "repay_card")
    assert store.credit_reserve_repay(C, APP, key=key, bank="icbc", amount_fen=amount,
                                      merchant_id=OWN, purchase_id=None, at=4.0)  # fmt: skip
    store.credit_end_repay(key, True, rrn, 5.0)


def figures(store: LedgerStoreBase) -> tuple[int, ...]:
    status = store.credit_status(C)
    return (status.outstanding_principal_fen, status.payoff_fen, status.due_fen,
            balance(store, RECEIVABLE), balance(store, "bank_clearing:icbc"))  # fmt: skip


def plans(store: LedgerStoreBase) -> list[tuple[object, ...]]:
    book = store.credit_account(C).book
    return [(p.purchase_id, p.unbilled, p.waived_fee_fen) for p in book.purchases]


def test_a_repayment_by_card_not_paid_is_undone_once(ledger_store: LedgerStoreBase) -> None:
    store = ledger_store
    opened(store)
    before, unbilled = figures(store), plans(store)
    # Pays the statement, then prepays: periods of the plan removed, their fees waived.
    repay_by_card(store, "rp-1", "610100000001", 250_000)
    paid = figures(store)
    assert paid[1] < before[1] and plans(store) != unbilled
    assert store.credit_repay_settled("610100000001", 0, 9.0) == -250_000
    assert figures(store) == before
    assert plans(store) == unbilled  # the periods it removed are back, with their fees
    assert store.credit_repay_settled("610100000001", 0, 9.0) == 0  # settled again
    assert store.credit_repay_settled("610100000999", 0, 9.0) == 0  # no repayment's
    assert figures(store) == before
    lines = store.credit_account(C).book.cycle
    assert [(line.ref, line.amount_fen) for line in lines][-1][0] == "610100000001"
    assert sum(line.amount_fen for line in lines if line.ref == "610100000001") == 0
    assert store.verify() == []


def test_an_amount_mismatch_books_the_repayment_again_at_the_bank_s_amount(
    ledger_store: LedgerStoreBase,
) -> None:
    store = ledger_store
    opened(store)
    before = figures(store)
    repay_by_card(store, "rp-1", "610100000001", 100_000)
    assert store.credit_repay_settled("610100000001", 100_100, 9.0) == 100
    _, payoff, _, receivable, clearing = figures(store)
    assert payoff == before[1] - 100_100
    assert receivable == before[3] + 100_100 and clearing == before[4] - 100_100
    assert store.credit_repay_settled("610100000001", 100_100, 9.0) == 0
    assert figures(store)[1] == before[1] - 100_100
    assert store.verify() == []


def test_what_went_on_to_the_wallet_comes_back_at_most_to_zero(
    ledger_store: LedgerStoreBase,
) -> None:
    """A repayment by card of the whole payoff, approved after a repayment from the
    wallet lowered it: the rest went to the wallet (no credit balance). Not paid: the
    credit line owes again what it took; the wallet gives back what it still has,
    recon_loss the rest."""
    store = ledger_store
    opened(store)
    store.transfer(TransferSpec(key=TransferKey(APP, "topup-1", "topup"),
                                debit="bank_clearing:icbc", credit=f"wallet:{C}",
                                amount=50_000, kind="topup"), 0.5)  # fmt: skip
    owed = store.credit_status(C).payoff_fen
    key = TransferKey(APP, "rp-card", "repay_card")
    assert store.credit_reserve_repay(C, APP, key=key, bank="icbc", amount_fen=owed,
                                      merchant_id=OWN, purchase_id=None, at=4.0)  # fmt: skip
    store.credit_repay_from_wallet(C, key=TransferKey(APP, "rp-w", "repay"), rrn="610100000002",
                                   amount_fen=50_000, purchase_id=None, at=4.5)  # fmt: skip
    store.credit_end_repay(key, True, "610100000001", 5.0)
    assert store.credit_status(C).payoff_fen == 0
    assert balance(store, f"wallet:{C}") == 50_000  # the card's 500.00 past the payoff
    store.transfer(TransferSpec(key=TransferKey(APP, "pay-1", "pay"), debit=f"wallet:{C}",
                                credit="merchant:SHOP01", amount=30_000, kind="pay"),
                   6.0)  # fmt: skip
    assert store.credit_repay_settled("610100000001", 0, 9.0) == -owed
    assert store.credit_status(C).payoff_fen == owed - 50_000  # the wallet's repayment stays
    assert balance(store, f"wallet:{C}") == 0
    assert balance(store, "recon_loss") == -30_000
    assert store.credit_repay_settled("610100000001", 0, 9.0) == 0
    assert balance(store, "recon_loss") == -30_000
    assert store.verify() == []
