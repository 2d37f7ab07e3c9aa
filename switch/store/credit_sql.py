"""The credit accounts' SQL (credit.md), beside the ledger's tables and written once for
both engines: each account's row (limit, cycle, freezes, the sans-IO book as JSON, the
last business date closed) and the statements made at the closes, for the day's file.
The money itself is on the ledger (``credit_receivable:<c>`` and its counterparts)."""

from __future__ import annotations

import msgspec

from switch.store.dialect import Dialect

ACCOUNT_COLUMNS = (
    "customer_id, app, limit_fen, statement_day, grace_days, opened, frozen_app, "
    "frozen_overdue, app_reason, last_closed, book"
)


def credit_migrations(d: Dialect) -> tuple[str, ...]:
    t, i, r, f = d.text, d.integer, d.real, d.flag
    return (
        f"""
    CREATE TABLE credit_account (
        customer_id {t} PRIMARY KEY,
        app {t} NOT NULL,                  -- the app principal that opened the wallet
        limit_fen {i} NOT NULL CHECK (limit_fen >= 0),
        statement_day {i} NOT NULL CHECK (statement_day BETWEEN 1 AND 28),
        grace_days {i} NOT NULL CHECK (grace_days BETWEEN 1 AND 20),
        opened {t} NOT NULL,               -- business date
        frozen_app {f} NOT NULL DEFAULT {d.false},
        frozen_overdue {f} NOT NULL DEFAULT {d.false},
        app_reason {t} NOT NULL DEFAULT '',
        last_closed {t},                   -- the last business date closed for it
        book {t} NOT NULL,                 -- switch.core.credit.book.Book, JSON
        updated_at {r} NOT NULL
    );
    CREATE INDEX credit_account_to_close ON credit_account (last_closed, customer_id);
    CREATE TABLE credit_statement (
        customer_id {t} NOT NULL,
        statement_date {t} NOT NULL,
        period {t} NOT NULL,
        due_date {t} NOT NULL,
        previous_balance_fen {i} NOT NULL,
        new_balance_fen {i} NOT NULL,
        statement {t} NOT NULL,            -- JSON: switch.core.credit.book.Statement
        PRIMARY KEY (customer_id, statement_date)
    );
    CREATE INDEX credit_statement_by_date ON credit_statement (statement_date, customer_id);
    """,
    )


def credit_funding_migrations(d: Dialect) -> tuple[str, ...]:
    """After the app desk's: a credit payment code's instalments (credit.md:
    `paycode_issue` binds them)."""
    i = d.integer
    return (
        f"""
    ALTER TABLE paycode ADD COLUMN instalments {i};
    -- The account's figures as last saved, for the metrics (the book is JSON).
    ALTER TABLE credit_account ADD COLUMN outstanding_fen {i} NOT NULL DEFAULT 0;
    ALTER TABLE credit_account ADD COLUMN overdue_fen {i} NOT NULL DEFAULT 0;
    """,
    )


class CreditSql(msgspec.Struct, frozen=True, kw_only=True):
    insert_account: str
    lock_account: str
    read_account: str
    update_account: str
    set_limit: str
    set_app_freeze: str
    to_close: str
    insert_statement: str
    statements_of: str
    counts: str
    wallet_app: str
    spendable: str
    amend_statement: str
    penalties: str


def credit_sql(d: Dialect, *, lock: str) -> CreditSql:
    sql = d.sql
    return CreditSql(
        insert_account=sql(
            f"INSERT INTO credit_account ({ACCOUNT_COLUMNS}, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        lock_account=sql(
            f"SELECT {ACCOUNT_COLUMNS} FROM credit_account WHERE customer_id = ?{lock}"
        ),
        read_account=sql(f"SELECT {ACCOUNT_COLUMNS} FROM credit_account WHERE customer_id = ?"),
        update_account=sql(
            "UPDATE credit_account SET book = ?, last_closed = ?, frozen_overdue = ?, "
            "updated_at = ?, outstanding_fen = ?, overdue_fen = ? WHERE customer_id = ?"
        ),
        set_limit=sql(
            "UPDATE credit_account SET limit_fen = ?, updated_at = ? WHERE customer_id = ?"
        ),
        set_app_freeze=sql(
            "UPDATE credit_account SET frozen_app = ?, app_reason = ?, updated_at = ? "
            "WHERE customer_id = ?"
        ),
        # Accounts whose close of a date is still to run, a batch at a time in key order.
        to_close=sql(
            "SELECT customer_id FROM credit_account WHERE opened <= ? "
            "AND (last_closed IS NULL OR last_closed < ?) AND customer_id > ? "
            "ORDER BY customer_id LIMIT ?"
        ),
        insert_statement=sql(
            "INSERT INTO credit_statement (customer_id, statement_date, period, due_date, "
            "previous_balance_fen, new_balance_fen, statement) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (customer_id, statement_date) DO NOTHING"
        ),
        statements_of=sql(
            "SELECT customer_id, statement_date, period, due_date, previous_balance_fen, "
            "new_balance_fen, statement FROM credit_statement WHERE statement_date = ? "
            "ORDER BY customer_id"
        ),
        wallet_app=sql("SELECT app FROM wallet WHERE customer_id = ?"),
        penalties=sql("SELECT credits_posted FROM ledger_account WHERE name = ?"),
        amend_statement=sql(
            "UPDATE credit_statement SET new_balance_fen = ?, statement = ? "
            "WHERE customer_id = ? AND statement_date = ?"
        ),
        spendable=sql(
            "SELECT credits_posted - debits_posted - debits_pending AS spendable "
            "FROM ledger_account WHERE name = ?"
        ),
        counts=sql(
            "SELECT count(*) AS accounts, "
            "coalesce(sum(CASE WHEN frozen_app OR frozen_overdue THEN 1 ELSE 0 END), 0) "
            "AS frozen, coalesce(sum(outstanding_fen), 0) AS outstanding_fen, "
            "coalesce(sum(overdue_fen), 0) AS overdue_fen, "
            "coalesce(sum(CASE WHEN overdue_fen > 0 THEN 1 ELSE 0 END), 0) AS overdue "
            "FROM credit_account"
        ),
    )
