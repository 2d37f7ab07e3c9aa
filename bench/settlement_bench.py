"""The settlement scenario: a synthetic business date built, then settled by the switch's
own service, each in a process of its own.

The build (``python -m bench.synthetic_day``) is not timed: it writes the journal, the
banks' clearing files and the merchants file into the run dir. The settlement
(``python -m bench.settle_day``) runs in a fresh process, so the peak resident set it
reports (VmHWM, read just after ``SettlementService.settle`` returns) is the
settlement's and the interpreter's alone. The files it reads were just written, so
they are in the page cache, as a switch's own journal would be.

On SQLite by default; given a DSN, the day is built in that PostgreSQL database and
settled there (the PostgreSQL journal and settlement store, as ``switch run`` uses them).
Standalone, ``python -m bench.settlement_bench --backend sqlite|postgresql|both`` runs
the scenario alone on each engine, PostgreSQL on a throw-away server of its own
(``switch/devtools/postgresql.py``, fsync on) unless ``--dsn`` names a database, and prints a
table of each engine's time and peak resident set.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import msgspec
import trio

from bench.model import SettlementBench
from bench.runconfig import REPO
from bench.services import ServiceFailed
from bench.settle_day import SettleRun
from bench.synthetic_day import DayPlan, load_day
from bench.versions import child_environment
from bench.workers import ProgressLine

TAIL_CHARS: Final = 3000


async def _child(argv: list[str], what: str) -> bytes:
    """Runs a bench module to its end; its stdout, or ServiceFailed with its stderr."""
    completed = await trio.run_process(
        [sys.executable, "-m", *argv],
        cwd=str(REPO),
        env=child_environment(REPO),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    if completed.returncode != 0:
        tail = completed.stderr.decode(errors="replace")[-TAIL_CHARS:]
        raise ServiceFailed(f"settlement: {what} exited {completed.returncode}:\n{tail}")
    return completed.stdout


async def run_settlement_bench(
    run_dir: Path, plan: DayPlan, progress: ProgressLine, *, dsn: str | None = None
) -> SettlementBench:
    """The scenario on SQLite, or with ``dsn`` in that (empty) PostgreSQL database."""
    folder = run_dir / ("settlement-day" if dsn is None else "settlement-day-postgresql")
    engine = "sqlite" if dsn is None else "postgresql"
    progress.show(
        f"[settlement] building a day of {plan.transactions:,} transactions, "
        f"{plan.merchants:,} merchants on {engine} (not timed)"
    )
    started = time.perf_counter()
    await _child(
        [
            "bench.synthetic_day", str(folder),
            "--transactions", str(plan.transactions),
            "--merchants", str(plan.merchants),
            "--fault-fraction", str(plan.fault_fraction),
            "--seed", str(plan.seed),
            *(["--dsn", dsn] if dsn is not None else []),
        ],
        "building the day",
    )  # fmt: skip
    build_s = time.perf_counter() - started
    day = load_day(folder)
    progress.show(
        f"[settlement] settling {day.transactions:,} transactions on {engine} in a fresh process"
    )
    output = await _child(["bench.settle_day", str(folder)], "settling the day")
    progress.done()
    result = msgspec.json.decode(output.splitlines()[-1], type=SettleRun)
    return SettlementBench(
        plan_transactions=plan.transactions,
        merchants=plan.merchants,
        fault_fraction=plan.fault_fraction,
        banks=day.banks,
        corrupt_bank=day.corrupt_bank,
        by_bank=day.by_bank,
        injected=day.counts,
        build_s=round(build_s, 2),
        build_parts_s=day.build_s,
        result=result,
        ok=result.ok,
    )


# -- standalone: the scenario alone, on each engine ---------------------------------------


@contextlib.contextmanager
def _database(dsn: str | None) -> Iterator[str]:
    """``dsn``, or a new database on a throw-away server (fsync on, as the journal
    bench's: a settlement's commit is durable)."""
    if dsn is not None:
        yield dsn
        return
    from switch.devtools.postgresql import running_server

    with running_server(fsync=True) as server:
        yield server.create_database()


def _table(benches: list[SettlementBench]) -> str:
    lines = [f"{'backend':<11}{'transactions':>13}{'settle s':>10}{'txn/s':>10}"
             f"{'peak RSS MB':>13}{'server MB':>11}{'build s':>9}  checks"]  # fmt: skip
    for bench in benches:
        result = bench.result
        server = "-" if result.server_peak_rss_mb is None else f"{result.server_peak_rss_mb:.0f}"
        lines.append(
            f"{result.backend:<11}{result.transactions:>13,}{result.seconds:>10.2f}"
            f"{result.rate_per_s:>10,.0f}{result.peak_rss_mb:>13.0f}{server:>11}"
            f"{bench.build_s:>9.1f}  {'ok' if bench.ok else 'FAILED'}"
        )
        for phase in result.phases:
            lines.append(f"    {phase.name:<60}{phase.seconds:>9.2f} s")
        for step in sorted(result.steps, key=lambda step: -step.seconds)[:STEPS_SHOWN]:
            lines.append(f"      {step.step:<72}{step.seconds:>7.2f} s")
        lines.extend(f"    problem: {problem}" for problem in result.problems)
    return "\n".join(lines)


STEPS_SHOWN: Final = 5
"""The slowest SQL steps of each settlement, in the table."""


def main(argv: Sequence[str] | None = None) -> int:
    default = DayPlan()
    parser = argparse.ArgumentParser(
        prog="python -m bench.settlement_bench",
        description="The settlement scenario alone: a synthetic day built, then settled "
        "by the switch's SettlementService in a fresh process, on each engine.",
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--transactions", type=int, default=default.transactions)
    parser.add_argument("--merchants", type=int, default=default.merchants)
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument("--dsn", help="an existing, empty PostgreSQL database (it is written)")
    parser.add_argument("--run-dir", type=Path, help="keep the days here (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="the results as JSON, not a table")
    options = parser.parse_args(argv)
    plan = DayPlan(transactions=options.transactions, merchants=options.merchants,
                   seed=options.seed)  # fmt: skip
    backends = ["sqlite", "postgresql"] if options.backend == "both" else [options.backend]
    progress = ProgressLine()
    benches: list[SettlementBench] = []
    with contextlib.ExitStack() as stack:
        run_dir = options.run_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="settlement-bench-"))
        )
        for backend in backends:
            if backend == "sqlite":
                benches.append(trio.run(run_settlement_bench, run_dir, plan, progress))
                continue
            with _database(options.dsn) as dsn:
                bench = functools.partial(run_settlement_bench, dsn=dsn)
                benches.append(trio.run(bench, run_dir, plan, progress))
    print(msgspec.json.encode(benches).decode() if options.json else _table(benches))
    return 0 if all(bench.ok for bench in benches) else 1


if __name__ == "__main__":
    sys.exit(main())
