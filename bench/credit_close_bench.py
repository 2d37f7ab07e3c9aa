"""The credit close of a statement day with many accounts (credit.md, "Overdue"): the
cost of the cut-off's credit run. ``python -m bench.credit_close_bench --accounts
100000 FOLDER`` (SQLite) or ``--dsn DSN`` (PostgreSQL).

Built first, not timed, through the store's own steps (SQLite with its fsyncs off while
building): every account with a wallet, a 3-period plan and an unplanned purchase,
closed up to the day before a statement date, a quarter of them overdue on the last
statement (so the close charges their penalties). Then a process of its own runs the
close of that day as the switch's cut-off does (``LedgerStoreBase.credit_close``: every
account's penalty, freeze, statement and fee posting, in batches) and the day's file,
timed from the call to the file written; its peak resident set (``ru_maxrss``) is read
just after, so it is the close's and the interpreter's, not the build's. Target: 30 s
and 1 GB for 100,000 accounts. One JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from switch.core.credit.plan import Terms
from switch.core.credit.statement_file import statement_file, statement_file_name
from switch.core.ledger import TransferKey, TransferSpec
from switch.files import write_private
from switch.store.ledger_store import LedgerStoreBase

OPENED = date(2026, 12, 1)
BOUGHT_BY = date(2026, 12, 4)
BEFORE = date(2027, 1, 30)
CLOSE = date(2027, 1, 31)  # the statement of 2027-02-01 is made at its close


def _store(folder: Path, dsn: str | None) -> LedgerStoreBase:
    if dsn is not None:
        from switch.store.postgresql.ledger import PostgresLedgerStore

        return PostgresLedgerStore(dsn)
    from switch.store.sqlite.ledger import SqliteLedgerStore

    return SqliteLedgerStore(folder / "ledger.sqlite3")


def build(folder: Path, dsn: str | None, accounts: int) -> None:
    store = _store(folder, dsn)
    store.open()
    fast = getattr(store, "_db", None)
    if dsn is None and fast is not None:
        fast.execute("PRAGMA synchronous = OFF")
    terms = Terms()
    for n in range(accounts):
        customer = f"C{n:09d}"
        store.open_wallet(customer, "app:bench", 2, OPENED.isoformat(), 0.0)
        store.credit_open(customer, "app:bench", 5_000_000, statement_day=1, grace_days=9,
                          business_date=OPENED, at=0.0)  # fmt: skip
    store.credit_close(BOUGHT_BY, terms, 1.0)
    for n in range(accounts):
        customer = f"C{n:09d}"
        for k, (amount, instalments) in enumerate(((600_000, 3), (46_000, None))):
            purchase_id = f"{n:09d}{k:03d}"
            key = TransferKey("pos:bench", purchase_id, "pay")
            store.credit_purchase(customer, key=key, purchase_id=purchase_id,
                                  merchant_id="898110054110001", amount_fen=amount,
                                  instalments=instalments, terms=terms, at=2.0)  # fmt: skip
            store.credit_end_purchase(customer, key, purchase_id, True, 2.0)
    store.credit_close(date(2027, 1, 5), terms, 3.0)
    for n in range(accounts):
        if n % 4 == 0:
            continue  # a quarter stay overdue on the statement of 2027-01-01
        customer = f"C{n:09d}"
        store.transfer(TransferSpec(key=TransferKey("app:bench", f"t{n}", "topup"),
                                    debit="bank_clearing:icbc", credit=f"wallet:{customer}",
                                    amount=1_000_000, kind="topup"), 4.0)  # fmt: skip
        due = store.credit_status(customer).due_fen
        store.credit_repay_from_wallet(customer, key=TransferKey("app:bench", f"r{n}", "repay"),
                                       rrn=f"r{n}", amount_fen=due, purchase_id=None,
                                       at=4.0)  # fmt: skip
    store.credit_close(BEFORE, terms, 5.0)
    store.close()


def close(folder: Path, dsn: str | None) -> dict[str, object]:
    store = _store(folder, dsn)
    store.open()
    began = time.perf_counter()
    closed = store.credit_close(CLOSE, Terms(), 6.0)
    rows = store.credit_statements(date(2027, 2, 1))
    data = statement_file((row.customer_id, row.statement) for row in rows)
    write_private(folder / statement_file_name(date(2027, 2, 1)), data)
    elapsed = time.perf_counter() - began
    store.close()
    return {
        "accounts": closed.accounts, "statements": closed.statements,
        "penalties_fen": closed.penalties_fen, "fees_fen": closed.fees_fen,
        "file_bytes": len(data), "close_s": round(elapsed, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--dsn", help="a PostgreSQL database instead of SQLite")
    parser.add_argument("--close-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.close_only:
        print(json.dumps(close(args.folder, args.dsn)))
        return
    args.folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    build(args.folder, args.dsn, args.accounts)
    built_s = time.perf_counter() - began
    command = [sys.executable, "-m", "bench.credit_close_bench", str(args.folder), "--close-only"]
    if args.dsn:
        command += ["--dsn", args.dsn]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    result.update(engine="postgresql" if args.dsn else "sqlite", build_s=round(built_s, 1),
                  target_s=30, target_mb=1024)  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
