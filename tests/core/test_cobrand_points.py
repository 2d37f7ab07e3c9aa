"""credit.md's points of a co-brand sale as plain Python: what a change takes back
(``change_of``) and what a terminal's reversal of a void or refund gives back
(``undo_of``), as tables of cases."""

from __future__ import annotations

from datetime import date

import msgspec
import pytest

from switch.core.credit.cobrand import (
    Change,
    CobrandSale,
    PointsMove,
    SaleState,
    change_of,
    undo_of,
)


def sale(state: SaleState = "standing", refunded_fen: int = 0, points: int = 300) -> CobrandSale:
    return CobrandSale(
        rrn="000000000001", customer_id="C1", business_date=date(2026, 3, 7),
        merchant_id="SHOP01", bank="citic", amount_fen=30_050, refunded_fen=refunded_fen,
        points=points, state=state,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("before", "change", "amount", "taken", "expected"),
    [
        # A void undone: the sale stands again with what the void took.
        (sale("voided", points=0), "void", 30_050, 300, PointsMove("standing", 0, -300)),
        (sale("voided", 10_000, 0), "void", 30_050, 200, PointsMove("standing", 10_000, -200)),
        # A refund undone: refunded no more; a standing sale gets back what it took.
        (sale(refunded_fen=10_000, points=200), "refund", 10_000, 100,
         PointsMove("standing", 0, -100)),
        (sale(refunded_fen=10_050, points=200), "refund", 50, 0,
         PointsMove("standing", 10_000, 0)),
        # A sale voided, reversed or not paid since a refund keeps nothing.
        (sale("voided", 10_000, 0), "refund", 10_000, 100, PointsMove("voided", 0, 0)),
        (sale("not_paid", points=0), "void", 30_050, 300, PointsMove("not_paid", 0, 0)),
        (sale("reversed", points=0), "refund", 10_000, 100, PointsMove("reversed", 0, 0)),
    ],
)  # fmt: skip
def test_a_void_or_refund_undone_gives_back_what_it_took(
    before: CobrandSale, change: Change, amount: int, taken: int, expected: PointsMove
) -> None:
    assert undo_of(before, change, amount, taken) == expected


def test_a_refund_then_its_reversal_leaves_the_sale_as_before() -> None:
    first = sale()
    took = change_of(first, "refund", 10_000, 1)
    refunded = msgspec.structs.replace(
        first, refunded_fen=took.refunded_fen, points=first.points - took.points_back
    )
    back = undo_of(refunded, "refund", 10_000, took.points_back)
    assert (back.refunded_fen, refunded.points - back.points_back) == (0, first.points)
