"""The ledger store's steps for the app desk's kept results (``desk_sql.py``): mixed
into ``LedgerStoreBase``, as ``CreditSteps`` is."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import msgspec

from switch.store.desk_sql import DeskSql

T = TypeVar("T")
Row = Mapping[str, Any]
Parameters = Sequence[Any] | dict[str, Any]


class KeptResult(msgspec.Struct, frozen=True, kw_only=True):
    """A request's kept result: ``fingerprint`` (the keyed digest of its content) and
    the ``response`` body; ``again``: it was there before this call."""

    fingerprint: bytes
    response: bytes
    at: float
    again: bool = False
    kept: bool = True
    """False: the body's result, not kept (a refusal that changed nothing)."""


def _kept(row: Row, *, again: bool) -> KeptResult:
    return KeptResult(
        fingerprint=bytes.fromhex(row["fingerprint"]),
        response=bytes.fromhex(row["response"]),
        at=row["at"],
        again=again,
    )


class DeskResultSteps:
    """``desk_kept``, ``desk_result``, ``desk_purge``."""

    desk: ClassVar[DeskSql]

    # Given by LedgerStoreBase.
    def _step(self, name: str, body: Callable[[], T]) -> T:
        raise NotImplementedError

    def _read(self, body: Callable[[], T]) -> T:
        raise NotImplementedError

    def _execute(self, statement: str, parameters: Parameters = ()) -> list[Row]:
        raise NotImplementedError

    def _first(self, statement: str, parameters: Parameters = ()) -> Row | None:
        raise NotImplementedError

    def desk_result(self, principal: str, request_id: str) -> KeptResult | None:
        """The result kept for (principal, id), if any."""
        row = self._read(lambda: self._first(self.desk.read_result, (principal, request_id)))
        return None if row is None else _kept(row, again=True)

    def desk_kept(
        self,
        principal: str,
        request_id: str,
        fingerprint: bytes,
        at: float,
        body: Callable[[], tuple[bytes, bool]],
    ) -> KeptResult:
        """``body`` (the request's own steps, then its encoded result and whether to
        keep it) and the result kept, in one transaction: the result kept before for
        this (principal, id) instead, if there is one (``again``; ``body`` is not run).
        What ``body`` raises rolls everything back."""

        def step() -> KeptResult:
            row = self._first(self.desk.lock_result, (principal, request_id))
            if row is not None:
                return _kept(row, again=True)
            response, keep = body()
            if not keep:
                return KeptResult(fingerprint=fingerprint, response=response, at=at, kept=False)
            self._execute(
                self.desk.insert_result,
                (principal, request_id, fingerprint.hex(), response.hex(), at),
            )
            return KeptResult(fingerprint=fingerprint, response=response, at=at)

        return self._step("desk_kept", step)

    def desk_purge(self, before: float) -> None:
        """Forgets results kept before ``before`` (online.md: kept at least 7 days)."""
        self._step("desk_purge", lambda: self._execute(self.desk.purge_results, (before,)))
