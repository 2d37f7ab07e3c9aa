"""Settlement's vocabulary and its output files (settlement.md): the categories of a
difference and what is done about each, the rows of the payout and reconciliation
files, and those files' exact bytes.

The matching itself is set-based SQL in the settlement store (``switch.store``); this
module says what its answers mean and how they are written. Pure Python, no I/O.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Final, Literal

import msgspec

Category = Literal[
    "matched", "timing", "switch_only", "bank_only", "amount_mismatch",
    "stip_pending", "stip_loss", "ledger_mismatch", "terminal_only", "terminal_missing",
]  # fmt: skip
Action = Literal["paid", "held", "reversal_queued", "not_paid"]

HOLD_DATES: Final = 2
"""A sale the bank's files do not have is looked for in this many later dates' files,
then reversed (settlement.md, ``switch_only``)."""

PAYOUT_COLUMNS: Final = (
    "business_date", "value_date", "merchant_id", "account", "sales_count", "sales_fen",
    "refunds_count", "refunds_fen", "fees_fen", "held_fen", "carried_in_fen", "net_fen",
    "payout_fen", "carried_out_fen",
)  # fmt: skip
RECON_COLUMNS: Final = (
    "business_date", "category", "bank", "rrn", "terminal_id", "merchant_id", "masked_pan",
    "switch_fen", "bank_fen", "action",
)  # fmt: skip


class PayoutLine(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    business_date: str
    merchant_id: str
    account: str
    sales_count: int
    sales_fen: int
    refunds_count: int
    refunds_fen: int
    fees_fen: int
    held_fen: int
    carried_in_fen: int
    net_fen: int
    payout_fen: int
    carried_out_fen: int


class ReconLine(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    business_date: str
    category: Category
    bank: str
    rrn: str
    terminal_id: str
    merchant_id: str
    masked_pan: str
    switch_fen: int | None
    """What the switch has standing (None: nothing)."""
    bank_fen: int | None
    """What the bank's files have standing (None: nothing)."""
    action: Action


def value_date(business_date: str) -> str:
    """T+1: the date a business date's payouts are paid."""
    return (date.fromisoformat(business_date) + timedelta(days=1)).isoformat()


def file_stamp(business_date: str) -> str:
    """YYYYMMDD, as the file names carry a date."""
    return business_date.replace("-", "")


def payout_file_name(business_date: str) -> str:
    return f"payouts-{file_stamp(business_date)}.csv"


def recon_file_name(business_date: str) -> str:
    return f"recon-{file_stamp(business_date)}.csv"


def payout_file(lines: list[PayoutLine]) -> bytes:
    """The payout file: a header, then one row per merchant, by merchant id."""
    rows = [
        (
            line.business_date,
            value_date(line.business_date),
            line.merchant_id,
            line.account,
            line.sales_count,
            line.sales_fen,
            line.refunds_count,
            line.refunds_fen,
            line.fees_fen,
            line.held_fen,
            line.carried_in_fen,
            line.net_fen,
            line.payout_fen,
            line.carried_out_fen,
        )
        for line in sorted(lines, key=lambda line: line.merchant_id)
    ]
    return _csv(PAYOUT_COLUMNS, rows)


def recon_file(lines: list[ReconLine]) -> bytes:
    """The reconciliation file: a header, then every transaction not matched, by RRN
    (then category, for a batch upload's line beside the bank's on one RRN)."""
    rows = [
        (
            line.business_date,
            line.category,
            line.bank,
            line.rrn,
            line.terminal_id,
            line.merchant_id,
            line.masked_pan,
            _amount(line.switch_fen),
            _amount(line.bank_fen),
            line.action,
        )
        for line in sorted(lines, key=lambda line: (line.rrn, line.category, line.terminal_id))
    ]
    return _csv(RECON_COLUMNS, rows)


def _amount(value: int | None) -> str:
    """An amount a side does not have is empty, not 0 (0 fen may be a real amount)."""
    return "" if value is None else str(value)


def _csv(header: tuple[str, ...], rows: Sequence[tuple[object, ...]]) -> bytes:
    # LF line ends, as the clearing files: the same tools read both.
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def net_and_payout(
    sales_fen: int, refunds_fen: int, fees_fen: int, carried_in_fen: int
) -> tuple[int, int, int]:
    """(net, payout, carried out) of one merchant's date (settlement.md): a positive
    net is paid, anything else is carried to the next date."""
    net = sales_fen - refunds_fen - fees_fen + carried_in_fen
    return (net, net, 0) if net > 0 else (net, 0, net)


class ClearingFileStatus(msgspec.Struct, frozen=True, kw_only=True):
    bank: str
    business_date: str
    name: str
    status: Literal["accepted", "rejected"]
    reason: str | None
    records: int
    read_at: float


class CategoryCount(msgspec.Struct, frozen=True, kw_only=True):
    category: str
    action: str
    count: int
    switch_fen: int
    bank_fen: int


class SettlementStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What ``switch settle status`` shows of one business date."""

    business_date: str
    closed_at: float | None
    forced: bool
    settled_at: float | None
    files_written_at: float | None
    """When its payout and reconciliation files were last written (after settling)."""
    cutovers: dict[str, str]
    """Bank -> the cutover's response code."""
    files: list[ClearingFileStatus]
    missing: list[str]
    """Banks whose file for the date has not been accepted."""
    categories: list[CategoryCount]
    merchants: int
    sales_fen: int
    refunds_fen: int
    fees_fen: int
    payout_fen: int
    carried_out_fen: int
    held_fen: int
    reversals_queued: int


class SettlementWatch(msgspec.Struct, frozen=True, kw_only=True):
    """What an operator alerts on (``/metrics``): the dates closed and not settled, the
    oldest of them past its ``settle_deadline``, and the latest closed date's status."""

    unsettled_dates: int
    overdue_dates: int
    """Closed, not settled, and past their deadline (settlement.md: they settle at it)."""
    overdue_s: float
    """How far the oldest overdue date is past its deadline, in seconds (0: none)."""
    latest: SettlementStatus | None
    """The latest closed date's (None: no date has closed yet)."""


class ReversalOrder(msgspec.Struct, frozen=True, kw_only=True):
    """A reversal the settlement decided on, to be queued in the journal's
    store-and-forward. ``known`` is False for a bank's record the switch never sent:
    then the record's own fields are what the reversal repeats."""

    rrn: str
    bank: str
    business_date: str
    reason: str
    known: bool
    mti: str = ""
    processing_code: str = ""
    stan: str = ""
    transmission: str = ""
    amount: int = 0
    currency: str = ""
    terminal_id: str = ""
    merchant_id: str = ""
    masked_pan: str = ""


class LedgerBalance(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    debit_fen: int
    credit_fen: int

    @property
    def balance_fen(self) -> int:
        """Credit minus debit: what the account holds for others (a merchant's payable,
        fees earned); negative for what others owe (a bank's receivable)."""
        return self.credit_fen - self.debit_fen


class LedgerOrder(msgspec.Struct, frozen=True, kw_only=True):
    """A transfer a settlement decided on the on-us ledger (wallet.md: an on-us
    merchant's fees and payout, a recon correction), handed to the ledger store once
    the settlement has committed. Its key is wallet.md's for settlement: the date as
    principal, the kind (``request_id``) and the merchant or RRN (``leg``), so handing
    it over again changes nothing."""

    business_date: str
    request_id: str
    leg: str
    debit_account: str
    credit_account: str
    amount: int
    kind: str
    rrn: str
    merchant_id: str


RECON_LOSS_ID: Final = "recon_loss"
"""The id of the part of a correction a wallet could not give (wallet.md: a wallet is
debited at most to zero, ``recon_loss`` the rest)."""


def split_correction(order: LedgerOrder, available: int | None) -> list[LedgerOrder]:
    """The transfers that carry a correction out: all of it, or, when its debit account
    is a wallet (``available``: what the wallet can give now; None for an account with
    no cap), as much as the wallet has and the rest from ``recon_loss``."""
    if available is None or available >= order.amount:
        return [order]
    taken = max(0, available)
    rest = msgspec.structs.replace(
        order, request_id=RECON_LOSS_ID, debit_account="recon_loss", amount=order.amount - taken
    )
    if taken == 0:
        return [rest]
    return [msgspec.structs.replace(order, amount=taken), rest]
