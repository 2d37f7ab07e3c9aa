"""The app's online transactions (wallet.md): ``wallet_pay`` and ``wallet_topup``, around
the switchboard that carries them through the transaction lifecycle.

The online channel hands an app principal's ``wallet_pay`` or ``wallet_topup`` here:
:meth:`WalletOnline.accept` reads it (a QR that does not read: ``error`` 30 naming
``qr``; a card as an online purchase's), :meth:`WalletOnline.before` makes wallet.md's
checks that come before the lifecycle, in its order (the wallet: 14, or ``error`` 03
for another app's; then a QR of another network 40 and its merchant not listed under
its own id 03; a top-up's route 92 and debit card 57, then its pending transfer), and
:meth:`WalletOnline.after` ends a top-up's transfer once the sale's answer is journaled:
posted (the wallet credited) only for an approval that stands, voided otherwise. A
refusal before the lifecycle journals nothing and keeps no result: the app may send
the request again under the same ``id``.

A ``wallet_pay`` itself is the lifecycle's: journaled, then its ledger step
(``switch.core.onus.PayByQr``: the QR's checks and the money checks with its pending
transfer, one atomic step), its answer journaled, the transfer posted or voided, then
answered. A crash between a top-up's approval and its credit leaves the transfer
pending: at start-up it is posted as the journal's approval says
(``switch.net.onus.LedgerDesk.recover``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Final

import msgspec
import structlog

from switch.core import online, products, validate, wallet_online
from switch.core.clock import Stamp
from switch.core.ledger import LedgerError, TransferKey
from switch.core.model import OriginalRef, Outcome, Request
from switch.core.onus import TOPUP_LEG
from switch.core.wallet import NotYourWallet
from switch.errors import TransactionRefused
from switch.net.app_desk import DeskCall
from switch.net.onus import LedgerDesk
from switch.net.switchboard import Switchboard
from switch.store.ledger_port import QrRecord
from switch.wire import app as app_wire
from switch.wire import online as wire

log = structlog.get_logger()

CardTypes = Mapping[str, str]
"""A BIN route's prefix -> its ``card`` (``debit`` or ``credit``; config's ``[[routes]]``)."""
DEFAULT_CARD: Final = "credit"
"""wallet.md: a route without ``card`` counts as credit."""
QR_PAYMENTS_MAX: Final = 50
"""``qr_status``'s payments: at most 50 (wallet.md)."""


class AppWork(msgspec.Struct, kw_only=True):
    """What an app transaction carries from its reading to its answer."""

    principal: str
    qr: wallet_online.QrRead | None = None
    merchant_name: str | None = None
    topup_key: TransferKey | None = None
    balance_after: int | None = None
    record_merchant: str = ""
    """The merchant its journal record is under (the QR's; ``topup_merchant_id``)."""


class WalletOnline:
    """wallet.md's ``wallet_pay`` and ``wallet_topup`` on the online channel."""

    def __init__(
        self, switchboard: Switchboard, ledger: LedgerDesk, card_types: CardTypes
    ) -> None:
        self.switchboard = switchboard
        self.ledger = ledger
        self.settings = ledger.settings
        self.card_types = dict(card_types)

    # -- reading (at once, on the frame) -----------------------------------------------

    def accept(
        self,
        message: wire.AppTransaction,
        principal: str,
        *,
        terminal_id: str,
        stan: str,
        today: date,
    ) -> tuple[Request | None, AppWork]:
        """The canonical request (None: a QR of another network, answered 40 once the
        wallet is checked) and what the answer needs; TransactionRefused for what
        fails validation."""
        work = AppWork(principal=principal)
        if isinstance(message, wire.WalletPay):
            work.qr = wallet_online.read_qr(message, self.settings.qr_gui)
            payload = work.qr.payload
            if payload is None:
                if message.amount is not None:
                    validate.check_amount(message.amount, field="amount")
                return None, work
            terms = self.switchboard.merchants.terms(payload.merchant_id)
            work.merchant_name = terms.name if terms is not None else None
            work.record_merchant = payload.merchant_id
            payment = wallet_online.qr_payment(
                message, payload, app=principal, terminal_id=terminal_id, stan=stan
            )
            return payment, work
        work.record_merchant = self.settings.topup_merchant_id
        request = wallet_online.topup_request(
            message, app=principal, terminal_id=terminal_id,
            merchant_id=self.settings.topup_merchant_id, stan=stan, today=today,
        )  # fmt: skip
        return request, work

    # -- before the lifecycle ------------------------------------------------------------

    async def before(
        self, message: wire.AppTransaction, request: Request | None, work: AppWork, stamp: Stamp
    ) -> Outcome | None:
        """wallet.md's checks ahead of the lifecycle, in its order; an outcome refuses
        the request (nothing journaled), None lets it go on. ``error`` 03 for a wallet
        another app opened raises TransactionRefused."""
        today = stamp.local.date().isoformat()
        settlement_date = self.switchboard.business_date(stamp)
        try:
            await self.ledger._run(
                lambda: self.ledger.store.wallet(message.customer_id, work.principal, today)
            )
        except NotYourWallet as exc:
            raise TransactionRefused("03", str(exc), field="customer_id") from None
        except LedgerError as exc:
            code = exc.response_code
            message_text = "no such wallet" if code == "14" else ""
            return Outcome(code=code, message=message_text, settlement_date=settlement_date)
        if isinstance(message, wire.WalletPay):
            assert work.qr is not None
            if work.qr.payload is None:
                return Outcome(code="40", message="QR of another network",
                               settlement_date=settlement_date)  # fmt: skip
            merchant_id = work.qr.payload.merchant_id
            if self.switchboard.merchants.own_terms(merchant_id) is None:
                # Only merchants listed under their own id have QR codes (not ``*``'s).
                return Outcome(code="03", message="invalid merchant",
                               settlement_date=settlement_date)  # fmt: skip
            return None
        assert request is not None and request.card is not None  # type: ignore[union-attr]
        return await self._reserve_topup(message, request, work, settlement_date)

    async def _reserve_topup(
        self, message: wire.WalletTopup, request: Request, work: AppWork, settlement_date: str
    ) -> Outcome | None:
        pan = request.card.pan  # type: ignore[union-attr]
        found = self.switchboard.bins.route_or_none(pan)
        if found is None:
            return Outcome(code="92", message="no route to issuer",
                           settlement_date=settlement_date)  # fmt: skip
        prefix, bank, _ = found
        if self.card_types.get(prefix, DEFAULT_CARD) != "debit":
            return Outcome(code="57", message="a top-up is from a debit card",
                           settlement_date=settlement_date)  # fmt: skip
        key = TransferKey(work.principal, message.id, TOPUP_LEG)
        try:
            reserved = await self.ledger.reserve_topup(
                key, customer_id=message.customer_id, bank=bank, amount=message.amount,
                business_date=settlement_date,
            )  # fmt: skip
        except LedgerError as exc:
            log.error("topup_not_reserved", customer=message.customer_id, error=str(exc))
            return Outcome(code="91", message="issuer or switch inoperative",
                           settlement_date=settlement_date)  # fmt: skip
        if reserved is None:
            # Its transfer is there already: the same id is in progress, or was,
            # through another worker (its result, once kept, answers the repeats).
            raise TransactionRefused("94", "a request with this id is in progress", field="id")
        work.topup_key, work.balance_after = key, reserved
        return None

    # -- after the lifecycle -------------------------------------------------------------

    async def after(self, work: AppWork, outcome: Outcome) -> Outcome:
        """A top-up's transfer ended as its journaled answer says: posted for an
        approval (the wallet credited), voided otherwise (a decline, a timeout, a
        reversal: never credited). A post that fails leaves the transfer pending, which
        the next start posts, as the journal approved it: answered 96 meanwhile."""
        key = work.topup_key
        if key is None:
            return outcome
        approved = outcome.approved
        try:
            await self.ledger.end_topup(key, approved=approved, rrn=outcome.rrn)
        except LedgerError as exc:
            log.error("topup_not_ended", key=str(key), approved=approved, error=str(exc))
            if approved:
                return msgspec.structs.replace(
                    outcome, code="96", message="system malfunction",
                    detail=f"top-up approved, not credited yet: {exc}",
                )  # fmt: skip
        return outcome

    async def paid_by_qr(
        self, request: Request | None, merchant_id: str, original_id: str
    ) -> Request | None:
        """A merchant's void or refund naming the ``qr_create`` id of one of its dynamic
        QR codes names the payment that holds it ``paying`` or ``paid`` (wallet.md); any
        other request is as it came."""
        try:
            qr = await self.ledger._run(
                lambda: self.ledger.store.qr_by_online_id(merchant_id, original_id)
            )
        except LedgerError as exc:
            log.warning("qr_lookup_failed", merchant=merchant_id, error=str(exc))
            return request
        if qr is None or qr.paying is None or request is None:
            return request
        return msgspec.structs.replace(
            request, original=OriginalRef(online_id=qr.paying)
        )

    async def payments_of(self, record: QrRecord, call: DeskCall) -> list[app_wire.QrPaymentOut]:
        """``qr_status``'s ``payments`` (wallet.md): the QR's approved payments, newest
        first, at most 50, each with its business date and what was refunded of it
        (all of it once voided or reversed), as the journal has them now."""
        rows = await self.ledger._run(
            lambda: self.ledger.store.qr_payments(record.qr_id, QR_PAYMENTS_MAX)
        )
        payments = []
        for rrn, amount, at in rows:
            txn = await self.switchboard.journal.transaction_by_rrn(rrn)
            refunded = 0 if txn is None else txn.refunded
            if txn is not None and (txn.voided or txn.reversed):
                refunded = amount
            payments.append(app_wire.QrPaymentOut(
                rrn=rrn, amount=amount, time=call.local_time(at),
                settlement_date=txn.business_date if txn is not None else "",
                refunded=refunded,
            ))  # fmt: skip
        return payments

    async def status_of(self, status: wire.Status) -> wire.Result | None:
        """A merchant's ``status`` of an on-us payment (wallet.md) named by its RRN, or
        by the ``qr_create`` id of the dynamic QR it pays: the payment's result as its
        merchant sees it (online.md's fields and ``funding``; never a balance); None if
        it names none of the merchant's."""
        journal = self.switchboard.journal
        merchant_id = status.merchant_id
        if status.original_rrn is not None:
            txn = await journal.transaction_by_rrn(status.original_rrn)
        else:
            original_id = status.original_id
            assert original_id is not None
            try:
                qr = await self.ledger._run(
                    lambda: self.ledger.store.qr_by_online_id(merchant_id, original_id)
                )
            except LedgerError:
                return None
            if qr is None or qr.paying is None:
                return None
            txn = await journal.transaction_by_online_id(merchant_id, qr.paying)
        if (
            txn is None or txn.merchant_id != merchant_id
            or products.PRODUCTS.get(txn.kind) is None
            or products.PRODUCTS[txn.kind].destination != "ledger"
        ):  # fmt: skip
            return None
        code = txn.code or ("00" if txn.state == "approved" else "96")
        approved = code == "00" and txn.state == "approved"
        return wire.Result(
            id=status.id, code=code, approved=approved, rrn=txn.rrn,
            auth_code=txn.auth_code if approved else None,
            message=online.MESSAGES.get(code, "declined"),
            settlement_date=txn.business_date or None, funding="wallet",
        )  # fmt: skip

    def result(
        self, message: wire.AppTransaction, work: AppWork, outcome: Outcome
    ) -> wire.WalletPayResult | wire.WalletTopupResult:
        if isinstance(message, wire.WalletPay):
            return wallet_online.pay_result(
                message, outcome,
                payload=work.qr.payload if work.qr is not None else None,
                merchant_name=work.merchant_name,
            )  # fmt: skip
        if outcome.approved and work.balance_after is not None:
            outcome = msgspec.structs.replace(outcome, balance_after=work.balance_after)
        return wallet_online.topup_result(message, outcome)


def card_types(routes: object) -> dict[str, str]:
    """Prefix -> ``card`` of config's ``[[routes]]``."""
    return {route.prefix: route.card for route in routes}  # type: ignore[attr-defined]
