"""Operator commands as a newcomer types them from the README and docs/guide.md, against real switch
processes, real files and the real admin interface."""

from __future__ import annotations

import json
import re
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.switch_process import demo_config, run_switch, start_switch, write_config

# Every test here starts switch processes: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")


async def _run(*args: str) -> tuple[int, str, str]:
    result = await trio.to_thread.run_sync(lambda: run_switch(list(args)))
    return result.returncode, result.stdout, result.stderr


async def test_switch_pid_names_only_a_switch_holding_the_journal(tmp_path: Path) -> None:
    """`kill -HUP $(switch pid)` signals the running switch, and nothing once it has
    stopped: a clean stop empties the lock file, and the pid a killed switch left in it
    is not printed."""
    config = write_config(tmp_path, demo_config(tmp_path))
    lock = tmp_path / "journal.sqlite3.lock"
    switch = await start_switch(config)
    try:
        await switch.wait_for_event("switch_started")
        code, out, err = await _run("pid", "--config", str(config))
        assert (code, out.strip()) == (0, str(switch.process.pid)), err
    finally:
        assert await switch.stop() == 0, switch.output()
    assert lock.read_text() == ""  # a clean stop leaves no pid behind
    code, out, err = await _run("pid", "--config", str(config))
    assert (code, out) == (1, "") and len(err.splitlines()) == 1, err
    assert "no switch holds journal" in err

    killed = await start_switch(config, name="killed")
    await killed.wait_for_event("switch_started")
    killed.process.send_signal(signal.SIGKILL)
    await killed.process.wait()
    assert lock.read_text().strip() == str(killed.process.pid)  # left behind
    code, out, err = await _run("pid", "--config", str(config))
    assert (code, out) == (1, ""), out  # not the dead switch's pid, whoever has it now


async def test_config_check_of_a_running_switchs_file_notes_its_journal_and_ports(
    tmp_path: Path,
) -> None:
    """Checked while the switch runs (before a reload), its own journal and ports are
    notes and the check passes; a port another program holds is still a problem."""
    settings = demo_config(tmp_path)
    config = write_config(tmp_path, settings)
    switch = await start_switch(config)
    try:
        started = await switch.wait_for_event("switch_started")
        settings["pos"]["port"] = started["pos_port"]
        settings["online"]["port"] = started["online_port"]
        settings["admin"]["port"] = started["admin_port"]
        edited = write_config(tmp_path, settings, "edited.toml")
        code, out, err = await _run("config", "check", "--config", str(edited))
        assert code == 0 and err == "", err
        notes = out.splitlines()
        assert notes[-1] == f"ok: {edited}"
        pid = switch.process.pid
        assert any("journal" in n and f"in use by the running switch (pid {pid})" in n
                   for n in notes), notes  # fmt: skip
        for label in ("pos", "online", "admin"):
            port = started[f"{label}_port"]
            expected = f"[{label}] port {port} on 127.0.0.1 is in use by the running switch"
            assert any(n.startswith("note: ") and expected in n for n in notes), notes
        with socket.socket() as other:  # another program's port: still refused
            other.bind(("127.0.0.1", 0))
            other.listen()
            settings["online"]["port"] = other.getsockname()[1]
            clash = write_config(tmp_path, settings, "clash.toml")
            code, out, err = await _run("config", "check", "--config", str(clash))
        assert code == 2, out + err
        assert err.splitlines() == [
            f"switch: {clash}: [online] port {settings['online']['port']} on 127.0.0.1 is in "
            "use: Address already in use"
        ]
    finally:
        assert await switch.stop() == 0, switch.output()


def _times(document: object) -> list[tuple[str, object]]:
    """Every ``*_at`` value in a JSON document, however deep."""
    found: list[tuple[str, object]] = []
    if isinstance(document, dict):
        for key, value in document.items():
            if key.endswith("_at"):
                found.append((key, value))
            found.extend(_times(value))
    elif isinstance(document, list):
        for item in document:
            found.extend(_times(item))
    return found


async def test_settle_and_saf_commands_as_the_readme_shows_them(tmp_path: Path) -> None:
    """A sale and its void on one day, the day cut off and settled, then: `settle status
    --json` prints ISO 8601 times and counts the pair cancelled (not paid, as the
    payouts); a date the switch never had is unknown (exit 2); `settle run` takes
    `--date MMDD` as `journal find` does; `saf list --bank` of no such bank names it
    and the config's banks (exit 2)."""
    config = write_config(tmp_path, demo_config(tmp_path))
    switch = await start_switch(config)
    try:
        started = await switch.wait_for_event("switch_started")
        url = f"http://127.0.0.1:{started['admin_port']}"
        pos = ("--config", str(config), "--port", str(started["pos_port"]))
        code, out, err = await _run("pos", "sale", *pos, "--amount", "150.00")
        sale = json.loads(out)
        assert sale["approved"], out + err
        code, out, err = await _run("pos", "void", *pos, "--rrn", sale["fields"]["37"])
        assert json.loads(out)["approved"], out + err

        settle = ("--config", str(config), "--url", url, "--json")
        code, out, err = await _run("settle", "cutoff", *settle)
        assert code == 0, err
        day = json.loads(out)["business_date"]
        status: dict[str, Any] = {}
        with trio.fail_after(30):
            while not status.get("files_written_at"):
                await trio.sleep(0.1)
                code, out, err = await _run("settle", "status", *settle, "--date", day)
                status = json.loads(out) if code == 0 else {}
        times = _times(status)
        assert {key for key, _ in times} >= {"closed_at", "settled_at", "files_written_at"}
        for key, value in times:
            assert value is None or ISO_UTC.fullmatch(str(value)), (key, value)
        counts = {(row["category"], row["action"]): row["count"] for row in status["categories"]}
        assert counts == {("matched", "cancelled"): 2}, status["categories"]
        assert (status["sales_fen"], status["payout_fen"]) == (0, 0)

        code, out, err = await _run("settle", "status", *settle, "--date", "2001-01-01")
        assert (code, out) == (2, "")
        assert err == "switch: unknown date: the switch has no business day 2001-01-01\n"

        mmdd = day[5:7] + day[8:10]
        code, out, err = await _run("settle", "run", *settle, "--date", mmdd)
        assert code == 0, err
        assert json.loads(out)["business_date"] == day

        code, out, err = await _run("saf", "list", "--config", str(config), "--bank", "nosuch")
        assert (code, out) == (2, ""), out + err
        assert len(err.splitlines()) == 1 and "--bank nosuch" in err, err
        assert "abc, citic, cmb, icbc" in err, err
        code, out, err = await _run("saf", "list", "--config", str(config), "--bank", "icbc")
        assert (code, out.strip()) == (0, "(none)"), out + err
    finally:
        assert await switch.stop() == 0, switch.output()
