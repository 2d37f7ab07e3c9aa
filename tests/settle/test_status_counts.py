"""What ``switch settle status`` counts agrees with what the settlement paid, on each
engine (a real SQLite file, a real PostgreSQL database)."""

from __future__ import annotations

from switch.core.merchants import MerchantTerms
from tests.settle.ledger_days import Place, record_of, txn

D0, D1 = "2026-11-22", "2026-11-23"
MERCHANTS = [
    MerchantTerms(merchant_id="*", name="default", mcc="5999", mdr_bps=60, account="DEFAULT")
]


def test_a_same_day_void_and_its_sale_are_counted_cancelled_not_paid(place: Place) -> None:
    """settlement.md is silent; docs/behaviour.md decides: a sale voided within the same
    settlement and its void cancel out. The status says so (`cancelled`), as the
    payouts do (neither is a sale, a refund or a fee); a void settled a date after its
    sale returns money like a refund, and both are paid."""
    kept = txn(D0, 10000, merchant_id="M1")
    voided = txn(D0, 20000, merchant_id="M1", voided=True)
    void = txn(D0, 20000, merchant_id="M1", kind="void", original_rrn=voided.rrn)
    voided_later = txn(D0, 3000, merchant_id="M1", voided=True)
    late_void = txn(D1, 3000, merchant_id="M1", kind="void", original_rrn=voided_later.rrn)
    place.write_journal([kept, voided, void, voided_later, late_void])
    store = place.open_store([D0, D1])
    store.accept_clearing_file(
        "icbc", D0, "icbc-20261122.clr",
        [record_of(kept), record_of(voided), record_of(void), record_of(voided_later)], at=1.0,
    )  # fmt: skip
    store.accept_clearing_file("icbc", D1, "icbc-20261123.clr", [record_of(late_void)], at=2.0)
    assert store.settle(D0, MERCHANTS, at=3.0) is True
    assert store.settle(D1, MERCHANTS, at=4.0) is True

    first = store.status(D0, ["icbc"])
    counts = {(row.category, row.action): (row.count, row.switch_fen) for row in first.categories}
    assert counts == {("matched", "paid"): (2, 13000), ("matched", "cancelled"): (2, 40000)}
    (payout,) = store.payout_lines(D0)
    assert (payout.sales_count, payout.sales_fen, first.sales_fen) == (2, 13000, 13000)
    assert first.refunds_fen == 0

    second = store.status(D1, ["icbc"])
    counts = {(row.category, row.action): (row.count, row.switch_fen) for row in second.categories}
    assert counts == {("matched", "paid"): (1, 3000)}  # the later void, paid as a refund
    assert second.refunds_fen == 3000
