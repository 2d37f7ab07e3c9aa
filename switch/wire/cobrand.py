"""The co-brand card's MessagePack messages on the app desk (credit.md, "Online
requests"): ``cobrand_link``, ``cobrand_sales``, ``cobrand_convert`` and
``points_balance``, on ``switch.wire.app``'s bases, and their results."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from switch.core.credit.book import PlanView
from switch.wire.app import AppRequest, DeskResult

CardNumber = Annotated[str, Meta(pattern=r"^[0-9]{12,19}\Z")]
Rrn = Annotated[str, Meta(pattern=r"^[0-9A-Za-z]{12}\Z")]
Instalments = Literal[3, 6, 12, 24]


class CobrandLink(AppRequest, frozen=True, kw_only=True, tag="cobrand_link"):
    pan: CardNumber


class CobrandSales(AppRequest, frozen=True, kw_only=True, tag="cobrand_sales"):
    pass


class CobrandConvert(AppRequest, frozen=True, kw_only=True, tag="cobrand_convert"):
    rrn: Rrn
    instalments: Instalments


class PointsBalance(AppRequest, frozen=True, kw_only=True, tag="points_balance"):
    pass


class CobrandLinkResult(DeskResult, frozen=True, kw_only=True, tag="result"):
    masked_pan: str | None = None


class SaleOut(msgspec.Struct, frozen=True, kw_only=True):
    """One of ``cobrand_sales``'s ``sales``, its keys in credit.md's order."""

    rrn: str
    date: str
    merchant_id: str
    amount_fen: int
    refunded_fen: int
    points: int
    converted: bool


class CobrandSalesResult(DeskResult, frozen=True, kw_only=True, tag="result"):
    sales: list[SaleOut] | None = None


class CobrandConvertResult(DeskResult, frozen=True, kw_only=True, tag="result"):
    settlement_date: str | None = None
    plan: PlanView | None = None


class PointsBalanceResult(DeskResult, frozen=True, kw_only=True, tag="result"):
    points: int | None = None
    masked_pan: str | msgspec.UnsetType | None = msgspec.UNSET
    """nil when no card is linked (present, unlike the absent fields of a refusal)."""
