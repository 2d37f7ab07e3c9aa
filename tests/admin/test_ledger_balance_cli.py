"""``switch ledger balance`` against a running switch, as an operator types it (the
command's own code, over real HTTP to the admin interface), on each journal engine:
the settlement store's ledger and the on-us ledger, each under its own heading; the
customers' accounts of the on-us ledger summed per kind (``wallet:*``), or one
account alone with ``--account``."""

from __future__ import annotations

import contextlib
import io
import json
import time
from typing import Any

import trio

from switch import cli
from switch.admin.auth import token_path
from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.core.credit.cobrand import POINTS_ISSUED, points_account
from switch.core.ledger import TransferKey, TransferSpec
from tests.admin.http import get
from tests.admin.test_ledger_metrics import OTHER, ledger_config
from tests.net.helpers import pos_client, start_switch
from tests.net.test_onus_e2e import CUSTOMER, MERCHANT_ACCOUNT, WALLET, fund, in_store, issue
from tests.net.test_onus_e2e import store_of as ledger_of

__all__ = ["ledger_config"]


async def ledger_balance(app: SwitchApp, *arguments: str) -> tuple[int, str, str]:
    """``switch ledger balance ARGUMENTS`` against the running switch, in a thread (it
    blocks): its exit code, what it printed and what it said on stderr."""
    url = f"http://127.0.0.1:{app.admin_port}"
    token = str(token_path(app.config))
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return cli.main(["ledger", "balance", *arguments, "--url", url,
                             "--token-file", token])  # fmt: skip

    code = await trio.to_thread.run_sync(run)
    return code, out.getvalue(), err.getvalue()


async def test_both_ledgers_each_under_its_heading(
    nursery: trio.Nursery, ledger_config: SwitchConfig
) -> None:
    app = await start_switch(nursery, ledger_config)
    await fund(app, 50_000)
    await fund(app, 12_000, customer_id=OTHER)
    client = await pos_client(app)
    sale = await client.request(client.terminal.code_sale(1, await issue(app), 2_500))
    assert sale.fields[39] == "00"
    await client.aclose()
    points = TransferSpec(key=TransferKey("test", "earned", "points"), debit=POINTS_ISSUED,
                          credit=points_account(CUSTOMER), amount=1_234, kind="points")  # fmt: skip
    await in_store(app, ledger_of(app).transfer, points, time.time())

    code, printed, _ = await ledger_balance(app)
    assert code == 0
    settlement, onus = printed.split("\n\n")
    assert settlement.splitlines()[0] == "settlement ledger (settlement store):"
    assert onus.splitlines()[0] == "on-us ledger (wallets, credit line, points):"
    lines = {line.split()[0]: line.split()[1:] for line in onus.splitlines()[2:]}
    # debit, credit, balance, pending debit, pending credit; fen as yuan, points as such
    assert lines["wallet:*"] == ["(2)", "25.00", "620.00", "595.00", "0.00", "0.00"]
    assert lines[MERCHANT_ACCOUNT] == ["0.00", "25.00", "25.00", "0.00", "0.00"]
    assert lines["bank_clearing:icbc"] == ["620.00", "0.00", "-620.00", "0.00", "0.00"]
    assert lines["points:*"] == ["(1)", "0", "pt", "1,234", "pt", "1,234", "pt", "0", "pt",
                                 "0", "pt"]  # fmt: skip
    assert not any(name.startswith("wallet:C") for name in lines)  # summed, not listed

    code, printed, _ = await ledger_balance(app, "--json")
    assert code == 0
    document: dict[str, Any] = json.loads(printed)
    assert set(document) == {"settlement", "onus"}
    assert isinstance(document["settlement"], list)
    rows = {row["account"]: row for row in document["onus"]}
    assert rows["wallet:*"] == {
        "account": "wallet:*", "unit": "fen", "accounts": 2, "debits_posted": 2_500,
        "credits_posted": 62_000, "balance": 59_500, "debits_pending": 0,
        "credits_pending": 0,
    }  # fmt: skip
    for unit in ("fen", "points"):  # every unit balances on its own
        same = [row for row in document["onus"] if row["unit"] == unit]
        assert sum(r["debits_posted"] for r in same) == sum(r["credits_posted"] for r in same)

    # It shows money: the token is asked for, on loopback too.
    assert (await get(app.admin_port, "/ledger/onus")).status == 401
    code, printed, _ = await ledger_balance(app, "--account", WALLET, "--json")
    assert code == 0
    one = json.loads(printed)
    assert one["settlement"] == []
    assert [(r["account"], r["accounts"], r["balance"]) for r in one["onus"]] == [
        (WALLET, 1, 47_500)
    ]
