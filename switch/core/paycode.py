"""Consumer payment codes (wallet.md): 19 digits, ``paycode_prefix``, 16 digits drawn
by a cryptographically secure generator, and a Luhn check digit over those 18. A code
encodes no account: the store maps it to its customer, funding, verification tier and
expiry. Sans-IO: the caller draws the random digits (``secrets``) and gives the time.

Time is the WALL clock (``time.time()``), never the business clock: a code lives
``paycode_ttl_s`` seconds of real time even when the switch's business day is
simulated, because the customer's phone and the cashier live in real time.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Final, Literal

import msgspec

CODE_LENGTH: Final = 19
PROBE_WINDOW_S: Final = 600.0
"""wallet.md: answers of 14 per terminal in the last 10 minutes."""
ENTRY_MODE: Final = "032"
"""pos-cup.md field 22 of a scanned code: bar code (03), no PIN (2)."""

Funding = Literal["wallet", "credit"]
Verification = Literal["A", "B", "C"]
CodeState = Literal["open", "used", "cancelled"]

_DIGITS: Final = re.compile(r"[0-9]{19}")


def luhn_digit(digits: str) -> str:
    """The Luhn check digit to append to ``digits``."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:  # doubled: the rightmost before the check digit
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def make_code(prefix: str, random_digits: str) -> str:
    """A code from its prefix and its 16 random digits."""
    if not re.fullmatch(r"[0-9]{2}", prefix) or not re.fullmatch(r"[0-9]{16}", random_digits):
        raise ValueError("a payment code is a 2-digit prefix and 16 random digits")
    body = prefix + random_digits
    return body + luhn_digit(body)


def draw(prefix: str, randbelow: Callable[[int], int] = secrets.randbelow) -> str:
    """A new code: 16 digits drawn uniformly (``secrets.randbelow``)."""
    return make_code(prefix, f"{randbelow(10**16):016d}")


def well_formed(code: str, prefix: str) -> bool:
    """19 digits, ``prefix`` first, the Luhn digit right. A code that is not is
    answered 14 like any code not open (a guess learns nothing)."""
    return (
        bool(_DIGITS.fullmatch(code))
        and code.startswith(prefix)
        and (luhn_digit(code[:-1]) == code[-1])
    )


def is_paycode(field2: str, prefix: str) -> bool:
    """A field 2 that begins with the prefix is a code, never routed to a bank."""
    return field2.startswith(prefix)


def mask(code: str) -> str:
    """Logs and files show a code as a PAN: first 6, ``*``s, last 4."""
    if len(code) <= 10:
        return "*" * len(code)
    return code[:6] + "*" * (len(code) - 10) + code[-4:]


class PaycodeSettings(msgspec.Struct, frozen=True, kw_only=True):
    """``[wallet]``'s keys of payment codes (demo values as defaults)."""

    prefix: str = "88"
    ttl_s: int = 60
    max_open: int = 5
    probe_limit: int = 20


class Paycode(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    customer_id: str
    funding: Funding
    verification: Verification
    issued_at: float
    expires_at: float
    state: CodeState = "open"
    instalments: int | None = None
    """credit.md: the instalments a ``credit`` code binds (3, 6, 12 or 24), or none."""


class CodeTaken(msgspec.Struct, frozen=True, kw_only=True):
    """What the look-up of a scanned code answers: ``code`` 00 with the code (now
    used), or 14 (not open), or 65 (the terminal's probe limit)."""

    response_code: str
    paycode: Paycode | None = None


def open_at(paycode: Paycode, now: float) -> bool:
    return paycode.state == "open" and now < paycode.expires_at


def refusal(probes: int, settings: PaycodeSettings) -> str | None:
    """65 when the terminal has had ``probe_limit`` answers of 14 in the window."""
    return "65" if probes >= settings.probe_limit else None
