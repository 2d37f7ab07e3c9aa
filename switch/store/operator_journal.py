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
    advices: dict[tuple[bool, bool], str]
    """By whether a bank and a state are asked for (neither: those without a final
    answer: queued, sent, manual)."""
    advice: str


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
        transaction=sql(f"SELECT {SHOWN_TXN} FROM txn WHERE rrn = ?"),
        events=sql("SELECT at, state, code, detail FROM txn_event WHERE rrn = ? ORDER BY id"),
        reversal_of=sql(f"SELECT {SHOWN_SAF} FROM saf WHERE rrn = ?"),
        terminal_transactions=sql(
            f"SELECT {SHOWN_TXN} FROM txn WHERE terminal_id = ? AND local_date = ? "
            f"AND created_at >= ? AND created_at < ? ORDER BY {d.oldest_first}"
        ),
        reversals=reversals,
        reversal=sql(f"SELECT {SHOWN_SAF} FROM saf WHERE id = ?"),
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
        events = self._rows(self.sql.events, (rrn,))
        reversal = self._rows(self.sql.reversal_of, (rrn,))
        return TxnHistory(
            # Not strict: SQLite's flags are 0 and 1.
            transaction=msgspec.convert(rows[0], TxnView, strict=False),
            events=msgspec.convert(events, list[TxnEventView]),
            reversal=msgspec.convert(reversal[0], ReversalView) if reversal else None,
        )

    def terminal_transactions(
        self, terminal_id: str, local_date: str, since: float, until: float
    ) -> list[TxnView]:
        rows = self._rows(
            self.sql.terminal_transactions, (terminal_id, local_date, since, until)
        )
        return msgspec.convert(rows, list[TxnView], strict=False)

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
