"""The operator's view of the SQLite journal: what ``switch journal`` and ``switch saf``
read and change, on a connection of their own (a running switch keeps writing
meanwhile: WAL lets both work). Only masked card numbers are stored in the clear, so
only masked numbers come out of here."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from switch.store.port import (
    OperatorError,
    ReversalView,
    TxnEventView,
    TxnHistory,
    TxnView,
)
from switch.store.sqlite.journal import BUSY_TIMEOUT_MS

_SHOWN_TXN = ", ".join(TxnView.__struct_fields__)
_SAF = ", ".join(ReversalView.__struct_fields__)


class SqliteOperatorJournal:
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

    def _rows(self, sql: str, parameters: tuple[Any, ...] | list[Any]) -> list[dict[str, Any]]:
        try:
            return [dict(row) for row in self._connection.execute(sql, parameters)]
        except sqlite3.Error as exc:
            raise OperatorError(f"the journal cannot be read: {exc}") from exc

    def transaction(self, rrn: str) -> TxnHistory:
        rows = self._rows(f"SELECT {_SHOWN_TXN} FROM txn WHERE rrn = ?", (rrn,))
        if not rows:
            raise OperatorError(f"no transaction with RRN {rrn}")
        events = self._rows(
            "SELECT at, state, code, detail FROM txn_event WHERE rrn = ? ORDER BY id", (rrn,)
        )
        reversal = self._rows(f"SELECT {_SAF} FROM saf WHERE rrn = ?", (rrn,))
        return TxnHistory(
            transaction=msgspec.convert(rows[0], TxnView, strict=False),
            events=msgspec.convert(events, list[TxnEventView]),
            reversal=msgspec.convert(reversal[0], ReversalView) if reversal else None,
        )

    def terminal_transactions(
        self, terminal_id: str, local_date: str, since: float, until: float
    ) -> list[TxnView]:
        rows = self._rows(
            f"SELECT {_SHOWN_TXN} FROM txn WHERE terminal_id = ? AND local_date = ? "
            "AND created_at >= ? AND created_at < ? ORDER BY created_at",
            (terminal_id, local_date, since, until),
        )
        return msgspec.convert(rows, list[TxnView], strict=False)

    def reversals(self, *, bank: str | None, state: str | None) -> list[ReversalView]:
        clauses, parameters = [], []
        if bank is not None:
            clauses.append("bank = ?")
            parameters.append(bank)
        if state is not None:
            clauses.append("state = ?")
            parameters.append(state)
        else:
            clauses.append("state != 'delivered'")
        rows = self._rows(
            f"SELECT {_SAF} FROM saf WHERE {' AND '.join(clauses)} ORDER BY id", parameters
        )
        return msgspec.convert(rows, list[ReversalView])

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
        row = self._rows(f"SELECT {_SAF} FROM saf WHERE id = ?", (saf_id,))[0]
        return msgspec.convert(row, ReversalView)
