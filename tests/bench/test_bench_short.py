"""The bench harness keeps working: ``python -m bench --short`` runs every scenario with
tiny loads, and its JSON report holds what the full run's readers rely on; with
``--baseline HEAD`` the same scenarios also run on the committed switch, side by side.

Speed is reported, never asserted: the machine is shared and noisy. What is checked is
the harness's own bookkeeping: every scenario present, traffic answered, every request
sent accounted for by exactly one response code, both baselines there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bench.model import Report, ScenarioResult
from tests.pg_server import PostgresServer

# Bench runs: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCENARIO_KEYS = set(ScenarioResult.__struct_fields__)
REPORT_KEYS = set(Report.__struct_fields__)


BASELINE_ONLY = {"baseline", "comparison"}
"""Report sections empty without --baseline."""
ASKED_FOR_BY_NAME = {"scaling"}
"""Report sections of scenarios a run without --scenarios leaves out."""


def run_bench(out: Path, *arguments: str) -> tuple[dict[str, Any], str]:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--short", "--quiet", "--output", str(out), *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert out.exists()
    return json.loads(out.read_text()), completed.stdout


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    return run_bench(tmp_path_factory.mktemp("bench") / "report.json")


def scenarios(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A version's scenarios by name (the current's with the echo server's)."""
    found = [*report["closed_sweep"], *report["open_sweep"]]
    found += [report["half_max"], report["online"], report["overload"]["result"]]
    if "echo" in report:
        found += [report["echo"]["closed"], report["echo"]["half_max"]]
    found += [report["idle"]["result"], *report["crowd"], report["slow_bank"]["result"]]
    if busy := report.get("busy_online"):
        found += [busy["pos_alone"], busy["pos_beside_online"], busy["online"]]
    if report.get("admin"):
        found += [*report["admin"]["off"], *report["admin"]["on"]]
    if report.get("risk"):
        found += [*report["risk"]["none"], *report["risk"]["with_rules"]]
    return {scenario["name"]: scenario for scenario in found}


def test_report_has_every_section(short_run: tuple[dict[str, Any], str]) -> None:
    report, _ = short_run
    assert set(report) == REPORT_KEYS
    for section in REPORT_KEYS - BASELINE_ONLY - ASKED_FOR_BY_NAME:
        assert report[section] not in (None, []), f"{section} missing from the short run"
    assert report["baseline"] is None and report["comparison"] == []
    assert report["scaling"] is None
    msgspec.convert(report, Report)  # the whole report has the documented shape


def test_every_scenario_answered_and_accounted_for(short_run: tuple[dict[str, Any], str]) -> None:
    report, _ = short_run
    found = scenarios(report)
    assert len(found) >= 11
    for name, scenario in found.items():
        assert set(scenario) == SCENARIO_KEYS, name
        assert scenario["tps"] > 0, name
        assert scenario["sent"] > 0, name
        assert sum(scenario["codes"].values()) == scenario["sent"], name
        assert scenario["answered"] > 0, name
        assert scenario["latency_ms"]["count"] == scenario["answered"], name
        assert scenario["server"]["rss_mb_max"] > 0, name
        assert scenario["generator"]["workers"] >= 1, name
    for name, scenario in found.items():
        if scenario["target"] == "switch" and scenario["kind"] != "idle":
            assert scenario["codes"].get("00", 0) > 0, name


def test_the_switch_log_says_where_its_time_went(short_run: tuple[dict[str, Any], str]) -> None:
    """Each switch scenario's txn lines: the switch's latency for every answer in the
    window, and of it the journal's and the bank's share for the sales that went out."""
    report, _ = short_run
    half_max = report["half_max"]
    logged = half_max["switch_logged"]
    # The same window, cut by two clocks (the generator's sends, the switch's arrivals):
    # they may differ by the requests in transit at its edges, never by the warm-up's.
    sent = half_max["sent"]
    assert abs(logged["latency_ms"]["count"] - sent) <= max(5, sent // 20)
    for part in ("journal_ms", "bank_ms"):
        assert 0 < logged[part]["count"] <= logged["latency_ms"]["count"], part
        assert 0 < logged[part]["p50"] <= logged["latency_ms"]["max"], part
    assert report["echo"]["half_max"]["switch_logged"] is None
    # What the journal said of the disk in the window is in the report and its line.
    assert logged["slow_commits"] >= 0
    assert "journal commit" in next(
        check["measured"] for check in report["targets"] if "half the maximum" in check["target"]
    )


def test_echo_baseline_present(short_run: tuple[dict[str, Any], str]) -> None:
    report, _ = short_run
    echo = report["echo"]
    for scenario in (echo["closed"], echo["half_max"]):
        assert scenario["target"] == "echo"
        assert scenario["codes"].get("echo", 0) == scenario["sent"] > 0
    assert echo["half_max"]["offered_rate"] == report["half_max"]["offered_rate"]
    assert "cpu_ratio" in echo


def test_codec_baseline_present(short_run: tuple[dict[str, Any], str]) -> None:
    report, _ = short_run
    codec = report["codec"]
    assert codec["pyiso8583"]  # a dev dependency
    dialects = {d["dialect"]: d for d in codec["dialects"]}
    assert set(dialects) == {"cup-pos", "h2h-ascii"}
    for dialect in dialects.values():
        assert dialect["same_results"] is True
        assert len(dialect["operations"]) == 2
        for operation in [*dialect["operations"], dialect["pair"]]:
            assert operation["ours_ns"] > 0 and operation["pyiso_ns"] > 0
            assert operation["ratio"] > 0


def test_disk_baseline_present(short_run: tuple[dict[str, Any], str]) -> None:
    report, printed = short_run
    disk = report["disk"]
    assert disk["latency_ms"]["count"] > 0
    assert 0 < disk["latency_ms"]["p50"] <= disk["latency_ms"]["max"]
    assert 0 <= disk["stalls"] <= disk["latency_ms"]["count"]
    assert "disk alone:" in printed


def test_scenario_details(short_run: tuple[dict[str, Any], str]) -> None:
    report, _ = short_run
    assert report["max_rate"]["tps"] > 0
    overload = report["overload"]
    assert overload["result"]["offered_rate"] == pytest.approx(2 * overload["max_rate_tps"])
    assert overload["answered_91"] == overload["result"]["codes"].get("91", 0)
    refused = overload["result"]["latency_refused_ms"]
    assert refused["count"] == overload["answered_91"]
    best = max(report["open_sweep"], key=lambda result: result["goodput_tps"])
    assert overload["rss_reference_terminals"] == best["connections"]
    assert report["online"]["pipeline_depth"] > 1
    idle = report["idle"]
    assert idle["connected"] == idle["connections"] > 0
    slow = report["slow_bank"]
    assert slow["window"] >= slow["required_window"] > 0
    assert slow["result"]["latency_ms"]["p50"] >= slow["latency_ms"]
    assert report["meta"]["journal"].startswith("on")
    assert "[journal]" in report["meta"]["configs"]["main"]


def test_tables_printed(short_run: tuple[dict[str, Any], str]) -> None:
    _, stdout = short_run
    for heading in ("scenario", "speed-up", "target", "JSON report:"):
        assert heading in stdout
    assert "@base" not in stdout


def test_the_targets_of_the_issue(short_run: tuple[dict[str, Any], str]) -> None:
    report, printed = short_run
    targets = report["targets"]
    assert len(targets) == 17
    for check in targets:
        assert check["result"] in ("PASS", "FAIL", "n/a", "n/a-stalled"), check
        assert (check["passed"] is None) == check["result"].startswith("n/a"), check
        assert check["result"] in printed
    by_start = {check["target"].split(":")[0]: check for check in targets}
    # The short run's closed loops are of 1 and 4 terminals, its crowd of 300.
    for terminals in ("200", "1,000"):
        closed = next(c for c in targets if c["target"].startswith(f"closed loop of {terminals} "))
        assert "demo banks (2 links x window 32)" in closed["target"]
        assert closed["result"] == "n/a"
    assert "300 terminals" in next(c["measured"] for c in targets if "(crowd)" in c["target"])
    assert by_start["maximum rate >= 1.5x the baseline's (same run)"]["measured"] == "no --baseline"
    one = by_start["one terminal alone (closed loop of 1)"]
    assert one["result"] in ("PASS", "FAIL") and "p50" in one["measured"]
    excess = next(c for c in targets if "excess request answered 91 within 1 s" in c["target"])
    assert excess["result"] in ("PASS", "FAIL")
    for gone in ("codec", "idle terminal", "RSS within"):
        assert not any(gone in check["target"] for check in targets), gone
    scaling = [c for c in targets if c["target"].startswith("scaling: ")]
    assert [c["result"] for c in scaling] == ["n/a", "n/a"]  # not asked for


def test_the_risk_rules_cost_is_measured_without_and_with_200_rules(
    short_run: tuple[dict[str, Any], str],
) -> None:
    """The same half-max load on a switch without rules and one with 200 in scope of
    every sale, none declining: CPU per sale of each, and the target's line."""
    report, printed = short_run
    risk = report["risk"]
    assert risk["rules"] == 200
    assert [r["name"] for r in risk["none"]] == ["risk_none"]
    assert [r["name"] for r in risk["with_rules"]] == ["risk_200"]
    for result in (*risk["none"], *risk["with_rules"]):
        assert result["offered_rate"] == pytest.approx(risk["rate"])
        assert set(result["codes"]) <= {"00", "not_sent"}, result["codes"]  # no rule declines
    configs = report["meta"]["configs"]
    assert "rules_file" in configs["risk-200"] and "[risk]" not in configs["risk-none"]
    check = next(c for c in report["targets"] if "risk rules in scope" in c["target"])
    assert check["target"].endswith("within 10% of none")
    assert "risk rules: CPU per 1,000 sales" in printed
    assert "risk_none" in printed and "risk_200" in printed


def test_the_admin_interface_is_measured_off_and_on_and_scraped(
    short_run: tuple[dict[str, Any], str],
) -> None:
    """The same half-max load on a switch without [admin] and one with it, scraped at
    /metrics and /status while measured: CPU per sale of each, and the target's line."""
    report, printed = short_run
    admin = report["admin"]
    assert [r["name"] for r in admin["off"]] == ["admin_off"]
    assert [r["name"] for r in admin["on"]] == ["admin_on"]
    for result in (*admin["off"], *admin["on"]):
        assert result["offered_rate"] == pytest.approx(admin["rate"])
        assert result["codes"].get("00", 0) > 0
    assert admin["off"][0]["server"]["pid"] != admin["on"][0]["server"]["pid"]
    scrapes = admin["scrapes"]
    assert scrapes["scrapes"] >= 1 and scrapes["failures"] == 0, scrapes["last_error"]
    assert scrapes["metrics_bytes"] > 0 and scrapes["status_bytes"] > 0
    configs = report["meta"]["configs"]
    assert "[admin]\nenabled = true" in configs["admin-on"]
    assert "[admin]\nenabled = false" in configs["admin-off"]
    assert "[admin]" not in configs["main"]  # every other switch as it always was
    check = next(c for c in report["targets"] if "admin interface on and scraped" in c["target"])
    assert check["target"].endswith("within 3% of off")
    assert "scrapes of /metrics" in check["measured"]
    assert "admin interface: CPU per 1,000 sales" in printed
    assert "admin_off" in printed and "admin_on" in printed


def test_a_synthetic_day_is_settled_and_checked(short_run: tuple[dict[str, Any], str]) -> None:
    """The settlement scenario's tiny day: settled by the service in its own process,
    every category found as injected, the time and peak RSS reported, and the targets
    of the issue's size n/a at this size (their numbers still shown)."""
    report, printed = short_run
    settlement = report["settlement"]
    result = settlement["result"]
    assert settlement["plan_transactions"] == 2000
    assert result["transactions"] == sum(settlement["by_bank"].values()) > 2000
    assert settlement["ok"] is True and result["problems"] == [] and result["checked"]
    assert result["categories"] == result["expected"]
    assert set(result["categories"]) == {"matched", "switch_only", "bank_only", "amount_mismatch"}
    assert set(settlement["injected"]) == {
        "dropped", "amount_changed", "unknown", "moved", "declined_listed", "reversed_listed",
        "corrupt_file",
    }  # fmt: skip
    assert all(count > 0 for count in settlement["injected"].values())
    assert result["seconds"] > 0 and result["rate_per_s"] > 0
    assert result["peak_rss_mb"] > 0 and result["next_date_seconds"] is not None
    assert any(step["step"].startswith("INSERT INTO counted") for step in result["steps"])
    assert sum(phase["seconds"] for phase in result["phases"]) == pytest.approx(
        result["seconds"], abs=0.01
    )
    checks = [c for c in report["targets"] if c["target"].startswith("settlement")]
    assert [c["result"] for c in checks] == ["n/a", "n/a", "PASS"]
    assert "2,010 transactions" in checks[0]["measured"]
    assert "settlement: " in printed and "SettlementService.settle:" in printed


def test_half_max_is_judged_by_part_of_its_window(short_run: tuple[dict[str, Any], str]) -> None:
    report, _ = short_run
    parts = report["half_max"]["parts"]
    assert len(parts["parts"]) == 2
    assert (
        sum(part["latency_ms"]["count"] for part in parts["parts"])
        == report["half_max"]["latency_ms"]["count"]
    )
    assert parts["unstalled"] == sum(1 for part in parts["parts"] if not part["slow_commits"])
    assert report["closed_sweep"][0]["parts"] is None


# The harness's own pieces, as quick tables.


def test_histogram_percentiles_are_within_its_precision() -> None:
    from bench.histogram import LatencyHistogram, bucket_ceiling, bucket_of

    for value in (0, 1, 127, 128, 129, 1000, 65_535, 1_000_000, 123_456_789):
        index = bucket_of(value)
        assert bucket_ceiling(index) >= value
        assert bucket_ceiling(index) <= value * (1 + 1 / 64) + 1
    histogram = LatencyHistogram()
    for value in range(1, 10_001):
        histogram.record(value)
    for percent, exact in ((50.0, 5000), (99.0, 9900), (99.9, 9990)):
        assert exact <= histogram.percentile_us(percent) <= exact * (1 + 1 / 64)
    assert histogram.percentile_us(100.0) == 10_000
    merged = LatencyHistogram.from_wire(histogram.to_wire())
    merged.merge(histogram)
    assert merged.count == 20_000 and merged.percentile_us(50.0) == histogram.percentile_us(50.0)


def test_patched_frames_equal_freshly_encoded_ones() -> None:
    from bench.runconfig import DIALECTS_DIR
    from bench.traffic import (
        OnlinePurchaseTemplate,
        PosSaleTemplate,
        online_request_id,
        online_sequence,
    )
    from switch.net.clients import OnlineKey
    from switch.terminal import Terminal, encode_pos_request
    from switch.wire import envelope
    from switch.wire import online as wire
    from switch.wire.dialect import load_dialect
    from switch.wire.iso8583 import Iso8583Codec

    codec = Iso8583Codec(load_dialect(DIALECTS_DIR / "cup-pos.toml"))
    terminal = Terminal(terminal_id="W0000007", batch=42)
    pan = "6222021000111122221"
    template = PosSaleTemplate(codec, terminal, pan, 100)
    for stan in (1, 123, 999_999):
        payload = encode_pos_request(codec, terminal, terminal.sale(stan, pan, 100))
        assert template.frame(stan) == len(payload).to_bytes(2, "big") + payload
    online = OnlinePurchaseTemplate(3, 1, 2, pan, 100)
    signed = envelope.decode(online.frame(77)[4:])  # in an envelope under the demo key
    assert signed.key_id == "demo-m-898310048990001"
    key = OnlineKey.demo_merchant("898310048990001")
    assert key.open(signed) == signed.body
    request = wire.decode_request(signed.body)
    assert request.id == online_request_id(3, 1, 2, 77)
    assert online_sequence(request.id) == 77 and online_sequence("other") == -1
    bare = OnlinePurchaseTemplate(3, 1, 2, pan, 100, sign=False)  # a baseline's
    assert wire.decode_request(bare.frame(77)[4:]) == request


def test_generated_config_is_one_the_switch_loads(tmp_path: Path) -> None:
    from bench.runconfig import BankPlan, extra_sections, switch_config, write_config
    from switch.config import load_config

    banks = [BankPlan(name="icbc", window=7, latency_ms=50.0), BankPlan(name="abc")]
    raw = switch_config(banks, {"icbc": 9101}, extra=extra_sections(tmp_path, "t"))
    config = load_config(write_config(tmp_path / "switch.toml", raw))
    assert config.banks["icbc"].port == 9101 and config.banks["icbc"].window == 7
    assert not config.banks["icbc"].simulate and config.banks["icbc"].sim.latency_ms == 50.0
    assert config.log.level == "info" and config.pos.max_connections == 20_000
    assert config.journal.durability == "sync"
    assert [route.bank for route in config.routes] == ["icbc", "abc"]


def test_the_crowd_runs_beyond_the_cap_on_its_own_switch(
    short_run: tuple[dict[str, Any], str],
) -> None:
    report, printed = short_run
    crowd = report["crowd"]
    assert [scenario["name"] for scenario in crowd] == ["crowd_n300"]
    assert crowd[0]["connections"] == 300 and crowd[0]["kind"] == "closed"
    # Refused or approved, never left without an answer.
    assert set(crowd[0]["codes"]) <= {"00", "91"}
    assert "crowd_n300" in printed
    assert "crowd" in report["meta"]["configs"]  # a switch of its own


# The scaling scenario: SQLite x 1, PostgreSQL x 1 and x 2 side by side, and the main
# switch on PostgreSQL x 2 (--journal postgresql --workers 2), on the tests' server.


@pytest.fixture(scope="module")
def scaling_run(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench") / "report.json"
    return run_bench(
        out, "--scenarios", "scaling,closed", "--terminals", "4",
        "--journal", "postgresql", "--workers", "2", "--dsn", postgres_server.dsn(),
    )  # fmt: skip


def test_scaling_runs_each_setup_side_by_side(scaling_run: tuple[dict[str, Any], str]) -> None:
    """Each setup on a switch of its own: a closed loop, the open sweep that finds its
    maximum, the common rate; the switch's CPU its every process's, the database
    server's apart, the machine's load beside."""
    report, printed = scaling_run
    msgspec.convert(report, Report)
    scaling = report["scaling"]
    runs = {f"{r['setup']['journal']}-x{r['setup']['workers']}": r for r in scaling["runs"]}
    assert list(runs) == ["sqlite-x1", "postgresql-x1", "postgresql-x2"]
    assert scaling["cpus"] >= 1 and len(scaling["load_average_before"]) == 3
    for name, run in runs.items():
        points = [run["closed"], *run["open_sweep"], run["common"]]
        assert run["closed"]["name"] == "closed_n4", name
        assert len(run["open_sweep"]) >= 2, name
        best = max(run["open_sweep"], key=lambda point: point["goodput_tps"])
        assert run["max_rate"] == {"tps": best["goodput_tps"], "source": best["name"]}, name
        assert run["at_max"]["scenario"] == best["name"], name
        assert run["common"]["offered_rate"] == scaling["common_rate"] > 0, name
        processes = 3 if name == "postgresql-x2" else 1  # the supervisor and its workers
        for point in points:
            assert point["codes"].get("00", 0) > 0 and sum(point["codes"].values()) == point["sent"]
            assert point["server"]["processes"] == processes, (name, point["name"])
            assert (point["db_cpu_s"] is None) == (name == "sqlite-x1"), (name, point["name"])
            assert 0 < point["machine_busy"] <= 1, (name, point["name"])
        for cpu in (run["at_max"], run["at_common"]):
            assert cpu["answers"] > 0 and cpu["switch_us"] > 0, name
            assert (cpu["db_us"] is None) == (name == "sqlite-x1"), name
            assert cpu["measured_busy"] > 0 and 0 < cpu["machine_busy"] <= 1, name
        assert f"closed_n4 @{name}" in printed
    # Each PostgreSQL switch had a database of its own; the x 2 one its workers.
    configs = report["meta"]["configs"]
    assert 'backend = "postgresql"' not in configs["scaling-sqlite-x1"]
    for label in ("scaling-postgresql-x1", "scaling-postgresql-x2"):
        assert 'backend = "postgresql"' in configs[label]
    assert "workers = 2" in configs["scaling-postgresql-x2"]
    assert "workers" not in configs["scaling-postgresql-x1"]
    checks = [c for c in report["targets"] if c["target"].startswith("scaling: ")]
    assert [c["target"] for c in checks] == [
        "scaling: PostgreSQL x 1 switch CPU per sale <= SQLite x 1's (same offered rate)",
        "scaling: PostgreSQL x 2 maximum rate >= 1.3x PostgreSQL x 1's (same run)",
    ]
    for check in checks:
        assert check["result"] in ("PASS", "FAIL"), check
        assert f"{check['target']}: {'met' if check['passed'] else 'NOT met'}: " in printed
    assert "at x 2's maximum the machine" in checks[1]["measured"]
    assert "scaling: sqlite-x1, postgresql-x1, postgresql-x2 side by side" in printed


def test_the_run_options_put_the_main_switch_on_postgresql_workers(
    scaling_run: tuple[dict[str, Any], str],
) -> None:
    report, _ = scaling_run
    assert report["meta"]["setup"] == {"journal": "postgresql", "workers": 2}
    assert report["meta"]["journal"] == "on, postgresql, durability sync, 2 workers"
    main = report["meta"]["configs"]["main"]
    assert 'backend = "postgresql"' in main and "workers = 2" in main
    for point in report["closed_sweep"]:
        assert point["server"]["processes"] == 3 and point["db_cpu_s"] is not None
        assert point["codes"].get("00", 0) == point["sent"] > 0


def test_workers_on_a_sqlite_journal_are_refused_before_anything_starts(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--short", "--workers", "2",
         "--output", str(tmp_path / "report.json")],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 2
    assert "--workers 2 needs --journal postgresql" in completed.stderr
    assert not (tmp_path / "report.json").exists()


# The same short run with a baseline: the committed switch (HEAD), from its own tree.


def head_commit() -> str | None:
    completed = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return completed.stdout.strip() or None


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    if head_commit() is None:
        pytest.skip("not a git checkout: no commit to compare with")
    # Every scenario that runs on a switch (codec and disk run once either way).
    chosen = "closed,open,overload,online,echo,idle,crowd,slow-bank,busy-online"
    out = tmp_path_factory.mktemp("bench") / "report.json"
    return run_bench(out, "--baseline", "HEAD", "--scenarios", chosen)


def test_baseline_runs_every_switch_scenario(baseline_run: tuple[dict[str, Any], str]) -> None:
    report, _ = baseline_run
    msgspec.convert(report, Report)
    baseline = report["baseline"]
    assert baseline["ref"] == "HEAD" and baseline["sha"] == head_commit()
    assert report["meta"]["code"]["sha"] == head_commit()
    mine, theirs = scenarios(report), scenarios(baseline)
    switch_only = {name for name, s in mine.items() if s["target"] == "switch"}
    assert set(theirs) == switch_only
    for name, scenario in theirs.items():
        assert scenario["target"] == "switch", name
        assert scenario["sent"] > 0 and sum(scenario["codes"].values()) == scenario["sent"], name
        if scenario["kind"] != "idle":
            assert scenario["codes"].get("00", 0) > 0, name
    # Each version's switches are its own processes, configs and journals.
    configs = report["meta"]["configs"]
    for label in ("main", "idle", "crowd", "slow-bank", "busy-online"):
        assert label in configs and f"baseline-{label}" in configs
        # Each journal in its own folder, with the ledger and settlement stores beside it.
        assert f"/{label}/journal.sqlite3" in configs[label]
        assert f"/baseline-{label}/journal.sqlite3" in configs[f"baseline-{label}"]
    assert mine["closed_n1"]["server"]["pid"] != theirs["closed_n1"]["server"]["pid"]
    # The same load for both, but half_max and overload at each one's own maximum.
    assert mine["closed_n4"]["connections"] == theirs["closed_n4"]["connections"]
    assert theirs["half_max"]["offered_rate"] == pytest.approx(baseline["max_rate"]["tps"] / 2)
    assert baseline["slow_bank"]["window"] == report["slow_bank"]["window"]


def test_baseline_side_by_side_with_ratios(baseline_run: tuple[dict[str, Any], str]) -> None:
    report, printed = baseline_run
    comparison = {row["name"]: row for row in report["comparison"]}
    assert set(comparison) == set(scenarios(report["baseline"]))
    for name, row in comparison.items():
        for measure in ("tps", "goodput_tps", "p50_ms", "p99_ms", "cpu_ms_per_1k", "rss_mb"):
            ratio = row[measure]
            mine = scenarios(report)[name]
            assert ratio["current"] is not None and ratio["baseline"] is not None, (name, measure)
            if ratio["baseline"]:
                assert ratio["ratio"] == pytest.approx(ratio["current"] / ratio["baseline"], 0.01)
        assert row["tps"]["current"] == mine["tps"]
    assert "current against the baseline (HEAD)" in printed
    for name in comparison:
        assert f"{name} @base" in printed
    # Every target judged for the baseline too, and the one against it judged here.
    assert [c["target"] for c in report["baseline"]["targets"]] == [
        c["target"] for c in report["targets"]
    ]
    against = next(c for c in report["targets"] if "the baseline's" in c["target"])
    assert against["result"] in ("PASS", "FAIL") and "HEAD's" in against["measured"]
    assert "baseline" in printed.split("\ntarget")[1].splitlines()[0]


def test_a_baseline_that_is_no_commit_fails_before_anything_starts(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--short", "--quiet", "--baseline", "no/such-ref",
         "--output", str(tmp_path / "report.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert completed.returncode == 1
    assert "no/such-ref: not a commit" in completed.stderr
    assert not (tmp_path / "report.json").exists()


# An older switch's config, as its schema would describe it (no [journal], no window, no
# [book], a log section that may be left out).


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class _OldSwitch(_Section, kw_only=True):
    acquirer_id: str
    dialects_dir: str = "dialects"


class _OldBank(_Section, kw_only=True):
    host: str = "127.0.0.1"
    port: int
    links: int = 2


class _OldRoute(_Section, kw_only=True):
    prefix: str
    bank: str


class _OldLog(_Section, kw_only=True):
    level: str = "info"


class _OldConfig(_Section, kw_only=True):
    switch: _OldSwitch
    banks: dict[str, _OldBank]
    routes: tuple[_OldRoute, ...]
    log: _OldLog | None = None


def test_config_is_cut_to_the_keys_a_version_knows(tmp_path: Path) -> None:
    """What the older switch does not know is left out; the rest still loads with it."""
    from bench.runconfig import BankPlan, extra_sections, fit_to_schema, switch_config, to_toml

    banks = [BankPlan(name="icbc"), BankPlan(name="abc")]
    raw = switch_config(banks, {"icbc": 9101, "abc": 9102}, extra=extra_sections(tmp_path, "t"))
    fitted, dropped = fit_to_schema(raw, msgspec.json.schema(_OldConfig))
    assert {"book", "journal", "online", "pos", "banks.*.window", "banks.*.sim"} <= set(dropped)
    assert "switch.utc_offset_h" in dropped and "switch.dialects_dir" not in dropped
    assert dropped == sorted(set(dropped))
    old = msgspec.toml.decode(to_toml(fitted).encode(), type=_OldConfig)
    assert old.banks["abc"].port == 9102 and [r.bank for r in old.routes] == ["icbc", "abc"]
    assert old.log is not None and old.log.level == "info"


def test_a_key_the_current_switch_does_not_know_is_the_benchs_bug(tmp_path: Path) -> None:
    from bench.runconfig import BankPlan, merge, switch_config
    from bench.versions import current_version

    raw = switch_config([BankPlan(name="icbc")], {"icbc": 9101})
    current = current_version()
    assert current.fit(raw)[1] == []
    with pytest.raises(ValueError, match=r"pos\.max_conections"):
        current.fit(merge(raw, {"pos": {"max_conections": 5}}))


def test_a_window_part_is_stalled_by_a_slow_commit_in_it_or_just_after() -> None:
    from bench.histogram import LatencyHistogram
    from bench.histogram import LatencySummary as Summary
    from bench.jobs import JobResult
    from bench.model import SwitchLogged
    from bench.scenarios import window_parts

    def part(*latencies_us: int) -> Any:
        histogram = LatencyHistogram()
        for value in latencies_us:
            histogram.record(value)
        return histogram.to_wire()

    empty = part()
    result = JobResult(
        worker=0, mode="open", connected=1, connect_failures=0, window_s=4.0, offered=4,
        sent=4, not_sent=0, codes={"00": 4}, answered_in_window=4, approved_in_window=4,
        latency=empty, latency_approved=empty, latency_refused=empty,
        latency_parts=[part(1000), part(2000), part(90_000), part(4000)],
        cpu_s=0.0, max_lag_ms=0.0,
    )  # fmt: skip
    zero = Summary(count=0, mean=0, p50=0, p90=0, p99=0, p99_9=0, max=0)
    # One commit inside the second part, one 50 ms into the fourth (the third's last
    # requests may wait for it); the first part's end is 200 ms before the first.
    logged = SwitchLogged(
        latency_ms=zero, journal_ms=zero, bank_ms=zero, slow_commits=2,
        slow_commit_spans_s=[(1.2, 1.4), (3.05, 3.08)],
    )  # fmt: skip
    parts = window_parts([result], 4.0, logged)
    assert parts is not None
    assert [p.slow_commits for p in parts.parts] == [0, 1, 1, 1]
    assert [p.start_s for p in parts.parts] == [0.0, 1.0, 2.0, 3.0]
    assert parts.unstalled == 1
    assert parts.unstalled_latency_ms is not None
    assert parts.unstalled_latency_ms.count == 1 and parts.unstalled_latency_ms.max == 1.0
    assert window_parts([msgspec.structs.replace(result, latency_parts=[])], 4.0, logged) is None
