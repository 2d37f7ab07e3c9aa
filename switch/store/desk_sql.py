"""The app desk's kept results (online.md's idempotency for the requests of
``switch/net/app_desk.py``), beside the ledger's tables and written once for both
engines: a state-changing request's result is kept in the same transaction as what it
changed, so a repeat of its ``id`` finds either both or neither."""

from __future__ import annotations

import msgspec

from switch.store.dialect import Dialect


def desk_migrations(d: Dialect) -> tuple[str, ...]:
    t, r = d.text, d.real
    return (
        f"""
    CREATE TABLE desk_result (
        principal {t} NOT NULL,            -- app:<name> or merchant:<id>
        request_id {t} NOT NULL,
        fingerprint {t} NOT NULL,          -- hex: the keyed digest of the request's content
        response {t} NOT NULL,             -- hex: the result's MessagePack body
        at {r} NOT NULL,
        PRIMARY KEY (principal, request_id)
    );
    CREATE INDEX desk_result_by_age ON desk_result (at);
    CREATE TABLE withdrawals_file (          -- the business dates whose file took its rows
        business_date {t} PRIMARY KEY,
        at {r} NOT NULL
    );
    CREATE INDEX ledger_transfer_filed ON ledger_transfer (request_id)
        WHERE leg = 'withdrawals_file';
    """,
    )


class DeskSql(msgspec.Struct, frozen=True, kw_only=True):
    read_result: str
    lock_result: str
    insert_result: str
    purge_results: str
    unfiled_withdrawals: str
    filed_withdrawals: str
    file_taken: str
    take_file: str


FILE_LEG = "withdrawals_file"
"""The leg of a withdrawal's row posted by a withdrawals file (``withdrawals_payable`` to
``payouts``), keyed (file's business date, ``withdraw:<rrn>``, this leg)."""


def desk_sql(d: Dialect, *, lock: str) -> DeskSql:
    sql = d.sql
    columns = "fingerprint, response, at FROM desk_result WHERE principal = ? AND request_id = ?"
    return DeskSql(
        read_result=sql(f"SELECT {columns}"),
        lock_result=sql(f"SELECT {columns}{lock}"),
        insert_result=sql(
            "INSERT INTO desk_result (principal, request_id, fingerprint, response, at) "
            "VALUES (?, ?, ?, ?, ?)"
        ),
        purge_results=sql("DELETE FROM desk_result WHERE at < ?"),
        unfiled_withdrawals=sql(
            "SELECT o.rrn, o.customer_id, o.bank_code, o.account, o.account_name, o.amount "
            "FROM wallet_order o WHERE o.kind = 'withdraw' AND o.state = 'approved' "
            "AND o.business_date <= ? AND o.business_date >= ? "
            "AND NOT EXISTS (SELECT 1 FROM ledger_transfer t "
            f"WHERE t.request_id = 'withdraw:' || o.rrn AND t.leg = '{FILE_LEG}') "
            "ORDER BY o.rrn"
        ),
        filed_withdrawals=sql(
            "SELECT o.rrn, o.customer_id, o.bank_code, o.account, o.account_name, o.amount "
            "FROM wallet_order o JOIN ledger_transfer t ON t.request_id = 'withdraw:' || o.rrn "
            f"AND t.leg = '{FILE_LEG}' AND t.principal = ? "
            "WHERE o.kind = 'withdraw' AND o.state = 'approved' ORDER BY o.rrn"
        ),
        file_taken=sql(f"SELECT at FROM withdrawals_file WHERE business_date = ?{lock}"),
        take_file=sql("INSERT INTO withdrawals_file (business_date, at) VALUES (?, ?)"),
    )
