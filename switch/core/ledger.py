"""The ledger's rules (settlement.md's Ledger, wallet.md's Ledger): named accounts of
settlement.md's list, balanced double-entry transfers keyed by principal, id and leg,
and the two-phase state machine of an on-us transfer (pending, then posted or voided).

Sans-IO: the store (``switch.store.ledger_store``) reads the transfer and the two
accounts it touches (locked, in one transaction), asks :func:`decide` what the
operation does to them, applies the :class:`Plan` it gets, and commits. The plan is
checked to balance before the store sees it; the store checks that each account it
names changed exactly once, and the database's own constraints (no capped account past
its cap) hold at the commit.

The table :data:`NEXT` is the transition: the state a transfer is in and the operation
give what happens; anything not in it is refused.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

from switch.errors import SwitchError

State = Literal["pending", "posted", "voided"]
Operation = Literal["reserve", "transfer", "post", "void"]
"""``reserve`` creates a pending transfer, ``transfer`` a posted one (one phase),
``post`` and ``void`` end a pending one."""
AccountType = Literal["asset", "liability", "income", "expense"]
Unit = Literal["fen", "points"]

# -- errors, mapped to wallet.md's codes ------------------------------------------------


class LedgerError(SwitchError):
    """The ledger refuses an operation; ``response_code`` is what the request is
    answered (wallet.md's Errors)."""

    response_code = "96"


class InsufficientFunds(LedgerError):
    """The debit would take a capped account (a wallet) past its cap: 51."""

    response_code = "51"


class TransferConflict(LedgerError):
    """A transfer's key again with other accounts or amount: the request's ``id`` reused
    for something else (online.md's conflict), 94."""

    response_code = "94"


class TransferNotFound(LedgerError):
    """Post or void of a key that names no transfer: the caller's bug (96)."""


class TransferFinal(LedgerError):
    """Post of a voided transfer, void of a posted one (or of a one-phase transfer):
    the caller's bug; the transfer stays as it is (96)."""


class UnknownAccount(LedgerError):
    """An account name outside settlement.md's list (96)."""


class LedgerDamaged(LedgerError):
    """An invariant does not hold in the stored ledger: nothing may be written on it."""


# -- accounts -----------------------------------------------------------------------


class AccountClass(msgspec.Struct, frozen=True):
    type: AccountType
    unit: Unit
    per: str | None
    """What names one account of the class (``bank``, ``customer_id``, ``merchant_id``),
    or None for a single account."""
    debit_cap: int | None
    """How far the account's debits (posted and pending) may exceed its posted
    credits: 0 for a wallet and points (never below zero), None for no limit."""


ACCOUNTS: Final[dict[str, AccountClass]] = {
    "bank_clearing": AccountClass("asset", "fen", "bank", None),
    "stip_receivable": AccountClass("asset", "fen", "bank", None),
    "credit_receivable": AccountClass("asset", "fen", "customer_id", None),
    "carried": AccountClass("asset", "fen", "merchant_id", None),
    "payouts": AccountClass("asset", "fen", None, None),
    "merchant": AccountClass("liability", "fen", "merchant_id", None),
    "wallet": AccountClass("liability", "fen", "customer_id", 0),
    "withdrawals_payable": AccountClass("liability", "fen", None, None),
    "merchant_fee_income": AccountClass("income", "fen", None, None),
    "instalment_fee_income": AccountClass("income", "fen", None, None),
    "penalty_income": AccountClass("income", "fen", None, None),
    "recon_loss": AccountClass("expense", "fen", None, None),
    "stip_loss": AccountClass("expense", "fen", None, None),
    "points": AccountClass("liability", "points", "customer_id", 0),
    "points_issued": AccountClass("expense", "points", None, None),
}
"""settlement.md's accounts, by the part of the name before ``:``."""

_NAME_PART: Final = re.compile(r"[A-Za-z0-9._:*-]{1,32}")
"""What follows ``<class>:``: a bank's name, a customer id (wallet.md), a merchant id."""


def account_class(name: str) -> AccountClass:
    """The class of an account name; UnknownAccount if settlement.md lists none such."""
    prefix, colon, rest = name.partition(":")
    found = ACCOUNTS.get(prefix)
    if found is None or (found.per is None) != (not colon):
        raise UnknownAccount(f"no ledger account {name!r}")
    if colon and not _NAME_PART.fullmatch(rest):
        raise UnknownAccount(f"ledger account {name!r}: bad {found.per}")
    return found


def wallet_account(customer_id: str) -> str:
    return f"wallet:{customer_id}"


def merchant_account(merchant_id: str) -> str:
    return f"merchant:{merchant_id}"


class Balances(msgspec.Struct, frozen=True, kw_only=True):
    """An account's four sums, as stored."""

    name: str
    debit_cap: int | None
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0

    @property
    def balance(self) -> int:
        """settlement.md: credits minus debits, posted (an asset's is negative)."""
        return self.credits_posted - self.debits_posted

    @property
    def available(self) -> int:
        """wallet.md: what can still be debited, the posted credits minus the posted
        and pending debits, plus the cap (0 for a wallet). Meaningful for a capped
        account only: an account without a cap may be debited without limit."""
        cap = self.debit_cap or 0
        return self.credits_posted - self.debits_posted - self.debits_pending + cap


# -- transfers ----------------------------------------------------------------------


class TransferKey(msgspec.Struct, frozen=True):
    """wallet.md: a request's principal, its ``id`` and the leg (``pay``, ``void``,
    ``fee``...). POS: ``pos:<42>:<41>``, id = 60.2 and 11; settlement and recon: the
    date as principal, the kind and merchant or RRN as id."""

    principal: str
    id: str
    leg: str


class TransferSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a new transfer is: its key, accounts and amount (compared when the key is
    created again), and what history shows of it (not compared)."""

    key: TransferKey
    debit: str
    credit: str
    amount: int
    kind: str = ""
    """History's kind (wallet.md: ``topup``, ``pay``, ``void``, ``refund``,
    ``withdraw``, ``repay``, ``adjust``; settlement's ``fee``, ``payout``...)."""
    rrn: str = ""
    merchant_id: str = ""


class Transfer(msgspec.Struct, frozen=True, kw_only=True):
    """A stored transfer."""

    spec: TransferSpec
    state: State
    posted_amount: int = 0
    """What was posted: the amount, or less (a hold completed for less, the rest
    released); 0 while pending or voided."""


Field = Literal["debits_pending", "debits_posted", "credits_pending", "credits_posted"]


class Delta(msgspec.Struct, frozen=True):
    account: str
    field: Field
    amount: int
    """Signed: a pending sum released is negative."""


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """What an operation does: the transfer as it becomes (None: nothing changes), the
    change to each account's sums, and the posted movement of each account (history)."""

    operation: Operation
    before: State | None
    after: Transfer | None
    deltas: tuple[Delta, ...] = ()

    @property
    def changes(self) -> bool:
        return self.after is not None

    def posted(self) -> tuple[tuple[str, int], ...]:
        """Each account's posted movement, signed as its balance moves (credit +)."""
        moved: dict[str, int] = {}
        for delta in self.deltas:
            if delta.field == "credits_posted":
                moved[delta.account] = moved.get(delta.account, 0) + delta.amount
            elif delta.field == "debits_posted":
                moved[delta.account] = moved.get(delta.account, 0) - delta.amount
        return tuple(moved.items())


NEXT: Final[dict[tuple[State | None, Operation], State | None]] = {
    (None, "reserve"): "pending",
    (None, "transfer"): "posted",
    ("pending", "post"): "posted",
    ("pending", "void"): "voided",
    # Again: nothing changes (a repeat of the request, a restart's recovery).
    ("pending", "reserve"): None,
    ("posted", "reserve"): None,
    ("voided", "reserve"): None,
    ("posted", "transfer"): None,
    ("posted", "post"): None,
    ("voided", "void"): None,
}
"""The two-phase machine: (state, operation) to the next state, None for no change.
A pair not listed is refused: post of a voided transfer or of a key never created, void
of a posted one."""


def _check_spec(spec: TransferSpec) -> None:
    debit, credit = account_class(spec.debit), account_class(spec.credit)
    if spec.debit == spec.credit:
        raise LedgerError(f"transfer {spec.key}: debit and credit are one account")
    if debit.unit != credit.unit:
        raise LedgerError(f"transfer {spec.key}: {debit.unit} against {credit.unit}")
    if not 0 < spec.amount < 10**15:
        raise LedgerError(f"transfer {spec.key}: amount {spec.amount}")


def _same(spec: TransferSpec, other: TransferSpec) -> bool:
    return (spec.debit, spec.credit, spec.amount) == (other.debit, other.credit, other.amount)


def decide(
    operation: Operation,
    existing: Transfer | None,
    balances: dict[str, Balances],
    *,
    spec: TransferSpec | None = None,
    amount: int | None = None,
) -> Plan:
    """What ``operation`` does, given the transfer under its key (or None) and the
    sums of the accounts it names. ``spec`` for ``reserve`` and ``transfer``; ``amount``
    for a ``post`` of less than the pending amount (the rest is released)."""
    before: State | None = None if existing is None else existing.state
    if existing is not None and spec is not None and not _same(spec, existing.spec):
        raise TransferConflict(f"transfer {spec.key} exists with other accounts or amount")
    key = (before, operation)
    if key not in NEXT:
        what = "no transfer" if existing is None else f"a {before} transfer"
        error = TransferNotFound if existing is None else TransferFinal
        raise error(f"{operation} of {what}")
    after_state = NEXT[key]
    if after_state is None:
        return Plan(operation=operation, before=before, after=None)
    if operation in ("reserve", "transfer"):
        assert spec is not None, "reserve and transfer need a spec"
        _check_spec(spec)
        return _create(operation, spec, balances, after_state)
    assert existing is not None
    return _end(operation, existing, after_state, amount)


def _create(
    operation: Operation, spec: TransferSpec, balances: dict[str, Balances], state: State
) -> Plan:
    debit = balances[spec.debit]
    if debit.debit_cap is not None and debit.available < spec.amount:
        raise InsufficientFunds(f"{spec.debit}: {debit.available} available, {spec.amount} asked")
    side = "pending" if state == "pending" else "posted"
    deltas = (
        Delta(spec.debit, f"debits_{side}", spec.amount),  # type: ignore[arg-type]
        Delta(spec.credit, f"credits_{side}", spec.amount),  # type: ignore[arg-type]
    )
    posted = spec.amount if state == "posted" else 0
    after = Transfer(spec=spec, state=state, posted_amount=posted)
    return _balanced(Plan(operation=operation, before=None, after=after, deltas=deltas))


def _end(operation: Operation, existing: Transfer, state: State, amount: int | None) -> Plan:
    spec = existing.spec
    posted = 0
    if state == "posted":
        posted = spec.amount if amount is None else amount
        if not 0 < posted <= spec.amount:
            raise LedgerError(f"post of {spec.key}: {posted} of a hold of {spec.amount}")
    deltas = [
        Delta(spec.debit, "debits_pending", -spec.amount),
        Delta(spec.credit, "credits_pending", -spec.amount),
    ]
    if posted:
        deltas += [
            Delta(spec.debit, "debits_posted", posted),
            Delta(spec.credit, "credits_posted", posted),
        ]
    after = Transfer(spec=spec, state=state, posted_amount=posted)
    return _balanced(
        Plan(operation=operation, before=existing.state, after=after, deltas=tuple(deltas))
    )


def _balanced(plan: Plan) -> Plan:
    """Every plan moves the debits and credits of each phase by the same amount."""
    for phase in ("pending", "posted"):
        debits = sum(d.amount for d in plan.deltas if d.field == f"debits_{phase}")
        credits = sum(d.amount for d in plan.deltas if d.field == f"credits_{phase}")
        if debits != credits:
            raise LedgerDamaged(f"{plan.operation}: {phase} debits {debits} != credits {credits}")
    return plan


def apply(balances: Balances, deltas: tuple[Delta, ...]) -> Balances:
    """An account's sums after a plan (what the store writes, and what the store's
    conditional update checks against its cap)."""
    changed = {
        field: getattr(balances, field)
        for field in ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
    }
    for delta in deltas:
        if delta.account == balances.name:
            changed[delta.field] += delta.amount
    after = msgspec.structs.replace(balances, **changed)
    if any(value < 0 for value in changed.values()):
        raise LedgerDamaged(f"{balances.name}: a sum below zero")
    return after


def within_cap(balances: Balances) -> bool:
    return balances.debit_cap is None or balances.available >= 0


# -- what the ledger reads as a whole -----------------------------------------------


class LedgerTotals(msgspec.Struct, frozen=True, kw_only=True):
    """All accounts' sums of one unit: debits equal credits, per phase."""

    unit: Unit
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int

    def problems(self) -> list[str]:
        found = []
        if self.debits_posted != self.credits_posted:
            found.append(
                f"{self.unit}: posted debits {self.debits_posted} != credits {self.credits_posted}"
            )
        if self.debits_pending != self.credits_pending:
            found.append(
                f"{self.unit}: pending debits {self.debits_pending} != "
                f"credits {self.credits_pending}"
            )
        return found


TRANSFER_STATES: Final = ("pending", "posted", "voided")


class WalletTotals(msgspec.Struct, frozen=True, kw_only=True):
    """Every ``wallet:<c>`` account summed: what the company owes its customers."""

    posted_fen: int
    """Their balances: posted credits minus posted debits."""
    pending_fen: int
    """What their pending transfers would add once posted: pending credits (top-ups at
    their bank) minus pending debits (payments, withdrawals held)."""


class LedgerFigures(msgspec.Struct, frozen=True, kw_only=True):
    """The ledger's figures for the metrics and ``switch status``: its transfers by
    state (each of TRANSFER_STATES, 0 when none) and, per unit and phase, the sum of
    every account's debits minus its credits (0 while the ledger is sound); the
    wallets' total as last read (None: not read yet)."""

    transfers: dict[str, int]
    totals: list[LedgerTotals]
    wallets: WalletTotals | None = None

    def imbalance(self) -> dict[tuple[str, str], int]:
        """(unit, phase) -> debits minus credits."""
        found: dict[tuple[str, str], int] = {}
        for total in self.totals:
            found[(total.unit, "posted")] = total.debits_posted - total.credits_posted
            found[(total.unit, "pending")] = total.debits_pending - total.credits_pending
        return found


CUSTOMER_ACCOUNTS: Final = ("credit_receivable", "points", "wallet")
"""settlement.md's accounts kept per customer (``<kind>:<customer_id>``): shown summed
per kind, one line each, where the operator prints the ledger's balances."""


class AccountsBalance(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the on-us ledger's balances: an account, or every customer's account
    of one kind summed (``wallet:*``, ``accounts`` of them), in its unit."""

    account: str
    unit: str
    accounts: int
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int

    @property
    def balance(self) -> int:
        """settlement.md: credits minus debits, posted."""
        return self.credits_posted - self.debits_posted


# -- start-up -----------------------------------------------------------------------

Answer = Literal["approved", "declined", "open_hold", "none"]
"""What the journal says of a pending transfer's request: approved (its answer
journaled), declined (or timed out, or reversed), an ``open`` pre-authorisation's hold
(risk.md), or nothing journaled (the request as if never received)."""

RECOVERY: Final[dict[Answer, Operation | None]] = {
    "approved": "post",
    "declined": "void",
    "none": "void",
    "open_hold": None,
}
"""wallet.md: at start-up each pending transfer is posted or voided as its journaled
answer says, except the hold of an open pre-authorisation, which stays pending; one
without a journaled answer is voided."""


def recovery(
    pending: list[Transfer], answer: dict[TransferKey, Answer]
) -> list[tuple[TransferKey, Operation]]:
    """What start-up does to each pending transfer (``answer``: the journal's, by key;
    a key it lacks has none)."""
    actions = []
    for transfer in pending:
        operation = RECOVERY[answer.get(transfer.spec.key, "none")]
        if operation is not None:
            actions.append((transfer.spec.key, operation))
    return actions
