"""The SQLite journal (WAL): the journal port of ``switch.store.port`` on one file.

One writer task owns the write connection. Callers hand it changes; it commits
whatever has gathered in one transaction, so durability costs one fsync per group
rather than per transaction. With ``durability = "sync"`` a caller's ``commit``
returns only once its operations are on disk: the switch commits a request before it
leaves for a bank, and the bank's answer before it leaves for the terminal. A group
of requests' starts alone is the exception: it is written to the WAL without its own
fsync (``synchronous = NORMAL``: a crash of the process loses nothing, a power cut at
most that group), and the next group, its answers' at the latest, syncs it with its own
(design.md, "The request's start without its own fsync").
``"async"`` returns once queued: faster, and a crash may lose the last group.

Each change becomes writes (a statement and its parameters, ``sql.writes_of``) when it
is handed over, so it holds the values of that moment. A group's writes are sorted
into a fixed statement order and each statement runs once with ``executemany``, in the
event loop (they only change SQLite's page cache, and never wait on a lock there). The
commit, which writes the WAL and waits for the disk, always runs in the journal's own
writer thread (:class:`WriterThread`): a disk that stalls (for up to half a second,
on shared machines) stalls the commits and the callers waiting for them, never the
event loop, which goes on reading, answering 91 when full, and talking to the banks.

Reads use a second connection (WAL lets readers and the writer work at once), one at a
time, also in a worker thread.

Opening proves the file can be written (a small change, committed), so a read-only
file or filesystem refuses the start (``JournalUnavailable``) instead of answering 96 to
everything. The file is created 0600 (its ``-wal`` and ``-shm`` take its mode), and
:class:`LockFile` keeps a second switch off a journal in use.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import math
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from itertools import groupby
from pathlib import Path
from typing import Any, TypeVar

import outcome
import structlog
import trio

from switch.core.book import TxnRecord
from switch.core.stats import LatencyHistogram
from switch.files import make_private_folder
from switch.store import port
from switch.store.port import (
    Change,
    Durability,
    JournalError,
    JournalStatistics,
    JournalUnavailable,
    TxnStarted,
)
from switch.store.questions import JournalQuestions, Select
from switch.store.sqlite import sql
from switch.store.sqlite.schema import SchemaError, migrate
from switch.store.writes import Write

log = structlog.get_logger()

Result = TypeVar("Result")

PRIVATE_MODE = 0o600
"""The journal holds masked and sealed card data: only its owner reads it."""
SLOW_COMMIT_S = 0.02
"""A commit that takes longer in its thread (an fsync takes a fraction of a millisecond)
is logged, one warning line each: the disk stalled, or an operator's command held the
write lock. Commits run one at a time, so at most 50 such lines a second."""
BUSY_TIMEOUT_MS = 10_000
"""How long a connection waits for another's lock (an operator command's write)."""
CHECKPOINT_INTERVAL_S = 0.25
"""How often the WAL is copied into the database, away from the commit path."""
WAL_RESET_INTERVAL_S = 5.0
"""How often the writer itself, between two groups, checkpoints what the background
checkpoints left: only a checkpoint that copied every frame lets the WAL start over,
and under steady traffic the background ones never catch up, so the WAL would grow
for ever. Long, because this one's fsync holds the commits up if the disk stalls."""


class JournalFile:
    """The SQLite file and its two connections; plain blocking calls, run in threads."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        self._synchronous_now = synchronous
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None

    def open(self) -> None:
        """Opens (creating it 0600 if need be), migrates and proves the file can be
        written; JournalUnavailable, naming the file and the cause, if it cannot."""
        try:
            self._open()
        except (OSError, sqlite3.Error, SchemaError) as exc:
            self.close()
            raise _unwritable(self.path, exc) from exc

    def _open(self) -> None:
        _create_private(self.path)
        writer = self._writer = _connect(self.path)
        writer.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk (WAL fsync) before it returns, power loss included.
        writer.execute(f"PRAGMA synchronous = {self.synchronous}")
        self._synchronous_now = self.synchronous
        # No checkpoint inside a commit: by default every ~1,000 pages one commit also
        # copies the WAL into the database and fsyncs it, stalling every transaction
        # waiting on that group. Checkpoints run on their own instead (checkpoint()).
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        migrate(writer)
        _prove_writable(writer)
        # The event loop begins transactions itself and must never wait on a lock; an
        # operator command's write makes it begin in a thread instead (begin()).
        writer.execute("PRAGMA busy_timeout = 0")
        self._reader = _connect(self.path)

    def close(self) -> None:
        for connection in (self._writer, self._reader):
            if connection is not None:
                connection.close()
        self._writer = self._reader = None

    def apply(self, writes: Iterable[Write]) -> None:
        """Runs the writes in one transaction: all of them commit, or none. Blocking
        (waits for the write lock and the disk): for a worker thread."""
        self.begin(wait=True)
        self.write(writes)
        self.commit()

    def begin(self, *, wait: bool) -> bool:
        """Begins a write transaction. Without ``wait``, returns False at once when
        another connection (an operator's command) holds the write lock, so that the
        event loop never waits on it."""
        return self._execute("BEGIN IMMEDIATE", wait=wait)

    def write(self, writes: Iterable[Write]) -> None:
        """Runs the writes inside the transaction begun; rolls it back if one fails.
        Quick enough for the event loop: the statements change SQLite's page cache;
        the WAL is written and synced by ``commit``."""
        connection = self._writer
        assert connection is not None, "journal is not open"
        ordered = sorted(writes, key=_rank)  # stable: equal ranks keep their order
        try:
            for statement, same in groupby(ordered, key=_statement):
                connection.executemany(statement, [write.parameters for write in same])
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def set_synchronous(self, level: str) -> None:
        """``FULL`` or ``NORMAL`` for the next commits; between transactions only."""
        connection = self._writer
        assert connection is not None, "journal is not open"
        if level != self._synchronous_now:
            connection.execute(f"PRAGMA synchronous = {level}")
            self._synchronous_now = level

    def commit(self) -> None:
        """Commits the transaction begun: writes the WAL and, synchronous = FULL, waits
        for the disk (and for another connection's lock, if one holds it). Rolls back if
        the commit fails. Blocking: for a worker thread."""
        try:
            self._execute("COMMIT", wait=True)
        except BaseException:
            connection = self._writer
            if connection is not None and connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def _execute(self, statement: str, *, wait: bool) -> bool:
        """Runs a statement on the write connection: waiting out another connection's
        lock (``wait``), or returning False at once on one."""
        connection = self._writer
        assert connection is not None, "journal is not open"
        if wait:
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            try:
                connection.execute(statement)
            finally:
                connection.execute("PRAGMA busy_timeout = 0")
            return True
        try:
            connection.execute(statement)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                return False
            raise
        return True

    def checkpoint_writer(self) -> bool:
        """A passive checkpoint on the write connection, between two transactions (so no
        frame is added while it copies); True if it copied every frame, so that the
        next write starts the WAL over. For a worker thread."""
        connection = self._writer
        assert connection is not None, "journal is not open"
        busy, log_frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return not busy and log_frames == copied

    def checkpoint(self) -> None:
        """Copies committed WAL pages into the database file without blocking writers
        (PASSIVE), so the WAL does not grow without end; on its own connection."""
        connection = _connect(self.path)
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            connection.close()

    def read(self, query: Callable[[sqlite3.Connection], Result]) -> Result:
        connection = self._reader
        assert connection is not None, "journal is not open"
        return query(connection)


class WriterThread:
    """The writer's own thread: one, for the journal's life, running the blocking part
    of each group (its COMMIT, and the rarer BEGIN that waits for a lock, or a whole
    group after the WAL started over) one at a time.

    The writer task hands a job over by setting it and releasing one lock the thread
    sleeps on (one futex wake); the thread reports the outcome with one
    ``run_sync_soon``, which reschedules the writer task. Against ``trio.to_thread``
    per commit this spares, per group, trio's thread-cache bookkeeping (a job object,
    the thread named again for every job: a ``prctl``), a thread-limiter token and a
    task switch, and keeps the thread warm on its core."""

    working: int = 0
    """Jobs running in any writer thread now, across instances (the trio thread keeps
    it): the tests' clock jumps only when none is (tests/conftest.py)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._job: tuple[Callable[[], object], Callable[[outcome.Outcome[object]], None]] | None
        self._job = None
        self._wake = threading.Lock()
        self._wake.acquire()  # held: the thread sleeps on it until a job is set
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None

    def start(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ends the thread (between jobs: the writer awaits each one)."""
        thread = self._thread
        if thread is None:
            return
        self._thread = None
        self._job = None
        self._wake.release()
        thread.join()

    async def run(self, work: Callable[[], Result]) -> Result:
        """Runs ``work`` in the thread and returns its result (or raises its exception).
        Not cancellable once handed over: the writer runs it shielded."""
        assert self._thread is not None and self._token is not None, "writer thread not started"
        task = trio.lowlevel.current_task()

        def deliver(result: outcome.Outcome[object]) -> None:  # in trio's thread
            WriterThread.working -= 1
            trio.lowlevel.reschedule(task, result)

        WriterThread.working += 1
        self._job = (work, deliver)
        self._wake.release()
        return await trio.lowlevel.wait_task_rescheduled(  # type: ignore[no-any-return]
            lambda _: trio.lowlevel.Abort.FAILED
        )

    def _serve(self) -> None:
        token = self._token
        assert token is not None
        while True:
            self._wake.acquire()
            job = self._job
            if job is None:
                return
            self._job = None
            work, deliver = job
            token.run_sync_soon(deliver, outcome.capture(work))


async def _in_thread_timed(
    thread: WriterThread, change_count: int, work: Callable[..., object], *args: Any
) -> float:
    """Runs a commit's blocking ``work`` in the writer thread, and logs it if it was
    slow there: timed in the thread, so the disk's time (and a lock's), not the
    thread's wait for a core or the loop's turn. Returns that time, in seconds."""

    def timed() -> float:
        started = time.perf_counter()
        work(*args)
        return time.perf_counter() - started

    took_s = await thread.run(timed)
    if took_s > SLOW_COMMIT_S:
        log.warning("journal_commit_slow", ms=round(took_s * 1000, 1), changes=change_count)
    return took_s


def _rank(write: Write) -> int:
    return write.rank


def _statement(write: Write) -> str:
    return write.statement


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    primary = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # extended codes keep it low
    return primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _create_private(path: Path) -> None:
    """Creates the journal file empty and 0600 before SQLite writes to it: SQLite gives
    the ``-wal`` and ``-shm`` it makes next to it the same mode."""
    if path.exists():
        return
    _make_folder(path)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:
        return  # made meanwhile by whoever else opened it
    try:
        os.fchmod(descriptor, PRIVATE_MODE)  # exactly 0600, whatever the umask
    finally:
        os.close(descriptor)


def _make_folder(path: Path) -> None:
    """The journal's folder, made if missing; a file in its place is named as such
    (mkdir would only say "File exists")."""
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(folder))
    make_private_folder(folder)  # 0700


def _prove_writable(writer: sqlite3.Connection) -> None:
    """Writes and commits one small change (the schema version, set to what it is:
    SQLite writes the header page again), so that a journal that opens but cannot be
    written (read-only file or filesystem, full disk) fails here, at start-up."""
    writer.execute("BEGIN IMMEDIATE")
    try:
        version = int(writer.execute("PRAGMA user_version").fetchone()[0])
        writer.execute(f"PRAGMA user_version = {version}")
        writer.execute("COMMIT")
    except BaseException:
        if writer.in_transaction:
            writer.execute("ROLLBACK")
        raise


def _unwritable(journal: Path, exc: BaseException) -> JournalUnavailable:
    """The one line an operator reads: the file, and the OS's or SQLite's own words."""
    if isinstance(exc, OSError) and exc.strerror:
        cause = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        cause = str(exc) or type(exc).__name__
    return JournalUnavailable(f"journal {journal} cannot be written: {cause}")


class LockFile:
    """An exclusive lock on a journal, held for the life of the switch that takes it:
    a second switch on the same journal stops before it opens the file (or signs on to
    any bank). ``flock`` on ``<journal>.lock`` (0600), which names the holder's pid; the
    kernel releases it when the process ends, however it ends."""

    def __init__(self, journal_path: Path) -> None:
        self.journal_path = journal_path
        self.path = journal_path.with_name(journal_path.name + ".lock")
        self._descriptor: int | None = None

    def acquire(self) -> None:
        """Takes the lock, or raises JournalUnavailable: in use (naming the other
        switch's pid), or its folder cannot be written."""
        journal = self.journal_path
        try:
            _make_folder(journal)
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
        except OSError as exc:
            raise _unwritable(journal, exc) from exc
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise JournalUnavailable(
                f"journal {journal} is in use by another switch (pid {holder}; lock {self.path})"
            ) from None
        try:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(descriptor)  # a folder that takes no byte (full disk) takes no journal
            raise _unwritable(journal, exc) from exc
        self._descriptor = descriptor

    def release(self) -> None:
        if self._descriptor is not None:
            with contextlib.suppress(OSError):  # its pid names a switch holding the lock
                os.ftruncate(self._descriptor, 0)
            os.close(self._descriptor)  # closing the last descriptor releases the flock
            self._descriptor = None

    def holder(self) -> int | None:
        """The pid of the process holding the lock now, as the kernel has it
        (``/proc/locks``), or None when no process does: unlike the pid in the file,
        which a switch that was killed leaves behind, it never names another process."""
        try:
            info = os.stat(self.path)
            table = Path("/proc/locks").read_text()
        except FileNotFoundError:
            return None
        lock = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
        for line in table.splitlines():
            # "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF" (a waiter's has "->")
            fields = line.split()
            if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == lock:
                return int(fields[4])
        return None

    def check(self) -> str | None:
        """Why a switch could not take this journal now (in use, or its folder not
        writable), or None; creates nothing and takes nothing (``config check``)."""
        journal = self.journal_path
        folder = next((p for p in (journal, *journal.parents) if p.exists()), None)
        if folder is None or not os.access(folder if folder.is_dir() else folder.parent, os.W_OK):
            return f"journal {journal}: its folder cannot be written"
        if journal.exists() and not os.access(journal, os.R_OK | os.W_OK):
            return f"journal {journal}: the file cannot be read and written"
        if not self.path.exists():
            return None
        try:
            descriptor = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            return f"journal {journal}: its lock {self.path} cannot be opened: {exc.strerror}"
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            return f"journal {journal} is in use by another switch (pid {holder})"
        finally:
            os.close(descriptor)
        return None


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit mode (isolation_level=None): transactions are explicit. The connection
    # moves between worker threads but is only ever used by one at a time.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    connection.row_factory = sqlite3.Row
    return connection


class _Group:
    __slots__ = ("changes", "done", "error", "synced", "writes")

    def __init__(self, changes: int, writes: list[Write], wait: bool, synced: bool) -> None:
        self.changes = changes
        self.writes = writes
        self.done = trio.Event() if wait else None
        self.error: BaseException | None = None
        self.synced = synced
        """False: a request's start, which may commit without its own fsync (see
        ``_written_ahead``)."""


def _written_ahead(change: Change) -> bool:
    """A request's start, journaled before it leaves for its bank: its commit need not
    wait for the disk. Whatever answers it is committed with an fsync, and the WAL's
    one fsync makes every frame before it durable, its start's included; a power cut
    before then loses only starts of requests no one was answered for (design.md, "The
    request's start without its own fsync")."""
    return type(change) is TxnStarted and change.record.state == "sending"


class SqliteJournal(JournalQuestions):
    """The journal port on one SQLite file (see the module's docstring)."""

    questions = sql.QUESTIONS

    def __init__(
        self,
        file: JournalFile,
        *,
        durability: Durability = "sync",
        queue_size: int = 4096,
        max_group: int = 512,
        wal_reset_interval_s: float = WAL_RESET_INTERVAL_S,
        sync_starts: bool = False,
    ) -> None:
        self.file = file
        self.sync_starts = sync_starts
        """True: every group waits for its own fsync, requests' starts alone included
        (the measured alternative)."""
        self.durability = durability
        self.max_group = max_group
        self.wal_reset_interval_s = wal_reset_interval_s
        self._send, self._receive = trio.open_memory_channel[_Group](queue_size)
        self._read_lock = trio.Lock()
        self._thread = WriterThread(f"journal writer {file.path.name}")
        self._next_wal_reset = 0.0
        self._wal_starts_over = False
        self._last_synced = True
        self._writer_checkpointed_at = -math.inf
        self.wal_resets = 0
        self._running = False
        self._closed = True  # until opened, and again once closed
        self.commits = 0
        self.changes = 0
        self.failures = 0
        self.last_commit_failed = False
        # Plain counts for the admin interface, read on a scrape.
        self.commit_ms = LatencyHistogram()
        self.group_sizes = LatencyHistogram()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Opens the file, then commits groups until cancelled; what was queued when it
        is cancelled is still committed before it returns, and later commits are
        refused (JournalError) rather than left waiting."""
        await trio.to_thread.run_sync(self.file.open)
        self._thread.start()
        self._closed = False
        self._running = True
        log.info("journal_opened", path=str(self.file.path), durability=self.durability)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._checkpoint_periodically)
                task_status.started()
                async for group in self._receive:
                    # Once taken from the queue, a group is committed or fails: never
                    # dropped half way because the journal is being stopped.
                    with trio.CancelScope(shield=True):
                        await self._commit_gathered(group)
                        await self._let_the_wal_start_over()
                nursery.cancel_scope.cancel()
        finally:
            self._running = False
            with trio.CancelScope(shield=True):
                await self._flush_remaining()
                self._send.close()  # a caller still waiting for room is refused
                self._thread.stop()
                # A read still running in its thread (a task cancelled with everything
                # else waits for it there) must finish before its connection closes:
                # closing a SQLite connection in use crashes the process.
                async with self._read_lock:
                    self._closed = True
                    await trio.to_thread.run_sync(self.file.close)

    async def _let_the_wal_start_over(self) -> None:
        now = trio.current_time()
        if now < self._next_wal_reset:
            return
        self._next_wal_reset = now + self.wal_reset_interval_s
        self._writer_checkpointed_at = now
        try:
            if await self._thread.run(self.file.checkpoint_writer):
                self.wal_resets += 1
                self._wal_starts_over = True
        except sqlite3.Error as exc:
            log.warning("journal_checkpoint_failed", error=repr(exc))

    async def _checkpoint_periodically(self) -> None:
        while True:
            await trio.sleep(CHECKPOINT_INTERVAL_S)
            if (
                self._wal_starts_over
                or trio.current_time() - self._writer_checkpointed_at < CHECKPOINT_INTERVAL_S
            ):
                # The writer checkpointed since the last one: nothing much to copy, and
                # its next group starts the WAL over only if no other connection is in
                # the WAL then (while this one runs, the writer's groups only append).
                continue
            try:
                await trio.to_thread.run_sync(self.file.checkpoint)
            except sqlite3.Error as exc:
                log.warning("journal_checkpoint_failed", error=repr(exc))

    async def _commit_gathered(self, first: _Group) -> None:
        # Whatever was queued while the last commit was in its thread joins this one.
        groups = [first]
        change_count = first.changes
        while change_count < self.max_group:
            try:
                group = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            groups.append(group)
            change_count += group.changes
        writes = [write for group in groups for write in group.writes]
        # A group of starts alone goes without its fsync only after one that had it: a
        # power cut loses at most that one group, and the WAL never holds more than a
        # group unsynced (the checkpoints, which sync the WAL before they copy it, stay
        # short, and the WAL can start over).
        synced = self.sync_starts or not self._last_synced or any(g.synced for g in groups)
        self._last_synced = synced
        level = self.file.synchronous if synced or self.file.synchronous != "FULL" else "NORMAL"
        try:
            if self._wal_starts_over:
                # The first write after a full checkpoint starts the WAL over (rewrites
                # its header): all of it in a thread, off the loop.
                self._wal_starts_over = False
                took_s = await _in_thread_timed(
                    self._thread, change_count, self._apply_at, level, writes
                )
            else:
                took_s = await self._write_and_commit(change_count, writes, level)
        except Exception as exc:
            self.failures += 1
            self.last_commit_failed = True
            log.critical("journal_commit_failed", error=repr(exc), changes=change_count)
            for group in groups:
                group.error = exc
        else:
            self.commits += 1
            self.changes += change_count
            self.last_commit_failed = False
            self.commit_ms.record(took_s * 1000)
            self.group_sizes.record(change_count)
        for group in groups:
            if group.done is not None:
                group.done.set()

    def _apply_at(self, level: str, writes: list[Write]) -> None:
        self.file.set_synchronous(level)
        self.file.apply(writes)

    async def _write_and_commit(self, change_count: int, writes: list[Write], level: str) -> float:
        # The statements in the event loop (page cache only, no lock waits: see begin);
        # the commit always in a thread, since an fsync meeting a disk stall would
        # freeze the whole switch for as long.
        self.file.set_synchronous(level)
        if not self.file.begin(wait=False):
            await self._thread.run(functools.partial(self.file.begin, wait=True))
        self.file.write(writes)
        return await _in_thread_timed(self._thread, change_count, self.file.commit)

    async def _flush_remaining(self) -> None:
        while True:
            try:
                group = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            await self._commit_gathered(group)

    async def commit(self, *changes: Change, durable: bool | None = None) -> None:
        """Commits the changes together. Waits until they are on disk when the journal
        is "sync" (or ``durable=True``); raises JournalError if they failed."""
        if not self._running:
            raise JournalError("the journal is not running")
        wait = self.durability == "sync" if durable is None else durable
        writes = [write for change in changes for write in sql.writes_of(change)]
        synced = durable is not None or not all(_written_ahead(change) for change in changes)
        await self._hand_over(_Group(len(changes), writes, wait, synced))

    async def _hand_over(self, group: _Group) -> None:
        try:
            try:
                self._send.send_nowait(group)  # no trip through the scheduler when there is room
            except trio.WouldBlock:
                await self._send.send(group)  # bounded: a slow disk holds callers back here
        except trio.ClosedResourceError:
            raise JournalError("the journal stopped") from None
        if group.done is None:
            return
        await group.done.wait()
        if group.error is not None:
            raise JournalError(f"journal commit failed: {group.error!r}") from group.error

    async def _read(self, select: Select[Result]) -> Result:
        async with self._read_lock:
            if self._closed:
                raise JournalError("the journal is closed")
            try:
                return await trio.to_thread.run_sync(self.file.read, select)
            except sqlite3.Error as exc:
                raise JournalError(f"journal read failed: {exc!r}") from exc

    def statistics(self) -> JournalStatistics:
        return JournalStatistics(
            commits=self.commits,
            changes=self.changes,
            failures=self.failures,
            queued=self._send.statistics().current_buffer_used,
            wal_resets=self.wal_resets,
            backend="sqlite",
            writable=self._running and not self.last_commit_failed,
            commit_latency=self.commit_ms.snapshot(),
            group_size=self.group_sizes.snapshot(),
        )

    # -- the port's questions (the rest: ``JournalQuestions``) ---------------------

    @asynccontextmanager
    async def in_doubt(self) -> AsyncIterator[list[TxnRecord]]:
        """All of them: the file is one process's (its lock file)."""
        yield await self.transactions_in_doubt()

    async def due_reversals(self, bank: str, at: float, limit: int) -> list[port.DueReversal]:
        return await self._read(sql.due_reversals(bank, at, limit))
