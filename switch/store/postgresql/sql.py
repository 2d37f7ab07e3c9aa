"""The SQL of the PostgreSQL journal, over the schema in ``schema.py``: the statements
each change of the port writes, the questions (``switch/store/questions.py``'s) and
the settlement store's statements (``switch/store/settlement_sql.py``'s) in
PostgreSQL's :data:`DIALECT`, and the questions only a journal of several workers asks
(who left what in doubt, claims on due reversals).

The write statements mirror the SQLite engine's (``switch/store/sqlite/sql.py``) one for one
(which a change writes, in which ranks, is ``switch/store/writes.py``'s); SQLite's
``INSERT OR IGNORE`` / ``OR REPLACE`` are ``ON CONFLICT DO NOTHING`` / ``DO UPDATE`` on
the same keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import psycopg
from psycopg.rows import DictRow

from switch.core.book import TxnRecord
from switch.store import writes
from switch.store.dialect import Dialect
from switch.store.port import Change, DueAdvice, DueReversal
from switch.store.questions import (
    TXN_SELECT,
    Row,
    Select,
    advice_head_of,
    due,
    questions,
    records,
)
from switch.store.rows import EVENTS_COLUMN, TXN_COLUMNS
from switch.store.stip_claim import claim_statements
from switch.store.writes import Statements, Write

Connection: TypeAlias = psycopg.Connection[DictRow]
Query = Callable[[Connection], Any]


DIALECT = Dialect(
    positional="%s",
    named="%({})s",
    # Every text compares byte by byte, as SQLite's does, whatever the database's locale.
    text='TEXT COLLATE "C"',
    integer="BIGINT",
    real="DOUBLE PRECISION",
    flag="BOOLEAN",
    row_id="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    true="TRUE",
    false="FALSE",
    journal="",
    ledger="",
    temp_table="CREATE TEMP TABLE {name} ({columns}) ON COMMIT DROP",
    temp_index="CREATE INDEX {name} ON {table} {definition}",
    drop_temp_before="",
    drop_temp_after="",
    cross_join="JOIN",
    least="LEAST",
    greatest="GREATEST",
    any_of="bool_or",
    count_if="count(*) FILTER (WHERE {})",
    whole="{}::bigint",
    as_text="{}::text",
    day_before="to_char({}::date - 1, 'YYYY-MM-DD')",
    days_between="{0}::date - {1}::date",
    newest_first="created_at DESC, seq DESC",
    oldest_first="created_at, seq",
)
"""What PostgreSQL spells its own way (``switch/store/dialect.py``)."""


# The worker that wrote a transaction is PostgreSQL's alone (one SQLite process has one).
# The row's history (its events) is written with it: rows.EVENTS_COLUMN.
_INSERT_TXN = (
    f"INSERT INTO txn ({TXN_SELECT}, {EVENTS_COLUMN}, worker) "
    f"VALUES ({', '.join(['%s'] * (len(TXN_COLUMNS) + 2))})"
)
_INSERT_TXN_ONCE = f"{_INSERT_TXN} ON CONFLICT (rrn) DO NOTHING"
_UPDATE_TXN = (
    "UPDATE txn SET state = %s, code = %s, auth_code = %s, balance = %s, refunded = %s, "
    "voided = %s, reversed = %s, hold_state = %s, updated_at = %s, "
    "events = coalesce(events, '') || %s WHERE rrn = %s"
)
_MOVE_HOLD = (
    "UPDATE txn SET hold_state = %s, updated_at = %s, "
    "events = coalesce(events, '') || %s WHERE rrn = %s"
)
_MARK_RISK = (
    "UPDATE txn SET customer_id = %s, funding = %s, risk_version = %s, risk_rule = %s, "
    "risk_review = %s, risk_shadow = %s, updated_at = %s WHERE rrn = %s"
)
_INSERT_SAF = (
    "INSERT INTO saf (rrn, bank, reason, state, next_attempt_at, created_at, updated_at) "
    "VALUES (%s, %s, %s, 'pending', %s, %s, %s) ON CONFLICT (rrn) DO NOTHING"
)
# An attempt's result is kept only if it is its claimer's (or the row was never
# claimed): a claimer whose lease ran out, and whose row another process claimed since,
# changes nothing. The claim stays named (its lease ended) so that a late result of an
# earlier claimer is still refused once the later one has recorded its own.
_UPDATE_SAF = (
    "UPDATE saf SET state = %s, attempts = %s, next_attempt_at = %s, last_result = %s, "
    "updated_at = %s, claimed_until = NULL "
    "WHERE id = %s AND (claimed_by IS NULL OR claimed_by = %s)"
)
_PUT_IDEMPOTENCY = (
    "INSERT INTO idempotency (merchant_id, online_id, fingerprint, response, created_at) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (merchant_id, online_id) DO UPDATE SET "
    "fingerprint = EXCLUDED.fingerprint, response = EXCLUDED.response, "
    "created_at = EXCLUDED.created_at"
)
_PURGE_IDEMPOTENCY = "DELETE FROM idempotency WHERE created_at < %s"
_PUT_BATCH_SETTLEMENT = (
    "INSERT INTO batch_settlement (terminal_id, merchant_id, batch, terminal_totals, "
    "switch_totals, result, business_date, rrn, upload_count, settled_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, NULL, %s) "
    "ON CONFLICT (terminal_id, merchant_id, batch) DO UPDATE SET "
    "terminal_totals = EXCLUDED.terminal_totals, switch_totals = EXCLUDED.switch_totals, "
    "result = EXCLUDED.result, business_date = EXCLUDED.business_date, rrn = EXCLUDED.rrn, "
    "upload_count = NULL, settled_at = EXCLUDED.settled_at"
)
_CLEAR_BATCH_UPLOAD = (
    "DELETE FROM batch_upload WHERE terminal_id = %s AND merchant_id = %s AND batch = %s"
)
_PUT_BATCH_UPLOAD = (
    "INSERT INTO batch_upload (terminal_id, merchant_id, batch, kind, stan, amount, "
    "received_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (terminal_id, merchant_id, batch, kind, stan) DO UPDATE SET "
    "amount = EXCLUDED.amount, received_at = EXCLUDED.received_at"
)
_END_BATCH_UPLOAD = (
    "UPDATE batch_settlement SET upload_count = %s "
    "WHERE terminal_id = %s AND merchant_id = %s AND batch = %s"
)

_INSERT_ADVICE = (
    "INSERT INTO advice (rrn, bank, reason, state, next_attempt_at, created_at, updated_at, "
    "local_time, entry_mode, condition_code, mcc) "
    "VALUES (%s, %s, %s, 'queued', %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (rrn) DO NOTHING"
)
_UPDATE_ADVICE = (
    "UPDATE advice SET state = %s, attempts = %s, next_attempt_at = %s, last_result = %s, "
    "accepted_date = coalesce(%s, accepted_date), updated_at = %s WHERE id = %s"
)
_TXN_ADVICE = (
    "UPDATE txn SET stand_in = coalesce(%s, stand_in), advice_state = %s, "
    "bank_mti = coalesce(%s, bank_mti), bank_stan = coalesce(%s, bank_stan), "
    "transmission = coalesce(%s, transmission), updated_at = %s, "
    "events = coalesce(events, '') || %s WHERE rrn = %s"
)

_STIP_CLAIM = claim_statements(DIALECT)


_STATEMENTS = Statements(
    insert_txn=_INSERT_TXN,
    insert_txn_once=_INSERT_TXN_ONCE,
    update_txn=_UPDATE_TXN,
    move_hold=_MOVE_HOLD,
    mark_risk=_MARK_RISK,
    insert_saf=_INSERT_SAF,
    update_saf=_UPDATE_SAF,
    put_idempotency=_PUT_IDEMPOTENCY,
    purge_idempotency=_PURGE_IDEMPOTENCY,
    put_batch_settlement=_PUT_BATCH_SETTLEMENT,
    clear_batch_upload=_CLEAR_BATCH_UPLOAD,
    put_batch_upload=_PUT_BATCH_UPLOAD,
    end_batch_upload=_END_BATCH_UPLOAD,
    insert_advice=_INSERT_ADVICE,
    update_advice=_UPDATE_ADVICE,
    txn_advice=_TXN_ADVICE,
    take_stip_cap=_STIP_CLAIM[0],
    check_stip_cap=_STIP_CLAIM[1],
    flag=bool,
)


def writes_of(change: Change, *, claimant: str = "", worker: int = 0) -> tuple[Write, ...]:
    """The statements one change writes; ``claimant`` names the process whose claims
    (``due_reversals``) its attempts' results are, ``worker`` the worker it is."""
    return writes.writes_of(change, _STATEMENTS, txn_extra=(worker,), attempt_extra=(claimant,))


# -- the switch's questions (``switch/store/questions.py``) ---------------------------

QUESTIONS = questions(DIALECT, own="AND worker = ? ", mine="(worker = ?)")
"""The shared questions; a worker's last STAN to a bank is read from its own rows: each
worker has a block of STANs (StanSequence), and another worker's newer one would leave
a restarted worker starting its block again."""


def in_doubt_workers(connection: Connection) -> list[int]:
    """The workers that left transactions in doubt."""
    rows = connection.execute(
        "SELECT DISTINCT worker FROM txn WHERE state = 'sending' ORDER BY worker"
    ).fetchall()
    return [row["worker"] for row in rows]


def records_in_doubt_of(workers: list[int]) -> Select[list[TxnRecord]]:
    return Select(
        f"SELECT {TXN_SELECT} FROM txn WHERE state = 'sending' AND worker = ANY(%s) "
        "ORDER BY created_at, seq",
        (workers,),
        records,
    )


_SAF_TXN_SELECT = ", ".join("txn." + column for column in TXN_COLUMNS)
# Positional parameters (the loop's reads send the server's own $1, $2...): bank, at,
# at, claimant, limit, claimant, until.
_CLAIM_DUE = f"""
WITH due AS (
    SELECT id FROM saf
    WHERE bank = %s AND state = 'pending' AND next_attempt_at <= %s
      AND (claimed_until IS NULL OR claimed_until <= %s OR claimed_by = %s)
    ORDER BY next_attempt_at, id LIMIT %s
    FOR UPDATE OF saf SKIP LOCKED
)
UPDATE saf SET claimed_by = %s, claimed_until = %s
FROM due, txn
WHERE saf.id = due.id AND txn.rrn = saf.rrn
RETURNING saf.id AS saf_id, saf.attempts AS saf_attempts,
    saf.next_attempt_at AS saf_next_attempt_at,
    {_SAF_TXN_SELECT}
"""


_ADVICE_COLUMNS = (
    "advice.id AS advice_id, advice.state AS advice_row_state, "
    "advice.attempts AS advice_attempts, advice.next_attempt_at AS advice_next, "
    "advice.local_time AS advice_local_time, advice.entry_mode AS advice_entry_mode, "
    "advice.condition_code AS advice_condition_code, advice.mcc AS advice_mcc"
)
# One sender of a bank's advices across workers (risk.md: one at a time, in order):
# the head is claimed by a conditional update, as a due reversal is; another worker's
# live claim hands nothing out. Parameters: bank, claimant, until, at, claimant.
_CLAIM_ADVICE_HEAD = f"""
WITH head AS (
    SELECT id FROM advice
    WHERE bank = %s AND state IN ('queued', 'sent')
    ORDER BY id LIMIT 1
    FOR UPDATE OF advice
)
UPDATE advice SET claimed_by = %s, claimed_until = %s
FROM head, txn
WHERE advice.id = head.id AND txn.rrn = advice.rrn
  AND (advice.claimed_until IS NULL OR advice.claimed_until <= %s OR advice.claimed_by = %s)
RETURNING {_ADVICE_COLUMNS}, {_SAF_TXN_SELECT}
"""
# The head without claiming it (its bank not ready here): none while another worker's
# claim on it is live. Parameters: bank, at, claimant.
_PEEK_ADVICE_HEAD = f"""
SELECT {_ADVICE_COLUMNS}, {_SAF_TXN_SELECT}
FROM advice JOIN txn ON txn.rrn = advice.rrn
WHERE advice.id = (
    SELECT id FROM advice WHERE bank = %s AND state IN ('queued', 'sent')
    ORDER BY id LIMIT 1
)
  AND (advice.claimed_until IS NULL OR advice.claimed_until <= %s OR advice.claimed_by = %s)
"""


def advice_head(
    bank: str, at: float, *, claim: bool, claimant: str, lease_s: float
) -> Select[DueAdvice | None]:
    """The bank's next advice, claimed for ``claimant`` until ``at + lease_s`` when
    ``claim``; None while another process's claim on it is live."""
    if claim:
        return Select(
            _CLAIM_ADVICE_HEAD, (bank, claimant, at + lease_s, at, claimant), advice_head_of
        )
    return Select(_PEEK_ADVICE_HEAD, (bank, at, claimant), advice_head_of)


def _due(rows: list[Row]) -> list[DueReversal]:
    rows.sort(key=lambda row: (row["saf_next_attempt_at"], row["saf_id"]))
    return due(rows)


def due_reversals(
    bank: str, at: float, limit: int, *, claimant: str, lease_s: float
) -> Select[list[DueReversal]]:
    """Claims the bank's due reversals for ``claimant`` until ``at + lease_s``, and
    returns them: those unclaimed, whose claim expired, or already the claimant's. One
    statement, so one short transaction; rows another process is claiming at that
    moment are skipped (``SKIP LOCKED``), never waited for nor handed out twice."""
    parameters = (bank, at, at, claimant, limit, claimant, at + lease_s)
    return Select(_CLAIM_DUE, parameters, _due)
