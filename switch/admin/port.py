"""What the admin interface may know of a running switch, and what it may ask of it.

The admin is written against :class:`SwitchView`, never against the switch process
(``switch.app``, which implements it structurally and never gets imported here): each
reading is a frozen value taken at the moment it is asked for, each operation one of
the few things an operator may request (a reload, the settlement service's cut-off,
run, status and ledger). A part not made yet (the switch is starting) reads as such:
a listener not started, no journal, admission as configured and idle.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from switch.admin.status import ConfigStatus, LinkStatus, RiskStatus
from switch.core.admission import AdmissionStatistics
from switch.core.calendar import DateClosed
from switch.core.clock import BusinessClock
from switch.core.credit.billing import CreditTotals
from switch.core.ledger import AccountsBalance, LedgerFigures
from switch.core.reconfig import ReloadResult
from switch.core.settlement import LedgerBalance, SettlementStatus, SettlementWatch
from switch.core.stats import TransactionStats
from switch.net.trace import TraceAnswer, TraceSelection
from switch.store.port import AdviceBacklog, JournalStatistics, ReversalBacklog


class ListenerReading(msgspec.Struct, frozen=True, kw_only=True):
    """One channel's listener (``pos``, ``online``)."""

    name: str
    started: bool
    """Made (the listeners are made after recovery); False: every count below is 0."""
    port: int
    """0 until it is bound."""
    listening: bool
    """Accepting connections (False once it drains)."""
    connections: int
    max_connections: int
    refused: int
    shed: int


class BankReading(msgspec.Struct, frozen=True, kw_only=True):
    """One bank: configured, or retired by a reload (its reversals still delivered)."""

    name: str
    retired: bool
    links_configured: int
    links: tuple[LinkStatus, ...]
    """Its links as they are now; none while the switch has no connector for it."""
    circuit_open: bool
    queued: int
    queue_limit: int
    refused_queue_full: int
    expired: int
    saf_unjournaled: int
    """Reversals owed from memory while the journal cannot record them."""


class StandInReading(msgspec.Struct, frozen=True, kw_only=True):
    """One bank's stand-in counters, as the switch's StandInDesk holds them."""

    bank: str
    enabled: bool
    approvals: int
    today: int
    declines: dict[str, int]
    advices: dict[str, int]
    losses_today: int


class JournalReading(msgspec.Struct, frozen=True, kw_only=True):
    durability: str
    statistics: JournalStatistics | None
    """None while the journal is not open."""


class SettlementOperations(Protocol):
    """What the admin may ask of the settlement service (worker 0's)."""

    async def close_now(self) -> DateClosed:
        """The operator's cut-off (``DateNotBegun`` when the open date's own day has
        not begun)."""
        ...

    async def settle(self, business_date: str) -> SettlementStatus:
        """Settles a closed date (``SettlementError`` when it is not closed)."""
        ...

    async def status(self, business_date: str) -> SettlementStatus: ...

    def knows(self, status: SettlementStatus) -> bool:
        """Whether the switch has had the date of ``status``."""
        ...

    async def latest_closed_date(self) -> str | None: ...

    async def watch(self) -> SettlementWatch:
        """What the operator's alerts read."""
        ...

    async def ledger_balances(self, account: str | None) -> list[LedgerBalance]: ...


class CreditReading(Protocol):
    """What the admin reads of the credit line (worker 0's close keeps it)."""

    async def totals(self) -> CreditTotals: ...

    async def ledger(self) -> LedgerFigures:
        """The on-us ledger's transfers by state and sums per unit (one aggregate), and
        the wallets' total (read at an interval)."""
        ...

    async def balances(self, account: str | None) -> list[AccountsBalance]:
        """The on-us ledger's balances (``switch ledger balance``)."""
        ...


class SwitchView(Protocol):
    """A running switch as the admin sees it (see the module's docstring)."""

    @property
    def clock(self) -> BusinessClock:
        """Business time: the journal's times are on it."""
        ...

    @property
    def config_status(self) -> ConfigStatus: ...

    @property
    def settlement(self) -> SettlementOperations | None:
        """None until it runs, and on every worker but worker 0."""
        ...

    @property
    def credit(self) -> CreditReading | None:
        """The credit close's store (worker 0's); None elsewhere."""
        ...

    def listener_readings(self) -> list[ListenerReading]:
        """The POS listener's, then the online one's."""
        ...

    def bank_readings(self) -> list[BankReading]:
        """The configured banks in the config's order, then the retired ones."""
        ...

    def journal_reading(self) -> JournalReading: ...

    def admission_statistics(self) -> AdmissionStatistics: ...

    def transaction_stats(self) -> TransactionStats:
        """The switch's running counts and histograms (read, never changed)."""
        ...

    async def reversal_backlog(self) -> list[ReversalBacklog] | None:
        """Each bank's undelivered reversals, from the journal (``JournalError`` when
        it cannot answer); None while there is no journal to ask."""
        ...

    def risk_status(self) -> RiskStatus | None:
        """The risk rules in force and their counts (None: not running yet)."""
        ...

    def stand_in_readings(self) -> list[StandInReading]:
        """Per bank with stand-in on or anything stood in."""
        ...

    async def advice_backlog(self) -> list[AdviceBacklog] | None:
        """Each bank's advices without a final answer, from the journal; None while
        there is no journal to ask."""
        ...

    async def reload(self, *, dry_run: bool = False) -> ReloadResult:
        """Re-reads the configuration file (as SIGHUP does); ``dry_run``: says what it
        would change, or why it would be refused, changing nothing."""
        ...

    def certificate_expiries(self) -> dict[str, float]:
        """The TLS certificates in use (``online``, ``admin``): when each stops being
        valid, epoch seconds."""
        ...

    async def trace(self, selection: TraceSelection | None) -> TraceAnswer:
        """Sets who the message trace follows (None: only says), at every worker."""
        ...
