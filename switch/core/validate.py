"""Payment rules shared by every channel, checked in one place.

Each check raises :class:`TransactionRefused` with the response code and the field, so
a POS terminal gets the code and an online client gets the code and the field's name.
"""

from __future__ import annotations

import re
from typing import Final

from switch.errors import TransactionRefused

MAX_AMOUNT: Final = 999_999_999_999
"""n12 in fen: the most either interface can carry."""

ALPHA_TO_NUMERIC_CURRENCY: Final[dict[str, str]] = {
    "CNY": "156",
    "HKD": "344",
    "MOP": "446",
    "TWD": "901",
    "USD": "840",
    "EUR": "978",
    "GBP": "826",
    "JPY": "392",
    "KRW": "410",
    "SGD": "702",
}
SUPPORTED_NUMERIC_CURRENCIES: Final = frozenset(ALPHA_TO_NUMERIC_CURRENCY.values())

_LUHN_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        total += _LUHN_DOUBLED[value] if position & 1 else value
    return total % 10 == 0


def check_pan(pan: str, *, field: str) -> None:
    if not (12 <= len(pan) <= 19 and pan.isdigit() and pan.isascii()):
        raise TransactionRefused("14", "card number must be 12 to 19 digits", field=field)
    if not luhn_valid(pan):
        raise TransactionRefused("14", "card number fails the Luhn check", field=field)


def check_amount(amount: int, *, field: str, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if not low <= amount <= MAX_AMOUNT:
        raise TransactionRefused(
            "13", f"amount must be {low} to {MAX_AMOUNT} minor units", field=field
        )


def check_expiry(expiry: str | None, *, field: str) -> None:
    """YYMM with a real month; an expired card is the issuer's call (54), not ours."""
    if expiry is None:
        return
    if not (
        len(expiry) == 4 and expiry.isascii() and expiry.isdigit() and 1 <= int(expiry[2:]) <= 12
    ):
        raise TransactionRefused("30", "expiry must be YYMM", field=field)


def numeric_currency(code: str, *, field: str) -> str:
    """ISO 4217 numeric code for a numeric or alphabetic code the switch supports."""
    numeric = ALPHA_TO_NUMERIC_CURRENCY.get(code, code)
    if numeric not in SUPPORTED_NUMERIC_CURRENCIES:
        raise TransactionRefused("30", f"currency {code!r} is not supported", field=field)
    return numeric


def require(value: object | None, *, field: str) -> None:
    if value is None:
        raise TransactionRefused("30", "mandatory field is missing", field=field)


# -- card data where none belongs (free text, log lines) ---------------------------------

TRACK2_SHAPE: Final = re.compile(r"[0-9]{12,19}[=Dd][0-9]+")
DIGIT_RUN: Final = re.compile(
    r"(?<![0-9])(?<![0-9][ -])(?:"
    r"[0-9]{12,19}"
    r"|[0-9]{4}(?P<a>[ -])[0-9]{4}(?P=a)[0-9]{4}(?P=a)[0-9]{4}(?P=a)[0-9]{3}"
    r"|[0-9]{4}(?P<b>[ -])[0-9]{4}(?P=b)[0-9]{4}(?P=b)[0-9]{1,7}"
    r"|[0-9]{4}(?P<c>[ -])[0-9]{6}(?P=c)[0-9]{4,5}"
    r")(?![ -]?[0-9])"
)
"""12 to 19 digits standing alone, together or grouped as a card is printed and typed
(4-4-4-4, 4-4-4-4-3, 4-6-5, one space or dash between groups): a date-like
``2025-11-22-0001`` is not taken for one."""


def card_number_digits(match: re.Match[str]) -> str | None:
    """The digits of a DIGIT_RUN match if they pass the Luhn check (a card number)."""
    digits = match.group(0).replace(" ", "").replace("-", "")
    return digits if luhn_valid(digits) else None


def holds_card_data(text: str) -> bool:
    """Whether ``text`` holds what the log masks: track 2 data or a Luhn-valid card
    number (the one detector behind both, ``switch.log.redact_text``)."""
    if len(text) < 12:
        return False
    if TRACK2_SHAPE.search(text):
        return True
    return any(card_number_digits(match) for match in DIGIT_RUN.finditer(text))
