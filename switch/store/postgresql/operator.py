"""The operator's view of the PostgreSQL journal: what ``switch journal`` and
``switch saf`` read and change, on a connection of their own while switches keep
writing. The same questions and answers as the SQLite engine's (``switch/store/sqlite/
operator.py``); only masked card numbers are stored in the clear, so only masked
numbers come out of here."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg

from switch.store.port import (
    OperatorError,
    ReversalView,
    TxnEventView,
    TxnHistory,
    TxnView,
)
from switch.store.postgresql.journal import JournalDatabase

_SHOWN_TXN = ", ".join(TxnView.__struct_fields__)
_SAF = ", ".join(ReversalView.__struct_fields__)


class PostgresOperatorJournal:
    def __init__(self, dsn: str) -> None:
        database = JournalDatabase(dsn)
        try:
            self._connection = database.connect()
        except psycopg.Error as exc:
            raise OperatorError(f"cannot open the journal {database}: {exc}") from exc

    def close(self) -> None:
        self._connection.close()

    def _rows(self, sql: str, parameters: tuple[Any, ...] | list[Any]) -> list[dict[str, Any]]:
        try:
            return self._connection.execute(sql, parameters).fetchall()
        except psycopg.Error as exc:
            raise OperatorError(f"the journal cannot be read: {exc}") from exc

    def transaction(self, rrn: str) -> TxnHistory:
        rows = self._rows(f"SELECT {_SHOWN_TXN} FROM txn WHERE rrn = %s", (rrn,))
        if not rows:
            raise OperatorError(f"no transaction with RRN {rrn}")
        events = self._rows(
            "SELECT at, state, code, detail FROM txn_event WHERE rrn = %s ORDER BY id", (rrn,)
        )
        reversal = self._rows(f"SELECT {_SAF} FROM saf WHERE rrn = %s", (rrn,))
        return TxnHistory(
            transaction=msgspec.convert(rows[0], TxnView),
            events=msgspec.convert(events, list[TxnEventView]),
            reversal=msgspec.convert(reversal[0], ReversalView) if reversal else None,
        )

    def terminal_transactions(
        self, terminal_id: str, local_date: str, since: float, until: float
    ) -> list[TxnView]:
        rows = self._rows(
            f"SELECT {_SHOWN_TXN} FROM txn WHERE terminal_id = %s AND local_date = %s "
            "AND created_at >= %s AND created_at < %s ORDER BY created_at, seq",
            (terminal_id, local_date, since, until),
        )
        return msgspec.convert(rows, list[TxnView])

    def reversals(self, *, bank: str | None, state: str | None) -> list[ReversalView]:
        clauses, parameters = [], []
        if bank is not None:
            clauses.append("bank = %s")
            parameters.append(bank)
        if state is not None:
            clauses.append("state = %s")
            parameters.append(state)
        else:
            clauses.append("state <> 'delivered'")
        rows = self._rows(
            f"SELECT {_SAF} FROM saf WHERE {' AND '.join(clauses)} ORDER BY id", parameters
        )
        return msgspec.convert(rows, list[ReversalView])

    def retry_reversal(self, saf_id: int, at: float) -> ReversalView:
        # The row is locked while it is looked at, so that a switch delivering it at
        # that moment cannot have it put back in the queue after its delivery.
        try:
            with self._connection.transaction():
                rows = self._connection.execute(
                    "SELECT state FROM saf WHERE id = %s FOR UPDATE", (saf_id,)
                ).fetchall()
                if not rows:
                    raise OperatorError(f"no reversal with id {saf_id}")
                if rows[0]["state"] == "delivered":
                    raise OperatorError(f"reversal {saf_id} was delivered already")
                row = self._connection.execute(
                    "UPDATE saf SET state = 'pending', next_attempt_at = %s, updated_at = %s, "
                    "claimed_until = NULL, "
                    "last_result = coalesce(last_result, '') || ' (retry requested)' "
                    f"WHERE id = %s RETURNING {_SAF}",
                    (at, at, saf_id),
                ).fetchone()
        except psycopg.Error as exc:
            raise OperatorError(f"the journal cannot be written: {exc}") from exc
        return msgspec.convert(row, ReversalView)
