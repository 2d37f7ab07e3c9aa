"""The operator's view of the journal (``port.OperatorJournal``: what ``switch journal``
and ``switch saf`` read), written once for both engines over statements built once per
engine in its ``Dialect``; each engine's ``operator.py`` gives its connection, how it
reads rows, and how it puts a reversal back in the queue. Only masked card numbers are
stored in the clear, so only masked numbers come out of here."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import msgspec

from switch.store.dialect import Dialect
from switch.store.port import (
    AdviceView,
    OperatorError,
    ReversalView,
    TxnEventView,
    TxnHistory,
    TxnView,
)
from switch.store.rows import EVENTS_COLUMN, events_of

SHOWN_TXN = ", ".join(TxnView.__struct_fields__)
SHOWN_SAF = ", ".join(ReversalView.__struct_fields__)
SHOWN_ADVICE = ", ".join(
    "txn.amount AS amount" if name == "amount" else f"advice.{name} AS {name}"
    for name in AdviceView.__struct_fields__
)
_ADVICE_FROM = "FROM advice JOIN txn ON txn.rrn = advice.rrn"


class OperatorSql(msgspec.Struct, frozen=True, kw_only=True):
    """The operator's statements in one engine's form."""

    transaction: str
    events: str
    reversal_of: str
    terminal_transactions: str
    reversals: dict[tuple[bool, bool], str]
    """By whether a bank and a state are asked for (neither: those not delivered)."""
    reversal: str
    risk_marked: str
    """Requests the risk rules marked (declined, reviewed, shadow hits), newest first:
    parameters the time before which, and how many."""
    advices: dict[tuple[bool, bool], str]
    """By whether a bank and a state are asked for (neither: those without a final
    answer: queued, sent, manual)."""
    advice: str


RISK_MARKED = (
    "created_at, rrn, online_id, channel, merchant_id, terminal_id, pan_masked, amount, "
    "code, risk_rule, risk_review, risk_shadow"
)


def operator_sql(d: Dialect) -> OperatorSql:
    sql = d.sql
    reversals = {}
    for by_bank in (False, True):
        for by_state in (False, True):
            clauses = ["bank = ?"] if by_bank else []
            clauses.append("state = ?" if by_state else "state != 'delivered'")
            reversals[(by_bank, by_state)] = sql(
                f"SELECT {SHOWN_SAF} FROM saf WHERE {' AND '.join(clauses)} ORDER BY id"
            )
    advices = {}
    for by_bank in (False, True):
        for by_state in (False, True):
            clauses = ["advice.bank = ?"] if by_bank else []
            clauses.append(
                "advice.state = ?" if by_state else "advice.state IN ('queued', 'sent', 'manual')"
            )
            advices[(by_bank, by_state)] = sql(
                f"SELECT {SHOWN_ADVICE} {_ADVICE_FROM} WHERE {' AND '.join(clauses)} "
                "ORDER BY advice.id"
            )
    return OperatorSql(
        advices=advices,
        advice=sql(f"SELECT {SHOWN_ADVICE} {_ADVICE_FROM} WHERE advice.id = ?"),
        transaction=sql(f"SELECT {SHOWN_TXN}, {EVENTS_COLUMN} FROM txn WHERE rrn = ?"),
        events=sql("SELECT at, state, code, detail FROM txn_event WHERE rrn = ? ORDER BY id"),
        reversal_of=sql(f"SELECT {SHOWN_SAF} FROM saf WHERE rrn = ?"),
        terminal_transactions=sql(
            f"SELECT {SHOWN_TXN} FROM txn WHERE terminal_id = ? AND local_date = ? "
            f"AND created_at >= ? AND created_at < ? ORDER BY {d.oldest_first}"
        ),
        reversals=reversals,
        reversal=sql(f"SELECT {SHOWN_SAF} FROM saf WHERE id = ?"),
        risk_marked=sql(
            f"SELECT {RISK_MARKED} FROM txn WHERE created_at < ? AND (risk_rule IS NOT NULL "
            "OR risk_review IS NOT NULL OR risk_shadow IS NOT NULL) "
            "ORDER BY created_at DESC LIMIT ?"
        ),
    )


class OperatorJournalBase(ABC):
    """The operator journal port, but for what each engine gives (the abstract methods)."""

    sql: ClassVar[OperatorSql]

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _rows(self, statement: str, parameters: tuple[Any, ...]) -> list[dict[str, Any]]:
        """The rows of a read, as dicts; OperatorError if the journal cannot be read."""

    @abstractmethod
    def retry_reversal(self, saf_id: int, at: float) -> ReversalView: ...

    def transaction(self, rrn: str) -> TxnHistory:
        rows = self._rows(self.sql.transaction, (rrn,))
        if not rows:
            raise OperatorError(f"no transaction with RRN {rrn}")
        row = rows[0]
        # Its history: events kept as rows of their own (written before the history
        # moved into the transaction's row), then those its row holds.
        events = msgspec.convert(self._rows(self.sql.events, (rrn,)), list[TxnEventView])
        events += [
            TxnEventView(at=at, state=state, code=code, detail=detail)
            for at, state, code, detail in events_of(row.pop(EVENTS_COLUMN))
        ]
        reversal = self._rows(self.sql.reversal_of, (rrn,))
        return TxnHistory(
            # Not strict: SQLite's flags are 0 and 1.
            transaction=msgspec.convert(row, TxnView, strict=False),
            events=events,
            reversal=msgspec.convert(reversal[0], ReversalView) if reversal else None,
        )

    def terminal_transactions(
        self, terminal_id: str, local_date: str, since: float, until: float
    ) -> list[TxnView]:
        rows = self._rows(
            self.sql.terminal_transactions, (terminal_id, local_date, since, until)
        )
        return msgspec.convert(rows, list[TxnView], strict=False)

    def risk_marked(self, before: float, limit: int) -> list[dict[str, Any]]:
        return self._rows(self.sql.risk_marked, (before, limit))

    @abstractmethod
    def retry_advice(self, advice_id: int, at: float) -> AdviceView: ...

    def advices(self, *, bank: str | None, state: str | None) -> list[AdviceView]:
        statement = self.sql.advices[(bank is not None, state is not None)]
        parameters = tuple(value for value in (bank, state) if value is not None)
        return msgspec.convert(self._rows(statement, parameters), list[AdviceView])

    def _advice(self, advice_id: int) -> AdviceView:
        return msgspec.convert(self._rows(self.sql.advice, (advice_id,))[0], AdviceView)

    def reversals(self, *, bank: str | None, state: str | None) -> list[ReversalView]:
        statement = self.sql.reversals[(bank is not None, state is not None)]
        parameters = tuple(value for value in (bank, state) if value is not None)
        return msgspec.convert(self._rows(statement, parameters), list[ReversalView])
