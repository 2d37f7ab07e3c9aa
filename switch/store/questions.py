"""The journal port's questions (``port.Journal``), written once for both engines: each a
statement (built once per engine, in its ``Dialect``, by :func:`questions`), its
parameters, and how its rows become the answer (:class:`Select`). Each engine's journal
gives how it runs a read (:meth:`JournalQuestions._read`: SQLite on its reading
connection in a worker thread; PostgreSQL from the event loop, ``pipeline.LoopReader``,
or in a thread) and the questions it answers its own way (who is in doubt, which
reversals are due).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Generic, Protocol, TypeAlias, TypeVar

import msgspec

from switch.core import products
from switch.core.batch import BatchTotals, SettledBatch, UploadRecord
from switch.core.book import TxnRecord
from switch.store.dialect import Dialect
from switch.store.port import (
    AdviceBacklog,
    Change,
    DueAdvice,
    DueReversal,
    Durability,
    OnlineResult,
    ReversalBacklog,
    StoodIn,
)
from switch.store.rows import (
    SETTLED_BATCH_COLUMNS,
    TXN_COLUMNS,
    record_from_row,
    settled_batch_from_row,
)

Answer = TypeVar("Answer")

Row: TypeAlias = dict[str, Any]
"""A row as every read path gives it, read by column name (SQLite's ``sqlite3.Row``
reads the same way)."""


class _Cursor(Protocol):
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """A connection of either engine's driver, as a read uses it."""

    def execute(self, statement: str, parameters: tuple[Any, ...], /) -> _Cursor: ...


@dataclass(frozen=True, slots=True)
class Select(Generic[Answer]):
    """A question as one statement (in its engine's placeholders), its parameters, and
    how its rows become the answer. The same for every read path: called on a
    connection (a worker thread's blocking read), or its statement sent from the event
    loop (PostgreSQL's ``pipeline.LoopReader``, rows made by psycopg's loaders)."""

    statement: str
    parameters: tuple[Any, ...]
    answer: Callable[[list[Row]], Answer]

    def __call__(self, connection: Connection) -> Answer:
        return self.answer(connection.execute(self.statement, self.parameters).fetchall())


class Questions(msgspec.Struct, frozen=True, kw_only=True):
    """An engine's statement for each question, its parameters as the journal gives them."""

    by_rrn: str
    by_online_id: str
    by_trace: str
    holds_by_authorisation: str
    holds_open_until: str
    in_doubt: str
    recent: str
    highest_rrn: str
    last_bank_stan: str
    """Parameters: the bank, then the journal's own (``JournalQuestions.own``)."""
    online_result: str
    online_results_since: str
    reversal_backlog: str
    batch_totals: str
    settled_batch: str
    batch_upload: str
    risk_history: str
    risk_changes: str
    """Parameters: the journal's own (``JournalQuestions.own``), then the time: the
    rows changed since then, each saying whether it is this worker's (``mine``)."""
    advice_head: str
    stood_in: str
    advice_backlog: str


TXN_SELECT = ", ".join(TXN_COLUMNS)
_IDEMPOTENCY_SELECT = "SELECT merchant_id, online_id, fingerprint, response, created_at"


def questions(d: Dialect, *, own: str = "", mine: str = "1") -> Questions:
    """The questions in the dialect ``d``; ``own`` narrows the last STAN to a bank to
    the journal's own rows (a condition, its parameters ``JournalQuestions.own``), and
    ``mine`` says whether a row is the journal's own (with the same parameters)."""
    sql = d.sql
    risk_kinds = ", ".join(f"'{kind}'" for kind in products.RISK_KINDS) or "''"
    return Questions(
        by_rrn=sql(f"SELECT {TXN_SELECT} FROM txn WHERE rrn = ?"),
        by_online_id=sql(
            f"SELECT {TXN_SELECT} FROM txn WHERE merchant_id = ? AND online_id = ? "
            f"ORDER BY {d.newest_first} LIMIT 1"
        ),
        by_trace=sql(
            f"SELECT {TXN_SELECT} FROM txn WHERE terminal_id = ? AND merchant_id = ? "
            f"AND stan = ? AND batch = ? ORDER BY {d.newest_first} LIMIT 1"
        ),
        holds_by_authorisation=sql(
            f"SELECT {TXN_SELECT} FROM txn WHERE merchant_id = ? AND auth_code = ? "
            f"AND hold_state IS NOT NULL AND local_date = ? ORDER BY {d.oldest_first}"
        ),
        holds_open_until=sql(
            f"SELECT {TXN_SELECT} FROM txn WHERE hold_state = 'open' AND hold_until <= ? "
            f"ORDER BY {d.oldest_first}"
        ),
        in_doubt=sql(
            f"SELECT {TXN_SELECT} FROM txn WHERE state = 'sending' ORDER BY {d.oldest_first}"
        ),
        recent=sql(
            f"SELECT {TXN_SELECT} FROM txn WHERE created_at >= ? ORDER BY {d.newest_first} LIMIT ?"
        ),
        # rrn compares byte by byte on both engines: "~" sorts after every digit.
        highest_rrn=sql("SELECT max(rrn) AS highest FROM txn WHERE rrn >= ? AND rrn < ?"),
        last_bank_stan=sql(
            f"SELECT bank_stan FROM txn WHERE bank = ? {own}"
            f"AND bank_stan IS NOT NULL ORDER BY {d.newest_first} LIMIT 1"
        ),
        online_result=sql(
            f"{_IDEMPOTENCY_SELECT} FROM idempotency WHERE merchant_id = ? AND online_id = ?"
        ),
        online_results_since=sql(
            f"{_IDEMPOTENCY_SELECT} FROM idempotency WHERE created_at >= ? ORDER BY created_at"
        ),
        reversal_backlog=sql(_REVERSAL_BACKLOG),
        batch_totals=sql(_BATCH_TOTALS.format(false=d.false)),
        settled_batch=sql(
            f"SELECT {SETTLED_BATCH_COLUMNS} FROM batch_settlement "
            "WHERE terminal_id = ? AND merchant_id = ? AND batch = ?"
        ),
        batch_upload=sql(
            "SELECT kind, stan, amount FROM batch_upload "
            "WHERE terminal_id = ? AND merchant_id = ? AND batch = ? ORDER BY kind, stan"
        ),
        risk_history=sql(
            f"SELECT {TXN_SELECT} FROM txn WHERE created_at >= ? AND kind IN ({risk_kinds}) "
            f"ORDER BY {d.oldest_first}"
        ),
        risk_changes=sql(
            f"SELECT {TXN_SELECT}, {mine} AS mine FROM txn "
            f"WHERE updated_at >= ? AND kind IN ({risk_kinds}) ORDER BY updated_at"
        ),
        advice_head=sql(
            "SELECT advice.id AS advice_id, advice.state AS advice_row_state, "
            "advice.attempts AS advice_attempts, advice.next_attempt_at AS advice_next, "
            "advice.local_time AS advice_local_time, advice.entry_mode AS advice_entry_mode, "
            "advice.condition_code AS advice_condition_code, advice.mcc AS advice_mcc, "
            f"{', '.join('txn.' + column for column in TXN_COLUMNS)} "
            "FROM advice JOIN txn ON txn.rrn = advice.rrn "
            "WHERE advice.bank = ? AND advice.state IN ('queued', 'sent') "
            "ORDER BY advice.id LIMIT 1"
        ),
        stood_in=sql(
            "SELECT advice.bank AS bank, txn.pan_hmac AS card_key, txn.local_date AS "
            "local_date, txn.amount AS amount, txn.voided AS voided, txn.reversed AS reversed, "
            "advice.state AS state, txn.rrn AS rrn FROM advice JOIN txn ON txn.rrn = advice.rrn "
            "WHERE advice.state IN ('queued', 'sent', 'manual') OR txn.local_date IN (?, ?)"
        ),
        advice_backlog=sql(
            "SELECT advice.bank AS bank, advice.state AS state, count(*) AS queued, "
            "sum(txn.amount) AS amount, min(advice.created_at) AS oldest "
            "FROM advice JOIN txn ON txn.rrn = advice.rrn "
            "WHERE advice.state IN ('queued', 'sent', 'manual') "
            "GROUP BY advice.bank, advice.state"
        ),
    )


# Delivered reversals are never purged: the banks are found by a loose index scan (one
# seek of saf_due a bank), then each bank's undelivered ones by seeks, never a scan of
# the whole history.
_REVERSAL_BACKLOG = """
WITH RECURSIVE banks(bank) AS (
    SELECT min(bank) FROM saf
    UNION ALL
    SELECT (SELECT min(bank) FROM saf WHERE saf.bank > banks.bank) FROM banks
    WHERE banks.bank IS NOT NULL
)
SELECT saf.bank AS bank, saf.state AS state, count(*) AS queued,
    min(saf.created_at) AS oldest
FROM banks JOIN saf ON saf.bank = banks.bank AND saf.state IN ('pending', 'manual')
GROUP BY saf.bank, saf.state
"""

# pos-cup.md's rules, over the batch's rows (txn_by_batch): approved sales neither
# voided nor reversed are its debits, approved refunds not reversed its credits.
# The kinds are the product table's (``switch.core.products``): what counts as a debit
# and what as a credit.
_DEBIT: Final = products.kind_sql("kind", counts="debit")
_CREDIT: Final = products.kind_sql("kind", counts="credit")
_BATCH_TOTALS: Final = f"""
SELECT
    coalesce(sum(CASE WHEN {_DEBIT} THEN amount END), 0) AS debit_fen,
    count(CASE WHEN {_DEBIT} THEN 1 END) AS debit_count,
    coalesce(sum(CASE WHEN {_CREDIT} THEN amount END), 0) AS credit_fen,
    count(CASE WHEN {_CREDIT} THEN 1 END) AS credit_count
FROM txn
WHERE terminal_id = ? AND merchant_id = ? AND batch = ?
    AND channel = 'pos' AND state = 'approved' AND reversed = {{false}}
    AND ({_CREDIT} OR ({_DEBIT} AND voided = {{false}}))
"""


# -- how rows become answers -------------------------------------------------------------


def first_record(rows: list[Row]) -> TxnRecord | None:
    return record_from_row(rows[0]) if rows else None


def records(rows: list[Row]) -> list[TxnRecord]:
    return [record_from_row(row) for row in rows]


def _changed(rows: list[Row]) -> list[tuple[TxnRecord, float, bool]]:
    """Each row's record, when it last changed, and whether it is the journal's own."""
    return [(record_from_row(row), row["updated_at"], bool(row["mine"])) for row in rows]


def _oldest_first(rows: list[Row]) -> list[TxnRecord]:
    return [record_from_row(row) for row in reversed(rows)]


def _sequence_of(rows: list[Row]) -> int:
    highest = rows[0]["highest"]
    return -1 if highest is None else int(highest[4:])


def _bank_stan(rows: list[Row]) -> int | None:
    return int(rows[0]["bank_stan"]) if rows else None


def _online_result(row: Row) -> OnlineResult:
    return OnlineResult(
        merchant_id=row["merchant_id"],
        online_id=row["online_id"],
        fingerprint=bytes(row["fingerprint"]),
        response=bytes(row["response"]),
        created_at=row["created_at"],
    )


def _first_online_result(rows: list[Row]) -> OnlineResult | None:
    return _online_result(rows[0]) if rows else None


def _online_results(rows: list[Row]) -> list[OnlineResult]:
    return [_online_result(row) for row in rows]


def due(rows: list[Row]) -> list[DueReversal]:
    """Due reversals of rows of ``saf_id``, ``saf_attempts`` and the txn's columns."""
    return [
        DueReversal(saf_id=row["saf_id"], attempts=row["saf_attempts"], record=record_from_row(row))
        for row in rows
    ]


def advice_head_of(rows: list[Row]) -> DueAdvice | None:
    if not rows:
        return None
    row = rows[0]
    return DueAdvice(
        advice_id=row["advice_id"], state=row["advice_row_state"],
        attempts=row["advice_attempts"], next_attempt_at=row["advice_next"],
        local_time=row["advice_local_time"], entry_mode=row["advice_entry_mode"],
        condition_code=row["advice_condition_code"], mcc=row["advice_mcc"],
        record=record_from_row(row),
    )  # fmt: skip


def _stood_in(rows: list[Row]) -> list[StoodIn]:
    return [
        StoodIn(
            bank=row["bank"], card_key=bytes(row["card_key"]), local_date=row["local_date"],
            amount=row["amount"], standing=not (row["voided"] or row["reversed"])
            and row["state"] not in ("cancelled",),
            pending=row["state"] in ("queued", "sent", "manual"), rrn=row["rrn"],
        )
        for row in rows
    ]  # fmt: skip


def _advice_backlog(rows: list[Row]) -> list[AdviceBacklog]:
    found: dict[str, list[float]] = {}
    for row in rows:
        held = found.setdefault(row["bank"], [0, 0, 0, row["oldest"]])
        if row["state"] == "manual":
            held[2] += row["queued"]
        else:
            held[0] += row["queued"]
        held[1] += int(row["amount"])
        held[3] = min(held[3], row["oldest"])
    return [
        AdviceBacklog(
            bank=bank, pending=int(pending), pending_fen=int(fen), manual=int(manual),
            oldest_created_at=oldest,
        )
        for bank, (pending, fen, manual, oldest) in sorted(found.items())
    ]  # fmt: skip


def _backlog(rows: list[Row]) -> list[ReversalBacklog]:
    found: dict[str, tuple[int, int, float]] = {}
    for row in rows:
        bank, oldest = row["bank"], row["oldest"]
        pending, manual, earliest = found.get(bank, (0, 0, oldest))
        if row["state"] == "pending":
            pending = row["queued"]
        else:
            manual = row["queued"]
        found[bank] = (pending, manual, min(earliest, oldest))
    return [
        ReversalBacklog(bank=bank, pending=pending, manual=manual, oldest_created_at=oldest)
        for bank, (pending, manual, oldest) in sorted(found.items())
    ]


def _totals(rows: list[Row]) -> BatchTotals:
    assert rows, "an aggregate always has a row"
    row = rows[0]
    # PostgreSQL's sum() of a BIGINT is a NUMERIC: back to whole fen.
    return BatchTotals(
        debit_fen=int(row["debit_fen"]),
        debit_count=row["debit_count"],
        credit_fen=int(row["credit_fen"]),
        credit_count=row["credit_count"],
    )


def _settled(rows: list[Row]) -> SettledBatch | None:
    return settled_batch_from_row(rows[0]) if rows else None


def _uploaded(rows: list[Row]) -> list[UploadRecord]:
    return [UploadRecord(kind=row["kind"], stan=row["stan"], amount=row["amount"]) for row in rows]


# -- the port's questions ------------------------------------------------------------------


class JournalQuestions(ABC):
    """The journal port's questions, for a journal that gives its statements
    (``questions``), how it runs a read (``_read``) and what ``in_doubt`` and
    ``due_reversals`` mean on it."""

    questions: ClassVar[Questions]
    durability: Durability
    own: tuple[Any, ...] = ()
    """The parameters of ``questions(own=...)``: PostgreSQL's worker."""

    @abstractmethod
    async def _read(self, select: Select[Answer]) -> Answer:
        """The answer to ``select``; JournalError if the journal cannot give it."""

    @abstractmethod
    async def commit(self, *changes: Change, durable: bool | None = None) -> None: ...

    async def transaction_by_rrn(self, rrn: str) -> TxnRecord | None:
        return await self._read(Select(self.questions.by_rrn, (rrn,), first_record))

    async def transaction_by_online_id(self, merchant_id: str, online_id: str) -> TxnRecord | None:
        statement = self.questions.by_online_id
        return await self._read(Select(statement, (merchant_id, online_id), first_record))

    async def transaction_by_trace(
        self, terminal_id: str, merchant_id: str, batch: str, stan: str
    ) -> TxnRecord | None:
        parameters = (terminal_id, merchant_id, stan, batch)
        return await self._read(Select(self.questions.by_trace, parameters, first_record))

    async def holds_by_authorisation(
        self, merchant_id: str, auth_code: str, local_date: str
    ) -> list[TxnRecord]:
        parameters = (merchant_id, auth_code, local_date)
        return await self._read(Select(self.questions.holds_by_authorisation, parameters, records))

    async def holds_open_until(self, business_date: str) -> list[TxnRecord]:
        statement = self.questions.holds_open_until
        return await self._read(Select(statement, (business_date,), records))

    async def transactions_in_doubt(self) -> list[TxnRecord]:
        return await self._read(Select(self.questions.in_doubt, (), records))

    async def recent_transactions(self, since: float, limit: int) -> list[TxnRecord]:
        return await self._read(Select(self.questions.recent, (since, limit), _oldest_first))

    async def risk_history(self, since: float) -> list[TxnRecord]:
        return await self._read(Select(self.questions.risk_history, (since,), records))

    async def risk_changes(self, since: float) -> list[tuple[TxnRecord, float, bool]]:
        return await self._read(Select(self.questions.risk_changes, (*self.own, since), _changed))

    async def last_bank_stan(self, bank: str) -> int | None:
        statement = self.questions.last_bank_stan
        return await self._read(Select(statement, (bank, *self.own), _bank_stan))

    async def highest_rrn_sequence(self, day: str) -> int:
        statement = self.questions.highest_rrn
        return await self._read(Select(statement, (day, f"{day}~"), _sequence_of))

    async def online_result(self, merchant_id: str, online_id: str) -> OnlineResult | None:
        statement = self.questions.online_result
        return await self._read(Select(statement, (merchant_id, online_id), _first_online_result))

    async def online_results_since(self, since: float) -> list[OnlineResult]:
        statement = self.questions.online_results_since
        return await self._read(Select(statement, (since,), _online_results))

    async def reversal_backlog(self) -> list[ReversalBacklog]:
        return await self._read(Select(self.questions.reversal_backlog, (), _backlog))

    async def advice_head(self, bank: str, *, claim: bool = True) -> DueAdvice | None:
        return await self._read(Select(self.questions.advice_head, (bank,), advice_head_of))

    async def stood_in(self, local_dates: list[str]) -> list[StoodIn]:
        first, second = (local_dates + local_dates)[:2] if local_dates else ("", "")
        return await self._read(Select(self.questions.stood_in, (first, second), _stood_in))

    async def advice_backlog(self) -> list[AdviceBacklog]:
        return await self._read(Select(self.questions.advice_backlog, (), _advice_backlog))

    # A terminal's batch: these see every change whose commit was asked for before them.

    async def _read_after_queued(self, select: Select[Answer]) -> Answer:
        """A read that sees every change handed over before it: with "async"
        durability an answer leaves before its commit, so an empty group, queued
        behind them, is waited for first."""
        if self.durability != "sync":
            await self.commit(durable=True)
        return await self._read(select)

    async def batch_totals(self, terminal_id: str, merchant_id: str, batch: str) -> BatchTotals:
        parameters = (terminal_id, merchant_id, batch)
        return await self._read_after_queued(
            Select(self.questions.batch_totals, parameters, _totals)
        )

    async def settled_batch(
        self, terminal_id: str, merchant_id: str, batch: str
    ) -> SettledBatch | None:
        parameters = (terminal_id, merchant_id, batch)
        return await self._read_after_queued(
            Select(self.questions.settled_batch, parameters, _settled)
        )

    async def batch_upload(
        self, terminal_id: str, merchant_id: str, batch: str
    ) -> list[UploadRecord]:
        parameters = (terminal_id, merchant_id, batch)
        return await self._read_after_queued(
            Select(self.questions.batch_upload, parameters, _uploaded)
        )
