"""What the ledger store's mixins (the app desk's results, credit, co-brand, the own
merchants' corrections) take from ``LedgerStoreBase``: one transaction per step, reads,
statements and the ledger's moves, declared once for all of them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from switch.core.ledger import Operation, Plan, TransferKey, TransferSpec

T = TypeVar("T")
Row = Mapping[str, Any]
Parameters = Sequence[Any] | dict[str, Any]


class LedgerSteps:
    """The base's methods a mixin's steps call (given by ``LedgerStoreBase``)."""

    def _step(self, name: str, body: Callable[[], T]) -> T:
        raise NotImplementedError

    def _read(self, body: Callable[[], T]) -> T:
        raise NotImplementedError

    def _execute(self, statement: str, parameters: Parameters = ()) -> list[Row]:
        raise NotImplementedError

    def _first(self, statement: str, parameters: Parameters = ()) -> Row | None:
        raise NotImplementedError

    def _move(
        self,
        operation: Operation,
        key: TransferKey,
        at: float,
        *,
        spec: TransferSpec | None = None,
        amount: int | None = None,
    ) -> Plan:
        raise NotImplementedError
