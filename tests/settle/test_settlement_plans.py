"""The settlement of a date costs what the date holds, as SQLite's own query plans say:
no statement looks a row up by scanning a table inside a correlated subquery (one scan
per row: a date of a million transactions would take days), and none reads the whole
of a table that grows with every date settled (the journal's transactions, the
clearing records, the items, payouts, ledger...): a switch that has run for a year
must settle a date as fast as on its first day."""

from __future__ import annotations

import re
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
        for statement in settlement.SQL.temp_tables:
            db.execute(statement)
        found = []
        statements = (*settlement.SQL.settle_steps, settlement.SQL.unbalanced,
                      settlement.SQL.category_counts)  # fmt: skip
        for statement in statements:
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


GROWING = {
    "txn", "batch_settlement", "batch_upload", "clearing_record", "settlement_item",
    "recon_line", "payout", "ledger_entry", "reversal_order",
}  # fmt: skip
"""Tables with rows for every date: what a switch that has run for a year holds most of."""
ALLOWED: dict[str, str] = {}
PARTIAL_INDEXES = {"payout_carried"}
"""Partial indexes over the few rows of every date a settlement needs (carried balances)."""
_TABLE = re.compile(r"\b(?:FROM|JOIN)\s+(?:j\.|temp\.)?(\w+)(?:\s+(?:AS\s+)?(\w+))?", re.I)
_KEYWORDS = {"where", "on", "join", "left", "cross", "group", "order", "union", "inner", "limit"}


def tables_of(statement: str) -> dict[str, str]:
    """Each name a plan may give a table (its alias, or itself) -> the table."""
    names = {}
    for table, alias in _TABLE.findall(statement):
        names[table] = table
        if alias and alias.lower() not in _KEYWORDS:
            names[alias] = table
    return names


def test_no_step_reads_every_date_of_a_table(tmp_path: Path) -> None:
    found = []
    for statement, plan in plans(tmp_path):
        names = tables_of(statement)
        shown = " ".join(statement.split())[:80]
        for _, _, detail in plan:
            words = detail.split()
            if words[0] not in ("SCAN", "SEARCH") or words[1].startswith("("):
                continue
            table = names.get(words[1].removeprefix("j.").removeprefix("temp."), words[1])
            if table not in GROWING or table in ALLOWED:
                continue
            if words[0] == "SCAN" and not any(index in detail for index in PARTIAL_INDEXES):
                found.append(f"{detail}: every date of {table}, in {shown}")
            # A search bounded on one side only reads every earlier date.
            elif words[0] == "SEARCH" and re.search(r"\(\w+[<>]\?\)", detail):
                found.append(f"{detail}: every earlier date of {table}, in {shown}")
    assert not found, "\n".join(found)
