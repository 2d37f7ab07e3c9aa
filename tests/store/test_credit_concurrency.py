"""Several worker processes on one PostgreSQL ledger buying on the same credit line at
the same moment: the outstanding principal never passes the limit, the account's book
and the ledger agree, and a purchase sent to two workers at once is made once
(credit.md: "an operation commits its checks and postings together, one at a time per
account")."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from switch.core.credit import book as books
from switch.store.postgresql.ledger import PostgresLedgerStore
from tests.store.credit_child import AMOUNT, CUSTOMER

pytestmark = pytest.mark.slow

WORKERS = 4
ROUNDS = 16
ROOT = Path(__file__).resolve().parents[2]
FITS = 10
LIMIT = FITS * AMOUNT + AMOUNT - 1


@pytest.mark.parametrize("path", ["store", "payment"])
def test_workers_racing_for_one_credit_line(postgres_dsn: str, path: str) -> None:
    store = PostgresLedgerStore(postgres_dsn)
    store.open()
    store.open_wallet(CUSTOMER, "app:wallet", 2, "2026-12-07", 0.0)
    store.credit_open(CUSTOMER, "app:wallet", LIMIT, statement_day=1, grace_days=9,
                      business_date=date(2026, 12, 7), at=0.0)  # fmt: skip
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.store.credit_child",
                postgres_dsn,
                str(worker),
                str(ROUNDS),
                path,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for worker in range(WORKERS)
    ]
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    results = []
    for child in children:
        out, _ = child.communicate(timeout=300)
        assert child.returncode == 0
        results.append(json.loads(out))
    approved = [pid for result in results for pid in result["approved"]]
    assert len(approved) == len(set(approved)), "a purchase made twice"
    assert len(approved) == FITS
    assert {code for result in results for code in result["refused"]} == {"51"}
    account = store.credit_account(CUSTOMER)
    assert sorted(p.purchase_id for p in account.book.purchases) == sorted(approved)
    assert books.outstanding_principal_fen(account.book) == FITS * AMOUNT <= LIMIT
    receivable = store.account(f"credit_receivable:{CUSTOMER}")
    assert receivable is not None
    sums = receivable.balances
    assert sums.debits_pending + sums.debits_posted == FITS * AMOUNT
    assert store.credit_status(CUSTOMER).available_fen == AMOUNT - 1
    assert store.verify() == []
    store.close()
