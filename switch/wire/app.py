"""The app desk's MessagePack messages (online.md's types that are not card or ledger
payments through the transaction lifecycle): frozen, tagged msgspec Structs, one per
request type, and each type's result. wallet.md's wallet and QR types are here; other
pages' types (credit.md's, the co-brand's) add their own Structs beside these, on the
same bases, and register them with the desk (``switch/net/app_desk.py``).

Structural constraints (types, lengths, alphabets, ranges) are checked by msgspec as
the body is decoded: a value that fails one is ``error`` 30 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from switch.wire.online import DeviceId, Memo, MerchantId, OrderId, RequestId

CustomerId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9._:-]{1,32}\Z")]
OnusAmount = Annotated[int, Meta(ge=1, le=10**12 - 1)]
"""wallet.md: an int 1..10^12-1, in fen."""
AccountNumber = Annotated[str, Meta(pattern=r"^[0-9]{8,32}\Z")]
AccountName = Annotated[str, Meta(pattern=r'^[^,"\x00-\x1f\x7f-\x9f]{1,60}\Z')]
"""1..60 characters, no comma, double quote or control character."""
BankCode = Annotated[str, Meta(pattern=r"^[0-9]{12}\Z")]
"""The receiving bank's CNAPS code: 12 digits."""
Funding = Literal["wallet", "credit"]
Verification = Literal["A", "B", "C"]
QrOrderId = Annotated[str, Meta(pattern=r"^[ -~]{1,25}\Z")]
"""``qr_create``'s ``order_id``: 1..25 printable ASCII (the payload's 62.05)."""
QrId = Annotated[str, Meta(pattern=r"^[0-9A-Z]{16}\Z")]
Cursor = Annotated[str, Meta(min_length=1, max_length=64)]


class DeskRequest(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    tag_field="type",
    kw_only=True,
    omit_defaults=True,
):
    """What every request of the desk carries (online.md)."""

    id: RequestId
    order_id: OrderId | None = None
    memo: Memo | None = None
    device_id: DeviceId | None = None


class AppRequest(DeskRequest, frozen=True, kw_only=True):
    """A request of an ``app:`` principal about one customer's wallet."""

    customer_id: CustomerId


class MerchantRequest(DeskRequest, frozen=True, kw_only=True):
    """A request of a ``merchant:`` principal, for its own ``merchant_id``."""

    merchant_id: MerchantId


class WalletOpen(AppRequest, frozen=True, kw_only=True, tag="wallet_open"):
    wallet_class: Literal[1, 2, 3] = msgspec.field(name="class")


class WalletBalance(AppRequest, frozen=True, kw_only=True, tag="wallet_balance"):
    pass


class WalletBindAccount(AppRequest, frozen=True, kw_only=True, tag="wallet_bind_account"):
    account: AccountNumber
    account_name: AccountName
    bank_code: BankCode


class WalletUnbindAccount(AppRequest, frozen=True, kw_only=True, tag="wallet_unbind_account"):
    account: AccountNumber
    bank_code: BankCode


class WalletWithdraw(AppRequest, frozen=True, kw_only=True, tag="wallet_withdraw"):
    amount: OnusAmount
    account: AccountNumber
    account_name: AccountName
    bank_code: BankCode


class WalletHistory(AppRequest, frozen=True, kw_only=True, tag="wallet_history"):
    limit: Annotated[int, Meta(ge=1, le=100)] = 20
    cursor: Cursor | None = None


class PaycodeIssue(AppRequest, frozen=True, kw_only=True, tag="paycode_issue"):
    funding: Funding
    verification: Verification
    instalments: int | None = None
    """credit.md: 3, 6, 12 or 24, with funding ``credit`` only."""


class QrCreate(MerchantRequest, frozen=True, kw_only=True, tag="qr_create"):
    order_id: QrOrderId | None = None
    amount: OnusAmount | None = None
    expires_s: Annotated[int, Meta(ge=30, le=3600)] | None = None
    currency: Annotated[str, Meta(pattern=r"^[A-Z]{3}\Z")] | None = None


class QrStatus(MerchantRequest, frozen=True, kw_only=True, tag="qr_status"):
    qr_id: QrId


# -- results -----------------------------------------------------------------------------


class DeskResult(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="result",
                 omit_defaults=True):  # fmt: skip
    """online.md's result: ``type``, ``id``, ``code``, ``approved``, ``message``, the
    echoed ``order_id`` and ``memo``; each type's fields in its subclass (absent when
    refused, unless the type's table says otherwise)."""

    id: str
    code: str
    approved: bool
    message: str
    order_id: str | None = None
    memo: str | None = None


class WalletOpenResult(DeskResult, frozen=True, kw_only=True, tag="result"):
    customer_id: str | None = None
    wallet_class: int | None = msgspec.field(default=None, name="class")
    balance: int | None = None
    opened: str | None = None


class WalletBalanceResult(DeskResult, frozen=True, kw_only=True, tag="result"):
    customer_id: str | None = None
    wallet_class: int | None = msgspec.field(default=None, name="class")
    balance: int | None = None
    class_left: int | None = None


class BoundAccountOut(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    account_name: str
    bank_code: str


class AccountsResult(DeskResult, frozen=True, kw_only=True, tag="result"):
    """``wallet_bind_account`` and ``wallet_unbind_account``."""

    accounts: list[BoundAccountOut] | None = None


class WithdrawResult(DeskResult, frozen=True, kw_only=True, tag="result"):
    rrn: str | None = None
    settlement_date: str | None = None
    value_date: str | None = None
    balance_after: int | None = None


class HistoryItemOut(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    time: str
    kind: str
    amount: int
    balance_after: int
    rrn: str
    merchant_id: str | None = None
    merchant_name: str | None = None


class HistoryResult(DeskResult, frozen=True, kw_only=True, tag="result"):
    items: list[HistoryItemOut] | None = None
    next: str | msgspec.UnsetType | None = msgspec.UNSET
    """nil on the last page (present, unlike the other absent fields)."""


class PaycodeResult(DeskResult, frozen=True, kw_only=True, tag="result"):
    paycode: str | None = None
    expires: str | None = None
    funding: str | None = None


class QrCreateResult(DeskResult, frozen=True, kw_only=True, tag="result"):
    qr_id: str | None = None
    qr: str | None = None
    kind: str | None = None
    expires: str | None = None


class QrPaymentOut(msgspec.Struct, frozen=True, kw_only=True):
    rrn: str
    amount: int
    time: str
    settlement_date: str
    refunded: int


class QrStatusResult(DeskResult, frozen=True, kw_only=True, tag="result"):
    qr_id: str | None = None
    kind: str | None = None
    state: str | None = None
    amount: int | None = None
    expires: str | None = None
    payments: list[QrPaymentOut] | None = None


_encoder = msgspec.msgpack.Encoder()


def encode_result(result: DeskResult) -> bytes:
    return _encoder.encode(result)
