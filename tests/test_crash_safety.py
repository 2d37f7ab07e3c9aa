"""Crash safety, shown by a test: the switch and a bank simulator as real processes, POS
terminals sending sustained load (tests/crash_load.py), the switch killed with SIGKILL
at random points and restarted, then stopped with SIGTERM under load and restarted once
more. The load ends with a burst of sales the bank never answers, which opens the
switch's circuit to the bank; their reversals must still be delivered. Afterwards:

1. every approval a terminal received is in the journal, approved, same auth code;
2. nothing is left 'sending', and everything that may have reached the bank without a
   final answer has its reversal delivered (none left pending or manual);
3. the bank's ledger (approved - reversed - voided - refunded, with undos) equals the
   journal's net, to the fen;
4. the bank approved at least every sale a terminal saw approved;

and the SIGTERM round exited 0, left nothing 'sending', cut nothing short at the bank,
and journaled no request it did not answer.

The same run with two workers on one PostgreSQL journal: each round kills either
worker (the other serves on, the supervisor restarts it and its recovery reverses what
it left in doubt), then SIGTERM drains both; the same invariants hold.

The seed is printed; ``CRASH_SEED=N`` replays the same kill points and traffic mix (the
timing of processes is not reproducible, so a replay is close, not exact).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest
import trio
from psycopg.rows import dict_row

from switch.store.rows import events_of
from tests.conftest import REPO
from tests.crash_load import LoadTerminal, Sent, SwitchGate, switch_head
from tests.store.engines import ENGINES

# The switch killed under load, as processes: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

TERMINALS = 16
KILL_ROUNDS = 4
BANK = "icbc"
LINKS = 2
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
SAF_DRAIN_TIMEOUT_S = 20.0
STOPPED_BEFORE_ANSWER = "switch stopped before the bank answered"
"""switchboard.py's detail for a transaction cancelled at the bank by shutdown."""


def _config_text(tmp_path: Path, bank_port: int, dsn: str | None = None, workers: int = 1) -> str:
    return (
        switch_head(tmp_path, dsn, workers)
        + f"""
[saf]
poll_interval_s = 0.1
backoff_min_s = 0.05
backoff_max_s = 0.5
max_attempts = 50

[banks.{BANK}]
host = "127.0.0.1"
port = {bank_port}
links = {LINKS}
window = 32
issuer_timeout_s = 0.5
reconnect_min_s = 0.05
reconnect_max_s = 0.5
circuit_open_s = 1.0
simulate = false

[banks.{BANK}.sim]
latency_ms = 30

[[routes]]
prefix = "622202"
bank = "{BANK}"
"""
    )


def _open_log(path: Path) -> IO[bytes]:
    return path.open("wb")


class Child:
    """A `python -m switch ...` process whose JSON log lines go to a file."""

    def __init__(self, process: trio.Process, log: Path) -> None:
        self.process = process
        self.log = log

    @classmethod
    async def start(cls, log: Path, *args: str) -> Child:
        env = {k: v for k, v in os.environ.items() if k != "SWITCH_CARD_KEYS"}
        env["PYTHONUNBUFFERED"] = "1"
        with _open_log(log) as out:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "switch", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=env,
            )
        return cls(process, log)

    async def events(self, event: str) -> list[dict[str, Any]]:
        text = await trio.Path(self.log).read_bytes()
        # The last line may be half written (several processes write this log).
        complete = text[: text.rfind(b"\n") + 1]
        return [
            record
            for line in complete.splitlines()
            if line.startswith(b"{") and (record := json.loads(line)).get("event") == event
        ]

    async def wait_for(self, event: str, count: int = 1) -> dict[str, Any]:
        with trio.fail_after(START_TIMEOUT_S):
            while True:
                seen = await self.events(event)
                if len(seen) >= count:
                    return seen[count - 1]
                if self.process.returncode is not None:
                    tail = (await trio.Path(self.log).read_text())[-3000:]
                    raise AssertionError(f"{self.log.name}: exited before {event}:\n{tail}")
                await trio.sleep(0.02)

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        with trio.fail_after(STOP_TIMEOUT_S):
            return await self.process.wait()


async def _start_switch(
    config: Path, tmp_path: Path, life: int, workers: int = 1
) -> tuple[Child, int]:
    """A switch on the journal (a supervisor and its workers), up with its bank links
    signed on; and its POS port."""
    switch = await Child.start(tmp_path / f"switch-{life}.log", "run", "--config", str(config))
    started = await switch.wait_for("switch_started", count=workers)
    await switch.wait_for("link_signed_on", count=max(LINKS, workers))
    return switch, int(started["pos_port"])


class _Journal:
    """The journal's tables, read straight (SQLite's file, or the PostgreSQL database
    when ``dsn`` is set), rows as dicts; ``?`` placeholders on both."""

    def __init__(self, tmp_path: Path, dsn: str | None) -> None:
        self.dsn = dsn
        self._sqlite: sqlite3.Connection | None = None
        self._postgresql: psycopg.Connection[dict[str, Any]] | None = None
        if dsn is None:
            self._sqlite = sqlite3.connect(tmp_path / "journal.sqlite3", isolation_level=None)
            self._sqlite.execute("PRAGMA busy_timeout = 10000")
            self._sqlite.row_factory = sqlite3.Row
        else:
            self._postgresql = psycopg.connect(dsn, autocommit=True, row_factory=dict_row)

    def execute(self, sql: str, *args: object) -> list[dict[str, Any]]:
        if self._postgresql is not None:
            return self._postgresql.execute(sql.replace("?", "%s"), args).fetchall()
        assert self._sqlite is not None
        return [dict(row) for row in self._sqlite.execute(sql, args)]

    def close(self) -> None:
        for connection in (self._sqlite, self._postgresql):
            if connection is not None:
                connection.close()


def _started_then_approved(row: dict[str, Any]) -> bool:
    """Its history (the row's events) begins with its start and holds its approval."""
    history = [(state, code) for _, state, code, _ in events_of(row["events"])]
    return history[:1] == [("sending", None)] and ("approved", "00") in history


def _count(db: _Journal, sql: str, *args: object) -> int:
    return int(next(iter(db.execute(sql, *args)[0].values())))


def _undelivered(tmp_path: Path, dsn: str | None) -> list[tuple[str, str, int, str]]:
    db = _Journal(tmp_path, dsn)
    try:
        return [
            (row["rrn"], row["state"], row["attempts"], row["last_result"])
            for row in db.execute(
                "SELECT rrn, state, attempts, last_result FROM saf WHERE state != 'delivered'"
            )
        ]
    finally:
        db.close()


def _journal_net(db: _Journal) -> int:
    """Money moved per the journal, as the bank's ledger counts it: approved sales not
    reversed or voided, less approved refunds not reversed (a refund of a reversed sale
    is undone with it at the bank)."""
    sales = _count(
        db,
        "SELECT coalesce(sum(amount), 0) FROM txn WHERE kind = 'sale' AND state = 'approved' "
        "AND NOT reversed AND NOT voided",
    )
    refunds = _count(
        db,
        "SELECT coalesce(sum(r.amount), 0) FROM txn r JOIN txn s ON s.rrn = r.original_rrn "
        "WHERE r.kind = 'refund' AND r.state = 'approved' AND NOT r.reversed "
        "AND NOT s.reversed",
    )
    return sales - refunds


@pytest.fixture(params=ENGINES)
def journal_dsn(request: pytest.FixtureRequest) -> str | None:
    """None for the SQLite journal; a database of its own on the PostgreSQL server."""
    if request.param == "postgresql":
        dsn: str = request.getfixturevalue("postgres_dsn")
        return dsn
    return None


class _Run:
    """One crash run: the bank, the switch's life (a new one at each start), the load's
    gate, and every process started, to be killed if the run fails."""

    def __init__(self, tmp_path: Path, dsn: str | None, workers: int) -> None:
        self.tmp_path = tmp_path
        self.dsn = dsn
        self.workers = workers
        self.config = tmp_path / "switch.toml"
        self.totals_file = tmp_path / "totals.json"
        self.children: list[Child] = []
        self.gate = SwitchGate()
        self.life = 0
        self.switch: Child
        self.bank: Child

    async def start_bank(self) -> None:
        bank_config = self.tmp_path / "bank.toml"
        bank_config.write_text(_config_text(self.tmp_path, 0))
        self.bank = await Child.start(
            self.tmp_path / "bank.log", "sim-bank", "--config", str(bank_config),
            "--bank", BANK, "--port", "0", "--totals-file", str(self.totals_file),
        )  # fmt: skip
        self.children.append(self.bank)
        bank_port = int((await self.bank.wait_for("simulator_started"))["port"])
        self.config.write_text(_config_text(self.tmp_path, bank_port, self.dsn, self.workers))

    async def start_switch(self) -> None:
        self.life += 1
        self.switch, pos_port = await _start_switch(
            self.config, self.tmp_path, self.life, self.workers
        )
        self.children.append(self.switch)
        self.gate.opened(pos_port)

    async def stop_gracefully(self) -> int:
        """SIGTERM under load: what is in flight is finished, the exit is 0 and nothing
        is left 'sending'. Returns the epoch that ended."""
        self.gate.closing()
        epoch = self.gate.epoch
        switch = self.switch
        assert await switch.stop(signal.SIGTERM) == 0, switch.log.read_text()[-3000:]
        if self.workers > 1:
            stopped = await switch.events("worker_stopped")
            assert sorted((r["worker"], r["status"]) for r in stopped) == [
                (index, 0) for index in range(self.workers)
            ]
        db = _Journal(self.tmp_path, self.dsn)
        try:
            in_doubt = _count(db, "SELECT count(*) FROM txn WHERE state = 'sending'")
        finally:
            db.close()
        assert in_doubt == 0, f"{in_doubt} transactions left 'sending' by SIGTERM"
        return epoch

    async def drain_and_stop(self) -> None:
        """Every queued reversal delivered (or given up on), then both stopped."""
        with trio.move_on_after(SAF_DRAIN_TIMEOUT_S):
            while undelivered := _undelivered(self.tmp_path, self.dsn):
                if any(state == "manual" for _, state, _, _ in undelivered):
                    break
                await trio.sleep(0.1)
        assert not undelivered, f"reversals not delivered: {undelivered[:10]}"
        assert await self.switch.stop(signal.SIGTERM) == 0, self.switch.log.read_text()[-3000:]
        assert await self.bank.stop(signal.SIGTERM) == 0, self.bank.log.read_text()[-3000:]

    async def kill_all(self) -> None:
        for child in self.children:
            if child.process.returncode is None:
                child.process.kill()
                with trio.move_on_after(5):
                    await child.process.wait()


KillRound = Callable[[_Run, random.Random, int], Awaitable[None]]


async def _crash_run(tmp_path: Path, dsn: str | None, *, workers: int, kill: KillRound) -> None:
    """Terminals keep selling while ``kill`` strikes KILL_ROUNDS times at random points;
    then SIGTERM under load and one more start; then each terminal's last sale (the
    bank falls silent) and its reversals; then the invariants."""
    seed = int(os.environ.get("CRASH_SEED") or random.randrange(1 << 32))
    print(f"crash-safety seed: CRASH_SEED={seed}")
    rng = random.Random(seed)
    run = _Run(tmp_path, dsn, workers)
    stop = trio.Event()
    terminals = [LoadTerminal(i, random.Random(rng.random())) for i in range(TERMINALS)]
    graceful_epoch = 0
    try:
        await run.start_bank()
        await run.start_switch()
        with trio.fail_after(90):
            async with trio.open_nursery() as load:
                for terminal in terminals:
                    load.start_soon(terminal.run, run.gate, stop)
                for round_ in range(1, KILL_ROUNDS + 1):
                    await trio.sleep(rng.uniform(0.3, 1.5))
                    await kill(run, rng, round_)
                await trio.sleep(rng.uniform(0.3, 1.5))
                graceful_epoch = await run.stop_gracefully()
                await run.start_switch()
                await trio.sleep(rng.uniform(0.3, 1.0))
                stop.set()  # each terminal: one last sale ending in 68, then its reversals
            await run.drain_and_stop()
    finally:
        await run.kill_all()

    ledger = json.loads(run.totals_file.read_bytes())
    sent = [s for terminal in terminals for s in terminal.sent]
    lives = run.life if workers == 1 else run.life + KILL_ROUNDS  # a killed worker's too
    _check(_Journal(tmp_path, dsn), sent, ledger, graceful_epoch, lives)


async def _kill_the_switch(run: _Run, rng: random.Random, round_: int) -> None:
    run.gate.closing()
    run.switch.process.kill()
    with trio.fail_after(STOP_TIMEOUT_S):
        await run.switch.process.wait()
    await run.start_switch()


async def test_kills_and_restarts_under_load_lose_no_money(
    tmp_path: Path, journal_dsn: str | None
) -> None:
    await _crash_run(tmp_path, journal_dsn, workers=1, kill=_kill_the_switch)


WORKERS = 2


async def _kill_a_worker(run: _Run, rng: random.Random, round_: int) -> None:
    """SIGKILL of either worker; the port stays open (the other serves on) while the
    supervisor restarts it and its recovery reverses what it left in doubt."""
    switch = run.switch
    pids = {r["worker"]: r["pid"] for r in await switch.events("worker_started")}
    victim = rng.randrange(WORKERS)
    os.kill(pids[victim], signal.SIGKILL)
    print(f"round {round_}: killed worker {victim}")
    await switch.wait_for("worker_started", count=WORKERS + round_)
    await switch.wait_for("switch_started", count=WORKERS + round_)
    run.gate.opened(run.gate.port)  # same port; what is sent from now on is apart


async def test_workers_killed_under_load_on_a_shared_journal_lose_no_money(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """Two workers on one PostgreSQL journal, either killed at each round; then SIGTERM
    drains both and a new supervisor serves the rest. The same invariants."""
    await _crash_run(tmp_path, postgres_dsn, workers=WORKERS, kill=_kill_a_worker)


def _check(
    db: _Journal, sent: list[Sent], ledger: dict[str, int], graceful_epoch: int, lives: int
) -> None:
    try:
        _check_journal(db, sent, ledger, graceful_epoch, lives)
    finally:
        db.close()


def _check_journal(
    db: _Journal,
    sent: list[Sent],
    ledger: dict[str, int],
    graceful_epoch: int,
    lives: int,
) -> None:
    rows = {row["rrn"]: row for row in db.execute("SELECT * FROM txn")}
    saf = {row["rrn"]: row for row in db.execute("SELECT * FROM saf")}
    answered = [s for s in sent if s.code is not None]
    lost = [s for s in sent if s.code is None]
    codes = Counter((s.kind, s.code) for s in answered)
    net = _journal_net(db)
    print(
        f"switch lives: {lives}; requests sent: {len(sent)}, unanswered: {len(lost)}; "
        f"answers: {dict(sorted(codes.items(), key=str))}"
    )
    print(
        f"journal: {len(rows)} txn rows, states {Counter(r['state'] for r in rows.values())}, "
        f"reversed {sum(r['reversed'] for r in rows.values())}, saf rows {len(saf)}; net {net}"
    )
    print(f"bank ledger: {ledger}")

    # 1. Every approval a terminal received is in the journal, approved, with its auth
    # code, and stands (the terminal never asked for it to be reversed).
    problems = []
    for s in answered:
        if s.code != "00" or s.kind == "reversal":
            continue
        row = rows.get(s.rrn or "")
        if row is None:
            problems.append(f"{s}: not in the journal")
        elif (row["state"], row["auth_code"], row["kind"], row["amount"], row["reversed"]) != (
            "approved", s.auth_code, s.kind, s.amount, 0,
        ):  # fmt: skip
            problems.append(f"{s}: journal has {dict(row)}")
        elif not _started_then_approved(row):  # its history, in its row, committed with it
            problems.append(f"{s}: its history is {events_of(row['events'])}")
    assert not problems, "approvals received but not journaled as such:\n" + "\n".join(
        problems[:10]
    )

    # 2. Nothing is left in doubt; everything that may have reached the bank without a
    # final answer has its reversal delivered.
    assert [r["rrn"] for r in rows.values() if r["state"] == "sending"] == []
    assert [(r, s["state"]) for r, s in saf.items() if s["state"] != "delivered"] == []
    no_reversal = [
        rrn
        for rrn, row in rows.items()
        if (row["state"] == "no_answer" or row["reversed"]) and rrn not in saf
    ]
    assert no_reversal == [], f"reversed or unanswered without a queued reversal: {no_reversal}"
    assert all(row["reversed"] for rrn, row in rows.items() if row["state"] == "no_answer")
    timed_out = [s for s in answered if s.kind == "sale" and s.code == "68"]
    assert timed_out, "no sale timed out: the run reversed nothing the bank did not answer"
    assert all(s.rrn in saf for s in timed_out)
    assert len(saf) >= len(timed_out) > 0
    assert ledger["reversals"] + ledger["unmatched_reversals"] <= len(saf)

    # The graceful round lost nothing: what its switch read, it answered.
    journaled = "SELECT count(*) FROM txn WHERE terminal_id = ? AND stan = ? AND request_mti = ?"
    unanswered_by_graceful = [
        s
        for s in lost
        if s.epoch == graceful_epoch
        and s.kind != "reversal"
        and _count(db, journaled, s.terminal_id, f"{s.stan:06d}", s.mti)
    ]
    assert unanswered_by_graceful == [], "SIGTERM journaled requests it never answered"
    cut_short = [
        rrn
        for rrn, row in rows.items()
        if any(detail == STOPPED_BEFORE_ANSWER for *_, detail in events_of(row["events"]))
    ]
    assert cut_short == [], "SIGTERM cut transactions short at the bank within the grace period"

    # 3. The bank's ledger and the journal agree to the fen.
    assert net == ledger["net"], f"journal net {net} != bank net {ledger['net']}"

    # 4. The bank approved at least every sale a terminal saw approved.
    received = sum(1 for s in answered if s.kind == "sale" and s.code == "00")
    assert ledger["approvals"] >= received > 0
