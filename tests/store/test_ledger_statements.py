"""A wallet code sale's two ledger transactions, on each engine (a real SQLite file, the
tests' PostgreSQL server): the statements each runs, and what they leave (issue #22: an
on-us payment's CPU is mostly its statements and commits, performance.md "On-us").

The payment's step: the code taken (one ``UPDATE ... RETURNING``, the terminal's
probes counted in it), the wallet and the transfer's key locked, the two accounts locked
(one made first when a merchant is paid for the first time), the usage read, the
transfer inserted, the two accounts' sums, the payment counted: no row read twice, the
balance after taken from the sums locked. Its end: the transfer locked once (not again
by the move), the two accounts, the transfer ended, the two sums, the two movements, the
order (a withdrawal's, a top-up's) told.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import msgspec

from switch.core import ledger, paycode
from switch.core.ledger import TransferKey, TransferSpec
from switch.core.paycode import Paycode
from switch.core.wallet import MoneyAsk, Refusal, WalletSettings
from switch.store.ledger_port import Reserved
from switch.store.ledger_store import LedgerStoreBase, Parameters, Row
from tests.store.ledgers import ledger_store as ledger_store

SETTINGS = WalletSettings()
CODES = SETTINGS.paycodes()
MERCHANT = "898000000000001"
TERMINAL = f"T0000001:{MERCHANT}"
TODAY = "2026-12-08"
FUNDING = 100_000
PAY_STEP_STATEMENTS = 10
END_STATEMENTS = 9


class Counted:
    """The statements a store runs, by their first words (BEGIN and COMMIT are its
    transaction's, not counted)."""

    def __init__(self, store: LedgerStoreBase) -> None:
        self.seen: Counter[str] = Counter()
        execute, change = store._execute, store._change

        def counted_execute(statement: str, parameters: Parameters = ()) -> list[Row]:
            self.seen[" ".join(statement.split()[:4])] += 1
            return execute(statement, parameters)

        def counted_change(statement: str, parameters: Parameters = ()) -> int:
            self.seen[" ".join(statement.split()[:4])] += 1
            return change(statement, parameters)

        store._execute = counted_execute  # type: ignore[method-assign]
        store._change = counted_change  # type: ignore[method-assign]

    def take(self) -> Counter[str]:
        seen, self.seen = self.seen, Counter()
        return seen


def _make(n: int, amount: int, merchant: str) -> Any:
    def make(code: Paycode) -> tuple[MoneyAsk, TransferSpec] | Refusal:
        ask = MoneyAsk(
            customer_id=code.customer_id, amount=amount, counted="pay", funding=code.funding,
            channel="code", verification=code.verification, local_date=TODAY,
        )  # fmt: skip
        spec = TransferSpec(
            key=TransferKey(f"pos:{merchant}:T0000001", f"{n:012d}", "pay"),
            debit=ledger.wallet_account(code.customer_id),
            credit=ledger.merchant_account(merchant), amount=amount, kind="pay",
            rrn=f"{n:012d}", merchant_id=merchant,
        )  # fmt: skip
        return ask, spec

    return make


def _wallet(store: LedgerStoreBase, customer: str) -> None:
    store.open_wallet(customer, "app:wallet", 3, TODAY, time.time())
    store.transfer(TransferSpec(
        key=TransferKey("test", f"topup-{customer}", "topup"), debit="bank_clearing:icbc",
        credit=ledger.wallet_account(customer), amount=FUNDING, kind="topup",
    ), time.time())  # fmt: skip


def _code(store: LedgerStoreBase, customer: str) -> str:
    issued = store.issue_paycode(customer, "app:wallet", "wallet", "B", time.time(), CODES,
                                 lambda: paycode.draw(CODES.prefix))  # fmt: skip
    return issued.code


def test_a_code_sale_reads_each_row_once(ledger_store: LedgerStoreBase) -> None:
    """Three payments of one wallet, the first at a merchant not yet in the ledger: each
    step and end runs the statements above and no more; the pending transfer's
    ``available_after`` is the wallet's as stored; the posts leave the wallet, the
    merchant, their movements and every invariant as they must."""
    store = ledger_store
    customer = "C400000001"
    _wallet(store, customer)
    counted = Counted(store)
    for n, amount in enumerate((2_500, 1_000, 700), start=1):
        code = _code(store, customer)
        counted.take()
        taken, done = store.pay_by_code(code, TERMINAL, time.time(), SETTINGS,
                                        _make(n, amount, MERCHANT))  # fmt: skip
        step = counted.take()
        assert taken.response_code == "00" and isinstance(done, Reserved), done
        assert taken.paycode is not None and taken.paycode.state == "used"
        assert taken.paycode.customer_id == customer
        wallet = store.account(ledger.wallet_account(customer))
        assert wallet is not None and done.available_after == wallet.balances.available
        made = 2 if n == 1 else 0  # the merchant's account made, then locked
        assert sum(step.values()) == PAY_STEP_STATEMENTS + made, step
        assert step["SELECT name, debit_cap, debits_pending,"] == 2 + (n == 1), step
        counted.take()
        ended = store.end_payment(done.transfer.spec.key, True, time.time())
        end = counted.take()
        assert ended.after is not None and ended.after.state == "posted"
        assert sum(end.values()) == END_STATEMENTS, end
    wallet = store.account(ledger.wallet_account(customer))
    merchant = store.account(ledger.merchant_account(MERCHANT))
    assert wallet is not None and merchant is not None
    assert wallet.balances.balance == wallet.balances.available == FUNDING - 4_200
    assert merchant.balances.balance == 4_200
    history = store.history(customer, "app:wallet", 10, None)
    assert [(item.amount, item.balance_after) for item in history.items] == [
        (-700, FUNDING - 4_200), (-1_000, FUNDING - 3_500), (-2_500, FUNDING - 2_500),
        (FUNDING, FUNDING),
    ]  # fmt: skip
    assert store.verify() == [] and store.pending_transfers() == []


def test_a_code_taken_once_and_only_while_open(ledger_store: LedgerStoreBase) -> None:
    """The code taken by one ``UPDATE ... RETURNING``: used once (again: 14), an expired
    one 14 (left open, counted as a probe), a cancelled one 14; a terminal at its probe
    limit 65 even for an open code, which stays open for another terminal."""
    store = ledger_store
    customer = "C400000002"
    _wallet(store, customer)
    code = _code(store, customer)
    at = time.time()
    taken, done = store.pay_by_code(code, TERMINAL, at, SETTINGS, _make(1, 100, MERCHANT))
    assert taken.response_code == "00" and isinstance(done, Reserved)
    again, nothing = store.pay_by_code(code, TERMINAL, at, SETTINGS, _make(2, 100, MERCHANT))
    assert (again.response_code, again.paycode, nothing) == ("14", None, None)
    late = _code(store, customer)
    expired = store.take_paycode(late, "T9", time.time() + CODES.ttl_s, CODES)
    assert (expired.response_code, expired.paycode) == ("14", None)
    still = store.take_paycode(late, "T9", time.time(), CODES)  # not expired: still open
    assert still.response_code == "00" and still.paycode is not None
    assert still.paycode.code == late and still.paycode.state == "used"
    assert store.take_paycode("not a code", "T9", time.time(), CODES).response_code == "14"
    for _ in range(CODES.max_open):
        _code(store, customer)
    cancelled = _code(store, customer)  # ... the oldest open ones cancelled meanwhile
    for _ in range(CODES.max_open):
        _code(store, customer)
    assert store.take_paycode(cancelled, "T8", time.time(), CODES).response_code == "14"
    # T9 has had 2 answers of 14 (the expired code, "not a code"): at a limit of 2, 65
    # for an open code, which T7 then takes.
    limited = msgspec.structs.replace(CODES, probe_limit=2)
    fresh = _code(store, customer)
    assert store.take_paycode(fresh, "T9", time.time(), limited).response_code == "65"
    assert store.take_paycode(fresh, "T7", time.time(), limited).response_code == "00"
    assert store.verify() == []
