"""The stand-in caps claimed in the journal (risk.md, "Stand-in processing (STIP)"),
written once for both engines: on a journal several workers share, a stood-in
approval's commit takes its bank's ``stip_cap`` row (an upsert: the row lock holds the
bank's other stand-ins, at any worker, until this commit ends) and then sets the row's
``ok`` to whether the card's standing stood-in sales on its local date and the bank's
pending amount, as the journal holds them with this one, are within the caps. The
table's CHECK refuses ``ok`` false, so a commit that would exceed a cap fails on the
server (``STIP_CAP_CONSTRAINT``) and nothing of it is written; the engine then fails
that caller alone (``port.StandInCapTaken``), whose machine answers 91. Each statement
of a READ COMMITTED transaction reads what was committed when it starts, so the check,
run once the row is held, sees every other stand-in of the bank that committed first.
"""

from __future__ import annotations

from typing import Final

from switch.store.dialect import Dialect

STIP_CAP_CONSTRAINT: Final = "stip_cap_within"
"""The CHECK a claim over a cap breaks: how an engine tells it from other failures."""
RECENT_S: Final = 2 * 86400.0
"""How far back (by the advice's creation) a card's stood-in sales on a local date are
looked for: a local date is within a day of when its sale was stood in."""


def stip_claim_migration(d: Dialect) -> str:
    """The table and the index the claim reads by (advices of a bank by age)."""
    return f"""
    CREATE TABLE stip_cap (                  -- one a bank: the claim's row lock
        bank {d.text} PRIMARY KEY,
        ok {d.flag} NOT NULL,
        at {d.real} NOT NULL,
        CONSTRAINT {STIP_CAP_CONSTRAINT} CHECK (ok)
    );
    CREATE INDEX advice_by_bank_age ON advice (bank, created_at);
    """


def claim_statements(d: Dialect) -> tuple[str, str]:
    """(take the bank's row: bank, at; check the caps: card cap fen, card count, card
    count, the sale's RRN, bank, since, pending cap fen, bank, at, bank)."""
    take = d.sql(
        f"INSERT INTO stip_cap (bank, ok, at) VALUES (?, {d.true}, ?) "
        "ON CONFLICT (bank) DO UPDATE SET at = excluded.at"
    )
    check = d.sql(
        "UPDATE stip_cap SET ok = ("
        " SELECT coalesce(sum(t.amount), 0) <= ? AND (? = 0 OR count(*) <= ?)"
        " FROM advice a JOIN txn t ON t.rrn = a.rrn JOIN txn s ON s.rrn = ?"
        " WHERE a.bank = ? AND a.created_at >= ? AND t.pan_hmac = s.pan_hmac"
        " AND t.local_date = s.local_date AND a.state <> 'cancelled'"
        " AND NOT t.voided AND NOT t.reversed"
        ") AND ("
        " SELECT coalesce(sum(t.amount), 0) <= ?"
        " FROM advice a JOIN txn t ON t.rrn = a.rrn"
        " WHERE a.bank = ? AND a.state IN ('queued', 'sent', 'manual')"
        "), at = ? WHERE bank = ?"
    )
    return take, check
