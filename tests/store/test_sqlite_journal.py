"""The SQLite journal's own mechanics against a real file: schema migrations, group
commits, durability modes, locks, the WAL, a stalling disk. What every engine must do
is in test_journal_port.py."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from switch.store.port import JournalError, TxnStarted, TxnUpdated
from switch.store.rows import events_of
from switch.store.sqlite import JournalFile
from switch.store.sqlite import SqliteJournal as Journal
from switch.store.sqlite.schema import SCHEMA_VERSION, SchemaError, migrate
from switch.store.sqlite.sql import writes_of
from tests.conftest import LogSink
from tests.store.records import make_record


def insert(value: int, *, memo: str = "") -> TxnStarted:
    """One transaction started: a row in ``txn`` (its history in it)."""
    return TxnStarted.of(make_record(f"{value:012d}", terminal_id=memo or "POS00001"), 1.0)


def make_probe_table(path: Path) -> None:
    """A journal file at the current schema, as the switch makes it."""
    file = JournalFile(path)
    file.open()
    file.close()


def count(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT count(*) FROM txn").fetchone()[0])


def test_migrations_bring_a_new_file_to_the_current_version(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "j.sqlite3", isolation_level=None)
    assert migrate(connection) == SCHEMA_VERSION
    assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"txn", "txn_event", "saf", "idempotency"} <= tables
    indexes = {
        row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='index'")
    }
    assert {"txn_by_terminal", "txn_by_online_id", "saf_due"} <= indexes
    assert migrate(connection) == SCHEMA_VERSION  # a second run changes nothing


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "j.sqlite3", isolation_level=None)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaError):
        migrate(connection)


async def test_file_is_wal_and_commits_are_grouped(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = Journal(JournalFile(path), durability="sync")
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)

        async def commit_one(value: int) -> None:
            await journal.commit(insert(value))

        async with trio.open_nursery() as writers:
            for value in range(500):
                writers.start_soon(commit_one, value)
        # Every commit returned only once durable: all 500 are in the file now.
        assert count(path) == 500
        assert journal.changes == 500
        assert journal.commits < 500  # grouped: fewer commits than changes
        with sqlite3.connect(path) as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # Each group's commit time and size, counted for the admin interface.
        statistics = journal.statistics()
        assert statistics.commit_latency is not None and statistics.group_size is not None
        assert statistics.commit_latency.count == statistics.group_size.count == journal.commits
        assert statistics.group_size.sum_ms == 500  # a "ms" here is a change
        assert statistics.writable and statistics.backend == "sqlite"
        nursery.cancel_scope.cancel()
    assert not journal.statistics().writable  # stopped


async def test_a_failed_commit_makes_it_unwritable_until_one_succeeds(tmp_path: Path) -> None:
    journal = Journal(JournalFile(tmp_path / "j.sqlite3"), durability="sync")
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.commit(insert(1))
        with pytest.raises(JournalError):
            await journal.commit(insert(1))  # the same RRN again
        assert not journal.statistics().writable
        await journal.commit(insert(2))
        assert journal.statistics().writable
        nursery.cancel_scope.cancel()


def test_a_group_runs_inserts_before_updates_whatever_the_order_given(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    make_probe_table(path)
    file = JournalFile(path)
    file.open()
    started = insert(1)
    settled = TxnUpdated.of(msgspec.structs.replace(started.record, state="approved"), 2.0)
    file.apply([*writes_of(settled), *writes_of(started)])  # update given first; runs last
    file.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT state FROM txn").fetchall() == [("approved",)]


async def test_a_write_lock_held_elsewhere_delays_commits_but_not_the_event_loop(
    tmp_path: Path,
) -> None:
    """An operator's command writing to the journal holds SQLite's write lock: the
    switch's commit waits for it in a worker thread while the event loop runs on."""
    path = tmp_path / "j.sqlite3"
    make_probe_table(path)
    journal = Journal(JournalFile(path))
    operator = sqlite3.connect(path, isolation_level=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        operator.execute("BEGIN IMMEDIATE")
        committed = trio.Event()

        async def commit_one() -> None:
            await journal.commit(insert(1))
            committed.set()

        nursery.start_soon(commit_one)
        ticks = 0
        with trio.move_on_after(0.3):
            while True:  # the loop keeps turning while the commit waits
                await trio.sleep(0.01)
                ticks += 1
        assert ticks >= 10
        assert not committed.is_set()
        operator.execute("COMMIT")
        await committed.wait()
        assert count(path) == 1
        nursery.cancel_scope.cancel()
    operator.close()


async def test_commits_made_while_the_loop_is_busy_are_all_durable(tmp_path: Path) -> None:
    """With other tasks always ready to run, each commit still returns once its row is
    in (the writer task and the commit's thread get their turns)."""
    path = tmp_path / "j.sqlite3"
    make_probe_table(path)
    journal = Journal(JournalFile(path), durability="sync")
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)

        async def keep_busy() -> None:
            while True:
                await trio.lowlevel.checkpoint()

        for _ in range(3):
            nursery.start_soon(keep_busy)
        for value in range(50):
            await journal.commit(insert(value))
            assert count(path) == value + 1
        nursery.cancel_scope.cancel()
    assert journal.failures == 0


async def test_stopping_waits_for_a_read_still_in_its_thread(tmp_path: Path) -> None:
    """Everything is cancelled at once: a read already in its worker thread finishes
    on an open connection (closing it under the read crashed the process)."""
    path = tmp_path / "j.sqlite3"
    make_probe_table(path)

    class SlowReads(JournalFile):
        def read(self, query: Callable[[sqlite3.Connection], Any]) -> Any:
            time.sleep(0.3)  # in the worker thread, while the journal is being stopped
            return super().read(query)

    journal = Journal(SlowReads(path))
    results: list[object] = []

    async def read() -> None:
        results.append(await journal.transaction_by_rrn(insert(1).record.rrn))

    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.commit(insert(1))
        nursery.start_soon(read)
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert [getattr(record, "rrn", None) for record in results] == [insert(1).record.rrn]
    with pytest.raises(JournalError):
        await journal.transaction_by_rrn(insert(1).record.rrn)


async def test_the_wal_starts_over_under_steady_writes(tmp_path: Path) -> None:
    """Commits that never pause (a fixed number, so the test does not depend on this
    machine's speed): the background checkpoints alone never copy every
    frame, so without the writer's own checkpoint between groups the WAL would only
    grow with everything written (every commit adds whole pages). With it, the WAL
    starts over, and its file stays at what a few intervals write (here the writer
    checkpoints after every group, so that an interval's share is small whatever the
    machine's speed)."""
    path = tmp_path / "j.sqlite3"
    make_probe_table(path)
    journal = Journal(JournalFile(path), durability="sync", wal_reset_interval_s=0.0)
    wide = "x" * 2000
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)

        async def commit_steadily(first: int) -> None:
            for value in range(first, first + 150):  # ~2 KB a commit, never pausing
                await journal.commit(insert(value, memo=wide))

        async with trio.open_nursery() as committers:
            for task in range(8):
                committers.start_soon(commit_steadily, task * 150)
        written = journal.changes * 2000
        wal = path.with_name(path.name + "-wal").stat().st_size
        nursery.cancel_scope.cancel()
    assert written > 2_000_000
    # Without the resets the WAL holds at least everything written (whole 4 KiB pages
    # for 2 KB rows); a reset missed now and then (the periodic checkpoint holding the
    # lock on a loaded machine) lets it reach a third of it, seen here, never half.
    assert wal < written / 2, (wal, written)
    assert journal.wal_resets > 0


class StallingDiskFile(JournalFile):
    """A journal file whose commits take 0.3 s (a disk that stalls), and which records
    where each commit ran: in the event loop's thread or a worker thread."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.commits_in_loop_thread = 0
        self.commits_in_workers = 0
        self.loop_thread = threading.get_ident()

    def commit(self) -> None:
        if threading.get_ident() == self.loop_thread:
            self.commits_in_loop_thread += 1
        else:
            self.commits_in_workers += 1
        time.sleep(0.3)
        super().commit()


async def test_a_stalling_disk_stalls_the_commits_never_the_event_loop(
    tmp_path: Path, log_sink: LogSink
) -> None:
    """Every commit runs in a worker thread, even one at a time with the loop idle: while
    the disk stalls, the loop goes on (here: ticks every 10 ms), and what is queued
    meanwhile is committed as the next group."""
    path = tmp_path / "j.sqlite3"
    make_probe_table(path)
    file = StallingDiskFile(path)
    journal = Journal(file, durability="sync", wal_reset_interval_s=3600)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.commit(insert(0))  # alone, with nothing else to run
        committed = trio.Event()

        async def commit_three() -> None:
            async with trio.open_nursery() as callers:
                for value in (1, 2, 3):
                    callers.start_soon(journal.commit, insert(value))
            committed.set()

        nursery.start_soon(commit_three)
        ticks, began = 0, trio.current_time()
        while not committed.is_set():
            await trio.sleep(0.01)
            ticks += 1
        took = trio.current_time() - began
        nursery.cancel_scope.cancel()
    assert count(path) == 4
    assert file.commits_in_loop_thread == 0
    # Each stalled commit is a warning an operator can find, with how long it took.
    slow = log_sink.events("journal_commit_slow")
    assert len(slow) == file.commits_in_workers
    assert all(line["ms"] >= 300 and line["level"] == "warning" for line in slow)
    assert sum(line["changes"] for line in slow) == 4
    assert file.commits_in_workers <= 3  # 0; then 1, and 2 and 3 together (or all three)
    assert ticks >= took / 0.01 / 2  # the loop turned all along


class SyncRecordingFile(JournalFile):
    """Records the ``synchronous`` level each commit ran at (1 NORMAL, 2 FULL)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.levels: list[int] = []

    def commit(self) -> None:
        assert self._writer is not None
        self.levels.append(int(self._writer.execute("PRAGMA synchronous").fetchone()[0]))
        super().commit()


async def test_only_a_request_start_commits_without_its_own_fsync(tmp_path: Path) -> None:
    """A group of request starts ('sending') alone commits at NORMAL: in the WAL, no
    fsync. Anything else in the group (an answer, a start refused before its bank), or a
    caller asking for ``durable``, commits at FULL: the WAL's fsync, which makes every
    start before it durable too."""
    path = tmp_path / "j.sqlite3"
    make_probe_table(path)
    file = SyncRecordingFile(path)
    journal = Journal(file, durability="sync", wal_reset_interval_s=3600)
    started = insert(1)
    refused = TxnStarted.of(make_record(f"{2:012d}", state="not_sent"), 1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.commit(started)
        await journal.commit(
            TxnUpdated.of(msgspec.structs.replace(started.record, state="approved"), 2.0)
        )
        await journal.commit(insert(3), durable=True)
        await journal.commit(refused)
        await journal.commit(insert(4), insert(5))
        nursery.cancel_scope.cancel()
    assert file.levels == [1, 2, 2, 2, 1]
    assert count(path) == 5
    # The measured alternative: every group with its own fsync.
    file = SyncRecordingFile(path)
    journal = Journal(file, durability="sync", wal_reset_interval_s=3600, sync_starts=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.commit(insert(6))
        nursery.cancel_scope.cancel()
    assert file.levels == [2]


class ThreadRecordingFile(JournalFile):
    """Records the thread each commit ran in."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.threads: list[threading.Thread] = []

    def commit(self) -> None:
        self.threads.append(threading.current_thread())
        super().commit()


async def test_commits_run_in_the_journals_own_thread_for_its_life(tmp_path: Path) -> None:
    """Every commit runs in one thread the journal keeps (handed each group with one
    wake, no thread pool's job per commit), never in the event loop's; it ends when the
    journal stops."""
    path = tmp_path / "j.sqlite3"
    make_probe_table(path)
    file = ThreadRecordingFile(path)
    journal = Journal(file, durability="sync", wal_reset_interval_s=3600)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for value in range(5):
            await journal.commit(insert(value))
        async with trio.open_nursery() as callers:
            for value in range(5, 10):
                callers.start_soon(journal.commit, insert(value))
        nursery.cancel_scope.cancel()
    assert count(path) == 10
    (writer,) = set(file.threads)
    assert writer is not threading.main_thread()
    assert writer.name == f"journal writer {path.name}"
    assert not writer.is_alive()


class PowerCutFile(JournalFile):
    """Keeps what a power cut would leave of the WAL: its frames up to the end of the
    last commit that synced it (``synchronous = FULL``). It never checkpoints, so the
    database file holds only what opening wrote, synced, and the WAL only grows."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.wal = path.with_name(path.name + "-wal")
        self.synced_wal_bytes = 0

    def open(self) -> None:
        super().open()
        self.synced_wal_bytes = self.wal.stat().st_size  # opening commits with FULL

    def commit(self) -> None:
        assert self._writer is not None
        synced = int(self._writer.execute("PRAGMA synchronous").fetchone()[0]) == 2
        super().commit()
        if synced:
            self.synced_wal_bytes = self.wal.stat().st_size

    def checkpoint_writer(self) -> bool:
        return False

    def checkpoint(self) -> None:
        pass

    def after_power_cut(self, folder: Path) -> Path:
        """The journal as the disk would hold it after a power cut now."""
        folder.mkdir()
        image = folder / self.path.name
        image.write_bytes(self.path.read_bytes())
        image.with_name(image.name + "-wal").write_bytes(
            self.wal.read_bytes()[: self.synced_wal_bytes]
        )
        return image


async def test_a_power_cut_loses_only_starts_no_one_was_answered_for(tmp_path: Path) -> None:
    """Sales from several callers, each a start then its answer (as the switch commits
    them), then starts still at their banks when the power goes: the WAL is cut at the
    last commit that synced it. SQLite recovers every answered sale, approved; what is
    lost is only starts whose answers were never committed, one group of them at most."""
    path = tmp_path / "j.sqlite3"
    make_probe_table(path)
    file = PowerCutFile(path)
    journal = Journal(file, durability="sync")
    answered: set[str] = set()
    unanswered: set[str] = set()

    def after_recovery(image: Path) -> dict[str, str]:
        with sqlite3.connect(image) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            return dict(connection.execute("SELECT rrn, state FROM txn").fetchall())

    def histories(image: Path) -> dict[str, list[str]]:
        """Each transaction's history, as the states of its events (its row holds them)."""
        with sqlite3.connect(image) as connection:
            found = connection.execute("SELECT rrn, events FROM txn").fetchall()
        return {rrn: [event[1] for event in events_of(events)] for rrn, events in found}

    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)

        async def sales(caller: int) -> None:
            if caller % 2:  # half the callers a commit behind: groups mix starts and answers
                left = insert(caller * 1000 + 998)
                await journal.commit(left)
                unanswered.add(left.record.rrn)
            for number in range(20):
                started = insert(caller * 1000 + number)
                await journal.commit(started)
                approved = msgspec.structs.replace(started.record, state="approved", code="00")
                await journal.commit(TxnUpdated.of(approved, 2.0))
                answered.add(started.record.rrn)
                # Answered now: the power going this very moment keeps it.
                cut = file.after_power_cut(tmp_path / f"answered-{started.record.rrn}")
                assert after_recovery(cut).get(started.record.rrn) == "approved"
                assert histories(cut)[started.record.rrn] == ["sending", "approved"]
            at_bank = insert(caller * 1000 + 999)
            await journal.commit(at_bank)  # the power goes before its answer
            unanswered.add(at_bank.record.rrn)

        async with trio.open_nursery() as callers:
            for caller in range(1, 7):
                callers.start_soon(sales, caller)
        cut_after_sales = file.after_power_cut(tmp_path / "after-sales")
        synced = insert(7998)
        await journal.commit(synced, durable=True)  # synced, as asked
        alone = insert(7999)  # a start alone after a synced group: no sync of its own
        await journal.commit(alone)
        unanswered.add(alone.record.rrn)
        image = file.after_power_cut(tmp_path / "after")
        nursery.cancel_scope.cancel()

    kept = after_recovery(cut_after_sales)
    assert {rrn: kept.get(rrn) for rrn in answered} == dict.fromkeys(answered, "approved")
    assert (answered | unanswered) - set(kept) <= unanswered
    kept = after_recovery(image)
    assert {rrn: kept.get(rrn) for rrn in answered} == dict.fromkeys(answered, "approved")
    assert kept[synced.record.rrn] == "sending"
    lost = (answered | unanswered) - set(kept)
    assert alone.record.rrn in lost
    assert lost <= unanswered
    assert all(kept[rrn] == "sending" for rrn in unanswered - lost)
    # Each history holds what its row says, no more, no less: the events are written
    # by the statements that write the row, in the same commit.
    history = histories(image)
    assert all(history[rrn] == ["sending", "approved"] for rrn in answered)
    assert all(history[rrn] == ["sending"] for rrn in kept.keys() - answered)
