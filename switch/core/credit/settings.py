"""The ``[credit]`` configuration section (credit.md, "Configuration"), decoded into a
frozen Struct with the spec's defaults; ``terms()`` gives the figures the arithmetic
reads."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from switch.core.credit.plan import TERMS, Terms

StatementDay = Annotated[int, Meta(ge=1, le=28)]
GraceDays = Annotated[int, Meta(ge=1, le=20)]
Bps = Annotated[int, Meta(ge=0, le=10_000)]
CobrandBin = Annotated[str, Meta(pattern=r"^[0-9]{6,10}$")]


class CreditSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    statement_day: StatementDay = 1
    """Day of the month of a new account's statements (every month has 1..28)."""
    grace_days: GraceDays = 9
    """Days from a new account's statement date to its due date."""
    fee_bps: dict[str, Bps] = msgspec.field(
        default_factory=lambda: {"3": 50, "6": 50, "12": 60, "24": 65}
    )
    """Monthly fee of each term (3, 6, 12, 24: each exactly once) in basis points; keyed
    by the term as TOML writes keys (strings), so that a config read can be written."""
    min_plan_fen: Annotated[int, Meta(ge=1)] = 10_000
    penalty_bps_per_day: Bps = 5
    freeze_after_days: Annotated[int, Meta(ge=1, le=3650)] = 30
    own_merchant_id: Annotated[str, Meta(max_length=15)] = ""
    """Field 42 of repayments by card and payments to cards (a row of the merchants
    file). credit.md makes it required; empty, repayments by card are refused 57."""
    own_terminal_id: Annotated[str, Meta(min_length=1, max_length=8)] = "CREDIT01"
    cobrand_bins: tuple[CobrandBin, ...] = ()
    convert_days: Annotated[int, Meta(ge=1, le=3650)] = 30
    points_per_yuan: Annotated[int, Meta(ge=0, le=1000)] = 1

    def __post_init__(self) -> None:
        if sorted(self.fee_bps) != sorted(str(term) for term in TERMS):
            raise ValueError(
                f"fee_bps must give each of the terms {list(TERMS)} once, "
                f"not {sorted(self.fee_bps, key=lambda term: (len(term), term))}"
            )

    def terms(self) -> Terms:
        return Terms(
            fee_bps={int(term): bps for term, bps in self.fee_bps.items()},
            min_plan_fen=self.min_plan_fen,
            penalty_bps_per_day=self.penalty_bps_per_day,
            freeze_after_days=self.freeze_after_days,
            convert_days=self.convert_days,
            points_per_yuan=self.points_per_yuan,
        )
