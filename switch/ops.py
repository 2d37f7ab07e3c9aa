"""Operator commands over the journal: read transactions and the store-and-forward
queue, and put a reversal back in the queue. They open the SQLite file themselves (a
running switch keeps writing meanwhile: WAL lets both work) and print masked card
numbers only, because only masked numbers are stored in the clear."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SHOWN_TXN_COLUMNS = (
    "rrn", "kind", "channel", "request_mti", "terminal_id", "merchant_id", "stan", "batch",
    "local_date", "online_id", "pan_masked", "amount", "currency", "bank", "bank_mti",
    "bank_stan", "transmission", "original_rrn", "state", "code", "auth_code", "refunded",
    "voided", "reversed", "created_at", "updated_at",
)  # fmt: skip
"""Everything but the HMAC, the sealed PAN and the request digest."""

SAF_COLUMNS = (
    "id", "bank", "rrn", "state", "attempts", "next_attempt_at", "last_result", "reason",
    "created_at", "updated_at",
)  # fmt: skip


class OperatorError(Exception):
    """What the operator asked for is not there; the message says what."""


def open_journal(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise OperatorError(f"no journal at {path}")
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA busy_timeout = 10000")
    connection.row_factory = sqlite3.Row
    return connection


def _rows(rows: Sequence[sqlite3.Row], columns: Sequence[str]) -> list[dict[str, Any]]:
    return [{column: _readable(column, row[column]) for column in columns} for row in rows]


def _readable(column: str, value: Any) -> Any:
    if column.endswith("_at") and isinstance(value, float):
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")
    return value


def journal_show(connection: sqlite3.Connection, rrn: str) -> dict[str, Any]:
    row = connection.execute(
        f"SELECT {', '.join(SHOWN_TXN_COLUMNS)} FROM txn WHERE rrn = ?", (rrn,)
    ).fetchone()
    if row is None:
        raise OperatorError(f"no transaction with RRN {rrn}")
    events = connection.execute(
        "SELECT at, state, code, detail FROM txn_event WHERE rrn = ? ORDER BY id", (rrn,)
    ).fetchall()
    reversal = connection.execute(
        f"SELECT {', '.join(SAF_COLUMNS)} FROM saf WHERE rrn = ?", (rrn,)
    ).fetchall()
    return {
        "transaction": _rows([row], SHOWN_TXN_COLUMNS)[0],
        "events": _rows(events, ("at", "state", "code", "detail")),
        "reversal": _rows(reversal, SAF_COLUMNS)[0] if reversal else None,
    }


def journal_find(connection: sqlite3.Connection, terminal: str, date: str) -> list[dict[str, Any]]:
    """A terminal's transactions on a local date: ``MMDD`` or ``YYYY-MM-DD``."""
    if len(date) == 10 and date[4] == "-" and date[7] == "-":
        year, local_date = int(date[:4]), date[5:7] + date[8:10]
        # local_date carries no year: keep the rows created within a day of that year.
        since = datetime(year, 1, 1, tzinfo=UTC).timestamp() - 86400
        until = datetime(year + 1, 1, 1, tzinfo=UTC).timestamp() + 86400
    elif len(date) == 4 and date.isdigit():
        local_date, since, until = date, 0.0, float("inf")
    else:
        raise OperatorError(f"date {date!r} is neither MMDD nor YYYY-MM-DD")
    rows = connection.execute(
        f"SELECT {', '.join(SHOWN_TXN_COLUMNS)} FROM txn WHERE terminal_id = ? "
        "AND local_date = ? AND created_at >= ? AND created_at < ? ORDER BY created_at",
        (terminal, local_date, since, until),
    ).fetchall()
    return _rows(rows, SHOWN_TXN_COLUMNS)


def saf_list(
    connection: sqlite3.Connection, *, bank: str | None = None, state: str | None = None
) -> list[dict[str, Any]]:
    """Reversals in the queue; by default those not yet delivered."""
    clauses, parameters = [], []
    if bank is not None:
        clauses.append("bank = ?")
        parameters.append(bank)
    if state is not None:
        clauses.append("state = ?")
        parameters.append(state)
    else:
        clauses.append("state != 'delivered'")
    rows = connection.execute(
        f"SELECT {', '.join(SAF_COLUMNS)} FROM saf WHERE {' AND '.join(clauses)} ORDER BY id",
        parameters,
    ).fetchall()
    return _rows(rows, SAF_COLUMNS)


def saf_retry(connection: sqlite3.Connection, saf_id: int) -> dict[str, Any]:
    """Puts a reversal that is not delivered back in the queue, due now. The running
    switch picks it up at its next poll; its attempts count on (so a repeat is 0401)."""
    row = connection.execute("SELECT state FROM saf WHERE id = ?", (saf_id,)).fetchone()
    if row is None:
        raise OperatorError(f"no reversal with id {saf_id}")
    if row["state"] == "delivered":
        raise OperatorError(f"reversal {saf_id} was delivered already")
    now = time.time()
    connection.execute(
        "UPDATE saf SET state = 'pending', next_attempt_at = ?, updated_at = ?, "
        "last_result = coalesce(last_result, '') || ' (retry requested)' WHERE id = ?",
        (now, now, saf_id),
    )
    return _saf_row(connection, saf_id)


def _saf_row(connection: sqlite3.Connection, saf_id: int) -> dict[str, Any]:
    row = connection.execute(
        f"SELECT {', '.join(SAF_COLUMNS)} FROM saf WHERE id = ?", (saf_id,)
    ).fetchone()
    return _rows([row], SAF_COLUMNS)[0]


def print_rows(rows: list[dict[str, Any]], *, as_json: bool) -> None:
    """A table for people; JSON lines with ``--json`` for scripts."""
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    if not rows:
        print("(none)")
        return
    columns = list(rows[0])
    widths = [max(len(column), *(len(str(row[column])) for row in rows)) for column in columns]
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)))
    for row in rows:
        cells = (str(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True))
        print("  ".join(cells))
