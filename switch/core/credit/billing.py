"""A credit account on the business calendar (credit.md, "Statements and due dates",
"Repayment", "Overdue"): the account's state around its ``Book``, the close of a
business date with the ledger postings it makes, repayments with the freeze they lift,
and the ``account`` result map. Sans-IO: the store locks, loads and writes; this
decides.

Postings at a close (credit.md, "Ledger"): a penalty, ``credit_receivable:<c>`` to
``penalty_income``, keyed by the customer and the date closed; the fees a statement
bills, ``credit_receivable:<c>`` to ``instalment_fee_income``, keyed by the customer and
the statement date. Keys make a close run again post nothing twice.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import msgspec
from msgspec.structs import replace

from switch.core.credit import book as books
from switch.core.credit.book import Allocation, Book, Close, Statement
from switch.core.credit.plan import CreditRefused, Terms, make_plan, period_label

CLOSE_PRINCIPAL = "credit"
"""The principal of the transfers a close posts (penalties, billed fees)."""


class CreditAccount(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    app: str
    limit_fen: int
    frozen_app: bool = False
    frozen_overdue: bool = False
    app_reason: str = ""
    book: Book

    @property
    def frozen(self) -> bool:
        return self.frozen_app or self.frozen_overdue


class Posting(msgspec.Struct, frozen=True, kw_only=True):
    """A transfer posted at once: ``TransferKey(CLOSE_PRINCIPAL, id, leg)``."""

    id: str
    leg: str
    debit: str
    credit: str
    amount: int
    kind: str


def receivable(customer_id: str) -> str:
    return f"credit_receivable:{customer_id}"


def open_date(account: CreditAccount) -> date:
    """The account's current business date: the first it has not closed."""
    last = account.book.last_closed
    return account.book.opened if last is None else last + timedelta(1)


def unpaid_penalty_fen(book: Book) -> int:
    return sum(c.unpaid_fen for c in book.charges if c.kind == "penalty")


def close_account(
    account: CreditAccount, business_date: date, terms: Terms
) -> tuple[CreditAccount, list[Close], list[Posting]]:
    """Every close of the account not yet run, up to ``business_date``'s (a switch down
    over several cut-offs closes each date in turn), with their postings. Closed
    already: nothing."""
    book, closes = books.close_through(account.book, business_date, terms)
    postings: list[Posting] = []
    frozen_overdue = account.frozen_overdue
    name = receivable(account.customer_id)
    for close in closes:
        day = close.business_date.isoformat()
        if close.penalty_fen:
            postings.append(
                Posting(id=f"{account.customer_id}:{day}", leg="penalty", debit=name,
                        credit="penalty_income", amount=close.penalty_fen, kind="penalty")
            )  # fmt: skip
        if close.freeze:
            frozen_overdue = True
        if close.statement is not None:
            billed = _fees_billed(book, close.statement)
            if billed:
                postings.append(
                    Posting(id=f"{account.customer_id}:{close.statement.statement_date}",
                            leg="fee", debit=name, credit="instalment_fee_income",
                            amount=billed, kind="instalment_fee")
                )  # fmt: skip
    if frozen_overdue and closes and not closes[-1].freeze and _clear(book, business_date):
        frozen_overdue = False  # cleared otherwise (a refund): the close lifts it
    return replace(account, book=book, frozen_overdue=frozen_overdue), closes, postings


def _clear(book: Book, day: date) -> bool:
    """Nothing overdue after ``day``'s close and no penalty unpaid."""
    return books.overdue_fen(book, day + timedelta(1)) == 0 and unpaid_penalty_fen(book) == 0


def _fees_billed(book: Book, statement: Statement) -> int:
    """The fees a statement billed when it was made (its instalment lines)."""
    return sum(line.fee_fen for line in statement.lines if isinstance(line, books.InstalmentLine))


def repay_account(
    account: CreditAccount, *, ref: str, amount_fen: int, purchase_id: str | None = None
) -> tuple[CreditAccount, Allocation]:
    """A repayment on the account's current business date, allocated as credit.md says;
    the ``overdue`` freeze is lifted when it leaves nothing overdue and no penalty
    unpaid."""
    on = open_date(account)
    book, allocation = books.repay(
        account.book, on=on, ref=ref, amount_fen=amount_fen, purchase_id=purchase_id
    )
    frozen_overdue = account.frozen_overdue
    if frozen_overdue and books.overdue_fen(book, on) == 0 and unpaid_penalty_fen(book) == 0:
        frozen_overdue = False  # the repayment that leaves nothing overdue
    return replace(account, book=book, frozen_overdue=frozen_overdue), allocation


def purchase_refusal(
    account: CreditAccount, amount_fen: int, instalments: int | None, terms: Terms
) -> CreditRefused | None:
    """The first failing of credit.md's checks in place of the balance check (the
    account exists): frozen 62; a plan under `min_plan_fen` 13; above available 51."""
    if account.frozen:
        return CreditRefused("62", "the credit account is frozen")
    if instalments is not None and amount_fen < terms.min_plan_fen:
        return CreditRefused("13", f"{amount_fen} fen is under the smallest plan")
    if amount_fen > books.available_fen(account.book, account.limit_fen):
        return CreditRefused("51", "above the credit available")
    return None


class CreditAsk(msgspec.Struct, frozen=True, kw_only=True):
    """A payment with funding ``credit`` (credit.md, "Purchases and plans"): the
    purchase it makes if approved (``purchase_id``: the payment's RRN) and its plan."""

    purchase_id: str
    instalments: int | None
    terms: Terms


def credit_purchase(
    account: CreditAccount, ask: CreditAsk, *, merchant_id: str, amount_fen: int
) -> CreditAccount | CreditRefused:
    """credit.md's checks in place of the balance check (frozen 62, a plan under
    `min_plan_fen` 13, above available 51), then the purchase in the book, on the
    account's current business date, with its plan made to the fen."""
    refusal = purchase_refusal(account, amount_fen, ask.instalments, ask.terms)
    if refusal is not None:
        return refusal
    plan = None
    if ask.instalments is not None:
        plan = make_plan(amount_fen, ask.instalments, ask.terms.fee_bps_of(ask.instalments))
    book = books.purchase(
        account.book, purchase_id=ask.purchase_id, business_date=open_date(account),
        merchant_id=merchant_id, amount_fen=amount_fen, plan=plan,
    )  # fmt: skip
    return replace(account, book=book)


def drop_purchase(account: CreditAccount, purchase_id: str) -> CreditAccount:
    """A pending purchase voided (declined, reversed before its post): it never stood,
    and frees its principal."""
    kept = tuple(p for p in account.book.purchases if p.purchase_id != purchase_id)
    return replace(account, book=replace(account.book, purchases=kept))


def find_back(account: CreditAccount, principal: str, id: str, leg: str) -> books.Back | None:
    for back in account.book.backs:
        if (back.principal, back.id, back.leg) == (principal, id, leg):
            return back
    return None


def add_back(account: CreditAccount, back: books.Back) -> CreditAccount:
    if back in account.book.backs:
        return account
    return replace(account, book=replace(account.book, backs=(*account.book.backs, back)))


def drop_back(account: CreditAccount, back: books.Back) -> CreditAccount:
    kept = tuple(b for b in account.book.backs if b != back)
    return replace(account, book=replace(account.book, backs=kept))


def find_repay(account: CreditAccount, key: Any) -> books.CardRepay | None:
    for repay in account.book.repays:
        if (repay.principal, repay.id, repay.leg) == (key.principal, key.id, key.leg):
            return repay
    return None


def add_repay(account: CreditAccount, repay: books.CardRepay) -> CreditAccount:
    if repay in account.book.repays:
        return account
    return replace(account, book=replace(account.book, repays=(*account.book.repays, repay)))


def drop_repay(account: CreditAccount, repay: books.CardRepay) -> CreditAccount:
    kept = tuple(r for r in account.book.repays if r != repay)
    return replace(account, book=replace(account.book, repays=kept))


def take_back(
    account: CreditAccount, back: books.Back, amount_fen: int
) -> tuple[CreditAccount, books.RefundSplit]:
    """A void, reversal or refund posted, on the account's current business date: a
    void or reversal stops the purchase standing (before it is billed it frees its
    principal; after, a refund of it all); a refund takes unbilled principal, then
    billed unpaid principal, the rest to the wallet (credit.md)."""
    on = open_date(account)
    if back.whole:
        book, split = books.void(account.book, on=on, purchase_id=back.purchase_id)
    else:
        book, split = books.refund(
            account.book, on=on, purchase_id=back.purchase_id, amount_fen=amount_fen
        )
    # An ``overdue`` freeze a refund clears is lifted at the next close (close_account).
    return drop_back(replace(account, book=book), back), split


class CobrandTotals(msgspec.Struct, frozen=True, kw_only=True):
    """The co-brand card's figures for the metrics (credit.md, "Co-brand card"): cards
    linked now, points ever given and taken back (``points_issued``'s debits and
    credits), and conversions by result: ``approved`` (the payment to the card
    approved, its plan made), ``not_approved`` (declined, unanswered, or ended by a
    restart without an approval), ``pending`` (at the bank now), ``cancelled`` (an
    approved one that settlement finally did not pay)."""

    linked_cards: int = 0
    points_issued: int = 0
    points_reversed: int = 0
    conversions: dict[str, int] = msgspec.field(default_factory=dict)


class CreditTotals(msgspec.Struct, frozen=True, kw_only=True):
    """The credit line's figures for the metrics: accounts, frozen ones, outstanding
    principal and overdue amounts as each account was last saved (a close saves every
    account), the accounts with anything overdue, and the penalties accrued (ever
    posted to ``penalty_income``)."""

    accounts: int
    frozen: int
    outstanding_fen: int = 0
    overdue_fen: int = 0
    overdue: int = 0
    penalties_fen: int = 0
    cobrand: CobrandTotals | None = None
    """The co-brand card's figures, read with these."""


# -- the ``account`` result map ----------------------------------------------------------


class StatementBrief(msgspec.Struct, frozen=True):
    period: str
    statement_date: date
    due_date: date
    new_balance_fen: int
    unpaid_fen: int


class AccountView(msgspec.Struct, frozen=True):
    """credit.md's ``account`` map, its keys in the spec's order."""

    state: str
    frozen_by: list[str]
    limit_fen: int
    available_fen: int
    outstanding_principal_fen: int
    payoff_fen: int
    due_fen: int
    overdue_fen: int
    overdue_days: int
    statement_day: int
    grace_days: int
    statement: StatementBrief | None
    next_due_date: date | None
    next_statement_date: date


def account_view(account: CreditAccount) -> AccountView:
    book = account.book
    today = open_date(account)
    reasons = (("app", account.frozen_app), ("overdue", account.frozen_overdue))
    frozen_by = [reason for reason, on in reasons if on]
    latest = book.statements[-1] if book.statements else None
    brief = None
    if latest is not None:
        brief = StatementBrief(
            period=latest.period,
            statement_date=latest.statement_date,
            due_date=latest.due_date,
            new_balance_fen=latest.new_balance_fen,
            unpaid_fen=books.statement_unpaid_fen(book, latest.statement_date),
        )
    return AccountView(
        state="frozen" if frozen_by else "open",
        frozen_by=frozen_by,
        limit_fen=account.limit_fen,
        available_fen=books.available_fen(book, account.limit_fen),
        outstanding_principal_fen=books.outstanding_principal_fen(book),
        payoff_fen=books.payoff_fen(book),
        due_fen=books.due_fen(book),
        overdue_fen=books.overdue_fen(book, today),
        overdue_days=books.overdue_days(book, today),
        statement_day=book.statement_day,
        grace_days=book.grace_days,
        statement=brief,
        next_due_date=books.next_due_date(book, today),
        next_statement_date=books.next_statement_date(book),
    )


def statement_of(book: Book, period: str) -> Statement:
    """The statement of a period (``YYYY-MM``) already made, else 25."""
    for statement in book.statements:
        if period_label(statement.statement_date) == period:
            return statement
    raise CreditRefused("25", f"no statement of {period}")


BOOK_ENCODER = msgspec.json.Encoder()
BOOK_DECODER = msgspec.json.Decoder(Book)
LINES_ENCODER = msgspec.json.Encoder()


def plans_of(book: Book, purchase_id: str | None) -> list[books.PlanView]:
    """``credit_plans``: that purchase's plan with its schedule (25 if none), or every
    plan with anything unbilled or unpaid, oldest first, without schedule."""
    if purchase_id is not None:
        return [books.plan_view(book, purchase_id)]
    owing = {c.ref for c in book.charges if c.unpaid_fen and c.kind != "penalty"}
    return [
        replace(books.plan_view(book, p.purchase_id), schedule=())
        for p in book.purchases
        if p.plan is not None and p.standing and (p.unbilled or p.purchase_id in owing)
    ]
