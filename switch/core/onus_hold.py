"""On-us pre-authorisations' ledger steps (risk.md, "On-us funding"), as the lifecycle
asks for them: which step a pre-authorisation, its void, a completion and a completion's
void or reversal take at receipt and once their answer is journaled. Plain data, no I/O;
the trio layer (``switch.net.onus``) carries them out against the ledger store
(``switch.store.hold_store``).

The steps, by the product's row (``products.Product``) and its original's kind::

    pre-authorisation      PayByCode (holds)     | approved: nothing (the hold stands)
                                                 | else: EndTransfer (voided)
    its void               HoldPending           | approved: ReleaseHold
    completion             CompleteHold          | EndCompletion (post, or void the excess)
    completion's void      UncompleteHold        | EndUncompletion (post back, hold again)

A terminal's reversal of a pre-authorisation takes HoldPending then ReleaseHold; of a
completion, UncompleteHold then EndUncompletion (its compensating transfer on the
reversal leg, as a sale's). Holds are named by the pre-authorisation's RRN.
"""

from __future__ import annotations

from typing import Final

import msgspec

from switch.core import products
from switch.core.book import TxnRecord
from switch.core.ledger import TransferKey
from switch.core.risk import RiskRequest

COMPLETION_KIND: Final = "onus_completion"
"""The kind whose void or reversal holds its pre-authorisation again."""
PREAUTH_VOID_KIND: Final = "onus_preauth_void"
"""The kind whose reversal holds its pre-authorisation again (``RenewHold``)."""
COMPLETION_VOID_KIND: Final = "onus_completion_void"
"""The kind whose reversal makes its completion stand again (``Restand``)."""
NOT_REVERSED: Final = frozenset(("onus_completion_void",))
"""On-us voids of a hold whose terminal reversal the ledger cannot undo (a completion's
void whose completion the book no longer holds): answered 00, the void standing."""


class HoldPending(msgspec.Struct, frozen=True, kw_only=True):
    """Whether the pre-authorisation ``preauth`` (its RRN) holds a pending transfer:
    00, else 12 (a void or reversal of it has nothing to release)."""

    preauth: str


class ReleaseHold(msgspec.Struct, frozen=True, kw_only=True):
    """Void the pre-authorisation's pending hold (its void, reversal or expiry)."""

    preauth: str


class RenewHold(msgspec.Struct, frozen=True, kw_only=True):
    """A pre-authorisation's void reversed: hold it again for its amount if the funds
    are there (the answer's ``rehold``), else it stays ``voided``."""

    preauth: str


class RestandCheck(msgspec.Struct, frozen=True, kw_only=True):
    """A completion's void reversed, at receipt: whether the completion can stand again
    (the hold there, the wallet able to pay its amount with the hold freed)."""

    preauth: str
    amount: int


class Restand(msgspec.Struct, frozen=True, kw_only=True):
    """A completion's void reversed, journaled: the hold released and the completion's
    amount paid again under the reversal's key (``key``, the void's RRN)."""

    preauth: str
    completion: TransferKey
    key: TransferKey
    amount: int
    rrn: str


class RefundCompletion(msgspec.Struct, frozen=True, kw_only=True):
    """A refund of an on-us completion at receipt: ``amount`` reserved back from the
    merchant to where the completion took it (the wallet, or the credit line as
    credit.md refunds a purchase); posted by ``EndTransfer`` as any refund."""

    preauth: str
    completion_rrn: str
    key: TransferKey
    amount: int
    rrn: str


class CompleteHold(msgspec.Struct, frozen=True, kw_only=True):
    """A completion's checks and the reservation of its excess over the hold (12 when
    nothing is held; 61, 51, or credit.md's codes for the excess or the purchase)."""

    preauth: str
    key: TransferKey
    amount: int
    rrn: str
    local_date: str
    risk: RiskRequest | None = None
    """risk.md: a completion meets the blocklists in its pre-authorisation's scope, with
    the hold's customer and funding."""
    received: float = 0.0


class EndCompletion(msgspec.Struct, frozen=True, kw_only=True):
    """A completion's answer journaled: post the hold's part and the excess, or void
    the excess."""

    preauth: str
    key: TransferKey
    amount: int
    rrn: str
    approved: bool


class UncompleteHold(msgspec.Struct, frozen=True, kw_only=True):
    """A completion's void or reversal at receipt: what the completion posted reserved
    back; the answer says whether the pre-authorisation can be held again."""

    preauth: str
    completion: TransferKey
    completion_rrn: str
    key: TransferKey
    rrn: str
    kind: str


class EndUncompletion(msgspec.Struct, frozen=True, kw_only=True):
    """A completion's void or reversal journaled: post what goes back and hold the
    pre-authorisation again (``rehold``), or void the reservation."""

    preauth: str
    completion: TransferKey
    key: TransferKey
    approved: bool
    rehold: bool


HoldStep = (
    HoldPending | ReleaseHold | RenewHold | CompleteHold | EndCompletion | UncompleteHold
    | EndUncompletion | RestandCheck | Restand | RefundCompletion
)  # fmt: skip


def holds_on_ledger(kind: str) -> bool:
    """Whether ``kind`` is an on-us pre-authorisation (its approval holds, not posts)."""
    row = products.PRODUCTS.get(kind)
    return row is not None and row.holds and row.destination == "ledger"


def acts_on_hold(product: products.Product, original: TxnRecord | None) -> bool:
    """Whether an on-us request acting on ``original`` takes this module's steps: a
    completion, a pre-authorisation's void, a completion's void."""
    if original is None or product.destination != "ledger" or product.reserves == "remaining":
        return False
    return (
        product.reserves == "hold"
        or holds_on_ledger(original.kind)
        or original.kind == COMPLETION_KIND
    )


def refund_step(
    record: TxnRecord, original: TxnRecord, key: TransferKey
) -> RefundCompletion | None:
    """A refund's step at receipt when its original is an on-us completion (None: a
    payment's, ``ReserveBack``'s): what the completion posted is two transfers, the
    hold's part and the excess, so the refund names the hold, not one of them."""
    if original.kind != COMPLETION_KIND or original.original_rrn is None:
        return None
    return RefundCompletion(
        preauth=original.original_rrn, completion_rrn=original.rrn, key=key,
        amount=record.amount, rrn=record.rrn,
    )  # fmt: skip


def receipt_step(
    product: products.Product,
    record: TxnRecord,
    original: TxnRecord,
    key: TransferKey,
    original_key: TransferKey,
    local_date: str,
    *,
    risk: RiskRequest | None = None,
    received: float = 0.0,
) -> HoldStep:
    """The step at receipt of a request ``acts_on_hold`` says is one of these."""
    if product.reserves == "hold":
        return CompleteHold(
            preauth=original.rrn, key=key, amount=record.amount, rrn=record.rrn,
            local_date=local_date, risk=risk, received=received,
        )  # fmt: skip
    if holds_on_ledger(original.kind):
        return HoldPending(preauth=original.rrn)
    assert original.original_rrn is not None
    return UncompleteHold(
        preauth=original.original_rrn, completion=original_key, completion_rrn=original.rrn,
        key=key, rrn=record.rrn, kind=key.leg,
    )  # fmt: skip


def end_step(
    product: products.Product,
    record: TxnRecord,
    original: TxnRecord,
    key: TransferKey,
    original_key: TransferKey,
    *,
    approved: bool,
    rehold: bool,
) -> HoldStep | None:
    """The step once the answer of a request ``acts_on_hold`` says is one of these is
    journaled (None: nothing to do on the ledger)."""
    if product.reserves == "hold":
        return EndCompletion(
            preauth=original.rrn, key=key, amount=record.amount, rrn=record.rrn,
            approved=approved,
        )  # fmt: skip
    if holds_on_ledger(original.kind):
        return ReleaseHold(preauth=original.rrn) if approved else None
    assert original.original_rrn is not None
    return EndUncompletion(
        preauth=original.original_rrn, completion=original_key, key=key, approved=approved,
        rehold=rehold,
    )  # fmt: skip


def reversal_step(
    record: TxnRecord, own: TransferKey, key: TransferKey, original: TxnRecord | None = None
) -> HoldStep | None:
    """A terminal's reversal of an approved on-us ``record``, at receipt (``key``: its
    compensating transfer's, ``own`` its own): a pre-authorisation's hold checked
    (released once the reversal is journaled), a pre-authorisation void's held again,
    a completion's postings reserved back; None for others."""
    if holds_on_ledger(record.kind):
        return HoldPending(preauth=record.rrn)
    if record.kind == PREAUTH_VOID_KIND and record.original_rrn is not None:
        return RenewHold(preauth=record.original_rrn)
    if record.kind == COMPLETION_VOID_KIND:
        if original is None or original.original_rrn is None:
            return None
        return RestandCheck(preauth=original.original_rrn, amount=record.amount)
    if record.kind == COMPLETION_KIND and record.original_rrn is not None:
        return UncompleteHold(
            preauth=record.original_rrn, completion=own,
            completion_rrn=record.rrn, key=key, rrn=record.rrn, kind="void",
        )  # fmt: skip
    return None


def reversed_by_steps(kind: str) -> bool:
    """Whether a terminal's reversal of ``kind`` takes this module's steps."""
    return holds_on_ledger(kind) or kind in (
        PREAUTH_VOID_KIND, COMPLETION_KIND, COMPLETION_VOID_KIND
    )  # fmt: skip


def reversal_end(
    record: TxnRecord, own: TransferKey, key: TransferKey, *, approved: bool, rehold: bool,
    original: TxnRecord | None = None, original_key: TransferKey | None = None,
) -> HoldStep | None:
    """A terminal's reversal journaled (``approved``) or not: the step that ends it
    (``original``, ``original_key``: a completion's void's completion and its key)."""
    if record.kind == COMPLETION_VOID_KIND:
        if not approved or original is None or original.original_rrn is None:
            return None
        assert original_key is not None
        return Restand(
            preauth=original.original_rrn, completion=original_key, key=key,
            amount=record.amount, rrn=record.rrn,
        )  # fmt: skip
    if holds_on_ledger(record.kind):
        return ReleaseHold(preauth=record.rrn) if approved else None
    if record.kind == COMPLETION_KIND and record.original_rrn is not None:
        return EndUncompletion(
            preauth=record.original_rrn, completion=own, key=key,
            approved=approved, rehold=rehold,
        )  # fmt: skip
    return None
