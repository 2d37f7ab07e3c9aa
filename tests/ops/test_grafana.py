"""ops/grafana/payswitch.json: a Grafana dashboard whose every query names metrics a
running switch exposes (read from a real scrape)."""

from __future__ import annotations

import json
from typing import Any

from tests.ops.conftest import OPS, missing, names_in


def queries() -> list[str]:
    dashboard: dict[str, Any] = json.loads((OPS / "grafana" / "payswitch.json").read_text())
    found = []
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            found.append(target["expr"])
    return found


def test_the_dashboard_is_grafana_json_with_prometheus_queries() -> None:
    dashboard = json.loads((OPS / "grafana" / "payswitch.json").read_text())
    assert dashboard["uid"] == "payswitch" and dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(names_in(query) for query in queries())  # each names a metric


async def test_every_query_names_a_metric_the_switch_exposes(scrape: str) -> None:
    used = set().union(*(names_in(query) for query in queries()))
    for expected in ("payswitch_transactions_total", "payswitch_clearing_file",
                     "payswitch_worker_up", "payswitch_settlement_overdue_dates"):  # fmt: skip
        assert expected in used
    assert missing(used, scrape) == set()
    # Before: a name the switch does not have is caught.
    assert missing({"payswitch_no_such_metric"}, scrape) == {"payswitch_no_such_metric"}
