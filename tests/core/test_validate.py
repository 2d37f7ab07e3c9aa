"""The payment rules shared by every channel, as synchronous tables."""

from __future__ import annotations

from datetime import date

import pytest

from switch.core.validate import (
    ISO_4217,
    MAX_AMOUNT,
    SETTLED_CURRENCIES,
    check_amount,
    check_expiry,
    check_not_expired,
    check_pan,
    luhn_valid,
    require,
    settled_currency,
)
from switch.errors import TransactionRefused

SAMPLE_PAN = "6222021000111122221"  # pos-cup.md's sample card


def with_check_digit(body: str) -> str:
    """``body`` and the digit that makes it Luhn-valid (an independent, textbook version)."""
    total = 0
    for index, char in enumerate(reversed(body)):
        digit = int(char)
        if index % 2 == 0:  # doubled once the check digit is appended
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return body + str((10 - total % 10) % 10)


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        (SAMPLE_PAN, True),
        ("6222021000111122222", False),
        ("6222021000111122220", False),
        ("79927398713", True),
        ("79927398710", False),
        ("4111111111111111", True),
        ("4111111111111112", False),
        ("5555555555554444", True),
        ("378282246310005", True),
        ("6011111111111117", True),
        ("0", True),
        ("18", True),
        ("81", False),
        ("0000000000000000", True),
        # a transposition of adjacent digits is caught
        ("6222021000111122212", False),
    ],
)
def test_luhn_valid(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


@pytest.mark.parametrize("body", ["62220210001111", "4" * 11, "1234567890123456", "9" * 18])
def test_luhn_agrees_with_reference(body: str) -> None:
    good = with_check_digit(body)
    assert luhn_valid(good)
    for wrong in "0123456789":
        if wrong != good[-1]:
            assert not luhn_valid(body + wrong)


@pytest.mark.parametrize(
    "pan",
    [
        SAMPLE_PAN,
        with_check_digit("6" * 11),  # 12 digits, the shortest
        with_check_digit("6" * 18),  # 19 digits, the longest
        "4111111111111111",
    ],
)
def test_check_pan_accepts(pan: str) -> None:
    check_pan(pan, field="2")


@pytest.mark.parametrize(
    "pan",
    [
        "",
        with_check_digit("6" * 10),  # 11 digits
        with_check_digit("6" * 19),  # 20 digits
        "6222021000111122222",  # Luhn
        "622202100011112222X",
        "6222 0210 0011 1122",
        " 6222021000111122221",
        "6222021000111122221 ",
        "-6222021000111122221",
        "６２２２０２１０００１１１１２２２２１",  # fullwidth digits: isdigit() but not ASCII
        "622202100011112222١",  # an Arabic-Indic digit at the end
    ],
)
def test_check_pan_refuses_with_14(pan: str) -> None:
    with pytest.raises(TransactionRefused) as info:
        check_pan(pan, field="card.pan")
    assert info.value.response_code == "14"
    assert info.value.field == "card.pan"


@pytest.mark.parametrize(
    ("amount", "allow_zero"),
    [(1, False), (10000, False), (MAX_AMOUNT, False), (0, True), (1, True), (MAX_AMOUNT, True)],
)
def test_check_amount_accepts(amount: int, allow_zero: bool) -> None:
    check_amount(amount, field="4", allow_zero=allow_zero)


@pytest.mark.parametrize(
    ("amount", "allow_zero"),
    [
        (0, False),
        (-1, False),
        (-1, True),
        (MAX_AMOUNT + 1, False),
        (MAX_AMOUNT + 1, True),
        (10**12, False),
        (10**20, False),
    ],
)
def test_check_amount_refuses_with_13(amount: int, allow_zero: bool) -> None:
    with pytest.raises(TransactionRefused) as info:
        check_amount(amount, field="amount", allow_zero=allow_zero)
    assert info.value.response_code == "13"
    assert info.value.field == "amount"


def test_max_amount_is_n12() -> None:
    assert MAX_AMOUNT == 999_999_999_999
    assert len(str(MAX_AMOUNT)) == 12


@pytest.mark.parametrize("expiry", [None, "2812", "2801", "0001", "9912", "2502"])
def test_check_expiry_accepts(expiry: str | None) -> None:
    # An expired card (e.g. "0001") is the issuer's call (54), not a format error.
    check_expiry(expiry, field="14")


@pytest.mark.parametrize(
    "expiry",
    ["", "281", "28120", "2800", "2813", "2899", "28a2", "YYMM", " 812", "28-1", "+812"],
)
def test_check_expiry_refuses_with_30(expiry: str) -> None:
    with pytest.raises(TransactionRefused) as info:
        check_expiry(expiry, field="card.expiry")
    assert info.value.response_code == "30"
    assert info.value.field == "card.expiry"


def test_check_expiry_refuses_non_ascii_digits() -> None:
    with pytest.raises(TransactionRefused) as info:
        check_expiry("２８１２", field="card.expiry")
    assert info.value.response_code == "30"


TODAY = date(2026, 12, 7)


@pytest.mark.parametrize("expiry", [None, "2612", "2701", "2812", "9912"])
def test_a_card_is_valid_through_its_expiry_month(expiry: str | None) -> None:
    check_not_expired(expiry, TODAY, field="14")
    check_not_expired("2612", date(2026, 12, 31), field="14")  # its last day


@pytest.mark.parametrize("expiry", ["2611", "2512", "2001", "0001"])
def test_a_past_expiry_is_refused_with_54(expiry: str) -> None:
    with pytest.raises(TransactionRefused) as info:
        check_not_expired(expiry, TODAY, field="card.expiry")
    assert (info.value.response_code, info.value.field) == ("54", "card.expiry")


@pytest.mark.parametrize(
    ("code", "settled", "numeric"),
    [
        ("CNY", SETTLED_CURRENCIES, "156"),
        ("156", SETTLED_CURRENCIES, "156"),
        ("JPY", ("156", "392"), "392"),
        ("392", ("156", "392"), "392"),
    ],
)
def test_settled_currency(code: str, settled: tuple[str, ...], numeric: str) -> None:
    assert settled_currency(code, settled, field="49") == numeric


@pytest.mark.parametrize("code", ["USD", "840", "JPY", "392", "XXX", "999", "000", "AUD"])
def test_a_currency_not_settled_is_refused_with_57(code: str) -> None:
    with pytest.raises(TransactionRefused) as info:
        settled_currency(code, SETTLED_CURRENCIES, field="currency")
    assert (info.value.response_code, info.value.field) == ("57", "currency")


@pytest.mark.parametrize("code", ["cny", "Cny", "", "15", "1560", "CN", "15A", "１５６"])
def test_a_currency_of_the_wrong_shape_is_refused_with_30(code: str) -> None:
    with pytest.raises(TransactionRefused) as info:
        settled_currency(code, SETTLED_CURRENCIES, field="currency")
    assert (info.value.response_code, info.value.field) == ("30", "currency")


def test_minor_units_per_iso_4217() -> None:
    assert ISO_4217["156"].exponent == 2 and ISO_4217["156"].alpha == "CNY"
    assert ISO_4217["392"].exponent == 0 and ISO_4217["840"].exponent == 2


@pytest.mark.parametrize("value", ["", "0", 0, b""])
def test_require_accepts_anything_present(value: object) -> None:
    require(value, field="41")


def test_require_refuses_missing_with_30() -> None:
    with pytest.raises(TransactionRefused) as info:
        require(None, field="41")
    assert info.value.response_code == "30"
    assert info.value.field == "41"
