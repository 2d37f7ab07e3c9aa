"""A crash during settlement, shown by a test: a synthetic business date big enough that
settling it takes seconds (bench/synthetic_day.py), settled by the switch's own
SettlementService in a child process (``python -m bench.settle_day``), killed with
SIGKILL at random moments of its run, again and again on the same files, then run to
its end. Afterwards the payout and reconciliation files are byte-identical to those of
a reference settlement of an untouched copy of the same day, the ledger's totals and
balances are the reference's (nothing posted twice), every reversal decided is in the
journal's store-and-forward once, each record the switch never sent is in its journal
as bank_only, and no reversal order is left unhanded.

The seed is printed; ``SETTLE_CRASH_SEED=N`` replays the same kill delays (the timing
of processes is not reproducible, so a replay is close, not exact).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.synthetic_day import (
    DayPlan,
    SyntheticDay,
    build_day,
    journal_path,
    out_dir,
    store_path,
)
from switch.store.sqlite import SqliteOperatorJournal
from switch.store.sqlite.settlement import SqliteSettlementStore
from tests.conftest import REPO
from tests.settle.settle_child import POINTS

TRANSACTIONS = 120_000
MERCHANTS = 2_000
KILLS = 5
CHILD_TIMEOUT_S = 120.0


def settle_in_child(folder: Path, *options: str) -> subprocess.Popen[bytes]:
    """The switch's settlement of the day, as its own process (tests/settle/settle_child)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.settle.settle_child", str(folder), *options],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": path},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def run_child(folder: Path, *options: str, kill_after_s: float | None = None) -> bool:
    """Runs a child to its end (True), or until SIGKILL: sent after ``kill_after_s``, or
    its own (``--die-after``); False when it was killed."""
    child = settle_in_child(folder, *options)
    try:
        _, stderr = child.communicate(timeout=kill_after_s or CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        if kill_after_s is None:
            raise
        child.send_signal(signal.SIGKILL)
        _, stderr = child.communicate(timeout=CHILD_TIMEOUT_S)
    if child.returncode == -signal.SIGKILL:
        return False
    assert child.returncode == 0, stderr.decode(errors="replace")[-3000:]
    return True


def settle_to_the_end(folder: Path) -> float:
    """Settles the day in a child to its end; the seconds it took, start to exit."""
    started = time.monotonic()
    assert run_child(folder)
    return time.monotonic() - started


def state(folder: Path, day: SyntheticDay, finished: bool) -> str:
    """Where a settlement stopped: files taken, settled or not, files written, reversals."""
    if finished:
        return "it had finished"
    store = SqliteSettlementStore(store_path(folder), journal_path(folder))
    store.open()
    try:
        files = len(store.clearing_files(day.business_date))
        settled = store.is_settled(day.business_date)
        pending = len(store.pending_reversal_orders())
    finally:
        store.close()
    written = sorted(path.name for path in out_dir(folder).iterdir())
    return (
        f"{files} of {len(day.banks)} files read, {'settled' if settled else 'not settled'},"
        f" out: {', '.join(written) or 'nothing'}, {pending} reversal orders not handed over"
    )


def outcome(folder: Path, day: SyntheticDay) -> dict[str, Any]:
    """What a settlement leaves that must not depend on crashes: its files, the ledger,
    the reversals queued in the journal and the orders not handed over."""
    store = SqliteSettlementStore(store_path(folder), journal_path(folder))
    store.open()
    try:
        ledger = (store.ledger_totals(), store.ledger_balances())
        pending = store.pending_reversal_orders()
    finally:
        store.close()
    journal = SqliteOperatorJournal(journal_path(folder))
    try:
        queued = sorted((v.rrn, v.bank, v.reason) for v in journal.reversals(bank=None, state=None))
        never_sent = [journal.transaction(rrn).transaction.state for rrn in day.injected["unknown"]]
    finally:
        journal.close()
    return {
        "files": {path.name: path.read_bytes() for path in sorted(out_dir(folder).iterdir())},
        "ledger": ledger,
        "pending_orders": pending,
        "saf": queued,
        "never_sent": never_sent,
    }


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyntheticDay]:
    folder = tmp_path_factory.mktemp("settle-crash") / "pristine"
    day = build_day(folder, DayPlan(transactions=TRANSACTIONS, merchants=MERCHANTS, seed=7))
    return folder, day


def test_settlement_killed_at_random_points_ends_as_if_never_killed(
    pristine: tuple[Path, SyntheticDay], tmp_path: Path
) -> None:
    source, day = pristine
    reference, crashed, stepped = tmp_path / "reference", tmp_path / "crashed", tmp_path / "stepped"
    for copy in (reference, crashed, stepped):
        shutil.copytree(source, copy)
    settle_s = settle_to_the_end(reference)
    expected = outcome(reference, day)
    assert expected["files"] and expected["ledger"][0][0] == expected["ledger"][0][1] > 0
    assert expected["saf"] and set(expected["never_sent"]) == {"bank_only"}

    seed = int(os.environ.get("SETTLE_CRASH_SEED") or random.randrange(1 << 32))
    print(f"settlement crash seed: SETTLE_CRASH_SEED={seed}; one settlement: {settle_s:.2f} s")
    rng = random.Random(seed)
    story = []
    for _ in range(KILLS):
        delay = rng.uniform(0.05, settle_s)
        finished = run_child(crashed, kill_after_s=delay)
        story.append(f"killed after {delay:.2f} s: {state(crashed, day, finished)}")
    # The narrow moments between the settlement's own commits, which random delays
    # seldom hit, one after another on a copy of its own: each child kills itself there.
    for point in POINTS:
        finished = run_child(stepped, "--die-after", point)
        story.append(f"died after {point}: {state(stepped, day, finished)}")
    print("\n".join(story))
    settle_to_the_end(crashed)
    settle_to_the_end(stepped)

    context = f"(SETTLE_CRASH_SEED={seed}; {'; '.join(story)})"
    for folder in (crashed, stepped):
        found = outcome(folder, day)
        assert found["files"].keys() == expected["files"].keys(), f"{folder.name} {context}"
        for name, data in expected["files"].items():
            assert found["files"][name] == data, f"{folder.name}: {name} differs {context}"
        assert found["ledger"] == expected["ledger"], f"{folder.name}: the ledger {context}"
        assert found["saf"] == expected["saf"], f"{folder.name}: the reversals queued {context}"
        assert found["never_sent"] == expected["never_sent"], f"{folder.name} {context}"
        assert found["pending_orders"] == [], f"{folder.name} {context}"
