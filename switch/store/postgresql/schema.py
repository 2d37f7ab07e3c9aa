"""The PostgreSQL journal's schema, as numbered migrations applied in order at start-up.

The same tables, keys and indexes as the SQLite journal's (``switch/store/sqlite/
schema.py``), in PostgreSQL's types: BYTEA for blobs, BIGINT for amounts, DOUBLE
PRECISION for the epoch-second timestamps, BOOLEAN for the flags. Where SQLite's
behaviour differs by accident of the engine, this schema spells out SQLite's:

* ``rrn``, ``kind`` and ``stan`` compare byte by byte (``COLLATE "C"``), as SQLite's
  text does, whatever the database's locale: the highest RRN of a day is a range scan
  over them.
* Rows of one commit share a timestamp; ``txn.seq`` keeps their insertion order for
  ties, as SQLite's rowid does.
* ``saf.rrn`` names a transaction but is not a foreign key: SQLite's is not enforced
  (``foreign_keys`` is off there), and a reversal is never refused for its original.

The version lives in ``journal_schema_version`` (one row); a database newer than this
code refuses to open rather than be misread. Migrations take a transaction-level
advisory lock, so two switches starting on one database migrate it once.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg

from switch.store.postgresql.sql import DIALECT
from switch.store.stip_claim import stip_claim_migration

POS_REQUEST_INDEX: Final = "txn_pos_request"
"""The unique index a repeat's start violates (migration 4)."""

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: transactions, their state changes, store-and-forward, online idempotency.
    """
    CREATE TABLE txn (
        rrn TEXT COLLATE "C" PRIMARY KEY,
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
        kind TEXT COLLATE "C" NOT NULL,
        channel TEXT NOT NULL,
        request_mti TEXT NOT NULL,
        terminal_id TEXT NOT NULL,
        merchant_id TEXT NOT NULL,
        stan TEXT COLLATE "C" NOT NULL,
        batch TEXT NOT NULL,
        local_date TEXT NOT NULL,
        online_id TEXT,
        request_digest BYTEA,
        pan_masked TEXT NOT NULL,
        pan_hmac BYTEA NOT NULL,
        pan_sealed BYTEA NOT NULL,
        amount BIGINT NOT NULL,
        currency TEXT NOT NULL,
        bank TEXT NOT NULL,
        bank_mti TEXT,
        bank_stan TEXT,
        transmission TEXT,
        bank_processing_code TEXT,
        original_rrn TEXT COLLATE "C",
        state TEXT NOT NULL,
        code TEXT,
        auth_code TEXT,
        balance TEXT,
        refunded BIGINT NOT NULL DEFAULT 0,
        voided BOOLEAN NOT NULL DEFAULT FALSE,
        reversed BOOLEAN NOT NULL DEFAULT FALSE,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        business_date TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX txn_by_terminal ON txn (terminal_id, merchant_id, stan, batch, local_date);
    CREATE INDEX txn_by_online_id ON txn (merchant_id, online_id) WHERE online_id IS NOT NULL;
    CREATE INDEX txn_in_doubt ON txn (created_at, seq) WHERE state = 'sending';
    CREATE INDEX txn_by_created ON txn (created_at);
    CREATE INDEX txn_by_business_date ON txn (business_date, bank);
    CREATE INDEX txn_by_batch ON txn (terminal_id, merchant_id, batch);

    CREATE TABLE txn_event (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        rrn TEXT COLLATE "C" NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        state TEXT NOT NULL,
        code TEXT,
        detail TEXT
    );
    CREATE INDEX txn_event_by_rrn ON txn_event (rrn);

    CREATE TABLE saf (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        rrn TEXT COLLATE "C" NOT NULL UNIQUE,
        bank TEXT NOT NULL,
        reason TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        last_result TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX saf_due ON saf (bank, state, next_attempt_at);

    CREATE TABLE idempotency (
        merchant_id TEXT NOT NULL,
        online_id TEXT NOT NULL,
        fingerprint BYTEA NOT NULL,
        response BYTEA NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (merchant_id, online_id)
    );
    CREATE INDEX idempotency_by_age ON idempotency (created_at);

    CREATE TABLE batch_settlement (
        terminal_id TEXT NOT NULL,
        merchant_id TEXT NOT NULL,
        batch TEXT NOT NULL,
        terminal_totals TEXT NOT NULL,
        switch_totals TEXT NOT NULL,
        result TEXT NOT NULL,
        business_date TEXT NOT NULL,
        rrn TEXT NOT NULL,
        upload_count INTEGER,
        settled_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (terminal_id, merchant_id, batch)
    );

    CREATE TABLE batch_upload (
        terminal_id TEXT NOT NULL,
        merchant_id TEXT NOT NULL,
        batch TEXT NOT NULL,
        kind TEXT COLLATE "C" NOT NULL,
        stan TEXT COLLATE "C" NOT NULL,
        amount BIGINT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (terminal_id, merchant_id, batch, kind, stan)
    );
    """,
    # 2: claims on queued reversals, so that several switch processes (workers) on one
    # database hand each attempt to exactly one of them: a claim names its claimer and
    # holds until its lease runs out (a claimer that died leaves a claim that expires).
    """
    ALTER TABLE saf ADD COLUMN claimed_by TEXT;
    ALTER TABLE saf ADD COLUMN claimed_until DOUBLE PRECISION;
    """,
    # 3: which worker wrote each transaction, so that a worker's start-up recovery
    # takes only the in-doubt transactions of workers that are gone (their lock free).
    """
    ALTER TABLE txn ADD COLUMN worker INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX txn_in_doubt_by_worker ON txn (worker) WHERE state = 'sending';
    """,
    # 4: a POS request's identity (TxnRecord.request_key) journaled once among those that
    # went to a bank, whichever worker took it: a repeat's start is refused by the
    # server (RequestRepeated), so no worker reads the journal before each request. One
    # that never left (not_sent) may be sent again, so it is not counted.
    f"""
    CREATE UNIQUE INDEX {POS_REQUEST_INDEX} ON txn
        (terminal_id, merchant_id, batch, stan, local_date, request_mti)
        WHERE channel = 'pos' AND state <> 'not_sent';
    """,
    # 5: the kind of business clock the journal was first run on (real or simulated):
    # one row, written by the first start; a start on the other kind is refused.
    """
    CREATE TABLE journal_clock (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        kind TEXT NOT NULL CHECK (kind IN ('real', 'simulated'))
    );
    -- A journal written before there was a simulated clock was written on the real one.
    INSERT INTO journal_clock (id, kind) SELECT 1, 'real' WHERE EXISTS (SELECT 1 FROM txn);
    """,
    # 6: pre-authorisations (risk.md): their state, last completion date and completion
    # limit as approved; found by a completion's 38 and 61.3, and open ones by expiry.
    """
    ALTER TABLE txn ADD COLUMN hold_state TEXT COLLATE "C";
    ALTER TABLE txn ADD COLUMN hold_until TEXT COLLATE "C";
    ALTER TABLE txn ADD COLUMN hold_max_pct INTEGER;
    CREATE INDEX txn_by_authorisation ON txn (merchant_id, auth_code)
        WHERE hold_state IS NOT NULL;
    CREATE INDEX txn_holds_open ON txn (hold_until) WHERE hold_state = 'open';
    """,
    # 7: stand-in processing (risk.md): why a sale was stood in, its advice's state, and
    # each bank's advice queue beside its reversal SAF, in the order of stand-in (id).
    """
    ALTER TABLE txn ADD COLUMN stand_in TEXT;
    ALTER TABLE txn ADD COLUMN advice_state TEXT;
    CREATE TABLE advice (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        rrn TEXT COLLATE "C" NOT NULL UNIQUE,
        bank TEXT NOT NULL,
        reason TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        last_result TEXT,
        accepted_date TEXT,
        local_time TEXT NOT NULL,
        entry_mode TEXT NOT NULL,
        condition_code TEXT NOT NULL,
        mcc TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX advice_queue ON advice (bank, state, id);
    """,
    # 8: what the risk rules (risk.md) decided of each request, and the online
    # device it came from; rows by last change, for the other workers' windows.
    """
    ALTER TABLE txn ADD COLUMN device_id TEXT;
    ALTER TABLE txn ADD COLUMN risk_version TEXT;   -- the rule set's version
    ALTER TABLE txn ADD COLUMN risk_rule TEXT;      -- the rule that declined it
    ALTER TABLE txn ADD COLUMN risk_review TEXT;    -- review rules that flagged it
    ALTER TABLE txn ADD COLUMN risk_shadow TEXT;    -- shadow hits, id:action[:code]
    CREATE INDEX txn_by_updated ON txn (updated_at);
    """,
    # 9: an on-us payment's customer and funding, the risk rules' keys (risk.md); the
    # claim on a bank's head advice.
    """
    ALTER TABLE txn ADD COLUMN customer_id TEXT;
    ALTER TABLE txn ADD COLUMN funding TEXT;        -- wallet, credit; NULL for a card
    -- one sender of a bank's advices across workers: the head's claim and its lease
    ALTER TABLE advice ADD COLUMN claimed_by TEXT;
    ALTER TABLE advice ADD COLUMN claimed_until DOUBLE PRECISION;
    """,
    # 10: the stand-in caps claimed in a stood-in approval's commit, exact across
    # workers (store/stip_claim.py).
    stip_claim_migration(DIALECT),
    # 11: a transaction's history in its own row (design.md, "A transaction's history
    # in its row"): one JSON line an event, appended by the statement that changes the
    # row. Events written before are txn_event rows, read with it.
    """
    ALTER TABLE txn ADD COLUMN events TEXT;
    """,
)
"""The first migration holds what SQLite's first two do: there is no PostgreSQL journal
of SQLite's version 1 to bring forward. Later ones are PostgreSQL's own (claims across
processes, which one SQLite process never needs)."""

SCHEMA_VERSION: Final = len(MIGRATIONS)

_MIGRATION_LOCK: Final = 0x5357_4A4E  # "SWJN": any constant, the same for every switch


class SchemaError(RuntimeError):
    """The database was written by a newer version of the switch, or holds rows a
    migration's constraint refuses."""


def migrate(connection: psycopg.Connection[Any]) -> int:
    """Applies the migrations the database lacks, each with its version bump in one
    transaction; returns the version it is now at."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        connection.execute(
            "CREATE TABLE IF NOT EXISTS journal_schema_version (version INTEGER NOT NULL)"
        )
        row = connection.execute("SELECT max(version) FROM journal_schema_version").fetchone()
        version = 0 if row is None else _first(row) or 0
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"journal schema version {version} is newer than this switch ({SCHEMA_VERSION})"
            )
        for number in range(version, SCHEMA_VERSION):
            try:
                connection.execute(MIGRATIONS[number])
            except psycopg.errors.UniqueViolation as exc:
                # Rows written before the index (a repeat sent to two workers at the same
                # moment, both to the bank): the start is refused, naming one pair.
                raise SchemaError(
                    f"migration {number + 1} cannot build its unique index: the journal "
                    f"holds two POS requests of one identity that went to a bank "
                    f"({_cause(exc)}); resolve them by hand before upgrading"
                ) from exc
            connection.execute("DELETE FROM journal_schema_version")
            connection.execute(
                "INSERT INTO journal_schema_version (version) VALUES (%s)", (number + 1,)
            )
    return SCHEMA_VERSION


def claim_clock(connection: psycopg.Connection[Any], kind: str) -> str:
    """Marks the journal with ``kind`` if it has no mark yet; the kind it is marked with.
    Two workers starting at once: the first insert wins, both read it."""
    with connection.transaction():
        connection.execute(
            "INSERT INTO journal_clock (id, kind) VALUES (1, %s) ON CONFLICT DO NOTHING",
            (kind,),
        )
        row = connection.execute("SELECT kind FROM journal_clock WHERE id = 1").fetchone()
    return str(_first(row))


def _cause(exc: psycopg.Error) -> str:
    detail = exc.diag.message_detail
    return (detail or str(exc)).strip().replace("\n", " ")


def _first(row: Any) -> Any:
    """A row's first value, whichever row factory the connection has."""
    return next(iter(row.values())) if isinstance(row, dict) else row[0]
