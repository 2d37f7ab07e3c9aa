"""The ledger over random days: whatever the day's transactions and whatever the banks'
files (or, for on-us payments, the on-us ledger) get wrong, every settlement's postings
balance, every merchant's payable is settled to zero (on both ledgers together, once
the on-us ledger's orders are handed over), and the ledgers' accounts agree with the
payout files."""

from __future__ import annotations

import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switch.core.book import TxnRecord
from switch.core.ledger import TransferKey, TransferSpec
from switch.core.merchants import MerchantTerms
from switch.core.settlement import payout_file, recon_file
from switch.net.settlement import hand_over_ledger_orders
from switch.store.ledger_store import LedgerStoreBase
from switch.store.settlement_port import SettlementStore
from tests.settle.ledger_days import Place, place_on, record_of, txn
from tests.store.engines import ENGINES

MERCHANTS = [
    MerchantTerms(merchant_id="*", name="", mcc="5999", mdr_bps=60, account="DEFAULT"),
    MerchantTerms(merchant_id="M1", name="", mcc="5411", mdr_bps=38, fee_cap_fen=2600,
                  account="A1"),
    MerchantTerms(merchant_id="M2", name="", mcc="5311", mdr_bps=250, fee_min_fen=50,
                  account="A2"),
]  # fmt: skip
FIRST = date(2026, 11, 22)

sale_plan = st.fixed_dictionaries(
    {
        "day": st.integers(0, 3),
        "merchant": st.sampled_from(["M1", "M2", "M3"]),
        "bank": st.sampled_from(["icbc", "abc", "on-us"]),
        "amount": st.integers(1, 2_000_000),
        "fate": st.sampled_from(["stands", "voided", "reversed", "declined", "refunded"]),
        "bank_fault": st.sampled_from(["none", "none", "none", "drop", "amount", "late"]),
    }
)


@pytest.mark.parametrize("engine", ENGINES)
@settings(
    max_examples=40,
    deadline=None,
    # ``request`` only reaches the session's PostgreSQL server: each example has a
    # database (or folder) of its own.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(sale_plan, min_size=1, max_size=25))
def test_every_settlement_balances_and_agrees_with_its_payouts(
    engine: str, request: pytest.FixtureRequest, plans: list[dict[str, Any]]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        check_days(place_on(engine, Path(folder), request), plans)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(sale_plan, min_size=1, max_size=25))
def test_both_engines_write_the_same_files_and_post_the_same_ledger(
    request: pytest.FixtureRequest, plans: list[dict[str, Any]]
) -> None:
    """The same days on SQLite and on PostgreSQL: the payout and reconciliation files
    byte for byte, the reversal orders and the ledger's balances."""
    days, journal, files, transfers = plan_days(plans)
    seen = []
    with tempfile.TemporaryDirectory() as folder:
        for engine in ENGINES:
            place = place_on(engine, Path(folder) / engine, request)
            place.folder.mkdir()
            place.write_journal(journal)
            ledger = place.open_ledger()
            store = place.open_store(days)
            written = []
            for day in days:
                post_day(ledger, transfers, day)
                for bank in ("icbc", "abc"):
                    store.accept_clearing_file(bank, day, f"{bank}.clr", files[(bank, day)],
                                               at=1.0)  # fmt: skip
                store.settle(day, MERCHANTS, at=2.0)
                written.append((payout_file(store.payout_lines(day)),
                                recon_file(store.recon_lines(day)),
                                store.pending_ledger_orders()))  # fmt: skip
                hand_over(store, ledger)
            seen.append((written, store.pending_reversal_orders(), store.ledger_balances(),
                         ledger.accounts()))  # fmt: skip
            store.close()
            ledger.close()
    assert seen[0] == seen[1]


def post_day(ledger: LedgerStoreBase, transfers: list[tuple[str, TransferSpec]], day: str) -> None:
    """The on-us ledger's transfers of a date, before it settles."""
    for when, transfer in transfers:
        if when == day:
            ledger.transfer(transfer, 1.0)


def hand_over(store: SettlementStore, ledger: LedgerStoreBase) -> None:
    """What the settlement service does after a settlement: the on-us ledger's orders."""
    done, error = hand_over_ledger_orders(ledger, store.pending_ledger_orders(), 3.0)
    assert error is None
    store.ledger_orders_handed(done, 3.0)


def plan_days(
    plans: list[dict[str, Any]],
) -> tuple[
    list[str],
    list[TxnRecord],
    dict[tuple[str, str], list[tuple[Any, ...]]],
    list[tuple[str, TransferSpec]],
]:
    """The four dates, the journal's transactions, each bank's records of each date, and
    the on-us ledger's posted transfers."""
    days = [(FIRST + timedelta(days=n)).isoformat() for n in range(4)]
    journal: list[TxnRecord] = []
    files: dict[tuple[str, str], list[tuple[Any, ...]]] = {
        (bank, day): [] for bank in ("icbc", "abc") for day in days
    }
    transfers: list[tuple[str, TransferSpec]] = []
    for plan in plans:
        day, bank, merchant = days[plan["day"]], plan["bank"], plan["merchant"]
        fate, fault = plan["fate"], plan["bank_fault"]
        if bank == "on-us":
            on_us(plan, day, journal, transfers)
            continue
        state = "declined" if fate == "declined" else "approved"
        sale = txn(day, plan["amount"], bank=bank, merchant_id=merchant, state=state,
                   voided=fate == "voided", reversed=fate == "reversed")  # fmt: skip
        journal.append(sale)
        listed_on = days[min(plan["day"] + 1, 3)] if fault == "late" else day
        if state == "approved" and fault != "drop":
            amount = plan["amount"] + 1 if fault == "amount" else None
            files[(bank, listed_on)].append(record_of(sale, amount=amount))
            if fate == "reversed":
                files[(bank, listed_on)].append(record_of(sale, reversal=True))
        if fate in ("voided", "refunded"):
            kind = "void" if fate == "voided" else "refund"
            amount = plan["amount"] if kind == "void" else max(1, plan["amount"] // 3)
            other = txn(day, amount, bank=bank, merchant_id=merchant, kind=kind,
                        original_rrn=sale.rrn)  # fmt: skip
            journal.append(other)
            files[(bank, day)].append(record_of(other))
    return days, journal, files, transfers


CUSTOMER = "credit_receivable:C1"
"""The on-us payments' debit account: one with no cap, so that any day's ledger is one
the ledger store accepts."""


def on_us(
    plan: dict[str, Any],
    day: str,
    journal: list[TxnRecord],
    transfers: list[tuple[str, TransferSpec]],
) -> None:
    """An on-us payment's journal records and ledger transfers, the ledger getting it
    wrong as the plan's fault says: ``drop``, no transfer of the payment; ``amount``, one
    more fen (a declined one then posted on the ledger alone)."""
    merchant, fate, fault = plan["merchant"], plan["fate"], plan["bank_fault"]
    amount = plan["amount"]
    state = "declined" if fate == "declined" else "approved"
    sale = txn(day, amount, kind="onus_sale", bank="on-us", merchant_id=merchant, state=state,
               sent=None, voided=fate == "voided", reversed=fate == "reversed")  # fmt: skip
    journal.append(sale)
    principal = f"pos:{merchant}:POS00001"
    paid = amount + 1 if fault == "amount" else amount
    on_ledger = fault != "drop" and (state == "approved" or fault == "amount")

    def move(rrn: str, leg: str, value: int, to_merchant: bool) -> None:
        ends = (CUSTOMER, f"merchant:{merchant}")
        debit, credit = ends if to_merchant else ends[::-1]
        transfers.append((day, TransferSpec(key=TransferKey(principal, rrn, leg), debit=debit,
                                      credit=credit, amount=value, kind=leg, rrn=rrn,
                                      merchant_id=merchant)))  # fmt: skip

    if on_ledger:
        move(sale.rrn, "pay", paid, True)
        if fate == "reversed":
            move(sale.rrn, "reversal", paid, False)
    if fate in ("voided", "refunded"):
        kind = "onus_void" if fate == "voided" else "onus_refund"
        back = amount if fate == "voided" else max(1, amount // 3)
        other = txn(day, back, kind=kind, bank="on-us", merchant_id=merchant, sent=None,
                    original_rrn=sale.rrn)  # fmt: skip
        journal.append(other)
        move(other.rrn, "void" if fate == "voided" else "refund", back, False)


def check_days(place: Place, plans: list[dict[str, Any]]) -> None:
    days, journal, files, transfers = plan_days(plans)
    place.write_journal(journal)
    ledger = place.open_ledger()
    store = place.open_store(days)
    paid_out = fees = 0
    carried: dict[str, int] = {}
    for day in days:
        post_day(ledger, transfers, day)
        for bank in ("icbc", "abc"):
            store.accept_clearing_file(bank, day, f"{bank}.clr", files[(bank, day)], at=1.0)
        store.settle(day, MERCHANTS, at=2.0)
        hand_over(store, ledger)
        debits, credits = store.ledger_totals()
        assert debits == credits
        for line in store.payout_lines(day):
            net = line.sales_fen - line.refunds_fen - line.fees_fen + line.carried_in_fen
            assert line.net_fen == net
            assert (line.payout_fen, line.carried_out_fen) == ((net, 0) if net > 0 else (0, net))
            assert line.carried_in_fen == carried.get(line.merchant_id, 0)
            carried[line.merchant_id] = line.carried_out_fen
            paid_out += line.payout_fen
            fees += line.fees_fen
        # The two ledgers together: the settlement's and the on-us one.
        balances = {b.account: b.balance_fen for b in store.ledger_balances()}
        for view in ledger.accounts():
            name = view.balances.name
            balances[name] = balances.get(name, 0) + view.balances.balance
        assert not ledger.verify()
        assert all(v == 0 for account, v in balances.items() if account.startswith("merchant:"))
        assert balances.get("payouts", 0) == paid_out
        assert balances.get("merchant_fee_income", 0) == fees
        for merchant, owed in carried.items():
            assert balances.get(f"carried:{merchant}", 0) == owed
    store.close()
    ledger.close()
