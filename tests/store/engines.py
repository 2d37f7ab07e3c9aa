"""The journal's engines, for tests that run once per engine: the switch's config on
each, and the journal's tables read straight (for what no port or operator command
shows)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from switch.config import SwitchConfig
from tests.conftest import make_config

ENGINES = ["sqlite", "postgresql"]

Configure = Callable[..., SwitchConfig]


def config_maker(request: pytest.FixtureRequest) -> Configure:
    """``make_config`` with the journal on the engine ``request.param`` names: SQLite
    beside the config, or a PostgreSQL database of the test's own."""
    if request.param == "sqlite":
        return make_config
    dsn: str = request.getfixturevalue("postgres_dsn")

    def on_postgresql(**sections: Any) -> SwitchConfig:
        journal = {"backend": "postgresql", "dsn": dsn, **sections.pop("journal", {})}
        return make_config(journal=journal, **sections)

    return on_postgresql


def journal_rows(config: SwitchConfig, statement: str, *parameters: Any) -> list[dict[str, Any]]:
    """Rows of the journal's own tables, as dicts, on either engine (``?`` placeholders)."""
    journal = config.journal
    if journal.backend == "postgresql":
        assert journal.dsn is not None
        with psycopg.connect(journal.dsn, row_factory=dict_row) as connection:
            return connection.execute(statement.replace("?", "%s"), parameters).fetchall()
    connection = sqlite3.connect(config.path(journal.path))
    connection.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in connection.execute(statement, parameters)]
    finally:
        connection.close()
