"""The journal port's contract: what every storage engine must do, tested through the
port alone (changes in, domain answers out), once per engine (and once more for the
PostgreSQL journal's group commit and reads in worker threads, its measured alternatives)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest
import trio

from switch.core.bank import OriginalData
from switch.core.batch import BatchTotals, SettledBatch, UploadRecord
from switch.core.book import TxnRecord
from switch.store.port import (
    AdviceAttempted,
    AdviceQueued,
    BatchRecordsUploaded,
    BatchSettled,
    BatchUploadEnded,
    HoldMoved,
    Journal,
    JournalError,
    OnlineResultKept,
    OnlineResultsPurged,
    ReversalAttempted,
    ReversalBacklog,
    ReversalQueued,
    SafState,
    TxnStarted,
    TxnUpdated,
)
from switch.store.postgresql import JournalDatabase, PostgresJournal
from switch.store.sqlite import JournalFile, SqliteJournal
from tests.store.engines import ENGINES
from tests.store.records import make_record

Opener = Callable[[], Journal]


@pytest.fixture(params=[*ENGINES, "postgresql-thread"])
def open_journal(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the engine's journal on the same storage each time it is called."""
    if request.param == "sqlite":
        return lambda: SqliteJournal(JournalFile(tmp_path / "journal.sqlite3"))
    if request.param == "postgresql":
        dsn: str = request.getfixturevalue("postgres_dsn")  # a new database, this test's
        return lambda: PostgresJournal(JournalDatabase(dsn))
    if request.param == "postgresql-thread":  # its group commit and reads in worker threads
        thread_dsn: str = request.getfixturevalue("postgres_dsn")
        return lambda: PostgresJournal(
            JournalDatabase(thread_dsn), writer="thread", reads="thread"
        )
    raise AssertionError(request.param)


@pytest.fixture
async def journal(open_journal: Opener) -> AsyncIterator[Journal]:
    async with trio.open_nursery() as nursery:
        journal = open_journal()
        await nursery.start(journal.run)
        yield journal
        nursery.cancel_scope.cancel()


async def test_a_started_transaction_reads_back_as_it_was(journal: Journal) -> None:
    record = make_record("632600000001", online_id="order-1", channel="online")
    await journal.commit(TxnStarted.of(record, 100.0))
    assert await journal.transaction_by_rrn("632600000001") == record
    assert await journal.transaction_by_rrn("632600000002") is None
    found = await journal.transaction_by_online_id(record.merchant_id, "order-1")
    assert found == record
    assert await journal.transaction_by_online_id("another merchant", "order-1") is None


async def test_a_change_holds_the_values_of_when_it_was_made(journal: Journal) -> None:
    record = make_record()
    started = TxnStarted.of(record, 100.0)
    record.state = "approved"  # the book settles records in place
    await journal.commit(started)
    stored = await journal.transaction_by_rrn(record.rrn)
    assert stored is not None and stored.state == "sending"


async def test_updates_change_state_and_what_hangs_on_it(journal: Journal) -> None:
    record = make_record()
    await journal.commit(TxnStarted.of(record, 100.0))
    record.state, record.code, record.auth_code = "approved", "00", "A1B2C3"
    record.refunded, record.voided, record.reversed = 300, True, True
    await journal.commit(TxnUpdated.of(record, 101.0, "answered"))
    assert await journal.transaction_by_rrn(record.rrn) == record


async def test_the_latest_of_a_terminals_trace_is_found(journal: Journal) -> None:
    first = make_record("632600000001", stan="000007")
    second = make_record("632600000002", stan="000007", local_date="1123")  # a day later
    other_batch = make_record("632600000003", stan="000007", batch="000002")
    await journal.commit(TxnStarted.of(first, 100.0))
    await journal.commit(TxnStarted.of(second, 101.0), TxnStarted.of(other_batch, 101.0))
    found = await journal.transaction_by_trace("POS00001", "898310048990001", "000001", "000007")
    assert found is not None and found.rrn == second.rrn
    missing = await journal.transaction_by_trace("POS00002", "898310048990001", "000001", "000007")
    assert missing is None


async def test_what_was_left_sending_is_in_doubt(journal: Journal) -> None:
    sending = make_record("632600000001")
    settled = make_record("632600000002")
    await journal.commit(TxnStarted.of(sending, 100.0), TxnStarted.of(settled, 100.0))
    settled.state = "approved"
    await journal.commit(TxnUpdated.of(settled, 101.0))
    assert [r.rrn for r in await journal.transactions_in_doubt()] == [sending.rrn]


async def test_recent_transactions_are_the_newest_oldest_first(journal: Journal) -> None:
    for index in range(5):
        await journal.commit(TxnStarted.of(make_record(f"63260000000{index}"), 100.0 + index))
    recent = await journal.recent_transactions(since=101.0, limit=3)
    assert [r.rrn for r in recent] == ["632600000002", "632600000003", "632600000004"]


async def test_numbers_resume_past_what_was_journaled(journal: Journal) -> None:
    assert await journal.last_bank_stan("icbc") is None
    assert await journal.highest_rrn_sequence("6326") == -1
    await journal.commit(TxnStarted.of(make_record("632600000041"), 100.0))
    await journal.commit(TxnStarted.of(make_record("632600000017"), 101.0))
    await journal.commit(TxnStarted.of(make_record("632700000099", bank="abc"), 102.0))
    assert await journal.last_bank_stan("icbc") == 17  # the latest, not the highest
    assert await journal.highest_rrn_sequence("6326") == 41
    assert await journal.highest_rrn_sequence("6327") == 99


async def test_online_results_are_kept_replaced_and_purged(journal: Journal) -> None:
    kept = OnlineResultKept(
        merchant_id="m1", online_id="id-1", fingerprint=b"f1", response=b"r1", at=100.0
    )
    await journal.commit(kept)
    await journal.commit(msgspec.structs.replace(kept, online_id="id-2", at=200.0))
    result = await journal.online_result("m1", "id-1")
    assert result is not None and (result.fingerprint, result.response) == (b"f1", b"r1")
    assert [r.online_id for r in await journal.online_results_since(150.0)] == ["id-2"]
    await journal.commit(OnlineResultsPurged(before=150.0))
    assert await journal.online_result("m1", "id-1") is None
    assert await journal.online_result("m1", "id-2") is not None


async def test_a_queued_reversal_is_due_until_delivered(journal: Journal) -> None:
    record = make_record()
    await journal.commit(
        TxnStarted.of(record, 100.0),
        ReversalQueued(rrn=record.rrn, bank="icbc", reason="no final answer (68)", at=100.0),
    )
    # Queued twice (a terminal's reversal of one already queued): one reversal.
    await journal.commit(ReversalQueued(rrn=record.rrn, bank="icbc", reason="again", at=101.0))
    assert await journal.due_reversals("abc", 200.0, 10) == []
    assert await journal.due_reversals("icbc", 99.0, 10) == []
    [due] = await journal.due_reversals("icbc", 200.0, 10)
    assert (due.attempts, due.record) == (0, record)
    retry = ReversalAttempted(
        saf_id=due.saf_id, state="pending", attempts=1, next_attempt_at=300.0,
        result="no answer in time", at=200.0,
    )  # fmt: skip
    await journal.commit(retry)
    assert await journal.due_reversals("icbc", 250.0, 10) == []
    [again] = await journal.due_reversals("icbc", 300.0, 10)
    assert again.attempts == 1
    await journal.commit(msgspec.structs.replace(retry, state="delivered", result="00"))
    assert await journal.due_reversals("icbc", 1000.0, 10) == []


async def test_a_reversal_handed_out_is_handed_to_the_same_journal_again_until_recorded(
    journal: Journal,
) -> None:
    # One process asking again while its attempt is under way gets it again (the
    # forwarder skips those in progress); once recorded, its result is what holds.
    record = make_record("632600000001")
    await journal.commit(TxnStarted.of(record, 100.0))
    await journal.commit(ReversalQueued(rrn=record.rrn, bank="icbc", reason="68", at=100.0))
    [first] = await journal.due_reversals("icbc", 200.0, 10)
    [again] = await journal.due_reversals("icbc", 201.0, 10)
    assert again.saf_id == first.saf_id
    retry = ReversalAttempted(
        saf_id=first.saf_id, state="pending", attempts=1, next_attempt_at=500.0,
        result="no answer in time", at=202.0,
    )  # fmt: skip
    await journal.commit(retry)
    assert await journal.due_reversals("icbc", 400.0, 10) == []
    [later] = await journal.due_reversals("icbc", 500.0, 10)
    assert (later.saf_id, later.attempts) == (first.saf_id, 1)


async def test_the_reversal_backlog_counts_what_is_not_delivered_per_bank(
    journal: Journal,
) -> None:
    assert await journal.reversal_backlog() == []
    records = [make_record(f"63260000000{index}") for index in range(5)]
    records.append(make_record("632600000009", bank="abc"))
    await journal.commit(*(TxnStarted.of(record, 100.0) for record in records))
    queued_at = {0: 110.0, 1: 105.0, 2: 120.0, 3: 130.0, 4: 103.0, 5: 140.0}
    await journal.commit(
        *(
            ReversalQueued(rrn=record.rrn, bank=record.bank, reason="68", at=queued_at[index])
            for index, record in enumerate(records)
        )
    )
    due = await journal.due_reversals("icbc", 1000.0, 10) + await journal.due_reversals(
        "abc", 1000.0, 10
    )
    saf_ids = {entry.record.rrn: entry.saf_id for entry in due}

    def attempted(rrn: str, state: SafState) -> ReversalAttempted:
        return ReversalAttempted(
            saf_id=saf_ids[rrn], state=state, attempts=10, next_attempt_at=0.0,
            result="x", at=200.0,
        )  # fmt: skip

    # icbc: 632600000004 (the oldest) delivered, 632600000001 and 632600000003 manual.
    await journal.commit(
        attempted("632600000004", "delivered"),
        attempted("632600000001", "manual"),
        attempted("632600000003", "manual"),
    )
    assert await journal.reversal_backlog() == [
        ReversalBacklog(bank="abc", pending=1, manual=0, oldest_created_at=140.0),
        ReversalBacklog(bank="icbc", pending=2, manual=2, oldest_created_at=105.0),
    ]
    await journal.commit(attempted("632600000009", "delivered"))
    assert [entry.bank for entry in await journal.reversal_backlog()] == ["icbc"]


TERMINAL, MERCHANT = "POS00001", "898310048990001"


@pytest.mark.parametrize(
    ("fields", "counts_as"),
    [
        ({}, "debit"),  # an approved sale
        ({"voided": True}, None),
        ({"reversed": True}, None),
        ({"voided": True, "reversed": True}, None),
        ({"state": "declined", "code": "51"}, None),
        ({"state": "no_answer", "reversed": True}, None),
        ({"state": "not_sent"}, None),
        ({"state": "sending"}, None),
        ({"refunded": 300}, "debit"),  # partly refunded: the refund is a credit of its own
        ({"kind": "balance", "amount": 0}, None),
        ({"kind": "void", "original_rrn": "632600000999"}, None),  # voids count nowhere
        ({"kind": "refund", "original_rrn": "632600000999"}, "credit"),
        ({"kind": "refund", "reversed": True}, None),
        ({"kind": "refund", "state": "declined"}, None),
        ({"batch": "000002"}, None),  # another batch
        ({"terminal_id": "POS00002"}, None),
        ({"merchant_id": "898310048990002"}, None),
        ({"channel": "online"}, None),  # an online checkout has no terminal batch
    ],
)
async def test_batch_totals_count_standing_sales_and_refunds_only(
    journal: Journal, fields: dict[str, object], counts_as: str | None
) -> None:
    values = {"amount": 1234, **fields}
    state = values.pop("state", "approved")
    record = make_record("632600000001", **values)
    await journal.commit(TxnStarted.of(record, 100.0))
    record.state = state  # type: ignore[assignment]
    await journal.commit(TxnUpdated.of(record, 101.0))
    expected = {
        None: BatchTotals(),
        "debit": BatchTotals(debit_fen=1234, debit_count=1),
        "credit": BatchTotals(credit_fen=1234, credit_count=1),
    }[counts_as]
    assert await journal.batch_totals(TERMINAL, MERCHANT, "000001") == expected


async def test_batch_totals_add_up_a_batch(journal: Journal) -> None:
    assert await journal.batch_totals(TERMINAL, MERCHANT, "000001") == BatchTotals()
    records = [
        make_record("632600000001", amount=10000, state="approved"),
        make_record("632600000002", amount=2500, state="approved", refunded=500),
        make_record("632600000003", amount=700, state="approved", voided=True),
        make_record("632600000004", kind="void", amount=700, state="approved"),
        make_record("632600000005", kind="refund", amount=500, state="approved"),
        make_record("632600000006", kind="refund", amount=99, state="approved"),
        make_record("632600000007", amount=4000, state="declined"),
    ]
    await journal.commit(*(TxnStarted.of(record, 100.0) for record in records))
    assert await journal.batch_totals(TERMINAL, MERCHANT, "000001") == BatchTotals(
        debit_fen=12500, debit_count=2, credit_fen=599, credit_count=2
    )
    # A reversal of the first sale and of a refund take them out; the voided sale's
    # void reversed puts it back.
    updates = [(records[0], {"reversed": True}), (records[5], {"reversed": True})]
    updates += [(records[2], {"voided": False}), (records[3], {"reversed": True})]
    for record, changed in updates:
        for name, value in changed.items():
            setattr(record, name, value)
    await journal.commit(*(TxnUpdated.of(record, 101.0) for record, _ in updates))
    assert await journal.batch_totals(TERMINAL, MERCHANT, "000001") == BatchTotals(
        debit_fen=3200, debit_count=2, credit_fen=500, credit_count=1
    )


def settled(batch: str = "000001", **fields: object) -> SettledBatch:
    values: dict[str, object] = {
        "terminal_id": TERMINAL,
        "merchant_id": MERCHANT,
        "batch": batch,
        "terminal_totals": BatchTotals(debit_fen=10000, debit_count=1),
        "switch_totals": BatchTotals(debit_fen=12000, debit_count=2),
        "result": "2",
        "business_date": "2025-11-22",
        "rrn": "532679501000",
        "settled_at": 100.0,
    }
    values.update(fields)
    return SettledBatch(**values)  # type: ignore[arg-type]


def uploaded(*records: tuple[str, str, int], at: float = 110.0) -> BatchRecordsUploaded:
    return BatchRecordsUploaded(
        terminal_id=TERMINAL, merchant_id=MERCHANT, batch="000001", at=at,
        records=tuple(UploadRecord(kind=k, stan=s, amount=a) for k, s, a in records),  # type: ignore[arg-type]
    )  # fmt: skip


def upload_ended(total: int, batch: str = "000001") -> BatchUploadEnded:
    return BatchUploadEnded(
        terminal_id=TERMINAL, merchant_id=MERCHANT, batch=batch, total=total, at=120.0
    )


async def test_a_settlement_and_its_upload_are_kept(journal: Journal) -> None:
    assert await journal.settled_batch(TERMINAL, MERCHANT, "000001") is None
    first = settled()
    await journal.commit(BatchSettled(first))
    assert await journal.settled_batch(TERMINAL, MERCHANT, "000001") == first
    assert await journal.settled_batch(TERMINAL, MERCHANT, "000002") is None
    assert await journal.settled_batch("POS00002", MERCHANT, "000001") is None

    await journal.commit(uploaded(("22", "000007", 10000), ("25", "000009", 300)))
    # A record uploaded again replaces the one before.
    await journal.commit(uploaded(("22", "000008", 2000), ("22", "000007", 10001)))
    await journal.commit(upload_ended(3))
    assert await journal.batch_upload(TERMINAL, MERCHANT, "000001") == [
        UploadRecord(kind="22", stan="000007", amount=10001),
        UploadRecord(kind="22", stan="000008", amount=2000),
        UploadRecord(kind="25", stan="000009", amount=300),
    ]
    assert await journal.batch_upload(TERMINAL, MERCHANT, "000002") == []
    kept = await journal.settled_batch(TERMINAL, MERCHANT, "000001")
    assert kept == msgspec.structs.replace(first, upload_count=3)

    # Settled again with other totals: the answer and the batch's upload are replaced.
    again = settled(terminal_totals=BatchTotals(debit_fen=12000, debit_count=2), result="1")
    await journal.commit(BatchSettled(again))
    assert await journal.settled_batch(TERMINAL, MERCHANT, "000001") == again
    assert await journal.batch_upload(TERMINAL, MERCHANT, "000001") == []


async def test_an_upload_ended_without_a_settlement_keeps_no_count(journal: Journal) -> None:
    await journal.commit(uploaded(("22", "000007", 10000)), upload_ended(1))
    assert await journal.settled_batch(TERMINAL, MERCHANT, "000001") is None
    assert len(await journal.batch_upload(TERMINAL, MERCHANT, "000001")) == 1


async def test_totals_too_large_for_field_48_are_kept_at_its_largest(journal: Journal) -> None:
    outsized = BatchTotals(debit_fen=10**12, debit_count=1000, credit_fen=5, credit_count=1)
    await journal.commit(BatchSettled(settled(switch_totals=outsized)))
    kept = await journal.settled_batch(TERMINAL, MERCHANT, "000001")
    assert kept is not None and kept.switch_totals == BatchTotals(
        debit_fen=10**12 - 1, debit_count=999, credit_fen=5, credit_count=1
    )


async def test_a_batch_read_sees_what_was_queued_before_it_with_async_durability(
    open_journal: Opener,
) -> None:
    """An approval leaves before its commit when the journal is "async"; a terminal that
    settles at once must still find it."""
    async with trio.open_nursery() as nursery:
        journal = open_journal()
        journal.durability = "async"
        await nursery.start(journal.run)
        for index in range(50):
            record = make_record(f"6326{index:08d}", state="approved", amount=100)
            await journal.commit(TxnStarted.of(record, 100.0))
        await journal.commit(BatchSettled(settled()), uploaded(("22", "000007", 100)))
        totals = await journal.batch_totals(TERMINAL, MERCHANT, "000001")
        assert totals == BatchTotals(debit_fen=5000, debit_count=50)
        assert await journal.settled_batch(TERMINAL, MERCHANT, "000001") == settled()
        assert len(await journal.batch_upload(TERMINAL, MERCHANT, "000001")) == 1
        nursery.cancel_scope.cancel()


async def test_changes_committed_together_are_all_or_nothing(journal: Journal) -> None:
    first = make_record("632600000001")
    await journal.commit(TxnStarted.of(first, 100.0))
    second = make_record("632600000002")
    with pytest.raises(JournalError):  # the same RRN again: the whole group fails
        await journal.commit(TxnStarted.of(second, 101.0), TxnStarted.of(first, 101.0))
    assert await journal.transaction_by_rrn(second.rrn) is None
    await journal.commit(TxnStarted.of(second, 102.0))  # and the journal goes on
    assert await journal.transaction_by_rrn(second.rrn) == second


async def test_what_was_committed_is_there_when_it_is_opened_again(open_journal: Opener) -> None:
    record = make_record()
    async with trio.open_nursery() as nursery:
        journal = open_journal()
        await nursery.start(journal.run)
        await journal.commit(TxnStarted.of(record, 100.0))
        nursery.cancel_scope.cancel()
    with pytest.raises(JournalError):  # stopped: refused, not left waiting
        await journal.commit(TxnStarted.of(make_record("632600000002"), 101.0))
    async with trio.open_nursery() as nursery:
        reopened = open_journal()
        await nursery.start(reopened.run)
        assert await reopened.transaction_by_rrn(record.rrn) == record
        assert [r.rrn for r in await reopened.transactions_in_doubt()] == [record.rrn]
        nursery.cancel_scope.cancel()


async def test_async_durability_still_commits_what_was_queued_when_it_stops(
    open_journal: Opener,
) -> None:
    async with trio.open_nursery() as nursery:
        journal = open_journal()
        journal.durability = "async"
        await nursery.start(journal.run)
        for index in range(100):
            await journal.commit(TxnStarted.of(make_record(f"6326{index:08d}"), 100.0))
        nursery.cancel_scope.cancel()  # stopped with groups still queued
    async with trio.open_nursery() as nursery:
        reopened = open_journal()
        await nursery.start(reopened.run)
        assert len(await reopened.recent_transactions(0.0, 1000)) == 100
        nursery.cancel_scope.cancel()


async def test_preauths_are_found_by_authorisation_and_by_their_last_date(
    journal: Journal,
) -> None:
    """risk.md: a completion finds its pre-authorisation by merchant, 38 and 61.3; the
    close of a date finds the open ones whose last completion date it is; a completion's
    void moves its pre-authorisation's state without its record (HoldMoved)."""
    held = [
        make_record(f"63260000000{n}", kind="preauth", request_mti="0100", auth_code="702215",
                    hold_until=until, hold_max_pct=115)
        for n, until in ((1, "2025-11-23"), (2, "2025-11-24"), (3, "2025-11-23"))
    ]  # fmt: skip
    for record in held:
        await journal.commit(TxnStarted.of(record, 100.0))
        record.state, record.code, record.hold_state = "approved", "00", "open"
        await journal.commit(TxnUpdated.of(record, 101.0))
    other_day = make_record("632600000004", kind="preauth", auth_code="702215",
                            local_date="1123", hold_state="open")  # fmt: skip
    await journal.commit(TxnStarted.of(other_day, 100.0))
    sale = make_record("632600000005", auth_code="702215", state="approved")
    await journal.commit(TxnStarted.of(sale, 100.0))
    found = await journal.holds_by_authorisation(held[0].merchant_id, "702215", "1122")
    assert [r.rrn for r in found] == [r.rrn for r in held]
    assert found[0] == held[0] and found[0].hold_until == "2025-11-23"
    assert await journal.holds_by_authorisation("another merchant", "702215", "1122") == []
    await journal.commit(HoldMoved(rrn=held[2].rrn, hold_state="completed", at=102.0,
                                   detail="completed"))  # fmt: skip
    expiring = await journal.holds_open_until("2025-11-23")
    assert [r.rrn for r in expiring] == [held[0].rrn]
    # other_day has no last date (NULL): never compared as one
    later = await journal.holds_open_until("2025-11-24")
    assert [r.rrn for r in later] == [held[0].rrn, held[1].rrn]
    moved = await journal.transaction_by_rrn(held[2].rrn)
    assert moved is not None and moved.hold_state == "completed"
def _stood_in(rrn: str, amount: int) -> TxnRecord:
    return make_record(rrn, amount=amount, bank="citic", sent=None, code="00",
                       state="approved", auth_code="S" + rrn[-5:], stand_in="circuit_open",
                       advice="queued")  # fmt: skip


def _queued(record: TxnRecord, at: float) -> AdviceQueued:
    return AdviceQueued(
        rrn=record.rrn, bank=record.bank, reason="circuit_open", at=at, local_time="154005",
        entry_mode="022", condition_code="00", mcc="5411",
    )  # fmt: skip


async def test_advices_are_handed_out_one_at_a_time_in_the_order_of_stand_in(
    journal: Journal,
) -> None:
    first, second = _stood_in("532614000150", 8800), _stood_in("532614000151", 1200)
    for record, at in ((first, 100.0), (second, 101.0)):  # each with its sale, one commit
        await journal.commit(TxnStarted.of(record, at), _queued(record, at))
    assert await journal.advice_head("abc") is None
    head = await journal.advice_head("citic")
    assert head is not None and head.record == first
    assert (head.state, head.attempts, head.local_time, head.entry_mode, head.mcc) == (
        "queued", 0, "154005", "022", "5411"
    )
    # Sent, no answer: still the head (the next waits), as a repeat.
    await journal.commit(AdviceAttempted(
        advice_id=head.advice_id, rrn=first.rrn, state="sent", attempts=1,
        next_attempt_at=200.0, result="no answer in time", at=150.0,
    ))  # fmt: skip
    again = await journal.advice_head("citic")
    assert again is not None and (again.advice_id, again.state, again.attempts) == (
        head.advice_id, "sent", 1
    )
    [backlog] = await journal.advice_backlog()
    assert (backlog.bank, backlog.pending, backlog.pending_fen, backlog.manual) == (
        "citic", 2, 10000, 0
    )
    accepted = OriginalData(mti="0221", stan="000089", transmission="1122080640")
    await journal.commit(AdviceAttempted(
        advice_id=head.advice_id, rrn=first.rrn, state="accepted", attempts=2,
        next_attempt_at=200.0, result="00", at=200.0, sent=accepted, accepted_date="2025-11-22",
    ))  # fmt: skip
    nxt = await journal.advice_head("citic")
    assert nxt is not None and nxt.record == second
    # The accepted send is the sale's bank message now; its advice state is kept with it.
    read = await journal.transaction_by_rrn(first.rrn)
    assert read is not None and (read.sent, read.advice, read.stand_in) == (
        accepted, "accepted", "circuit_open"
    )
    await journal.commit(AdviceAttempted(
        advice_id=nxt.advice_id, rrn=second.rrn, state="manual", attempts=10,
        next_attempt_at=300.0, result="91", at=300.0,
    ))  # fmt: skip
    assert await journal.advice_head("citic") is None  # manual ones wait for an operator
    [backlog] = await journal.advice_backlog()
    assert (backlog.pending, backlog.manual, backlog.pending_fen) == (0, 1, 1200)
    stood = await journal.stood_in(["1122"])
    assert sorted((row.amount, row.standing, row.pending) for row in stood) == [
        (1200, True, True), (8800, True, False)
    ]
