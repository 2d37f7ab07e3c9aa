"""The credit account on the business calendar (switch.core.credit.billing), sans-IO:
tables of statement dates, due dates, penalty accrual and freezing on the default cycle
and others; the sample's postings; and properties over random days of purchases,
repayments and closes: no allocation is ever negative, what the close posts plus the
purchases less the repayments is always the payoff (the receivable is what is billed
and unpaid plus the unbilled principal), and the freeze follows the oldest overdue due
date."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.core.credit import book as books
from switch.core.credit.billing import (
    CreditAccount,
    account_view,
    close_account,
    open_date,
    purchase_refusal,
    repay_account,
)
from switch.core.credit.plan import Terms, make_plan

TERMS = Terms()


def d(text: str) -> date:
    return date.fromisoformat(text)


def account(opened: str, *, statement_day: int = 1, grace_days: int = 9,
            limit_fen: int = 2_000_000) -> CreditAccount:  # fmt: skip
    book = books.open_book(d(opened), statement_day=statement_day, grace_days=grace_days)
    return CreditAccount(customer_id="C1", app="app:w", limit_fen=limit_fen, book=book)


def bought(
    acct: CreditAccount, purchase_id: str, amount: int, n: int | None = None
) -> CreditAccount:
    plan = None if n is None else make_plan(amount, n, TERMS.fee_bps_of(n))
    book = books.purchase(acct.book, purchase_id=purchase_id, business_date=open_date(acct),
                          merchant_id="M1", amount_fen=amount, plan=plan)  # fmt: skip
    return CreditAccount(**{**{f: getattr(acct, f) for f in acct.__struct_fields__}, "book": book})


@pytest.mark.parametrize(
    ("opened", "statement_day", "grace_days", "closes_through", "statement", "due"),
    [
        ("2026-01-05", 1, 9, "2026-01-31", "2026-02-01", "2026-02-10"),
        ("2026-01-05", 28, 20, "2026-01-27", "2026-01-28", "2026-02-17"),
        ("2026-01-28", 28, 5, "2026-02-27", "2026-02-28", "2026-03-05"),  # opened on S
        ("2026-12-15", 1, 9, "2026-12-31", "2027-01-01", "2027-01-10"),  # a year's end
        ("2028-02-10", 28, 1, "2028-02-27", "2028-02-28", "2028-02-29"),  # a leap day
    ],
)
def test_the_statement_is_made_at_the_close_of_the_day_before(
    opened: str, statement_day: int, grace_days: int, closes_through: str, statement: str,
    due: str,
) -> None:  # fmt: skip
    acct = bought(account(opened, statement_day=statement_day, grace_days=grace_days), "p1",
                  10_000)  # fmt: skip
    before = d(closes_through) - timedelta(1)
    acct, closes, _ = close_account(acct, before, TERMS)
    assert all(c.statement is None for c in closes)
    acct, closes, _ = close_account(acct, d(closes_through), TERMS)
    (close,) = closes
    assert close.statement is not None
    assert (close.statement.statement_date, close.statement.due_date) == (d(statement), d(due))
    assert close.statement.period == statement[:7]
    assert close.statement.new_balance_fen == 10_000
    assert account_view(acct).next_due_date == d(due)


def test_penalties_from_the_day_after_the_due_date_and_the_freeze_at_d_plus_30() -> None:
    """Unpaid 1,490.00 due 02-10 (the sample's overdue): 0.75 a close from 02-11; the
    freeze at the close of 03-12 (D + 30), not before."""
    acct = bought(account("2026-01-05"), "p1", 149_000)
    acct, closes, postings = close_account(acct, d("2026-03-12"), TERMS)
    penalties = [(c.business_date, c.penalty_fen) for c in closes if c.penalty_fen]
    assert penalties[0] == (d("2026-02-11"), 75)
    assert penalties[-1] == (d("2026-03-12"), 75)
    assert len(penalties) == 30
    assert [c.business_date for c in closes if c.freeze] == [d("2026-03-12")]
    assert acct.frozen_overdue
    assert [(p.leg, p.amount) for p in postings] == [("penalty", 75)] * 30  # no plan: no fee
    assert account_view(acct).overdue_days == 31  # on 03-13, the account's open date
    assert purchase_refusal(acct, 1, None, TERMS) is not None


def test_the_sample_plans_fees_are_posted_at_their_statements() -> None:
    acct = account("2026-01-05")
    acct, _, _ = close_account(acct, d("2026-01-11"), TERMS)
    acct = bought(acct, "601210000101", 600_000, 3)
    acct, _, postings = close_account(acct, d("2026-04-30"), TERMS)
    assert [(p.id, p.leg, p.amount) for p in postings if p.leg == "fee"] == [
        ("C1:2026-02-01", "fee", 3_000),
        ("C1:2026-03-01", "fee", 3_000),
        ("C1:2026-04-01", "fee", 3_000),
    ]


def test_a_repayment_lifts_the_overdue_freeze_only_when_nothing_is_left_overdue() -> None:
    acct = bought(account("2026-01-05"), "p1", 149_000)
    acct, _, _ = close_account(acct, d("2026-03-12"), TERMS)
    acct, first = repay_account(acct, ref="r1", amount_fen=100_000)
    assert acct.frozen_overdue and first.penalty_fen == 30 * 75
    rest = books.due_fen(acct.book)
    acct, _ = repay_account(acct, ref="r2", amount_fen=rest)
    assert not acct.frozen_overdue and account_view(acct).state == "open"


# -- properties -------------------------------------------------------------------------

step = st.one_of(
    st.tuples(st.just("buy"), st.integers(1, 900_000), st.sampled_from([None, 3, 6, 12, 24])),
    st.tuples(st.just("repay"), st.integers(1, 10**6), st.booleans()),
    st.tuples(st.just("close"), st.integers(1, 40), st.just(None)),
)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(step, max_size=25), statement_day=st.integers(1, 28),
       grace_days=st.integers(1, 20))  # fmt: skip
def test_allocations_never_negative_and_the_receivable_is_the_payoff(
    steps: list[tuple[str, int, object]], statement_day: int, grace_days: int
) -> None:
    acct = account("2026-01-05", statement_day=statement_day, grace_days=grace_days,
                   limit_fen=5_000_000)  # fmt: skip
    receivable = 0  # the ledger's credit_receivable debits minus credits, as posted
    posted_keys: set[tuple[str, str]] = set()
    for n, (kind, amount, extra) in enumerate(steps):
        if kind == "buy":
            instalments = extra if isinstance(extra, int) else None
            if instalments is not None and amount < max(TERMS.min_plan_fen, instalments):
                continue
            if purchase_refusal(acct, amount, instalments, TERMS) is not None:
                continue
            acct = bought(acct, f"p{n}", amount, instalments)
            receivable += amount
        elif kind == "repay":
            payoff = books.payoff_fen(acct.book)
            if payoff == 0:
                continue
            pay = min(amount, payoff) if extra else max(1, payoff * amount // 10**6)
            acct, allocation = repay_account(acct, ref=f"r{n}", amount_fen=pay)
            parts = (allocation.penalty_fen, allocation.fee_fen, allocation.principal_fen,
                     allocation.prepaid_fen, allocation.waived_fee_fen)  # fmt: skip
            assert min(parts) >= 0
            assert sum(parts[:4]) == pay
            assert all(fen > 0 for _, fen in allocation.paid)
            receivable -= pay
        else:
            acct, closes, postings = close_account(acct, open_date(acct) + timedelta(amount - 1),
                                                   TERMS)  # fmt: skip
            for posting in postings:
                assert posting.amount > 0
                assert (posting.id, posting.leg) not in posted_keys  # keys never collide
                posted_keys.add((posting.id, posting.leg))
                receivable += posting.amount
            today = open_date(acct)
            overdue = books.overdue_fen(acct.book, today)
            if closes and closes[-1].freeze:
                assert acct.frozen_overdue
            if overdue == 0 and not acct.frozen_overdue:
                assert account_view(acct).overdue_days == 0
        for charge in acct.book.charges:
            assert 0 <= charge.unpaid_fen <= charge.amount_fen
        assert receivable == books.payoff_fen(acct.book)
        view = account_view(acct)
        assert view.available_fen >= 0
        assert view.due_fen + sum(p.unbilled_principal_fen for p in acct.book.purchases) == (
            view.payoff_fen
        )


def test_a_close_lifts_the_overdue_freeze_once_a_refund_cleared_it() -> None:
    acct = bought(account("2026-01-05"), "p1", 149_000)
    acct, _, _ = close_account(acct, d("2026-03-12"), TERMS)
    assert acct.frozen_overdue
    acct, _ = repay_account(acct, ref="r1", amount_fen=30 * 75)  # the penalties
    book, _ = books.refund(acct.book, on=open_date(acct), purchase_id="p1", amount_fen=149_000)
    acct = CreditAccount(**{**{f: getattr(acct, f) for f in acct.__struct_fields__}, "book": book})
    assert acct.frozen_overdue  # nothing to repay is left, but the freeze holds until a close
    acct, _, _ = close_account(acct, open_date(acct), TERMS)
    assert not acct.frozen_overdue


# -- the [credit] section ---------------------------------------------------------------


def test_the_credit_section_defaults_and_a_typo_named(tmp_path: Path) -> None:
    from switch.config import load_config
    from switch.errors import ConfigError
    from tests.switch_process import demo_config, write_config

    config = demo_config(tmp_path)
    loaded = load_config(write_config(tmp_path, config))
    assert loaded.credit.terms() == Terms()  # credit.md's defaults, [credit] absent
    assert (loaded.credit.statement_day, loaded.credit.grace_days) == (1, 9)
    assert loaded.credit.own_terminal_id == "CREDIT01" and loaded.credit.cobrand_bins == ()
    config["credit"] = {"statement_day": 5, "fee_bps": {"3": 40, "6": 50, "12": 60, "24": 65}}
    loaded = load_config(write_config(tmp_path, config))
    assert loaded.credit.statement_day == 5 and loaded.credit.terms().fee_bps_of(3) == 40
    refused = (
        ({"statment_day": 5}, "statment_day"),
        ({"statement_day": 29}, "credit.statement_day"),
        ({"fee_bps": {"3": 40}}, "fee_bps"),
    )
    for bad, named in refused:
        config["credit"] = bad
        with pytest.raises(ConfigError, match=named):
            load_config(write_config(tmp_path, config))
