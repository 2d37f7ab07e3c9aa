"""The money of one credit account (credit.md): its purchases and plans, what is
billed and unpaid, its statements, and the operations that move them (purchase,
statement, repayment, refund, void, conversion, the close's penalty).

Sans-IO: a ``Book`` is a frozen value and every operation returns a new one with what
it did; dates are business dates given by the caller (the business calendar is
elsewhere). Integer fen only. Limits, freezes, the ledger and the wire are the
caller's: this module gives the figures they need (outstanding principal, payoff, due,
overdue, the receivable).

Everything billed is a ``Charge``: a penalty (charged at a close, stated on the next
statement), or a fee or principal of a statement line (an instalment period, an
unplanned purchase). Charges keep their order of billing, which is the statement's line
order, so "oldest statement first, in line order" is a sort on (statement date, index).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Literal

import msgspec
from msgspec.structs import replace

from switch.core.credit.plan import (
    CreditRefused,
    Period,
    Plan,
    Terms,
    due_date,
    make_plan,
    period_label,
    reduce_unbilled,
    round_half_up,
    statement_after,
)

# -- statement lines ------------------------------------------------------------------


class _Line(msgspec.Struct, frozen=True, tag_field="kind"):
    date: dt.date
    ref: str
    """A ``purchase_id`` or a repayment's ``rrn``; empty for a penalty."""
    amount_fen: int


class RepaymentLine(_Line, frozen=True, tag="repayment"):
    """- the part paid to penalties and billed amounts; ``prepaid_fen`` the part paid
    ahead."""

    prepaid_fen: int


class RefundLine(_Line, frozen=True, tag="refund"):
    """- the part taken off billed principal, and billed fees reversed."""


class PenaltyLine(_Line, frozen=True, tag="penalty"):
    """+ the cycle's penalties, dated the last close charged."""

    days: int


class InstalmentLine(_Line, frozen=True, tag="instalment"):
    period: str
    """``k/n``."""
    principal_fen: int
    fee_fen: int
    merchant_id: str


class PurchaseLine(_Line, frozen=True, tag="purchase"):
    merchant_id: str


class ConversionLine(_Line, frozen=True, tag="conversion"):
    """- the principal a conversion took off (amends an issued statement)."""


Line = RepaymentLine | RefundLine | PenaltyLine | InstalmentLine | PurchaseLine | ConversionLine


class Statement(msgspec.Struct, frozen=True):
    period: str
    statement_date: date
    due_date: date
    previous_balance_fen: int
    new_balance_fen: int
    """previous_balance_fen + Σ amount_fen of the lines: everything billed and unpaid at
    the statement date (as amended by conversions)."""
    lines: tuple[Line, ...]


# -- the book -------------------------------------------------------------------------


ChargeKind = Literal["penalty", "fee", "principal"]


class Charge(msgspec.Struct, frozen=True):
    kind: ChargeKind
    ref: str
    """The purchase's id; empty for a penalty."""
    date: dt.date
    """A penalty's close; a fee's or principal's line date."""
    statement_date: dt.date | None
    """The statement it is on; None for a penalty not yet stated."""
    due_date: dt.date | None
    """None for a penalty (owed at once, paid first)."""
    amount_fen: int
    unpaid_fen: int


class Purchase(msgspec.Struct, frozen=True):
    purchase_id: str
    business_date: date
    merchant_id: str
    principal_fen: int
    plan: Plan | None
    unbilled: tuple[Period, ...]
    """Periods not yet billed, as reduced; an unplanned purchase has one, fee 0."""
    billed: tuple[Period, ...] = ()
    """Periods billed, as billed."""
    refunded_fen: int = 0
    waived_fee_fen: int = 0
    standing: bool = True
    """False once voided or reversed."""

    @property
    def unbilled_principal_fen(self) -> int:
        return sum(p.principal_fen for p in self.unbilled)


class Back(msgspec.Struct, frozen=True):
    """A void, reversal or refund of a purchase whose compensating transfer is pending:
    the book takes it when the transfer is posted (its answer journaled), and forgets
    it when the transfer is voided. Keyed as the transfer is."""

    principal: str
    id: str
    leg: str
    purchase_id: str
    whole: bool
    """A void or reversal (the purchase stops standing), else a refund of the amount."""


class CardRepay(msgspec.Struct, frozen=True):
    """A repayment by card whose sale is at the bank: its pending transfer
    ``bank_clearing:<bank>`` → ``credit_receivable:<c>`` is reserved, and the book
    allocates it when the bank's approval posts it. Keyed as the transfer is."""

    principal: str
    id: str
    leg: str
    purchase_id: str | None


class Book(msgspec.Struct, frozen=True):
    opened: date
    statement_day: int
    grace_days: int
    purchases: tuple[Purchase, ...] = ()
    """In purchase order: business date, then ``purchase_id``."""
    charges: tuple[Charge, ...] = ()
    statements: tuple[Statement, ...] = ()
    cycle: tuple[RepaymentLine | RefundLine, ...] = ()
    """Repayment and refund lines since the last statement, for the next one."""
    last_closed: date | None = None
    backs: tuple[Back, ...] = ()
    """Voids, reversals and refunds reserved, not yet posted."""
    repays: tuple[CardRepay, ...] = ()
    """Repayments by card at the bank, not yet approved."""


def open_book(opened: date, *, statement_day: int, grace_days: int) -> Book:
    if not 1 <= statement_day <= 28:
        raise ValueError(f"statement_day {statement_day} is not in 1..28")
    if not 1 <= grace_days <= 20:
        raise ValueError(f"grace_days {grace_days} is not in 1..20")
    return Book(opened=opened, statement_day=statement_day, grace_days=grace_days)


# -- figures --------------------------------------------------------------------------


def outstanding_principal_fen(book: Book) -> int:
    """The unpaid principal of every standing purchase, billed or not."""
    return sum(p.unbilled_principal_fen for p in book.purchases) + sum(
        c.unpaid_fen for c in book.charges if c.kind == "principal"
    )


def available_fen(book: Book, limit_fen: int) -> int:
    return max(0, limit_fen - outstanding_principal_fen(book))


def due_fen(book: Book) -> int:
    """Everything billed and unpaid, penalties included."""
    return sum(c.unpaid_fen for c in book.charges)


def payoff_fen(book: Book) -> int:
    """Unpaid penalties + unpaid billed fees + outstanding principal: what
    ``credit_receivable`` holds for the account."""
    return due_fen(book) + sum(p.unbilled_principal_fen for p in book.purchases)


def _overdue(book: Book, today: date) -> list[Charge]:
    return [
        c
        for c in book.charges
        if c.due_date is not None and c.due_date < today and c.unpaid_fen > 0
    ]


def overdue_fen(book: Book, today: date) -> int:
    """The unpaid billed fees and principal whose due date is before ``today``."""
    return sum(c.unpaid_fen for c in _overdue(book, today))


def overdue_days(book: Book, today: date) -> int:
    """Days from the oldest overdue due date to ``today``; 0 when nothing is overdue."""
    dues = [c.due_date for c in _overdue(book, today) if c.due_date is not None]
    return (today - min(dues)).days if dues else 0


def statement_unpaid_fen(book: Book, statement_date: date) -> int:
    """What is unpaid of everything billed on the statement of that date."""
    return sum(c.unpaid_fen for c in book.charges if c.statement_date == statement_date)


def next_statement_date(book: Book) -> date:
    if book.statements:
        return statement_after(book.statements[-1].statement_date, book.statement_day)
    return statement_after(book.opened, book.statement_day)


def next_due_date(book: Book, today: date) -> date | None:
    """The latest statement's due date while it has not passed, else None."""
    if book.statements and today <= book.statements[-1].due_date:
        return book.statements[-1].due_date
    return None


def find_statement(book: Book, statement_date: date) -> Statement | None:
    for statement in book.statements:
        if statement.statement_date == statement_date:
            return statement
    return None


def purchase_of(book: Book, purchase_id: str) -> Purchase:
    for purchase in book.purchases:
        if purchase.purchase_id == purchase_id:
            return purchase
    raise CreditRefused("25", f"no purchase {purchase_id}")


class ScheduleRow(msgspec.Struct, frozen=True):
    period: int
    statement_date: date
    due_date: date
    principal_fen: int
    fee_fen: int


class PlanView(msgspec.Struct, frozen=True):
    """credit.md's ``plan`` result map, its keys in the spec's order."""

    purchase_id: str
    principal_fen: int
    instalments: int
    fee_bps: int
    fee_fen: int
    total_fee_fen: int
    waived_fee_fen: int
    apr_bps: int
    periods_billed: int
    unbilled_principal_fen: int
    schedule: tuple[ScheduleRow, ...]


def plan_view(book: Book, purchase_id: str) -> PlanView:
    """The plan of a purchase with the periods it still has (billed, then unbilled)."""
    purchase = purchase_of(book, purchase_id)
    plan = purchase.plan
    if plan is None:
        raise CreditRefused("25", f"purchase {purchase_id} has no plan")
    schedule = []
    for row in (*purchase.billed, *purchase.unbilled):
        statement_date = statement_after(purchase.business_date, book.statement_day, row.period)
        schedule.append(
            ScheduleRow(
                period=row.period,
                statement_date=statement_date,
                due_date=due_date(statement_date, book.grace_days),
                principal_fen=row.principal_fen,
                fee_fen=row.fee_fen,
            )
        )
    return PlanView(
        purchase_id=purchase_id,
        principal_fen=plan.principal_fen,
        instalments=plan.instalments,
        fee_bps=plan.fee_bps,
        fee_fen=plan.fee_fen,
        total_fee_fen=plan.total_fee_fen,
        waived_fee_fen=purchase.waived_fee_fen,
        apr_bps=plan.apr_bps,
        periods_billed=len(purchase.billed),
        unbilled_principal_fen=purchase.unbilled_principal_fen,
        schedule=tuple(schedule),
    )


# -- operations -----------------------------------------------------------------------


def _check_open_day(book: Book, day: date) -> None:
    """Operations belong to a business date not yet closed, from the opening date."""
    if day < book.opened:
        raise ValueError(f"{day} is before the account's opening date {book.opened}")
    if book.last_closed is not None and day <= book.last_closed:
        raise ValueError(f"business date {day} is closed already")


def _with_purchase(book: Book, purchase: Purchase) -> Book:
    purchases = [p for p in book.purchases if p.purchase_id != purchase.purchase_id]
    purchases.append(purchase)
    purchases.sort(key=lambda p: (p.business_date, p.purchase_id))
    return replace(book, purchases=tuple(purchases))


def purchase(
    book: Book,
    *,
    purchase_id: str,
    business_date: date,
    merchant_id: str,
    amount_fen: int,
    plan: Plan | None = None,
) -> Book:
    """An approved credit purchase. Its checks (limit, `min_plan_fen`, frozen) are the
    caller's, which has the limit and the account's state."""
    _check_open_day(book, business_date)
    if amount_fen <= 0:
        raise ValueError(f"a purchase's amount must be positive, not {amount_fen}")
    if plan is not None and plan.principal_fen != amount_fen:
        raise ValueError("the plan is not of the purchase's amount")
    if any(p.purchase_id == purchase_id for p in book.purchases):
        raise ValueError(f"purchase {purchase_id} exists already")
    periods = plan.periods if plan is not None else (Period(1, amount_fen, 0),)
    return _with_purchase(
        book,
        Purchase(
            purchase_id=purchase_id,
            business_date=business_date,
            merchant_id=merchant_id,
            principal_fen=amount_fen,
            plan=plan,
            unbilled=periods,
        ),
    )


def _statement_of_period(book: Book, purchase: Purchase, k: int) -> date:
    return statement_after(purchase.business_date, book.statement_day, k)


def _instalment_line(purchase: Purchase, period: Period, on: date) -> InstalmentLine:
    assert purchase.plan is not None
    return InstalmentLine(
        date=on,
        ref=purchase.purchase_id,
        amount_fen=period.payment_fen,
        period=f"{period.period}/{purchase.plan.instalments}",
        principal_fen=period.principal_fen,
        fee_fen=period.fee_fen,
        merchant_id=purchase.merchant_id,
    )


def _period_charges(
    purchase: Purchase, period: Period, on: date, statement_date: date, due: date
) -> list[Charge]:
    charges = []
    if period.fee_fen:
        charges.append(
            Charge(
                "fee", purchase.purchase_id, on, statement_date, due, period.fee_fen, period.fee_fen
            )
        )
    charges.append(
        Charge(
            "principal",
            purchase.purchase_id,
            on,
            statement_date,
            due,
            period.principal_fen,
            period.principal_fen,
        )
    )
    return charges


def make_statement(book: Book, statement_date: date) -> tuple[Book, Statement]:
    """The statement of ``statement_date``, made at the close of the day before (after
    that close's penalty): the cycle's repayments and refunds, its penalties, then the
    periods and unplanned purchases it bills, in purchase order."""
    expected = next_statement_date(book)
    if statement_date != expected:
        raise ValueError(f"the next statement is of {expected}, not {statement_date}")
    due = due_date(statement_date, book.grace_days)
    charges = list(book.charges)

    penalties = [
        i for i, c in enumerate(charges) if c.kind == "penalty" and c.statement_date is None
    ]
    lines: list[Line] = [line for line in book.cycle if isinstance(line, RepaymentLine)]
    lines += [line for line in book.cycle if isinstance(line, RefundLine)]
    if penalties:
        for i in penalties:
            charges[i] = replace(charges[i], statement_date=statement_date)
        lines.append(
            PenaltyLine(
                date=charges[penalties[-1]].date,
                ref="",
                amount_fen=sum(charges[i].amount_fen for i in penalties),
                days=len(penalties),
            )
        )

    # Charges are kept in line order (instalments, then unplanned purchases), the order
    # a repayment pays one statement's amounts in.
    instalment_lines: list[Line] = []
    purchase_lines: list[Line] = []
    instalment_charges: list[Charge] = []
    purchase_charges: list[Charge] = []
    purchases = []
    for item in book.purchases:
        unbilled = list(item.unbilled)
        billed = list(item.billed)
        while (
            item.standing
            and unbilled
            and _statement_of_period(book, item, unbilled[0].period) <= statement_date
        ):
            period = unbilled.pop(0)
            billed.append(period)
            billing = _period_charges(item, period, item.business_date, statement_date, due)
            if item.plan is not None:
                instalment_charges += billing
                instalment_lines.append(_instalment_line(item, period, item.business_date))
            else:
                purchase_charges += billing
                purchase_lines.append(
                    PurchaseLine(
                        date=item.business_date,
                        ref=item.purchase_id,
                        amount_fen=period.principal_fen,
                        merchant_id=item.merchant_id,
                    )
                )
        purchases.append(replace(item, unbilled=tuple(unbilled), billed=tuple(billed)))
    lines += instalment_lines + purchase_lines
    charges += instalment_charges + purchase_charges

    previous = book.statements[-1].new_balance_fen if book.statements else 0
    statement = Statement(
        period=period_label(statement_date),
        statement_date=statement_date,
        due_date=due,
        previous_balance_fen=previous,
        new_balance_fen=previous + sum(line.amount_fen for line in lines),
        lines=tuple(lines),
    )
    book = replace(
        book,
        purchases=tuple(purchases),
        charges=tuple(charges),
        statements=(*book.statements, statement),
        cycle=(),
    )
    return book, statement


class Close(msgspec.Struct, frozen=True):
    """What the close of a business date did to the account."""

    business_date: date
    overdue_fen: int
    penalty_fen: int
    overdue_days: int
    freeze: bool
    """The oldest overdue due date is `freeze_after_days` or more before the date."""
    statement: Statement | None


def close_day(book: Book, business_date: date, terms: Terms) -> tuple[Book, Close]:
    """The close of ``business_date`` (credit.md, "Overdue"): the day's penalty on what
    is overdue, whether the account freezes, and the statement when the next day is a
    statement date. Closes come one a day from the opening date."""
    expected = book.opened if book.last_closed is None else book.last_closed + timedelta(1)
    if business_date != expected:
        raise ValueError(f"the next close is of {expected}, not {business_date}")
    overdue = overdue_fen(book, business_date)
    penalty = round_half_up(overdue * terms.penalty_bps_per_day, 10_000)
    if penalty:
        book = replace(
            book,
            charges=(
                *book.charges,
                Charge("penalty", "", business_date, None, None, penalty, penalty),
            ),
        )
    days = overdue_days(book, business_date)
    book = replace(book, last_closed=business_date)
    statement = None
    if business_date + timedelta(1) == next_statement_date(book):
        book, statement = make_statement(book, business_date + timedelta(1))
    return book, Close(
        business_date=business_date,
        overdue_fen=overdue,
        penalty_fen=penalty,
        overdue_days=days,
        freeze=overdue > 0 and days >= terms.freeze_after_days,
        statement=statement,
    )


def close_through(book: Book, last: date, terms: Terms) -> tuple[Book, list[Close]]:
    """Every close from the next one to ``last``'s."""
    closes = []
    day = book.opened if book.last_closed is None else book.last_closed + timedelta(1)
    while day <= last:
        book, close = close_day(book, day, terms)
        closes.append(close)
        day += timedelta(1)
    return book, closes


class Prepaid(msgspec.Struct, frozen=True):
    purchase_id: str
    principal_fen: int
    waived_fee_fen: int
    removed: tuple[Period, ...]


class Allocation(msgspec.Struct, frozen=True):
    """How a repayment was allocated (credit.md, "Repayment")."""

    penalty_fen: int
    fee_fen: int
    principal_fen: int
    prepaid_fen: int
    waived_fee_fen: int
    paid: tuple[tuple[int, int], ...]
    """(charge index, fen) in the order paid."""
    prepaid: tuple[Prepaid, ...]

    @property
    def billed_fen(self) -> int:
        """The part paid to penalties and billed amounts (the statement line's)."""
        return self.penalty_fen + self.fee_fen + self.principal_fen


def _charge_order(charges: Iterable[tuple[int, Charge]]) -> list[tuple[int, Charge]]:
    return sorted(charges, key=lambda ic: (ic[1].statement_date or date.max, ic[0]))


def repay(
    book: Book,
    *,
    on: date,
    ref: str,
    amount_fen: int,
    purchase_id: str | None = None,
) -> tuple[Book, Allocation]:
    """A repayment of ``amount_fen`` (1 to the payoff, else 13) on business date ``on``,
    allocated: penalties oldest first; billed fees past due, then billed principal past
    due, oldest statement first; billed fees, then principal, not yet due; then unbilled
    principal, ``purchase_id`` first, then unplanned purchases, then plans, oldest first,
    each reduced from its last period (the fees of removed periods waived)."""
    _check_open_day(book, on)
    payoff = payoff_fen(book)
    if not 1 <= amount_fen <= payoff:
        raise CreditRefused("13", f"the amount must be 1 to the payoff {payoff}")
    # A ``purchase_id`` that names nothing unbilled only loses its priority: the spec
    # gives `credit_repay` no code for it, and the amount still pays what is owed.
    named = next((p for p in book.purchases if p.purchase_id == purchase_id), None)
    charges = list(book.charges)
    indexed = list(enumerate(charges))

    def past(c: Charge) -> bool:
        return c.due_date is not None and c.due_date < on

    steps: list[tuple[str, list[tuple[int, Charge]]]] = [
        (
            "penalty",
            sorted(
                ((i, c) for i, c in indexed if c.kind == "penalty"),
                key=lambda ic: (ic[1].date, ic[0]),
            ),
        ),
        ("fee", _charge_order((i, c) for i, c in indexed if c.kind == "fee" and past(c))),
        (
            "principal",
            _charge_order((i, c) for i, c in indexed if c.kind == "principal" and past(c)),
        ),
        ("fee", _charge_order((i, c) for i, c in indexed if c.kind == "fee" and not past(c))),
        (
            "principal",
            _charge_order((i, c) for i, c in indexed if c.kind == "principal" and not past(c)),
        ),
    ]
    left = amount_fen
    parts = {"penalty": 0, "fee": 0, "principal": 0}
    paid: list[tuple[int, int]] = []
    for kind, queue in steps:
        for i, charge in queue:
            if left == 0:
                break
            take = min(left, charges[i].unpaid_fen)
            if take:
                charges[i] = replace(charge, unpaid_fen=charges[i].unpaid_fen - take)
                parts[kind] += take
                paid.append((i, take))
                left -= take

    order = [p for p in book.purchases if p.unbilled]
    order = (
        ([named] if named is not None and named.unbilled else [])
        + [p for p in order if p.plan is None and p is not named]
        + [p for p in order if p.plan is not None and p is not named]
    )
    prepaid: list[Prepaid] = []
    for item in order:
        if left == 0:
            break
        reduction = reduce_unbilled(item.unbilled, left)
        left -= reduction.taken_fen
        book = _with_purchase(
            book,
            replace(
                item,
                unbilled=reduction.periods,
                waived_fee_fen=item.waived_fee_fen + reduction.waived_fee_fen,
            ),
        )
        prepaid.append(
            Prepaid(
                item.purchase_id, reduction.taken_fen, reduction.waived_fee_fen, reduction.removed
            )
        )
    assert left == 0, "the payoff covers the amount"
    allocation = Allocation(
        penalty_fen=parts["penalty"],
        fee_fen=parts["fee"],
        principal_fen=parts["principal"],
        prepaid_fen=sum(p.principal_fen for p in prepaid),
        waived_fee_fen=sum(p.waived_fee_fen for p in prepaid),
        paid=tuple(paid),
        prepaid=tuple(prepaid),
    )
    line = RepaymentLine(
        date=on, ref=ref, amount_fen=-allocation.billed_fen, prepaid_fen=allocation.prepaid_fen
    )
    return replace(book, charges=tuple(charges), cycle=(*book.cycle, line)), allocation


def undo_repay(book: Book, allocation: Allocation, *, on: date, ref: str) -> Book:
    """A repayment by card that settlement finally does not pay, undone (credit.md,
    "Repayment"): what it paid is owed again as before (each charge it paid gets its
    part back, by index: charges are only ever appended), the periods it removed come
    back unbilled with their fees (billed at the next statement whose date has come,
    so no penalty for the days between), and the cycle shows it as a ``repayment``
    line of the opposite sign, dated ``on``. A period it reduced in part and that a
    statement billed meanwhile gets its part back as an unbilled period of its own
    (fee 0: its fee was billed)."""
    charges = list(book.charges)
    for i, paid in allocation.paid:
        charge = charges[i]
        charges[i] = replace(charge, unpaid_fen=charge.unpaid_fen + paid)
    for prepaid in allocation.prepaid:
        item = next(p for p in book.purchases if p.purchase_id == prepaid.purchase_id)
        unbilled = list(item.unbilled)
        partial = prepaid.principal_fen - sum(p.principal_fen for p in prepaid.removed)
        if partial:
            number = prepaid.removed[0].period - 1 if prepaid.removed else None
            if number is None and unbilled:
                number = unbilled[-1].period
            at = next((k for k, p in enumerate(unbilled) if p.period == number), None)
            if at is not None:
                period = unbilled[at]
                unbilled[at] = Period(period.period, period.principal_fen + partial, period.fee_fen)
            else:
                unbilled.insert(0, Period(number or 1, partial, 0))
        have = {p.period for p in unbilled}
        unbilled += [p for p in prepaid.removed if p.period not in have]
        book = _with_purchase(
            book,
            replace(
                item,
                unbilled=tuple(sorted(unbilled, key=lambda p: p.period)),
                waived_fee_fen=item.waived_fee_fen - prepaid.waived_fee_fen,
            ),
        )
    line = RepaymentLine(
        date=on, ref=ref, amount_fen=allocation.billed_fen, prepaid_fen=-allocation.prepaid_fen
    )
    return replace(book, charges=tuple(charges), cycle=(*book.cycle, line))


class RefundSplit(msgspec.Struct, frozen=True):
    """Where a refund went: unbilled principal (fees of removed periods waived), billed
    unpaid principal, reversed unpaid fees, and the wallet (what had been repaid)."""

    unbilled_fen: int
    billed_fen: int
    fees_reversed_fen: int
    wallet_fen: int
    waived_fee_fen: int

    @property
    def receivable_fen(self) -> int:
        """What comes off the receivable."""
        return self.unbilled_fen + self.billed_fen + self.fees_reversed_fen


def refund(
    book: Book,
    *,
    on: date,
    purchase_id: str,
    amount_fen: int,
    reverse_fees: bool = False,
) -> tuple[Book, RefundSplit]:
    """A refund of ``amount_fen`` of a purchase: its unbilled principal, then its billed
    unpaid principal (oldest statement first), the rest to the wallet. Fees billed stay
    owed, unless ``reverse_fees`` (a cancelled co-brand conversion): then its unpaid
    billed fees come off too and the paid ones go to the wallet."""
    _check_open_day(book, on)
    item = purchase_of(book, purchase_id)
    refundable = item.principal_fen - item.refunded_fen
    if not 1 <= amount_fen <= refundable:
        raise CreditRefused("13", f"the refund must be 1 to {refundable}")
    reduction = reduce_unbilled(item.unbilled, amount_fen)
    left = amount_fen - reduction.taken_fen
    charges = list(book.charges)
    billed = 0
    mine = [(i, c) for i, c in enumerate(charges) if c.ref == purchase_id]
    for i, charge in _charge_order((i, c) for i, c in mine if c.kind == "principal"):
        take = min(left, charge.unpaid_fen)
        charges[i] = replace(charge, unpaid_fen=charge.unpaid_fen - take)
        billed += take
        left -= take
    fees_reversed = fees_paid = 0
    if reverse_fees:
        for i, charge in mine:
            if charge.kind == "fee":
                fees_reversed += charge.unpaid_fen
                fees_paid += charge.amount_fen - charge.unpaid_fen
                charges[i] = replace(charge, unpaid_fen=0)
    split = RefundSplit(
        unbilled_fen=reduction.taken_fen,
        billed_fen=billed,
        fees_reversed_fen=fees_reversed,
        wallet_fen=left + fees_paid,
        waived_fee_fen=reduction.waived_fee_fen,
    )
    book = _with_purchase(
        book,
        replace(
            item,
            unbilled=reduction.periods,
            refunded_fen=item.refunded_fen + amount_fen,
            waived_fee_fen=item.waived_fee_fen + reduction.waived_fee_fen,
        ),
    )
    cycle = book.cycle
    if billed + fees_reversed:
        cycle = (*cycle, RefundLine(date=on, ref=purchase_id, amount_fen=-(billed + fees_reversed)))
    return replace(book, charges=tuple(charges), cycle=cycle), split


def void(book: Book, *, on: date, purchase_id: str) -> tuple[Book, RefundSplit]:
    """A void or reversal: the purchase stops standing. Before it is billed it is never
    billed and frees its principal; after, it is a refund of all of it."""
    item = purchase_of(book, purchase_id)
    if not item.standing:
        raise CreditRefused("12", f"purchase {purchase_id} is not standing")
    refundable = item.principal_fen - item.refunded_fen
    if refundable:
        book, split = refund(book, on=on, purchase_id=purchase_id, amount_fen=refundable)
    else:
        _check_open_day(book, on)
        split = RefundSplit(0, 0, 0, 0, 0)
    item = purchase_of(book, purchase_id)
    return _with_purchase(book, replace(item, standing=False)), split


class Conversion(msgspec.Struct, frozen=True):
    plan: Plan
    amended: Statement | None
    """The first statement, amended, when it was out already."""


def first_due_date(book: Book, business_date: date) -> date:
    """The due date of the first statement after a business date."""
    return due_date(statement_after(business_date, book.statement_day), book.grace_days)


def convert(
    book: Book, *, on: date, purchase_id: str, instalments: int, terms: Terms
) -> tuple[Book, Conversion]:
    """`credit_convert`: a plan of a standing purchase that has none (25 when there is no
    such purchase), until the close of its first due date (else 12), on its unpaid
    principal (under `min_plan_fen`: 13), billed as if made with the purchase. When the
    first statement is out it is amended: a conversion line takes the unpaid principal
    off and an instalment line adds period 1, both dated ``on``."""
    _check_open_day(book, on)
    fee_bps = terms.fee_bps_of(instalments)
    item = purchase_of(book, purchase_id)
    if not item.standing:
        raise CreditRefused("25", f"purchase {purchase_id} is not standing")
    if item.plan is not None:
        raise CreditRefused("12", f"purchase {purchase_id} has a plan already")
    if on > first_due_date(book, item.business_date):
        raise CreditRefused("12", f"purchase {purchase_id} is past its first due date")
    charges = list(book.charges)
    billed = [
        (i, c) for i, c in enumerate(charges) if c.ref == purchase_id and c.kind == "principal"
    ]
    unpaid = item.unbilled_principal_fen + sum(c.unpaid_fen for _, c in billed)
    if unpaid < terms.min_plan_fen:
        raise CreditRefused("13", f"{unpaid} fen is under the smallest plan")
    plan = make_plan(unpaid, instalments, fee_bps)
    first = statement_after(item.business_date, book.statement_day)
    issued = find_statement(book, first)
    if issued is None:
        converted = replace(item, plan=plan, unbilled=plan.periods)
        return _with_purchase(book, converted), Conversion(plan=plan, amended=None)

    for i, charge in billed:
        charges[i] = replace(charge, unpaid_fen=0)
    period = plan.periods[0]
    converted = replace(item, plan=plan, unbilled=plan.periods[1:], billed=(period,))
    charges += _period_charges(converted, period, on, first, issued.due_date)
    extra: tuple[Line, ...] = (
        ConversionLine(date=on, ref=purchase_id, amount_fen=-unpaid),
        _instalment_line(converted, period, on),
    )
    amended = replace(
        issued,
        lines=issued.lines + extra,
        new_balance_fen=issued.new_balance_fen + sum(line.amount_fen for line in extra),
    )
    statements = tuple(amended if s is issued else s for s in book.statements)
    book = replace(book, charges=tuple(charges), statements=statements)
    return _with_purchase(book, converted), Conversion(plan=plan, amended=amended)
