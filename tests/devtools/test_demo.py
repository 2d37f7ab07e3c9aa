"""``switch demo``: the demo's banks as ``switch sim-bank`` processes and ``switch run``
with its workers, on the config's SQLite journal or a PostgreSQL server of its own.

Real processes on ports of their own (every port 0 in the config: the demo picks free
ones) and a var folder of the test's own, never the demo's fixed ports or var/.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
import trio

from switch.config import SwitchConfig, load_config
from switch.devtools.demo import PATH_KEYS, derived_config
from switch.devtools.postgresql import PostgresServer
from tests.conftest import REPO
from tests.switch_process import Process, demo_config, run_switch, write_config

# Every test here starts switch processes: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

READY_TIMEOUT_S = 120
"""The first start initialises the cluster (and may install the server)."""
STOP_TIMEOUT_S = 60


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder the PostgreSQL server's account can reach (pytest's tmp_path is closed
    to others when we are root): the demo's var/ goes in it."""
    made = Path(tempfile.mkdtemp(prefix="switch-demo-test-", dir="/tmp"))
    made.chmod(0o711)
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Running (a zombie no one has reaped serves nothing), and still one of ours: a
    pid reused by another program does not count."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status and (b"switch" in command or b"postgres" in command)


async def _ready(demo: Process) -> dict[str, Any]:
    with trio.fail_after(READY_TIMEOUT_S):
        while not (ready := demo.events("demo_ready")):
            assert demo.process.poll() is None, demo.output()
            await trio.sleep(0.1)
    return ready[0]


def _pids(demo: Process, postmaster_pid: Path) -> list[int]:
    """Every process the demo runs: its banks and switch, the workers, the server."""
    pids = [int(r["pid"]) for r in demo.events("demo_process_started")]
    pids += [int(r["pid"]) for r in demo.events("worker_started")]
    pids.append(int(postmaster_pid.read_text().split("\n", 1)[0]))
    return pids


async def _stop(demo: Process, pids: list[int]) -> None:
    """SIGTERM: exit 0, and nothing it started left running."""
    with trio.fail_after(STOP_TIMEOUT_S):
        assert await demo.stop() == 0, demo.output()
        while alive := [pid for pid in pids if _alive(pid)]:
            await trio.sleep(0.1)
    assert not alive
    stopped = [r["process"] for r in demo.events("demo_process_stopped")]
    assert stopped[0] == "the switch", stopped  # it drains before the banks go
    assert sorted(stopped[1:]) == ["bank abc", "bank citic", "bank cmb", "bank icbc"]
    assert demo.events("demo_postgresql_stopped")
    assert [r["event"] for r in demo.records()][-1] == "demo_stopped"


def _demo_args(config: Path) -> list[str]:
    return ["demo", "--config", str(config), "--journal", "postgresql", "--workers", "2"]


async def test_the_demo_on_postgresql_with_two_workers_journals_a_sale_and_stops_clean(
    folder: Path, postgres_server: PostgresServer
) -> None:
    """The README's second command: a sale through the workers is journaled in the
    demo's own PostgreSQL, SIGTERM stops the switch, the banks and the server, and the
    next run finds the sale still there (the cluster is kept in var/postgresql)."""
    del postgres_server  # only: where none can start, this test skips (fails in CI)
    config = write_config(folder, demo_config(folder / "var"))
    cluster = folder / "var" / "postgresql"
    demo = await Process.start(_demo_args(config), folder, name="demo")
    try:
        ready = await _ready(demo)
        derived = ready["config"]
        assert derived == str(folder / "var" / "demo-postgresql.toml")
        assert ready["workers"] == 2
        assert len(demo.events("worker_started")) == 2
        sale = run_switch(["pos", "sale", "--config", derived, "--amount", "100.00"])
        assert sale.returncode == 0, sale.stdout + sale.stderr
        answer = json.loads(sale.stdout)
        assert answer["response_code"] == "00", answer
        rrn = answer["fields"]["37"]
        with psycopg.connect(ready["journal"]) as connection:
            row = connection.execute(
                "SELECT state, code, amount FROM txn WHERE rrn = %s", (rrn,)
            ).fetchone()
        assert row == ("approved", "00", 10000)
        # The line the demo says for the operator's other shell: from any folder, the
        # commands then read this demo's journal, not conf/switch.toml's SQLite one.
        export = f"export SWITCH_CONFIG={derived}"
        assert ready["operator_commands"] == export
        assert export in demo.stderr_path.read_text()
        elsewhere = folder / "elsewhere"
        elsewhere.mkdir()
        shown = run_switch(
            ["journal", "show", rrn, "--json"], env={"SWITCH_CONFIG": derived}, cwd=elsewhere
        )
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert json.loads(shown.stdout)[0]["transaction"]["rrn"] == rrn
        pids = _pids(demo, cluster / "data" / "postmaster.pid")
        await _stop(demo, pids)
        assert not (cluster / "data" / "postmaster.pid").exists()
    finally:
        if demo.process.poll() is None:
            demo.process.kill()

    again = await Process.start(_demo_args(config), folder, name="demo-again")
    try:
        ready = await _ready(again)
        shown = run_switch(["journal", "show", rrn, "--config", ready["config"], "--json"])
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert json.loads(shown.stdout)[0]["transaction"]["state"] == "approved"
        await _stop(again, _pids(again, cluster / "data" / "postmaster.pid"))
    finally:
        if again.process.poll() is None:
            again.process.kill()


async def test_a_bank_that_cannot_start_stops_the_demo_in_one_line(
    folder: Path, postgres_server: PostgresServer
) -> None:
    """A bank's port taken: one line naming the bank and why, exit 2, and what had
    started (the server, the banks before it) stopped."""
    del postgres_server
    settings = demo_config(folder / "var")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings["banks"]["cmb"]["port"] = taken.getsockname()[1]
        config = write_config(folder, settings)
        demo = await Process.start(_demo_args(config), folder, name="demo")
        with trio.fail_after(READY_TIMEOUT_S):
            status = await demo.process.wait()
    assert status == 2, demo.output()
    lines = demo.stderr_path.read_text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("switch: demo: bank cmb did not start: [banks.cmb] port")
    assert "in use" in lines[0], lines[0]
    pids = [int(r["pid"]) for r in demo.events("demo_process_started")]
    assert not [pid for pid in pids if _alive(pid)]
    assert demo.events("demo_postgresql_stopped")
    assert not (folder / "var" / "postgresql" / "data" / "postmaster.pid").exists()


def test_the_derived_config_names_the_same_files_as_the_demo_config(tmp_path: Path) -> None:
    """It is written in var/, so every path of conf/switch.toml is made absolute; a
    new path key (named ``*_dir``, ``*_file`` or ``path``) must be in PATH_KEYS."""
    config = load_config(REPO / "conf" / "switch.toml")
    raw = derived_config(config, workers=2, dsn="host=127.0.0.1 port=1 dbname=switch")
    written = tmp_path / "elsewhere" / "demo.toml"
    written.parent.mkdir()
    written.write_bytes(msgspec.toml.encode(raw))
    derived = load_config(written)
    assert derived.journal.backend == "postgresql"
    assert derived.switch.workers == 2
    assert all(not bank.simulate for bank in derived.banks.values())
    assert _files(derived) == _files(config)

    def path_keys(struct: type[msgspec.Struct], section: str) -> set[tuple[str, str]]:
        return {
            (section, name)
            for name in struct.__struct_fields__
            if name.endswith(("_dir", "_file")) or name == "path"
        }

    named: set[tuple[str, str]] = set()
    for field in msgspec.structs.fields(SwitchConfig):
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            named |= path_keys(field.type, field.name)
    assert ("journal", "key_file") in named  # the sections were found
    assert named <= set(PATH_KEYS), named - set(PATH_KEYS)


def _files(config: SwitchConfig) -> dict[str, Path]:
    return {
        "dialects": config.dialects_path().resolve(),
        "journal": config.path(config.journal.path).resolve(),
        "settlement_out": config.settlement_out_dir().resolve(),
        "settlement_db": config.settlement_db_path().resolve(),
        "merchants": config.path(config.settlement.merchants_file or "").resolve(),
        "keys": config.path(config.journal.key_file or "").resolve(),
        **{f"clearing {name}": config.clearing_dir(name).resolve() for name in config.banks},
    }
