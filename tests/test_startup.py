"""``switch run`` starting, or refusing to: real processes, ports, files and limits.

Every start-up failure is one line on stderr naming the cause, exit status 2, and
nothing shared is touched first: a second switch on a journal in use, or one whose port
is taken, neither opens the journal nor connects to a bank.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import shutil
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from switch.config import load_config
from switch.errors import StartupError
from switch.net.clients import PosClient
from switch.security.setup import bank_zmks, open_security_module, terminal_entries
from switch.store.sqlite import JournalFile
from switch.terminal import Terminal
from tests.net.helpers import PAN_ICBC, POS_CODEC
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

DEMO_SIGN_ONS = 8
"""Four simulated banks, two links each."""


def _descriptor_limit(soft: int, hard: int) -> Callable[[], None]:
    """A preexec_fn: the child starts with this RLIMIT_NOFILE (as under prlimit)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return limit


def _soft_open_files_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no 'Max open files' in /proc/<pid>/limits")


async def _sale(client: PosClient, stan: int) -> dict[int, object]:
    with trio.fail_after(10):
        response = await client.request(client.terminal.sale(stan, PAN_ICBC, 1000 + stan))
    return dict(response.fields)


def _assert_log_is_json_without_tracebacks(process: Process) -> None:
    for record in process.records():  # each line parses, or this raises
        assert "Traceback" not in json.dumps(record)
    assert "Traceback" not in process.stderr_path.read_text()


# -- file descriptors ----------------------------------------------------------------


async def test_connections_beyond_the_descriptor_limit_are_closed_at_accept(
    tmp_path: Path,
) -> None:
    """At 64 descriptors the demo's 25,000 connections cannot fit: the switch says so in
    one line, caps its listeners below the limit, closes what comes beyond at accept
    (logging it at most once a second), and goes on serving the connections it holds,
    committing to its journal, with no traceback (before: EMFILE on accept, failing
    checkpoints, hundreds of traceback lines)."""
    config = write_config(tmp_path, demo_config(tmp_path))
    switch = await start_switch(config, preexec_fn=_descriptor_limit(64, 64))
    streams: list[trio.SocketStream] = []
    try:
        capped = await switch.wait_for_event("connections_capped")
        started = await switch.wait_for_event("switch_started")
        await switch.wait_for_event("link_signed_on", count=DEMO_SIGN_ONS)
        assert capped["fd_limit"] == 64
        pos_cap = int(capped["capped_to"]["pos"])
        assert pos_cap > 0 and pos_cap + capped["fd_reserve"] <= 64
        port = int(started["pos_port"])
        first = await PosClient.connect("127.0.0.1", port, POS_CODEC, Terminal())
        assert (await _sale(first, 1))[39] == "00"

        beyond = 30
        refused = 0
        flood_began = trio.current_time()

        async def closed_by_the_switch(stream: trio.SocketStream) -> None:
            nonlocal refused
            with contextlib.suppress(trio.BrokenResourceError):  # reset: closed all the same
                assert await stream.receive_some(10) == b""
            refused += 1

        async with trio.open_nursery() as watching:
            for _ in range(pos_cap - 1 + beyond):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                streams.append(stream)
                watching.start_soon(closed_by_the_switch, stream)
            with trio.fail_after(20):
                while refused < beyond:
                    await trio.sleep(0.02)
            # Exactly the connections beyond the cap were closed; the others are held,
            # and the first one still transacts, its sale journaled.
            assert refused == beyond
            approved = await _sale(first, 2)
            assert approved[39] == "00" and refused == beyond
            watching.cancel_scope.cancel()
        shown = run_switch(["journal", "show", str(approved[37]), "--config", str(config)])
        assert shown.returncode == 0 and "approved" in shown.stdout, shown.stderr

        for stream in streams:
            await stream.aclose()
        streams.clear()
        await first.aclose()
        # Room again once they have gone: a new terminal is served. (The switch notices
        # closed connections at its own pace: until it has, a new one is refused.)
        with trio.fail_after(20):
            while True:
                again = await PosClient.connect("127.0.0.1", port, POS_CODEC, Terminal())
                try:
                    assert (await _sale(again, 3))[39] == "00"
                    break
                except (EOFError, trio.BrokenResourceError):
                    refused += 1
                    await trio.sleep(0.05)
                finally:
                    await again.aclose()
        refusing_s = trio.current_time() - flood_began
    finally:
        for stream in streams:
            await stream.aclose()
        assert await switch.stop() == 0, switch.output()

    _assert_log_is_json_without_tracebacks(switch)
    output = switch.output()
    for failure in ("EMFILE", "journal_checkpoint_failed", "journal_commit_failed"):
        assert failure not in output
    lines = switch.events("connection_refused")
    assert 1 <= len(lines) <= 1 + math.ceil(refusing_s)  # at most one a second
    assert sum(int(line["count"]) for line in lines) <= refused  # each counted once


async def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    config = write_config(tmp_path, demo_config(tmp_path))
    switch = await start_switch(config, preexec_fn=_descriptor_limit(64, 4096))
    try:
        await switch.wait_for_event("switch_started")
        assert _soft_open_files_limit(switch.process.pid) == 4096
        limits = await switch.wait_for_event("file_descriptors")
        assert limits["limit"] == 4096 and limits["raised_from"] == 64
        # 25,000 connections do not fit in 4,096 either: one warning line says so.
        (capped,) = switch.events("connections_capped")
        assert sum(capped["capped_to"].values()) + capped["fd_reserve"] <= 4096
    finally:
        assert await switch.stop() == 0, switch.output()


def test_a_limit_below_the_reserve_refuses_to_start(tmp_path: Path) -> None:
    config = write_config(tmp_path, demo_config(tmp_path))
    result = run_switch(["run", "--config", str(config)], preexec_fn=_descriptor_limit(40, 40))
    assert_refused_in_one_line(result, "file descriptor limit (40)", "no room for connections")
    assert not (tmp_path / "journal.sqlite3").exists()


# -- a second switch, a port in use --------------------------------------------------


async def test_a_second_switch_on_the_same_journal_refuses_and_touches_nothing(
    tmp_path: Path,
) -> None:
    sim_config = write_config(tmp_path, demo_config(tmp_path), "sim.toml")
    sim, bank_port = await start_sim_bank(sim_config)
    config = write_config(tmp_path, one_bank_config(tmp_path, bank_port))
    first = await start_switch(config, name="first")
    try:
        started = await first.wait_for_event("switch_started")
        await first.wait_for_event("link_signed_on", count=2)
        journal = tmp_path / "journal.sqlite3"
        lock = tmp_path / "journal.sqlite3.lock"
        assert lock.read_text().strip() == str(first.process.pid)

        second = run_switch(["run", "--config", str(config)])
        assert_refused_in_one_line(
            second, str(journal), "in use by another switch", f"pid {first.process.pid}"
        )
        events = {record["event"] for record in map(json.loads, second.stdout.splitlines())}
        assert events.isdisjoint({"journal_opened", "bank_sim_listening", "link_connected"})

        # The simulator takes connections in order: once it logs ours, it would have
        # logged any the second switch had made before. Only the first's two links.
        probe = await trio.open_tcp_stream("127.0.0.1", bank_port)
        probe_peer = f"127.0.0.1:{probe.socket.getsockname()[1]}"
        await sim.wait_for(
            lambda r: r.get("event") == "bank_sim_link_connected" and r["peer"] == probe_peer
        )
        await probe.aclose()
        connected = [r["peer"] for r in sim.events("bank_sim_link_connected")]
        assert len(connected) == 3 and connected[-1] == probe_peer

        # The first switch is untouched: it still approves, and still holds the lock.
        client = await PosClient.connect(
            "127.0.0.1", int(started["pos_port"]), POS_CODEC, Terminal()
        )
        assert (await _sale(client, 7))[39] == "00"
        await client.aclose()
        assert lock.read_text().strip() == str(first.process.pid)
    finally:
        assert await first.stop() == 0, first.output()
        assert await sim.stop() == 0, sim.output()
    _assert_log_is_json_without_tracebacks(first)


async def test_a_port_in_use_refuses_before_the_journal_and_the_banks(tmp_path: Path) -> None:
    sim_config = write_config(tmp_path, demo_config(tmp_path), "sim.toml")
    sim, bank_port = await start_sim_bank(sim_config)
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = one_bank_config(tmp_path, bank_port)
        settings["pos"]["port"] = taken.getsockname()[1]
        config = write_config(tmp_path, settings)
        result = run_switch(["run", "--config", str(config)])
        assert_refused_in_one_line(result, "[pos]", f"port {taken.getsockname()[1]}", "is in use")
        assert not (tmp_path / "journal.sqlite3").exists()
        # Nothing reached the bank: the simulator's first connection is ours.
        probe = await trio.open_tcp_stream("127.0.0.1", bank_port)
        probe_peer = f"127.0.0.1:{probe.socket.getsockname()[1]}"
        await sim.wait_for(lambda r: r.get("event") == "bank_sim_link_connected")
        await probe.aclose()
        assert [r["peer"] for r in sim.events("bank_sim_link_connected")] == [probe_peer]
    finally:
        taken.close()
        assert await sim.stop() == 0, sim.output()


def test_a_simulated_bank_whose_port_is_taken_is_refused(tmp_path: Path) -> None:
    """A bank simulated in the switch's process listens too: its port is checked with
    the channels' (before, an 80-line traceback once the journal was open)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = demo_config(tmp_path)
        settings["banks"]["abc"]["port"] = port
        result = run_switch(["run", "--config", str(write_config(tmp_path, settings))])
    assert_refused_in_one_line(result, "[banks.abc] (simulated)", f"port {port}", "in use")
    assert not (tmp_path / "journal.sqlite3").exists()


# -- configuration and keys ----------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key"), [("pos", "pos.dialect"), ("bank", "banks.icbc.dialect")]
)
def test_an_unknown_dialect_is_refused_naming_its_key(
    tmp_path: Path, section: str, key: str
) -> None:
    settings = demo_config(tmp_path)
    target = settings["pos"] if section == "pos" else settings["banks"]["icbc"]
    target["dialect"] = "cup-typo"
    result = run_switch(["run", "--config", str(write_config(tmp_path, settings))])
    assert_refused_in_one_line(result, key, "'cup-typo'", "known: cup-pos, h2h-ascii")
    assert not (tmp_path / "journal.sqlite3.lock").exists()


@pytest.mark.parametrize(
    ("key_text", "expected"),
    [
        (None, "No such file or directory"),
        ("active = 1\n[[keys]\n", "card keys in"),
        ('active = 1\n[[keys]]\nid = 1\nhmac_key = "00"\naes_key = "00"\n', "must be 32 bytes"),
    ],
    ids=["missing", "not-toml", "short-key"],
)
def test_a_missing_or_bad_key_file_is_refused_naming_it(
    tmp_path: Path, key_text: str | None, expected: str
) -> None:
    key_file = tmp_path / "keys.toml"
    if key_text is not None:
        key_file.write_text(key_text)
        key_file.chmod(0o600)  # its content is what is wrong
    settings = demo_config(tmp_path)
    settings["journal"]["key_file"] = str(key_file)
    result = run_switch(["run", "--config", str(write_config(tmp_path, settings))])
    assert_refused_in_one_line(result, expected)
    if key_text is None:
        assert str(key_file) in result.stderr
    assert not (tmp_path / "journal.sqlite3").exists()


@pytest.mark.parametrize(
    ("merchants", "expected"),
    [
        (None, "settlement.merchants_file: cannot read"),
        ("merchant_id,name\n", "the header must be merchant_id,name,mcc"),
        ("merchant_id,name,mcc,mdr_bps,fee_min_fen,fee_cap_fen,account\nM1,Shop,54,60,0,0,A\n",
         "line 2: mcc '54' is not 4 digits"),
    ],
    ids=["missing", "bad-header", "bad-row"],
)  # fmt: skip
def test_a_missing_or_bad_merchants_file_is_refused_naming_it(
    tmp_path: Path, merchants: str | None, expected: str
) -> None:
    path = tmp_path / "merchants.csv"
    if merchants is not None:
        path.write_text(merchants)
    settings = demo_config(tmp_path)
    settings["settlement"]["merchants_file"] = str(path)
    result = run_switch(["run", "--config", str(write_config(tmp_path, settings))])
    assert_refused_in_one_line(result, expected)
    assert str(path) in result.stderr
    assert not (tmp_path / "journal.sqlite3").exists()


# -- a journal that cannot be written ------------------------------------------------


def test_a_journal_whose_folder_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("a file where the journal's folder should be")
    settings = demo_config(tmp_path)
    settings["journal"]["path"] = str(tmp_path / "var" / "journal.sqlite3")
    result = run_switch(["run", "--config", str(write_config(tmp_path, settings))])
    assert_refused_in_one_line(result, str(tmp_path / "var" / "journal.sqlite3"), "Not a directory")


@pytest.fixture(scope="session")
def can_mount(tmp_path_factory: pytest.TempPathFactory) -> bool:
    """Whether tests may mount file systems in a mount namespace of their own (root in
    a container that allows it): a read-only or full file system, for real."""
    if shutil.which("unshare") is None:
        return False
    target = tmp_path_factory.mktemp("mount-probe")
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs '{target}'"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return probe.returncode == 0


def _read_only_bind(target: Path) -> list[str]:
    """A wrapper: the command runs in a mount namespace of its own where ``target``
    (a file or a folder) is bind-mounted read-only over itself."""
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, "sh", str(target)]


@pytest.fixture
def existing_journal(tmp_path: Path) -> Iterator[Path]:
    """A journal made by the engine, as a switch leaves it; modes restored afterwards
    so that tmp_path can be cleaned up."""
    path = tmp_path / "journal" / "journal.sqlite3"
    journal = JournalFile(path)
    journal.open()
    journal.close()
    yield path
    for item in (path.parent, *path.parent.iterdir()):
        item.chmod(stat.S_IRWXU)


def _read_only(target: Path, mode: int, can_mount: bool) -> list[str]:
    """How to make ``target`` read-only for the switch: a read-only bind mount where
    the test may mount; else its mode, where that binds (not as root, whom modes do not
    stop); else the test cannot be made to fail, so it is skipped."""
    if can_mount:
        return _read_only_bind(target)
    if os.geteuid() != 0:
        target.chmod(mode)
        return []
    pytest.skip("running as root without the right to mount: cannot make a file read-only")


def test_a_read_only_journal_file_is_refused(
    tmp_path: Path, existing_journal: Path, can_mount: bool
) -> None:
    """It opens (SQLite falls back to reading), but the write probe fails: before, the
    switch started and answered 96 to everything."""
    settings = demo_config(tmp_path)
    settings["journal"]["path"] = str(existing_journal)
    config = write_config(tmp_path, settings)
    wrapper = _read_only(existing_journal, 0o400, can_mount)
    result = run_switch(["run", "--config", str(config)], wrapper=wrapper)
    assert_refused_in_one_line(result, str(existing_journal), "cannot be written", "readonly")
    events = [json.loads(line)["event"] for line in result.stdout.splitlines()]
    assert "bank_sim_listening" not in events and "switch_started" not in events


def test_a_journal_on_a_read_only_file_system_is_refused(
    tmp_path: Path, existing_journal: Path, can_mount: bool
) -> None:
    settings = demo_config(tmp_path)
    settings["journal"]["path"] = str(existing_journal)
    config = write_config(tmp_path, settings)
    if not can_mount and os.geteuid() != 0:
        existing_journal.chmod(0o400)
    wrapper = _read_only(existing_journal.parent, 0o500, can_mount)
    result = run_switch(["run", "--config", str(config)], wrapper=wrapper)
    assert_refused_in_one_line(result, str(existing_journal), "cannot be written")
    assert ("Read-only file system" if can_mount else "Permission denied") in result.stderr


def test_a_journal_on_a_full_file_system_is_refused(tmp_path: Path, can_mount: bool) -> None:
    if not can_mount:
        pytest.skip("filling a file system needs a tmpfs of its own")
    folder = tmp_path / "full"
    folder.mkdir()
    settings = demo_config(tmp_path)
    settings["journal"]["path"] = str(folder / "journal.sqlite3")
    config = write_config(tmp_path, settings)
    fill = (
        'mount -t tmpfs -o size=64k tmpfs "$1" && '
        '{ dd if=/dev/zero of="$1/filler" bs=4k 2>/dev/null; shift; exec "$@"; }'
    )
    result = run_switch(
        ["run", "--config", str(config)],
        wrapper=["unshare", "-m", "sh", "-c", fill, "sh", str(folder)],
    )
    assert_refused_in_one_line(result, str(folder / "journal.sqlite3"), "No space left")


# -- the journal's files -------------------------------------------------------------


async def test_the_journal_and_its_lock_are_created_owner_only(tmp_path: Path) -> None:
    config = write_config(tmp_path, demo_config(tmp_path))
    previous_umask = os.umask(0o022)  # the usual one, under which files are 0644
    try:
        switch = await start_switch(config)
    finally:
        os.umask(previous_umask)
    try:
        started = await switch.wait_for_event("switch_started")
        await switch.wait_for_event("link_signed_on", count=DEMO_SIGN_ONS)
        client = await PosClient.connect(
            "127.0.0.1", int(started["pos_port"]), POS_CODEC, Terminal()
        )
        assert (await _sale(client, 1))[39] == "00"  # the WAL and shared memory exist now
        await client.aclose()
        for suffix in ("", "-wal", "-shm", ".lock"):
            path = tmp_path / f"journal.sqlite3{suffix}"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        assert await switch.stop() == 0, switch.output()


def test_without_demo_keys_a_bank_needs_its_zmk(tmp_path: Path) -> None:
    """security.md: every bank link MACs, so a bank without a ZMK stops the start in one
    line naming the command that loads it; the store must exist; and the published demo
    ZMK is refused unless demo_keys is on."""
    settings = demo_config(tmp_path)
    settings["security"]["demo_keys"] = False
    path = write_config(tmp_path, settings)
    result = run_switch(["run", "--config", str(path)])
    assert_refused_in_one_line(result, "LMK file", "does not exist")
    assert run_switch(["keys", "lmk", "new", "--out", str(tmp_path / "lmk")]).returncode == 0
    result = run_switch(["run", "--config", str(path)])
    assert_refused_in_one_line(result, "key store", "does not exist", "switch keys init")

    store = ["--store", str(tmp_path / "key-store.json"), "--lmk-file", str(tmp_path / "lmk")]
    assert run_switch(["keys", "init", *store]).returncode == 0
    result = run_switch(["run", "--config", str(path)])
    assert_refused_in_one_line(result, "has no ZMK")
    assert "switch keys load-zmk --bank" in result.stderr

    settings["security"]["demo_keys"] = True  # the demo ZMK is stored for every bank
    demo = load_config(write_config(tmp_path, settings, "demo.toml"))
    assert bank_zmks(open_security_module(demo), demo, demo.banks)["icbc"] == "zmk:icbc"
    result = run_switch(["run", "--config", str(path)])
    assert_refused_in_one_line(result, "published DEMO ZMK")
    assert not (tmp_path / "journal.sqlite3").exists()


def test_the_demo_terminal_entry_only_with_demo_keys(tmp_path: Path) -> None:
    """The demo configuration's '*' entry (security.md's published TMK): stored with
    demo_keys and demo_terminals; demo_terminals alone, or that entry or the demo TMK
    left in a store without demo_keys, stops the start in one line."""
    settings = demo_config(tmp_path)
    settings["security"]["demo_keys"] = True
    settings["security"]["demo_terminals"] = True
    demo = load_config(write_config(tmp_path, settings, "demo.toml"))
    module = open_security_module(demo)
    terminal_entries(module, demo)
    [entry] = [info for info in module.list_keys() if info.kind == "tmk"]
    assert (entry.owner, entry.merchant, entry.kcv) == ("*", "*", "43C6CC")
    terminal_entries(module, demo)  # kept, not stored twice
    assert len([info for info in module.list_keys() if info.kind == "tmk"]) == 1

    settings["security"]["demo_keys"] = False
    alone = load_config(write_config(tmp_path, settings, "alone.toml"))
    with pytest.raises(StartupError, match="demo_terminals needs demo_keys"):
        terminal_entries(module, alone)
    settings["security"]["demo_terminals"] = False
    production = load_config(write_config(tmp_path, settings, "production.toml"))
    with pytest.raises(StartupError, match="DEMO TMK"):
        terminal_entries(module, production)
