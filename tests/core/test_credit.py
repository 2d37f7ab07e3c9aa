"""The credit arithmetic (credit.md): every sample of the page reproduced to the fen
from numbers copied out of it, hand-worked tables of the rules it states in prose, and
property tests of plans, allocation and the receivable."""

from __future__ import annotations

from datetime import date, timedelta
from fractions import Fraction

import msgspec
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from switch.core.credit.book import (
    Allocation,
    Book,
    Close,
    ConversionLine,
    InstalmentLine,
    PenaltyLine,
    PurchaseLine,
    RefundLine,
    RepaymentLine,
    Statement,
    available_fen,
    close_day,
    close_through,
    convert,
    due_fen,
    first_due_date,
    next_due_date,
    next_statement_date,
    open_book,
    outstanding_principal_fen,
    overdue_days,
    overdue_fen,
    payoff_fen,
    plan_view,
    purchase,
    purchase_of,
    refund,
    repay,
    statement_unpaid_fen,
    void,
)
from switch.core.credit.plan import (
    TERMS,
    CreditRefused,
    Period,
    Terms,
    apr_bps,
    cobrand_convert_amount,
    make_plan,
    plan_periods,
    points,
    reduce_unbilled,
    round_half_up,
    statement_after,
)

TERMS_DEFAULT = Terms()


def fen(text: str) -> int:
    """``2,000.00`` or ``-1,492.25`` as integer fen, by its digits (no floats)."""
    sign = -1 if text.startswith("-") else 1
    whole, cents = text.lstrip("-").replace(",", "").split(".")
    assert len(cents) == 2
    return sign * (int(whole) * 100 + int(cents))


def d(text: str) -> date:
    return date.fromisoformat(text)


# -- round_half_up and the worked example ---------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (299_900 * 50, 10_000, 1500),  # 1,499.5 fen (the worked example)
        (149_000 * 5, 10_000, 75),  # 74.5 fen (the statement sample's penalty)
        (600_000 * 65, 10_000, 3900),
        (0, 7, 0),
        (1, 2, 1),  # a half goes up
        (1, 3, 0),
        (2, 3, 1),
        (5, 10, 1),
        (14, 10, 1),
        (15, 10, 2),
    ],
)
def test_round_half_up(a: int, b: int, expected: int) -> None:
    assert round_half_up(a, b) == expected


@pytest.mark.parametrize(("a", "b"), [(-1, 2), (1, 0), (1, -3)])
def test_round_half_up_refuses_what_the_spec_does_not_define(a: int, b: int) -> None:
    with pytest.raises(ValueError):
        round_half_up(a, b)


def test_worked_example_2999_in_6() -> None:
    """credit.md, "Instalment arithmetic": ¥2,999.00 in 6 at 50 bps."""
    plan = make_plan(fen("2,999.00"), 6, 50)
    assert plan.fee_fen == fen("15.00")
    assert plan.periods[0] == Period(1, fen("499.85"), fen("15.00"))
    assert plan.periods[0].payment_fen == fen("514.85")
    for k in range(2, 7):
        assert plan.periods[k - 1] == Period(k, fen("499.83"), fen("15.00"))
        assert plan.periods[k - 1].payment_fen == fen("514.83")
    assert sum(p.principal_fen for p in plan.periods) == fen("2,999.00")
    assert plan.total_fee_fen == fen("90.00")
    assert sum(p.payment_fen for p in plan.periods) == fen("3,089.00")
    assert plan.apr_bps == 1022


@pytest.mark.parametrize(
    ("instalments", "percent"),
    # The `fee_bps` row of the configuration table: "APR on ¥6,000.00: 8.98%, 10.21%,
    # 13.03%, 14.33%".
    [(3, "8.98"), (6, "10.21"), (12, "13.03"), (24, "14.33")],
)
def test_configured_fees_publish_the_tabled_aprs(instalments: int, percent: str) -> None:
    plan = make_plan(fen("6,000.00"), instalments, TERMS_DEFAULT.fee_bps_of(instalments))
    assert plan.apr_bps == int(percent.replace(".", ""))


# -- the plans of ¥6,000.00 -----------------------------------------------------------

# credit.md, Samples, copied as printed.
SIX_THOUSAND = """
| 1 | 2026-02-01 | 2026-02-10 | 2,000.00 | 30.00 | 500.00 | 36.00 | 250.00 | 39.00 |
| 2 | 2026-03-01 | 2026-03-10 | 2,000.00 | 30.00 | 500.00 | 36.00 | 250.00 | 39.00 |
| 3 | 2026-04-01 | 2026-04-10 | 2,000.00 | 30.00 | 500.00 | 36.00 | 250.00 | 39.00 |
| 4 | 2026-05-01 | 2026-05-10 |  |  | 500.00 | 36.00 | 250.00 | 39.00 |
| 5 | 2026-06-01 | 2026-06-10 |  |  | 500.00 | 36.00 | 250.00 | 39.00 |
| 6 | 2026-07-01 | 2026-07-10 |  |  | 500.00 | 36.00 | 250.00 | 39.00 |
| 7 | 2026-08-01 | 2026-08-10 |  |  | 500.00 | 36.00 | 250.00 | 39.00 |
| 8 | 2026-09-01 | 2026-09-10 |  |  | 500.00 | 36.00 | 250.00 | 39.00 |
| 9 | 2026-10-01 | 2026-10-10 |  |  | 500.00 | 36.00 | 250.00 | 39.00 |
| 10 | 2026-11-01 | 2026-11-10 |  |  | 500.00 | 36.00 | 250.00 | 39.00 |
| 11 | 2026-12-01 | 2026-12-10 |  |  | 500.00 | 36.00 | 250.00 | 39.00 |
| 12 | 2027-01-01 | 2027-01-10 |  |  | 500.00 | 36.00 | 250.00 | 39.00 |
| 13 | 2027-02-01 | 2027-02-10 |  |  |  |  | 250.00 | 39.00 |
| 14 | 2027-03-01 | 2027-03-10 |  |  |  |  | 250.00 | 39.00 |
| 15 | 2027-04-01 | 2027-04-10 |  |  |  |  | 250.00 | 39.00 |
| 16 | 2027-05-01 | 2027-05-10 |  |  |  |  | 250.00 | 39.00 |
| 17 | 2027-06-01 | 2027-06-10 |  |  |  |  | 250.00 | 39.00 |
| 18 | 2027-07-01 | 2027-07-10 |  |  |  |  | 250.00 | 39.00 |
| 19 | 2027-08-01 | 2027-08-10 |  |  |  |  | 250.00 | 39.00 |
| 20 | 2027-09-01 | 2027-09-10 |  |  |  |  | 250.00 | 39.00 |
| 21 | 2027-10-01 | 2027-10-10 |  |  |  |  | 250.00 | 39.00 |
| 22 | 2027-11-01 | 2027-11-10 |  |  |  |  | 250.00 | 39.00 |
| 23 | 2027-12-01 | 2027-12-10 |  |  |  |  | 250.00 | 39.00 |
| 24 | 2028-01-01 | 2028-01-10 |  |  |  |  | 250.00 | 39.00 |
| total | | | 6,000.00 | 90.00 | 6,000.00 | 432.00 | 6,000.00 | 936.00 |
| | | | 6,090.00 paid | `apr_bps` 898 | 6,432.00 paid | `apr_bps` 1303 | 6,936.00 paid | `apr_bps` 1433 |
"""  # noqa: E501 (copied as printed)


def six_thousand(
    instalments: int,
) -> tuple[list[tuple[int, date, date, int, int]], int, int, int, int]:
    """The sample's column of a term: its rows (period, statement, due, principal,
    fee), total principal, total fee, total paid, `apr_bps`."""
    column = {3: 3, 12: 5, 24: 7}[instalments]
    rows = []
    totals: list[str] = []
    paid: list[str] = []
    for raw in SIX_THOUSAND.strip().splitlines():
        cells = [cell.strip() for cell in raw.strip().strip("|").split("|")]
        if cells[0] == "total":
            totals = cells
        elif cells[0] == "":
            paid = cells
        elif cells[column]:
            rows.append(
                (
                    int(cells[0]),
                    d(cells[1]),
                    d(cells[2]),
                    fen(cells[column]),
                    fen(cells[column + 1]),
                )
            )
    return (
        rows,
        fen(totals[column]),
        fen(totals[column + 1]),
        fen(paid[column].removesuffix(" paid")),
        int(paid[column + 1].removeprefix("`apr_bps` ")),
    )


def defaults_book(opened: date = date(2026, 1, 5)) -> Book:
    """An account with the defaults: statements on the 1st, due on the 10th."""
    return open_book(opened, statement_day=1, grace_days=9)


@pytest.mark.parametrize("instalments", [3, 12, 24])
def test_plans_of_six_thousand(instalments: int) -> None:
    rows, principal, fees, paid, apr = six_thousand(instalments)
    assert len(rows) == instalments
    plan = make_plan(fen("6,000.00"), instalments, TERMS_DEFAULT.fee_bps_of(instalments))
    book = purchase(
        defaults_book(),
        purchase_id="601210000101",
        business_date=d("2026-01-12"),
        merchant_id="898110000012345",
        amount_fen=fen("6,000.00"),
        plan=plan,
    )
    view = plan_view(book, "601210000101")
    assert [
        (r.period, r.statement_date, r.due_date, r.principal_fen, r.fee_fen) for r in view.schedule
    ] == rows
    assert sum(p.principal_fen for p in plan.periods) == principal
    assert view.total_fee_fen == fees
    assert sum(p.payment_fen for p in plan.periods) == paid
    assert view.apr_bps == apr


@pytest.mark.parametrize(
    ("business_date", "statement_day", "k", "expected"),
    [
        ("2026-01-12", 1, 1, "2026-02-01"),
        ("2026-01-31", 1, 1, "2026-02-01"),
        ("2026-02-01", 1, 1, "2026-03-01"),  # the statement of 02-01 covers up to 01-31
        ("2026-01-31", 1, 2, "2026-03-01"),
        ("2026-12-15", 1, 1, "2027-01-01"),
        ("2026-12-15", 28, 1, "2026-12-28"),
        ("2026-12-28", 28, 1, "2027-01-28"),
        ("2026-12-28", 28, 3, "2027-03-28"),
        ("2026-01-12", 1, 24, "2028-01-01"),
    ],
)
def test_kth_statement_after_a_business_date(
    business_date: str, statement_day: int, k: int, expected: str
) -> None:
    assert statement_after(d(business_date), statement_day, k) == d(expected)


def test_a_due_date_may_fall_in_the_next_month() -> None:
    book = open_book(d("2026-01-05"), statement_day=28, grace_days=20)
    assert first_due_date(book, d("2026-01-12")) == d("2026-02-17")


# -- the statement sample -------------------------------------------------------------

# credit.md, Samples, "A statement": the lines of statement 2026-03, copied as printed.
STATEMENT_2026_03 = """
| repayment | 2026-02-08 | `603920000104` |  | -1,000.00 |
| repayment | 2026-02-14 | `604521000105` |  | -1,492.25 |
| penalty | 2026-02-13 |  | 3 days from 2026-02-11 | 2.25 |
| instalment | 2026-01-12 | `601210000101` | `898110000012345`, 2/3: 2,000.00 + 30.00 | 2,030.00 |
| purchase | 2026-02-16 | `604719000103` | `898310048990001` | 1,200.00 |
"""


class Walk(msgspec.Struct):
    """Customer C100000001's account walked through the sample, and what each step
    answered."""

    book: Book
    february: Statement
    march: Statement
    repaid_02_08: Allocation
    repaid_02_14: Allocation
    closes: list[Close]
    overdue_02_14: int
    due_02_14: int


def statement_sample() -> Walk:
    book = defaults_book(d("2026-01-05"))
    book = purchase(
        book,
        purchase_id="601210000101",
        business_date=d("2026-01-12"),
        merchant_id="898110000012345",
        amount_fen=fen("6,000.00"),
        plan=make_plan(fen("6,000.00"), 3, TERMS_DEFAULT.fee_bps_of(3)),
    )
    book = purchase(
        book,
        purchase_id="602015000102",
        business_date=d("2026-01-20"),
        merchant_id="898310048990001",
        amount_fen=fen("460.00"),
    )
    book, closes = close_through(book, d("2026-02-07"), TERMS_DEFAULT)
    book, repaid_02_08 = repay(
        book, on=d("2026-02-08"), ref="603920000104", amount_fen=fen("1,000.00")
    )
    book, more = close_through(book, d("2026-02-13"), TERMS_DEFAULT)
    closes += more
    overdue_02_14 = overdue_fen(book, d("2026-02-14"))
    due_02_14 = due_fen(book)
    book, repaid_02_14 = repay(book, on=d("2026-02-14"), ref="604521000105", amount_fen=due_02_14)
    book = purchase(
        book,
        purchase_id="604719000103",
        business_date=d("2026-02-16"),
        merchant_id="898310048990001",
        amount_fen=fen("1,200.00"),
    )
    book, more = close_through(book, d("2026-02-28"), TERMS_DEFAULT)
    closes += more
    statements = [c.statement for c in closes if c.statement is not None]
    assert [s.statement_date for s in statements] == [d("2026-02-01"), d("2026-03-01")]
    return Walk(
        book=book,
        february=statements[0],
        march=statements[1],
        repaid_02_08=repaid_02_08,
        repaid_02_14=repaid_02_14,
        closes=closes,
        overdue_02_14=overdue_02_14,
        due_02_14=due_02_14,
    )


def test_statement_sample_february() -> None:
    """ "Statement 2026-02, due 2026-02-10: 2,030.00 (instalment 1/3) + 460.00 =
    2,490.00"."""
    february = statement_sample().february
    assert (february.period, february.due_date) == ("2026-02", d("2026-02-10"))
    assert february.previous_balance_fen == 0
    instalment, bought = february.lines
    assert isinstance(instalment, InstalmentLine)
    assert (instalment.period, instalment.amount_fen) == ("1/3", fen("2,030.00"))
    assert isinstance(bought, PurchaseLine)
    assert (bought.ref, bought.amount_fen) == ("602015000102", fen("460.00"))
    assert february.new_balance_fen == fen("2,490.00")


def test_statement_sample_repayments_and_penalties() -> None:
    walk = statement_sample()
    # "2026-02-08: ¥1,000.00 repaid from the wallet (fee 30.00, principal 970.00 of the
    # instalment)."
    first = walk.repaid_02_08
    assert (first.penalty_fen, first.fee_fen, first.principal_fen, first.prepaid_fen) == (
        0,
        fen("30.00"),
        fen("970.00"),
        0,
    )
    # "Overdue from 02-11: 1,490.00, so round_half_up(74.5 fen) = 0.75 at the closes of
    # 02-11, 02-12 and 02-13."
    penalties = [
        (c.business_date, c.overdue_fen, c.penalty_fen) for c in walk.closes if c.penalty_fen
    ]
    assert penalties == [
        (d("2026-02-11"), fen("1,490.00"), fen("0.75")),
        (d("2026-02-12"), fen("1,490.00"), fen("0.75")),
        (d("2026-02-13"), fen("1,490.00"), fen("0.75")),
    ]
    assert walk.overdue_02_14 == fen("1,490.00")
    # "2026-02-14: the `due_fen` then, ¥1,492.25, repaid (penalties 2.25, principal
    # 1,030.00 and 460.00)."
    assert walk.due_02_14 == fen("1,492.25")
    second = walk.repaid_02_14
    assert (second.penalty_fen, second.fee_fen, second.principal_fen) == (
        fen("2.25"),
        0,
        fen("1,030.00") + fen("460.00"),
    )
    paid_principal = [
        amount for index, amount in second.paid if walk.book.charges[index].kind == "principal"
    ]
    assert paid_principal == [fen("1,030.00"), fen("460.00")]
    # No penalty after the repayment that left nothing overdue.
    assert all(c.penalty_fen == 0 for c in walk.closes if c.business_date >= d("2026-02-14"))


def test_statement_sample_march() -> None:
    walk = statement_sample()
    march = walk.march
    assert march.period == "2026-03"
    assert (march.statement_date, march.due_date) == (d("2026-03-01"), d("2026-03-10"))
    assert march.previous_balance_fen == fen("2,490.00")
    expected = []
    for raw in STATEMENT_2026_03.strip().splitlines():
        kind, day, ref, detail, amount = [c.strip() for c in raw.strip().strip("|").split("|")]
        expected.append((kind, d(day), ref.strip("`"), fen(amount), detail))
    assert [
        (line.__struct_config__.tag, line.date, line.ref, line.amount_fen) for line in march.lines
    ] == [row[:4] for row in expected]
    repayment_1, repayment_2, penalty, instalment, bought = march.lines
    assert isinstance(repayment_1, RepaymentLine) and repayment_1.prepaid_fen == 0
    assert isinstance(repayment_2, RepaymentLine) and repayment_2.prepaid_fen == 0
    assert isinstance(penalty, PenaltyLine) and penalty.days == 3  # "3 days from 2026-02-11"
    assert isinstance(instalment, InstalmentLine)
    # "`898110000012345`, 2/3: 2,000.00 + 30.00"
    assert (instalment.merchant_id, instalment.period) == ("898110000012345", "2/3")
    assert (instalment.principal_fen, instalment.fee_fen) == (fen("2,000.00"), fen("30.00"))
    assert isinstance(bought, PurchaseLine) and bought.merchant_id == "898310048990001"
    assert march.new_balance_fen == fen("3,230.00")
    assert statement_unpaid_fen(walk.book, d("2026-03-01")) == fen("3,230.00")
    assert statement_unpaid_fen(walk.book, d("2026-02-01")) == 0
    assert next_due_date(walk.book, d("2026-03-10")) == d("2026-03-10")
    assert next_due_date(walk.book, d("2026-03-11")) is None
    assert next_statement_date(walk.book) == d("2026-04-01")


def test_statement_sample_receivable() -> None:
    """ "After it `credit_receivable:C100000001` holds 5,230.00 owed (principal 2,000.00
    billed, 2,000.00 unbilled and 1,200.00; the fee 30.00); `instalment_fee_income`
    60.00; `penalty_income` 2.25.\""""
    walk = statement_sample()
    book = walk.book
    assert payoff_fen(book) == fen("5,230.00")
    assert outstanding_principal_fen(book) == fen("2,000.00") + fen("2,000.00") + fen("1,200.00")
    assert sum(p.unbilled_principal_fen for p in book.purchases) == fen("2,000.00")
    unpaid_fees = sum(c.unpaid_fen for c in book.charges if c.kind == "fee")
    assert unpaid_fees == fen("30.00")
    assert sum(c.amount_fen for c in book.charges if c.kind == "fee") == fen("60.00")
    assert sum(c.amount_fen for c in book.charges if c.kind == "penalty") == fen("2.25")
    assert available_fen(book, fen("20,000.00")) == fen("20,000.00") - fen("5,200.00")


# -- conversion -----------------------------------------------------------------------

# credit.md, Samples, MessagePack: the result of `credit_convert` of purchase
# 606411000201 (¥2,999.00, bought 2026-03-05) into 3 periods on 2026-03-07.
CONVERT_RESULT = bytes.fromhex(
    """
87a474797065a6726573756c74a26964af636f6e762d32303236303330372d31
a4636f6465a23030a8617070726f766564c3af736574746c656d656e745f6461
7465aa323032362d30332d3037a4706c616e8bab70757263686173655f6964ac
363036343131303030323031ad7072696e636970616c5f66656ece0004937cab
696e7374616c6d656e747303a76665655f62707332a76665655f66656ecd05dc
ad746f74616c5f6665655f66656ecd1194ae7761697665645f6665655f66656e
00a76170725f627073cd0382ae706572696f64735f62696c6c656400b6756e62
696c6c65645f7072696e636970616c5f66656ece0004937ca87363686564756c
659385a6706572696f6401ae73746174656d656e745f64617465aa323032362d
30342d3031a86475655f64617465aa323032362d30342d3130ad7072696e6369
70616c5f66656ece00018680a76665655f66656ecd05dc85a6706572696f6402
ae73746174656d656e745f64617465aa323032362d30352d3031a86475655f64
617465aa323032362d30352d3130ad7072696e636970616c5f66656ece000186
7ea76665655f66656ecd05dc85a6706572696f6403ae73746174656d656e745f
64617465aa323032362d30362d3031a86475655f64617465aa323032362d3036
2d3130ad7072696e636970616c5f66656ece0001867ea76665655f66656ecd05
dca76d657373616765a8617070726f766564
""".replace("\n", "")
)


def book_with(amount: str, bought: str, *, purchase_id: str = "606411000201") -> Book:
    return purchase(
        defaults_book(d("2026-01-05")),
        purchase_id=purchase_id,
        business_date=d(bought),
        merchant_id="898310048990001",
        amount_fen=fen(amount),
    )


def test_conversion_sample_plan_to_the_byte() -> None:
    """ "the plan is 999.68, 999.66 and 999.66 with 15.00 each, billed 2026-04-01,
    05-01 and 06-01, `apr_bps` 898", and its map as the sample's bytes carry it."""
    book = book_with("2,999.00", "2026-03-05")
    book, _ = close_through(book, d("2026-03-06"), TERMS_DEFAULT)
    book, conversion = convert(
        book,
        on=d("2026-03-07"),
        purchase_id="606411000201",
        instalments=3,
        terms=TERMS_DEFAULT,
    )
    assert conversion.amended is None
    view = plan_view(book, "606411000201")
    assert [(r.principal_fen, r.fee_fen, r.statement_date) for r in view.schedule] == [
        (fen("999.68"), fen("15.00"), d("2026-04-01")),
        (fen("999.66"), fen("15.00"), d("2026-05-01")),
        (fen("999.66"), fen("15.00"), d("2026-06-01")),
    ]
    assert view.apr_bps == 898
    sample = msgspec.msgpack.decode(CONVERT_RESULT)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(view)) == sample["plan"]
    assert msgspec.msgpack.encode(view) in CONVERT_RESULT  # the same keys in the same order
    # Available does not change.
    assert outstanding_principal_fen(book) == fen("2,999.00")


def test_conversion_after_the_first_statement_amends_it() -> None:
    """Bought 01-20 for ¥460.00, billed on 02-01, 100.00 repaid on 02-03, converted into
    3 on 02-05: the statement of 02-01 gains a conversion line of -360.00 and an
    instalment line 1/3 of 120.00 + 1.80 (50 bps of 360.00), both dated 02-05."""
    book = book_with("460.00", "2026-01-20", purchase_id="602015000102")
    book, _ = close_through(book, d("2026-02-02"), TERMS_DEFAULT)
    book, _ = repay(book, on=d("2026-02-03"), ref="603420000001", amount_fen=fen("100.00"))
    book, _ = close_through(book, d("2026-02-04"), TERMS_DEFAULT)
    small = Terms(min_plan_fen=fen("100.00"))
    book, conversion = convert(
        book, on=d("2026-02-05"), purchase_id="602015000102", instalments=3, terms=small
    )
    amended = conversion.amended
    assert amended is not None
    assert [(type(line), line.date, line.amount_fen) for line in amended.lines] == [
        (PurchaseLine, d("2026-01-20"), fen("460.00")),
        (ConversionLine, d("2026-02-05"), -fen("360.00")),
        (InstalmentLine, d("2026-02-05"), fen("121.80")),
    ]
    assert amended.new_balance_fen == fen("460.00") - fen("360.00") + fen("121.80")
    # What is unpaid of it: period 1 (the 100.00 paid stays paid).
    assert statement_unpaid_fen(book, d("2026-02-01")) == fen("121.80")
    view = plan_view(book, "602015000102")
    assert view.periods_billed == 1
    assert [(r.period, r.statement_date, r.principal_fen) for r in view.schedule] == [
        (1, d("2026-02-01"), fen("120.00")),
        (2, d("2026-03-01"), fen("120.00")),
        (3, d("2026-04-01"), fen("120.00")),
    ]
    assert payoff_fen(book) == fen("360.00") + fen("1.80")
    book, closes = close_through(book, d("2026-02-28"), small)
    march = closes[-1].statement
    assert march is not None
    assert march.previous_balance_fen == amended.new_balance_fen
    assert [(type(line), line.amount_fen) for line in march.lines] == [
        (RepaymentLine, -fen("100.00")),
        # period 1 unpaid from 02-11: 18 closes of round_half_up(6.09 fen) = 0.06
        (PenaltyLine, fen("1.08")),
        (InstalmentLine, fen("121.80")),
    ]


@pytest.mark.parametrize(
    ("on", "code"),
    [
        ("2026-02-10", None),  # the first due date: until its close
        ("2026-02-11", "12"),
    ],
)
def test_conversion_ends_at_the_close_of_the_first_due_date(on: str, code: str | None) -> None:
    book = book_with("460.00", "2026-01-20")
    book, _ = close_through(book, d(on) - timedelta(1), TERMS_DEFAULT)
    small = Terms(min_plan_fen=fen("100.00"))
    if code is None:
        convert(book, on=d(on), purchase_id="606411000201", instalments=3, terms=small)
    else:
        with pytest.raises(CreditRefused) as refused:
            convert(book, on=d(on), purchase_id="606411000201", instalments=3, terms=small)
        assert refused.value.code == code


def test_conversion_refusals_in_order() -> None:
    book = book_with("460.00", "2026-01-20")
    with pytest.raises(CreditRefused) as refused:
        convert(
            book, on=d("2026-01-21"), purchase_id="999999999999", instalments=3, terms=TERMS_DEFAULT
        )
    assert refused.value.code == "25"
    with pytest.raises(CreditRefused) as refused:
        convert(
            book,
            on=d("2026-01-21"),
            purchase_id="606411000201",
            instalments=3,
            terms=Terms(min_plan_fen=fen("460.01")),
        )
    assert refused.value.code == "13"
    book, _ = convert(
        book, on=d("2026-01-21"), purchase_id="606411000201", instalments=6, terms=TERMS_DEFAULT
    )
    with pytest.raises(CreditRefused) as refused:
        convert(
            book, on=d("2026-01-21"), purchase_id="606411000201", instalments=3, terms=TERMS_DEFAULT
        )
    assert refused.value.code == "12"
    with pytest.raises(ValueError):
        convert(
            book, on=d("2026-01-21"), purchase_id="606411000201", instalments=5, terms=TERMS_DEFAULT
        )


def test_conversion_of_what_is_left_after_a_refund() -> None:
    book = book_with("460.00", "2026-01-20")
    book, split = refund(
        book, on=d("2026-01-22"), purchase_id="606411000201", amount_fen=fen("160.00")
    )
    assert split.unbilled_fen == fen("160.00")
    book, conversion = convert(
        book, on=d("2026-01-23"), purchase_id="606411000201", instalments=3, terms=TERMS_DEFAULT
    )
    assert conversion.plan.principal_fen == fen("300.00")


# -- refunds, prepayment, void --------------------------------------------------------


def plan_book() -> Book:
    """¥6,000.00 in 3 bought 2026-01-12 (2,000.00 + 30.00 a period)."""
    return purchase(
        defaults_book(),
        purchase_id="601210000101",
        business_date=d("2026-01-12"),
        merchant_id="898110000012345",
        amount_fen=fen("6,000.00"),
        plan=make_plan(fen("6,000.00"), 3, 50),
    )


def test_refund_of_an_unbilled_plan_reduces_it_from_the_last_period() -> None:
    book, split = refund(
        plan_book(), on=d("2026-01-20"), purchase_id="601210000101", amount_fen=fen("2,500.00")
    )
    assert (split.unbilled_fen, split.billed_fen, split.wallet_fen) == (fen("2,500.00"), 0, 0)
    assert split.waived_fee_fen == fen("30.00")  # period 3 removed with its fee
    view = plan_view(book, "601210000101")
    assert [(r.period, r.principal_fen, r.fee_fen) for r in view.schedule] == [
        (1, fen("2,000.00"), fen("30.00")),
        (2, fen("1,500.00"), fen("30.00")),  # reduced in part: keeps its fee
    ]
    assert (view.total_fee_fen, view.waived_fee_fen) == (fen("90.00"), fen("30.00"))
    assert view.apr_bps == 898  # fixed when the plan was made
    assert book.cycle == ()  # nothing billed was touched: no line


def test_refund_takes_unbilled_then_billed_then_goes_to_the_wallet() -> None:
    book, _ = close_through(plan_book(), d("2026-02-04"), TERMS_DEFAULT)
    book, allocation = repay(
        book, on=d("2026-02-05"), ref="603620000001", amount_fen=fen("1,500.00")
    )
    assert (allocation.fee_fen, allocation.principal_fen) == (fen("30.00"), fen("1,470.00"))
    book, split = refund(
        book, on=d("2026-02-06"), purchase_id="601210000101", amount_fen=fen("6,000.00")
    )
    assert split.unbilled_fen == fen("4,000.00")
    assert split.billed_fen == fen("530.00")
    assert split.wallet_fen == fen("1,470.00")
    assert split.fees_reversed_fen == 0
    assert split.waived_fee_fen == fen("60.00")
    assert payoff_fen(book) == 0  # the fee billed had been paid
    assert book.cycle[1:] == (
        RefundLine(date=d("2026-02-06"), ref="601210000101", amount_fen=-fen("530.00")),
    )
    with pytest.raises(CreditRefused) as refused:
        refund(book, on=d("2026-02-06"), purchase_id="601210000101", amount_fen=1)
    assert refused.value.code == "13"


def test_billed_fees_stay_owed_after_a_refund_unless_reversed() -> None:
    book, _ = close_through(plan_book(), d("2026-02-04"), TERMS_DEFAULT)
    book, _ = repay(book, on=d("2026-02-05"), ref="603620000001", amount_fen=fen("20.00"))
    kept, split = refund(
        book, on=d("2026-02-06"), purchase_id="601210000101", amount_fen=fen("6,000.00")
    )
    assert (split.billed_fen, split.wallet_fen) == (fen("2,000.00"), 0)
    assert payoff_fen(kept) == fen("10.00")  # the fee's unpaid part stays owed
    # A cancelled co-brand conversion reverses the billed fees: the unpaid 10.00 comes
    # off, the 20.00 paid goes to the wallet.
    cancelled, split = refund(
        book,
        on=d("2026-02-06"),
        purchase_id="601210000101",
        amount_fen=fen("6,000.00"),
        reverse_fees=True,
    )
    assert (split.billed_fen, split.fees_reversed_fen, split.wallet_fen) == (
        fen("2,000.00"),
        fen("10.00"),
        fen("20.00"),
    )
    assert payoff_fen(cancelled) == 0
    assert cancelled.cycle[-1].amount_fen == -fen("2,010.00")


def three_purchases() -> Book:
    book = plan_book()
    book = purchase(
        book,
        purchase_id="602015000102",
        business_date=d("2026-01-20"),
        merchant_id="898310048990001",
        amount_fen=fen("460.00"),
    )
    return purchase(
        book,
        purchase_id="602515000103",
        business_date=d("2026-01-25"),
        merchant_id="898310048990001",
        amount_fen=fen("1,200.00"),
        plan=make_plan(fen("1,200.00"), 6, 50),
    )


def test_prepayment_unplanned_first_then_plans_oldest_first() -> None:
    book, allocation = repay(
        three_purchases(), on=d("2026-01-28"), ref="602820000001", amount_fen=fen("3,000.00")
    )
    assert (allocation.billed_fen, allocation.prepaid_fen) == (0, fen("3,000.00"))
    assert [(p.purchase_id, p.principal_fen, p.waived_fee_fen) for p in allocation.prepaid] == [
        ("602015000102", fen("460.00"), 0),
        ("601210000101", fen("2,540.00"), fen("30.00")),
    ]
    assert allocation.waived_fee_fen == fen("30.00")
    assert [(r.period, r.principal_fen) for r in plan_view(book, "601210000101").schedule] == [
        (1, fen("2,000.00")),
        (2, fen("1,460.00")),
    ]
    assert book.cycle == (
        RepaymentLine(
            date=d("2026-01-28"), ref="602820000001", amount_fen=0, prepaid_fen=fen("3,000.00")
        ),
    )
    # The unplanned purchase, prepaid whole, is never billed.
    book, closes = close_through(book, d("2026-01-31"), TERMS_DEFAULT)
    february = closes[-1].statement
    assert february is not None
    assert [line.ref for line in february.lines] == ["602820000001", "601210000101", "602515000103"]


def test_prepayment_of_a_named_purchase_first_waives_its_fees() -> None:
    book, allocation = repay(
        three_purchases(),
        on=d("2026-01-28"),
        ref="602820000001",
        amount_fen=fen("3,000.00"),
        purchase_id="602515000103",
    )
    assert [(p.purchase_id, p.principal_fen, p.waived_fee_fen) for p in allocation.prepaid] == [
        ("602515000103", fen("1,200.00"), fen("36.00")),  # 6 periods of 6.00, all removed
        ("602015000102", fen("460.00"), 0),
        ("601210000101", fen("1,340.00"), 0),  # period 3 reduced in part keeps its fee
    ]
    # A purchase_id naming nothing loses only its priority.
    _, unnamed = repay(
        three_purchases(),
        on=d("2026-01-28"),
        ref="602820000002",
        amount_fen=fen("3,000.00"),
        purchase_id="699999999999",
    )
    assert [p.purchase_id for p in unnamed.prepaid] == ["602015000102", "601210000101"]
    view = plan_view(book, "602515000103")
    assert (view.waived_fee_fen, view.unbilled_principal_fen, view.schedule) == (
        fen("36.00"),
        0,
        (),
    )


def test_allocation_pays_billed_before_prepaying_and_refuses_above_the_payoff() -> None:
    book, _ = close_through(three_purchases(), d("2026-02-03"), TERMS_DEFAULT)
    # Billed on 02-01: 2,030.00 + 460.00 + (200.00 + 6.00) = 2,696.00.
    assert due_fen(book) == fen("2,696.00")
    book, allocation = repay(
        book, on=d("2026-02-04"), ref="603520000001", amount_fen=fen("2,700.00")
    )
    assert (allocation.fee_fen, allocation.principal_fen, allocation.prepaid_fen) == (
        fen("36.00"),
        fen("2,660.00"),
        fen("4.00"),
    )
    payoff = payoff_fen(book)
    for amount in (0, payoff + 1):
        with pytest.raises(CreditRefused) as refused:
            repay(book, on=d("2026-02-04"), ref="603520000002", amount_fen=amount)
        assert refused.value.code == "13"
    book, _ = repay(book, on=d("2026-02-04"), ref="603520000002", amount_fen=payoff)
    assert payoff_fen(book) == 0


def test_a_statements_amounts_are_paid_in_line_order() -> None:
    """Instalment lines come before purchase lines whatever the purchases' order, and a
    repayment pays a statement's principal in that order: the plan bought after the
    unplanned purchase is paid first."""
    book = purchase(
        defaults_book(),
        purchase_id="601020000001",
        business_date=d("2026-01-10"),
        merchant_id="898310048990001",
        amount_fen=fen("460.00"),
    )
    book = purchase(
        book,
        purchase_id="601220000002",
        business_date=d("2026-01-12"),
        merchant_id="898110000012345",
        amount_fen=fen("6,000.00"),
        plan=make_plan(fen("6,000.00"), 3, 50),
    )
    book, closes = close_through(book, d("2026-02-01"), TERMS_DEFAULT)
    february = closes[-2].statement
    assert february is not None
    assert [type(line) for line in february.lines] == [InstalmentLine, PurchaseLine]
    book, allocation = repay(
        book, on=d("2026-02-02"), ref="603320000001", amount_fen=fen("2,100.00")
    )
    assert [
        (book.charges[i].ref, book.charges[i].kind, fen_paid) for i, fen_paid in allocation.paid
    ] == [
        ("601220000002", "fee", fen("30.00")),
        ("601220000002", "principal", fen("2,000.00")),
        ("601020000001", "principal", fen("70.00")),
    ]


def test_void_before_billing_is_never_billed() -> None:
    book, split = void(three_purchases(), on=d("2026-01-29"), purchase_id="602015000102")
    assert (split.unbilled_fen, split.billed_fen, split.wallet_fen) == (fen("460.00"), 0, 0)
    assert not purchase_of(book, "602015000102").standing
    book, closes = close_through(book, d("2026-01-31"), TERMS_DEFAULT)
    february = closes[-1].statement
    assert february is not None
    assert "602015000102" not in [line.ref for line in february.lines]
    with pytest.raises(CreditRefused):
        void(book, on=d("2026-02-02"), purchase_id="602015000102")


def test_void_after_billing_is_a_refund_of_it_all() -> None:
    book, _ = close_through(three_purchases(), d("2026-02-01"), TERMS_DEFAULT)
    book, split = void(book, on=d("2026-02-02"), purchase_id="602015000102")
    assert (split.unbilled_fen, split.billed_fen, split.wallet_fen) == (0, fen("460.00"), 0)
    assert book.cycle == (
        RefundLine(date=d("2026-02-02"), ref="602015000102", amount_fen=-fen("460.00")),
    )


# -- overdue --------------------------------------------------------------------------


def test_penalties_freeze_and_a_statement_of_penalties_only() -> None:
    """¥460.00 bought 01-20, due 02-10, never paid: 0.23 a day from the close of 02-11;
    the statement of 03-01 has only the penalty line (19 days); the account freezes at
    the close of D + 30 = 03-12."""
    book = book_with("460.00", "2026-01-20")
    book, closes = close_through(book, d("2026-02-28"), TERMS_DEFAULT)
    assert [c.business_date for c in closes if c.penalty_fen] == [
        d("2026-02-11") + timedelta(n) for n in range(18)
    ]
    assert {c.penalty_fen for c in closes if c.penalty_fen} == {fen("0.23")}
    march = closes[-1].statement
    assert march is not None
    assert march.lines == (
        PenaltyLine(date=d("2026-02-28"), ref="", amount_fen=fen("4.14"), days=18),
    )
    assert (march.previous_balance_fen, march.new_balance_fen) == (fen("460.00"), fen("464.14"))
    assert statement_unpaid_fen(book, d("2026-03-01")) == fen("4.14")
    assert statement_unpaid_fen(book, d("2026-02-01")) == fen("460.00")
    assert overdue_days(book, d("2026-03-01")) == 19
    book, closes = close_through(book, d("2026-03-12"), TERMS_DEFAULT)
    assert [(c.business_date, c.overdue_days, c.freeze) for c in closes[-2:]] == [
        (d("2026-03-11"), 29, False),
        (d("2026-03-12"), 30, True),
    ]
    # Penalties are paid first and bear no penalty: paying 460.00 leaves 0.23 x 12
    # (03-01..03-12) + 4.14 of principal unpaid, whose own penalty rounds to 0.
    book, allocation = repay(book, on=d("2026-03-13"), ref="607220000001", amount_fen=fen("460.00"))
    assert allocation.penalty_fen == fen("4.14") + 12 * fen("0.23")
    book, close = close_day(book, d("2026-03-13"), TERMS_DEFAULT)
    assert close.overdue_fen == fen("460.00") - fen("460.00") + allocation.penalty_fen
    assert close.penalty_fen == 0


def test_closes_and_statements_come_in_order() -> None:
    book = defaults_book(d("2026-01-05"))
    with pytest.raises(ValueError):
        close_day(book, d("2026-01-06"), TERMS_DEFAULT)
    book, _ = close_day(book, d("2026-01-05"), TERMS_DEFAULT)
    with pytest.raises(ValueError):  # a closed date takes nothing more
        purchase(
            book,
            purchase_id="600520000001",
            business_date=d("2026-01-05"),
            merchant_id="m",
            amount_fen=100,
        )
    # One statement a month, with or without lines.
    book, closes = close_through(book, d("2026-03-31"), TERMS_DEFAULT)
    made = [c.statement for c in closes if c.statement is not None]
    assert [(s.period, s.lines, s.new_balance_fen) for s in made] == [
        ("2026-02", (), 0),
        ("2026-03", (), 0),
        ("2026-04", (), 0),
    ]


# -- the co-brand card ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "refunded", "rate", "expected"),
    [
        (12_345, 0, 1, 123),
        (12_345, 2_345, 1, 100),
        (99, 0, 1, 0),
        (12_345, 0, 2, 246),
        (12_345, 12_345, 1, 0),
    ],
)
def test_points(amount: int, refunded: int, rate: int, expected: int) -> None:
    assert points(amount, refunded, rate) == expected


@pytest.mark.parametrize(
    ("amount", "refunded", "age_days", "converted", "answer"),
    [
        (fen("2,999.00"), 0, 30, False, fen("2,999.00")),
        (fen("2,999.00"), fen("999.00"), 0, False, fen("2,000.00")),
        (fen("2,999.00"), 0, 31, False, "12"),
        (fen("2,999.00"), 0, 1, True, "12"),
        (fen("2,999.00"), fen("2,899.01"), 1, False, "13"),  # 99.99 left
        (fen("100.00"), 0, 1, False, fen("100.00")),
    ],
)
def test_cobrand_convert_checks(
    amount: int, refunded: int, age_days: int, converted: bool, answer: int | str
) -> None:
    today = d("2026-03-31")

    def check() -> int:
        return cobrand_convert_amount(
            amount_fen=amount,
            refunded_fen=refunded,
            sale_date=today - timedelta(age_days),
            today=today,
            converted=converted,
            terms=TERMS_DEFAULT,
        )

    if isinstance(answer, str):
        with pytest.raises(CreditRefused) as refused:
            check()
        assert refused.value.code == answer
    else:
        assert check() == answer


# -- properties -----------------------------------------------------------------------


@given(
    principal=st.integers(24, 10**11),
    instalments=st.sampled_from(TERMS),
    fee_bps=st.integers(0, 2_000),
)
def test_a_plans_rows_sum_to_its_principal_and_fees(
    principal: int, instalments: int, fee_bps: int
) -> None:
    periods = plan_periods(principal, instalments, fee_bps)
    assert [p.period for p in periods] == list(range(1, instalments + 1))
    assert sum(p.principal_fen for p in periods) == principal
    fee = periods[0].fee_fen
    assert all(p.fee_fen == fee for p in periods)
    assert sum(p.fee_fen for p in periods) == instalments * fee
    # The fee is P x bps / 10000 to the nearest fen, halves up.
    assert abs(Fraction(principal * fee_bps, 10_000) - fee) <= Fraction(1, 2)
    assert 2 * (principal * fee_bps - fee * 10_000) < 10_000
    rest = {p.principal_fen for p in periods[1:]}
    assert rest <= {principal // instalments}
    assert 0 <= periods[0].principal_fen - principal // instalments < instalments


def spec_inequality(principal: int, payments: list[int], a: int) -> bool:
    """credit.md's inequality as printed, in Fractions."""
    rate = 1 + Fraction(2 * a - 1, 240_000)
    return sum(Fraction(pay) / rate**k for k, pay in enumerate(payments, 1)) >= principal


@settings(max_examples=60, deadline=None)
@given(
    principal=st.integers(24, 10**9),
    instalments=st.sampled_from(TERMS),
    fee_bps=st.integers(0, 3_000),
)
def test_apr_is_the_largest_a_of_the_spec_inequality(
    principal: int, instalments: int, fee_bps: int
) -> None:
    plan = make_plan(principal, instalments, fee_bps)
    payments = [p.payment_fen for p in plan.periods]
    assert 0 <= plan.apr_bps <= 120_000
    assert spec_inequality(principal, payments, plan.apr_bps)
    if plan.apr_bps < 120_000:
        assert not spec_inequality(principal, payments, plan.apr_bps + 1)
    if fee_bps == 0:
        assert plan.apr_bps == 0


def test_a_plan_has_a_fen_of_principal_in_every_period() -> None:
    with pytest.raises(ValueError):
        plan_periods(2, 3, 50)
    assert [p.principal_fen for p in plan_periods(3, 3, 50)] == [1, 1, 1]


def test_apr_caps_at_the_top_of_the_bisection() -> None:
    assert apr_bps(100, [1_000_000]) == 120_000


@given(
    rows=st.lists(st.tuples(st.integers(1, 10**6), st.integers(0, 10**4)), max_size=24),
    amount=st.integers(0, 3 * 10**7),
)
def test_reductions_never_leave_a_negative(rows: list[tuple[int, int]], amount: int) -> None:
    periods = tuple(Period(k, p, f) for k, (p, f) in enumerate(rows, 1))
    total = sum(p for p, _ in rows)
    reduction = reduce_unbilled(periods, amount)
    assert reduction.taken_fen == min(amount, total)
    assert all(p.principal_fen > 0 for p in reduction.periods)  # 0 is removed, never kept
    assert sum(p.principal_fen for p in reduction.periods) == total - reduction.taken_fen
    kept = len(reduction.periods)
    unchanged = max(kept - 1, 0)
    assert reduction.periods[:unchanged] == periods[:unchanged]  # only the last may change
    assert [p.fee_fen for p in reduction.periods] == [p.fee_fen for p in periods[:kept]]
    assert reduction.removed == periods[kept:]
    assert reduction.waived_fee_fen == sum(p.fee_fen for p in periods[kept:])


def check_book(book: Book, receivable: int) -> None:
    """The invariants after any operation."""
    assert all(0 <= c.unpaid_fen <= c.amount_fen for c in book.charges)
    assert all(p.principal_fen > 0 for x in book.purchases for p in x.unbilled)
    # The receivable, followed by its flows, is what is billed and unpaid plus the
    # unbilled principal; the statements' unpaid add up to what is billed and unpaid.
    assert payoff_fen(book) == receivable
    unstated = sum(c.unpaid_fen for c in book.charges if c.statement_date is None)
    assert due_fen(book) == unstated + sum(
        statement_unpaid_fen(book, s.statement_date) for s in book.statements
    )
    previous = 0
    for statement in book.statements:
        assert statement.previous_balance_fen == previous
        assert statement.new_balance_fen == previous + sum(x.amount_fen for x in statement.lines)
        previous = statement.new_balance_fen
        # Its fees and principal are kept in its line order (the order a repayment pays).
        expected: list[tuple[str, str]] = []
        for line in statement.lines:
            if isinstance(line, InstalmentLine):
                expected += [(line.ref, "fee")] if line.fee_fen else []
                expected.append((line.ref, "principal"))
            elif isinstance(line, PurchaseLine):
                expected.append((line.ref, "principal"))
        stated = [
            (c.ref, c.kind)
            for c in book.charges
            if c.statement_date == statement.statement_date and c.kind != "penalty"
        ]
        assert stated == expected
    for item in book.purchases:
        # A purchase's principal is billed, unbilled, refunded, or prepaid: never more.
        billed = sum(p.principal_fen for p in item.billed)
        assert billed + item.unbilled_principal_fen <= item.principal_fen
        if item.plan is not None:
            assert sum(p.principal_fen for p in item.plan.periods) == item.plan.principal_fen
            fees = sum(p.fee_fen for p in (*item.billed, *item.unbilled))
            assert fees + item.waived_fee_fen == item.plan.total_fee_fen


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_days_keep_the_books(data: st.DataObject) -> None:
    terms = Terms(min_plan_fen=1_000)
    book = open_book(
        d("2026-01-05"),
        statement_day=data.draw(st.integers(1, 28), label="statement_day"),
        grace_days=data.draw(st.integers(1, 20), label="grace_days"),
    )
    receivable = 0
    day = book.opened
    serial = 0
    for _ in range(data.draw(st.integers(1, 40), label="steps")):
        action = data.draw(
            st.sampled_from(["purchase", "repay", "refund", "void", "convert", "close"])
        )
        serial += 1
        ids = [p.purchase_id for p in book.purchases]
        unplanned = [p.purchase_id for p in book.purchases if p.plan is None and p.standing]
        if action == "purchase":
            amount = data.draw(st.integers(1, 10**6))
            n = data.draw(st.one_of(st.none(), st.sampled_from(TERMS)))
            plan = None if n is None or amount < n else make_plan(amount, n, terms.fee_bps_of(n))
            book = purchase(
                book,
                purchase_id=f"P{serial:011d}",
                business_date=day,
                merchant_id="m",
                amount_fen=amount,
                plan=plan,
            )
            receivable += amount
        elif action == "repay" and payoff_fen(book):
            amount = data.draw(st.integers(1, payoff_fen(book)))
            named = data.draw(st.sampled_from([None, *ids]))
            before = payoff_fen(book)
            book, allocation = repay(
                book, on=day, ref=f"R{serial:011d}", amount_fen=amount, purchase_id=named
            )
            parts = (
                allocation.penalty_fen,
                allocation.fee_fen,
                allocation.principal_fen,
                allocation.prepaid_fen,
                allocation.waived_fee_fen,
            )
            assert all(part >= 0 for part in parts)
            assert sum(parts[:4]) == amount
            assert payoff_fen(book) == before - amount
            event(f"repayment waiving fees: {allocation.waived_fee_fen > 0}")
            event(f"repayment paying penalties: {allocation.penalty_fen > 0}")
            receivable -= amount
        elif action in ("refund", "void") and ids:
            item = purchase_of(book, data.draw(st.sampled_from(ids)))
            refundable = item.principal_fen - item.refunded_fen
            if action == "void" and item.standing:
                book, split = void(book, on=day, purchase_id=item.purchase_id)
            elif action == "refund" and refundable:
                amount = data.draw(st.integers(1, refundable))
                book, split = refund(
                    book,
                    on=day,
                    purchase_id=item.purchase_id,
                    amount_fen=amount,
                    reverse_fees=data.draw(st.booleans()),
                )
            else:
                continue
            assert (
                min(split.unbilled_fen, split.billed_fen, split.wallet_fen, split.fees_reversed_fen)
                >= 0
            )
            event(f"{action} reaching billed principal: {split.billed_fen > 0}")
            event(f"{action} reaching the wallet: {split.wallet_fen > 0}")
            receivable -= split.receivable_fen
        elif action == "convert" and ids:
            try:
                book, conversion = convert(
                    book,
                    on=day,
                    purchase_id=data.draw(st.sampled_from(unplanned or ids)),
                    instalments=data.draw(st.sampled_from(TERMS)),
                    terms=terms,
                )
            except CreditRefused:
                continue
            event(f"conversion amending a statement: {conversion.amended is not None}")
            if conversion.amended is not None:
                receivable += conversion.plan.periods[0].fee_fen  # the fee it billed
        elif action == "close":
            last = day + timedelta(data.draw(st.one_of(st.integers(0, 3), st.integers(0, 45))))
            while day <= last:
                book, close = close_day(book, day, terms)
                if close.penalty_fen:
                    event("penalty")
                if close.freeze:
                    event("freeze")
                receivable += close.penalty_fen
                if close.statement is not None:
                    receivable += sum(
                        x.fee_fen for x in close.statement.lines if isinstance(x, InstalmentLine)
                    )
                    # The new balance is everything billed and unpaid at its date.
                    assert close.statement.new_balance_fen == due_fen(book)
                    assert close.statement.due_date == close.statement.statement_date + timedelta(
                        book.grace_days
                    )
                    assert close.statement.statement_date.day == book.statement_day
                day += timedelta(1)
        check_book(book, receivable)
