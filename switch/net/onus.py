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
from switch.core.credit.billing import CreditAsk, receivable
from switch.core.credit.book import PlanView
from switch.core.credit.plan import Terms
from switch.core.ledger import LedgerError, TransferKey, TransferNotFound, TransferSpec
from switch.core.onus import (
    EndTransfer,
    LedgerAnswered,
    LedgerStep,
    PayByCode,
    PayByQr,
    ReserveBack,
)
from switch.core.onus_hold import (
    CompleteHold,
    EndCompletion,
    EndUncompletion,
    HoldPending,
    RefundCompletion,
    ReleaseHold,
    RenewHold,
    Restand,
    RestandCheck,
    UncompleteHold,
)
from switch.core.paycode import CodeTaken, Paycode
from switch.core.risk import RiskRequest, Verdict
from switch.core.riskgate import MESSAGES as RISK_MESSAGES
from switch.core.riskgate import RiskEvent, RiskGate
from switch.core.wallet import Channel, MoneyAsk, Refusal, WalletSettings
from switch.net import onus_hold
from switch.store.credit_store import RECEIVABLE
from switch.store.hold_store import is_hold_leg
from switch.store.ledger_port import LedgerStore, LedgerUnavailable, QrHold, Reserved

log = structlog.get_logger()

T = TypeVar("T")

AUTH_ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""An on-us approval's 38: six of these (no 0/O, 1/I), drawn by ``secrets``."""


def auth_code() -> str:
    return "".join(secrets.choice(AUTH_ALPHABET) for _ in range(6))


class RulesInStore:
    """risk.md's rules judged from inside a ledger store's transaction (its thread), at
    wallet.md's place: once the customer and funding are known (a payment code found
    open, a wallet named), before the class limit, the daily caps and the balance. The
    gate is used on the trio thread only (``trio.from_thread``): its windows are never
    touched from the store's thread. Judged once: a transaction the store runs again (a
    conflict between workers) names the same customer and is not counted twice. If the
    store's step then fails, :meth:`undo` (on the trio thread) gives the reservation
    back. Any on-us step that takes money from a customer uses one."""

    __slots__ = ("_asked", "_received", "_request", "_who", "gate", "reached", "verdict")

    def __init__(self, gate: RiskGate | None, request: RiskRequest | None, received: float):
        self.gate = gate if request is not None else None
        self._request = request
        self._received = received
        self._who: tuple[str, str, int | None] | None = None
        self._asked: RiskRequest | None = None
        self.verdict: Verdict | None = None
        self.reached = False
        """Whether the step came as far as the rules (rules or none): a request
        refused before them counts nowhere (risk.md), so its row names no customer."""

    def judge(self, customer_id: str, funding: str, amount: int | None = None) -> Verdict | None:
        """The verdict for ``customer_id`` paying by ``funding`` (None: no rules); in
        the store's thread. ``amount``: known only in the step (a conversion's
        principal), else the request's."""
        gate, request = self.gate, self._request
        if gate is None or request is None:
            return None
        who = (customer_id, funding, amount)
        if self._who == who:
            return self.verdict
        if self.verdict is not None:  # another customer now (never expected): undone
            trio.from_thread.run_sync(gate.release, self.verdict.hold, self._received)
        asked = gate.with_customer(request, customer_id, funding)
        if amount is not None:
            asked = msgspec.structs.replace(asked, amount=amount)
        self.verdict = trio.from_thread.run_sync(gate.judge, asked, self._received)
        self._who, self._asked = who, asked
        return self.verdict

    def event(
        self, approved: bool, code: str | None, *, online_id: str, rrn: str, written_at: float
    ) -> RiskEvent | None:
        """The record of the request as the rules judged it (None: it did not reach
        them, or there are no rules): what the ledger keeps of a desk request that has
        no journal row, for the windows of a restart and of the other workers."""
        gate, asked, verdict = self.gate, self._asked, self.verdict
        if gate is None or asked is None or verdict is None:
            return None
        return gate.event(
            asked, verdict, worker=gate.worker, received=self._received, approved=approved,
            code=code, online_id=online_id, rrn=rrn, written_at=written_at,
        )  # fmt: skip

    def refusal(self, customer_id: str, funding: str, amount: int | None = None) -> Refusal | None:
        """A rule's decline as the store's refusal (its code; the client is told the
        code's meaning, never the rule), else None."""
        verdict = self.judge(customer_id, funding, amount)
        if verdict is None or not verdict.declined:
            return None
        assert verdict.code is not None
        return Refusal(verdict.code, RISK_MESSAGES.get(verdict.code, "declined"))

    def screen(self, customer_id: str, funding: str) -> Callable[[], Refusal | None]:
        """The store step's ``screen`` (``LedgerStore.reserve_payment``): the rules for
        ``customer_id`` paying by ``funding``, in the store's thread."""

        def screened() -> Refusal | None:
            self.reached = True
            return self.refusal(customer_id, funding)

        return screened

    def undo(self) -> None:
        """The store's step failed: the reservation goes (on the trio thread)."""
        if self.gate is not None and self.verdict is not None:
            self.gate.release(self.verdict.hold, self._received)

    async def guarding(self, step: Awaitable[T]) -> T:
        """``step``'s result; if it fails, nothing was reserved on the ledger, so nor is
        anything kept in the windows (:meth:`undo`)."""
        try:
            return await step
        except BaseException:
            self.undo()
            raise

    def end(self, approved: bool, **context: str) -> None:
        """A desk request's step is over (on the trio thread): an approval's
        reservation stands, anything else's goes. A hit is logged with ``context``
        (``type``, ``id``): the desk's requests have no journal row to keep the rule
        ids, so the log line does (``risk_rule``, ``risk_review``, ``risk_shadow``)."""
        verdict = self.verdict
        if self.gate is None or verdict is None:
            return
        if not approved:
            self.gate.release(verdict.hold, self._received)
        if verdict.hits:
            log.info("desk_risk_hits", approved=approved, **context, **verdict.log_fields())


class _Job:
    __slots__ = ("call", "done", "durable", "result")

    def __init__(self, call: Callable[[], object], durable: bool) -> None:
        self.call = call
        self.durable = durable
        self.done = trio.Event()
        self.result: tuple[object, BaseException | None] | None = None
        """Its call's result, or (None, the exception it raised); None until done."""


class LedgerDesk:
    """The ledger store, as the transaction path uses it."""

    def __init__(
        self,
        store: LedgerStore,
        settings: WalletSettings,
        *,
        credit: Terms | None = None,
        wall_clock: Callable[[], float] = time.time,
        risk: RiskGate | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.risk = risk
        """The risk rules (risk.md), evaluated in the ledger's step where wallet.md puts
        them: once the code names the customer, before the payment's checks."""
        self.credit = credit
        """credit.md's terms: payments with funding ``credit``; None, refused 57."""
        self.paycodes = settings.paycodes()
        self.wall_clock = wall_clock
        """Payment codes live on real time (wallet.md), whatever the business clock."""
        self._lock = trio.Lock()
        self._queue: list[_Job] = []
        """Steps waiting for the store's thread, to go together (``_grouped``)."""
        self.groups = 0
        """Groups of steps carried out (one thread hop and one transaction each)."""
        self.credit_pay: Callable[[PayByQr], Awaitable[LedgerAnswered]] | None = (
            self._credit_pay_by_qr if credit is not None else None
        )
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

    async def _grouped(self, call: Callable[[], T], *, durable: bool = True) -> T:
        """A transaction's step (the store calls of a payment, its end, a void's or
        refund's): those waiting together go to the store's thread together, in one
        transaction with one commit (the store's ``grouped``: each call in a savepoint
        of its own, its refusal or failure its own). One taken into another's group is
        carried out whatever befalls its caller meanwhile, as a call already in the
        thread is. ``durable`` False: an end whose answer is journaled, which the store
        may commit without its own fsync when its whole group is such (design.md, "The
        ledger's post without its own fsync")."""
        job = _Job(call, durable)
        self._queue.append(job)
        try:
            async with self._lock:
                if not job.done.is_set():
                    batch, self._queue = self._queue, []
                    self.groups += 1
                    try:
                        results = await trio.to_thread.run_sync(partial(
                            self.store.grouped, [each.call for each in batch],
                            durable=any(each.durable for each in batch),
                        ))  # fmt: skip
                        for each, result in zip(batch, results, strict=True):
                            each.result = result
                    finally:  # never a job left waiting (its result, or that none came)
                        for each in batch:
                            if not each.done.is_set():
                                if each.result is None:
                                    each.result = (None, LedgerUnavailable("ledger step lost"))
                                each.done.set()
        except trio.Cancelled:
            if job in self._queue:  # not taken: never carried out
                self._queue.remove(job)
                raise
            with trio.CancelScope(shield=True):
                await job.done.wait()
        assert job.result is not None
        value, error = job.result
        if error is not None:
            raise error
        return value  # type: ignore[return-value]

    async def grouped(self, call: Callable[[], T]) -> T:
        """``call`` as a transaction's step, grouped with those waiting (``_grouped``)."""
        return await self._grouped(call)

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
                case (
                    HoldPending() | ReleaseHold() | RenewHold() | CompleteHold()
                    | EndCompletion() | UncompleteHold() | EndUncompletion()
                    | RestandCheck() | Restand() | RefundCompletion()
                ):  # fmt: skip
                    return await onus_hold.carry_out(self, step, auth_code)
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
        rules = RulesInStore(self.risk, step.risk, step.received)

        made: list[TransferSpec] = []

        def make(code: Paycode) -> tuple[MoneyAsk, TransferSpec] | Refusal:
            refused = rules.refusal(code.customer_id, code.funding)  # risk.md's first
            if refused is not None:
                return refused
            ask = MoneyAsk(
                customer_id=code.customer_id, amount=step.amount, counted="pay",
                funding=code.funding, channel="code", verification=code.verification,
                local_date=step.local_date,
            )  # fmt: skip
            debit = (
                receivable(code.customer_id) if code.funding == "credit"
                else ledger.wallet_account(code.customer_id)
            )  # fmt: skip
            spec = TransferSpec(
                key=step.key, debit=debit,
                credit=ledger.merchant_account(step.merchant_id), amount=step.amount,
                kind=onus.LEGS["onus_sale"], rrn=step.rrn, merchant_id=step.merchant_id,
            )  # fmt: skip
            made.append(spec)
            return ask, spec

        def pay() -> tuple[CodeTaken, Reserved | Refusal | None, PlanView | None]:
            taken, done = self.store.pay_by_code(
                step.code, step.terminal, at, self.settings, make, credit_terms=self.credit
            )
            code = taken.paycode
            if step.holds and code is not None and isinstance(done, Reserved) and made:
                # risk.md: a pre-authorisation's pending transfer is its hold, kept with
                # whose it is (its code is purged long before the hold ends).
                self.store.hold_keep(
                    made[-1], customer_id=code.customer_id, funding=code.funding,
                    verification=code.verification, instalments=code.instalments, at=at,
                )  # fmt: skip
            plan = None
            if code is not None and code.instalments and isinstance(done, Reserved):
                plan = self.store.credit_plan(code.customer_id, step.rrn)  # as made
            return taken, done, plan

        taken, done, plan = await rules.guarding(self._grouped(pay))
        verdict = rules.verdict
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
            return msgspec.structs.replace(
                found, code=done.code, message=done.message, verdict=verdict
            )
        return msgspec.structs.replace(found, auth_code=auth_code(), verdict=verdict, plan=plan)

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
        rules = RulesInStore(self.risk, step.risk, step.received)
        screen = rules.screen(step.customer_id, "wallet")  # after the QR's checks
        def reserve() -> Reserved | Refusal:
            return self.store.reserve_payment(
                ask, spec, self.settings, self.wall_clock(), app=step.app, qr=hold,
                screen=screen,
            )  # fmt: skip

        done = await rules.guarding(self._grouped(reserve))
        found = LedgerAnswered(
            funding=step.funding, customer_id=step.customer_id if rules.reached else None,
            verification=step.verification, verdict=rules.verdict,
        )  # fmt: skip
        if isinstance(done, Refusal):
            return msgspec.structs.replace(found, code=done.code, message=done.message)
        if done.again:
            # Its key has a transfer already: the same principal and id in flight at
            # another worker (or ended, its result not kept: a crash). Refused 94 with
            # nothing reserved, so the first's transfer is not ended by this one.
            return LedgerAnswered(code="94", message="a request with this id is in progress")
        return msgspec.structs.replace(
            found, auth_code=auth_code(), balance_after=done.available_after,
            qr_id=step.qr_id if step.qr_kind == "dynamic" else None,
        )  # fmt: skip

    async def _credit_pay_by_qr(self, step: PayByQr) -> LedgerAnswered:
        """``wallet_pay`` with ``funding`` = ``credit`` (credit.md): wallet.md's checks but
        the class limit and balance (the daily caps count it), then the credit line's
        (14, 62, 13, 51) and its pending purchase ``credit_receivable:<c>`` →
        ``merchant:<m>``, one atomic step; its plan made to the fen."""
        assert self.credit is not None
        channel: Channel = "qr_dynamic" if step.qr_kind == "dynamic" else "qr_static"
        ask = MoneyAsk(
            customer_id=step.customer_id, amount=step.amount, counted="pay", funding="credit",
            channel=channel, verification=step.verification,  # type: ignore[arg-type]
            local_date=step.local_date,
        )  # fmt: skip
        spec = TransferSpec(
            key=step.key, debit=receivable(step.customer_id),
            credit=ledger.merchant_account(step.merchant_id), amount=max(step.amount, 1),
            kind=step.key.leg, rrn=step.rrn, merchant_id=step.merchant_id,
        )  # fmt: skip
        hold = QrHold(qr_id=step.qr_id, merchant_id=step.merchant_id, kind=step.qr_kind,
                      amount=step.qr_amount)  # fmt: skip
        lent = CreditAsk(purchase_id=step.rrn, instalments=step.instalments, terms=self.credit)
        rules = RulesInStore(self.risk, step.risk, step.received)
        screen = rules.screen(step.customer_id, "credit")  # after the QR's checks

        def pay() -> tuple[Reserved | Refusal, PlanView | None]:
            done = self.store.reserve_payment(
                ask, spec, self.settings, self.wall_clock(), app=step.app, qr=hold,
                credit=lent, screen=screen,
            )  # fmt: skip
            plan = None
            if step.instalments and isinstance(done, Reserved):
                plan = self.store.credit_plan(step.customer_id, step.rrn)  # as made
            return done, plan

        done, plan = await rules.guarding(self._grouped(pay))
        found = LedgerAnswered(
            funding="credit", customer_id=step.customer_id if rules.reached else None,
            verification=step.verification, verdict=rules.verdict,
        )  # fmt: skip
        if isinstance(done, Refusal):
            return msgspec.structs.replace(found, code=done.code, message=done.message)
        return msgspec.structs.replace(
            found, auth_code=auth_code(), plan=plan,
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
            if original.spec.debit.startswith(RECEIVABLE):  # a credit purchase (credit.md)
                whole = step.reversal or step.kind == "void"
                self.store.credit_reserve_back(spec, original.spec.rrn, whole, self.wall_clock())
                return LedgerAnswered(auth_code=auth_code(), funding="credit")
            self.store.reserve(spec, self.wall_clock())
            return LedgerAnswered(auth_code=auth_code(), funding="wallet")

        return await self._grouped(body)

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

        # Its answer is journaled (or the journal failed, the request left ``sending``):
        # a post or void a power cut takes away is done again by start-up's recovery.
        return await self._grouped(body, durable=False)

    # -- start-up ---------------------------------------------------------------------

    async def recover(
        self, read: Callable[[TransferKey, str], Awaitable[TxnRecord | None]]
    ) -> tuple[int, int]:
        """wallet.md: each pending transfer posted or voided as the journal's record of
        its request says (``read``: that record by key and the transfer's merchant);
        one whose request is still
        ``sending`` is left. Returns (posted, voided)."""
        await onus_hold.recover(self, read)  # the hold steps' ends first, as they end
        pending = await self._run(self.store.pending_transfers)
        answers: dict[TransferKey, ledger.Answer] = {}
        rrns: dict[TransferKey, str] = {}
        for transfer in pending:
            record = await read(transfer.spec.key, transfer.spec.merchant_id)
            answer = onus.journal_answer(transfer.spec.key, record)
            if answer is not None:
                answers[transfer.spec.key] = answer
            if record is not None and record.rrn:
                rrns[transfer.spec.key] = record.rrn
        pending = [t for t in pending if t.spec.key in answers]
        held = {t.spec.key: t.spec.rrn for t in pending}
        posted = voided = 0
        for key, operation in ledger.recovery(pending, answers):
            at = self.wall_clock()
            payment = key.leg in onus.PAYMENT_LEGS
            approved = operation == "post"
            rrn = rrns.get(key)
            if is_hold_leg(key.leg) and not approved:
                # A pre-authorisation's hold that is no longer open (risk.md): released
                # as its void or expiry would, its count and pending purchase gone (one
                # never kept as a hold is voided as any pending transfer).
                if not await self._run(partial(self.store.hold_release, held[key], at)):
                    await self._run(partial(self.store.void, key, at))
            elif key.leg == onus.TOPUP_LEG:
                # As the top-up's own end: the transfer and its order take the sale's
                # RRN, by which settlement corrects the wallet.
                await self._run(partial(self.store.end_topup, key, approved, rrn or "", at))
            elif payment:
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
                # A repayment by card is booked under its sale's RRN, as its desk
                # books it: settlement finds it by that RRN (credit.md, "Repayment").
                await self._run(partial(self.store.post, key, at, uncount=uncount, rrn=rrn))
            else:
                await self._run(partial(self.store.void, key, at))
            posted += approved
            voided += not approved
        if posted or voided:
            log.warning("ledger_recovered", posted=posted, voided=voided)
        return posted, voided

