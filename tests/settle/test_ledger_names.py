"""The settlement ledger's accounts are settlement.md's: a store written before the
rename (``bank:<bank>``, ``fees``) is migrated on opening, on both engines."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

from switch.store.postgresql.settlement import PostgresSettlementStore
from switch.store.settlement_sql import migrations
from switch.store.sqlite.settlement import SqliteSettlementStore
from switch.store.sqlite.sql import DIALECT as SQLITE

OLD_ROWS = [
    ("2026-12-07", "sales:icbc:M1", "bank:icbc", 10000, 0),
    ("2026-12-07", "sales:icbc:M1", "merchant:M1", 0, 10000),
    ("2026-12-07", "fees:M1", "merchant:M1", 38, 0),
    ("2026-12-07", "fees:M1", "fees", 0, 38),
]
INSERT = (
    "INSERT INTO ledger_entry (business_date, posting, account, debit_fen, credit_fen) "
    "VALUES (?, ?, ?, ?, ?)"
)


def _names(balances: list[object]) -> set[str]:
    return {balance.account for balance in balances}  # type: ignore[attr-defined]


def test_an_old_sqlite_store_gets_settlement_md_names(tmp_path: Path) -> None:
    path = tmp_path / "settlement.sqlite3"
    connection = sqlite3.connect(path, isolation_level=None)
    for number, migration in enumerate(migrations(SQLITE)[:2]):
        connection.executescript(
            f"BEGIN;\n{migration}\nPRAGMA user_version = {number + 1};\nCOMMIT;"
        )
    connection.executemany(INSERT, OLD_ROWS)
    connection.close()
    store = SqliteSettlementStore(path, tmp_path / "journal.sqlite3")
    store.open()
    try:
        assert _names(store.ledger_balances()) == {
            "bank_clearing:icbc", "merchant:M1", "merchant_fee_income"
        }  # fmt: skip
        assert store.ledger_totals() == (10038, 10038)
    finally:
        store.close()


def test_an_old_postgresql_store_gets_settlement_md_names(postgres_dsn: str) -> None:
    from switch.store.postgresql.sql import DIALECT as POSTGRESQL

    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("CREATE TABLE settlement_schema_version (version INTEGER NOT NULL)")
        connection.execute("".join(migrations(POSTGRESQL)[:2]))
        connection.execute("INSERT INTO settlement_schema_version VALUES (1)")
        with connection.cursor() as cursor:
            cursor.executemany(INSERT.replace("?", "%s"), OLD_ROWS)
    store = PostgresSettlementStore(postgres_dsn)
    store.open()
    try:
        assert _names(store.ledger_balances()) == {
            "bank_clearing:icbc", "merchant:M1", "merchant_fee_income"
        }  # fmt: skip
    finally:
        store.close()
