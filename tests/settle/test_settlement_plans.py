"""The settlement of a date stays set-based as it grows: no statement of it looks a row
up by scanning a table inside a correlated subquery (one scan per row: a date of a
million transactions would take days), as SQLite's own query plans say."""

from __future__ import annotations

from pathlib import Path

from switch.store.sqlite import settlement
from tests.settle.ledger_days import open_store, write_journal

D0 = "2026-11-22"


def plans(tmp_path: Path) -> list[tuple[str, list[tuple[int, int, str]]]]:
    """Each statement of a settlement and its query plan: (id, parent, detail) rows."""
    write_journal(tmp_path / "journal.sqlite3", [])
    store = open_store(tmp_path, [D0])
    store._attach_journal()
    db = store._db
    parameters = {"d": D0, "d_1": "2026-11-21", "d_hold": "2026-11-20", "hold": 2}
    try:
        for statement in settlement._TEMP_TABLES:
            db.execute(statement)
        found = []
        for statement in (*settlement._SETTLE_STEPS, settlement._UNBALANCED):
            rows = db.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
            found.append((statement, [(row[0], row[1], row[3]) for row in rows]))
        return found
    finally:
        store.close()


def test_no_step_scans_a_table_once_per_row(tmp_path: Path) -> None:
    for statement, plan in plans(tmp_path):
        correlated = {node for node, _, detail in plan if detail.startswith("CORRELATED")}
        scans = [
            detail
            for _, parent, detail in plan
            if parent in correlated and detail.startswith("SCAN ")
        ]
        assert not scans, f"{scans} in a correlated subquery of: {' '.join(statement.split())}"
