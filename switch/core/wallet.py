"""Wallets' rules (wallet.md): PBOC payment-account classes and their limits, the daily
caps of barcode payments by verification tier, bound withdrawal accounts, and the money
checks in wallet.md's order (risk.md's rules first, by the caller; then the class limit,
the daily caps, the balance). Sans-IO: the store reads what a wallet has used, locked,
asks :func:`money_check`, and reserves the transfer in the same transaction.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Final, Literal

import msgspec

from switch.core.ledger import LedgerError
from switch.core.paycode import Funding, PaycodeSettings, Verification
from switch.wire import emvqr

WalletClass = Literal[1, 2, 3]
Channel = Literal["qr_static", "qr_dynamic", "code", "none"]
"""How a payment reached the wallet: by a static or dynamic QR, by a payment code, or
neither (a withdrawal, a repayment): only QR and code payments count in daily caps."""
Counted = Literal["pay", "withdraw", "repay"]

CUSTOMER_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,32}")
ACCOUNT: Final = re.compile(r"[0-9]{8,32}")
BANK_CODE: Final = re.compile(r"[0-9]{12}")
_NAME_BAD: Final = re.compile(r'[,"\x00-\x1f\x7f-\x9f]')
MAX_BOUND: Final = 5
HISTORY_LIMIT: Final = 20
HISTORY_MAX: Final = 100

CLASS_LIMIT_FEN: Final[dict[int, int]] = {1: 100_000, 2: 10_000_000, 3: 20_000_000}
"""wallet.md: class I ¥1,000 cumulative since opening; II ¥100,000 and III ¥200,000
per calendar year."""


class WalletError(LedgerError):
    """A wallet request refused before any money check."""


class NoSuchWallet(WalletError):
    response_code = "14"


class NotYourWallet(WalletError):
    """A wallet another app principal opened: ``error`` 03."""

    response_code = "03"


class TooManyAccounts(WalletError):
    response_code = "12"


class AccountNotBound(WalletError):
    response_code = "14"


class BadField(WalletError):
    """Validation: ``error`` 30 naming the field."""

    response_code = "30"

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field


class WalletSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[wallet]`` (wallet.md), demo values as defaults."""

    topup_merchant_id: str = "898310065400001"
    qr_gui: str = "CN.COM.CHINABANK"
    qr_city: str = "BEIJING"
    qr_expires_s: int = 300
    paycode_prefix: str = "88"
    paycode_ttl_s: int = 60
    paycode_max_open: int = 5
    paycode_probe_limit: int = 20
    daily_a_fen: int = 5_000_000
    daily_b_fen: int = 500_000
    daily_c_fen: int = 100_000
    static_qr_daily_fen: int = 50_000

    def problems(self, route_prefixes: Sequence[str]) -> list[str]:
        """What start-up refuses, one sentence each naming its key: a prefix of 2
        digits that no BIN route begins with (a code is never routed to a bank),
        positive lifetimes, limits and caps."""
        found = []
        if not re.fullmatch(r"[0-9]{2}", self.paycode_prefix):
            found.append(f"wallet.paycode_prefix: {self.paycode_prefix!r} is not 2 digits")
        for prefix in route_prefixes:
            if prefix.startswith(self.paycode_prefix):
                found.append(
                    f"wallet.paycode_prefix: BIN route {prefix} begins with "
                    f"{self.paycode_prefix} (payment codes are never routed to a bank)"
                )
        if not 30 <= self.qr_expires_s <= 3600:
            found.append("wallet.qr_expires_s: 30..3600")
        if not re.fullmatch(r"[0-9A-Za-z.]{1,32}", self.qr_gui):
            found.append("wallet.qr_gui: 1..32 of [0-9A-Za-z.]")
        if not 1 <= len(self.qr_city) <= 15 or not self.qr_city.isascii():
            found.append("wallet.qr_city: 1..15 ASCII characters")
        for key in ("paycode_ttl_s", "paycode_max_open", "paycode_probe_limit", "daily_a_fen",
                    "daily_b_fen", "daily_c_fen", "static_qr_daily_fen"):  # fmt: skip
            if getattr(self, key) < 1:
                found.append(f"wallet.{key}: at least 1")
        return found

    def paycodes(self) -> PaycodeSettings:
        return PaycodeSettings(
            prefix=self.paycode_prefix, ttl_s=self.paycode_ttl_s,
            max_open=self.paycode_max_open, probe_limit=self.paycode_probe_limit,
        )  # fmt: skip

    def daily_cap(self, tier: Verification) -> int:
        return {"A": self.daily_a_fen, "B": self.daily_b_fen, "C": self.daily_c_fen}[tier]


class Wallet(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    app: str
    """The app principal that opened it: the only one answered about it."""
    wallet_class: WalletClass
    opened: str
    """The local date of its opening, YYYY-MM-DD."""


class BoundAccount(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    account_name: str
    bank_code: str


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """What a wallet has used of its limits, as counted (wallet.md): since opening, this
    calendar year, and today's QR and code payments (all of them, and by static QR)."""

    since_opening: int = 0
    this_year: int = 0
    today: int = 0
    static_today: int = 0


class MoneyAsk(msgspec.Struct, frozen=True, kw_only=True):
    """A payment, withdrawal or repayment from a wallet's customer, as the money checks
    see it."""

    customer_id: str
    amount: int
    counted: Counted
    funding: Funding = "wallet"
    channel: Channel = "none"
    verification: Verification | None = None
    local_date: str
    """Today, local calendar date (not the business date)."""

    @property
    def counts_in_class(self) -> bool:
        """Payments on ``credit`` do not count; every withdrawal and repayment does."""
        return self.counted != "pay" or self.funding == "wallet"

    @property
    def counts_daily(self) -> bool:
        return self.channel != "none"


class Refusal(msgspec.Struct, frozen=True):
    code: str
    message: str


def class_left(wallet_class: int, usage: Usage) -> int:
    """What the class limit still allows (``wallet_balance``'s ``class_left``)."""
    used = usage.since_opening if wallet_class == 1 else usage.this_year
    return max(0, CLASS_LIMIT_FEN[wallet_class] - used)


def money_check(
    wallet: Wallet,
    usage: Usage,
    ask: MoneyAsk,
    available: int,
    settings: WalletSettings,
) -> Refusal | None:
    """wallet.md's money checks after risk.md's rules, in order: the class limit (61,
    wallet-funded payments, withdrawals and repayments), the daily caps (61, QR and code
    payments: the tier's, then the static QR's), the balance (51, ``wallet`` only; a
    ``credit`` payment's is credit.md's). None: it passes."""
    if ask.counts_in_class and ask.amount > class_left(wallet.wallet_class, usage):
        return Refusal("61", f"class {wallet.wallet_class} limit")
    if ask.counts_daily:
        assert ask.verification is not None, "a QR or code payment has its tier"
        if usage.today + ask.amount > settings.daily_cap(ask.verification):
            return Refusal("61", f"daily cap of tier {ask.verification}")
        if (
            ask.channel == "qr_static"
            and usage.static_today + ask.amount > settings.static_qr_daily_fen
        ):
            return Refusal("61", "daily cap of static QR payments")
    if ask.funding == "wallet" and ask.amount > available:
        return Refusal("51", "balance too low")
    return None


def year_of(local_date: str) -> str:
    return local_date[:4]


def check_customer_id(customer_id: str) -> str:
    if not CUSTOMER_ID.fullmatch(customer_id):
        raise BadField("customer_id", "1..32 of [A-Za-z0-9._:-]")
    return customer_id


def check_bound_account(account: str, account_name: str, bank_code: str) -> BoundAccount:
    """wallet.md's ``wallet_bind_account`` fields; BadField naming the first wrong one."""
    if not ACCOUNT.fullmatch(account):
        raise BadField("account", "8..32 digits")
    if not 1 <= len(account_name) <= 60 or _NAME_BAD.search(account_name):
        raise BadField(
            "account_name", "1..60 characters, no comma, double quote or control character"
        )
    if not BANK_CODE.fullmatch(bank_code):
        raise BadField("bank_code", "12 digits")
    return BoundAccount(account=account, account_name=account_name, bank_code=bank_code)


def opened_today(today: date) -> str:
    return today.isoformat()


WITHDRAWAL_COLUMNS: Final = (
    "business_date", "value_date", "rrn", "customer_id", "bank_code", "account",
    "account_name", "amount_fen",
)  # fmt: skip


class WithdrawalLine(msgspec.Struct, frozen=True, kw_only=True):
    """One approved withdrawal of a business date, as its file's row needs it."""

    rrn: str
    customer_id: str
    bank_code: str
    account: str
    account_name: str
    amount: int


def withdrawals_file_name(business_date: str) -> str:
    return f"withdrawals-{business_date.replace('-', '')}.csv"


def withdrawals_file(business_date: str, lines: Sequence[WithdrawalLine]) -> bytes:
    """wallet.md's withdrawals file of a business date D: UTF-8, LF, its header, one row
    per withdrawal approved on D ordered by RRN, value date D + 1; written even when
    empty, byte-identical when written again."""
    value_date = (date.fromisoformat(business_date) + timedelta(days=1)).isoformat()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(WITHDRAWAL_COLUMNS)
    for line in sorted(lines, key=lambda line: line.rrn):
        writer.writerow((business_date, value_date, line.rrn, line.customer_id, line.bank_code,
                         line.account, line.account_name, line.amount))  # fmt: skip
    return out.getvalue().encode()


def qr_payload(
    settings: WalletSettings,
    *,
    merchant_id: str,
    name: str,
    mcc: str,
    city: str | None,
    qr_id: str,
    amount: int | None = None,
    order_id: str | None = None,
) -> str:
    """``qr_create``'s payload (wallet.md): dynamic with an ``amount``, static without;
    the merchant's city, else ``qr_city``."""
    payload = emvqr.make(
        kind="dynamic" if amount is not None else "static", gui=settings.qr_gui,
        merchant_id=merchant_id, qr_id=qr_id, mcc=mcc, name=name,
        city=city or settings.qr_city, amount=amount, order_id=order_id,
    )  # fmt: skip
    return emvqr.encode(payload)


def recon_debit(available: int, amount: int) -> tuple[int, int]:
    """A recon correction that takes ``amount`` back from a wallet (wallet.md): the
    wallet is debited at most to zero, ``recon_loss`` the rest. (from the wallet, to the
    loss)."""
    from_wallet = max(0, min(available, amount))
    return from_wallet, amount - from_wallet
