"""The ledger store on PostgreSQL (``switch/store/ledger_store.py``, over the statements
of ``switch/store/ledger_sql.py``), in the journal's own database, shared by every
worker: each worker's store has a connection of its own.

Two workers debiting one wallet at the same moment take turns on its rows: a step
locks what it changes (``SELECT ... FOR UPDATE``: the wallet, the transfer, then the two
accounts in the order of their names) and decides on what it read under the lock, in
READ COMMITTED (each statement sees what committed before it). The accounts' CHECK
constraints hold a wallet at or above zero whatever a step decided. A deadlock, or a
transfer key another worker inserted first, runs the step again.

Plain blocking calls: the trio layer runs them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import psycopg

from switch.store.cobrand_sql import cobrand_sql
from switch.store.credit_sql import credit_sql
from switch.store.desk_sql import desk_sql
from switch.store.hold_sql import hold_sql
from switch.store.ledger_port import Fault, LedgerUnavailable
from switch.store.ledger_sql import ledger_sql, migrations
from switch.store.ledger_store import LedgerStoreBase, Parameters, Row
from switch.store.own_sql import own_sql
from switch.store.postgresql.own_store import Connection, OwnConnection
from switch.store.postgresql.sql import DIALECT
from switch.store.risk_sql import risk_sql

_MIGRATION_LOCK: Final = 0x5357_4C47  # "SWLG"
MIGRATIONS: Final[tuple[str, ...]] = migrations(DIALECT)
SCHEMA_VERSION: Final = len(MIGRATIONS)
SQL: Final = ledger_sql(DIALECT, lock=" FOR UPDATE")


class PostgresLedgerStore(OwnConnection, LedgerStoreBase):
    sql = SQL
    errors = (psycopg.Error,)
    retry = (
        psycopg.errors.DeadlockDetected,
        psycopg.errors.SerializationFailure,
        psycopg.errors.UniqueViolation,
    )
    credit = credit_sql(DIALECT, lock=" FOR UPDATE")
    cobrand = cobrand_sql(DIALECT, lock=" FOR UPDATE")
    desk = desk_sql(DIALECT, lock=" FOR UPDATE")
    own = own_sql(DIALECT, lock=" FOR UPDATE")
    risk = risk_sql(DIALECT)
    hold = hold_sql(DIALECT, lock=" FOR UPDATE")
    label = "ledger store (postgresql)"
    store_name = "ledger"
    application_name = "switch-ledger"
    store_error = LedgerUnavailable
    migrations = MIGRATIONS
    migration_lock = _MIGRATION_LOCK

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._connection: Connection | None = None
        self.fault: Fault | None = None

    def _execute(self, statement: str, parameters: Parameters = ()) -> list[Row]:
        cursor = self._db.execute(statement, parameters)
        return list(cursor.fetchall()) if cursor.description is not None else []

    def _change(self, statement: str, parameters: Parameters = ()) -> int:
        return self._db.execute(statement, parameters).rowcount

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._db.transaction():
            yield
