"""Work claimed across processes on PostgreSQL: several journals on one database
(several workers) are each handed a due reversal only while no other holds a live claim
on it, and only its claimer's result of an attempt is kept; a worker's start-up
recovery takes its own in-doubt transactions and a dead worker's, never a live one's,
each by one recoverer."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from switch.store.port import (
    JournalUnavailable,
    ReversalAttempted,
    ReversalQueued,
    SafState,
    TxnStarted,
    TxnUpdated,
)
from switch.store.postgresql import JournalDatabase, PostgresJournal
from switch.store.postgresql.journal import DatabaseLock
from tests.store.records import make_record

LEASE_S = 60.0


@asynccontextmanager
async def _journals(dsn: str, count: int) -> AsyncIterator[list[PostgresJournal]]:
    async with trio.open_nursery() as nursery:
        journals = [
            PostgresJournal(JournalDatabase(dsn), claimant=f"worker {index}", claim_lease_s=LEASE_S)
            for index in range(count)
        ]
        for journal in journals:
            await nursery.start(journal.run)
        yield journals
        nursery.cancel_scope.cancel()


async def _queue(journal: PostgresJournal, count: int, at: float = 100.0) -> list[str]:
    records = [make_record(f"6326{index:08d}") for index in range(count)]
    await journal.commit(*(TxnStarted.of(record, at) for record in records))
    await journal.commit(
        *(ReversalQueued(rrn=record.rrn, bank="icbc", reason="68", at=at) for record in records)
    )
    return [record.rrn for record in records]


def _attempted(saf_id: int, state: SafState = "pending", at: float = 200.0) -> ReversalAttempted:
    return ReversalAttempted(
        saf_id=saf_id, state=state, attempts=1, next_attempt_at=at,
        result="no answer in time", at=at,
    )  # fmt: skip


async def test_a_claimed_reversal_is_not_handed_to_another_journal_until_its_lease_ends(
    postgres_dsn: str,
) -> None:
    async with _journals(postgres_dsn, 2) as (first, second):
        await _queue(first, 1)
        [claimed] = await first.due_reversals("icbc", 200.0, 10)
        assert await second.due_reversals("icbc", 200.0, 10) == []
        assert await second.due_reversals("icbc", 200.0 + LEASE_S - 1, 10) == []
        # The first claimer is gone (or stuck): past the lease the second takes it.
        [taken] = await second.due_reversals("icbc", 200.0 + LEASE_S, 10)
        assert taken.saf_id == claimed.saf_id
        assert await first.due_reversals("icbc", 200.0 + LEASE_S, 10) == []


async def test_only_the_claimers_result_of_an_attempt_is_kept(postgres_dsn: str) -> None:
    async with _journals(postgres_dsn, 2) as (first, second):
        await _queue(first, 1)
        [claimed] = await first.due_reversals("icbc", 200.0, 10)
        [taken] = await second.due_reversals("icbc", 200.0 + LEASE_S, 10)
        # The second, the claimer now, delivers it; the first's late result changes nothing.
        await second.commit(_attempted(taken.saf_id, "delivered", at=270.0))
        await first.commit(_attempted(claimed.saf_id, "pending", at=280.0))
        for journal in (first, second):
            assert await journal.due_reversals("icbc", 10_000.0, 10) == []
        assert await first.reversal_backlog() == []


async def test_a_recorded_attempt_releases_the_claim_for_any_journal(postgres_dsn: str) -> None:
    async with _journals(postgres_dsn, 2) as (first, second):
        await _queue(first, 1)
        [claimed] = await first.due_reversals("icbc", 200.0, 10)
        await first.commit(_attempted(claimed.saf_id, "pending", at=210.0))
        # Due again at 210, long before the first's lease would have ended.
        [retried] = await second.due_reversals("icbc", 210.0, 10)
        assert (retried.saf_id, retried.attempts) == (claimed.saf_id, 1)


async def test_two_journals_polling_at_once_are_each_handed_a_reversal_exactly_once(
    postgres_dsn: str,
) -> None:
    queued = 60
    async with _journals(postgres_dsn, 2) as journals:
        await _queue(journals[0], queued)
        handed: Counter[int] = Counter()
        by_journal: dict[int, set[int]] = {0: set(), 1: set()}

        def poller(index: int) -> Callable[[], Awaitable[None]]:
            journal = journals[index]

            async def poll() -> None:
                # As a forwarder does: a few at a time, each attempt recorded as delivered.
                while True:
                    due = await journal.due_reversals("icbc", 200.0, 3)
                    if not due:
                        return
                    for reversal in due:
                        if reversal.saf_id not in by_journal[index]:
                            by_journal[index].add(reversal.saf_id)
                            handed[reversal.saf_id] += 1
                    await journal.commit(
                        *(_attempted(reversal.saf_id, "delivered") for reversal in due)
                    )

            return poll

        async with trio.open_nursery() as nursery:
            for index in (0, 1, 0, 1):  # two pollers each, on each journal's two readers
                nursery.start_soon(poller(index))
        assert len(handed) == queued
        assert set(handed.values()) == {1}
        assert not by_journal[0] & by_journal[1]
        assert await journals[1].reversal_backlog() == []


async def test_a_restarted_worker_takes_its_predecessors_claims_over_at_once(
    postgres_dsn: str,
) -> None:
    async with _journals(postgres_dsn, 1) as (before,):
        await _queue(before, 1)
        [claimed] = await before.due_reversals("icbc", 200.0, 10)
    # The same worker again (a process runs as a worker only while it holds its lock).
    async with _journals(postgres_dsn, 2) as (after, other):
        assert await other.due_reversals("icbc", 201.0, 10) == []
        [again] = await after.due_reversals("icbc", 201.0, 10)
        assert again.saf_id == claimed.saf_id


# -- in-doubt transactions, by the worker that wrote them ----------------------------


@asynccontextmanager
async def _workers(dsn: str, *indexes: int) -> AsyncIterator[list[PostgresJournal]]:
    async with trio.open_nursery() as nursery:
        journals = [PostgresJournal(JournalDatabase(dsn), worker=index) for index in indexes]
        for journal in journals:
            await nursery.start(journal.run)
        yield journals
        nursery.cancel_scope.cancel()


def _alive(dsn: str, worker: int) -> DatabaseLock:
    """A running worker, as far as the others can tell: its lock held."""
    lock = DatabaseLock(dsn, worker=worker, wait_s=0.5)
    lock.acquire()
    return lock


async def _sending(journal: PostgresJournal, first: int, count: int) -> set[str]:
    records = [make_record(f"6326{first + index:08d}") for index in range(count)]
    await journal.commit(*(TxnStarted.of(record, 100.0) for record in records))
    return {record.rrn for record in records}


async def _taken(journal: PostgresJournal) -> set[str]:
    async with journal.in_doubt() as records:
        return {record.rrn for record in records}


async def test_a_workers_recovery_takes_its_own_and_the_dead_workers_in_doubt_only(
    postgres_dsn: str,
) -> None:
    locks = {index: _alive(postgres_dsn, index) for index in (0, 1, 2)}
    try:
        async with _workers(postgres_dsn, 0, 1, 2) as (zero, one, two):
            of_zero = await _sending(zero, 0, 3)
            of_one = await _sending(one, 10, 2)
            of_two = await _sending(two, 20, 2)
            # Every worker alive: each sees its own only (never a live worker's sales
            # still at their bank).
            assert await _taken(zero) == of_zero
            assert await _taken(one) == of_one
            # Worker 2 dies: its transactions are anyone's to recover, its own successor's
            # too (it holds worker 2's lock again).
            locks.pop(2).release()
            assert await _taken(zero) == of_zero | of_two
            locks[2] = _alive(postgres_dsn, 2)
            assert await _taken(two) == of_two
            assert await _taken(one) == of_one
    finally:
        for lock in locks.values():
            lock.release()


async def test_a_dead_workers_in_doubt_go_to_exactly_one_recoverer(postgres_dsn: str) -> None:
    locks = [_alive(postgres_dsn, index) for index in (1, 2)]
    try:
        async with _workers(postgres_dsn, 0, 1, 2) as (zero, one, two):
            of_zero = await _sending(zero, 0, 4)  # worker 0 then dies: its lock was never held
            async with one.in_doubt() as first:
                assert {record.rrn for record in first} == of_zero
                # Worker 2 starting at this moment leaves them alone: worker 1 holds them.
                assert await _taken(two) == set()
                # Worker 0's successor waits for them to be recovered before it runs.
                with pytest.raises(JournalUnavailable, match="worker 0"):
                    DatabaseLock(postgres_dsn, worker=0, wait_s=0.1).acquire()
                for record in first:
                    record.state, record.code = "no_answer", "96"
                await one.commit(*(TxnUpdated.of(record, 200.0, "in doubt") for record in first))
            assert await _taken(two) == set()
            assert await _taken(zero) == set()
            assert await zero.transactions_in_doubt() == []
    finally:
        for lock in locks:
            lock.release()


async def test_a_worker_is_refused_while_another_process_runs_as_it(postgres_dsn: str) -> None:
    first = _alive(postgres_dsn, 1)
    try:
        other = _alive(postgres_dsn, 0)  # another worker's lock: not in the way
        other.release()
        with pytest.raises(JournalUnavailable, match=r"in use by another switch .*worker 1"):
            DatabaseLock(postgres_dsn, worker=1, wait_s=0.1).acquire()
    finally:
        first.release()


async def test_each_worker_resumes_after_its_own_last_stan(postgres_dsn: str) -> None:
    """Each worker has a block of STANs: another worker's newer one is not where a
    restarted worker goes on from."""
    async with _workers(postgres_dsn, 0, 1) as (first, second):
        await first.commit(TxnStarted.of(make_record("632600000017"), 100.0))
        await second.commit(TxnStarted.of(make_record("632600500018"), 101.0))
        assert await first.last_bank_stan("icbc") == 17
        assert await second.last_bank_stan("icbc") == 500018
        assert await first.last_bank_stan("abc") is None
