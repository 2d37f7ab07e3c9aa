"""``switch risk card-hash|test|hits`` as the operator runs them (real processes, real
files): card numbers become the hashes rules list, a rules file is tried on a request
contacting nothing, and the journal's hits are listed newest first."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from switch.core.changes import TxnStarted
from tests.store.records import make_record
from tests.test_cli import _demo_config_on_free_ports, _journal_of, _switch

pytestmark = pytest.mark.slow  # each runs `switch risk` as a process

DEMO_HMAC_KEY = bytes.fromhex("6d656d6f2d686d61632d6b65792d646f2d6e6f742d7573652d696e2d70726f64")
PAN = "6222021000111122221"
OTHER = "6228480000000000016"


def expected_hash(pan: str) -> str:
    return hmac.new(DEMO_HMAC_KEY, pan.encode(), hashlib.sha256).hexdigest()


def test_card_hash_prints_each_numbers_hash_in_order_and_refuses_a_bad_line(
    tmp_path: Path,
) -> None:
    config = _demo_config_on_free_ports(tmp_path)
    done = _switch("risk", "card-hash", "--config", str(config), input=f"{PAN}\n{OTHER}\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [expected_hash(PAN), expected_hash(OTHER)]
    assert PAN not in done.stdout + done.stderr
    bad = _switch("risk", "card-hash", "--config", str(config), input=f"{PAN}\n62220x\n")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == ["switch: line 2: not a card number (12-19 digits)"]


RULES = """[[rules]]
id = "blocked-cards"
mode = "enforce"
kind = "blocklist"
key = "card"
values_file = "blocked.txt"
action = "decline"
code = "62"

[[rules]]
id = "grocery-only"
mode = "shadow"
kind = "mcc"
allow = ["5411"]
action = "decline"
code = "57"

[[rules]]
id = "online-cap"
mode = "enforce"
kind = "amount_cap"
channels = ["online"]
max_fen = 100
action = "decline"
code = "61"

[[rules]]
id = "card-3-a-minute"
mode = "enforce"
kind = "velocity"
key = "card"
window = "1m"
counts = "attempts"
max_count = 3
action = "decline"
code = "65"

[[rules]]
id = "device-review"
mode = "enforce"
kind = "velocity"
key = "device"
window = "1h"
counts = "approved"
max_count = 0
action = "review"
"""


def test_risk_test_evaluates_a_request_after_its_history_contacting_nothing(
    tmp_path: Path,
) -> None:
    config = _demo_config_on_free_ports(tmp_path)
    (tmp_path / "risk.toml").write_text(RULES)
    (tmp_path / "blocked.txt").write_text(f"# stolen\n{expected_hash(OTHER)}\n")
    sale = {"channel": "pos", "merchant_id": "898310048990001", "terminal_id": "POS00001",
            "pan": PAN, "amount": 5000, "time": "2026-11-22T10:00:30"}  # fmt: skip
    history = tmp_path / "history.jsonl"
    history.write_text(
        "".join(
            json.dumps({**sale, "time": f"2026-11-22T10:00:0{n}", "outcome": outcome}) + "\n"
            for n, outcome in enumerate(("approved", "declined", "removed"))
        )
    )

    def run(request: dict[str, object], *extra: str) -> list[str]:
        done = _switch(
            "risk", "test", "--file", str(tmp_path / "risk.toml"), "--request",
            json.dumps(request), "--config", str(config), *extra,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return [" ".join(line.split()) for line in done.stdout.splitlines()]

    assert run(sale) == [
        "blocked-cards pass", "grocery-only pass", "online-cap out of scope",
        "card-3-a-minute pass", "device-review out of scope", "approve",
    ]  # fmt: skip
    assert run(sale, "--history", str(history))[-2:] == [
        "device-review out of scope", "decline 65 card-3-a-minute",
    ]  # fmt: skip
    online = {"channel": "online", "merchant_id": "SHOP01", "pan": OTHER, "amount": 500,
              "device_id": "phone-1"}  # fmt: skip
    assert run(online) == [
        "blocked-cards hit", "grocery-only hit", "online-cap hit", "card-3-a-minute pass",
        "device-review hit", "decline 62 blocked-cards",
    ]  # fmt: skip
    (tmp_path / "risk.toml").write_text(RULES.replace('code = "65"', 'code = "66"'))
    bad = _switch(
        "risk", "test", "--file", str(tmp_path / "risk.toml"), "--request", json.dumps(sale),
        "--config", str(config),
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stdout == ""
    [line] = bad.stderr.splitlines()
    assert "risk.toml: rule 'card-3-a-minute': key code" in line


async def test_risk_hits_lists_the_journals_hits_newest_first(tmp_path: Path) -> None:
    config = _demo_config_on_free_ports(tmp_path)
    declined = make_record("633260000001", state="declined", code="61", risk_rule="big",
                           risk_shadow="night:decline:59")  # fmt: skip
    reviewed = make_record("633260000002", state="approved", code="00", risk_review="r1,r2")
    plain = make_record("633260000003", state="approved", code="00")
    await _journal_of(
        tmp_path / "journal.sqlite3",
        TxnStarted.of(declined, 1_800_000_000.0),
        TxnStarted.of(reviewed, 1_800_000_060.0),
        TxnStarted.of(plain, 1_800_000_120.0),
    )

    def hits(*extra: str) -> list[tuple[str, str, str, str | None, str]]:
        done = _switch("risk", "hits", "--config", str(config), "--json", *extra)
        assert done.returncode == 0, done.stderr
        return [(h["rule"], h["mode"], h["action"], h["code"], h["rrn"])
                for h in json.loads(done.stdout)]  # fmt: skip

    assert hits() == [
        ("r1", "enforce", "review", None, "633260000002"),
        ("r2", "enforce", "review", None, "633260000002"),
        ("big", "enforce", "decline", "61", "633260000001"),
        ("night", "shadow", "decline", "59", "633260000001"),
    ]
    assert hits("--mode", "shadow") == [("night", "shadow", "decline", "59", "633260000001")]
    assert hits("--rule", "r2", "--last", "1") == [
        ("r2", "enforce", "review", None, "633260000002")
    ]
    table = _switch("risk", "hits", "--config", str(config), "--last", "1")
    assert table.returncode == 0 and "622202*********2221" in table.stdout


def test_config_check_names_a_faulty_rules_file_once(tmp_path: Path) -> None:
    config = _demo_config_on_free_ports(tmp_path)
    config.write_text(config.read_text() + '\n[risk]\nrules_file = "risk.toml"\n')
    (tmp_path / "risk.toml").write_text(RULES.replace('code = "65"', 'code = "66"'))
    bad = _switch("config", "check", "--config", str(config))
    assert bad.returncode == 2, bad.stdout
    [line] = bad.stderr.splitlines()
    assert line.endswith("risk.toml: rule 'card-3-a-minute': key code: Invalid enum value '66'")
    (tmp_path / "risk.toml").write_text(RULES)
    (tmp_path / "blocked.txt").write_text("")
    good = _switch("config", "check", "--config", str(config))
    assert good.returncode == 0, good.stderr
