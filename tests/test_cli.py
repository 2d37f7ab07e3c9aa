"""The ``switch`` command as an operator runs it: a real process, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import trio

from switch import cli
from switch.cli import parse_amount
from switch.core.validate import MAX_AMOUNT
from switch.net.clients import PosClient
from switch.store.crypto import load_card_keys
from switch.store.port import Change, ReversalQueued, TxnStarted, TxnUpdated
from switch.store.sqlite import JournalFile, SqliteJournal
from switch.terminal import Terminal
from tests.conftest import DIALECTS, REPO
from tests.net.helpers import PAN_ICBC, POS_CODEC
from tests.store.records import make_record

# Every test here starts switch processes: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow


def _demo_config_on_free_ports(tmp_path: Path, *, latency_ms: int = 0) -> Path:
    """conf/switch.toml with every port 0 (the switch logs the ones it bound), without
    the demo's [risk] section and [credit] own_merchant_id (the README's walkthroughs':
    tests start from neither, and add their own)."""
    text = (REPO / "conf" / "switch.toml").read_text()
    text = re.sub(r"(?m)^\[risk\].*\n(?:(?!\[).*\S.*\n)*", "", text)
    text = re.sub(r"(?m)^own_merchant_id = .*\n", "", text)
    for port in ("8583", "8584", "8585", "9101", "9102", "9103", "9104"):
        text = text.replace(f"port = {port}", "port = 0")
    text = text.replace('dialects_dir = "dialects"', f'dialects_dir = "{DIALECTS}"')
    text = text.replace(
        'key_file = "card-keys.toml"', f'key_file = "{REPO / "conf" / "card-keys.toml"}"'
    )
    text = text.replace(
        'path = "../var/journal.sqlite3"', f'path = "{tmp_path / "journal.sqlite3"}"'
    )
    text = text.replace("shutdown_grace_s = 10.0", "shutdown_grace_s = 5.0")
    text = text.replace(
        'merchants_file = "merchants.csv"', f'merchants_file = "{REPO / "conf" / "merchants.csv"}"'
    )
    text = text.replace(
        'out_dir = "../var/settlement"', f'out_dir = "{tmp_path / "settlement"}"'
    )
    if latency_ms:
        text += f"\n[banks.icbc.sim]\nlatency_ms = {latency_ms}\n"
    path = tmp_path / "switch.toml"
    path.write_text(text)
    return path


class RunningSwitch:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.output = bytearray()

    async def wait_for_event(self, event: str, count: int = 1) -> dict[str, object]:
        """The ``count``-th log line of ``event``, waiting for it as needed."""
        assert self.process.stdout is not None
        with trio.fail_after(20):
            while True:
                seen = [
                    record
                    for line in bytes(self.output).splitlines()
                    if line.startswith(b"{") and (record := json.loads(line)).get("event") == event
                ]
                if len(seen) >= count:
                    return seen[count - 1]  # type: ignore[no-any-return]
                chunk = await self.process.stdout.receive_some(65536)
                assert chunk, f"switch exited before {event}: {self.output.decode()}"
                self.output += chunk

    async def read_to_end(self) -> None:
        assert self.process.stdout is not None
        while chunk := await self.process.stdout.receive_some(65536):
            self.output += chunk


async def _start(config: Path) -> RunningSwitch:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "switch", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    return RunningSwitch(process)


def test_help_describes_every_command() -> None:
    for args in (["--help"], ["run", "--help"], ["sim-bank", "--help"], ["pos", "--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "switch", *args], capture_output=True, text=True, check=True
        )
        assert "usage: switch" in result.stdout
    assert (
        "--bank"
        in subprocess.run(
            [sys.executable, "-m", "switch", "sim-bank", "--help"], capture_output=True, text=True
        ).stdout
    )


def test_config_typo_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        (REPO / "conf" / "switch.toml").read_text().replace("links = 2", "linkz = 2", 1)
    )
    result = subprocess.run(
        [sys.executable, "-m", "switch", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "linkz" in result.stderr


async def test_pos_sale_against_the_demo_prints_an_approval(tmp_path: Path) -> None:
    switch = await _start(_demo_config_on_free_ports(tmp_path))
    try:
        started = await switch.wait_for_event("switch_started")
        await switch.wait_for_event("link_signed_on", count=8)
        result = await trio.run_process(
            [
                sys.executable,
                "-m",
                "switch",
                "pos",
                "sale",
                "--config",
                str(tmp_path / "switch.toml"),
                "--port",
                str(started["pos_port"]),
                "--amount",
                "100.00",
            ],
            capture_stdout=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout
        printed = json.loads(result.stdout)
        assert printed["approved"] is True and printed["response_code"] == "00"
        assert printed["fields"]["2"] == "622202*********2221"
        assert printed["fields"]["4"] == "000000010000"
    finally:
        switch.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await switch.read_to_end()
            assert await switch.process.wait() == 0


async def _pos_command(config: Path, port: object, *args: str) -> dict[str, Any]:
    """``switch pos ...`` against a running switch; its printed JSON."""
    result = await trio.run_process(
        [sys.executable, "-m", "switch", "pos", *args, "--config", str(config), "--port",
         str(port)],
        capture_stdout=True, capture_stderr=True, check=False, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    printed: dict[str, Any] = json.loads(result.stdout)
    return printed


async def test_pos_sale_sale_void_settle_balances_and_starts_the_next_batch(
    tmp_path: Path,
) -> None:
    """The operator's smoke test of a batch: each command a process of its own, the
    terminal's batch kept in its batch file between them (beside the journal)."""
    config = _demo_config_on_free_ports(tmp_path)
    switch = await _start(config)
    try:
        started = await switch.wait_for_event("switch_started")
        await switch.wait_for_event("link_signed_on", count=8)
        port = started["pos_port"]
        first = await _pos_command(config, port, "sale", "--amount", "100.00")
        second = await _pos_command(config, port, "sale", "--amount", "20.00")
        assert first["approved"] and second["approved"]
        void = await _pos_command(config, port, "void", "--rrn", second["fields"]["37"])
        assert void["approved"] and void["fields"]["4"] == "000000002000"  # from the file
        batch_file = tmp_path / "pos-batch-POS00001-898310048990001.json"
        kept = json.loads(batch_file.read_text())
        assert [entry["kind"] for entry in kept["entries"]] == ["sale", "sale", "void"]

        settled = await _pos_command(config, port, "settle")
        assert (settled["mti"], settled["response_code"], settled["balanced"]) == (
            "0510", "00", True,
        )  # fmt: skip
        assert settled["fields"]["48"][30] == "1" and settled["upload"] is None
        assert settled["totals"] == {
            "debit_fen": 10000, "debit_count": 1, "credit_fen": 0, "credit_count": 0,
        }  # fmt: skip
        assert (settled["batch"], settled["next_batch"]) == ("000001", "000002")
        assert json.loads(batch_file.read_text()) | {"entries": []} == {
            "terminal_id": "POS00001", "merchant_id": "898310048990001", "batch": 2,
            "entries": [],
        }  # fmt: skip

        # A terminal that lost its record of batch 1 settles it with nothing: not
        # balanced, so it uploads its (empty) record and closes the batch.
        lost = tmp_path / "lost.json"
        unbalanced = await _pos_command(
            config, port, "settle", "--batch", "1", "--batch-file", str(lost)
        )
        assert (unbalanced["response_code"], unbalanced["balanced"]) == ("00", False)
        assert unbalanced["upload"]["complete"] is True
        assert [m["mti"] for m in unbalanced["upload"]["answers"]] == ["0330"]
        assert unbalanced["upload"]["answers"][0]["response_code"] == "00"
        assert json.loads(lost.read_text())["batch"] == 2
        # Another batch is taken while the file's holds nothing, and refused (before
        # anything is sent) while it holds a transaction.
        moved = await _pos_command(config, port, "sale", "--amount", "1.00", "--batch", "7")
        assert moved["fields"]["60"] == "22000007"
        assert json.loads(batch_file.read_text())["batch"] == 7
        again = await trio.run_process(
            [sys.executable, "-m", "switch", "pos", "sale", "--batch", "8", "--config",
             str(config), "--port", "1"],
            capture_stdout=True, capture_stderr=True, check=False, cwd=REPO,
        )  # fmt: skip
        assert (
            again.returncode == 2
            and b"holds batch 000007, not settled (1 recorded)" in again.stderr
        )
    finally:
        switch.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await switch.read_to_end()
            assert await switch.process.wait() == 0


async def test_sigterm_lets_in_flight_transactions_finish_then_exits_0(tmp_path: Path) -> None:
    switch = await _start(_demo_config_on_free_ports(tmp_path, latency_ms=800))
    started = await switch.wait_for_event("switch_started")
    port = int(str(started["pos_port"]))
    await switch.wait_for_event("link_signed_on", count=8)  # 4 banks, 2 links each
    codes: list[str] = []

    async def sale(stan: int) -> None:
        client = await PosClient.connect(
            "127.0.0.1", port, POS_CODEC, Terminal(terminal_id=f"S{stan:07d}")
        )
        response = await client.request(client.terminal.sale(stan, PAN_ICBC, 1000 + stan * 100))
        codes.append(str(response.fields[39]))

    async with trio.open_nursery() as nursery:
        for stan in range(1, 6):
            nursery.start_soon(sale, stan)
        await trio.sleep(0.3)  # the sales are at the bank, which takes 0.8 s
        switch.process.send_signal(signal.SIGTERM)
        await switch.wait_for_event("switch_draining")
        # No new connection is accepted while draining: it is refused, closed at once,
        # or, if it reached the listener's backlog just before the listener closed,
        # reset (trio reports that as a BrokenResourceError).
        try:
            late = await trio.open_tcp_stream("127.0.0.1", port)
            with trio.fail_after(5):
                assert await late.receive_some(10) == b""
        except (OSError, trio.BrokenResourceError):
            pass
    assert codes == ["00"] * 5
    with trio.fail_after(20):
        await switch.read_to_end()
        assert await switch.process.wait() == 0
    assert b"switch_stopped" in switch.output


# -- the operator's commands ---------------------------------------------------------


def _switch(*args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    """A ``switch`` command to its end, from the repository's root unless ``cwd`` says."""
    return subprocess.run(
        [sys.executable, "-m", "switch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **{"cwd": REPO, **options},
    )


def test_version_is_the_package_version() -> None:
    result = _switch("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"switch {metadata.version('payswitch')}"


def test_each_pos_message_has_its_own_help_and_options() -> None:
    listed = _switch("pos", "--help").stdout
    for message in ("sale", "balance", "void", "refund", "echo", "signon", "settle", "preauth",
                    "complete", "preauth-void", "complete-void"):  # fmt: skip
        assert message in listed
    sale = _switch("pos", "sale", "--help")
    assert sale.returncode == 0 and "usage: switch pos sale" in sale.stdout
    assert "--amount" in sale.stdout and "--pan" in sale.stdout
    balance = _switch("pos", "balance", "--help").stdout
    assert "--pan" in balance and "--amount" not in balance
    for message in ("echo", "signon"):
        text = _switch("pos", message, "--help").stdout
        assert f"usage: switch pos {message}" in text
        assert "--amount" not in text and "--pan" not in text and "--terminal" in text
    for message in ("void", "refund"):
        text = _switch("pos", message, "--help").stdout
        assert "--rrn" in text and "--original-stan" in text and "--expiry" not in text
    settle = _switch("pos", "settle", "--help").stdout
    assert "--batch-file" in settle and "--pan" not in settle and "--amount" not in settle
    assert "48.5" in settle and "next batch" in settle
    # An option of another message is refused, not ignored.
    assert _switch("pos", "echo", "--amount", "1.00").returncode == 2


@pytest.mark.parametrize(
    ("amount", "why"),
    [
        ("-5", "must be more than 0"),
        ("0", "must be more than 0"),
        ("0.00", "must be more than 0"),
        ("100.001", "more than 2 decimals"),
        ("1e3", "not an amount in yuan"),
        ("12,50", "not an amount in yuan"),
        ("NaN", "not an amount in yuan"),
        ("10000000000.00", "12 digits in fen"),
    ],
)
def test_a_bad_amount_is_refused_in_one_line(tmp_path: Path, amount: str, why: str) -> None:
    """Before anything is sent (no switch runs here: nothing to connect to)."""
    config = _demo_config_on_free_ports(tmp_path)
    result = _switch("pos", "sale", "--config", str(config), "--port", "1", "--amount", amount)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"switch: --amount {amount!r}: ") and why in line


@pytest.mark.parametrize(
    ("amount", "fen"),
    [
        ("100", 10000),
        ("100.5", 10050),
        ("100.00", 10000),
        ("0.01", 1),
        ("9999999999.99", MAX_AMOUNT),
    ],
)
def test_amounts_in_yuan_become_fen_exactly(amount: str, fen: int) -> None:
    assert parse_amount(amount) == fen


def test_keys_new_out_writes_an_owner_only_file_and_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "card-keys.toml"
    result = _switch("keys", "new", "--out", str(out), preexec_fn=lambda: os.umask(0o022))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    written = out.read_text()
    keys = load_card_keys(key_file=out, key_env=None)
    assert keys.active == 1 and len(keys.keys) == 1

    again = _switch("keys", "new", "--out", str(out))
    assert again.returncode == 2
    (line,) = again.stderr.splitlines()
    assert str(out) in line and "not overwritten" in line
    assert out.read_text() == written

    printed = _switch("keys", "new")  # no --out: on stdout, as before
    assert printed.returncode == 0 and printed.stdout.startswith("active = 1")
    assert printed.stdout != written  # fresh keys each time


async def _journal_of(path: Path, *changes: Change) -> None:
    """A journal file holding ``changes``, written through the journal port."""
    journal = SqliteJournal(JournalFile(path))
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.commit(*changes)
        nursery.cancel_scope.cancel()


def _at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def test_journal_find_date_is_the_switchs_local_day(tmp_path: Path) -> None:
    """At UTC+8 a sale at 23:30 UTC on 22 November is on the 23rd, local time (its field
    13 and RRN say 1123): --date 2026-11-23 finds it, --date 2026-11-22 does not."""
    config = _demo_config_on_free_ports(tmp_path)  # utc_offset_h = 8
    after_midnight = make_record("633270000001", local_date="1123")
    before_midnight = make_record("633260000002", local_date="1122")
    a_year_before = make_record("533270000003", local_date="1123")
    await _journal_of(
        tmp_path / "journal.sqlite3",
        TxnStarted.of(after_midnight, _at("2026-11-22T23:30:00+00:00")),  # 07:30 local, 23rd
        TxnStarted.of(before_midnight, _at("2026-11-22T15:30:00+00:00")),  # 23:30 local, 22nd
        TxnStarted.of(a_year_before, _at("2025-11-23T02:00:00+00:00")),
    )

    def found(date: str) -> list[str]:
        result = _switch(
            "journal", "find", "--terminal", "POS00001", "--date", date,
            "--config", str(config), "--json",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return [row["rrn"] for row in json.loads(result.stdout)]

    assert found("2026-11-23") == ["633270000001"]
    assert found("2026-11-22") == ["633260000002"]
    assert found("2026-11-24") == []
    assert found("1123") == ["533270000003", "633270000001"]  # MMDD: any year
    help_text = _switch("journal", "find", "--help").stdout
    assert "local date" in help_text and "utc_offset_h" in help_text
    bad = _switch(
        "journal", "find", "--terminal", "T", "--date", "2026-02-30", "--config", str(config)
    )
    assert bad.returncode == 2 and bad.stderr.splitlines() == [
        "switch: --date '2026-02-30': not a date (YYYY-MM-DD)"
    ]


async def test_switch_config_names_the_config_from_any_folder(tmp_path: Path) -> None:
    """SWITCH_CONFIG is the config of every command given no --config, whatever the
    current folder; a config that cannot be read says where its path came from."""
    config = _demo_config_on_free_ports(tmp_path)
    await _journal_of(tmp_path / "journal.sqlite3", TxnStarted.of(make_record("633270000010"), 1.0))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = os.environ | {"SWITCH_CONFIG": str(config)}
    shown = _switch("journal", "show", "633270000010", "--json", cwd=elsewhere, env=environment)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)[0]["transaction"]["rrn"] == "633270000010"
    assert _switch("config", "check", cwd=elsewhere, env=environment).stdout.startswith("ok: ")

    without = {key: value for key, value in os.environ.items() if key != "SWITCH_CONFIG"}
    default = _switch("saf", "list", cwd=elsewhere, env=without)
    assert default.returncode == 2 and default.stderr.splitlines() == [
        "switch: cannot read config conf/switch.toml: No such file or directory (neither "
        f"--config nor $SWITCH_CONFIG given: the default, from the current folder {elsewhere}; "
        "give --config PATH or export SWITCH_CONFIG=PATH)"
    ]
    missing = str(tmp_path / "gone.toml")
    named = _switch("status", cwd=elsewhere, env=without | {"SWITCH_CONFIG": missing})
    assert named.returncode == 2 and named.stderr.splitlines() == [
        f"switch: cannot read config {missing}: No such file or directory (named by "
        "$SWITCH_CONFIG; --config overrides it)"
    ]
    given = _switch("journal", "show", "1", "--config", missing, cwd=elsewhere, env=environment)
    assert given.returncode == 2 and given.stderr.splitlines() == [
        f"switch: cannot read config {missing}: No such file or directory (named by "
        "--config; without it $SWITCH_CONFIG, else conf/switch.toml)"
    ]


async def test_saf_list_json_of_an_empty_queue_is_an_empty_array(tmp_path: Path) -> None:
    config = _demo_config_on_free_ports(tmp_path)
    await _journal_of(tmp_path / "journal.sqlite3")
    listed = _switch("saf", "list", "--config", str(config), "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    assert _switch("saf", "list", "--config", str(config)).stdout.strip() == "(none)"


async def test_journal_show_prints_every_time_as_iso_8601(tmp_path: Path) -> None:
    config = _demo_config_on_free_ports(tmp_path)
    record = make_record("633270000009")
    started, answered = _at("2026-11-22T23:30:00+00:00"), _at("2026-11-22T23:30:05+00:00")
    record.state, record.code = "no_answer", "68"
    await _journal_of(
        tmp_path / "journal.sqlite3",
        TxnStarted.of(make_record("633270000009"), started),
        TxnUpdated.of(record, answered, "issuer timeout"),
        ReversalQueued(rrn=record.rrn, bank="icbc", reason="no final answer (68)", at=answered),
    )
    shown = _switch("journal", "show", record.rrn, "--config", str(config), "--json")
    assert shown.returncode == 0, shown.stderr
    (history,) = json.loads(shown.stdout)
    times = {
        "transaction.created_at": history["transaction"]["created_at"],
        "transaction.updated_at": history["transaction"]["updated_at"],
        "events[0].at": history["events"][0]["at"],
        "events[1].at": history["events"][1]["at"],
        "reversal.created_at": history["reversal"]["created_at"],
        "reversal.next_attempt_at": history["reversal"]["next_attempt_at"],
    }
    assert times == {
        "transaction.created_at": "2026-11-22T23:30:00+00:00",
        "transaction.updated_at": "2026-11-22T23:30:05+00:00",
        "events[0].at": "2026-11-22T23:30:00+00:00",
        "events[1].at": "2026-11-22T23:30:05+00:00",
        "reversal.created_at": "2026-11-22T23:30:05+00:00",
        "reversal.next_attempt_at": "2026-11-22T23:30:05+00:00",
    }

    def floats(value: object) -> list[float]:
        if isinstance(value, float):
            return [value]
        if isinstance(value, dict):
            return [f for item in value.values() for f in floats(item)]
        if isinstance(value, list):
            return [f for item in value for f in floats(item)]
        return []

    assert floats(history) == []  # no epoch seconds beside the ISO times
    table = _switch("journal", "show", record.rrn, "--config", str(config))
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("2026-11-22T23:30:05+00:00") >= 3
    assert not re.search(r"\b1[0-9]{9}\.[0-9]", table.stdout), table.stdout


def test_config_check_says_ok_or_names_every_problem_and_starts_nothing(tmp_path: Path) -> None:
    config = _demo_config_on_free_ports(tmp_path)
    ok = _switch("config", "check", "--config", str(config))
    assert (ok.returncode, ok.stdout.strip()) == (0, f"ok: {config}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = config.read_text().replace('dialect = "cup-pos"', 'dialect = "cup-typo"')
        text = text.replace('bank = "citic"', 'bank = "nobody"', 1)
        text = text.replace("port = 0", f"port = {port}", 1)  # [pos]
        config.write_text(text)
        bad = _switch("config", "check", "--config", str(config))
    problems = bad.stderr.strip().splitlines()
    assert bad.returncode == 2
    assert [line.split(": ", 2)[2].split(":")[0] for line in problems] == [
        "pos.dialect",
        "routes",
        f"[pos] port {port} on 127.0.0.1 is in use",
    ], problems
    assert not (tmp_path / "journal.sqlite3").exists()  # nothing was started or created
    config.write_text(config.read_text() + "\n[admin_typo]\nport = 1\n")
    typo = _switch("config", "check", "--config", str(config))
    assert typo.returncode == 2 and len(typo.stderr.strip().splitlines()) == 1
    assert "admin_typo" in typo.stderr


async def test_console_log_format_puts_the_event_first_on_one_line(tmp_path: Path) -> None:
    config = _demo_config_on_free_ports(tmp_path)
    config.write_text(
        config.read_text().replace('level = "info"', 'level = "info"\nformat = "console"')
    )
    switch = await _start(config)
    assert switch.process.stdout is not None
    try:
        with trio.fail_after(20):
            while b"\nswitch_started " not in switch.output:
                chunk = await switch.process.stdout.receive_some(65536)
                assert chunk, switch.output.decode()
                switch.output += chunk
        started = next(
            line for line in bytes(switch.output).decode().splitlines()
            if line.startswith("switch_started ")
        )  # fmt: skip
        assert "[info]" in started and "pos_port=" in started
    finally:
        switch.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await switch.read_to_end()
            assert await switch.process.wait() == 0
    assert not any(line.startswith("{") for line in bytes(switch.output).decode().splitlines())


def test_an_operator_command_whose_journal_dsn_is_not_set_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _demo_config_on_free_ports(tmp_path)
    text = config.read_text().replace(
        f'path = "{tmp_path / "journal.sqlite3"}"',
        'backend = "postgresql"\ndsn_env = "SWITCH_TEST_DSN_NEVER_SET"',
    )
    config.write_text(text)
    assert cli.main(["journal", "show", "633630000001", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert error.strip().splitlines() == [
        "switch: journal.dsn_env: the variable SWITCH_TEST_DSN_NEVER_SET is not set (and no dsn)"
    ]


async def test_pos_preauth_complete_void_and_complete_again_settles_balanced(
    tmp_path: Path,
) -> None:
    """`switch pos preauth / complete / complete-void / preauth-void` against a running
    switch, each a process: the completion is the batch file's debit, its void cancels
    it, and the batch settles balanced."""
    config = _demo_config_on_free_ports(tmp_path)
    switch = await _start(config)
    try:
        started = await switch.wait_for_event("switch_started")
        await switch.wait_for_event("link_signed_on", count=8)
        port = started["pos_port"]
        held = await _pos_command(config, port, "preauth", "--amount", "500.00")
        assert held["approved"] and held["mti"] == "0110"
        auth, stan, day = held["fields"]["38"], held["fields"]["11"], held["fields"]["13"]
        original = ["--auth", auth, "--original-stan", stan]
        over = await _pos_command(config, port, "complete", "--amount", "575.01",
                                  "--original-date", day, *original)  # fmt: skip
        assert over["response_code"] == "61"
        done = await _pos_command(config, port, "complete", "--amount", "520.00",
                                  "--original-date", day, *original)  # fmt: skip
        assert done["approved"] and done["mti"] == "0210"
        cancel = await _pos_command(
            config, port, "complete-void", "--rrn", done["fields"]["37"], "--amount", "520.00",
            "--auth", done["fields"]["38"], "--original-stan", done["fields"]["11"],
        )  # fmt: skip
        assert cancel["approved"]
        again = await _pos_command(config, port, "complete", "--amount", "480.00",
                                   "--original-date", day, *original)  # fmt: skip
        assert again["approved"]
        other = await _pos_command(config, port, "preauth", "--amount", "10.00")
        released = await _pos_command(
            config, port, "preauth-void", "--rrn", other["fields"]["37"], "--amount", "10.00",
            "--auth", other["fields"]["38"], "--original-stan", other["fields"]["11"],
        )  # fmt: skip
        assert released["approved"] and released["mti"] == "0110"
        batch_file = tmp_path / "pos-batch-POS00001-898310048990001.json"
        kept = json.loads(batch_file.read_text())
        assert [e["kind"] for e in kept["entries"]] == ["completion", "void", "completion"]
        settled = await _pos_command(config, port, "settle")
        assert settled["balanced"] is True
        assert settled["totals"]["debit_fen"] == 48000 and settled["totals"]["debit_count"] == 1
    finally:
        switch.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await switch.read_to_end()
            assert await switch.process.wait() == 0


async def test_pos_signs_on_keeps_its_keys_0600_and_sends_its_pin(tmp_path: Path) -> None:
    """`switch pos` is a terminal of security.md against the demo (its '*' entry, the
    DEMO TMK): it signs on, keeps its working keys in a 0600 file for the next command,
    MACs, and encrypts --pin under its PIK; the issuer (simulator, PIN 123456) judges."""
    config = _demo_config_on_free_ports(tmp_path)
    switch = await _start(config)
    try:
        started = await switch.wait_for_event("switch_started")
        await switch.wait_for_event("link_signed_on", count=8)
        port = started["pos_port"]
        keys_file = tmp_path / "terminal-keys.json"
        common = ("--keys-file", str(keys_file), "--terminal", "CLI00001")
        right = await _pos_command(config, port, "sale", "--pin", "123456", *common)
        assert right["response_code"] == "00"
        assert keys_file.stat().st_mode & 0o777 == 0o600
        kept = keys_file.read_bytes()
        wrong = await _pos_command(config, port, "sale", "--pin", "654321", *common)
        assert wrong["response_code"] == "55"
        assert keys_file.read_bytes() == kept  # the same keys: no second sign-on
        no_pin = await _pos_command(config, port, "balance", *common)
        assert no_pin["response_code"] == "00"
        signon = await _pos_command(config, port, "signon", *common)
        assert signon["response_code"] == "00" and "not shown" in signon["fields"]["62"]
        assert keys_file.read_bytes() != kept  # new keys
    finally:
        switch.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await switch.read_to_end()
            assert await switch.process.wait() == 0
