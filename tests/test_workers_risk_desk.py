"""Risk rules' windows of the app desk's requests that have no journal row (risk.md:
``wallet_withdraw``, kind ``withdrawal``), with two workers on one PostgreSQL journal, as
real processes: a customer's withdrawals spread over both workers meet one limit (each
judged request's record is written in the ledger's database with its step, and each
worker counts the other's), a restart of both keeps the window, and ``switch risk
hits`` lists the withdrawals' hits (issue #24)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from switch.core import ledger
from switch.core.ledger import TransferKey, TransferSpec
from switch.core.wallet import BoundAccount
from switch.net.clients import OnlineClient, OnlineKey
from switch.store.postgresql.ledger import PostgresLedgerStore
from tests.net.test_app_desk_e2e import ACCOUNT, App, result
from tests.switch_process import Process, demo_config, one_bank_config, run_switch, write_config
from tests.switch_process import start_switch as start_process
from tests.test_workers_risk import SYNC_S
from tests.test_workers_shared import WORKERS, SharedSwitch

pytestmark = pytest.mark.slow

CUSTOMER = "C300000002"
APP = "app:wallet"

RULES = """[[rules]]
id = "withdraw-cap"
mode = "enforce"
kind = "amount_cap"
kinds = ["withdrawal"]
max_fen = 20000
action = "decline"
code = "59"

[[rules]]
id = "withdraw-day"
mode = "enforce"
kind = "velocity"
key = "customer"
kinds = ["withdrawal"]
window = "day"
counts = "approved"
max_count = 2
action = "decline"
code = "65"
"""


async def app_at(shared: SharedSwitch, worker: int) -> App:
    """A connection served by ``worker``, then speaking as the wallet app."""
    client: OnlineClient = await shared.online_connection_to(worker)
    client.key = OnlineKey.demo_app()
    client._keys[client.key.key_id] = client.key
    return App(client)


async def withdraw(app: App, request_id: str, amount: int) -> str:
    answer = await app.ask(
        "wallet_withdraw", request_id, customer_id=CUSTOMER, amount=amount, **ACCOUNT
    )
    code = result(answer, answer["code"])["code"]
    await trio.sleep(SYNC_S)
    return str(code)


async def start(config: Path, name: str) -> Process:
    switch = await start_process(config, name=name)
    await switch.wait_for_event("switch_started", count=WORKERS)
    await switch.wait_for_event("link_signed_on", count=2)
    return switch


async def test_a_customers_withdrawals_meet_one_limit_across_workers_and_restarts(
    tmp_path: Path, postgres_dsn: str
) -> None:
    bank = await Process.start(
        ["sim-bank", "--config", str(write_config(tmp_path, demo_config(tmp_path), "sim.toml")),
         "--bank", "icbc", "--port", "0"],
        tmp_path, name="sim-icbc",
    )  # fmt: skip
    bank_port = int((await bank.wait_for_event("simulator_started"))["port"])
    (tmp_path / "risk.toml").write_text(RULES)
    settings = one_bank_config(tmp_path, bank_port)
    settings["journal"].update(backend="postgresql", dsn=postgres_dsn)
    settings["switch"]["workers"] = WORKERS
    settings["banks"]["icbc"]["links"] = 2
    settings["risk"] = {"rules_file": str(tmp_path / "risk.toml"), "sync_interval_s": 0.05}
    config = write_config(tmp_path, settings)
    store = PostgresLedgerStore(postgres_dsn)
    switch = await start(config, "switch")
    processes = [bank, switch]
    store.open()
    try:
        store.open_wallet(CUSTOMER, APP, 2, time.strftime("%Y-%m-%d"), time.time())
        store.transfer(TransferSpec(
            key=TransferKey("test", CUSTOMER, "topup"), debit="bank_clearing:icbc",
            credit=ledger.wallet_account(CUSTOMER), amount=100_000, kind="topup",
        ), time.time())  # fmt: skip
        store.bind_account(CUSTOMER, APP, BoundAccount(**ACCOUNT), time.time())
        shared = SharedSwitch(switch, bank, postgres_dsn, tmp_path / "unused.json")
        here, there = await app_at(shared, 0), await app_at(shared, 1)
        codes = [
            await withdraw(here, "w-1", 1_000),  # worker 0: 1 today
            await withdraw(there, "w-2", 1_000),  # worker 1: 2 today, 1 of them worker 0's
            await withdraw(here, "w-3", 1_000),  # worker 0 alone would say 2: 65
            await withdraw(there, "w-4", 30_000),  # above the cap: 59
        ]
        for app in (here, there):
            await app.client.aclose()
        assert await switch.stop() == 0, switch.output()
        # Both workers again: the day's window is what the ledger's records say.
        switch = await start(config, "switch-again")
        processes.append(switch)
        shared = SharedSwitch(switch, bank, postgres_dsn, tmp_path / "unused.json")
        for worker in (0, 1):
            app = await app_at(shared, worker)
            codes.append(await withdraw(app, f"w-{5 + worker}", 1_000))
            await app.client.aclose()
        assert await switch.stop() == 0, switch.output()
        balance = store.wallet(CUSTOMER, None, time.strftime("%Y-%m-%d")).available
    finally:
        store.close()
        for process in processes:
            if process.process.poll() is None:
                process.process.kill()
                await process.process.wait()
    assert codes == ["00", "00", "65", "59", "65", "65"]
    assert balance == 100_000 - 2 * 1_000
    rows = shared.rows(
        "SELECT worker, kind, outcome, code, risk_rule, online_id FROM risk_event ORDER BY id"
    )
    assert [(r["worker"], r["outcome"], r["code"], r["risk_rule"], r["online_id"])
            for r in rows] == [
        (0, "approved", None, None, "w-1"), (1, "approved", None, None, "w-2"),
        (0, "declined", "65", "withdraw-day", "w-3"), (1, "declined", "59", "withdraw-cap", "w-4"),
        (0, "declined", "65", "withdraw-day", "w-5"), (1, "declined", "65", "withdraw-day", "w-6"),
    ]  # fmt: skip
    done = await trio.to_thread.run_sync(
        lambda: run_switch(["risk", "hits", "--config", str(config), "--json"])
    )
    assert done.returncode == 0, done.stderr
    hits: list[dict[str, Any]] = json.loads(done.stdout)
    assert [(h["rule"], h["mode"], h["action"], h["code"], h["online_id"], h["amount_fen"])
            for h in hits] == [
        ("withdraw-day", "enforce", "decline", "65", "w-6", 1_000),
        ("withdraw-day", "enforce", "decline", "65", "w-5", 1_000),
        ("withdraw-cap", "enforce", "decline", "59", "w-4", 30_000),
        ("withdraw-day", "enforce", "decline", "65", "w-3", 1_000),
    ]  # fmt: skip
    assert all(len(h["rrn"]) == 12 and h["channel"] == "online" for h in hits)
