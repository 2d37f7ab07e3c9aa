"""The settlement store on PostgreSQL (``switch/store/settlement_store.py``, over the
statements of ``switch/store/settlement_sql.py``, whose notes hold for this one), in
the journal's own database.

No ATTACH: a settlement reads ``txn``, ``batch_settlement`` and ``batch_upload`` where
the journal writes them, in one REPEATABLE READ transaction (one consistent snapshot of
the journal while the switch keeps committing). Two settlements of one date take turns
on a session advisory lock taken before that snapshot. A file's records go in by COPY.

Plain blocking calls on one connection of its own: the trio layer runs them in a
worker thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import psycopg

from switch.store.postgresql.own_store import Connection, OwnConnection
from switch.store.postgresql.sql import DIALECT
from switch.store.settlement_port import CLEARING_COLUMNS, SettlementError, StepHook
from switch.store.settlement_sql import migrations, settlement_sql
from switch.store.settlement_store import Parameters, Row, SettlementStoreBase

_MIGRATION_LOCK: Final = 0x5357_5354  # "SWST"
_SETTLE_LOCK: Final = 0x5357_5345  # "SWSE": one settlement at a time on a database

# 1: SQLite's first two migrations at once (there is no earlier PostgreSQL store);
# 2: its third (settlement.md's account names); then each later one (3: stand-in's).
MIGRATIONS: Final[tuple[str, ...]] = (
    "".join(migrations(DIALECT)[:2]),
    *migrations(DIALECT)[2:],
)

SCHEMA_VERSION: Final = len(MIGRATIONS)

SQL: Final = settlement_sql(DIALECT)


class PostgresSettlementStore(OwnConnection, SettlementStoreBase):
    sql = SQL
    errors = (psycopg.Error,)
    label = "settlement store (postgresql)"
    store_name = "settlement"
    application_name = "switch-settlement"
    store_error = SettlementError
    migrations = MIGRATIONS
    migration_lock = _MIGRATION_LOCK

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._connection: Connection | None = None
        self._held: Connection | None = None
        self.on_step: StepHook | None = None

    # -- opening ------------------------------------------------------------------

    def open(self) -> None:
        """Opens (migrating) the store, and makes sure the on-us ledger's tables, which
        a settlement reads (wallet.md's reconciliation), are there too."""
        super().open()
        from switch.store.postgresql.ledger import PostgresLedgerStore

        ledger = PostgresLedgerStore(self.dsn)
        try:
            ledger.open()
        except Exception as exc:
            self.close()
            raise SettlementError(f"{self.label}: the ledger's tables: {exc}") from exc
        ledger.close()

    @property
    def _in_use(self) -> Connection:
        """The connection of the transaction under way, else the store's: a statement of
        a transaction whose connection the server dropped fails with it, rather than run
        on a connection opened again, outside the transaction."""
        held = self._held
        return held if held is not None else self._db

    @contextmanager
    def _holding(self, db: Connection) -> Iterator[None]:
        self._held = db
        try:
            yield
        finally:
            self._held = None

    # -- what the shared store asks of the engine ---------------------------------------

    def _execute(self, statement: str, parameters: Parameters = ()) -> Iterable[Row]:
        if isinstance(parameters, dict):
            return self._in_use.execute(statement, _used(statement, parameters))
        return self._in_use.execute(statement, parameters)

    def _executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._in_use.cursor() as cursor:
            cursor.executemany(statement, rows)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        db = self._db
        with self._holding(db), db.transaction():
            yield

    @contextmanager
    def _settling(self) -> Iterator[None]:
        db = self._db
        with self._holding(db), _settle_lock(db), db.transaction():
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield

    def _take_turns_with_settlements(self) -> None:
        """A file accepted while a date settles waits for that settlement's end."""
        self._in_use.execute("SELECT pg_advisory_xact_lock(%s)", (_SETTLE_LOCK,))

    def _insert_records(
        self, bank: str, business_date: str, records: Iterable[Sequence[Any]]
    ) -> int:
        count = 0
        with self._in_use.cursor() as cursor, cursor.copy(_COPY_RECORDS) as copy:
            for record in records:
                mti_class = "04" if record[0].startswith("04") else "02"
                copy.write_row((bank, business_date, mti_class, *record))
                count += 1
        return count


@contextmanager
def _settle_lock(db: Connection) -> Iterator[None]:
    """One settlement at a time on the database, taken before the settlement's snapshot
    (a transaction-level lock would be taken after it: the second settlement of a date
    would then not see the first's commit)."""
    db.execute("SELECT pg_advisory_lock(%s)", (_SETTLE_LOCK,))
    try:
        yield
    finally:
        if not (db.broken or db.closed):
            db.execute("SELECT pg_advisory_unlock(%s)", (_SETTLE_LOCK,))


_COPY_RECORDS: Final = (
    f"COPY clearing_record (bank, file_date, mti_class, {', '.join(CLEARING_COLUMNS)}) FROM STDIN"
)


def _used(statement: str, parameters: dict[str, Any]) -> dict[str, Any] | None:
    """The parameters a statement names, or None when it names none."""
    used = {name: value for name, value in parameters.items() if f"%({name})s" in statement}
    return used or None
