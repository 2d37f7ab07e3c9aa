"""On-us products' steps on the ledger (wallet.md), as the lifecycle asks for them.

A product whose destination is the ledger (``products.Product.destination``) is carried
out by the switch itself: the lifecycle returns :class:`PostToLedger` where a bank-bound
one returns ``Exchange``, and the trio layer (``switch.net.onus``) carries the step out
against the ledger store and feeds back :class:`LedgerAnswered`. Plain data, no I/O.

The steps of a payment-code sale::

    admitted ── journal the request ── PayByCode (14, 65; risk.md's rules; 61, 51)
             ── journal the answer ── EndTransfer (post or void; none if 14 or 65) ── answer

A void or refund reserves its compensating transfer (``ReserveBack``) once its request is
journaled, and ends it once its answer is; a terminal's reversal reserves the
compensating transfer of a posted payment (or voids a pending one), journals the
reversal, then posts it. At start-up each pending transfer is ended as the journal's
record of its request says (:func:`journal_answer`, then ``core.ledger.recovery``).

Transfer keys (wallet.md): POS ``pos:<42>:<41>``, id = 60.2 and 11; online the
merchant principal and the request's ``id``; the leg names the movement.
"""

from __future__ import annotations

from typing import Final

import msgspec

from switch.core.book import TxnRecord, hold_open
from switch.core.credit.book import PlanView
from switch.core.ledger import Answer, TransferKey
from switch.core.model import BankBound, QrPayment
from switch.core.onus_hold import HoldStep
from switch.core.risk import RiskRequest, Verdict

LEGS: Final[dict[str, str]] = {
    "onus_sale": "pay",
    "wallet_pay": "pay",
    "onus_void": "void",
    "onus_refund": "refund",
    "onus_preauth": "hold",
    "onus_completion": "pay",
    "onus_preauth_void": "void",
    "onus_completion_void": "void",
}
"""The leg of each ledger product's own transfer (history's kind)."""
REVERSAL_LEG: Final = "reversal"
TOPUP_LEG: Final = "topup"
"""The leg of a top-up's transfer (``bank_clearing:<bank>`` to ``wallet:<c>``)."""
PAYMENT_LEGS: Final = frozenset((LEGS["onus_sale"], TOPUP_LEG))
"""The legs ended as a payment's (``end_payment``: its counts, QR and order follow)."""
"""The leg of the compensating transfer of a terminal's reversal."""
LEDGER_ROUTE: Final = "ledger"
"""``route`` of an on-us outcome (where a card's names its BIN prefix)."""


APP_ID_SEPARATOR: Final = " "
"""Between the app principal and its request's ``id`` in the journal's ``online_id`` of
an app's transaction (``app:wallet pay-1``): the record is its merchant's (the QR's, or
``topup_merchant_id``), and no merchant's own ``id`` holds a space, so none is taken
for it. A dynamic QR's ``paying`` names its payment the same way."""


def app_online_id(app: str, request_id: str) -> str:
    """The journal's ``online_id`` of the app principal ``app``'s request ``request_id``."""
    return f"{app}{APP_ID_SEPARATOR}{request_id}"


def split_app_online_id(online_id: str | None) -> tuple[str, str] | None:
    """(app principal, request id) of an app transaction's ``online_id``; None else."""
    if online_id is None or not online_id.startswith("app:"):
        return None
    app, separator, request_id = online_id.partition(APP_ID_SEPARATOR)
    return (app, request_id) if separator and request_id else None


def request_key(
    *, channel: str, merchant_id: str, terminal_id: str, batch: str, stan: str,
    online_id: str | None, leg: str,
) -> TransferKey:  # fmt: skip
    """The ledger key of a request (wallet.md): the app's own principal and ``id`` for
    an app's transaction."""
    if channel == "pos":
        return TransferKey(f"pos:{merchant_id}:{terminal_id}", batch + stan, leg)
    app = split_app_online_id(online_id)
    if app is not None:
        return TransferKey(app[0], app[1], leg)
    return TransferKey(f"merchant:{merchant_id}", online_id or stan, leg)


def record_key(record: TxnRecord, leg: str | None = None) -> TransferKey:
    """The ledger key of a journaled on-us transaction's own transfer (or ``leg``)."""
    return request_key(
        channel=record.channel, merchant_id=record.merchant_id,
        terminal_id=record.terminal_id, batch=record.batch, stan=record.stan,
        online_id=record.online_id, leg=leg or LEGS[record.kind],
    )  # fmt: skip


def parse_pos_key(key: TransferKey) -> tuple[str, str, str, str] | None:
    """(terminal, merchant, batch, STAN) of a POS key; None for another principal."""
    kind, _, rest = key.principal.partition(":")
    merchant_id, _, terminal_id = rest.partition(":")
    if kind != "pos" or not terminal_id or len(key.id) != 12:
        return None
    return terminal_id, merchant_id, key.id[:6], key.id[6:]


def journal_answer(key: TransferKey, record: TxnRecord | None) -> Answer | None:
    """What the journal says of a pending transfer's request, for ``ledger.recovery``:
    ``approved`` (post), ``declined`` or ``none`` (void); None: left alone. Left alone:
    a request still in flight (``sending``: a live worker's, or in doubt until the
    journal's recovery settles it), and a terminal's reversal reserved but not yet
    journaled: it may be a live worker's, between its two steps, and voiding it would
    leave the journal saying reversed and the ledger paid; the terminal repeats its
    reversal until answered, which posts it."""
    if record is None:
        return "none"
    if record.state == "sending":
        return None
    if record.hold_state is not None and key.leg.startswith(LEGS["onus_preauth"]):
        # risk.md: the hold of an open pre-authorisation stays pending; a completed
        # one's is the completion's to post (left alone); any other is released.
        if record.hold_state == "completed":
            return None
        return "open_hold" if hold_open(record) else "declined"
    if key.leg == REVERSAL_LEG:
        return "approved" if record.reversed and record.state == "approved" else None
    if record.state == "approved" and not record.reversed:
        return "approved"
    return "declined"


# -- the steps: actions the lifecycle returns -------------------------------------------


class PayByCode(msgspec.Struct, frozen=True, kw_only=True):
    """A payment-code sale's step, one ledger transaction: the code found open and used
    (14 unknown, expired, used, cancelled or failing Luhn; 65 past the terminal's probe
    limit), then the payment's checks (class limit 61, daily caps 61, balance 51) and
    its pending transfer. The code is used whatever the payment's outcome."""

    code: str
    terminal: str
    """Whose probes count: POS ``<41>:<42>``."""
    key: TransferKey
    merchant_id: str
    amount: int
    rrn: str
    local_date: str
    """YYYY-MM-DD: today, local calendar date."""
    risk: RiskRequest | None = None
    """The risk rules' request (risk.md) but its customer and funding, which the code
    names: evaluated once the code is found open, before the payment's checks
    (wallet.md's order); None: no rules."""
    received: float = 0.0
    """When the request was received: the moment the rules count it at."""
    holds: bool = False
    """A pre-authorisation (risk.md, "On-us funding"): checked as a payment, its
    pending transfer is the hold, kept with whose it is (``hold_keep``)."""


class PayByQr(msgspec.Struct, frozen=True, kw_only=True):
    """A ``wallet_pay``'s step, one ledger transaction (wallet.md's order): the wallet
    (14, 03); the QR as issued to its merchant (14), a dynamic one not expired (54),
    neither paid nor being paid (94), the amount (13: a static QR's given, a dynamic
    one's equal); risk.md's rules (``risk``, with the wallet's customer and
    ``funding``); then, by ``funding``, the wallet's money checks (class limit 61,
    daily caps 61, balance 51) and its pending transfer, which holds a dynamic QR
    ``paying`` until it is ended."""

    key: TransferKey
    app: str
    customer_id: str
    merchant_id: str
    qr_id: str
    qr_kind: str
    qr_amount: int | None
    amount: int
    funding: str
    verification: str
    rrn: str
    local_date: str
    """YYYY-MM-DD: today, local calendar date."""
    instalments: int | None = None
    """credit.md: the plan of a payment with funding ``credit``."""
    risk: RiskRequest | None = None
    """The risk rules' request (risk.md) but its customer and funding: evaluated once
    the QR's checks pass, before the money checks (wallet.md's order); None: no
    rules."""
    received: float = 0.0
    """When the request was received: the moment the rules count it at."""


class ReserveBack(msgspec.Struct, frozen=True, kw_only=True):
    """The pending transfer that undoes (all or ``amount`` of) the posted transfer
    ``original``: its credit account debited, its debit account credited. A pending
    ``original`` is voided instead (``reversal``: nothing was paid yet)."""

    original: TransferKey
    key: TransferKey
    amount: int
    kind: str
    rrn: str
    merchant_id: str
    reversal: bool = False


class EndTransfer(msgspec.Struct, frozen=True, kw_only=True):
    """Post (``approved``) or void a pending transfer; ``payment``: a payment's own (its
    counts and code follow), ``uncount``: the payment a posted void or reversal takes out
    of the wallet's counts. A key that names nothing is nothing to end."""

    key: TransferKey
    approved: bool
    payment: bool = False
    uncount: TransferKey | None = None
    qr_id: str | None = None
    """The dynamic QR the payment holds ``paying``: ``paid`` or ``open`` again."""


LedgerStep = PayByCode | PayByQr | ReserveBack | EndTransfer | HoldStep


class PostToLedger(msgspec.Struct, frozen=True):
    """Carry ``step`` out against the ledger store: LedgerAnswered."""

    step: LedgerStep


class LedgerAnswered(msgspec.Struct, frozen=True, kw_only=True):
    """What the ledger did: ``code`` 00, or the refusal's (wallet.md's codes; 91 store
    unavailable, 96 our own misuse). A code found open names its customer, funding and
    tier, whatever the payment's outcome."""

    code: str = "00"
    message: str = ""
    detail: str | None = None
    customer_id: str | None = None
    funding: str | None = None
    verification: str | None = None
    auth_code: str | None = None
    verdict: Verdict | None = None
    """The risk rules' verdict on a payment whose code was found open (None: no rules,
    or the code was not open); a decline's code is ``code``."""
    qr_id: str | None = None
    """The dynamic QR a ``wallet_pay``'s reserve holds ``paying``."""
    balance_after: int | None = None
    """What the wallet can spend once the payment is posted (``wallet_pay``)."""
    plan: PlanView | None = None
    """credit.md: an approved payment's plan, with funding ``credit`` and instalments."""
    rehold: bool | None = None
    """A completion's void or reversal: whether its pre-authorisation is held again
    (else it ends ``voided``: the funds are gone)."""

    @property
    def ok(self) -> bool:
        return self.code == "00"


def payment_step(
    request: BankBound,
    record: TxnRecord,
    key: TransferKey,
    local_date: str,
    *,
    risk: RiskRequest | None = None,
    received: float = 0.0,
    holds: bool = False,
) -> PayByCode | PayByQr:
    """The ledger step of an on-us payment whose request is journaled: a QR paid from
    the app (``wallet_pay``), else a payment code's sale; either with the risk rules'
    request, evaluated on the ledger at wallet.md's place (once the code names its
    customer; once the QR's checks pass)."""
    assert request.card is not None
    if isinstance(request, QrPayment):
        return PayByQr(
            key=key, app=request.app, customer_id=request.card.pan,
            merchant_id=record.merchant_id, qr_id=request.qr_id, qr_kind=request.qr_kind,
            qr_amount=request.qr_amount, amount=record.amount, funding=request.funding,
            verification=request.verification, rrn=record.rrn, local_date=local_date,
            instalments=request.instalments, risk=risk, received=received,
        )  # fmt: skip
    acceptor = request.acceptor
    return PayByCode(
        code=request.card.pan, terminal=f"{acceptor.terminal_id}:{acceptor.merchant_id}",
        key=key, merchant_id=record.merchant_id, amount=record.amount, rrn=record.rrn,
        local_date=local_date, risk=risk, received=received, holds=holds,
    )  # fmt: skip
