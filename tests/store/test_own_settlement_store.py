"""Settlement's corrections of top-ups in the ledger store, on both engines (real SQLite
files, a real PostgreSQL server): wallet.md, "Settlement and files": a top-up the bank
finally does not pay, or pays another amount, corrects the wallet by the difference
(history kind ``adjust``), at most to zero with ``recon_loss`` the rest, once."""

from __future__ import annotations

from switch.core.ledger import TransferKey, TransferSpec
from switch.store.ledger_store import LedgerStoreBase
from tests.store.ledgers import ledger_store as ledger_store

APP = "app:wallet"
C = "C100000001"
M = "898110054110001"
TOPUP_MERCHANT = "898310065400001"
TODAY = "2026-12-07"
RRN = "634110000100"


def balance(store: LedgerStoreBase, name: str) -> int:
    view = store.account(name)
    return 0 if view is None else view.balances.balance


def top_up(store: LedgerStoreBase, amount: int, rrn: str = RRN) -> None:
    key = TransferKey(APP, f"topup-{rrn}", "topup")
    spec = TransferSpec(key=key, debit="bank_clearing:icbc", credit=f"wallet:{C}", amount=amount,
                        kind="topup", rrn=rrn, merchant_id=TOPUP_MERCHANT)  # fmt: skip
    store.reserve_topup(spec, "icbc", TODAY, 1.0)
    store.end_topup(key, True, rrn, 2.0)


def spend(store: LedgerStoreBase, amount: int) -> None:
    store.transfer(TransferSpec(key=TransferKey(APP, "pay-1", "pay"), debit=f"wallet:{C}",
                                credit=f"merchant:{M}", amount=amount, kind="pay",
                                merchant_id=M), 3.0)  # fmt: skip


def rows(store: LedgerStoreBase) -> list[int]:
    return [balance(store, name)
            for name in (f"wallet:{C}", "bank_clearing:icbc", "recon_loss")]  # fmt: skip


def test_a_top_up_not_paid_is_taken_back_from_the_wallet_once(
    ledger_store: LedgerStoreBase,
) -> None:
    store = ledger_store
    store.open_wallet(C, APP, 2, TODAY, 0.0)
    top_up(store, 50_000)
    assert rows(store) == [50_000, -50_000, 0]
    assert store.topup_settled(RRN, 0, 9.0) == -50_000
    assert rows(store) == [0, 0, 0]
    assert store.topup_settled(RRN, 0, 10.0) == 0  # settled again: nothing twice
    assert rows(store) == [0, 0, 0]
    history = store.history(C, APP, 10, None).items
    assert [(item.kind, item.amount, item.balance_after, item.rrn) for item in history][:2] == [
        ("adjust", -50_000, 0, RRN), ("topup", 50_000, 50_000, RRN)]  # fmt: skip
    assert store.verify() == []


def test_a_wallet_is_debited_at_most_to_zero_and_recon_loss_takes_the_rest(
    ledger_store: LedgerStoreBase,
) -> None:
    store = ledger_store
    store.open_wallet(C, APP, 2, TODAY, 0.0)
    top_up(store, 50_000)
    spend(store, 30_000)
    assert store.topup_settled(RRN, 0, 9.0) == -20_000
    assert rows(store) == [0, 0, -30_000]  # the bank is square; the company lost 300.00
    assert store.topup_settled(RRN, 0, 10.0) == 0
    assert rows(store) == [0, 0, -30_000]
    assert store.verify() == []


def test_an_amount_mismatch_corrects_the_wallet_by_the_difference(
    ledger_store: LedgerStoreBase,
) -> None:
    store = ledger_store
    store.open_wallet(C, APP, 2, TODAY, 0.0)
    top_up(store, 50_000)
    top_up(store, 10_000, rrn="634110000101")
    assert store.topup_settled(RRN, 49_000, 9.0) == -1_000  # the bank paid less
    assert store.topup_settled("634110000101", 12_000, 9.0) == 2_000  # more
    assert rows(store) == [61_000, -61_000, 0]
    assert store.topup_settled(RRN, 49_000, 10.0) == 0
    assert store.topup_settled("634110000101", 12_000, 10.0) == 0
    assert rows(store) == [61_000, -61_000, 0]
    kinds = [item.kind for item in store.history(C, APP, 10, None).items]
    assert kinds.count("adjust") == 2


def test_an_rrn_that_is_no_posted_top_up_corrects_nothing(ledger_store: LedgerStoreBase) -> None:
    store = ledger_store
    store.open_wallet(C, APP, 2, TODAY, 0.0)
    key = TransferKey(APP, "topup-declined", "topup")
    store.reserve_topup(TransferSpec(key=key, debit="bank_clearing:icbc", credit=f"wallet:{C}",
                                     amount=5_000, kind="topup"), "icbc", TODAY, 1.0)  # fmt: skip
    store.end_topup(key, False, "634110000199", 2.0)  # declined: never credited
    assert store.topup_settled("634110000199", 0, 9.0) == 0
    assert store.topup_settled("634110000777", 0, 9.0) == 0
    top_up(store, 50_000)
    assert store.topup_settled(RRN, 50_000, 9.0) == 0  # no difference
    assert rows(store) == [50_000, -50_000, 0]
