"""The SQL of on-us pre-authorisations' holds (risk.md, "On-us funding"), written once
for both engines: for each pre-authorisation by payment code, whose customer, funding,
tier and instalments it holds for (its code is purged after a day, a hold lasts up to
``expiry_days``) and which transfer holds it now (``leg``: ``hold``, then ``hold2``...
each time a completion's void or reversal holds it again)."""

from __future__ import annotations

import msgspec

from switch.store.dialect import Dialect


def hold_migrations(d: Dialect) -> tuple[str, ...]:
    t, i, r = d.text, d.integer, d.real
    return (
        f"""
    CREATE TABLE onus_hold (
        principal {t} NOT NULL,            -- the pre-authorisation's transfer key
        request_id {t} NOT NULL,
        rrn {t} NOT NULL,
        customer_id {t} NOT NULL,
        funding {t} NOT NULL CHECK (funding IN ('wallet', 'credit')),
        verification {t} NOT NULL,
        instalments {i},                   -- credit.md: the code's plan, bound to it
        amount {i} NOT NULL,               -- held, as approved
        merchant_id {t} NOT NULL,
        leg {t} NOT NULL,                  -- the transfer that holds it now
        generation {i} NOT NULL,
        at {r} NOT NULL,
        PRIMARY KEY (principal, request_id)
    );
    CREATE UNIQUE INDEX onus_hold_by_rrn ON onus_hold (rrn);
    """,
        # The completion that passed its checks last (its transfer key and RRN), and
        # the request that gave it back last (its key): what start-up's recovery ends
        # when a crash came between their journaled answer and their ledger step.
        f"""
    ALTER TABLE onus_hold ADD COLUMN completion_principal {t};
    ALTER TABLE onus_hold ADD COLUMN completion_id {t};
    ALTER TABLE onus_hold ADD COLUMN completion_rrn {t};
    ALTER TABLE onus_hold ADD COLUMN undone_principal {t};
    ALTER TABLE onus_hold ADD COLUMN undone_id {t};
    CREATE INDEX onus_hold_by_completion ON onus_hold (completion_rrn);
    """,
    )


class HoldSql(msgspec.Struct, frozen=True, kw_only=True):
    insert_hold: str
    lock_hold: str
    move_hold: str
    note_completion: str
    note_undone: str
    lock_hold_of_completion: str


COLUMNS = (
    "principal, request_id, rrn, customer_id, funding, verification, instalments, amount, "
    "merchant_id, leg, generation, at"
)
READ = (
    f"{COLUMNS}, completion_principal, completion_id, completion_rrn, undone_principal, "
    "undone_id"
)


def hold_sql(d: Dialect, *, lock: str) -> HoldSql:
    sql = d.sql
    return HoldSql(
        insert_hold=sql(
            f"INSERT INTO onus_hold ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (principal, request_id) DO NOTHING"
        ),
        lock_hold=sql(
            f"SELECT {READ} FROM onus_hold WHERE rrn = ?{lock}"
        ),
        lock_hold_of_completion=sql(
            f"SELECT {READ} FROM onus_hold WHERE completion_rrn = ?{lock}"
        ),
        note_completion=sql(
            "UPDATE onus_hold SET completion_principal = ?, completion_id = ?, "
            "completion_rrn = ? WHERE rrn = ?"
        ),
        note_undone=sql(
            "UPDATE onus_hold SET undone_principal = ?, undone_id = ? WHERE rrn = ?"
        ),
        move_hold=sql(
            "UPDATE onus_hold SET leg = ?, generation = ?, at = ? WHERE rrn = ?"
        ),
    )
