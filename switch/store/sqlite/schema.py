"""The journal's schema, as numbered migrations applied in order at start-up.

The version is SQLite's ``user_version``; a database newer than this code refuses to
open rather than be misread.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from switch.store.sqlite.sql import DIALECT
from switch.store.stip_claim import stip_claim_migration

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: transactions, their state changes, store-and-forward, online idempotency.
    """
    CREATE TABLE txn (
        rrn TEXT PRIMARY KEY,
        kind TEXT NOT NULL,                 -- sale, balance, void, refund
        channel TEXT NOT NULL,              -- pos, online
        request_mti TEXT NOT NULL,          -- as the terminal sent it
        terminal_id TEXT NOT NULL,
        merchant_id TEXT NOT NULL,
        stan TEXT NOT NULL,
        batch TEXT NOT NULL,
        local_date TEXT NOT NULL,           -- MMDD at the switch
        online_id TEXT,
        request_digest BLOB,                -- keyed digest of what was asked, for duplicates
        pan_masked TEXT NOT NULL,           -- first 6 / last 4
        pan_hmac BLOB NOT NULL,             -- keyed, for look-ups
        pan_sealed BLOB NOT NULL,           -- AES-GCM, to send reversals
        amount INTEGER NOT NULL,
        currency TEXT NOT NULL,
        bank TEXT NOT NULL,
        bank_mti TEXT,
        bank_stan TEXT,
        transmission TEXT,                  -- field 7 as sent
        bank_processing_code TEXT,
        original_rrn TEXT,                  -- a void's or refund's sale
        state TEXT NOT NULL,                -- sending, approved, declined, no_answer, not_sent
        code TEXT,
        auth_code TEXT,
        balance TEXT,
        refunded INTEGER NOT NULL DEFAULT 0,
        voided INTEGER NOT NULL DEFAULT 0,
        reversed INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX txn_by_terminal ON txn (terminal_id, merchant_id, stan, batch, local_date);
    CREATE INDEX txn_by_online_id ON txn (merchant_id, online_id) WHERE online_id IS NOT NULL;
    CREATE INDEX txn_in_doubt ON txn (state) WHERE state = 'sending';
    CREATE INDEX txn_by_created ON txn (created_at);

    CREATE TABLE txn_event (
        id INTEGER PRIMARY KEY,
        rrn TEXT NOT NULL,
        at REAL NOT NULL,
        state TEXT NOT NULL,
        code TEXT,
        detail TEXT
    );
    CREATE INDEX txn_event_by_rrn ON txn_event (rrn);

    CREATE TABLE saf (
        id INTEGER PRIMARY KEY,
        rrn TEXT NOT NULL UNIQUE REFERENCES txn (rrn),
        bank TEXT NOT NULL,
        reason TEXT NOT NULL,
        state TEXT NOT NULL,                -- pending, delivered, manual
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_result TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX saf_due ON saf (bank, state, next_attempt_at);

    CREATE TABLE idempotency (
        merchant_id TEXT NOT NULL,
        online_id TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        response BLOB NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (merchant_id, online_id)
    );
    CREATE INDEX idempotency_by_age ON idempotency (created_at);
    """,
    # 2: the business date of each transaction; terminals' batch settlements and uploads.
    """
    ALTER TABLE txn ADD COLUMN business_date TEXT NOT NULL DEFAULT '';  -- YYYY-MM-DD
    CREATE INDEX txn_by_business_date ON txn (business_date, bank);
    CREATE INDEX txn_by_batch ON txn (terminal_id, merchant_id, batch);

    CREATE TABLE batch_settlement (         -- a terminal's 0500, as last answered
        terminal_id TEXT NOT NULL,
        merchant_id TEXT NOT NULL,
        batch TEXT NOT NULL,
        terminal_totals TEXT NOT NULL,      -- field 48 as the terminal sent it
        switch_totals TEXT NOT NULL,        -- the journal's, in the same layout
        result TEXT NOT NULL,               -- 48.5: 1 balanced, 2 not
        business_date TEXT NOT NULL,
        rrn TEXT NOT NULL,                  -- the 0510's 37: a repeat is answered with it
        upload_count INTEGER,               -- records the last 0320 (202) says were sent
        settled_at REAL NOT NULL,
        PRIMARY KEY (terminal_id, merchant_id, batch)
    );
    CREATE INDEX batch_settlement_by_date ON batch_settlement (business_date);

    CREATE TABLE batch_upload (             -- the terminal's record of its batch (0320)
        terminal_id TEXT NOT NULL,
        merchant_id TEXT NOT NULL,
        batch TEXT NOT NULL,
        kind TEXT NOT NULL,                 -- 22 sale, 25 refund
        stan TEXT NOT NULL,                 -- the original's
        amount INTEGER NOT NULL,
        received_at REAL NOT NULL,
        PRIMARY KEY (terminal_id, merchant_id, batch, kind, stan)
    );
    """,
    # 3: the kind of business clock the journal was first run on (real or simulated):
    # one row, written by the first start; a start on the other kind is refused.
    """
    CREATE TABLE journal_clock (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        kind TEXT NOT NULL CHECK (kind IN ('real', 'simulated'))
    );
    -- A journal written before there was a simulated clock was written on the real one.
    INSERT INTO journal_clock (id, kind) SELECT 1, 'real' WHERE EXISTS (SELECT 1 FROM txn);
    """,
    # 4: pre-authorisations (risk.md): their state, last completion date and completion
    # limit as approved; found by a completion's 38 and 61.3, and open ones by expiry.
    """
    ALTER TABLE txn ADD COLUMN hold_state TEXT;      -- open, completed, voided, ...
    ALTER TABLE txn ADD COLUMN hold_until TEXT;      -- YYYY-MM-DD
    ALTER TABLE txn ADD COLUMN hold_max_pct INTEGER;
    CREATE INDEX txn_by_authorisation ON txn (merchant_id, auth_code)
        WHERE hold_state IS NOT NULL;
    CREATE INDEX txn_holds_open ON txn (hold_until) WHERE hold_state = 'open';
    """,
    # 5: stand-in processing (risk.md): why a sale was stood in, its advice's state, and
    # each bank's advice queue beside its reversal SAF, in the order of stand-in (id).
    """
    ALTER TABLE txn ADD COLUMN stand_in TEXT;          -- circuit_open, no_link, bank_91
    ALTER TABLE txn ADD COLUMN advice_state TEXT;      -- as advice.state
    CREATE TABLE advice (
        id INTEGER PRIMARY KEY,
        rrn TEXT NOT NULL UNIQUE REFERENCES txn (rrn),
        bank TEXT NOT NULL,
        reason TEXT NOT NULL,
        state TEXT NOT NULL,                -- queued, sent, accepted, refused, manual, cancelled
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_result TEXT,
        accepted_date TEXT,                 -- YYYY-MM-DD, the business date it was accepted
        local_time TEXT NOT NULL,           -- the sale's 12, 13 is its txn.local_date
        entry_mode TEXT NOT NULL,           -- the sale's 22
        condition_code TEXT NOT NULL,       -- the sale's 25
        mcc TEXT,                           -- the sale's 18
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX advice_queue ON advice (bank, state, id);
    """,
    # 6: what the risk rules (risk.md) decided of each request, and the online
    # device it came from (no index by last change: one process writes an SQLite
    # journal, no other worker follows it).
    """
    ALTER TABLE txn ADD COLUMN device_id TEXT;
    ALTER TABLE txn ADD COLUMN risk_version TEXT;   -- the rule set's version
    ALTER TABLE txn ADD COLUMN risk_rule TEXT;      -- the rule that declined it
    ALTER TABLE txn ADD COLUMN risk_review TEXT;    -- review rules that flagged it
    ALTER TABLE txn ADD COLUMN risk_shadow TEXT;    -- shadow hits, id:action[:code]
    """,
    # 7: an on-us payment's customer and funding, the risk rules' keys (risk.md).
    """
    ALTER TABLE txn ADD COLUMN customer_id TEXT;
    ALTER TABLE txn ADD COLUMN funding TEXT;        -- wallet, credit; NULL for a card
    """,
    # 8: the stand-in caps claimed in a stood-in approval's commit (store/stip_claim.py).
    stip_claim_migration(DIALECT),
    # 9: a transaction's history in its own row (design.md, "A transaction's history in
    # its row"): one JSON line an event, appended by the statement that changes the row.
    # Events written before are txn_event rows, read with it.
    """
    ALTER TABLE txn ADD COLUMN events TEXT;
    """,
)

SCHEMA_VERSION: Final = len(MIGRATIONS)


class SchemaError(RuntimeError):
    """The database was written by a newer version of the switch."""


def claim_clock(connection: sqlite3.Connection, kind: str) -> str:
    """Marks the journal with ``kind`` if it has no mark yet; the kind it is marked with."""
    with connection:
        connection.execute("INSERT OR IGNORE INTO journal_clock (id, kind) VALUES (1, ?)", (kind,))
    row = connection.execute("SELECT kind FROM journal_clock WHERE id = 1").fetchone()
    return str(row[0])


def migrate(connection: sqlite3.Connection) -> int:
    """Applies the migrations the database lacks; returns the version it is now at."""
    version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"journal schema version {version} is newer than this switch ({SCHEMA_VERSION})"
        )
    for number in range(version, SCHEMA_VERSION):
        with connection:  # each migration and its version bump commit together
            connection.executescript(
                f"BEGIN;\n{MIGRATIONS[number]}\nPRAGMA user_version = {number + 1};\nCOMMIT;"
            )
    return SCHEMA_VERSION
