"""Pre-authorisation, its void, completion and completion void (risk.md), sans-IO: the
samples of risk.md to the byte, the POS and bank mappings, and the state rules of the
book and the lifecycle, driven by hand."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from switch.core.bank import Institution
from switch.core.book import TransactionBook, TxnRecord
from switch.core.changes import HoldMoved, ReversalQueued, TxnUpdated
from switch.core.clock import Stamp
from switch.core.lifecycle import (
    Admit,
    Admitted,
    Answer,
    BankAnswered,
    BankTimedOut,
    BankTransaction,
    Event,
    Journal,
    Journaled,
    LinkGranted,
    LoadOriginal,
    OriginalLoaded,
    SendToBank,
    expiry_changes,
)
from switch.core.model import (
    PRODUCT_OF,
    Acceptor,
    Card,
    Completion,
    CompletionVoid,
    OriginalRef,
    Outcome,
    PreAuth,
    PreAuthVoid,
)
from switch.core.numbers import RrnAllocator
from switch.core.pos import request_from_pos, response_fields, response_mti
from switch.errors import TransactionRefused
from switch.store.crypto import CardKey, CardKeyFile, CardVault
from switch.wire.dialect import load_dialect
from switch.wire.framing import join_pos_frame, split_pos_frame
from switch.wire.iso8583 import Iso8583Codec
from switch.wire.samples import frame
from tests.conftest import DIALECTS
from tests.core.booked import BookedReversal, BookedTransaction

# risk.md, "Samples (hex)"
PREAUTH_FRAME = frame(
    """
    004f600003000060310031073001007024048000c08010166226901234567893
    0300000000000500000002012812002106504f53303030303738393833313030
    3730313130303031313536000810000017
    """
)
PREAUTH_APPROVAL_FRAME = frame(
    """
    006a60000000036031003107300110703a00010ec08010166226901234567893
    0300000000000500000002011502111122112208489900003533323631343030
    303134303730323231353030504f533030303037383938333130303730313130
    303031313536000810000017
    """
)
COMPLETION_FRAME = frame(
    """
    005f600003000060310031073002007024048004c08018166226901234567893
    0000000000000520000002152812002106373032323135504f53303030303738
    3938333130303730313130303031313536000820000018001600001700020111
    22
    """
)

PAN = "6226901234567893"
OTHER_PAN = "6226901234567901"
MERCHANT = "898310070110001"
HOTEL = Acceptor(channel="pos", terminal_id="POS00007", merchant_id=MERCHANT)
FRONT_DESK = Acceptor(channel="pos", terminal_id="POS00008", merchant_id=MERCHANT)
APPROVED_AT = Stamp.at(datetime(2025, 11, 22, 7, 2, 11, tzinfo=UTC).timestamp(), 8)
CARDS = CardVault(
    CardKeyFile(active=1, keys=(CardKey(id=1, hmac_key="11" * 32, aes_key="22" * 32),))
)
INSTITUTION = Institution("48990000")
NOW = 1000.0
AT_BANK = (Admitted(), LinkGranted("000031"), Journaled())
_STANS = itertools.count(300)


def _stan() -> str:
    """A new terminal trace number: each request of these tests is a new one."""
    return f"{next(_STANS):06d}"


@pytest.fixture(scope="module")
def cup_codec() -> Iso8583Codec:
    return Iso8583Codec(load_dialect(DIALECTS / "cup-pos.toml"))


# -- the samples --------------------------------------------------------------------------


def test_sample_preauth_is_a_preauth(cup_codec: Iso8583Codec) -> None:
    _, message = split_pos_frame(PREAUTH_FRAME[2:])
    decoded = cup_codec.decode(message)
    assert decoded.mti == "0100"
    request = request_from_pos(decoded.mti, decoded.fields)
    assert isinstance(request, PreAuth)
    assert (request.amount, request.card.pan, request.card.condition_code) == (50000, PAN, "06")
    assert (request.stan, request.batch, request.processing_code) == ("000201", "000017", "030000")


def test_sample_preauth_approval_to_the_byte(cup_codec: Iso8583Codec) -> None:
    envelope, message = split_pos_frame(PREAUTH_FRAME[2:])
    request = cup_codec.decode(message)
    outcome = Outcome(
        code="00", rrn="532614000140", auth_code="702215", settlement_date="2025-11-22"
    )
    fields = response_fields(request.fields, outcome, APPROVED_AT, "48990000")
    reply = cup_codec.encode(response_mti(request.mti), fields)
    assert response_mti("0100") == "0110"
    payload = join_pos_frame(envelope.reply(), reply)
    assert len(payload).to_bytes(2, "big") + payload == PREAUTH_APPROVAL_FRAME


def test_sample_completion_names_its_preauth(cup_codec: Iso8583Codec) -> None:
    _, message = split_pos_frame(COMPLETION_FRAME[2:])
    decoded = cup_codec.decode(message)
    request = request_from_pos(decoded.mti, decoded.fields)
    assert isinstance(request, Completion)
    assert request.amount == 52000 and request.batch == "000018"
    assert request.original == OriginalRef(
        auth_code="702215", batch="000017", stan="000201", date="1122"
    )


def _pos(fields: dict[int, Any], **changes: Any) -> dict[int, Any]:
    out = {**fields}
    for name, value in changes.items():
        number = int(name[1:])
        if value is None:
            out.pop(number, None)
        else:
            out[number] = value
    return out


def test_pos_refusals_name_the_field(cup_codec: Iso8583Codec) -> None:
    _, message = split_pos_frame(COMPLETION_FRAME[2:])
    fields = dict(cup_codec.decode(message).fields)
    faults = (
        ({"f38": None}, "38"), ({"f61": None}, "61"), ({"f61": "000017000201"}, "61"),
        ({"f60": "22000018"}, "60"),
    )  # fmt: skip
    for changes, field in faults:
        with pytest.raises(TransactionRefused) as refused:
            request_from_pos("0200", _pos(fields, **changes))
        assert (refused.value.response_code, refused.value.field) == ("30", field)
    # the same 0200 with 25 = 00 is a sale: 60.1 = 20 is then wrong
    with pytest.raises(TransactionRefused, match=r"60\.1"):
        request_from_pos("0200", _pos(fields, f25="00"))
    # a preauth void names its preauth's 38 as well as its RRN
    void = _pos(fields, f3="200000", f4="000000050000", f37="532614000140", f60="11000018")
    with pytest.raises(TransactionRefused) as refused:
        request_from_pos("0100", _pos(void, f38=None))
    assert refused.value.field == "38"
    request = request_from_pos("0100", void)
    assert isinstance(request, PreAuthVoid)
    assert request.original.rrn == "532614000140" and request.original.auth_code == "702215"


# -- the machines ---------------------------------------------------------------------------


class World:
    def __init__(self, *, hold_terms: tuple[int, int] = (30, 115)) -> None:
        self.book = TransactionBook(max_records=1000)
        self.rrns = RrnAllocator()
        self.hold_terms = hold_terms
        self.routes: list[tuple[str, bool]] = []

    def route(self, pan: str, *, secondary: bool = True) -> tuple[str, str]:
        self.routes.append((pan, secondary))
        return "622690", "citic"

    def transaction(self, request: Any, *, business_date: str = "2025-11-22") -> BankTransaction:
        return BookedTransaction(
            request, APPROVED_AT, book=self.book, cards=CARDS, route=self.route,
            institution=INSTITUTION,
            allocate_rrn=lambda stamp: self.rrns.allocate(stamp.local, stamp.rrn_day),
            in_flight=lambda rrn: False, now=NOW, business_date=business_date,
            hold_terms=self.hold_terms,
        )  # fmt: skip

    def run(
        self, request: Any, answer: Event | None, **kw: Any
    ) -> tuple[BankTransaction, list[Any]]:
        """Takes a request to its bank and back (``answer``: what the bank did; None:
        it is expected to be refused once admitted, at the latest); returns the machine
        and every change it journaled."""
        machine = self.transaction(request, **kw)
        actions = machine.start()
        if isinstance(actions[-1], LoadOriginal):  # not in the book: nor in the journal
            actions = machine.handle(OriginalLoaded(None), NOW)
        changes: list[Any] = []
        events: list[Event] = [*AT_BANK, answer, Journaled()] if answer else [Admitted()]
        for event in events:
            if isinstance(actions[-1], Answer):
                break
            if isinstance(actions[-1], Journal) and isinstance(event, Journaled):
                changes.extend(actions[-1].changes)
            actions = machine.handle(event, NOW)
        machine.last = actions  # type: ignore[attr-defined]
        return machine, changes

    def preauth(self, amount: int = 50000, *, stan: str = "000201") -> TxnRecord:
        machine, _ = self.run(
            preauth(amount, stan=stan), BankAnswered("0110", {39: "00", 38: "702215"})
        )
        assert machine.record is not None and machine.record.hold_state == "open"
        return machine.record


def preauth(amount: int = 50000, *, stan: str = "000201", pan: str = PAN) -> PreAuth:
    return PreAuth(
        acceptor=HOTEL, stan=stan, batch="000017", request_mti="0100",
        processing_code="030000", currency="156", amount=amount,
        card=Card(pan=pan, entry_mode="021", condition_code="06"),
    )  # fmt: skip


def completion(
    amount: int = 52000,
    *,
    auth: str = "702215",
    date: str = "1122",
    pan: str = PAN,
    stan: str = "000201",
    rrn: str | None = None,
    acceptor: Acceptor = HOTEL,
) -> Completion:
    return Completion(
        acceptor=acceptor, stan=_stan(), batch="000018", request_mti="0200",
        processing_code="000000", currency="156", amount=amount,
        card=Card(pan=pan, entry_mode="021", condition_code="06"),
        original=OriginalRef(auth_code=auth, batch="000017", stan=stan, date=date, rrn=rrn),
    )  # fmt: skip


def preauth_void(record: TxnRecord, amount: int | None = None, auth: str = "702215") -> PreAuthVoid:
    return PreAuthVoid(
        acceptor=HOTEL, stan=_stan(), batch="000018", request_mti="0100",
        processing_code="200000", currency="156",
        amount=record.amount if amount is None else amount,
        card=Card(pan=PAN, entry_mode="021", condition_code="06"),
        original=OriginalRef(rrn=record.rrn, auth_code=auth),
    )  # fmt: skip


def completion_void(record: TxnRecord, auth: str = "C00001") -> CompletionVoid:
    return CompletionVoid(
        acceptor=HOTEL, stan=_stan(), batch="000018", request_mti="0200",
        processing_code="200000", currency="156", amount=record.amount,
        card=Card(pan=PAN, entry_mode="021", condition_code="06"),
        original=OriginalRef(rrn=record.rrn, auth_code=auth),
    )  # fmt: skip


def refused(machine: BankTransaction) -> Outcome:
    last = machine.last  # type: ignore[attr-defined]
    assert isinstance(last[-1], Answer), last
    return last[-1].outcome


def exchange_of(machine: BankTransaction) -> SendToBank:
    """The bank message of a machine taken to its bank."""
    actions = machine.start()
    for event in AT_BANK:
        actions = machine.handle(event, NOW)
    assert isinstance(actions[-1], SendToBank), actions
    return actions[-1]


def test_preauth_goes_to_its_cards_own_bank_as_a_0100_and_opens() -> None:
    world = World(hold_terms=(7, 120))
    exchange = exchange_of(world.transaction(preauth()))
    assert world.routes[-1] == (PAN, False)  # routed to its card's own bank, never a secondary
    assert (exchange.mti, exchange.fields[3], exchange.fields[25]) == ("0100", "030000", "06")
    assert 38 not in exchange.fields and 90 not in exchange.fields
    record = world.preauth(stan="000209")
    assert (record.hold_until, record.hold_max_pct) == ("2025-11-29", 120)
    assert world.book.by_authorisation(MERCHANT, "702215", "1122") == [record]


def test_a_declined_preauth_holds_nothing() -> None:
    world = World()
    machine, _ = world.run(preauth(), BankAnswered("0110", {39: "51"}))
    assert machine.record is not None and machine.record.hold_state is None
    machine, _ = world.run(completion(), None)
    assert refused(machine).code == "25"


def test_completion_message_and_limit() -> None:
    world = World()
    held = world.preauth()
    exchange = exchange_of(world.transaction(completion(57500)))  # 500.00 x 115 %
    assert (exchange.mti, exchange.fields[3], exchange.fields[25]) == ("0200", "000000", "06")
    assert exchange.fields[38] == "702215"
    assert str(exchange.fields[90]).startswith("0100000031")  # the pre-authorisation's 0100
    world.book.settle(world.book.by_rrn(exchange.fields[37]) or held, state="declined", code="05")  # type: ignore[arg-type]
    machine, _ = world.run(completion(57501), None)
    assert (refused(machine).code, refused(machine).field) == ("61", "amount")


def test_completion_is_found_by_card_38_and_61() -> None:
    world = World()
    world.preauth()
    for request in (
        completion(pan=OTHER_PAN),  # another card
        completion(auth="702216"),  # another 38
        completion(date="1123"),  # another 61.3
        completion(stan="000202"),  # 61.2 given and not the pre-authorisation's
        completion(rrn="532614000999"),  # 37 given and not its RRN
    ):
        machine, _ = world.run(request, None)
        assert refused(machine).code == "25", request
    # 61.1 and 61.2 of zeros are not compared; another terminal of the merchant may complete
    machine, _ = world.run(
        completion(stan="000000", acceptor=FRONT_DESK),
        BankAnswered("0210", {39: "00", 38: "C00001"}),
    )
    assert machine.record is not None and machine.record.state == "approved"


def test_states_one_completion_at_a_time_and_a_completion_void_reopens() -> None:
    world = World()
    held = world.preauth()
    first = world.transaction(completion())
    exchange_of(first)
    assert held.void_pending
    machine, _ = world.run(completion(), None)
    assert refused(machine).code == "12"  # one at a time
    machine, _ = world.run(preauth_void(held), None)
    assert refused(machine).code == "12"
    first.handle(BankAnswered("0210", {39: "00", 38: "C00001"}), NOW)
    assert held.hold_state == "completed"
    machine, _ = world.run(completion(), None)
    assert refused(machine).code == "12"  # completed: void its completion first
    done = first.record
    assert done is not None
    machine, changes = world.run(
        completion_void(done), BankAnswered("0210", {39: "00", 38: "V00001"})
    )
    exchange = [c for c in changes if isinstance(c, TxnUpdated)]
    assert done.voided and held.hold_state == "open"
    assert HoldMoved(rrn=held.rrn, hold_state="open", at=NOW,
                     detail="its completion voided or reversed") in changes  # fmt: skip
    assert any(update.rrn == done.rrn and update.voided for update in exchange)
    # open again: completed once more
    machine, _ = world.run(completion(51000), BankAnswered("0210", {39: "00", 38: "C00002"}))
    assert machine.record is not None and held.hold_state == "completed"


def test_completion_void_message_is_a_void_and_checks_38_and_amount() -> None:
    world = World()
    world.preauth()
    machine, _ = world.run(completion(), BankAnswered("0210", {39: "00", 38: "C00001"}))
    done = machine.record
    assert done is not None
    exchange = exchange_of(world.transaction(completion_void(done)))
    assert (exchange.mti, exchange.fields[3]) == ("0200", "020000")
    assert 38 not in exchange.fields and str(exchange.fields[90]).startswith("0200")
    world.book.by_rrn(done.rrn).void_pending = False  # type: ignore[union-attr]
    machine, _ = world.run(completion_void(done, auth="C00009"), None)
    assert refused(machine).code == "25"
    wrong = completion_void(done)
    machine, _ = world.run(
        CompletionVoid(**{**{f: getattr(wrong, f) for f in wrong.__struct_fields__}, "amount": 1}),
        None,
    )
    assert refused(machine).code == "64"


def test_completion_without_final_answer_is_reversed_and_reopens() -> None:
    world = World()
    held = world.preauth()
    machine, changes = world.run(completion(), BankTimedOut())
    assert refused(machine).code == "68"
    assert any(isinstance(c, ReversalQueued) for c in changes)
    assert held.hold_state == "open" and not held.void_pending
    machine, _ = world.run(completion(), BankAnswered("0210", {39: "00", 38: "C00001"}))
    assert held.hold_state == "completed"


def test_preauth_void_rules_and_message() -> None:
    world = World()
    held = world.preauth()
    machine, _ = world.run(preauth_void(held, amount=49999), None)
    assert refused(machine).code == "64"
    machine, _ = world.run(preauth_void(held, auth="702299"), None)
    assert refused(machine).code == "25"
    exchange = exchange_of(world.transaction(preauth_void(held)))
    assert (exchange.mti, exchange.fields[3], exchange.fields[25]) == ("0100", "020000", "06")
    assert exchange.fields[38] == "702215" and str(exchange.fields[90]).startswith("0100")
    held.void_pending = False
    machine, _ = world.run(preauth_void(held), BankAnswered("0110", {39: "00"}))
    assert held.hold_state == "voided" and held.voided
    machine, _ = world.run(completion(), None)
    assert refused(machine).code == "12"


def test_preauth_past_its_last_completion_date_is_refused_12() -> None:
    world = World(hold_terms=(1, 115))
    held = world.preauth()
    assert held.hold_until == "2025-11-23"
    machine, _ = world.run(completion(), None, business_date="2025-11-24")
    assert refused(machine).code == "12"
    machine, _ = world.run(
        completion(), BankAnswered("0210", {39: "00", 38: "C1"}), business_date="2025-11-23"
    )
    assert held.hold_state == "completed"


def test_a_completion_not_in_the_book_is_looked_up_by_38_and_61_3() -> None:
    world = World()
    held = world.preauth()
    loaded = TxnRecord(**{f: getattr(held, f) for f in held.__struct_fields__})
    world.book = TransactionBook(max_records=1000)
    machine = world.transaction(completion())
    actions = machine.start()
    assert actions == [LoadOriginal(merchant_id=MERCHANT, authorisation=("702215", "1122"))]
    actions = machine.handle(OriginalLoaded(None, others=(loaded,)), NOW)
    assert type(actions[-1]).__name__ == "Admit"


def test_expiry_expires_open_holds_with_their_reversal_and_skips_busy_ones() -> None:
    world = World()
    held = world.preauth()
    busy = world.preauth(stan="000202")
    busy.void_pending = True  # a completion of it at its bank
    changes = expiry_changes(world.book, [held, busy], NOW)
    assert changes[0] == ReversalQueued(rrn=held.rrn, bank="citic", reason="expired", at=NOW)
    assert isinstance(changes[1], TxnUpdated) and changes[1].hold_state == "expired"
    assert changes[1].reversed and len(changes) == 2
    assert held.hold_state == "expired" and busy.hold_state == "open"
    machine, _ = world.run(completion(), None)
    assert refused(machine).code == "12"
    assert expiry_changes(world.book, [held], NOW) == []  # expired once


def test_a_preauth_and_completion_by_payment_code_are_on_us_rows(
    cup_codec: Iso8583Codec,
) -> None:
    """risk.md, "On-us funding": 2 = a payment code, 22 = 032 makes the on-us twin of
    the card's row (on the ledger), no longer a refusal (40)."""
    code = "8812345678901234567"
    _, message = split_pos_frame(PREAUTH_FRAME[2:])
    fields = dict(cup_codec.decode(message).fields)
    preauth = request_from_pos(
        "0100", _pos(fields, f2=code, f22="032", f14=None), paycode_prefix="88"
    )
    assert PRODUCT_OF[type(preauth)].kind == "onus_preauth"
    _, message = split_pos_frame(COMPLETION_FRAME[2:])
    fields = dict(cup_codec.decode(message).fields)
    done = request_from_pos(
        "0200", _pos(fields, f2=code, f22="032", f14=None), paycode_prefix="88"
    )
    assert PRODUCT_OF[type(done)].kind == "onus_completion"


def test_a_completion_reversed_reopens_a_preauth_the_book_no_longer_holds() -> None:
    """After a restart (or the book's eviction) the pre-authorisation is only in the
    journal: the reversal of its approved completion moves it there by RRN."""
    from switch.core.model import Reversal

    world = World()
    held = world.preauth()
    request = completion()
    machine, _ = world.run(request, BankAnswered("0210", {39: "00", 38: "C00001"}))
    done = machine.record
    assert done is not None and held.hold_state == "completed"
    world.book.discard(held)  # no longer in memory
    reversal = Reversal(
        acceptor=HOTEL, stan=request.stan, batch="000018", request_mti="0400",
        processing_code="000000", card=request.card, currency="156", amount=request.amount,
        original=OriginalRef(batch="000018", stan=request.stan),
    )  # fmt: skip
    actions = BookedReversal(
        reversal, book=world.book, cards=CARDS, now=NOW, in_flight=lambda rrn: False
    ).start()
    changes = actions[-1].changes  # type: ignore[union-attr]
    assert ReversalQueued(rrn=done.rrn, bank="citic", reason="terminal reversal 98",
                          at=NOW) in changes  # fmt: skip
    assert HoldMoved(rrn=held.rrn, hold_state="open", at=NOW,
                     detail="its completion voided or reversed") in changes  # fmt: skip


def test_two_completions_checked_before_either_is_admitted_take_the_hold_once() -> None:
    """Both find the open pre-authorisation before admission; the first admitted
    reserves it, so the second, admitted next, is refused 12 (one at a time): the
    original found before admission is looked at again after it."""
    world = World()
    held = world.preauth()
    first, second = world.transaction(completion()), world.transaction(completion())
    assert isinstance(first.start()[-1], Admit) and isinstance(second.start()[-1], Admit)
    first.handle(Admitted(), NOW)
    assert held.void_pending
    answer = second.handle(Admitted(), NOW)[-1]
    assert isinstance(answer, Answer) and answer.outcome.code == "12"
    # Its pre-authorisation voided meanwhile: 12 too; its record replaced by a fresher
    # copy (read back from a shared journal): found anew, on the copy the book holds.
    first.handle(LinkGranted("000031"), NOW)
    first.handle(Journaled(), NOW)
    first.handle(BankAnswered("0210", {39: "05"}), NOW)
    first.handle(Journaled(), NOW)
    assert not held.void_pending and held.hold_state == "open"
    third = world.transaction(completion())
    third.start()
    held.hold_state = "voided"
    answer = third.handle(Admitted(), NOW)[-1]
    assert isinstance(answer, Answer) and answer.outcome.code == "12"
    held.hold_state = "open"
    fourth = world.transaction(completion())
    fourth.start()
    world.book.shared = True
    fresh = msgspec.structs.replace(held)
    assert world.book.take_fresh(fresh) is fresh
    fourth.handle(Admitted(), NOW)
    assert fourth.original is fresh and fresh.void_pending and not held.void_pending


def test_a_completion_searches_for_its_preauth_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #20: the pre-authorisation found before admission is not searched for
    again after it when nothing changed it (the card compared once as well)."""
    world = World()
    held = world.preauth()
    searches: list[str] = []
    find_held = TransactionBook.find_held

    def counted(book: TransactionBook, **kw: Any) -> TxnRecord:
        searches.append(kw["auth_code"])
        return find_held(book, **kw)

    monkeypatch.setattr(TransactionBook, "find_held", counted)
    machine, _ = world.run(completion(), BankAnswered("0210", {39: "00", 38: "C00001"}))
    assert machine.original is held and held.hold_state == "completed"
    assert searches == ["702215"]


def test_two_voids_checked_before_either_is_admitted_void_once() -> None:
    """A void's reservation (the whole original) does not look at the original's state:
    the second void, checked while the first was not yet admitted, is refused 12 by the
    look again after its own admission."""
    world = World()
    held = world.preauth()
    first, second = world.transaction(preauth_void(held)), world.transaction(preauth_void(held))
    assert isinstance(first.start()[-1], Admit) and isinstance(second.start()[-1], Admit)
    first.handle(Admitted(), NOW)
    assert held.void_pending
    answer = second.handle(Admitted(), NOW)[-1]
    assert isinstance(answer, Answer) and answer.outcome.code == "12"
    assert second.original is None
