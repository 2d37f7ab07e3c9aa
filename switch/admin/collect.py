"""The running switch's state, read from its parts: the status document (``GET
/status``, ``switch top``), readiness (``GET /readyz``) and what ``/metrics`` is made of.

Every number is read, at the moment someone asks, from counters the parts keep in
plain attributes (``TransactionStats``, the links, queues and listeners' own counts);
nothing is computed on the hot path for it. The one thing read from disk is the
reversal backlog, a journal question asked under a deadline before each document.

The parts are read through the app on every call, not kept: a part made late (the
listeners start after recovery) or replaced (a reload) is what the next reading sees.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING, Final

import structlog
import trio

import switch
from switch.admin.status import (
    BankStatus,
    ChannelStatus,
    JournalStatus,
    LinkStatus,
    StatusDocument,
    TransactionCount,
)
from switch.core.admission import AdmissionStatistics
from switch.core.stats import HistogramSnapshot, LatencyHistogram, PathKey, TransactionStats
from switch.store.port import JournalError, ReversalBacklog

if TYPE_CHECKING:
    from switch.app import SwitchApp
    from switch.net.bank_link import BankConnector
    from switch.net.channel import ChannelServer

log = structlog.get_logger()

APPROVED: Final = "00"
CHANNELS: Final = ("pos", "online")
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

    def __init__(self, app: SwitchApp) -> None:
        self.app = app
        self.started_at = time.time()
        self._started = time.monotonic()
        self.version = switch_version()
        self._backlog: dict[str, ReversalBacklog] = {}
        self._backlog_read = trio.Lock()  # one scrape at a time asks the journal
        self._next_trouble_log = 0.0

    def uptime_s(self) -> float:
        return round(time.monotonic() - self._started, 3)

    # -- the one question for the disk -----------------------------------------------

    async def refresh(self) -> None:
        """Reads the reversal backlog from the journal. When the journal cannot answer
        (closed, failing) or its reader stays busy for BACKLOG_WAIT_S, the backlog last
        read stands."""
        journal = self.app.journal
        if journal is None:
            return
        with trio.move_on_after(BACKLOG_WAIT_S):
            async with self._backlog_read:
                try:
                    backlog = await journal.reversal_backlog()
                except JournalError as exc:
                    now = time.monotonic()
                    if now >= self._next_trouble_log:
                        self._next_trouble_log = now + BACKLOG_TROUBLE_LOG_S
                        log.warning("admin_backlog_unreadable", error=str(exc))
                    return
                self._backlog = {entry.bank: entry for entry in backlog}

    # -- readiness -------------------------------------------------------------------

    def not_ready(self) -> list[str]:
        """What keeps the switch from taking traffic, each a sentence naming the part;
        empty when both listeners are bound, the journal is writable and every bank has
        a link signed on."""
        app = self.app
        reasons: list[str] = []
        for name, server in zip(CHANNELS, (app.pos, app.online), strict=True):
            if server is None or not server.port:
                reasons.append(f"the {name} listener is not bound yet")
            elif not server.listening:
                reasons.append(f"the {name} listener has stopped accepting (draining)")
        journal = app.journal
        if journal is None:
            reasons.append("the journal is not open")
        else:
            statistics = journal.statistics()
            if not statistics.writable:
                why = "its latest commit failed" if statistics.failures else "it is not running"
                reasons.append(f"the journal is not writable: {why}")
        for name, bank in app.config.banks.items():
            connector = app.connectors.get(name)
            links = connector.links if connector is not None else []
            if not any(link.status == "up" for link in links):
                reasons.append(f"bank {name}: no link signed on (0 of {bank.links} up)")
        return reasons

    # -- the document ----------------------------------------------------------------

    def transaction_stats(self) -> TransactionStats:
        switchboard = self.app.switchboard
        return switchboard.stats if switchboard is not None else TransactionStats()

    def _real_age_s(self, business_at: float) -> float:
        """The real seconds since ``business_at``, a time the journal recorded on the
        business clock."""
        clock = self.app.clock
        return round(max(0.0, clock.real_s(clock.now() - business_at)), 3)

    def document(self) -> StatusDocument:
        """The status document of this moment (the backlog as last refreshed)."""
        app = self.app
        stats = self.transaction_stats()
        not_ready = self.not_ready()
        return StatusDocument(
            switch_version=self.version,
            started_at=iso_utc(self.started_at),
            now=iso_utc(time.time()),
            uptime_s=self.uptime_s(),
            ready=not not_ready,
            not_ready=not_ready,
            config=app.config_status,
            admission=self._admission(),
            channels=[
                self._channel(name, server, stats)
                for name, server in zip(CHANNELS, (app.pos, app.online), strict=True)
                if server is not None
            ],
            banks=[
                self._bank(name, stats)
                for name in (
                    *app.config.banks,
                    *(n for n in app.retired if n not in app.config.banks),
                )
            ],
            journal=self._journal(stats),
            transactions=[
                TransactionCount(channel=channel, kind=kind, bank=bank, code=code, count=count)
                for (channel, kind, bank, code), count in sorted(stats.counts.items())
            ],
        )

    def _admission(self) -> AdmissionStatistics:
        admission = self.app.admission
        if admission is None:  # not made yet: the switch is starting
            section = self.app.config.switch
            return AdmissionStatistics(
                slots=section.max_in_flight, in_use=0, waiting=0,
                queue_limit=section.queue_limit, overloaded=False, admitted=0,
                refused_queue_full=0, refused_overload=0, expired=0, oldest_wait_s=0.0,
            )  # fmt: skip
        return admission.statistics()

    def _channel(
        self, name: str, server: ChannelServer[object], stats: TransactionStats
    ) -> ChannelStatus:
        return ChannelStatus(
            name=name,
            connections=server.connections,
            max_connections=server.config.max_connections,
            connections_refused=server.refused,
            transactions=sum(
                count for (channel, *_), count in stats.counts.items() if channel == name
            ),
            shed=server.shed,
            latency=merged(h for (channel, _), h in stats.latency_ms.items() if channel == name),
        )

    def _retired(self) -> list[str]:
        """Banks a reload removed (and did not add again): shown for their reversals."""
        return [name for name in self.app.retired if name not in self.app.config.banks]

    def _bank(self, name: str, stats: TransactionStats) -> BankStatus:
        app = self.app
        connector: BankConnector | None = app.connectors.get(name) or app.retired.get(name)
        section = connector.config if connector is not None else app.config.banks[name]
        links = connector.links if connector is not None else []
        forwarder = app.forwarders.get(name)
        unjournaled = forwarder.statistics()["unjournaled"] if forwarder is not None else 0
        backlog = self._backlog.get(name)
        counts = [
            (code, count) for (_, _, bank, code), count in stats.counts.items() if bank == name
        ]
        return BankStatus(
            name=name,
            retired=name in app.retired,
            links=[
                LinkStatus(
                    index=link.index,
                    state=link.status,
                    in_flight=link.in_flight,
                    window=link.window,
                    connects=link.connects,
                    unsolicited=link.unsolicited,
                    state_changes=link.state_changes,
                )
                for link in links
            ],
            links_up=sum(1 for link in links if link.status == "up"),
            circuit_open=connector.circuit_open() if connector is not None else True,
            queued=connector.queued if connector is not None else 0,
            queue_limit=section.queue,
            refused_queue_full=connector.refused_queue_full if connector is not None else 0,
            expired=connector.expired if connector is not None else 0,
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
            saf_unjournaled=unjournaled if isinstance(unjournaled, int) else 0,
        )

    def _journal(self, stats: TransactionStats) -> JournalStatus:
        journal = self.app.journal
        waited = merged(stats.journal_ms.values())
        if journal is None:
            empty = HistogramSnapshot.empty()
            return JournalStatus(
                backend="", durability=self.app.config.journal.durability, writable=False,
                commits=0, changes=0, failures=0, queued=0, commit_latency=empty,
                group_size=empty, journal_wait=waited,
            )  # fmt: skip
        statistics = journal.statistics()
        return JournalStatus(
            backend=statistics.backend,
            durability=journal.durability,
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
