"""The day's statements as a file an operator reads (credit.md's statements; the file
is this switch's own): ``credit-statements-<YYYYMMDD>.csv`` for statement date S, made
at the close of S - 1, beside the payout files. UTF-8 CSV (the ``csv`` module), LF line
ends, a header, one row per statement line ordered by customer then line; a statement
without lines is one row with the line's columns empty. Written again, byte-identical.

Columns: ``statement_date, period, due_date, customer_id, previous_balance_fen,
new_balance_fen, line, kind, date, ref, amount_fen, detail``: ``line`` counts from 1;
``detail`` is an instalment's ``k/n principal+fee merchant``, a purchase's merchant, a
penalty's days, a repayment's prepaid part."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import date

from switch.core.credit.book import (
    InstalmentLine,
    Line,
    PenaltyLine,
    PurchaseLine,
    RepaymentLine,
    Statement,
)

HEADER = (
    "statement_date", "period", "due_date", "customer_id", "previous_balance_fen",
    "new_balance_fen", "line", "kind", "date", "ref", "amount_fen", "detail",
)  # fmt: skip


def statement_file_name(statement_date: date) -> str:
    return f"credit-statements-{statement_date:%Y%m%d}.csv"


def _detail(line: Line) -> str:
    if isinstance(line, InstalmentLine):
        return f"{line.period} {line.principal_fen}+{line.fee_fen} {line.merchant_id}"
    if isinstance(line, PurchaseLine):
        return line.merchant_id
    if isinstance(line, PenaltyLine):
        return f"{line.days} days"
    if isinstance(line, RepaymentLine):
        return f"prepaid {line.prepaid_fen}" if line.prepaid_fen else ""
    return ""


def statement_file(statements: Iterable[tuple[str, Statement]]) -> bytes:
    """The file's bytes, of (customer_id, statement) pairs in customer order."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for customer_id, s in statements:
        head = (
            s.statement_date.isoformat(), s.period, s.due_date.isoformat(), customer_id,
            s.previous_balance_fen, s.new_balance_fen,
        )  # fmt: skip
        if not s.lines:
            writer.writerow((*head, "", "", "", "", "", ""))
        for number, line in enumerate(s.lines, start=1):
            kind = line.__struct_config__.tag
            writer.writerow(
                (*head, number, kind, line.date.isoformat(), line.ref, line.amount_fen,
                 _detail(line))
            )  # fmt: skip
    return out.getvalue().encode()
