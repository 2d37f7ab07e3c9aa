"""``switch credit open|status|statement|plans|repay`` on a real ledger store beside the
config's SQLite journal: an account opened, a plan bought, a business date closed by
the store as the switch's cut-off would, the statement read and repaid."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from switch import cli
from switch.config import load_config
from switch.core.credit.plan import Terms
from switch.core.ledger import TransferKey, TransferSpec
from switch.store import open_ledger_store
from tests.test_cli import _demo_config_on_free_ports

C = "C100000001"


def test_open_status_statement_plans_repay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _demo_config_on_free_ports(tmp_path)
    base = ["--config", str(config), "--json"]
    assert cli.main(["credit", "status", C, *base]) == 2
    assert "no credit account of C100000001 (14)" in capsys.readouterr().err
    opening = ["credit", "open", C, "--limit", "2000000", "--app", "app:w", "--date", "2026-01-05"]
    assert cli.main([*opening, *base]) == 2
    assert "no wallet of C100000001 (14)" in capsys.readouterr().err
    assert cli.main(["wallet", "open", C, "--class", "2", "--app", "app:w", *base]) == 0
    capsys.readouterr()
    assert cli.main([*opening, "--statement-day", "29", *base]) == 2
    assert "--statement-day: 1..28" in capsys.readouterr().err
    assert cli.main([*opening, *base]) == 0
    opened = json.loads(capsys.readouterr().out)
    figures = (opened["state"], opened["limit_fen"], opened["available_fen"])
    assert figures == ("open", 2_000_000, 2_000_000)
    assert (opened["statement_day"], opened["grace_days"]) == (1, 9)  # [credit]'s defaults
    assert opened["next_statement_date"] == "2026-02-01" and opened["statement"] is None

    store = open_ledger_store(load_config(config))
    store.open()
    store.transfer(TransferSpec(key=TransferKey("app:w", "t1", "topup"),
                                debit="bank_clearing:icbc", credit=f"wallet:{C}",
                                amount=1_000_000, kind="topup"), 0.0)  # fmt: skip
    store.credit_close(date(2026, 1, 11), Terms(), 0.0)
    key = TransferKey("pos:t", "601210000101", "pay")
    store.credit_purchase(C, key=key, purchase_id="601210000101", merchant_id="M1",
                          amount_fen=600_000, instalments=3, terms=Terms(), at=0.0)  # fmt: skip
    store.credit_end_purchase(C, key, "601210000101", True, 0.0)
    store.credit_close(date(2026, 1, 31), Terms(), 0.0)
    store.close()

    assert cli.main(["credit", "statement", C, "2026-02", *base]) == 0
    statement = json.loads(capsys.readouterr().out)
    assert (statement["due_date"], statement["new_balance_fen"]) == ("2026-02-10", 203_000)
    assert [line["kind"] for line in statement["lines"]] == ["instalment"]
    assert cli.main(["credit", "statement", C, "2026-03", *base]) == 2
    assert "no statement of 2026-03 (25)" in capsys.readouterr().err
    assert cli.main(["credit", "plans", C, *base]) == 0
    (plan,) = json.loads(capsys.readouterr().out)["plans"]
    assert (plan["periods_billed"], plan["unbilled_principal_fen"], plan["apr_bps"]) == (
        1, 400_000, 898,
    )  # fmt: skip
    assert cli.main(["credit", "plans", C, "--purchase-id", "601210000101", *base]) == 0
    (plan,) = json.loads(capsys.readouterr().out)["plans"]
    assert [row["statement_date"] for row in plan["schedule"]] == [
        "2026-02-01", "2026-03-01", "2026-04-01",
    ]  # fmt: skip
    repay = ["credit", "repay", C, "100000", "--id", "603920000104", *base]
    assert cli.main(repay) == 0
    repaid = json.loads(capsys.readouterr().out)
    assert repaid["allocated"] == {"penalty_fen": 0, "fee_fen": 3_000, "principal_fen": 97_000,
                                   "prepaid_fen": 0}  # fmt: skip
    assert repaid["account"]["due_fen"] == 103_000
    assert cli.main(repay) == 1  # the same id again: nothing more moves
    assert "repayment 603920000104 was made before" in capsys.readouterr().err
    assert cli.main(["credit", "status", C, *base]) == 0
    assert json.loads(capsys.readouterr().out)["due_fen"] == 103_000
    assert cli.main(["credit", "repay", C, "10000000", "--id", "r2", *base]) == 2
    assert "(13)" in capsys.readouterr().err
    assert cli.main(["credit", "status", C, "--config", str(config)]) == 0
    assert "state: open" in capsys.readouterr().out
    assert cli.main(["wallet", "verify", "--config", str(config)]) == 0
