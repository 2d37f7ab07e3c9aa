"""The ledger desk's on-us pre-authorisation steps (``core/onus_hold.py``), carried out
against the ledger store's hold steps (``store/hold_store.py``), each in the desk's
grouped transactions as a payment's are. A refusal is an answer (its code); the store's
failures are the desk's to map (``LedgerDesk.carry_out``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from switch.core.onus import LedgerAnswered
from switch.core.onus_hold import (
    CompleteHold,
    EndCompletion,
    EndUncompletion,
    HoldPending,
    HoldStep,
    RefundCompletion,
    ReleaseHold,
    RenewHold,
    Restand,
    RestandCheck,
    UncompleteHold,
)
from switch.core.riskgate import MESSAGES as RISK_MESSAGES
from switch.core.wallet import Refusal
from switch.store.hold_store import HoldTaken

if TYPE_CHECKING:
    from switch.net.onus import LedgerDesk


async def carry_out(
    desk: LedgerDesk, step: HoldStep, auth_code: Callable[[], str]
) -> LedgerAnswered:
    """One hold step (``auth_code`` draws an approval's 38); raises LedgerError for what
    the store cannot do."""
    store = desk.store
    match step:
        case HoldPending(preauth=preauth):

            def pending() -> tuple[str | None, bool]:
                hold = store.hold_of(preauth)
                transfer = None if hold is None else store.transfer_of(hold.key)
                found = transfer is not None and transfer.state == "pending"
                return (None if hold is None else hold.funding), found

            funding, found = await desk.call(pending)
            if found:
                return LedgerAnswered(funding=funding)
            return LedgerAnswered(
                code="12", message="the pre-authorisation holds nothing", funding=funding
            )
        case ReleaseHold(preauth=preauth):
            at = desk.wall_clock()
            await desk.grouped(lambda: store.hold_release(preauth, at))
            return LedgerAnswered()
        case RenewHold(preauth=preauth):
            at = desk.wall_clock()
            renewed = await desk.grouped(lambda: store.hold_renew(preauth, desk.credit, at))
            return LedgerAnswered(rehold=renewed)
        case RefundCompletion():
            at = desk.wall_clock()
            funding = await desk.grouped(lambda: store.hold_refund(
                step.preauth, step.key, completion_rrn=step.completion_rrn,
                amount=step.amount, rrn=step.rrn, at=at,
            ))  # fmt: skip
            return LedgerAnswered(auth_code=auth_code(), funding=funding)
        case RestandCheck(preauth=preauth, amount=amount):
            refused = await desk.grouped(lambda: store.hold_restand_check(preauth, amount))
            if refused is not None:
                return LedgerAnswered(code=refused.code, message=refused.message)
            return LedgerAnswered()
        case Restand():
            at = desk.wall_clock()
            await desk.grouped(lambda: store.hold_restand(
                step.preauth, step.completion, step.key, amount=step.amount, rrn=step.rrn,
                at=at,
            ))  # fmt: skip
            return LedgerAnswered()
        case CompleteHold():
            return await _complete(desk, step, auth_code)
        case EndCompletion():
            at = desk.wall_clock()
            await desk.grouped(lambda: store.hold_end_completion(
                step.preauth, step.key, amount=step.amount, rrn=step.rrn,
                approved=step.approved, terms=desk.credit, at=at,
            ))  # fmt: skip
            return LedgerAnswered()
        case UncompleteHold():
            at = desk.wall_clock()

            def uncomplete() -> tuple[str | None, bool | Refusal]:
                hold = store.hold_of(step.preauth)
                done = store.hold_uncomplete(
                    step.preauth, step.completion, step.key, completion_rrn=step.completion_rrn,
                    rrn=step.rrn, kind=step.kind, at=at,
                )  # fmt: skip
                return (None if hold is None else hold.funding), done

            funding, done = await desk.grouped(uncomplete)
            if isinstance(done, Refusal):
                return LedgerAnswered(code=done.code, message=done.message, funding=funding)
            return LedgerAnswered(auth_code=auth_code(), funding=funding, rehold=done)
        case EndUncompletion():
            at = desk.wall_clock()
            await desk.grouped(lambda: store.hold_end_uncompletion(
                step.preauth, step.completion, step.key, approved=step.approved,
                rehold=step.rehold, terms=desk.credit, at=at,
            ))  # fmt: skip
            return LedgerAnswered()
    raise AssertionError(f"not a hold step: {step!r}")


async def _complete(
    desk: LedgerDesk, step: CompleteHold, auth_code: Callable[[], str]
) -> LedgerAnswered:
    """risk.md: a completion meets the blocklists in its pre-authorisation's scope (the
    hold's customer and funding), then the hold's and the excess's checks."""
    store = desk.store
    verdict = None
    gate = desk.risk
    hold = await desk.call(lambda: store.hold_of(step.preauth))
    funding = None if hold is None else hold.funding
    if gate is not None and step.risk is not None and hold is not None:
        asked = gate.with_customer(step.risk, hold.customer_id, hold.funding)
        verdict = gate.judge(asked, step.received)
        if verdict.declined:
            assert verdict.code is not None
            return LedgerAnswered(
                code=verdict.code, message=RISK_MESSAGES.get(verdict.code, "declined"),
                customer_id=hold.customer_id, funding=hold.funding, verdict=verdict,
            )  # fmt: skip
    at = desk.wall_clock()

    def complete() -> HoldTaken | Refusal:
        return store.hold_complete(
            step.preauth, step.key, amount=step.amount, rrn=step.rrn,
            local_date=step.local_date, settings=desk.settings, terms=desk.credit, at=at,
        )  # fmt: skip

    try:
        taken = await desk.grouped(complete)
    except BaseException:
        if gate is not None and verdict is not None:
            gate.release(verdict.hold, step.received)
        raise
    if isinstance(taken, Refusal):
        return LedgerAnswered(
            code=taken.code, message=taken.message, verdict=verdict, funding=funding
        )
    found = LedgerAnswered(
        customer_id=taken.customer_id, funding=taken.funding,
        verification=taken.verification, verdict=verdict,
    )  # fmt: skip
    return msgspec.structs.replace(found, auth_code=auth_code())
