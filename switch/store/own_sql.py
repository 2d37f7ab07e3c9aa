"""The SQL of settlement's corrections of the switch's own merchants (settlement.md,
"Merchants"; wallet.md and credit.md, "Settlement"), written once for both engines:
finding a top-up's or a repayment by card's posted transfer by its sale's RRN."""

from __future__ import annotations

import msgspec

from switch.store.dialect import Dialect
from switch.store.ledger_sql import TRANSFER_COLUMNS


class OwnSql(msgspec.Struct, frozen=True, kw_only=True):
    posted_by_rrn: str
    """A posted transfer of a kind (``topup``), by its RRN."""


def own_sql(d: Dialect) -> OwnSql:
    sql = d.sql
    return OwnSql(
        posted_by_rrn=sql(
            f"SELECT {TRANSFER_COLUMNS} FROM ledger_transfer "
            "WHERE rrn = ? AND kind = ? AND state = 'posted' ORDER BY seq LIMIT 1"
        ),
    )
