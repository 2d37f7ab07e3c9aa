"""The bench command: ``python -m bench`` (full run) and ``python -m bench --short``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import trio

from bench.report import default_json_path, print_report, write_json, write_png
from bench.scenarios import SCENARIOS, SHORT, Interrupted, Options, run_bench
from bench.services import ServiceFailed
from bench.versions import BaselineError
from bench.workers import ProgressLine, WorkerFailed

FULL = Options()


def _numbers(kind: Callable[[str], float]) -> Callable[[str], tuple[float, ...]]:
    """An argparse type: a comma-separated list of ``kind``."""

    def parse(text: str) -> tuple[float, ...]:
        try:
            return tuple(kind(part) for part in text.split(",") if part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from None

    return parse


def _scenarios(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    return chosen


# Options that override a field of Options: (flag, Options field, argparse type, help).
OVERRIDES: list[tuple[str, str, Callable[[str], Any], str]] = [
    (
        "--scenarios",
        "scenarios",
        _scenarios,
        f"comma-separated subset of: {', '.join(SCENARIOS)} (default: all but scaling, "
        "which needs PostgreSQL); 'open' also runs half_max; 'echo' compares at the "
        "switch's half_max rate",
    ),
    ("--duration", "duration_s", float, f"seconds measured per load point ({FULL.duration_s:g})"),
    ("--warmup", "warmup_s", float, f"seconds before each measurement ({FULL.warmup_s:g})"),
    (
        "--overload-duration",
        "overload_duration_s",
        float,
        f"seconds measured at twice the maximum rate ({FULL.overload_duration_s:g})",
    ),
    (
        "--terminals",
        "terminals",
        _numbers(int),
        "closed-loop sweep ({})".format(",".join(map(str, FULL.terminals))),
    ),
    (
        "--open-fractions",
        "open_fractions",
        _numbers(float),
        "open-loop sweep: offered rates as fractions of the closed loop's best ({})".format(
            ",".join(f"{f:g}" for f in FULL.open_fractions)
        ),
    ),
    (
        "--open-extra-points",
        "open_extra_points",
        int,
        f"further open-loop points, each 1.25x the last, while none saturated "
        f"({FULL.open_extra_points})",
    ),
    ("--max-rate", "max_rate", float, "use this maximum rate (per second): no open sweep"),
    ("--generators", "generators", int, f"load-generator processes ({FULL.generators})"),
    (
        "--workers",
        "switch_workers",
        int,
        f"the switch's worker processes, [switch] workers ({FULL.switch_workers}); more than 1"
        " needs --journal postgresql; the scaling scenario's third setup is PostgreSQL x"
        " max(2, N)",
    ),
    (
        "--journal",
        "journal",
        str,
        f"the switches' journal engine ({FULL.journal}); postgresql: a database of its own for"
        " each switch, on a throw-away server of the run's (fsync on) unless --dsn names one",
    ),
    (
        "--dsn",
        "dsn",
        str,
        "a PostgreSQL server for the journals (--journal postgresql, the scaling scenario):"
        " the bench creates a database per switch there (and drops them at the end)",
    ),
    (
        "--idle-connections",
        "idle_connections",
        int,
        f"idle terminals ({FULL.idle_connections})",
    ),
    (
        "--crowd-terminals",
        "crowd_terminals",
        _numbers(int),
        "closed loops beyond the switch's cap, on a fresh switch ({})".format(
            ",".join(map(str, FULL.crowd_terminals))
        ),
    ),
    (
        "--bank-latency-ms",
        "slow_bank_latency_ms",
        float,
        f"the slow bank's latency ({FULL.slow_bank_latency_ms:g})",
    ),
    (
        "--busy-online-terminals",
        "busy_online_terminals",
        int,
        f"busy-online: POS terminals in the closed loop ({FULL.busy_online_terminals})",
    ),
    (
        "--busy-online-depth",
        "busy_online_depth",
        int,
        f"busy-online: requests the online connection keeps in flight"
        f" ({FULL.busy_online_depth})",
    ),
    (
        "--busy-online-max-in-flight",
        "busy_online_max_in_flight",
        int,
        "busy-online: the switches' [switch] max_in_flight (its default)",
    ),
    (
        "--slow-bank-rate",
        "slow_bank_rate",
        float,
        "the slow bank scenario's rate (half the maximum, at most 1000/s)",
    ),
    (
        "--baseline",
        "baseline",
        str,
        "a git revision of this repository (sha, HEAD~3, a branch): every switch scenario "
        "also runs on that commit's switch, interleaved, and the report gives current / "
        "baseline",
    ),
    (
        "--settlement-transactions",
        "settlement_transactions",
        int,
        f"the settlement scenario's day: transactions over its 4 banks "
        f"({FULL.settlement_transactions:,})",
    ),
    (
        "--settlement-merchants",
        "settlement_merchants",
        int,
        f"the settlement scenario's merchants ({FULL.settlement_merchants:,})",
    ),
    (
        "--journal-durability",
        "journal_durability",
        str,
        "the switch's [journal] durability: sync (as in production) or async",
    ),
]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the payment switch as separate processes over loopback TCP: "
        "closed- and open-loop POS load, overload at twice the maximum rate, pipelined "
        "online load, 10,000 idle terminals, a 50 ms bank, an echo-server baseline and "
        "codec micro-benchmarks, and with --baseline the same on another commit's switch, "
        "interleaved. Prints tables and the targets; writes a JSON report "
        "(and a PNG with the bench extra) under bench/results/. See bench/README.md. "
        "Numbers in parentheses are the full run's defaults.",
    )
    p.add_argument(
        "--short",
        action="store_true",
        help="a few seconds of tiny loads: checks that the harness works (the tests run "
        "this, also with --baseline HEAD); its numbers mean little",
    )
    choices_of = {"--journal-durability": ("sync", "async"), "--journal": ("sqlite", "postgresql")}
    for flag, _, kind, help_text in OVERRIDES:
        choices = choices_of.get(flag)
        metavar = "REF" if flag == "--baseline" else None
        p.add_argument(flag, type=kind, choices=choices, metavar=metavar, help=help_text)
    p.add_argument("--output", type=Path, help="JSON report path (bench/results/bench-<time>.json)")
    p.add_argument(
        "--png",
        type=Path,
        help="latency-vs-load chart path (beside the JSON); needs the bench extra: "
        "pip install -e '.[bench]'",
    )
    p.add_argument(
        "--keep-run-dir",
        action="store_true",
        help="keep the temporary run dir: generated configs, every process's log",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    return p


def options_from(args: argparse.Namespace) -> Options:
    base = SHORT if args.short else FULL
    chosen: dict[str, Any] = {}
    for flag, field, _, _ in OVERRIDES:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            chosen[field] = value
    if args.keep_run_dir:
        chosen["keep_run_dir"] = True
    if args.quiet:
        chosen["quiet"] = True
    return msgspec.structs.replace(base, **chosen)


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser()
    args = arguments.parse_args(argv)
    options = options_from(args)
    if options.switch_workers < 1:
        arguments.error("--workers: at least 1")
    if options.switch_workers > 1 and options.journal != "postgresql":
        arguments.error(
            f"--workers {options.switch_workers} needs --journal postgresql: a SQLite journal"
            " belongs to one process"
        )
    progress = ProgressLine(quiet=options.quiet)
    failure: str | None = None
    try:
        report = trio.run(run_bench, options, progress)
    except* (Interrupted, KeyboardInterrupt):
        failure = "interrupted"
    except* (ServiceFailed, WorkerFailed, BaselineError) as group:
        failure = "\n".join(str(error) for error in _leaves(group))
    if failure is not None:
        progress.done()
        print(f"bench: {failure}", file=sys.stderr)
        print("bench: every process it started has been stopped", file=sys.stderr)
        return 130 if failure == "interrupted" else 1
    print_report(report, sys.stdout)
    json_path = write_json(report, args.output or default_json_path())
    print(f"\nJSON report: {json_path}")
    png_path = write_png(report, args.png or json_path.with_suffix(".png"))
    if png_path is not None:
        print(f"latency-vs-load chart: {png_path}")
    return 0
