"""The switch process: builds every part from the config and runs them in nurseries.

Start order: the journal (and recovery of what a crash left in doubt), bank simulators
(when ``simulate = true``), bank connectors and their store-and-forward tasks, then the
channel listeners, so that a caller of ``nursery.start(app.run)`` may send traffic at
once. Shutdown runs the other way: the listeners stop accepting and reading, in-flight
transactions get ``shutdown_grace_s`` to finish, the bank side is cancelled, and the
journal commits what is queued and closes.

The admin interface (``[admin] enabled``) starts right after the journal and stops
just before it closes, so it answers health checks through recovery and the drain.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import structlog
import trio

from switch.admin.collect import config_loaded
from switch.admin.server import AdminServer
from switch.config import BankSection, SwitchConfig
from switch.core.admission import AdmissionConfig
from switch.core.bank import Institution
from switch.core.book import TransactionBook, TxnRecord
from switch.core.online import IdempotencyBook
from switch.core.routing import BinTable
from switch.net.admission import Admission
from switch.net.bank_link import BankConnector
from switch.net.channel import ChannelServer
from switch.net.online import OnlineProtocol
from switch.net.pos import PosProtocol
from switch.net.saf import ReversalForwarder
from switch.net.switchboard import Switchboard
from switch.sim.server import BankSimulator
from switch.store import open_journal
from switch.store.crypto import CardVault, load_card_keys
from switch.store.port import Journal, OnlineResultsPurged
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


class SwitchApp:
    def __init__(self, config: SwitchConfig, *, config_path: str = "") -> None:
        self.config = config
        self.config_status = config_loaded(config_path)
        """What GET /status says of the config; a reload replaces it."""
        self.codecs = Codecs(config.dialects_path())
        key_file = config.journal.key_file
        # Keys are read here, before anything runs, so a missing or bad key file stops
        # the start with a message naming it.
        self.vault = CardVault(
            load_card_keys(
                key_file=config.path(key_file) if key_file else None,
                key_env=config.journal.key_env,
            )
        )
        self.simulators: dict[str, BankSimulator] = {}
        self.connectors: dict[str, BankConnector] = {}
        self.switchboard: Switchboard | None = None
        self.journal: Journal | None = None
        self.forwarders: dict[str, ReversalForwarder] = {}
        self.admission: Admission | None = None
        self.pos: ChannelServer[object] | None = None
        self.online: ChannelServer[object] | None = None
        self._channels: trio.Nursery | None = None
        self.stopped = trio.Event()
        """Set once run() has returned: everything stopped and the journal closed."""
        # Made last: it reads the app's parts; its token file is read here, at start-up.
        self.admin = AdminServer(self) if config.admin.enabled else None

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
        journal = self.journal = open_journal(config)
        async with trio.open_nursery() as store_side:
            await store_side.start(journal.run)
            if self.admin is not None:  # up from here to the journal's close: health, drain
                await store_side.start(self.admin.serve)
            await self._run_banks_and_channels(journal, vault, task_status)
            store_side.cancel_scope.cancel()
        log.info("switch_stopped")
        self.stopped.set()

    async def _run_banks_and_channels(
        self, journal: Journal, vault: CardVault, task_status: trio.TaskStatus[SwitchApp]
    ) -> None:
        config = self.config
        utc_offset_h = config.switch.utc_offset_h
        async with trio.open_nursery() as bank_side:
            banks: dict[str, BankSection] = {}
            for name, bank in config.banks.items():
                if bank.simulate:
                    simulator = BankSimulator(name, bank, self.codecs.get(bank.dialect))
                    port = await bank_side.start(simulator.serve)
                    self.simulators[name] = simulator
                    bank = msgspec.structs.replace(bank, port=port)
                banks[name] = bank
            for name, bank in banks.items():
                connector = BankConnector(
                    name, bank, self.codecs.get(bank.dialect), utc_offset_h=utc_offset_h
                )
                self.connectors[name] = connector
                await bank_side.start(connector.run)

            institution = Institution(config.switch.acquirer_id, config.switch.forwarding_id)
            for name, connector in self.connectors.items():
                self.forwarders[name] = ReversalForwarder(
                    connector, journal, vault, institution, config.saf, utc_offset_h=utc_offset_h
                )
            section = config.switch
            self.admission = Admission(
                AdmissionConfig(
                    slots=section.max_in_flight,
                    queue_limit=section.queue_limit,
                    max_wait_s=section.max_wait_s,
                    target_s=section.overload_wait_s,
                )
            )
            switchboard = self.switchboard = Switchboard(
                bins=BinTable(
                    (route.prefix, route.bank, route.secondary) for route in config.routes
                ),
                connectors=self.connectors,
                institution=institution,
                book=TransactionBook(max_records=config.book.max_records),
                journal=journal,
                cards=vault,
                admission=self.admission,
                utc_offset_h=utc_offset_h,
                reversals=_Reversals(self.forwarders),
            )
            await switchboard.recover(
                recovery_since=time.time() - config.journal.recovery_days * 86400,
                max_records=config.book.max_records,
            )
            for name, forwarder in self.forwarders.items():
                bank_side.start_soon(forwarder.run, name=f"saf:{name}")
            pos_protocol = PosProtocol(
                self.codecs.get(config.pos.dialect),
                switchboard,
                acquirer_id=config.switch.acquirer_id,
                utc_offset_h=utc_offset_h,
            )
            idempotency = IdempotencyBook(
                keep_s=config.online.idempotency_keep_s,
                max_entries=config.online.idempotency_max_entries,
                matches=vault.matches,
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
            online_protocol = OnlineProtocol(
                switchboard,
                idempotency,
                vault,
                terminal_id=config.online.terminal_id,
                utc_offset_h=utc_offset_h,
            )
            self.pos = ChannelServer(config.pos, pos_protocol, self.admission)  # type: ignore[arg-type]
            self.online = ChannelServer(config.online, online_protocol, self.admission)  # type: ignore[arg-type]
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
                )
                task_status.started(self)
            # Every connection has ended: nothing is in flight any more.
            bank_side.cancel_scope.cancel()

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
            "switchboard": self.switchboard.statistics() if self.switchboard else None,
            "pos": self.pos.statistics() if self.pos else None,
            "online": self.online.statistics() if self.online else None,
        }


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
