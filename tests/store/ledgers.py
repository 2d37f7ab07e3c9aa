"""Ledger stores for tests, on each engine: SQLite in the test's folder, PostgreSQL in a
database of the test's own on the session's server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from switch.store.ledger_store import LedgerStoreBase
from switch.store.postgresql.ledger import PostgresLedgerStore
from switch.store.sqlite.ledger import SqliteLedgerStore

ENGINES = ["sqlite", "postgresql"]


def make_store(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> LedgerStoreBase:
    if engine == "sqlite":
        return SqliteLedgerStore(tmp_path / "ledger.sqlite3")
    return PostgresLedgerStore(request.getfixturevalue("postgres_dsn"))


@pytest.fixture(params=ENGINES)
def ledger_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerStoreBase]:
    store = make_store(request.param, request, tmp_path)
    store.open()
    try:
        yield store
    finally:
        store.close()
