"""The switch process: builds every part from the config and runs them in nurseries.

Start order: bank simulators (when ``simulate = true``), bank connectors, then the
channel listeners, so that a caller of ``nursery.start(app.run)`` may send traffic at
once. Shutdown runs the other way: the listeners stop accepting and reading, in-flight
transactions get ``shutdown_grace_s`` to finish, then the bank side is cancelled.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import structlog
import trio

from switch.config import BankSection, SwitchConfig
from switch.core.bank import Institution
from switch.core.book import TransactionBook
from switch.core.online import IdempotencyBook
from switch.core.routing import BinTable
from switch.net.bank_link import BankConnector
from switch.net.channel import ChannelServer
from switch.net.online import OnlineProtocol
from switch.net.pos import PosProtocol
from switch.net.switchboard import Switchboard
from switch.sim.server import BankSimulator
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
    def __init__(self, config: SwitchConfig) -> None:
        self.config = config
        self.codecs = Codecs(config.dialects_path())
        self.simulators: dict[str, BankSimulator] = {}
        self.connectors: dict[str, BankConnector] = {}
        self.switchboard: Switchboard | None = None
        self.pos: ChannelServer[object] | None = None
        self.online: ChannelServer[object] | None = None
        self._channels: trio.Nursery | None = None

    @property
    def pos_port(self) -> int:
        assert self.pos is not None
        return self.pos.port

    @property
    def online_port(self) -> int:
        assert self.online is not None
        return self.online.port

    async def run(
        self, *, task_status: trio.TaskStatus[SwitchApp] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Runs the switch until :meth:`shutdown` has drained it (or it is cancelled)."""
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

            switchboard = self.switchboard = Switchboard(
                bins=BinTable((route.prefix, route.bank) for route in config.routes),
                connectors=self.connectors,
                institution=Institution(config.switch.acquirer_id, config.switch.forwarding_id),
                book=TransactionBook(max_records=config.book.max_records),
                utc_offset_h=utc_offset_h,
            )
            pos_protocol = PosProtocol(
                self.codecs.get(config.pos.dialect),
                switchboard,
                acquirer_id=config.switch.acquirer_id,
                utc_offset_h=utc_offset_h,
            )
            online_protocol = OnlineProtocol(
                switchboard,
                IdempotencyBook(
                    keep_s=config.online.idempotency_keep_s,
                    max_entries=config.online.idempotency_max_entries,
                ),
                terminal_id=config.online.terminal_id,
                utc_offset_h=utc_offset_h,
            )
            self.pos = ChannelServer(config.pos, pos_protocol)  # type: ignore[arg-type]
            self.online = ChannelServer(config.online, online_protocol)  # type: ignore[arg-type]
            async with trio.open_nursery() as channels:
                self._channels = channels
                await channels.start(self.pos.serve)
                await channels.start(self.online.serve)
                log.info(
                    "switch_started",
                    pos_port=self.pos.port,
                    online_port=self.online.port,
                    banks=sorted(self.connectors),
                )
                task_status.started(self)
            # Every connection has ended: nothing is in flight any more.
            bank_side.cancel_scope.cancel()
        log.info("switch_stopped")

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
            "switchboard": self.switchboard.statistics() if self.switchboard else None,
            "pos": self.pos.statistics() if self.pos else None,
            "online": self.online.statistics() if self.online else None,
        }
