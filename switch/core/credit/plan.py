"""Instalment arithmetic (credit.md, "Instalment arithmetic"): plans, their fees and
`apr_bps`, the cycle's dates, the reduction of unbilled principal, and the co-brand
card's points and conversion checks.

Pure Python on integer fen: nothing here uses floating point. ``round_half_up(a, b)``
is the spec's ``(2a + b) // (2b)``, and `apr_bps` is solved in integers (the spec's
exact rational inequality with its denominators multiplied out).
"""

from __future__ import annotations

from datetime import date, timedelta

import msgspec

TERMS = (3, 6, 12, 24)
"""The instalment counts a plan may have."""

APR_MAX_BPS = 120_000
"""The top of the spec's bisection range for `apr_bps`."""


class CreditRefused(Exception):
    """A request the arithmetic refuses, with the response code credit.md gives it
    (12 not allowed now, 13 amount, 25 not found). A declined request, not a bug."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Terms(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The `[credit]` figures the arithmetic reads, with credit.md's defaults."""

    fee_bps: dict[int, int] = msgspec.field(default_factory=lambda: {3: 50, 6: 50, 12: 60, 24: 65})
    min_plan_fen: int = 10_000
    penalty_bps_per_day: int = 5
    freeze_after_days: int = 30
    convert_days: int = 30
    points_per_yuan: int = 1

    def fee_bps_of(self, instalments: int) -> int:
        if instalments not in TERMS or instalments not in self.fee_bps:
            raise ValueError(f"instalments {instalments} is not one of {TERMS}")
        return self.fee_bps[instalments]


def round_half_up(a: int, b: int) -> int:
    """``a / b`` rounded half up, for ``a >= 0`` and ``b > 0`` (credit.md)."""
    if a < 0 or b <= 0:
        raise ValueError(f"round_half_up({a}, {b}) needs a >= 0 and b > 0")
    return (2 * a + b) // (2 * b)


class Period(msgspec.Struct, frozen=True):
    """One period of a plan: its number k (1-based) and what it bills."""

    period: int
    principal_fen: int
    fee_fen: int

    @property
    def payment_fen(self) -> int:
        return self.principal_fen + self.fee_fen


class Plan(msgspec.Struct, frozen=True):
    """A plan as made: fixed for its life (reductions change the purchase's remaining
    periods, never the plan)."""

    principal_fen: int
    instalments: int
    fee_bps: int
    fee_fen: int
    """The fee of every period."""
    apr_bps: int
    periods: tuple[Period, ...]

    @property
    def total_fee_fen(self) -> int:
        return self.fee_fen * self.instalments


def plan_periods(principal_fen: int, instalments: int, fee_bps: int) -> tuple[Period, ...]:
    """The periods of P in n at ``fee_bps``: every fee round_half_up(P * bps / 10000),
    every principal floor(P / n), period 1 also taking the remainder."""
    if principal_fen <= 0:
        raise ValueError(f"a plan's principal must be positive, not {principal_fen}")
    if instalments <= 0:
        raise ValueError(f"a plan needs at least one period, not {instalments}")
    if principal_fen < instalments:
        # Every period bills some principal (`min_plan_fen` keeps plans far above this).
        raise ValueError(f"{principal_fen} fen cannot be spread over {instalments} periods")
    if fee_bps < 0:
        raise ValueError(f"fee_bps must not be negative, not {fee_bps}")
    fee = round_half_up(principal_fen * fee_bps, 10_000)
    base = principal_fen // instalments
    first = base + principal_fen - instalments * base
    return tuple(Period(k, first if k == 1 else base, fee) for k in range(1, instalments + 1))


def apr_bps(principal_fen: int, payments_fen: tuple[int, ...] | list[int]) -> int:
    """The largest integer a in 0..120000 with
    Σ_k pay_k / (1 + (2a - 1) / 240000)^k ≥ P, by bisection (credit.md).

    With q = 240000 + 2a - 1 the inequality is Σ_k pay_k * 240000^k * q^(n-k) ≥ P * q^n,
    which is the same rational comparison in integers (q > 0)."""
    if principal_fen <= 0:
        raise ValueError(f"a plan's principal must be positive, not {principal_fen}")
    n = len(payments_fen)

    def holds(a: int) -> bool:
        q = 240_000 + 2 * a - 1
        total = sum(pay * 240_000**k * q ** (n - k) for k, pay in enumerate(payments_fen, start=1))
        return bool(total >= principal_fen * q**n)

    if not holds(0):
        # Payments below the principal: no a ≥ 0 satisfies it. Fees are never negative,
        # so a plan cannot get here.
        raise ValueError("the payments do not repay the principal")
    lo, hi = 0, APR_MAX_BPS
    if holds(hi):
        return hi
    while hi - lo > 1:  # holds(lo), not holds(hi)
        mid = (lo + hi) // 2
        if holds(mid):
            lo = mid
        else:
            hi = mid
    return lo


def make_plan(principal_fen: int, instalments: int, fee_bps: int) -> Plan:
    periods = plan_periods(principal_fen, instalments, fee_bps)
    return Plan(
        principal_fen=principal_fen,
        instalments=instalments,
        fee_bps=fee_bps,
        fee_fen=periods[0].fee_fen,
        apr_bps=apr_bps(principal_fen, [p.payment_fen for p in periods]),
        periods=periods,
    )


# -- the cycle's dates ----------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    """The same day of the month ``months`` later; the day must exist in every month
    (statement days are 1..28)."""
    index = day.year * 12 + (day.month - 1) + months
    return date(index // 12, index % 12 + 1, day.day)


def statement_after(day: date, statement_day: int, k: int = 1) -> date:
    """The k-th statement date after business date ``day``: the first is the first
    date S > ``day`` whose day of the month is ``statement_day`` (the statement of S
    covers the dates up to S - 1)."""
    if not 1 <= statement_day <= 28:
        raise ValueError(f"statement_day {statement_day} is not in 1..28")
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    first = date(day.year, day.month, statement_day)
    if first <= day:
        first = add_months(first, 1)
    return add_months(first, k - 1)


def due_date(statement_date: date, grace_days: int) -> date:
    """D = S + grace_days calendar days."""
    return statement_date + timedelta(days=grace_days)


def period_label(statement_date: date) -> str:
    """A statement's ``period``: its date's ``YYYY-MM``."""
    return f"{statement_date.year:04d}-{statement_date.month:02d}"


# -- reducing unbilled principal ------------------------------------------------------


class Reduction(msgspec.Struct, frozen=True):
    """What a reduction of unbilled principal did: the periods left, how much it took
    (at most what was asked), and the fees of the periods it removed (waived)."""

    periods: tuple[Period, ...]
    taken_fen: int
    waived_fee_fen: int
    removed: tuple[Period, ...]
    """The removed periods as they stood before the reduction (to restore them)."""


def reduce_unbilled(periods: tuple[Period, ...], amount_fen: int) -> Reduction:
    """Takes up to ``amount_fen`` off unbilled periods from the last backwards: a period
    whose principal reaches 0 is removed with its fee, one reduced in part keeps its
    fee (credit.md, "Reducing unbilled principal")."""
    if amount_fen < 0:
        raise ValueError(f"a reduction must not be negative, not {amount_fen}")
    left = amount_fen
    kept = list(periods)
    removed: list[Period] = []
    waived = 0
    while left > 0 and kept:
        last = kept[-1]
        if last.principal_fen <= left:
            left -= last.principal_fen
            waived += last.fee_fen
            removed.append(kept.pop())
        else:
            kept[-1] = Period(last.period, last.principal_fen - left, last.fee_fen)
            left = 0
    return Reduction(
        periods=tuple(kept),
        taken_fen=amount_fen - left,
        waived_fee_fen=waived,
        removed=tuple(reversed(removed)),
    )


# -- the co-brand card ----------------------------------------------------------------


def points(amount_fen: int, refunded_fen: int, points_per_yuan: int) -> int:
    """The points a co-brand sale keeps: floor((amount - refunded) / 100) * rate."""
    if not 0 <= refunded_fen <= amount_fen:
        raise ValueError(f"refunded {refunded_fen} is not within the sale's {amount_fen}")
    return (amount_fen - refunded_fen) // 100 * points_per_yuan


def cobrand_convert_amount(
    *,
    amount_fen: int,
    refunded_fen: int,
    sale_date: date,
    today: date,
    converted: bool,
    terms: Terms,
) -> int:
    """Checks 2 and 3 of `cobrand_convert` (credit.md, "Co-brand card"): at most
    `convert_days` old and never converted (else 12); the sale less its refunds at least
    `min_plan_fen` (else 13). The amount to convert."""
    if converted or (today - sale_date).days > terms.convert_days:
        raise CreditRefused("12", "the sale is too old or converted already")
    amount = amount_fen - refunded_fen
    if amount < terms.min_plan_fen:
        raise CreditRefused("13", f"{amount} fen is under the smallest plan")
    return amount
