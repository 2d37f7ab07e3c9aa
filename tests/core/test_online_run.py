"""An online id's machine (switch.core.online.OnlineRun), as synchronous tables: the
events the online channel feeds it, the actions it returns, what the idempotency window
holds at the end. The core decides a repeat's answer, as the lifecycle decides a POS
repeat's; the channel only reads the journal and runs the switchboard."""

from __future__ import annotations

from typing import Any

import pytest

from switch.core.changes import OnlineResultKept
from switch.core.model import Outcome
from switch.core.online import (
    ONLINE_HANDLERS,
    ONLINE_TRANSITIONS,
    FirstSeen,
    IdempotencyBook,
    KeptRead,
    NotProcessed,
    OnlineRun,
    Process,
    Processed,
    ReadKept,
    Reply,
    WatchFirst,
    fingerprint_content,
    result,
)
from switch.errors import LocalProtocolError
from switch.wire import online as wire

MERCHANT = "SHOP01"
PURCHASE = wire.Purchase(
    id="order-1",
    merchant_id=MERCHANT,
    amount=10000,
    currency="CNY",
    card=wire.Card(pan="6222021000111122221", expiry="2812", cvv2="123"),
)
CONTENT = fingerprint_content(PURCHASE)
DIGEST = b"digest:" + CONTENT[:8]
APPROVED = Outcome(code="00", rrn="633270000001", auth_code="A1B2C3", bank="icbc")
NOW_S = 1_000_000.0


def matches(content: bytes, stored: bytes) -> bool:
    return stored == b"digest:" + content[:8]


def book(*, shared: bool = False) -> IdempotencyBook:
    return IdempotencyBook(keep_s=7 * 86400, max_entries=100, matches=matches, shared=shared)


def claimed(idempotency: IdempotencyBook) -> OnlineRun:
    assert idempotency.begin(MERCHANT, PURCHASE.id, CONTENT, DIGEST) is None
    return OnlineRun(idempotency, PURCHASE, CONTENT, DIGEST, NOW_S)


def code_of(reply: Reply) -> str:
    return str(wire.decode_response(reply.payload).code)


# -- the window only (one worker, nothing forgotten early) ----------------------------


def test_a_result_that_reached_a_bank_is_kept_and_answered_with_the_bytes_journaled() -> None:
    idempotency = book()
    run = claimed(idempotency)
    assert run.start() == Process()
    [kept] = run.keep(APPROVED)
    assert isinstance(kept, OnlineResultKept) and kept.fingerprint == DIGEST
    reply = run.handle(Processed(APPROVED), NOW_S)
    assert isinstance(reply, Reply) and run.phase == "answered"
    assert reply.payload is kept.response  # encoded once, not again to compare
    assert reply.outcome == APPROVED
    assert idempotency.stored(MERCHANT, PURCHASE.id) is kept.response
    assert idempotency.statistics()["in_flight"] == 0


@pytest.mark.parametrize(
    ("kept", "final"),
    [
        (None, Outcome(code="91", message="busy", shed=True)),  # never reached a bank
        (APPROVED, Outcome(code="96", message="system malfunction")),  # not journaled
    ],
    ids=["refused before a bank", "journal failed"],
)
def test_a_result_not_journaled_is_not_kept_and_the_id_may_be_used_again(
    kept: Outcome | None, final: Outcome
) -> None:
    idempotency = book()
    run = claimed(idempotency)
    run.start()
    if kept is not None:
        run.keep(kept)
    reply = run.handle(Processed(final), NOW_S)
    assert isinstance(reply, Reply)
    assert reply.payload == wire.encode_response(result(PURCHASE, final))
    assert idempotency.stored(MERCHANT, PURCHASE.id) is None
    assert idempotency.begin(MERCHANT, PURCHASE.id, CONTENT, DIGEST) is None  # free again


# -- the journal has the last word (shared, or ids forgotten early) ------------------

JOURNALED = wire.encode_response(result(PURCHASE, APPROVED))

SHARED: list[tuple[str, list[Any], list[Any], str | None]] = [
    # (case, events after start, the actions after start and each event, reply's code)
    ("kept: its result", [KeptRead(DIGEST, JOURNALED)], [ReadKept(), Reply(JOURNALED)], "00"),
    ("kept, other content: 94", [KeptRead(b"other", JOURNALED)], [ReadKept(), None], "94"),
    (
        "no result, no first that reached a bank: processed",
        [KeptRead(), FirstSeen(reached_bank=False)],
        [ReadKept(), WatchFirst(), Process()],
        None,
    ),
    (
        "its first ended at another worker: that result",
        [KeptRead(), FirstSeen(reached_bank=True), KeptRead(DIGEST, JOURNALED)],
        [ReadKept(), WatchFirst(), ReadKept(), Reply(JOURNALED)],
        "00",
    ),
    (
        "its first reached a bank and has no result: 96",
        [KeptRead(), FirstSeen(reached_bank=True), KeptRead()],
        [ReadKept(), WatchFirst(), ReadKept(), None],
        "96",
    ),
]


@pytest.mark.parametrize(
    ("events", "actions", "code"), [case[1:] for case in SHARED], ids=[c[0] for c in SHARED]
)
def test_on_a_shared_journal_the_journal_is_asked_first(
    events: list[Any], actions: list[Any], code: str | None
) -> None:
    idempotency = book(shared=True)
    run = claimed(idempotency)
    done = [run.start(), *(run.handle(event, NOW_S) for event in events)]
    for got, wanted in zip(done, actions, strict=True):
        if wanted is not None:
            assert got == wanted
    last = done[-1]
    if code is None:
        assert last == Process() and run.phase == "processing"
        return
    assert isinstance(last, Reply) and code_of(last) == code and run.phase == "answered"
    assert idempotency.statistics()["in_flight"] == 0  # the claim is let go
    remembered = idempotency.stored(MERCHANT, PURCHASE.id)
    assert remembered == (JOURNALED if code == "00" else None)


def test_an_id_forgotten_early_is_read_from_the_journal_but_no_first_is_watched() -> None:
    idempotency = book()
    idempotency.evicted_early = 1
    run = claimed(idempotency)
    assert run.start() == ReadKept()
    assert run.handle(KeptRead(), NOW_S) == Process()  # one worker: nothing elsewhere


# -- the table --------------------------------------------------------------------------


def test_every_phase_but_answered_has_a_handler_and_every_row_leads_somewhere() -> None:
    assert {phase for phase, _ in ONLINE_TRANSITIONS} == set(ONLINE_HANDLERS)
    assert all(moves for moves in ONLINE_TRANSITIONS.values())
    assert "answered" not in ONLINE_HANDLERS


@pytest.mark.parametrize(
    ("before", "event"),
    [
        ([], KeptRead()),  # processing: it waits for the switchboard
        ([], FirstSeen(reached_bank=True)),
        ([Processed(APPROVED)], Processed(APPROVED)),  # answered: nothing more
    ],
)
def test_an_event_a_phase_does_not_expect_is_our_bug(before: list[Any], event: Any) -> None:
    run = claimed(book())
    run.start()
    for earlier in before:
        run.handle(earlier, NOW_S)
    phase = run.phase
    with pytest.raises(LocalProtocolError):
        run.handle(event, NOW_S)
    assert run.phase == phase


def test_a_refusal_before_the_lifecycle_answers_and_lets_the_id_go() -> None:
    """An app's own checks ahead of the lifecycle (wallet.md) refuse it: that payload
    answers, nothing is kept, the id may be used again."""
    idempotency = book()
    run = claimed(idempotency)
    run.start()
    refused = wire.encode_response(wire.Error(id=PURCHASE.id, code="51", message="no funds"))
    reply = run.handle(NotProcessed(refused), NOW_S)
    assert reply == Reply(refused) and run.phase == "answered"
    assert idempotency.stored(MERCHANT, PURCHASE.id) is None
    assert idempotency.begin(MERCHANT, PURCHASE.id, CONTENT, DIGEST) is None


def test_an_owner_and_a_result_of_its_own_key_and_shape_what_is_kept() -> None:
    """An app principal's id is the principal's; its result is the channel's shape."""
    idempotency = book()
    assert idempotency.begin("app:wallet", PURCHASE.id, CONTENT, DIGEST) is None
    own = wire.Error(id=PURCHASE.id, code="00", message="paid")
    run = OnlineRun(
        idempotency, PURCHASE, CONTENT, DIGEST, NOW_S, owner="app:wallet",
        result_of=lambda outcome: own, answer_of=lambda outcome: own,
    )  # fmt: skip
    run.start()
    [kept] = run.keep(APPROVED)
    assert isinstance(kept, OnlineResultKept) and kept.merchant_id == "app:wallet"
    reply = run.handle(Processed(APPROVED), NOW_S)
    assert isinstance(reply, Reply) and reply.payload is kept.response
    assert idempotency.stored("app:wallet", PURCHASE.id) is kept.response
    assert idempotency.stored(MERCHANT, PURCHASE.id) is None
