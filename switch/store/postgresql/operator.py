"""The operator's view of the PostgreSQL journal (``switch/store/operator_journal.py``):
what ``switch journal`` and ``switch saf`` read and change, on a connection of their
own while switches keep writing."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg

from switch.store.operator_journal import SHOWN_SAF, OperatorJournalBase, operator_sql
from switch.store.port import AdviceView, OperatorError, ReversalView
from switch.store.postgresql.journal import JournalDatabase
from switch.store.postgresql.sql import DIALECT


class PostgresOperatorJournal(OperatorJournalBase):
    sql = operator_sql(DIALECT)

    def __init__(self, dsn: str) -> None:
        database = JournalDatabase(dsn)
        try:
            self._connection = database.connect()
        except psycopg.Error as exc:
            raise OperatorError(f"cannot open the journal {database}: {exc}") from exc

    def close(self) -> None:
        self._connection.close()

    def _rows(self, statement: str, parameters: tuple[Any, ...]) -> list[dict[str, Any]]:
        try:
            return self._connection.execute(statement, parameters).fetchall()
        except psycopg.Error as exc:
            raise OperatorError(f"the journal cannot be read: {exc}") from exc

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
                    f"WHERE id = %s RETURNING {SHOWN_SAF}",
                    (at, at, saf_id),
                ).fetchone()
        except psycopg.Error as exc:
            raise OperatorError(f"the journal cannot be written: {exc}") from exc
        return msgspec.convert(row, ReversalView)

    def retry_advice(self, advice_id: int, at: float) -> AdviceView:
        # Only one its attempts ran out on (manual): back in its place in the queue (the
        # order of stand-in), as a repeat (0221) if it was ever sent.
        try:
            with self._connection.transaction():
                rows = self._connection.execute(
                    "SELECT state, rrn FROM advice WHERE id = %s FOR UPDATE", (advice_id,)
                ).fetchall()
                if not rows:
                    raise OperatorError(f"no advice with id {advice_id}")
                if rows[0]["state"] != "manual":
                    raise OperatorError(
                        f"advice {advice_id} is {rows[0]['state']}, not manual"
                    )
                self._connection.execute(
                    "UPDATE advice SET state = CASE WHEN attempts > 0 THEN 'sent' ELSE 'queued' "
                    "END, next_attempt_at = %s, updated_at = %s, "
                    "last_result = coalesce(last_result, '') || ' (retry requested)' "
                    "WHERE id = %s",
                    (at, at, advice_id),
                )
                self._connection.execute(
                    "UPDATE txn SET advice_state = (SELECT state FROM advice WHERE id = %s) "
                    "WHERE rrn = %s",
                    (advice_id, rows[0]["rrn"]),
                )
        except psycopg.Error as exc:
            raise OperatorError(f"the journal cannot be written: {exc}") from exc
        return self._advice(advice_id)
