"""The app's online requests that are transactions (wallet.md): ``wallet_pay`` and
``wallet_topup``, mapped to the canonical requests the lifecycle carries out
(:class:`~switch.core.model.QrPayment` on the ledger, :class:`~switch.core.model.Topup`
at the card's bank), and their results back. Pure Python, no I/O.

Both are journaled under their merchant (the QR's, or ``[wallet] topup_merchant_id``)
with ``online_id`` = the app principal, a space and the request's ``id``
(``switch.core.onus.app_online_id``): the ledger key of their transfer is the app's own
principal and ``id`` (wallet.md), and no merchant's own ``id`` is ever taken for one.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date
from typing import Final

import msgspec

from switch.core import online, products, validate
from switch.core.model import Acceptor, Outcome, QrPayment, Topup, WalletCard
from switch.core.onus import app_online_id
from switch.errors import TransactionRefused
from switch.wire import emvqr
from switch.wire import online as wire

APP_TRANSACTIONS: Final = frozenset(("wallet_pay", "wallet_topup"))
"""The ``type`` of the app principal's requests that are transactions."""
ONUS_CURRENCY: Final = "156"


class QrRead(msgspec.Struct, frozen=True, kw_only=True):
    """A ``wallet_pay``'s QR as its payload reads: the payload, or why it is another
    network's (40: answered after the wallet's own check, wallet.md's order)."""

    payload: emvqr.QrPayload | None
    other_network: str | None = None


def read_qr(message: wire.WalletPay, gui: str) -> QrRead:
    """The payload, CRC checked: one that does not read is ``error`` 30 naming ``qr``
    (TransactionRefused); one without a template of ``gui`` is 40, kept for later."""
    try:
        return QrRead(payload=emvqr.decode(message.qr, gui))
    except emvqr.QrOtherNetwork as exc:
        return QrRead(payload=None, other_network=str(exc))
    except emvqr.QrMalformed as exc:
        raise TransactionRefused("30", str(exc), field="qr") from None


def qr_payment(
    message: wire.WalletPay, payload: emvqr.QrPayload, *, app: str, terminal_id: str, stan: str
) -> QrPayment:
    """The canonical ``wallet_pay``: its merchant the QR's; its amount the request's
    (13 outside 1..10^12-1), else a dynamic QR's, else 0 (a static QR without one:
    refused 13 by the ledger, once the QR is found as issued)."""
    amount = message.amount
    if amount is not None:
        validate.check_amount(amount, field="amount")
    elif payload.kind == "dynamic":
        amount = payload.amount
    product = products.PRODUCTS["wallet_pay"]
    return QrPayment(
        acceptor=Acceptor(channel="online", terminal_id=terminal_id,
                          merchant_id=payload.merchant_id),
        stan=stan, online_id=app_online_id(app, message.id),
        processing_code=product.online_code, device_id=message.device_id,
        card=WalletCard(pan=message.customer_id, entry_mode="000",
                        condition_code=online.ONLINE_CONDITION_CODE),
        currency=ONUS_CURRENCY, amount=amount or 0, app=app, qr_id=payload.qr_id,
        qr_kind=payload.kind, qr_amount=payload.amount, funding=message.funding,
        verification=message.verification,
    )  # fmt: skip


def topup_request(
    message: wire.WalletTopup,
    *,
    app: str,
    terminal_id: str,
    merchant_id: str,
    stan: str,
    today: date | None,
    currencies: Collection[str] = validate.SETTLED_CURRENCIES,
) -> Topup:
    """The canonical ``wallet_topup``: a CNY sale of ``merchant_id``
    (``topup_merchant_id``) on the card, checked as an online purchase's (14, 54, 13)."""
    validate.check_amount(message.amount, field="amount")
    currency = validate.settled_currency("CNY", currencies, field="currency")
    card = online.online_card(message.card, today)
    product = products.PRODUCTS["wallet_topup"]
    return Topup(
        acceptor=Acceptor(channel="online", terminal_id=terminal_id, merchant_id=merchant_id),
        stan=stan, online_id=app_online_id(app, message.id),
        processing_code=product.online_code, device_id=message.device_id, card=card,
        currency=currency, amount=message.amount, app=app, customer_id=message.customer_id,
    )  # fmt: skip


def _message(outcome: Outcome) -> str:
    return outcome.message or online.MESSAGES.get(outcome.code, "declined")


def pay_result(
    message: wire.WalletPay,
    outcome: Outcome,
    *,
    payload: emvqr.QrPayload | None = None,
    merchant_name: str | None = None,
) -> wire.WalletPayResult:
    """wallet.md's ``wallet_pay`` result: ``rrn``, ``settlement_date``, ``amount``,
    ``merchant_id``, ``merchant_name``, ``qr_id``, ``funding``; approved, ``auth_code``
    and, for ``wallet``, ``balance_after`` (the app's only). A refusal before the QR's
    merchant is known names none of them."""
    approved = outcome.approved
    amount = message.amount
    if amount is None and payload is not None and payload.kind == "dynamic":
        amount = payload.amount
    return wire.WalletPayResult(
        id=message.id, code=outcome.code, approved=approved, rrn=outcome.rrn,
        auth_code=outcome.auth_code if approved else None,
        settlement_date=outcome.settlement_date,
        amount=amount if payload is not None else None,
        merchant_id=payload.merchant_id if payload is not None else None,
        merchant_name=merchant_name if payload is not None else None,
        qr_id=payload.qr_id if payload is not None else None,
        funding=message.funding if payload is not None else None,
        balance_after=(outcome.balance_after
                       if approved and message.funding == "wallet" else None),
        message=_message(outcome), order_id=message.order_id, memo=message.memo,
    )  # fmt: skip


def topup_result(message: wire.WalletTopup, outcome: Outcome) -> wire.WalletTopupResult:
    """wallet.md's ``wallet_topup`` result: ``rrn``, ``settlement_date``; approved,
    ``auth_code`` and ``balance_after``."""
    approved = outcome.approved
    return wire.WalletTopupResult(
        id=message.id, code=outcome.code, approved=approved, rrn=outcome.rrn,
        auth_code=outcome.auth_code if approved else None,
        settlement_date=outcome.settlement_date,
        balance_after=outcome.balance_after if approved else None,
        message=_message(outcome), order_id=message.order_id, memo=message.memo,
    )  # fmt: skip
