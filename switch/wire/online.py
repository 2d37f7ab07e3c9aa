"""The online channel's MessagePack messages (online.md), as tagged msgspec Structs.

Structural constraints (types, lengths, the id alphabet) are checked here by msgspec, in
C, as the frame is decoded. Payment rules that every channel shares (Luhn, amount range,
currency, expiry) are checked once in :mod:`switch.core.validate`.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from switch.errors import MessageDecodeError

# Patterns end in \Z, not $: "$" would also match before a trailing newline.
REQUEST_ID_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,64}\Z"
RequestId = Annotated[str, Meta(pattern=REQUEST_ID_PATTERN)]
ACCEPTOR_ID_PATTERN: Final = r"^[!-~](?:[ -~]*[!-~])?\Z"
"""An id a bank receives in an ans field (42, 41): printable ASCII, with no space at
either end (a bank pads 42 with spaces, so "SHOP01 " would be SHOP01 there) and not
blank."""
MerchantId = Annotated[str, Meta(min_length=1, max_length=15, pattern=ACCEPTOR_ID_PATTERN)]
OrderId = Annotated[str, Meta(min_length=1, max_length=64)]
Memo = Annotated[str, Meta(max_length=256)]
AlphaCurrency = Annotated[str, Meta(pattern=r"^[A-Z]{3}\Z")]
Cvv2 = Annotated[str, Meta(pattern=r"^[0-9]{3}\Z")]
DeviceId = Annotated[str, Meta(pattern=REQUEST_ID_PATTERN)]
"""risk.md's ``device_id``: 1-64 characters of ``[A-Za-z0-9._:-]``, as an id."""
PaycodeText = Annotated[str, Meta(pattern=r"^[0-9]{19}\Z")]
"""A consumer payment code (wallet.md): 19 digits."""
Rrn = Annotated[str, Meta(pattern=r"^[0-9]{12}\Z")]


class Card(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # pan and expiry are plain str here: their rules (digits, Luhn, YYMM) live in
    # switch.core.validate, which answers 14 / 30 naming the field.
    pan: str
    expiry: str
    cvv2: Cvv2 | None = None

    def __repr__(self) -> str:  # never let a stray repr carry card data into a log
        return "Card(<redacted>)"


class _Request(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    tag_field="type",
    kw_only=True,
    omit_defaults=True,
):
    id: RequestId
    merchant_id: MerchantId
    order_id: OrderId | None = None
    memo: Memo | None = None
    device_id: DeviceId | None = None
    """The customer's device as the sender knows it (risk.md); sent to no bank."""


class Purchase(_Request, frozen=True, kw_only=True, tag="purchase"):
    # amount's range is a payment rule (13), checked in core with the POS channel's.
    amount: int
    currency: AlphaCurrency
    card: Card | None = None
    paycode: PaycodeText | None = None
    """wallet.md: instead of ``card``, a payment code the merchant scanned (on-us)."""


class Balance(_Request, frozen=True, kw_only=True, tag="balance"):
    card: Card | None = None
    paycode: PaycodeText | None = None
    """Never answered with a balance: 57 (wallet.md)."""


class Void(_Request, frozen=True, kw_only=True, tag="void"):
    original_id: RequestId | None = None
    original_rrn: Rrn | None = None
    """wallet.md: an on-us payment by its RRN, instead of ``original_id``."""


class Refund(_Request, frozen=True, kw_only=True, tag="refund"):
    original_id: RequestId | None = None
    amount: int
    original_rrn: Rrn | None = None


class Status(_Request, frozen=True, kw_only=True, tag="status"):
    original_id: RequestId | None = None
    original_rrn: Rrn | None = None
    """wallet.md: an on-us payment by its RRN, instead of ``original_id``."""


class Preauth(Purchase, frozen=True, kw_only=True, tag="preauth"):
    """A pre-authorisation (risk.md): as a purchase."""


class Completion(Refund, frozen=True, kw_only=True, tag="completion"):
    """A completion of the pre-authorisation ``original_id``, of ``amount``."""


class PreauthVoid(Void, frozen=True, kw_only=True, tag="preauth_void"):
    """A pre-authorisation void of ``original_id``."""


CustomerId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9._:-]{1,32}\Z")]
"""wallet.md's ``customer_id``: 1..32 of ``[A-Za-z0-9._:-]``."""
QrText = Annotated[str, Meta(min_length=1, max_length=512)]


class _AppRequest(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    tag_field="type",
    kw_only=True,
    omit_defaults=True,
):
    """A request of the ``app:<name>`` principal (wallet.md): no ``merchant_id``; its
    ``id`` is unique per app principal."""

    id: RequestId
    customer_id: CustomerId
    order_id: OrderId | None = None
    memo: Memo | None = None
    device_id: DeviceId | None = None


class WalletPay(_AppRequest, frozen=True, kw_only=True, tag="wallet_pay"):
    """Pays the merchant of a QR from the customer's wallet (or credit line)."""

    qr: QrText
    funding: Literal["wallet", "credit"]
    verification: Literal["A", "B", "C"]
    amount: int | None = None
    instalments: int | None = None
    """credit.md's, for ``funding`` = ``credit``."""


class WalletTopup(_AppRequest, frozen=True, kw_only=True, tag="wallet_topup"):
    """A sale on the customer's debit card, credited to the wallet if approved."""

    amount: int
    card: Card


AppTransaction = WalletPay | WalletTopup
"""The app's requests that are transactions (journaled, with an RRN)."""

OnlineRequest = (
    Purchase | Balance | Void | Refund | Status | Preauth | Completion | PreauthVoid
    | WalletPay | WalletTopup
)  # fmt: skip
FinancialRequest = Purchase | Balance | Void | Refund | Preauth | Completion | PreauthVoid
"""The requests that go to a bank (all but ``status``)."""


class Result(msgspec.Struct, frozen=True, tag_field="type", tag="result", omit_defaults=True):
    id: str
    code: str
    approved: bool
    rrn: str | None
    auth_code: str | None
    message: str
    balance: int | None = None
    settlement_date: str | None = None
    """YYYY-MM-DD, on purchase, completion, void and refund results (settlement.md)."""
    last_completion_date: str | None = None
    """YYYY-MM-DD, on an approved pre-authorisation: the last business date for its
    completion (risk.md)."""
    order_id: str | None = None
    memo: str | None = None
    funding: str | None = None
    """On-us results (wallet.md): ``wallet`` or ``credit``."""


class WalletPayResult(
    msgspec.Struct, frozen=True, tag_field="type", tag="result", omit_defaults=True
):
    """``wallet_pay``'s result, its fields in wallet.md's sample order (not in the
    ``OnlineResponse`` union, whose ``result`` is :class:`Result`: a client reads it
    as a ``Result`` or as a map)."""

    id: str
    code: str
    approved: bool
    rrn: str | None
    auth_code: str | None
    """Nil when not approved (as online.md's ``result``; a client may read it as one)."""
    settlement_date: str | None = None
    amount: int | None = None
    merchant_id: str | None = None
    merchant_name: str | None = None
    qr_id: str | None = None
    funding: str | None = None
    balance_after: int | None = None
    message: str = ""
    order_id: str | None = None
    memo: str | None = None


class WalletTopupResult(
    msgspec.Struct, frozen=True, tag_field="type", tag="result", omit_defaults=True
):
    """``wallet_topup``'s result (wallet.md)."""

    id: str
    code: str
    approved: bool
    rrn: str | None
    auth_code: str | None
    """Nil when not approved (as online.md's ``result``; a client may read it as one)."""
    settlement_date: str | None = None
    balance_after: int | None = None
    message: str = ""
    order_id: str | None = None
    memo: str | None = None


class Error(msgspec.Struct, frozen=True, tag_field="type", tag="error"):
    id: str | None
    code: str
    message: str


OnlineResponse = Result | Error

_request_decoder: Final[msgspec.msgpack.Decoder[OnlineRequest]] = msgspec.msgpack.Decoder(
    OnlineRequest
)
_id_probe_decoder: Final = msgspec.msgpack.Decoder(dict[str, object])
_response_encoder: Final = msgspec.msgpack.Encoder()
_PATH_FIELD = re.compile(r"at `\$\.?([A-Za-z0-9_.\[\]]*)`")
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
_ACCEPTOR_ID_REGEX: Final = f"matching regex {ACCEPTOR_ID_PATTERN!r}"
_ACCEPTOR_ID_RULE: Final = "of printable ASCII with no space at either end"


class OnlineDecodeError(MessageDecodeError):
    """An online frame that is not a valid request; carries the request's id when it
    could be read, and the field at fault, so the answer names both."""

    def __init__(self, message: str, *, request_id: str | None, field_path: str | None) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.field_path = field_path


def decode_request(payload: bytes) -> OnlineRequest:
    """Decodes one frame's payload; raises only :class:`OnlineDecodeError`."""
    try:
        return _request_decoder.decode(payload)
    except msgspec.ValidationError as exc:
        text = str(exc).replace(_ACCEPTOR_ID_REGEX, _ACCEPTOR_ID_RULE)
        match = _PATH_FIELD.search(text)
        raise OnlineDecodeError(
            text, request_id=_probe_id(payload), field_path=match.group(1) if match else None
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        # msgspec lets a string that is not UTF-8 raise UnicodeDecodeError, and deep
        # nesting RecursionError: both are the peer's malformed input like any other.
        raise OnlineDecodeError(
            f"not a valid MessagePack request: {type(exc).__name__}: {exc}",
            request_id=None,
            field_path=None,
        ) from None


def _probe_id(payload: bytes) -> str | None:
    """The request's ``id`` if the payload is a map holding a well-formed one."""
    try:
        probe = _id_probe_decoder.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    request_id = probe.get("id")
    if isinstance(request_id, str) and _REQUEST_ID.match(request_id):
        return request_id
    return None


probe_id = _probe_id
"""The request's ``id`` if the payload is a map holding a well-formed one."""


def encode_response(response: OnlineResponse | WalletPayResult | WalletTopupResult) -> bytes:
    if isinstance(response, WalletPayResult | WalletTopupResult):
        # As a plain map: msgspec writes a Struct that omits defaults with a 16-bit map
        # header; wallet.md's sample has the shortest (a fixmap of its 14 keys).
        return _response_encoder.encode(msgspec.to_builtins(response))
    return _response_encoder.encode(response)


def encode_request(request: OnlineRequest) -> bytes:
    """For clients, tests and the bench: the wire form of a request."""
    return _response_encoder.encode(request)


_response_decoder: Final[msgspec.msgpack.Decoder[OnlineResponse]] = msgspec.msgpack.Decoder(
    OnlineResponse
)


def decode_response(payload: bytes) -> OnlineResponse:
    """For clients, tests and the bench."""
    return _response_decoder.decode(payload)
