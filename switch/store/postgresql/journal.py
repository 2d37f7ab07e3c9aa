"""The PostgreSQL journal: the journal port of ``switch.store.port`` on a database server.

Same shape as the SQLite journal: one writer task takes the groups of changes callers
hand it and commits whatever has gathered as one transaction, so a durable commit costs
one WAL flush (and, with a synchronous standby, one round trip to it) per group rather
than per transaction. ``synchronous_commit = on`` on the writer's connection: with
``durability = "sync"`` a caller's ``commit`` returns only once the server has flushed
it, so an approval never leaves before it is durable.

The event loop never waits on the database. The writer's group commit runs from the
event loop itself (``pipeline.LoopWriter``): libpq in non-blocking pipeline mode, trio
waiting on its socket, the whole group sent at once, then one WAL flush. Per commit it
costs the switch about a third of the CPU that handing each group to a worker thread
does with one caller, about half from 64 callers up (``docs/performance.md``); the thread
(``writer="thread"``: psycopg's blocking pipeline, ``JournalDatabase.apply``) stays as
the measured alternative. Reads run from the event loop too (``pipeline.LoopReader``),
on a small, fixed set of connections, one read each at a time: a read from the loop
costs the switch about 0.3 of the CPU of one handed to a worker thread
(``docs/performance.md``).
``reads="thread"`` (psycopg's blocking query in ``trio.to_thread``) stays as the
measured alternative. A server that is gone fails the commits and reads of that moment
(JournalError, so 96) and each connection is opened again on its next use, so the
journal comes back with the server by itself. Start-up's claim on what was left in
doubt (``InDoubtClaim``) runs in a thread: once a start, on a connection of its own.

A POS request is journaled once among those that went to a bank, whichever worker
took it: the schema's unique index on its identity (``schema.POS_REQUEST_INDEX``)
refuses a repeat's start, so no worker reads the journal before a request to find
one. The group that holds it fails whole on the server; its callers are then
committed one by one, so only the repeat's caller fails, with RequestRepeated (a
deadlock between two workers' groups, each holding a request the other repeats, is
untangled the same way). A group without a repeat costs nothing more.

Opening migrates the schema and proves the database can be written (a small change,
committed), so a read-only database or a standby refuses the start
(``JournalUnavailable``) instead of answering 96 to everything; and
:class:`DatabaseLock` keeps a second switch off a database in use.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from itertools import groupby
from typing import Any, Literal, TypeAlias, TypeVar

import psycopg
import structlog
import trio
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from switch.core.book import RequestKey, TxnRecord
from switch.core.stats import LatencyHistogram
from switch.store import port
from switch.store.port import (
    Change,
    Durability,
    JournalError,
    JournalStatistics,
    JournalUnavailable,
    RequestRepeated,
    StandInCapTaken,
    TxnStarted,
)
from switch.store.postgresql import sql
from switch.store.postgresql.pipeline import LoopReader, LoopWriter
from switch.store.postgresql.schema import POS_REQUEST_INDEX, SchemaError, migrate
from switch.store.postgresql.sql import Connection, Query
from switch.store.questions import JournalQuestions, Select
from switch.store.stip_claim import STIP_CAP_CONSTRAINT
from switch.store.writes import Write

log = structlog.get_logger()

Result = TypeVar("Result")

Writer: TypeAlias = Literal["thread", "loop"]
"""How the writer task commits a group: from the event loop itself
(``pipeline.LoopWriter``, the journal's), or handed to a worker thread (psycopg's
blocking pipeline, the measured alternative: ``bench/journal_bench.py``)."""
Reads: TypeAlias = Literal["thread", "loop"]
"""How a read runs: from the event loop (``pipeline.LoopReader``, the journal's), or as
psycopg's blocking query in a worker thread (the measured alternative)."""

SLOW_COMMIT_S = 0.02
"""A group commit that takes longer on the server is logged, one warning line each: the
server or its disk stalled (a local commit takes about a millisecond)."""
CONNECT_TIMEOUT_S = 5
"""How long opening a connection waits for the server (libpq's connect_timeout)."""
READ_CONNECTIONS = 2
"""Reads in flight at once: the switch's reads are few (look-ups of originals, the
reversal queue, a batch's totals) and short, and each holds a server process."""
CLAIM_LEASE_S = 120.0
"""How long a claim on a due reversal holds: past it, another process may claim and
send the reversal again. It must outlast the attempt and the wait before it (a poll
claims up to four times the forwarder's concurrency, each attempt bounded by the bank's
timeout, a few seconds); a claimer that died delays its reversals by at most this."""
APPLICATION_NAME = "switch-journal"
"""How the journal's connections show in pg_stat_activity."""


def describe_dsn(dsn: str) -> str:
    """The DSN as an operator may read it in a log line: no password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "postgresql (unparsable dsn)"
    shown = " ".join(
        f"{key}={parts[key]}" for key in ("host", "port", "dbname", "user") if parts.get(key)
    )
    return f"postgresql ({shown or 'libpq defaults'})"


class _Reader:
    """A slot of the thread's read pool: its connection, made on first use."""

    __slots__ = ("connection",)

    def __init__(self) -> None:
        self.connection: Connection | None = None


class JournalDatabase:
    """The database and the journal's connections to it; plain blocking calls, for
    worker threads. The writer's connection is used by one writer at a time (its thread,
    or ``LoopWriter`` from the event loop); each reader's by one thread at a time."""

    def __init__(self, dsn: str, *, read_connections: int = READ_CONNECTIONS) -> None:
        self.dsn = dsn
        self.read_connections = read_connections
        self._writer: Connection | None = None

    def __str__(self) -> str:
        return describe_dsn(self.dsn)

    def connect(self) -> Connection:
        """A new connection in autocommit (transactions are explicit), whose commits
        wait for the server's WAL flush."""
        connection = psycopg.connect(
            self.dsn,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=APPLICATION_NAME,
        )
        # "on" whatever the server's default: durable before an approval leaves.
        connection.execute("SET synchronous_commit = on")
        return connection

    def open(self) -> None:
        """Connects, migrates and proves the database can be written; JournalUnavailable,
        naming the database (never its password) and the cause, if it cannot."""
        try:
            writer = self._writer = self.connect()
            migrate(writer)
            with writer.transaction():  # a read-only database or a standby fails here
                writer.execute("UPDATE journal_schema_version SET version = version")
        except (psycopg.Error, SchemaError) as exc:
            self.close()
            raise JournalUnavailable(f"journal {self} cannot be written: {_cause(exc)}") from exc

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def writer(self) -> Connection:
        """The writer's connection, opened again if the last one broke or was closed."""
        writer = self._writer
        if writer is None or writer.broken or writer.closed:
            if writer is not None:
                writer.close()
            writer = self._writer = self.connect()
        return writer

    def apply(self, writes: Iterable[Write]) -> None:
        """Runs the writes in one transaction, all of them or none, pipelined, with one
        WAL flush. Reconnects first if the last connection broke."""
        writer = self.writer()
        ordered = sorted(writes, key=_rank)  # stable: equal ranks keep their order
        with writer.pipeline(), writer.transaction(), writer.cursor() as cursor:
            for statement, same in groupby(ordered, key=_statement):
                cursor.executemany(statement, [write.parameters for write in same])

    def read(self, reader: _Reader, query: Query) -> Any:
        """Runs a query on a reader's connection, connecting it first if it has none or
        the last one broke (the server restarted)."""
        connection = reader.connection
        if connection is None or connection.broken or connection.closed:
            if connection is not None:
                connection.close()
            connection = reader.connection = self.connect()
        return query(connection)


def _cause(exc: BaseException) -> str:
    return str(exc).strip().replace("\n", " ") or type(exc).__name__


def _rank(write: Write) -> int:
    return write.rank


def _statement(write: Write) -> str:
    return write.statement


def _repeats(exc: BaseException) -> bool:
    """Whether the server refused a group for a POS request journaled already."""
    return (
        isinstance(exc, psycopg.errors.UniqueViolation)
        and exc.diag.constraint_name == POS_REQUEST_INDEX
    )


def _cap_taken(exc: BaseException) -> bool:
    """Whether the server refused a group for a stand-in over its caps (stip_claim.py)."""
    return (
        isinstance(exc, psycopg.errors.CheckViolation)
        and exc.diag.constraint_name == STIP_CAP_CONSTRAINT
    )


def _callers_own(exc: BaseException) -> bool:
    """Whether a caller's commit was refused for its own content (a repeat, a stand-in
    over its caps): that caller's answer, not a journal failure."""
    return _repeats(exc) or _cap_taken(exc)


def _one_callers(exc: BaseException) -> bool:
    """Whether a group's failure may be one caller's alone, so that its callers are
    committed one by one: a repeat, a stand-in over its caps, or a deadlock (two
    workers' groups, each inserting a request the other's repeats, each waiting for the
    other's commit)."""
    return _callers_own(exc) or isinstance(exc, psycopg.errors.DeadlockDetected)


class _Group:
    __slots__ = ("changes", "done", "error", "requests", "writes")

    def __init__(
        self, changes: int, writes: list[Write], wait: bool, requests: tuple[RequestKey, ...]
    ) -> None:
        self.changes = changes
        self.writes = writes
        self.done = trio.Event() if wait else None
        self.error: BaseException | None = None
        self.requests = requests
        """The POS requests its changes start (``TxnStarted``): what a repeat names."""


class PostgresJournal(JournalQuestions):
    """The journal port on a PostgreSQL database (see the module's docstring)."""

    questions = sql.QUESTIONS

    def __init__(
        self,
        database: JournalDatabase,
        *,
        durability: Durability = "sync",
        queue_size: int = 4096,
        max_group: int = 512,
        claimant: str | None = None,
        claim_lease_s: float = CLAIM_LEASE_S,
        worker: int = 0,
        writer: Writer = "loop",
        reads: Reads = "loop",
    ) -> None:
        self.database = database
        self.writer: Writer = writer
        self.reads: Reads = reads
        self._loop_writer = LoopWriter(database.writer) if writer == "loop" else None
        self.durability = durability
        self.worker = worker
        """The worker this journal writes for: its transactions are marked with it, and
        its :class:`DatabaseLock` (held by the process) says it is alive."""
        self.own = (worker,)
        # Names this journal's claims on due reversals. The worker's (one process runs
        # as a worker at a time: its lock), so that a worker restarted after a crash
        # takes its predecessor's claims over at once rather than after their lease.
        self.claimant = claimant or f"worker {worker}"
        self.claim_lease_s = claim_lease_s
        self.max_group = max_group
        self._send, self._receive = trio.open_memory_channel[_Group](queue_size)
        # The read pool: a reader is taken from the channel for one read, then put back.
        self._idle_send, self._idle_readers = trio.open_memory_channel[_Reader | LoopReader](
            database.read_connections
        )
        self._running = False
        self._closed = True  # until opened, and again once closed
        self.commits = 0
        self.changes = 0
        self.failures = 0
        self.last_commit_failed = False
        self.commit_ms = LatencyHistogram()
        self.group_sizes = LatencyHistogram()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Opens the database, then commits groups until cancelled; what was queued when
        it is cancelled is still committed before it returns, and later commits are
        refused (JournalError) rather than left waiting."""
        await trio.to_thread.run_sync(self.database.open)
        for _ in range(self.database.read_connections):
            reader = LoopReader(self.database.connect) if self.reads == "loop" else _Reader()
            self._idle_send.send_nowait(reader)
        self._closed = False
        self._running = True
        log.info("journal_opened", database=str(self.database), durability=self.durability)
        try:
            task_status.started()
            async for group in self._receive:
                # Once taken from the queue, a group is committed or fails: never
                # dropped half way because the journal is being stopped.
                with trio.CancelScope(shield=True):
                    await self._commit_gathered(group)
        finally:
            self._running = False
            with trio.CancelScope(shield=True):
                await self._flush_remaining()
                self._send.close()  # a caller still waiting for room is refused
                await self._close_connections()

    async def _close_connections(self) -> None:
        """Takes every reader back (waiting out reads still in flight: closing a
        connection in use would fail them), closes them and the writer; a read asked
        for later is refused."""
        self._closed = True
        readers = [
            await self._idle_readers.receive() for _ in range(self.database.read_connections)
        ]
        self._idle_send.close()

        def close_all() -> None:
            for reader in readers:
                if isinstance(reader, LoopReader):
                    reader.close()
                elif reader.connection is not None:
                    reader.connection.close()
            self.database.close()

        await trio.to_thread.run_sync(close_all)

    async def _commit_gathered(self, first: _Group) -> None:
        # Whatever was queued while the last commit was on the server joins this one.
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
        try:
            took_s = await self._apply_timed(change_count, writes)
        except Exception as exc:
            if not _one_callers(exc):
                self._failed(groups, change_count, exc)
            elif len(groups) == 1 and _callers_own(exc):
                groups[0].error = exc  # its own repeat or cap: nothing to commit apart
            else:
                await self._commit_one_by_one(groups)
        else:
            self._committed(change_count, took_s)
        for group in groups:
            if group.done is not None:
                group.done.set()

    async def _commit_one_by_one(self, groups: list[_Group]) -> None:
        """A commit refused for one caller's repeat (or a deadlock with another
        worker's) rolled back everyone's: each caller's changes are committed again on
        their own, so only the repeat's caller fails (RequestRepeated)."""
        for group in groups:
            if not group.writes:
                continue
            try:
                took_s = await self._apply_timed(group.changes, group.writes)
            except Exception as exc:
                if _callers_own(exc):
                    group.error = exc
                else:
                    self._failed([group], group.changes, exc)
            else:
                self._committed(group.changes, took_s)

    def _committed(self, change_count: int, took_s: float) -> None:
        self.commits += 1
        self.changes += change_count
        self.last_commit_failed = False
        self.commit_ms.record(took_s * 1000)
        self.group_sizes.record(change_count)

    def _failed(self, groups: list[_Group], change_count: int, exc: Exception) -> None:
        self.failures += 1
        self.last_commit_failed = True
        log.critical("journal_commit_failed", error=_cause(exc), changes=change_count)
        for group in groups:
            group.error = exc

    async def _apply_timed(self, change_count: int, writes: list[Write]) -> float:
        """Commits, timed where it runs: in the worker thread, the server's time, not the
        thread's wait for a core or the loop's turn; from the loop, the loop's turns too."""
        loop_writer = self._loop_writer
        if loop_writer is not None:
            started = time.perf_counter()
            await loop_writer.apply(writes)
            took_s = time.perf_counter() - started
        else:

            def timed() -> float:
                started = time.perf_counter()
                self.database.apply(writes)
                return time.perf_counter() - started

            took_s = await trio.to_thread.run_sync(timed)
        if took_s > SLOW_COMMIT_S:
            log.warning("journal_commit_slow", ms=round(took_s * 1000, 1), changes=change_count)
        return took_s

    async def _flush_remaining(self) -> None:
        while True:
            try:
                group = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            await self._commit_gathered(group)

    async def commit(self, *changes: Change, durable: bool | None = None) -> None:
        """Commits the changes together. Waits until the server has flushed them when
        the journal is "sync" (or ``durable=True``), and always when they start a POS
        request; raises JournalError if they failed, RequestRepeated if that request
        is journaled already (by another worker: the other callers of its group
        commit all the same)."""
        if not self._running:
            raise JournalError("the journal is not running")
        wait = self.durability == "sync" if durable is None else durable
        claimant, worker = self.claimant, self.worker
        writes = [
            write
            for change in changes
            for write in sql.writes_of(change, claimant=claimant, worker=worker)
        ]
        requests = tuple(
            change.record.request_key
            for change in changes
            if isinstance(change, TxnStarted) and change.record.channel == "pos"
        )
        # A repeat is refused whatever the durability: its caller must hear of it.
        group = _Group(len(changes), writes, wait or bool(requests), requests)
        try:
            try:
                self._send.send_nowait(group)  # no trip through the scheduler when there is room
            except trio.WouldBlock:
                await self._send.send(group)  # bounded: a slow server holds callers back here
        except trio.ClosedResourceError:
            raise JournalError("the journal stopped") from None
        if group.done is None:
            return
        await group.done.wait()
        error = group.error
        if error is not None:
            if _repeats(error) and group.requests:
                raise RequestRepeated(group.requests[0]) from error
            if _cap_taken(error):
                raise StandInCapTaken("stand-in caps taken by other workers' stand-ins") from error
            raise JournalError(f"journal commit failed: {_cause(error)}") from error

    async def _read(self, query: Select[Result]) -> Result:
        if self._closed:
            raise JournalError("the journal is closed")
        try:
            try:
                reader = self._idle_readers.receive_nowait()  # no trip through the scheduler
            except trio.WouldBlock:
                reader = await self._idle_readers.receive()
        except trio.EndOfChannel:
            raise JournalError("the journal is closed") from None
        try:
            answer: Result
            if isinstance(reader, LoopReader):
                # Cancelled half way, it closes its connection: the next read opens one.
                answer = await reader.read(query)
            else:
                # Not abandoned on cancel: the reader goes back to the pool only once its
                # thread is done with it.
                answer = await trio.to_thread.run_sync(self.database.read, reader, query)
        except psycopg.Error as exc:
            raise JournalError(f"journal read failed: {_cause(exc)}") from exc
        finally:
            self._idle_send.send_nowait(reader)
        return answer

    def statistics(self) -> JournalStatistics:
        return JournalStatistics(
            commits=self.commits,
            changes=self.changes,
            failures=self.failures,
            queued=self._send.statistics().current_buffer_used,
            backend="postgresql",
            writable=self._running and not self.last_commit_failed,
            commit_latency=self.commit_ms.snapshot(),
            group_size=self.group_sizes.snapshot(),
        )

    # -- the port's questions (the rest: ``JournalQuestions``) ---------------------

    @asynccontextmanager
    async def in_doubt(self) -> AsyncIterator[list[TxnRecord]]:
        """This worker's own transactions left in doubt and those of every worker that
        is gone (its lock free, see :class:`InDoubtClaim`), held for this one until the
        block ends: a live worker's are never taken, and a dead one's by one worker."""
        if self._closed:
            raise JournalError("the journal is closed")
        claim = InDoubtClaim(self.database, self.worker)
        try:
            records = await trio.to_thread.run_sync(claim.take)
        except psycopg.Error as exc:
            await trio.to_thread.run_sync(claim.release)
            raise JournalError(f"journal read failed: {_cause(exc)}") from exc
        try:
            yield records
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(claim.release)

    async def advice_head(self, bank: str, *, claim: bool = True) -> port.DueAdvice | None:
        """The bank's head advice, claimed for this journal's worker for
        ``claim_lease_s`` (see ``sql.advice_head``): one worker sends a bank's advices
        at a time; one that stopped hands them on when its lease runs out (at once to
        the same worker restarted)."""
        query = sql.advice_head(
            bank, time.time(), claim=claim, claimant=self.claimant, lease_s=self.claim_lease_s
        )
        head: port.DueAdvice | None = await self._read(query)
        return head

    async def due_reversals(self, bank: str, at: float, limit: int) -> list[port.DueReversal]:
        """Claims them for this journal (see ``sql.due_reversals``): another process on
        the database is not handed them until their attempt is recorded or the claim's
        lease runs out; an attempt's result is kept only if this journal still holds
        its claim."""
        query = sql.due_reversals(
            bank, at, limit, claimant=self.claimant, lease_s=self.claim_lease_s
        )
        due: list[port.DueReversal] = await self._read(query)
        return due


def database_problem(dsn: str) -> str | None:
    """Why a switch could not journal on this database now (unreachable, refused, read
    only), or None; connects and reads, writes nothing (``config check``)."""
    database = JournalDatabase(dsn)
    try:
        with database.connect() as connection:
            row = connection.execute("SELECT pg_is_in_recovery() AS standby").fetchone()
            if row is not None and row["standby"]:
                return f"journal {database}: the server is a standby (read only)"
            holder = {"key": JOURNAL_LOCK_KEY, "worker": None}
            if connection.execute(_HOLDER, holder).fetchone() is not None:
                return (
                    f"journal {database} is in use by another switch ({_lock_holder(connection)})"
                )
    except psycopg.Error as exc:
        return f"journal {database} cannot be reached: {_cause(exc)}"
    return None


JOURNAL_LOCK_KEY = 0x5357_4C4B  # "SWLK": an advisory lock key, the same for every switch
HOST_LOCK_KEY = 0x5357_484B  # "SWHK": a host's (``[switch] host_id``), held by its supervisor
"""With a worker's index, the advisory lock (key, index) that a switch's worker holds
for its life: advisory locks are per database, so one process a worker per journal (one
switch of one process is worker 0), as the SQLite engine's lock file; and a worker
whose lock is free is not running."""
LOCK_WAIT_S = 5
"""How long a starting switch waits for the lock: the server releases a killed switch's
lock only once it sees its connection gone, a moment after a restart may ask again."""


class DatabaseLock:
    """A worker's lock on the PostgreSQL journal: a session advisory lock (key, worker
    index) on a connection of its own, held for the life of the process that takes it;
    the server releases it when that connection ends, however the process ends. A second
    process as the same worker is refused; the other workers each hold their own."""

    def __init__(
        self, dsn: str, *, worker: int = 0, wait_s: float = LOCK_WAIT_S,
        key: int = JOURNAL_LOCK_KEY,
    ) -> None:  # fmt: skip
        """``key`` HOST_LOCK_KEY: ``worker`` is a host_id, the lock its supervisor's."""
        self.database = JournalDatabase(dsn)
        self.worker = worker
        self.wait_s = wait_s
        self.key = key
        self._connection: Connection | None = None

    def acquire(self) -> None:
        """Takes the lock, or raises JournalUnavailable: held by another switch (naming
        where its connection comes from), or the database cannot be reached."""
        database = self.database
        try:
            connection = database.connect()
        except psycopg.Error as exc:
            raise JournalUnavailable(
                f"journal {database} cannot be reached: {_cause(exc)}"
            ) from exc
        try:
            connection.execute(
                f"SET application_name = 'switch-lock pid {os.getpid()} worker {self.worker}'"
            )
            connection.execute(f"SET lock_timeout = '{round(self.wait_s * 1000)}ms'")
            connection.execute(_WORKER_LOCK, (self.key, self.worker))
        except psycopg.errors.LockNotAvailable:
            holder = _lock_holder(connection, self.worker, self.key)
            connection.close()
            raise JournalUnavailable(
                f"journal {database} is in use by another switch ({holder}; as worker "
                f"{self.worker})"
            ) from None
        except psycopg.Error as exc:
            connection.close()
            raise JournalUnavailable(f"journal {database} cannot be locked: {_cause(exc)}") from exc
        self._connection = connection

    def release(self) -> None:
        if self._connection is not None:
            self._connection.close()  # the session's end releases its advisory locks
            self._connection = None


_WORKER_LOCK = "SELECT pg_advisory_lock(%s::int4, %s::int4)"
_TRY_WORKER_LOCK = "SELECT pg_try_advisory_lock(%s::int4, %s::int4) AS taken"
# A lock of two int4 keys shows in pg_locks as classid, objid and objsubid = 2.
_HOLDER = """
SELECT a.application_name, a.client_addr, a.pid FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
    SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.objsubid = 2 AND l.classid::bigint = %(key)s
  AND (%(worker)s::int4 IS NULL OR l.objid::bigint = %(worker)s::int4)
ORDER BY l.objid LIMIT 1
"""


class InDoubtClaim:
    """The in-doubt transactions one worker's start-up recovery may take: its own (its
    lock is its process's) and those of every worker whose lock is free, that is, no
    process runs as it. Taking a free lock, on a connection of the claim's own, for as
    long as the recovery is committed, makes the claim: a worker that starts at that
    moment waits for it, and a second recoverer finds the lock taken and leaves those
    transactions alone (then finds them recovered). Plain blocking calls, for a thread."""

    def __init__(self, database: JournalDatabase, worker: int) -> None:
        self.database = database
        self.worker = worker
        self.workers: list[int] = []
        """Whose transactions were taken."""
        self._connection: Connection | None = None

    def take(self) -> list[TxnRecord]:
        connection = self._connection = self.database.connect()
        connection.execute(f"SET application_name = 'switch-recovery worker {self.worker}'")
        self.workers = [self.worker]
        for other in sql.in_doubt_workers(connection):
            if other == self.worker:
                continue
            row = connection.execute(_TRY_WORKER_LOCK, (JOURNAL_LOCK_KEY, other)).fetchone()
            if row is not None and row["taken"]:
                self.workers.append(other)
        records: list[TxnRecord] = sql.records_in_doubt_of(self.workers)(connection)
        return records

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        # At once: the server would release them only once it saw the session end (and
        # if the connection is gone, its locks went with it).
        with suppress(psycopg.Error):
            connection.execute("SELECT pg_advisory_unlock_all()")
        connection.close()


def _lock_holder(
    connection: Connection, worker: int | None = None, key: int = JOURNAL_LOCK_KEY
) -> str:
    """Who holds the worker's lock (any worker's: None), as the server knows them (or
    "unknown")."""
    try:
        row = connection.execute(_HOLDER, {"key": key, "worker": worker}).fetchone()
    except psycopg.Error:
        return "unknown"
    if row is None:
        return "unknown"
    return (
        f"{row['application_name']} from {row['client_addr'] or 'local'}, server pid {row['pid']}"
    )
