"""The app desk's kept results in the ledger store (``store/desk_results.py``), on both
engines: kept with what the request changed or not at all, the first's kept result
returned to a repeat without running it again, forgotten after their time."""

from __future__ import annotations

import pytest

from switch.core.ledger import TransferKey, TransferSpec
from switch.store.ledger_store import LedgerStoreBase
from tests.store.ledgers import ledger_store as ledger_store

AT = 1_796_610_030.0


def topup(store: LedgerStoreBase, request_id: str) -> TransferSpec:
    spec = TransferSpec(key=TransferKey("app:wallet", request_id, "topup"),
                        debit="bank_clearing:icbc", credit="wallet:C1", amount=100,
                        kind="topup")  # fmt: skip
    store.open_wallet("C1", "app:wallet", 2, "2026-12-07", AT)
    return spec


def test_kept_with_its_change_or_neither(ledger_store: LedgerStoreBase) -> None:
    store = ledger_store
    spec = topup(store, "r-1")
    runs: list[int] = []

    def body() -> tuple[bytes, bool]:
        runs.append(1)
        store.transfer(spec, AT)
        return b"result-1", True

    kept = store.desk_kept("app:wallet", "r-1", b"digest", AT, body)
    assert (kept.response, kept.again, kept.kept) == (b"result-1", False, True)
    again = store.desk_kept("app:wallet", "r-1", b"other", AT, body)
    assert (again.response, again.fingerprint, again.again) == (b"result-1", b"digest", True)
    assert runs == [1]
    assert store.desk_result("app:wallet", "r-1") == again
    assert store.desk_result("app:other", "r-1") is None  # per principal

    # What the body raises rolls its change back with the result.
    failing = topup(store, "r-2")

    def fails() -> tuple[bytes, bool]:
        store.transfer(failing, AT)
        raise ValueError("after the change")

    with pytest.raises(ValueError):
        store.desk_kept("app:wallet", "r-2", b"digest", AT, fails)
    assert store.desk_result("app:wallet", "r-2") is None
    assert store.transfer_of(failing.key) is None
    # Not kept: answered, nothing kept, the id free.
    refusal = store.desk_kept("app:wallet", "r-3", b"d", AT, lambda: (b"refused", False))
    assert (refusal.response, refusal.kept) == (b"refused", False)
    assert store.desk_result("app:wallet", "r-3") is None
    # Forgotten after their time.
    store.desk_purge(AT + 1)
    assert store.desk_result("app:wallet", "r-1") is None


def test_two_workers_with_one_request_debit_once(postgres_dsn: str) -> None:
    """Two workers (two connections) take the same withdrawal at the same moment, both
    past the look-up of a kept result: one debits and keeps its result; the other's
    step meets the kept result's key, runs again and answers the first's result."""
    import threading

    from switch.core.wallet import BoundAccount, MoneyAsk, WalletSettings
    from switch.store.postgresql.ledger import PostgresLedgerStore

    setup = PostgresLedgerStore(postgres_dsn)
    setup.open()
    setup.open_wallet("C1", "app:wallet", 2, "2026-12-07", AT)
    setup.transfer(TransferSpec(key=TransferKey("t", "topup", "topup"), debit="bank_clearing:icbc",
                                credit="wallet:C1", amount=50_000, kind="topup"), AT)  # fmt: skip
    account = BoundAccount(account="6222021000111133335", account_name="Zhang",
                           bank_code="102100099996")  # fmt: skip
    setup.bind_account("C1", "app:wallet", account, AT)
    both_past_the_look_up = threading.Barrier(2)
    answers: list[bytes] = []

    def worker(number: int) -> None:
        store = PostgresLedgerStore(postgres_dsn)
        store.open()
        first_run = [True]
        key = TransferKey("app:wallet", "w-1", "withdraw")
        rrn = f"63411400014{number}"

        def body() -> tuple[bytes, bool]:
            if first_run[0]:
                first_run[0] = False
                both_past_the_look_up.wait(10)
            store.reserve_payment(
                MoneyAsk(customer_id="C1", amount=10_000, counted="withdraw",
                         local_date="2026-12-07"),
                TransferSpec(key=key, debit="wallet:C1", credit="withdrawals_payable",
                             amount=10_000, kind="withdraw", rrn=rrn),
                WalletSettings(), AT, app="app:wallet", withdraw_to=account,
                order=(rrn, "2026-12-07"),
            )  # fmt: skip
            store.end_payment(key, True, AT)
            return f"withdrawn by {number}".encode(), True

        try:
            answers.append(store.desk_kept("app:wallet", "w-1", b"d", AT, body).response)
        finally:
            store.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 2 and answers[0] == answers[1], answers
    wallet = setup.account("wallet:C1")
    assert wallet is not None and wallet.balances.balance == 40_000
    assert len(setup.withdrawals("2026-12-07")) == 1
    assert setup.verify() == []
    setup.close()
