"""A process that runs the credit close of a business date on a SQLite ledger store,
one account a transaction, printing ``step`` (and waiting a little) just before each
commit, so a test can SIGKILL it in the middle of a statement run, even inside an open
transaction. ``python -m tests.store.credit_close_child PATH YYYY-MM-DD``."""

from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path

from switch.core.credit.plan import Terms
from switch.store.sqlite.ledger import SqliteLedgerStore


def main() -> None:
    store = SqliteLedgerStore(Path(sys.argv[1]))
    store.open()

    def before_commit(step: str) -> None:
        print(step, flush=True)
        time.sleep(0.01)

    store.fault = before_commit
    closed = store.credit_close(date.fromisoformat(sys.argv[2]), Terms(), 100.0, batch=1)
    store.close()
    print(f"done {closed.accounts} {closed.statements}", flush=True)


if __name__ == "__main__":
    main()
