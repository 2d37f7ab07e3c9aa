"""The settlement scenario: a synthetic business date built, then settled by the switch's
own service, each in a process of its own.

The build (``python -m bench.synthetic_day``) is not timed: it writes the journal, the
banks' clearing files and the merchants file into the run dir. The settlement
(``python -m bench.settle_day``) runs in a fresh process, so the peak resident set it
reports (VmHWM, read just after ``SettlementService.settle`` returns) is the
settlement's and the interpreter's alone. The files it reads were just written, so
they are in the page cache, as a switch's own journal would be.
"""

from __future__ import annotations

import sys
import time
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
    run_dir: Path, plan: DayPlan, progress: ProgressLine
) -> SettlementBench:
    folder = run_dir / "settlement-day"
    progress.show(
        f"[settlement] building a day of {plan.transactions:,} transactions, "
        f"{plan.merchants:,} merchants (not timed)"
    )
    started = time.perf_counter()
    await _child(
        [
            "bench.synthetic_day", str(folder),
            "--transactions", str(plan.transactions),
            "--merchants", str(plan.merchants),
            "--fault-fraction", str(plan.fault_fraction),
            "--seed", str(plan.seed),
        ],
        "building the day",
    )  # fmt: skip
    build_s = time.perf_counter() - started
    day = load_day(folder)
    progress.show(f"[settlement] settling {day.transactions:,} transactions in a fresh process")
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
