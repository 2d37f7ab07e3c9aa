"""Two switches, each a supervisor and two workers, on one PostgreSQL journal as two
hosts would run them (``[switch] hosts = 2``, ``host_id`` 0 and 1, their POS listeners
on 127.0.0.2 and 127.0.0.3), one bank simulator. Terminals sell at both; host 1 is
SIGKILLed under load (its supervisor and workers at once, as a host that loses power)
and started again. Nothing is lost (every approval a terminal saw is journaled and
stands; what host 1 left in doubt is reversed by its own next start), nothing is sent
twice (RRNs and STANs apart per host and worker), and the bank's net is the journal's.
A third switch claiming host_id 1 while host 1 runs is refused in one line."""

from __future__ import annotations

import json
import os
import random
import signal
from collections import Counter
from pathlib import Path

import pytest
import trio

from tests.crash_load import LoadTerminal, SwitchGate
from tests.switch_process import run_switch
from tests.test_crash_safety import (
    BANK,
    LINKS,
    SAF_DRAIN_TIMEOUT_S,
    Child,
    _check_journal,
    _config_text,
    _count,
    _Journal,
    _undelivered,
)

pytestmark = pytest.mark.slow  # switch processes

WORKERS = 2
TERMINALS_PER_HOST = 4
ADDRESSES = ("127.0.0.2", "127.0.0.3")


def _host_config(tmp_path: Path, bank_port: int, dsn: str, host: int) -> Path:
    text = _config_text(tmp_path, bank_port, dsn, WORKERS)
    text = text.replace("[switch]\n", f"[switch]\nhosts = 2\nhost_id = {host}\n", 1)
    text = text.replace('[pos]\nhost = "127.0.0.1"', f'[pos]\nhost = "{ADDRESSES[host]}"', 1)
    path = tmp_path / f"host-{host}.toml"
    path.write_text(text)
    return path


def _who_settles(folder: Path) -> list[tuple[str, int, bool]]:
    """Each worker's start, from every host's log: its log, its index, whether it runs
    the settlement."""
    found = []
    for log in sorted(folder.glob("host-*.log")):
        for line in log.read_bytes().splitlines():
            record = json.loads(line) if line.startswith(b"{") else {}
            if record.get("event") == "switch_started":
                found.append((log.name, record["worker"], record["settlement"]))
    return found


async def _start(config: Path, log: Path) -> tuple[Child, int]:
    switch = await Child.start(log, "run", "--config", str(config))
    started = await switch.wait_for("switch_started", count=WORKERS)
    await switch.wait_for("link_signed_on", count=max(LINKS, WORKERS))
    return switch, int(started["pos_port"])


async def test_two_hosts_share_a_journal_and_one_killed_loses_nothing(
    tmp_path: Path, postgres_dsn: str
) -> None:
    seed = int(os.environ.get("CRASH_SEED") or random.randrange(1 << 32))
    print(f"hosts seed: CRASH_SEED={seed}")
    rng = random.Random(seed)
    totals = tmp_path / "totals.json"
    bank_config = tmp_path / "bank.toml"
    bank_config.write_text(_config_text(tmp_path, 0))
    children: list[Child] = []
    gates = (SwitchGate(), SwitchGate())
    terminals = [
        LoadTerminal(index, random.Random(rng.random()), host=ADDRESSES[index % 2])
        for index in range(2 * TERMINALS_PER_HOST)
    ]
    stop = trio.Event()
    try:
        bank = await Child.start(
            tmp_path / "bank.log", "sim-bank", "--config", str(bank_config),
            "--bank", BANK, "--port", "0", "--totals-file", str(totals),
        )  # fmt: skip
        children.append(bank)
        bank_port = int((await bank.wait_for("simulator_started"))["port"])
        configs = [_host_config(tmp_path, bank_port, postgres_dsn, host) for host in (0, 1)]
        hosts: list[Child] = []
        for host, config in enumerate(configs):
            switch, port = await _start(config, tmp_path / f"host-{host}-1.log")
            children.append(switch)
            hosts.append(switch)
            gates[host].opened(port)

        # A second host 1 on the journal: refused in one line, naming host_id.
        clash = await trio.to_thread.run_sync(
            lambda: run_switch(["run", "--config", str(configs[1])])
        )
        assert clash.returncode == 2, clash.stderr
        refusals = [line for line in clash.stderr.splitlines() if line.startswith("switch:")]
        assert len(refusals) == 1 and "[switch] host_id 1 is taken" in refusals[0], clash.stderr

        with trio.fail_after(120):
            async with trio.open_nursery() as load:
                for terminal in terminals:
                    load.start_soon(terminal.run, gates[ADDRESSES.index(terminal.host)], stop)
                await trio.sleep(rng.uniform(1.0, 2.0))
                # Host 1 loses power: its workers and its supervisor, at once.
                gates[1].closing()
                pids = [r["pid"] for r in await hosts[1].events("worker_started")]
                for pid in [*pids, hosts[1].process.pid]:
                    os.kill(pid, signal.SIGKILL)
                with trio.fail_after(10):
                    await hosts[1].process.wait()
                await trio.sleep(rng.uniform(0.3, 1.0))  # host 0 serves on alone
                hosts[1], port = await _start(configs[1], tmp_path / "host-1-2.log")
                children.append(hosts[1])
                gates[1].opened(port)
                await trio.sleep(rng.uniform(0.5, 1.5))
                stop.set()  # each terminal: one last sale ending in 68, then its reversals
        with trio.move_on_after(SAF_DRAIN_TIMEOUT_S):
            while _undelivered(tmp_path, postgres_dsn):
                await trio.sleep(0.1)
        for switch in hosts:
            assert await switch.stop(signal.SIGTERM) == 0, switch.log.read_text()[-3000:]
        assert await bank.stop(signal.SIGTERM) == 0, bank.log.read_text()[-3000:]
    finally:
        for child in children:
            if child.process.returncode is None:
                child.process.kill()
                with trio.move_on_after(5):
                    await child.process.wait()

    sent = [s for terminal in terminals for s in terminal.sent]
    by_host = Counter(
        terminal.host for terminal in terminals for s in terminal.sent if s.code == "00"
    )
    assert set(by_host) == set(ADDRESSES), by_host  # both hosts approved sales
    ledger = json.loads(totals.read_bytes())
    db = _Journal(tmp_path, postgres_dsn)
    try:
        # Nothing lost, nothing left in doubt, the bank's net is the journal's.
        _check_journal(db, sent, ledger, graceful_epoch=-1, lives=3)
        # Each worker of each host numbered apart: host h's worker i is slot 2h + i,
        # its RRNs' sequences that slot modulo 4, its STANs a block of its own.
        rows = db.execute("SELECT rrn, worker, bank_stan FROM txn WHERE bank_stan IS NOT NULL")
        slots = {row["worker"] for row in rows}
        # Each host's (the kernel spreads a host's terminals over its workers as it likes).
        assert slots <= {0, 1, 2, 3} and slots & {0, 1} and slots & {2, 3}, slots
        assert all(int(row["rrn"][4:]) % 4 == row["worker"] for row in rows)
        block = 999_999 // 4
        assert all(
            row["worker"] * block < int(row["bank_stan"]) <= (row["worker"] + 1) * block
            for row in rows
        )
        assert _count(db, "SELECT count(*) FROM txn WHERE code = '94'") == 0
    finally:
        db.close()
    # One settlement service: host 0's worker 0's; every other worker follows its closes.
    settling = _who_settles(tmp_path)
    assert [entry for entry in settling if entry[2]] == [("host-0-1.log", 0, True)], settling
    assert len(settling) == 3 * WORKERS
