"""The co-brand card in the ledger store on both engines (real SQLite files, a real
PostgreSQL server): links, points on the ledger earned and taken back once each, and a
conversion's pending hold made into a plan or released (credit.md, "Co-brand card")."""

from __future__ import annotations

from datetime import date

import pytest

from switch.core.credit.plan import Terms
from switch.core.ledger import TransferKey
from switch.store.credit_store import CreditStopped
from switch.store.ledger_store import LedgerStoreBase
from tests.store.ledgers import ledger_store as ledger_store

APP = "app:wallet"
C, D = "C100000001", "C100000002"
TERMS = Terms()
CARD, OTHER = b"\x01" * 32, b"\x02" * 32
OPENED = "2026-03-01"


def balance(store: LedgerStoreBase, name: str) -> int:
    view = store.account(name)
    return 0 if view is None else view.balances.balance


def account(store: LedgerStoreBase, customer: str = C, limit: int = 2_000_000) -> None:
    store.open_wallet(customer, APP, 2, OPENED, 0.0)
    store.credit_open(customer, APP, limit, statement_day=1, grace_days=9,
                      business_date=date.fromisoformat(OPENED), at=0.0)  # fmt: skip


def link(store: LedgerStoreBase, customer: str = C, card: bytes = CARD) -> str:
    return store.cobrand_link(customer, APP, pan_hmac=card, pan_sealed=b"sealed" + card[:1],
                              masked_pan="625808******3453", at=1.0)  # fmt: skip


def sale(store: LedgerStoreBase, rrn: str, amount: int, card: bytes = CARD,
         day: str = OPENED, sold_at: float = 2.0) -> int | None:  # fmt: skip
    return store.cobrand_sale_approved(
        pan_hmac=card, rrn=rrn, business_date=day, merchant_id="898310054110001",
        bank="citic", amount_fen=amount, points_per_yuan=1, sold_at=sold_at, at=2.0,
    )  # fmt: skip


def test_link_needs_a_credit_account_and_one_customer_per_card(
    ledger_store: LedgerStoreBase,
) -> None:
    with pytest.raises(CreditStopped) as refused:
        link(ledger_store)
    assert refused.value.response_code == "14"
    account(ledger_store)
    account(ledger_store, D)
    assert link(ledger_store) == "625808******3453"
    assert link(ledger_store) == "625808******3453"  # the same link again: 00
    with pytest.raises(CreditStopped) as refused:
        link(ledger_store, D)
    assert refused.value.response_code == "12"
    link(ledger_store, C, OTHER)  # a new card replaces the old
    assert link(ledger_store, D) == "625808******3453"  # the old card is free again
    assert ledger_store.cobrand_link_of(C).pan_hmac == OTHER  # type: ignore[union-attr]


def test_points_are_earned_and_taken_back_once(ledger_store: LedgerStoreBase) -> None:
    account(ledger_store)
    assert sale(ledger_store, "532614000150", 8_850) is None  # no link: none
    link(ledger_store)  # at 1.0
    assert sale(ledger_store, "532614000149", 8_850, sold_at=0.5) is None  # sold before
    assert sale(ledger_store, "532614000151", 8_850) == 88
    assert sale(ledger_store, "532614000151", 8_850) == 88  # noted again: nothing more
    assert sale(ledger_store, "532614000152", 30_099) == 300
    assert ledger_store.points_balance(C).points == 388
    assert balance(ledger_store, "points_issued") == -388

    changed = ledger_store.cobrand_sale_changed
    # A refund of 1.50 of 300.99 leaves floor(299.49) = 299 points.
    assert changed("532614000152", "refund", ref="R1", amount_fen=150, points_per_yuan=1,
                   at=3.0) == 1  # fmt: skip
    assert changed("532614000152", "refund", ref="R1", amount_fen=150, points_per_yuan=1,
                   at=3.0) == 0  # fmt: skip
    # A refund that leaves the yuan count alone moves no points, but counts.
    assert changed("532614000152", "refund", ref="R2", amount_fen=49, points_per_yuan=1,
                   at=3.0) == 0  # fmt: skip
    assert changed("532614000152", "refund", ref="R3", amount_fen=1, points_per_yuan=1,
                   at=3.0) == 1  # fmt: skip
    assert changed("532614000151", "void", ref="V1", amount_fen=8_850, points_per_yuan=1,
                   at=3.0) == 88  # fmt: skip
    # voided already: a reversal takes nothing more
    assert changed("532614000151", "reversal", ref="532614000151", amount_fen=8_850,
                   points_per_yuan=1, at=3.0) == 0  # fmt: skip
    assert ledger_store.points_balance(C).points == 298
    sales = ledger_store.cobrand_sales(C, APP, 30)
    assert [(s.rrn, s.refunded_fen, s.points) for s in sales] == [("532614000152", 200, 298)]
    assert changed("532614000152", "not_paid", ref="532614000152", amount_fen=0,
                   points_per_yuan=1, at=4.0) == 298  # fmt: skip
    assert ledger_store.points_balance(C).points == 0
    assert balance(ledger_store, "points_issued") == 0
    assert ledger_store.verify() == []


def hold(store: LedgerStoreBase, rrn: str, key_id: str, instalments: int = 3) -> int:
    held = store.cobrand_hold(C, APP, key=TransferKey(APP, key_id, "convert"), sale_rrn=rrn,
                              instalments=instalments, bank="citic", convert_days=30,
                              terms=TERMS, at=5.0)  # fmt: skip
    return held.amount_fen


def refused(store: LedgerStoreBase, rrn: str, key_id: str) -> str:
    with pytest.raises(CreditStopped) as stopped:
        hold(store, rrn, key_id)
    return stopped.value.response_code


def test_conversion_checks_in_order(ledger_store: LedgerStoreBase) -> None:
    account(ledger_store, limit=500_000)
    link(ledger_store)
    sale(ledger_store, "600000000001", 299_900)
    sale(ledger_store, "600000000002", 9_999)
    sale(ledger_store, "600000000003", 600_000)
    sale(ledger_store, "600000000004", 20_000, card=OTHER)  # not linked: no sale kept
    sale(ledger_store, "600000000005", 50_000, day="2026-01-01")  # > 30 days before
    assert refused(ledger_store, "699999999999", "k1") == "25"
    assert refused(ledger_store, "600000000004", "k1") == "25"
    assert refused(ledger_store, "600000000005", "k1") == "12"
    assert refused(ledger_store, "600000000002", "k1") == "13"
    assert refused(ledger_store, "600000000003", "k1") == "51"
    ledger_store.credit_freeze(C, True, "test", 5.0)
    assert refused(ledger_store, "600000000001", "k1") == "62"
    ledger_store.credit_freeze(C, False, "", 5.0)
    link(ledger_store, C, OTHER)  # the sales of a card no longer linked are not the customer's
    assert refused(ledger_store, "600000000001", "k1") == "25"
    assert ledger_store.cobrand_sales(C, APP, 30) == []  # nor listed


def test_conversion_held_then_planned_or_released(ledger_store: LedgerStoreBase) -> None:
    account(ledger_store)
    link(ledger_store)
    sale(ledger_store, "606411000201", 299_900)
    assert hold(ledger_store, "606411000201", "conv-1") == 299_900
    key = TransferKey(APP, "conv-1", "convert")
    assert ledger_store.transfer_of(key).state == "pending"  # type: ignore[union-attr]
    assert ledger_store.credit_status(C).available_fen == 2_000_000 - 299_900
    assert refused(ledger_store, "606411000201", "conv-2") == "12"  # held: converted
    # Declined: released, and the sale may be converted again.
    assert ledger_store.cobrand_end(C, key=key, sale_rrn="606411000201", payment_rrn=None,
                                    approved=False, at=6.0) is None  # fmt: skip
    assert ledger_store.transfer_of(key).state == "voided"  # type: ignore[union-attr]
    assert ledger_store.credit_status(C).available_fen == 2_000_000
    assert [s.converted for s in ledger_store.cobrand_sales(C, APP, 30)] == [False]
    # Approved: posted, and the plan is the credit purchase named by the payment's RRN.
    assert hold(ledger_store, "606411000201", "conv-2") == 299_900
    key2 = TransferKey(APP, "conv-2", "convert")
    plan = ledger_store.cobrand_end(C, key=key2, sale_rrn="606411000201",
                                    payment_rrn="606612000777", approved=True, at=6.0)  # fmt: skip
    assert plan is not None and plan.purchase_id == "606612000777"
    assert [row.principal_fen for row in plan.schedule] == [99_968, 99_966, 99_966]
    assert plan.apr_bps == 898
    again = ledger_store.cobrand_end(C, key=key2, sale_rrn="606411000201",
                                     payment_rrn="606612000777", approved=True, at=7.0)  # fmt: skip
    assert again == plan
    assert balance(ledger_store, f"credit_receivable:{C}") == -299_900
    assert balance(ledger_store, "bank_clearing:citic") == 299_900
    assert ledger_store.credit_status(C).outstanding_principal_fen == 299_900
    assert [s.converted for s in ledger_store.cobrand_sales(C, APP, 30)] == [True]
    assert ledger_store.verify() == []


def test_the_plan_map_is_credit_md_s_sample(ledger_store: LedgerStoreBase) -> None:
    """A co-brand sale of ¥2,999.00 converted into 3 on 2026-03-07 answers the plan map of
    credit.md's conversion sample, byte for byte (the same map: purchase_id, principal,
    fees, apr_bps 898, the schedule billed 04-01, 05-01, 06-01)."""
    import msgspec

    from tests.wire.spec_samples import SPEC_FRAMES

    sample = next(bytes.fromhex(hex_) for page, hex_ in SPEC_FRAMES
                  if page == "credit.md" and "706c616e" in hex_)  # fmt: skip
    expected = msgspec.msgpack.encode(msgspec.msgpack.decode(sample)["plan"])
    account(ledger_store)
    link(ledger_store)
    sale(ledger_store, "606411000111", 299_900, day="2026-03-05")
    ledger_store.credit_close(date(2026, 3, 6), TERMS, 4.0)  # today: 2026-03-07
    hold(ledger_store, "606411000111", "conv-20260307-1")
    plan = ledger_store.cobrand_end(C, key=TransferKey(APP, "conv-20260307-1", "convert"),
                                    sale_rrn="606411000111", payment_rrn="606411000201",
                                    approved=True, at=6.0)  # fmt: skip
    assert msgspec.msgpack.encode(plan) == expected


def converted(store: LedgerStoreBase, sale_rrn: str, payment_rrn: str, amount: int) -> None:
    sale(store, sale_rrn, amount)
    hold(store, sale_rrn, f"k-{sale_rrn}")
    store.cobrand_end(C, key=TransferKey(APP, f"k-{sale_rrn}", "convert"), sale_rrn=sale_rrn,
                      payment_rrn=payment_rrn, approved=True, at=6.0)  # fmt: skip


def test_a_payment_settlement_never_pays_cancels_the_conversion(
    ledger_store: LedgerStoreBase,
) -> None:
    """Billed once (period 1: 999.68 + 15.00 fee), 500.00 repaid from the wallet, then
    settlement gives the payment up: the purchase is refunded whole against
    bank_clearing, its billed fee reversed, the repaid part back in the wallet."""
    account(ledger_store)
    link(ledger_store)
    from tests.store.test_credit_store import fund_wallet

    fund_wallet(ledger_store, 100_000)
    converted(ledger_store, "606411000111", "606411000201", 299_900)
    ledger_store.credit_close(date(2026, 3, 31), TERMS, 7.0)  # the statement of 04-01
    assert balance(ledger_store, "instalment_fee_income") == 1_500
    ledger_store.credit_repay_from_wallet(C, key=TransferKey(APP, "rp-1", "repay"),
                                          rrn="609100000001", amount_fen=50_000,
                                          purchase_id=None, at=8.0)  # fmt: skip
    assert balance(ledger_store, f"credit_receivable:{C}") == -(299_900 + 1_500 - 50_000)

    assert ledger_store.cobrand_cancel("606411000201", 9.0) == 299_900
    assert ledger_store.cobrand_cancel("606411000201", 9.0) == 0  # once
    assert ledger_store.cobrand_cancel("606411000999", 9.0) == 0  # no conversion's
    assert balance(ledger_store, f"credit_receivable:{C}") == 0
    assert balance(ledger_store, "instalment_fee_income") == 0
    assert balance(ledger_store, "bank_clearing:citic") == 0  # the payment undone
    assert balance(ledger_store, f"wallet:{C}") == 100_000  # 500.00 repaid comes back
    status = ledger_store.credit_status(C)
    assert (status.outstanding_principal_fen, status.payoff_fen) == (0, 0)
    assert [s.converted for s in ledger_store.cobrand_sales(C, APP, 60)] == [False]
    assert ledger_store.verify() == []


def test_an_amount_mismatch_on_a_payment_books_the_difference(
    ledger_store: LedgerStoreBase,
) -> None:
    account(ledger_store)
    link(ledger_store)
    converted(ledger_store, "606411000111", "606411000201", 299_900)
    assert ledger_store.cobrand_mismatch("606411000201", 299_900, 300_000, 9.0) == 100
    assert ledger_store.cobrand_mismatch("606411000201", 299_900, 300_000, 9.0) == 100
    assert balance(ledger_store, "recon_loss") == -100  # an expense: the bank took more
    assert balance(ledger_store, "bank_clearing:citic") == 300_000
    assert ledger_store.credit_status(C).outstanding_principal_fen == 299_900  # plan alone
    assert ledger_store.verify() == []


def test_the_metrics_figures_count_links_points_and_conversions_by_result(
    ledger_store: LedgerStoreBase,
) -> None:
    account(ledger_store)
    link(ledger_store)
    converted(ledger_store, "606411000111", "606411000201", 299_900)  # approved
    converted(ledger_store, "606411000112", "606411000202", 150_000)  # approved, cancelled
    ledger_store.cobrand_cancel("606411000202", 9.0)
    sale(ledger_store, "606411000113", 120_000)
    hold(ledger_store, "606411000113", "k-declined")
    ledger_store.cobrand_end(C, key=TransferKey(APP, "k-declined", "convert"),
                             sale_rrn="606411000113", payment_rrn=None, approved=False,
                             at=6.0)  # fmt: skip
    sale(ledger_store, "606411000114", 130_000)
    hold(ledger_store, "606411000114", "k-pending")  # at the bank
    ledger_store.cobrand_sale_changed("606411000113", "void", ref="606411000113",
                                      amount_fen=0, points_per_yuan=1, at=7.0)  # fmt: skip
    totals = ledger_store.cobrand_totals()
    assert (totals.linked_cards, totals.points_issued, totals.points_reversed) == (
        1, 2999 + 1500 + 1200 + 1300, 1200)  # fmt: skip
    assert totals.conversions == {"approved": 2, "not_approved": 1, "pending": 1,
                                  "cancelled": 1}  # fmt: skip
