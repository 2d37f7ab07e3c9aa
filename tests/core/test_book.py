"""The book of transactions and the rules on originals, as synchronous tables."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from switch.core.bank import OriginalData
from switch.core.book import TransactionBook, TxnRecord
from switch.errors import TransactionRefused

MERCHANT = "898310048990001"
PAN = "6222021000111122221"

_numbers: Iterator[int] = itertools.count(1)


def record(**changes: Any) -> TxnRecord:
    number = next(_numbers)
    fields: dict[str, Any] = {
        "kind": "sale",
        "rrn": f"5326{number:08d}",
        "bank": "bank-a",
        "terminal_id": "POS00001",
        "merchant_id": MERCHANT,
        "stan": f"{number % 1_000_000:06d}",
        "batch": "000042",
        "local_date": "1122",
        "channel": "pos",
        "request_mti": "0200",
        "pan_masked": "622202*********2221",
        "pan_hmac": b"hmac:" + PAN.encode(),
        "pan_sealed": b"sealed",
        "amount": 10000,
        "currency": "156",
        "bank_processing_code": "000000",
    }
    fields.update(changes)
    return TxnRecord(**fields)


def approved_sale(book: TransactionBook, **changes: Any) -> TxnRecord:
    sale = record(**changes)
    book.add(sale)
    book.settle(sale, state="approved", code="00", auth_code="A1B2C3")
    return sale


def follow_up(
    book: TransactionBook, original: TxnRecord, kind: str, amount: int | None = None
) -> TxnRecord:
    """A void or refund of ``original``, reserved and in flight, as the switchboard does."""
    amount = original.amount if amount is None else amount
    if kind == "void":
        book.reserve_void(original, amount)
    else:
        book.reserve_refund(original, amount)
    child = record(
        kind=kind,
        amount=amount,
        original_rrn=original.rrn,
        bank_processing_code="020000" if kind == "void" else "200000",
    )
    book.add(child)
    return child


@pytest.fixture
def book() -> TransactionBook:
    return TransactionBook(max_records=1000)


@contextmanager
def refused(code: str) -> Iterator[None]:
    with pytest.raises(TransactionRefused) as info:
        yield
    assert info.value.response_code == code, str(info.value)


# -- lookups -------------------------------------------------------------------------


def test_lookups(book: TransactionBook) -> None:
    sale = record(online_id="order-1", terminal_id="ONL00001", stan="000777")
    book.add(sale)
    assert len(book) == 1
    assert book.by_rrn(sale.rrn) is sale
    assert book.by_online_id(MERCHANT, "order-1") is sale
    assert book.by_trace("ONL00001", MERCHANT, "000042", "000777") is sale
    assert book.by_rrn("000000000000") is None
    assert book.by_online_id("other-merchant", "order-1") is None
    assert book.by_trace("ONL00001", MERCHANT, "000043", "000777") is None


def test_find_sale_by_rrn(book: TransactionBook) -> None:
    sale = approved_sale(book)
    assert book.find_sale(merchant_id=MERCHANT, rrn=sale.rrn, online_id=None) is sale


def test_find_sale_by_online_id(book: TransactionBook) -> None:
    sale = approved_sale(book, online_id="order-1")
    assert book.find_sale(merchant_id=MERCHANT, rrn=None, online_id="order-1") is sale


# (setup, code): how the original got to the state that refuses a void or refund
def _wrong_merchant(book: TransactionBook) -> dict[str, Any]:
    sale = approved_sale(book)
    return {"merchant_id": "other-merchant", "rrn": sale.rrn, "online_id": None}


def _wrong_merchant_online(book: TransactionBook) -> dict[str, Any]:
    approved_sale(book, online_id="order-1")
    return {"merchant_id": "other-merchant", "rrn": None, "online_id": "order-1"}


def _unknown_rrn(book: TransactionBook) -> dict[str, Any]:
    approved_sale(book)
    return {"merchant_id": MERCHANT, "rrn": "999999999999", "online_id": None}


def _unknown_online_id(book: TransactionBook) -> dict[str, Any]:
    approved_sale(book, online_id="order-1")
    return {"merchant_id": MERCHANT, "rrn": None, "online_id": "order-2"}


def _no_reference(book: TransactionBook) -> dict[str, Any]:
    approved_sale(book)
    return {"merchant_id": MERCHANT, "rrn": None, "online_id": None}


def _not_a_sale(book: TransactionBook) -> dict[str, Any]:
    sale = approved_sale(book)
    refund = follow_up(book, sale, "refund", 100)
    book.settle(refund, state="approved", code="00", auth_code=None)
    return {"merchant_id": MERCHANT, "rrn": refund.rrn, "online_id": None}


def _state(state: str) -> Any:
    def setup(book: TransactionBook) -> dict[str, Any]:
        sale = record()
        book.add(sale)
        if state != "sending":
            book.settle(sale, state=state, code="05", auth_code=None)  # type: ignore[arg-type]
        return {"merchant_id": MERCHANT, "rrn": sale.rrn, "online_id": None}

    return setup


def _reversed(book: TransactionBook) -> dict[str, Any]:
    sale = approved_sale(book)
    book.mark_reversed(sale)
    return {"merchant_id": MERCHANT, "rrn": sale.rrn, "online_id": None}


def _voided(book: TransactionBook) -> dict[str, Any]:
    sale = approved_sale(book)
    void = follow_up(book, sale, "void")
    book.settle(void, state="approved", code="00", auth_code="V00001")
    return {"merchant_id": MERCHANT, "rrn": sale.rrn, "online_id": None}


def _void_pending(book: TransactionBook) -> dict[str, Any]:
    sale = approved_sale(book)
    follow_up(book, sale, "void")
    return {"merchant_id": MERCHANT, "rrn": sale.rrn, "online_id": None}


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        (_wrong_merchant, "25"),
        (_wrong_merchant_online, "25"),
        (_unknown_rrn, "25"),
        (_unknown_online_id, "25"),
        (_no_reference, "25"),
        (_not_a_sale, "25"),
        (_state("sending"), "25"),
        (_state("declined"), "25"),
        (_state("no_answer"), "25"),
        (_state("not_sent"), "25"),
        (_reversed, "25"),
        (_voided, "12"),
        (_void_pending, "12"),
    ],
)
def test_find_sale_refusals(book: TransactionBook, setup: Any, code: str) -> None:
    where = setup(book)
    with refused(code):
        book.find_sale(**where)


# -- voids ---------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [9999, 10001, 1, 0])
def test_void_amount_must_be_the_originals(book: TransactionBook, amount: int) -> None:
    sale = approved_sale(book)
    with refused("64"):
        book.reserve_void(sale, amount)
    assert not sale.void_pending


def test_void_of_a_partly_refunded_sale_is_refused(book: TransactionBook) -> None:
    sale = approved_sale(book)
    refund = follow_up(book, sale, "refund", 100)
    with refused("12"):  # refund still in flight
        book.reserve_void(sale, sale.amount)
    book.settle(refund, state="approved", code="00", auth_code=None)
    with refused("12"):  # refund done
        book.reserve_void(sale, sale.amount)


@pytest.mark.parametrize(
    ("state", "voided"),
    [("approved", True), ("declined", False), ("no_answer", False), ("not_sent", False)],
)
def test_settling_a_void(book: TransactionBook, state: Any, voided: bool) -> None:
    sale = approved_sale(book)
    void = follow_up(book, sale, "void")
    assert sale.void_pending
    book.settle(void, state=state, code="00" if voided else "05", auth_code=None)
    assert not sale.void_pending
    assert sale.voided is voided
    assert void.state == state
    if voided:
        with refused("12"):
            book.find_sale(merchant_id=MERCHANT, rrn=sale.rrn, online_id=None)
    else:
        assert book.find_sale(merchant_id=MERCHANT, rrn=sale.rrn, online_id=None) is sale


def test_reversing_an_approved_void_restores_the_sale(book: TransactionBook) -> None:
    sale = approved_sale(book)
    void = follow_up(book, sale, "void")
    book.settle(void, state="approved", code="00", auth_code=None)
    book.mark_reversed(void)
    assert not sale.voided
    assert book.find_sale(merchant_id=MERCHANT, rrn=sale.rrn, online_id=None) is sale


# -- refunds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amounts", "refused_at"),
    [
        ([10000], None),
        ([10001], 0),
        ([4000, 6000], None),
        ([4000, 6001], 1),
        ([5000, 5000, 1], 2),
        ([9999, 1, 1], 2),
    ],
)
def test_refunds_in_flight_count_against_the_original(
    book: TransactionBook, amounts: list[int], refused_at: int | None
) -> None:
    sale = approved_sale(book)
    for index, amount in enumerate(amounts):
        if index == refused_at:
            with refused("61"):
                book.reserve_refund(sale, amount)
        else:
            book.reserve_refund(sale, amount)
    reserved = sum(amounts[:refused_at] if refused_at is not None else amounts)
    assert sale.refund_reserved == reserved
    assert sale.refunded == 0


def test_two_concurrent_refunds_cannot_exceed_the_original(book: TransactionBook) -> None:
    sale = approved_sale(book)
    first = follow_up(book, sale, "refund", 7000)
    with refused("61"):
        follow_up(book, sale, "refund", 7000)  # would pass if the first were not counted
    second = follow_up(book, sale, "refund", 3000)
    book.settle(first, state="approved", code="00", auth_code=None)
    book.settle(second, state="approved", code="00", auth_code=None)
    assert sale.refunded == 10000
    assert sale.refund_reserved == 0
    with refused("61"):
        book.reserve_refund(sale, 1)


def test_a_declined_refund_releases_its_reservation(book: TransactionBook) -> None:
    sale = approved_sale(book)
    first = follow_up(book, sale, "refund", 7000)
    with refused("61"):
        book.reserve_refund(sale, 7000)
    book.settle(first, state="declined", code="51", auth_code=None)
    assert sale.refund_reserved == 0
    assert sale.refunded == 0
    follow_up(book, sale, "refund", 7000)  # now it fits


@pytest.mark.parametrize(
    ("state", "refunded"),
    [("approved", 2500), ("declined", 0), ("no_answer", 0), ("not_sent", 0)],
)
def test_settling_a_refund(book: TransactionBook, state: Any, refunded: int) -> None:
    sale = approved_sale(book)
    refund = follow_up(book, sale, "refund", 2500)
    assert sale.refund_reserved == 2500
    book.settle(refund, state=state, code=None, auth_code=None)
    assert sale.refund_reserved == 0
    assert sale.refunded == refunded


def test_reversing_an_approved_refund_gives_the_amount_back(book: TransactionBook) -> None:
    sale = approved_sale(book)
    refund = follow_up(book, sale, "refund", 10000)
    book.settle(refund, state="approved", code="00", auth_code=None)
    with refused("61"):
        book.reserve_refund(sale, 1)
    book.mark_reversed(refund)
    assert sale.refunded == 0
    book.mark_reversed(refund)  # a second reversal of the same refund changes nothing
    assert sale.refunded == 0
    follow_up(book, sale, "refund", 10000)


def test_reversing_an_unapproved_refund_changes_nothing(book: TransactionBook) -> None:
    sale = approved_sale(book)
    refund = follow_up(book, sale, "refund", 4000)
    book.settle(refund, state="no_answer", code="68", auth_code=None)
    book.mark_reversed(refund)
    assert refund.reversed
    assert sale.refunded == 0
    assert sale.refund_reserved == 0


def test_reversing_a_sale_makes_it_unfindable(book: TransactionBook) -> None:
    sale = approved_sale(book)
    book.mark_reversed(sale)
    assert sale.reversed
    with refused("25"):
        book.find_sale(merchant_id=MERCHANT, rrn=sale.rrn, online_id=None)


def test_settling_after_the_original_was_forgotten() -> None:
    book = TransactionBook(max_records=2)
    sale = approved_sale(book)
    refund = follow_up(book, sale, "refund", 100)
    book.add(record())  # the sale is forgotten
    assert book.by_rrn(sale.rrn) is None
    book.settle(refund, state="approved", code="00", auth_code=None)
    book.mark_reversed(refund)
    assert refund.state == "approved"


# -- reversal subjects ---------------------------------------------------------------


def test_reversal_subject(book: TransactionBook) -> None:
    sale = record()
    book.add(sale)
    assert sale.reversal_subject(PAN) is None  # never reached a bank
    sale.sent = OriginalData(mti="0200", stan="000007", transmission="1122063015")
    subject = sale.reversal_subject(PAN)
    assert subject is not None
    assert subject.pan == PAN
    assert subject.rrn == sale.rrn
    assert subject.amount == sale.amount
    assert subject.original == sale.sent
    assert PAN not in repr(sale)


# -- the bound -----------------------------------------------------------------------


def test_eviction_keeps_indexes_consistent() -> None:
    book = TransactionBook(max_records=50)
    records = [
        record(online_id=f"order-{index}" if index % 2 else None, stan=f"{index:06d}")
        for index in range(1, 201)
    ]
    for item in records:
        book.add(item)
        assert len(book) <= 50
    assert len(book) == 50
    forgotten, kept = records[:150], records[150:]
    for item in forgotten:
        assert book.by_rrn(item.rrn) is None
        assert book.by_trace(item.terminal_id, item.merchant_id, item.batch, item.stan) is None
        if item.online_id is not None:
            assert book.by_online_id(item.merchant_id, item.online_id) is None
    for item in kept:
        assert book.by_rrn(item.rrn) is item
        assert book.by_trace(item.terminal_id, item.merchant_id, item.batch, item.stan) is item
        if item.online_id is not None:
            assert book.by_online_id(item.merchant_id, item.online_id) is item
    # No index holds more than the book does (nothing leaks past eviction).
    assert len(book._by_trace) == 50
    assert len(book._by_online_id) == sum(item.online_id is not None for item in kept)


def test_eviction_keeps_a_newer_record_with_the_same_trace() -> None:
    book = TransactionBook(max_records=2)
    old = record(stan="000001", online_id="order-1")
    book.add(old)
    new = record(stan="000001", online_id="order-1")  # same terminal trace and id
    book.add(new)
    book.add(record(stan="000002"))  # forgets the old one only
    assert book.by_rrn(old.rrn) is None
    assert book.by_trace("POS00001", MERCHANT, "000042", "000001") is new
    assert book.by_online_id(MERCHANT, "order-1") is new
