"""The ledger desk: carries out the lifecycle's ``PostToLedger`` steps (``core/onus.py``)
against the ledger store, as the switchboard carries ``Exchange`` out on a bank link.

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
    ReserveBack,
)
from switch.core.paycode import Paycode
from switch.core.risk import RiskRequest, Verdict
from switch.core.riskgate import MESSAGES as RISK_MESSAGES
from switch.core.riskgate import RiskGate
from switch.core.wallet import MoneyAsk, Refusal, WalletSettings
from switch.store.ledger_port import LedgerStore

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

    __slots__ = ("_received", "_request", "_who", "gate", "verdict")

    def __init__(self, gate: RiskGate | None, request: RiskRequest | None, received: float):
        self.gate = gate if request is not None else None
        self._request = request
        self._received = received
        self._who: tuple[str, str] | None = None
        self.verdict: Verdict | None = None

    def judge(self, customer_id: str, funding: str) -> Verdict | None:
        """The verdict for ``customer_id`` paying by ``funding`` (None: no rules); in
        the store's thread."""
        gate, request = self.gate, self._request
        if gate is None or request is None:
            return None
        who = (customer_id, funding)
        if self._who == who:
            return self.verdict
        if self.verdict is not None:  # another customer now (never expected): undone
            trio.from_thread.run_sync(gate.release, self.verdict.hold, self._received)
        asked = gate.with_customer(request, customer_id, funding)
        self.verdict = trio.from_thread.run_sync(gate.judge, asked, self._received)
        self._who = who
        return self.verdict

    def refusal(self, customer_id: str, funding: str) -> Refusal | None:
        """A rule's decline as the store's refusal (its code; the client is told the
        code's meaning, never the rule), else None."""
        verdict = self.judge(customer_id, funding)
        if verdict is None or not verdict.declined:
            return None
        assert verdict.code is not None
        return Refusal(verdict.code, RISK_MESSAGES.get(verdict.code, "declined"))

    def undo(self) -> None:
        """The store's step failed: the reservation goes (on the trio thread)."""
        if self.gate is not None and self.verdict is not None:
            self.gate.release(self.verdict.hold, self._received)


class LedgerDesk:
    """The ledger store, as the transaction path uses it."""

    def __init__(
        self,
        store: LedgerStore,
        settings: WalletSettings,
        *,
        wall_clock: Callable[[], float] = time.time,
        risk: RiskGate | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.risk = risk
        """The risk rules (risk.md), evaluated in the ledger's step where wallet.md puts
        them: once the code names the customer, before the payment's checks."""
        self.paycodes = settings.paycodes()
        self.wall_clock = wall_clock
        """Payment codes live on real time (wallet.md), whatever the business clock."""
        self._lock = trio.Lock()
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
        rules = RulesInStore(self.risk, step.risk, step.received)

        def make(code: Paycode) -> tuple[MoneyAsk, TransferSpec] | Refusal:
            refused = rules.refusal(code.customer_id, code.funding)  # risk.md's first
            if refused is not None:
                return refused
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

        try:
            taken, done = await self._run(
                lambda: self.store.pay_by_code(step.code, step.terminal, at, self.settings, make)
            )
        except BaseException:
            rules.undo()  # nothing was reserved on the ledger: nor is it in the windows
            raise
        verdict = rules.verdict
        code = taken.paycode
        if code is None:
            message = (
                "payment code probe limit" if taken.response_code == "65"
                else "payment code not open"
            )  # fmt: skip
            return LedgerAnswered(code=taken.response_code, message=message)
        found = {"customer_id": code.customer_id, "funding": code.funding,
                 "verification": code.verification}  # fmt: skip
        if isinstance(done, Refusal):
            return LedgerAnswered(code=done.code, message=done.message, verdict=verdict, **found)
        return LedgerAnswered(auth_code=auth_code(), verdict=verdict, **found)

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
                    self.store.end_payment(step.key, step.approved, at)
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
        self, read: Callable[[TransferKey], Awaitable[TxnRecord | None]]
    ) -> tuple[int, int]:
        """wallet.md: each pending transfer posted or voided as the journal's record of
        its request says (``read``: that record by key); one whose request is still
        ``sending`` is left. Returns (posted, voided)."""
        pending = await self._run(self.store.pending_transfers)
        answers: dict[TransferKey, ledger.Answer] = {}
        for transfer in pending:
            answer = onus.journal_answer(transfer.spec.key, await read(transfer.spec.key))
            if answer is not None:
                answers[transfer.spec.key] = answer
        pending = [t for t in pending if t.spec.key in answers]
        posted = voided = 0
        for key, operation in ledger.recovery(pending, answers):
            at = self.wall_clock()
            payment = key.leg == onus.LEGS["onus_sale"]
            approved = operation == "post"
            if payment:
                await self._run(partial(self.store.end_payment, key, approved, at))
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

