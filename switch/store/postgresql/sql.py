"""The SQL of the PostgreSQL journal: each change of the port as the statements it
writes, and each question as a query, over the schema in ``schema.py``.

The statements mirror the SQLite engine's (``switch/store/sqlite/sql.py``) one for one
(which a change writes, in which ranks, is ``switch/store/writes.py``'s); SQLite's
``INSERT OR IGNORE`` / ``OR REPLACE`` are ``ON CONFLICT DO NOTHING`` / ``DO UPDATE`` on
the same keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

import psycopg
from psycopg.rows import DictRow

from switch.core.batch import BatchTotals, SettledBatch, UploadRecord
from switch.core.book import TxnRecord
from switch.store import writes
from switch.store.dialect import Dialect
from switch.store.port import (
    Change,
    DueReversal,
    OnlineResult,
    ReversalBacklog,
)
from switch.store.rows import (
    SETTLED_BATCH_COLUMNS,
    record_from_row,
    settled_batch_from_row,
)
from switch.store.sqlite.sql import TXN_COLUMNS
from switch.store.writes import Statements, Write

Connection: TypeAlias = psycopg.Connection[DictRow]
Query = Callable[[Connection], Any]
Answer = TypeVar("Answer")

_TXN_SELECT = ", ".join(TXN_COLUMNS)

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
_INSERT_TXN = (
    f"INSERT INTO txn ({_TXN_SELECT}, worker) "
    f"VALUES ({', '.join(['%s'] * (len(TXN_COLUMNS) + 1))})"
)
_INSERT_TXN_ONCE = f"{_INSERT_TXN} ON CONFLICT (rrn) DO NOTHING"
_INSERT_EVENT = "INSERT INTO txn_event (rrn, at, state, code, detail) VALUES (%s, %s, %s, %s, %s)"
_UPDATE_TXN = (
    "UPDATE txn SET state = %s, code = %s, auth_code = %s, balance = %s, refunded = %s, "
    "voided = %s, reversed = %s, updated_at = %s WHERE rrn = %s"
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


_STATEMENTS = Statements(
    insert_txn=_INSERT_TXN,
    insert_txn_once=_INSERT_TXN_ONCE,
    insert_event=_INSERT_EVENT,
    update_txn=_UPDATE_TXN,
    insert_saf=_INSERT_SAF,
    update_saf=_UPDATE_SAF,
    put_idempotency=_PUT_IDEMPOTENCY,
    purge_idempotency=_PURGE_IDEMPOTENCY,
    put_batch_settlement=_PUT_BATCH_SETTLEMENT,
    clear_batch_upload=_CLEAR_BATCH_UPLOAD,
    put_batch_upload=_PUT_BATCH_UPLOAD,
    end_batch_upload=_END_BATCH_UPLOAD,
    flag=bool,
)


def writes_of(change: Change, *, claimant: str = "", worker: int = 0) -> tuple[Write, ...]:
    """The statements one change writes; ``claimant`` names the process whose claims
    (``due_reversals``) its attempts' results are, ``worker`` the worker it is."""
    return writes.writes_of(change, _STATEMENTS, txn_extra=(worker,), attempt_extra=(claimant,))


# -- the switch's questions ------------------------------------------------------------

Row: TypeAlias = dict[str, Any]
"""A row as every read path gives it: column name to value."""


@dataclass(frozen=True, slots=True)
class Select(Generic[Answer]):
    """A question as one statement (``%s`` placeholders), its parameters, and how its
    rows become the answer. The same for both read paths: called on a connection (a
    worker thread's blocking read, psycopg's ``dict_row`` rows), or its statement sent
    from the event loop (``pipeline.LoopReader``, rows made by psycopg's loaders)."""

    statement: str
    parameters: tuple[Any, ...]
    answer: Callable[[list[Row]], Answer]

    def __call__(self, connection: Connection) -> Answer:
        return self.answer(connection.execute(self.statement, self.parameters).fetchall())


def _first_record(rows: list[Row]) -> TxnRecord | None:
    return record_from_row(rows[0]) if rows else None


def _records(rows: list[Row]) -> list[TxnRecord]:
    return [record_from_row(row) for row in rows]


_BY_RRN = f"SELECT {_TXN_SELECT} FROM txn WHERE rrn = %s"
_BY_ONLINE_ID = (
    f"SELECT {_TXN_SELECT} FROM txn WHERE merchant_id = %s AND online_id = %s "
    "ORDER BY created_at DESC, seq DESC LIMIT 1"
)
_BY_TRACE = (
    f"SELECT {_TXN_SELECT} FROM txn WHERE terminal_id = %s AND merchant_id = %s "
    "AND stan = %s AND batch = %s ORDER BY created_at DESC, seq DESC LIMIT 1"
)


def record_by_rrn(rrn: str) -> Select[TxnRecord | None]:
    return Select(_BY_RRN, (rrn,), _first_record)


def record_by_online_id(merchant_id: str, online_id: str) -> Select[TxnRecord | None]:
    return Select(_BY_ONLINE_ID, (merchant_id, online_id), _first_record)


def record_by_trace(
    terminal_id: str, merchant_id: str, batch: str, stan: str
) -> Select[TxnRecord | None]:
    return Select(_BY_TRACE, (terminal_id, merchant_id, stan, batch), _first_record)


def in_doubt_workers(connection: Connection) -> list[int]:
    """The workers that left transactions in doubt."""
    rows = connection.execute(
        "SELECT DISTINCT worker FROM txn WHERE state = 'sending' ORDER BY worker"
    ).fetchall()
    return [row["worker"] for row in rows]


def records_in_doubt_of(workers: list[int]) -> Select[list[TxnRecord]]:
    return Select(
        f"SELECT {_TXN_SELECT} FROM txn WHERE state = 'sending' AND worker = ANY(%s) "
        "ORDER BY created_at, seq",
        (workers,),
        _records,
    )


records_in_doubt = Select(
    f"SELECT {_TXN_SELECT} FROM txn WHERE state = 'sending' ORDER BY created_at, seq",
    (),
    _records,
)


def _oldest_first(rows: list[Row]) -> list[TxnRecord]:
    return [record_from_row(row) for row in reversed(rows)]


def recent_records(since: float, limit: int) -> Select[list[TxnRecord]]:
    return Select(
        f"SELECT {_TXN_SELECT} FROM txn WHERE created_at >= %s "
        "ORDER BY created_at DESC, seq DESC LIMIT %s",
        (since, limit),
        _oldest_first,
    )


def _sequence_of(rows: list[Row]) -> int:
    highest = rows[0]["highest"]
    return -1 if highest is None else int(highest[4:])


def highest_rrn_sequence(day: str) -> Select[int]:
    # rrn is COLLATE "C": "~" sorts after every digit, as in SQLite.
    return Select(
        "SELECT max(rrn) AS highest FROM txn WHERE rrn >= %s AND rrn < %s",
        (day, f"{day}~"),
        _sequence_of,
    )


def _bank_stan(rows: list[Row]) -> int | None:
    return int(rows[0]["bank_stan"]) if rows else None


def last_bank_stan(bank: str, worker: int) -> Select[int | None]:
    """The worker's own: each worker has a block of STANs (StanSequence), and another
    worker's newer one would leave a restarted worker starting its block again."""
    return Select(
        "SELECT bank_stan FROM txn WHERE bank = %s AND worker = %s "
        "AND bank_stan IS NOT NULL ORDER BY created_at DESC, seq DESC LIMIT 1",
        (bank, worker),
        _bank_stan,
    )


_IDEMPOTENCY_SELECT = "SELECT merchant_id, online_id, fingerprint, response, created_at"


def _online_result(row: Row) -> OnlineResult:
    return OnlineResult(
        merchant_id=row["merchant_id"],
        online_id=row["online_id"],
        fingerprint=bytes(row["fingerprint"]),
        response=bytes(row["response"]),
        created_at=row["created_at"],
    )


def _first_online_result(rows: list[Row]) -> OnlineResult | None:
    return _online_result(rows[0]) if rows else None


def _online_results(rows: list[Row]) -> list[OnlineResult]:
    return [_online_result(row) for row in rows]


_ONLINE_RESULT = (
    f"{_IDEMPOTENCY_SELECT} FROM idempotency WHERE merchant_id = %s AND online_id = %s"
)


def online_result(merchant_id: str, online_id: str) -> Select[OnlineResult | None]:
    return Select(_ONLINE_RESULT, (merchant_id, online_id), _first_online_result)


def online_results_since(since: float) -> Select[list[OnlineResult]]:
    return Select(
        f"{_IDEMPOTENCY_SELECT} FROM idempotency WHERE created_at >= %s ORDER BY created_at",
        (since,),
        _online_results,
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


def _due(rows: list[Row]) -> list[DueReversal]:
    rows.sort(key=lambda row: (row["saf_next_attempt_at"], row["saf_id"]))
    return [
        DueReversal(saf_id=row["saf_id"], attempts=row["saf_attempts"], record=record_from_row(row))
        for row in rows
    ]


def due_reversals(
    bank: str, at: float, limit: int, *, claimant: str, lease_s: float
) -> Select[list[DueReversal]]:
    """Claims the bank's due reversals for ``claimant`` until ``at + lease_s``, and
    returns them: those unclaimed, whose claim expired, or already the claimant's. One
    statement, so one short transaction; rows another process is claiming at that
    moment are skipped (``SKIP LOCKED``), never waited for nor handed out twice."""
    parameters = (bank, at, at, claimant, limit, claimant, at + lease_s)
    return Select(_CLAIM_DUE, parameters, _due)


# As SQLite's: delivered reversals are never purged, so the banks are found by a loose
# index scan (one seek of saf_due a bank) and each bank's undelivered ones by seeks.
_REVERSAL_BACKLOG = """
WITH RECURSIVE banks(bank) AS (
    SELECT min(bank) FROM saf
    UNION ALL
    SELECT (SELECT min(bank) FROM saf WHERE saf.bank > banks.bank) FROM banks
    WHERE banks.bank IS NOT NULL
)
SELECT saf.bank AS bank, saf.state AS state, count(*) AS queued,
    min(saf.created_at) AS oldest
FROM banks JOIN saf ON saf.bank = banks.bank AND saf.state IN ('pending', 'manual')
GROUP BY saf.bank, saf.state
"""


def _backlog(rows: list[Row]) -> list[ReversalBacklog]:
    found: dict[str, tuple[int, int, float]] = {}
    for row in rows:
        bank, oldest = row["bank"], row["oldest"]
        pending, manual, earliest = found.get(bank, (0, 0, oldest))
        if row["state"] == "pending":
            pending = row["queued"]
        else:
            manual = row["queued"]
        found[bank] = (pending, manual, min(earliest, oldest))
    return [
        ReversalBacklog(bank=bank, pending=pending, manual=manual, oldest_created_at=oldest)
        for bank, (pending, manual, oldest) in sorted(found.items())
    ]


reversal_backlog = Select(_REVERSAL_BACKLOG, (), _backlog)


# -- a terminal's batch ------------------------------------------------------------------

# pos-cup.md's rules, as SQLite's: approved sales neither voided nor reversed are the
# batch's debits, approved refunds not reversed its credits.
_BATCH_TOTALS = """
SELECT
    coalesce(sum(CASE WHEN kind = 'sale' THEN amount END), 0) AS debit_fen,
    count(CASE WHEN kind = 'sale' THEN 1 END) AS debit_count,
    coalesce(sum(CASE WHEN kind = 'refund' THEN amount END), 0) AS credit_fen,
    count(CASE WHEN kind = 'refund' THEN 1 END) AS credit_count
FROM txn
WHERE terminal_id = %s AND merchant_id = %s AND batch = %s
    AND channel = 'pos' AND state = 'approved' AND NOT reversed
    AND (kind = 'refund' OR (kind = 'sale' AND NOT voided))
"""


def _totals(rows: list[Row]) -> BatchTotals:
    assert rows, "an aggregate always has a row"
    row = rows[0]
    # sum() of BIGINT is NUMERIC in PostgreSQL: back to whole fen.
    return BatchTotals(
        debit_fen=int(row["debit_fen"]),
        debit_count=row["debit_count"],
        credit_fen=int(row["credit_fen"]),
        credit_count=row["credit_count"],
    )


def batch_totals(terminal_id: str, merchant_id: str, batch: str) -> Select[BatchTotals]:
    return Select(_BATCH_TOTALS, (terminal_id, merchant_id, batch), _totals)


def _settled(rows: list[Row]) -> SettledBatch | None:
    return settled_batch_from_row(rows[0]) if rows else None


def settled_batch(terminal_id: str, merchant_id: str, batch: str) -> Select[SettledBatch | None]:
    return Select(
        f"SELECT {SETTLED_BATCH_COLUMNS} FROM batch_settlement "
        "WHERE terminal_id = %s AND merchant_id = %s AND batch = %s",
        (terminal_id, merchant_id, batch),
        _settled,
    )


def _uploaded(rows: list[Row]) -> list[UploadRecord]:
    return [UploadRecord(kind=row["kind"], stan=row["stan"], amount=row["amount"]) for row in rows]


def batch_upload(terminal_id: str, merchant_id: str, batch: str) -> Select[list[UploadRecord]]:
    return Select(
        "SELECT kind, stan, amount FROM batch_upload "
        "WHERE terminal_id = %s AND merchant_id = %s AND batch = %s ORDER BY kind, stan",
        (terminal_id, merchant_id, batch),
        _uploaded,
    )
