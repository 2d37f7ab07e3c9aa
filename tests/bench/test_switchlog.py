"""The bench's reading of the switch's log: which lines belong to a window."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from bench.switchlog import LogReader

START = 1_800_000_000.0  # the window: [START, START + 10)
END = START + 10.0


def line(event: str, at: float, **fields: float) -> str:
    stamp = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({**fields, "event": event, "level": "info", "timestamp": stamp})


def test_txn_lines_by_arrival_and_slow_commits_by_overlap(tmp_path: Path) -> None:
    log = tmp_path / "switch.log"
    lines = [
        line("txn", START - 0.5, latency_ms=100.0, journal_ms=90.0, bank_ms=1.0),  # before
        line("txn", START + 0.05, latency_ms=100.0, journal_ms=90.0, bank_ms=1.0),  # before
        line("txn", START + 1, latency_ms=4.0, journal_ms=3.0, bank_ms=0.5),
        line("txn", END + 0.2, latency_ms=300.0, journal_ms=290.0, bank_ms=1.0),  # in
        line("txn", END + 0.2, latency_ms=100.0, journal_ms=90.0, bank_ms=1.0),  # after
        line("journal_commit_slow", START - 1, ms=200.0),  # wholly before
        line("journal_commit_slow", START + 0.1, ms=300.0),  # began before, ended in
        line("journal_commit_slow", START + 5, ms=25.0),
        line("journal_commit_slow", END + 0.3, ms=500.0),  # began in, ended after
        line("journal_commit_slow", END + 1, ms=50.0),  # wholly after
        line("requests_shed", START + 2, count=3.0),  # neither
    ]
    log.write_text("\n".join(lines) + "\n")
    logged = LogReader(log).logged(START, END)
    assert logged.latency_ms.count == 2
    assert logged.latency_ms.max == 300.0
    assert logged.journal_ms.count == logged.bank_ms.count == 2
    assert logged.slow_commits == 3
    assert logged.slowest_commit_ms == 500.0
    assert logged.slow_commit_spans_s == [(-0.2, 0.1), (4.975, 5.0), (9.8, 10.3)]


def test_the_reader_goes_on_from_where_it_stopped(tmp_path: Path) -> None:
    log = tmp_path / "switch.log"
    log.write_text(line("journal_commit_slow", START + 1, ms=30.0) + "\n")
    reader = LogReader(log)
    assert reader.logged(START, END).slow_commits == 1
    with log.open("a") as more:
        more.write(line("txn", START + 2, latency_ms=1.0, journal_ms=0.5, bank_ms=0.2) + "\n")
    again = reader.logged(START, END)
    assert (again.slow_commits, again.latency_ms.count) == (0, 1)
    assert again.slowest_commit_ms is None
