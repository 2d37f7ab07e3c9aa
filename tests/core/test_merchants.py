"""Merchants and their fees (settlement.md, "Merchants")."""

from __future__ import annotations

import pytest

from switch.core.merchants import MerchantBook, MerchantTerms, parse_merchants
from switch.errors import ConfigError
from tests.conftest import REPO

HEADER = "merchant_id,name,mcc,mdr_bps,fee_min_fen,fee_cap_fen,account\n"


def terms(bps: int, minimum: int = 0, cap: int = 0) -> MerchantTerms:
    return MerchantTerms(merchant_id="M", name="", mcc="5411", mdr_bps=bps,
                         fee_min_fen=minimum, fee_cap_fen=cap, account="A")  # fmt: skip


@pytest.mark.parametrize(
    ("bps", "minimum", "cap", "amount", "fee"),
    [
        (60, 0, 0, 10000, 60),
        (38, 0, 2600, 10000, 38),
        (38, 0, 2600, 1_000_000, 2600),  # 3,800 capped at 2,600
        (38, 0, 0, 1, 0),  # 0.0038 rounds down
        (60, 0, 0, 125, 1),  # 0.75 rounds up
        (60, 0, 0, 25, 0),  # 0.15 rounds down
        (50, 0, 0, 100, 1),  # exactly half: up
        (50, 0, 0, 300, 2),  # 1.5: up
        (60, 10, 0, 100, 10),  # raised to the minimum
        (60, 10, 20, 100_000, 20),  # lowered to the cap
    ],
)
def test_fee_rounds_half_up_then_minimum_then_cap(
    bps: int, minimum: int, cap: int, amount: int, fee: int
) -> None:
    assert terms(bps, minimum, cap).fee(amount) == fee


def test_demo_file_has_the_default_profile_and_the_sample_merchant() -> None:
    book = parse_merchants((REPO / "conf" / "merchants.csv").read_text(), source="demo")
    default = book.terms("NOT-LISTED")
    assert default is not None and default.merchant_id == "*"
    assert (default.mdr_bps, default.fee_min_fen, default.fee_cap_fen) == (60, 0, 0)
    assert default.account == "DEMO-ACCOUNT"
    sample = book.terms("898310048990001")
    assert sample is not None
    assert (sample.mdr_bps, sample.fee_cap_fen) == (38, 2600)
    assert book.account("NOT-LISTED") == "DEMO-ACCOUNT"


def test_without_a_default_profile_unlisted_merchants_are_not_served() -> None:
    book = parse_merchants(HEADER + "M1,Shop,5411,60,0,0,ACC1\n", source="m.csv")
    assert book.terms("M1") is not None
    assert book.terms("M2") is None


def test_no_file_serves_everyone_at_no_fee() -> None:
    book = MerchantBook.open_to_all()
    found = book.terms("ANYONE")
    assert found is not None and found.fee(123456) == 0 and found.mcc is None
    assert book.account("ANYONE") == "ANYONE"


@pytest.mark.parametrize(
    ("row", "names"),
    [
        ("M1,Shop,541,60,0,0,ACC", "line 2: mcc '541'"),
        ("M1,Shop,5411,x,0,0,ACC", "line 2: mdr_bps 'x'"),
        ("M1,Shop,5411,60,-1,0,ACC", "line 2: fee_min_fen '-1'"),
        ("M1,Shop,5411,60,0,0,", "line 2: account ''"),
        ("M1234567890123456,Shop,5411,60,0,0,ACC", "line 2: merchant_id"),
        ("M1,Shop,5411,60,0", "line 2: 5 columns"),
        ("M1,Shop,5411,60,30,20,ACC", "line 2: fee_min_fen is above fee_cap_fen"),
        ("M1,Shop,5411,10001,0,0,ACC", "line 2: mdr_bps 10001"),
        ("M1,Shop,5411,60,0,0,ACC\nM1,Again,5411,60,0,0,ACC", "line 3: merchant M1 listed twice"),
    ],
)
def test_a_bad_row_is_refused_naming_line_and_column(row: str, names: str) -> None:
    with pytest.raises(ConfigError, match=f"m.csv {names}"):
        parse_merchants(HEADER + row + "\n", source="m.csv")


def test_a_wrong_header_is_refused() -> None:
    with pytest.raises(ConfigError, match="the header must be merchant_id,name"):
        parse_merchants("id,name\n", source="m.csv")
