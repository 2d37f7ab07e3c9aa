"""A worker process of the credit concurrency test: waits for ``go`` on stdin, then
buys on one shared credit line as fast as it can (half the purchases its own, half
sent to every worker at once), posting each approved one, and prints what it got as
JSON. ``python -m tests.store.credit_child DSN WORKER ROUNDS``."""

from __future__ import annotations

import json
import sys

from switch.core.credit.plan import Terms
from switch.core.ledger import TransferKey
from switch.store.credit_store import CreditStopped
from switch.store.postgresql.ledger import PostgresLedgerStore

CUSTOMER = "CR1"
AMOUNT = 7000
MERCHANT = "898110054110001"


def main() -> None:
    dsn, worker, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = PostgresLedgerStore(dsn)
    store.open()
    got: dict[str, list[str]] = {"approved": [], "again": [], "refused": []}
    sys.stdin.readline()
    for n in range(rounds):
        purchase_id = f"w{worker}-{n}" if n % 2 else f"shared-{n}"
        key = TransferKey("pos:test", purchase_id, "pay")
        try:
            made = store.credit_purchase(
                CUSTOMER, key=key, purchase_id=purchase_id, merchant_id=MERCHANT,
                amount_fen=AMOUNT, instalments=None, terms=Terms(), at=1.0,
            )  # fmt: skip
        except CreditStopped as refused:
            got["refused"].append(refused.response_code)
            continue
        if made.again:
            got["again"].append(purchase_id)
            continue
        got["approved"].append(purchase_id)
        if n % 3:  # the others stay pending: outstanding all the same
            store.credit_end_purchase(CUSTOMER, key, purchase_id, True, 2.0)
    store.close()
    print(json.dumps(got))


if __name__ == "__main__":
    main()
