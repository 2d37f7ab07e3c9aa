"""A worker process of the ledger concurrency test: waits for ``go`` on stdin, then
reserves and posts payments from two shared wallets as fast as it can, and prints what
it got as JSON; then takes every payment code named after ROUNDS (each is single-use:
one worker only may get it). ``python -m tests.store.ledger_child DSN WORKER ROUNDS
[CODE...]``."""

from __future__ import annotations

import json
import sys

from switch.core.ledger import TransferKey, TransferSpec
from switch.core.paycode import PaycodeSettings
from switch.core.wallet import MoneyAsk, WalletSettings
from switch.store.ledger_port import Reserved
from switch.store.postgresql.ledger import PostgresLedgerStore

APP = "app:wallet"
MERCHANT = "898110054110001"
NOW = 1_800_000_000.0
"""The wall clock the codes are issued and taken at."""
AMOUNT = 7000
"""The balance test's wallet (BAL) holds 100,000: 14 payments. The daily-cap test's
(CAP) holds plenty, but tier C's cap is 100,000 a day: 14 payments too."""


def main() -> None:
    dsn, worker, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = PostgresLedgerStore(dsn)
    store.open()
    settings = WalletSettings()
    got: dict[str, list[str]] = {"reserved": [], "again": [], "refused": [], "codes": []}
    sys.stdin.readline()
    for n in range(rounds):
        for customer in ("BAL", "CAP"):
            # Half the ids are the worker's own, half shared by every worker: a
            # request repeated to two workers at once.
            request_id = f"{customer}-w{worker}-{n}" if n % 2 else f"{customer}-shared-{n}"
            spec = TransferSpec(
                key=TransferKey(APP, request_id, "pay"), debit=f"wallet:{customer}",
                credit=f"merchant:{MERCHANT}", amount=AMOUNT, kind="pay", merchant_id=MERCHANT,
            )  # fmt: skip
            ask = MoneyAsk(
                customer_id=customer, amount=AMOUNT, counted="pay", channel="code",
                verification="C" if customer == "CAP" else "A", local_date="2026-12-07",
            )  # fmt: skip
            result = store.reserve_payment(ask, spec, settings, float(n), app=APP)
            if isinstance(result, Reserved):
                got["again" if result.again else "reserved"].append(request_id)
                store.end_payment(spec.key, True, float(n))
            else:
                got["refused"].append(result.code)
    for code in sys.argv[4:]:
        taken = store.take_paycode(code, f"T{worker}", NOW, PaycodeSettings(probe_limit=10**6))
        if taken.response_code == "00":
            got["codes"].append(code)
    store.close()
    print(json.dumps(got))


if __name__ == "__main__":
    main()
