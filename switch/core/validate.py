"""Payment rules shared by every channel, checked in one place.

Each check raises :class:`TransactionRefused` with the response code and the field, so
a POS terminal gets the code and an online client gets the code and the field's name.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import date
from typing import Final, NamedTuple

from switch.errors import TransactionRefused

MAX_AMOUNT: Final = 999_999_999_999
"""n12 in fen: the most either interface can carry."""


class CurrencyUnit(NamedTuple):
    """An ISO 4217 currency: its codes, and how many decimals its minor unit is
    (amounts on every interface are integers in minor units: fen for CNY, yen for JPY)."""

    alpha: str
    numeric: str
    exponent: int


ISO_4217: Final[dict[str, CurrencyUnit]] = {
    unit.numeric: unit
    for unit in (
        CurrencyUnit("CNY", "156", 2),
        CurrencyUnit("HKD", "344", 2),
        CurrencyUnit("MOP", "446", 2),
        CurrencyUnit("TWD", "901", 2),
        CurrencyUnit("USD", "840", 2),
        CurrencyUnit("EUR", "978", 2),
        CurrencyUnit("GBP", "826", 2),
        CurrencyUnit("JPY", "392", 0),
        CurrencyUnit("KRW", "410", 0),
        CurrencyUnit("SGD", "702", 2),
    )
}
"""The currencies the switch knows, by numeric code: a settled currency must be one."""
ALPHA_TO_NUMERIC_CURRENCY: Final[dict[str, str]] = {
    unit.alpha: unit.numeric for unit in ISO_4217.values()
}
SETTLED_CURRENCIES: Final = frozenset({"156"})
"""CNY only: payouts, batch totals and clearing add amounts as fen (settlement.md), so
a request in any other currency is refused 57 rather than settled as if it were fen."""

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
    """YYMM with a real month (30 otherwise)."""
    if expiry is None:
        return
    if not (
        len(expiry) == 4 and expiry.isascii() and expiry.isdigit() and 1 <= int(expiry[2:]) <= 12
    ):
        raise TransactionRefused("30", "expiry must be YYMM", field=field)


def check_not_expired(expiry: str | None, today: date, *, field: str) -> None:
    """54 when a well-formed YYMM (20YY) is past: a card is valid through the last day
    of its expiry month, by the switch's local date ``today`` (that of fields 12/13)."""
    if expiry is None:
        return
    if (2000 + int(expiry[:2]), int(expiry[2:])) < (today.year, today.month):
        raise TransactionRefused("54", f"the card expired at the end of {expiry}", field=field)


def settled_currency(code: str, settled: Collection[str], *, field: str) -> str:
    """The ISO 4217 numeric code of ``code`` (numeric, or alphabetic as online sends
    it) when the switch settles that currency. A code of the wrong shape is 30; a
    currency it does not settle, known or not, is 57: it is refused before anything is
    journaled or sent, since the switch converts no amount."""
    well_formed = code.isdigit() or (code.isalpha() and code.isupper())
    if len(code) != 3 or not code.isascii() or not well_formed:
        raise TransactionRefused("30", "currency must be an ISO 4217 code", field=field)
    numeric = ALPHA_TO_NUMERIC_CURRENCY.get(code, code)
    if numeric not in settled:
        raise TransactionRefused("57", f"currency {code} is not settled here", field=field)
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
