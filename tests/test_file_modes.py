"""Files the switch writes are its owner's only, and a key file others can read stops
the start: real processes started with a permissive umask (022), real files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import trio

from switch.store.crypto import new_key_file_text
from tests.switch_process import (
    Process,
    assert_refused_in_one_line,
    demo_config,
    run_switch,
    start_switch,
    write_config,
)

# Every test here starts switch processes: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow


def _permissive() -> None:
    """A preexec_fn: the child starts as a careless shell would start it."""
    os.umask(0o022)


async def _operator(*args: str) -> dict[str, object]:
    """``switch ...`` to its end (umask 022), its --json answer."""

    def run() -> dict[str, object]:
        result = run_switch([*args, "--json"], preexec_fn=_permissive)
        assert result.returncode == 0, result.stdout + result.stderr
        answer: dict[str, object] = json.loads(result.stdout)
        return answer

    return await trio.to_thread.run_sync(run)


def _modes(var: Path) -> dict[str, str]:
    """Every file and folder under ``var`` (and ``var`` itself): its mode, in octal."""
    found = {".": f"{stat.S_IMODE(var.stat().st_mode):04o}"}
    for path in var.rglob("*"):
        found[str(path.relative_to(var))] = f"{stat.S_IMODE(path.lstat().st_mode):04o}"
    return found


async def test_every_file_a_settled_day_leaves_is_owner_only(tmp_path: Path) -> None:
    """A switch and its operator's commands started with umask 022 (a sale, the batch
    file, a cut-off, clearing files, settlement, a stand-alone simulator's totals):
    every file under var/ is 0600 and every folder 0700."""
    var = tmp_path / "var"
    settings = demo_config(tmp_path)
    settings["journal"]["path"] = str(var / "journal.sqlite3")
    del settings["settlement"]["out_dir"]  # the default: var/settlement, var/clearing
    config = write_config(tmp_path, settings)
    switch = await start_switch(config, preexec_fn=_permissive)
    try:
        started = await switch.wait_for_event("switch_started")
        url = f"http://127.0.0.1:{started['admin_port']}"
        sale = await trio.to_thread.run_sync(
            lambda: run_switch(
                ["pos", "sale", "--config", str(config), "--port", str(started["pos_port"]),
                 "--pan", "6222021000111122221", "--amount", "12.34"],
                preexec_fn=_permissive,
            )
        )  # fmt: skip
        assert json.loads(sale.stdout)["approved"], sale.stdout + sale.stderr
        closed = await _operator("settle", "cutoff", "--config", str(config), "--url", url)
        day = str(closed["business_date"])
        settled: dict[str, object] = {}

        def files_written() -> bool:
            nonlocal settled
            result = run_switch(
                ["settle", "status", "--config", str(config), "--url", url, "--date", day,
                 "--json"]
            )  # fmt: skip
            settled = json.loads(result.stdout) if result.returncode == 0 else {}
            return bool(settled.get("files_written_at"))

        with trio.fail_after(30):
            while not await trio.to_thread.run_sync(files_written):
                await trio.sleep(0.1)
    finally:
        assert await switch.stop() == 0, switch.output()
    sim = await Process.start(
        ["sim-bank", "--config", str(config), "--bank", "icbc", "--port", "0",
         "--totals-file", str(var / "icbc-totals.json")],
        tmp_path, name="sim", preexec_fn=_permissive,
    )  # fmt: skip
    await sim.wait_for_event("simulator_started")
    assert await sim.stop() == 0, sim.output()

    modes = _modes(var)
    compact = day.replace("-", "")
    for made in (
        "journal.sqlite3", "journal.sqlite3.lock", "settlement.sqlite3",
        f"settlement/payouts-{compact}.csv", f"settlement/recon-{compact}.csv",
        f"clearing/icbc-{compact}.clr", "pos-batch-POS00001-898310048990001.json",
        "icbc-totals.json",
    ):  # fmt: skip
        assert made in modes, sorted(modes)
    folders = {name for name in modes if (var / name).is_dir()}
    assert {"."} | {"settlement", "clearing"} <= folders
    wrong = {
        name: mode
        for name, mode in modes.items()
        if mode != ("0700" if name in folders else "0600")
    }
    assert not wrong, modes


def _key_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "card-keys.toml"
    path.write_text(new_key_file_text())
    path.chmod(mode)
    return path


def test_a_key_file_others_can_read_refuses_the_start_in_one_line(tmp_path: Path) -> None:
    settings = demo_config(tmp_path)
    key_file = _key_file(tmp_path, 0o644)
    settings["journal"]["key_file"] = str(key_file)
    config = write_config(tmp_path, settings)
    result = run_switch(["run", "--config", str(config)])
    assert_refused_in_one_line(result, str(key_file), "0644", "chmod 600")
    assert not (tmp_path / "journal.sqlite3").exists()
    check = run_switch(["config", "check", "--config", str(config)])
    assert check.returncode == 2 and "0644" in check.stderr, check.stderr

    key_file.chmod(0o640)  # a group's read is refused as well
    assert_refused_in_one_line(run_switch(["run", "--config", str(config)]), "0640")


def test_a_key_file_of_its_owner_only_or_keys_in_the_environment_start(tmp_path: Path) -> None:
    """0600 and 0400 pass the check, and key_env's text is not a file at all (a
    readable key_file beside it is not read)."""
    settings = demo_config(tmp_path)
    key_file = _key_file(tmp_path, 0o400)
    settings["journal"]["key_file"] = str(key_file)
    config = write_config(tmp_path, settings)
    assert run_switch(["config", "check", "--config", str(config)]).returncode == 0
    key_file.chmod(0o644)
    variable = {settings["journal"]["key_env"]: new_key_file_text()}
    checked = run_switch(["config", "check", "--config", str(config)], env=variable)
    assert checked.returncode == 0, checked.stderr
