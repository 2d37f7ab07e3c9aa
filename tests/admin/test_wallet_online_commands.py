"""``switch wallet open|balance|history|topup|pay|paycode`` and ``switch qr
create|status`` against a running switch (the demo config on free ports, in this
process): each a signed online request under the DEMO app key or the merchant's, its
signed answer printed; a dynamic QR paid once, then 94; a code paid at a POS."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import trio

from switch import cli
from switch.config import load_config
from tests.admin.test_credit_commands import run
from tests.net.helpers import pos_client, start_switch
from tests.test_cli import _demo_config_on_free_ports

C = "C100000001"
MERCHANT = "898310048990001"


async def plain(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await trio.to_thread.run_sync(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_wallet_and_qr_commands_go_through_signed_requests(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _demo_config_on_free_ports(tmp_path)
    app = await start_switch(nursery, load_config(path))
    base = ["--config", str(path), "--port", str(app.online_port)]
    code, _, err = await run(capsys, "wallet", "balance", C, *base, "--json")
    assert code == 2 and "(14)" in err and "DEMO key of app:wallet" in err
    code, opened, _ = await run(capsys, "wallet", "open", C, "--class", "2", "--id", "o-1",
                                *base, "--json")  # fmt: skip
    assert code == 0 and (opened["code"], opened["class"], opened["balance"]) == ("00", 2, 0)
    code, again, _ = await run(capsys, "wallet", "open", C, "--class", "2", "--id", "o-1",
                               *base, "--json")  # fmt: skip
    assert code == 0 and again == opened  # the same id: the first's answer
    code, topped, _ = await run(capsys, "wallet", "topup", C, "--amount", "500.00", *base,
                                "--json")  # fmt: skip
    assert code == 0 and topped["balance_after"] == 50_000
    assert "6222021000111122221" not in json.dumps(topped)

    # The merchant's dynamic QR, drawn; paid from the wallet once, then 94.
    code, out, err = await plain(capsys, "qr", "create", "--amount", "88.00", "--render", *base)
    assert code == 0 and "DEMO key demo-m-898310048990001" in err
    lines = out.splitlines()
    payload = next(line[4:] for line in lines if line.startswith("qr: "))
    qr_id = next(line.split(": ")[1] for line in lines if line.startswith("qr_id: "))
    assert "kind: dynamic" in lines and "█" in out
    code, paid, _ = await run(capsys, "wallet", "pay", C, payload, *base, "--json")
    assert code == 0 and (paid["amount"], paid["balance_after"]) == (8800, 41_200)
    code, _, err = await run(capsys, "wallet", "pay", C, payload, *base)
    assert code == 2 and "(94)" in err
    code, status, _ = await run(capsys, "qr", "status", qr_id, *base, "--json")
    assert code == 0 and status["state"] == "paid"
    assert [p["amount"] for p in status["payments"]] == [8800]
    code, _, err = await run(capsys, "qr", "status", qr_id, "--merchant", "898310048990002",
                             *base)  # fmt: skip
    assert code == 2 and "qr_id not found for this merchant (25)" in err  # not its QR
    code, _, err = await run(capsys, "qr", "create", "--expires-s", "60", *base)
    assert code == 2 and "with --amount only" in err

    # A code the app issues, paid at a POS.
    code, out, _ = await plain(capsys, "wallet", "paycode", C, *base)
    assert code == 0
    issued = out.split("paycode: ")[1].split()[0]
    client = await pos_client(app)
    sale = await client.request(client.terminal.code_sale(5, issued, 1_200))
    assert sale.fields[39] == "00"
    await client.aclose()
    code, balance, _ = await run(capsys, "wallet", "balance", C, *base, "--json")
    assert code == 0 and balance["balance"] == 50_000 - 8_800 - 1_200

    code, page, _ = await run(capsys, "wallet", "history", C, "--limit", "2", *base, "--json")
    assert code == 0 and [item["amount"] for item in page["items"]] == [-1_200, -8_800]
    assert page["next"]
    code, out, _ = await plain(capsys, "wallet", "history", C, "--cursor", page["next"], *base)
    assert code == 0 and out.split()[1:3] == ["topup", "500.00"]
    code, out, _ = await plain(capsys, "wallet", "balance", C, *base)
    assert code == 0 and "balance: 40000" in out.splitlines()
    # Another app's key is not the wallet's app: 03. A bad id never leaves.
    code, _, err = await run(capsys, "wallet", "history", "no wallet", *base)
    assert code == 2 and "customer_id" in err
    code, _, err = await run(capsys, "wallet", "balance", C, "--key-id", "k", *base)
    assert code == 2 and "--key-id needs --secret-file" in err


def test_no_switch_is_no_answer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _demo_config_on_free_ports(tmp_path)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["wallet", "balance", C, "--config", str(path), "--port", str(port)]
    assert cli.main(argv) == 1
    assert "no response from" in capsys.readouterr().err
