"""What a wallet code sale costs the ledger store alone (issue #22): ``pay_by_code`` (the
payment's step) then ``end_payment`` (its post, the answer journaled: no fsync of its
own, as the ledger desk commits it), each in a transaction of its own, on a real SQLite
file. The process's CPU of each (``time.process_time``: the kernel's work for the
fsync is charged to it), and the statements each runs, counted and timed by kind
(``COMMIT`` apart). Run::

    python -m bench.ledger_step_bench [--count 500] [--wallets 50] [--folder DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from switch.core import ledger, paycode
from switch.core.ledger import TransferKey, TransferSpec
from switch.core.paycode import Paycode
from switch.core.wallet import MoneyAsk, Refusal, WalletSettings
from switch.store.ledger_store import Parameters, Row
from switch.store.sqlite.ledger import SqliteLedgerStore

MERCHANT = "898000000000001"
TERMINAL = f"T0000001:{MERCHANT}"


class CountingStore(SqliteLedgerStore):
    """Each statement's kind (its first words), count and CPU; ``COMMIT`` with them."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.counting = False
        self.count: dict[str, int] = defaultdict(int)
        self.cpu: dict[str, float] = defaultdict(float)

    def _timed(self, statement: str, run: Any) -> Any:
        if not self.counting:
            return run()
        words = statement.split()
        kind = (
            " ".join(words[:3])
            if words[0] != "SELECT"
            else "SELECT ... " + (words[words.index("FROM") + 1] if "FROM" in words else "?")
        )
        started = time.process_time()
        try:
            return run()
        finally:
            self.count[kind] += 1
            self.cpu[kind] += time.process_time() - started

    def _execute(self, statement: str, parameters: Parameters = ()) -> list[Row]:
        run = super()._execute
        rows: list[Row] = self._timed(statement, lambda: run(statement, parameters))
        return rows

    def _change(self, statement: str, parameters: Parameters = ()) -> int:
        run = super()._change
        changed: int = self._timed(statement, lambda: run(statement, parameters))
        return changed

    def _transaction(self) -> Any:
        inner = super()._transaction()
        store = self

        class Timed:
            def __enter__(self) -> None:
                inner.__enter__()

            def __exit__(self, *exc: object) -> bool | None:
                if not store.counting:
                    return inner.__exit__(*exc)
                started = time.process_time()
                try:
                    return inner.__exit__(*exc)
                finally:
                    store.count["COMMIT"] += 1
                    store.cpu["COMMIT"] += time.process_time() - started

        return Timed()


def _make(step: int, amount: int, today: str) -> Any:
    def make(code: Paycode) -> tuple[MoneyAsk, TransferSpec] | Refusal:
        ask = MoneyAsk(
            customer_id=code.customer_id, amount=amount, counted="pay", funding=code.funding,
            channel="code", verification=code.verification, local_date=today,
        )  # fmt: skip
        spec = TransferSpec(
            key=TransferKey(f"pos:{MERCHANT}:T0000001", f"{step:012d}", "pay"),
            debit=ledger.wallet_account(code.customer_id),
            credit=ledger.merchant_account(MERCHANT), amount=amount, kind="pay",
            rrn=f"{step:012d}", merchant_id=MERCHANT,
        )  # fmt: skip
        return ask, spec

    return make


def run(folder: Path, count: int, wallets: int) -> dict[str, Any]:
    store = CountingStore(folder / "ledger.sqlite3")
    store.open()
    settings = WalletSettings()
    codes = settings.paycodes()
    today = time.strftime("%Y-%m-%d")
    customers = [f"C3{i:08d}" for i in range(wallets)]
    for customer in customers:
        store.open_wallet(customer, "app:wallet", 3, today, time.time())
        store.transfer(TransferSpec(
            key=TransferKey("bench", f"topup-{customer}", "topup"), debit="bank_clearing:icbc",
            credit=ledger.wallet_account(customer), amount=10_000_000, kind="topup",
        ), time.time())  # fmt: skip
    steps: list[float] = []
    ends: list[float] = []
    for n in range(count):
        customer = customers[n % wallets]
        issued = store.issue_paycode(customer, "app:wallet", "wallet", "B", time.time(), codes,
                                     lambda: paycode.draw(codes.prefix))  # fmt: skip
        store.counting = True
        started = time.process_time()
        taken, done = store.pay_by_code(issued.code, TERMINAL, time.time(), settings,
                                        _make(n, 100, today))  # fmt: skip
        middle = time.process_time()
        assert taken.response_code == "00" and not isinstance(done, Refusal | None), done
        key = done.transfer.spec.key
        store.grouped([lambda key=key: store.end_payment(key, True, time.time())], durable=False)
        ended = time.process_time()
        store.counting = False
        steps.append(middle - started)
        ends.append(ended - middle)
    problems = store.verify()
    store.close()
    assert not problems, problems
    return {"steps": steps, "ends": ends, "count": dict(store.count), "cpu": dict(store.cpu)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--wallets", type=int, default=50)
    parser.add_argument("--folder", type=Path, default=None, help="default: a temporary one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        result = run(Path(folder), args.count, args.wallets)
    n = args.count
    steps, ends = result["steps"], result["ends"]
    print(
        f"{n} payments: step median {statistics.median(steps) * 1e6:.0f} µs "
        f"(mean {statistics.fmean(steps) * 1e6:.0f}), end median "
        f"{statistics.median(ends) * 1e6:.0f} µs (mean {statistics.fmean(ends) * 1e6:.0f})"
    )
    total = sum(result["count"].values())
    statements = sum(cpu for kind, cpu in result["cpu"].items() if kind != "COMMIT")
    print(
        f"statements a payment: {total / n:.1f} (COMMIT included); their CPU "
        f"{statements / n * 1e6:.0f} µs a payment, COMMIT apart "
        f"({result['cpu'].get('COMMIT', 0) / n * 1e6:.0f})"
    )
    for kind, many in sorted(result["count"].items(), key=lambda item: -result["cpu"][item[0]]):
        print(
            f"  {many / n:5.2f} x {kind:<40} {result['cpu'][kind] / many * 1e6:7.1f} µs each, "
            f"{result['cpu'][kind] / n * 1e6:7.1f} µs a payment"
        )


if __name__ == "__main__":
    main()
