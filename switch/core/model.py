"""The canonical transaction model that both channels map into.

A POS ISO 8583 message and an online MessagePack request become the same frozen Struct
here, so routing, bank mapping, logging and (later) the journal deal with one shape.
Card data is held only as long as the request lives and never reaches a repr.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import msgspec

from switch.core.batch import BatchTotals, SettlementResult, UploadRecord
from switch.core.credit.book import PlanView
from switch.core.products import PRODUCTS, Product
from switch.security.port import LmkKey

Channel = Literal["pos", "online"]


def mask_pan(pan: str) -> str:
    """First 6 and last 4 digits, the rest starred (PCI DSS 3.3)."""
    if len(pan) < 11:
        return "*" * len(pan)
    return f"{pan[:6]}{'*' * (len(pan) - 10)}{pan[-4:]}"


class Origin(msgspec.Struct, frozen=True, gc=False):
    """Where and when a request came in: its channel and connection (admission shares
    capacity fairly among them), when it was read (trio time: its waits are bounded
    from then), and whether it is a retry of one refused moments before on its
    connection (admission does not count retries as demand); and the peer's address
    (sign-ons are limited per source address)."""

    channel: str
    connection: int
    received_at: float
    retry: bool = False
    source: str = ""


class Acceptor(msgspec.Struct, frozen=True, gc=False):
    """Who asks: the channel, the terminal (online: a per-merchant virtual id) and merchant."""

    channel: Channel
    terminal_id: str
    merchant_id: str


class Card(msgspec.Struct, frozen=True, kw_only=True):
    """What identifies the card. ``pan`` is always set (taken from track 2 when absent)."""

    pan: str
    expiry: str | None = None
    track2: str | None = None
    pin_block: bytes | None = None
    """A terminal's PIN block under ``pin_key`` (its PIK): in memory only, translated to
    the bank link's ZPK as the request leaves (security.md, "PIN")."""
    pin_key: LmkKey | None = None
    cvv2: str | None = None
    entry_mode: str = "012"
    condition_code: str = "00"
    chip: bool = False
    """The terminal sent chip data (55), which the switch cannot verify."""

    @property
    def masked_pan(self) -> str:
        return mask_pan(self.pan)

    def __repr__(self) -> str:
        return f"Card(pan={self.masked_pan!r})"

    __str__ = __repr__


class OriginalRef(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """How a void, refund or reversal names the transaction it acts on."""

    rrn: str | None = None
    online_id: str | None = None
    batch: str | None = None
    stan: str | None = None
    date: str | None = None
    """MMDD, the original's local date."""
    auth_code: str | None = None
    """38 of a request naming a pre-authorisation or completion: its authorisation
    code (a completion finds its pre-authorisation by it, risk.md)."""


class _Request(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    acceptor: Acceptor
    stan: str
    """The terminal's trace number (online: assigned by the switch)."""
    batch: str = "000000"
    request_mti: str = "online"
    """The MTI the terminal sent; with 11, 41, 42, 60.2 and the date, a POS request's
    identity for duplicate detection."""


class SignOn(_Request, frozen=True, kw_only=True):
    pass


class Echo(_Request, frozen=True, kw_only=True):
    pass


class _Financial(_Request, frozen=True, kw_only=True):
    processing_code: str
    online_id: str | None = None
    """The online client's request id (its idempotency key)."""
    device_id: str | None = None
    """The online request's ``device_id`` (risk.md): for the risk rules and the
    journal, sent to no bank."""


class Sale(_Financial, frozen=True, kw_only=True):
    card: Card
    currency: str
    """ISO 4217 numeric, e.g. "156"."""
    amount: int


class BalanceInquiry(_Financial, frozen=True, kw_only=True):
    card: Card
    currency: str
    amount: int = 0


class Void(_Financial, frozen=True, kw_only=True):
    original: OriginalRef
    card: Card | None = None
    """POS voids name the card again (it must be the original's); online ones do not."""
    currency: str | None = None
    amount: int | None = None
    """POS voids repeat the amount (it must be the original's); online: the original's."""


class Refund(_Financial, frozen=True, kw_only=True):
    original: OriginalRef
    amount: int
    card: Card | None = None
    currency: str | None = None


class Reversal(_Financial, frozen=True, kw_only=True):
    original: OriginalRef
    card: Card
    currency: str
    amount: int
    reason: str = "98"


class PreAuth(Sale, frozen=True, kw_only=True):
    """A pre-authorisation (risk.md): holds its amount on the card."""


class PreAuthVoid(Void, frozen=True, kw_only=True):
    """A pre-authorisation void: releases the hold of an open pre-authorisation."""


class Completion(Refund, frozen=True, kw_only=True):
    """A completion: charges up to ``completion_max_pct`` of an open pre-authorisation,
    which it names by 38 and 61 (POS) or by its request id (online)."""


class CompletionVoid(Void, frozen=True, kw_only=True):
    """A completion void: the completion's pre-authorisation is open again."""

class PaycodeSale(Sale, frozen=True, kw_only=True):
    """wallet.md: a sale paid by a consumer payment code (``card.pan`` is the code),
    carried out on the ledger."""


class PaycodeVoid(Void, frozen=True, kw_only=True):
    """The void of a payment-code sale (2 = the code, 22 = 032)."""


class PaycodeRefund(Refund, frozen=True, kw_only=True):
    """The refund of a payment-code sale (2 = the code, 22 = 032)."""


class PaycodePreAuth(PreAuth, frozen=True, kw_only=True):
    """risk.md's pre-authorisation by payment code: a hold on the ledger."""


class PaycodePreAuthVoid(PreAuthVoid, frozen=True, kw_only=True):
    """The void of a pre-authorisation by payment code: its hold released."""


class PaycodeCompletion(Completion, frozen=True, kw_only=True):
    """The completion of a pre-authorisation by payment code, on the ledger."""


class PaycodeCompletionVoid(CompletionVoid, frozen=True, kw_only=True):
    """The void of an on-us completion: what it took goes back, the hold again."""


class CardPayment(Sale, frozen=True, kw_only=True):
    """credit.md's payment to a card (bank-h2h.md: 0200, 3 = 280030): ``amount`` credited
    to ``card``'s account at its bank; 41 and 42 are ``[credit]``'s own."""


class WalletCard(Card, frozen=True, kw_only=True):
    """wallet.md's ``wallet_pay`` names no card: the customer's wallet, by its
    ``customer_id`` (``pan``), which the journal keeps sealed as it keeps a card
    number, and masks to nothing (settlement.md's ``masked_pan`` of a QR payment is
    empty)."""

    @property
    def masked_pan(self) -> str:
        return ""

    def __repr__(self) -> str:
        return "WalletCard(<customer>)"

    __str__ = __repr__


class QrPayment(Sale, frozen=True, kw_only=True):
    """wallet.md's ``wallet_pay``: the merchant (``acceptor.merchant_id``) of a QR paid
    from the wallet of ``card.pan`` (a :class:`WalletCard`), on the ledger. ``amount``
    is the request's, else the dynamic QR's (0: a static QR without one, refused 13
    by the ledger after the QR's own checks)."""

    app: str
    """The app principal (``app:<name>``): the wallet must be its own."""
    qr_id: str
    qr_kind: str
    """``static`` or ``dynamic``, as the payload says (the QR's record must agree)."""
    qr_amount: int | None = None
    """A dynamic payload's amount (fen)."""
    funding: str = "wallet"
    verification: str = "C"
    instalments: int | None = None
    """credit.md: the plan the customer chose, with funding ``credit``."""


class Topup(Sale, frozen=True, kw_only=True):
    """wallet.md's ``wallet_topup``: a card sale of ``[wallet] topup_merchant_id`` to
    the card's bank, whose approval credits the wallet of ``customer_id``."""

    app: str
    customer_id: str


class BatchSettlement(_Request, frozen=True, kw_only=True):
    """A terminal's 0500: its totals of the batch (``batch``, 60.2) it closes."""

    totals: BatchTotals
    field48: str
    """48 as the terminal sent it: the answer echoes it with 48.5 set."""


class BatchUpload(_Request, frozen=True, kw_only=True):
    """A terminal's 0320 after an unbalanced settlement: some of its record of the
    batch, or (the last one, 60.3 = 202) how many records it uploaded in all."""

    records: tuple[UploadRecord, ...] = ()
    total: int | None = None
    """Set on the last 0320 only, which carries no records."""


Request = (
    SignOn | Echo | Sale | BalanceInquiry | Void | Refund | Reversal | BatchSettlement
    | BatchUpload | PreAuth | PreAuthVoid | Completion | CompletionVoid | PaycodeSale
    | PaycodeVoid | PaycodeRefund | CardPayment | QrPayment | Topup | PaycodePreAuth
    | PaycodePreAuthVoid | PaycodeCompletion | PaycodeCompletionVoid
)  # fmt: skip
BatchRequest = BatchSettlement | BatchUpload
FinancialRequest = (
    Sale | BalanceInquiry | Void | Refund | Reversal | PreAuth | PreAuthVoid | Completion
    | CompletionVoid
)  # fmt: skip
BankBound = Sale | BalanceInquiry | Void | Refund

KIND_NAMES: dict[type[_Request], str] = {
    SignOn: "sign_on",
    Echo: "echo",
    Sale: "sale",
    BalanceInquiry: "balance",
    Void: "void",
    Refund: "refund",
    Reversal: "reversal",
    PaycodeSale: "onus_sale",
    PaycodeVoid: "onus_void",
    PaycodeRefund: "onus_refund",
    CardPayment: "card_payment",
    QrPayment: "wallet_pay",
    Topup: "wallet_topup",
    BatchSettlement: "settlement",
    BatchUpload: "batch_upload",
    PreAuth: "preauth",
    PreAuthVoid: "preauth_void",
    Completion: "completion",
    CompletionVoid: "completion_void",
    PaycodePreAuth: "onus_preauth",
    PaycodePreAuthVoid: "onus_preauth_void",
    PaycodeCompletion: "onus_completion",
    PaycodeCompletionVoid: "onus_completion_void",
}

PRODUCT_OF: dict[type[_Request], Product] = {
    request_type: PRODUCTS[kind] for request_type, kind in KIND_NAMES.items() if kind in PRODUCTS
}
"""Each financial request's product row (``switch.core.products``)."""
REQUEST_TYPES: dict[str, Callable[..., FinancialRequest]] = {
    product.kind: request_type  # type: ignore[misc]  # those in PRODUCT_OF are financial
    for request_type, product in PRODUCT_OF.items()
}
"""Each product's canonical request Struct."""


def original_of(request: FinancialRequest) -> OriginalRef:
    """The reference a request whose product acts on an original carries to find it
    (LookupError for one that carries none: its product row says it needs none)."""
    original: OriginalRef | None = getattr(request, "original", None)
    if original is None:
        raise LookupError(f"a {type(request).__name__} names no original")
    return original


if REQUEST_TYPES.keys() != PRODUCTS.keys():  # a row without its request Struct
    raise ImportError(f"products without a request type: {PRODUCTS.keys() - REQUEST_TYPES.keys()}")


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """The switch's answer to one request, whichever channel asked."""

    code: str
    message: str = ""
    """What the client is told (online results and errors); never internal detail."""
    detail: str | None = None
    """What only the operator's log is told (a journal's error, say)."""
    rrn: str | None = None
    auth_code: str | None = None
    balance: str | None = None
    """Field 54 as the bank gave it (additional amounts)."""
    settlement_date: str | None = None
    bank: str | None = None
    batch: str | None = None
    """A sign-on's new batch number."""
    hold_until: str | None = None
    """An approved pre-authorisation's last completion date (YYYY-MM-DD)."""
    batch_result: SettlementResult | None = None
    """A batch settlement's 48.5: "1" the switch's totals equal the terminal's, "2" not."""
    field: str | None = None
    """The field at fault, for a refusal."""
    route: str | None = None
    """How the bank was chosen: the BIN prefix that matched, or "original"."""
    bank_stan: str | None = None
    journal_ms: float | None = None
    """Where the time went, for the log: waiting for the journal's commits (the disk)..."""
    bank_ms: float | None = None
    """...and for the bank's answer. The rest of a transaction's time is the switch's."""
    stand_in: str | None = None
    """Approved by the switch in its bank's place (risk.md): why (``circuit_open``,
    ``no_link``, ``bank_91``); the log line says ``stand_in = true``."""

    funding: str | None = None
    """An on-us payment's funding once its payment code was found open (wallet.md:
    ``wallet`` or ``credit``; POS 63.1 ``WAL`` or ``CRL``)."""
    plan: PlanView | None = None
    """credit.md: an approved credit payment's instalment plan (online results)."""
    balance_after: int | None = None
    """A wallet payment's or top-up's ``balance_after`` (wallet.md), for the app only:
    what the wallet can spend once it is posted."""
    shed: bool = False
    """Refused 91 for want of capacity before any work: counted, not logged one by one
    (under overload a line per refusal would add to it)."""
    risk_rule: str | None = None
    """The risk rule that declined it (risk.md), for the log line; never for a client."""
    risk_review: str | None = None
    """The ``review`` rules that flagged it, comma-separated."""
    risk_shadow: str | None = None
    """The ``shadow`` rules that hit, comma-separated."""

    @property
    def approved(self) -> bool:
        return self.code == "00"


def balance_amount(field54: str | None) -> int | None:
    """The signed amount in minor units from an additional-amounts field
    (account type 2, amount type 2, currency 3, sign C/D 1, amount 12)."""
    if field54 is None or len(field54) < 20:
        return None
    sign, digits = field54[7], field54[8:20]
    if not digits.isdigit() or sign not in "CD":
        return None
    return int(digits) if sign == "C" else -int(digits)
