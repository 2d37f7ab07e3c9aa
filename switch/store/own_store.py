"""Settlement's corrections of repayments by card, as steps of the ledger store (mixed
into ``LedgerStoreBase``). settlement.md: the sales of ``[credit] own_merchant_id`` are
matched like any other but in no payout row; credit.md ("Repayment") undoes a repayment
by card that settlement finally does not pay, and undoes and books again at the bank's
amount one it finds at another amount. (Top-ups' wallet corrections are on-us
settlement's ledger orders.)

Each correction is keyed by the sale's RRN (principal ``recon``) and the repayment's row
changes state once: a date settled again corrects nothing twice."""

from __future__ import annotations

from typing import Final

import msgspec

from switch.core.credit import book as books
from switch.core.credit.billing import open_date, receivable, repay_account
from switch.core.credit.book import Allocation
from switch.core.ledger import TransferKey, TransferSpec
from switch.core.ledger import wallet_account as ledger_wallet
from switch.store.cobrand_store import RECON_LOSS, CobrandSteps

RECON_PRINCIPAL: Final = "recon"
"""The principal of settlement's corrections (wallet.md: "settlement and recon: date,
kind and merchant or RRN")."""
UNDO_KIND: Final = "repay_undone"
AGAIN_KIND: Final = "repay_card"


class OwnMerchantSteps(CobrandSteps):
    """The corrections of repayments by card (credit.md)."""

    def credit_repay_settled(self, rrn: str, bank_fen: int, at: float) -> int:
        """A repayment by card whose money settlement changes: ``bank_fen`` is what the
        bank finally pays (0: not paid, its reversal queued; else an
        ``amount_mismatch``'s amount). It is undone: what it allocated is owed again
        (``credit_receivable:<c>`` → ``bank_clearing:<bank>``), and what went on to the
        wallet is taken back (at most to zero, ``recon_loss`` the rest); then, for a
        mismatch, booked again at the bank's amount on today's book. Returns the
        amount booked again minus the amount undone (credit line and wallet); 0 for an
        RRN that is no standing repayment by card, or one settled before."""

        def body() -> int:
            row = self._first(self.own.lock_repay, (rrn,))
            if row is None or row["state"] != "standing":
                return 0
            customer, bank = str(row["customer_id"]), f"bank_clearing:{row['bank']}"
            taken, wallet_fen = int(row["amount_fen"]), int(row["wallet_fen"])
            if bank_fen == taken + wallet_fen:
                return 0
            account = self._credit_account(customer, None, lock=True)
            wallet = ledger_wallet(customer)

            def transfer(leg: str, debit: str, credit: str, amount: int, kind: str) -> None:
                if amount <= 0:
                    return
                key = TransferKey(RECON_PRINCIPAL, rrn, leg)
                spec = TransferSpec(key=key, debit=debit, credit=credit, amount=amount,
                                    kind=kind, rrn=rrn)  # fmt: skip
                self._move("transfer", key, at, spec=spec)

            if row["allocation"] is not None:
                allocation = msgspec.json.decode(row["allocation"], type=Allocation)
                book = books.undo_repay(account.book, allocation, on=open_date(account), ref=rrn)
                account = msgspec.structs.replace(account, book=book)
            transfer("repay_undo", receivable(customer), bank, taken, UNDO_KIND)
            if wallet_fen:
                self._ensure_account(wallet)
                back = min(wallet_fen, max(0, self._lock_account(wallet).available))
                transfer("repay_undo_wallet", wallet, bank, back, "adjust")
                transfer("repay_undo_loss", RECON_LOSS, bank, wallet_fen - back, "recon")
            again = again_wallet = 0
            if bank_fen:
                again = min(bank_fen, books.payoff_fen(account.book))
                if again:
                    account, _ = repay_account(account, ref=rrn, amount_fen=again)
                    transfer("repay_again", bank, receivable(customer), again, AGAIN_KIND)
                again_wallet = bank_fen - again
                transfer("repay_again_wallet", bank, wallet, again_wallet, "adjust")
            self._save(account, at)
            state = "rebooked" if bank_fen else "undone"
            self._execute(self.own.end_repay, (state, at, rrn))
            return again + again_wallet - taken - wallet_fen

        return self._step("credit_repay_settled", body)


__all__ = ["RECON_PRINCIPAL", "OwnMerchantSteps"]
