"""The scenarios, in the order one run measures them, and what each one reports.

One run starts (each as its own process) the bank simulators, the switch and, later, the
echo server; drives them with the worker pool; samples the process under test from
/proc; and returns a :class:`~bench.model.Report`. Every process it starts is stopped
when its scenario group ends, whether it ends well or not.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Final, Literal

import msgspec
import trio

from bench.codec_bench import CodecReport, run_codec_bench
from bench.database import JournalServer, journal_server
from bench.disk_probe import DiskProbe, probe_disk
from bench.histogram import LatencyHistogram
from bench.jobs import APPROVED, CLOSED, TIMEOUT, Job, JobResult, Mode
from bench.model import (
    AdminOverhead,
    BaselineResults,
    BusyOnline,
    CodeVersion,
    CpuPerSale,
    EchoBaseline,
    GeneratorUsage,
    IdleConnections,
    JournalBackend,
    MaxRate,
    Meta,
    Overload,
    ProcessUsage,
    Report,
    RiskOverhead,
    Scaling,
    ScalingRun,
    ScenarioResult,
    SettlementBench,
    Setup,
    SlowBank,
    SwitchLogged,
    SwitchResults,
    TargetCheck,
    WindowPart,
    WindowParts,
)
from bench.procstat import (
    ProcessSample,
    cpu_seconds,
    machine_cpu_seconds,
    memory_sample,
    raise_open_files_limit,
    tree_cpu_seconds,
    tree_sample,
)
from bench.report import BASELINE_MARK, check_targets, compare
from bench.runconfig import (
    BANK_BINS,
    DIALECTS_DIR,
    BankPlan,
    TomlTable,
    extra_sections,
    merge,
    to_toml,
)
from bench.scrape import Scraper
from bench.services import SwitchUnderTest, echo_server, switch_under_test
from bench.settlement_bench import run_settlement_bench
from bench.switchlog import LogReader
from bench.synthetic_day import DayPlan
from bench.versions import SwitchVersion, baseline_version, current_version, resolve_commit
from bench.workers import ProgressLine, WorkerPool
from switch.config import SwitchSection

MAX_WAIT_S: Final = next(
    field.default for field in msgspec.structs.fields(SwitchSection) if field.name == "max_wait_s"
)

SCENARIOS: Final = (
    "codec",
    "disk",
    "closed",
    "open",
    "overload",
    "online",
    "echo",
    "idle",
    "crowd",
    "slow-bank",
    "busy-online",
    "admin",
    "risk",
    "settlement",
    "scaling",
)
DEFAULT_SCENARIOS: Final = tuple(name for name in SCENARIOS if name != "scaling")
"""What a run measures unless --scenarios says: the scaling scenario needs a PostgreSQL
server and a few minutes of its own, so it is asked for by name."""
RSS_INTERVAL_S: Final = 0.25
OPEN_POOL_S: Final = 0.5
"""Open loop: terminals = rate x this, so up to this much latency every arrival still
finds an idle terminal (a POS terminal has one request out at a time)."""
MAX_OPEN_TERMINALS: Final = 4000
SATURATED_SHARE: Final = 0.95
"""An open-loop point is saturated when fewer than this share of offered requests is
approved, or its p99 exceeds SATURATED_P99_MS."""
SATURATED_P99_MS: Final = 500.0
SWITCH_ALLOWANCE_MS: Final = 5.0
"""A request holds its window slot for the bank's latency plus the switch's own time
around it; without a half_max measurement of that time, this much is assumed (ms)."""
STALL_MARGIN_S: Final = 0.1
"""A part of a window counts as stalled also when a slow commit began this soon after
its end: its last requests may be waiting for that commit."""


class Options(msgspec.Struct, frozen=True, kw_only=True):
    mode: Literal["short", "full"] = "full"
    scenarios: tuple[str, ...] = DEFAULT_SCENARIOS
    warmup_s: float = 1.0
    duration_s: float = 4.0
    overload_duration_s: float = 8.0
    terminals: tuple[int, ...] = (1, 8, 64, 200, 1000)
    """Closed-loop sweep: 200 and 1,000 are the targets' (every sale approved)."""
    open_fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9, 1.0, 1.15, 1.3)
    """Open-loop sweep: offered rates as fractions of the closed loop's best tps."""
    open_extra_points: int = 4
    """Further open-loop points, each 1.25x the last, while none has saturated yet."""
    max_rate: float | None = None
    """Skip finding the maximum rate: use this (approvals per second)."""
    generators: int = 2
    """Load-generator processes (``--generators``)."""
    banks: tuple[str, ...] = ("icbc", "abc")
    bank_window: int = 32
    bank_links: int = 2
    """The demo configuration's links and window per bank (conf/switch.toml), for which
    the targets are stated; the slow bank sizes its own window."""
    overload_pool_s: float = OPEN_POOL_S
    """Overload: terminals = rate x this (at most 4,000), as at every open-loop point, so
    that its RSS compares with the maximum rate's for the same rule (twice the rate, twice
    the terminals). Enough that arrivals find idle terminals while answers take up to
    this long: if one ever finds none, the excess check fails (``not sent``), since then
    the pool, not the switch, decided what happened to it."""
    online_connections: int = 8
    pipeline_depth: int = 16
    idle_connections: int = 10_000
    idle_hold_s: float = 5.0
    crowd_terminals: tuple[int, ...] = (4096,)
    """Closed loops of more terminals than the switch admits at once (its cap, 128); the
    closed sweep's 1,000 is the step before."""
    slow_bank_latency_ms: float = 50.0
    slow_bank_rate: float | None = None
    """Default: half the maximum rate, at most 1,000 per second."""
    busy_online_terminals: int = 16
    """busy-online: the POS closed loop, alone and beside the busy online client."""
    busy_online_depth: int = 64
    """busy-online: requests the one online connection keeps in flight."""
    busy_online_max_in_flight: int | None = None
    """busy-online: the switches' ``[switch] max_in_flight``; None: its default."""
    request_timeout_s: float = 5.0
    half_max_parts: int = 4
    """half_max's window cut into this many parts, so that its p99 can be judged on the
    parts without a disk stall."""
    refusal_bound_s: float = MAX_WAIT_S
    """The longest a 91 may take: the switch's ``[switch] max_wait_s``, which the
    bench's config leaves at its default."""
    baseline: str | None = None
    """A git revision: the same scenarios also run on that commit's switch, interleaved."""
    codec_target_s: float = 0.2
    disk_probe_s: float = 10.0
    codec_repeats: int = 5
    journal_durability: Literal["sync", "async"] = "sync"
    journal: JournalBackend = "sqlite"
    """Every switch's journal engine (``--journal``; the scaling scenario sets its own)."""
    switch_workers: int = 1
    """``[switch] workers`` of every switch (``--workers``; more than 1 needs PostgreSQL).
    The scaling scenario's third setup is PostgreSQL x max(2, this)."""
    dsn: str | None = None
    """The PostgreSQL server for the journals (``--dsn``); None: a throw-away one of the
    run's own (switch/devtools/postgresql.py, fsync on), started only if a switch needs it."""
    scaling_terminals: int = 200
    """The scaling scenario's closed loop, whose best sets its open sweep's rates."""
    scaling_common_share: float = 0.5
    """The scaling scenario's common rate: this share of the lowest maximum rate."""
    admin_rounds: int = 4
    risk_rounds: int = 4
    """Rounds of the risk scenario (each: without rules, then with, or the other way)."""
    risk_rules: int = 200
    """The admin scenario's half-max loops on each of its two switches, in turns (off on,
    on off, off on, on off), so that a drift of the machine's load favours neither: one
    window against one differs by a few percent on a shared 2-core machine, more than
    the 3% to be told apart."""
    admin_scrape_interval_s: float = 1.0
    settlement_transactions: int = 1_000_000
    """The settlement scenario's day: the four banks' transactions (issue's target size)."""
    settlement_merchants: int = 10_000
    keep_run_dir: bool = False
    quiet: bool = False


SHORT: Final = Options(
    mode="short",
    # A switch just started answers its first request late (modules imported and
    # compiled on first use, keys prepared): in a 0.4 s window a lone terminal whose
    # first sale took longer sent nothing.
    warmup_s=0.5,
    duration_s=0.4,
    overload_duration_s=0.5,
    overload_pool_s=0.5,
    terminals=(1, 4),
    open_fractions=(0.5, 1.0),
    open_extra_points=0,
    generators=2,
    online_connections=2,
    pipeline_depth=4,
    idle_connections=200,
    idle_hold_s=0.3,
    crowd_terminals=(300,),
    half_max_parts=2,
    slow_bank_rate=100.0,
    busy_online_terminals=4,
    busy_online_depth=8,
    admin_rounds=1,
    risk_rounds=1,
    request_timeout_s=3.0,
    codec_target_s=0.01,
    codec_repeats=2,
    disk_probe_s=0.2,
    settlement_transactions=2000,
    settlement_merchants=50,
    scaling_terminals=4,
)


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """Where a scenario's traffic goes and which processes it measures."""

    kind: Literal["switch", "echo"]
    pid: int
    pos_port: int
    online_port: int | None
    bank_pids: list[int]
    log_path: str | None = None
    """The switch's log, for its own latency figures."""
    admin_port: int | None = None
    """Its admin interface, when it has one on."""
    db_pid: int | None = None
    """The journal's database server (its postmaster) when it runs on this machine: its
    CPU, backends included, is measured apart from the switch's."""
    signs_online: bool = True
    """Online requests go in signed envelopes (security.md), under the DEMO keys."""

    @classmethod
    def of_switch(cls, sut: SwitchUnderTest, db_pid: int | None = None) -> Target:
        return cls(
            kind="switch",
            pid=sut.switch.pid,
            pos_port=sut.pos_port,
            online_port=sut.online_port,
            bank_pids=[sim.pid for sim in sut.simulators.values()],
            log_path=sut.switch.log_path,
            signs_online=sut.signs_online,
            admin_port=sut.switch.started.get("admin_port"),
            db_pid=db_pid,
        )


class Sampler:
    """Samples the process under test (and the banks' and the database server's CPU)
    over a window. The process under test is its whole tree: a switch of N workers is
    its supervisor and the workers, their CPU and their RSS summed."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.first: ProcessSample | None = None
        self.last: ProcessSample | None = None
        self.processes = 1
        self.banks_cpu_s = 0.0
        self.db_cpu_s: float | None = None
        self.machine_busy: float | None = None
        self.rss: list[tuple[float, float]] = []
        self.wall_start = self.wall_end = 0.0

    async def observe(self, window_start: float, window_end: float) -> None:
        await trio.sleep_until(window_start)
        self.wall_start = time.time()
        pid, db_pid = self.target.pid, self.target.db_pid
        machine_before = machine_cpu_seconds()
        self.first, members = tree_sample(pid)
        banks_before = sum(cpu_seconds(p) for p in self.target.bank_pids)
        db_before = tree_cpu_seconds(db_pid) if db_pid is not None else None
        self.rss.append((0.0, self.first.rss_mb))
        while (now := trio.current_time()) + RSS_INTERVAL_S < window_end:
            await trio.sleep_until(now + RSS_INTERVAL_S)
            rss = memory_sample(members, 0.0).rss_mb
            self.rss.append((round(trio.current_time() - window_start, 2), rss))
        await trio.sleep_until(window_end)
        self.wall_end = time.time()
        self.last, members = tree_sample(pid)
        self.processes = len(members)
        self.banks_cpu_s = sum(cpu_seconds(p) for p in self.target.bank_pids) - banks_before
        if db_pid is not None and db_before is not None:
            self.db_cpu_s = tree_cpu_seconds(db_pid) - db_before
        machine_after = machine_cpu_seconds()
        elapsed = machine_after[1] - machine_before[1]
        if elapsed > 0:
            self.machine_busy = (machine_after[0] - machine_before[0]) / elapsed
        self.rss.append((round(window_end - window_start, 2), self.last.rss_mb))

    def usage(self, answers: int) -> ProcessUsage:
        assert self.first is not None and self.last is not None
        cpu_s = self.last.cpu_s - self.first.cpu_s
        return ProcessUsage(
            pid=self.target.pid,
            processes=self.processes,
            cpu_s=round(cpu_s, 3),
            cpu_ms_per_1k=round(cpu_s * 1000 / answers * 1000, 2) if answers else None,
            rss_mb_start=self.first.rss_mb,
            rss_mb_max=max(rss for _, rss in self.rss),
            rss_mb_end=self.last.rss_mb,
            hwm_mb=self.last.hwm_mb,
            rss_samples=self.rss,
        )


def split(total: int, parts: int) -> list[int]:
    """``total`` spread over ``parts`` as evenly as whole numbers allow."""
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]


def summarise(
    name: str,
    kind: Mode,
    target: Target,
    results: Sequence[JobResult],
    sampler: Sampler,
    *,
    offered_rate: float | None,
    pipeline_depth: int = 1,
    switch_logged: SwitchLogged | None = None,
) -> ScenarioResult:
    """Merges the workers' results with the samples of the process under test."""
    latency, latency_approved = LatencyHistogram(), LatencyHistogram()
    latency_refused = LatencyHistogram()
    codes: dict[str, int] = {}
    for result in results:
        latency.merge(LatencyHistogram.from_wire(result.latency))
        latency_approved.merge(LatencyHistogram.from_wire(result.latency_approved))
        latency_refused.merge(LatencyHistogram.from_wire(result.latency_refused))
        for code, count in result.codes.items():
            codes[code] = codes.get(code, 0) + count
    window_s = max(result.window_s for result in results)
    answered_in_window = sum(r.answered_in_window for r in results)
    unanswered = codes.get(TIMEOUT, 0) + codes.get(CLOSED, 0)
    return ScenarioResult(
        name=name,
        kind=kind,
        target=target.kind,
        connections=sum(r.connected for r in results),
        offered_rate=offered_rate,
        pipeline_depth=pipeline_depth,
        window_s=round(window_s, 3),
        offered=sum(r.offered for r in results),
        sent=sum(r.sent for r in results),
        not_sent=sum(r.not_sent for r in results),
        answered=sum(codes.values()) - unanswered,
        tps=round(answered_in_window / window_s, 1),
        goodput_tps=round(sum(r.approved_in_window for r in results) / window_s, 1),
        codes=dict(sorted(codes.items())),
        latency_ms=latency.summary(),
        latency_approved_ms=latency_approved.summary(),
        latency_refused_ms=latency_refused.summary(),
        parts=window_parts(results, window_s, switch_logged),
        switch_logged=switch_logged,
        server=sampler.usage(answered_in_window),
        banks_cpu_s=round(sampler.banks_cpu_s, 3),
        db_cpu_s=None if sampler.db_cpu_s is None else round(sampler.db_cpu_s, 3),
        machine_busy=None if sampler.machine_busy is None else round(sampler.machine_busy, 3),
        generator=GeneratorUsage(
            workers=len(results),
            cpu_s=round(sum(r.cpu_s for r in results), 3),
            busiest_worker_cpu=round(max(r.cpu_s for r in results) / window_s, 2),
            max_schedule_lag_ms=max(r.max_lag_ms for r in results),
        ),
    )


def window_parts(
    results: Sequence[JobResult], window_s: float, logged: SwitchLogged | None
) -> WindowParts | None:
    """The workers' latencies by part of the window, and which parts the disk stalled
    (by the switch's slow journal commits); None for a window measured whole."""
    count = max((len(result.latency_parts) for result in results), default=0)
    if count == 0:
        return None
    part_s = window_s / count
    spans = logged.slow_commit_spans_s if logged is not None else []
    parts: list[WindowPart] = []
    unstalled = LatencyHistogram()
    for index in range(count):
        histogram = LatencyHistogram()
        for result in results:
            if index < len(result.latency_parts):
                histogram.merge(LatencyHistogram.from_wire(result.latency_parts[index]))
        start, end = index * part_s, (index + 1) * part_s
        stalls = sum(1 for a, b in spans if a < end + STALL_MARGIN_S and b >= start)
        if not stalls:
            unstalled.merge(histogram)
        parts.append(
            WindowPart(
                start_s=round(start, 3),
                end_s=round(end, 3),
                latency_ms=histogram.summary(),
                slow_commits=stalls,
            )
        )
    clean = sum(1 for part in parts if not part.slow_commits)
    return WindowParts(
        parts=parts, unstalled=clean, unstalled_latency_ms=unstalled.summary() if clean else None
    )


def saturated(result: ScenarioResult) -> bool:
    approved = result.codes.get(APPROVED, 0)
    return (
        approved < SATURATED_SHARE * max(result.offered, 1)
        or result.latency_ms.p99 > SATURATED_P99_MS
    )


def open_terminals(rate: float) -> int:
    return max(16, min(MAX_OPEN_TERMINALS, math.ceil(rate * OPEN_POOL_S)))


class Side:
    """One switch version of the run (and for the scaling scenario, one setup of it),
    and what has been measured on it."""

    def __init__(self, version: SwitchVersion, setup: Setup | None = None) -> None:
        self.version = version
        self.setup = setup
        """None: the run's own (--journal, --workers)."""
        self.measured = _Measured()

    @property
    def is_baseline(self) -> bool:
        return self.version.side == "baseline"

    @property
    def mark(self) -> str:
        """What the progress line adds to a load point's name."""
        if self.setup is not None:
            return f" @{self.setup.name}"
        return BASELINE_MARK if self.is_baseline else ""


class Bench:
    """One run: its options, its temporary dir, its worker pool, the switch versions it
    measures and what it measured."""

    def __init__(
        self,
        options: Options,
        run_dir: Path,
        pool: WorkerPool,
        sides: Sequence[Side],
        database: JournalServer | None = None,
    ) -> None:
        self.options = options
        self.database = database
        """Where the PostgreSQL journals go (None: no switch of the run needs one)."""
        self.setup = Setup(journal=options.journal, workers=options.switch_workers)
        self.run_dir = run_dir
        self.pool = pool
        self.sides = list(sides)
        self.bins = [BANK_BINS[name] for name in options.banks]
        self.configs: dict[str, str] = {}
        self.dropped_config_keys: dict[str, set[str]] = {}
        self._logs: dict[str, LogReader] = {}
        self._jobs = 0
        """Jobs run so far: each job's number is its terminals' batch (60.2), so no two
        jobs' requests share a POS identity (41, 42, 60.2, 11), which the switch would
        answer as duplicates."""
        self._turns = 0

    def bank_plans(self) -> list[BankPlan]:
        return [
            BankPlan(name=name, links=self.options.bank_links, window=self.options.bank_window)
            for name in self.options.banks
        ]

    def in_turn(self, pairs: Sequence[tuple[Side, Target]]) -> list[tuple[Side, Target]]:
        """The versions in the order to measure the next load point: current first, then
        baseline first, and so on, so that a drift of the machine's load favours neither."""
        self._turns += 1
        return list(pairs) if self._turns % 2 else list(reversed(pairs))

    @contextlib.asynccontextmanager
    async def switch(
        self,
        label: str,
        version: SwitchVersion,
        banks: list[BankPlan] | None = None,
        sections: TomlTable | None = None,
        setup: Setup | None = None,
    ) -> AsyncIterator[Target]:
        """A switch of ``version`` as ``setup`` (default: the run's) deploys it: on
        PostgreSQL with a database of its own; ``sections`` merged over its generated
        config."""
        label = version.label(label)
        setup = setup or self.setup
        dsn, db_pid = None, None
        if setup.journal == "postgresql":
            assert self.database is not None, "a PostgreSQL journal needs the run's server"
            dsn, db_pid = await self.database.new_database(label), self.database.postmaster_pid
        extra = extra_sections(
            self.run_dir,
            label,
            durability=self.options.journal_durability,
            key_file=version.card_keys,
            dsn=dsn,
            workers=setup.workers,
        )
        extra = merge(extra, sections or {})
        async with switch_under_test(
            self.run_dir,
            label,
            banks or self.bank_plans(),
            extra=extra,
            version=version,
            workers=setup.workers,
        ) as sut:
            self.configs[label] = to_toml(sut.config)
            self.dropped_config_keys.setdefault(version.side, set()).update(sut.dropped_config_keys)
            yield Target.of_switch(sut, db_pid=db_pid)

    @contextlib.asynccontextmanager
    async def switches(
        self,
        label: str,
        banks: list[BankPlan] | None = None,
        sections: TomlTable | None = None,
    ) -> AsyncIterator[list[tuple[Side, Target]]]:
        """A fresh switch of each version, all running until the group ends (each load
        point then runs on one of them at a time)."""
        async with contextlib.AsyncExitStack() as stack:
            pairs = []
            for side in self.sides:
                target = await stack.enter_async_context(
                    self.switch(label, side.version, banks, sections)
                )
                pairs.append((side, target))
            yield pairs

    async def measure(
        self,
        name: str,
        target: Target,
        mode: Mode,
        connections: int,
        *,
        side: Side | None = None,
        rate: float = 0.0,
        depth: int = 1,
        duration_s: float | None = None,
        bins: list[str] | None = None,
        parts: int = 1,
    ) -> ScenarioResult:
        """Runs one load on ``target`` and summarises it."""
        workers = max(1, min(self.pool.size, connections))
        shares = split(connections, workers)
        self._jobs += 1
        jobs = [
            self._job(
                target,
                mode,
                worker,
                share,
                rate_per_s=rate * share / connections,
                depth=depth,
                duration_s=duration_s,
                bins=bins,
                parts=parts,
            )
            for worker, share in enumerate(shares)
        ]
        sampler = Sampler(target)
        label = f"{name}{side.mark}" if side is not None else name
        results = await self.pool.run(jobs, label, sampler.observe)
        logged = None
        if target.log_path is not None:
            reader = self._logs.setdefault(target.log_path, LogReader(Path(target.log_path)))
            logged = reader.logged(sampler.wall_start, sampler.wall_end)
        return summarise(
            name,
            mode,
            target,
            results,
            sampler,
            offered_rate=rate if mode == "open" else None,
            pipeline_depth=depth,
            switch_logged=logged,
        )

    def _job(
        self,
        target: Target,
        mode: Mode,
        worker: int,
        connections: int,
        *,
        rate_per_s: float = 0.0,
        depth: int = 1,
        duration_s: float | None = None,
        bins: list[str] | None = None,
        parts: int = 1,
    ) -> Job:
        options = self.options
        port = target.online_port if mode == "online" else target.pos_port
        assert port is not None
        return Job(
            mode=mode,
            worker=worker,
            host="127.0.0.1",
            port=port,
            dialects_dir=str(DIALECTS_DIR),
            connections=connections,
            bins=bins or self.bins,
            warmup_s=0.0 if mode == "idle" else options.warmup_s,
            duration_s=duration_s or options.duration_s,
            rate_per_s=rate_per_s,
            pipeline_depth=depth,
            request_timeout_s=options.request_timeout_s,
            parts=parts,
            batch=self._jobs,
            seed=self._jobs * 100 + worker,
            sign_online=target.signs_online,
        )

    async def measure_side_by_side(
        self, names: Sequence[str], target: Target, jobs: Sequence[tuple[Mode, int, int]],
        *, side: Side,
    ) -> list[ScenarioResult]:  # fmt: skip
        """Loads that run at once, each ``(mode, connections, depth)`` on a load
        generator of its own, summarised apart (named by ``names``) over the same window."""
        assert len(jobs) <= self.pool.size, "one load generator per load"
        self._jobs += 1
        built = [
            self._job(target, mode, worker, connections, depth=depth)
            for worker, (mode, connections, depth) in enumerate(jobs)
        ]
        sampler = Sampler(target)
        results = await self.pool.run(built, f"{'+'.join(names)}{side.mark}", sampler.observe)
        by_worker = {result.worker: result for result in results}
        return [
            summarise(
                name,
                mode,
                target,
                [by_worker[worker]],
                sampler,
                offered_rate=None,
                pipeline_depth=depth,
            )
            for worker, (name, (mode, _, depth)) in enumerate(zip(names, jobs, strict=True))
        ]

    async def open_loop(
        self,
        name: str,
        target: Target,
        rate: float,
        *,
        side: Side | None = None,
        duration_s: float | None = None,
        parts: int = 1,
    ) -> ScenarioResult:
        return await self.measure(
            name,
            target,
            "open",
            open_terminals(rate),
            side=side,
            rate=rate,
            duration_s=duration_s,
            parts=parts,
        )


class _Measured:
    """What the scenarios have measured so far on one version; later ones build on
    earlier ones."""

    def __init__(self) -> None:
        self.closed_sweep: list[ScenarioResult] = []
        self.open_sweep: list[ScenarioResult] = []
        self.max_rate: MaxRate | None = None
        self.max_rate_point: ScenarioResult | None = None
        """The open-loop point that measured the maximum: overload's RSS reference."""
        self.half_max: ScenarioResult | None = None
        self.overload: Overload | None = None
        self.online: ScenarioResult | None = None
        self.idle: IdleConnections | None = None
        self.crowd: list[ScenarioResult] = []
        self.slow_bank: SlowBank | None = None
        self.busy_online: BusyOnline | None = None

    def results(self) -> SwitchResults:
        return SwitchResults(
            closed_sweep=self.closed_sweep,
            open_sweep=self.open_sweep,
            max_rate=self.max_rate,
            half_max=self.half_max,
            overload=self.overload,
            online=self.online,
            idle=self.idle,
            crowd=self.crowd,
            slow_bank=self.slow_bank,
            busy_online=self.busy_online,
        )


async def run_main_switch(bench: Bench) -> None:
    """Closed sweep, open sweep, half the maximum, online and overload, on one switch of
    each version (so overload's RSS compares with the same process's RSS at the maximum
    rate), each load point on one version then the other."""
    options = bench.options
    wanted = set(options.scenarios)
    async with bench.switches("main") as pairs:
        if "closed" in wanted or _needs_max_rate(options):
            for terminals in options.terminals:
                for side, target in bench.in_turn(pairs):
                    side.measured.closed_sweep.append(
                        await bench.measure(
                            f"closed_n{terminals}", target, "closed", terminals, side=side
                        )
                    )
        if "open" in wanted and options.max_rate is None:
            await _open_sweep(bench, pairs)
        for side, _ in pairs:
            if side.measured.max_rate is None:
                side.measured.max_rate = _max_rate_without_sweep(options, side.measured)
        if wanted & {"open", "echo"}:
            for side, target in bench.in_turn(pairs):
                if (max_rate := side.measured.max_rate) is not None:
                    side.measured.half_max = await bench.open_loop(
                        "half_max", target, max_rate.tps / 2, side=side,
                        parts=options.half_max_parts,
                    )  # fmt: skip
        if "online" in wanted:
            for side, target in bench.in_turn(pairs):
                side.measured.online = await bench.measure(
                    "online",
                    target,
                    "online",
                    options.online_connections,
                    side=side,
                    depth=options.pipeline_depth,
                )
        # Last on these switches: the backlog an overload leaves behind would spoil
        # whatever ran after it.
        if "overload" in wanted:
            for side, target in bench.in_turn(pairs):
                if side.measured.max_rate is not None:
                    side.measured.overload = await _overload(bench, target, side)


def _needs_max_rate(options: Options) -> bool:
    wanted = set(options.scenarios)
    needing = {"open", "overload", "echo", "slow-bank", "admin", "risk"}
    return options.max_rate is None and bool(wanted & needing)


def _max_rate_without_sweep(options: Options, measured: _Measured) -> MaxRate | None:
    if options.max_rate is not None:
        return MaxRate(tps=options.max_rate, source="--max-rate")
    if measured.closed_sweep:
        best = max(measured.closed_sweep, key=lambda r: r.goodput_tps)
        return MaxRate(tps=best.goodput_tps, source=best.name)
    return None


async def _open_sweep(bench: Bench, pairs: Sequence[tuple[Side, Target]]) -> None:
    """Offered rates as fractions of the closed loop's best (the better version's), the
    same rates for every version, until each is one point past saturation (a version
    that is, sits out the points after); each version's maximum rate is the best
    goodput it reached."""
    options = bench.options
    closed_best = max(
        (r.goodput_tps for side, _ in pairs for r in side.measured.closed_sweep), default=100.0
    )
    base = max(10.0, closed_best)
    rates = [base * fraction for fraction in options.open_fractions]
    extra = options.open_extra_points
    saturations = {id(side): 0 for side, _ in pairs}
    while rates:
        rate = round(rates.pop(0), 1)
        running = [(side, target) for side, target in pairs if saturations[id(side)] < 2]
        if not running:
            break
        any_unsaturated = False
        for side, target in bench.in_turn(running):
            result = await bench.open_loop(f"open_r{rate:g}", target, rate, side=side)
            side.measured.open_sweep.append(result)
            if saturated(result):
                saturations[id(side)] += 1
            else:
                any_unsaturated = True
        if not rates and extra > 0 and any_unsaturated:  # the listed rates did not saturate
            rates.append(rate * 1.25)
            extra -= 1
    for side, _ in pairs:
        sweep = side.measured.open_sweep
        best = max(sweep, key=lambda r: r.goodput_tps)
        side.measured.max_rate = MaxRate(tps=best.goodput_tps, source=best.name)
        side.measured.max_rate_point = best


async def _overload(bench: Bench, target: Target, side: Side) -> Overload:
    measured = side.measured
    assert measured.max_rate is not None
    max_tps = measured.max_rate.tps
    rate = 2 * max_tps
    result = await bench.measure(
        "overload_2x",
        target,
        "open",
        min(MAX_OPEN_TERMINALS, math.ceil(rate * bench.options.overload_pool_s)),
        side=side,
        rate=rate,
        duration_s=bench.options.overload_duration_s,
    )
    point = measured.max_rate_point
    reference = point.server.rss_mb_max if point is not None else None
    return Overload(
        max_rate_tps=max_tps,
        result=result,
        goodput_ratio=round(result.goodput_tps / max_tps, 3) if max_tps else 0.0,
        answered_91=result.codes.get("91", 0),
        unanswered=result.codes.get(TIMEOUT, 0) + result.codes.get(CLOSED, 0),
        rss_reference_mb=reference,
        rss_reference_terminals=point.connections if point is not None else None,
        rss_ratio=round(result.server.rss_mb_max / reference, 3) if reference else None,
    )


async def run_echo(bench: Bench, measured: _Measured) -> EchoBaseline:
    """The same load generator against the echo server: the same closed loop as the
    switch's busiest closed point, and the (current) switch's half_max rate."""
    options = bench.options
    async with echo_server(bench.run_dir) as echo:
        target = Target(
            kind="echo",
            pid=int(echo.started["pid"]),
            pos_port=int(echo.started["port"]),
            online_port=None,
            bank_pids=[],
        )
        terminals = max(options.terminals)
        closed = await bench.measure(f"echo_closed_n{terminals}", target, "closed", terminals)
        half: ScenarioResult | None = None
        if measured.half_max is not None and measured.half_max.offered_rate:
            half = await bench.open_loop("echo_half_max", target, measured.half_max.offered_rate)
    ratio = None
    if half is not None and measured.half_max is not None:
        switch_cpu = measured.half_max.server.cpu_ms_per_1k
        echo_cpu = half.server.cpu_ms_per_1k
        if switch_cpu and echo_cpu:
            ratio = round(switch_cpu / echo_cpu, 2)
    return EchoBaseline(closed=closed, half_max=half, cpu_ratio=ratio)


async def run_idle(bench: Bench) -> None:
    """A fresh switch, then ``idle_connections`` terminals that each send one echo test
    and stay connected: what many quiet terminals cost in memory."""
    options = bench.options
    async with bench.switches("idle") as pairs:
        for side, target in bench.in_turn(pairs):
            before = tree_sample(target.pid)[0].rss_mb
            result = await bench.measure(
                "idle_connections",
                target,
                "idle",
                options.idle_connections,
                side=side,
                duration_s=options.idle_hold_s,
            )
            side.measured.idle = IdleConnections(
                connections=options.idle_connections,
                connected=result.connections,
                connect_failures=options.idle_connections - result.connections,
                rss_mb_before=before,
                rss_mb=result.server.rss_mb_max,
                result=result,
            )


async def run_crowd(bench: Bench) -> None:
    """A fresh switch (the main one's RSS would keep the crowd's high-water mark), then
    closed loops of ``crowd_terminals``: each terminal sends its next sale as soon as
    it is answered, 91 included, as a terminal or client in a retry loop does. Beyond
    the cap most are refused; the goodput shows whether refusing them takes the switch
    away from the transactions it admitted."""
    async with bench.switches("crowd") as pairs:
        for terminals in bench.options.crowd_terminals:
            for side, target in bench.in_turn(pairs):
                side.measured.crowd.append(
                    await bench.measure(
                        f"crowd_n{terminals}", target, "closed", terminals, side=side
                    )
                )


async def run_slow_bank(bench: Bench) -> None:
    """A bank answering after ``slow_bank_latency_ms``, with the switch's window sized by
    Little's law for the offered rate (from the current version's numbers: the baseline
    gets the same bank, rate and window)."""
    options = bench.options
    measured = bench.sides[0].measured
    if options.slow_bank_rate is not None:
        rate = options.slow_bank_rate
    elif measured.max_rate is not None:
        rate = min(1000.0, round(measured.max_rate.tps / 2, 1))
    else:
        rate = 200.0
    latency_ms = options.slow_bank_latency_ms
    links = options.bank_links
    required = rate * latency_ms / 1000 / links
    # A slot is held for the bank's latency plus the switch's own time around it (its
    # mean at half the maximum rate, with a zero-latency bank, when measured): Little's
    # law gives the mean in flight from mean times. Poisson arrivals put about sqrt(mean)
    # around it, so four of those plus one on top should leave the window full only very
    # rarely; 91s here mean the switch's own jitter needs more than that.
    logged = measured.half_max.switch_logged if measured.half_max else None
    allowance_ms = logged.latency_ms.mean if logged is not None else SWITCH_ALLOWANCE_MS
    held = rate * (latency_ms + allowance_ms) / 1000 / links
    window = math.ceil(held + 4 * math.sqrt(held) + 1)
    bank = options.banks[0]
    plan = BankPlan(name=bank, links=links, window=window, latency_ms=latency_ms)
    async with bench.switches("slow-bank", [plan]) as pairs:
        for side, target in bench.in_turn(pairs):
            result = await bench.measure(
                "slow_bank",
                target,
                "open",
                open_terminals(rate * (1 + latency_ms / 1000 / OPEN_POOL_S)),
                side=side,
                rate=rate,
                bins=[BANK_BINS[bank]],
            )
            side.measured.slow_bank = SlowBank(
                latency_ms=latency_ms,
                rate=rate,
                links=links,
                required_window=round(required, 2),
                switch_allowance_ms=allowance_ms,
                window=window,
                result=result,
            )


async def run_busy_online(bench: Bench) -> None:
    """A fresh switch of each version; on it a closed loop of ``busy_online_terminals``
    POS terminals alone, then the same beside one online connection that keeps
    ``busy_online_depth`` requests in flight (each load on a load generator of its own,
    the POS one on the same generator both times). Needs two load generators."""
    options = bench.options
    if bench.pool.size < 2:
        bench.pool.progress.show("[busy-online] skipped: it needs --generators 2 or more")
        bench.pool.progress.done()
        return
    terminals, depth = options.busy_online_terminals, options.busy_online_depth
    slots = options.busy_online_max_in_flight
    sections: TomlTable = {"switch": {"max_in_flight": slots}} if slots is not None else {}
    async with bench.switches("busy-online", sections=sections) as pairs:
        alone: dict[str, ScenarioResult] = {}
        for side, target in bench.in_turn(pairs):
            (alone[side.version.side],) = await bench.measure_side_by_side(
                ["pos_alone"], target, [("closed", terminals, 1)], side=side
            )
        for side, target in bench.in_turn(pairs):
            pos, online = await bench.measure_side_by_side(
                ["pos_beside_online", "busy_online_client"],
                target,
                [("closed", terminals, 1), ("online", 1, depth)],
                side=side,
            )
            side.measured.busy_online = BusyOnline(
                terminals=terminals,
                online_depth=depth,
                pos_alone=alone[side.version.side],
                pos_beside_online=pos,
                online=online,
            )


ADMIN_ON: Final = {"admin": {"enabled": True, "host": "127.0.0.1", "port": 0}}
ADMIN_OFF: Final = {"admin": {"enabled": False}}


async def run_admin(bench: Bench) -> AdminOverhead | None:
    """What the admin interface costs: the half-max open loop on a fresh switch with
    [admin] off and on a fresh one with it on and scraped (GET /metrics and GET /status
    every ``admin_scrape_interval_s`` for as long as both run), in turns; CPU per sale
    over every round of each. The current code only (a baseline may have no [admin])."""
    options = bench.options
    side = bench.sides[0]
    max_rate = side.measured.max_rate
    if max_rate is None:
        return None
    rate = round(max_rate.tps / 2, 1)
    measured: dict[str, list[ScenarioResult]] = {"off": [], "on": []}
    async with contextlib.AsyncExitStack() as stack:
        off = await stack.enter_async_context(
            bench.switch("admin-off", side.version, sections=ADMIN_OFF)
        )
        on = await stack.enter_async_context(
            bench.switch("admin-on", side.version, sections=ADMIN_ON)
        )
        assert on.admin_port is not None, "the switch logs its admin port when it starts"
        scraper = Scraper(on.admin_port, options.admin_scrape_interval_s)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(scraper.run)
            for turn in range(options.admin_rounds):
                order = [("off", off), ("on", on)]
                for label, target in order if turn % 2 == 0 else reversed(order):
                    suffix = f"_{turn + 1}" if options.admin_rounds > 1 else ""
                    result = await bench.open_loop(f"admin_{label}{suffix}", target, rate)
                    measured[label].append(result)
            nursery.cancel_scope.cancel()
    cpu_off, cpu_on = _cpu_ms_per_1k(measured["off"]), _cpu_ms_per_1k(measured["on"])
    return AdminOverhead(
        rate=rate,
        off=measured["off"],
        on=measured["on"],
        cpu_ms_per_1k_off=cpu_off,
        cpu_ms_per_1k_on=cpu_on,
        ratio=round(cpu_on / cpu_off, 4) if cpu_on and cpu_off else None,
        scrapes=scraper.summary(),
    )


def risk_rules_toml(count: int) -> str:
    """``count`` rules in scope of every POS card sale, as bench/risk_bench.py makes
    them, with limits no sale of the run reaches: each is evaluated (its windows
    counted) and none declines, so both switches send the bank the same sales."""
    import tomli_w

    from bench.risk_bench import in_scope_rules

    rules = []
    for spec in in_scope_rules(count, random.Random(7)):
        rule = {k: v for k, v in msgspec.to_builtins(spec).items() if v is not None}
        if spec.kind == "amount_cap":
            rule["max_fen"] = 10**12
        if spec.kind == "velocity":
            rule["max_count"], rule["max_fen"] = 10**9, 10**15
        rules.append(rule)
    return tomli_w.dumps({"rules": rules})


async def run_risk(bench: Bench) -> RiskOverhead | None:
    """What the risk rules cost (issue #24): the half-max open loop on a fresh switch
    without rules and on a fresh one with ``risk_rules`` rules in scope of every sale,
    in turns; CPU per sale over every round of each. The current code only."""
    options = bench.options
    side = bench.sides[0]
    max_rate = side.measured.max_rate or _max_rate_without_sweep(options, side.measured)
    if max_rate is None:
        return None
    rate = round(max_rate.tps / 2, 1)
    rules_file = bench.run_dir / "risk-rules.toml"
    rules_file.write_text(risk_rules_toml(options.risk_rules))
    rules = {"risk": {"rules_file": str(rules_file)}}
    baseline = next((other for other in bench.sides[1:] if other.is_baseline), None)
    measured: dict[str, list[ScenarioResult]] = {"none": [], "rules": [], "baseline": []}
    async with contextlib.AsyncExitStack() as stack:
        none = await stack.enter_async_context(bench.switch("risk-none", side.version))
        with_rules = await stack.enter_async_context(
            bench.switch(f"risk-{options.risk_rules}", side.version, sections=rules)
        )
        order = [("none", none), ("rules", with_rules)]
        if baseline is not None:  # the baseline's switch with the same rules, in turns
            order.append(("baseline", await stack.enter_async_context(
                bench.switch(f"risk-{options.risk_rules}", baseline.version, sections=rules)
            )))  # fmt: skip
        for turn in range(options.risk_rounds):
            for label, target in order if turn % 2 == 0 else reversed(order):
                suffix = f"_{turn + 1}" if options.risk_rounds > 1 else ""
                name = f"risk_{'none' if label == 'none' else options.risk_rules}{suffix}"
                if label == "baseline":
                    name += BASELINE_MARK
                measured[label].append(await bench.open_loop(name, target, rate))
    cpu_none, cpu_rules = _cpu_ms_per_1k(measured["none"]), _cpu_ms_per_1k(measured["rules"])
    cpu_base = _cpu_ms_per_1k(measured["baseline"])
    return RiskOverhead(
        rate=rate,
        rules=options.risk_rules,
        none=measured["none"],
        with_rules=measured["rules"],
        cpu_ms_per_1k_none=cpu_none,
        cpu_ms_per_1k_rules=cpu_rules,
        ratio=round(cpu_rules / cpu_none, 4) if cpu_rules and cpu_none else None,
        baseline_rules=measured["baseline"],
        cpu_ms_per_1k_baseline_rules=cpu_base,
        ratio_vs_baseline=round(cpu_rules / cpu_base, 4) if cpu_rules and cpu_base else None,
    )


def _cpu_ms_per_1k(results: Sequence[ScenarioResult]) -> float | None:
    """CPU ms per 1,000 answers over several windows together."""
    cpu_s = sum(result.server.cpu_s for result in results)
    answers = sum(round(result.tps * result.window_s) for result in results)
    return round(cpu_s * 1000 / answers * 1000, 2) if answers and cpu_s else None


def scaling_setups(options: Options) -> list[Setup]:
    """SQLite x 1, PostgreSQL x 1 and PostgreSQL x N (N: --workers, at least 2)."""
    workers = max(2, options.switch_workers)
    return [
        Setup(journal="sqlite", workers=1),
        Setup(journal="postgresql", workers=1),
        Setup(journal="postgresql", workers=workers),
    ]


async def run_scaling(bench: Bench) -> Scaling:
    """The scaling scenario: a switch of each setup (:func:`scaling_setups`), with bank
    simulators of its own, all running until the end; on each, in turns, a closed loop
    of ``scaling_terminals``, then the open sweep that finds the maximum rate (the same
    search as the main switch's, the same rates for each setup, each until it has
    saturated twice), then one open loop at the common rate, a share of the lowest
    maximum, where CPU per sale is compared like for like."""
    options = bench.options
    version = bench.sides[0].version
    before = [round(x, 2) for x in os.getloadavg()]
    sides = [Side(version, setup) for setup in scaling_setups(options)]
    terminals = options.scaling_terminals
    common_rate: float | None = None
    async with contextlib.AsyncExitStack() as stack:
        pairs: list[tuple[Side, Target]] = []
        for side in sides:
            assert side.setup is not None
            label = f"scaling-{side.setup.name}"
            target = await stack.enter_async_context(bench.switch(label, version, setup=side.setup))
            pairs.append((side, target))
        for side, target in bench.in_turn(pairs):
            side.measured.closed_sweep.append(
                await bench.measure(f"closed_n{terminals}", target, "closed", terminals, side=side)
            )
        await _open_sweep(bench, pairs)
        lowest = min(side.measured.max_rate.tps for side in sides if side.measured.max_rate)
        if lowest > 0:
            common_rate = round(lowest * options.scaling_common_share, 1)
            for side, target in bench.in_turn(pairs):
                side.measured.half_max = await bench.open_loop(
                    f"common_r{common_rate:g}", target, common_rate, side=side
                )
    runs = []
    for side in sides:
        measured = side.measured
        assert side.setup is not None and measured.max_rate is not None
        assert measured.max_rate_point is not None
        common = measured.half_max
        runs.append(
            ScalingRun(
                setup=side.setup,
                closed=measured.closed_sweep[0],
                open_sweep=measured.open_sweep,
                max_rate=measured.max_rate,
                at_max=cpu_per_sale(measured.max_rate_point),
                common=common,
                at_common=cpu_per_sale(common) if common is not None else None,
            )
        )
    return Scaling(
        cpus=os.cpu_count() or 0,
        common_rate=common_rate,
        load_average_before=before,
        load_average_after=[round(x, 2) for x in os.getloadavg()],
        runs=runs,
    )


def cpu_per_sale(result: ScenarioResult) -> CpuPerSale:
    """Who spent a load point's CPU, per answer in its window, and how busy the machine
    was (every process on it) and the processes measured."""
    answers = round(result.tps * result.window_s)

    def per_answer(cpu_s: float | None) -> float | None:
        return round(cpu_s * 1e6 / answers, 1) if cpu_s is not None and answers else None

    cpus = os.cpu_count() or 1
    spent = [result.server.cpu_s, result.banks_cpu_s, result.generator.cpu_s]
    measured = sum(spent) + (result.db_cpu_s or 0.0)
    return CpuPerSale(
        scenario=result.name,
        offered_rate=result.offered_rate,
        goodput_tps=result.goodput_tps,
        answers=answers,
        switch_us=per_answer(result.server.cpu_s),
        db_us=per_answer(result.db_cpu_s),
        banks_us=per_answer(result.banks_cpu_s),
        generators_us=per_answer(result.generator.cpu_s),
        machine_busy=result.machine_busy,
        measured_busy=round(measured / result.window_s / cpus, 3) if result.window_s else None,
    )


async def run_bench(options: Options, progress: ProgressLine) -> Report:
    """Runs the chosen scenarios; every process started here is stopped before return,
    also when the bench is interrupted (SIGINT) or told to stop (SIGTERM)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_sigterm)
        report = await _run_scenarios(options, progress)
        nursery.cancel_scope.cancel()
    return report


class Interrupted(Exception):
    """The bench was told to stop (SIGTERM); every process it started has been stopped."""


async def _stop_on_sigterm() -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            raise Interrupted("SIGTERM")


async def _run_scenarios(options: Options, progress: ProgressLine) -> Report:
    started_at = _now()
    # A REF that names no commit fails here, before anything has started.
    baseline_sha = resolve_commit(options.baseline) if options.baseline is not None else None
    raise_open_files_limit()
    run_dir = Path(tempfile.mkdtemp(prefix="payswitch-bench-"))
    wanted = set(options.scenarios)
    codec: CodecReport | None = None
    disk: DiskProbe | None = None
    echo: EchoBaseline | None = None
    admin: AdminOverhead | None = None
    risk: RiskOverhead | None = None
    settlement: SettlementBench | None = None
    scaling: Scaling | None = None
    try:
        sides = [Side(current_version())]
        if options.baseline is not None and baseline_sha is not None:
            progress.show(f"[baseline] {options.baseline} = {baseline_sha[:12]}: git archive")
            version = await trio.to_thread.run_sync(
                baseline_version, options.baseline, baseline_sha, run_dir
            )
            sides.append(Side(version))
            progress.done()
        if "codec" in wanted:
            progress.show("[codec] ISO 8583 micro-benchmarks against pyiso8583")
            codec = run_codec_bench(target_s=options.codec_target_s, repeats=options.codec_repeats)
            progress.done()
        if "disk" in wanted:
            progress.show(f"[disk] write + fsync in the run dir for {options.disk_probe_s:g} s")
            disk = await trio.to_thread.run_sync(probe_disk, run_dir, options.disk_probe_s)
            progress.done()
        async with contextlib.AsyncExitStack() as stack:
            database = None
            if options.journal == "postgresql" or "scaling" in wanted:
                progress.show("[postgresql] the journals' server")
                database = await stack.enter_async_context(journal_server(options.dsn))
                progress.done()
            # Entered last: the generators stop first, then the switches' server.
            pool = await stack.enter_async_context(
                WorkerPool.open(options.generators, run_dir, progress)
            )
            bench = Bench(options, run_dir, pool, sides, database)
            if wanted & {"closed", "open", "overload", "online", "echo", "admin", "risk"}:
                await run_main_switch(bench)
            if "echo" in wanted:
                echo = await run_echo(bench, sides[0].measured)
            if "idle" in wanted:
                await run_idle(bench)
            if "crowd" in wanted:
                await run_crowd(bench)
            if "slow-bank" in wanted:
                await run_slow_bank(bench)
            if "busy-online" in wanted:
                await run_busy_online(bench)
            if "admin" in wanted:
                admin = await run_admin(bench)
            if "risk" in wanted:
                risk = await run_risk(bench)
            if "scaling" in wanted:
                scaling = await run_scaling(bench)
            configs = bench.configs
            dropped = bench.dropped_config_keys
            journal = f"on, {options.journal}, durability {options.journal_durability}"
            if options.switch_workers > 1:
                journal += f", {options.switch_workers} workers"
        # Last, with the load generators gone: its gigabyte of writes would disturb
        # the latencies measured after it.
        if "settlement" in wanted:
            plan = DayPlan(
                transactions=options.settlement_transactions,
                merchants=options.settlement_merchants,
            )
            if options.journal == "postgresql":  # the store in the journal's database
                async with journal_server(options.dsn) as server:
                    dsn = await server.new_database("settlement")
                    settlement = await run_settlement_bench(run_dir, plan, progress, dsn=dsn)
            else:
                settlement = await run_settlement_bench(run_dir, plan, progress)
    finally:
        if options.keep_run_dir:
            print(f"run dir kept: {run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    current = sides[0].version
    meta = Meta(
        started_at=started_at,
        finished_at=_now(),
        mode=options.mode,
        python=platform.python_version(),
        cpus=os.cpu_count() or 0,
        load_average=[round(x, 2) for x in os.getloadavg()],
        generators=options.generators,
        setup=Setup(journal=options.journal, workers=options.switch_workers),
        journal=journal,
        logging="info, JSON lines to a file in the run dir",
        options=msgspec.to_builtins(options),
        configs=configs,
        code=CodeVersion(ref=None, sha=current.sha, dirty=current.dirty, tree=current.tree),
    )

    def judge(
        results: SwitchResults,
        echo: EchoBaseline | None,
        baseline: SwitchResults | None = None,
        admin: AdminOverhead | None = None,
        settlement: SettlementBench | None = None,
        scaling: Scaling | None = None,
        risk: RiskOverhead | None = None,
    ) -> list[TargetCheck]:
        return check_targets(
            results,
            echo=echo,
            admin=admin,
            risk=risk,
            journal=journal,
            bank_links_window=(options.bank_links, options.bank_window),
            refusal_bound_s=options.refusal_bound_s,
            disk=disk,
            baseline=baseline,
            baseline_ref=options.baseline,
            settlement=settlement,
            scaling=scaling,
        )

    mine = sides[0].measured.results()
    baseline: BaselineResults | None = None
    if len(sides) > 1:
        version = sides[1].version
        assert version.ref is not None and version.sha is not None
        theirs = sides[1].measured.results()
        baseline = BaselineResults(
            **msgspec.structs.asdict(theirs),
            ref=version.ref,
            sha=version.sha,
            dropped_config_keys=sorted(dropped.get("baseline", ())),
            targets=judge(theirs, echo=None),
        )
    return Report(
        **msgspec.structs.asdict(mine),
        meta=meta,
        codec=codec,
        disk=disk,
        echo=echo,
        admin=admin,
        risk=risk,
        settlement=settlement,
        scaling=scaling,
        targets=judge(mine, echo, baseline, admin, settlement, scaling, risk),
        baseline=baseline,
        comparison=compare(mine, baseline) if baseline is not None else [],
    )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
