"""The close of a business date killed (SIGKILL) in the middle of its statement run,
then run again, leaves exactly what one uninterrupted close leaves: the same
statements, the same books, the same ledger; nothing charged twice (credit.md: every
close idempotent; settlement.md: settling again posts nothing twice)."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from switch.core.credit.plan import Terms
from switch.core.ledger import TransferKey, TransferSpec
from switch.store.sqlite.ledger import SqliteLedgerStore

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = 40
CLOSE = "2026-01-31"  # the statement of 2026-02-01 is made at its close


def prepare(path: Path) -> None:
    """Accounts with plans and unplanned purchases, half of them overdue since 01-11
    (penalties every close), closed up to the day before CLOSE."""
    store = SqliteLedgerStore(path)
    store.open()
    terms = Terms()
    for n in range(ACCOUNTS):
        customer = f"C{n:04d}"
        store.open_wallet(customer, "app:w", 2, "2025-12-01", 0.0)
        store.credit_open(customer, "app:w", 5_000_000, statement_day=1, grace_days=9,
                          business_date=date(2025, 12, 1), at=0.0)  # fmt: skip
        store.transfer(TransferSpec(key=TransferKey("app:w", f"t{customer}", "topup"),
                                    debit="bank_clearing:icbc", credit=f"wallet:{customer}",
                                    amount=10_000_000, kind="topup"), 0.0)  # fmt: skip
    store.credit_close(date(2025, 12, 4), terms, 1.0)
    for n in range(ACCOUNTS):
        customer = f"C{n:04d}"
        for k, (amount, instalments) in enumerate(((600_000 + n, 3), (46_000 + n, None))):
            purchase_id = f"{n:06d}{k:06d}"
            key = TransferKey("pos:t", purchase_id, "pay")
            store.credit_purchase(customer, key=key, purchase_id=purchase_id, merchant_id="M1",
                                  amount_fen=amount, instalments=instalments, terms=terms,
                                  at=2.0)  # fmt: skip
            store.credit_end_purchase(customer, key, purchase_id, True, 2.0)
    store.credit_close(date(2026, 1, 5), terms, 3.0)
    for n in range(0, ACCOUNTS, 2):  # the even ones pay their first statement in full
        customer = f"C{n:04d}"
        due = store.credit_status(customer).due_fen
        store.credit_repay_from_wallet(customer, key=TransferKey("app:w", f"r{n}", "repay"),
                                       rrn=f"r{n}", amount_fen=due, purchase_id=None,
                                       at=4.0)  # fmt: skip
    store.credit_close(date(2026, 1, 30), terms, 5.0)
    store.close()


def close_in_child(path: Path, *, kill_after: int | None) -> str:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.store.credit_close_child", str(path), CLOSE],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert child.stdout is not None
    if kill_after is not None:
        for _ in range(kill_after):
            assert child.stdout.readline() == "credit_close\n"
        child.send_signal(signal.SIGKILL)  # inside the step's open transaction
        child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        return "killed"
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    return out.splitlines()[-1]


def snapshot(path: Path) -> tuple[object, ...]:
    store = SqliteLedgerStore(path)
    store.open()
    try:
        return (
            [store.credit_account(f"C{n:04d}") for n in range(ACCOUNTS)],
            store.credit_statements(date(2026, 2, 1)),
            store.accounts(),
            store.totals(),
            store.verify(),
        )
    finally:
        store.close()


def test_a_close_killed_mid_statement_run_then_run_again(tmp_path: Path) -> None:
    reference, crashed = tmp_path / "reference.sqlite3", tmp_path / "crashed.sqlite3"
    prepare(reference)
    crashed.write_bytes(reference.read_bytes())  # the same store, closed up to 01-30
    assert close_in_child(reference, kill_after=None) == f"done {ACCOUNTS} {ACCOUNTS}"

    assert close_in_child(crashed, kill_after=ACCOUNTS // 3) == "killed"
    middle = snapshot(crashed)
    statements = middle[1]
    assert isinstance(statements, list)
    assert 0 < len(statements) < ACCOUNTS  # killed half-way: some accounts closed, not all
    done = close_in_child(crashed, kill_after=None)
    assert done == f"done {ACCOUNTS - len(statements)} {ACCOUNTS - len(statements)}"
    assert snapshot(crashed) == snapshot(reference)
    # And once more: nothing left to close, nothing posted twice.
    assert close_in_child(crashed, kill_after=None) == "done 0 0"
    assert snapshot(crashed) == snapshot(reference)
    assert snapshot(reference)[4] == []
