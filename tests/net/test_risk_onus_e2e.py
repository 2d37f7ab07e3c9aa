"""Risk rules (risk.md) in front of the ledger (wallet.md), over real sockets, a real
journal and the real ledger store: a payment-code sale on POS and an online
``purchase`` with ``paycode`` meet the rules once the code names the customer and its
funding, before the class limit, the daily caps and the balance; a decline is answered
with its rule's code, journaled with its id and reserves nothing; ``customer`` windows
count POS and online alike, give back what the ledger declined, let go of a voided
payment, and are rebuilt from the journal at a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.net.clients import PosClient
from switch.terminal import Terminal
from switch.wire import online as wire
from tests.conftest import make_config
from tests.net.helpers import online_client, pos_client, start_switch
from tests.net.test_onus_e2e import CUSTOMER, WALLET, balance, fund, issue, verified
from tests.store.engines import journal_rows

RULES = """[[rules]]
id = "wallet-single"
mode = "enforce"
kind = "amount_cap"
funding = ["wallet"]
max_fen = 5000
action = "decline"
code = "61"

[[rules]]
id = "card-only"
mode = "enforce"
kind = "amount_cap"
funding = ["card", "cobrand"]
max_fen = 1
action = "decline"
code = "57"

[[rules]]
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

[[rules]]
id = "customer-watch"
mode = "shadow"
kind = "velocity"
key = "customer"
window = "1h"
counts = "attempts"
max_count = 0
action = "decline"
code = "59"

[[rules]]
id = "blocked-customers"
mode = "enforce"
kind = "blocklist"
key = "customer"
values = ["C-BLOCKED"]
action = "decline"
code = "62"
"""


def config_with_rules(tmp_path: Path) -> SwitchConfig:
    path = tmp_path / "risk.toml"
    path.write_text(RULES)
    return make_config(risk={"rules_file": str(path)})


def rows(config: SwitchConfig) -> list[dict[str, Any]]:
    return journal_rows(
        config,
        "SELECT kind, amount, state, code, customer_id, funding, risk_version, risk_rule, "
        "risk_shadow FROM txn ORDER BY created_at",
    )


async def stop(app: SwitchApp) -> None:
    app.shutdown()
    with trio.fail_after(10):
        await app.stopped.wait()


async def code_sale(
    app: SwitchApp, client: PosClient, stan: int, amount: int, code: str | None = None
) -> dict[int, Any]:
    code = code or await issue(app)
    return (await client.request(client.terminal.code_sale(stan, code, amount))).fields


async def test_code_payments_meet_the_rules_before_the_ledger(tmp_path: Path) -> None:
    config = config_with_rules(tmp_path)
    async with trio.open_nursery() as nursery:
        app = await start_switch(nursery, config)
        await fund(app, 20_000)
        await fund(app, 20_000, customer_id="C-BLOCKED")
        pos = await pos_client(app)
        # Above the wallet rule's cap and above the balance: the rule decides (61),
        # not the balance (51): the rules come first (wallet.md's order).
        big = await code_sale(app, pos, 1, 30_000)
        first_code = await issue(app)
        first = await code_sale(app, pos, 2, 1_000, first_code)
        # The card rule (funding card) is out of a wallet payment's scope.
        blocked = (
            await pos.request(pos.terminal.code_sale(3, await issue(app, "C-BLOCKED"), 100))
        ).fields
        online = await online_client(app)
        second = await online.request(wire.Purchase(
            id="code-1", merchant_id="SHOP01", amount=2_000, currency="CNY",
            paycode=await issue(app),
        ))  # fmt: skip
        # Two approved today, POS and online alike: the third is over the customer's.
        third = await code_sale(app, pos, 4, 500)
        # A void takes its payment out of the window: the next one passes.
        void = await pos.request(pos.terminal.code_void(5, first_code, 1_000, str(first[37]), 2))
        fourth = await code_sale(app, pos, 6, 700)
        # An unknown code is refused (14) before the rules: it counts nowhere.
        unknown = (await pos.request(pos.terminal.code_sale(7, "88" + "1" * 16, 100))).fields
        left = await balance(app, WALLET)
        await verified(app)
        await stop(app)
    assert (big[39], big[63]) == ("61", "WAL")
    assert first[39] == "00"
    assert blocked[39] == "62"
    assert isinstance(second, wire.Result) and second.code == "00"
    assert third[39] == "65"
    assert void.fields[39] == "00" and fourth[39] == "00" and unknown[39] == "14"
    assert left == (20_000 - 2_000 - 700, 0)  # the declined ones reserved nothing
    journaled = rows(config)
    version = journaled[0]["risk_version"]
    assert version is not None and len(version) == 12
    sales = [r for r in journaled if r["kind"] == "onus_sale"]
    assert [
        (r["amount"], r["state"], r["code"], r["customer_id"], r["funding"], r["risk_rule"])
        for r in sales
    ] == [
        (30_000, "declined", "61", CUSTOMER, "wallet", "wallet-single"),
        (1_000, "approved", "00", CUSTOMER, "wallet", None),
        (100, "declined", "62", "C-BLOCKED", "wallet", "blocked-customers"),
        (2_000, "approved", "00", CUSTOMER, "wallet", None),
        (500, "declined", "65", CUSTOMER, "wallet", "customer-day"),
        (700, "approved", "00", CUSTOMER, "wallet", None),
        (100, "declined", "14", None, None, None),
    ]
    # The shadow rule saw every request that reached the rules (none for the 14).
    assert [r["risk_shadow"] is not None for r in sales] == [True] * 6 + [False]


async def test_a_ledger_decline_gives_back_and_a_restart_rebuilds_customer_windows(
    tmp_path: Path,
) -> None:
    config = config_with_rules(tmp_path)
    async with trio.open_nursery() as nursery:
        app = await start_switch(nursery, config)
        await fund(app, 2_500)
        pos = await pos_client(app)
        first = await code_sale(app, pos, 1, 1_000)
        # Within the rules (the second today), above the balance: 51 on the ledger,
        # and its reservation in the customer's window is given back...
        low = await code_sale(app, pos, 2, 4_000)
        # ...so this one is the second approved today, not the third.
        second = await code_sale(app, pos, 3, 1_000)
        await stop(app)
        # A new process on the same journal: the customer's window holds what it held.
        app = await start_switch(nursery, config)
        pos = await pos_client(app, Terminal())
        after = await code_sale(app, pos, 4, 100)
        await stop(app)
    assert [first[39], low[39], second[39]] == ["00", "51", "00"]
    assert after[39] == "65"
