"""Every worker of a switch of N processes (``[switch] workers`` > 1) in worker 0's
admin interface: ``/status``, ``/readyz``, ``/metrics``, ``switch status`` and ``switch
top`` see the whole switch, not worker 0 alone.

The supervisor makes a private folder (mode 0700) for the run and names it to each
worker (``--peers-dir``). In it:

- ``supervisor.sock``: the supervisor answers each connection with its
  :class:`SupervisorReport` (each worker's state: running, restarting after a death,
  stopped; its pid, its restarts, why it last ended) and closes it;
- ``worker-<i>.sock`` (workers 1 to N-1): the worker answers with its
  :class:`WorkerReport`: its own status document and its own metric families (the
  switch's and its process's), read at that moment.

Worker 0 asks them all at once on each ``/status``, ``/metrics`` and ``/readyz``, each
within PEER_WAIT_S; a worker that does not answer is reported as such (and the switch
is not ready). Its status document's top-level numbers become switch-wide totals
(:func:`merge_documents`), with ``workers`` listing each worker; its metric families
carry a ``worker`` label on every per-worker series (:func:`combine_families`), the
journal-wide ones (the reversal backlog) once, unlabelled.

A plain request-answer over a Unix socket in a folder only the switch's account can
enter: nothing crosses the network, nothing is kept between scrapes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Final

import msgspec
import structlog
import trio
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from switch.admin.status import (
    BankStatus,
    ChannelStatus,
    JournalStatus,
    StatusDocument,
    TransactionCount,
    WorkerStatus,
)
from switch.core.admission import AdmissionStatistics
from switch.core.stats import HistogramSnapshot

log = structlog.get_logger()

SUPERVISOR_SOCKET: Final = "supervisor.sock"
PEER_WAIT_S: Final = 1.0
"""How long worker 0 waits for a worker's (or the supervisor's) report."""
MAX_REPORT_BYTES: Final = 8 * 1024 * 1024
MAX_REQUEST_BYTES: Final = 64 * 1024
REPORT: Final = b"report"
"""The request for a report; ``trace <JSON selection>`` sets a worker's trace."""
TRACE: Final = b"trace "
SWITCH_WIDE: Final = frozenset(
    {
        "payswitch_saf_pending", "payswitch_saf_manual", "payswitch_saf_oldest_age_seconds",
        "payswitch_settlement_unsettled_dates", "payswitch_settlement_overdue_dates",
        "payswitch_settlement_overdue_seconds", "payswitch_settlement_latest_settled",
        "payswitch_clearing_file", "payswitch_recon_transactions",
        "payswitch_recon_switch_amount_fen", "payswitch_recon_bank_amount_fen",
        "payswitch_settlement_merchants", "payswitch_settlement_payout_fen",
        "payswitch_settlement_held_fen", "payswitch_settlement_reversals_queued",
        "payswitch_tls_certificate_expiry_timestamp_seconds",
        "payswitch_stand_in_advices_pending", "payswitch_stand_in_advices_pending_fen",
        "payswitch_stand_in_advices_manual",
    }
)  # fmt: skip
"""Families read from the shared journal (reversals' and advices' backlogs) or worker
0's settlement (the same for every worker, or worker 0's alone), and the certificates
every worker serves: given once."""


def worker_socket(index: int) -> str:
    return f"worker-{index}.sock"


class WorkerState(msgspec.Struct, frozen=True, kw_only=True):
    """One worker as its supervisor sees it."""

    index: int
    state: str
    """starting (its first start), running, restarting (died, waiting for its backoff),
    stopped."""
    pid: int | None
    restarts: int
    last_exit: str | None
    """Why it last ended (``exit status 1``, ``killed by SIGKILL``); None: never."""


class SupervisorReport(msgspec.Struct, frozen=True, kw_only=True):
    pid: int
    workers: list[WorkerState]


class SampleData(msgspec.Struct, frozen=True, array_like=True):
    name: str
    labels: dict[str, str]
    value: float


class FamilyData(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    documentation: str
    type: str
    unit: str
    samples: list[SampleData]


class WorkerReport(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    pid: int
    document: StatusDocument
    families: list[FamilyData]


supervisor_decoder = msgspec.json.Decoder(SupervisorReport)
report_decoder = msgspec.json.Decoder(WorkerReport)
encoder = msgspec.json.Encoder()


def family_data(metric: Metric) -> FamilyData:
    return FamilyData(
        name=metric.name,
        documentation=metric.documentation,
        type=metric.type,
        unit=metric.unit,
        samples=[SampleData(s.name, dict(s.labels), s.value) for s in metric.samples],
    )


def _metric(name: str, documentation: str, kind: str, unit: str) -> Metric:
    return Metric(name, documentation, kind, unit)


def combine_families(
    reports: Iterable[tuple[int, list[FamilyData]]],
) -> list[Metric]:
    """Every worker's families as one set: each sample labelled with its worker, the
    SWITCH_WIDE ones taken from the first report (worker 0's) only, unlabelled."""
    combined: dict[str, Metric] = {}
    for index, families in reports:
        for family in families:
            switch_wide = family.name in SWITCH_WIDE
            metric = combined.get(family.name)
            if metric is None:
                metric = combined[family.name] = _metric(
                    family.name, family.documentation, family.type, family.unit
                )
            elif switch_wide:
                continue
            for sample in family.samples:
                labels = sample.labels if switch_wide else {**sample.labels, "worker": str(index)}
                metric.samples.append(Sample(sample.name, labels, sample.value))
    return list(combined.values())


# -- serving and asking ------------------------------------------------------------------


def _remove(path: Path) -> None:
    """A socket file, in a folder of the switch's (a local, instant call)."""
    path.unlink(missing_ok=True)


async def serve_unix(
    path: Path,
    answer: Callable[[bytes], Awaitable[bytes]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Reads each connection's request to ``path`` (up to its end of file), answers
    it with ``answer(request)`` and closes it, until cancelled; the socket file is
    removed at the end."""
    _remove(path)  # a previous life's
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(os.fspath(path))
        sock.listen(16)
    except OSError:
        sock.close()
        raise
    listener = trio.SocketListener(sock)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(PEER_WAIT_S * 5):
                request = await _read_all(stream, MAX_REQUEST_BYTES)
                if request is not None:
                    await stream.send_all(await answer(request))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(handle, [listener], handler_nursery=nursery)
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()
        _remove(path)


async def _read_all(stream: trio.SocketStream, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.receive_some(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def ask(path: Path, request: bytes = REPORT) -> bytes | None:
    """The answer to ``request`` on ``path``, or None (nobody listens, or no whole
    answer within PEER_WAIT_S)."""
    with trio.move_on_after(PEER_WAIT_S):
        try:
            stream = await trio.open_unix_socket(os.fspath(path))
        except OSError:
            return None
        async with stream:
            try:
                await stream.send_all(request)
                await stream.send_eof()
                return await _read_all(stream, MAX_REPORT_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
    return None


class Gathered(msgspec.Struct, frozen=True, kw_only=True):
    supervisor: SupervisorReport | None
    reports: dict[int, WorkerReport]
    """The workers that answered, by index (worker 0's own not among them)."""


class Peers:
    """Worker 0's view of the other workers (see the module)."""

    def __init__(self, folder: str, count: int) -> None:
        self.folder = Path(folder)
        self.count = count
        self.last = Gathered(supervisor=None, reports={})

    async def gather(self) -> Gathered:
        supervisor: list[SupervisorReport] = []
        reports: dict[int, WorkerReport] = {}

        async def from_supervisor() -> None:
            raw = await ask(self.folder / SUPERVISOR_SOCKET)
            if raw is not None:
                try:
                    supervisor.append(supervisor_decoder.decode(raw))
                except msgspec.DecodeError as exc:
                    log.warning("supervisor_report_unreadable", error=str(exc))

        async def from_worker(index: int) -> None:
            raw = await ask(self.folder / worker_socket(index))
            if raw is not None:
                try:
                    reports[index] = report_decoder.decode(raw)
                except msgspec.DecodeError as exc:
                    log.warning("worker_report_unreadable", worker=index, error=str(exc))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(from_supervisor)
            for index in range(1, self.count):
                nursery.start_soon(from_worker, index)
        self.last = Gathered(supervisor=supervisor[0] if supervisor else None, reports=reports)
        return self.last

    async def tell(self, request: bytes) -> dict[int, bytes | None]:
        """``request`` to every other worker at once: each one's answer (None: none)."""
        answers: dict[int, bytes | None] = {}

        async def one(index: int) -> None:
            answers[index] = await ask(self.folder / worker_socket(index), request)

        async with trio.open_nursery() as nursery:
            for index in range(1, self.count):
                nursery.start_soon(one, index)
        return answers

    def states(self) -> dict[int, WorkerState]:
        supervisor = self.last.supervisor
        return {} if supervisor is None else {state.index: state for state in supervisor.workers}

    def not_ready(self) -> list[str]:
        """Each other worker's reasons, named by worker: one not running or not
        answering, or not ready itself."""
        reasons: list[str] = []
        states = self.states()
        if self.last.supervisor is None:
            reasons.append("the supervisor does not answer")
        for index in range(1, self.count):
            state = states.get(index)
            report = self.last.reports.get(index)
            if state is not None and state.state != "running":
                why = f" ({state.last_exit})" if state.last_exit else ""
                reasons.append(f"worker {index} is {state.state}{why}")
            elif report is None:
                reasons.append(f"worker {index} does not answer")
            else:
                reasons.extend(f"worker {index}: {reason}" for reason in report.document.not_ready)
        return reasons

    def worker_statuses(self, own: StatusDocument, own_pid: int) -> list[WorkerStatus]:
        states = self.states()
        documents: dict[int, StatusDocument] = {0: own}
        documents.update({index: r.document for index, r in self.last.reports.items()})
        pids = {0: own_pid} | {index: r.pid for index, r in self.last.reports.items()}
        found: list[WorkerStatus] = []
        for index in range(self.count):
            state = states.get(index)
            document = documents.get(index)
            if state is not None:
                name = (
                    state.state
                    if document is not None or state.state != "running"
                    else ("not answering")
                )
            else:
                name = "running" if document is not None else "unknown"
            found.append(
                WorkerStatus(
                    index=index,
                    state=name,
                    pid=pids.get(index, state.pid if state is not None else None),
                    restarts=state.restarts if state is not None else 0,
                    last_exit=state.last_exit if state is not None else None,
                    ready=document.ready if document is not None else False,
                    not_ready=document.not_ready if document is not None else [],
                    uptime_s=document.uptime_s if document is not None else None,
                    connections=sum(c.connections for c in document.channels)
                    if document is not None
                    else 0,
                    transactions=sum(t.count for t in document.transactions)
                    if document is not None
                    else 0,
                )
            )
        return found


# -- switch-wide totals ----------------------------------------------------------------


def _plus(histograms: Iterable[HistogramSnapshot]) -> HistogramSnapshot:
    total = HistogramSnapshot.empty()
    for histogram in histograms:
        total = total.plus(histogram)
    return total


def _admission(parts: list[AdmissionStatistics]) -> AdmissionStatistics:
    by_channel: dict[str, int] = {}
    for part in parts:
        for channel, count in part.in_use_by_channel.items():
            by_channel[channel] = by_channel.get(channel, 0) + count
    return AdmissionStatistics(
        slots=sum(p.slots for p in parts),
        in_use=sum(p.in_use for p in parts),
        waiting=sum(p.waiting for p in parts),
        queue_limit=sum(p.queue_limit for p in parts),
        overloaded=any(p.overloaded for p in parts),
        admitted=sum(p.admitted for p in parts),
        refused_queue_full=sum(p.refused_queue_full for p in parts),
        refused_overload=sum(p.refused_overload for p in parts),
        expired=sum(p.expired for p in parts),
        oldest_wait_s=max(p.oldest_wait_s for p in parts),
        in_use_by_channel=by_channel,
    )


def _channels(parts: list[list[ChannelStatus]]) -> list[ChannelStatus]:
    names: dict[str, list[ChannelStatus]] = {}
    for channels in parts:
        for channel in channels:
            names.setdefault(channel.name, []).append(channel)
    return [
        ChannelStatus(
            name=name,
            connections=sum(c.connections for c in same),
            max_connections=sum(c.max_connections for c in same),
            connections_refused=sum(c.connections_refused for c in same),
            transactions=sum(c.transactions for c in same),
            shed=sum(c.shed for c in same),
            latency=_plus(c.latency for c in same),
        )
        for name, same in names.items()
    ]


def _banks(parts: list[list[BankStatus]]) -> list[BankStatus]:
    """Each bank over every worker: its links each worker's share (numbered on), its
    counts summed; the reversal backlog is the shared journal's (worker 0's reading)."""
    names: dict[str, list[BankStatus]] = {}
    for banks in parts:
        for bank in banks:
            names.setdefault(bank.name, []).append(bank)
    merged: list[BankStatus] = []
    for same in names.values():
        first = same[0]
        links = [link for bank in same for link in bank.links]
        merged.append(
            msgspec.structs.replace(
                first,
                retired=all(b.retired for b in same),
                links=[msgspec.structs.replace(link, index=i) for i, link in enumerate(links)],
                links_up=sum(b.links_up for b in same),
                circuit_open=any(b.circuit_open for b in same),
                queued=sum(b.queued for b in same),
                queue_limit=sum(b.queue_limit for b in same),
                refused_queue_full=sum(b.refused_queue_full for b in same),
                expired=sum(b.expired for b in same),
                link_state_changes=sum(b.link_state_changes for b in same),
                transactions=sum(b.transactions for b in same),
                approved=sum(b.approved for b in same),
                latency=_plus(b.latency for b in same),
                bank_wait=_plus(b.bank_wait for b in same),
                saf_unjournaled=sum(b.saf_unjournaled for b in same),
            )
        )
    return merged


def _journal(parts: list[JournalStatus]) -> JournalStatus:
    first = parts[0]
    return msgspec.structs.replace(
        first,
        writable=all(p.writable for p in parts),
        commits=sum(p.commits for p in parts),
        changes=sum(p.changes for p in parts),
        failures=sum(p.failures for p in parts),
        queued=sum(p.queued for p in parts),
        commit_latency=_plus(p.commit_latency for p in parts),
        group_size=_plus(p.group_size for p in parts),
        journal_wait=_plus(p.journal_wait for p in parts),
    )


def _transactions(parts: list[list[TransactionCount]]) -> list[TransactionCount]:
    counts: dict[tuple[str, str, str, str], int] = {}
    for rows in parts:
        for row in rows:
            key = (row.channel, row.kind, row.bank, row.code)
            counts[key] = counts.get(key, 0) + row.count
    return [
        TransactionCount(channel=channel, kind=kind, bank=bank, code=code, count=count)
        for (channel, kind, bank, code), count in sorted(counts.items())
    ]


def merge_documents(
    own: StatusDocument, others: list[StatusDocument], workers: list[WorkerStatus],
    not_ready: list[str],
) -> StatusDocument:  # fmt: skip
    """Worker 0's document made the switch's: its counts summed over every worker that
    answered, ``workers`` listing each, ``not_ready`` with the other workers' reasons."""
    documents = [own, *others]
    reasons = [*own.not_ready, *not_ready]
    return msgspec.structs.replace(
        own,
        ready=not reasons,
        not_ready=reasons,
        admission=_admission([d.admission for d in documents]),
        channels=_channels([d.channels for d in documents]),
        banks=_banks([d.banks for d in documents]),
        journal=_journal([d.journal for d in documents]),
        transactions=_transactions([d.transactions for d in documents]),
        workers=workers,
    )


class WorkerReporter:
    """What a worker other than worker 0 answers on its socket (see the module)."""

    def __init__(self, folder: str, index: int, document: Callable[[], Awaitable[StatusDocument]],
                 families: Callable[[], list[FamilyData]],
                 trace: Callable[[bytes], bytes]) -> None:  # fmt: skip
        """``trace``: sets this worker's trace from a JSON selection; its answer."""
        self.path = Path(folder) / worker_socket(index)
        self.index = index
        self._document = document
        self._families = families
        self._trace = trace

    async def answer(self, request: bytes) -> bytes:
        if request.startswith(TRACE):
            return self._trace(request[len(TRACE) :])
        document = await self._document()
        return encoder.encode(
            WorkerReport(
                index=self.index, pid=os.getpid(), document=document, families=self._families()
            )
        )

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_unix(self.path, self.answer, task_status=task_status)
