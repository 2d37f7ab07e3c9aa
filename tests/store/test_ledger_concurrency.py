"""Several worker processes on one PostgreSQL ledger debiting the same wallets at the same
moment: no wallet goes below zero, no daily cap is passed, and a request sent to two
workers at once is paid once (wallet.md: the checks and the pending transfer are one
atomic step)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from switch.core.ledger import TransferKey, TransferSpec
from switch.core.paycode import PaycodeSettings, draw
from switch.store.postgresql.ledger import PostgresLedgerStore
from tests.store.ledger_child import AMOUNT, APP, NOW

pytestmark = pytest.mark.slow

WORKERS = 4
ROUNDS = 24
ROOT = Path(__file__).resolve().parents[2]


def test_workers_racing_for_one_wallet(postgres_dsn: str) -> None:
    store = PostgresLedgerStore(postgres_dsn)
    store.open()
    for customer, funds in (("BAL", 14 * AMOUNT + AMOUNT - 1), ("CAP", 10**9)):
        store.open_wallet(customer, APP, 3, "2026-12-07", 0.0)
        store.transfer(TransferSpec(key=TransferKey(APP, f"topup-{customer}", "topup"),
                                    debit="bank_clearing:icbc", credit=f"wallet:{customer}",
                                    amount=funds, kind="topup"), 0.0)  # fmt: skip
    codes = [
        store.issue_paycode("CAP", APP, "wallet", "B", NOW, PaycodeSettings(max_open=50),
                            lambda: draw("88")).code
        for _ in range(20)
    ]  # fmt: skip
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.store.ledger_child",
                postgres_dsn,
                str(worker),
                str(ROUNDS),
                *codes,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for worker in range(WORKERS)
    ]
    for child in children:  # each has connected (the store opened) or is about to
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    results = []
    for child in children:
        out, _ = child.communicate(timeout=300)
        assert child.returncode == 0
        results.append(json.loads(out))
    reserved = [rid for result in results for rid in result["reserved"]]
    assert len(reserved) == len(set(reserved)), "a request paid twice"
    for customer in ("BAL", "CAP"):
        paid = [rid for rid in reserved if rid.startswith(customer)]
        assert len(paid) == 14, (customer, len(paid))
        view = store.account(f"wallet:{customer}")
        assert view is not None
        assert view.balances.debits_posted == 14 * AMOUNT
        assert view.balances.debits_pending == 0
        assert view.balances.available >= 0
    refused = [code for result in results for code in result["refused"]]
    assert set(refused) == {"51", "61"}
    assert store.verify() == []
    taken = sorted(code for result in results for code in result["codes"])
    assert taken == sorted(codes), "a payment code used twice, or not at all"
    store.close()
