"""The running switch's state, read from its parts: the status document (``GET
/status``, ``switch top``), readiness (``GET /readyz``) and what ``/metrics`` is made of.

Every number is read, at the moment someone asks, from counters the parts keep in
plain attributes (``TransactionStats``, the links, queues and listeners' own counts);
nothing is computed on the hot path for it. The one thing read from disk is the
reversal backlog, a journal question asked under a deadline before each document.

The parts are read through the switch's :class:`~switch.admin.port.SwitchView` on
every call, not kept: a part made late (the listeners start after recovery) or replaced
(a reload) is what the next reading sees.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from typing import Final

import structlog
import trio

import switch
from switch.admin.peers import Peers, merge_documents
from switch.admin.port import BankReading, ListenerReading, StandInReading, SwitchView
from switch.admin.status import (
    BankStatus,
    ChannelStatus,
    JournalStatus,
    StandInStatus,
    StatusDocument,
    TransactionCount,
)
from switch.core.credit.billing import CreditTotals
from switch.core.ledger import LedgerFigures
from switch.core.settlement import SettlementWatch
from switch.core.stats import HistogramSnapshot, LatencyHistogram, PathKey, TransactionStats
from switch.errors import SwitchError
from switch.store.port import AdviceBacklog, JournalError, ReversalBacklog
from switch.store.settlement_port import SettlementError

log = structlog.get_logger()

APPROVED: Final = "00"
BACKLOG_WAIT_S: Final = 1.0
"""The longest a document waits for its turn at the journal's reader (shared with the
switch's own look-ups); past it the backlog last read is used."""
BACKLOG_TROUBLE_LOG_S: Final = 10.0


def iso_utc(at: float) -> str:
    """ISO 8601 UTC, to the millisecond, as every time the status document holds."""
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def switch_version() -> str:
    try:
        return metadata.version("payswitch")
    except metadata.PackageNotFoundError:  # run from a source tree never installed
        return switch.__version__


class StatusCollector:
    """Reads one running switch (see the module's docstring)."""

    def __init__(self, switch: SwitchView, peers: Peers | None = None) -> None:
        self.switch = switch
        self.peers = peers
        """The other workers (worker 0 of several, switch.admin.peers); None: alone."""
        self.started_at = time.time()
        self._started = time.monotonic()
        self.version = switch_version()
        self._backlog: dict[str, ReversalBacklog] = {}
        self._settlement: SettlementWatch | None = None
        self._credit: CreditTotals | None = None
        self._ledger: LedgerFigures | None = None
        self._advices: dict[str, AdviceBacklog] = {}
        self._backlog_read = trio.Lock()  # one scrape at a time asks the journal
        self._next_trouble_log = 0.0

    def uptime_s(self) -> float:
        return round(time.monotonic() - self._started, 3)

    # -- the one question for the disk -----------------------------------------------

    async def refresh(self) -> None:
        """Reads the reversal backlog from the journal, and the other workers' reports
        (worker 0 of several), at once."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._refresh_backlog)
            nursery.start_soon(self.refresh_workers)
            nursery.start_soon(self._refresh_settlement)
            nursery.start_soon(self._refresh_credit)

    async def _refresh_settlement(self) -> None:
        """The settlement's watch (worker 0's), within BACKLOG_WAIT_S; else the last."""
        service = self.switch.settlement
        if service is None:
            return
        with trio.move_on_after(BACKLOG_WAIT_S):
            try:
                self._settlement = await service.watch()
            except (SwitchError, SettlementError) as exc:
                log.warning("admin_settlement_unreadable", error=str(exc))

    async def _refresh_credit(self) -> None:
        """The credit line's figures (worker 0's), within BACKLOG_WAIT_S; else the last."""
        credit = self.switch.credit
        if credit is None:
            return
        with trio.move_on_after(BACKLOG_WAIT_S):
            try:
                self._credit = await credit.totals()
            except SwitchError as exc:
                log.warning("admin_credit_unreadable", error=str(exc))
            try:
                self._ledger = await credit.ledger()
            except SwitchError as exc:
                log.warning("admin_ledger_unreadable", error=str(exc))

    async def refresh_workers(self) -> None:
        """The other workers' reports and their supervisor's (worker 0 of several)."""
        if self.peers is not None:
            await self.peers.gather()

    async def _refresh_backlog(self) -> None:
        """When the journal cannot answer (closed, failing) or its reader stays busy
        for BACKLOG_WAIT_S, the backlog last read stands."""
        with trio.move_on_after(BACKLOG_WAIT_S):
            async with self._backlog_read:
                try:
                    backlog = await self.switch.reversal_backlog()
                except JournalError as exc:
                    now = time.monotonic()
                    if now >= self._next_trouble_log:
                        self._next_trouble_log = now + BACKLOG_TROUBLE_LOG_S
                        log.warning("admin_backlog_unreadable", error=str(exc))
                    return
                if backlog is None:  # no journal yet
                    return
                self._backlog = {entry.bank: entry for entry in backlog}
                try:
                    advices = await self.switch.advice_backlog()
                except JournalError:
                    return  # said above, at most so often; the last read stands
                if advices is not None:
                    self._advices = {entry.bank: entry for entry in advices}

    # -- readiness -------------------------------------------------------------------

    def not_ready(self) -> list[str]:
        """What keeps the switch from taking traffic, each a sentence naming the part;
        empty when both listeners are bound, the journal is writable and every bank has
        a link signed on; with several workers, every other worker running, answering
        and ready (as last gathered: :meth:`refresh_workers`)."""
        own = self._not_ready(self.switch.listener_readings(), self.switch.bank_readings())
        return own if self.peers is None else [*own, *self.peers.not_ready()]

    def _not_ready(self, listeners: list[ListenerReading], banks: list[BankReading]) -> list[str]:
        reasons: list[str] = []
        for listener in listeners:
            if not listener.started or not listener.port:
                reasons.append(f"the {listener.name} listener is not bound yet")
            elif not listener.listening:
                reasons.append(f"the {listener.name} listener has stopped accepting (draining)")
        statistics = self.switch.journal_reading().statistics
        if statistics is None:
            reasons.append("the journal is not open")
        elif not statistics.writable:
            why = "its latest commit failed" if statistics.failures else "it is not running"
            reasons.append(f"the journal is not writable: {why}")
        for bank in banks:
            if not bank.retired and not any(link.state == "up" for link in bank.links):
                reasons.append(
                    f"bank {bank.name}: no link signed on (0 of {bank.links_configured} up)"
                )
        return reasons

    # -- the document ----------------------------------------------------------------

    def transaction_stats(self) -> TransactionStats:
        return self.switch.transaction_stats()

    def _real_age_s(self, business_at: float) -> float:
        """The real seconds since ``business_at``, a time the journal recorded on the
        business clock."""
        clock = self.switch.clock
        return round(max(0.0, clock.real_s(clock.now() - business_at)), 3)

    def document(self) -> StatusDocument:
        """The status document of this moment (the backlog and the other workers as
        last refreshed): with several workers, the switch's (switch.admin.peers)."""
        own = self.own_document()
        if self.peers is None:
            return own
        others = [report.document for report in self.peers.last.reports.values()]
        return merge_documents(
            own, others, self.peers.worker_statuses(own, os.getpid()), self.peers.not_ready()
        )

    def own_document(self) -> StatusDocument:
        """This process's status document alone."""
        view = self.switch
        stats = self.transaction_stats()
        listeners = view.listener_readings()
        banks = view.bank_readings()
        not_ready = self._not_ready(listeners, banks)
        return StatusDocument(
            switch_version=self.version,
            started_at=iso_utc(self.started_at),
            now=iso_utc(time.time()),
            uptime_s=self.uptime_s(),
            ready=not not_ready,
            not_ready=not_ready,
            config=view.config_status,
            admission=view.admission_statistics(),
            channels=[self._channel(listener, stats) for listener in listeners if listener.started],
            banks=[self._bank(bank, stats) for bank in banks],
            journal=self._journal(stats),
            transactions=[
                TransactionCount(channel=channel, kind=kind, bank=bank, code=code, count=count)
                for (channel, kind, bank, code), count in sorted(stats.counts.items())
            ],
            settlement=self._settlement,
            credit=self._credit,
            ledger=self._ledger,
            certificates=view.certificate_expiries(),
            risk=view.risk_status(),
            stand_in=[self._stand_in(reading) for reading in view.stand_in_readings()],
        )

    def _stand_in(self, reading: StandInReading) -> StandInStatus:
        backlog = self._advices.get(reading.bank)
        return StandInStatus(
            bank=reading.bank, enabled=reading.enabled, approvals=reading.approvals,
            today=reading.today, declines=reading.declines, advices=reading.advices,
            losses_today=reading.losses_today,
            pending=backlog.pending + backlog.manual if backlog is not None else 0,
            pending_fen=backlog.pending_fen if backlog is not None else 0,
            manual=backlog.manual if backlog is not None else 0,
            oldest_age_s=(
                self._real_age_s(backlog.oldest_created_at) if backlog is not None else None
            ),
        )  # fmt: skip

    def _channel(self, listener: ListenerReading, stats: TransactionStats) -> ChannelStatus:
        name = listener.name
        return ChannelStatus(
            name=name,
            connections=listener.connections,
            max_connections=listener.max_connections,
            connections_refused=listener.refused,
            transactions=sum(
                count for (channel, *_), count in stats.counts.items() if channel == name
            ),
            shed=listener.shed,
            latency=merged(h for (channel, _), h in stats.latency_ms.items() if channel == name),
        )

    def _bank(self, reading: BankReading, stats: TransactionStats) -> BankStatus:
        name = reading.name
        links = reading.links
        backlog = self._backlog.get(name)
        counts = [
            (code, count) for (_, _, bank, code), count in stats.counts.items() if bank == name
        ]
        return BankStatus(
            name=name,
            retired=reading.retired,
            links=list(links),
            links_up=sum(1 for link in links if link.state == "up"),
            circuit_open=reading.circuit_open,
            queued=reading.queued,
            queue_limit=reading.queue_limit,
            refused_queue_full=reading.refused_queue_full,
            expired=reading.expired,
            link_state_changes=sum(link.state_changes for link in links),
            transactions=sum(count for _, count in counts),
            approved=sum(count for code, count in counts if code == APPROVED),
            latency=merged(h for (_, bank), h in stats.latency_ms.items() if bank == name),
            bank_wait=merged(h for (_, bank), h in stats.bank_ms.items() if bank == name),
            saf_pending=backlog.pending + backlog.manual if backlog is not None else 0,
            saf_manual=backlog.manual if backlog is not None else 0,
            saf_oldest_age_s=(
                self._real_age_s(backlog.oldest_created_at) if backlog is not None else None
            ),
            saf_unjournaled=reading.saf_unjournaled,
        )

    def _journal(self, stats: TransactionStats) -> JournalStatus:
        reading = self.switch.journal_reading()
        waited = merged(stats.journal_ms.values())
        statistics = reading.statistics
        if statistics is None:
            empty = HistogramSnapshot.empty()
            return JournalStatus(
                backend="", durability=reading.durability, writable=False,
                commits=0, changes=0, failures=0, queued=0, commit_latency=empty,
                group_size=empty, journal_wait=waited,
            )  # fmt: skip
        return JournalStatus(
            backend=statistics.backend,
            durability=reading.durability,
            writable=statistics.writable,
            commits=statistics.commits,
            changes=statistics.changes,
            failures=statistics.failures,
            queued=statistics.queued,
            commit_latency=statistics.commit_latency or HistogramSnapshot.empty(),
            group_size=statistics.group_size or HistogramSnapshot.empty(),
            journal_wait=waited,
        )


def merged(histograms: Iterable[LatencyHistogram]) -> HistogramSnapshot:
    """Several histograms as one (a bank's over every channel, a channel's over every
    bank)."""
    total = HistogramSnapshot.empty()
    for histogram in histograms:
        total = total.plus(histogram.snapshot())
    return total


def by_path(histograms: dict[PathKey, LatencyHistogram]) -> list[tuple[PathKey, HistogramSnapshot]]:
    """Each (channel, bank)'s histogram as read now, in a stable order."""
    return [(key, histograms[key].snapshot()) for key in sorted(histograms)]
