"""Settlement's corrections of the switch's own merchants, as steps of the ledger store
(mixed into ``LedgerStoreBase``). settlement.md: transactions of ``[wallet]
topup_merchant_id`` and ``[credit] own_merchant_id`` are matched like any other but in
no payout row; wallet.md and credit.md correct any whose money a category changes.

Each correction is keyed by the sale's RRN (principal ``recon``): a date settled again,
or a later date's settlement that lists the same RRN, corrects nothing twice."""

from __future__ import annotations

from typing import ClassVar, Final

from switch.core.ledger import TransferKey, TransferSpec
from switch.core.onus import TOPUP_LEG
from switch.store.cobrand_store import RECON_LOSS, CobrandSteps
from switch.store.own_sql import OwnSql

RECON_PRINCIPAL: Final = "recon"
"""The principal of settlement's corrections (wallet.md: "settlement and recon: date,
kind and merchant or RRN")."""
ADJUST_KIND: Final = "adjust"
"""wallet.md's history kind of a recon correction of a wallet."""


class OwnMerchantSteps(CobrandSteps):
    """The corrections of top-ups (wallet.md) and repayments by card (credit.md)."""

    own: ClassVar[OwnSql]

    def topup_settled(self, rrn: str, bank_fen: int, at: float) -> int:
        """A top-up whose money settlement changes: ``bank_fen`` is what the bank
        finally pays (0: not paid, its reversal queued; else an ``amount_mismatch``'s
        amount). The wallet is corrected by the difference, history kind ``adjust``:
        credited from ``bank_clearing:<bank>`` when the bank paid more; debited back to
        it when less, at most to zero (what the wallet no longer has goes to
        ``recon_loss``). Returns the wallet's correction, signed as its balance moves;
        0 for an RRN that is no posted top-up's, no difference, or one corrected
        before."""

        def body() -> int:
            row = self._first(self.own.posted_by_rrn, (rrn, TOPUP_LEG))
            if row is None:
                return 0
            posted = int(row["posted_amount"])
            bank, wallet = str(row["debit_account"]), str(row["credit_account"])
            merchant_id = str(row["merchant_id"])
            difference = bank_fen - posted
            into_wallet = TransferKey(RECON_PRINCIPAL, rrn, "topup_adjust")
            to_loss = TransferKey(RECON_PRINCIPAL, rrn, "topup_loss")
            if difference == 0 or self._lock_transfer(into_wallet) is not None:
                return 0
            if self._lock_transfer(to_loss) is not None:
                return 0

            def transfer(key: TransferKey, debit: str, credit: str, amount: int, kind: str) -> None:
                spec = TransferSpec(key=key, debit=debit, credit=credit, amount=amount,
                                    kind=kind, rrn=rrn, merchant_id=merchant_id)  # fmt: skip
                self._move("transfer", key, at, spec=spec)

            if difference > 0:  # the bank paid more: the wallet has it
                transfer(into_wallet, bank, wallet, difference, ADJUST_KIND)
                return difference
            owed = -difference
            self._ensure_account(wallet)
            taken = min(owed, max(0, self._lock_account(wallet).available))
            if taken:
                transfer(into_wallet, wallet, bank, taken, ADJUST_KIND)
            if owed > taken:
                transfer(to_loss, RECON_LOSS, bank, owed - taken, "recon")
            return -taken

        return self._step("topup_settled", body)


__all__ = ["ADJUST_KIND", "RECON_PRINCIPAL", "OwnMerchantSteps"]
