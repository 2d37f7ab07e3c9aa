"""Configuration: TOML files decoded into frozen Structs.

Unknown keys fail at start-up, naming the key; units are in the names. The config is
loaded once by the CLI and passed down: there are no module-level settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from switch.admin.settings import AdminSection, is_loopback
from switch.core.credit.settings import CreditSettings
from switch.core.risk import RulesError, RuleSet, load_rules
from switch.core.wallet import WalletSettings
from switch.errors import ConfigError, ConfigUnreadable
from switch.wire.dialect import load_dialects
from switch.wire.online import ACCEPTOR_ID_PATTERN

Port = Annotated[int, Meta(ge=0, le=65535)]
PositiveSeconds = Annotated[float, Meta(gt=0)]
PositiveRate = Annotated[float, Meta(gt=0)]
Share = Annotated[float, Meta(gt=0, le=1)]
Count = Annotated[int, Meta(ge=1)]
BinPrefix = Annotated[str, Meta(pattern=r"^[0-9]{1,11}$")]
BankName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
InstitutionId = Annotated[str, Meta(pattern=r"^[0-9]{1,11}$")]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class SwitchSection(_Section, frozen=True, kw_only=True):
    acquirer_id: InstitutionId
    """Field 32 towards banks and terminals: the switch's acquiring institution id."""
    forwarding_id: InstitutionId | None = None
    """Field 33, sent only when set."""
    utc_offset_h: Annotated[int, Meta(ge=-12, le=14)] = 8
    """Local time of fields 12/13 (China Standard Time has no daylight saving)."""
    shutdown_grace_s: PositiveSeconds = 10.0
    """How long in-flight transactions may take to finish after SIGTERM."""
    workers: Count = 1
    """Switch processes sharing the POS and online ports (``switch run --workers``
    overrides it): 1 is one process, as ever; more start a supervisor and that many
    worker processes (switch.core.workers), which need a journal they can share
    ([journal] backend = "postgresql")."""
    hosts: Count = 1
    """Switches (each a supervisor and its workers, or one process) on one PostgreSQL
    journal, each on a host of its own (docs/scaling.md); each must say the same
    ``hosts`` and ``workers``."""
    host_id: Annotated[int, Meta(ge=0)] = 0
    """Which of the ``hosts`` this switch is, 0 to hosts - 1: its workers' RRNs and STANs
    are apart from every other host's, and host 0 alone runs the settlement. A second
    switch with the same host_id on the journal is refused at start-up."""
    dialects_dir: str = "dialects"
    """Folder of dialect tables, relative to the config file."""
    max_in_flight: Count = 128
    """Transactions in progress at once, switch-wide, across channels and connections
    (a request waiting for its bank's link does not count). Beyond it a request waits
    for a slot in the admission queue. Enough to keep the journal's group commits and
    the banks busy; more only lengthens the time each spends inside (Little's law:
    in flight / rate)."""
    queue_limit: Count = 4096
    """Requests waiting for a slot at most; beyond it 91 at once. Size: peak rate x
    max_wait_s (a request waiting longer is refused anyway)."""
    max_wait_s: PositiveSeconds = 1.0
    """The longest a request waits for a slot, switch-wide and then for its bank's
    link, before it is answered 91."""
    overload_wait_s: PositiveSeconds = 0.02
    """While requests arrive faster than the switch serves them (interval after
    interval), a new one that would wait longer than this is refused 91 at once: what
    is accepted is answered quickly, the excess at once."""
    channel_shares: dict[Literal["pos", "online"], Share] = msgspec.field(
        default_factory=lambda: {"pos": 0.75, "online": 0.25}
    )
    """Per channel, the share of max_in_flight it holds at most while the other channel
    has requests in progress or waiting (alone, a channel may use them all): with
    shares adding up to at most 1, each is guaranteed its share. What is in progress
    shares the switch's time (its event loop, the journal's group commits), so this
    also bounds what one busy online client costs the terminals' answers."""
    sign_ons_per_s: PositiveRate = 100.0
    sign_on_burst: Count = 20_000
    """POS sign-ons switch-wide (each takes an RRN of the day's 100 million): a fleet of
    20,000 terminals signing on after a restart passes at once; beyond the rate, 91."""
    sign_ons_per_source_per_s: PositiveRate = 20.0
    sign_on_source_burst: Count = 2_000
    """Sign-ons from one source address (an IPv6 source: its /64), looked at before the
    switch-wide limit: a flood from one address is answered 91 and takes nothing from
    the others. A concentrator carrying many terminals needs a burst as large as its
    fleet."""
    sign_ons_per_terminal_per_s: PositiveRate = 1.0
    sign_on_terminal_burst: Count = 60
    """Sign-ons of one terminal (terminal id and merchant id), looked at first: a
    terminal in a sign-on loop is answered 91 and takes nothing from its address's or
    the switch-wide allowance."""
    sign_on_max_tracked: Count = 50_000
    """Terminals, and source addresses, whose sign-on allowance is remembered (each
    about 200 bytes); past it the least recently seen is forgotten (it starts afresh)."""


class ListenerSection(_Section, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Port
    max_frame_bytes: Count
    read_deadline_s: PositiveSeconds = 10.0
    """A frame begun but not finished within this time is dropped with its connection."""
    write_deadline_s: PositiveSeconds = 10.0
    """A peer that takes longer than this to make room for its answers is closed."""
    max_in_flight_per_connection: Count = 1
    """Requests processed at once per connection; while it has that many, the
    connection is not read (its peer is slowed down by TCP, not refused)."""
    max_connections: Count = 20_000
    """Connections a listener holds at once; beyond it new ones are closed on accept."""


class PosListenerSection(ListenerSection, frozen=True, kw_only=True):
    dialect: str = "cup-pos"
    max_frame_bytes: Count = 2048
    max_in_flight_per_connection: Count = 2


class OnlineListenerSection(ListenerSection, frozen=True, kw_only=True):
    max_frame_bytes: Count = 65536
    max_in_flight_per_connection: Count = 64
    terminal_id: Annotated[str, Meta(min_length=1, max_length=8, pattern=ACCEPTOR_ID_PATTERN)] = (
        "ONLINE01"
    )
    """Field 41 towards banks for online payments (they have no terminal of their own):
    printable ASCII, no space at either end."""
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    """The listener's certificate chain and private key (PEM, relative to the config
    file; both or neither, the key file of mode 0600): with them it speaks only TLS 1.2
    or later. Without them it may listen on loopback only."""
    idempotency_keep_s: PositiveSeconds = 7 * 24 * 3600.0
    idempotency_max_entries: Count = 200_000
    """Online results kept in memory (the journal keeps all of them for
    idempotency_keep_s); past this the oldest leave memory and are read back from the
    journal when their id comes again."""


class ClearingFaults(_Section, frozen=True, kw_only=True):
    """What a simulated bank gets wrong in its clearing files, on purpose: each names
    the records (by RRN, field 37) it applies to, in whichever date's file they fall."""

    drop_rrns: tuple[str, ...] = ()
    """Records left out of the file."""
    amount_rrns: tuple[str, ...] = ()
    """Records written with 1 fen more than the bank applied."""
    next_date_rrns: tuple[str, ...] = ()
    """Records moved to the next date's file."""
    extra_records: Annotated[int, Meta(ge=0)] = 0
    """Approved sales added to each file that the switch never sent."""
    corrupt_trailer: bool = False
    """The trailer's record count is off by one: the switch must reject the file."""


class SimulatorSection(_Section, frozen=True, kw_only=True):
    """How an in-process or stand-alone bank simulator behaves."""

    latency_ms: Annotated[float, Meta(ge=0)] = 0.0
    """How long the simulated bank takes to answer each request."""
    opening_balance: Annotated[int, Meta(ge=0)] = 100_000_000
    """Every card's balance before the simulator's first approval, in fen."""
    currency: str = "156"
    clearing: ClearingFaults = msgspec.field(default_factory=ClearingFaults)
    """Faults the simulator writes into its clearing files (tests, demos of matching)."""
    pin: Annotated[str, Meta(pattern=r"^[0-9]{4,12}$")] = "123456"
    """Every card's PIN at the simulated bank (a PIN block in 52 is checked against it:
    55 when wrong, 75 at the third wrong in a row and then for that card)..."""
    pins: dict[str, Annotated[str, Meta(pattern=r"^[0-9]{4,12}$")]] = {}
    """...unless the card number has its own here."""
    refuse_advices: str | None = None
    """Tests and demos: answer every advice (0220/0221) with this 39 (say "05") rather
    than accept it with 00."""


Mcc = Annotated[str, Meta(pattern=r"^[0-9]{4}$")]
StandInChannel = Literal["pos", "online"]


class StandInSection(_Section, frozen=True, kw_only=True):
    """Stand-in processing (risk.md, "Stand-in processing (STIP)"): sales the switch
    approves in the bank's place while it is known not to have acted (circuit open, no
    link signed on, or it answered 91), advised to it afterwards (0220/0221). Where
    risk.md gives no default, its sample's value is the default."""

    enabled: bool = False
    bins: list[BinPrefix] = []
    """PAN prefixes routed to this bank that it covers; none: nothing is stood in."""
    channels: list[StandInChannel] = msgspec.field(default_factory=lambda: ["pos"])
    """Card-not-present merchants can retry, so online is off unless named."""
    single_cap_fen: Annotated[int, Meta(ge=0)] = 200_000
    card_daily_cap_fen: Annotated[int, Meta(ge=0)] = 500_000
    """A card's standing stood-in sales at this bank on a local date, this one included."""
    card_daily_count: Annotated[int, Meta(ge=0)] = 5
    """Their number; 0: no count limit."""
    max_pending_fen: Annotated[int, Meta(ge=0)] = 50_000_000
    """Stood-in sales at this bank whose advice is not accepted yet, this one included."""
    mcc_excluded: list[Mcc] = msgspec.field(
        default_factory=lambda: ["4829", "6010", "6011", "6051", "7995"]
    )


class BankSection(_Section, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Port
    links: Count = 2
    """Persistent TCP links held to the bank."""
    window: Count = 32
    """Requests in flight at most on each link."""
    issuer_timeout_s: PositiveSeconds = 5.0
    """A request sent and not answered within this is answered 68 and reversed."""
    dialect: str = "h2h-ascii"
    """The bank's ISO 8583 field table: a file of that name under dialects_dir."""
    simulate: bool = False
    """Start a bank simulator for this bank inside the switch process."""
    echo_interval_s: PositiveSeconds = 30.0
    """An idle link sends an echo test this often."""
    connect_timeout_s: PositiveSeconds = 5.0
    sign_on_timeout_s: PositiveSeconds = 5.0
    reconnect_min_s: PositiveSeconds = 0.1
    """A dropped link reconnects after this, doubling each failed try (with jitter)..."""
    reconnect_max_s: PositiveSeconds = 10.0
    """...up to this."""
    circuit_timeouts: Count = 5
    """Consecutive issuer timeouts that open the bank's circuit (answered 91 at once)."""
    circuit_open_s: PositiveSeconds = 5.0
    """How long an open circuit refuses before one request probes the bank again."""
    queue: Count = 64
    """Requests waiting for a slot in this bank's windows at most (the channels served
    in turn, then their connections; each waits at most [switch] max_wait_s from its
    arrival); beyond it 91 at once. They keep their
    switch-wide slot: a bank that slows down holds at most links x window + queue of
    [switch] max_in_flight, and the other banks keep the rest."""
    unsolicited_limit_per_s: Count = 500
    """Messages a link may receive in a second that answer nothing in flight (late or
    never asked) or are the bank's own requests; past it the link is dropped and
    re-established. They are counted, and logged at most once a second per link."""
    institution_id: InstitutionId = "0"
    """The bank's institution id, as its clearing files' header names it."""
    clearing_dir: str | None = None
    """Where the bank delivers its clearing files (settlement.md), relative to the
    config file; None: settlement's clearing folder, ``<out_dir>/../clearing``."""
    key_change_h: Annotated[float, Meta(gt=0)] = 24.0
    """Each link changes its ZPK and ZAK this often (hours), besides after every sign-on
    and after a MAC failure (security.md, "Bank links: keys and MAC")."""
    sim: SimulatorSection = msgspec.field(default_factory=SimulatorSection)
    stand_in: StandInSection = msgspec.field(default_factory=StandInSection)


class RouteSection(_Section, frozen=True, kw_only=True):
    prefix: BinPrefix
    bank: BankName
    secondary: BankName | None = None
    """Used while the primary bank's circuit is open (all links down, or timing out)."""
    card: Literal["debit", "credit"] = "credit"
    """The type of the cards of this BIN (wallet.md): a wallet is topped up from a
    ``debit`` card only; a route that does not say counts as ``credit``."""


class BookSection(_Section, frozen=True, kw_only=True):
    max_records: Count = 200_000
    """Recent transactions kept in memory (about 2 KB each): the originals of voids,
    refunds and reversals are found here first, then in the journal, and repeated POS
    requests are recognised as duplicates within this window."""


class JournalSection(_Section, frozen=True, kw_only=True):
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    """sqlite: one file beside the switch (the embedded default). postgresql: a
    database server, named by ``dsn`` or ``dsn_env``."""
    path: str = "var/journal.sqlite3"
    """The SQLite file, relative to the config file (sqlite only)."""
    dsn: str | None = None
    """The PostgreSQL database, as a libpq connection string or URI (postgresql only).
    Put a password in ``dsn_env``'s variable or libpq's ``.pgpass``, not here."""
    dsn_env: str | None = None
    """An environment variable holding the DSN; wins over ``dsn`` when set."""
    durability: Literal["sync", "async"] = "sync"
    """sync: a request is on disk before it leaves for a bank, and the bank's answer
    before it leaves for the terminal. async: commits are queued, not awaited: faster,
    and a crash may lose the last group of commits (and so leave a bank's approval that
    the switch does not know to reverse). Choose async only knowing that."""
    key_file: str | None = "card-keys.toml"
    """Card data keys (a TOML file, relative to the config file); see switch.store.crypto."""
    key_env: str | None = "SWITCH_CARD_KEYS"
    """An environment variable holding the key file's text; wins over key_file when set."""
    max_group: Count = 512
    """Changes committed together at most (one group commit, one fsync)."""
    queue_size: Count = 8192
    """Commits waiting for the writer at most; beyond it callers wait for room."""
    recovery_days: Count = 30
    """Transactions this recent are loaded at start-up as originals."""


class SafSection(_Section, frozen=True, kw_only=True):
    """Store-and-forward of reversals, per bank."""

    max_attempts: Count = 10
    """After this many attempts sent and not answered 00, a reversal waits in state manual
    for an operator (attempts that could not be sent do not count)."""
    backoff_min_s: PositiveSeconds = 1.0
    """A reversal tried and not answered 00 is tried again after this, doubling..."""
    backoff_max_s: PositiveSeconds = 300.0
    """...up to this."""
    poll_interval_s: PositiveSeconds = 1.0
    """How often the queue is read for due reversals (and operator retries)."""
    concurrency: Count = 8
    """Reversals in flight at once per bank."""


LocalTime = Annotated[str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class SettlementSection(_Section, frozen=True, kw_only=True):
    """The business day, its cut-off, merchants and their payouts (settlement.md)."""

    cutoff: LocalTime = "23:00"
    """Local time (UTC + [switch] utc_offset_h) at which the business date closes."""
    settle_deadline: LocalTime = "03:00"
    """Local time on the next day by which a date is settled, whatever files are missing."""
    merchants_file: str | None = None
    """The merchants CSV (settlement.md), relative to the config file. None: every
    merchant is accepted, at no fee, paid to an account named as its id."""
    out_dir: str | None = None
    """Where payout and reconciliation files are written; None: ``settlement/`` beside
    the journal."""
    path: str | None = None
    """The settlement database (SQLite) beside the journal's; None:
    ``settlement.sqlite3`` in the journal's folder."""
    max_clearing_file_bytes: Count = 256 * 1024 * 1024
    """A bank's clearing file larger than this is rejected unread. 256 MiB is some 2.5
    million detail records of 106 bytes, two and a half times the day of a million
    that bench/clearing_bench.py decodes; a file's records are held in memory while
    they are stored, some 8 bytes for each byte of the file."""


class PreauthSection(_Section, frozen=True, kw_only=True):
    """Pre-authorisation and completion (risk.md); each pre-authorisation keeps the
    values in force when it was approved."""

    expiry_days: Annotated[int, Meta(ge=1, le=30)] = 30
    """A pre-authorisation of business date D can be completed until the cut-off that
    closes D + expiry_days; at that cut-off one still open expires and is reversed."""
    completion_max_pct: Annotated[int, Meta(ge=100, le=1000)] = 115
    """A completion is 1 fen to floor(pre-authorisation x completion_max_pct / 100),
    else 61."""


class SecuritySection(_Section, frozen=True, kw_only=True):
    """The key store and its LMK (security.md; the software security module)."""

    key_store: str = "var/key-store.json"
    """The key store file (0600), relative to the config file."""
    lmk_file: str | None = "var/lmk"
    """The LMK's file (0600, 64 hexadecimal characters), relative to the config file..."""
    lmk_env: str | None = None
    """...or an environment variable holding it, which wins when it is set."""
    demo_keys: bool = False
    """DEMO material: the store and its LMK are made at the first start if missing, and
    every bank without a ZMK gets the published demo ZMK. Never in production; a
    warning at every start while it is on."""
    demo_terminals: bool = False
    """DEMO material: a ``*`` terminal entry (any terminal id and merchant) whose TMK is
    security.md's published sample (``3des``, KCV 43C6CC). Only with ``demo_keys``."""
    key_lifetime_h: Annotated[float, Meta(gt=0)] = 24.0
    """A terminal's working keys expire this long after its sign-on (then 77)."""
    max_signed_on_terminals: Count = 200_000
    """Terminals whose working keys a worker holds; past it the one signed on longest
    ago is forgotten (answered 77 once, and signs on again)."""


class RiskSection(_Section, frozen=True, kw_only=True):
    """The risk rules (risk.md, "Risk rules")."""

    rules_file: str | None = None
    """The rules (TOML), relative to the config file; None: no rules. Read with the
    configuration (start, reload, ``switch config check``): a fault refuses it whole."""
    sync_interval_s: PositiveSeconds = 0.05
    """With several workers: how often each reads the journal for the others' requests
    into its windows (docs/design.md, "Risk rules")."""


class LogSection(_Section, frozen=True, kw_only=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    """A reload changes it at once."""
    format: Literal["json", "console"] = "json"
    """json: one JSON object a line, for machines; console: key=value lines for a
    person at a terminal. Either way one line an event, the event's name first."""


class SwitchConfig(_Section, frozen=True, kw_only=True):
    switch: SwitchSection
    pos: PosListenerSection
    online: OnlineListenerSection
    banks: dict[BankName, BankSection]
    routes: tuple[RouteSection, ...]
    log: LogSection = msgspec.field(default_factory=LogSection)
    book: BookSection = msgspec.field(default_factory=BookSection)
    journal: JournalSection = msgspec.field(default_factory=JournalSection)
    saf: SafSection = msgspec.field(default_factory=SafSection)
    admin: AdminSection = msgspec.field(default_factory=AdminSection)
    settlement: SettlementSection = msgspec.field(default_factory=SettlementSection)
    security: SecuritySection = msgspec.field(default_factory=SecuritySection)
    risk: RiskSection = msgspec.field(default_factory=RiskSection)
    wallet: WalletSettings = msgspec.field(default_factory=WalletSettings)  # wallet.md
    preauth: PreauthSection = msgspec.field(default_factory=PreauthSection)
    credit: CreditSettings = msgspec.field(default_factory=CreditSettings)  # credit.md
    base_dir: str = "."
    """Where relative paths resolve: set by :func:`load_config` to the file's folder."""
    source: str | None = None
    """The file it was read from (set by :func:`load_config`): what a reload reads."""

    def dialects_path(self) -> Path:
        return Path(self.base_dir) / self.switch.dialects_dir

    def path(self, relative: str) -> Path:
        """A path named in the config, resolved against the config file's folder."""
        return Path(self.base_dir) / relative

    def tls_files(self, section: Literal["online", "admin"]) -> tuple[Path, Path] | None:
        """``[online]``'s or ``[admin]``'s certificate and key files, resolved; None when
        the section serves in the clear."""
        settings: OnlineListenerSection | AdminSection = getattr(self, section)
        if settings.tls_cert_file is None or settings.tls_key_file is None:
            return None
        return self.path(settings.tls_cert_file), self.path(settings.tls_key_file)

    def settlement_db_path(self) -> Path:
        named = self.settlement.path
        return (
            self.path(named)
            if named
            else self.path(self.journal.path).with_name("settlement.sqlite3")
        )

    def settlement_out_dir(self) -> Path:
        named = self.settlement.out_dir
        return self.path(named) if named else self.path(self.journal.path).with_name("settlement")

    def clearing_dir(self, bank: str) -> Path:
        """Where ``bank`` delivers its clearing files (and its simulator writes them)."""
        named = self.banks[bank].clearing_dir
        return self.path(named) if named else self.settlement_out_dir().parent / "clearing"


DEFAULT_CONFIG: Final = "conf/switch.toml"
CONFIG_ENV: Final = "SWITCH_CONFIG"
"""The variable naming the config file of the ``switch`` commands given no --config."""


def config_argument(given: str | None, environ: Mapping[str, str]) -> tuple[str, str]:
    """The config file a ``switch`` command reads, and where that came from: ``--config``,
    else ``$SWITCH_CONFIG``, else ``conf/switch.toml`` (relative to the current folder)."""
    if given:
        return given, "--config"
    if environ.get(CONFIG_ENV):
        return environ[CONFIG_ENV], CONFIG_ENV
    return DEFAULT_CONFIG, "default"


def unreadable_config_hint(origin: str) -> str:
    """What a "cannot read config" line adds: where the path came from, how to give one."""
    if origin == "--config":
        return f"(named by --config; without it ${CONFIG_ENV}, else {DEFAULT_CONFIG})"
    if origin == CONFIG_ENV:
        return f"(named by ${CONFIG_ENV}; --config overrides it)"
    return (
        f"(neither --config nor ${CONFIG_ENV} given: the default, from the current folder "
        f"{Path.cwd()}; give --config PATH or export {CONFIG_ENV}=PATH)"
    )


def load_config(path: str | Path, *, check: bool = True) -> SwitchConfig:
    """Reads and checks a switch config file; a problem raises ConfigError (with
    ``check=False`` only one that the types find: the cross-checks are the caller's,
    who may want all of them, see config_problems)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigUnreadable(f"cannot read config {path}: {exc.strerror or exc}") from exc
    try:
        config = msgspec.toml.decode(raw, type=SwitchConfig)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    config = msgspec.structs.replace(
        config, base_dir=str(path.parent.resolve()), source=str(path.resolve())
    )
    if check:
        check_config(config)
    return config


def check_config(config: SwitchConfig) -> None:
    """Cross-checks that the types alone cannot express; the first problem raises."""
    for problem in config_problems(config):
        raise ConfigError(problem)


def config_problems(config: SwitchConfig) -> list[str]:
    """Every problem the cross-checks find, one sentence each naming its key."""
    problems: list[str] = []
    if not config.banks:
        problems.append("no [banks.*] section: the switch needs at least one bank")
    problems.extend(_dialect_problems(config))
    problems.extend(_journal_problems(config.journal))
    if config.switch.host_id >= config.switch.hosts:
        problems.append(
            f"switch.host_id: {config.switch.host_id} is not one of switch.hosts = "
            f"{config.switch.hosts} (0 to {config.switch.hosts - 1})"
        )
    problems.extend(_risk_problems(config))
    problems.extend(_tls_problems("online", config.online))
    if config.admin.enabled:
        problems.extend(_tls_problems("admin", config.admin))
    shares = config.switch.channel_shares
    if sum(shares.values()) > 1:
        problems.append(
            f"switch.channel_shares: {shares} add up to more than 1 (each is a channel's"
            " guaranteed share of max_in_flight)"
        )
    seen: set[str] = set()
    for route in config.routes:
        for bank in (route.bank, route.secondary):
            if bank is not None and bank not in config.banks:
                problems.append(f"routes: prefix {route.prefix} names unknown bank {bank!r}")
        if route.prefix in seen:
            problems.append(f"routes: prefix {route.prefix} is listed twice")
        seen.add(route.prefix)
    problems.extend(config.wallet.problems([route.prefix for route in config.routes]))
    return problems


def _tls_problems(name: str, section: OnlineListenerSection | AdminSection) -> list[str]:
    """TLS names both files or neither; off loopback it is required (security.md: card
    data never crosses a network in the clear)."""
    cert, key = section.tls_cert_file, section.tls_key_file
    if (cert is None) != (key is None):
        given, missing = ("tls_cert_file", "tls_key_file") if key is None else (
            "tls_key_file", "tls_cert_file"
        )
        return [f"{name}.{missing}: {given} is set without it (TLS needs both or neither)"]
    if cert is None and not is_loopback(section.host):
        return [
            f"[{name}] host {section.host!r} is not loopback: tls_cert_file and "
            "tls_key_file are required (card data never crosses a network in the clear)"
        ]
    return []


def _risk_problems(config: SwitchConfig) -> list[str]:
    """The rules file reads and compiles whole (risk.md: any fault refuses it)."""
    try:
        load_risk_rules(config)
    except ConfigError as exc:
        return [str(exc)]
    return []


def load_risk_rules(config: SwitchConfig) -> RuleSet:
    """The rules of ``[risk] rules_file`` (an empty set when it names none);
    ConfigError (RulesError) naming the file, rule and key for any fault."""
    named = config.risk.rules_file
    if not named:
        return RuleSet.empty()
    path = config.path(named)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RulesError(f"risk.rules_file: cannot read {path}: {exc.strerror or exc}") from None

    def read_beside(name: str) -> bytes:
        return (path.parent / name).read_bytes()

    return load_rules(data, source=str(path), read_beside=read_beside)


def _journal_problems(journal: JournalSection) -> list[str]:
    """A PostgreSQL journal names its database; an SQLite one needs none."""
    if journal.backend == "postgresql" and not (journal.dsn or journal.dsn_env):
        return ["journal.dsn: backend postgresql needs a dsn (or dsn_env naming a variable)"]
    return []


def _dialect_problems(config: SwitchConfig) -> list[str]:
    """Every dialect the config names is a table in the dialects folder: a typo fails
    here, naming its key, rather than when the first codec is built."""
    folder = config.dialects_path()
    try:
        known = load_dialects(folder)
    except ConfigError as exc:
        return [str(exc)]
    named = {"pos.dialect": config.pos.dialect} | {
        f"banks.{name}.dialect": bank.dialect for name, bank in config.banks.items()
    }
    choices = ", ".join(sorted(known)) or "none"
    return [
        f"{key}: no dialect {dialect!r} in {folder} (known: {choices})"
        for key, dialect in named.items()
        if dialect not in known
    ]
