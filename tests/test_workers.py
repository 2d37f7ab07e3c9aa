"""``switch run --workers N``: a supervisor and N worker processes on one set of ports.

Real processes, real ports. Workers need a journal they share (PostgreSQL); on SQLite
``switch run`` refuses them. The supervisor's mechanics (shared ports, the link spread,
RRNs, restarts, the drain) are tested on a shared PostgreSQL journal and, where the
journal does not matter, on SQLite through the test-only switch
SQLITE_WORKERS_FOR_TESTS, each worker on a journal file of its own. What crosses
workers through the journal is tests/test_workers_shared.py's.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from switch.core.workers import SQLITE_WORKERS_FOR_TESTS
from switch.net.clients import PosClient
from switch.terminal import Terminal
from tests.net.helpers import PAN_ICBC, POS_CODEC
from tests.store.engines import ENGINES
from tests.switch_process import (
    Process,
    assert_refused_in_one_line,
    demo_config,
    one_bank_config,
    run_switch,
    start_sim_bank,
    start_switch,
    write_config,
)

# Every test here starts switch processes: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

TEST_ONLY_SQLITE = {SQLITE_WORKERS_FOR_TESTS: "1"}
SQLITE_REFUSAL = 'switch.workers = 2 needs [journal] backend = "postgresql"'
_stans = itertools.count(1)


def test_workers_on_sqlite_are_refused_in_one_line_naming_the_key(tmp_path: Path) -> None:
    settings = demo_config(tmp_path)
    config = write_config(tmp_path, settings)
    result = run_switch(["run", "--config", str(config), "--workers", "2"])
    assert_refused_in_one_line(result, SQLITE_REFUSAL, "set workers = 1")
    # From the file as well, and for a worker started by hand.
    settings["switch"]["workers"] = 2
    config = write_config(tmp_path, settings)
    assert_refused_in_one_line(run_switch(["run", "--config", str(config)]), SQLITE_REFUSAL)
    by_hand = run_switch(["run", "--config", str(config), "--worker-index", "1"])
    assert_refused_in_one_line(by_hand, SQLITE_REFUSAL)
    assert not (tmp_path / "journal.sqlite3").exists()
    assert not (tmp_path / "worker-1").exists()
    check = run_switch(["config", "check", "--config", str(config)])
    assert check.returncode == 2
    problems = check.stderr.splitlines()
    assert SQLITE_REFUSAL in problems[0], problems
    # The demo simulates its banks in the switch's process: N workers cannot.
    assert sum("simulate = true" in line for line in problems) == 4, problems


async def test_one_worker_is_the_one_process_switch(tmp_path: Path) -> None:
    """--workers 1 over a file that says 2: one process as ever (no supervisor, log
    lines without a worker, exclusive ports), and nothing refused."""
    settings = demo_config(tmp_path)
    settings["switch"]["workers"] = 2
    config = write_config(tmp_path, settings)
    assert run_switch(["run", "--config", str(config), "--workers", "0"]).returncode == 2
    switch = await start_switch(config, args=["--workers", "1"])
    try:
        started = await switch.wait_for_event("switch_started")
        assert "worker" not in started
        with socket.socket() as beside:  # no SO_REUSEPORT: nobody may listen beside it
            beside.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                beside.bind(("127.0.0.1", int(started["pos_port"])))
            except OSError:
                pass
            else:
                raise AssertionError("a one-process switch shared its POS port")
        client = await PosClient.connect(
            "127.0.0.1", int(started["pos_port"]), POS_CODEC, Terminal()
        )
        assert (await _sale(client))[39] == "00"
        await client.aclose()
    finally:
        assert await switch.stop() == 0, switch.output()
    assert switch.events("supervisor_started") == []
    assert not (tmp_path / "worker-0").exists()


async def _sale(client: PosClient) -> dict[int, object]:
    with trio.fail_after(10):
        response = await client.request(client.terminal.sale(next(_stans), PAN_ICBC, 1000))
    return dict(response.fields)


def _worker_of(switch: Process, client: PosClient, after: int = 0) -> int | None:
    """Which worker served ``client``'s connection (its canonical lines name the peer)."""
    peer = f"127.0.0.1:{client.stream.socket.getsockname()[1]}"
    for record in switch.records()[after:]:
        if record.get("event") == "txn" and record.get("peer") == peer:
            return int(record["worker"])
    return None


async def _connect_to_each_worker(
    switch: Process, port: int, workers: int, *, after: int = 0
) -> dict[int, list[PosClient]]:
    """Connections (each with one approved sale) until every worker holds some: the
    kernel spreads them over the workers' listeners by their source port."""
    held: dict[int, list[PosClient]] = {index: [] for index in range(workers)}
    with trio.fail_after(20):
        while not all(len(clients) >= 2 for clients in held.values()):
            client = await PosClient.connect("127.0.0.1", port, POS_CODEC, Terminal())
            assert (await _sale(client))[39] == "00"
            worker = _worker_of(switch, client, after)
            assert worker is not None
            held[worker].append(client)
    return held


def _worker_events(switch: Process, event: str, worker: int) -> list[dict[str, Any]]:
    return [record for record in switch.events(event) if record.get("worker") == worker]


@pytest.fixture(params=ENGINES)
def journal_of_workers(request: pytest.FixtureRequest) -> tuple[dict[str, Any], dict[str, str]]:
    """The workers' journal settings, and the environment they need: one PostgreSQL
    database they share, or (the test-only switch) a SQLite file each."""
    if request.param == "postgresql":
        return {"backend": "postgresql", "dsn": request.getfixturevalue("postgres_dsn")}, {}
    return {}, TEST_ONLY_SQLITE


async def test_two_workers_share_the_ports_survive_a_kill_and_drain_on_sigterm(
    tmp_path: Path, journal_of_workers: tuple[dict[str, Any], dict[str, str]]
) -> None:
    journal, env = journal_of_workers
    sim_settings = demo_config(tmp_path)
    sim_settings["banks"]["icbc"]["sim"] = {"latency_ms": 100.0}
    sim, bank_port = await start_sim_bank(write_config(tmp_path, sim_settings, "sim.toml"))
    settings = one_bank_config(tmp_path, bank_port)
    settings["banks"]["icbc"]["links"] = 3  # worker 0 gets 2, worker 1 gets 1
    settings["journal"].update(journal)
    config = write_config(tmp_path, settings)
    switch = await start_switch(config, args=["--workers", "2"], env=env)
    try:
        started = await switch.wait_for_event("supervisor_started")
        await switch.wait_for_event("switch_started", count=2)
        await switch.wait_for_event("link_signed_on", count=3)
        port = int(started["pos_port"])
        assert {r["worker"] for r in switch.events("switch_started")} == {0, 1}
        assert {r["pos_port"] for r in switch.events("switch_started")} == {port}
        assert len(_worker_events(switch, "link_signed_on", 0)) == 2
        assert len(_worker_events(switch, "link_signed_on", 1)) == 1
        assert [r["worker"] for r in switch.events("admin_listening")] == [0]
        pids = {r["worker"]: r["pid"] for r in switch.events("worker_started")}
        held = await _connect_to_each_worker(switch, port, 2)

        # Worker 0's terminals keep selling while worker 1 is killed and restarted.
        failures: list[str] = []
        approved = 0

        async def keep_selling(client: PosClient) -> None:
            nonlocal approved
            while True:
                try:
                    fields = await _sale(client)
                except Exception as exc:
                    failures.append(repr(exc))
                    return
                if fields[39] != "00":
                    failures.append(f"code {fields[39]}")
                approved += 1

        before_kill = len(switch.records())
        async with trio.open_nursery() as load:
            for client in held[0]:
                load.start_soon(keep_selling, client)
            await trio.sleep(0.3)
            os.kill(pids[1], signal.SIGKILL)
            died = await switch.wait_for_event("worker_died")
            assert (died["worker"], died["pid"]) == (1, pids[1])
            assert died["reason"] == "killed by SIGKILL"
            restarted = await switch.wait_for(
                lambda r: r.get("event") == "worker_started" and r.get("restart") is True
            )
            assert restarted["worker"] == 1 and restarted["pid"] != pids[1]
            await switch.wait_for_event("switch_started", count=3)
            await trio.sleep(0.3)
            load.cancel_scope.cancel()
        assert failures == []
        assert approved >= 2 * len(held[0])
        # The killed worker's own terminals lost their connections; the new one serves.
        for client in held[1]:
            try:
                await _sale(client)
            except (EOFError, trio.BrokenResourceError):
                continue
            raise AssertionError("a connection of the killed worker still answered")
        again = await _connect_to_each_worker(switch, port, 2, after=before_kill)
        assert len(sim.events("bank_sim_link_connected")) == 4  # 2 + 1, and 1 again

        # SIGHUP reaches every worker; the file read again is what each runs already
        # (the supervisor's port and count, the worker's links): nothing to restart.
        switch.process.send_signal(signal.SIGHUP)
        await switch.wait_for_event("config_reloaded", count=2)
        assert {r["worker"] for r in switch.events("config_reloaded")} == {0, 1}
        assert {r["version"] for r in switch.events("config_reloaded")} == {1}  # no change
        assert switch.events("config_reload_refused") == []

        # RRNs: worker 0's are even, worker 1's odd: never the same across workers.
        rrns = {r["rrn"]: r["worker"] for r in switch.events("txn") if r["code"] == "00"}
        assert {int(rrn[4:]) % 2 == worker for rrn, worker in rrns.items()} == {True}

        # SIGTERM: each worker finishes what is in flight (the bank takes 100 ms), then
        # the supervisor exits 0.
        in_flight = [clients[0] for clients in again.values()]
        for client in in_flight:
            await client.send(client.terminal.sale(next(_stans), PAN_ICBC, 1000))
        await trio.sleep(0.03)
        switch.process.send_signal(signal.SIGTERM)
        for client in in_flight:
            with trio.fail_after(10):
                _, answer = await client.receive()
            assert dict(answer.fields)[39] == "00"
        with trio.fail_after(30):
            assert await switch.process.wait() == 0, switch.output()
        stopped = switch.events("worker_stopped")
        assert sorted((r["worker"], r["status"]) for r in stopped) == [(0, 0), (1, 0)]
        assert len(switch.events("switch_stopped")) == 2
        assert switch.events("supervisor_stopped")[0]["restarts"] == 1
        assert switch.stderr_path.read_text() == ""
        for clients in (*held.values(), *again.values()):
            for client in clients:
                await client.aclose()
    finally:
        if switch.process.poll() is None:
            switch.process.kill()
        assert await sim.stop() == 0, sim.output()


async def test_a_worker_refusing_its_first_start_stops_the_switch(tmp_path: Path) -> None:
    """Worker 0 cannot have its admin port: a restart would refuse again, so the
    supervisor drains the other worker and exits 2, the worker's line on stderr."""
    sim, bank_port = await start_sim_bank(write_config(tmp_path, demo_config(tmp_path), "sim.toml"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = one_bank_config(tmp_path, bank_port)
        settings["admin"]["port"] = taken.getsockname()[1]
        config = write_config(tmp_path, settings)
        switch = await start_switch(config, args=["--workers", "2"], env=TEST_ONLY_SQLITE)
        try:
            with trio.fail_after(30):
                assert await switch.process.wait() == 2, switch.output()
        finally:
            if switch.process.poll() is None:
                switch.process.kill()
            assert await sim.stop() == 0, sim.output()
    refused = switch.events("worker_refused")
    assert [r["worker"] for r in refused] == [0]
    assert "[admin] port" in switch.stderr_path.read_text()
    assert switch.events("worker_died") == []


def _gone(pid: int) -> bool:
    """Ended (a zombie no one has reaped yet counts: it serves nothing)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


THREAD_IDLE_S = 2.0
SHORT_THREAD_IDLE = (
    sys.executable, "-c",
    "import runpy, sys, trio._core._thread_cache as cache\n"
    "assert cache.IDLE_TIMEOUT == 10, 'trio: no 10 s IDLE_TIMEOUT to cut'\n"
    f"cache.IDLE_TIMEOUT = {THREAD_IDLE_S}\n"
    "sys.argv = sys.argv[3:]\n"
    "runpy.run_module('switch', run_name='__main__', alter_sys=True)",
)  # fmt: skip
"""A wrapper for ``python -m switch ...``: the same command, with trio's thread cache
ending a thread idle for THREAD_IDLE_S instead of 10 s (its own module constant)."""


async def _two_workers(tmp_path: Path, wrapper: Sequence[str] = ()) -> tuple[Process, Process]:
    sim, bank_port = await start_sim_bank(write_config(tmp_path, demo_config(tmp_path), "sim.toml"))
    config = write_config(tmp_path, one_bank_config(tmp_path, bank_port))
    switch = await start_switch(
        config, args=["--workers", "2"], env=TEST_ONLY_SQLITE, wrapper=wrapper
    )
    await switch.wait_for_event("switch_started", count=2)
    return sim, switch


async def test_sigint_drains_the_workers_too(tmp_path: Path) -> None:
    sim, switch = await _two_workers(tmp_path)
    try:
        switch.process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await switch.process.wait() == 0, switch.output()
        assert switch.events("supervisor_draining")[0]["signal"] == "SIGINT"
        assert len(switch.events("switch_stopped")) == 2
    finally:
        if switch.process.poll() is None:
            switch.process.kill()
        assert await sim.stop() == 0, sim.output()


async def test_workers_end_with_their_supervisor_however_it_ends(tmp_path: Path) -> None:
    """SIGKILL of the supervisor: each worker sends itself SIGTERM (it drains and
    stops), so none is left serving without a supervisor."""
    sim, switch = await _two_workers(tmp_path)
    pids = [r["pid"] for r in switch.events("worker_started")]
    try:
        switch.process.kill()
        await switch.process.wait()
        with trio.fail_after(30):
            while not all(_gone(pid) for pid in pids):
                await trio.sleep(0.05)
        assert len(switch.events("switch_stopped")) == 2
    finally:
        for pid in pids:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        assert await sim.stop() == 0, sim.output()


async def test_workers_serve_on_after_the_thread_that_started_them_ends(
    tmp_path: Path,
) -> None:
    """trio forks a worker in a thread of its cache, which ends after 10 s idle: a
    worker must not take that for its supervisor's end (PR_SET_PDEATHSIG did, and every
    worker drained 10 s after it started). The supervisor here runs with trio's idle
    timeout cut to THREAD_IDLE_S, so that the forking thread ends within the wait."""
    sim, switch = await _two_workers(tmp_path, wrapper=SHORT_THREAD_IDLE)
    try:
        await trio.sleep(THREAD_IDLE_S + 2)  # the forking thread has ended by now
        assert switch.events("signal_received") == [], switch.output()
        assert switch.events("worker_died") == [], switch.output()
        assert switch.process.poll() is None
        assert await switch.stop() == 0, switch.output()
    finally:
        if switch.process.poll() is None:
            switch.process.kill()
        assert await sim.stop() == 0, sim.output()


def test_a_port_in_use_refuses_the_supervisor_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = one_bank_config(tmp_path, 9)  # never reached
        settings["online"]["port"] = port
        result = subprocess_run_workers(write_config(tmp_path, settings))
    assert_refused_in_one_line(result, "[online]", f"port {port}", "is in use")
    assert not (tmp_path / "worker-0").exists()


def subprocess_run_workers(config: Path) -> subprocess.CompletedProcess[str]:
    return run_switch(["run", "--config", str(config), "--workers", "2"], env=TEST_ONLY_SQLITE)


async def test_a_worker_that_keeps_dying_is_restarted_later_each_time(tmp_path: Path) -> None:
    sim, switch = await _two_workers(tmp_path)
    try:
        for attempt, backoff in enumerate((0.5, 1.0, 2.0), start=1):
            pid = [r for r in switch.events("worker_started") if r["worker"] == 1][-1]["pid"]
            await switch.wait_for_event("switch_started", count=1 + attempt)  # it serves
            os.kill(pid, signal.SIGKILL)
            died = await switch.wait_for_event("worker_died", count=attempt)
            assert (died["pid"], died["restart_in_s"]) == (pid, backoff)
            await switch.wait_for_event("worker_started", count=2 + attempt)
        assert await switch.stop() == 0, switch.output()
        assert switch.events("supervisor_stopped")[0]["restarts"] == 3
        assert all(r["worker"] == 1 for r in switch.events("worker_died"))
    finally:
        if switch.process.poll() is None:
            switch.process.kill()
        assert await sim.stop() == 0, sim.output()


async def test_workers_and_a_restarted_one_read_the_supervisors_simulated_clock(
    tmp_path: Path,
) -> None:
    """``--clock`` with ``--workers``: every worker, a restarted one too, is on the
    supervisor's clock (a worker that counted from its own start would be behind it by
    its start's delay times the speed: minutes here)."""
    sim, bank_port = await start_sim_bank(write_config(tmp_path, demo_config(tmp_path), "sim.toml"))
    config = write_config(tmp_path, one_bank_config(tmp_path, bank_port))
    clock = ["--clock", "2027-01-31T10:00:00+08:00", "--clock-speed", "60"]
    switch = await start_switch(config, args=["--workers", "2", *clock], env=TEST_ONLY_SQLITE)
    try:
        started = await switch.wait_for_event("supervisor_started")
        await switch.wait_for_event("switch_started", count=2)
        assert {r["clock"] for r in switch.events("switch_started")} == {
            "simulated from 2027-01-31T02:00:00+00:00 at 60x"
        }
        pids = {r["worker"]: r["pid"] for r in switch.events("worker_started")}
        await trio.sleep(2)  # two business minutes
        os.kill(pids[1], signal.SIGKILL)
        await switch.wait_for(
            lambda r: r.get("event") == "worker_started" and r.get("restart") is True
        )
        await switch.wait_for_event("switch_started", count=3)
        held = await _connect_to_each_worker(
            switch, int(started["pos_port"]), 2, after=len(switch.records())
        )
        times = {}
        for worker, clients in held.items():
            fields = await _sale(clients[0])
            assert (fields[39], fields[13]) == ("00", "0131")
            local = str(fields[12])
            times[worker] = int(local[:2]) * 3600 + int(local[2:4]) * 60 + int(local[4:])
        # Sold a moment apart: at 60x, seconds of real time are minutes.
        assert abs(times[0] - times[1]) < 60, times
        for clients in held.values():
            for client in clients:
                await client.aclose()
    finally:
        assert await switch.stop() == 0, switch.output()
        assert await sim.stop() == 0, sim.output()
