"""The settlement of business dates on each engine (real SQLite files, a real
PostgreSQL database): every category of
settlement.md's table, payouts computed here by hand, carries, held sales paid later,
the ledger, and settling again posting nothing twice."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from switch.core.batch import BatchTotals, SettledBatch, UploadRecord
from switch.core.changes import BatchRecordsUploaded, BatchSettled, BatchUploadEnded
from switch.core.merchants import MerchantTerms
from switch.core.settlement import payout_file, recon_file
from switch.store.settlement_port import SettlementError
from switch.store.sqlite.settlement import SqliteSettlementStore
from tests.settle.ledger_days import Place, record_of, txn

D0, D1, D2 = "2026-11-22", "2026-11-23", "2026-11-24"
MERCHANTS = [
    MerchantTerms(merchant_id="*", name="default", mcc="5999", mdr_bps=60, account="DEFAULT"),
    MerchantTerms(merchant_id="M1", name="one", mcc="5411", mdr_bps=38, fee_cap_fen=2600,
                  account="ACC-M1"),
]  # fmt: skip


def test_three_dates_of_every_category(place: Place) -> None:
    s1 = txn(D0, 10000, merchant_id="M1")
    s2 = txn(D0, 20000, merchant_id="M1", voided=True)
    v2 = txn(D0, 20000, merchant_id="M1", kind="void", original_rrn=s2.rrn)
    s3 = txn(D0, 5000, merchant_id="M2")  # the bank has 1 fen more
    s4 = txn(D0, 7000, merchant_id="M2")  # the bank never lists it
    s5 = txn(D0, 3000, merchant_id="M2", state="declined", code="05")  # the bank approved it
    r1 = txn(D0, 4000, merchant_id="M1", kind="refund", original_rrn=s1.rrn)
    s6 = txn(D0, 1000, merchant_id="M1", reversed=True)  # reversed on both sides
    s7 = txn(D0, 8000, merchant_id="M1")  # the bank lists it a date late
    s8 = txn(D1, 1000, merchant_id="M2")
    r2 = txn(D1, 5000, merchant_id="M2", kind="refund", original_rrn=s3.rrn)
    s9 = txn(D2, 10000, merchant_id="M2")
    declined = txn(D0, 500, merchant_id="M1", state="declined", code="51")  # nowhere: matched
    place.write_journal([s1, s2, v2, s3, s4, s5, r1, s6, s7, s8, r2, s9, declined])  # fmt: skip
    store = place.open_store([D0, D1, D2])
    unknown = record_of(txn(D0, 900, rrn="S00000000001", merchant_id="M9"))
    store.accept_clearing_file("icbc", D0, "icbc-20261122.clr", [
        record_of(s1), record_of(s2), record_of(v2), record_of(s3, amount=5001), record_of(s5),
        record_of(r1), record_of(s6), record_of(s6, reversal=True), unknown,
    ], at=1.0)  # fmt: skip

    assert store.settle(D0, MERCHANTS, at=2.0) is True
    payouts = {line.merchant_id: line for line in store.payout_lines(D0)}
    m1, m2 = payouts["M1"], payouts["M2"]
    # M1: s1 paid (fee 38); s2 and its void cancel out, no fee; r1 refunded; s7 held.
    assert (m1.sales_count, m1.sales_fen, m1.refunds_count, m1.refunds_fen) == (1, 10000, 1, 4000)
    assert (m1.fees_fen, m1.held_fen, m1.net_fen, m1.payout_fen) == (38, 8000, 5962, 5962)
    assert m1.account == "ACC-M1"
    # M2 (unlisted: the * profile): s3 paid at the bank's 5001, fee 30; s4 held.
    assert (m2.sales_fen, m2.fees_fen, m2.held_fen, m2.payout_fen) == (5001, 30, 7000, 4971)
    assert m2.account == "DEFAULT"
    assert set(payouts) == {"M1", "M2"}  # M9's record was never the switch's: nothing owed
    recon = {(line.rrn, line.category): line for line in store.recon_lines(D0)}
    assert {key: (line.switch_fen, line.bank_fen, line.action) for key, line in recon.items()} == {
        (s3.rrn, "amount_mismatch"): (5000, 5001, "paid"),
        (s4.rrn, "switch_only"): (7000, None, "held"),
        (s5.rrn, "bank_only"): (None, 3000, "reversal_queued"),
        (s7.rrn, "switch_only"): (8000, None, "held"),
        ("S00000000001", "bank_only"): (None, 900, "reversal_queued"),
    }
    orders = {order.rrn: order for order in store.pending_reversal_orders()}
    assert set(orders) == {s5.rrn, "S00000000001"}
    assert orders[s5.rrn].known and not orders["S00000000001"].known
    assert orders["S00000000001"].stan == unknown[2] and orders["S00000000001"].amount == 900
    first_files = payout_file(store.payout_lines(D0)), recon_file(store.recon_lines(D0))

    # D1: s7 turns up in the bank's next file (timing, paid now); M2 goes negative.
    store.accept_clearing_file("icbc", D1, "icbc-20261123.clr",
                               [record_of(s7), record_of(s8), record_of(r2)], at=3.0)  # fmt: skip
    assert store.settle(D1, MERCHANTS, at=4.0) is True
    payouts = {line.merchant_id: line for line in store.payout_lines(D1)}
    assert (payouts["M1"].sales_fen, payouts["M1"].fees_fen, payouts["M1"].payout_fen) == (
        8000, 30, 7970,
    )  # fmt: skip
    m2 = payouts["M2"]
    assert (m2.sales_fen, m2.refunds_fen, m2.fees_fen, m2.held_fen) == (1000, 5000, 6, 7000)
    assert (m2.net_fen, m2.payout_fen, m2.carried_out_fen) == (-4006, 0, -4006)
    recon = {(line.rrn, line.category): line.action for line in store.recon_lines(D1)}
    assert recon == {(s7.rrn, "timing"): "paid", (s4.rrn, "switch_only"): "held"}

    # D2: s4 was looked for in two more dates' files: reversed, never paid; M2's carry
    # comes off its sale.
    store.accept_clearing_file("icbc", D2, "icbc-20261124.clr", [record_of(s9)], at=5.0)
    assert store.settle(D2, MERCHANTS, at=6.0) is True
    m2 = {line.merchant_id: line for line in store.payout_lines(D2)}["M2"]
    assert (m2.carried_in_fen, m2.sales_fen, m2.fees_fen, m2.held_fen) == (-4006, 10000, 60, 0)
    assert (m2.net_fen, m2.payout_fen, m2.carried_out_fen) == (5934, 5934, 0)
    assert {(line.rrn, line.category): line.action for line in store.recon_lines(D2)} == {
        (s4.rrn, "switch_only"): "reversal_queued"
    }
    assert s4.rrn in {order.rrn for order in store.pending_reversal_orders()}

    # The ledger balances, every merchant's payable is settled to 0, and the money paid
    # out is every payout.
    debits, credits = store.ledger_totals()
    assert debits == credits > 0
    balances = {balance.account: balance.balance_fen for balance in store.ledger_balances()}
    assert all(value == 0 for account, value in balances.items() if account.startswith("merchant:"))
    assert balances["carried:M2"] == 0
    assert balances["payouts"] == 5962 + 4971 + 7970 + 5934
    assert balances["merchant_fee_income"] == 38 + 30 + 30 + 6 + 60
    assert balances["bank_clearing:icbc"] == -(10000 + 5001 + 8000 + 1000 + 10000 - 4000 - 5000)

    # Settling again: nothing posted twice, the same files.
    assert store.settle(D0, MERCHANTS, at=9.0) is False
    assert store.ledger_totals() == (debits, credits)
    assert (payout_file(store.payout_lines(D0)), recon_file(store.recon_lines(D0))) == first_files
    store.close()


def test_a_date_not_closed_cannot_be_settled(place: Place) -> None:
    place.write_journal([])
    store = place.open_store([D0])
    with pytest.raises(SettlementError, match="2026-11-23 is not closed"):
        store.settle(D1, MERCHANTS, at=1.0)
    # Closing D0 opened D1, and nothing else.
    assert store.unsettled_closed_dates() == [D0]
    store.close()


def test_the_files_are_the_spec_s_columns(place: Place) -> None:
    sale = txn(D0, 12345, merchant_id="M1")
    place.write_journal([sale])
    store = place.open_store([D0])
    store.accept_clearing_file("icbc", D0, "icbc-20261122.clr", [record_of(sale, amount=12346)],
                               at=1.0)  # fmt: skip
    store.settle(D0, MERCHANTS, at=2.0)
    assert payout_file(store.payout_lines(D0)).decode() == (
        "business_date,value_date,merchant_id,account,sales_count,sales_fen,refunds_count,"
        "refunds_fen,fees_fen,held_fen,carried_in_fen,net_fen,payout_fen,carried_out_fen\n"
        "2026-11-22,2026-11-23,M1,ACC-M1,1,12346,0,0,47,0,0,12299,12299,0\n"
    )
    assert recon_file(store.recon_lines(D0)).decode() == (
        "business_date,category,bank,rrn,terminal_id,merchant_id,masked_pan,switch_fen,"
        "bank_fen,action\n"
        f"2026-11-22,amount_mismatch,icbc,{sale.rrn},POS00001,M1,622202*********2221,12345,"
        "12346,paid\n"
    )
    store.close()


def record_batch(place: Place, day: str, uploaded: list[tuple[str, str, int]]) -> None:
    """POS00001's batch 000001 settled (0500) on ``day`` and its upload (0320): each of
    ``uploaded`` a (kind 22/25, original STAN, amount), through the journal's changes."""
    settled = SettledBatch(
        terminal_id="POS00001", merchant_id="M1", batch="000001",
        terminal_totals=BatchTotals(), switch_totals=BatchTotals(), result="2",
        business_date=day, rrn="632600999999", settled_at=1.0,
    )  # fmt: skip
    records = tuple(UploadRecord(kind, stan, amount) for kind, stan, amount in uploaded)  # type: ignore[arg-type]
    changes = (
        BatchSettled(settled=settled),
        BatchRecordsUploaded(terminal_id="POS00001", merchant_id="M1", batch="000001",
                             records=records, at=1.0),
        BatchUploadEnded(terminal_id="POS00001", merchant_id="M1", batch="000001",
                         total=len(records), at=1.0),
    )  # fmt: skip
    place.apply(changes)  # in order: the 0500, then its 0320s


def test_a_terminal_batch_upload_against_the_journal_and_the_bank(place: Place) -> None:
    """terminal_only: the terminal lists an approval the journal does not have standing
    (not paid); terminal_missing: standing in the journal, not in the upload, paid as
    the bank's file decides: paid when the bank lists it, held when it does not."""
    listed = txn(D0, 1000, merchant_id="M1")  # in the upload: nothing to say
    missing_paid = txn(D0, 2000, merchant_id="M1")  # not uploaded, the bank has it
    missing_held = txn(D0, 3000, merchant_id="M1")  # not uploaded, the bank has it not
    declined = txn(D0, 4000, merchant_id="M1", state="declined", code="05")
    place.write_journal([listed, missing_paid, missing_held, declined])
    record_batch(place, D0, [("22", listed.stan, 1000), ("22", declined.stan, 4000),
                               ("22", "999999", 500)])  # fmt: skip
    store = place.open_store([D0])
    store.accept_clearing_file("icbc", D0, "icbc-20261122.clr",
                               [record_of(listed), record_of(missing_paid)], at=1.0)  # fmt: skip
    store.settle(D0, MERCHANTS, at=2.0)
    recon = {(line.rrn, line.category): line.action for line in store.recon_lines(D0)}
    assert recon == {
        (missing_paid.rrn, "terminal_missing"): "paid",
        (missing_held.rrn, "terminal_missing"): "held",
        (missing_held.rrn, "switch_only"): "held",
        (declined.rrn, "terminal_only"): "not_paid",
        ("", "terminal_only"): "not_paid",
    }
    store.close()


def test_two_settlements_of_a_date_at_once_take_turns(place: Place) -> None:
    """The switch's own settlement and an operator's, each on its own connection (or
    file handle), at the same moment: one settles, the other finds it settled, and
    nothing is posted twice."""
    from concurrent.futures import ThreadPoolExecutor

    sales = [txn(D0, 1000 + n, merchant_id="M1") for n in range(50)]
    place.write_journal(sales)
    first = place.open_store([D0])
    first.accept_clearing_file("icbc", D0, "icbc-20261122.clr",
                               [record_of(sale) for sale in sales], at=1.0)  # fmt: skip
    second = place.open_store([])
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda store: store.settle(D0, MERCHANTS, at=2.0), [first, second]))
    assert sorted(done) == [False, True]
    debits, credits = first.ledger_totals()
    assert debits == credits and second.ledger_totals() == (debits, credits)
    assert sum(line.sales_fen for line in first.payout_lines(D0)) == sum(
        sale.amount for sale in sales
    )
    first.close()
    second.close()


def test_a_settlement_that_cannot_take_its_turn_fails_as_a_settlement(tmp_path: Path) -> None:
    """Another connection holds the SQLite store's write lock past the busy timeout (an
    operator's command, a backup): the settlement fails as one (SettlementError, which
    the service logs and tries again later) with nothing of it kept, not with the
    driver's own error, which would end the service's settler."""
    place = Place(tmp_path)
    place.write_journal([txn(D0, 1000)])
    store = place.open_store([D0])
    assert isinstance(store, SqliteSettlementStore)
    store._db.execute("PRAGMA busy_timeout = 0")  # the store's 30 s, not waited out here
    other = sqlite3.connect(tmp_path / "settlement.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(SettlementError, match=f"settling {D0} failed: database is locked"):
            store.settle(D0, MERCHANTS, at=2.0)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.unsettled_closed_dates() == [D0]
    assert store.settle(D0, MERCHANTS, at=3.0) is True
    store.close()


def test_the_switch_s_own_merchant_is_matched_and_never_paid_out(place: Place) -> None:
    """settlement.md: ``[credit] own_merchant_id``'s transactions (a co-brand
    conversion's payment to a card, credit.md) are matched like any other, have no fee
    and are in no payout row nor merchant posting; credit.md posts them itself."""
    own = "898310099990001"
    sale = txn(D0, 10000, merchant_id="M1")
    paid = txn(D0, 299900, merchant_id=own, kind="card_payment", terminal_id="CREDIT01",
               bank_processing_code="280030")  # fmt: skip
    missing = txn(D0, 5000, merchant_id=own, kind="card_payment", terminal_id="CREDIT01",
                  bank_processing_code="280030")  # fmt: skip
    place.write_journal([sale, paid, missing])
    store = place.open_store([D0])
    card_payment = (
        "0200", "280030", paid.stan, "1122063015", paid.rrn, 299900, "156", "00", "000001",
        paid.terminal_id, own, paid.pan_masked, "C",
    )  # fmt: skip
    store.accept_clearing_file("icbc", D0, "icbc-20261122.clr",
                               [record_of(sale), card_payment], at=1.0)  # fmt: skip
    assert store.settle(D0, MERCHANTS, at=2.0, own_merchants=(own,)) is True
    payouts = {line.merchant_id: line for line in store.payout_lines(D0)}
    assert set(payouts) == {"M1"}
    assert payouts["M1"].payout_fen == 10000 - 38
    recon = {line.rrn: (line.category, line.action) for line in store.recon_lines(D0)}
    assert recon == {missing.rrn: ("switch_only", "held")}  # matched, or held as any other
    assert not [b for b in store.ledger_balances(None) if own in b.account]
