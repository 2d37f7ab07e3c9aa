"""On-us pre-authorisations' holds (risk.md, "On-us funding"), as steps of the ledger
store (mixed into ``LedgerStoreBase``).

A pre-authorisation by payment code is checked as a payment and reserved as one (its
pending transfer, leg ``hold``, is the hold: ``pay_by_code``); :meth:`hold_keep` notes
whose it is. While it is ``open`` the hold stays pending. Then:

- a completion (:meth:`hold_complete` at receipt, :meth:`hold_end_completion` once its
  answer is journaled) posts min(amount, held) of the hold and, above that, a linked
  transfer of the excess (leg ``pay`` of the completion's key), reserved at receipt
  with the payment's checks (class limit, daily caps of the code's tier, balance 51;
  on credit, credit.md's): both are posted in one transaction, or neither;
- a void, reversal or expiry of the pre-authorisation (:meth:`hold_release`) voids
  the hold, and its count (wallet.md) goes;
- a completion's void or reversal (:meth:`hold_uncomplete`, :meth:`hold_end_uncompletion`)
  returns what the completion posted (a pending transfer back, posted with its
  answer) and holds the pre-authorisation's amount again as a new pending transfer
  (leg ``hold2``, ``hold3``...); whether the funds are there for it is decided at
  receipt (the answer journals it): if not, the pre-authorisation ends ``voided``.

On credit (credit.md) the hold is a pending purchase of the pre-authorisation's RRN;
the completion is the purchase (the completion's RRN, the code's instalments on its
amount), the hold's purchase dropped; a completion's void is the purchase's void, and
the hold is a pending purchase again; that void reversed by its terminal makes the
completion a purchase again (named by the void's RRN) when the line can take it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

import msgspec

from switch.core import ledger
from switch.core.credit import book as books
from switch.core.credit.billing import (
    CreditAccount,
    CreditAsk,
    credit_purchase,
    drop_purchase,
    open_date,
    purchase_refusal,
    receivable,
)
from switch.core.credit.plan import Terms, make_plan
from switch.core.ledger import (
    InsufficientFunds,
    Plan,
    Transfer,
    TransferKey,
    TransferNotFound,
    TransferSpec,
)
from switch.core.wallet import MoneyAsk, Refusal, Usage, Wallet, WalletSettings, money_check
from switch.store.credit_store import CreditSteps
from switch.store.hold_sql import HoldSql

FIRST_LEG: Final = "hold"
"""The leg of a pre-authorisation's first hold; each new one is ``hold<generation>``."""
EXCESS_LEG: Final = "pay"
"""The leg of a completion's own transfer: its excess over the hold."""
Row = Mapping[str, Any]
HISTORY_KIND: Final = "pay"
"""What a wallet's history shows of a hold posted by its completion: a payment."""


def is_hold_leg(leg: str) -> bool:
    return leg == FIRST_LEG or (leg.startswith(FIRST_LEG) and leg[len(FIRST_LEG) :].isdigit())


class Hold(msgspec.Struct, frozen=True, kw_only=True):
    """A pre-authorisation's hold as the store keeps it."""

    key: TransferKey
    """The transfer that holds it now."""
    rrn: str
    customer_id: str
    funding: str
    verification: str
    instalments: int | None
    amount: int
    merchant_id: str
    generation: int
    completion: TransferKey | None = None
    """The completion that passed its checks last (its excess's key, leg ``pay``)."""
    completion_rrn: str | None = None
    undone: tuple[str, str] | None = None
    """The request that gave its completion back last (principal, id of its key)."""

    @property
    def key_fields(self) -> tuple[str, str, str]:
        return self.key.principal, self.key.id, self.key.leg


class HoldTaken(msgspec.Struct, frozen=True, kw_only=True):
    """A completion that passed its checks: what it takes of the hold and above it."""

    customer_id: str
    funding: str
    verification: str
    held: int
    excess: int


class HoldSteps(CreditSteps):
    """The on-us pre-authorisation steps of the ledger store."""

    hold: ClassVar[HoldSql]

    # Given by LedgerStoreBase.
    def _uncount(self, key: TransferKey) -> None:
        raise NotImplementedError

    def post(
        self, key: TransferKey, at: float, *, amount: int | None = None,
        uncount: TransferKey | None = None,
    ) -> Plan:  # fmt: skip
        raise NotImplementedError

    def void(self, key: TransferKey, at: float) -> Plan:
        raise NotImplementedError

    def reserve(self, spec: TransferSpec, at: float) -> Plan:
        raise NotImplementedError

    # -- rows -----------------------------------------------------------------------------

    def _hold(self, preauth: str) -> Hold | None:
        return self._hold_row(self._first(self.hold.lock_hold, (preauth,)))

    def _hold_row(self, row: Row | None) -> Hold | None:
        if row is None:
            return None
        completion = None
        if row["completion_principal"] is not None:
            completion = TransferKey(
                str(row["completion_principal"]), str(row["completion_id"]), EXCESS_LEG
            )
        return Hold(
            key=TransferKey(str(row["principal"]), str(row["request_id"]), str(row["leg"])),
            rrn=str(row["rrn"]), customer_id=str(row["customer_id"]),
            funding=str(row["funding"]), verification=str(row["verification"]),
            instalments=None if row["instalments"] is None else int(row["instalments"]),
            amount=int(row["amount"]), merchant_id=str(row["merchant_id"]),
            generation=int(row["generation"]), completion=completion,
            completion_rrn=None if row["completion_rrn"] is None else str(row["completion_rrn"]),
            undone=None if row["undone_principal"] is None
            else (str(row["undone_principal"]), str(row["undone_id"])),
        )  # fmt: skip

    def _debit_of(self, hold: Hold) -> str:
        return (
            receivable(hold.customer_id) if hold.funding == "credit"
            else ledger.wallet_account(hold.customer_id)
        )  # fmt: skip

    def hold_keep(
        self, spec: TransferSpec, *, customer_id: str, funding: str, verification: str,
        instalments: int | None, at: float,
    ) -> None:  # fmt: skip
        """Notes a pre-authorisation's hold just reserved (``spec``: its transfer), in
        the step that reserved it; again: nothing changes."""
        key = spec.key

        def body() -> None:
            self._execute(
                self.hold.insert_hold,
                (
                    key.principal, key.id, spec.rrn, customer_id, funding, verification,
                    instalments, spec.amount, spec.merchant_id, key.leg, 1, at,
                ),
            )  # fmt: skip

        self._step("hold_keep", body)

    def hold_of(self, preauth: str) -> Hold | None:
        """The pre-authorisation's hold as kept (None: none kept)."""
        return self._read(lambda: self._hold(preauth))

    def hold_of_completion(self, completion_rrn: str) -> Hold | None:
        """The hold whose last completion to pass its checks is ``completion_rrn``."""
        return self._read(
            lambda: self._hold_row(self._first(self.hold.lock_hold_of_completion,
                                               (completion_rrn,)))
        )  # fmt: skip

    # -- completion -----------------------------------------------------------------------

    def hold_complete(
        self, preauth: str, key: TransferKey, *, amount: int, rrn: str,
        local_date: str, settings: WalletSettings, terms: Terms | None, at: float,
    ) -> HoldTaken | Refusal:  # fmt: skip
        """A completion's checks at receipt: the hold pending (else 12); above it, the
        excess checked as a payment (class limit and daily caps 61, balance 51; on
        credit, credit.md's 14, 62, 13, 51 on the whole purchase) and reserved."""

        def body() -> HoldTaken | Refusal:
            hold = self._hold(preauth)
            transfer = None if hold is None else self._lock_transfer(hold.key)
            if hold is None or transfer is None or transfer.state != "pending":
                return Refusal("12", "the pre-authorisation holds nothing")
            held = transfer.spec.amount
            excess = max(0, amount - held)
            taken = HoldTaken(
                customer_id=hold.customer_id, funding=hold.funding,
                verification=hold.verification, held=held, excess=excess,
            )  # fmt: skip
            existing = self._lock_transfer(key)
            if existing is not None:  # the same request again: as before
                return taken
            wallet = self._wallet(hold.customer_id, None, lock=True)
            account = None
            if hold.funding == "credit":
                if terms is None:
                    return Refusal("57", "credit funding is not offered")
                account = self._credit_account(hold.customer_id, None, lock=True)
            if account is not None and terms is not None:
                checked = self._completed(account, hold, transfer, rrn, amount, terms)
                if isinstance(checked, Refusal):
                    return checked
            if excess == 0:
                self._note_completion(preauth, key, rrn)
                return taken
            spec = TransferSpec(
                key=key, debit=self._debit_of(hold),
                credit=ledger.merchant_account(hold.merchant_id), amount=excess,
                kind=HISTORY_KIND, rrn=rrn, merchant_id=hold.merchant_id,
            )  # fmt: skip
            ask = MoneyAsk(
                customer_id=hold.customer_id, amount=excess, counted="pay",
                funding=hold.funding,  # type: ignore[arg-type]
                channel="code", verification=hold.verification,  # type: ignore[arg-type]
                local_date=local_date,
            )  # fmt: skip
            names = sorted({spec.debit, spec.credit})
            for name in names:
                self._ensure_account(name)
            locked = {name: self._lock_account(name) for name in names}
            refusal = money_check(
                wallet, self._usage(wallet, local_date), ask, locked[spec.debit].available,
                settings,
            )  # fmt: skip
            if refusal is not None:
                return refusal
            self._move("reserve", key, at, spec=spec)
            self._count(key, ask)
            self._note_completion(preauth, key, rrn)
            return taken

        return self._step("hold_complete", body)

    def _note_completion(self, preauth: str, key: TransferKey, rrn: str) -> None:
        """Whose completion passed its checks, for start-up's recovery: a crash between
        its journaled answer and :meth:`hold_end_completion` is ended from it."""
        self._execute(self.hold.note_completion, (key.principal, key.id, rrn, preauth))

    def _count(self, key: TransferKey, ask: MoneyAsk) -> None:
        self._execute(
            self.sql.insert_count,
            (
                key.principal, key.id, key.leg, ask.customer_id, ask.local_date,
                ask.local_date[:4], ask.amount, ask.counts_in_class, ask.counts_daily, False,
            ),
        )  # fmt: skip

    def _completed(
        self, account: CreditAccount, hold: Hold, transfer: Transfer, rrn: str, amount: int,
        terms: Terms,
    ) -> CreditAccount | Refusal:  # fmt: skip
        """The credit account with the hold's pending purchase replaced by the
        completion's purchase (credit.md's checks on it: 62, 13, 51)."""
        dropped = drop_purchase(account, transfer.spec.rrn)
        made = credit_purchase(
            dropped, CreditAsk(purchase_id=rrn, instalments=hold.instalments, terms=terms),
            merchant_id=hold.merchant_id, amount_fen=amount,
        )  # fmt: skip
        if isinstance(made, CreditAccount):
            return made
        return Refusal(made.code, made.message)

    def hold_end_completion(
        self, preauth: str, key: TransferKey, *, amount: int, rrn: str,
        approved: bool, terms: Terms | None, at: float,
    ) -> None:  # fmt: skip
        """A completion's answer journaled: approved, min(amount, held) of the hold and
        the excess posted together (on credit, the completion's purchase made in the
        hold's place); else the excess's reservation voided. Again: nothing changes."""

        def body() -> None:
            hold = self._hold(preauth)
            excess = self._lock_transfer(key)
            if not approved:
                if excess is not None and excess.state == "pending":
                    self._move("void", key, at)
                    self._uncount(key)
                return
            assert hold is not None
            transfer = self._lock_transfer(hold.key)
            if transfer is None or transfer.state != "pending":
                if excess is not None and excess.state == "pending":
                    self._move("post", key, at)
                return
            if hold.funding == "credit" and terms is not None:
                account = self._credit_account(hold.customer_id, None, lock=True)
                plan = None
                if hold.instalments is not None and amount >= terms.min_plan_fen:
                    plan = make_plan(amount, hold.instalments, terms.fee_bps_of(hold.instalments))
                dropped = drop_purchase(account, transfer.spec.rrn)
                book = books.purchase(
                    dropped.book, purchase_id=rrn, business_date=open_date(account),
                    merchant_id=hold.merchant_id, amount_fen=amount, plan=plan,
                )  # fmt: skip
                self._save(msgspec.structs.replace(dropped, book=book), at)
            # The hold's part is the completion's: recon finds it by the completion's RRN.
            self._execute(self.sql.set_transfer_rrn, (rrn, *hold.key_fields))
            self._move("post", hold.key, at, amount=min(amount, transfer.spec.amount))
            if excess is not None and excess.state == "pending":
                self._move("post", key, at)

        self._step("hold_end_completion", body)

    # -- the hold released ----------------------------------------------------------------

    def hold_release(self, preauth: str, at: float) -> bool:
        """A pre-authorisation voided, reversed or expired: its pending hold voided (on
        credit, the pending purchase dropped) and its count gone. False: nothing was
        pending (released before, or completed)."""

        def body() -> bool:
            hold = self._hold(preauth)
            transfer = None if hold is None else self._lock_transfer(hold.key)
            if hold is None or transfer is None or transfer.state != "pending":
                return False
            self._drop_held(hold, transfer, at)
            return True

        return self._step("hold_release", body)

    def _drop_held(self, hold: Hold, transfer: Transfer, at: float) -> None:
        if hold.funding == "credit":
            account = self._credit_account(hold.customer_id, None, lock=True)
            self._save(drop_purchase(account, transfer.spec.rrn), at)
        self._move("void", hold.key, at)
        self._uncount(TransferKey(hold.key.principal, hold.key.id, FIRST_LEG))

    # -- a completion undone: the hold again ----------------------------------------------

    def hold_uncomplete(
        self, preauth: str, completion: TransferKey, key: TransferKey, *,
        completion_rrn: str, rrn: str, kind: str, at: float,
    ) -> bool | Refusal:  # fmt: skip
        """A completion's void or reversal at receipt: what it posted (its part of the
        hold and its excess) reserved back to where it came from; returns whether the
        pre-authorisation can be held again once that is posted (the funds are there:
        the wallet's available plus what comes back, or the credit available once the
        completion's purchase is voided), else it ends ``voided``."""

        def body() -> bool | Refusal:
            hold = self._hold(preauth)
            transfer = None if hold is None else self._lock_transfer(hold.key)
            if hold is None or transfer is None or transfer.state != "posted":
                return Refusal("12", "the completion posted nothing to give back")
            excess = self._lock_transfer(completion)
            back = transfer.posted_amount + (
                excess.posted_amount if excess is not None and excess.state == "posted" else 0
            )
            debit = self._debit_of(hold)
            spec = TransferSpec(
                key=key, debit=ledger.merchant_account(hold.merchant_id), credit=debit,
                amount=back, kind=kind, rrn=rrn, merchant_id=hold.merchant_id,
            )  # fmt: skip
            # Who gave it back, for start-up's recovery (a void's reversal, ``Restand``,
            # ended when a crash came between its journaled answer and its step).
            self._execute(self.hold.note_undone, (key.principal, key.id, preauth))
            if hold.funding == "credit":
                account = self._credit_account(hold.customer_id, None, lock=True)
                available = books.available_fen(account.book, account.limit_fen)
                self.credit_reserve_back(spec, completion_rrn, True, at)
                return available + back >= hold.amount
            self._ensure_account(debit)
            available = self._lock_account(debit).available
            self.reserve(spec, at)
            return available + back >= hold.amount

        return self._step("hold_uncomplete", body)

    def hold_end_uncompletion(
        self, preauth: str, completion: TransferKey, key: TransferKey, *,
        approved: bool, rehold: bool, terms: Terms | None, at: float,
    ) -> bool:  # fmt: skip
        """A completion's void or reversal journaled: approved, what it gave back
        posted, the completion's excess out of the counts, and the pre-authorisation
        held again for its amount (``rehold``) or ended (its count gone); else the
        reservation voided. Returns whether it is held again."""

        def body() -> bool:
            if not approved:
                existing = self._lock_transfer(key)
                if existing is not None and existing.state == "pending":
                    self.void(key, at)
                return False
            before = self._lock_transfer(key)
            if before is None or before.state != "pending":
                return False  # nothing reserved, or posted before: held again then
            self.post(key, at, uncount=completion)
            hold = self._hold(preauth)
            assert hold is not None
            if not rehold:
                self._uncount(TransferKey(hold.key.principal, hold.key.id, FIRST_LEG))
                return False
            return self._hold_again(hold, terms, at)

        return self._step("hold_end_uncompletion", body)

    def hold_restand_check(
        self, preauth: str, amount: int, terms: Terms | None = None
    ) -> Refusal | None:
        """A completion's void reversed by its terminal, at receipt: its completion can
        stand again when the pre-authorisation holds again and the wallet has the
        completion's amount with the hold freed (else 51; 12 not held); on credit,
        credit.md's checks on the completion's amount with the hold's pending purchase
        dropped (frozen 62, plan under ``min_plan_fen`` 13, above available 51; 57 when
        credit is not offered). A refusal: the void stands."""

        def body() -> Refusal | None:
            hold = self._hold(preauth)
            transfer = None if hold is None else self._lock_transfer(hold.key)
            if hold is None or transfer is None or transfer.state != "pending":
                return Refusal("12", "the pre-authorisation is not held")
            if hold.funding == "credit":
                if terms is None:
                    return Refusal("57", "credit funding is not offered")
                account = self._credit_account(hold.customer_id, None, lock=True)
                refused = purchase_refusal(
                    drop_purchase(account, transfer.spec.rrn), amount, hold.instalments, terms
                )  # fmt: skip
                return None if refused is None else Refusal(refused.code, refused.message)
            wallet = ledger.wallet_account(hold.customer_id)
            if self._lock_account(wallet).available + transfer.spec.amount < amount:
                return Refusal("51", "the funds are gone")
            return None

        return self._step("hold_restand_check", body)

    def hold_restand(
        self, preauth: str, completion: TransferKey, key: TransferKey, *, amount: int,
        rrn: str, at: float, terms: Terms | None = None,
    ) -> None:  # fmt: skip
        """The reversal journaled: the hold held again is released and the completion's
        amount taken again from the wallet to the merchant, posted under the reversal's
        key (its void's RRN: reconciliation nets it against the void's transfer); the
        completion's excess counts again. On credit the hold's pending purchase is
        dropped and the completion stands again as a purchase named by its void's RRN
        (the code's instalments on its amount; the voided one keeps its RRN). Again:
        nothing changes."""

        def body() -> None:
            hold = self._hold(preauth)
            if hold is None or self._lock_transfer(key) is not None:
                return
            transfer = self._lock_transfer(hold.key)
            made: CreditAccount | None = None
            if hold.funding == "credit":
                if terms is None:
                    raise InsufficientFunds("credit funding is not offered")
                account = self._credit_account(hold.customer_id, None, lock=True)
                if transfer is not None and transfer.state == "pending":
                    account = drop_purchase(account, transfer.spec.rrn)
                stands = credit_purchase(
                    account, CreditAsk(purchase_id=rrn, instalments=hold.instalments,
                                       terms=terms),
                    merchant_id=hold.merchant_id, amount_fen=amount,
                )  # fmt: skip
                if not isinstance(stands, CreditAccount):  # gone since receipt
                    raise InsufficientFunds(f"credit {rrn}: {stands.message}")
                made = stands
            if transfer is not None and transfer.state == "pending":
                self._move("void", hold.key, at)
            spec = TransferSpec(
                key=key, debit=self._debit_of(hold),
                credit=ledger.merchant_account(hold.merchant_id), amount=amount,
                kind=HISTORY_KIND, rrn=rrn, merchant_id=hold.merchant_id,
            )  # fmt: skip
            self._move("transfer", key, at, spec=spec)
            if made is not None:
                self._save(made, at)
            self._execute(
                self.sql.cancel_count, (False, completion.principal, completion.id, completion.leg)
            )

        self._step("hold_restand", body)

    def hold_refund(
        self, preauth: str, key: TransferKey, *, completion_rrn: str, amount: int, rrn: str,
        at: float,
    ) -> str:  # fmt: skip
        """A refund of an on-us completion at receipt: ``amount`` reserved back from the
        merchant to the completion's debit account (on credit, as credit.md refunds the
        purchase ``completion_rrn``); posted, or voided, as any refund. Returns the
        funding."""

        def body() -> str:
            hold = self._hold(preauth)
            if hold is None:
                raise TransferNotFound(f"no hold of {preauth}")
            spec = TransferSpec(
                key=key, debit=ledger.merchant_account(hold.merchant_id),
                credit=self._debit_of(hold), amount=amount, kind=key.leg, rrn=rrn,
                merchant_id=hold.merchant_id,
            )  # fmt: skip
            if hold.funding == "credit":
                self.credit_reserve_back(spec, completion_rrn, False, at)
            else:
                self.reserve(spec, at)
            return hold.funding

        return self._step("hold_refund", body)

    def hold_renew(self, preauth: str, terms: Terms | None, at: float) -> bool:
        """A pre-authorisation's void reversed by its terminal: the pre-authorisation is
        held again for its amount (counted again) when the funds are there, else it
        stays ended. True: it holds (again, or still)."""

        def body() -> bool:
            hold = self._hold(preauth)
            transfer = None if hold is None else self._lock_transfer(hold.key)
            if hold is None or transfer is None or transfer.state == "posted":
                return False
            if transfer.state == "pending":
                return True
            if not self._hold_again(hold, terms, at):
                return False
            first = TransferKey(hold.key.principal, hold.key.id, FIRST_LEG)
            self._execute(self.sql.cancel_count, (False, first.principal, first.id, first.leg))
            return True

        return self._step("hold_renew", body)

    def _hold_again(self, hold: Hold, terms: Terms | None, at: float) -> bool:
        generation = hold.generation + 1
        key = TransferKey(hold.key.principal, hold.key.id, f"{FIRST_LEG}{generation}")
        spec = TransferSpec(
            key=key, debit=self._debit_of(hold),
            credit=ledger.merchant_account(hold.merchant_id), amount=hold.amount,
            kind=HISTORY_KIND, rrn=hold.rrn, merchant_id=hold.merchant_id,
        )  # fmt: skip
        if hold.funding == "credit":
            if terms is None:
                return False
            account = self._credit_account(hold.customer_id, None, lock=True)
            made = credit_purchase(
                account, CreditAsk(purchase_id=hold.rrn, instalments=hold.instalments,
                                   terms=terms),
                merchant_id=hold.merchant_id, amount_fen=hold.amount,
            )  # fmt: skip
            if not isinstance(made, CreditAccount):
                self._uncount(TransferKey(hold.key.principal, hold.key.id, FIRST_LEG))
                return False
            self._move("reserve", key, at, spec=spec)
            self._save(made, at)
        else:
            try:
                self._move("reserve", key, at, spec=spec)
            except InsufficientFunds:  # spent between receipt and answer
                self._uncount(TransferKey(hold.key.principal, hold.key.id, FIRST_LEG))
                return False
        self._execute(
            self.hold.move_hold,
            (key.leg, generation, at, hold.rrn),
        )
        return True


__all__ = ["EXCESS_LEG", "FIRST_LEG", "Hold", "HoldSteps", "HoldTaken", "Usage", "Wallet"]
