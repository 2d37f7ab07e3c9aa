"""``switch wallet verify|demo-topup|withdrawals`` on a real ledger store beside the
config's SQLite journal (the operator-side ones), and ``switch qr render``; the others,
signed requests to a running switch, are in test_wallet_online_commands."""

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


def test_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _demo_config_on_free_ports(tmp_path)
    store = open_ledger_store(load_config(config))
    store.open()
    store.open_wallet("C100000001", "app:w", 2, "2026-12-07", 1_765_000_000.0)
    for n in range(3):
        store.transfer(TransferSpec(key=TransferKey("app:w", f"t{n}", "topup"),
                                    debit="bank_clearing:icbc", credit="wallet:C100000001",
                                    amount=100 * (n + 1), kind="topup", rrn=f"63411000010{n}"),
                       1_765_000_000.0 + n)  # fmt: skip
    store.close()
    assert (tmp_path / "ledger.sqlite3").exists()
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
    async with trio.open_nursery() as nursery:
        app: SwitchApp = await nursery.start(SwitchApp(config).run)
        base = [*base, "--port", str(app.online_port)]
        assert (
            await trio.to_thread.run_sync(
                cli.main, ["wallet", "open", "C100000001", "--class", "2", *base]
            )
            == 0
        )
        # demo-topup writes the ledger store beside the running switch.
        assert await trio.to_thread.run_sync(
            cli.main, ["wallet", "demo-topup", "C100000001", "--amount", "500.00",
                       "--config", str(path)]
        ) == 0  # fmt: skip
        assert capsys.readouterr().out.endswith("balance: 50000\n")
        assert (
            await trio.to_thread.run_sync(cli.main, ["wallet", "paycode", "C100000001", *base]) == 0
        )
        code = capsys.readouterr().out.split("paycode: ")[1].split()[0]
        assert len(code) == 19 and code.startswith("88")
        port = str(app.pos_port)
        pos = ["--port", port, "--batch-file", str(tmp_path / "batch.json"), "--config", str(path)]
        assert (
            await trio.to_thread.run_sync(
                cli.main, ["pos", "sale", "--code", code, "--amount", "88.00", "--stan", "7", *pos]
            )
            == 0
        )
        sale = json.loads(capsys.readouterr().out)
        assert sale["response_code"] == "00" and sale["fields"]["63"] == "WAL"
        assert code not in json.dumps(sale)  # masked as a card number would be
        assert (
            await trio.to_thread.run_sync(
                cli.main, ["wallet", "balance", "C100000001", "--json", *base]
            )
            == 0
        )
        assert json.loads(capsys.readouterr().out)["balance"] == 50_000 - 8_800
        rrn = sale["fields"]["37"]
        assert (
            await trio.to_thread.run_sync(
                cli.main, ["pos", "void", "--code", code, "--rrn", rrn, "--stan", "8", *pos]
            )
            == 0
        )
        assert json.loads(capsys.readouterr().out)["response_code"] == "00"
        assert (
            await trio.to_thread.run_sync(
                cli.main, ["wallet", "balance", "C100000001", "--json", *base]
            )
            == 0
        )
        assert json.loads(capsys.readouterr().out)["balance"] == 50_000
        app.shutdown()
    # demo-topup is the demo's only: a switch without the demo keys refuses it.
    real = path.read_text().replace("demo_keys = true", "demo_keys = false")
    (tmp_path / "real.toml").write_text(real)
    args = ["wallet", "demo-topup", "C100000001", "--amount", "1.00"]
    assert cli.main([*args, "--config", str(tmp_path / "real.toml")]) == 2
    assert "only on a demo switch" in capsys.readouterr().err


def test_withdrawals_file_written_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from switch.core.wallet import BoundAccount, MoneyAsk, WalletSettings

    config_path = _demo_config_on_free_ports(tmp_path)
    config = load_config(config_path)
    store = open_ledger_store(config)
    store.open()
    at = 1_796_610_030.0
    store.open_wallet("C100000001", "app:wallet", 2, "2026-12-07", at)
    store.transfer(TransferSpec(key=TransferKey("t", "topup", "topup"), debit="bank_clearing:icbc",
                                credit="wallet:C100000001", amount=50_000, kind="topup"),
                   at)  # fmt: skip
    account = BoundAccount(account="6222021000111133335", account_name="张三",
                           bank_code="102100099996")  # fmt: skip
    store.bind_account("C100000001", "app:wallet", account, at)
    key = TransferKey("app:wallet", "w-1", "withdraw")
    store.reserve_payment(
        MoneyAsk(customer_id="C100000001", amount=10_000, counted="withdraw",
                 local_date="2026-12-07"),
        TransferSpec(key=key, debit="wallet:C100000001", credit="withdrawals_payable",
                     amount=10_000, kind="withdraw", rrn="634114000140"),
        WalletSettings(), at, app="app:wallet", withdraw_to=account,
        order=("634114000140", "2026-12-07"),
    )  # fmt: skip
    store.end_payment(key, True, at)
    store.close()
    args = ["wallet", "withdrawals", "2026-12-07", "--config", str(config_path)]
    assert cli.main(args) == 0
    path = config.settlement_out_dir() / "withdrawals-20261207.csv"
    assert f"written: {path}" in capsys.readouterr().out
    # wallet.md's sample row, to the byte.
    sample = (
        "business_date,value_date,rrn,customer_id,bank_code,account,account_name,amount_fen\n"
        "2026-12-07,2026-12-08,634114000140,C100000001,102100099996,6222021000111133335,"
        "张三,10000\n"
    ).encode()
    assert path.read_bytes() == sample
    assert cli.main(args) == 0 and path.read_bytes() == sample
    store.open()
    payouts = store.account("payouts")
    payable = store.account("withdrawals_payable")
    store.close()
    assert payouts is not None and payable is not None
    assert (payouts.balances.balance, payable.balances.balance) == (10_000, 0)
    assert cli.main(["wallet", "withdrawals", "7 Dec", "--config", str(config_path)]) == 2


def test_a_withdrawal_after_its_dates_file_goes_in_the_next_one(tmp_path: Path) -> None:
    from switch.core.wallet import BoundAccount, MoneyAsk, WalletSettings

    config = load_config(_demo_config_on_free_ports(tmp_path))
    store = open_ledger_store(config)
    store.open()
    at = 1_796_610_030.0
    store.open_wallet("C1", "app:wallet", 2, "2026-12-07", at)
    store.transfer(TransferSpec(key=TransferKey("t", "topup", "topup"), debit="bank_clearing:icbc",
                                credit="wallet:C1", amount=50_000, kind="topup"), at)  # fmt: skip
    account = BoundAccount(account="6222021000111133335", account_name="Zhang",
                           bank_code="102100099996")  # fmt: skip
    store.bind_account("C1", "app:wallet", account, at)
    assert store.file_withdrawals("2026-12-07", at) == []  # the date's file, read first
    key = TransferKey("app:wallet", "w-late", "withdraw")
    store.reserve_payment(
        MoneyAsk(customer_id="C1", amount=700, counted="withdraw", local_date="2026-12-07"),
        TransferSpec(key=key, debit="wallet:C1", credit="withdrawals_payable", amount=700,
                     kind="withdraw", rrn="634114000141"),
        WalletSettings(), at, app="app:wallet", withdraw_to=account,
        order=("634114000141", "2026-12-07"),
    )  # fmt: skip
    store.end_payment(key, True, at)
    # The 7th's file, written again, stays as handed over; the 8th's takes the late one.
    assert store.file_withdrawals("2026-12-07", at) == []
    late = store.file_withdrawals("2026-12-08", at)
    assert [(line.rrn, line.amount) for line in late] == [("634114000141", 700)]
    assert store.file_withdrawals("2026-12-08", at) == late
    payouts = store.account("payouts")
    store.close()
    assert payouts is not None and payouts.balances.balance == 700
