"""The ledger desk's on-us pre-authorisation steps (``core/onus_hold.py``), carried out
against the ledger store's hold steps (``store/hold_store.py``), each in the desk's
grouped transactions as a payment's are. A refusal is an answer (its code); the store's
failures are the desk's to map (``LedgerDesk.carry_out``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Final

import msgspec
import structlog

from switch.core.book import TxnRecord
from switch.core.ledger import TransferKey
from switch.core.onus import LEGS, REVERSAL_LEG, LedgerAnswered
from switch.core.onus_hold import (
    COMPLETION_KIND,
    COMPLETION_VOID_KIND,
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
from switch.store.hold_store import FIRST_LEG, Hold, HoldTaken, is_hold_leg

if TYPE_CHECKING:
    from switch.net.onus import LedgerDesk
    from switch.store.ledger_port import LedgerStore

log = structlog.get_logger()

VOID_LEG: Final = LEGS[COMPLETION_VOID_KIND]
"""The leg of a completion's void's transfer: what it gives back."""


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
            refused = await desk.grouped(
                lambda: store.hold_restand_check(preauth, amount, desk.credit)
            )
            if refused is not None:
                return LedgerAnswered(code=refused.code, message=refused.message)
            return LedgerAnswered()
        case Restand():
            at = desk.wall_clock()
            await desk.grouped(lambda: store.hold_restand(
                step.preauth, step.completion, step.key, amount=step.amount, rrn=step.rrn,
                at=at, terms=desk.credit,
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


async def recover(
    desk: LedgerDesk, read: Callable[[TransferKey, str], Awaitable[TxnRecord | None]]
) -> int:
    """wallet.md's start-up, for what a crash left between a hold step's journaled
    answer and its ledger step, ended from the journal's answers as the live path ends
    it (before the pending transfers are ended one by one, ``LedgerDesk.recover``):

    - the hold of a pre-authorisation the journal says is ``completed``: its
      completion (the last to pass its checks, as the hold notes) is approved, so the
      hold's min(amount, held) is posted under the completion's RRN with its excess
      (``hold_end_completion``); if that completion posted an earlier hold, its void
      was reversed (the journal says so of the void the hold notes): the completion
      stands again (``hold_restand``);
    - the reservation back of an approved completion's void or terminal reversal:
      posted, the excess out of the counts, and the pre-authorisation held again if
      the journal says it is ``open`` (else its count goes: ``voided``)
      (``hold_end_uncompletion``).

    Each step finds what it did before and does nothing again. Returns how many."""
    store = desk.store
    ended = 0
    for transfer in await desk.call(store.pending_transfers):
        key, merchant_id = transfer.spec.key, transfer.spec.merchant_id
        if not (is_hold_leg(key.leg) or key.leg in (VOID_LEG, REVERSAL_LEG)):
            continue
        record = await read(key, merchant_id)
        if record is None or record.state != "approved":
            continue
        at = desk.wall_clock()
        if is_hold_leg(key.leg):
            if record.hold_state != "completed":
                continue
            hold = await desk.call(partial(store.hold_of, record.rrn))
            if hold is None or hold.key != key or hold.completion is None:
                continue
            completion = await read(hold.completion, hold.merchant_id)
            if completion is None or completion.state != "approved" or completion.reversed:
                continue
            if await desk.call(partial(_posted_before, store, hold, completion.rrn)):
                # Posted by it before: it stands again, its void reversed (``Restand``).
                if not await _restand(desk, read, hold, hold.completion, at):
                    continue
            else:
                await desk.call(partial(
                    store.hold_end_completion, record.rrn, hold.completion,
                    amount=completion.amount, rrn=completion.rrn, approved=True,
                    terms=desk.credit, at=at,
                ))  # fmt: skip
        else:
            undone = _undone(record, key)
            if undone is None:
                continue
            hold = await desk.call(partial(store.hold_of_completion, undone))
            if hold is None or hold.completion is None:
                continue
            preauth = await read(
                TransferKey(hold.key.principal, hold.key.id, FIRST_LEG), hold.merchant_id
            )
            rehold = preauth is not None and preauth.hold_state == "open"
            await desk.call(partial(
                store.hold_end_uncompletion, hold.rrn, hold.completion, key, approved=True,
                rehold=rehold, terms=desk.credit, at=at,
            ))  # fmt: skip
        ended += 1
    if ended:
        log.warning("onus_holds_recovered", ended=ended)
    return ended


async def _restand(
    desk: LedgerDesk, read: Callable[[TransferKey, str], Awaitable[TxnRecord | None]],
    hold: Hold, completion: TransferKey, at: float,
) -> bool:  # fmt: skip
    """A completion's void whose terminal reversal the journal holds (the completion
    stands again) but not its ledger step: ``hold_restand`` as the live path's
    ``Restand``. False: the journal says otherwise (nothing done)."""
    if hold.undone is None:
        return False
    principal, id_ = hold.undone
    void = await read(TransferKey(principal, id_, VOID_LEG), hold.merchant_id)
    if (
        void is None or void.kind != COMPLETION_VOID_KIND or void.state != "approved"
        or not void.reversed
    ):  # fmt: skip
        return False
    await desk.call(partial(
        desk.store.hold_restand, hold.rrn, completion,
        TransferKey(principal, id_, REVERSAL_LEG), amount=void.amount, rrn=void.rrn, at=at,
        terms=desk.credit,
    ))  # fmt: skip
    return True


def _posted_before(store: LedgerStore, hold: Hold, rrn: str) -> bool:
    """Whether an earlier hold of the pre-authorisation was posted by the completion
    ``rrn`` (then completed again by its void's reversal, what holds now is not
    this completion's to post)."""
    for generation in range(1, hold.generation):
        leg = FIRST_LEG if generation == 1 else f"{FIRST_LEG}{generation}"
        earlier = store.transfer_of(TransferKey(hold.key.principal, hold.key.id, leg))
        if earlier is not None and earlier.state == "posted" and earlier.spec.rrn == rrn:
            return True
    return False


def _undone(record: TxnRecord, key: TransferKey) -> str | None:
    """The RRN of the completion that ``key`` (a pending transfer of ``record``'s
    request, approved) gives back: a completion's void not reversed, or a completion's
    terminal reversal; None for any other."""
    if record.kind == COMPLETION_VOID_KIND and key.leg == VOID_LEG and not record.reversed:
        return record.original_rrn
    if record.kind == COMPLETION_KIND and key.leg == REVERSAL_LEG and record.reversed:
        return record.rrn
    return None
