"""Reading a run: the targets it checks, the tables it prints, the files it writes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

import msgspec

from bench.codec_bench import CodecReport
from bench.disk_probe import STALL_MS, DiskProbe
from bench.jobs import APPROVED, CLOSED, REFUSED, TIMEOUT
from bench.model import (
    AdminOverhead,
    BusyOnline,
    Comparison,
    CpuPerSale,
    EchoBaseline,
    MaxRate,
    Ratio,
    RiskOverhead,
    Scaling,
    ScalingRun,
    ScenarioResult,
    SettlementBench,
    SwitchLogged,
    SwitchResults,
    TargetCheck,
    Verdict,
    WindowParts,
)

if TYPE_CHECKING:
    from bench.model import Report

RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"

# The targets of issue #11.
ALL_APPROVED_TERMINALS: Final = (200, 1000)
"""Closed loops that must see every sale approved on the demo banks."""
DEMO_BANKS: Final = (2, 32)
"""conf/switch.toml's links and window per bank: the closed-loop targets are for these."""
CROWD_TERMINALS: Final = 4096
CROWD_GOODPUT: Final = 0.80
OVERLOAD_GOODPUT: Final = 0.90
OVERLOAD_P99_MS: Final = 100.0
CPU_RATIO: Final = 4.0
ONE_TERMINAL_P50_MS: Final = 2.0
HALF_MAX_P99_MS: Final = 10.0
BASELINE_MAX_RATE_RATIO: Final = 1.5
ADMIN_CPU_RATIO: Final = 1.03
"""Issue #12: CPU per sale with the admin interface on and scraped, over off."""
RISK_CPU_RATIO: Final = 1.1
"""Issue #24: CPU per sale with 200 risk rules in scope, over none."""
SETTLEMENT_TRANSACTIONS: Final = 1_000_000
SETTLEMENT_MERCHANTS: Final = 10_000
SETTLEMENT_S: Final = 60.0
SETTLEMENT_RSS_MB: Final = 1024.0
"""1 GB of peak resident set (VmHWM, in MiB)."""
# Issue #14's, on the scaling scenario.
SCALING_RATE_RATIO: Final = 1.3
"""PostgreSQL x N's maximum rate over PostgreSQL x 1's."""


def _verdict(passed: bool | None) -> Verdict:
    return "n/a" if passed is None else "PASS" if passed else "FAIL"


def _check(target: str, measured: str, passed: bool | None) -> TargetCheck:
    return TargetCheck(target=target, measured=measured, passed=passed, result=_verdict(passed))


def _not_run(target: str, why: str = "not run") -> TargetCheck:
    return _check(target, why, None)


def check_targets(
    results: SwitchResults,
    *,
    echo: EchoBaseline | None,
    journal: str,
    bank_links_window: tuple[int, int],
    refusal_bound_s: float,
    disk: DiskProbe | None = None,
    baseline: SwitchResults | None = None,
    baseline_ref: str | None = None,
    admin: AdminOverhead | None = None,
    settlement: SettlementBench | None = None,
    scaling: Scaling | None = None,
    risk: RiskOverhead | None = None,
) -> list[TargetCheck]:
    """Issue #11's targets and issue #12's, the settlement's and issue #14's, judged on
    one switch version's ``results`` (``echo``, ``baseline``, ``admin``, ``settlement``
    and ``scaling`` are given for the current version only)."""
    checks = [
        _all_approved(results.closed_sweep, terminals, bank_links_window)
        for terminals in ALL_APPROVED_TERMINALS
    ]
    checks.append(_crowd(results.crowd, results.max_rate))
    checks.extend(_overload_checks(results, refusal_bound_s))
    checks.append(_cpu(results.half_max, echo, journal))
    checks.append(_one_terminal(results.closed_sweep))
    checks.append(_half_max(results.half_max, disk))
    checks.append(_against_baseline(results.max_rate, baseline, baseline_ref))
    checks.append(_admin(admin))
    checks.append(_risk(risk))
    checks.extend(_settlement_checks(settlement))
    checks.extend(scaling_checks(scaling))
    return checks


def _codes_line(result: ScenarioResult) -> str:
    codes = ", ".join(f"{code} {count}" for code, count in result.codes.items())
    return f"{result.sent} sent: {codes or 'none'}"


def _all_approved(
    closed_sweep: Sequence[ScenarioResult], terminals: int, links_window: tuple[int, int]
) -> TargetCheck:
    name = (
        f"closed loop of {terminals:,} terminals, demo banks ({DEMO_BANKS[0]} links x window"
        f" {DEMO_BANKS[1]}), zero latency: every sale approved"
    )
    result = next((r for r in closed_sweep if r.connections == terminals), None)
    if result is None:
        return _not_run(name, f"not run (--terminals has no {terminals})")
    approved = result.codes.get(APPROVED, 0)
    measured = (
        f"{approved} of {result.sent} approved ({_codes_line(result)});"
        f" {result.goodput_tps:g}/s, p99 {result.latency_ms.p99:.2f} ms"
    )
    if links_window != DEMO_BANKS:
        links, window = links_window
        return _not_run(name, f"{measured}; banks were {links} links x window {window}")
    return _check(name, measured, result.sent > 0 and approved == result.sent)


def _crowd(crowd: Sequence[ScenarioResult], max_rate: MaxRate | None) -> TargetCheck:
    name = (
        f"closed loop of {CROWD_TERMINALS:,} terminals (crowd): goodput >= {CROWD_GOODPUT:.0%}"
        " of the maximum rate, no collapse (every request answered)"
    )
    if not crowd:
        return _not_run(name)
    result = max(crowd, key=lambda r: r.connections)
    if max_rate is None or not max_rate.tps:
        return _not_run(name, f"no maximum rate measured ({result.name} ran)")
    ratio = result.goodput_tps / max_rate.tps
    unanswered = result.codes.get(TIMEOUT, 0) + result.codes.get(CLOSED, 0)
    measured = (
        f"{ratio:.0%} ({result.goodput_tps:g} of {max_rate.tps:g}/s) with"
        f" {result.connections:,} terminals; {result.codes.get(REFUSED, 0)} answered 91,"
        f" {unanswered} unanswered"
    )
    passed = ratio >= CROWD_GOODPUT and unanswered == 0
    return _check(name, measured, passed if result.connections >= CROWD_TERMINALS else None)


def _overload_checks(results: SwitchResults, refusal_bound_s: float) -> list[TargetCheck]:
    bound_ms = refusal_bound_s * 1000
    names = (
        f"overload 2x: goodput >= {OVERLOAD_GOODPUT:.0%} of the maximum",
        f"overload 2x: every excess request answered 91 within {refusal_bound_s:g} s,"
        " none timed out",
        f"overload 2x: p99 of accepted (approved) <= {OVERLOAD_P99_MS:g} ms",
    )
    overload = results.overload
    if overload is None:
        return [_not_run(name) for name in names]
    result = overload.result
    accepted, refused = result.latency_approved_ms, result.latency_refused_ms
    disk = f" ({_slow_commits(result.switch_logged)})" if result.switch_logged else ""
    others = {
        code: count
        for code, count in result.codes.items()
        if code not in (APPROVED, REFUSED, TIMEOUT, CLOSED)
    }
    excess = f"{overload.answered_91} answered 91"
    if refused.count:
        excess += f" (at the terminal: p99 {refused.p99:.1f}, max {refused.max:.1f} ms)"
    excess += f", {overload.unanswered} unanswered"
    if others:
        excess += ", answered otherwise: " + " ".join(f"{c}:{n}" for c, n in others.items())
    if result.not_sent:
        excess += f", {result.not_sent} not sent (every terminal busy)"
    excess_passed = (
        overload.unanswered == 0 and not others and not result.not_sent
        and refused.max <= bound_ms
    )  # fmt: skip
    return [
        _check(
            names[0],
            f"{overload.goodput_ratio:.0%} ({result.goodput_tps:g} of "
            f"{overload.max_rate_tps:g}/s; offered {result.offered_rate:g}/s){disk}",
            overload.goodput_ratio >= OVERLOAD_GOODPUT,
        ),
        _check(names[1], excess, excess_passed),
        _check(
            names[2],
            f"{accepted.p99:.2f} ms of {accepted.count} approved{disk}"
            if accepted.count
            else "none of the requests sent in the window was approved",
            accepted.count > 0 and accepted.p99 <= OVERLOAD_P99_MS,
        ),
    ]


def _cpu(half_max: ScenarioResult | None, echo: EchoBaseline | None, journal: str) -> TargetCheck:
    name = f"switch CPU/sale <= {CPU_RATIO:g}x echo CPU/msg (logging info, journal {journal})"
    if half_max is None or echo is None or echo.half_max is None:
        return _not_run(name)
    measured = (
        f"{half_max.server.cpu_ms_per_1k} vs {echo.half_max.server.cpu_ms_per_1k} CPU ms/1k"
        f" at {half_max.offered_rate:g}/s"
    )
    if echo.cpu_ratio is None:  # a window shorter than a few 10 ms clock ticks of CPU
        return _not_run(name, f"{measured}: too little CPU in the window to read")
    return _check(name, f"{echo.cpu_ratio:.2f}x ({measured})", echo.cpu_ratio <= CPU_RATIO)


def _one_terminal(closed_sweep: Sequence[ScenarioResult]) -> TargetCheck:
    name = f"one terminal alone (closed loop of 1): p50 <= {ONE_TERMINAL_P50_MS:g} ms end to end"
    result = next((r for r in closed_sweep if r.connections == 1), None)
    if result is None:
        return _not_run(name, "not run (--terminals has no 1)")
    measured = f"p50 {result.latency_ms.p50:.2f} ms, p99 {result.latency_ms.p99:.2f} ms"
    if result.switch_logged is not None:
        measured += f" (the switch's own p50 {result.switch_logged.latency_ms.p50:.2f} ms)"
    return _check(name, measured, result.latency_ms.p50 <= ONE_TERMINAL_P50_MS)


def _half_max(half_max: ScenarioResult | None, disk: DiskProbe | None) -> TargetCheck:
    name = (
        f"p99 at half the maximum rate <= {HALF_MAX_P99_MS:g} ms (end to end; windows without"
        " a disk stall)"
    )
    if half_max is None:
        return _not_run(name)
    parts = half_max.parts
    measured = f"at {half_max.offered_rate:g}/s: "
    if parts is None:
        p99: float | None = half_max.latency_ms.p99
        measured += f"{p99:.2f} ms over the window"
    else:
        p99 = parts.unstalled_latency_ms.p99 if parts.unstalled_latency_ms else None
        measured += (
            "every window had a journal commit over 20 ms"
            if p99 is None
            else f"{p99:.2f} ms over the {parts.unstalled} of {len(parts.parts)} windows without"
            f" a journal commit over {STALL_MS:g} ms"
        )
        measured += f" (per window p99 {_parts_line(parts)}; all {half_max.latency_ms.p99:.2f} ms)"
    logged = half_max.switch_logged
    if logged is not None:
        measured += (
            f"; the switch's own p99 {logged.latency_ms.p99:.2f} ms, waiting for the journal"
            f" p50 {logged.journal_ms.p50:g}, p99 {logged.journal_ms.p99:g} ms, for the bank"
            f" p50 {logged.bank_ms.p50:g}, p99 {logged.bank_ms.p99:g} ms; {_slow_commits(logged)}"
        )
    if disk is not None:
        measured += (
            f"; the disk alone, before the load: fsync p99.9 {disk.latency_ms.p99_9:g},"
            f" max {disk.latency_ms.max:g} ms"
        )
    if p99 is None:
        return TargetCheck(target=name, measured=measured, passed=None, result="n/a-stalled")
    return _check(name, measured, p99 <= HALF_MAX_P99_MS)


def _parts_line(parts: WindowParts) -> str:
    """Each part's p99, a stalled one marked with a star."""
    return ", ".join(
        f"{part.latency_ms.p99:.1f}{'*' if part.slow_commits else ''}" for part in parts.parts
    ) + (" ms, * a disk stall" if any(part.slow_commits for part in parts.parts) else " ms")


def _against_baseline(
    max_rate: MaxRate | None, baseline: SwitchResults | None, baseline_ref: str | None
) -> TargetCheck:
    name = f"maximum rate >= {BASELINE_MAX_RATE_RATIO:g}x the baseline's (same run)"
    if baseline is None:
        return _not_run(name, "no --baseline")
    if max_rate is None or baseline.max_rate is None or not baseline.max_rate.tps:
        return _not_run(name, "no maximum rate measured")
    ratio = max_rate.tps / baseline.max_rate.tps
    measured = (
        f"{ratio:.2f}x ({max_rate.tps:g}/s, {max_rate.source}, against {baseline_ref}'s"
        f" {baseline.max_rate.tps:g}/s, {baseline.max_rate.source})"
    )
    return _check(name, measured, ratio >= BASELINE_MAX_RATE_RATIO)


def _risk(risk: RiskOverhead | None) -> TargetCheck:
    name = f"CPU per sale with 200 risk rules in scope within {RISK_CPU_RATIO - 1:.0%} of none"
    if risk is None:
        return _check(name, "not measured", None)
    measured = (
        f"{risk.cpu_ms_per_1k_rules} vs {risk.cpu_ms_per_1k_none} CPU ms/1k at {risk.rate:g}/s,"
        f" {risk.rules} rules, {len(risk.none)} round(s)"
    )
    if risk.ratio is None:
        return _check(name, f"no ratio ({measured})", None)
    return _check(name, f"{risk.ratio - 1:+.1%} ({measured})", risk.ratio <= RISK_CPU_RATIO)


def _admin(admin: AdminOverhead | None) -> TargetCheck:
    name = (
        "CPU per sale with the admin interface on and scraped within"
        f" {ADMIN_CPU_RATIO - 1:.0%} of off"
    )
    if admin is None:
        return _not_run(name)
    scrapes = admin.scrapes
    rounds = len(admin.on)
    measured = (
        f"{admin.cpu_ms_per_1k_on} vs {admin.cpu_ms_per_1k_off} CPU ms/1k at {admin.rate:g}/s,"
        f" {rounds} window{'s' if rounds > 1 else ''} each, in turns; {scrapes.scrapes}"
        f" scrapes of /metrics ({scrapes.metrics_bytes:,} B) and /status"
        f" ({scrapes.status_bytes:,} B) every {scrapes.interval_s:g} s, {scrapes.failures} failed"
    )
    if admin.ratio is None:
        return _not_run(name, f"{measured}: too little CPU in the windows to read")
    passed = admin.ratio <= ADMIN_CPU_RATIO and scrapes.scrapes > 0 and not scrapes.failures
    return _check(name, f"{admin.ratio - 1:+.1%} ({measured})", passed)


def _settlement_checks(settlement: SettlementBench | None) -> list[TargetCheck]:
    size = (
        f"{SETTLEMENT_TRANSACTIONS:,} transactions over 4 banks and {SETTLEMENT_MERCHANTS:,}"
        " merchants"
    )
    names = (
        f"settlement of {size}: SettlementService.settle <= {SETTLEMENT_S:g} s end to end",
        f"settlement of {size}: peak RSS <= 1 GB ({SETTLEMENT_RSS_MB:,.0f} MiB)",
        "settlement: every category, payout line and reversal as injected",
    )
    if settlement is None:
        return [_not_run(name) for name in names]
    run = settlement.result
    size_line = (
        f"{run.transactions:,} transactions ({settlement.plan_transactions:,} over 4 banks,"
        f" {run.transactions - settlement.plan_transactions:,} on {settlement.corrupt_bank}),"
        f" {settlement.merchants:,} merchants"
    )
    full = (
        settlement.plan_transactions >= SETTLEMENT_TRANSACTIONS
        and settlement.merchants >= SETTLEMENT_MERCHANTS
    )
    found = ", ".join(f"{category} {count:,}" for category, count in run.categories.items())
    problems = "; ".join(run.problems[:3])
    return [
        _check(
            names[0],
            f"{run.seconds:g} s, {run.rate_per_s:,.0f} transactions/s, for {size_line}",
            run.seconds <= SETTLEMENT_S if full else None,
        ),
        _check(
            names[1],
            f"{run.peak_rss_mb:,.0f} MiB (VmHWM of the settling process) for {size_line}",
            run.peak_rss_mb <= SETTLEMENT_RSS_MB if full else None,
        ),
        _check(
            names[2],
            f"found {found}" + (f"; {problems}" if problems else "; as injected"),
            settlement.ok,
        ),
    ]


def _run_of(scaling: Scaling, journal: str, workers: int) -> ScalingRun | None:
    return next(
        (r for r in scaling.runs if r.setup.journal == journal and r.setup.workers == workers),
        None,
    )


def _busy(point: CpuPerSale) -> str:
    """How busy the machine was at a load point."""
    if point.machine_busy is None:
        return "machine load not read"
    return f"the machine {point.machine_busy:.0%} busy" + (
        f" ({point.measured_busy:.0%} the bench's processes)" if point.measured_busy else ""
    )


def scaling_checks(scaling: Scaling | None) -> list[TargetCheck]:
    """Issue #14's: PostgreSQL x 1's switch CPU per sale at most SQLite x 1's (at the same
    offered rate), and PostgreSQL x N's maximum rate at least 1.3x PostgreSQL x 1's."""
    workers = max((r.setup.workers for r in scaling.runs), default=2) if scaling else 2
    names = (
        "scaling: PostgreSQL x 1 switch CPU per sale <= SQLite x 1's (same offered rate)",
        f"scaling: PostgreSQL x {workers} maximum rate >= {SCALING_RATE_RATIO:g}x"
        " PostgreSQL x 1's (same run)",
    )
    if scaling is None:
        return [_not_run(name) for name in names]
    sqlite, pg1 = _run_of(scaling, "sqlite", 1), _run_of(scaling, "postgresql", 1)
    pgn = _run_of(scaling, "postgresql", workers)
    checks = []
    if sqlite is None or pg1 is None or sqlite.at_common is None or pg1.at_common is None:
        checks.append(_not_run(names[0]))
    else:
        mine, theirs = pg1.at_common, sqlite.at_common
        measured = (
            f"{_number(mine.switch_us, 0)} vs {_number(theirs.switch_us, 0)} µs at"
            f" {scaling.common_rate:g}/s (the database server's"
            f" {_number(mine.db_us, 0)} µs apart); at each one's maximum"
            f" {_number(pg1.at_max.switch_us, 0)} vs {_number(sqlite.at_max.switch_us, 0)} µs"
        )
        passed = None
        if mine.switch_us is not None and theirs.switch_us is not None:
            passed = mine.switch_us <= theirs.switch_us
            measured = f"{mine.switch_us / theirs.switch_us:.2f}x ({measured})"
        checks.append(_check(names[0], measured, passed))
    if pg1 is None or pgn is None or not pg1.max_rate.tps or pgn is pg1:
        checks.append(_not_run(names[1]))
    else:
        ratio = pgn.max_rate.tps / pg1.max_rate.tps
        measured = (
            f"{ratio:.2f}x ({pgn.max_rate.tps:g} vs {pg1.max_rate.tps:g}/s); at x {workers}'s"
            f" maximum {_busy(pgn.at_max)}, at x 1's {_busy(pg1.at_max)}"
        )
        checks.append(_check(names[1], measured, ratio >= SCALING_RATE_RATIO))
    return checks


def scaling_table(scaling: Scaling) -> str:
    """The scaling scenario's setups side by side: maximum rate, CPU per sale (µs of each
    side), the machine's load at the maximum and at the common rate."""
    headers = (
        "setup", "max/s", "switch us", "db us", "banks us", "gen us", "busy", "bench's",
        "common/s", "switch us", "db us", "busy", "p99 ms",
    )  # fmt: skip
    rows = []
    for run in scaling.runs:
        top, common = run.at_max, run.at_common

        def share(value: float | None) -> str:
            return "-" if value is None else f"{value:.0%}"

        row = [
            run.setup.name, _number(run.max_rate.tps, 0), _number(top.switch_us, 0),
            _number(top.db_us, 0), _number(top.banks_us, 0), _number(top.generators_us, 0),
            share(top.machine_busy), share(top.measured_busy),
        ]  # fmt: skip
        if common is not None and run.common is not None:
            row += [
                _number(common.offered_rate, 0), _number(common.switch_us, 0),
                _number(common.db_us, 0), share(common.machine_busy),
                _number(run.common.latency_ms.p99, 2),
            ]  # fmt: skip
        else:
            row += ["-"] * 5
        rows.append(row)
    return _table(headers, rows)


def scaling_lines(scaling: Scaling) -> str:
    checks = scaling_checks(scaling)
    lines = [
        f"scaling: {', '.join(r.setup.name for r in scaling.runs)} side by side, each its own"
        f" switch and banks, the load points in turns; {scaling.cpus} CPUs shared by the"
        " switches, the database server, the banks and the generators; load average"
        f" {scaling.load_average_before} before, {scaling.load_average_after} after",
        scaling_table(scaling),
        "  max/s: the open sweep's best goodput; us: CPU µs per sale at that point, of the"
        " switch (with workers: supervisor and workers), the PostgreSQL server (postmaster"
        " and backends), the bank simulators, the generators; busy: the whole machine's"
        " (others' processes too); bench's: of it, the processes measured; common/s: every"
        " setup at the same rate, CPU like for like",
    ]
    for check in checks:
        verdict = {"PASS": "met", "FAIL": "NOT met"}.get(check.result, check.result)
        lines.append(f"  {check.target}: {verdict}: {check.measured}")
    return "\n".join(lines) + "\n"


def compare(current: SwitchResults, baseline: SwitchResults) -> list[Comparison]:
    """Each scenario that ran on both versions, side by side."""
    theirs = {r.name: r for r in scenarios_of(baseline)}
    return [
        _comparison(mine, theirs[mine.name])
        for mine in scenarios_of(current)
        if mine.name in theirs
    ]


def _ratio(current: float | None, baseline: float | None) -> Ratio:
    ratio = round(current / baseline, 3) if current is not None and baseline else None
    return Ratio(current=current, baseline=baseline, ratio=ratio)


def _comparison(current: ScenarioResult, baseline: ScenarioResult) -> Comparison:
    return Comparison(
        name=current.name,
        offered_rate=_ratio(current.offered_rate, baseline.offered_rate),
        tps=_ratio(current.tps, baseline.tps),
        goodput_tps=_ratio(current.goodput_tps, baseline.goodput_tps),
        p50_ms=_ratio(current.latency_ms.p50, baseline.latency_ms.p50),
        p99_ms=_ratio(current.latency_ms.p99, baseline.latency_ms.p99),
        cpu_ms_per_1k=_ratio(current.server.cpu_ms_per_1k, baseline.server.cpu_ms_per_1k),
        rss_mb=_ratio(current.server.rss_mb_max, baseline.server.rss_mb_max),
    )


# -- tables --------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _codes(codes: dict[str, int]) -> str:
    return " ".join(f"{code}:{count}" for code, count in codes.items())


def _slow_commits(logged: SwitchLogged) -> str:
    """What the journal said of the disk during the window."""
    if not logged.slow_commits:
        return f"no journal commit over {STALL_MS:g} ms"
    commits = "commit" if logged.slow_commits == 1 else "commits"
    return (
        f"{logged.slow_commits} journal {commits} over {STALL_MS:g} ms, the longest"
        f" {logged.slowest_commit_ms:g} ms"
    )


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _journal_p99(result: ScenarioResult) -> float | None:
    logged = result.switch_logged
    return logged.journal_ms.p99 if logged is not None and logged.journal_ms.count else None


def _db_ms_per_1k(result: ScenarioResult) -> float | None:
    """The PostgreSQL server's CPU ms per 1,000 answers (None on SQLite)."""
    answers = round(result.tps * result.window_s)
    if result.db_cpu_s is None or not answers:
        return None
    return result.db_cpu_s * 1e6 / answers


def scenarios_of(results: SwitchResults, echo: EchoBaseline | None = None) -> list[ScenarioResult]:
    """A version's scenarios in the order they ran (the echo server's after overload)."""
    found: list[ScenarioResult] = [*results.closed_sweep, *results.open_sweep]
    for single in (results.half_max, results.online):
        if single is not None:
            found.append(single)
    if results.overload is not None:
        found.append(results.overload.result)
    if echo is not None:
        found.extend(r for r in (echo.closed, echo.half_max) if r is not None)
    if results.idle is not None:
        found.append(results.idle.result)
    found.extend(results.crowd)
    if results.slow_bank is not None:
        found.append(results.slow_bank.result)
    if results.busy_online is not None:
        busy = results.busy_online
        found.extend((busy.pos_alone, busy.pos_beside_online, busy.online))
    return found


BASELINE_MARK: Final = " @base"
"""A baseline row's name suffix in the scenario table."""


def paired_scenarios(report: Report) -> list[tuple[str, ScenarioResult]]:
    """The scenario table's rows: each current row followed by the baseline's row of the
    same name; a row only the baseline has comes after the baseline row before it."""
    rows: list[tuple[str, ScenarioResult]] = [
        (r.name, r) for r in scenarios_of(report, report.echo)
    ]
    if report.admin is not None:  # the current code only, each round's off beside its on
        for off, on in zip(report.admin.off, report.admin.on, strict=True):
            rows += [(off.name, off), (on.name, on)]
    if report.risk is not None:  # the current code only, each round's pair together
        for none, ruled in zip(report.risk.none, report.risk.with_rules, strict=True):
            rows += [(none.name, none), (ruled.name, ruled)]
        rows += [(theirs.name, theirs) for theirs in report.risk.baseline_rules]
    if report.scaling is not None:  # the current code only, each setup's rows together
        for run in report.scaling.runs:
            mark = f" @{run.setup.name}"
            points = [run.closed, *run.open_sweep, *([run.common] if run.common else [])]
            rows += [(point.name + mark, point) for point in points]
    if report.baseline is None:
        return rows
    for theirs in scenarios_of(report.baseline):
        names = [name for name, _ in rows]
        mine = names.index(theirs.name) if theirs.name in names else None
        if mine is None:  # after the last baseline row so far
            marked = [i for i, name in enumerate(names) if name.endswith(BASELINE_MARK)]
            mine = marked[-1] if marked else len(rows) - 1
        rows.insert(mine + 1, (theirs.name + BASELINE_MARK, theirs))
    return rows


def scenario_table(report: Report) -> str:
    headers = (
        "scenario", "conns", "offered/s", "tps", "good/s", "p50", "p90", "p99", "p99.9",
        "max ms", "sw p99", "jnl p99", "cpu ms/1k", "db ms/1k", "rss MB", "gen cpu", "codes",
    )  # fmt: skip
    rows = []
    for name, r in paired_scenarios(report):
        lat = r.latency_ms
        rows.append(
            (
                name,
                str(r.connections),
                _number(r.offered_rate, 0),
                _number(r.tps, 0),
                _number(r.goodput_tps, 0),
                _number(lat.p50, 2),
                _number(lat.p90, 2),
                _number(lat.p99, 2),
                _number(lat.p99_9, 2),
                _number(lat.max, 2),
                _number(r.switch_logged.latency_ms.p99 if r.switch_logged else None, 2),
                _number(_journal_p99(r), 2),
                _number(r.server.cpu_ms_per_1k, 0),
                _number(_db_ms_per_1k(r), 0),
                _number(r.server.rss_mb_max, 1),
                _number(r.generator.busiest_worker_cpu, 2),
                _codes(r.codes) + (f" not_sent:{r.not_sent}" if r.not_sent else ""),
            )
        )
    return _table(headers, rows)


COMPARED: Final = (
    ("tps", "tps", 0),
    ("good/s", "goodput_tps", 0),
    ("p50", "p50_ms", 2),
    ("p99", "p99_ms", 2),
    ("cpu ms/1k", "cpu_ms_per_1k", 0),
    ("rss MB", "rss_mb", 1),
)
"""The comparison table's measures: heading, Comparison field, digits."""


def comparison_table(comparisons: Sequence[Comparison]) -> str:
    headers = ["scenario", "offered/s"]
    for heading, _, _ in COMPARED:
        headers += [heading, "base", "x"]
    rows = []
    for c in comparisons:
        offered = c.offered_rate
        row = [
            c.name,
            _number(offered.current, 0)
            + ("" if offered.current == offered.baseline else f" | {_number(offered.baseline, 0)}"),
        ]
        for _, field, digits in COMPARED:
            ratio: Ratio = getattr(c, field)
            row += [
                _number(ratio.current, digits),
                _number(ratio.baseline, digits),
                "-" if ratio.ratio is None else f"{ratio.ratio:.2f}",
            ]
        rows.append(row)
    return _table(headers, rows)


def codec_table(codec: CodecReport) -> str:
    rows = []
    for dialect in codec.dialects:
        for op in [*dialect.operations, dialect.pair]:
            rows.append(
                (
                    dialect.dialect,
                    op.operation,
                    _number(op.ours_ns, 0),
                    _number(op.pyiso_ns, 0),
                    "-" if op.ratio is None else f"{op.ratio:.2f}x",
                )
            )
    return _table(("dialect", "operation", "ours ns/op", "pyiso8583 ns/op", "speed-up"), rows)


def targets_table(
    checks: Sequence[TargetCheck], baseline: Sequence[TargetCheck] | None = None
) -> str:
    """The targets judged on this run; with a baseline, its verdict on each beside."""
    if baseline is None:
        return _table(
            ("target", "measured", "result"), [(c.target, c.measured, c.result) for c in checks]
        )
    rows = [
        (c.target, c.measured, c.result, b.result) for c, b in zip(checks, baseline, strict=True)
    ]
    return _table(("target", "measured", "result", "baseline"), rows)


SHOWN_STEPS: Final = 6


def settlement_lines(settlement: SettlementBench) -> str:
    """The settlement scenario: its size, time, memory, and where the time went."""
    run = settlement.result
    injected = ", ".join(f"{kind} {count:,}" for kind, count in settlement.injected.items())
    phases = ", ".join(f"{phase.name} {phase.seconds:g} s" for phase in run.phases)
    slowest = sorted(run.steps, key=lambda step: step.seconds, reverse=True)[:SHOWN_STEPS]
    checks = "all as injected" if settlement.ok else "; ".join(run.problems)
    lines = [
        f"settlement: {run.transactions:,} transactions of {run.business_date} over"
        f" {', '.join(settlement.banks)} ({settlement.corrupt_bank}'s file corrupt),"
        f" {settlement.merchants:,} merchants, {run.clearing_records:,} clearing records;"
        f" injected {injected}",
        f"  built in {settlement.build_s:g} s, not timed (of which the journal, through its"
        f" own write path, {settlement.build_parts_s.get('journal', 0):g} s)",
        f"  SettlementService.settle: {run.seconds:g} s ({run.rate_per_s:,.0f} transactions/s),"
        f" peak RSS {run.peak_rss_mb:,.0f} MiB (VmHWM of its own process)",
        f"  of which: {phases}",
        "  slowest SQL steps: " + "; ".join(f"{s.seconds:g} s {s.step}" for s in slowest),
        f"  checks: {checks} (the next date, where the moved records are timing, settled in"
        f" {run.next_date_seconds} s)",
    ]
    return "\n".join(lines) + "\n"


def _version_line(report: Report) -> str:
    code = report.meta.code
    current = "current: the working tree"
    if code.sha is not None:
        current += f" at {code.sha[:12]}" + (
            " with uncommitted changes under switch/ or conf/" if code.dirty else ""
        )
    if report.baseline is None:
        return current + "\n"
    b = report.baseline
    line = f"{current}; baseline: {b.ref} = {b.sha[:12]} (its own tree, the same interpreter)"
    if b.dropped_config_keys:
        line += f"; config keys it does not know, left out: {', '.join(b.dropped_config_keys)}"
    return line + "\n"


def _busy_online_line(busy: BusyOnline, which: str) -> str:
    """POS throughput and latency alone and beside one busy online connection."""

    def pos(result: ScenarioResult) -> str:
        latency = result.latency_ms
        return (
            f"{result.tps:g}/s, median {_number(latency.p50)} ms, p99 {_number(latency.p99)} ms,"
            f" {result.codes.get('91', 0)} x 91"
        )

    online = busy.online
    return (
        f"busy online client{which}: {busy.terminals} POS terminals alone {pos(busy.pos_alone)};"
        f" beside 1 online connection {busy.online_depth} deep {pos(busy.pos_beside_online)}"
        f" (the online client {online.tps:g}/s, {online.codes.get('91', 0)} x 91)"
    )


def print_report(report: Report, out: TextIO) -> None:
    meta = report.meta
    out.write(
        f"\npayswitch bench ({meta.mode}), {meta.started_at} .. {meta.finished_at}; "
        f"{meta.cpus} CPUs, load {meta.load_average}; {meta.generators} generator process(es); "
        f"journal {meta.journal}; logging {meta.logging}\n"
    )
    out.write(_version_line(report) + "\n")
    out.write(scenario_table(report) + "\n")
    out.write(
        "\nlatency in ms, end to end at the terminal (open loop: from when the request was"
        " due); sw p99: the switch's own p99 from its txn log lines (frame read to answer);"
        " jnl p99: of that, waiting for the journal's commits (the disk and the trips around"
        " it), p99 over the"
        " transactions that went to a bank;"
        " cpu ms/1k: the process under test's CPU per 1,000 answers (a switch of workers:"
        " its supervisor's and workers' together); db ms/1k: the PostgreSQL server's"
        " (postmaster and backends); rss: its highest VmRSS"
        " in the window; gen cpu: the busiest generator process's CPU seconds per second."
    )
    if report.baseline is not None:
        out.write(f" A row ending in{BASELINE_MARK}: the baseline's, measured beside the above.")
    out.write("\n")
    if report.disk is not None:
        d, latency = report.disk, report.disk.latency_ms
        out.write(
            f"disk alone: {latency.count} writes + fsyncs of 4 KiB in the run dir over"
            f" {d.duration_s:g} s, before the load: p50 {latency.p50:g}, p99 {latency.p99:g},"
            f" p99.9 {latency.p99_9:g}, max {latency.max:g} ms; {d.stalls} over {STALL_MS:g} ms."
            " Every sale waits for two (durability sync).\n"
        )
    if report.max_rate is not None:
        out.write(f"maximum rate: {report.max_rate.tps:g}/s ({report.max_rate.source})")
        theirs = report.baseline.max_rate if report.baseline is not None else None
        if theirs is not None:
            out.write(f"; the baseline's {theirs.tps:g}/s ({theirs.source})")
        out.write("\n")
    if report.slow_bank is not None:
        s = report.slow_bank
        out.write(
            f"slow bank: {s.latency_ms:g} ms at {s.rate:g}/s over {s.links} links: Little's law"
            f" needs a window >= {s.required_window:g} per link; with the switch's own"
            f" {s.switch_allowance_ms:g} ms and Poisson bursts, window set to {s.window}"
            + (" (the same for the baseline)" if report.baseline is not None else "")
            + "\n"
        )
    if report.busy_online is not None:
        out.write(_busy_online_line(report.busy_online, "") + "\n")
        if report.baseline is not None and report.baseline.busy_online is not None:
            out.write(_busy_online_line(report.baseline.busy_online, " (baseline)") + "\n")
    if report.risk is not None:
        r = report.risk
        change = "-" if r.ratio is None else f"{r.ratio - 1:+.1%}"
        out.write(
            f"risk rules: CPU per 1,000 sales at {r.rate:g}/s with none"
            f" {_number(r.cpu_ms_per_1k_none, 0)} ms, with {r.rules} in scope"
            f" {_number(r.cpu_ms_per_1k_rules, 0)} ms ({change})"
            + (
                f"; the baseline with them {_number(r.cpu_ms_per_1k_baseline_rules, 0)} ms"
                f" (current {r.ratio_vs_baseline - 1:+.1%})"
                if r.ratio_vs_baseline is not None
                else ""
            )
            + "\n"
        )
    if report.admin is not None:
        a = report.admin
        change = "-" if a.ratio is None else f"{a.ratio - 1:+.1%}"
        out.write(
            f"admin interface: CPU per 1,000 sales at {a.rate:g}/s with [admin] off"
            f" {_number(a.cpu_ms_per_1k_off, 0)} ms, on and scraped every"
            f" {a.scrapes.interval_s:g} s {_number(a.cpu_ms_per_1k_on, 0)} ms ({change});"
            f" {a.scrapes.scrapes} scrapes, {a.scrapes.failures} failed\n"
        )
    if report.settlement is not None:
        out.write(settlement_lines(report.settlement))
    if report.scaling is not None:
        out.write(scaling_lines(report.scaling))
    if report.overload is not None and report.overload.result.server.rss_samples:
        samples = report.overload.result.server.rss_samples
        shown = ", ".join(f"{t:g}s {mb:.0f}" for t, mb in samples[:: max(1, len(samples) // 8)])
        out.write(f"overload RSS over time (MB): {shown}\n")
    if report.baseline is not None:
        out.write(
            f"\ncurrent against the baseline ({report.baseline.ref}), x = current / baseline"
            " (under 1 is less: better for latency, CPU and memory, worse for throughput);"
            " half_max and overload_2x run at each version's own maximum rate, every other"
            " point at the same load for both:\n"
        )
        out.write(comparison_table(report.comparison) + "\n")
    if report.codec is not None:
        out.write("\n" + codec_table(report.codec) + "\n")
        if report.codec.note:
            out.write(report.codec.note + "\n")
    baseline_targets = report.baseline.targets if report.baseline is not None else None
    out.write("\n" + targets_table(report.targets, baseline_targets) + "\n")


# -- files ---------------------------------------------------------------------------


def default_json_path() -> Path:
    return RESULTS_DIR / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"


def write_json(report: Report, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")
    return path


def write_png(report: Report, path: Path) -> Path | None:
    """Latency percentiles against offered load (the open sweep, half_max and overload);
    needs matplotlib (the ``bench`` extra). Returns None without it."""
    try:
        # The bench extra; mypy may be run without it installed.
        import matplotlib  # type: ignore[import-not-found,unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    points = sorted(
        (r for r in scenarios_of(report) if r.kind == "open" and r.target == "switch"
         and r.offered_rate and r.name != "slow_bank"),
        key=lambda r: r.offered_rate or 0.0,
    )  # fmt: skip
    if not points:
        return None
    figure, axes = plt.subplots(figsize=(8, 5))
    rates = [r.offered_rate or 0.0 for r in points]
    for label, attribute in (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99.9", "p99_9")):
        values = [getattr(r.latency_ms, attribute) for r in points]
        axes.plot(rates, values, marker="o", label=label)
    if report.max_rate is not None:
        maximum = report.max_rate.tps
        axes.axvline(maximum, linestyle="--", color="grey", label="maximum rate (goodput)")
    axes.set_xlabel("offered load (sales per second, Poisson arrivals)")
    axes.set_ylabel("latency at the terminal (ms)")
    axes.set_yscale("log")
    axes.set_title("payswitch: latency percentiles against offered load")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
