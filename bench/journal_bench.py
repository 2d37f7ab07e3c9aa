"""What a durable commit costs on each journal engine: SQLite (WAL, synchronous FULL)
against PostgreSQL (synchronous_commit on, fsync on), through the journal port alone.

``python -m bench.journal_bench [--backend sqlite|postgresql|both] [--callers 1,16,64]
[--postgresql-writer thread,loop]``, and ``python -m bench.journal_bench --reads
[--readers 1,16]`` for PostgreSQL's reads.

Each caller commits what a sale commits, one after the other and each waited for
("sync"): the request before it leaves (TxnStarted) and the answer before it goes back
(TxnUpdated). Many callers at once is what makes group commits: the commits queued
while one group is in its thread go together in the next. Per engine and number of
callers: caller commits a second, their latency, the group commits and their size, and
CPU per caller commit in this process (the switch's side) and, for PostgreSQL, in the
server's processes apart.

PostgreSQL's writer commits a group either in a worker thread (psycopg's blocking
pipeline) or from the event loop (libpq non-blocking, ``pipeline.LoopWriter``); with
both named, one journal of each runs on the same database and server, and each number
of callers is measured on one and then the other (the order alternating from one
number to the next), so the two are side by side under the same load of the machine.

``--reads`` measures PostgreSQL's reads instead: each reader asks, one after the other,
for a transaction by its terminal's trace (``transaction_by_trace``: a reversal's
original, a refused repeat's first), of sales in the journal (so a row comes back and
is made a record). Reads in a worker
thread (``reads="thread"``) and from the event loop (``pipeline.LoopReader``) are two
journals on the same database, measured in turn as the writers are: reads a second,
their latency, and CPU per read in this process and in the server's.

PostgreSQL is a server of the bench's own (``switch/devtools/postgresql.py``: installed
if missing and allowed, in a temporary folder, fsync on), unless ``--dsn`` names one.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import typing
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import msgspec
import trio

from bench.procstat import cpu_seconds, own_cpu_seconds
from switch.core.book import TxnRecord
from switch.log import configure_logging
from switch.store.port import Journal, TxnStarted, TxnUpdated
from switch.store.postgresql import JournalDatabase, PostgresJournal
from switch.store.postgresql.journal import Reads, Writer
from switch.store.sqlite import JournalFile, SqliteJournal

DEFAULT_CALLERS = (1, 16, 64)
WRITERS: tuple[Writer, ...] = ("thread", "loop")
COMMITS_PER_RUN = 4000
"""Caller commits (two per sale) per engine and number of callers: a few seconds."""
DEFAULT_READERS = (1, 16)
READ_PATHS: tuple[Reads, ...] = ("thread", "loop")
READS_PER_RUN = 8000
"""Reads per read path and number of readers: a second or two."""
READ_SALES = 1000
"""Sales in the journal that the reads look up."""


class Run(msgspec.Struct, frozen=True, kw_only=True):
    backend: str
    writer: str | None
    """PostgreSQL's: "thread" or "loop" (see ``PostgresJournal``)."""
    callers: int
    commits: int
    commits_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    group_commits: int
    changes_per_group: float
    switch_cpu_us_per_commit: float
    server_cpu_us_per_commit: float | None
    """The database server's processes (PostgreSQL only), per caller commit."""


class ReadRun(msgspec.Struct, frozen=True, kw_only=True):
    reads_in: str
    """"thread" or "loop" (see ``PostgresJournal``)."""
    readers: int
    reads: int
    reads_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    switch_cpu_us_per_read: float
    server_cpu_us_per_read: float | None


def _sale(index: int) -> TxnRecord:
    from switch.core.bank import OriginalData

    rrn = f"6326{index:08d}"
    return TxnRecord(
        kind="sale", rrn=rrn, bank="icbc", channel="pos", request_mti="0200",
        terminal_id=f"POS{index % 1000:05d}", merchant_id="898310048990001",
        stan=rrn[-6:], batch="000001", local_date="1122", pan_masked="622202*********2221",
        pan_hmac=b"\x01" + b"h" * 32, pan_sealed=b"\x01" + b"s" * 40, amount=10000,
        currency="156", bank_processing_code="000000",
        sent=OriginalData(mti="0200", stan=rrn[-6:], transmission="1122063015"),
    )  # fmt: skip


def _server_cpu_s(data_dir: Path | None) -> float | None:
    """The postmaster's and its children's CPU seconds, from /proc."""
    if data_dir is None:
        return None
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    total = cpu_seconds(postmaster)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            if int(text[text.rindex(")") + 2 :].split()[1]) == postmaster:
                total += cpu_seconds(int(stat.parent.name))
    return total


class _Spent(msgspec.Struct, frozen=True):
    """What a run of tasks took: wall time, this process's CPU, the server's (None
    without one to read), and each operation's latency, sorted."""

    wall_s: float
    cpu_s: float
    server_s: float | None
    latencies: list[float]

    def per_op_us(self, seconds: float) -> float:
        return round(seconds / len(self.latencies) * 1e6, 1)

    @property
    def server_us(self) -> float | None:
        return None if self.server_s is None else self.per_op_us(self.server_s)

    def quantile_ms(self, fraction: float) -> float:
        return round(self.latencies[int(len(self.latencies) * fraction)] * 1000, 3)


async def _spent(
    task: Callable[[int], Awaitable[None]], count: int, latencies: list[float],
    data_dir: Path | None,
) -> _Spent:  # fmt: skip
    """Runs ``count`` copies of ``task`` (each given its number) at once, measured."""
    server_before = _server_cpu_s(data_dir)
    cpu_before, wall_before = own_cpu_seconds(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for offset in range(count):
            nursery.start_soon(task, offset)
    wall_s = time.perf_counter() - wall_before
    cpu_s = own_cpu_seconds() - cpu_before
    server_after = _server_cpu_s(data_dir)
    server_s = (
        None if server_before is None or server_after is None else server_after - server_before
    )
    return _Spent(wall_s, cpu_s, server_s, sorted(latencies))


async def _measure(
    journal: Journal,
    backend: str,
    writer: str | None,
    callers: int,
    first_index: int,
    data_dir: Path | None,
) -> Run:
    sales = COMMITS_PER_RUN // 2 // callers
    latencies: list[float] = []

    async def caller(offset: int) -> None:
        for number in range(sales):
            record = _sale(first_index + offset * sales + number)
            started = time.perf_counter()
            await journal.commit(TxnStarted.of(record, time.time()))
            latencies.append(time.perf_counter() - started)
            record.state, record.code = "approved", "00"
            started = time.perf_counter()
            await journal.commit(TxnUpdated.of(record, time.time(), "answered"))
            latencies.append(time.perf_counter() - started)

    before = journal.statistics()
    spent = await _spent(caller, callers, latencies, data_dir)
    after = journal.statistics()
    commits = len(spent.latencies)
    groups = after.commits - before.commits
    return Run(
        backend=backend,
        writer=writer,
        callers=callers,
        commits=commits,
        commits_per_s=round(commits / spent.wall_s),
        latency_p50_ms=spent.quantile_ms(0.5),
        latency_p99_ms=spent.quantile_ms(0.99),
        group_commits=groups,
        changes_per_group=round((after.changes - before.changes) / max(groups, 1), 1),
        switch_cpu_us_per_commit=spent.per_op_us(spent.cpu_s),
        server_cpu_us_per_commit=spent.server_us,
    )


async def _bench(
    journals: dict[str | None, Journal], backend: str, callers: list[int], data: Path | None
) -> list[Run]:
    """Each number of callers on each journal in turn (the order alternating), all the
    journals running throughout: idle, a journal's writer waits and costs nothing."""
    runs = []
    async with trio.open_nursery() as nursery:
        for journal in journals.values():
            await nursery.start(journal.run)
        first_index = 0
        for number, count in enumerate(callers):
            order = list(journals.items())
            if number % 2:
                order.reverse()
            measured = {}
            for writer, journal in order:
                measured[writer] = await _measure(
                    journal, backend, writer, count, first_index, data
                )
                first_index += COMMITS_PER_RUN
            runs += [measured[writer] for writer in journals]
        nursery.cancel_scope.cancel()
    return runs


async def _measure_reads(
    journal: Journal, reads_in: str, readers: int, sales: list[TxnRecord], data_dir: Path | None
) -> ReadRun:
    per_reader = READS_PER_RUN // readers
    latencies: list[float] = []

    async def reader(offset: int) -> None:
        for number in range(per_reader):
            sale = sales[(offset * per_reader + number) % len(sales)]
            started = time.perf_counter()
            found = await journal.transaction_by_trace(
                sale.terminal_id, sale.merchant_id, sale.batch, sale.stan
            )
            latencies.append(time.perf_counter() - started)
            assert found is not None and found.rrn == sale.rrn

    spent = await _spent(reader, readers, latencies, data_dir)
    reads = len(spent.latencies)
    return ReadRun(
        reads_in=reads_in,
        readers=readers,
        reads=reads,
        reads_per_s=round(reads / spent.wall_s),
        latency_p50_ms=spent.quantile_ms(0.5),
        latency_p99_ms=spent.quantile_ms(0.99),
        switch_cpu_us_per_read=spent.per_op_us(spent.cpu_s),
        server_cpu_us_per_read=spent.server_us,
    )


async def _bench_reads(
    journals: dict[str, Journal], readers: list[int], data: Path | None
) -> list[ReadRun]:
    """The sales committed once (through the first journal), every pool connected and
    its statement prepared, then each number of readers on each journal in turn."""
    sales = [_sale(index) for index in range(READ_SALES)]
    runs = []
    async with trio.open_nursery() as nursery:
        for journal in journals.values():
            await nursery.start(journal.run)
        first = next(iter(journals.values()))
        await first.commit(*(TxnStarted.of(sale, time.time()) for sale in sales))
        for reads_in, journal in journals.items():  # warm: each connection of each pool
            await _measure_reads(journal, reads_in, 4, sales[:40], None)
        for number, count in enumerate(readers):
            order = list(journals.items())
            if number % 2:
                order.reverse()
            measured = {
                reads_in: await _measure_reads(journal, reads_in, count, sales, data)
                for reads_in, journal in order
            }
            runs += [measured[reads_in] for reads_in in journals]
        nursery.cancel_scope.cancel()
    return runs


def run_reads(
    readers: list[int], dsn: str | None, paths: tuple[Reads, ...] = READ_PATHS
) -> list[ReadRun]:
    with _postgres(dsn) as (database, data_dir):
        journals: dict[str, Journal] = {
            reads_in: PostgresJournal(JournalDatabase(database), reads=reads_in)
            for reads_in in paths
        }
        runs: list[ReadRun] = trio.run(_bench_reads, journals, readers, data_dir)
        return runs


def _reads_table(runs: list[ReadRun]) -> str:
    header = (
        f"{'reads in':<12}{'readers':>8}{'reads/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'switch CPU us':>15}{'server CPU us':>15}"
    )
    lines = [header]
    for r in runs:
        server = "-" if r.server_cpu_us_per_read is None else f"{r.server_cpu_us_per_read}"
        lines.append(
            f"{r.reads_in:<12}{r.readers:>8}{r.reads_per_s:>9}{r.latency_p50_ms:>9}"
            f"{r.latency_p99_ms:>9}{r.switch_cpu_us_per_read:>15}{server:>15}"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def _postgres(dsn: str | None) -> Iterator[tuple[str, Path | None]]:
    if dsn is not None:
        yield dsn, None
        return
    from switch.devtools.postgresql import running_server

    with running_server(fsync=True) as server:
        yield server.create_database(), server.data_dir


def run(
    backends: list[str], callers: list[int], dsn: str | None, writers: tuple[Writer, ...] = WRITERS
) -> list[Run]:
    runs: list[Run] = []
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory(prefix="journal-bench-") as folder:
            journal = SqliteJournal(JournalFile(Path(folder) / "journal.sqlite3"))
            runs += trio.run(_bench, {None: journal}, "sqlite", callers, None)
    if "postgresql" in backends:
        with _postgres(dsn) as (database, data_dir):
            journals: dict[str | None, Journal] = {
                writer: PostgresJournal(JournalDatabase(database), writer=writer)
                for writer in writers
            }
            runs += trio.run(_bench, journals, "postgresql", callers, data_dir)
    return runs


def _table(runs: list[Run]) -> str:
    header = (
        f"{'backend':<19}{'callers':>8}{'commits/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'groups':>8}{'per group':>10}{'switch CPU us':>15}{'server CPU us':>15}"
    )
    lines = [header]
    for r in runs:
        server = "-" if r.server_cpu_us_per_commit is None else f"{r.server_cpu_us_per_commit}"
        label = r.backend if r.writer is None else f"{r.backend} {r.writer}"
        lines.append(
            f"{label:<19}{r.callers:>8}{r.commits_per_s:>11}{r.latency_p50_ms:>9}"
            f"{r.latency_p99_ms:>9}{r.group_commits:>8}{r.changes_per_group:>10}"
            f"{r.switch_cpu_us_per_commit:>15}{server:>15}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.journal_bench", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--callers", default=",".join(map(str, DEFAULT_CALLERS)))
    parser.add_argument(
        "--postgresql-writer",
        default=",".join(WRITERS),
        help="PostgreSQL's writers to measure side by side: thread, loop or both",
    )
    parser.add_argument(
        "--reads",
        action="store_true",
        help="PostgreSQL's reads (in a thread and from the loop) instead of commits",
    )
    parser.add_argument("--readers", default=",".join(map(str, DEFAULT_READERS)))
    parser.add_argument("--dsn", help="an existing PostgreSQL database to use (it is written)")
    parser.add_argument("--json", action="store_true", help="the runs as JSON, not a table")
    options = parser.parse_args(argv)
    configure_logging("error", stream=sys.stderr.buffer)  # slow-commit warnings are expected here
    if options.reads:
        read_runs = run_reads([int(count) for count in options.readers.split(",")], options.dsn)
        print(msgspec.json.encode(read_runs).decode() if options.json else _reads_table(read_runs))
        return 0
    backends = ["sqlite", "postgresql"] if options.backend == "both" else [options.backend]
    callers = [int(count) for count in options.callers.split(",")]
    writers = tuple(options.postgresql_writer.split(","))
    unknown = set(writers) - set(WRITERS)
    if unknown:
        parser.error(f"unknown --postgresql-writer {', '.join(sorted(unknown))}")
    runs = run(backends, callers, options.dsn, typing.cast(tuple[Writer, ...], writers))
    print(msgspec.json.encode(runs).decode() if options.json else _table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
