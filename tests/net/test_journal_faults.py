"""A journal that stops taking writes while the switch runs (its disk full, or made
read-only): through the real switch, simulator and journal over loopback, on each
engine. The failure is injected where the engine reports it: SQLite at COMMIT on the
switch's own connection, PostgreSQL where psycopg raises the server's error for the
group's transaction; everything around it is the real code.

The invariant: every approval from a bank is either journaled and answered as an
approval, or reversed at the bank; also while the journal cannot be written, and
without a restart."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import psycopg
import pytest
import trio

from switch.app import SwitchApp
from switch.store.postgresql import PostgresJournal
from switch.store.sqlite import JournalFile, SqliteJournal
from switch.store.writes import Write
from tests.conftest import LogSink
from tests.net.helpers import (
    FAST_SAF,
    PAN_ICBC,
    eventually,
    online_client,
    pos_client,
    purchase,
    start_switch,
)
from tests.store.engines import ENGINES, Configure, config_maker, journal_rows


@pytest.fixture(params=ENGINES)
def make_config(request: pytest.FixtureRequest) -> Configure:
    """The tests' ``make_config``, with the journal on this run's engine."""
    return config_maker(request)


# What each engine says when its storage is full, and when it is read-only.
DISK_FULL = "database or disk is full"
READ_ONLY = "attempt to write a readonly database"
_POSTGRESQL_ERRORS = {
    DISK_FULL: psycopg.errors.DiskFull("could not extend file: No space left on device"),
    READ_ONLY: psycopg.errors.ReadOnlySqlTransaction(
        "cannot execute INSERT in a read-only transaction"
    ),
}


class FailingDisk:
    """Makes the journal's commits fail as its engine fails them on a full disk (or a
    read-only one) while ``failing`` is set; nothing of the group is written."""

    def __init__(self, app: SwitchApp, error: str = DISK_FULL) -> None:
        self.error = error
        self.failing = False
        if isinstance(app.journal, PostgresJournal):
            self._fail_postgresql(app.journal)
            return
        assert isinstance(app.journal, SqliteJournal)
        self.file: JournalFile = app.journal.file
        real = self.file._execute

        def execute(statement: str, *, wait: bool) -> bool:
            if self.failing and statement == "COMMIT":
                raise sqlite3.OperationalError(self.error)
            return real(statement, wait=wait)

        self.file._execute = execute  # type: ignore[method-assign]

    def _fail_postgresql(self, journal: PostgresJournal) -> None:
        loop_writer = journal._loop_writer  # the journal's group commit, from the loop
        assert loop_writer is not None
        real = loop_writer.apply

        async def apply(writes: Iterable[Write]) -> None:
            if self.failing:
                raise _POSTGRESQL_ERRORS[self.error]
            await real(writes)

        loop_writer.apply = apply  # type: ignore[method-assign]


def txn_states(app: SwitchApp) -> dict[str, str]:
    return {row["rrn"]: row["state"] for row in journal_rows(app.config, "SELECT * FROM txn")}


async def test_an_approval_the_journal_cannot_record_is_answered_96_and_reversed(
    nursery: trio.Nursery, make_config: Configure, log_sink: LogSink
) -> None:
    app = await start_switch(nursery, make_config(saf=FAST_SAF))
    simulator = app.simulators["icbc"]
    disk = FailingDisk(app)
    simulator.latency_s = 0.3
    client = await pos_client(app)
    await client.send(client.terminal.sale(1, PAN_ICBC, 4200))
    await eventually(lambda: simulator.statistics().pending == 1)  # journaled, at the bank
    disk.failing = True  # the disk fills while the bank approves
    _, response = await client.receive()
    assert response.fields[39] == "96"
    rrn = str(response.fields[37])
    # Reversed at the bank from memory: no restart, the journal still failing.
    await eventually(lambda: simulator.totals().reversed == 4200)
    totals = simulator.totals()
    assert (totals.approved, totals.net) == (4200, 0)
    assert [line["rrn"] for line in log_sink.events("reversed_without_journal")] == [rrn]
    # Delivered: the forwarder lets it go once the bank's answer is in, just after the
    # bank applied it.
    await eventually(lambda: app.forwarders["icbc"].statistics()["unjournaled"] == 0)

    simulator.latency_s = 0
    refused = await client.request(client.terminal.sale(2, PAN_ICBC, 5100))
    assert refused.fields[39] == "96"  # nothing leaves for a bank that is not journaled
    assert simulator.totals().approvals == 1

    disk.failing = False  # room again: the switch goes on as before, no restart
    again = await client.request(client.terminal.sale(3, PAN_ICBC, 6100))
    assert again.fields[39] == "00"
    states = txn_states(app)
    assert states[str(again.fields[37])] == "approved"
    # The first is still "sending" in the journal (or reversed, once written): a restart
    # would reverse it again, which a bank applies once.
    assert states[rrn] in ("sending", "no_answer")


async def test_a_terminal_reversal_the_journal_cannot_queue_still_reaches_the_bank(
    nursery: trio.Nursery,
    make_config: Configure,
) -> None:
    app = await start_switch(nursery, make_config(saf=FAST_SAF))
    simulator = app.simulators["icbc"]
    disk = FailingDisk(app, READ_ONLY)
    client = await pos_client(app)
    sale = client.terminal.sale(1, PAN_ICBC, 3300)
    assert (await client.request(sale)).fields[39] == "00"
    disk.failing = True
    reversal = await client.request(client.terminal.reversal(sale))
    assert reversal.fields[39] == "96"  # the terminal sends it again later
    await eventually(lambda: simulator.totals().reversed == 3300)
    disk.failing = False
    assert (await client.request(client.terminal.reversal(sale))).fields[39] == "00"
    assert simulator.totals().reversed == 3300  # applied once


async def test_an_online_client_never_sees_the_journals_own_error(
    nursery: trio.Nursery, make_config: Configure, log_sink: LogSink
) -> None:
    app = await start_switch(nursery, make_config())
    disk = FailingDisk(app)
    disk.failing = True
    client = await online_client(app)
    result: Any = await client.request(purchase("full-1", 1200))
    assert result.code == "96" and result.message == "system malfunction"
    [line] = [line for line in log_sink.events("txn") if line["channel"] == "online"]
    # The operator is told, in the log, in the engine's words.
    assert any(words in line["reason"] for words in ("disk is full", "No space left"))
    disk.failing = False
    again: Any = await client.request(  # nothing was kept: the same id may be retried
        purchase("full-1", 1200)
    )
    assert again.approved
