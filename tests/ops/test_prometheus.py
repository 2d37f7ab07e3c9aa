"""ops/prometheus/: the alert rules pass ``promtool check rules`` and their own cases
(``promtool test rules``), the configuration ``promtool check config``; every metric a
rule names is one a running switch exposes, and every alert has its runbook entry."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.conftest import REPO
from tests.ops.conftest import OPS, missing, names_in

PROMETHEUS = OPS / "prometheus"


def run(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
    )


def rules() -> list[dict[str, object]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_rules_check_and_pass_their_cases(promtool: Path) -> None:
    checked = run(promtool, "check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(promtool, "test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    config = run(promtool, "check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_the_cases_cover_the_alerts_an_operator_is_paged_for() -> None:
    cases = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    tested = {
        case["alertname"] for test in cases["tests"] for case in test["alert_rule_test"]
    }
    assert {
        "PayswitchReversalManual", "PayswitchClearingFileRejected",
        "PayswitchSettlementOverdue", "PayswitchJournalCommitFailing",
        "PayswitchWorkerRestarting", "PayswitchBankCircuitOpen", "PayswitchBankKeysOverdue",
        "PayswitchCertificateExpiring",
    } <= tested  # fmt: skip


def test_every_alert_has_its_runbook_entry() -> None:
    runbook = (REPO / "docs" / "runbook.md").read_text()
    headings = {line[3:].strip().lower() for line in runbook.splitlines() if line.startswith("## ")}
    for rule in rules():
        name = str(rule["alert"])
        assert name.lower() in headings, f"docs/runbook.md has no '## {name}'"
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert annotations["runbook"] == f"docs/runbook.md#{name.lower()}"


async def test_every_metric_a_rule_names_is_exposed(scrape: str) -> None:
    used = set().union(*(names_in(str(rule["expr"])) for rule in rules()))
    assert "payswitch_saf_manual" in used
    assert missing(used, scrape) == set()
