"""The operator's view of the SQLite journal (``switch/store/operator_journal.py``): what
``switch journal`` and ``switch saf`` read and change, on a connection of their own (a
running switch keeps writing meanwhile: WAL lets both work)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from switch.store.operator_journal import OperatorJournalBase, operator_sql
from switch.store.port import AdviceView, OperatorError, ReversalView
from switch.store.sqlite.journal import BUSY_TIMEOUT_MS
from switch.store.sqlite.sql import DIALECT


class SqliteOperatorJournal(OperatorJournalBase):
    sql = operator_sql(DIALECT)

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise OperatorError(f"no journal at {path}")
        try:
            self._connection = sqlite3.connect(path, isolation_level=None)
            self._connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            raise OperatorError(f"cannot open the journal at {path}: {exc}") from exc
        self._connection.row_factory = sqlite3.Row

    def close(self) -> None:
        self._connection.close()

    def _rows(self, statement: str, parameters: tuple[Any, ...]) -> list[dict[str, Any]]:
        try:
            return [dict(row) for row in self._connection.execute(statement, parameters)]
        except sqlite3.Error as exc:
            raise OperatorError(f"the journal cannot be read: {exc}") from exc

    def retry_reversal(self, saf_id: int, at: float) -> ReversalView:
        rows = self._rows("SELECT state FROM saf WHERE id = ?", (saf_id,))
        if not rows:
            raise OperatorError(f"no reversal with id {saf_id}")
        if rows[0]["state"] == "delivered":
            raise OperatorError(f"reversal {saf_id} was delivered already")
        try:
            self._connection.execute(
                "UPDATE saf SET state = 'pending', next_attempt_at = ?, updated_at = ?, "
                "last_result = coalesce(last_result, '') || ' (retry requested)' WHERE id = ?",
                (at, at, saf_id),
            )
        except sqlite3.Error as exc:
            raise OperatorError(f"the journal cannot be written: {exc}") from exc
        row = self._rows(self.sql.reversal, (saf_id,))[0]
        return msgspec.convert(row, ReversalView)

    def retry_advice(self, advice_id: int, at: float) -> AdviceView:
        # Only one its attempts ran out on (manual): back in its place in the queue (the
        # order of stand-in), as a repeat (0221) if it was ever sent.
        rows = self._rows("SELECT state, rrn FROM advice WHERE id = ?", (advice_id,))
        if not rows:
            raise OperatorError(f"no advice with id {advice_id}")
        if rows[0]["state"] != "manual":
            raise OperatorError(f"advice {advice_id} is {rows[0]['state']}, not manual")
        try:
            self._connection.execute("BEGIN IMMEDIATE")
            self._connection.execute(
                "UPDATE advice SET state = CASE WHEN attempts > 0 THEN 'sent' ELSE 'queued' END, "
                "next_attempt_at = ?, updated_at = ?, "
                "last_result = coalesce(last_result, '') || ' (retry requested)' "
                "WHERE id = ? AND state = 'manual'",
                (at, at, advice_id),
            )
            self._connection.execute(
                "UPDATE txn SET advice_state = (SELECT state FROM advice WHERE id = ?) "
                "WHERE rrn = ?",
                (advice_id, rows[0]["rrn"]),
            )
            self._connection.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
            raise OperatorError(f"the journal cannot be written: {exc}") from exc
        return self._advice(advice_id)
