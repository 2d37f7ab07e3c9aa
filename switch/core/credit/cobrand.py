"""The co-brand card (credit.md, "Co-brand card"), as plain Python: which cards are
co-brand, the points a sale earns and keeps, and the checks of a conversion. The store
(``store/cobrand_store.py``) locks, loads and writes; this decides.

A linked card's sale is remembered by its RRN with what its points and conversion
need: its business date, merchant, bank, amount, what was refunded of it, the points
it holds now, whether it stands, and the payment to the card of the conversion that
holds it (pending or done).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Final, Literal

import msgspec

from switch.core.credit.plan import CreditRefused

POINTS_PRINCIPAL: Final = "cobrand"
"""The principal of the points' transfers: keyed by the sale's RRN (``points``), or by
what took them back (``points_back``)."""
POINTS_ISSUED: Final = "points_issued"

SaleState = Literal["standing", "voided", "reversed", "not_paid"]
Change = Literal["void", "reversal", "not_paid", "refund"]


_ENDS: Final[dict[str, SaleState]] = {
    "void": "voided",
    "reversal": "reversed",
    "not_paid": "not_paid",
}


def points_account(customer_id: str) -> str:
    return f"points:{customer_id}"


def is_cobrand(pan: str, bins: Sequence[str]) -> bool:
    """A card number that starts with one of ``[credit] cobrand_bins``."""
    return any(pan.startswith(prefix) for prefix in bins)


def may_be_cobrand(masked_pan: str, bins: Sequence[str]) -> bool:
    """Whether a journal record's masked card number (its first 6 digits in the clear)
    may be a co-brand card's: the link's HMAC decides for bins longer than 6."""
    head = masked_pan[:6]
    return any(head.startswith(prefix[:6]) for prefix in bins)


def points_of(amount_fen: int, points_per_yuan: int) -> int:
    """floor(amount / 100) x ``points_per_yuan``."""
    return amount_fen // 100 * points_per_yuan


class CobrandSale(msgspec.Struct, frozen=True, kw_only=True):
    """A linked card's approved sale, as the store keeps it."""

    rrn: str
    customer_id: str
    business_date: date
    merchant_id: str
    bank: str
    amount_fen: int
    refunded_fen: int = 0
    points: int
    state: SaleState = "standing"
    converted_rrn: str | None = None
    """The payment to the card of its conversion (pending or approved); None: not
    converted, or the conversion was declined, not answered or cancelled."""

    @property
    def standing(self) -> bool:
        return self.state == "standing"


class PointsMove(msgspec.Struct, frozen=True):
    """What a change does to a sale: its new state and refunded amount, and the points
    it takes back (0: none; negative: given back, ``undo_of``)."""

    state: SaleState
    refunded_fen: int
    points_back: int


def change_of(
    sale: CobrandSale, change: Change, amount_fen: int, points_per_yuan: int
) -> PointsMove:
    """A void, reversal or settlement's not paying takes back all of a sale's points; a
    refund of ``amount_fen`` leaves it floor((amount - refunded) / 100) x points."""
    if not sale.standing:
        return PointsMove(sale.state, sale.refunded_fen, 0)
    if change == "refund":
        refunded = min(sale.amount_fen, sale.refunded_fen + amount_fen)
        keeps = points_of(sale.amount_fen - refunded, points_per_yuan)
        return PointsMove("standing", refunded, max(0, sale.points - keeps))
    return PointsMove(_ENDS[change], sale.refunded_fen, sale.points)


def undo_of(sale: CobrandSale, change: Change, amount_fen: int, taken: int) -> PointsMove:
    """A terminal's reversal of a void or refund of the sale (that void or refund undone;
    ``taken``: the points it took back, ``amount_fen`` the refund's): a voided sale
    stands again with what the void took; a refund's amount is refunded no more, and a
    standing sale gets back what the refund took. ``points_back`` is negative: points
    given. Anything else (a sale reversed or not paid since) changes nothing."""
    if change == "void":
        if sale.state != "voided":
            return PointsMove(sale.state, sale.refunded_fen, 0)
        return PointsMove("standing", sale.refunded_fen, -taken)
    if change != "refund":
        return PointsMove(sale.state, sale.refunded_fen, 0)
    refunded = max(0, sale.refunded_fen - amount_fen)
    return PointsMove(sale.state, refunded, -taken if sale.standing else 0)


def conversion_refusal(
    sale: CobrandSale | None, *, today: date, convert_days: int, min_plan_fen: int
) -> CreditRefused | None:
    """credit.md's checks 1-3 of ``cobrand_convert``, in order: a standing sale of the
    customer's linked card (25); at most ``convert_days`` old and never converted (12);
    its amount less refunds at least ``min_plan_fen`` (13)."""
    if sale is None or not sale.standing:
        return CreditRefused("25", "no standing sale of the linked card with that rrn")
    if (today - sale.business_date).days > convert_days or sale.converted_rrn is not None:
        return CreditRefused("12", "the sale is too old or converted already")
    if sale.amount_fen - sale.refunded_fen < min_plan_fen:
        return CreditRefused("13", "the sale's amount is under the smallest plan")
    return None


def convertible_fen(sale: CobrandSale) -> int:
    return sale.amount_fen - sale.refunded_fen


class SaleView(msgspec.Struct, frozen=True):
    """One line of ``cobrand_sales``, its keys in credit.md's order."""

    rrn: str
    date: date
    merchant_id: str
    amount_fen: int
    refunded_fen: int
    points: int
    converted: bool


def sale_view(sale: CobrandSale) -> SaleView:
    return SaleView(
        rrn=sale.rrn, date=sale.business_date, merchant_id=sale.merchant_id,
        amount_fen=sale.amount_fen, refunded_fen=sale.refunded_fen, points=sale.points,
        converted=sale.converted_rrn is not None,
    )  # fmt: skip
