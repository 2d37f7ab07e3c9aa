"""What ``switch top`` and ``switch status`` draw, from status documents: plain functions,
no I/O (``commands.py`` fetches the documents and owns the terminal).

:func:`frame` works out the numbers of one screen from two documents: rates and
window percentiles over the interval between them (their counters are cumulative), or,
given one document only, since the switch started. :func:`render` turns a frame into
rich tables.
"""

from __future__ import annotations

import msgspec
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from switch.admin.status import (
    BankStatus,
    ChannelStatus,
    StandInStatus,
    StatusDocument,
    WorkerStatus,
)
from switch.core.ledger import LedgerFigures
from switch.core.stats import HistogramSnapshot


class BankRow(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    tps: float
    p50_ms: float | None
    p99_ms: float | None
    approval: float | None
    """Approved (00) of the transactions answered, 0 to 1; None with none answered."""
    links_up: int
    links: int
    in_flight: int
    window: int
    queued: int
    queue_limit: int
    saf_pending: int
    saf_manual: int
    circuit_open: bool


class ChannelRow(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    connections: int
    max_connections: int
    tps: float
    shed_per_s: float
    """Requests answered 91 for want of capacity, per second."""
    connections_refused: int
    """Connections closed at accept, in the interval (since start without one)."""


class JournalRow(msgspec.Struct, frozen=True, kw_only=True):
    commit_p99_ms: float | None
    commits_per_s: float
    changes_per_commit: float | None
    queued: int
    writable: bool
    failures: int


class Frame(msgspec.Struct, frozen=True, kw_only=True):
    switch_version: str
    now: str
    uptime_s: float
    interval_s: float | None
    """The numbers' span: the time between the two documents, or None for since start."""
    ready: bool
    not_ready: list[str]
    in_use: int
    slots: int
    waiting: int
    overloaded: bool
    banks: list[BankRow]
    channels: list[ChannelRow]
    journal: JournalRow
    workers: list[WorkerStatus] = msgspec.field(default_factory=list)
    """Each worker of a switch of several processes; empty for one."""
    stand_in: list[StandInStatus] = []
    ledger: LedgerFigures | None = None
    """Worker 0's on-us ledger, as last read."""


def _rate(now: int, before: int, seconds: float) -> float:
    return round((now - before) / seconds, 1) if seconds > 0 else 0.0


def _window(now: HistogramSnapshot, before: HistogramSnapshot | None) -> HistogramSnapshot:
    return now if before is None else now.minus(before)


def frame(previous: StatusDocument | None, current: StatusDocument) -> Frame:
    """One screen's numbers: over the interval since ``previous``, or since the switch
    started without one (or when ``previous`` is of an earlier run: uptime went back)."""
    if previous is not None and previous.uptime_s >= current.uptime_s:
        previous = None  # the same instant, or the switch restarted in between
    seconds = current.uptime_s - previous.uptime_s if previous else current.uptime_s
    banks_before = {bank.name: bank for bank in previous.banks} if previous else {}
    channels_before = {channel.name: channel for channel in previous.channels} if previous else {}
    journal, journal_before = current.journal, previous.journal if previous else None
    commits = journal.commits - (journal_before.commits if journal_before else 0)
    changes = journal.changes - (journal_before.changes if journal_before else 0)
    commit_latency = _window(
        journal.commit_latency, journal_before.commit_latency if journal_before else None
    )
    return Frame(
        switch_version=current.switch_version,
        now=current.now,
        uptime_s=current.uptime_s,
        interval_s=round(seconds, 3) if previous else None,
        ready=current.ready,
        not_ready=current.not_ready,
        in_use=current.admission.in_use,
        slots=current.admission.slots,
        waiting=current.admission.waiting,
        overloaded=current.admission.overloaded,
        banks=[_bank(bank, banks_before.get(bank.name), seconds) for bank in current.banks],
        stand_in=current.stand_in,
        channels=[
            _channel(channel, channels_before.get(channel.name), seconds)
            for channel in current.channels
        ],
        journal=JournalRow(
            commit_p99_ms=commit_latency.quantile_ms(0.99),
            commits_per_s=round(commits / seconds, 1) if seconds > 0 else 0.0,
            changes_per_commit=round(changes / commits, 1) if commits else None,
            queued=journal.queued,
            writable=journal.writable,
            failures=journal.failures,
        ),
        workers=current.workers,
        ledger=current.ledger,
    )


def _bank(bank: BankStatus, before: BankStatus | None, seconds: float) -> BankRow:
    latency = _window(bank.latency, before.latency if before else None)
    answered = bank.transactions - (before.transactions if before else 0)
    approved = bank.approved - (before.approved if before else 0)
    return BankRow(
        name=bank.name,
        tps=_rate(bank.transactions, before.transactions if before else 0, seconds),
        p50_ms=latency.quantile_ms(0.50),
        p99_ms=latency.quantile_ms(0.99),
        approval=approved / answered if answered > 0 else None,
        links_up=bank.links_up,
        links=len(bank.links),
        in_flight=sum(link.in_flight for link in bank.links),
        window=sum(link.window for link in bank.links),
        queued=bank.queued,
        queue_limit=bank.queue_limit,
        saf_pending=bank.saf_pending,
        saf_manual=bank.saf_manual,
        circuit_open=bank.circuit_open,
    )


def _channel(channel: ChannelStatus, before: ChannelStatus | None, seconds: float) -> ChannelRow:
    return ChannelRow(
        name=channel.name,
        connections=channel.connections,
        max_connections=channel.max_connections,
        tps=_rate(channel.transactions, before.transactions if before else 0, seconds),
        shed_per_s=_rate(channel.shed, before.shed if before else 0, seconds),
        connections_refused=channel.connections_refused
        - (before.connections_refused if before else 0),
    )


# -- drawing -------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole}" + (f" {part / whole:.0%}" if whole else "")


def _duration(seconds: float) -> str:
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    clock = f"{hour:02d}:{minute:02d}:{second:02d}"
    return f"{days}d {clock}" if days else clock


def render(current: Frame | None, *, error: str | None = None) -> RenderableType:
    """A frame as rich tables: a header line, the banks, the channels, the journal; with
    ``error`` (the switch did not answer) above the last frame drawn, if any."""
    parts: list[RenderableType] = []
    if error is not None:
        parts.append(Text(f"switch not answering: {error}", style="bold red"))
    if current is None:
        return Group(*parts)
    span = "since start" if current.interval_s is None else f"last {current.interval_s:.1f} s"
    state = Text("ready", style="green") if current.ready else Text("NOT READY", style="bold red")
    header = Text.assemble(
        f"payswitch {current.switch_version}  up {_duration(current.uptime_s)}  ",
        state,
        f"  in flight {current.in_use}/{current.slots}  waiting {current.waiting}",
        ("  OVERLOADED" if current.overloaded else "", "bold red"),
        f"  ({span}, {current.now})",
    )
    parts.append(header)
    parts.extend(Text(f"  not ready: {reason}", style="red") for reason in current.not_ready)
    if current.workers:
        parts.append(worker_table(current))
    parts.append(bank_table(current))
    if current.stand_in:
        parts.append(stand_in_table(current))
    parts.append(channel_table(current))
    journal = current.journal
    parts.append(
        Text(
            f"journal: commit p99 {_ms(journal.commit_p99_ms)} ms, "
            f"{journal.commits_per_s:g} commits/s, "
            f"{_ms(journal.changes_per_commit)} changes a commit, {journal.queued} queued"
            + ("" if journal.writable else f", NOT WRITABLE ({journal.failures} failed)")
        )
    )
    if current.ledger is not None:
        parts.append(ledger_line(current.ledger))
    return Group(*parts)


def ledger_line(figures: LedgerFigures) -> Text:
    """The on-us ledger: its transfers by state, and whether debits equal credits."""
    transfers = figures.transfers
    line = (
        f"ledger: {transfers.get('pending', 0)} pending, {transfers.get('posted', 0)} posted, "
        f"{transfers.get('voided', 0)} voided transfers"
    )
    off = {key: value for key, value in figures.imbalance().items() if value}
    if not off:
        return Text(line + ", balanced")
    said = ", ".join(f"{unit} {phase} {value:+d}" for (unit, phase), value in sorted(off.items()))
    return Text(f"{line}, NOT BALANCED (debits - credits: {said})", style="bold red")


def bank_table(current: Frame) -> Table:
    table = Table(title="banks", title_justify="left", expand=False)
    for heading in ("bank", "TPS", "p50 ms", "p99 ms", "approved", "links", "window", "queue"):
        table.add_column(heading, justify="left" if heading == "bank" else "right")
    table.add_column("SAF (manual)", justify="right")
    for bank in current.banks:
        links = f"{bank.links_up}/{bank.links}"
        table.add_row(
            bank.name + (" (circuit open)" if bank.circuit_open else ""),
            f"{bank.tps:g}",
            _ms(bank.p50_ms),
            _ms(bank.p99_ms),
            "-" if bank.approval is None else f"{bank.approval:.1%}",
            links if bank.links_up else Text(links, style="bold red"),
            _share(bank.in_flight, bank.window),
            _share(bank.queued, bank.queue_limit),
            f"{bank.saf_pending} ({bank.saf_manual})",
        )
    return table


def stand_in_table(current: Frame) -> Table:
    """Per bank: stood in today, advices pending (and their amount), manual, the
    oldest's age, losses today (risk.md)."""
    table = Table(title="stand-in", title_justify="left", expand=False)
    for heading in ("bank", "today", "advices pending", "yuan", "manual", "oldest", "lost today"):
        table.add_column(heading, justify="left" if heading == "bank" else "right")
    for row in current.stand_in:
        age = "-" if row.oldest_age_s is None else _duration(row.oldest_age_s)
        table.add_row(
            row.bank + ("" if row.enabled else " (off)"),
            str(row.today),
            str(row.pending),
            f"{row.pending_fen // 100}.{row.pending_fen % 100:02d}",
            str(row.manual) if not row.manual else Text(str(row.manual), style="bold red"),
            age,
            str(row.losses_today),
        )
    return table


def channel_table(current: Frame) -> Table:
    table = Table(title="channels", title_justify="left", expand=False)
    for heading in ("channel", "connections", "TPS", "91/s (shed)", "conns refused"):
        table.add_column(heading, justify="left" if heading == "channel" else "right")
    for channel in current.channels:
        table.add_row(
            channel.name,
            _share(channel.connections, channel.max_connections),
            f"{channel.tps:g}",
            f"{channel.shed_per_s:g}",
            str(channel.connections_refused),
        )
    return table


def worker_table(current: Frame) -> Table:
    table = Table(title="workers", title_justify="left", expand=False)
    for heading in ("worker", "state", "pid", "up", "restarts", "connections", "answered"):
        table.add_column(heading, justify="left" if heading in ("worker", "state") else "right")
    table.add_column("last exit / not ready", justify="left")
    for worker in current.workers:
        fine = worker.state == "running" and worker.ready
        state = worker.state if worker.ready or worker.state != "running" else "not ready"
        notes = "; ".join(worker.not_ready) or (worker.last_exit or "")
        table.add_row(
            str(worker.index),
            Text(state, style="green" if fine else "bold red"),
            "-" if worker.pid is None else str(worker.pid),
            "-" if worker.uptime_s is None else _duration(worker.uptime_s),
            str(worker.restarts),
            str(worker.connections),
            str(worker.transactions),
            notes,
        )
    return table
