"""``switch wallet open|balance|history`` and ``switch qr render`` on a real ledger store
beside the config's SQLite journal."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from switch import cli
from switch.config import load_config
from switch.core.ledger import TransferKey, TransferSpec
from switch.store import open_ledger_store
from tests.test_cli import _demo_config_on_free_ports
from tests.wire.test_emvqr import STATIC


def test_open_balance_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _demo_config_on_free_ports(tmp_path)
    base = ["--config", str(config), "--json"]
    assert cli.main(["wallet", "balance", "C100000001", *base]) == 2
    assert "no wallet of C100000001 (14)" in capsys.readouterr().err
    assert cli.main(["wallet", "open", "C100000001", "--class", "2", "--app", "app:w", *base]) == 0
    opened = json.loads(capsys.readouterr().out)
    assert (opened["class"], opened["balance"], opened["class_left"]) == (2, 0, 10_000_000)
    store = open_ledger_store(load_config(config))
    store.open()
    for n in range(3):
        store.transfer(TransferSpec(key=TransferKey("app:w", f"t{n}", "topup"),
                                    debit="bank_clearing:icbc", credit="wallet:C100000001",
                                    amount=100 * (n + 1), kind="topup", rrn=f"63411000010{n}"),
                       1_765_000_000.0 + n)  # fmt: skip
    store.close()
    assert (tmp_path / "ledger.sqlite3").exists()
    assert cli.main(["wallet", "balance", "C100000001", *base]) == 0
    assert json.loads(capsys.readouterr().out)["balance"] == 600
    assert cli.main(["wallet", "history", "C100000001", "--limit", "2", *base]) == 0
    page = json.loads(capsys.readouterr().out)
    assert [item["amount"] for item in page["items"]] == [300, 200]
    assert page["items"][0]["time"].endswith("+08:00") and page["next"]
    args = ["wallet", "history", "C100000001", "--cursor", page["next"], *base]
    assert cli.main(args) == 0
    rest = json.loads(capsys.readouterr().out)
    assert [item["balance_after"] for item in rest["items"]] == [100] and rest["next"] is None
    assert cli.main(["wallet", "verify", "--config", str(config)]) == 0
    assert capsys.readouterr().out == "ok: the ledger balances\n"
    damaged = sqlite3.connect(tmp_path / "ledger.sqlite3")
    with damaged:  # a posted sum changed behind the ledger's back
        damaged.execute(
            "UPDATE ledger_account SET credits_posted = credits_posted + 1 "
            "WHERE name = 'wallet:C100000001'"
        )
    damaged.close()
    assert cli.main(["wallet", "verify", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "problem: fen: posted debits 600 != credits 601" in out
    assert "problem: wallet:C100000001: sums differ from its transfers'" in out
    # another app's wallet is refused to it; the operator's commands see every wallet
    assert cli.main(["wallet", "open", "C100000001", "--class", "3", "--app", "app:x", *base]) == 2
    assert "another app's (03)" in capsys.readouterr().err


def test_qr_render(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["qr", "render", STATIC]) == 0
    captured = capsys.readouterr()
    assert "█" in captured.out and captured.err == ""
    assert cli.main(["qr", "render", STATIC[:-1] + "0"]) == 0
    assert "CRC wrong" in capsys.readouterr().err


async def test_the_readme_walkthrough_pays_a_code_on_the_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The guide's wallet walkthrough: open a wallet, top it up (demo), issue a code, pay
    it with `switch pos sale --code`, void it; the balance follows."""
    import trio

    from switch.app import SwitchApp

    path = _demo_config_on_free_ports(tmp_path)
    config = load_config(path)
    base = ["--config", str(path)]
    assert cli.main(["wallet", "open", "C100000001", "--class", "2", "--app", "app:wallet",
                     *base]) == 0  # fmt: skip
    assert cli.main(["wallet", "demo-topup", "C100000001", "--amount", "500.00", *base]) == 0
    assert capsys.readouterr().out.endswith("balance: 50000\n")
    assert cli.main(["wallet", "paycode", "C100000001", "--app", "app:wallet", *base]) == 0
    code = capsys.readouterr().out.split()[1]
    assert len(code) == 19 and code.startswith("88")
    async with trio.open_nursery() as nursery:
        app: SwitchApp = await nursery.start(SwitchApp(config).run)
        port = str(app.pos_port)
        pos = ["--port", port, "--batch-file", str(tmp_path / "batch.json"), *base]
        assert await trio.to_thread.run_sync(
            cli.main, ["pos", "sale", "--code", code, "--amount", "88.00", "--stan", "7", *pos]
        ) == 0
        sale = json.loads(capsys.readouterr().out)
        assert sale["response_code"] == "00" and sale["fields"]["63"] == "WAL"
        assert code not in json.dumps(sale)  # masked as a card number would be
        assert await trio.to_thread.run_sync(
            cli.main, ["wallet", "balance", "C100000001", "--json", *base]
        ) == 0
        assert json.loads(capsys.readouterr().out)["balance"] == 50_000 - 8_800
        rrn = sale["fields"]["37"]
        assert await trio.to_thread.run_sync(
            cli.main, ["pos", "void", "--code", code, "--rrn", rrn, "--stan", "8", *pos]
        ) == 0
        assert json.loads(capsys.readouterr().out)["response_code"] == "00"
        app.shutdown()
    assert cli.main(["wallet", "balance", "C100000001", "--json", *base]) == 0
    assert json.loads(capsys.readouterr().out)["balance"] == 50_000
    # demo-topup is the demo's only: a switch without the demo keys refuses it.
    real = path.read_text().replace("demo_keys = true", "demo_keys = false")
    (tmp_path / "real.toml").write_text(real)
    args = ["wallet", "demo-topup", "C100000001", "--amount", "1.00"]
    assert cli.main([*args, "--config", str(tmp_path / "real.toml")]) == 2
    assert "only on a demo switch" in capsys.readouterr().err
