"""The ledger store's SQL, written once for both engines (wallet.md's Ledger, settlement.md's
accounts): accounts with their four sums, transfers keyed by principal, id and leg,
each account's posted movements (history), and beside them what wallet.md keeps of
wallets, bound accounts, counted payments, QR codes and payment codes.
:func:`ledger_sql` gives the statements in an engine's :class:`Dialect`, with its way of
locking a row it is about to change (PostgreSQL's ``FOR UPDATE``; SQLite has one
writer, its ``BEGIN IMMEDIATE`` locks the whole file).

The database holds the invariants it can: a capped account (a wallet, points) never
past its cap, no sum below zero, one transfer per key, one state of three.
"""

from __future__ import annotations

from typing import Final

import msgspec

from switch.core.ledger import CUSTOMER_ACCOUNTS
from switch.store.cobrand_sql import cobrand_metrics_migrations, cobrand_migrations
from switch.store.credit_sql import credit_funding_migrations, credit_migrations
from switch.store.desk_sql import desk_migrations
from switch.store.dialect import Dialect
from switch.store.hold_sql import hold_migrations
from switch.store.own_sql import own_migrations
from switch.store.risk_sql import risk_migrations

ACCOUNT_COLUMNS: Final = (
    "name, debit_cap, debits_pending, debits_posted, credits_pending, credits_posted"
)
TRANSFER_COLUMNS: Final = (
    "principal, request_id, leg, debit_account, credit_account, amount, kind, rrn, "
    "merchant_id, state, posted_amount"
)


def migrations(d: Dialect) -> tuple[str, ...]:
    """The store's migrations, in order."""
    t, i, r, f = d.text, d.integer, d.real, d.flag
    return (
        f"""
    CREATE TABLE ledger_account (
        name {t} PRIMARY KEY,              -- settlement.md's, e.g. wallet:C100000001
        type {t} NOT NULL,                 -- asset, liability, income, expense
        unit {t} NOT NULL,                 -- fen, points: never netted
        debit_cap {i},                     -- wallets and points 0: never below zero
        debits_pending {i} NOT NULL DEFAULT 0,
        debits_posted {i} NOT NULL DEFAULT 0,
        credits_pending {i} NOT NULL DEFAULT 0,
        credits_posted {i} NOT NULL DEFAULT 0,
        CHECK (debits_pending >= 0 AND debits_posted >= 0 AND credits_pending >= 0
               AND credits_posted >= 0),
        CHECK (debit_cap IS NULL
               OR credits_posted - debits_posted - debits_pending + debit_cap >= 0)
    );
    CREATE TABLE ledger_transfer (
        seq {d.row_id},
        principal {t} NOT NULL,
        request_id {t} NOT NULL,
        leg {t} NOT NULL,
        debit_account {t} NOT NULL REFERENCES ledger_account (name),
        credit_account {t} NOT NULL REFERENCES ledger_account (name),
        amount {i} NOT NULL CHECK (amount > 0),
        kind {t} NOT NULL,
        rrn {t} NOT NULL,
        merchant_id {t} NOT NULL,
        state {t} NOT NULL CHECK (state IN ('pending', 'posted', 'voided')),
        posted_amount {i} NOT NULL DEFAULT 0 CHECK (posted_amount >= 0 AND posted_amount <= amount),
        created_at {r} NOT NULL,
        updated_at {r} NOT NULL,
        UNIQUE (principal, request_id, leg)
    );
    CREATE INDEX ledger_transfer_pending ON ledger_transfer (state) WHERE state = 'pending';
    CREATE INDEX ledger_transfer_by_rrn ON ledger_transfer (rrn) WHERE rrn != '';
    CREATE TABLE ledger_movement (          -- each posted movement of an account
        id {d.row_id},
        account {t} NOT NULL,
        principal {t} NOT NULL,
        request_id {t} NOT NULL,
        leg {t} NOT NULL,
        amount {i} NOT NULL,               -- signed: + credits the account
        balance_after {i} NOT NULL,        -- credits minus debits, posted
        kind {t} NOT NULL,
        rrn {t} NOT NULL,
        merchant_id {t} NOT NULL,
        at {r} NOT NULL
    );
    CREATE INDEX ledger_movement_by_account ON ledger_movement (account, id);

    CREATE TABLE wallet (
        customer_id {t} PRIMARY KEY,
        app {t} NOT NULL,                  -- the app principal that opened it
        class {i} NOT NULL CHECK (class IN (1, 2, 3)),
        opened {t} NOT NULL,               -- local date
        opened_at {r} NOT NULL
    );
    CREATE TABLE wallet_bound (
        customer_id {t} NOT NULL,
        account {t} NOT NULL,
        bank_code {t} NOT NULL,
        account_name {t} NOT NULL,
        bound_at {r} NOT NULL,
        PRIMARY KEY (customer_id, account, bank_code)
    );
    CREATE TABLE wallet_count (             -- counted against the class limit and daily caps
        principal {t} NOT NULL,
        request_id {t} NOT NULL,
        leg {t} NOT NULL,
        customer_id {t} NOT NULL,
        local_date {t} NOT NULL,
        year {t} NOT NULL,
        amount {i} NOT NULL,
        in_class {f} NOT NULL,
        daily {f} NOT NULL,
        static {f} NOT NULL,
        cancelled {f} NOT NULL DEFAULT {d.false},
        PRIMARY KEY (principal, request_id, leg)
    );
    CREATE INDEX wallet_count_by_customer ON wallet_count (customer_id, year, local_date);
    CREATE TABLE wallet_order (             -- top-ups and withdrawals, for their files
        principal {t} NOT NULL,
        request_id {t} NOT NULL,
        kind {t} NOT NULL CHECK (kind IN ('topup', 'withdraw')),
        customer_id {t} NOT NULL,
        rrn {t} NOT NULL,
        amount {i} NOT NULL,
        bank {t} NOT NULL,                 -- a top-up's card bank
        account {t} NOT NULL,
        account_name {t} NOT NULL,
        bank_code {t} NOT NULL,
        business_date {t} NOT NULL,
        state {t} NOT NULL CHECK (state IN ('pending', 'approved', 'declined')),
        created_at {r} NOT NULL,
        updated_at {r} NOT NULL,
        PRIMARY KEY (principal, request_id)
    );
    CREATE INDEX wallet_order_by_date ON wallet_order (business_date, kind, state);

    CREATE TABLE qr_code (
        qr_id {t} PRIMARY KEY,
        merchant_id {t} NOT NULL,
        kind {t} NOT NULL CHECK (kind IN ('static', 'dynamic')),
        amount {i},
        order_id {t},
        online_id {t},                     -- the qr_create's id
        payload {t} NOT NULL,
        created_at {r} NOT NULL,
        expires_at {r},
        state {t} NOT NULL CHECK (state IN ('open', 'paying', 'paid')),
        paying {t}                         -- the reserving payment's principal and id
    );
    CREATE INDEX qr_by_merchant ON qr_code (merchant_id, online_id);
    CREATE TABLE paycode (
        code {t} PRIMARY KEY,
        customer_id {t} NOT NULL,
        funding {t} NOT NULL,
        verification {t} NOT NULL,
        issued_at {r} NOT NULL,            -- wall clock
        expires_at {r} NOT NULL,
        state {t} NOT NULL CHECK (state IN ('open', 'used', 'cancelled'))
    );
    CREATE INDEX paycode_open ON paycode (customer_id, issued_at) WHERE state = 'open';
    CREATE INDEX paycode_by_age ON paycode (issued_at);
    CREATE TABLE paycode_probe (            -- answers of 14 to a terminal's codes
        terminal {t} NOT NULL,
        at {r} NOT NULL
    );
    CREATE INDEX paycode_probe_by_terminal ON paycode_probe (terminal, at);
    """,
        *credit_migrations(d),  # credit.md's accounts and statements (credit_sql.py)
        *desk_migrations(d),  # the app desk's kept results (desk_sql.py)
        f"""
    CREATE TABLE qr_payment (               -- wallet_pay's payments of a QR (qr_status)
        principal {t} NOT NULL,
        request_id {t} NOT NULL,
        qr_id {t} NOT NULL,
        rrn {t} NOT NULL,
        amount {i} NOT NULL,
        at {r} NOT NULL,
        state {t} NOT NULL CHECK (state IN ('pending', 'approved', 'declined')),
        PRIMARY KEY (principal, request_id)
    );
    CREATE INDEX qr_payment_by_qr ON qr_payment (qr_id, at);
    """,
        *cobrand_migrations(d),  # credit.md's co-brand links and sales (cobrand_sql.py)
        *credit_funding_migrations(d),  # credit payment codes' instalments (credit_sql.py)
        *cobrand_metrics_migrations(d),  # the conversions counted by result (cobrand_sql.py)
        *own_migrations(d),  # repayments by card kept for settlement (own_sql.py)
        *risk_migrations(d),  # the risk rules' records of desk requests (risk_sql.py)
        *hold_migrations(d),  # on-us pre-authorisations' holds (hold_sql.py)
    )


class LedgerSql(msgspec.Struct, frozen=True, kw_only=True):
    """The store's statements in one engine's form."""

    ensure_account: str
    lock_account: str
    lock_transfer: str
    insert_transfer: str
    end_transfer: str
    update_account: str
    insert_movement: str
    transfer_by_key: str
    pending_transfers: str
    account: str
    accounts: str
    totals: str
    transfer_states: str
    wallet_totals: str
    balances: str
    balance_of: str
    drifted_accounts: str
    drifted_movements: str
    over_cap: str
    movements: str
    movements_before: str
    # wallets
    lock_wallet: str
    read_wallet: str
    insert_wallet: str
    set_class: str
    usage: str
    insert_count: str
    cancel_count: str
    bound: str
    bind: str
    unbind: str
    insert_order: str
    end_order: str
    withdrawals: str
    # QR codes
    insert_qr: str
    lock_qr: str
    read_qr: str
    qr_by_online_id: str
    set_qr_state: str
    qr_by_paying: str
    insert_qr_payment: str
    end_qr_payment: str
    qr_payments: str
    set_transfer_rrn: str
    set_order_rrn: str
    # payment codes
    insert_paycode: str
    open_paycodes: str
    cancel_paycode: str
    lock_paycode: str
    use_paycode: str
    take_paycode: str
    probes: str
    insert_probe: str
    purge_paycodes: str
    purge_probes: str


def _grouped_name() -> str:
    """An account's line in ``balances``: its kind's (``wallet:*``) for a customer's."""
    cases = " ".join(
        f"WHEN substr(name, 1, {len(kind) + 1}) = '{kind}:' THEN '{kind}:*'"
        for kind in CUSTOMER_ACCOUNTS
    )
    return f"CASE {cases} ELSE name END"


def ledger_sql(d: Dialect, *, lock: str) -> LedgerSql:
    """The statements in the dialect ``d``; ``lock`` ends a SELECT of rows the
    transaction will change (`` FOR UPDATE``, or empty)."""
    sql = d.sql
    whole = d.whole.format
    sums = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
    recomputed = """
        SELECT account, sum(dq) AS dq, sum(dp) AS dp, sum(cq) AS cq, sum(cp) AS cp FROM (
            SELECT debit_account AS account,
                   CASE WHEN state = 'pending' THEN amount ELSE 0 END AS dq,
                   posted_amount AS dp, 0 AS cq, 0 AS cp FROM ledger_transfer
            UNION ALL
            SELECT credit_account, 0, 0, CASE WHEN state = 'pending' THEN amount ELSE 0 END,
                   posted_amount FROM ledger_transfer
        ) AS sides GROUP BY account"""
    return LedgerSql(
        ensure_account=sql(
            "INSERT INTO ledger_account (name, type, unit, debit_cap) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO NOTHING"
        ),
        lock_account=sql(f"SELECT {ACCOUNT_COLUMNS} FROM ledger_account WHERE name = ?{lock}"),
        lock_transfer=sql(
            f"SELECT {TRANSFER_COLUMNS} FROM ledger_transfer "
            f"WHERE principal = ? AND request_id = ? AND leg = ?{lock}"
        ),
        insert_transfer=sql(
            f"INSERT INTO ledger_transfer ({TRANSFER_COLUMNS}, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        end_transfer=sql(
            "UPDATE ledger_transfer SET state = ?, posted_amount = ?, updated_at = ? "
            "WHERE principal = ? AND request_id = ? AND leg = ? AND state = 'pending'"
        ),
        update_account=sql(
            "UPDATE ledger_account SET "
            + ", ".join(f"{column} = {column} + ?" for column in sums)
            + " WHERE name = ?"
        ),
        insert_movement=sql(
            "INSERT INTO ledger_movement (account, principal, request_id, leg, amount, "
            "balance_after, kind, rrn, merchant_id, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        transfer_by_key=sql(
            f"SELECT {TRANSFER_COLUMNS} FROM ledger_transfer "
            "WHERE principal = ? AND request_id = ? AND leg = ?"
        ),
        pending_transfers=sql(
            f"SELECT {TRANSFER_COLUMNS} FROM ledger_transfer WHERE state = 'pending' ORDER BY seq"
        ),
        account=sql(f"SELECT {ACCOUNT_COLUMNS}, type, unit FROM ledger_account WHERE name = ?"),
        accounts=sql(f"SELECT {ACCOUNT_COLUMNS}, type, unit FROM ledger_account ORDER BY name"),
        totals=sql(
            "SELECT unit, "
            + ", ".join(f"{whole(f'coalesce(sum({column}), 0)')} AS {column}" for column in sums)
            + " FROM ledger_account GROUP BY unit ORDER BY unit"
        ),
        transfer_states=sql("SELECT state, count(*) AS n FROM ledger_transfer GROUP BY state"),
        # The wallets' total (the metrics, at an interval): every wallet's account read.
        wallet_totals=sql(
            f"SELECT {whole('coalesce(sum(credits_posted - debits_posted), 0)')} AS posted, "
            f"{whole('coalesce(sum(credits_pending - debits_pending), 0)')} AS pending "
            "FROM ledger_account WHERE substr(name, 1, 7) = 'wallet:'"
        ),
        # `switch ledger balance`: each account, the customers' summed per kind.
        balances=sql(
            "SELECT account, unit, count(*) AS accounts, "
            + ", ".join(f"{whole(f'sum({column})')} AS {column}" for column in sums)
            + f" FROM (SELECT {_grouped_name()} AS account, unit, "
            + ", ".join(sums)
            + " FROM ledger_account) AS a GROUP BY account, unit ORDER BY account, unit"
        ),
        balance_of=sql(
            "SELECT name AS account, unit, 1 AS accounts, "
            + ", ".join(sums)
            + " FROM ledger_account WHERE name = ?"
        ),
        drifted_accounts=sql(
            f"WITH sums AS ({recomputed}) SELECT a.name FROM ledger_account a "
            "LEFT JOIN sums s ON s.account = a.name "
            "WHERE a.debits_pending != coalesce(s.dq, 0) OR a.debits_posted != coalesce(s.dp, 0)"
            " OR a.credits_pending != coalesce(s.cq, 0) OR a.credits_posted != coalesce(s.cp, 0)"
            " ORDER BY a.name"
        ),
        drifted_movements=sql(
            "SELECT a.name FROM ledger_account a LEFT JOIN (SELECT account, sum(amount) AS moved "
            "FROM ledger_movement GROUP BY account) m ON m.account = a.name "
            "WHERE a.credits_posted - a.debits_posted != coalesce(m.moved, 0) ORDER BY a.name"
        ),
        over_cap=sql(
            "SELECT name FROM ledger_account WHERE debit_cap IS NOT NULL "
            "AND credits_posted - debits_posted - debits_pending + debit_cap < 0"
        ),
        movements=sql(
            "SELECT id, amount, balance_after, kind, rrn, merchant_id, at FROM ledger_movement "
            "WHERE account = ? ORDER BY id DESC LIMIT ?"
        ),
        movements_before=sql(
            "SELECT id, amount, balance_after, kind, rrn, merchant_id, at FROM ledger_movement "
            "WHERE account = ? AND id < ? ORDER BY id DESC LIMIT ?"
        ),
        lock_wallet=sql(
            f"SELECT customer_id, app, class, opened FROM wallet WHERE customer_id = ?{lock}"
        ),
        read_wallet=sql("SELECT customer_id, app, class, opened FROM wallet WHERE customer_id = ?"),
        insert_wallet=sql(
            "INSERT INTO wallet (customer_id, app, class, opened, opened_at) VALUES (?, ?, ?, ?, ?)"
        ),
        set_class=sql("UPDATE wallet SET class = ? WHERE customer_id = ?"),
        usage=sql(
            "SELECT "
            + ", ".join(
                f"{whole(f'coalesce(sum(CASE WHEN {when} THEN amount END), 0)')} AS {name}"
                for name, when in (
                    ("since_opening", "in_class = :t"),
                    ("this_year", "in_class = :t AND year = :year"),
                    ("today", "daily = :t AND local_date = :today"),
                    ("static_today", "static = :t AND local_date = :today"),
                )
            )
            + " FROM wallet_count WHERE customer_id = :customer AND cancelled = :f"
            " AND (:all_years = :t OR year = :year)"
        ),
        insert_count=sql(
            "INSERT INTO wallet_count (principal, request_id, leg, customer_id, local_date, year,"
            " amount, in_class, daily, static) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (principal, request_id, leg) DO NOTHING"
        ),
        cancel_count=sql(
            "UPDATE wallet_count SET cancelled = ? "
            "WHERE principal = ? AND request_id = ? AND leg = ?"
        ),
        bound=sql(
            "SELECT account, account_name, bank_code FROM wallet_bound WHERE customer_id = ? "
            "ORDER BY bound_at, account, bank_code"
        ),
        bind=sql(
            "INSERT INTO wallet_bound (customer_id, account, bank_code, account_name, bound_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (customer_id, account, bank_code) DO NOTHING"
        ),
        unbind=sql(
            "DELETE FROM wallet_bound WHERE customer_id = ? AND account = ? AND bank_code = ?"
        ),
        insert_order=sql(
            "INSERT INTO wallet_order (principal, request_id, kind, customer_id, rrn, amount, "
            "bank, account, account_name, bank_code, business_date, state, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?) "
            "ON CONFLICT (principal, request_id) DO NOTHING"
        ),
        end_order=sql(
            "UPDATE wallet_order SET state = ?, updated_at = ? "
            "WHERE principal = ? AND request_id = ? AND state = 'pending'"
        ),
        withdrawals=sql(
            "SELECT business_date, rrn, customer_id, bank_code, account, account_name, amount "
            "FROM wallet_order WHERE business_date = ? AND kind = 'withdraw' "
            "AND state = 'approved' ORDER BY rrn"
        ),
        insert_qr=sql(
            "INSERT INTO qr_code (qr_id, merchant_id, kind, amount, order_id, online_id, "
            "payload, created_at, expires_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'open')"
        ),
        lock_qr=sql(
            "SELECT qr_id, merchant_id, kind, amount, order_id, online_id, payload, created_at, "
            f"expires_at, state, paying FROM qr_code WHERE qr_id = ?{lock}"
        ),
        read_qr=sql(
            "SELECT qr_id, merchant_id, kind, amount, order_id, online_id, payload, created_at, "
            "expires_at, state, paying FROM qr_code WHERE qr_id = ?"
        ),
        qr_by_online_id=sql("SELECT qr_id FROM qr_code WHERE merchant_id = ? AND online_id = ?"),
        set_qr_state=sql("UPDATE qr_code SET state = ?, paying = ? WHERE qr_id = ? AND state = ?"),
        qr_by_paying=sql("SELECT qr_id FROM qr_code WHERE paying = ? AND state = 'paying'"),
        insert_qr_payment=sql(
            "INSERT INTO qr_payment (principal, request_id, qr_id, rrn, amount, at, state) "
            "VALUES (?, ?, ?, ?, ?, ?, 'pending') ON CONFLICT (principal, request_id) DO NOTHING"
        ),
        end_qr_payment=sql(
            "UPDATE qr_payment SET state = ? WHERE principal = ? AND request_id = ? "
            "AND state = 'pending'"
        ),
        qr_payments=sql(
            "SELECT rrn, amount, at FROM qr_payment WHERE qr_id = ? AND state = 'approved' "
            "ORDER BY at DESC LIMIT ?"
        ),
        set_transfer_rrn=sql(
            "UPDATE ledger_transfer SET rrn = ? WHERE principal = ? AND request_id = ? "
            "AND leg = ? AND state = 'pending'"
        ),
        set_order_rrn=sql(
            "UPDATE wallet_order SET rrn = ? WHERE principal = ? AND request_id = ? "
            "AND state = 'pending'"
        ),
        insert_paycode=sql(
            "INSERT INTO paycode (code, customer_id, funding, verification, issued_at, "
            "expires_at, state, instalments) VALUES (?, ?, ?, ?, ?, ?, 'open', ?) "
            "ON CONFLICT (code) DO NOTHING"
        ),
        open_paycodes=sql(
            "SELECT code FROM paycode WHERE customer_id = ? AND state = 'open' "
            "AND expires_at > ? ORDER BY issued_at, code"
        ),
        cancel_paycode=sql(
            "UPDATE paycode SET state = 'cancelled' WHERE code = ? AND state = 'open'"
        ),
        lock_paycode=sql(
            "SELECT code, customer_id, funding, verification, issued_at, expires_at, state, "
            f"instalments FROM paycode WHERE code = ?{lock}"
        ),
        use_paycode=sql("UPDATE paycode SET state = 'used' WHERE code = ? AND state = 'open'"),
        # A scanned code taken, if open and not expired and its terminal has fewer
        # probes in the window than the limit: its row as it is now (used).
        take_paycode=sql(
            "UPDATE paycode SET state = 'used' WHERE code = ? AND state = 'open' "
            "AND expires_at > ? AND (SELECT count(*) FROM paycode_probe "
            "WHERE terminal = ? AND at > ?) < ? RETURNING code, customer_id, funding, "
            "verification, issued_at, expires_at, state, instalments"
        ),
        probes=sql("SELECT count(*) AS n FROM paycode_probe WHERE terminal = ? AND at > ?"),
        insert_probe=sql("INSERT INTO paycode_probe (terminal, at) VALUES (?, ?)"),
        purge_paycodes=sql("DELETE FROM paycode WHERE issued_at < ?"),
        purge_probes=sql("DELETE FROM paycode_probe WHERE at < ?"),
    )
