"""A crash during settlement, shown by a test: a synthetic business date big enough that
settling it takes seconds (bench/synthetic_day.py), settled by the switch's own
SettlementService in a child process (``python -m bench.settle_day``), killed with
SIGKILL at random moments of its run, again and again on the same files, then run to
its end. Afterwards the payout and reconciliation files are byte-identical to those of
a reference settlement of an untouched copy of the same day, the ledger's totals and
balances are the reference's (nothing posted twice), every reversal decided is in the
journal's store-and-forward once, each record the switch never sent is in its journal
as bank_only, and no reversal order is left unhanded.

On each engine: a day on SQLite files, and one in a PostgreSQL database (the journal
and the settlement store in one, each copy of the day a copy of that database).

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

from bench.settle_day import operator_journal
from bench.synthetic_day import (
    DSN,
    DayPlan,
    SyntheticDay,
    build_day,
    journal_dsn,
    out_dir,
    settlement_store,
)
from tests.conftest import REPO
from tests.pg_server import PostgresServer
from tests.settle.settle_child import POINTS
from tests.store.engines import ENGINES

# Settlements run and killed as processes of their own: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

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
    store = settlement_store(folder)
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
    store = settlement_store(folder)
    store.open()
    try:
        ledger = (store.ledger_totals(), store.ledger_balances())
        pending = store.pending_reversal_orders()
    finally:
        store.close()
    journal = operator_journal(folder)
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


class Pristine:
    """The day as built, untouched: copied for each settlement of it."""

    def __init__(self, folder: Path, day: SyntheticDay, server: PostgresServer | None) -> None:
        self.folder = folder
        self.day = day
        self.server = server

    def copy(self, target: Path) -> None:
        """The day's folder, and on PostgreSQL its database, copied to ``target``."""
        shutil.copytree(self.folder, target)
        dsn = journal_dsn(self.folder)
        if dsn is not None:
            assert self.server is not None
            (target / DSN).write_text(self.server.create_database(template=dsn) + "\n")


@pytest.fixture(scope="module", params=ENGINES)
def pristine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    folder = tmp_path_factory.mktemp("settle-crash") / "pristine"
    server: PostgresServer | None = None
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")
    dsn = None if server is None else server.create_database()
    plan = DayPlan(transactions=TRANSACTIONS, merchants=MERCHANTS, seed=7)
    return Pristine(folder, build_day(folder, plan, dsn=dsn), server)


def test_settlement_killed_at_random_points_ends_as_if_never_killed(
    pristine: Pristine, tmp_path: Path
) -> None:
    day = pristine.day
    reference, crashed, stepped = tmp_path / "reference", tmp_path / "crashed", tmp_path / "stepped"
    for copy in (reference, crashed, stepped):
        pristine.copy(copy)
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
