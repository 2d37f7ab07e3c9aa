"""A worker process of the credit concurrency test: waits for ``go`` on stdin, then
buys on one shared credit line as fast as it can (half the purchases its own, half
sent to every worker at once), posting each approved one, and prints what it got as
JSON. ``python -m tests.store.credit_child DSN WORKER ROUNDS [PATH]``: PATH ``store`` (the
credit store's own purchase step) or ``payment`` (a payment with funding ``credit``, as
the switch reserves and posts one)."""

from __future__ import annotations

import json
import sys

from switch.core.credit.billing import CreditAsk
from switch.core.credit.plan import Terms
from switch.core.ledger import TransferKey, TransferSpec
from switch.core.wallet import MoneyAsk, Refusal, WalletSettings
from switch.store.credit_store import CreditStopped
from switch.store.postgresql.ledger import PostgresLedgerStore

CUSTOMER = "CR1"
AMOUNT = 7000
MERCHANT = "898110054110001"


def main() -> None:
    dsn, worker, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    path = sys.argv[4] if len(sys.argv) > 4 else "store"
    store = PostgresLedgerStore(dsn)
    store.open()
    got: dict[str, list[str]] = {"approved": [], "again": [], "refused": []}
    sys.stdin.readline()
    for n in range(rounds):
        purchase_id = f"w{worker}-{n}" if n % 2 else f"shared-{n}"
        key = TransferKey("pos:test", purchase_id, "pay")
        if path == "payment":  # as the switch pays by a credit code (ledger_store)
            ask = MoneyAsk(customer_id=CUSTOMER, amount=AMOUNT, counted="pay",
                           funding="credit", channel="code", verification="A",
                           local_date="2026-12-07")  # fmt: skip
            spec = TransferSpec(key=key, debit=f"credit_receivable:{CUSTOMER}",
                                credit=f"merchant:{MERCHANT}", amount=AMOUNT, kind="pay",
                                rrn=purchase_id, merchant_id=MERCHANT)  # fmt: skip
            lent = CreditAsk(purchase_id=purchase_id, instalments=None, terms=Terms())
            done = store.reserve_payment(ask, spec, WalletSettings(), 1.0, credit=lent)
            if isinstance(done, Refusal):
                got["refused"].append(done.code)
                continue
            again = done.again
        else:
            try:
                made = store.credit_purchase(
                    CUSTOMER, key=key, purchase_id=purchase_id, merchant_id=MERCHANT,
                    amount_fen=AMOUNT, instalments=None, terms=Terms(), at=1.0,
                )  # fmt: skip
            except CreditStopped as refused:
                got["refused"].append(refused.response_code)
                continue
            again = made.again
        if again:
            got["again"].append(purchase_id)
            continue
        got["approved"].append(purchase_id)
        if n % 3:  # the others stay pending: outstanding all the same
            if path == "payment":
                store.end_payment(key, True, 2.0)
            else:
                store.credit_end_purchase(CUSTOMER, key, purchase_id, True, 2.0)
    store.close()
    print(json.dumps(got))


if __name__ == "__main__":
    main()
