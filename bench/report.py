"""Reading a run: the targets it checks, the tables it prints, the files it writes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

import msgspec

from bench.codec_bench import CodecReport
from bench.disk_probe import STALL_MS, DiskProbe
from bench.model import (
    EchoBaseline,
    IdleConnections,
    Overload,
    ScenarioResult,
    SwitchLogged,
    TargetCheck,
)

if TYPE_CHECKING:
    from bench.model import Report

RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"

CODEC_SPEEDUP: Final = 5.0
CPU_RATIO: Final = 3.0
HALF_MAX_P99_MS: Final = 5.0
OVERLOAD_GOODPUT: Final = 0.90
OVERLOAD_P99_MS: Final = 50.0
OVERLOAD_RSS_RATIO: Final = 1.20
IDLE_RSS_MB: Final = 300.0


def _check(target: str, measured: str, passed: bool | None) -> TargetCheck:
    return TargetCheck(target=target, measured=measured, passed=passed)


def _not_run(target: str, why: str = "not run") -> TargetCheck:
    return TargetCheck(target=target, measured=why, passed=None)


def check_targets(
    *,
    codec: CodecReport | None,
    half_max: ScenarioResult | None,
    echo: EchoBaseline | None,
    overload: Overload | None,
    idle: IdleConnections | None,
    journal: str,
    disk: DiskProbe | None = None,
) -> list[TargetCheck]:
    checks: list[TargetCheck] = []

    name = f"codec cup-pos decode sale + encode response >= {CODEC_SPEEDUP:g}x pyiso8583"
    pos = next((d for d in codec.dialects if d.dialect == "cup-pos"), None) if codec else None
    if pos is None or pos.pair.ratio is None:
        checks.append(_not_run(name, codec.note if codec else "not run"))
    else:
        measured = f"{pos.pair.ratio:.2f}x ({pos.pair.ours_ns:.0f} vs {pos.pair.pyiso_ns:.0f} ns)"
        checks.append(_check(name, measured, pos.pair.ratio >= CODEC_SPEEDUP))

    name = f"switch CPU/sale <= {CPU_RATIO:g}x echo CPU/msg (logging info, journal {journal})"
    if echo is None or echo.cpu_ratio is None or half_max is None or echo.half_max is None:
        checks.append(_not_run(name))
    else:
        measured = (
            f"{echo.cpu_ratio:.2f}x ({half_max.server.cpu_ms_per_1k} vs "
            f"{echo.half_max.server.cpu_ms_per_1k} CPU ms/1k at {half_max.offered_rate:g}/s)"
        )
        checks.append(_check(name, measured, echo.cpu_ratio <= CPU_RATIO))

    name = f"p99 at half the maximum rate, zero-latency bank <= {HALF_MAX_P99_MS:g} ms (end to end)"
    if half_max is None:
        checks.append(_not_run(name))
    else:
        p99 = half_max.latency_ms.p99
        measured = f"{p99:.2f} ms at {half_max.offered_rate:g}/s"
        logged = half_max.switch_logged
        if logged is not None:
            measured += (
                f" (switch's own p99 {logged.latency_ms.p99:.2f} ms; waiting for the journal"
                f" p50 {logged.journal_ms.p50:g}, p99 {logged.journal_ms.p99:g} ms, for the"
                f" bank p50 {logged.bank_ms.p50:g}, p99 {logged.bank_ms.p99:g} ms;"
                f" {_slow_commits(logged)})"
            )
        if disk is not None:
            measured += (
                f"; the disk alone, before the load: fsync p99.9 {disk.latency_ms.p99_9:g},"
                f" max {disk.latency_ms.max:g} ms"
            )
        checks.append(_check(name, measured, p99 <= HALF_MAX_P99_MS))

    checks.extend(_overload_checks(overload))

    name = f"10,000 idle terminal connections: switch RSS <= {IDLE_RSS_MB:g} MB"
    if idle is None:
        checks.append(_not_run(name))
    else:
        measured = (
            f"{idle.rss_mb:.1f} MB with {idle.connected} of {idle.connections} connected"
            f" ({idle.rss_mb_before:.1f} MB before)"
        )
        passed = idle.rss_mb <= IDLE_RSS_MB and idle.connected >= 10_000
        checks.append(_check(name, measured, passed if idle.connections >= 10_000 else None))
    return checks


def _overload_checks(overload: Overload | None) -> list[TargetCheck]:
    names = (
        f"overload 2x: goodput >= {OVERLOAD_GOODPUT:.0%} of the maximum",
        "overload 2x: every excess request answered (91), none timed out",
        f"overload 2x: p99 of accepted <= {OVERLOAD_P99_MS:g} ms",
        f"overload 2x: RSS within {OVERLOAD_RSS_RATIO - 1:.0%} of RSS at the maximum rate",
    )
    if overload is None:
        return [_not_run(name) for name in names]
    result = overload.result
    accepted = result.latency_approved_ms
    excess = f"{overload.answered_91} answered 91, {overload.unanswered} unanswered"
    disk = f" ({_slow_commits(result.switch_logged)})" if result.switch_logged else ""
    if result.not_sent:
        excess += f", {result.not_sent} not sent (every terminal busy)"
    rss = (
        _not_run(names[3], "no reference RSS (no open sweep)")
        if overload.rss_ratio is None
        else _check(
            names[3],
            f"{overload.rss_ratio:.2f}x ({result.server.rss_mb_max:.1f} vs "
            f"{overload.rss_reference_mb:.1f} MB, with {result.connections} vs "
            f"{overload.rss_reference_terminals} terminals connected)",
            overload.rss_ratio <= OVERLOAD_RSS_RATIO,
        )
    )
    return [
        _check(
            names[0],
            f"{overload.goodput_ratio:.0%} ({result.goodput_tps:g} of "
            f"{overload.max_rate_tps:g}/s; offered {result.offered_rate:g}/s){disk}",
            overload.goodput_ratio >= OVERLOAD_GOODPUT,
        ),
        _check(names[1], excess, overload.unanswered == 0 and result.not_sent == 0),
        _check(
            names[2],
            f"{accepted.p99:.2f} ms of {accepted.count} approved{disk}"
            if accepted.count
            else "none of the requests sent in the window was approved",
            accepted.count > 0 and accepted.p99 <= OVERLOAD_P99_MS,
        ),
        rss,
    ]


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


def scenarios_of(report: Report) -> list[ScenarioResult]:
    found: list[ScenarioResult] = [*report.closed_sweep, *report.open_sweep]
    for single in (report.half_max, report.online):
        if single is not None:
            found.append(single)
    if report.overload is not None:
        found.append(report.overload.result)
    if report.echo is not None:
        found.extend(r for r in (report.echo.closed, report.echo.half_max) if r is not None)
    if report.idle is not None:
        found.append(report.idle.result)
    found.extend(report.crowd)
    if report.slow_bank is not None:
        found.append(report.slow_bank.result)
    return found


def scenario_table(report: Report) -> str:
    headers = (
        "scenario", "conns", "offered/s", "tps", "good/s", "p50", "p90", "p99", "p99.9",
        "max ms", "sw p99", "jnl p99", "cpu ms/1k", "rss MB", "gen cpu", "codes",
    )  # fmt: skip
    rows = []
    for r in scenarios_of(report):
        lat = r.latency_ms
        rows.append(
            (
                r.name,
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
                _number(r.server.rss_mb_max, 1),
                _number(r.generator.busiest_worker_cpu, 2),
                _codes(r.codes) + (f" not_sent:{r.not_sent}" if r.not_sent else ""),
            )
        )
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


def targets_table(checks: Sequence[TargetCheck]) -> str:
    verdict = {True: "PASS", False: "FAIL", None: "n/a"}
    rows = [(c.target, c.measured, verdict[c.passed]) for c in checks]
    return _table(("target", "measured", "result"), rows)


def print_report(report: Report, out: TextIO) -> None:
    meta = report.meta
    out.write(
        f"\npayswitch bench ({meta.mode}), {meta.started_at} .. {meta.finished_at}; "
        f"{meta.cpus} CPUs, load {meta.load_average}; {meta.workers} generator process(es); "
        f"journal {meta.journal}; logging {meta.logging}\n\n"
    )
    out.write(scenario_table(report) + "\n")
    out.write(
        "\nlatency in ms, end to end at the terminal (open loop: from when the request was"
        " due); sw p99: the switch's own p99 from its txn log lines (frame read to answer);"
        " jnl p99: of that, waiting for the journal's commits (the disk and the trips around"
        " it), p99 over the"
        " transactions that went to a bank;"
        " cpu ms/1k: the process under test's CPU per 1,000 answers; rss: its highest VmRSS"
        " in the window; gen cpu: the busiest generator process's CPU seconds per second.\n"
    )
    if report.disk is not None:
        d, latency = report.disk, report.disk.latency_ms
        out.write(
            f"disk (baseline): {latency.count} writes + fsyncs of 4 KiB in the run dir over"
            f" {d.duration_s:g} s, alone: p50 {latency.p50:g}, p99 {latency.p99:g},"
            f" p99.9 {latency.p99_9:g}, max {latency.max:g} ms; {d.stalls} over {STALL_MS:g} ms."
            " Every sale waits for two (durability sync).\n"
        )
    if report.max_rate is not None:
        out.write(f"maximum rate: {report.max_rate.tps:g}/s ({report.max_rate.source})\n")
    if report.slow_bank is not None:
        s = report.slow_bank
        out.write(
            f"slow bank: {s.latency_ms:g} ms at {s.rate:g}/s over {s.links} links: Little's law"
            f" needs a window >= {s.required_window:g} per link; with the switch's own"
            f" {s.switch_allowance_ms:g} ms and Poisson bursts, window set to {s.window}\n"
        )
    if report.overload is not None and report.overload.result.server.rss_samples:
        samples = report.overload.result.server.rss_samples
        shown = ", ".join(f"{t:g}s {mb:.0f}" for t, mb in samples[:: max(1, len(samples) // 8)])
        out.write(f"overload RSS over time (MB): {shown}\n")
    if report.codec is not None:
        out.write("\n" + codec_table(report.codec) + "\n")
        if report.codec.note:
            out.write(report.codec.note + "\n")
    out.write("\n" + targets_table(report.targets) + "\n")


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
