"""Online requests (online.md) to the canonical model, results back, and idempotency."""

from __future__ import annotations

from datetime import date
from typing import Any

import msgspec
import pytest

from switch.core.model import (
    Acceptor,
    BalanceInquiry,
    Card,
    OriginalRef,
    Outcome,
    Refund,
    Request,
    Sale,
    Void,
)
from switch.core.online import (
    IdempotencyBook,
    decode_error,
    fingerprint_content,
    refusal,
    request_from_online,
    result,
)
from switch.errors import TransactionRefused
from switch.store.crypto import CardKey, CardKeyFile, CardVault
from switch.wire import online as wire

KEY_1 = CardKey(id=1, hmac_key="01" * 32, aes_key="02" * 32)
KEY_2 = CardKey(id=2, hmac_key="03" * 32, aes_key="04" * 32)
CARDS = CardVault(CardKeyFile(active=1, keys=(KEY_1,)))


def keyed_fingerprint(request: wire.OnlineRequest) -> bytes:
    return CARDS.digest(fingerprint_content(request))


def new_book(*, keep_s: float = 7 * 24 * 3600.0, max_entries: int = 100) -> IdempotencyBook:
    return IdempotencyBook(keep_s=keep_s, max_entries=max_entries, matches=CARDS.matches)


def claim(book: IdempotencyBook, request_id: str, request: wire.OnlineRequest) -> bytes | None:
    content = fingerprint_content(request)
    return book.begin(MERCHANT, request_id, content, CARDS.digest(content))


PAN = "6222021000111122221"
MERCHANT = "898310048990001"
TERMINAL = "ONL00001"
WEEK_S = 7 * 24 * 3600.0

CARD = wire.Card(pan=PAN, expiry="2812", cvv2="123")
PURCHASE = wire.Purchase(
    id="order-1", merchant_id=MERCHANT, amount=10000, currency="CNY", card=CARD
)
BALANCE = wire.Balance(id="bal-1", merchant_id=MERCHANT, card=CARD, order_id="o-9", memo="m")
VOID = wire.Void(id="void-1", merchant_id=MERCHANT, original_id="order-1")
REFUND = wire.Refund(id="refund-1", merchant_id=MERCHANT, original_id="order-1", amount=2500)

ACCEPTOR = Acceptor(channel="online", terminal_id=TERMINAL, merchant_id=MERCHANT)
MODEL_CARD = Card(pan=PAN, expiry="2812", cvv2="123", entry_mode="012", condition_code="08")


def online(request: Any) -> Request:
    return request_from_online(request, terminal_id=TERMINAL, stan="000042")


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (
            PURCHASE,
            Sale(
                acceptor=ACCEPTOR,
                stan="000042",
                processing_code="000000",
                online_id="order-1",
                card=MODEL_CARD,
                currency="156",
                amount=10000,
            ),
        ),
        (
            BALANCE,
            BalanceInquiry(
                acceptor=ACCEPTOR,
                stan="000042",
                processing_code="310000",
                online_id="bal-1",
                card=MODEL_CARD,
                currency="156",
            ),
        ),
        (
            VOID,
            Void(
                acceptor=ACCEPTOR,
                stan="000042",
                processing_code="200000",
                online_id="void-1",
                original=OriginalRef(online_id="order-1"),
            ),
        ),
        (
            REFUND,
            Refund(
                acceptor=ACCEPTOR,
                stan="000042",
                processing_code="200000",
                online_id="refund-1",
                amount=2500,
                original=OriginalRef(online_id="order-1"),
            ),
        ),
    ],
    ids=["purchase", "balance", "void", "refund"],
)
def test_request_from_online(request_: Any, expected: Request) -> None:
    assert online(request_) == expected


def test_a_configured_currency_is_settled_in_its_own_minor_units() -> None:
    jpy = msgspec.structs.replace(PURCHASE, currency="JPY")
    request = request_from_online(
        jpy, terminal_id=TERMINAL, stan="000042", currencies=("156", "392")
    )
    assert isinstance(request, Sale)
    assert (request.currency, request.amount) == ("392", 10000)  # 10,000 yen, unconverted


@pytest.mark.parametrize(
    ("request_", "expiry", "today", "refused"),
    [
        (PURCHASE, "2611", date(2026, 12, 7), True),
        (BALANCE, "2611", date(2026, 12, 7), True),
        (PURCHASE, "2612", date(2026, 12, 31), False),
        (PURCHASE, "2612", date(2027, 1, 1), True),
        (PURCHASE, "2001", None, False),  # no date given: no date checked
    ],
)
def test_an_expired_card_is_refused_with_54(
    request_: Any, expiry: str, today: date | None, refused: bool
) -> None:
    request = msgspec.structs.replace(request_, card=_card(expiry=expiry))
    if not refused:
        request_from_online(request, terminal_id=TERMINAL, stan="000042", today=today)
        return
    with pytest.raises(TransactionRefused) as info:
        request_from_online(request, terminal_id=TERMINAL, stan="000042", today=today)
    assert (info.value.response_code, info.value.field) == ("54", "card.expiry")


def test_card_without_cvv2() -> None:
    request = online(msgspec.structs.replace(PURCHASE, card=wire.Card(pan=PAN, expiry="2812")))
    assert isinstance(request, Sale)
    assert request.card.cvv2 is None


def _card(**changes: Any) -> wire.Card:
    return msgspec.structs.replace(CARD, **changes)


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        (
            msgspec.structs.replace(PURCHASE, card=_card(pan="6222021000111122222")),
            "14",
            "card.pan",
        ),
        (msgspec.structs.replace(BALANCE, card=_card(pan="6222021000111122222")), "14", "card.pan"),
        (msgspec.structs.replace(PURCHASE, card=_card(pan="62220210001")), "14", "card.pan"),
        (msgspec.structs.replace(PURCHASE, card=_card(pan="6222-0210001111")), "14", "card.pan"),
        (msgspec.structs.replace(PURCHASE, card=_card(expiry="2813")), "30", "card.expiry"),
        (msgspec.structs.replace(PURCHASE, card=_card(expiry="28")), "30", "card.expiry"),
        (msgspec.structs.replace(PURCHASE, amount=0), "13", "amount"),
        (msgspec.structs.replace(PURCHASE, amount=-1), "13", "amount"),
        (msgspec.structs.replace(PURCHASE, amount=10**12), "13", "amount"),
        (msgspec.structs.replace(REFUND, amount=0), "13", "amount"),
        (msgspec.structs.replace(PURCHASE, currency="XXX"), "57", "currency"),
        (msgspec.structs.replace(PURCHASE, currency="USD"), "57", "currency"),
        (msgspec.structs.replace(PURCHASE, currency="JPY"), "57", "currency"),
        (msgspec.structs.replace(PURCHASE, currency="cny"), "30", "currency"),
    ],
)
def test_refusals(request_: Any, code: str, field: str) -> None:
    with pytest.raises(TransactionRefused) as info:
        online(request_)
    assert info.value.response_code == code
    assert info.value.field == field
    assert PAN not in str(info.value)


def test_largest_amount_is_accepted() -> None:
    request = online(msgspec.structs.replace(PURCHASE, amount=999_999_999_999))
    assert isinstance(request, Sale)
    assert request.amount == 999_999_999_999


# -- results -------------------------------------------------------------------------

APPROVED = Outcome(code="00", rrn="532614000123", auth_code="A1B2C3")


@pytest.mark.parametrize(
    ("request_", "outcome", "balance"),
    [
        (BALANCE, msgspec.structs.replace(APPROVED, balance="1002156C000000012345"), 12345),
        (BALANCE, msgspec.structs.replace(APPROVED, balance="1002156D000000012345"), -12345),
        (BALANCE, msgspec.structs.replace(APPROVED, balance="1002156C000000000000"), 0),
        (BALANCE, APPROVED, None),
        (BALANCE, msgspec.structs.replace(APPROVED, balance="garbled"), None),
        (BALANCE, msgspec.structs.replace(APPROVED, balance="1002156X000000012345"), None),
        # only a balance inquiry's result carries a balance
        (PURCHASE, msgspec.structs.replace(APPROVED, balance="1002156C000000012345"), None),
        (REFUND, msgspec.structs.replace(APPROVED, balance="1002156C000000012345"), None),
    ],
)
def test_result_balance(request_: Any, outcome: Outcome, balance: int | None) -> None:
    answer = result(request_, outcome)
    assert answer.balance == balance
    wire_form = msgspec.msgpack.decode(wire.encode_response(answer))
    assert ("balance" in wire_form) is (balance is not None)


@pytest.mark.parametrize(
    ("outcome", "approved", "auth_code", "message"),
    [
        (APPROVED, True, "A1B2C3", "approved"),
        (
            Outcome(code="51", rrn="532614000124", auth_code="A1B2C3"),
            False,
            None,
            "insufficient funds",
        ),
        (Outcome(code="05", rrn="532614000125"), False, None, "do not honour"),
        (Outcome(code="91", message="bank-a is down"), False, None, "bank-a is down"),
        (Outcome(code="Z9"), False, None, "declined"),
    ],
)
def test_result(outcome: Outcome, approved: bool, auth_code: str | None, message: str) -> None:
    answer = result(PURCHASE, outcome)
    assert answer.id == "order-1"
    assert answer.code == outcome.code
    assert answer.approved is approved
    assert answer.rrn == outcome.rrn
    assert answer.auth_code == auth_code
    assert answer.message == message
    assert answer.order_id is None
    assert answer.memo is None


def test_result_echoes_order_id_and_memo() -> None:
    answer = result(BALANCE, APPROVED)
    assert (answer.order_id, answer.memo) == ("o-9", "m")


def test_refusal_names_the_field() -> None:
    error = refusal("order-1", TransactionRefused("14", "card number fails", field="card.pan"))
    assert error == wire.Error(
        id="order-1", code="14", message="card number fails (field card.pan)"
    )
    assert refusal(None, TransactionRefused("91", "busy")).message == "busy"


@pytest.mark.parametrize(
    ("raw", "code", "request_id"),
    [
        ({"amount": "100"}, "13", "order-1"),
        ({"amount": 1.5}, "13", "order-1"),
        ({"card": {"pan": 6222021000111122221, "expiry": "2812"}}, "14", "order-1"),
        ({"currency": "cny"}, "30", "order-1"),
        ({"merchant_id": "M" * 16}, "30", "order-1"),
        ({"card": {"pan": PAN, "expiry": "2812", "cvv2": "12"}}, "30", "order-1"),
        ({"id": "x" * 65}, "30", None),
        ({"surprise": True}, "30", "order-1"),
        ({"type": "auth"}, "30", "order-1"),
    ],
)
def test_decode_error(raw: dict[str, Any], code: str, request_id: str | None) -> None:
    base = msgspec.msgpack.decode(wire.encode_request(PURCHASE))
    with pytest.raises(wire.OnlineDecodeError) as info:
        wire.decode_request(msgspec.msgpack.encode({**base, **raw}))
    error = decode_error(info.value)
    assert error.code == code
    assert error.id == request_id


@pytest.mark.parametrize(
    ("field_path", "code"),
    [
        ("amount", "13"),
        ("card.pan", "14"),
        ("card.expiry", "30"),
        ("card", "30"),
        ("id", "30"),
        ("", "30"),
        (None, "30"),
    ],
)
def test_decode_error_codes(field_path: str | None, code: str) -> None:
    exc = wire.OnlineDecodeError("bad", request_id="r-1", field_path=field_path)
    assert decode_error(exc) == wire.Error(id="r-1", code=code, message="bad")


def test_garbage_gets_an_error_without_id() -> None:
    with pytest.raises(wire.OnlineDecodeError) as info:
        wire.decode_request(b"\xc1\xc1")
    assert decode_error(info.value).id is None
    assert decode_error(info.value).code == "30"


# -- idempotency ---------------------------------------------------------------------


def encoded(outcome: Outcome = APPROVED, request: Any = PURCHASE) -> bytes:
    return wire.encode_response(result(request, outcome))


def test_fingerprint_compares_content() -> None:
    assert keyed_fingerprint(PURCHASE) == keyed_fingerprint(
        wire.decode_request(wire.encode_request(PURCHASE))
    )
    assert keyed_fingerprint(PURCHASE) != keyed_fingerprint(
        msgspec.structs.replace(PURCHASE, amount=10001)
    )
    assert keyed_fingerprint(PURCHASE) != keyed_fingerprint(
        msgspec.structs.replace(PURCHASE, memo="x")
    )
    assert PAN.encode() not in keyed_fingerprint(PURCHASE)


def test_new_id_is_claimed() -> None:
    book = new_book()
    assert claim(book, "order-1", PURCHASE) is None
    assert book.stored(MERCHANT, "order-1") is None
    assert book.statistics() == {"entries": 0, "in_flight": 1, "evicted_early": 0}


def test_same_content_after_finish_gets_the_same_bytes() -> None:
    book = new_book()
    claim(book, "order-1", PURCHASE)
    payload = encoded()
    book.finish(MERCHANT, "order-1", payload, now_s=0.0)
    for _ in range(3):
        assert claim(book, "order-1", PURCHASE) == payload
    assert book.stored(MERCHANT, "order-1") == payload


def test_same_id_different_content_is_94() -> None:
    book = new_book()
    claim(book, "order-1", PURCHASE)
    other = msgspec.structs.replace(PURCHASE, amount=1)
    with pytest.raises(TransactionRefused, match="different content") as info:
        claim(book, "order-1", other)
    assert info.value.response_code == "94"
    book.finish(MERCHANT, "order-1", encoded(), now_s=1.0)
    with pytest.raises(TransactionRefused, match="different content") as info:
        claim(book, "order-1", other)
    assert info.value.response_code == "94"


def test_same_id_while_in_flight_is_94_in_progress() -> None:
    book = new_book()
    claim(book, "order-1", PURCHASE)
    with pytest.raises(TransactionRefused) as info:
        claim(book, "order-1", PURCHASE)
    assert info.value.response_code == "94"
    assert "in progress" in str(info.value)


def test_ids_are_per_merchant() -> None:
    book = new_book()
    content = fingerprint_content(PURCHASE)
    claim(book, "order-1", PURCHASE)
    assert book.begin("other-merchant", "order-1", content, CARDS.digest(content)) is None


def test_abandon_allows_a_retry() -> None:
    book = new_book()
    claim(book, "order-1", PURCHASE)
    book.abandon(MERCHANT, "order-1")
    assert book.statistics()["in_flight"] == 0
    # ... even with corrected content
    assert claim(book, "order-1", msgspec.structs.replace(PURCHASE, amount=1)) is None


def test_abandon_keeps_a_finished_result() -> None:
    book = new_book()
    claim(book, "order-1", PURCHASE)
    book.finish(MERCHANT, "order-1", encoded(), now_s=0.0)
    book.abandon(MERCHANT, "order-1")
    assert claim(book, "order-1", PURCHASE) == encoded()


def test_finish_and_abandon_of_unknown_ids_do_nothing() -> None:
    book = new_book()
    book.finish(MERCHANT, "nobody", encoded(), now_s=0.0)
    book.abandon(MERCHANT, "nobody")
    assert book.stored(MERCHANT, "nobody") is None
    assert book.statistics() == {"entries": 0, "in_flight": 0, "evicted_early": 0}


def test_entries_expire_after_keep_s() -> None:
    book = new_book(keep_s=100.0)
    for request_id, now_s in (("order-1", 0.0), ("order-2", 50.0), ("order-3", 99.0)):
        claim(book, request_id, PURCHASE)
        book.finish(MERCHANT, request_id, encoded(), now_s=now_s)
    assert book.stored(MERCHANT, "order-1") == encoded()  # within keep_s nothing is forgotten
    claim(book, "order-4", PURCHASE)
    book.finish(MERCHANT, "order-4", encoded(), now_s=120.0)  # past it, what is older goes
    assert book.stored(MERCHANT, "order-1") is None
    assert book.statistics() == {"entries": 3, "in_flight": 0, "evicted_early": 0}
    assert claim(book, "order-1", PURCHASE) is None  # the forgotten id is new again


def test_max_entries_bound_counts_early_evictions() -> None:
    book = new_book(max_entries=3)
    for index in range(5):
        claim(book, f"order-{index}", PURCHASE)
        book.finish(MERCHANT, f"order-{index}", encoded(), now_s=float(index))
    assert book.statistics() == {"entries": 3, "in_flight": 0, "evicted_early": 2}
    assert book.stored(MERCHANT, "order-0") is None
    assert book.stored(MERCHANT, "order-1") is None
    assert book.stored(MERCHANT, "order-4") == encoded()
    # Expiry is not an early eviction.
    book.expire(7 * 24 * 3600.0 + 10.0)
    assert book.statistics() == {"entries": 0, "in_flight": 0, "evicted_early": 2}


def test_a_request_in_flight_never_leaves_the_window_early() -> None:
    """However many results pass through a full window, an id still in flight is held:
    its repeat is refused 94, never sent to the bank a second time."""
    book = new_book(max_entries=2)
    claim(book, "slow-one", PURCHASE)
    for index in range(10):
        claim(book, f"order-{index}", PURCHASE)
        book.finish(MERCHANT, f"order-{index}", encoded(), now_s=float(index))
    assert book.evicted_early == 8
    with pytest.raises(TransactionRefused, match="in progress"):
        claim(book, "slow-one", PURCHASE)


def test_a_repeat_matches_its_first_across_a_key_rotation() -> None:
    """Rotation as documented (add key 2, active = 2): a result kept under key 1 is
    still found by its repeat, and different content is still 94."""
    book = new_book()
    claim(book, "order-1", PURCHASE)
    book.finish(MERCHANT, "order-1", encoded(), now_s=0.0)
    rotated = CardVault(CardKeyFile(active=2, keys=(KEY_1, KEY_2)))
    book.matches = rotated.matches
    content = fingerprint_content(PURCHASE)
    assert book.begin(MERCHANT, "order-1", content, rotated.digest(content)) == encoded()
    other = fingerprint_content(msgspec.structs.replace(PURCHASE, amount=1))
    with pytest.raises(TransactionRefused, match="different content"):
        book.begin(MERCHANT, "order-1", other, rotated.digest(other))
