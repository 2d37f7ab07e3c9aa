"""``switch credit open|status|statement|plans|repay|convert`` against a running switch
(the demo config on free ports, in this process): each a signed online request under
the DEMO app key, its signed answer printed; nothing opens the ledger store."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import trio

from switch import cli
from switch.config import load_config
from switch.core import paycode
from switch.core.credit.plan import Terms
from switch.core.ledger import TransferKey, TransferSpec
from tests.net.helpers import pos_client, start_switch
from tests.test_cli import _demo_config_on_free_ports

C = "C100000001"


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """The command in a thread (it runs its own trio loop); its exit code, its JSON
    output (None when it printed none) and its stderr."""
    code = await trio.to_thread.run_sync(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


async def test_credit_commands_go_through_signed_requests(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _demo_config_on_free_ports(tmp_path)
    app = await start_switch(nursery, load_config(path))
    base = ["--config", str(path), "--port", str(app.online_port), "--json"]
    code, _, err = await run(capsys, "credit", "status", C, *base)
    assert code == 2 and "(14)" in err and "DEMO key of app:wallet" in err
    code, _, err = await run(capsys, "credit", "open", C, "--limit", "2000000", *base)
    assert code == 2 and "(14)" in err  # no wallet yet
    code, _, err = await run(capsys, "credit", "open", C, "--limit", "1", "--statement-day",
                             "29", *base)  # fmt: skip
    assert code == 2 and "--statement-day: 1..28" in err
    assert app._ledger is not None
    store: Any = app._ledger.store
    now = time.time()
    await app._ledger.call(lambda: store.open_wallet(C, "app:wallet", 2, "2026-01-01", now))
    code, opened, _ = await run(capsys, "credit", "open", C, "--limit", "2000000", "--id",
                                "open-1", *base)  # fmt: skip
    assert code == 0 and opened["code"] == "00"
    account = opened["account"]
    assert (account["state"], account["limit_fen"], account["available_fen"]) == (
        "open", 2_000_000, 2_000_000,
    )  # fmt: skip
    # The same --id again: the first's answer, nothing new.
    code, again, _ = await run(capsys, "credit", "open", C, "--limit", "2000000", "--id",
                               "open-1", *base)  # fmt: skip
    assert code == 0 and again == opened

    # A purchase in 12 on a credit code at a POS.
    spec = TransferSpec(key=TransferKey("test", "t1", "topup"), debit="bank_clearing:icbc",
                        credit=f"wallet:{C}", amount=1_000_000, kind="topup")  # fmt: skip
    await app._ledger.call(lambda: store.transfer(spec, now))
    settings = app.config.wallet.paycodes()
    issue = [
        "wallet",
        "paycode",
        C,
        "--verification",
        "A",
        "--funding",
        "credit",
        "--instalments",
        "12",
        "--config",
        str(path),
        "--port",
        str(app.online_port),
    ]
    assert await trio.to_thread.run_sync(cli.main, issue) == 0
    code_text = capsys.readouterr().out.split("paycode: ")[1].split()[0]
    client = await pos_client(app)
    sale = await client.request(client.terminal.code_sale(90, code_text, 600_000))
    assert sale.fields[39] == "00"
    purchase_id = str(sale.fields[37])
    code, plans, _ = await run(capsys, "credit", "plans", C, *base)
    assert code == 0 and [p["purchase_id"] for p in plans["plans"]] == [purchase_id]
    code, plan, _ = await run(capsys, "credit", "plans", C, "--purchase-id", purchase_id, *base)
    assert code == 0 and len(plan["plans"][0]["schedule"]) == 12
    # Early repayment: the last two periods removed, their fees waived.
    code, repaid, _ = await run(capsys, "credit", "repay", C, "100000", *base)
    assert code == 0
    assert repaid["allocated"]["prepaid_fen"] == 100_000 and repaid["waived_fee_fen"] == 7_200
    # By card: the demo names no [credit] own_merchant_id, so not offered (57).
    code, _, err = await run(capsys, "credit", "repay", C, "1000", "--card",
                             "6222021000111122221", *base)  # fmt: skip
    assert code == 2 and "(57)" in err
    code, status, _ = await run(capsys, "credit", "status", C, *base)
    assert code == 0 and status["account"]["payoff_fen"] == 500_000
    # The statement, once the switch's close has made it.
    first = date.fromisoformat(plan["plans"][0]["schedule"][0]["statement_date"])
    code, _, err = await run(capsys, "credit", "statement", C, f"{first:%Y-%m}", *base)
    assert code == 2 and "(25)" in err
    closing = date.fromordinal(first.toordinal() - 1)
    await app._ledger.call(lambda: store.credit_close(closing, Terms(), time.time()))
    code, statement, _ = await run(capsys, "credit", "statement", C, f"{first:%Y-%m}", *base)
    assert code == 0
    assert [line["kind"] for line in statement["statement"]["lines"]] == [
        "repayment", "instalment",
    ]  # fmt: skip
    # A purchase without a plan converted into 3.
    code2 = await app._ledger.call(lambda: store.issue_paycode(
        C, "app:wallet", "credit", "A", time.time(), settings,
        lambda: paycode.draw(settings.prefix)))  # fmt: skip
    sale2 = await client.request(client.terminal.code_sale(91, code2.code, 30_000))
    code, converted, _ = await run(capsys, "credit", "convert", C, str(sale2.fields[37]), "3",
                                   *base)  # fmt: skip
    assert code == 0 and converted["plan"]["instalments"] == 3
    # Plain output: the answer's fields, one a line.
    plain = ["credit", "status", C, "--config", str(path), "--port", str(app.online_port)]
    assert await trio.to_thread.run_sync(cli.main, plain) == 0
    out = capsys.readouterr().out
    assert "account:\n" in out and "  payoff_fen: 533600\n" in out  # + fee 1, + 30,000
    await client.aclose()
