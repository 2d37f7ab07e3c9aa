"""What a bench report holds, as Structs: the JSON report is these, encoded."""

from __future__ import annotations

from typing import Literal

import msgspec

from bench.codec_bench import CodecReport
from bench.disk_probe import DiskProbe
from bench.histogram import LatencySummary
from bench.settle_day import SettleRun

ScenarioKind = Literal["closed", "open", "idle", "online"]


class ProcessUsage(msgspec.Struct, frozen=True, kw_only=True):
    """The process under test (switch or echo server) over a measurement window; a
    switch of several workers is its supervisor and its workers together."""

    pid: int
    """The first process (a supervisor's, with workers)."""
    processes: int = 1
    """The processes counted: ``pid`` and those below it (a supervisor and N workers)."""
    cpu_s: float
    """utime + stime over the window, from /proc/<pid>/stat, of every process counted
    (and of those that ended in the window: their parents' cutime + cstime)."""
    cpu_ms_per_1k: float | None
    """CPU milliseconds per 1,000 answers in the window (CPU seconds per 1,000 x 1000)."""
    rss_mb_start: float
    rss_mb_max: float
    """Highest VmRSS sampled in the window (every ``rss_interval_s``); with workers the
    sum of every process's."""
    rss_mb_end: float
    hwm_mb: float
    """VmHWM at the end: the process's peak since it started."""
    rss_samples: list[tuple[float, float]]
    """(seconds into the window, VmRSS MiB)."""


class GeneratorUsage(msgspec.Struct, frozen=True, kw_only=True):
    workers: int
    cpu_s: float
    """All load-generator processes together, over the window."""
    busiest_worker_cpu: float
    """The busiest worker's CPU seconds per second of window: near 1.0 means the generator
    itself may be what limits the rate."""
    max_schedule_lag_ms: float
    """Open loop: how late the arrival schedule ran at worst."""


class ScenarioResult(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    kind: ScenarioKind
    target: Literal["switch", "echo"]
    connections: int
    offered_rate: float | None
    """Open loop: the mean arrival rate asked for (per second)."""
    pipeline_depth: int
    window_s: float
    offered: int
    sent: int
    not_sent: int
    """Open loop: arrivals that found every terminal busy (a generator limit, not sent)."""
    answered: int
    """Answers to requests sent in the window (``codes`` minus timeout/closed)."""
    tps: float
    """Answers received in the window, per second."""
    goodput_tps: float
    """Approvals (00) received in the window, per second."""
    codes: dict[str, int]
    """Every request sent in the window, by response code; ``timeout``: no answer in time,
    ``closed``: the connection ended first. They add up to ``sent``."""
    latency_ms: LatencySummary
    latency_approved_ms: LatencySummary
    latency_refused_ms: LatencySummary
    """Answers 91 only, at the terminal: how long a refusal took."""
    parts: WindowParts | None
    """The window cut into parts, each with its latency and whether the disk stalled
    in it (half_max only; None elsewhere)."""
    switch_logged: SwitchLogged | None
    """The switch's own view from its txn log lines in the window; None for the echo
    server."""
    server: ProcessUsage
    banks_cpu_s: float
    generator: GeneratorUsage
    db_cpu_s: float | None = None
    """The journal's PostgreSQL server over the window (postmaster and backends), when it
    runs on this machine; None on SQLite (its work is in the switch's process)."""
    machine_busy: float | None = None
    """The whole machine's busy share over the window, every process's (others' too),
    from /proc/stat: 1.0 is every core busy."""


class SwitchLogged(msgspec.Struct, frozen=True, kw_only=True):
    """Percentiles of what the switch's txn log lines say, over the lines in a window."""

    latency_ms: LatencySummary
    """Frame read to answer queued: the switch's whole share of the end-to-end time."""
    journal_ms: LatencySummary
    """Of which waiting for the journal's commits (the disk), for transactions that went
    to a bank (the others wait for none)."""
    bank_ms: LatencySummary
    """Of which waiting for the bank's answer."""
    slow_commits: int = 0
    """The switch's ``journal_commit_slow`` lines for commits that overlapped the window:
    commits that took over 20 ms in their thread (the disk stalled)."""
    slowest_commit_ms: float | None = None
    slow_commit_spans_s: list[tuple[float, float]] = []
    """When each of those commits ran: (start, end) in seconds into the window."""


class WindowPart(msgspec.Struct, frozen=True, kw_only=True):
    """One part of a measurement window."""

    start_s: float
    end_s: float
    """Seconds into the window; a request belongs to the part it was due in."""
    latency_ms: LatencySummary
    slow_commits: int
    """Journal commits over 20 ms that ran during the part (or just after its end,
    while its last requests could still wait for them)."""


class WindowParts(msgspec.Struct, frozen=True, kw_only=True):
    parts: list[WindowPart]
    unstalled: int
    """Parts without a slow journal commit."""
    unstalled_latency_ms: LatencySummary | None
    """Latency over the parts without one, merged; None when every part had one."""


class MaxRate(msgspec.Struct, frozen=True, kw_only=True):
    tps: float
    """The highest goodput (approvals per second) measured."""
    source: str
    """Which scenario it came from."""


class Overload(msgspec.Struct, frozen=True, kw_only=True):
    max_rate_tps: float
    result: ScenarioResult
    goodput_ratio: float
    """Goodput at 2x over the maximum rate's goodput."""
    answered_91: int
    unanswered: int
    """Requests that timed out at the terminal or lost their connection."""
    rss_reference_mb: float | None
    """The switch's highest RSS while it ran at the maximum rate."""
    rss_reference_terminals: int | None
    """The terminals connected then (the overload's pool is twice as large: its RSS
    holds twice the connections)."""
    rss_ratio: float | None
    """Highest RSS under overload over the reference."""


class EchoBaseline(msgspec.Struct, frozen=True, kw_only=True):
    closed: ScenarioResult | None
    half_max: ScenarioResult | None
    """The echo server at the same offered rate as the switch's half_max scenario."""
    cpu_ratio: float | None
    """Switch CPU per transaction (half_max) over echo CPU per message (same rate)."""


class AdminScrapes(msgspec.Struct, frozen=True, kw_only=True):
    """What the bench asked of the admin interface while its switch was measured."""

    interval_s: float
    scrapes: int
    """Rounds of GET /metrics and GET /status both answered 200."""
    failures: int
    metrics_bytes: int
    """The last /metrics answer's size."""
    status_bytes: int
    last_error: str | None


class AdminOverhead(msgspec.Struct, frozen=True, kw_only=True):
    """The same half-max open loop on a switch with [admin] off and on one with it on and
    scraped, in turns, in the same run (the current code only)."""

    rate: float
    off: list[ScenarioResult]
    on: list[ScenarioResult]
    cpu_ms_per_1k_off: float | None
    """CPU ms per 1,000 answers over every round, off."""
    cpu_ms_per_1k_on: float | None
    ratio: float | None
    """On over off."""
    scrapes: AdminScrapes


class RiskOverhead(msgspec.Struct, frozen=True, kw_only=True):
    """The same half-max open loop on a switch with no risk rules and on one with
    ``rules`` rules in scope of every sale (none of which declines it), in turns, in the
    same run (the current code only)."""

    rate: float
    rules: int
    none: list[ScenarioResult]
    with_rules: list[ScenarioResult]
    cpu_ms_per_1k_none: float | None
    """CPU ms per 1,000 answers over every round, without rules."""
    cpu_ms_per_1k_rules: float | None
    ratio: float | None
    """With the rules over without."""
    baseline_rules: list[ScenarioResult] = []
    """With ``--baseline``: the baseline's switch with the same rules, in the same turns."""
    cpu_ms_per_1k_baseline_rules: float | None = None
    ratio_vs_baseline: float | None = None
    """With the rules, the current code over the baseline's."""


class IdleConnections(msgspec.Struct, frozen=True, kw_only=True):
    connections: int
    connected: int
    connect_failures: int
    rss_mb_before: float
    """The fresh switch's RSS before any terminal connected."""
    rss_mb: float
    """Its highest RSS while every connection was open."""
    result: ScenarioResult


class SlowBank(msgspec.Struct, frozen=True, kw_only=True):
    latency_ms: float
    rate: float
    links: int
    required_window: float
    """Little's law: rate x latency / links, the bank's requests in flight per link on
    average; the window must be at least this."""
    switch_allowance_ms: float
    """The switch's own time a request also holds its slot for: its mean (from its txn
    log) at half the maximum rate with a zero-latency bank, when that was measured."""
    window: int
    """The window configured: m = rate x (latency + allowance) / links in flight on average,
    plus four standard deviations of Poisson arrivals (sqrt m), plus one."""
    result: ScenarioResult


class BusyOnline(msgspec.Struct, frozen=True, kw_only=True):
    """A closed loop of POS terminals alone, then beside one online connection that
    keeps ``online_depth`` requests in flight: what one busy client costs the terminals."""

    terminals: int
    online_depth: int
    pos_alone: ScenarioResult
    pos_beside_online: ScenarioResult
    online: ScenarioResult
    """The busy client's own answers, in the same window as ``pos_beside_online``."""


class SettlementBench(msgspec.Struct, frozen=True, kw_only=True):
    """A synthetic business date settled by the switch's SettlementService, end to end
    on real files, in a process of its own (the current code only)."""

    plan_transactions: int
    """The four banks' transactions asked for (``--settlement-transactions``)."""
    merchants: int
    fault_fraction: float
    """Of each fault kind, this share of the transactions."""
    banks: list[str]
    corrupt_bank: str | None
    """The fifth, small bank whose file's trailer is corrupt (rejected whole)."""
    by_bank: dict[str, int]
    injected: dict[str, int]
    """Fault kind: transactions it touched."""
    build_s: float
    """Building the day, not timed in the settlement (wall seconds)."""
    build_parts_s: dict[str, float]
    """Of which: generating, the journal (through its own write path), the clearing
    files, the store."""
    result: SettleRun
    ok: bool
    """Every category, payout line and check as the day says it must be."""


JournalBackend = Literal["sqlite", "postgresql"]


class Setup(msgspec.Struct, frozen=True, kw_only=True):
    """How a switch of the run is deployed: its journal's engine and its processes."""

    journal: JournalBackend = "sqlite"
    workers: int = 1
    """``[switch] workers``: with more than 1, a supervisor and that many workers."""

    @property
    def name(self) -> str:
        return f"{self.journal}-x{self.workers}"


class CpuPerSale(msgspec.Struct, frozen=True, kw_only=True):
    """Who spent the CPU of one load point, in µs per answer, and how busy the machine
    was: everything on it shares its cores."""

    scenario: str
    offered_rate: float | None
    goodput_tps: float
    answers: int
    """Answers received in the window."""
    switch_us: float | None
    """The switch: its process, or its supervisor and every worker."""
    db_us: float | None
    """The PostgreSQL server: postmaster and backends (None on SQLite, whose work is in
    the switch's process)."""
    banks_us: float | None
    generators_us: float | None
    machine_busy: float | None
    """The whole machine's busy share over the window (every process, others' too, from
    /proc/stat): 1.0 is every core busy."""
    measured_busy: float | None
    """Of it, the processes the bench measured (switch, database, banks, generators)."""


class ScalingRun(msgspec.Struct, frozen=True, kw_only=True):
    """One setup of the scaling scenario: its maximum rate and CPU per sale."""

    setup: Setup
    closed: ScenarioResult
    open_sweep: list[ScenarioResult]
    max_rate: MaxRate
    at_max: CpuPerSale
    """At the open-loop point that measured the maximum rate."""
    common: ScenarioResult | None
    at_common: CpuPerSale | None
    """At the rate every setup ran (``Scaling.common_rate``): CPU compared like for like."""


class Scaling(msgspec.Struct, frozen=True, kw_only=True):
    """SQLite x 1, PostgreSQL x 1 and PostgreSQL x N side by side in one run (the current
    code only), each on a switch and bank simulators of its own, the load points in
    turns."""

    cpus: int
    common_rate: float | None
    """Every setup offered this rate too (a share of the lowest maximum): CPU per sale
    at the same load, where group commits batch alike."""
    load_average_before: list[float]
    load_average_after: list[float]
    runs: list[ScalingRun]


Verdict = Literal["PASS", "FAIL", "n/a", "n/a-stalled"]


class TargetCheck(msgspec.Struct, frozen=True, kw_only=True):
    target: str
    measured: str
    passed: bool | None
    """None when the scenario it needs was not run (or ran too small to judge, or only
    in windows the disk stalled)."""
    result: Verdict
    """What the table prints: PASS, FAIL, n/a, or n/a-stalled when every window it is
    judged on had a disk stall."""


class Ratio(msgspec.Struct, frozen=True, kw_only=True):
    current: float | None
    baseline: float | None
    ratio: float | None
    """current / baseline (None when either is missing or the baseline is 0)."""


class Comparison(msgspec.Struct, frozen=True, kw_only=True):
    """One scenario measured on both versions, side by side."""

    name: str
    offered_rate: Ratio
    """Open loop: each version's offered rate (half_max and overload_2x run at each
    version's own maximum; every other point at the same rate for both)."""
    tps: Ratio
    goodput_tps: Ratio
    p50_ms: Ratio
    p99_ms: Ratio
    cpu_ms_per_1k: Ratio
    rss_mb: Ratio
    """Highest VmRSS in the window."""


class CodeVersion(msgspec.Struct, frozen=True, kw_only=True):
    """Which switch code ran."""

    ref: str | None
    """The git revision as given (``--baseline REF``); None for the working tree."""
    sha: str | None
    """The commit it resolved to; for the working tree its HEAD (None outside git)."""
    dirty: bool | None = None
    """The working tree only: it had uncommitted changes under switch/ or conf/."""
    tree: str


class Meta(msgspec.Struct, frozen=True, kw_only=True):
    started_at: str
    finished_at: str
    mode: Literal["short", "full"]
    python: str
    cpus: int
    load_average: list[float]
    generators: int
    """Load-generator processes."""
    setup: Setup
    """The journal engine and workers of every switch but the scaling scenario's."""
    journal: str
    logging: str
    options: dict[str, object]
    configs: dict[str, str]
    """Each generated switch config, as TOML text (a baseline's labelled baseline-*)."""
    code: CodeVersion
    """The switch code measured (the current one; the baseline's is in ``baseline``)."""


class SwitchResults(msgspec.Struct, frozen=True, kw_only=True):
    """What one switch version measured: the current at the report's top level, the
    baseline's under ``baseline``, with the same names."""

    closed_sweep: list[ScenarioResult]
    open_sweep: list[ScenarioResult]
    max_rate: MaxRate | None
    half_max: ScenarioResult | None
    overload: Overload | None
    online: ScenarioResult | None
    idle: IdleConnections | None
    crowd: list[ScenarioResult]
    slow_bank: SlowBank | None
    busy_online: BusyOnline | None = None


class BaselineResults(SwitchResults, frozen=True, kw_only=True):
    """The switch of another commit, measured in the same run (``--baseline REF``)."""

    ref: str
    sha: str
    """The commit REF resolved to when the run began."""
    dropped_config_keys: list[str]
    """Keys of the generated config its version does not know, left out of its config."""
    targets: list[TargetCheck]
    """The same targets, judged on its numbers (for the change's before and after)."""


class Report(SwitchResults, frozen=True, kw_only=True):
    meta: Meta
    codec: CodecReport | None
    disk: DiskProbe | None
    echo: EchoBaseline | None
    admin: AdminOverhead | None
    """The admin interface's cost (the current code only)."""
    risk: RiskOverhead | None = None
    """The risk rules' cost (the current code only)."""
    settlement: SettlementBench | None
    """A business date's settlement (the current code only)."""
    scaling: Scaling | None
    """SQLite x 1, PostgreSQL x 1 and x N side by side (the current code only)."""
    targets: list[TargetCheck]
    baseline: BaselineResults | None
    comparison: list[Comparison]
    """Each scenario run on both versions: current, baseline and current / baseline."""
