"""The statements both engines share are written once (``switch/store/questions.py``,
``operator_journal.py``, ``settlement_sql.py``) and built in each engine's dialect
(``switch/store/dialect.py``). Every one of them, in each engine's form, is one its
engine accepts against the real schema: the contract and settlement tests run most of
them, and this finds a slip of a dialect in any of the rest before a switch runs it."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import pq

from switch.store.operator_journal import operator_sql
from switch.store.postgresql import settlement as postgresql_settlement
from switch.store.postgresql import sql as postgresql_sql
from switch.store.postgresql.pipeline import numbered
from switch.store.sqlite import settlement as sqlite_settlement
from switch.store.sqlite import sql as sqlite_sql
from tests.settle.ledger_days import place_on
from tests.store.engines import ENGINES

PLACEHOLDERS = [
    ("SELECT a FROM t WHERE b = ? AND c = ?", "SELECT a FROM t WHERE b = %s AND c = %s"),
    ("WHERE d = :d AND h >= :d_hold", "WHERE d = %(d)s AND h >= %(d_hold)s"),
    ("WHEN :d::date - txn_date::date >= :hold", "WHEN %(d)s::date - txn_date::date >= %(hold)s"),
    ("'sales:' || bank || ':' || merchant_id", "'sales:' || bank || ':' || merchant_id"),
    ("'settlement: bank_only'", "'settlement: bank_only'"),
]


@pytest.mark.parametrize(("shared", "postgresql"), PLACEHOLDERS)
def test_each_engine_s_placeholders(shared: str, postgresql: str) -> None:
    assert postgresql_sql.DIALECT.sql(shared) == postgresql
    assert sqlite_sql.DIALECT.sql(shared) == shared


def statements(engine: str) -> dict[str, str]:
    """Every shared statement in ``engine``'s form, by name (the settlement's working
    tables apart: they are made first)."""
    sql = sqlite_sql if engine == "sqlite" else postgresql_sql
    settlement = sqlite_settlement if engine == "sqlite" else postgresql_settlement
    found: dict[str, str] = {}
    for group, struct in (
        ("questions", sql.QUESTIONS),
        ("operator", operator_sql(sql.DIALECT)),
        ("settlement", settlement.SQL),
    ):
        for field in struct.__struct_fields__:
            value = getattr(struct, field)
            if field in ("temp_tables", "drop_temp_tables"):
                continue
            if isinstance(value, str):
                found[f"{group}.{field}"] = value
            elif isinstance(value, dict):
                found.update({f"{group}.{field}{key}": text for key, text in value.items()})
            else:
                found.update({f"{group}.{field}[{n}]": text for n, text in enumerate(value)})
    return found


_NAMED = re.compile(r"%\((\w+)\)s")


@pytest.mark.parametrize("engine", ENGINES)
def test_every_shared_statement_is_one_its_engine_accepts(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    place = place_on(engine, tmp_path, request)
    place.write_journal([])  # the journal's schema
    store = place.open_store([])  # the settlement store's
    shown = statements(engine)
    assert len(shown) > 60
    refused = []
    try:
        if engine == "sqlite":
            assert isinstance(store, sqlite_settlement.SqliteSettlementStore)
            store._attach_journal()
            db = store._db
            for statement in sqlite_settlement.SQL.temp_tables:
                db.execute(statement)
            for name, statement in shown.items():
                parameters: Any = (
                    dict.fromkeys(re.findall(r"(?<![:\w]):(\w+)", statement))
                    or (None,) * statement.count("?")
                )
                try:
                    db.execute(f"EXPLAIN {statement}", parameters)
                except sqlite3.Error as exc:
                    refused.append(f"{name}: {exc}")
        else:
            assert place.dsn is not None
            connection = psycopg.connect(place.dsn, autocommit=True)
            with connection, connection.transaction():  # the working tables, until its end
                for statement in postgresql_settlement.SQL.temp_tables:
                    connection.execute(statement)
                pgconn = connection.pgconn
                for number, (name, statement) in enumerate(shown.items()):
                    names = list(dict.fromkeys(_NAMED.findall(statement)))
                    positional = _NAMED.sub(
                        lambda found: f"${names.index(found[1]) + 1}",  # noqa: B023
                        statement,
                    ).encode()
                    if not names:
                        positional = numbered(statement)
                    result = pgconn.prepare(f"shared_{number}".encode(), positional)
                    if result.status != pq.ExecStatus.COMMAND_OK:
                        message = (result.error_message or b"").decode()
                        refused.append(f"{name}: {message.strip()}")
    finally:
        store.close()
    assert not refused, "\n".join(refused)
