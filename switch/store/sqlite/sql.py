"""The SQL of the SQLite journal, over the schema in ``schema.py``: the statements each
change of the port writes (which, in which order, is ``switch/store/writes.py``'s), the
questions (``switch/store/questions.py``'s) and the settlement store's statements
(``switch/store/settlement_sql.py``'s) in SQLite's :data:`DIALECT`, and the one
question it answers its own way."""

from __future__ import annotations

from switch.store import writes
from switch.store.dialect import Dialect
from switch.store.port import Change, DueReversal
from switch.store.questions import Select, due, questions
from switch.store.rows import EVENTS_COLUMN, TXN_COLUMNS
from switch.store.stip_claim import claim_statements
from switch.store.writes import Statements, Write

DIALECT = Dialect(
    positional="?",
    named=":{}",
    text="TEXT",
    integer="INTEGER",
    real="REAL",
    flag="INTEGER",
    row_id="INTEGER PRIMARY KEY",
    true="1",
    false="0",
    journal="j.",
    ledger="l.",
    temp_table="CREATE TEMP TABLE {name} ({columns})",
    temp_index="CREATE INDEX temp.{name} ON {table} {definition}",
    drop_temp_before="DROP TABLE IF EXISTS temp.{}",
    drop_temp_after="DROP TABLE temp.{}",
    cross_join="CROSS JOIN",
    least="min",
    greatest="max",
    any_of="max",
    count_if="sum({})",
    whole="{}",
    as_text="{}",
    day_before="date({}, '-1 day')",
    days_between="julianday({0}) - julianday({1})",
    newest_first="created_at DESC",
    oldest_first="created_at",
)
"""What SQLite spells its own way (``switch/store/dialect.py``)."""

_TXN_SELECT = ", ".join(TXN_COLUMNS)

# The row's history (its events) is written with it: rows.EVENTS_COLUMN.
_INSERT_TXN = (
    f"INSERT INTO txn ({_TXN_SELECT}, {EVENTS_COLUMN}) "
    f"VALUES ({', '.join('?' * (len(TXN_COLUMNS) + 1))})"
)
_UPDATE_TXN = (
    "UPDATE txn SET state = ?, code = ?, auth_code = ?, balance = ?, refunded = ?, "
    "voided = ?, reversed = ?, hold_state = ?, updated_at = ?, "
    "events = coalesce(events, '') || ? WHERE rrn = ?"
)
_MOVE_HOLD = (
    "UPDATE txn SET hold_state = ?, updated_at = ?, "
    "events = coalesce(events, '') || ? WHERE rrn = ?"
)
_MARK_RISK = (
    "UPDATE txn SET customer_id = ?, funding = ?, risk_version = ?, risk_rule = ?, "
    "risk_review = ?, risk_shadow = ?, updated_at = ? WHERE rrn = ?"
)
_INSERT_SAF = (
    "INSERT OR IGNORE INTO saf (rrn, bank, reason, state, next_attempt_at, created_at, "
    "updated_at) VALUES (?, ?, ?, 'pending', ?, ?, ?)"
)
_UPDATE_SAF = (
    "UPDATE saf SET state = ?, attempts = ?, next_attempt_at = ?, last_result = ?, "
    "updated_at = ? WHERE id = ?"
)
_PUT_IDEMPOTENCY = (
    "INSERT OR REPLACE INTO idempotency (merchant_id, online_id, fingerprint, response, "
    "created_at) VALUES (?, ?, ?, ?, ?)"
)
_PURGE_IDEMPOTENCY = "DELETE FROM idempotency WHERE created_at < ?"
_PUT_BATCH_SETTLEMENT = (
    "INSERT OR REPLACE INTO batch_settlement (terminal_id, merchant_id, batch, "
    "terminal_totals, switch_totals, result, business_date, rrn, upload_count, settled_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)"
)
_CLEAR_BATCH_UPLOAD = (
    "DELETE FROM batch_upload WHERE terminal_id = ? AND merchant_id = ? AND batch = ?"
)
_PUT_BATCH_UPLOAD = (
    "INSERT OR REPLACE INTO batch_upload (terminal_id, merchant_id, batch, kind, stan, "
    "amount, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_END_BATCH_UPLOAD = (
    "UPDATE batch_settlement SET upload_count = ? "
    "WHERE terminal_id = ? AND merchant_id = ? AND batch = ?"
)

_INSERT_ADVICE = (
    "INSERT OR IGNORE INTO advice (rrn, bank, reason, state, next_attempt_at, created_at, "
    "updated_at, local_time, entry_mode, condition_code, mcc) "
    "VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_ADVICE = (
    "UPDATE advice SET state = ?, attempts = ?, next_attempt_at = ?, last_result = ?, "
    "accepted_date = coalesce(?, accepted_date), updated_at = ? WHERE id = ?"
)
_TXN_ADVICE = (
    "UPDATE txn SET stand_in = coalesce(?, stand_in), advice_state = ?, "
    "bank_mti = coalesce(?, bank_mti), bank_stan = coalesce(?, bank_stan), "
    "transmission = coalesce(?, transmission), updated_at = ?, "
    "events = coalesce(events, '') || ? WHERE rrn = ?"
)

_STIP_CLAIM = claim_statements(DIALECT)


_STATEMENTS = Statements(
    insert_txn=_INSERT_TXN,
    insert_txn_once=_INSERT_TXN.replace("INSERT", "INSERT OR IGNORE", 1),
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
    flag=int,
)


def writes_of(change: Change) -> tuple[Write, ...]:
    """The statements one change writes."""
    return writes.writes_of(change, _STATEMENTS)


# -- the switch's questions (``switch/store/questions.py``) ---------------------------

QUESTIONS = questions(DIALECT)


def due_reversals(bank: str, at: float, limit: int) -> Select[list[DueReversal]]:
    """Pending reversals of ``bank`` due at ``at``, the longest due first: one process
    journals on the file, so they are its own without a claim."""
    return Select(_DUE_REVERSALS, (bank, at, limit), due)


_DUE_REVERSALS = (
    f"SELECT saf.id AS saf_id, saf.attempts AS saf_attempts, "
    f"{', '.join('txn.' + column for column in TXN_COLUMNS)} "
    "FROM saf JOIN txn ON txn.rrn = saf.rrn "
    "WHERE saf.bank = ? AND saf.state = 'pending' AND saf.next_attempt_at <= ? "
    "ORDER BY saf.next_attempt_at LIMIT ?"
)
