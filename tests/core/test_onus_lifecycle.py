"""On-us products in the lifecycle, synchronously (wallet.md): the payment-code sale's
steps on the ledger, its void and refund, the terminal's reversal, and what start-up
does with a pending transfer, fed events by hand and checked by the actions returned."""

from __future__ import annotations

from typing import Any

import pytest

from switch.core import onus
from switch.core.changes import ReversalQueued, TxnStarted, TxnUpdated
from switch.core.ledger import TransferKey
from switch.core.lifecycle import (
    REVERSAL_TRANSITIONS,
    TRANSITIONS,
    Admitted,
    Journal,
    Journaled,
    JournalFailed,
    recovery_changes,
)
from switch.core.model import (
    Card,
    OriginalRef,
    PaycodeRefund,
    PaycodeSale,
    PaycodeVoid,
    Reversal,
)
from switch.core.onus import (
    EndTransfer,
    LedgerAnswered,
    PayByCode,
    PostToLedger,
    ReserveBack,
)
from tests.core.test_lifecycle import POS, World, answer_of, drive, kinds

CODE = "8827503188461290572"  # wallet.md's sample code
FOUND = {"customer_id": "C100000001", "funding": "wallet", "verification": "B"}
"""What the ledger's answer names once the code was found open."""
PAID = LedgerAnswered(auth_code="Q4M7P2", **FOUND)
KEY = TransferKey("pos:898310048990001:POS00001", "000042000124", "pay")


def code_sale(amount: int = 2500, stan: str = "000124") -> PaycodeSale:
    return PaycodeSale(
        acceptor=POS, stan=stan, batch="000042", request_mti="0200",
        processing_code="000000", card=Card(pan=CODE, entry_mode="032"), currency="156",
        amount=amount,
    )  # fmt: skip


def step_of(actions: list[Any]) -> Any:
    last = actions[-1]
    assert isinstance(last, PostToLedger), actions
    return last.step


def paid(world: World, amount: int = 2500, stan: str = "000124") -> Any:
    machine = world.transaction(code_sale(amount, stan))
    drive(machine, Admitted(), Journaled(), PAID)
    assert answer_of(drive(machine, Journaled(), LedgerAnswered())).code == "00"
    return machine.record


def test_the_new_transitions_are_in_the_tables() -> None:
    assert TRANSITIONS[("journaling_request", Journaled)] == ("at_bank", "at_ledger")
    assert TRANSITIONS[("at_ledger", LedgerAnswered)] == "journaling_answer"
    assert TRANSITIONS[("ending_ledger", LedgerAnswered)] == "answered"
    assert REVERSAL_TRANSITIONS[("reserving_back", LedgerAnswered)] == ("journaling", "answered")
    assert REVERSAL_TRANSITIONS[("ending_ledger", LedgerAnswered)] == "answered"


def test_a_code_sale_is_journaled_before_the_ledger_moves_and_answered_after_the_post() -> None:
    world = World()
    machine = world.transaction(code_sale())
    actions = drive(machine, Admitted())
    # No route, no link: journaled first, as a card's request before its bank.
    assert kinds(actions) == ["Journal"]
    (started,) = actions[0].changes
    assert isinstance(started, TxnStarted) and started.record.bank == "on-us"
    assert started.record.kind == "onus_sale" and started.record.state == "sending"
    pay = step_of(machine.handle(Journaled(), 0.0))
    assert pay == PayByCode(
        code=CODE, terminal="POS00001:898310048990001", key=KEY,
        merchant_id="898310048990001", amount=2500, rrn=started.record.rrn,
        local_date="2025-11-22",
    )  # fmt: skip
    actions = machine.handle(PAID, 0.0)
    assert kinds(actions) == ["Journal"]  # the approval journaled before the post...
    updated = [c for c in actions[0].changes if isinstance(c, TxnUpdated)]
    assert updated[0].state == "approved" and updated[0].auth_code == "Q4M7P2"
    assert not any(isinstance(c, ReversalQueued) for c in actions[0].changes)
    end = step_of(machine.handle(Journaled(), 0.0))
    assert end == EndTransfer(key=KEY, approved=True, payment=True)
    outcome = answer_of(machine.handle(LedgerAnswered(), 0.0))  # ...answered after it
    assert (outcome.code, outcome.auth_code, outcome.funding, outcome.bank) == (
        "00", "Q4M7P2", "wallet", "on-us",
    )  # fmt: skip


@pytest.mark.parametrize("code", ["14", "65", "91"])
def test_a_code_not_open_is_journaled_declined_with_nothing_reserved(code: str) -> None:
    world = World()
    machine = world.transaction(code_sale())
    actions = drive(machine, Admitted(), Journaled(), LedgerAnswered(code=code))
    assert isinstance(actions[-1], Journal)
    update = next(c for c in actions[-1].changes if isinstance(c, TxnUpdated))
    assert (update.state, update.code) == ("declined", code)
    actions = machine.handle(Journaled(), 0.0)
    assert kinds(actions) == ["Answer"]  # no ledger step: nothing was reserved
    outcome = answer_of(actions)
    assert outcome.code == code and outcome.funding is None  # no 63: the code was not open


@pytest.mark.parametrize("code", ["51", "61", "57"])
def test_a_refused_payment_is_journaled_declined_and_its_hold_voided(code: str) -> None:
    world = World()
    machine = world.transaction(code_sale())
    actions = drive(machine, Admitted(), Journaled(), LedgerAnswered(code=code, **FOUND))
    assert isinstance(actions[-1], Journal)
    update = next(c for c in actions[-1].changes if isinstance(c, TxnUpdated))
    assert (update.state, update.code) == ("declined", code)
    end = step_of(machine.handle(Journaled(), 0.0))
    assert end == EndTransfer(key=KEY, approved=False, payment=True)
    outcome = answer_of(machine.handle(LedgerAnswered(), 0.0))
    assert (outcome.code, outcome.funding) == (code, "wallet")


def test_an_approval_not_journaled_is_voided_and_answered_96() -> None:
    world = World()
    machine = world.transaction(code_sale())
    drive(machine, Admitted(), Journaled(), PAID)
    end = step_of(machine.handle(JournalFailed("disk full"), 0.0))
    assert end == EndTransfer(key=KEY, approved=False, payment=True)
    assert answer_of(machine.handle(LedgerAnswered(), 0.0)).code == "96"


def test_a_post_that_fails_is_not_answered_approved() -> None:
    world = World()
    machine = world.transaction(code_sale())
    drive(machine, Admitted(), Journaled(), PAID)
    machine.handle(Journaled(), 0.0)
    assert answer_of(machine.handle(LedgerAnswered(code="91"), 0.0)).code == "96"


def test_a_request_not_journaled_never_reaches_the_ledger() -> None:
    world = World()
    machine = world.transaction(code_sale())
    actions = drive(machine, Admitted(), JournalFailed("disk full"))
    assert kinds(actions) == ["Answer"] and answer_of(actions).code == "96"


def test_void_and_refund_reserve_the_compensating_transfer() -> None:
    world = World()
    record = paid(world)
    void = PaycodeVoid(
        acceptor=POS, stan="000125", batch="000042", request_mti="0200",
        processing_code="200000", card=Card(pan=CODE, entry_mode="032"), currency="156",
        amount=2500, original=OriginalRef(rrn=record.rrn),
    )  # fmt: skip
    machine = world.transaction(void)
    actions = drive(machine, Admitted())
    assert kinds(actions) == ["Journal"]  # no code to take: journaled at once
    back = step_of(machine.handle(Journaled(), 0.0))
    void_key = TransferKey(KEY.principal, "000042000125", "void")
    assert back == ReserveBack(
        original=KEY, key=void_key, amount=2500, kind="void", rrn=back.rrn,
        merchant_id="898310048990001",
    )  # fmt: skip
    machine.handle(LedgerAnswered(), 0.0)
    end = step_of(machine.handle(Journaled(), 0.0))
    assert end == EndTransfer(key=void_key, approved=True, uncount=KEY)  # out of the counts
    assert answer_of(machine.handle(LedgerAnswered(), 0.0)).code == "00"
    assert record.voided
    # A refund of another sale: part of it, counts untouched.
    other = paid(world, 4000, "000126")
    refund = PaycodeRefund(
        acceptor=POS, stan="000127", batch="000042", request_mti="0220",
        processing_code="200000", card=Card(pan=CODE, entry_mode="032"), currency="156",
        amount=1000, original=OriginalRef(rrn=other.rrn),
    )  # fmt: skip
    machine = world.transaction(refund)
    drive(machine, Admitted())
    back = step_of(machine.handle(Journaled(), 0.0))
    assert back.kind == "refund" and back.amount == 1000
    machine.handle(LedgerAnswered(), 0.0)
    end = step_of(machine.handle(Journaled(), 0.0))
    assert end.approved and end.uncount is None


def test_a_terminal_reversal_reserves_journals_then_posts() -> None:
    world = World()
    record = paid(world)
    reversal = Reversal(
        acceptor=POS, stan="000124", batch="000042", request_mti="0400",
        processing_code="000000", card=Card(pan=CODE, entry_mode="032"), currency="156",
        amount=2500, original=OriginalRef(batch="000042", stan="000124"),
    )  # fmt: skip
    machine = world.reversal(reversal)
    back = step_of(machine.start())
    reversal_key = TransferKey(KEY.principal, KEY.id, "reversal")
    assert back == ReserveBack(
        original=KEY, key=reversal_key, amount=2500, kind="void", rrn=record.rrn,
        merchant_id="898310048990001", reversal=True,
    )  # fmt: skip
    actions = machine.handle(LedgerAnswered(), 0.0)
    (journal,) = actions
    assert isinstance(journal, Journal)
    assert not any(isinstance(c, ReversalQueued) for c in journal.changes)  # no bank
    assert record.reversed
    end = step_of(machine.handle(Journaled(), 0.0))
    assert end == EndTransfer(key=reversal_key, approved=True, uncount=KEY)
    assert answer_of(machine.handle(LedgerAnswered(), 0.0)).code == "00"
    # Again: nothing more to do.
    again = world.reversal(reversal)
    actions = again.start()
    assert kinds(actions) == ["Answer"] and answer_of(actions).code == "00"


def test_a_reversal_not_journaled_voids_its_compensating_transfer() -> None:
    world = World()
    paid(world)
    reversal = Reversal(
        acceptor=POS, stan="000124", batch="000042", request_mti="0400",
        processing_code="000000", card=Card(pan=CODE, entry_mode="032"), currency="156",
        amount=2500, original=OriginalRef(batch="000042", stan="000124"),
    )  # fmt: skip
    machine = world.reversal(reversal)
    machine.start()
    machine.handle(LedgerAnswered(), 0.0)
    end = step_of(machine.handle(JournalFailed("disk full"), 0.0))
    assert not end.approved
    assert answer_of(machine.handle(LedgerAnswered(), 0.0)).code == "96"


def test_in_doubt_on_us_is_settled_without_a_bank_reversal() -> None:
    world = World()
    machine = world.transaction(code_sale())
    drive(machine, Admitted(), Journaled())
    record = machine.record
    assert record is not None
    changes = recovery_changes(world.book, [record], 0.0)
    assert not any(isinstance(c, ReversalQueued) for c in changes)
    assert record.state == "no_answer"


def test_start_up_reads_the_journal_as_the_recovery_table_wants() -> None:
    world = World()
    record = paid(world)
    assert onus.journal_answer(KEY, None) == "none"
    assert onus.journal_answer(KEY, record) == "approved"
    reversal_key = TransferKey(KEY.principal, KEY.id, "reversal")
    assert onus.journal_answer(reversal_key, record) is None  # not journaled (yet): left
    record.reversed = True
    assert onus.journal_answer(reversal_key, record) == "approved"
    assert onus.journal_answer(KEY, record) == "declined"
    record.state = "sending"  # a live worker's, or in doubt: left alone
    assert onus.journal_answer(KEY, record) is None
    assert onus.parse_pos_key(KEY) == ("POS00001", "898310048990001", "000042", "000124")
    assert onus.parse_pos_key(TransferKey("merchant:SHOP01", "id-1", "pay")) is None


# -- wallet.md's POS frames -------------------------------------------------------------

SAMPLE_SALE = bytes.fromhex(
    "004f600003000060310031073002007020048000c08010198827503188461290"
    "5720000000000000002500000124003200504f53303030303138393833313030"
    "3438393930303031313536000822000042"
)
SAMPLE_ANSWER = bytes.fromhex(
    "007160000000036031003107300210703a00010ec08012198827503188461290"
    "5720000000000000002500000124101530120712070848990000363334313130"
    "30303031323451344d3750323030504f53303030303138393833313030343839"
    "3930303031313536000822000042000357414c"
)


def test_wallet_md_pos_sample_maps_to_a_code_sale_and_its_answer_is_byte_exact() -> None:
    from datetime import UTC, datetime

    from switch.core.clock import Stamp
    from switch.core.model import Outcome
    from switch.core.pos import request_from_pos, response_fields
    from switch.wire.dialect import load_dialect
    from switch.wire.framing import PosEnvelope, join_pos_frame, split_pos_frame
    from switch.wire.iso8583 import Iso8583Codec
    from tests.conftest import DIALECTS

    codec = Iso8583Codec(load_dialect(DIALECTS / "cup-pos.toml"))
    envelope, data = split_pos_frame(SAMPLE_SALE[2:])  # after its length
    message = codec.decode(data)
    request = request_from_pos(message.mti, message.fields, paycode_prefix="88")
    assert isinstance(request, PaycodeSale)
    assert (request.card.pan, request.amount, request.stan) == (CODE, 2500, "000124")
    # Without a ledger (no prefix) the code is a card number like any other.
    assert type(request_from_pos(message.mti, message.fields)).__name__ == "Sale"
    stamp = Stamp.at(datetime(2026, 12, 7, 2, 15, 30, tzinfo=UTC).timestamp(), 8)
    outcome = Outcome(
        code="00", rrn="634110000124", auth_code="Q4M7P2", settlement_date="2026-12-07",
        funding="wallet",
    )  # fmt: skip
    answer = response_fields(message.fields, outcome, stamp, "48990000")
    swapped = PosEnvelope(tpdu=envelope.tpdu[:1] + envelope.tpdu[3:5] + envelope.tpdu[1:3],
                          header=envelope.header)  # fmt: skip
    assert join_pos_frame(swapped, codec.encode("0210", answer)) == SAMPLE_ANSWER[2:]


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({22: "021"}, "14", "22"),
        ({14: "2812"}, "30", "14"),
        ({35: CODE + "=2812"}, "30", "35"),
        ({55: b"\x9f"}, "30", "55"),
        ({49: "840"}, "57", "49"),
        ({3: "310000", 60: "01000042"}, "57", "3"),
    ],
)
def test_a_code_request_with_what_a_code_has_not_is_refused(
    change: dict[int, Any], code: str, field: str
) -> None:
    from switch.core.pos import request_from_pos
    from switch.errors import TransactionRefused

    fields: dict[int, Any] = {
        2: CODE, 3: "000000", 4: "000000002500", 11: "000124", 22: "032", 25: "00",
        41: "POS00001", 42: "898310048990001", 49: "156", 60: "22000042",
    }  # fmt: skip
    fields.update(change)
    with pytest.raises(TransactionRefused) as refused:
        request_from_pos("0200", fields, paycode_prefix="88", currencies=("156", "840"))
    assert (refused.value.response_code, refused.value.field) == (code, field)


# -- wallet_pay (wallet.md): the app's QR payment, on the ledger -------------------------


def qr_payment(amount: int = 8800) -> Any:
    from switch.core.model import Acceptor, QrPayment, WalletCard

    return QrPayment(
        acceptor=Acceptor(channel="online", terminal_id="ONLINE01",
                          merchant_id="898110054110001"),
        stan="000007", online_id="app:wallet pay-20261207-0001", processing_code="000000",
        card=WalletCard(pan="C100000001"), currency="156", amount=amount, app="app:wallet",
        qr_id="K7Q2M9X4D8P3A6TB", qr_kind="dynamic", qr_amount=8800, verification="B",
    )  # fmt: skip


def test_a_wallet_pay_is_journaled_then_paid_on_the_ledger_keyed_by_the_app() -> None:
    world = World()
    machine = world.transaction(qr_payment())
    actions = drive(machine, Admitted())
    (started,) = actions[0].changes
    assert isinstance(started, TxnStarted)
    record = started.record
    assert (record.kind, record.bank, record.merchant_id, record.pan_masked) == (
        "wallet_pay", "on-us", "898110054110001", "",
    )  # fmt: skip
    key = TransferKey("app:wallet", "pay-20261207-0001", "pay")
    assert onus.record_key(record) == key
    pay = step_of(machine.handle(Journaled(), 0.0))
    assert pay == onus.PayByQr(
        key=key, app="app:wallet", customer_id="C100000001", merchant_id="898110054110001",
        qr_id="K7Q2M9X4D8P3A6TB", qr_kind="dynamic", qr_amount=8800, amount=8800,
        funding="wallet", verification="B", rrn=record.rrn, local_date="2025-11-22",
    )  # fmt: skip
    held = LedgerAnswered(auth_code="R8T2W5", qr_id="K7Q2M9X4D8P3A6TB", balance_after=41_200,
                          **FOUND)  # fmt: skip
    actions = machine.handle(held, 0.0)
    assert kinds(actions) == ["Journal"]
    end = step_of(machine.handle(Journaled(), 0.0))
    assert end == EndTransfer(key=key, approved=True, payment=True, qr_id="K7Q2M9X4D8P3A6TB")
    outcome = answer_of(machine.handle(LedgerAnswered(), 0.0))
    assert (outcome.code, outcome.balance_after, outcome.funding) == ("00", 41_200, "wallet")


def test_a_refused_wallet_pay_ends_nothing_of_the_qr() -> None:
    world = World()
    machine = world.transaction(qr_payment())
    drive(machine, Admitted(), Journaled())
    actions = machine.handle(LedgerAnswered(code="94", **FOUND), 0.0)
    update = next(c for c in actions[-1].changes if isinstance(c, TxnUpdated))
    assert (update.state, update.code) == ("declined", "94")
    end = step_of(machine.handle(Journaled(), 0.0))
    assert end.qr_id is None and not end.approved  # the QR is another payment's
    outcome = answer_of(machine.handle(LedgerAnswered(), 0.0))
    assert outcome.code == "94" and outcome.balance_after is None
