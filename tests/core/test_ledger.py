"""The ledger's two-phase machine (switch.core.ledger), as tables of cases."""

from __future__ import annotations

import msgspec
import pytest

from switch.core import ledger
from switch.core.ledger import (
    Balances,
    InsufficientFunds,
    Transfer,
    TransferConflict,
    TransferFinal,
    TransferKey,
    TransferNotFound,
    TransferSpec,
    UnknownAccount,
    decide,
)

KEY = TransferKey("app:wallet", "pay-1", "pay")
SPEC = TransferSpec(key=KEY, debit="wallet:C1", credit="merchant:M1", amount=800, kind="pay")


def balances(wallet_credits: int = 1000, pending: int = 0) -> dict[str, Balances]:
    return {
        "wallet:C1": Balances(
            name="wallet:C1", debit_cap=0, credits_posted=wallet_credits, debits_pending=pending
        ),
        "merchant:M1": Balances(name="merchant:M1", debit_cap=None, credits_pending=pending),
    }


def test_reserve_holds_the_debit_and_the_credit_pending() -> None:
    plan = decide("reserve", None, balances(), spec=SPEC)
    assert plan.after == Transfer(spec=SPEC, state="pending")
    wallet = ledger.apply(balances()["wallet:C1"], plan.deltas)
    assert (wallet.debits_pending, wallet.balance, wallet.available) == (800, 1000, 200)
    assert plan.posted() == ()


@pytest.mark.parametrize(
    ("state", "operation", "after"),
    [
        ("pending", "post", "posted"),
        ("pending", "void", "voided"),
        ("pending", "reserve", None),
        ("posted", "reserve", None),
        ("voided", "reserve", None),
        ("posted", "post", None),
        ("voided", "void", None),
    ],
)
def test_the_table_decides(state: ledger.State, operation: ledger.Operation, after: str) -> None:
    existing = Transfer(spec=SPEC, state=state, posted_amount=800 if state == "posted" else 0)
    spec = SPEC if operation == "reserve" else None
    plan = decide(operation, existing, balances(pending=800), spec=spec)
    assert (plan.after.state if plan.after else None) == after


@pytest.mark.parametrize(
    ("state", "operation", "error"),
    [
        ("posted", "void", TransferFinal),
        ("voided", "post", TransferFinal),
        (None, "post", TransferNotFound),
        (None, "void", TransferNotFound),
    ],
)
def test_what_the_table_lacks_is_refused(
    state: ledger.State | None, operation: ledger.Operation, error: type[Exception]
) -> None:
    existing = None if state is None else Transfer(spec=SPEC, state=state)
    with pytest.raises(error):
        decide(operation, existing, balances(pending=800))


def test_posting_moves_pending_to_posted_and_balances() -> None:
    existing = Transfer(spec=SPEC, state="pending")
    plan = decide("post", existing, balances(pending=800))
    assert dict(plan.posted()) == {"wallet:C1": -800, "merchant:M1": 800}
    wallet = ledger.apply(balances(pending=800)["wallet:C1"], plan.deltas)
    assert (wallet.debits_pending, wallet.debits_posted, wallet.balance) == (0, 800, 200)


def test_a_hold_posted_for_less_releases_the_rest() -> None:
    plan = decide("post", Transfer(spec=SPEC, state="pending"), balances(pending=800), amount=500)
    assert plan.after is not None and plan.after.posted_amount == 500
    assert dict(plan.posted()) == {"wallet:C1": -500, "merchant:M1": 500}
    with pytest.raises(ledger.LedgerError):
        decide("post", Transfer(spec=SPEC, state="pending"), balances(pending=800), amount=801)


def test_a_wallet_never_goes_below_zero() -> None:
    with pytest.raises(InsufficientFunds) as raised:
        decide("reserve", None, balances(wallet_credits=799), spec=SPEC)
    assert raised.value.response_code == "51"
    # pending debits count against what can be spent
    with pytest.raises(InsufficientFunds):
        decide("reserve", None, balances(wallet_credits=1000, pending=300), spec=SPEC)


def test_the_same_key_for_another_transfer_is_a_conflict() -> None:
    other = TransferSpec(key=KEY, debit="wallet:C1", credit="merchant:M1", amount=801)
    with pytest.raises(TransferConflict) as raised:
        decide("reserve", Transfer(spec=SPEC, state="pending"), balances(), spec=other)
    assert raised.value.response_code == "94"


@pytest.mark.parametrize(
    "name", ["wallet", "bank:icbc", "fees", "payouts:x", "wallet:", "wallet:a b", "nothing:1"]
)
def test_only_settlement_md_accounts(name: str) -> None:
    with pytest.raises(UnknownAccount):
        ledger.account_class(name)


def test_fen_and_points_never_meet() -> None:
    spec = TransferSpec(key=KEY, debit="points:C1", credit="merchant:M1", amount=1)
    with pytest.raises(ledger.LedgerError, match="points against fen"):
        decide("transfer", None, {}, spec=spec)


def test_start_up_posts_or_voids_each_pending_transfer_as_the_journal_says() -> None:
    keys = [TransferKey("pos:M1:T1", f"000042{n:06d}", "pay") for n in range(4)]
    pending = [Transfer(spec=msgspec.structs.replace(SPEC, key=key), state="pending")
               for key in keys]  # fmt: skip
    answers: dict[TransferKey, ledger.Answer] = {
        keys[0]: "approved", keys[1]: "declined", keys[2]: "open_hold"
    }  # fmt: skip
    assert ledger.recovery(pending, answers) == [
        (keys[0], "post"), (keys[1], "void"), (keys[3], "void")
    ]  # fmt: skip
