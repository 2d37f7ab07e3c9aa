"""The journal bench keeps working: a tiny run on each engine (and on each of
PostgreSQL's writers and read paths) accounts for every commit and read it made. Speed
is reported by the bench, never asserted here."""

from __future__ import annotations

import pytest

from bench import journal_bench

# Bench runs: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow


def test_a_tiny_run_counts_every_commit_on_both_engines_and_both_writers(
    monkeypatch: pytest.MonkeyPatch, postgres_dsn: str
) -> None:
    monkeypatch.setattr(journal_bench, "COMMITS_PER_RUN", 80)
    runs = journal_bench.run(["sqlite", "postgresql"], [1, 4], postgres_dsn)
    assert [(r.backend, r.writer, r.callers) for r in runs] == [
        ("sqlite", None, 1), ("sqlite", None, 4),
        ("postgresql", "thread", 1), ("postgresql", "loop", 1),
        ("postgresql", "thread", 4), ("postgresql", "loop", 4),
    ]  # fmt: skip
    for r in runs:
        assert r.commits == 80 and r.group_commits >= 80 // r.callers
        assert r.changes_per_group * r.group_commits == pytest.approx(80, abs=1)
    assert all(r.server_cpu_us_per_commit is None for r in runs)  # a server not its own


def test_a_tiny_read_run_counts_every_read_in_a_thread_and_from_the_loop(
    monkeypatch: pytest.MonkeyPatch, postgres_dsn: str
) -> None:
    monkeypatch.setattr(journal_bench, "READS_PER_RUN", 80)
    monkeypatch.setattr(journal_bench, "READ_SALES", 50)
    runs = journal_bench.run_reads([1, 4], postgres_dsn)
    assert [(r.reads_in, r.readers) for r in runs] == [
        ("thread", 1), ("loop", 1), ("thread", 4), ("loop", 4),
    ]  # fmt: skip
    assert all(r.reads == 80 and r.server_cpu_us_per_read is None for r in runs)
