"""The SQL of settlement's corrections of repayments by card (credit.md, "Repayment";
settlement.md, "Merchants"), written once for both engines: each repayment by card the
bank approved, with how the book allocated it (JSON), so that settlement can undo it
and book it again at the bank's amount."""

from __future__ import annotations

import msgspec

from switch.store.dialect import Dialect


def own_migrations(d: Dialect) -> tuple[str, ...]:
    t, i, r = d.text, d.integer, d.real
    return (
        f"""
    CREATE TABLE credit_card_repay (
        rrn {t} PRIMARY KEY,               -- the card sale's
        customer_id {t} NOT NULL,
        bank {t} NOT NULL,
        amount_fen {i} NOT NULL,           -- what the credit line took
        wallet_fen {i} NOT NULL,           -- what went on to the wallet (no credit balance)
        allocation {t},                    -- JSON: the book's Allocation; null: nothing taken
        state {t} NOT NULL CHECK (state IN ('standing', 'undone', 'rebooked')),
        at {r} NOT NULL
    );
    """,
    )


class OwnSql(msgspec.Struct, frozen=True, kw_only=True):
    insert_repay: str
    lock_repay: str
    end_repay: str


def own_sql(d: Dialect, *, lock: str) -> OwnSql:
    sql = d.sql
    columns = "rrn, customer_id, bank, amount_fen, wallet_fen, allocation, state, at"
    return OwnSql(
        insert_repay=sql(
            f"INSERT INTO credit_card_repay ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (rrn) DO NOTHING"
        ),
        lock_repay=sql(f"SELECT {columns} FROM credit_card_repay WHERE rrn = ?{lock}"),
        end_repay=sql("UPDATE credit_card_repay SET state = ?, at = ? WHERE rrn = ?"),
    )
