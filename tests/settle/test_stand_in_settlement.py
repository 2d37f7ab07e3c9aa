"""Stood-in sales in settlement (risk.md, settlement.md), on each engine: paid with their
own date's settlement whatever their advice's state, never switch_only, matched against
the bank's file of the date their advice was accepted (D ± 1: timing); stip_pending
while it has no final answer or is not yet listed, stip_loss when refused or still not
listed 2 business dates after its acceptance; and their postings through
stip_receivable:<bank>."""

from __future__ import annotations

from typing import Any

from switch.core.bank import OriginalData
from switch.core.book import TxnRecord
from switch.core.changes import AdviceAttempted, AdviceQueued, TxnStarted
from switch.core.merchants import MerchantTerms
from tests.settle.ledger_days import Place, record_of, txn

D0, D1, D2 = "2026-11-22", "2026-11-23", "2026-11-24"
MERCHANTS = [
    MerchantTerms(merchant_id="*", name="default", mcc="5999", mdr_bps=0, account="DEFAULT"),
]


def stood_in(day: str, amount: int) -> TxnRecord:
    return txn(day, amount, merchant_id="M1", bank="citic", stand_in="no_link", advice="queued",
               sent=None,
               auth_code="S00001")  # fmt: skip


def queued(record: TxnRecord, advice_id: int) -> list[Any]:
    return [
        TxnStarted.of(record, 1.0),
        AdviceQueued(rrn=record.rrn, bank=record.bank, reason="no_link", at=1.0,
                     local_time="154005", entry_mode="022", condition_code="00", mcc="5411"),
    ]  # fmt: skip


def answered(record: TxnRecord, advice_id: int, state: str, on: str | None = None) -> Any:
    trace = OriginalData(mti="0220", stan=f"{advice_id:06d}", transmission="1122080512")
    return AdviceAttempted(
        advice_id=advice_id, rrn=record.rrn, state=state, attempts=1, next_attempt_at=2.0,
        result="00" if state == "accepted" else "05", at=2.0,
        sent=trace if state == "accepted" else None, accepted_date=on,
    )  # fmt: skip


def advice_record(record: TxnRecord) -> tuple[Any, ...]:
    return ("0220", *record_of(record)[1:])


def balances(store: Any) -> dict[str, int]:
    return {line.account: line.debit_fen - line.credit_fen for line in store.ledger_balances()}


def test_stood_in_sales_are_paid_on_their_date_and_matched_by_their_acceptance(
    place: Place,
) -> None:
    matched = stood_in(D0, 1000)  # accepted on D0, in the bank's D0 file
    refused = stood_in(D0, 2000)  # refused: the switch's loss
    late = stood_in(D0, 4000)  # no answer by D0's settlement; accepted on D1, in D2's file
    lost = stood_in(D0, 8000)  # accepted on D0, never in a file: lost after 2 dates
    place.write_journal([])
    place.apply([
        *queued(matched, 1), *queued(refused, 2), *queued(late, 3), *queued(lost, 4),
        answered(matched, 1, "accepted", D0), answered(refused, 2, "refused"),
        answered(lost, 4, "accepted", D0),
    ])  # fmt: skip
    store = place.open_store([D0, D1, D2])
    store.accept_clearing_file("citic", D0, "citic-20261122.clr", [advice_record(matched)],
                               at=1.0)  # fmt: skip
    assert store.settle(D0, MERCHANTS, at=2.0) is True
    (payout,) = store.payout_lines(D0)
    assert (payout.sales_count, payout.sales_fen, payout.held_fen) == (4, 15000, 0)
    recon = {line.rrn: (line.category, line.action) for line in store.recon_lines(D0)}
    assert recon == {
        refused.rrn: ("stip_loss", "paid"),
        late.rrn: ("stip_pending", "paid"),
        lost.rrn: ("stip_pending", "paid"),
    }
    assert balances(store)["stip_receivable:citic"] == 4000 + 8000
    assert balances(store)["stip_loss"] == 2000
    assert store.pending_reversal_orders() == []  # never switch_only, never reversed

    place.apply([answered(late, 3, "accepted", D1)])
    store.accept_clearing_file("citic", D1, "citic-20261123.clr", [], at=3.0)
    assert store.settle(D1, MERCHANTS, at=4.0) is True
    assert store.payout_lines(D1) == []  # nothing paid twice
    recon = {line.rrn: line.category for line in store.recon_lines(D1)}
    assert recon == {late.rrn: "stip_pending", lost.rrn: "stip_pending"}

    store.accept_clearing_file("citic", D2, "citic-20261124.clr", [advice_record(late)],
                               at=5.0)  # fmt: skip
    assert store.settle(D2, MERCHANTS, at=6.0) is True
    assert store.payout_lines(D2) == []
    recon = {line.rrn: (line.category, line.action) for line in store.recon_lines(D2)}
    assert recon == {late.rrn: ("timing", "paid"), lost.rrn: ("stip_loss", "paid")}
    ledger = balances(store)
    assert ledger["stip_receivable:citic"] == 0
    assert ledger["stip_loss"] == 2000 + 8000
    assert ledger["bank_clearing:citic"] == 1000 + 4000  # what the bank owes: the two it listed
    assert store.ledger_totals()[0] == store.ledger_totals()[1]
