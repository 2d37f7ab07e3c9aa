"""The co-brand card's SQL (credit.md, "Co-brand card"), beside the credit accounts and
written once for both engines: each customer's link (the card's look-up HMAC as the
journal keeps it, its sealed number, its masked form) and each linked card's approved
sales with their points and conversion. The points themselves are on the ledger
(``points:<c>``, ``points_issued``)."""

from __future__ import annotations

import msgspec

from switch.store.dialect import Dialect

SALE_COLUMNS = (
    "rrn, customer_id, business_date, merchant_id, bank, amount_fen, refunded_fen, points, "
    "state, converted_rrn"
)


def cobrand_migrations(d: Dialect) -> tuple[str, ...]:
    t, i, r = d.text, d.integer, d.real
    return (
        f"""
    CREATE TABLE cobrand_link (
        customer_id {t} PRIMARY KEY,
        pan_hmac {t} NOT NULL UNIQUE,      -- hex: the journal's look-up HMAC of the PAN
        pan_sealed {t} NOT NULL,           -- hex: the sealed PAN (switch.store.crypto)
        masked_pan {t} NOT NULL,
        linked_at {r} NOT NULL
    );
    CREATE TABLE cobrand_sale (
        rrn {t} PRIMARY KEY,               -- the sale's
        customer_id {t} NOT NULL,
        business_date {t} NOT NULL,
        merchant_id {t} NOT NULL,
        bank {t} NOT NULL,
        amount_fen {i} NOT NULL CHECK (amount_fen > 0),
        refunded_fen {i} NOT NULL DEFAULT 0,
        points {i} NOT NULL CHECK (points >= 0),
        state {t} NOT NULL CHECK (state IN ('standing', 'voided', 'reversed', 'not_paid')),
        converted_rrn {t},                 -- the payment to the card that converts it
        pan_hmac {t} NOT NULL,             -- hex: the card's, as linked when it was made
        convert_key {t},                   -- the latest conversion's hold: its key's id
        at {r} NOT NULL
    );
    CREATE TABLE cobrand_change (           -- each void, refund, reversal applied once
        ref {t} NOT NULL,                  -- the void's or refund's RRN, else the sale's
        what {t} NOT NULL CHECK (what IN ('void', 'refund', 'reversal', 'not_paid')),
        rrn {t} NOT NULL,                  -- the sale's
        at {r} NOT NULL,
        PRIMARY KEY (ref, what)
    );
    CREATE INDEX cobrand_sale_by_customer ON cobrand_sale (customer_id, business_date);
    CREATE INDEX cobrand_sale_by_payment ON cobrand_sale (converted_rrn);
    """,
    )


def cobrand_metrics_migrations(d: Dialect) -> tuple[str, ...]:
    """The conversions' transfers found without reading the whole ledger (metrics)."""
    return (
        """
    CREATE INDEX ledger_transfer_cobrand ON ledger_transfer (kind, state, request_id)
        WHERE kind IN ('cobrand_convert', 'cobrand_cancel');
    """,
    )


class CobrandSql(msgspec.Struct, frozen=True, kw_only=True):
    link_of: str
    link_by_hmac: str
    insert_link: str
    replace_link: str
    insert_sale: str
    lock_sale: str
    update_sale: str
    sales_of: str
    sale_by_payment: str
    sale_card: str
    change_of: str
    set_convert_key: str
    pending_conversions: str
    insert_change: str
    linked_count: str
    conversion_counts: str
    points_sums: str


def cobrand_sql(d: Dialect, *, lock: str) -> CobrandSql:
    sql = d.sql
    return CobrandSql(
        link_of=sql(
            "SELECT customer_id, pan_hmac, pan_sealed, masked_pan FROM cobrand_link "
            f"WHERE customer_id = ?{lock}"
        ),
        link_by_hmac=sql(
            "SELECT customer_id, pan_hmac, pan_sealed, masked_pan, linked_at FROM cobrand_link "
            "WHERE pan_hmac = ?"
        ),
        insert_link=sql(
            "INSERT INTO cobrand_link (customer_id, pan_hmac, pan_sealed, masked_pan, "
            "linked_at) VALUES (?, ?, ?, ?, ?)"
        ),
        replace_link=sql(
            "UPDATE cobrand_link SET pan_hmac = ?, pan_sealed = ?, masked_pan = ?, "
            "linked_at = ? WHERE customer_id = ?"
        ),
        insert_sale=sql(
            f"INSERT INTO cobrand_sale ({SALE_COLUMNS}, pan_hmac, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rrn) DO NOTHING"
        ),
        lock_sale=sql(f"SELECT {SALE_COLUMNS} FROM cobrand_sale WHERE rrn = ?{lock}"),
        update_sale=sql(
            "UPDATE cobrand_sale SET refunded_fen = ?, points = ?, state = ?, "
            "converted_rrn = ?, at = ? WHERE rrn = ?"
        ),
        # The linked card's standing sales of the last ``convert_days``, newest first.
        sales_of=sql(
            f"SELECT {SALE_COLUMNS} FROM cobrand_sale WHERE customer_id = ? AND pan_hmac = ? "
            "AND state = 'standing' AND business_date >= ? "
            "ORDER BY business_date DESC, rrn DESC"
        ),
        sale_by_payment=sql(f"SELECT {SALE_COLUMNS} FROM cobrand_sale WHERE converted_rrn = ?"),
        sale_card=sql("SELECT pan_hmac FROM cobrand_sale WHERE rrn = ?"),
        set_convert_key=sql("UPDATE cobrand_sale SET convert_key = ? WHERE rrn = ?"),
        pending_conversions=sql(
            "SELECT customer_id, rrn, convert_key FROM cobrand_sale "
            "WHERE converted_rrn = 'pending' ORDER BY rrn"
        ),
        change_of=sql("SELECT rrn FROM cobrand_change WHERE ref = ? AND what = ?"),
        insert_change=sql("INSERT INTO cobrand_change (ref, what, rrn, at) VALUES (?, ?, ?, ?)"),
        # The metrics: links now; conversions' holds by state, and the conversions
        # cancelled by settlement (one or more transfers each); points given, taken back.
        linked_count=sql("SELECT count(*) AS n FROM cobrand_link"),
        conversion_counts=sql(
            "SELECT kind, state, count(DISTINCT request_id) AS n FROM ledger_transfer "
            "WHERE kind IN ('cobrand_convert', 'cobrand_cancel') GROUP BY kind, state"
        ),
        points_sums=sql("SELECT debits_posted, credits_posted FROM ledger_account WHERE name = ?"),
    )
