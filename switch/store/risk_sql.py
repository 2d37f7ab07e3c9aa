"""The risk rules' records of the app desk's requests that have no journal row
(risk.md: ``wallet_withdraw``, kind ``withdrawal``; ``credit_convert``, kind
``conversion``), beside the ledger's tables and written once for both engines: each is
written in the same store transaction as the request's step, so it is there exactly
when the step is (docs/design.md, "Risk rules")."""

from __future__ import annotations

import msgspec

from switch.store.dialect import Dialect

EVENT_COLUMNS = (
    "worker", "kind", "channel", "funding", "customer_id", "device_id", "amount",
    "received_at", "outcome", "code", "risk_version", "risk_rule", "risk_review",
    "risk_shadow", "online_id", "rrn", "written_at",
)  # fmt: skip
"""A ``risk_event`` row's columns (``RiskEvent``'s fields) but its ``id``."""


def risk_migrations(d: Dialect) -> tuple[str, ...]:
    t, i, r = d.text, d.integer, d.real
    return (
        f"""
    CREATE TABLE risk_event (
        id {d.row_id},
        worker {i} NOT NULL,               -- the worker slot that judged it
        kind {t} NOT NULL,                 -- risk.md's kind: withdrawal, conversion
        channel {t} NOT NULL,
        funding {t} NOT NULL,
        customer_id {t} NOT NULL,
        device_id {t},
        amount {i} NOT NULL,
        received_at {r} NOT NULL,          -- business time: when its windows count it
        outcome {t} NOT NULL CHECK (outcome IN ('approved', 'declined')),
        code {t},                          -- the answer's response code
        risk_version {t} NOT NULL,
        risk_rule {t},
        risk_review {t},
        risk_shadow {t},
        online_id {t} NOT NULL,            -- the request's id
        rrn {t} NOT NULL,                  -- its RRN, or empty
        written_at {r} NOT NULL            -- wall time, just before its commit
    );
    CREATE INDEX risk_event_by_received ON risk_event (received_at);
    CREATE INDEX risk_event_by_written ON risk_event (written_at);
    """,
    )


class RiskSql(msgspec.Struct, frozen=True, kw_only=True):
    insert_event: str
    events_since: str
    events_written_since: str
    marked_before: str


def risk_sql(d: Dialect) -> RiskSql:
    sql = d.sql
    columns = ", ".join(EVENT_COLUMNS)
    marks = "(risk_rule IS NOT NULL OR risk_review IS NOT NULL OR risk_shadow IS NOT NULL)"
    return RiskSql(
        insert_event=sql(
            f"INSERT INTO risk_event ({columns}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
        ),
        events_since=sql(
            f"SELECT id, {columns} FROM risk_event WHERE received_at >= ? ORDER BY received_at, id"
        ),
        events_written_since=sql(
            f"SELECT id, {columns} FROM risk_event WHERE written_at >= ? ORDER BY written_at, id"
        ),
        marked_before=sql(
            f"SELECT id, {columns} FROM risk_event WHERE received_at < ? AND {marks} "
            "ORDER BY received_at DESC, id DESC LIMIT ?"
        ),
    )
