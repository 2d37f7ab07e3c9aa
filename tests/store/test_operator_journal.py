"""The operator's journal (``switch journal``, ``switch saf``): what it shows of what the
switch's journal committed, and the retry of a reversal, once per engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from switch.store.port import (
    HoldMoved,
    Journal,
    OperatorError,
    OperatorJournal,
    ReversalAttempted,
    ReversalQueued,
    TxnStarted,
    TxnUpdated,
)
from switch.store.postgresql import JournalDatabase, PostgresJournal
from switch.store.postgresql.operator import PostgresOperatorJournal
from switch.store.sqlite import JournalFile, SqliteJournal, SqliteOperatorJournal
from tests.store.engines import ENGINES
from tests.store.records import make_record

Engine = tuple[Callable[[], Journal], Callable[[], OperatorJournal]]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    """The engine's switch journal and operator journal, on the same storage."""
    if request.param == "sqlite":
        path = tmp_path / "journal.sqlite3"
        return (lambda: SqliteJournal(JournalFile(path))), (lambda: SqliteOperatorJournal(path))
    if request.param == "postgresql":
        dsn: str = request.getfixturevalue("postgres_dsn")
        return (
            lambda: PostgresJournal(JournalDatabase(dsn)),
            lambda: PostgresOperatorJournal(dsn),
        )
    raise AssertionError(request.param)


@pytest.fixture
async def journals(engine: Engine) -> AsyncIterator[tuple[Journal, OperatorJournal]]:
    open_journal, open_operator = engine
    async with trio.open_nursery() as nursery:
        journal = open_journal()
        await nursery.start(journal.run)
        operator = open_operator()
        yield journal, operator
        operator.close()
        nursery.cancel_scope.cancel()


async def test_a_transaction_shows_with_its_events_and_reversal(
    journals: tuple[Journal, OperatorJournal],
) -> None:
    journal, operator = journals
    record = make_record()
    await journal.commit(TxnStarted.of(record, 100.0))
    record.state, record.code, record.reversed = "no_answer", None, True
    await journal.commit(
        TxnUpdated.of(record, 102.0, "no answer in time"),
        ReversalQueued(rrn=record.rrn, bank="icbc", reason="no answer (68)", at=102.0),
    )
    history = operator.transaction(record.rrn)
    assert (history.transaction.rrn, history.transaction.state) == (record.rrn, "no_answer")
    assert history.transaction.reversed is True and history.transaction.voided is False
    assert history.transaction.pan_masked == record.pan_masked
    assert [(e.at, e.state, e.detail) for e in history.events] == [
        (100.0, "sending", None),
        (102.0, "no_answer", "no answer in time"),
    ]
    assert history.reversal is not None and history.reversal.state == "pending"
    with pytest.raises(OperatorError, match="no transaction with RRN 632600000999"):
        operator.transaction("632600000999")


def _execute(operator: OperatorJournal, statement: str, *parameters: object) -> Any:
    """A statement on the operator's own connection (autocommit), in its engine's form;
    its cursor."""
    assert isinstance(operator, SqliteOperatorJournal | PostgresOperatorJournal)
    return operator._connection.execute(statement, parameters)


async def test_a_transactions_events_are_lines_of_its_row_with_no_row_of_their_own(
    journals: tuple[Journal, OperatorJournal],
) -> None:
    """Its start, its answer and what befalls it later (a void, its hold moved) ride on
    the statements that write its row: the journal's writes add no txn_event row (nor
    its page), and its history still lists each, in order (design.md)."""
    journal, operator = journals
    record, other = make_record(), make_record("632600000002")
    await journal.commit(TxnStarted.of(record, 100.0), TxnStarted.of(other, 100.5))
    record.state, record.code, record.auth_code = "approved", "00", "123456"
    await journal.commit(TxnUpdated.of(record, 101.0))
    record.voided = True
    await journal.commit(
        TxnUpdated.of(record, 105.0, "voided by 632600000003"),
        HoldMoved(rrn=record.rrn, hold_state="voided", at=105.0, detail='its "hold"\nended'),
    )
    assert [(e.at, e.state, e.code, e.detail) for e in operator.transaction(record.rrn).events] == [
        (100.0, "sending", None, None),
        (101.0, "approved", "00", None),
        (105.0, "approved", "00", "voided by 632600000003"),
        (105.0, "approved", None, 'its "hold"\nended'),
    ]
    assert [(e.at, e.state) for e in operator.transaction(other.rrn).events] == [(100.5, "sending")]
    events = _execute(operator, "SELECT count(*) AS n FROM txn_event").fetchall()
    assert [row["n"] for row in events] == [0]


async def test_events_kept_as_rows_before_the_history_moved_into_the_row_come_first(
    journals: tuple[Journal, OperatorJournal],
) -> None:
    """A journal written by the switch before: a transaction started then (its start a
    txn_event row, its row's history empty) and answered after shows both, in order."""
    journal, operator = journals
    record = make_record()
    await journal.commit(TxnStarted.of(record, 100.0))
    sqlite = isinstance(operator, SqliteOperatorJournal)
    mark = "?" if sqlite else "%s"  # the start as the switch before wrote it
    values = ", ".join([mark] * 5)
    written_before = f"INSERT INTO txn_event (rrn, at, state, code, detail) VALUES ({values})"
    _execute(operator, "UPDATE txn SET events = NULL")
    _execute(operator, written_before, record.rrn, 100.0, "sending", None, None)
    record.state, record.code = "declined", "51"
    await journal.commit(TxnUpdated.of(record, 101.0, "declined by the bank"))
    assert [(e.at, e.state, e.detail) for e in operator.transaction(record.rrn).events] == [
        (100.0, "sending", None),
        (101.0, "declined", "declined by the bank"),
    ]


async def test_a_terminals_transactions_of_a_day_in_a_window(
    journals: tuple[Journal, OperatorJournal],
) -> None:
    journal, operator = journals
    for index, at in enumerate((100.0, 200.0, 300.0)):
        await journal.commit(TxnStarted.of(make_record(f"63260000000{index}"), at))
    await journal.commit(TxnStarted.of(make_record("632600000009", terminal_id="POS2"), 200.0))
    shown = operator.terminal_transactions("POS00001", "1122", 150.0, 300.0)
    assert [view.rrn for view in shown] == ["632600000001"]
    assert operator.terminal_transactions("POS00001", "1123", 0.0, 1000.0) == []


async def test_reversals_are_listed_and_retried(
    journals: tuple[Journal, OperatorJournal],
) -> None:
    journal, operator = journals
    first, second = make_record("632600000001"), make_record("632600000002", bank="abc")
    await journal.commit(TxnStarted.of(first, 100.0), TxnStarted.of(second, 100.0))
    await journal.commit(
        ReversalQueued(rrn=first.rrn, bank="icbc", reason="68", at=100.0),
        ReversalQueued(rrn=second.rrn, bank="abc", reason="68", at=100.0),
    )
    [icbc] = operator.reversals(bank="icbc", state=None)
    [abc] = operator.reversals(bank="abc", state="pending")
    gave_up = ReversalAttempted(
        saf_id=icbc.id, state="manual", attempts=10, next_attempt_at=0.0, result="96", at=150.0
    )
    await journal.commit(
        gave_up, msgspec.structs.replace(gave_up, saf_id=abc.id, state="delivered")
    )
    assert [view.rrn for view in operator.reversals(bank=None, state=None)] == [first.rrn]
    assert [view.rrn for view in operator.reversals(bank=None, state="delivered")] == [second.rrn]

    retried = operator.retry_reversal(icbc.id, 500.0)
    assert (retried.state, retried.next_attempt_at, retried.last_result) == (
        "pending", 500.0, "96 (retry requested)",
    )  # fmt: skip
    [due] = await journal.due_reversals("icbc", 500.0, 10)
    assert due.saf_id == icbc.id
    with pytest.raises(OperatorError, match="was delivered already"):
        operator.retry_reversal(abc.id, 500.0)
    with pytest.raises(OperatorError, match="no reversal with id 999"):
        operator.retry_reversal(999, 500.0)
