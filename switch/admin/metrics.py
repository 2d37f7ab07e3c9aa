"""``GET /metrics``: the switch's counters as Prometheus metric families, made on each
scrape by a custom collector over what :class:`~switch.admin.collect.StatusCollector`
reads (nothing is counted twice, nothing on the hot path), exposed by
``prometheus_client``'s own registry and encoders.

Times are in seconds, as Prometheus names them; the histograms' buckets are the
switch's fixed ones (``switch.core.stats.LATENCY_BOUNDS_MS``), and the journal's group
sizes use the same bounds read as counts of changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from switch.admin.collect import StatusCollector, by_path
from switch.admin.peers import FamilyData, combine_families, family_data
from switch.admin.status import StatusDocument
from switch.core.stats import HistogramSnapshot

PREFIX: Final = "payswitch_"
MS_PER_S: Final = 1000.0


def buckets(snapshot: HistogramSnapshot, *, divisor: float = 1.0) -> list[tuple[str, float]]:
    """A snapshot's buckets as Prometheus wants them: cumulative, each named by its upper
    bound (divided by ``divisor``: ms to s), and +Inf holding the count."""
    cumulative = 0
    found: list[tuple[str, float]] = []
    for bound, count in zip(snapshot.bounds_ms, snapshot.counts, strict=False):
        cumulative += count
        found.append((repr(bound / divisor), cumulative))  # as Go writes a float: 0.0005, 1.0
    found.append(("+Inf", snapshot.count))
    return found


class SwitchMetrics:
    """A prometheus_client collector: every family, read at each scrape; with several
    workers (worker 0's admin), every worker's, labelled ``worker``
    (switch.admin.peers), and the workers' own families."""

    def __init__(self, status: StatusCollector) -> None:
        self.status = status
        self.process = ProcessCollector(registry=None)

    def collect(self) -> Iterator[Metric]:
        peers = self.status.peers
        if peers is None:
            yield from self.local()
            yield from _one_worker()
            return
        reports: list[tuple[int, list[FamilyData]]] = [(0, self.local_data())]
        reports.extend(
            (index, report.families) for index, report in sorted(peers.last.reports.items())
        )
        yield from combine_families(reports)
        yield from _workers(self.status)

    def local_data(self) -> list[FamilyData]:
        """This process's families, as a worker sends them to worker 0."""
        return [family_data(metric) for metric in self.local()]

    def local(self) -> Iterator[Metric]:
        """This process's families: the switch's and the process's (CPU, memory)."""
        yield from self._switch_families()
        yield from self.process.collect()

    def _switch_families(self) -> Iterator[Metric]:
        document = self.status.own_document()
        yield from self._transactions()
        yield from _switch(document)
        yield from _admission(document)
        yield from _channels(document)
        yield from _banks(document)
        yield from _stand_in(document)
        yield from _journal(document)
        yield from _settlement(document)
        yield from _credit(document)
        yield from _ledger(document)
        yield from _cobrand(document)
        yield from _keys(document)
        yield from _risk(document)

    def _transactions(self) -> Iterator[Metric]:
        stats = self.status.transaction_stats()
        transactions = CounterMetricFamily(
            f"{PREFIX}transactions",
            "Transactions answered, by channel, kind, bank (none: never sent to one) and "
            "response code.",
            labels=["channel", "kind", "bank", "code"],
        )
        for (channel, kind, bank, code), count in sorted(stats.counts.items()):
            transactions.add_metric([channel, kind, bank, code], count)
        yield without_empty_labels(transactions)
        amounts = CounterMetricFamily(
            f"{PREFIX}transaction_amount_fen",
            "The amounts those transactions asked for, in fen, by the same labels (on-us "
            "payments: bank on-us, kinds onus_sale, onus_void, onus_refund...).",
            labels=["channel", "kind", "bank", "code"],
        )
        for (channel, kind, bank, code), fen in sorted(stats.amounts.items()):
            amounts.add_metric([channel, kind, bank, code], fen)
        yield without_empty_labels(amounts)
        for name, histograms, what in (
            ("transaction_duration_seconds", stats.latency_ms,
             "End to end: frame read to answer queued"),
            ("journal_wait_duration_seconds", stats.journal_ms,
             "Of it, waiting for the journal's commits"),
            ("bank_wait_duration_seconds", stats.bank_ms, "Of it, waiting for the bank's answer"),
        ):  # fmt: skip
            family = HistogramMetricFamily(
                f"{PREFIX}{name}", f"{what}, by channel and bank.", labels=["channel", "bank"]
            )
            for (channel, bank), snapshot in by_path(histograms):
                family.add_metric(
                    [channel, bank],
                    buckets(snapshot, divisor=MS_PER_S),
                    round(snapshot.sum_ms / MS_PER_S, 6),
                )
            yield without_empty_labels(family)


def without_empty_labels(family: Metric) -> Metric:
    """The family with each empty label left out of its samples (a transaction that
    never went to a bank has no ``bank``, rather than ``bank=""``)."""
    family.samples = [
        sample._replace(labels={name: value for name, value in sample.labels.items() if value})
        for sample in family.samples
    ]
    return family


def _risk(document: StatusDocument) -> Iterator[Metric]:
    """risk.md's metrics: hits by rule, mode and action; evaluation time; reloads."""
    risk = document.risk
    if risk is None:
        return
    hits = CounterMetricFamily(
        f"{PREFIX}risk_hits", "Risk rule hits, by rule, mode and action (what it would "
        "have done, in shadow mode).", labels=["rule", "mode", "action"],
    )  # fmt: skip
    for hit in risk.hits:
        hits.add_metric([hit.rule, hit.mode, hit.action], hit.count)
    yield hits
    evaluation = HistogramMetricFamily(
        f"{PREFIX}risk_evaluation_seconds", "Time to evaluate a request's risk rules."
    )
    cumulative, found = 0, []
    for bound, count in zip(risk.evaluation_bounds_s, risk.evaluation_counts, strict=False):
        cumulative += count
        found.append((repr(bound), float(cumulative)))
    found.append(("+Inf", float(sum(risk.evaluation_counts))))
    evaluation.add_metric([], found, round(risk.evaluation_sum_s, 9))
    yield evaluation
    reloads = CounterMetricFamily(
        f"{PREFIX}risk_reloads", "Risk rules files read at a reload, by result.",
        labels=["result"],
    )  # fmt: skip
    for result in ("applied", "refused"):
        reloads.add_metric([result], risk.reloads.get(result, 0))
    yield reloads


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}{name}", documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}{name}", documentation, value=value)


def _switch(document: StatusDocument) -> Iterator[Metric]:
    info = GaugeMetricFamily(f"{PREFIX}info", "The switch's version.", labels=["version"])
    info.add_metric([document.switch_version], 1)
    yield info
    yield _gauge("ready", "1 when /readyz answers 200.", 1 if document.ready else 0)
    yield _gauge("config_version", "1 at start-up, one more a reload.", document.config.version)


def _admission(document: StatusDocument) -> Iterator[Metric]:
    admission = document.admission
    yield _gauge(
        "admission_slots", "Transactions in progress at most, switch-wide.", admission.slots
    )
    yield _gauge("admission_in_flight", "Transactions holding a slot now.", admission.in_use)
    yield _gauge("admission_queued", "Requests waiting for a slot now.", admission.waiting)
    yield _gauge("admission_queue_limit", "Requests waiting at most.", admission.queue_limit)
    yield _gauge(
        "admission_overloaded", "1 while arrivals outrun service.", int(admission.overloaded)
    )
    yield _gauge(
        "admission_oldest_wait_seconds", "How long the longest waiting has waited.",
        admission.oldest_wait_s,
    )  # fmt: skip
    yield _counter("admission_admitted", "Requests given a slot.", admission.admitted)
    refused = CounterMetricFamily(
        f"{PREFIX}admission_refused",
        "Requests answered 91 for want of a slot: queue full, overload, waited too long.",
        labels=["reason"],
    )
    refused.add_metric(["queue_full"], admission.refused_queue_full)
    refused.add_metric(["overload"], admission.refused_overload)
    refused.add_metric(["expired"], admission.expired)
    yield refused


Family = GaugeMetricFamily | CounterMetricFamily


def _family(kind: type[Family], name: str, documentation: str, labels: list[str]) -> Family:
    return kind(f"{PREFIX}{name}", documentation, labels=labels)


def _channels(document: StatusDocument) -> Iterator[Metric]:
    channel = ["channel"]
    connections = _family(
        GaugeMetricFamily, "channel_connections", "Connections open now.", channel
    )
    limit = _family(GaugeMetricFamily, "channel_max_connections", "Connections at most.", channel)
    refused = _family(
        CounterMetricFamily, "channel_connections_refused",
        "Connections closed at accept (beyond max_connections, or draining).", channel,
    )  # fmt: skip
    shed = _family(
        CounterMetricFamily, "channel_shed",
        "Requests answered 91 for want of capacity (at the door, or waited too long).", channel,
    )  # fmt: skip
    for status in document.channels:
        connections.add_metric([status.name], status.connections)
        limit.add_metric([status.name], status.max_connections)
        refused.add_metric([status.name], status.connections_refused)
        shed.add_metric([status.name], status.shed)
    yield from (connections, limit, refused, shed)


def _banks(document: StatusDocument) -> Iterator[Metric]:
    bank, link = ["bank"], ["bank", "link"]
    gauges = {
        "bank_links": "Links configured.",
        "bank_links_up": "Links signed on now.",
        "bank_in_flight": "Requests at the bank now, every link.",
        "bank_window": "Requests in flight at most, every link.",
        "bank_queued": "Requests waiting for a window slot now.",
        "bank_queue_limit": "Requests waiting for a window slot at most.",
        "bank_circuit_open": "1 while the bank is refused at once.",
        "saf_pending": "Reversals queued and not yet delivered (manual ones included).",
        "saf_manual": "Reversals waiting for an operator (state manual).",
        "saf_unjournaled": "Reversals owed from memory while the journal cannot record them.",
        "saf_oldest_age_seconds": "How long the oldest undelivered reversal has waited "
        "(absent when there is none).",
    }
    families = {
        name: _family(GaugeMetricFamily, name, documentation, bank)
        for name, documentation in gauges.items()
    }
    refused = _family(
        CounterMetricFamily, "bank_refused",
        "Requests answered 91 waiting for a window slot: queue full, or waited too long.",
        ["bank", "reason"],
    )  # fmt: skip
    state_changes = _family(
        CounterMetricFamily, "bank_link_state_changes",
        "Times a link's state changed (down, connecting, signing_on, up): a flapping link.", link,
    )  # fmt: skip
    connects = _family(CounterMetricFamily, "bank_link_connects", "Connections made.", link)
    unsolicited = _family(
        CounterMetricFamily, "bank_unsolicited",
        "Messages from the bank that answered nothing in flight (late, never asked) or "
        "asked something.", link,
    )  # fmt: skip
    for status in document.banks:
        values: dict[str, float | None] = {
            "bank_links": len(status.links),
            "bank_links_up": status.links_up,
            "bank_in_flight": sum(one.in_flight for one in status.links),
            "bank_window": sum(one.window for one in status.links),
            "bank_queued": status.queued,
            "bank_queue_limit": status.queue_limit,
            "bank_circuit_open": int(status.circuit_open),
            "saf_pending": status.saf_pending,
            "saf_manual": status.saf_manual,
            "saf_unjournaled": status.saf_unjournaled,
            "saf_oldest_age_seconds": status.saf_oldest_age_s,
        }
        for name, value in values.items():
            if value is not None:
                families[name].add_metric([status.name], value)
        refused.add_metric([status.name, "queue_full"], status.refused_queue_full)
        refused.add_metric([status.name, "expired"], status.expired)
        for one in status.links:
            labels = [status.name, str(one.index)]
            state_changes.add_metric(labels, one.state_changes)
            connects.add_metric(labels, one.connects)
            unsolicited.add_metric(labels, one.unsolicited)
    yield from families.values()
    yield from (refused, state_changes, connects, unsolicited)


def _stand_in(document: StatusDocument) -> Iterator[Metric]:
    """Stand-in processing (risk.md): what was stood in, refused, advised; the advices
    without a final answer."""
    approvals = _family(
        CounterMetricFamily, "stand_in_approvals", "Sales approved in the bank's place.", ["bank"]
    )
    declines = _family(
        CounterMetricFamily, "stand_in_declines",
        "Sales not stood in (answered 91), by why.", ["bank", "reason"],
    )  # fmt: skip
    advices = _family(
        CounterMetricFamily, "stand_in_advices",
        "Advices' attempts and answers: accepted, refused, retry, manual, cancelled.",
        ["bank", "result"],
    )  # fmt: skip
    pending = _family(
        GaugeMetricFamily, "stand_in_advices_pending",
        "Advices without a final answer (manual ones included).", ["bank"],
    )  # fmt: skip
    pending_fen = _family(
        GaugeMetricFamily, "stand_in_advices_pending_fen",
        "Their amount in fen.", ["bank"],
    )  # fmt: skip
    manual = _family(
        GaugeMetricFamily, "stand_in_advices_manual",
        "Advices waiting for an operator (state manual).", ["bank"],
    )  # fmt: skip
    for status in document.stand_in:
        approvals.add_metric([status.bank], status.approvals)
        for reason, count in sorted(status.declines.items()):
            declines.add_metric([status.bank, reason], count)
        for result, count in sorted(status.advices.items()):
            advices.add_metric([status.bank, result], count)
        pending.add_metric([status.bank], status.pending)
        pending_fen.add_metric([status.bank], status.pending_fen)
        manual.add_metric([status.bank], status.manual)
    yield from (approvals, declines, advices, pending, pending_fen, manual)


def _journal(document: StatusDocument) -> Iterator[Metric]:
    journal = document.journal
    yield _gauge("journal_writable", "1 while the journal commits.", int(journal.writable))
    yield _gauge("journal_queued", "Commits waiting for the writer now.", journal.queued)
    yield _counter("journal_commits", "Group commits (one fsync each).", journal.commits)
    yield _counter("journal_changes", "Changes committed.", journal.changes)
    yield _counter("journal_commit_failures", "Group commits that failed.", journal.failures)
    latency = journal.commit_latency
    commit = HistogramMetricFamily(
        f"{PREFIX}journal_commit_duration_seconds",
        "Each group commit's time in its thread (the disk).",
    )
    commit.add_metric([], buckets(latency, divisor=MS_PER_S), round(latency.sum_ms / MS_PER_S, 6))
    yield commit
    sizes = journal.group_size
    group = HistogramMetricFamily(f"{PREFIX}journal_group_size", "Changes per group commit.")
    group.add_metric([], buckets(sizes), sizes.sum_ms)
    yield group


def _one_worker() -> Iterator[Metric]:
    """A switch of one process is its own worker 0 (the same families as several)."""
    yield _gauge("workers", "Worker processes configured.", 1)
    up = GaugeMetricFamily(
        f"{PREFIX}worker_up", "1 while the worker runs and answers worker 0.", labels=["worker"]
    )
    up.add_metric(["0"], 1)
    restarts = CounterMetricFamily(
        f"{PREFIX}worker_restarts",
        "Times the supervisor restarted the worker after it died.",
        labels=["worker"],
    )
    restarts.add_metric(["0"], 0)
    yield from (up, restarts)


def _workers(status: StatusCollector) -> Iterator[Metric]:
    """The supervisor's view of its workers (worker 0's admin of several)."""
    peers = status.peers
    assert peers is not None
    yield _gauge("workers", "Worker processes configured.", peers.count)
    up = GaugeMetricFamily(
        f"{PREFIX}worker_up", "1 while the worker runs and answers worker 0.", labels=["worker"]
    )
    restarts = CounterMetricFamily(
        f"{PREFIX}worker_restarts",
        "Times the supervisor restarted the worker after it died.",
        labels=["worker"],
    )
    states = peers.states()
    for index in range(peers.count):
        state = states.get(index)
        answered = index == 0 or index in peers.last.reports
        running = state is None or state.state == "running"
        up.add_metric([str(index)], int(answered and running))
        restarts.add_metric([str(index)], state.restarts if state is not None else 0)
    yield up
    yield restarts


def _settlement(document: StatusDocument) -> Iterator[Metric]:
    """Worker 0's settlement: what is late, rejected, unreconciled and paid."""
    watch = document.settlement
    if watch is None:
        return
    yield _gauge("settlement_unsettled_dates", "Business dates closed and not yet settled.",
                 watch.unsettled_dates)  # fmt: skip
    yield _gauge(
        "settlement_overdue_dates",
        "Closed dates not settled though past their settle_deadline.",
        watch.overdue_dates,
    )
    yield _gauge(
        "settlement_overdue_seconds",
        "How far the oldest overdue date is past its settle_deadline (0: none).",
        watch.overdue_s,
    )
    latest = watch.latest
    files = GaugeMetricFamily(
        f"{PREFIX}clearing_file",
        "The latest closed date's clearing file of each bank: 1 for its status "
        "(accepted, rejected, missing).",
        labels=["bank", "status"],
    )
    seen = set()
    for entry in latest.files if latest is not None else []:
        seen.add(entry.bank)
        files.add_metric([entry.bank, entry.status], 1)
    for bank in latest.missing if latest is not None else []:
        if bank not in seen:
            files.add_metric([bank, "missing"], 1)
    yield files
    recon = ["category", "action"]
    counts = _family(GaugeMetricFamily, "recon_transactions",
                     "The latest closed date's transactions not matched, by reconciliation "
                     "category and action.", recon)  # fmt: skip
    switch_fen = _family(GaugeMetricFamily, "recon_switch_amount_fen",
                         "Their amounts as the switch has them, in fen.", recon)  # fmt: skip
    bank_fen = _family(GaugeMetricFamily, "recon_bank_amount_fen",
                       "Their amounts as the banks' files have them, in fen.", recon)  # fmt: skip
    for category in latest.categories if latest is not None else []:
        labels = [category.category, category.action]
        counts.add_metric(labels, category.count)
        switch_fen.add_metric(labels, category.switch_fen)
        bank_fen.add_metric(labels, category.bank_fen)
    yield from (counts, switch_fen, bank_fen)
    latest_values: dict[str, tuple[str, float | None]] = {
        "settlement_latest_settled": (
            "1 once the latest closed date is settled.",
            None if latest is None else int(latest.settled_at is not None),
        ),
        "settlement_merchants": (
            "Merchants in the latest closed date's payouts.",
            None if latest is None else latest.merchants,
        ),
        "settlement_payout_fen": (
            "The latest closed date's payouts, in fen.",
            None if latest is None else latest.payout_fen,
        ),
        "settlement_held_fen": (
            "The latest closed date's amounts held, in fen.",
            None if latest is None else latest.held_fen,
        ),
        "settlement_reversals_queued": (
            "Reversals the latest closed date's reconciliation queued.",
            None if latest is None else latest.reversals_queued,
        ),
    }
    for name, (documentation, value) in latest_values.items():
        # Before any date has closed: the family, without a sample.
        yield GaugeMetricFamily(f"{PREFIX}{name}", documentation, value=value)


def _credit(document: StatusDocument) -> Iterator[Metric]:
    """Worker 0's credit line (credit.md): its accounts, what is lent and overdue, the
    accounts frozen, the penalties accrued. The families without a sample until read."""
    totals = document.credit
    for name, documentation, value in (
        ("credit_accounts", "Credit accounts open.", None if totals is None else totals.accounts),
        ("credit_frozen_accounts", "Credit accounts frozen (by the app, or overdue).",
         None if totals is None else totals.frozen),
        ("credit_outstanding_principal_fen",
         "The credit line's outstanding principal, billed or not, in fen.",
         None if totals is None else totals.outstanding_fen),
        ("credit_overdue_fen", "Billed fees and principal past their due date, in fen.",
         None if totals is None else totals.overdue_fen),
        ("credit_overdue_accounts", "Credit accounts with anything overdue.",
         None if totals is None else totals.overdue),
    ):  # fmt: skip
        yield GaugeMetricFamily(f"{PREFIX}{name}", documentation, value=value)
    yield CounterMetricFamily(
        f"{PREFIX}credit_penalties_accrued_fen",
        "Penalties charged on overdue amounts since the ledger began, in fen.",
        value=None if totals is None else totals.penalties_fen,
    )


def _ledger(document: StatusDocument) -> Iterator[Metric]:
    """Worker 0's on-us ledger (wallet.md, settlement.md): its transfers by state, per
    unit and phase the sum of every account's debits minus its credits, 0 while the
    ledger is sound (``switch wallet verify`` checks the rest), and the wallets' total
    balance. The families without a sample until read."""
    figures = document.ledger
    transfers = _family(
        GaugeMetricFamily, "ledger_transfers",
        "The ledger's transfers by state: pending (reserved, not yet ended), posted, "
        "voided.", ["state"],
    )  # fmt: skip
    imbalance = _family(
        GaugeMetricFamily, "ledger_imbalance",
        "Every account's debits minus credits, by unit (fen, points) and phase (posted, "
        "pending): 0 while the ledger balances; anything else is a fault to page on.",
        ["unit", "phase"],
    )  # fmt: skip
    wallets = _family(
        GaugeMetricFamily, "ledger_wallets_balance_fen",
        "Every wallet's balance summed, in fen: what the company owes its customers "
        "(posted), and what the wallets' pending transfers would add once posted "
        "(pending). Read at most every [admin] wallet_totals_interval_s.", ["phase"],
    )  # fmt: skip
    if figures is not None:
        for state, count in figures.transfers.items():
            transfers.add_metric([state], count)
        for (unit, phase), value in sorted(figures.imbalance().items()):
            imbalance.add_metric([unit, phase], value)
        if figures.wallets is not None:
            wallets.add_metric(["posted"], figures.wallets.posted_fen)
            wallets.add_metric(["pending"], figures.wallets.pending_fen)
    yield transfers
    yield imbalance
    yield wallets


def _cobrand(document: StatusDocument) -> Iterator[Metric]:
    """Worker 0's co-brand card (credit.md): cards linked, points given and taken back,
    conversions by result. The families without a sample until read."""
    totals = document.credit.cobrand if document.credit is not None else None
    yield GaugeMetricFamily(
        f"{PREFIX}cobrand_linked_cards", "Co-brand cards linked to a customer now.",
        value=None if totals is None else totals.linked_cards,
    )  # fmt: skip
    yield CounterMetricFamily(
        f"{PREFIX}cobrand_points_issued", "Points given for linked cards' sales, ever.",
        value=None if totals is None else totals.points_issued,
    )  # fmt: skip
    yield CounterMetricFamily(
        f"{PREFIX}cobrand_points_reversed",
        "Points taken back (voids, refunds, reversals, sales settlement never paid), ever.",
        value=None if totals is None else totals.points_reversed,
    )  # fmt: skip
    conversions = _family(
        CounterMetricFamily, "cobrand_conversions",
        "Co-brand sales converted to instalments, by result: approved (the payment to the "
        "card approved), not_approved (declined or unanswered), pending (at the bank), "
        "cancelled (approved, then finally not paid by settlement).", ["result"],
    )  # fmt: skip
    if totals is not None:
        for result, count in sorted(totals.conversions.items()):
            conversions.add_metric([result], count)
    yield conversions


def _keys(document: StatusDocument) -> Iterator[Metric]:
    """When keys and certificates stop being good."""
    expires = _family(GaugeMetricFamily, "bank_key_expires_in_seconds",
                      "Until a link's working keys (ZPK, ZAK) are due for their change "
                      "(key_change_h); below 0: overdue.", ["bank", "link"])  # fmt: skip
    for bank in document.banks:
        for link in bank.links:
            if link.key_expires_in_s is not None:
                expires.add_metric([bank.name, str(link.index)], link.key_expires_in_s)
    yield expires
    certificates = _family(GaugeMetricFamily, "tls_certificate_expiry_timestamp_seconds",
                           "When the listener's TLS certificate stops being valid.",
                           ["listener"])  # fmt: skip
    for listener, at in sorted(document.certificates.items()):
        certificates.add_metric([listener], at)
    yield certificates


def metrics_registry(status: StatusCollector) -> CollectorRegistry:
    """The admin interface's own registry (never the global one): the switch's families
    and the process's (CPU, memory, descriptors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SwitchMetrics(status))
    return registry


def exposition(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The scrape's body and content type, in the format the scraper's Accept header
    asks for (Prometheus text, or OpenMetrics)."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
