"""The ledger desk: carries out the lifecycle's ``PostToLedger`` steps (``core/onus.py``)
against the ledger store, as the switchboard carries ``SendToBank`` out on a bank link.

The store's calls are blocking, one transaction each, on one connection: they run in a
worker thread, one at a time (a lock; the store's connection is not shared between
threads). A refusal is an answer (wallet.md's code); a store that cannot be reached is
91, our own misuse of the ledger 96, logged.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final, TypeVar

import msgspec
import structlog
import trio

from switch.core import ledger, onus
from switch.core.book import TxnRecord
from switch.core.ledger import LedgerError, TransferKey, TransferNotFound, TransferSpec
from switch.core.onus import (
    EndTransfer,
    LedgerAnswered,
    LedgerStep,
    PayByCode,
    PayByQr,
    ReserveBack,
)
from switch.core.paycode import Paycode
from switch.core.wallet import Channel, MoneyAsk, Refusal, WalletSettings
from switch.store.ledger_port import LedgerStore, QrHold

log = structlog.get_logger()

T = TypeVar("T")

AUTH_ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""An on-us approval's 38: six of these (no 0/O, 1/I), drawn by ``secrets``."""


def auth_code() -> str:
    return "".join(secrets.choice(AUTH_ALPHABET) for _ in range(6))


class LedgerDesk:
    """The ledger store, as the transaction path uses it."""

    def __init__(
        self,
        store: LedgerStore,
        settings: WalletSettings,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.paycodes = settings.paycodes()
        self.wall_clock = wall_clock
        """Payment codes live on real time (wallet.md), whatever the business clock."""
        self._lock = trio.Lock()
        self.credit_pay: Callable[[PayByQr], Awaitable[LedgerAnswered]] | None = None
        """credit.md's ``wallet_pay`` with ``funding`` = ``credit``, when the credit
        line is wired in (None: refused 57)."""
        self.steps = 0
        self.failures = 0

    @property
    def paycode_prefix(self) -> str:
        return self.paycodes.prefix

    async def _run(self, call: Callable[[], T]) -> T:
        async with self._lock:
            return await trio.to_thread.run_sync(call)

    async def call(self, body: Callable[[], T]) -> T:
        """``body`` (store calls) in the store's worker thread, one at a time: how the
        app desk (``app_desk.py``) reaches the same store."""
        return await self._run(body)

    async def carry_out(self, step: LedgerStep) -> LedgerAnswered:
        """One step; never raises for what the ledger refuses or cannot do."""
        self.steps += 1
        try:
            match step:
                case PayByCode():
                    return await self._pay_by_code(step)
                case PayByQr():
                    return await self._pay_by_qr(step)
                case ReserveBack():
                    return await self._reserve_back(step)
                case EndTransfer():
                    return await self._end(step)
        except LedgerError as exc:
            self.failures += 1
            code = exc.response_code
            if code in ("91", "96"):
                log.error("ledger_step_failed", step=type(step).__name__, code=code,
                          error=str(exc))  # fmt: skip
            return LedgerAnswered(
                code=code, message="system malfunction" if code == "96" else "",
                detail=str(exc),
            )  # fmt: skip
        raise AssertionError(f"not a ledger step: {step!r}")

    async def _pay_by_code(self, step: PayByCode) -> LedgerAnswered:
        at = self.wall_clock()

        def make(code: Paycode) -> tuple[MoneyAsk, TransferSpec] | Refusal:
            if code.funding != "wallet":
                # credit.md's line is not wired here: refused, the code used.
                return Refusal("57", "credit funding is not offered")
            ask = MoneyAsk(
                customer_id=code.customer_id, amount=step.amount, counted="pay",
                funding="wallet", channel="code", verification=code.verification,
                local_date=step.local_date,
            )  # fmt: skip
            spec = TransferSpec(
                key=step.key, debit=ledger.wallet_account(code.customer_id),
                credit=ledger.merchant_account(step.merchant_id), amount=step.amount,
                kind=step.key.leg, rrn=step.rrn, merchant_id=step.merchant_id,
            )  # fmt: skip
            return ask, spec

        taken, done = await self._run(
            lambda: self.store.pay_by_code(step.code, step.terminal, at, self.settings, make)
        )
        code = taken.paycode
        if code is None:
            message = (
                "payment code probe limit" if taken.response_code == "65"
                else "payment code not open"
            )  # fmt: skip
            return LedgerAnswered(code=taken.response_code, message=message)
        found = LedgerAnswered(customer_id=code.customer_id, funding=code.funding,
                               verification=code.verification)  # fmt: skip
        if isinstance(done, Refusal):
            return msgspec.structs.replace(found, code=done.code, message=done.message)
        return msgspec.structs.replace(found, auth_code=auth_code())

    async def _pay_by_qr(self, step: PayByQr) -> LedgerAnswered:
        """``wallet_pay``: the wallet, the QR and the money checks with the pending
        transfer, one atomic step (two payments racing for one dynamic QR: one holds it
        ``paying``, the other is 94). ``funding`` names the line it is paid from: the
        wallet here; ``credit`` is credit.md's (:attr:`credit_pay`), 57 without it."""
        if step.funding != "wallet":
            if self.credit_pay is not None:
                return await self.credit_pay(step)
            return LedgerAnswered(
                code="57", message="credit funding is not offered", funding=step.funding,
                customer_id=step.customer_id, verification=step.verification,
            )  # fmt: skip
        channel: Channel = "qr_dynamic" if step.qr_kind == "dynamic" else "qr_static"
        ask = MoneyAsk(
            customer_id=step.customer_id, amount=step.amount, counted="pay", funding="wallet",
            channel=channel, verification=step.verification,  # type: ignore[arg-type]
            local_date=step.local_date,
        )  # fmt: skip
        spec = TransferSpec(
            key=step.key, debit=ledger.wallet_account(step.customer_id),
            credit=ledger.merchant_account(step.merchant_id), amount=max(step.amount, 1),
            kind=step.key.leg, rrn=step.rrn, merchant_id=step.merchant_id,
        )  # fmt: skip
        hold = QrHold(qr_id=step.qr_id, merchant_id=step.merchant_id, kind=step.qr_kind,
                      amount=step.qr_amount)  # fmt: skip
        done = await self._run(
            lambda: self.store.reserve_payment(
                ask, spec, self.settings, self.wall_clock(), app=step.app, qr=hold
            )
        )
        found = LedgerAnswered(funding=step.funding, customer_id=step.customer_id,
                               verification=step.verification)  # fmt: skip
        if isinstance(done, Refusal):
            return msgspec.structs.replace(found, code=done.code, message=done.message)
        return msgspec.structs.replace(
            found, auth_code=auth_code(), balance_after=done.available_after,
            qr_id=step.qr_id if step.qr_kind == "dynamic" else None,
        )  # fmt: skip

    # -- top-ups (wallet.md: a card sale whose approval credits the wallet) -----------

    async def reserve_topup(
        self, key: TransferKey, *, customer_id: str, bank: str, amount: int,
        business_date: str,
    ) -> int | None:  # fmt: skip
        """The top-up's pending transfer, ``bank_clearing:<bank>`` to the wallet, before
        its sale goes to the bank; returns the ``balance_after`` its approval will
        answer (what the wallet can spend now, plus the amount), None if the key has a
        transfer already (the same request, seen before). Raises LedgerError."""
        spec = TransferSpec(
            key=key, debit=f"bank_clearing:{bank}",
            credit=ledger.wallet_account(customer_id), amount=amount, kind=key.leg, rrn="",
            merchant_id=self.settings.topup_merchant_id,
        )  # fmt: skip

        def body() -> int | None:
            plan = self.store.reserve_topup(spec, bank, business_date, self.wall_clock())
            if plan.before is not None:
                return None
            view = self.store.account(spec.credit)
            return (view.balances.available if view is not None else 0) + amount

        return await self._run(body)

    async def end_topup(self, key: TransferKey, *, approved: bool, rrn: str | None) -> None:
        """Posts the top-up (its approval journaled: the wallet credited) or voids it;
        the transfer takes the sale's RRN. Raises LedgerError."""
        at = self.wall_clock()
        await self._run(lambda: self.store.end_topup(key, approved, rrn or "", at))

    async def _reserve_back(self, step: ReserveBack) -> LedgerAnswered:
        def body() -> LedgerAnswered:
            original = self.store.transfer_of(step.original)
            if original is None:
                if step.reversal:  # nothing was ever reserved: nothing to undo
                    return LedgerAnswered()
                raise TransferNotFound(f"no transfer {step.original}")
            if original.state == "pending" and step.reversal:
                # Its post never happened (a failure after its answer was journaled):
                # nothing was paid, the hold is released.
                self.store.end_payment(step.original, False, self.wall_clock())
                return LedgerAnswered()
            if original.state != "posted":
                if step.reversal:
                    return LedgerAnswered()
                raise ledger.TransferFinal(f"transfer {step.original} is {original.state}")
            spec = TransferSpec(
                key=step.key, debit=original.spec.credit, credit=original.spec.debit,
                amount=step.amount, kind=step.kind, rrn=step.rrn,
                merchant_id=step.merchant_id,
            )  # fmt: skip
            self.store.reserve(spec, self.wall_clock())
            return LedgerAnswered(auth_code=auth_code())

        return await self._run(body)

    async def _end(self, step: EndTransfer) -> LedgerAnswered:
        def body() -> LedgerAnswered:
            at = self.wall_clock()
            try:
                if step.payment:
                    self.store.end_payment(step.key, step.approved, at, qr_id=step.qr_id)
                elif step.approved:
                    self.store.post(step.key, at, uncount=step.uncount)
                else:
                    self.store.void(step.key, at)
            except TransferNotFound:
                if step.approved:
                    raise
            return LedgerAnswered()

        return await self._run(body)

    # -- start-up ---------------------------------------------------------------------

    async def recover(
        self, read: Callable[[TransferKey, str], Awaitable[TxnRecord | None]]
    ) -> tuple[int, int]:
        """wallet.md: each pending transfer posted or voided as the journal's record of
        its request says (``read``: that record by key and the transfer's merchant);
        one whose request is still
        ``sending`` is left. Returns (posted, voided)."""
        pending = await self._run(self.store.pending_transfers)
        answers: dict[TransferKey, ledger.Answer] = {}
        for transfer in pending:
            record = await read(transfer.spec.key, transfer.spec.merchant_id)
            answer = onus.journal_answer(transfer.spec.key, record)
            if answer is not None:
                answers[transfer.spec.key] = answer
        pending = [t for t in pending if t.spec.key in answers]
        posted = voided = 0
        for key, operation in ledger.recovery(pending, answers):
            at = self.wall_clock()
            payment = key.leg in onus.PAYMENT_LEGS
            approved = operation == "post"
            if payment:
                # A dynamic QR an app's payment holds ``paying`` is ended with it.
                qr_id = (
                    await self._run(partial(self.store.qr_paying, key))
                    if key.principal.startswith("app:") else None
                )  # fmt: skip
                await self._run(partial(self.store.end_payment, key, approved, at, qr_id=qr_id))
            elif approved:
                # A reversal takes its payment (same principal and id) out of the
                # counts; a void recovered here leaves its sale counted (conservative).
                uncount = (
                    TransferKey(key.principal, key.id, onus.LEGS["onus_sale"])
                    if key.leg == onus.REVERSAL_LEG
                    else None
                )
                await self._run(partial(self.store.post, key, at, uncount=uncount))
            else:
                await self._run(partial(self.store.void, key, at))
            posted += approved
            voided += not approved
        if posted or voided:
            log.warning("ledger_recovered", posted=posted, voided=voided)
        return posted, voided
