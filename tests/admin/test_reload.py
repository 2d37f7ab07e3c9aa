"""``switch reload`` (POST /reload) as an operator runs it: the configuration file of a
real ``switch run`` edited, the running switch told, its answer and status read."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from switch import cli
from switch.admin.status import status_decoder
from tests.admin.conftest import SwitchRun, switch_running
from tests.switch_process import demo_config, run_switch, write_config

# Every test here starts switch processes: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow


@pytest.fixture
def reloadable_switch(tmp_path: Path) -> Iterator[SwitchRun]:
    """A ``switch run`` of the test's own, since the test changes its configuration."""
    with switch_running(tmp_path, demo_config(tmp_path)) as run:
        yield run


def test_switch_reload_takes_a_new_bank_and_refuses_a_bad_file(
    reloadable_switch: SwitchRun, tmp_path: Path
) -> None:
    run = reloadable_switch
    settings = demo_config(tmp_path)
    settings["banks"]["boc"] = {**settings["banks"]["icbc"], "port": 0}
    settings["routes"].append({"prefix": "621700", "bank": "boc"})
    write_config(tmp_path, settings)
    taken = run_switch(["reload", "--json", "--config", str(run.config), "--url", run.url])
    assert taken.returncode == 0, taken.stderr
    answer = json.loads(taken.stdout)
    assert answer["accepted"] and answer["changes"] == {"banks_added": ["boc"], "routes": True}
    status = run_switch(["status", "--json", "--config", str(run.config), "--url", run.url])
    document = status_decoder.decode(status.stdout)
    assert document.config.version == 2 and "boc" in [bank.name for bank in document.banks]

    settings["routes"].append({"prefix": "621701", "bank": "nobody"})
    write_config(tmp_path, settings)
    refused = run_switch(["reload", "--json", "--config", str(run.config), "--url", run.url])
    assert refused.returncode == 2
    assert json.loads(refused.stdout)["problems"] == [
        "routes: prefix 621701 names unknown bank 'nobody'"
    ]
    status = run_switch(["status", "--json", "--config", str(run.config), "--url", run.url])
    document = status_decoder.decode(status.stdout)
    assert document.config.version == 2  # the running configuration stayed
    assert document.config.last_reload_error == "routes: prefix 621701 names unknown bank 'nobody'"


def test_reload_and_config_check_say_what_changes_key_by_key(tmp_path: Path) -> None:
    settings = demo_config(tmp_path)
    settings["admin"]["port"] = free_port()  # the file names where its switch answers
    with switch_running(tmp_path, settings) as run:
        same = run_switch(["config", "check", "--config", str(run.config)])
        assert same.returncode == 0, same.stderr
        assert "the running switch has this configuration" in same.stdout

        assert settings["switch"]["max_in_flight"] == 128
        settings["switch"]["max_in_flight"] = 256
        settings["banks"]["icbc"]["window"] = 16
        settings["banks"]["boc"] = {**settings["banks"]["icbc"], "port": 0}
        settings["routes"].append({"prefix": "621700", "bank": "boc"})
        settings["settlement"]["cutoff"] = "22:30"
        write_config(tmp_path, settings)
        checked = run_switch(["config", "check", "--config", str(run.config)])
        assert checked.returncode == 0, checked.stderr
        notes = [line for line in checked.stdout.splitlines() if "a reload changes" in line]
        assert notes == [
            f"note: {run.config}: a reload changes switch.max_in_flight 128 \u2192 256",
            f"note: {run.config}: a reload changes banks.icbc.window 32 \u2192 16",
            f"note: {run.config}: a reload changes banks.boc added",
            f"note: {run.config}: a reload changes routes.621700 added",
            f'note: {run.config}: a reload changes settlement.cutoff "23:00" \u2192 "22:30"  '
            "(only at a restart)",
        ]
        status = run_switch(["status", "--json", "--config", str(run.config)])
        assert status_decoder.decode(status.stdout).config.version == 1  # checked, not taken

        taken = run_switch(["reload", "--config", str(run.config)])
        assert taken.returncode == 0, taken.stderr
        assert taken.stdout.splitlines() == [
            "reloaded: configuration version 2",
            "  switch.max_in_flight 128 \u2192 256",
            "  banks.icbc.window 32 \u2192 16",
            "  banks.boc added",
            "  routes.621700 added",
            '  settlement.cutoff "23:00" \u2192 "22:30"  (only at a restart)',
        ]
        again = run_switch(["reload", "--json", "--config", str(run.config)])
        assert json.loads(again.stdout)["diff"] == []

        settings["journal"]["path"] = str(tmp_path / "elsewhere.sqlite3")
        write_config(tmp_path, settings)
        refused = run_switch(["reload", "--config", str(run.config)])
        assert refused.returncode == 2
        assert refused.stdout.splitlines() == [
            "refused: journal.path cannot change without a restart",
            "the running configuration stays (version 2); the file would have changed:",
            f"  journal.path {json.dumps(str(tmp_path / 'journal.sqlite3'))} \u2192 "
            f"{json.dumps(settings['journal']['path'])}  (only at a restart)",
        ]


RAPID_RELOADS = 50


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_rapid_reloads_keep_an_in_process_simulator_and_a_failed_bind_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rapid reloads are ``switch reload``'s own code called here (cli.main), one
    right after another, not a process each: the running switch sees the same POSTs."""
    settings = demo_config(tmp_path)
    settings["banks"]["icbc"]["port"] = free_port()  # simulated here, on a fixed port
    with switch_running(tmp_path, settings) as run:
        for turn in range(RAPID_RELOADS):
            settings["banks"]["icbc"]["issuer_timeout_s"] = 4.0 if turn % 2 == 0 else 5.0
            write_config(tmp_path, settings)
            code = cli.main(["reload", "--json", "--config", str(run.config), "--url", run.url])
            taken = capsys.readouterr()
            assert code == 0, (turn, taken.out, taken.err)
            assert json.loads(taken.out)["changes"] == {"banks_changed": ["icbc"]}
        status = run_switch(["status", "--json", "--config", str(run.config), "--url", run.url])
        document = status_decoder.decode(status.stdout)
        assert document.config.version == 1 + RAPID_RELOADS
        assert document.config.last_reload_error is None
        icbc = next(bank for bank in document.banks if bank.name == "icbc")
        assert icbc.links_up == 2

        # Its simulator itself changed: a second one cannot bind the port the running
        # one holds, and the reload is refused with that reason, kept in the status.
        settings["banks"]["icbc"].setdefault("sim", {})["latency_ms"] = 5
        write_config(tmp_path, settings)
        refused = run_switch(["reload", "--json", "--config", str(run.config), "--url", run.url])
        assert refused.returncode == 2, refused.stderr
        [problem] = json.loads(refused.stdout)["problems"]
        port = settings["banks"]["icbc"]["port"]
        assert problem.startswith(f"banks.icbc: its simulator cannot listen on 127.0.0.1:{port}")
        status = run_switch(["status", "--json", "--config", str(run.config), "--url", run.url])
        document = status_decoder.decode(status.stdout)
        assert document.config.version == 1 + RAPID_RELOADS
        assert document.config.last_reload_error == problem
        assert not [r for r in run.records() if r.get("event") == "admin_endpoint_failed"]
