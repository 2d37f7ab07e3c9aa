"""Every operator command against a real ``switch run`` on each journal engine, as an
operator types them (real processes; the settlement commands over real HTTP to the
admin interface, the journal and SAF commands straight on the journal): ``switch
journal show|find``, ``switch saf list|retry``, ``switch settle cutoff|status|run`` and
``switch ledger balance``. On PostgreSQL nothing is written beside the config: the
journal and the settlement store are the database's."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

from switch.net.clients import PosClient
from switch.terminal import Terminal
from tests.admin.conftest import SwitchRun, switch_running
from tests.net.helpers import PAN_CMB, PAN_ICBC, POS_CODEC
from tests.store.engines import ENGINES
from tests.switch_process import demo_config, run_switch

# Every test here starts switch processes: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

TERMINAL = "T0000042"
SETTLED_WITHIN_S = 30.0


def operator_settings(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> dict[str, Any]:
    """The demo config on ``engine``; cmb answers after its timeout, so that a sale there
    is answered 68 and its reversal, not answered either, waits for an operator."""
    settings = demo_config(tmp_path)
    if engine == "postgresql":
        settings["journal"].update(
            backend="postgresql", dsn=request.getfixturevalue("postgres_dsn")
        )
    settings["saf"].update(max_attempts=1, backoff_min_s=0.1, poll_interval_s=0.1)
    cmb = settings["banks"]["cmb"]
    cmb["issuer_timeout_s"] = 0.3
    cmb["circuit_timeouts"] = 1000  # its timeouts must not open its circuit: not sent
    cmb.setdefault("sim", {})["latency_ms"] = 1000
    return settings


def sqlite_files(folder: Path) -> list[Path]:
    return list(folder.glob("*.sqlite3"))


async def switch(run: SwitchRun, *args: str, admin: bool = False) -> Any:
    """``switch ARGS --config ... --json`` (and ``--url`` for the admin commands) to its
    end; its JSON output, once it exited 0."""
    command = [*args, "--config", str(run.config), "--json", *(["--url", run.url] if admin else [])]
    done = await trio.to_thread.run_sync(lambda: run_switch(command))
    assert done.returncode == 0, f"switch {' '.join(args)}: {done.stderr}"
    return json.loads(done.stdout)


async def refused(run: SwitchRun, *args: str) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: run_switch([*args, "--config", str(run.config)]))


async def sale(run: SwitchRun, terminal: Terminal, stan: int, pan: str, amount: int) -> Any:
    return await send(run, terminal, terminal.sale(stan, pan, amount))


async def send(run: SwitchRun, terminal: Terminal, message: Any) -> Any:
    client = await PosClient.connect("127.0.0.1", run.pos_port, POS_CODEC, terminal)
    try:
        with trio.fail_after(10):
            return (await client.request(message)).fields
    finally:
        await client.aclose()


async def test_journal_show_of_a_voided_sale_names_the_void_and_says_yuan(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A sale voided: its history names the void by RRN, its amount is in yuan with its
    unit (and fen beside it), one field a line; the log's txn lines say amount_fen."""
    with switch_running(tmp_path, operator_settings(tmp_path, "sqlite", request)) as run:
        terminal = Terminal(terminal_id=TERMINAL)
        approved = await sale(run, terminal, 1, PAN_ICBC, 12345)
        assert approved[39] == "00"
        rrn = str(approved[37])
        voided = await send(run, terminal, terminal.void(2, PAN_ICBC, 12345, rrn, 1))
        assert voided[39] == "00"
        void_rrn = str(voided[37])

        done = await refused(run, "journal", "show", rrn)  # without --json: for people
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == f"transaction {rrn}"
        assert "  amount         123.45 yuan (12345 fen)" in lines
        assert "  refunded       0.00 yuan (0 fen)" in lines
        assert "  voided         yes" in lines
        assert max(len(line) for line in lines) < 100  # one field a line, not a 330-wide row
        history = lines[lines.index("history (UTC)") + 1 : lines.index("reversal")]
        assert history[-2].endswith(f"approved 00: voided by void RRN {void_rrn}"), history
        assert lines[-1] == "  (none)"  # no reversal

        (shown,) = await switch(run, "journal", "show", rrn)
        assert shown["transaction"]["amount_fen"] == 12345
        assert "amount" not in shown["transaction"]
        assert shown["events"][-1]["what"] == f"approved 00: voided by void RRN {void_rrn}"
        (void,) = await switch(run, "journal", "show", void_rrn)
        assert void["transaction"]["original_rrn"] == rrn

        local_day = (datetime.now(UTC) + timedelta(hours=8)).date().isoformat()
        found = await refused(run, "journal", "find", "--terminal", TERMINAL, "--date", local_day)
        assert found.returncode == 0, found.stderr
        header, *rows = found.stdout.splitlines()
        assert header.split() == [
            "created_at", "rrn", "kind", "state", "code", "amount", "card", "stan", "bank",
            "notes",
        ]  # fmt: skip
        [sale_row] = [row for row in rows if f" {rrn} " in row]
        assert "123.45 yuan" in sale_row and sale_row.rstrip().endswith("voided")
        [void_row] = [row for row in rows if f" {void_rrn} " in row]
        assert void_row.rstrip().endswith(f"of RRN {rrn}")
        assert max(map(len, found.stdout.splitlines())) < 150

        logged = [  # the terminal's sign-on (security.md) is logged too, before its sale
            r for r in run.records() if r.get("event") == "txn" and r["kind"] != "sign_on"
        ]
        assert [(r["kind"], r["amount_fen"]) for r in logged] == [
            ("sale", 12345), ("void", 12345)
        ]  # fmt: skip
        assert not [r for r in logged if "amount" in r]


async def until(what: str, check: Any, within_s: float = SETTLED_WITHIN_S) -> Any:
    """``await check()`` again and again until it is truthy; that value."""
    deadline = trio.current_time() + within_s
    while not (found := await check()):
        assert trio.current_time() < deadline, f"not within {within_s} s: {what}"
        await trio.sleep(0.2)
    return found


@pytest.mark.parametrize("engine", ENGINES)
async def test_every_operator_command_on_a_running_switch(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    with switch_running(tmp_path, operator_settings(tmp_path, engine, request)) as run:
        terminal = Terminal(terminal_id=TERMINAL)
        local_day = (datetime.now(UTC) + timedelta(hours=8)).date().isoformat()
        approved = await sale(run, terminal, 1, PAN_ICBC, 12300)
        assert approved[39] == "00"
        rrn = str(approved[37])
        timed_out = await sale(run, terminal, 2, PAN_CMB, 4500)
        assert timed_out[39] == "68"

        # switch journal show / find: the sale, its history; the terminal's day.
        (shown,) = await switch(run, "journal", "show", rrn)
        assert shown["transaction"]["state"] == "approved"
        assert shown["transaction"]["amount_fen"] == 12300
        assert shown["transaction"]["pan_masked"].startswith("622202")
        assert shown["events"] and shown["reversal"] is None
        found = await switch(run, "journal", "find", "--terminal", TERMINAL, "--date", local_day)
        assert {row["rrn"] for row in found} == {rrn, str(timed_out[37])}

        # switch saf list / retry: the 68's reversal went unanswered, once (max_attempts
        # 1): it waits for an operator, who puts it back in the queue.
        async def manual() -> list[Any]:
            listed = await switch(run, "saf", "list", "--state", "manual")
            return [r for r in listed if r["rrn"] == str(timed_out[37])]

        (waiting,) = await until("the reversal waits for an operator", manual)
        assert (waiting["bank"], waiting["attempts"]) == ("cmb", 1)
        (retried,) = await switch(run, "saf", "retry", str(waiting["id"]))
        assert (retried["id"], retried["state"]) == (waiting["id"], "pending")
        assert "retry requested" in retried["last_result"]
        (again,) = await until("the retried reversal is tried again and waits", manual)
        assert again["attempts"] == 2
        unknown = await refused(run, "saf", "retry", "999999")
        assert unknown.returncode == 1 and "no reversal with id 999999" in unknown.stderr

        # switch settle cutoff / status / run, switch ledger balance: the date closes,
        # icbc, abc and citic cut over and deliver their files (cmb answers too late),
        # the operator settles it, and settling again changes nothing.
        closed = await switch(run, "settle", "cutoff", admin=True)
        business_date = closed["business_date"]
        assert closed["closed_at"] is not None and closed["forced"] is True

        async def files_in() -> dict[str, Any] | None:
            status = await switch(run, "settle", "status", "--date", business_date, admin=True)
            accepted = {f["bank"] for f in status["files"] if f["status"] == "accepted"}
            return status if {"icbc", "abc", "citic"} <= accepted else None

        # (cmb's file may come too: its simulator answers the cutover late, then delivers)
        status = await until("icbc's, abc's and citic's files are in", files_in)
        assert status["cutovers"]["icbc"] == "00" and status["cutovers"]["cmb"] != "00"
        settled = await switch(run, "settle", "run", "--date", business_date, admin=True)
        assert settled["settled_at"] is not None and settled["sales_fen"] == 12300
        payouts = tmp_path / "settlement" / f"payouts-{business_date.replace('-', '')}.csv"
        assert payouts.read_text().count("\n") == 2  # the header and the one merchant
        ledgers = await switch(run, "ledger", "balance", admin=True)
        balances = ledgers["settlement"]
        assert isinstance(ledgers["onus"], list)  # the on-us ledger's, beside
        accounts = {row["account"]: row for row in balances}
        assert sum(r["debit_fen"] for r in balances) == sum(r["credit_fen"] for r in balances)
        assert accounts["bank_clearing:icbc"]["debit_fen"] == 12300
        merchant = next(name for name in accounts if name.startswith("merchant:"))
        one = await switch(run, "ledger", "balance", "--account", merchant, admin=True)
        assert one["settlement"] == [accounts[merchant]] and accounts[merchant]["balance_fen"] == 0
        before = payouts.read_bytes()
        rerun = await switch(run, "settle", "run", "--date", business_date, admin=True)
        assert rerun["settled_at"] == settled["settled_at"]
        assert payouts.read_bytes() == before
        assert await switch(run, "ledger", "balance", admin=True) == ledgers
        latest = await switch(run, "settle", "status", admin=True)
        assert latest["business_date"] == business_date
    if engine == "postgresql":
        assert not (tmp_path / "journal.sqlite3").exists()
        assert not sqlite_files(tmp_path)
