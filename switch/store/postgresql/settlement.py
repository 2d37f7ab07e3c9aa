"""The settlement store on PostgreSQL: the same business days, clearing files, matching,
payouts, reconciliation and ledger as the SQLite store's (``switch/store/sqlite/
settlement.py``, whose notes hold for this one), in the journal's own database.

No ATTACH: a settlement reads ``txn``, ``batch_settlement`` and ``batch_upload`` where
the journal writes them, in one REPEATABLE READ transaction (one consistent snapshot of
the journal while the switch keeps committing). Two settlements of one date take turns
on a session advisory lock taken before that snapshot.

The statements are the SQLite store's, step for step, in PostgreSQL's dialect: date
arithmetic on ``date``, ``GREATEST``/``LEAST`` for two-argument max/min, ``bool_or`` and
``FILTER`` over booleans, ``ON CONFLICT`` for ``OR IGNORE``/``OR REPLACE``, temporary
tables dropped at commit. Every text column compares byte by byte (``COLLATE "C"``),
as SQLite's does, so the files come out in the same order, byte for byte. Sums are cast
back to BIGINT (PostgreSQL's ``sum`` of a BIGINT is NUMERIC).

Plain blocking calls on one connection of its own: the trio layer runs them in a
worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any, Final, TypeAlias

import psycopg
from psycopg.rows import DictRow, dict_row

from switch.core.calendar import DateClosed
from switch.core.merchants import DEFAULT_PROFILE, MerchantTerms
from switch.core.settlement import (
    HOLD_DATES,
    CategoryCount,
    ClearingFileStatus,
    LedgerBalance,
    PayoutLine,
    ReconLine,
    ReversalOrder,
    SettlementStatus,
)
from switch.store.settlement_port import (
    CLEARING_COLUMNS,
    LedgerUnbalanced,
    SettlementError,
    StepHook,
)

Connection: TypeAlias = psycopg.Connection[DictRow]

CONNECT_TIMEOUT_S: Final = 5
APPLICATION_NAME: Final = "switch-settlement"
_MIGRATION_LOCK: Final = 0x5357_5354  # "SWST"
_SETTLE_LOCK: Final = 0x5357_5345  # "SWSE": one settlement at a time on a database

_T = 'TEXT COLLATE "C"'

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: SQLite's two migrations at once (there is no earlier PostgreSQL store).
    f"""
    CREATE TABLE business_day (
        business_date {_T} PRIMARY KEY,
        opened_at DOUBLE PRECISION NOT NULL,
        closed_at DOUBLE PRECISION,
        forced BOOLEAN NOT NULL DEFAULT FALSE,
        settled_at DOUBLE PRECISION,
        files_at DOUBLE PRECISION
    );
    CREATE TABLE cutover (
        business_date {_T} NOT NULL,
        bank {_T} NOT NULL,
        code {_T} NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (business_date, bank)
    );
    CREATE TABLE clearing_file (
        bank {_T} NOT NULL,
        business_date {_T} NOT NULL,
        name {_T} NOT NULL,
        status {_T} NOT NULL,
        reason {_T},
        records BIGINT NOT NULL,
        read_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (bank, business_date)
    );
    CREATE TABLE clearing_record (
        bank {_T} NOT NULL,
        file_date {_T} NOT NULL,
        mti {_T} NOT NULL,
        mti_class {_T} NOT NULL,
        processing_code {_T} NOT NULL,
        stan {_T} NOT NULL,
        transmission {_T} NOT NULL,
        rrn {_T} NOT NULL,
        amount BIGINT NOT NULL,
        currency {_T} NOT NULL,
        response_code {_T} NOT NULL,
        auth_code {_T} NOT NULL,
        terminal_id {_T} NOT NULL,
        merchant_id {_T} NOT NULL,
        masked_pan {_T} NOT NULL,
        direction {_T} NOT NULL
    );
    CREATE INDEX clearing_by_rrn ON clearing_record (rrn, bank, file_date);
    CREATE INDEX clearing_by_file ON clearing_record (file_date, bank);
    CREATE TABLE settlement_item (
        rrn {_T} PRIMARY KEY,
        bank {_T} NOT NULL,
        kind {_T} NOT NULL,
        txn_date {_T} NOT NULL,
        merchant_id {_T} NOT NULL,
        terminal_id {_T} NOT NULL,
        masked_pan {_T} NOT NULL,
        original_rrn {_T},
        switch_fen BIGINT,
        bank_fen BIGINT,
        paid_fen BIGINT,
        category {_T} NOT NULL,
        action {_T} NOT NULL,
        state {_T} NOT NULL,
        settled_on {_T} NOT NULL
    );
    CREATE INDEX item_held ON settlement_item (state) WHERE state = 'held';
    CREATE INDEX item_by_settlement ON settlement_item (settled_on);
    CREATE TABLE recon_line (
        business_date {_T} NOT NULL,
        category {_T} NOT NULL,
        bank {_T} NOT NULL,
        rrn {_T} NOT NULL,
        terminal_id {_T} NOT NULL,
        merchant_id {_T} NOT NULL,
        masked_pan {_T} NOT NULL,
        switch_fen BIGINT,
        bank_fen BIGINT,
        action {_T} NOT NULL
    );
    CREATE INDEX recon_by_date ON recon_line (business_date);
    CREATE TABLE payout (
        business_date {_T} NOT NULL,
        merchant_id {_T} NOT NULL,
        account {_T} NOT NULL,
        sales_count BIGINT NOT NULL,
        sales_fen BIGINT NOT NULL,
        refunds_count BIGINT NOT NULL,
        refunds_fen BIGINT NOT NULL,
        fees_fen BIGINT NOT NULL,
        held_fen BIGINT NOT NULL,
        carried_in_fen BIGINT NOT NULL,
        net_fen BIGINT NOT NULL,
        payout_fen BIGINT NOT NULL,
        carried_out_fen BIGINT NOT NULL,
        PRIMARY KEY (business_date, merchant_id)
    );
    CREATE INDEX payout_by_merchant ON payout (merchant_id, business_date);
    CREATE INDEX payout_carried ON payout (merchant_id, business_date)
        WHERE carried_out_fen != 0;
    CREATE TABLE ledger_entry (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        business_date {_T} NOT NULL,
        posting {_T} NOT NULL,
        account {_T} NOT NULL,
        debit_fen BIGINT NOT NULL,
        credit_fen BIGINT NOT NULL
    );
    CREATE INDEX ledger_by_account ON ledger_entry (account);
    CREATE INDEX ledger_by_date ON ledger_entry (business_date);
    CREATE TABLE reversal_order (
        rrn {_T} PRIMARY KEY,
        bank {_T} NOT NULL,
        business_date {_T} NOT NULL,
        reason {_T} NOT NULL,
        known BOOLEAN NOT NULL,
        mti {_T} NOT NULL DEFAULT '',
        processing_code {_T} NOT NULL DEFAULT '',
        stan {_T} NOT NULL DEFAULT '',
        transmission {_T} NOT NULL DEFAULT '',
        amount BIGINT NOT NULL DEFAULT 0,
        currency {_T} NOT NULL DEFAULT '',
        terminal_id {_T} NOT NULL DEFAULT '',
        merchant_id {_T} NOT NULL DEFAULT '',
        masked_pan {_T} NOT NULL DEFAULT '',
        handed_at DOUBLE PRECISION
    );
    CREATE INDEX reversal_order_pending ON reversal_order (handed_at) WHERE handed_at IS NULL;
    """,
)

SCHEMA_VERSION: Final = len(MIGRATIONS)


def _day(text: str, days: int) -> str:
    return (date.fromisoformat(text) + timedelta(days=days)).isoformat()


def _migrate(connection: Connection) -> None:
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        connection.execute(
            "CREATE TABLE IF NOT EXISTS settlement_schema_version (version INTEGER NOT NULL)"
        )
        row = connection.execute(
            "SELECT coalesce(max(version), 0) AS version FROM settlement_schema_version"
        ).fetchone()
        version = 0 if row is None else int(row["version"])
        if version > SCHEMA_VERSION:
            raise SettlementError(
                f"settlement store schema {version} is newer than this switch ({SCHEMA_VERSION})"
            )
        for number in range(version, SCHEMA_VERSION):
            connection.execute(MIGRATIONS[number])
            connection.execute("DELETE FROM settlement_schema_version")
            connection.execute(
                "INSERT INTO settlement_schema_version (version) VALUES (%s)", (number + 1,)
            )


class PostgresSettlementStore:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._connection: Connection | None = None
        self.on_step: StepHook | None = None
        """A debugging hook: called after each statement of a settlement with the
        statement and the seconds it took."""

    # -- opening ------------------------------------------------------------------

    def _connect(self) -> Connection:
        return psycopg.connect(
            self.dsn,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=APPLICATION_NAME,
        )

    def open(self) -> None:
        """Connects and migrates; SettlementError naming the cause (never the password)."""
        try:
            connection = self._connect()
        except psycopg.Error as exc:
            raise SettlementError(f"settlement store (postgresql): {_cause(exc)}") from exc
        try:
            _migrate(connection)
        except psycopg.Error as exc:
            connection.close()
            raise SettlementError(f"settlement store (postgresql): {_cause(exc)}") from exc
        except SettlementError:
            connection.close()
            raise
        self._connection = connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @property
    def _db(self) -> Connection:
        """The store's connection, opened again if the server dropped the last one."""
        connection = self._connection
        if connection is None:
            raise SettlementError("the settlement store is not open")
        if connection.broken or connection.closed:
            connection.close()
            try:
                connection = self._connection = self._connect()
            except psycopg.Error as exc:
                raise SettlementError(f"settlement store (postgresql): {_cause(exc)}") from exc
        return connection

    def _one(self, statement: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> DictRow:
        row = self._db.execute(statement, parameters).fetchone()
        assert row is not None  # an aggregate's row
        return row

    # -- business days --------------------------------------------------------------

    def closes(self) -> list[DateClosed]:
        try:  # read by every worker, polling: its failure is theirs to log and retry
            rows = self._db.execute(
                "SELECT business_date, closed_at, forced FROM business_day "
                "WHERE closed_at IS NOT NULL ORDER BY closed_at"
            ).fetchall()
        except psycopg.Error as exc:
            raise SettlementError(f"settlement store (postgresql): {_cause(exc)}") from exc
        return [
            DateClosed(date.fromisoformat(row["business_date"]), row["closed_at"], row["forced"])
            for row in rows
        ]

    def first_open_date(self) -> date | None:
        """The earliest date opened and not closed."""
        first = self._one(
            "SELECT min(business_date) AS d FROM business_day WHERE closed_at IS NULL"
        )["d"]
        return None if first is None else date.fromisoformat(first)

    def record_open(self, business_date: date, at: float) -> None:
        self._db.execute(
            "INSERT INTO business_day (business_date, opened_at) VALUES (%s, %s) "
            "ON CONFLICT (business_date) DO NOTHING",
            (business_date.isoformat(), at),
        )

    def record_close(self, close: DateClosed) -> None:
        day = close.business_date.isoformat()
        db = self._db
        with db.transaction():
            db.execute(
                "INSERT INTO business_day (business_date, opened_at) VALUES (%s, %s) "
                "ON CONFLICT (business_date) DO NOTHING",
                (day, close.at),
            )
            db.execute(
                "UPDATE business_day SET closed_at = %s, forced = %s "
                "WHERE business_date = %s AND closed_at IS NULL",
                (close.at, close.forced, day),
            )
            db.execute(
                "INSERT INTO business_day (business_date, opened_at) VALUES (%s, %s) "
                "ON CONFLICT (business_date) DO NOTHING",
                ((close.business_date + timedelta(days=1)).isoformat(), close.at),
            )

    def record_cutover(self, business_date: str, bank: str, code: str, at: float) -> None:
        self._db.execute(
            "INSERT INTO cutover (business_date, bank, code, at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (business_date, bank) DO UPDATE SET code = EXCLUDED.code, "
            "at = EXCLUDED.at",
            (business_date, bank, code, at),
        )

    def cutovers(self, business_date: str) -> dict[str, str]:
        rows = self._db.execute(
            "SELECT bank, code FROM cutover WHERE business_date = %s", (business_date,)
        )
        return {row["bank"]: row["code"] for row in rows}

    def unsettled_closed_dates(self) -> list[str]:
        rows = self._db.execute(
            "SELECT business_date FROM business_day WHERE closed_at IS NOT NULL "
            "AND settled_at IS NULL ORDER BY business_date"
        )
        return [row["business_date"] for row in rows]

    def is_settled(self, business_date: str) -> bool:
        row = self._db.execute(
            "SELECT settled_at FROM business_day WHERE business_date = %s", (business_date,)
        ).fetchone()
        return row is not None and row["settled_at"] is not None

    def is_closed(self, business_date: str) -> bool:
        row = self._db.execute(
            "SELECT closed_at FROM business_day WHERE business_date = %s", (business_date,)
        ).fetchone()
        return row is not None and row["closed_at"] is not None

    # -- clearing files --------------------------------------------------------------

    def clearing_file(self, bank: str, business_date: str) -> ClearingFileStatus | None:
        row = self._db.execute(
            f"SELECT {_FILE_COLUMNS} FROM clearing_file WHERE bank = %s AND business_date = %s",
            (bank, business_date),
        ).fetchone()
        return None if row is None else ClearingFileStatus(**row)

    def accept_clearing_file(
        self,
        bank: str,
        business_date: str,
        name: str,
        records: Iterable[Sequence[Any]],
        at: float,
    ) -> int:
        """Keeps a file's records (each in ``CLEARING_COLUMNS`` order), replacing a
        rejected earlier delivery; an accepted file is final. Returns the count kept.
        The records go in by COPY."""
        db = self._db
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_SETTLE_LOCK,))
            known = db.execute(
                "SELECT status FROM clearing_file WHERE bank = %s AND business_date = %s",
                (bank, business_date),
            ).fetchone()
            if known is not None and known["status"] == "accepted":
                raise SettlementError(f"{bank}'s file of {business_date} is already accepted")
            db.execute(
                "DELETE FROM clearing_record WHERE bank = %s AND file_date = %s",
                (bank, business_date),
            )
            count = 0
            with db.cursor() as cursor, cursor.copy(_COPY_RECORDS) as copy:
                for record in records:
                    mti_class = "04" if record[0].startswith("04") else "02"
                    copy.write_row((bank, business_date, mti_class, *record))
                    count += 1
            db.execute(
                "INSERT INTO clearing_file (bank, business_date, name, status, reason, records, "
                "read_at) VALUES (%s, %s, %s, 'accepted', NULL, %s, %s) "
                f"ON CONFLICT (bank, business_date) DO UPDATE SET {_REPLACE_FILE}",
                (bank, business_date, name, count, at),
            )
        return count

    def reject_clearing_file(
        self, bank: str, business_date: str, name: str, reason: str, at: float
    ) -> None:
        self._db.execute(
            "INSERT INTO clearing_file (bank, business_date, name, status, reason, records, "
            "read_at) VALUES (%s, %s, %s, 'rejected', %s, 0, %s) "
            f"ON CONFLICT (bank, business_date) DO UPDATE SET {_REPLACE_FILE}",
            (bank, business_date, name, reason, at),
        )

    def clearing_files(self, business_date: str) -> list[ClearingFileStatus]:
        rows = self._db.execute(
            f"SELECT {_FILE_COLUMNS} FROM clearing_file WHERE business_date = %s ORDER BY bank",
            (business_date,),
        )
        return [ClearingFileStatus(**row) for row in rows]

    # -- settling a date -------------------------------------------------------------

    def settle(self, business_date: str, merchants: Sequence[MerchantTerms], *, at: float) -> bool:
        """Settles a closed date, in one transaction: True if it did now, False if it
        was settled before (then nothing is posted again). Banks whose file for the
        date is missing or rejected simply have no records: their transactions are
        held as ``switch_only``."""
        db = self._db
        try:
            with _settle_lock(db), db.transaction():
                db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                row = db.execute(
                    "SELECT closed_at, settled_at FROM business_day WHERE business_date = %s",
                    (business_date,),
                ).fetchone()
                if row is None or row["closed_at"] is None:
                    raise SettlementError(f"business date {business_date} is not closed")
                if row["settled_at"] is not None:
                    return False
                _settle(db, business_date, merchants, self.on_step)
                db.execute(
                    "UPDATE business_day SET settled_at = %s WHERE business_date = %s",
                    (at, business_date),
                )
        except psycopg.Error as exc:  # rolled back whole: nothing of it stays
            raise SettlementError(f"settling {business_date} failed: {_cause(exc)}") from exc
        return True

    def record_files_written(self, business_date: str, at: float) -> None:
        self._db.execute(
            "UPDATE business_day SET files_at = %s WHERE business_date = %s", (at, business_date)
        )

    def payout_lines(self, business_date: str) -> list[PayoutLine]:
        rows = self._db.execute(
            f"SELECT {', '.join(PayoutLine.__struct_fields__)} FROM payout "
            "WHERE business_date = %s ORDER BY merchant_id",
            (business_date,),
        )
        return [PayoutLine(**row) for row in rows]

    def recon_lines(self, business_date: str) -> list[ReconLine]:
        rows = self._db.execute(
            f"SELECT {', '.join(ReconLine.__struct_fields__)} FROM recon_line "
            "WHERE business_date = %s ORDER BY rrn, category, terminal_id",
            (business_date,),
        )
        return [ReconLine(**row) for row in rows]

    # -- reversals decided -----------------------------------------------------------

    def pending_reversal_orders(self) -> list[ReversalOrder]:
        rows = self._db.execute(
            f"SELECT {', '.join(ReversalOrder.__struct_fields__)} FROM reversal_order "
            "WHERE handed_at IS NULL ORDER BY business_date, rrn"
        )
        return [ReversalOrder(**row) for row in rows]

    def reversal_orders_handed(self, rrns: Sequence[str], at: float) -> None:
        db = self._db
        with db.transaction(), db.cursor() as cursor:
            cursor.executemany(
                "UPDATE reversal_order SET handed_at = %s WHERE rrn = %s",
                [(at, rrn) for rrn in rrns],
            )

    # -- what the operator reads -----------------------------------------------------

    def status(self, business_date: str, banks: Sequence[str]) -> SettlementStatus:
        db = self._db
        day = db.execute(
            "SELECT closed_at, forced, settled_at, files_at FROM business_day "
            "WHERE business_date = %s",
            (business_date,),
        ).fetchone()
        files = self.clearing_files(business_date)
        accepted = {status.bank for status in files if status.status == "accepted"}
        counts = [
            CategoryCount(
                category=row["category"],
                action=row["action"],
                count=row["count"],
                switch_fen=row["switch_fen"] or 0,
                bank_fen=row["bank_fen"] or 0,
            )
            for row in db.execute(_CATEGORY_COUNTS, {"d": business_date})
        ]
        sums = self._one(
            "SELECT count(*) AS merchants, sum(sales_fen)::bigint AS sales, "
            "sum(refunds_fen)::bigint AS refunds, sum(fees_fen)::bigint AS fees, "
            "sum(payout_fen)::bigint AS payout, sum(carried_out_fen)::bigint AS carried, "
            "sum(held_fen)::bigint AS held FROM payout WHERE business_date = %s",
            (business_date,),
        )
        queued = self._one(
            "SELECT count(*) AS n FROM reversal_order WHERE business_date = %s", (business_date,)
        )["n"]
        return SettlementStatus(
            business_date=business_date,
            closed_at=day["closed_at"] if day is not None else None,
            forced=bool(day["forced"]) if day is not None else False,
            settled_at=day["settled_at"] if day is not None else None,
            files_written_at=day["files_at"] if day is not None else None,
            cutovers=self.cutovers(business_date),
            files=files,
            missing=[bank for bank in banks if bank not in accepted],
            categories=counts,
            merchants=sums["merchants"],
            sales_fen=sums["sales"] or 0,
            refunds_fen=sums["refunds"] or 0,
            fees_fen=sums["fees"] or 0,
            payout_fen=sums["payout"] or 0,
            carried_out_fen=sums["carried"] or 0,
            held_fen=sums["held"] or 0,
            reversals_queued=queued,
        )

    def latest_closed_date(self) -> str | None:
        latest: str | None = self._one(
            "SELECT max(business_date) AS d FROM business_day WHERE closed_at IS NOT NULL"
        )["d"]
        return latest

    def ledger_balances(self, account: str | None = None) -> list[LedgerBalance]:
        where, parameters = ("WHERE account = %s", (account,)) if account else ("", ())
        rows = self._db.execute(
            "SELECT account, sum(debit_fen)::bigint AS debit, sum(credit_fen)::bigint AS credit "
            f"FROM ledger_entry {where} GROUP BY account ORDER BY account",
            parameters,
        )
        return [
            LedgerBalance(account=row["account"], debit_fen=row["debit"], credit_fen=row["credit"])
            for row in rows
        ]

    def ledger_totals(self) -> tuple[int, int]:
        """All debits and all credits ever posted: equal, or the store is damaged."""
        row = self._one(
            "SELECT coalesce(sum(debit_fen), 0)::bigint AS debit, "
            "coalesce(sum(credit_fen), 0)::bigint AS credit FROM ledger_entry"
        )
        return row["debit"], row["credit"]


def _cause(exc: BaseException) -> str:
    return str(exc).strip().replace("\n", " ") or type(exc).__name__


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


_FILE_COLUMNS: Final = "bank, business_date, name, status, reason, records, read_at"
_REPLACE_FILE: Final = (
    "name = EXCLUDED.name, status = EXCLUDED.status, reason = EXCLUDED.reason, "
    "records = EXCLUDED.records, read_at = EXCLUDED.read_at"
)
_COPY_RECORDS: Final = (
    f"COPY clearing_record (bank, file_date, mti_class, {', '.join(CLEARING_COLUMNS)}) FROM STDIN"
)


# -- the settlement of one date, statement by statement ----------------------------------


def _settle(
    db: Connection,
    day: str,
    merchants: Sequence[MerchantTerms],
    on_step: StepHook | None = None,
) -> None:
    """Everything a date's settlement writes, inside the caller's transaction."""
    parameters = {"d": day, "d_hold": _day(day, -HOLD_DATES), "hold": HOLD_DATES}
    for statement in _TEMP_TABLES:
        db.execute(statement)
    terms = [
        (terms.merchant_id, terms.account, terms.mdr_bps, terms.fee_min_fen, terms.fee_cap_fen)
        for terms in merchants
    ]
    if not any(terms.merchant_id == DEFAULT_PROFILE for terms in merchants):
        terms.append(("*", "", 0, 0, 0))
    with db.cursor() as cursor:
        cursor.executemany("INSERT INTO terms VALUES (%s, %s, %s, %s, %s)", terms)
    for statement in _SETTLE_STEPS:
        started = time.perf_counter()
        db.execute(statement, _used(statement, parameters))
        if on_step is not None:
            on_step(statement, time.perf_counter() - started)
    started = time.perf_counter()
    unbalanced = db.execute(_UNBALANCED, {"d": day}).fetchone()
    if on_step is not None:
        on_step(_UNBALANCED, time.perf_counter() - started)
    if unbalanced is not None:
        raise LedgerUnbalanced(f"posting {unbalanced['posting']} is off by {unbalanced['off']} fen")


def _used(statement: str, parameters: dict[str, Any]) -> dict[str, Any] | None:
    """The parameters a statement names, or None when it names none."""
    used = {name: value for name, value in parameters.items() if f"%({name})s" in statement}
    return used or None


_CATEGORY_COUNTS: Final = (
    "WITH pair AS (SELECT v.rrn AS void_rrn, s.rrn AS sale_rrn FROM settlement_item v"
    " JOIN settlement_item s ON s.rrn = v.original_rrn"
    " WHERE v.settled_on = %(d)s AND v.kind = 'void' AND v.action = 'paid'"
    "  AND s.settled_on = %(d)s AND s.kind = 'sale' AND s.action = 'paid'),"
    " cancelled (rrn) AS (SELECT void_rrn FROM pair UNION SELECT sale_rrn FROM pair) "
    "SELECT category, action, count(*) AS count, sum(switch_fen)::bigint AS switch_fen, "
    "sum(bank_fen)::bigint AS bank_fen FROM ("
    " SELECT category, CASE WHEN l.action = 'paid' AND l.rrn IN (SELECT rrn FROM cancelled)"
    "  THEN 'cancelled' ELSE l.action END AS action, switch_fen, bank_fen FROM ("
    "  SELECT category, action, rrn, switch_fen, bank_fen FROM recon_line"
    "   WHERE business_date = %(d)s"
    "  UNION ALL SELECT 'matched', action, rrn, switch_fen, bank_fen FROM settlement_item"
    "   WHERE settled_on = %(d)s AND category = 'matched') AS l) AS lines "
    "GROUP BY category, action ORDER BY category, action"
)
"""A date's transactions by category and action, as its status shows them: a sale and
its void paid by the same settlement cancel out (step 7), so both show ``cancelled``."""

_UNBALANCED: Final = (
    "SELECT posting, (sum(debit_fen) - sum(credit_fen))::bigint AS off FROM ledger_entry "
    "WHERE business_date = %(d)s GROUP BY posting HAVING sum(debit_fen) != sum(credit_fen) "
    "LIMIT 1"
)

_TEMP_TABLES: Final = (
    f"CREATE TEMP TABLE terms (merchant_id {_T} PRIMARY KEY, account {_T}, mdr_bps BIGINT, "
    "fee_min BIGINT, fee_cap BIGINT) ON COMMIT DROP",
    f"""CREATE TEMP TABLE cand (
        rrn {_T} PRIMARY KEY, bank {_T}, kind {_T}, txn_date {_T}, merchant_id {_T},
        terminal_id {_T}, masked_pan {_T}, amount BIGINT, original_rrn {_T}, stands BOOLEAN
    ) ON COMMIT DROP""",
    f"""CREATE TEMP TABLE seen (
        rrn {_T} PRIMARY KEY, amount02 BIGINT, date02 {_T}, has04 BOOLEAN
    ) ON COMMIT DROP""",
    f"""CREATE TEMP TABLE decided (
        rrn {_T} PRIMARY KEY, bank {_T}, kind {_T}, txn_date {_T}, merchant_id {_T},
        terminal_id {_T}, masked_pan {_T}, original_rrn {_T}, switch_fen BIGINT,
        bank_fen BIGINT, category {_T}, action {_T}, paid_fen BIGINT
    ) ON COMMIT DROP""",
    "CREATE INDEX decided_void_of ON decided (original_rrn) "
    "WHERE kind = 'void' AND action = 'paid'",
    f"""CREATE TEMP TABLE counted (
        rrn {_T} PRIMARY KEY, bank {_T}, merchant_id {_T}, role {_T}, paid_fen BIGINT,
        fee BIGINT
    ) ON COMMIT DROP""",
    f"""CREATE TEMP TABLE merchant_day (
        merchant_id {_T} PRIMARY KEY, account {_T}, sales_count BIGINT, sales_fen BIGINT,
        refunds_count BIGINT, refunds_fen BIGINT, fees_fen BIGINT, held_fen BIGINT,
        carried_in_fen BIGINT
    ) ON COMMIT DROP""",
)

_FEE = """LEAST(
    CASE WHEN t.fee_cap > 0 THEN t.fee_cap ELSE 9223372036854775807 END,
    GREATEST(t.fee_min, (d.paid_fen * t.mdr_bps + 5000) / 10000)
)"""
"""A sale's fee (settlement.md), as the SQLite store's: integer division truncates."""


def _postings(source: str, key: str, *postings: tuple[str, str, str, str]) -> str:
    """One INSERT of ledger lines, as the SQLite store's ``_postings``."""
    lines = []
    for number, (posting, amount, debit, credit) in enumerate(postings):
        name = f"'{posting}:' || " + " || ':' || ".join(key.split(", "))
        for side, account, debit_fen, credit_fen in ((0, debit, amount, "0"),
                                                     (1, credit, "0", amount)):  # fmt: skip
            lines.append(
                f"SELECT {key}, {2 * number + side} AS line, {name} AS posting, "
                f"{account} AS account, {debit_fen} AS debit, {credit_fen} AS credit "
                f"FROM {source}_sums WHERE {amount} > 0"
            )
    return (
        f"INSERT INTO ledger_entry (business_date, posting, account, debit_fen, credit_fen) "
        f"WITH {source}_sums AS ({_SUMS[source]}) "
        f"SELECT %(d)s, posting, account, debit, credit "
        f"FROM ({' UNION ALL '.join(lines)}) AS lines ORDER BY {key}, line"
    )


_SUMS: Final = {
    "counted": "SELECT bank, merchant_id, "
    "sum(CASE WHEN role = 'sale' THEN paid_fen ELSE 0 END)::bigint AS sales_fen, "
    "sum(CASE WHEN role = 'refund' THEN paid_fen ELSE 0 END)::bigint AS refunds_fen "
    "FROM counted GROUP BY bank, merchant_id",
    "payout": "SELECT * FROM payout WHERE business_date = %(d)s",
}

_TXN_STANDS: Final = "state = 'approved' AND NOT reversed"

_SETTLE_STEPS: Final = (
    # 1. The candidates (as SQLite's step 1).
    f"""INSERT INTO cand
    SELECT rrn, bank, kind, business_date, merchant_id, terminal_id, pan_masked, amount,
           original_rrn, {_TXN_STANDS}
    FROM txn
    WHERE business_date = %(d)s AND kind IN ('sale', 'void', 'refund')
      AND state IN ('approved', 'declined', 'no_answer', 'sending')""",
    """INSERT INTO cand
    SELECT t.rrn, t.bank, t.kind, t.business_date, t.merchant_id, t.terminal_id, t.pan_masked,
           t.amount, t.original_rrn, t.state = 'approved' AND NOT t.reversed
    FROM settlement_item s JOIN txn t ON t.rrn = s.rrn
    WHERE s.state = 'held' AND t.business_date < %(d)s
    ON CONFLICT (rrn) DO NOTHING""",
    # 2. What the banks' files say of each.
    """INSERT INTO seen
    SELECT c.rrn,
           max(CASE WHEN r.mti_class = '02' THEN r.amount END),
           max(CASE WHEN r.mti_class = '02' THEN r.file_date END),
           bool_or(r.mti_class = '04')
    FROM cand c JOIN clearing_record r ON r.rrn = c.rrn AND r.bank = c.bank
    WHERE r.file_date BETWEEN to_char(c.txn_date::date - 1, 'YYYY-MM-DD') AND %(d)s
    GROUP BY c.rrn""",
    # 3. The verdicts, as settlement.md's table; what is paid, at the bank's amount (the
    #    same as the switch's, but for a mismatch), in the same pass (an UPDATE of every
    #    verdict after it cost a second pass, and on PostgreSQL a new version of each row).
    """INSERT INTO decided
    SELECT rrn, bank, kind, txn_date, merchant_id, terminal_id, masked_pan, original_rrn,
           switch_fen, bank_fen, category, action,
           CASE WHEN action = 'paid' THEN bank_fen END
    FROM (
        SELECT w.*, CASE category
            WHEN 'matched' THEN CASE WHEN switch_fen IS NULL THEN 'not_paid' ELSE 'paid' END
            WHEN 'switch_only' THEN CASE WHEN %(d)s::date - txn_date::date >= %(hold)s
                                         THEN 'reversal_queued' ELSE 'held' END
            WHEN 'bank_only' THEN 'reversal_queued'
            ELSE 'paid' END AS action
        FROM (
            SELECT v.*, CASE
                WHEN switch_fen IS NOT NULL AND bank_fen IS NOT NULL THEN CASE
                    WHEN bank_fen != switch_fen THEN 'amount_mismatch'
                    WHEN date02 != txn_date THEN 'timing'
                    ELSE 'matched' END
                WHEN switch_fen IS NOT NULL THEN 'switch_only'
                WHEN bank_fen IS NOT NULL THEN 'bank_only'
                ELSE 'matched' END AS category
            FROM (
                SELECT c.*, s.date02,
                       CASE WHEN c.stands THEN c.amount END AS switch_fen,
                       CASE WHEN s.amount02 IS NOT NULL AND NOT s.has04 THEN s.amount02 END
                           AS bank_fen
                FROM cand c LEFT JOIN seen s ON s.rrn = c.rrn
            ) AS v
        ) AS w
    ) AS x""",
    # 4. Records the switch never sent.
    """INSERT INTO decided
    SELECT r.rrn, r.bank, 'unknown', r.file_date, r.merchant_id, r.terminal_id, r.masked_pan,
           NULL, NULL, r.amount, 'bank_only', 'reversal_queued', NULL
    FROM clearing_record r
    WHERE r.file_date BETWEEN %(d_hold)s AND %(d)s AND r.mti_class = '02'
      AND NOT EXISTS (SELECT 1 FROM txn t WHERE t.rrn = r.rrn)
      AND NOT EXISTS (SELECT 1 FROM settlement_item s WHERE s.rrn = r.rrn)
      AND NOT EXISTS (SELECT 1 FROM clearing_record x
                      WHERE x.rrn = r.rrn AND x.bank = r.bank AND x.mti_class = '04')
    ON CONFLICT (rrn) DO NOTHING""",
    # 5. The reconciliation: every verdict other than matched.
    """INSERT INTO recon_line
    SELECT %(d)s, category, bank, rrn, terminal_id, merchant_id, masked_pan, switch_fen,
           bank_fen, action
    FROM decided WHERE category != 'matched'""",
    # A terminal's batch upload, against the journal.
    """INSERT INTO recon_line
    SELECT %(d)s, 'terminal_only', coalesce(t.bank, ''), coalesce(t.rrn, ''), u.terminal_id,
           u.merchant_id, coalesce(t.pan_masked, ''), NULL, NULL, 'not_paid'
    FROM batch_settlement b
    JOIN batch_upload u ON u.terminal_id = b.terminal_id AND u.merchant_id = b.merchant_id
                        AND u.batch = b.batch
    LEFT JOIN txn t ON t.terminal_id = u.terminal_id AND t.merchant_id = u.merchant_id
                    AND t.batch = u.batch AND t.stan = u.stan
                    AND t.kind = CASE u.kind WHEN '22' THEN 'sale' ELSE 'refund' END
    WHERE b.business_date = %(d)s AND b.upload_count IS NOT NULL
      AND (t.rrn IS NULL OR t.state != 'approved' OR t.reversed
           OR (t.kind = 'sale' AND t.voided))""",
    """INSERT INTO recon_line
    SELECT %(d)s, 'terminal_missing', t.bank, t.rrn, t.terminal_id, t.merchant_id,
           t.pan_masked, t.amount, NULL, coalesce(v.action, s.action, 'paid')
    FROM batch_settlement b
    JOIN txn t ON t.terminal_id = b.terminal_id AND t.merchant_id = b.merchant_id
              AND t.batch = b.batch
    LEFT JOIN decided v ON v.rrn = t.rrn
    LEFT JOIN settlement_item s ON s.rrn = t.rrn
    WHERE b.business_date = %(d)s AND b.upload_count IS NOT NULL
      AND t.state = 'approved' AND NOT t.reversed
      AND ((t.kind = 'sale' AND NOT t.voided) OR t.kind = 'refund')
      AND NOT EXISTS (SELECT 1 FROM batch_upload u
                      WHERE u.terminal_id = t.terminal_id AND u.merchant_id = t.merchant_id
                        AND u.batch = t.batch AND u.stan = t.stan
                        AND u.kind = CASE t.kind WHEN 'sale' THEN '22' ELSE '25' END)""",
    # 6. Each verdict kept: held ones are looked for again by the next settlements.
    """INSERT INTO settlement_item
    SELECT rrn, bank, kind, txn_date, merchant_id, terminal_id, masked_pan, original_rrn,
           switch_fen, bank_fen, paid_fen, category, action,
           CASE action WHEN 'held' THEN 'held' ELSE 'final' END, %(d)s
    FROM decided
    ON CONFLICT (rrn) DO UPDATE SET bank = EXCLUDED.bank, kind = EXCLUDED.kind,
        txn_date = EXCLUDED.txn_date, merchant_id = EXCLUDED.merchant_id,
        terminal_id = EXCLUDED.terminal_id, masked_pan = EXCLUDED.masked_pan,
        original_rrn = EXCLUDED.original_rrn, switch_fen = EXCLUDED.switch_fen,
        bank_fen = EXCLUDED.bank_fen, paid_fen = EXCLUDED.paid_fen,
        category = EXCLUDED.category, action = EXCLUDED.action, state = EXCLUDED.state,
        settled_on = EXCLUDED.settled_on""",
    # 7. What is paid counts as a sale or a refund (as SQLite's step 7).
    """INSERT INTO counted
    SELECT d.rrn, d.bank, d.merchant_id, role, d.paid_fen,
           CASE WHEN role = 'sale' THEN {fee} ELSE 0 END
    FROM (
        SELECT p.*, CASE
            WHEN p.kind = 'sale' AND EXISTS (SELECT 1 FROM decided v WHERE v.action = 'paid'
                AND v.kind = 'void' AND v.original_rrn = p.rrn) THEN 'cancelled'
            WHEN p.kind = 'void' AND EXISTS (SELECT 1 FROM decided s WHERE s.action = 'paid'
                AND s.kind = 'sale' AND s.rrn = p.original_rrn) THEN 'cancelled'
            WHEN p.kind = 'sale' THEN 'sale'
            ELSE 'refund' END AS role
        FROM decided p WHERE p.action = 'paid'
    ) AS d
    JOIN terms t ON t.merchant_id = CASE
        WHEN EXISTS (SELECT 1 FROM terms m WHERE m.merchant_id = d.merchant_id)
        THEN d.merchant_id ELSE '*' END""".replace("{fee}", _FEE),
    # 8. Per merchant.
    """INSERT INTO merchant_day
    SELECT m.merchant_id,
           coalesce((SELECT nullif(account, '') FROM terms WHERE merchant_id = m.merchant_id),
                    (SELECT nullif(account, '') FROM terms WHERE merchant_id = '*'),
                    m.merchant_id),
           coalesce(c.sales_count, 0), coalesce(c.sales_fen, 0), coalesce(c.refunds_count, 0),
           coalesce(c.refunds_fen, 0), coalesce(c.fees_fen, 0), coalesce(h.held_fen, 0),
           coalesce((SELECT p.carried_out_fen FROM payout p
                     WHERE p.merchant_id = m.merchant_id AND p.business_date < %(d)s
                     ORDER BY p.business_date DESC LIMIT 1), 0)
    FROM (
        SELECT merchant_id FROM counted
        UNION SELECT merchant_id FROM settlement_item WHERE state = 'held' AND kind = 'sale'
        UNION SELECT p.merchant_id FROM payout p
              WHERE p.carried_out_fen != 0 AND p.business_date = (
                  SELECT max(q.business_date) FROM payout q
                  WHERE q.merchant_id = p.merchant_id AND q.business_date < %(d)s)
    ) AS m
    LEFT JOIN (
        SELECT merchant_id,
               count(*) FILTER (WHERE role = 'sale') AS sales_count,
               sum(CASE WHEN role = 'sale' THEN paid_fen ELSE 0 END) AS sales_fen,
               count(*) FILTER (WHERE role = 'refund') AS refunds_count,
               sum(CASE WHEN role = 'refund' THEN paid_fen ELSE 0 END) AS refunds_fen,
               sum(fee) AS fees_fen
        FROM counted GROUP BY merchant_id
    ) AS c ON c.merchant_id = m.merchant_id
    LEFT JOIN (
        SELECT merchant_id, sum(switch_fen) AS held_fen FROM settlement_item
        WHERE state = 'held' AND kind = 'sale' GROUP BY merchant_id
    ) AS h ON h.merchant_id = m.merchant_id""",
    """INSERT INTO payout
    SELECT %(d)s, merchant_id, account, sales_count, sales_fen, refunds_count, refunds_fen,
           fees_fen, held_fen, carried_in_fen, net,
           CASE WHEN net > 0 THEN net ELSE 0 END, CASE WHEN net > 0 THEN 0 ELSE net END
    FROM (SELECT *, sales_fen - refunds_fen - fees_fen + carried_in_fen AS net
          FROM merchant_day) AS md""",
    # 9. The ledger (as SQLite's step 9).
    _postings(
        "counted",
        "bank, merchant_id",
        ("sales", "sales_fen", "'bank:' || bank", "'merchant:' || merchant_id"),
        ("refunds", "refunds_fen", "'merchant:' || merchant_id", "'bank:' || bank"),
    ),
    _postings(
        "payout",
        "merchant_id",
        ("fees", "fees_fen", "'merchant:' || merchant_id", "'fees'"),
        ("carry_in", "-carried_in_fen", "'merchant:' || merchant_id", "'carried:' || merchant_id"),
        ("payout", "payout_fen", "'merchant:' || merchant_id", "'payouts'"),
        (
            "carry_out",
            "-carried_out_fen",
            "'carried:' || merchant_id",
            "'merchant:' || merchant_id",
        ),
    ),
    # 10. The reversals decided.
    """INSERT INTO reversal_order (rrn, bank, business_date, reason, known)
    SELECT rrn, bank, %(d)s,
           CASE category WHEN 'bank_only' THEN 'settlement: bank_only'
                ELSE 'settlement: switch_only after ' || %(hold)s::text || ' dates' END, TRUE
    FROM decided WHERE action = 'reversal_queued' AND kind != 'unknown'
    ON CONFLICT (rrn) DO NOTHING""",
    """INSERT INTO reversal_order (rrn, bank, business_date, reason, known, mti,
        processing_code, stan, transmission, amount, currency, terminal_id, merchant_id,
        masked_pan)
    SELECT r.rrn, r.bank, %(d)s, 'settlement: bank_only, never sent by the switch', FALSE,
           r.mti, r.processing_code, r.stan, r.transmission, r.amount, r.currency,
           r.terminal_id, r.merchant_id, r.masked_pan
    FROM decided d JOIN clearing_record r ON r.rrn = d.rrn AND r.bank = d.bank
                                         AND r.file_date = d.txn_date
                                         AND r.mti_class = '02'
    WHERE d.kind = 'unknown'
    ON CONFLICT (rrn) DO NOTHING""",
)
