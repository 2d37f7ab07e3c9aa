"""The ledger store's steps for the risk rules' records of desk requests
(``risk_sql.py``): mixed into ``LedgerStoreBase``, as ``DeskResultSteps`` is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from switch.core.riskgate import RiskEvent
from switch.store.ledger_steps import LedgerSteps
from switch.store.risk_sql import EVENT_COLUMNS, RiskSql


def _event(row: Mapping[str, Any]) -> RiskEvent:
    return RiskEvent(id=row["id"], **{name: row[name] for name in EVENT_COLUMNS})


class RiskEventSteps(LedgerSteps):
    """``add_risk_event``, ``risk_events``, ``risk_events_written``, ``risk_events_marked``."""

    risk: ClassVar[RiskSql]

    def add_risk_event(self, event: RiskEvent) -> None:
        """Writes ``event``: called inside its request's step, it is part of that
        step's transaction (committed with it, or rolled back with it)."""
        values = tuple(getattr(event, name) for name in EVENT_COLUMNS)
        self._step("add_risk_event", lambda: self._execute(self.risk.insert_event, values))

    def risk_events(self, since: float) -> list[RiskEvent]:
        """The records of requests received at or after ``since``, oldest first."""
        return self._read(lambda: [_event(r) for r in self._execute(self.risk.events_since,
                                                                     (since,))])  # fmt: skip

    def risk_events_written(self, since: float) -> list[RiskEvent]:
        """The records written (wall time) at or after ``since``, in that order."""
        statement = self.risk.events_written_since
        return self._read(lambda: [_event(r) for r in self._execute(statement, (since,))])

    def risk_events_marked(self, before: float, limit: int) -> list[RiskEvent]:
        """Up to ``limit`` records received before ``before`` that a rule hit (decided,
        flagged or shadowed), newest first."""
        statement = self.risk.marked_before
        return self._read(lambda: [_event(r) for r in self._execute(statement, (before, limit))])
