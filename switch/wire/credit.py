"""credit.md's online requests (principal ``app``) and their results, on the app desk's
bases (``switch.wire.app``): frozen, tagged msgspec Structs whose constraints are
checked as the body is decoded (``error`` 30 naming the field).

The result maps (``account``, ``plan``, ``statement``) are plain maps here: their
figures are the credit core's (``switch.core.credit``), made into maps in its keys'
order by the desk's handlers (``switch/net/credit_desk.py``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from switch.wire.app import AppRequest, DeskResult, OnusAmount
from switch.wire.online import Card, Rrn

LimitFen = Annotated[int, Meta(ge=0, le=100_000_000)]
StatementDay = Annotated[int, Meta(ge=1, le=28)]
GraceDays = Annotated[int, Meta(ge=1, le=20)]
Reason = Annotated[str, Meta(min_length=1, max_length=64)]
Instalments = Literal[3, 6, 12, 24]
Period = Annotated[str, Meta(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])\Z")]
"""A statement's ``period``: ``YYYY-MM``."""
PurchaseId = Rrn
"""A purchase's id: the ``rrn`` of its result (12 digits)."""


class CreditOpen(AppRequest, frozen=True, kw_only=True, tag="credit_open"):
    limit_fen: LimitFen
    statement_day: StatementDay | None = None
    grace_days: GraceDays | None = None


class CreditLimit(AppRequest, frozen=True, kw_only=True, tag="credit_limit"):
    limit_fen: LimitFen


class CreditFreeze(AppRequest, frozen=True, kw_only=True, tag="credit_freeze"):
    reason: Reason | None = None


class CreditUnfreeze(AppRequest, frozen=True, kw_only=True, tag="credit_unfreeze"):
    reason: Reason | None = None


class CreditConvert(AppRequest, frozen=True, kw_only=True, tag="credit_convert"):
    purchase_id: PurchaseId
    instalments: Instalments


class CreditRepay(AppRequest, frozen=True, kw_only=True, tag="credit_repay"):
    amount: OnusAmount
    source: Literal["wallet", "card"] = msgspec.field(name="from")
    card: Card | None = None
    """online.md's card map, present exactly when ``from`` is ``card``."""
    purchase_id: PurchaseId | None = None


class CreditStatus(AppRequest, frozen=True, kw_only=True, tag="credit_status"):
    pass


class CreditStatement(AppRequest, frozen=True, kw_only=True, tag="credit_statement"):
    period: Period


class CreditPlans(AppRequest, frozen=True, kw_only=True, tag="credit_plans"):
    purchase_id: PurchaseId | None = None


CreditRequest = (
    CreditOpen | CreditLimit | CreditFreeze | CreditUnfreeze | CreditConvert | CreditRepay
    | CreditStatus | CreditStatement | CreditPlans
)  # fmt: skip

# -- results -----------------------------------------------------------------------------

Map = dict[str, Any]


class AccountResult(DeskResult, frozen=True, kw_only=True, tag="result"):
    """``credit_open``, ``credit_limit``, ``credit_freeze``, ``credit_unfreeze``,
    ``credit_status``."""

    account: Map | None = None


class ConvertResult(DeskResult, frozen=True, kw_only=True, tag="result"):
    settlement_date: str | None = None
    plan: Map | None = None


class Allocated(msgspec.Struct, frozen=True, kw_only=True):
    penalty_fen: int
    fee_fen: int
    principal_fen: int
    prepaid_fen: int


class RepayResult(DeskResult, frozen=True, kw_only=True, tag="result"):
    rrn: str | None = None
    settlement_date: str | None = None
    allocated: Allocated | None = None
    waived_fee_fen: int | None = None
    account: Map | None = None


class StatementResult(DeskResult, frozen=True, kw_only=True, tag="result"):
    statement: Map | None = None


class PlansResult(DeskResult, frozen=True, kw_only=True, tag="result"):
    plans: list[Map] | None = None
