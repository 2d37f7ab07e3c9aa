"""The status document: one JSON document of the running switch's state, served at
``GET /status`` and read by ``switch top`` and ``switch status``.

Counters and histograms are cumulative since the switch started: a reader takes two
documents a second apart and works out rates and window percentiles from their
difference (``HistogramSnapshot.minus``), so the switch keeps no per-reader state.
This module is the schema both sides share; ``switch.admin.collect`` builds it.
"""

from __future__ import annotations

import msgspec

from switch.core.admission import AdmissionStatistics
from switch.core.credit.billing import CreditTotals
from switch.core.ledger import LedgerFigures
from switch.core.settlement import SettlementWatch
from switch.core.stats import HistogramSnapshot


class TransactionCount(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    kind: str
    bank: str
    """Empty for what never went to a bank."""
    code: str
    count: int


class LinkStatus(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    state: str
    """down, connecting, signing_on, up."""
    in_flight: int
    window: int
    connects: int
    unsolicited: int
    state_changes: int = 0
    """Times ``state`` changed: a link that flaps."""
    key_expires_in_s: float | None = None
    """Until its working keys (ZPK, ZAK) are due for their change (``key_change_h``);
    below 0: overdue. None: no keys (down, or a bank without them)."""


class BankStatus(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    retired: bool = False
    """Removed by a reload: it takes nothing new; its reversals are still delivered."""
    links: list[LinkStatus]
    links_up: int
    circuit_open: bool
    queued: int
    """Waiting now for a slot in the bank's windows."""
    queue_limit: int
    refused_queue_full: int
    expired: int
    link_state_changes: int
    transactions: int
    approved: int
    latency: HistogramSnapshot
    """End to end, of the transactions that went to this bank."""
    bank_wait: HistogramSnapshot
    """Of that, waiting for the bank's answer."""
    saf_pending: int
    """Reversals queued and not yet delivered (manual ones included)."""
    saf_manual: int
    saf_oldest_age_s: float | None
    """How long the oldest undelivered reversal has waited."""
    saf_unjournaled: int
    """Reversals owed from memory while the journal cannot record them."""


class StandInStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One bank's stand-in processing (risk.md): what it stood in, refused, advised."""

    bank: str
    enabled: bool
    approvals: int
    """Sales stood in since start (this process)."""
    today: int
    """Of them, of today's business date."""
    declines: dict[str, int]
    """Sales not stood in since start, by reason."""
    advices: dict[str, int]
    """Advices' attempts and answers since start, by result."""
    losses_today: int
    """Advices refused today: sales the switch bears."""
    pending: int
    """Advices without a final answer now (manual ones included), from the journal."""
    pending_fen: int
    manual: int
    oldest_age_s: float | None
    """How long the oldest of them has waited."""


class ChannelStatus(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    connections: int
    max_connections: int
    connections_refused: int
    transactions: int
    shed: int
    """Requests answered 91 at the door for want of capacity."""
    latency: HistogramSnapshot


class JournalStatus(msgspec.Struct, frozen=True, kw_only=True):
    backend: str
    durability: str
    writable: bool
    commits: int
    changes: int
    failures: int
    queued: int
    commit_latency: HistogramSnapshot
    """Each group commit's time in its thread (the disk, and a lock)."""
    group_size: HistogramSnapshot
    """Changes per group commit (the buckets' bounds read as counts)."""
    journal_wait: HistogramSnapshot
    """What transactions waited for the journal, all channels and banks."""


class ConfigStatus(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    """1 at start-up, one more at each reload that took effect."""
    loaded_at: str
    """ISO 8601 UTC."""
    path: str
    last_reload_error: str | None


class WorkerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One worker of a switch of several processes (``[switch] workers`` > 1)."""

    index: int
    state: str
    """running, starting, restarting (died; restarted after its backoff), stopped, not
    answering (running, but no report within the admin's wait), unknown (no word from
    the supervisor)."""
    pid: int | None
    restarts: int
    last_exit: str | None
    """Why it last ended (``killed by SIGKILL``, ``exit status 1``); None: never."""
    ready: bool
    not_ready: list[str]
    uptime_s: float | None
    connections: int
    """Terminals' and online clients' connections open at this worker now."""
    transactions: int
    """Answered by this worker since it (last) started."""
class RiskRuleStatus(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    mode: str
    kind: str
    action: str
    hits_today: int
    """Its hits on the switch's local date (risk.md)."""


class RiskHitCount(msgspec.Struct, frozen=True, kw_only=True):
    rule: str
    mode: str
    action: str
    count: int
    """Since the switch started."""


class RiskStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The risk rules in force (risk.md): the set's version, each rule's hits today,
    the hits by rule, mode and action, the evaluation times, the reloads."""

    version: str
    """12 hex digits; empty when no rules file is named."""
    rules: list[RiskRuleStatus]
    last_error: str | None
    """Why the last rules file read was refused (the running rules stayed)."""
    hits: list[RiskHitCount]
    evaluation_bounds_s: list[float]
    evaluation_counts: list[int]
    """Per bound, the last one above every bound (not cumulative)."""
    evaluation_sum_s: float
    reloads: dict[str, int]
    """By result: applied, refused."""


class StatusDocument(msgspec.Struct, frozen=True, kw_only=True):
    switch_version: str
    started_at: str
    """ISO 8601 UTC."""
    now: str
    uptime_s: float
    ready: bool
    not_ready: list[str]
    """What keeps /readyz at 503: each a sentence naming the part."""
    config: ConfigStatus
    admission: AdmissionStatistics
    """The switch-wide admission queue, as its core counts it."""
    channels: list[ChannelStatus]
    banks: list[BankStatus]
    journal: JournalStatus
    transactions: list[TransactionCount]
    settlement: SettlementWatch | None = None
    """Worker 0's settlement, as last read (None: not running, or not yet read)."""
    credit: CreditTotals | None = None
    """Worker 0's credit line, as last read (None: not running, or not yet read)."""
    ledger: LedgerFigures | None = None
    """Worker 0's on-us ledger figures, as last read (None: not yet read)."""
    certificates: dict[str, float] = msgspec.field(default_factory=dict)
    """Each TLS certificate in use (``online``, ``admin``): its end, epoch seconds."""
    workers: list[WorkerStatus] = msgspec.field(default_factory=list)
    """Each worker when the switch runs several (the numbers above are then the
    switch's: summed over every worker that answered); empty for one process."""
    risk: RiskStatus | None = None
    stand_in: list[StandInStatus] = []
    """Per bank with stand-in on or anything stood in (risk.md)."""


status_encoder = msgspec.json.Encoder()
status_decoder = msgspec.json.Decoder(StatusDocument)
