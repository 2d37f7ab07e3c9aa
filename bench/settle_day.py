"""Settling a synthetic day (``bench.synthetic_day``) as the running switch does, in a
process of its own: ``python -m bench.settle_day FOLDER``.

The settlement is the switch's own ``SettlementService.settle`` on real files, end to
end: each bank's clearing file read, decoded and stored, the date matched, paid and
posted, the payout and reconciliation files written, the reversals decided handed to a
real (running) journal. It is timed from the call to its return; the process's peak
resident set (VmHWM, and ``ru_maxrss``) is read just after, so it is the settlement's
(and the interpreter's), not the build's: the day is built by another process.

Then, not timed, what it found is checked against what the day's manifest says was
injected: every reconciliation line's category and action, the matched count, every
merchant's payout line (as the builder worked it out in Python), the ledger balanced,
the reversals in the journal's store-and-forward, the corrupt file rejected; and the
next date is settled too, where the moved records must be ``timing``. The result is
one JSON object (:class:`SettleRun`) on stdout; the service's log goes to stderr.

A day built on PostgreSQL (``bench.synthetic_day --dsn``) is settled there: the
PostgreSQL journal and settlement store on its database, as ``switch run`` opens them.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import psycopg
import trio

from bench.procstat import memory_mb
from bench.synthetic_day import (
    CUTOFF_HOUR,
    UTC_OFFSET_H,
    SyntheticDay,
    clearing_dir,
    engine_of,
    journal_dsn,
    journal_path,
    load_day,
    merchants_path,
    out_dir,
    settlement_store,
)
from switch.core.calendar import BusinessCalendar, parse_local_time
from switch.core.merchants import MerchantBook, parse_merchants
from switch.core.settlement import (
    SettlementStatus,
    payout_file,
    payout_file_name,
    recon_file,
    recon_file_name,
)
from switch.log import configure_logging
from switch.net.settlement import SettlementService
from switch.store.port import Journal, OperatorJournal
from switch.store.postgresql import JournalDatabase, PostgresJournal
from switch.store.postgresql.operator import PostgresOperatorJournal
from switch.store.postgresql.settlement import PostgresSettlementStore
from switch.store.settlement_port import SettlementStore
from switch.store.sqlite import JournalFile, SqliteJournal, SqliteOperatorJournal

SHOWN_PROBLEMS: Final = 20


class StepTime(msgspec.Struct, frozen=True, kw_only=True):
    step: str
    """The statement's first words."""
    seconds: float


class Phase(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    seconds: float


class SettleRun(msgspec.Struct, frozen=True, kw_only=True):
    business_date: str
    backend: str = "sqlite"
    """The journal's engine, and so the settlement store's: sqlite or postgresql."""
    transactions: int
    """The date's transactions in the journal."""
    clearing_records: int
    """Detail records in the date's files (the rejected one's included)."""
    seconds: float
    """SettlementService.settle(date), end to end."""
    rate_per_s: float
    """Transactions settled per second."""
    peak_rss_mb: float
    """VmHWM just after the settlement: this process's peak since it started."""
    maxrss_mb: float
    """getrusage's ru_maxrss, the same peak as the kernel counts it for rusage."""
    server_peak_rss_mb: float | None = None
    """On PostgreSQL, the VmHWM of the server process that ran the settlement (its
    connection's backend; shared buffers it touched included), when /proc shows it."""
    phases: list[Phase]
    """Where the time went, by the store calls the service made."""
    steps: list[StepTime]
    """Each SQL statement of the settlement (``SettlementSql.settle_steps``), when timed."""
    categories: dict[str, int]
    """What the settlement found: category -> transactions (matched included)."""
    expected: dict[str, int]
    """What the manifest says it must find."""
    checked: bool
    """Whether the checks ran."""
    problems: list[str]
    """Every difference from the manifest (the first few); empty: all as injected."""
    next_date_seconds: float | None = None
    """The next date's settlement (the moved records found late), not part of the time."""

    @property
    def ok(self) -> bool:
        return self.checked and not self.problems


TIMED_CALLS: Final = {
    "accept_clearing_file": "store the clearing records",
    "settle": "settle (the SQL, one transaction)",
    "payout_lines": "read the payout and recon lines",
    "recon_lines": "read the payout and recon lines",
}
"""The store's calls the service makes that are timed, and the phase each counts in."""


def time_calls(store: SettlementStore, spent: dict[str, float]) -> None:
    """Adds the seconds each of ``store``'s TIMED_CALLS takes to its phase in ``spent``."""
    for name, phase in TIMED_CALLS.items():
        method = getattr(store, name)

        def timed(*args: Any, _method: Any = method, _phase: str = phase, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                spent[_phase] = spent.get(_phase, 0.0) + time.perf_counter() - started

        setattr(store, name, timed)


def day_journal(folder: Path) -> Journal:
    """The day's journal, on its engine, as the switch opens it (not yet running)."""
    dsn = journal_dsn(folder)
    if dsn is not None:
        return PostgresJournal(JournalDatabase(dsn))
    return SqliteJournal(JournalFile(journal_path(folder)))


def operator_journal(folder: Path) -> OperatorJournal:
    """The day's journal as ``switch journal`` and ``switch saf`` read it."""
    dsn = journal_dsn(folder)
    if dsn is not None:
        return PostgresOperatorJournal(dsn)
    return SqliteOperatorJournal(journal_path(folder))


def service(
    folder: Path, day: SyntheticDay, store: SettlementStore, journal: Journal
) -> SettlementService:
    """The switch's settlement service over the day's folder, as ``switch run`` makes it
    (no bank links: settling needs none)."""
    calendar = BusinessCalendar(
        cutoff=parse_local_time(f"{CUTOFF_HOUR:02d}:00"),
        utc_offset_h=UTC_OFFSET_H,
        closes=store.closes(),
    )
    merchants: MerchantBook = parse_merchants(
        merchants_path(folder).read_text(), source=str(merchants_path(folder))
    )
    return SettlementService(
        store=store,
        journal=journal,
        calendar=calendar,
        merchants=merchants,
        connectors={},
        clearing_dir=lambda bank: clearing_dir(folder),
        out_dir=out_dir(folder),
        banks=lambda: list(day.banks),
        institution_of=lambda bank: day.institutions.get(bank, "0"),
        settle_deadline="03:00",
        utc_offset_h=UTC_OFFSET_H,
        nudge=lambda bank: None,
    )


async def settle_dates(
    folder: Path,
    dates: Sequence[str],
    *,
    store: SettlementStore | None = None,
    on_settled: Callable[[str, SettlementStatus, float], None] | None = None,
) -> list[SettlementStatus]:
    """Settles each date with the switch's service, a real journal running beside it;
    ``on_settled`` is told of each (with the seconds it took) as soon as it returns."""
    day = load_day(folder)
    store = store or settlement_store(folder)
    store.open()
    journal = day_journal(folder)
    statuses = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            settlement = service(folder, day, store, journal)
            for business_date in dates:
                started = time.perf_counter()
                status = await settlement.settle(business_date)
                if on_settled is not None:
                    on_settled(business_date, status, time.perf_counter() - started)
                statuses.append(status)
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    return statuses


def _short(statement: str) -> str:
    words = " ".join(statement.split())
    return words if len(words) <= 72 else words[:71] + "…"


def run(folder: Path, *, check: bool = True, time_steps: bool = True) -> SettleRun:
    """Settles the day's date (timed) and, with ``check``, checks it and settles the
    next date (not timed)."""
    day = load_day(folder)
    store = settlement_store(folder)
    spent: dict[str, float] = {}
    time_calls(store, spent)
    steps: list[StepTime] = []
    if time_steps:
        store.on_step = lambda statement, seconds: steps.append(
            StepTime(step=_short(statement), seconds=round(seconds, 3))
        )
    measured: dict[str, float] = {}
    phases: dict[str, float] = {}

    def settled(business_date: str, status: SettlementStatus, seconds: float) -> None:
        if business_date == day.business_date:
            measured["seconds"] = seconds
            measured["hwm"] = memory_mb(os.getpid())[1]
            measured["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            server = _server_peak_mb(folder)
            if server is not None:
                measured["server"] = server
            store.on_step = None
            phases.update(spent)  # the next date's calls are not this settlement's
        else:
            measured["next"] = seconds

    dates = [day.business_date, day.next_date] if check else [day.business_date]
    statuses = trio.run(lambda: settle_dates(folder, dates, store=store, on_settled=settled))
    seconds = measured["seconds"]
    timed = [Phase(name=name, seconds=round(part, 3)) for name, part in phases.items()]
    timed.append(Phase(name="read, decode, write the files, hand the reversals over",
                       seconds=round(seconds - sum(phases.values()), 3)))  # fmt: skip
    problems = _check(folder, day, statuses) if check else []
    more = [f"... and {len(problems) - SHOWN_PROBLEMS} more"] if problems[SHOWN_PROBLEMS:] else []
    found = {count.category: 0 for count in statuses[0].categories}
    for count in statuses[0].categories:
        found[count.category] += count.count
    expected: dict[str, int] = {}
    for category, _ in day.expected[day.business_date].values():
        expected[category] = expected.get(category, 0) + 1
    expected["matched"] = day.candidates - sum(
        1 for rrn in day.expected[day.business_date] if rrn not in set(day.injected["unknown"])
    )
    return SettleRun(
        business_date=day.business_date,
        backend=engine_of(folder),
        transactions=day.transactions,
        clearing_records=sum(
            count
            for name, count in day.clearing_files.items()
            if day.business_date.replace("-", "") in name
        ),
        seconds=round(seconds, 3),
        rate_per_s=round(day.transactions / seconds, 1),
        peak_rss_mb=round(measured["hwm"], 1),
        maxrss_mb=round(measured["maxrss"], 1),
        server_peak_rss_mb=round(measured["server"], 1) if "server" in measured else None,
        phases=timed,
        steps=steps,
        categories=dict(sorted(found.items())),
        expected=dict(sorted(expected.items())),
        checked=check,
        problems=problems[:SHOWN_PROBLEMS] + more,
        next_date_seconds=round(measured["next"], 3) if "next" in measured else None,
    )


def _server_peak_mb(folder: Path) -> float | None:
    """The peak resident set of the settlement store's backend, on a local server."""
    dsn = journal_dsn(folder)
    if dsn is None:
        return None
    with psycopg.connect(dsn) as connection:
        row = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (PostgresSettlementStore.application_name,),
        ).fetchone()
    if row is None:
        return None
    try:
        return memory_mb(int(row[0]))[1]
    except OSError:  # another machine's, or not ours to read
        return None


def _check(folder: Path, day: SyntheticDay, statuses: list[SettlementStatus]) -> list[str]:
    """Every way the settlement of the day (and of the next date) differs from what the
    manifest says was injected."""
    problems: list[str] = []
    store = settlement_store(folder)
    store.open()
    try:
        for business_date in (day.business_date, day.next_date):
            found = {line.rrn: (line.category, line.action) for line in
                     store.recon_lines(business_date)}  # fmt: skip
            wanted = day.expected[business_date]
            for rrn in sorted(set(found) | set(wanted)):
                if found.get(rrn) != wanted.get(rrn):
                    problems.append(f"{business_date} {rrn}: found {found.get(rrn)}, "
                                    f"injected {wanted.get(rrn)}")  # fmt: skip
            payouts = store.payout_lines(business_date)
            names = (payout_file_name(business_date), recon_file_name(business_date))
            files = (payout_file(payouts), recon_file(store.recon_lines(business_date)))
            for name, data in zip(names, files, strict=True):
                path = out_dir(folder) / name
                if not path.exists() or path.read_bytes() != data:
                    problems.append(f"{name}: not the stored lines' file")
        status = statuses[0]
        matched = sum(c.count for c in status.categories if c.category == "matched")
        unknown = set(day.injected["unknown"])
        switch_side = sum(1 for rrn in day.expected[day.business_date] if rrn not in unknown)
        if matched != day.candidates - switch_side:
            problems.append(f"{matched} matched, not {day.candidates - switch_side}")
        lines = {
            line.merchant_id: (line.sales_count, line.sales_fen, line.refunds_count,
                               line.refunds_fen, line.fees_fen, line.held_fen)
            for line in store.payout_lines(day.business_date)
        }  # fmt: skip
        for merchant in sorted(set(lines) | set(day.payouts)):
            if lines.get(merchant) != day.payouts.get(merchant):
                problems.append(f"payout of {merchant}: {lines.get(merchant)}, worked out "
                                f"{day.payouts.get(merchant)}")  # fmt: skip
        for line in store.payout_lines(day.business_date):
            net = line.sales_fen - line.refunds_fen - line.fees_fen + line.carried_in_fen
            if line.net_fen != net or line.payout_fen != max(net, 0):
                problems.append(f"payout of {line.merchant_id}: net {line.net_fen}, not {net}")
        debits, credits = store.ledger_totals()
        if debits != credits or not debits:
            problems.append(f"ledger: debits {debits}, credits {credits}")
        if store.pending_reversal_orders():
            problems.append("reversal orders decided but not handed to the journal")
        if day.corrupt_bank is not None:
            rejected = store.clearing_file(day.corrupt_bank, day.business_date)
            if rejected is None or rejected.status != "rejected":
                problems.append(f"{day.corrupt_bank}'s corrupt file was not rejected")
    finally:
        store.close()
    reversed_rrns = {rrn for kind in ("unknown", "declined_listed", "reversed_listed")
                     for rrn in day.injected[kind]}  # fmt: skip
    journal = operator_journal(folder)
    try:
        queued = {view.rrn for view in journal.reversals(bank=None, state=None)}
        never_sent = {journal.transaction(rrn).transaction.state for rrn in day.injected["unknown"]}
    finally:
        journal.close()
    if queued != reversed_rrns:
        problems.append(f"the journal queued {len(queued)} reversals, not the "
                        f"{len(reversed_rrns)} bank_only ones")  # fmt: skip
    if never_sent - {"bank_only"}:
        problems.append(f"records the switch never sent are in its journal as {never_sent}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.settle_day",
        description="Settle a day built by bench.synthetic_day with the switch's "
        "SettlementService; print the time, peak RSS and checks as JSON.",
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("--no-check", action="store_true", help="settle only, check nothing")
    parser.add_argument("--no-steps", action="store_true", help="do not time each SQL step")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    configure_logging(args.log_level, stream=sys.stderr.buffer)
    result = run(args.folder, check=not args.no_check, time_steps=not args.no_steps)
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
