"""The switch process: builds every part from the config and runs them in nurseries.

Start order: the journal (and recovery of what a crash left in doubt), bank simulators
(when ``simulate = true``), bank connectors and their store-and-forward tasks, then the
channel listeners, so that a caller of ``nursery.start(app.run)`` may send traffic at
once. Shutdown runs the other way: the listeners stop accepting and reading, in-flight
transactions get ``shutdown_grace_s`` to finish, the bank side is cancelled, and the
journal commits what is queued and closes.

The admin interface (``[admin] enabled``) starts right after the journal and stops
just before it closes, so it answers health checks through recovery and the drain.

One of N worker processes (``[switch] workers``, :mod:`switch.core.workers`) runs the
same parts from its worker's view of the config, with listeners that share their ports
(SO_REUSEPORT), RRNs of its own, and the settlement service only on worker 0.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import structlog
import trio
from cryptography import x509

from switch.admin.collect import StatusCollector, iso_utc
from switch.admin.metrics import SwitchMetrics
from switch.admin.peers import TRACE, Peers, WorkerReporter
from switch.admin.port import BankReading, JournalReading, ListenerReading, StandInReading
from switch.admin.server import AdminServer
from switch.admin.status import (
    ConfigStatus,
    LinkStatus,
    RiskHitCount,
    RiskRuleStatus,
    RiskStatus,
    StatusDocument,
)
from switch.config import (
    BankSection,
    StandInSection,
    SwitchConfig,
    config_problems,
    load_config,
    load_risk_rules,
)
from switch.core.admission import AdmissionConfig, AdmissionStatistics
from switch.core.bank import Institution
from switch.core.book import TransactionBook, TxnRecord
from switch.core.calendar import BusinessCalendar, parse_local_time
from switch.core.clock import BusinessClock
from switch.core.ledger import LedgerError
from switch.core.merchants import MerchantBook, parse_merchants
from switch.core.numbers import RrnAllocator, StanSequence
from switch.core.online import IdempotencyBook
from switch.core.ratelimit import SignOnLimiter
from switch.core.reconfig import ConfigChange, ReloadPlan, ReloadResult, plan_reload
from switch.core.risk import RiskEngine, RuleSet
from switch.core.riskgate import EVALUATION_BUCKETS_S, RiskEvent, RiskGate
from switch.core.routing import BinTable
from switch.core.stats import TransactionStats
from switch.core.stip import StandInDesk
from switch.core.terminal_keys import TerminalKeys
from switch.core.workers import SINGLE, Worker, worker_config
from switch.errors import ConfigError, StartupError, TransactionRefused
from switch.log import set_log_level
from switch.net.admission import Admission
from switch.net.advice import AdviceForwarder
from switch.net.app_desk import AppDesk
from switch.net.bank_link import BankConnector, BankSecurity
from switch.net.channel import ChannelServer
from switch.net.cobrand import CobrandDesk
from switch.net.credit import CreditBilling
from switch.net.credit_desk import CardSales, CreditDesk
from switch.net.nonces import NonceGuard
from switch.net.online import OnlineProtocol
from switch.net.onus import LedgerDesk
from switch.net.own_settlement import OwnMerchantSettlement, chain
from switch.net.pos import PosProtocol
from switch.net.risk import (
    DeskEvents,
    OtherWorkers,
    OtherWorkersDesk,
    apply_rules,
    follow_other_workers,
    follow_other_workers_desk,
    rebuild_desk,
)
from switch.net.risk import rebuild as rebuild_risk
from switch.net.saf import ReversalForwarder
from switch.net.settlement import CLOSE_NOTICE_S, SettlementService, follow_closes
from switch.net.stand_in import share_stand_ins
from switch.net.switchboard import Switchboard
from switch.net.trace import TraceAnswer, Tracer, TraceSelection, selection_decoder
from switch.net.wallet import WalletOnline, card_types
from switch.net.wallet_desk import WalletDesk
from switch.net.withdrawals import WithdrawalsFiles
from switch.security.port import KeyName
from switch.security.setup import (
    bank_zmks,
    open_card_vault,
    open_security_module,
    terminal_entries,
)
from switch.sim.server import BankSimulator
from switch.store import (
    claim_clock,
    open_journal,
    open_ledger_store,
    open_nonce_store,
    open_settlement_store,
)
from switch.store.crypto import CardVault
from switch.store.ledger_store import LedgerStoreBase
from switch.store.port import AdviceBacklog, Journal, OnlineResultsPurged, ReversalBacklog
from switch.store.settlement_port import SettlementStore
from switch.tls import server_context
from switch.wire.dialect import load_dialects
from switch.wire.iso8583 import Iso8583Codec

log = structlog.get_logger()


class Codecs:
    """One compiled codec per dialect, built on first use and shared."""

    def __init__(self, dialects_dir: Path) -> None:
        self._dialects = load_dialects(dialects_dir)
        self._codecs: dict[str, Iso8583Codec] = {}

    def get(self, name: str) -> Iso8583Codec:
        codec = self._codecs.get(name)
        if codec is None:
            if name not in self._dialects:
                known = ", ".join(sorted(self._dialects))
                raise KeyError(f"dialect {name!r} is not defined (known: {known})")
            codec = self._codecs[name] = Iso8583Codec(self._dialects[name])
        return codec


def certificate_expiries(config: SwitchConfig) -> dict[str, float]:
    """Each configured TLS certificate's end (epoch seconds), by listener; one that
    cannot be read is left out (start-up has refused it already)."""
    found: dict[str, float] = {}
    for name in ("online", "admin"):
        files = config.tls_files(name)
        if files is None:
            continue
        try:
            certificate = x509.load_pem_x509_certificate(files[0].read_bytes())
        except (OSError, ValueError):
            continue
        found[name] = certificate.not_valid_after_utc.timestamp()
    return found


class SwitchApp:
    def __init__(
        self, config: SwitchConfig, worker: Worker = SINGLE, clock: BusinessClock | None = None
    ) -> None:
        """``config``: the worker's view of it (switch.core.workers.worker_config),
        which for the one process of a switch is the config itself. ``clock``: the
        business clock (the real one by default; ``switch run --clock``)."""
        self.worker = worker
        """Which of the switch's processes this is (the one, by default)."""
        self.clock = clock if clock is not None else BusinessClock.real()
        """Business time, for every part that stamps or dates (switch.core.clock)."""
        self.config = config
        self.codecs = Codecs(config.dialects_path())
        self.merchants = load_merchants(config)
        online_tls = config.tls_files("online")
        # Read here too: a certificate or key that does not load stops the start.
        self.online_tls = server_context("online", *online_tls) if online_tls else None
        # The key store and its LMK, and every bank's ZMK, before anything runs: a bank
        # without keys stops the start in one line (security.md: every link MACs).
        self.security = open_security_module(config)
        self._zmks = bank_zmks(self.security, config, config.banks)
        # The card-data keys, from the key store (security.md), before anything runs.
        self.vault = open_card_vault(self.security, config)
        # Read here too: a rules file with a fault stops the start, naming file, rule, key.
        self.risk = RiskGate(
            RiskEngine(load_risk_rules(config), utc_offset_h=config.switch.utc_offset_h),
            card_hashes=self.vault.card_hashes,
            cobrand_bins=config.credit.cobrand_bins,  # funding cobrand (risk.md)
        )
        """The risk rules in force and their windows (risk.md)."""
        self.risk.worker = self.worker.slot  # the mark on its desk requests' records
        terminal_entries(self.security, config)
        self.terminal_keys = TerminalKeys(
            self.security,
            lifetime_s=config.security.key_lifetime_h * 3600,
            max_terminals=config.security.max_signed_on_terminals,
        )
        self.simulators: dict[str, BankSimulator] = {}
        self.connectors: dict[str, BankConnector] = {}
        self.switchboard: Switchboard | None = None
        self.journal: Journal | None = None
        self._ledger: LedgerDesk | None = None
        self._wallet_online: WalletOnline | None = None
        self.forwarders: dict[str, ReversalForwarder] = {}
        self.advisers: dict[str, AdviceForwarder] = {}
        """Each bank's advice queue's sender (stand-in, risk.md)."""
        self.stand_in = StandInDesk(_stand_in_sections(config))
        self.settlement: SettlementService | None = None
        self.credit: CreditBilling | None = None
        self.cobrand: CobrandDesk | None = None
        """credit.md's co-brand card: the app's requests and linked cards' points."""
        self.own_settlement: OwnMerchantSettlement | None = None
        """Settlement's corrections of repayments by card (credit.md)."""
        self._ledger_store: LedgerStoreBase | None = None
        """The credit close at each business date closed (worker 0's)."""
        self.admission: Admission | None = None
        self.pos: ChannelServer[object] | None = None
        self.online: ChannelServer[object] | None = None
        self._channels: trio.Nursery | None = None
        self._bank_side: trio.Nursery | None = None
        self._bank_scopes: dict[BankConnector, list[trio.CancelScope]] = {}
        """Each connector's scope, and its simulator's when the switch simulates it."""
        self._simulated: dict[str, tuple[BankSection, trio.CancelScope]] = {}
        """Each simulated bank's newest simulator: the section it was started with and
        its scope (owned by the connector in ``_bank_scopes`` that holds it)."""
        self.retired: dict[str, BankConnector] = {}
        """Banks a reload removed: no new requests, their store-and-forward delivers on."""
        self._reloading = trio.Lock()
        self._connection_caps = {
            "pos": config.pos.max_connections,
            "online": config.online.max_connections,
        }
        """What the file descriptors allow each listener (start-up fitted them): a reload
        may lower a listener's max_connections, never raise it past this."""
        self.config_version = 1
        self.config_loaded_at = time.time()
        self.last_reload_error: str | None = None
        self.stopped = trio.Event()
        """Set once run() has returned: everything stopped and the journal closed."""
        self._shutdown_asked = False
        """shutdown() was called: if that was while starting, it drains once started."""
        # Made last: it reads the app's parts; its token file is read here, at start-up.
        self._certificate_expiries = certificate_expiries(config)
        self.tracer = Tracer(self._pos_codec, self._bank_codec)
        """The message trace (switch.net.trace): chosen live through the admin."""
        peers = None
        if worker.peers_dir is not None and worker.serves_admin:
            peers = Peers(worker.peers_dir, worker.count)
        self.admin = AdminServer(config, self, peers) if config.admin.enabled else None
        self.reporter = None
        """What a worker other than worker 0 tells worker 0's admin (admin/peers.py)."""
        if worker.peers_dir is not None and not worker.serves_admin:
            reporter_status = StatusCollector(self)
            reporter_metrics = SwitchMetrics(reporter_status)

            async def document() -> StatusDocument:
                await reporter_status.refresh()
                return reporter_status.own_document()

            self.reporter = WorkerReporter(
                worker.peers_dir, worker.index, document, reporter_metrics.local_data,
                self._trace_from_worker_0,
            )  # fmt: skip

    def certificate_expiries(self) -> dict[str, float]:
        """The TLS certificates in use, read at start-up (a new one needs a restart)."""
        return self._certificate_expiries

    async def trace(self, selection: TraceSelection | None) -> TraceAnswer:
        """Sets the message trace's selection here and at every other worker (worker 0
        of several); None only says what it is."""
        if selection is None:
            return TraceAnswer(selection=self.tracer.selection)
        self.tracer.select(selection)
        missing: list[int] = []
        peers = self.admin.status.peers if self.admin is not None else None
        if peers is not None:
            answers = await peers.tell(TRACE + msgspec.json.encode(selection))
            missing = sorted(index for index, answer in answers.items() if answer is None)
        return TraceAnswer(selection=selection, workers_not_answering=missing)

    def _trace_from_worker_0(self, request: bytes) -> bytes:
        try:
            self.tracer.select(selection_decoder.decode(request))
        except msgspec.DecodeError as exc:
            log.warning("trace_refused", error=str(exc))
        return msgspec.json.encode(self.tracer.selection)

    def _pos_codec(self) -> Iso8583Codec:
        return self.codecs.get(self.config.pos.dialect)

    def _bank_codec(self, bank: str) -> Iso8583Codec | None:
        """A bank's codec, for the trace (None: a bank the config no longer has)."""
        section = self.config.banks.get(bank)
        return self.codecs.get(section.dialect) if section is not None else None

    def risk_status(self) -> RiskStatus:
        """What ``/status`` and the metrics show of the risk rules (risk.md, "Journal,
        metrics, operator")."""
        risk = self.risk
        today = risk.hits_on_day_of(self.clock.now())
        return RiskStatus(
            version=risk.rules.version,
            rules=[
                RiskRuleStatus(
                    id=rule.id, mode=rule.mode, kind=rule.kind, action=rule.action,
                    hits_today=today.get(rule.id, 0),
                )
                for rule in risk.rules.rules
            ],
            last_error=risk.last_error,
            hits=[
                RiskHitCount(rule=rule, mode=mode, action=action, count=count)
                for (rule, mode, action), count in sorted(risk.hits.items())
            ],
            evaluation_bounds_s=list(EVALUATION_BUCKETS_S),
            evaluation_counts=list(risk.evaluations),
            evaluation_sum_s=risk.evaluation_sum_s,
            reloads=dict(risk.reloads),
        )  # fmt: skip

    @property
    def config_status(self) -> ConfigStatus:
        """What GET /status says of the configuration in force."""
        return ConfigStatus(
            version=self.config_version,
            loaded_at=iso_utc(self.config_loaded_at),
            path=self.config.source or "",
            last_reload_error=self.last_reload_error,
        )

    @property
    def pos_port(self) -> int:
        assert self.pos is not None
        return self.pos.port

    @property
    def online_port(self) -> int:
        assert self.online is not None
        return self.online.port

    @property
    def admin_port(self) -> int:
        assert self.admin is not None
        return self.admin.port

    # -- what the admin interface reads (switch.admin.port.SwitchView) ---------------

    def listener_readings(self) -> list[ListenerReading]:
        readings = []
        for name, server, section in (
            ("pos", self.pos, self.config.pos),
            ("online", self.online, self.config.online),
        ):
            if server is None:  # made after recovery
                readings.append(
                    ListenerReading(
                        name=name,
                        started=False,
                        port=0,
                        listening=False,
                        connections=0,
                        max_connections=section.max_connections,
                        refused=0,
                        shed=0,
                    )
                )
                continue
            readings.append(
                ListenerReading(
                    name=name,
                    started=True,
                    port=server.port,
                    listening=server.listening,
                    connections=server.connections,
                    max_connections=server.config.max_connections,
                    refused=server.refused,
                    shed=server.shed,
                )
            )
        return readings

    def bank_readings(self) -> list[BankReading]:
        config = self.config
        names = (*config.banks, *(n for n in self.retired if n not in config.banks))
        return [self._bank_reading(name) for name in names]

    def _bank_reading(self, name: str) -> BankReading:
        connector = self.connectors.get(name) or self.retired.get(name)
        configured = self.config.banks.get(name)
        section = connector.config if connector is not None else configured
        assert section is not None  # a retired bank always has its connector
        links = connector.links if connector is not None else []
        forwarder = self.forwarders.get(name)
        unjournaled = forwarder.statistics()["unjournaled"] if forwarder is not None else 0
        return BankReading(
            name=name,
            retired=name in self.retired,
            links_configured=(configured or section).links,
            links=tuple(
                LinkStatus(
                    index=link.index,
                    state=link.status,
                    in_flight=link.in_flight,
                    window=link.window,
                    connects=link.connects,
                    unsolicited=link.unsolicited,
                    state_changes=link.state_changes,
                    key_expires_in_s=link.key_expires_in_s,
                )
                for link in links
            ),
            circuit_open=connector.circuit_open() if connector is not None else True,
            queued=connector.queued if connector is not None else 0,
            queue_limit=section.queue,
            refused_queue_full=connector.refused_queue_full if connector is not None else 0,
            expired=connector.expired if connector is not None else 0,
            saf_unjournaled=unjournaled if isinstance(unjournaled, int) else 0,
        )

    def journal_reading(self) -> JournalReading:
        journal = self.journal
        if journal is None:
            return JournalReading(durability=self.config.journal.durability, statistics=None)
        return JournalReading(durability=journal.durability, statistics=journal.statistics())

    def admission_statistics(self) -> AdmissionStatistics:
        if self.admission is None:  # not made yet: the switch is starting
            section = self.config.switch
            return AdmissionStatistics(
                slots=section.max_in_flight, in_use=0, waiting=0,
                queue_limit=section.queue_limit, overloaded=False, admitted=0,
                refused_queue_full=0, refused_overload=0, expired=0, oldest_wait_s=0.0,
            )  # fmt: skip
        return self.admission.statistics()

    def transaction_stats(self) -> TransactionStats:
        switchboard = self.switchboard
        return switchboard.stats if switchboard is not None else TransactionStats()

    async def reversal_backlog(self) -> list[ReversalBacklog] | None:
        journal = self.journal
        return await journal.reversal_backlog() if journal is not None else None

    async def advice_backlog(self) -> list[AdviceBacklog] | None:
        journal = self.journal
        return await journal.advice_backlog() if journal is not None else None

    def stand_in_readings(self) -> list[StandInReading]:
        desk, switchboard = self.stand_in, self.switchboard
        today = (
            switchboard.calendar.date_at(self.clock.now()).isoformat()
            if switchboard is not None
            else ""
        )
        banks = [*self.config.banks, *(name for name in desk.approvals
                                       if name not in self.config.banks)]  # fmt: skip
        return [
            StandInReading(
                bank=name,
                enabled=desk.enabled(name),
                approvals=desk.approvals.get(name, 0),
                today=desk.approved_on.get((name, today), 0),
                declines={reason: n for (bank, reason), n in desk.declines.items() if bank == name},
                advices={result: n for (bank, result), n in desk.advices.items() if bank == name},
                losses_today=desk.losses_on.get((name, today), 0),
            )
            for name in banks
            if desk.enabled(name) or desk.approvals.get(name)
        ]

    async def run(
        self, *, task_status: trio.TaskStatus[SwitchApp] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Runs the switch until :meth:`shutdown` has drained it (or it is cancelled)."""
        config = self.config
        vault = self.vault
        if vault.demo:
            log.warning(
                "demo_card_keys", note="the demo key file is public: never use it for real cards"
            )
        journal = self.journal = open_journal(config, self.worker.slot)
        settlement_store = open_settlement_store(config)
        await trio.to_thread.run_sync(settlement_store.open)
        ledger_store = open_ledger_store(config)  # wallet.md: on-us payments
        try:
            await trio.to_thread.run_sync(ledger_store.open)
        except LedgerError as exc:
            settlement_store.close()
            raise StartupError(str(exc)) from exc
        self._ledger = LedgerDesk(
            ledger_store, config.wallet, risk=self.risk, credit=config.credit.terms()
        )
        self._ledger_store = ledger_store
        try:
            async with trio.open_nursery() as store_side:
                await store_side.start(journal.run)
                await self._check_clock(journal, settlement_store)  # before any sign-on
                if self.admin is not None:  # up from here to the journal's close: health, drain
                    await store_side.start(self.admin.serve)
                if self.reporter is not None:  # worker 0's admin reads this worker
                    await store_side.start(self.reporter.serve)
                await self._run_banks_and_channels(journal, vault, settlement_store, task_status)
                store_side.cancel_scope.cancel()
        finally:
            settlement_store.close()
            ledger_store.close()
        log.info("switch_stopped")
        self.stopped.set()

    async def _check_clock(self, journal: Journal, settlement_store: SettlementStore) -> None:
        """The journal runs on the kind of clock it was first run on (StartupError
        otherwise), and a simulated clock never starts behind what the journal holds:
        its RRNs, dates and closes would be handed out or dated again."""
        clock = self.clock
        marked = await trio.to_thread.run_sync(claim_clock, self.config, clock.kind)
        if marked != clock.kind:
            where = _journal_name(self.config)
            if marked == "simulated":
                raise StartupError(
                    f"the journal {where} was first run on a simulated clock (--clock): "
                    f"it refuses the real one; start it with --clock, or use another journal"
                )
            raise StartupError(
                f"the journal {where} was first run on the real clock: it refuses a "
                f"simulated one (--clock); rehearse on another journal"
            )
        if clock.kind == "real":
            return
        now = clock.now()
        closes = await trio.to_thread.run_sync(settlement_store.closes)
        last_close = max((close.at for close in closes), default=None)
        if last_close is not None and last_close > now:
            behind = f"a business date closed at {iso_utc(last_close)}"
        elif await journal.recent_transactions(now, 1):
            behind = "transactions recorded later"
        else:
            return
        raise StartupError(
            f"--clock {iso_utc(now)} is behind the journal, which holds {behind}: a "
            f"simulated clock never runs a journal backwards (start later, or use "
            f"another journal)"
        )

    async def _run_banks_and_channels(
        self,
        journal: Journal,
        vault: CardVault,
        settlement_store: SettlementStore,
        task_status: trio.TaskStatus[SwitchApp],
    ) -> None:
        config = self.config
        utc_offset_h = config.switch.utc_offset_h
        async with trio.open_nursery() as bank_side:
            self._bank_side = bank_side
            for name, bank in config.banks.items():
                self.connectors[name] = await self._start_bank(name, bank)
            institution = self._institution = Institution(
                config.switch.acquirer_id, config.switch.forwarding_id
            )
            for name, connector in self.connectors.items():
                self.forwarders[name] = ReversalForwarder(
                    connector, journal, vault, institution, config.saf,
                    utc_offset_h=utc_offset_h, clock=self.clock,
                )  # fmt: skip
            self.admission = Admission(_admission_config(config))
            # The dates closed so far, before any request is dated by them.
            calendar = BusinessCalendar(
                cutoff=parse_local_time(config.settlement.cutoff),
                utc_offset_h=utc_offset_h,
                closes=await trio.to_thread.run_sync(settlement_store.closes),
            )
            switchboard = self.switchboard = Switchboard(
                bins=_bin_table(config),
                connectors=self.connectors,
                institution=institution,
                book=TransactionBook(
                    max_records=config.book.max_records, shared=self.worker.shares_journal
                ),
                journal=journal,
                cards=vault,
                admission=self.admission,
                utc_offset_h=utc_offset_h,
                reversals=_Reversals(self.forwarders),
                calendar=calendar,
                merchants=self.merchants,
                rrns=RrnAllocator(worker=self.worker.slot, workers=self.worker.slots),
                sign_ons=_sign_on_limiter(config),
                clock=self.clock,
                hold_terms=(config.preauth.expiry_days, config.preauth.completion_max_pct),
                stand_in=self.stand_in,
                ledger=self._ledger,
            )
            await switchboard.recover(
                recovery_since=self.clock.now() - config.journal.recovery_days * 86400,
                max_records=config.book.max_records,
            )
            # The risk rules' windows, from the journal, before the listeners accept.
            rebuilt = await rebuild_risk(journal, self.risk, self.clock.now())
            desk_events, desk_cursor = self._desk_events(), time.time()
            desk_rebuilt = (
                await rebuild_desk(desk_events, self.risk, self.clock.now())
                if desk_events is not None else []
            )  # fmt: skip
            switchboard.risk = self.risk
            if self.worker.shares_journal:  # the other workers' requests count here too
                others = OtherWorkers(self.risk)
                others.seed(rebuilt)
                bank_side.start_soon(
                    follow_other_workers, journal, others, self.clock,
                    config.risk.sync_interval_s, name="risk:others",
                )  # fmt: skip
                if self._ledger is not None and self._ledger_store is not None:
                    desk_others = OtherWorkersDesk(self.risk, desk_cursor)
                    desk_others.seed(desk_rebuilt)
                    bank_side.start_soon(
                        follow_other_workers_desk, self._desk_events_written(), desk_others,
                        self.clock, config.risk.sync_interval_s, name="risk:others-desk",
                    )  # fmt: skip
                bank_side.start_soon(
                    share_stand_ins, journal, self.stand_in, self.clock, utc_offset_h,
                    config.risk.sync_interval_s, name="stand-in:share",
                )  # fmt: skip
            del rebuilt, desk_rebuilt
            if self._ledger is not None and self._ledger_store is not None:
                cobrand = self.cobrand = CobrandDesk(
                    self._ledger, self._ledger_store, switchboard, vault, config.credit,
                    utc_offset_h=utc_offset_h, clock=self.clock,
                    stans=StanSequence(worker=self.worker.slot, workers=self.worker.slots),
                )  # fmt: skip
                if config.credit.cobrand_bins:  # points of linked cards' sales
                    switchboard.on_final = cobrand.note
                await bank_side.start(cobrand.run)
                try:  # conversions a crash left between their payment and its end
                    await cobrand.recover()
                except TransactionRefused as exc:  # the store down: the next start
                    log.error("cobrand_recovery_failed", error=str(exc))
            for name, forwarder in self.forwarders.items():
                bank_side.start_soon(forwarder.run, name=f"saf:{name}")
            for name, connector in self.connectors.items():
                adviser = self.advisers[name] = AdviceForwarder(
                    connector, journal, vault, institution, config.saf, self.stand_in,
                    calendar, utc_offset_h=utc_offset_h, clock=self.clock,
                    book=switchboard.book,
                )  # fmt: skip
                adviser.nudge_reversals = _Reversals(self.forwarders).nudge
                if self.cobrand is not None and self.config.credit.cobrand_bins:
                    adviser.on_accepted = self.cobrand.advice_accepted
                bank_side.start_soon(adviser.run, name=f"advice:{name}")
            if self.worker.runs_settlement:  # a date closes and settles once: on worker 0
                self.settlement = await self._start_settlement(
                    bank_side, settlement_store, journal, calendar
                )
            elif self.worker.shares_journal:  # the others date by worker 0's closes
                bank_side.start_soon(follow_closes, settlement_store, calendar)
            pos_protocol = PosProtocol(
                self.codecs.get(config.pos.dialect),
                switchboard,
                acquirer_id=config.switch.acquirer_id,
                utc_offset_h=utc_offset_h,
                clock=self.clock,
                keys=self.terminal_keys,
            )
            idempotency = IdempotencyBook(
                keep_s=config.online.idempotency_keep_s,
                max_entries=config.online.idempotency_max_entries,
                matches=vault.matches,
                shared=self.worker.shares_journal,
            )
            kept_since = time.time() - config.online.idempotency_keep_s
            for entry in await journal.online_results_since(kept_since):
                idempotency.load(
                    entry.merchant_id,
                    entry.online_id,
                    entry.fingerprint,
                    entry.response,
                    entry.created_at,
                )
            bank_side.start_soon(self._purge_idempotency, journal, idempotency)
            nonces = NonceGuard(open_nonce_store(config), shared=self.worker.shares_journal)
            await bank_side.start(nonces.run)
            self._wallet_online = (
                WalletOnline(switchboard, self._ledger, lambda: card_types(self.config.routes))
                if self._ledger is not None else None
            )  # fmt: skip
            online_protocol = OnlineProtocol(
                switchboard,
                idempotency,
                vault,
                terminal_id=config.online.terminal_id,
                utc_offset_h=utc_offset_h,
                security=self.security,
                nonces=nonces,
                stans=self._new_stans(),
                clock=self.clock,
                desk=self._app_desk(switchboard),
                wallet=self._wallet_online,
            )
            shared = not self.worker.alone  # the other workers listen on the same ports
            self.pos = ChannelServer(
                config.pos,
                pos_protocol,  # type: ignore[arg-type]
                self.admission,
                reuse_port=shared,
            )
            self.online = ChannelServer(
                config.online,
                online_protocol,  # type: ignore[arg-type]
                self.admission,
                reuse_port=shared,
                tls=self.online_tls,
            )
            self.pos.tracer = self.online.tracer = self.tracer
            async with trio.open_nursery() as channels:
                self._channels = channels
                await channels.start(self.pos.serve)
                await channels.start(self.online.serve)
                log.info(
                    "switch_started",
                    pos_port=self.pos.port,
                    online_port=self.online.port,
                    admin_port=self.admin.port if self.admin is not None else None,
                    banks=sorted(self.connectors),
                    clock=self.clock.describe(),
                    settlement=self.settlement is not None,
                )
                task_status.started(self)
                if self._shutdown_asked:  # SIGTERM came while it was starting: drain now
                    self.shutdown()
            # Every connection has ended: nothing is in flight any more.
            bank_side.cancel_scope.cancel()

    async def _start_settlement(
        self,
        bank_side: trio.Nursery,
        settlement_store: SettlementStore,
        journal: Journal,
        calendar: BusinessCalendar,
    ) -> SettlementService:
        utc_offset_h = self.config.switch.utc_offset_h
        if self._ledger is not None and self._ledger_store is not None:
            self.own_settlement = OwnMerchantSettlement(
                self._ledger_store, self._ledger.call,
                own_merchant_id=self.config.credit.own_merchant_id,
            )  # fmt: skip
        own = self.own_settlement
        settlement = SettlementService(
            store=settlement_store,
            journal=journal,
            calendar=calendar,
            merchants=self.merchants,
            connectors=self.connectors,
            clearing_dir=lambda bank: self.config.clearing_dir(bank),
            out_dir=self.config.settlement_out_dir(),
            banks=lambda: sorted(self.config.banks),
            institution_of=lambda bank: self.config.banks[bank].institution_id,
            settle_deadline=self.config.settlement.settle_deadline,
            utc_offset_h=utc_offset_h,
            nudge=_Reversals(self.forwarders).nudge,
            clock=self.clock.now,
            speed=self.clock.speed,
            close_notice_s=CLOSE_NOTICE_S if self.worker.shares_journal else 0.0,
            max_clearing_file_bytes=self.config.settlement.max_clearing_file_bytes,
            on_close=await self._on_close(bank_side),
            ledger=await self._settlement_ledger(bank_side),
            # settlement.md: top-ups and the credit line's own sales go in no payout row
            own_merchants=(
                self.config.wallet.topup_merchant_id,
                self.config.credit.own_merchant_id,
            ),
            on_settled=chain(
                self.cobrand.settled if self.cobrand is not None else None,
                own.settled if own is not None else None,  # credit.md: repayments by card
            ),
        )
        await bank_side.start(settlement.run)
        return settlement

    async def _settlement_ledger(self, bank_side: trio.Nursery) -> LedgerStoreBase:
        """The on-us ledger on a connection of the settlement's own (wallet.md: on-us
        fees, payouts, recon corrections, the withdrawals file's postings), held open
        until the switch stops."""
        store = open_ledger_store(self.config)
        await trio.to_thread.run_sync(store.open)
        bank_side.start_soon(_hold_open, store)
        return store

    async def _on_close(self, bank_side: trio.Nursery) -> Callable[[str], Awaitable[object]]:
        """What each business date closed runs before its cutovers: the
        pre-authorisations it ends expire, then the credit accounts close (credit.md:
        penalties, freezes, statements), through a ledger store held open meanwhile."""
        store = open_ledger_store(self.config)
        await trio.to_thread.run_sync(store.open)
        bank_side.start_soon(_hold_open, store)
        billing = self.credit = CreditBilling(
            store, self.config.credit.terms(), self.config.settlement_out_dir(), self.clock.now,
            wallet_totals_interval_s=self.config.admin.wallet_totals_interval_s,
        )  # fmt: skip
        switchboard = self.switchboard
        withdrawals = WithdrawalsFiles(store, self.config.settlement_out_dir(), self.clock.now)

        async def on_close(business_date: str) -> None:
            try:
                if switchboard is not None:
                    await switchboard.expire_holds(business_date)
            finally:  # the accounts close even when the expiry could not be journaled
                await billing.close(business_date)
                await withdrawals.close(business_date)  # wallet.md: no bank file awaited

        return on_close

    async def _start_bank(
        self, name: str, bank: BankSection, *, stans: StanSequence | None = None
    ) -> BankConnector:
        """A bank's connector running (its links connecting), with its simulator first
        when the switch simulates it; each in a cancel scope of its own, so a reload
        can stop it again."""
        bank_side = self._bank_side
        assert bank_side is not None
        security = BankSecurity(self.security, self._zmk(name))  # before anything starts
        scopes: list[trio.CancelScope] = []
        if bank.simulate:
            running = self._simulated.get(name)
            if running is not None and _simulated_alike(running[0], bank):
                # A reload that changes only the connector's side keeps the simulator
                # (and its port): a second one could not bind a fixed port it holds.
                port = self.simulators[name].port
            else:
                # The folder of the section being started: during a reload self.config
                # is still the old configuration, which may not have this bank yet.
                started = msgspec.structs.replace(self.config, banks={name: bank})
                simulator = BankSimulator(
                    name, bank, self.codecs.get(bank.dialect),
                    clearing_dir=started.clearing_dir(name), clock=self.clock,
                )  # fmt: skip
                scope = trio.CancelScope()
                port = await bank_side.start(_in_scope, simulator.serve, scope)
                scopes.append(scope)
                self.simulators[name] = simulator
                self._simulated[name] = (bank, scope)
            bank = msgspec.structs.replace(bank, port=port)
        connector = BankConnector(
            name,
            bank,
            self.codecs.get(bank.dialect),
            utc_offset_h=self.config.switch.utc_offset_h,
            stans=stans if stans is not None else self._new_stans(),
            clock=self.clock,
            security=security,
            tracer=self.tracer,
        )
        scopes.append(trio.CancelScope())
        self._bank_scopes[connector] = scopes
        await bank_side.start(_in_scope, connector.run, scopes[-1])
        return connector

    def _zmk(self, bank: str) -> KeyName:
        """The bank's ZMK (a bank a reload added is looked up, or given the demo ZMK,
        now)."""
        name = self._zmks.get(bank)
        if name is None:
            self.security.reload()  # an operator may have loaded it since the start
            name = self._zmks[bank] = bank_zmks(self.security, self.config, [bank])[bank]
        return name

    def _new_stans(self) -> StanSequence:
        """Trace numbers of this worker's own (the whole range for one process)."""
        return StanSequence(worker=self.worker.slot, workers=self.worker.slots)

    def _stop_bank(self, connector: BankConnector) -> None:
        """Stops a connector's links (and the simulator the switch ran for it)."""
        for scope in self._bank_scopes.pop(connector, []):
            scope.cancel()

    async def reload(
        self, new: SwitchConfig | None = None, *, dry_run: bool = False
    ) -> ReloadResult:
        """Takes a new configuration while the switch runs: by default the file it was
        started from, read again. A configuration that does not validate, or that
        changes what only a restart can, is refused whole, and the running one stays.
        New banks are signed on before any route points to them; a bank removed takes
        no new requests, finishes what it has and its reversals keep being delivered;
        what is in flight is never touched. One reload at a time. ``dry_run``: what it
        would change, or why it would be refused, changing nothing."""
        async with self._reloading:
            try:
                if new is None:
                    if self.config.source is None:
                        raise ConfigError("the switch was not started from a file")
                    new = load_config(self.config.source, check=False)
                new = worker_config(new, self.worker)  # the supervisor's share, as at start
                new = self._within_descriptors(new)
                plan = self._plan(new)
                rules_before = self.risk.rules.version
                if dry_run:
                    return ReloadResult(
                        accepted=True, version=self.config_version, changes=plan.summary(),
                        diff=[*plan.diff, *_rules_change(rules_before, load_risk_rules(new))],
                    )  # fmt: skip
                await self._apply(new, plan)
            except ReloadRefused as exc:
                if dry_run:
                    return ReloadResult(
                        accepted=False, version=self.config_version, problems=exc.problems,
                        diff=list(exc.diff),
                    )  # fmt: skip
                self.last_reload_error = "; ".join(exc.problems)
                if new is not None:
                    self._note_risk_refusal(new)
                log.error("config_reload_refused", problems=exc.problems)
                return ReloadResult(
                    accepted=False, version=self.config_version, problems=exc.problems,
                    diff=list(exc.diff),
                )  # fmt: skip
            except ConfigError as exc:
                if dry_run:
                    return ReloadResult(
                        accepted=False, version=self.config_version, problems=[str(exc)]
                    )
                self.last_reload_error = str(exc)
                log.error("config_reload_refused", problems=[str(exc)])
                return ReloadResult(
                    accepted=False, version=self.config_version, problems=[str(exc)]
                )
            except Exception as exc:  # refused all the same, with the reason kept
                problem = f"the reload failed: {exc!r}"
                self.last_reload_error = problem
                log.exception("config_reload_failed", problems=[problem])
                return ReloadResult(accepted=False, version=self.config_version, problems=[problem])
            self.last_reload_error = None
            if plan.changes_anything:
                self.config_version += 1
                self.config_loaded_at = time.time()
            diff = [change.describe() for change in plan.diff]
            log.info("config_reloaded", version=self.config_version, **plan.summary(), diff=diff)
            set_log_level(new.log.level)  # after its own line, which a higher level would hide
            self.tracer.refresh()  # level debug traces every message
            return ReloadResult(
                accepted=True, version=self.config_version, changes=plan.summary(),
                diff=[*plan.diff, *_rules_change(rules_before, self.risk.rules)],
            )  # fmt: skip

    def _within_descriptors(self, new: SwitchConfig) -> SwitchConfig:
        caps = self._connection_caps
        return msgspec.structs.replace(
            new,
            pos=msgspec.structs.replace(
                new.pos, max_connections=min(new.pos.max_connections, caps["pos"])
            ),
            online=msgspec.structs.replace(
                new.online, max_connections=min(new.online.max_connections, caps["online"])
            ),
        )

    def _plan(self, new: SwitchConfig) -> ReloadPlan:
        problems = config_problems(new)  # the rules file's faults among them
        plan = plan_reload(self.config, new)
        problems.extend(f"{key} cannot change without a restart" for key in plan.needs_restart)
        for name in (*plan.banks_added, *plan.banks_changed):
            try:
                self.codecs.get(new.banks[name].dialect)
            except KeyError as exc:
                problems.append(f"banks.{name}.dialect: {exc.args[0]}")
        if problems:
            raise ReloadRefused(problems, plan.diff)
        return plan

    async def _apply(self, new: SwitchConfig, plan: ReloadPlan) -> None:
        """Carries the plan out: first what can fail (new banks signing on), then the
        swaps, which cannot."""
        switchboard, admission = self.switchboard, self.admission
        assert switchboard is not None and admission is not None and self.journal is not None
        started: dict[str, BankConnector] = {}
        simulated, simulators = dict(self._simulated), dict(self.simulators)
        try:
            for name in (*plan.banks_added, *plan.banks_changed):
                bank = new.banks[name]
                running = self.connectors.get(name) or self.retired.get(name)
                try:
                    connector = await self._start_bank(
                        name, bank, stans=running.stans if running is not None else None
                    )
                except StartupError as exc:  # no ZMK for it in the key store
                    raise ReloadRefused([f"banks.{name}: {exc}"]) from exc
                except OSError as exc:  # its simulator's port (changed, or still held)
                    raise ReloadRefused(
                        [f"banks.{name}: its simulator cannot listen on {bank.host}:"
                         f"{bank.port}: {exc.strerror or exc}"]
                    ) from exc  # fmt: skip
                started[name] = connector
                with trio.move_on_after(bank.connect_timeout_s + bank.sign_on_timeout_s):
                    await connector.wait_up()
                if not all(link.status == "up" for link in connector.links):
                    raise ReloadRefused(
                        [f"banks.{name}: its links did not all sign on within "
                         f"{bank.connect_timeout_s + bank.sign_on_timeout_s:g} s"]
                    )  # fmt: skip
        except BaseException:
            for connector in started.values():
                self._stop_bank(connector)
            self._simulated, self.simulators = simulated, simulators
            raise
        # From here nothing fails: banks up first, then the routes that point to them.
        for name, connector in started.items():
            previous = self.connectors.get(name) or self.retired.pop(name, None)
            self.connectors[name] = connector
            if previous is not None and name in self._simulated:
                # A kept simulator is the new connector's now: the old one's retirement
                # must not stop it.
                simulator_scope = self._simulated[name][1]
                old_scopes = self._bank_scopes.get(previous, [])
                if simulator_scope in old_scopes:
                    old_scopes.remove(simulator_scope)
                    self._bank_scopes[connector].insert(0, simulator_scope)
            forwarder = self.forwarders.get(name)
            if forwarder is None:
                forwarder = self.forwarders[name] = ReversalForwarder(
                    connector, self.journal, self.vault, self._institution, new.saf,
                    utc_offset_h=new.switch.utc_offset_h, clock=self.clock,
                )  # fmt: skip
                self._bank_side.start_soon(forwarder.run, name=f"saf:{name}")  # type: ignore[union-attr]
            forwarder.connector = connector
            adviser = self.advisers.get(name)
            if adviser is None:
                adviser = self.advisers[name] = AdviceForwarder(
                    connector, self.journal, self.vault, self._institution, new.saf,
                    self.stand_in, switchboard.calendar,
                    utc_offset_h=new.switch.utc_offset_h, clock=self.clock,
                    book=switchboard.book,
                )  # fmt: skip
                adviser.nudge_reversals = _Reversals(self.forwarders).nudge
                if self.cobrand is not None and self.config.credit.cobrand_bins:
                    adviser.on_accepted = self.cobrand.advice_accepted
                self._bank_side.start_soon(adviser.run, name=f"advice:{name}")  # type: ignore[union-attr]
            adviser.connector = connector
            if previous is not None:
                self._bank_side.start_soon(self._retire, previous)  # type: ignore[union-attr]
        switchboard.bins = _bin_table(new)
        for name in plan.banks_removed:
            self.retired[name] = self.connectors.pop(name)
        admission.queue.config = _admission_config(new)
        for server, listener in ((self.pos, new.pos), (self.online, new.online)):
            if server is not None:
                server.config = listener
        for forwarder in self.forwarders.values():
            forwarder.config = new.saf
        for adviser in self.advisers.values():
            adviser.config = new.saf
        self.stand_in.configure(_stand_in_sections(new))
        switchboard.book.max_records = new.book.max_records
        self.config = new
        await self._apply_risk_rules(new)

    async def _apply_risk_rules(self, new: SwitchConfig) -> None:
        """The rules file read again with the rest (it compiled in the plan): swapped in
        when its version changed, its new windows rebuilt from the journal."""
        try:
            rules = load_risk_rules(new)
        except ConfigError as exc:  # changed between the plan and now: the old stay
            self._risk_refused(str(exc))
            return
        self.risk.last_error = None
        if rules.version == self.risk.rules.version:
            return
        assert self.journal is not None
        await apply_rules(
            self.journal, self.risk, rules, self.clock.now(), events=self._desk_events()
        )

    def _desk_events(self) -> DeskEvents | None:
        """The ledger's records of desk requests received since a time (withdrawals,
        conversions: risk.md's kinds without a journal row), read in the store's
        thread; None without a ledger."""
        ledger, store = self._ledger, self._ledger_store
        if ledger is None or store is None:
            return None

        async def events(since: float) -> list[RiskEvent]:
            return await ledger.call(lambda: store.risk_events(since))

        return events

    def _desk_events_written(self) -> DeskEvents:
        """The ledger's records of desk requests written (wall time) since a time: how
        a worker follows the others' (``follow_other_workers_desk``)."""
        ledger, store = self._ledger, self._ledger_store
        assert ledger is not None and store is not None

        async def written(since: float) -> list[RiskEvent]:
            return await ledger.call(lambda: store.risk_events_written(since))

        return written

    def _note_risk_refusal(self, new: SwitchConfig) -> None:
        """A refused reload whose rules file is at fault: counted, its reason kept for
        /status; the running rules stay."""
        try:
            load_risk_rules(new)
        except ConfigError as exc:
            self._risk_refused(str(exc))

    def _risk_refused(self, reason: str) -> None:
        risk = self.risk
        risk.reloads["refused"] = risk.reloads.get("refused", 0) + 1
        risk.last_error = reason
        log.error("risk_rules_refused", reason=reason, version=risk.rules.version)

    async def _retire(self, connector: BankConnector) -> None:
        """A bank's old connector, replaced: its requests in flight finish on it, then
        its links close."""
        await connector.wait_idle()
        self._stop_bank(connector)

    def _app_desk(self, switchboard: Switchboard) -> AppDesk | None:
        """The online requests that are not payments through the lifecycle
        (``switch/net/app_desk.py``): wallet.md's, then each other page's types."""
        if self._ledger is None:
            return None
        config = self.config
        desk = AppDesk(
            self._ledger,
            digest=self.vault.digest,
            matches=self.vault.matches,
            business_date=switchboard.business_date,
            utc_offset_h=config.switch.utc_offset_h,
            stats=switchboard.stats,
            in_flight_wait_s=max(
                (bank.issuer_timeout_s for bank in config.banks.values()), default=5.0
            )
            + 1.0,
            keep_s=config.online.idempotency_keep_s,
            clock=self.clock,
            card_result=switchboard.journal.online_result,
        )
        wallet_desk = WalletDesk(
            config.wallet,
            merchants=lambda: switchboard.merchants,
            allocate_rrn=switchboard._allocate_rrn,
        )
        if self._wallet_online is not None:  # qr_status's payments, kept by wallet_pay
            wallet_desk.payments_of = self._wallet_online.payments_of
        wallet_desk.screen = self.risk  # risk.md's rules on withdrawals
        wallet_desk.register(desk)
        if self.cobrand is not None:  # credit.md's co-brand types
            self.cobrand.register(desk)
        credit_desk = CreditDesk(
            config.credit, config.wallet, allocate_rrn=switchboard._allocate_rrn,
            cards=CardSales(
                switchboard, lambda: card_types(self.config.routes), self._new_stans()
            ),
        )  # fmt: skip
        credit_desk.screen = self.risk  # risk.md's rules on conversions
        credit_desk.register(desk)
        return desk

    async def _purge_idempotency(self, journal: Journal, idempotency: IdempotencyBook) -> None:
        """Forgets online results older than they must be kept, hourly."""
        keep_s = self.config.online.idempotency_keep_s
        while True:
            await trio.sleep(3600)
            idempotency.expire(time.time())
            await journal.commit(OnlineResultsPurged(before=time.time() - keep_s), durable=False)

    def shutdown(self) -> None:
        """Stops accepting and reading; in-flight transactions have the grace period to
        finish, after which whatever is left is cancelled."""
        log.info("switch_draining", grace_s=self.config.switch.shutdown_grace_s)
        self._shutdown_asked = True
        for server in (self.pos, self.online):
            if server is not None:
                server.drain()
        if self._channels is not None:
            self._channels.cancel_scope.deadline = (
                trio.current_time() + self.config.switch.shutdown_grace_s
            )

    def statistics(self) -> dict[str, object]:
        return {
            "saf": [forwarder.statistics() for forwarder in self.forwarders.values()],
            "advices": [adviser.statistics() for adviser in self.advisers.values()],
            "switchboard": self.switchboard.statistics() if self.switchboard else None,
            "pos": self.pos.statistics() if self.pos else None,
            "online": self.online.statistics() if self.online else None,
        }


def _rules_change(version_before: str, rules: RuleSet) -> list[ConfigChange]:
    """The risk rules' set as a reload's line when its version (the rules file and its
    values files, risk.md) differs from the running one's: ``risk.rules a → b``; none when
    the same. The file's name is a config key; its content is not, so without this a
    reload that swapped the rules would say it changed nothing."""
    if rules.version == version_before:
        return []
    return [
        ConfigChange(
            key="risk.rules", change="changed", old=version_before or None,
            new=rules.version or None,
        )
    ]  # fmt: skip


def _stand_in_sections(config: SwitchConfig) -> dict[str, StandInSection]:
    return {name: bank.stand_in for name, bank in config.banks.items()}


class ReloadRefused(Exception):
    def __init__(self, problems: list[str], diff: Sequence[ConfigChange] = ()) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.diff = tuple(diff)


def load_merchants(config: SwitchConfig) -> MerchantBook:
    """The merchants file of ``[settlement]`` (ConfigError naming the file and line if
    it cannot be used); without one every merchant is served."""
    named = config.settlement.merchants_file
    if named is None:
        return MerchantBook.open_to_all()
    path = config.path(named)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"settlement.merchants_file: cannot read {path}: {exc}") from exc
    return parse_merchants(text, source=str(path))


def _journal_name(config: SwitchConfig) -> str:
    if config.journal.backend == "postgresql":
        return "(PostgreSQL)"
    return str(config.path(config.journal.path))


def _admission_config(config: SwitchConfig) -> AdmissionConfig:
    section = config.switch
    return AdmissionConfig(
        slots=section.max_in_flight,
        queue_limit=section.queue_limit,
        max_wait_s=section.max_wait_s,
        target_s=section.overload_wait_s,
        shares={str(channel): share for channel, share in section.channel_shares.items()},
    )


def _sign_on_limiter(config: SwitchConfig) -> SignOnLimiter:
    section = config.switch
    return SignOnLimiter(
        rate_per_s=section.sign_ons_per_s,
        burst=section.sign_on_burst,
        source_rate_per_s=section.sign_ons_per_source_per_s,
        source_burst=section.sign_on_source_burst,
        terminal_rate_per_s=section.sign_ons_per_terminal_per_s,
        terminal_burst=section.sign_on_terminal_burst,
        max_tracked=section.sign_on_max_tracked,
    )


_SIMULATOR_KEYS = ("host", "port", "dialect", "institution_id", "clearing_dir", "sim")
"""What a bank's in-process simulator is made from; the rest is the connector's."""


def _simulated_alike(running: BankSection, new: BankSection) -> bool:
    """Whether ``new`` would start the same simulator as ``running``."""
    return all(getattr(running, key) == getattr(new, key) for key in _SIMULATOR_KEYS)


def _bin_table(config: SwitchConfig) -> BinTable:
    return BinTable((route.prefix, route.bank, route.secondary) for route in config.routes)


async def _in_scope(
    service: Callable[..., Awaitable[None]],
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Runs a started service (``nursery.start``-style) inside ``scope``."""
    with scope:
        await service(task_status=task_status)


class _Reversals:
    """Hands the switchboard's reversals to the bank's store-and-forward."""

    def __init__(self, forwarders: dict[str, ReversalForwarder]) -> None:
        self._forwarders = forwarders

    def nudge(self, bank: str) -> None:
        forwarder = self._forwarders.get(bank)
        if forwarder is not None:
            forwarder.nudge()

    def reverse_unjournaled(self, record: TxnRecord, reason: str) -> None:
        self._forwarders[record.bank].reverse_unjournaled(record, reason)


async def _hold_open(store: LedgerStoreBase) -> None:
    """Keeps a ledger store of its own (the credit close's, the settlement's) open until
    the switch stops."""
    try:
        await trio.sleep_forever()
    finally:
        store.close()
