"""The co-brand card in the ledger store (credit.md, "Co-brand card"), for both engines:
the link, the points of each linked card's sale on the ledger, and the conversion's
pending hold on the credit line, made into a plan or released by the payment's answer.

Mixed into ``LedgerStoreBase`` beside ``CreditSteps``: each step is one transaction
that locks the credit account (a conversion) or the sale's row (its points) before it
decides, so two workers take turns. Points' transfers are keyed by what moved them
(the sale, or the void, refund, reversal or settlement that took them back): noted
again, nothing moves twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import Any, ClassVar, Final, Protocol

import msgspec

from switch.core.credit import book as books
from switch.core.credit import cobrand
from switch.core.credit.billing import (
    AccountView,
    CobrandTotals,
    open_date,
    purchase_refusal,
    receivable,
)
from switch.core.credit.book import PlanView
from switch.core.credit.cobrand import (
    POINTS_ISSUED,
    POINTS_PRINCIPAL,
    Change,
    CobrandSale,
    SaleView,
    change_of,
    conversion_refusal,
    points_account,
    points_of,
    sale_view,
    undo_of,
)
from switch.core.credit.plan import CreditRefused, Terms, make_plan
from switch.core.ledger import LedgerDamaged, TransferKey, TransferNotFound, TransferSpec
from switch.core.ledger import wallet_account as ledger_wallet
from switch.core.wallet import NotYourWallet
from switch.store.cobrand_sql import CobrandSql
from switch.store.credit_store import CreditSteps, CreditStopped

Row = Mapping[str, Any]

FEE_INCOME: Final = "instalment_fee_income"
RECON_LOSS: Final = "recon_loss"
PENDING: Final = "pending"
"""``converted_rrn`` of a sale while its payment to the card awaits the bank."""


class Link(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    pan_hmac: bytes
    pan_sealed: bytes
    masked_pan: str


class ConversionHold(msgspec.Struct, frozen=True, kw_only=True):
    """A conversion's checks passed and its pending transfer made: the payment to send."""

    amount_fen: int
    pan_sealed: bytes
    bank: str
    again: bool = False
    """The key had held before (a repeat): nothing new was held."""


class PendingConversion(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    sale_rrn: str
    key_id: str
    """The hold's key's ``id``: the payment's online id in the journal."""


class PointsBalance(msgspec.Struct, frozen=True):
    points: int
    masked_pan: str | None


class CobrandPort(Protocol):
    """The co-brand steps, as the transaction path uses them (``net/cobrand.py``)."""

    def cobrand_link(
        self, customer_id: str, app: str, *, pan_hmac: bytes, pan_sealed: bytes,
        masked_pan: str, at: float,
    ) -> str: ...  # fmt: skip
    def cobrand_link_of(self, customer_id: str) -> Link | None: ...
    def credit_status(self, customer_id: str, app: str | None = None) -> AccountView: ...
    def cobrand_sale_approved(
        self, *, pan_hmac: bytes, rrn: str, business_date: str, merchant_id: str, bank: str,
        amount_fen: int, points_per_yuan: int, sold_at: float, at: float,
    ) -> int | None: ...  # fmt: skip
    def cobrand_sale_changed(
        self, rrn: str, change: Change, *, ref: str, amount_fen: int,
        points_per_yuan: int, at: float,
    ) -> int: ...  # fmt: skip
    def cobrand_change_reversed(
        self, rrn: str, change: Change, *, ref: str, amount_fen: int, at: float
    ) -> int: ...
    def cobrand_sales(self, customer_id: str, app: str, convert_days: int) -> list[SaleView]: ...
    def points_balance(self, customer_id: str, app: str | None = None) -> PointsBalance: ...
    def cobrand_hold(
        self, customer_id: str, app: str, *, key: TransferKey, sale_rrn: str,
        instalments: int, bank: str, convert_days: int, terms: Terms, at: float,
    ) -> ConversionHold: ...  # fmt: skip
    def cobrand_end(
        self, customer_id: str, *, key: TransferKey, sale_rrn: str, payment_rrn: str | None,
        approved: bool, at: float,
    ) -> PlanView | None: ...  # fmt: skip
    def cobrand_cancel(self, payment_rrn: str, at: float) -> int: ...
    def cobrand_totals(self) -> CobrandTotals: ...
    def cobrand_pending(self) -> list[PendingConversion]: ...
    def cobrand_mismatch(
        self, payment_rrn: str, switch_fen: int, bank_fen: int, at: float
    ) -> int: ...


def _link(row: Row) -> Link:
    return Link(
        customer_id=row["customer_id"], pan_hmac=bytes.fromhex(row["pan_hmac"]),
        pan_sealed=bytes.fromhex(row["pan_sealed"]), masked_pan=row["masked_pan"],
    )  # fmt: skip


def _sale(row: Row) -> CobrandSale:
    return CobrandSale(
        rrn=row["rrn"], customer_id=row["customer_id"],
        business_date=date.fromisoformat(row["business_date"]), merchant_id=row["merchant_id"],
        bank=row["bank"], amount_fen=row["amount_fen"], refunded_fen=row["refunded_fen"],
        points=row["points"], state=row["state"], converted_rrn=row["converted_rrn"],
    )  # fmt: skip


class CobrandSteps(CreditSteps):
    """The co-brand steps of the ledger store (mixed into ``LedgerStoreBase``)."""

    cobrand: ClassVar[CobrandSql]

    # -- the link -------------------------------------------------------------------------

    def cobrand_link(
        self, customer_id: str, app: str, *, pan_hmac: bytes, pan_sealed: bytes,
        masked_pan: str, at: float,
    ) -> str:  # fmt: skip
        """``cobrand_link`` at ``at`` (the business clock: a sale received before earns
        nothing) of a Luhn-valid co-brand card (the caller checked both): the
        customer needs a credit account (14; another app's: 03); a card linked to
        another customer is 12; the same link again changes nothing; a new card
        replaces the old. The masked card number."""

        def body() -> str:
            self._credit_account(customer_id, app, lock=True)
            other = self._first(self.cobrand.link_by_hmac, (pan_hmac.hex(),))
            if other is not None:
                if other["customer_id"] != customer_id:
                    raise CreditStopped("12", "the card is linked to another customer")
                return str(other["masked_pan"])
            card = (pan_hmac.hex(), pan_sealed.hex(), masked_pan, at)
            if self._first(self.cobrand.link_of, (customer_id,)) is None:
                self._execute(self.cobrand.insert_link, (customer_id, *card))
            else:
                self._execute(self.cobrand.replace_link, (*card, customer_id))
            return masked_pan

        return self._step("cobrand_link", body)

    def cobrand_link_of(self, customer_id: str) -> Link | None:
        row = self._read(lambda: self._first(self.cobrand.link_of, (customer_id,)))
        return None if row is None else _link(row)

    # -- points -----------------------------------------------------------------------------

    def cobrand_sale_approved(
        self, *, pan_hmac: bytes, rrn: str, business_date: str, merchant_id: str, bank: str,
        amount_fen: int, points_per_yuan: int, sold_at: float, at: float,
    ) -> int | None:  # fmt: skip
        """An approved sale of a card received at ``sold_at`` (the business clock, as
        the link's time): when the card was linked by then, the sale is kept and its
        points go to the customer (``points_issued`` → ``points:<c>``). The points it
        earned; None when the card is linked to no one, or was linked after the sale.
        Noted again: nothing more."""

        def body() -> int | None:
            link = self._first(self.cobrand.link_by_hmac, (pan_hmac.hex(),))
            if link is None or link["linked_at"] > sold_at:
                return None
            existing = self._first(self.cobrand.lock_sale, (rrn,))
            if existing is not None:
                return int(existing["points"])
            customer_id = link["customer_id"]
            points = points_of(amount_fen, points_per_yuan)
            self._execute(self.cobrand.insert_sale,
                          (rrn, customer_id, business_date, merchant_id, bank, amount_fen, 0,
                           points, "standing", None, pan_hmac.hex(), at))  # fmt: skip
            if points:
                key = TransferKey(POINTS_PRINCIPAL, rrn, "points")
                spec = TransferSpec(key=key, debit=POINTS_ISSUED,
                                    credit=points_account(customer_id), amount=points,
                                    kind="points", rrn=rrn, merchant_id=merchant_id)  # fmt: skip
                self._move("transfer", key, at, spec=spec)
            return points

        return self._step("cobrand_sale_approved", body)

    def cobrand_sale_changed(
        self, rrn: str, change: Change, *, ref: str, amount_fen: int,
        points_per_yuan: int, at: float,
    ) -> int:  # fmt: skip
        """A void, refund (of ``amount_fen``), reversal or settlement's not paying of the
        sale ``rrn``, by ``ref`` (the void's or refund's RRN; the sale's own for the
        others): the points it takes back (``points:<c>`` → ``points_issued``); 0 for a
        sale no link kept, or a ``ref`` applied before."""

        def body() -> int:
            row = self._first(self.cobrand.lock_sale, (rrn,))
            if row is None:
                return 0
            if self._first(self.cobrand.change_of, (ref, change)) is not None:
                return 0  # applied before
            self._execute(self.cobrand.insert_change, (ref, change, rrn, at))
            sale = _sale(row)
            move = change_of(sale, change, amount_fen, points_per_yuan)
            if move.points_back:
                key = TransferKey(POINTS_PRINCIPAL, ref, f"points_{change}")
                spec = TransferSpec(key=key, debit=points_account(sale.customer_id),
                                    credit=POINTS_ISSUED, amount=move.points_back,
                                    kind="points_back", rrn=rrn)  # fmt: skip
                self._move("transfer", key, at, spec=spec)
            self._execute(self.cobrand.update_sale,
                          (move.refunded_fen, sale.points - move.points_back, move.state,
                           sale.converted_rrn, at, rrn))  # fmt: skip
            return move.points_back

        return self._step("cobrand_sale_changed", body)

    def cobrand_change_reversed(
        self, rrn: str, change: Change, *, ref: str, amount_fen: int, at: float
    ) -> int:
        """A terminal's reversal of the void or refund ``ref`` (of ``amount_fen``) of the
        sale ``rrn``: what that change took comes back (``points_issued`` →
        ``points:<c>``, leg ``points_<change>_reversed``), a voided sale stands again,
        a refund's amount is refunded no more. Kept as the change ``reversal`` of
        ``ref``: again, nothing more. The points given; 0 for a sale no link kept, a
        change never applied, or one reversed before."""

        def body() -> int:
            row = self._first(self.cobrand.lock_sale, (rrn,))
            if row is None or self._first(self.cobrand.change_of, (ref, change)) is None:
                return 0
            if self._first(self.cobrand.change_of, (ref, "reversal")) is not None:
                return 0  # reversed before
            self._execute(self.cobrand.insert_change, (ref, "reversal", rrn, at))
            sale = _sale(row)
            took = self._lock_transfer(TransferKey(POINTS_PRINCIPAL, ref, f"points_{change}"))
            taken = took.posted_amount if took is not None else 0
            move = undo_of(sale, change, amount_fen, taken)
            given = -move.points_back
            if given:
                key = TransferKey(POINTS_PRINCIPAL, ref, f"points_{change}_reversed")
                spec = TransferSpec(key=key, debit=POINTS_ISSUED,
                                    credit=points_account(sale.customer_id), amount=given,
                                    kind="points", rrn=rrn,
                                    merchant_id=sale.merchant_id)  # fmt: skip
                self._move("transfer", key, at, spec=spec)
            self._execute(self.cobrand.update_sale,
                          (move.refunded_fen, sale.points + given, move.state,
                           sale.converted_rrn, at, rrn))  # fmt: skip
            return given

        return self._step("cobrand_change_reversed", body)

    def cobrand_sales(self, customer_id: str, app: str, convert_days: int) -> list[SaleView]:
        """``cobrand_sales``: the linked card's standing sales of the last
        ``convert_days`` days, newest first (14: no credit account)."""

        def body() -> list[SaleView]:
            account = self._credit_account(customer_id, app, lock=False)
            link = self._first(self.cobrand.link_of, (customer_id,))
            if link is None:
                return []
            since = (open_date(account) - timedelta(convert_days)).isoformat()
            rows = self._execute(self.cobrand.sales_of, (customer_id, link["pan_hmac"], since))
            return [sale_view(_sale(row)) for row in rows]

        return self._read(body)

    def points_balance(self, customer_id: str, app: str | None = None) -> PointsBalance:
        """``points_balance``: 0 and no card for a customer without points or link; a
        wallet another app opened: NotYourWallet (03)."""

        def body() -> PointsBalance:
            wallet = self._first(self.credit.wallet_app, (customer_id,))
            if app is not None and wallet is not None and wallet["app"] != app:
                raise NotYourWallet(f"wallet of {customer_id} is another app's")
            link = self._first(self.cobrand.link_of, (customer_id,))
            view = self._first(self.credit.spendable, (points_account(customer_id),))
            points = 0 if view is None else int(view["spendable"])
            return PointsBalance(points, None if link is None else str(link["masked_pan"]))

        return self._read(body)

    # -- the conversion ---------------------------------------------------------------------

    def cobrand_hold(
        self, customer_id: str, app: str, *, key: TransferKey, sale_rrn: str,
        instalments: int, bank: str, convert_days: int, terms: Terms, at: float,
    ) -> ConversionHold:  # fmt: skip
        """``cobrand_convert``'s checks in credit.md's order (14; 25, 12, 13; 62, 51: a
        CreditStopped, nothing written), then the pending transfer
        ``credit_receivable:<c>`` → ``bank_clearing:<bank>`` and the plan held on the
        account as a pending purchase (named by the sale's RRN until the payment's
        answer gives it its own)."""

        def body() -> ConversionHold:
            account = self._credit_account(customer_id, app, lock=True)
            link_row = self._first(self.cobrand.link_of, (customer_id,))
            held = self._lock_transfer(key)
            if held is not None and link_row is not None:
                return ConversionHold(amount_fen=held.spec.amount, again=True,
                                      pan_sealed=bytes.fromhex(link_row["pan_sealed"]),
                                      bank=held.spec.credit.partition(":")[2])  # fmt: skip
            row = self._first(self.cobrand.lock_sale, (sale_rrn,))
            sale = None if row is None else _sale(row)
            if sale is not None and (link_row is None or sale.customer_id != customer_id):
                sale = None
            if sale is not None and link_row is not None and not self._of_link(sale, link_row):
                sale = None
            refusal = conversion_refusal(sale, today=open_date(account),
                                         convert_days=convert_days,
                                         min_plan_fen=terms.min_plan_fen)  # fmt: skip
            if refusal is None:
                assert sale is not None
                refusal = purchase_refusal(account, cobrand.convertible_fen(sale),
                                           instalments, terms)  # fmt: skip
            if refusal is not None:
                raise CreditStopped(refusal.code, str(refusal))
            assert sale is not None and link_row is not None
            amount = cobrand.convertible_fen(sale)
            plan = make_plan(amount, instalments, terms.fee_bps_of(instalments))
            book = books.purchase(account.book, purchase_id=sale.rrn,
                                  business_date=open_date(account),
                                  merchant_id=sale.merchant_id, amount_fen=amount,
                                  plan=plan)  # fmt: skip
            spec = TransferSpec(key=key, debit=receivable(customer_id),
                                credit=f"bank_clearing:{bank}", amount=amount,
                                kind="cobrand_convert", rrn=sale.rrn)  # fmt: skip
            self._move("reserve", key, at, spec=spec)
            self._save(msgspec.structs.replace(account, book=book), at)
            self._execute(self.cobrand.update_sale,
                          (sale.refunded_fen, sale.points, sale.state, PENDING, at,
                           sale.rrn))  # fmt: skip
            self._execute(self.cobrand.set_convert_key, (key.id, sale.rrn))
            return ConversionHold(amount_fen=amount, bank=bank,
                                  pan_sealed=bytes.fromhex(link_row["pan_sealed"]))  # fmt: skip

        return self._step("cobrand_hold", body)

    def _of_link(self, sale: CobrandSale, link_row: Row) -> bool:
        """Whether the sale was made with the card linked now (a card linked since
        replaced is no longer the customer's co-brand card)."""
        row = self._first(self.cobrand.sale_card, (sale.rrn,))
        return row is not None and row["pan_hmac"] == link_row["pan_hmac"]

    def cobrand_end(
        self, customer_id: str, *, key: TransferKey, sale_rrn: str, payment_rrn: str | None,
        approved: bool, at: float,
    ) -> PlanView | None:  # fmt: skip
        """The payment's answer journaled: on 00 the transfer is posted and the plan made
        the credit purchase ``payment_rrn`` (its view); else the transfer is voided, the
        pending purchase dropped and the sale may be converted again (None). Run again:
        what the first run did stands."""

        def body() -> PlanView | None:
            account = self._credit_account(customer_id, None, lock=True)
            transfer = self._lock_transfer(key)
            if transfer is None:
                raise TransferNotFound(f"no conversion hold {key}")
            if transfer.state == "pending":
                self._move("post" if approved else "void", key, at)
            elif (transfer.state == "posted") != approved:  # start-up recovery ended it
                raise LedgerDamaged(
                    f"conversion {key.id}: its hold is {transfer.state}, its payment "
                    f"{'approved' if approved else 'not approved'}"
                )
            book = account.book
            if any(p.purchase_id == sale_rrn for p in book.purchases):  # held, not ended
                kept = [p for p in book.purchases if p.purchase_id != sale_rrn]
                if approved:
                    assert payment_rrn is not None
                    item = books.purchase_of(book, sale_rrn)
                    kept.append(msgspec.structs.replace(item, purchase_id=payment_rrn))
                    kept.sort(key=lambda p: (p.business_date, p.purchase_id))
                book = msgspec.structs.replace(book, purchases=tuple(kept))
                self._save(msgspec.structs.replace(account, book=book), at)
            row = self._first(self.cobrand.lock_sale, (sale_rrn,))
            if row is not None and row["converted_rrn"] == PENDING:
                self._execute(self.cobrand.update_sale,
                              (row["refunded_fen"], row["points"], row["state"],
                               payment_rrn if approved else None, at, sale_rrn))  # fmt: skip
            if not approved:
                return None
            assert payment_rrn is not None
            try:
                return books.plan_view(book, payment_rrn)
            except CreditRefused:
                return None

        return self._step("cobrand_end", body)

    def cobrand_totals(self) -> CobrandTotals:
        """The co-brand card's figures for the metrics (``CobrandTotals``)."""

        def body() -> CobrandTotals:
            linked = self._first(self.cobrand.linked_count)
            points = self._first(self.cobrand.points_sums, (POINTS_ISSUED,))
            results = {"approved": 0, "not_approved": 0, "pending": 0, "cancelled": 0}
            for row in self._execute(self.cobrand.conversion_counts):
                if row["kind"] == "cobrand_cancel":
                    results["cancelled"] += int(row["n"])
                else:
                    name = {"posted": "approved", "voided": "not_approved"}.get(
                        str(row["state"]), "pending"
                    )
                    results[name] += int(row["n"])
            return CobrandTotals(
                linked_cards=0 if linked is None else int(linked["n"]),
                points_issued=0 if points is None else int(points["debits_posted"]),
                points_reversed=0 if points is None else int(points["credits_posted"]),
                conversions=results,
            )

        return self._read(body)

    def cobrand_pending(self) -> list[PendingConversion]:
        """Conversions whose hold has not ended (a crash between the payment and its
        end): start-up ends each as the journal says."""
        rows = self._read(lambda: self._execute(self.cobrand.pending_conversions))
        return [PendingConversion(customer_id=row["customer_id"], sale_rrn=row["rrn"],
                                  key_id=row["convert_key"]) for row in rows]  # fmt: skip

    # -- settlement's corrections (credit.md, "Conversion"; settlement.md) -----------------

    def cobrand_cancel(self, payment_rrn: str, at: float) -> int:
        """A conversion's payment that settlement finally does not pay (its reversal
        queued): the purchase is refunded whole with ``bank_clearing:<bank>`` in place
        of a merchant, its billed fees reversed (what was repaid of either goes to the
        wallet), and the sale may be converted again. The principal taken back; 0 for
        an RRN that is no conversion's, or one cancelled before."""

        def body() -> int:
            row = self._first(self.cobrand.sale_by_payment, (payment_rrn,))
            if row is None:
                return 0
            sale = _sale(row)
            account = self._credit_account(sale.customer_id, None, lock=True)
            item = next((p for p in account.book.purchases if p.purchase_id == payment_rrn), None)
            if item is None or not item.standing:
                return 0
            principal = item.principal_fen - item.refunded_fen
            book = account.book
            split = books.RefundSplit(0, 0, 0, 0, 0)
            if principal:
                book, split = books.refund(book, on=open_date(account), purchase_id=payment_rrn,
                                           amount_fen=principal, reverse_fees=True)  # fmt: skip
            book = msgspec.structs.replace(book, purchases=tuple(
                msgspec.structs.replace(p, standing=False) if p.purchase_id == payment_rrn else p
                for p in book.purchases
            ))  # fmt: skip
            bank = f"bank_clearing:{sale.bank}"
            transfer = self._cancel_transfer(payment_rrn, at)
            receivable_principal = split.unbilled_fen + split.billed_fen
            repaid_principal = principal - receivable_principal
            fees_paid = split.wallet_fen - repaid_principal
            wallet = ledger_wallet(sale.customer_id)
            transfer("principal", bank, receivable(sale.customer_id), receivable_principal)
            transfer("principal_repaid", bank, wallet, repaid_principal)
            transfer("fees", FEE_INCOME, receivable(sale.customer_id), split.fees_reversed_fen)
            transfer("fees_repaid", FEE_INCOME, wallet, fees_paid)
            self._save(msgspec.structs.replace(account, book=book), at)
            again = (sale.refunded_fen, sale.points, sale.state, None, at, sale.rrn)
            self._execute(self.cobrand.update_sale, again)  # it may be converted again
            return principal

        return self._step("cobrand_cancel", body)

    def _cancel_transfer(self, payment_rrn: str, at: float) -> Callable[[str, str, str, int], None]:
        def transfer(leg: str, debit: str, credit: str, amount: int) -> None:
            if amount <= 0:
                return
            key = TransferKey(POINTS_PRINCIPAL, payment_rrn, f"cancel_{leg}")
            spec = TransferSpec(key=key, debit=debit, credit=credit, amount=amount,
                                kind="cobrand_cancel", rrn=payment_rrn)  # fmt: skip
            self._move("transfer", key, at, spec=spec)

        return transfer

    def cobrand_mismatch(self, payment_rrn: str, switch_fen: int, bank_fen: int, at: float) -> int:
        """An ``amount_mismatch`` on a conversion's payment: the plan stays; the
        difference goes to ``recon_loss`` (the bank took more: it credited the card
        more, which the company owes it) or from it. The difference booked; 0 when the
        RRN is no conversion's."""

        def body() -> int:
            row = self._first(self.cobrand.sale_by_payment, (payment_rrn,))
            if row is None or switch_fen == bank_fen:
                return 0
            bank = f"bank_clearing:{row['bank']}"
            more = bank_fen > switch_fen
            key = TransferKey(POINTS_PRINCIPAL, payment_rrn, "mismatch")
            spec = TransferSpec(key=key, debit=RECON_LOSS if more else bank,
                                credit=bank if more else RECON_LOSS,
                                amount=abs(bank_fen - switch_fen), kind="recon",
                                rrn=payment_rrn)  # fmt: skip
            self._move("transfer", key, at, spec=spec)
            return bank_fen - switch_fen

        return self._step("cobrand_mismatch", body)
