"""Risk rules' windows with two workers on one PostgreSQL journal, as real processes: a
card's requests spread over both workers meet one limit (risk.md: counters shared by
every channel and worker), attempts, approvals and a void at the other worker included;
so do a customer's payment-code sales (wallet.md), their customer named by the code.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from switch.core import ledger, paycode
from switch.core.ledger import TransferKey, TransferSpec
from switch.core.paycode import PaycodeSettings
from switch.store.postgresql.ledger import PostgresLedgerStore
from switch.terminal import Terminal
from tests.net.helpers import PAN_ICBC
from tests.switch_process import Process, demo_config, one_bank_config, start_switch, write_config
from tests.test_workers_shared import WORKERS, SharedSwitch, exchange

pytestmark = pytest.mark.slow

CUSTOMER = "C300000001"

RULES = """[[rules]]
id = "card-tries"
mode = "enforce"
kind = "velocity"
key = "card"
window = "1h"
counts = "attempts"
max_count = 4
action = "decline"
code = "65"

[[rules]]
id = "card-day"
mode = "enforce"
kind = "velocity"
key = "card"
window = "day"
counts = "approved"
max_fen = 2500
action = "decline"
code = "61"
"""

SYNC_S = 0.5
"""Time for the other worker to read a request's row (it reads every 0.05 s)."""


@asynccontextmanager
async def risky_switch(tmp_path: Path, dsn: str, rules: str = RULES) -> AsyncIterator[SharedSwitch]:
    bank = await Process.start(
        ["sim-bank", "--config", str(write_config(tmp_path, demo_config(tmp_path), "sim.toml")),
         "--bank", "icbc", "--port", "0"],
        tmp_path, name="sim-icbc",
    )  # fmt: skip
    bank_port = int((await bank.wait_for_event("simulator_started"))["port"])
    (tmp_path / "risk.toml").write_text(rules)
    settings = one_bank_config(tmp_path, bank_port)
    settings["journal"].update(backend="postgresql", dsn=dsn)
    settings["switch"]["workers"] = WORKERS
    settings["risk"] = {"rules_file": str(tmp_path / "risk.toml"), "sync_interval_s": 0.05}
    switch = await start_switch(write_config(tmp_path, settings))
    try:
        await switch.wait_for_event("switch_started", count=WORKERS)
        await switch.wait_for_event("link_signed_on", count=settings["banks"]["icbc"]["links"])
        yield SharedSwitch(switch, bank, dsn, tmp_path / "unused.json")
        assert await switch.stop() == 0, switch.output()
    finally:
        for process in (switch, bank):
            if process.process.poll() is None:
                process.process.kill()
                await process.process.wait()


async def test_a_cards_limits_hold_across_both_workers(tmp_path: Path, postgres_dsn: str) -> None:
    async with risky_switch(tmp_path, postgres_dsn) as shared:
        terminal, here, there = await shared.terminal_at_both_workers()
        assert isinstance(terminal, Terminal)
        codes = []

        async def sale(client: object, stan: int) -> dict[int, object]:
            fields = await exchange(client, terminal.sale(stan, PAN_ICBC, 1000))  # type: ignore[arg-type]
            codes.append(fields[39])
            await trio.sleep(SYNC_S)
            return fields

        first = await sale(here, 1)  # worker 0: 1 attempt, 1000 standing
        await sale(there, 2)  # worker 1: 2 attempts, 2000
        await sale(here, 3)  # worker 0 alone would hold 2000 + 1000: 61 for 3000 here
        void = await exchange(there, terminal.void(4, PAN_ICBC, 1000, str(first[37]), 1))
        await trio.sleep(SYNC_S)
        await sale(here, 5)  # the void at worker 1 took the first out here: 2000, 4 attempts
        await sale(there, 6)  # 5 attempts, 2 of them worker 0's: 65
        lines = [r for r in shared.switch.events("txn") if r.get("risk_rule")]
    assert void[39] == "00"
    assert codes == ["00", "00", "61", "00", "65"]
    assert [(r["worker"], r["risk_rule"]) for r in lines] == [(0, "card-day"), (1, "card-tries")]
    rows = shared.rows(
        "SELECT worker, code, risk_rule FROM txn WHERE kind = 'sale' AND terminal_id = %s "
        "ORDER BY created_at",
        terminal.terminal_id,
    )
    assert [(r["worker"], r["code"], r["risk_rule"]) for r in rows] == [
        (0, "00", None), (1, "00", None), (0, "61", "card-day"), (0, "00", None),
        (1, "65", "card-tries"),
    ]  # fmt: skip


CUSTOMER_RULES = """[[rules]]
id = "customer-day"
mode = "enforce"
kind = "velocity"
key = "customer"
funding = ["wallet"]
window = "day"
counts = "approved"
max_count = 2
action = "decline"
code = "65"
"""


async def test_a_customers_code_payments_meet_one_limit_across_both_workers(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with risky_switch(tmp_path, postgres_dsn, CUSTOMER_RULES) as shared:
        store = PostgresLedgerStore(postgres_dsn)
        store.open()
        settings = PaycodeSettings()
        try:
            store.open_wallet(CUSTOMER, "app:wallet", 2, time.strftime("%Y-%m-%d"), time.time())
            store.transfer(TransferSpec(
                key=TransferKey("test", CUSTOMER, "topup"), debit="bank_clearing:icbc",
                credit=ledger.wallet_account(CUSTOMER), amount=10_000, kind="topup",
            ), time.time())  # fmt: skip

            def issue() -> str:
                return store.issue_paycode(
                    CUSTOMER, "app:wallet", "wallet", "B", time.time(), settings,
                    lambda: paycode.draw(settings.prefix),
                ).code  # fmt: skip

            terminal, here, there = await shared.terminal_at_both_workers()
            codes = []
            first_code = issue()
            first = await exchange(here, terminal.code_sale(1, first_code, 1_000))
            codes.append(first[39])
            await trio.sleep(SYNC_S)
            for stan, client in ((2, there), (3, here)):  # worker 1's, then over at worker 0
                codes.append((await exchange(client, terminal.code_sale(stan, issue(), 500)))[39])
                await trio.sleep(SYNC_S)
            # The first voided at worker 1 leaves worker 0's window too.
            void = await exchange(
                there, terminal.code_void(4, first_code, 1_000, str(first[37]), 1)
            )
            await trio.sleep(SYNC_S)
            codes.append((await exchange(here, terminal.code_sale(5, issue(), 500)))[39])
        finally:
            store.close()
    assert void[39] == "00"
    assert codes == ["00", "00", "65", "00"]
    rows = shared.rows(
        "SELECT worker, code, customer_id, risk_rule FROM txn WHERE kind = 'onus_sale' "
        "ORDER BY created_at"
    )
    assert [(r["worker"], r["code"], r["customer_id"], r["risk_rule"]) for r in rows] == [
        (0, "00", CUSTOMER, None), (1, "00", CUSTOMER, None), (0, "65", CUSTOMER, "customer-day"),
        (0, "00", CUSTOMER, None),
    ]  # fmt: skip
