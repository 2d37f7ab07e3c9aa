"""The start-up of ``switch run``: whatever can refuse a start does so before the switch
takes anything another process could be using, with one line naming the cause, exit 2.

In order:

1. File descriptors. The soft RLIMIT_NOFILE is raised to the hard limit. If the
   listeners' ``max_connections`` together and :func:`descriptor_reserve` do not fit
   in it, one warning line says so and each listener is capped to its share of what
   fits: a connection beyond it is closed at accept and counted (and its log line is
   written at most once a second), instead of the process running out of descriptors
   (accept failing with EMFILE, the journal's checkpoints and commits failing).
2. Logging: JSON lines, the standard library's logging and uncaught exceptions too.
3. Dialects, card keys and the admin token (the config was checked on loading; the
   keys and the token are read here).
4. The journal's lock: a second switch on the same journal stops here, before it has
   opened the journal or signed on to any bank, naming the first one's pid.
5. The listeners' ports (and those of the banks it simulates, and the admin
   interface's) are bound, not listening (``SO_REUSEADDR`` lets the listeners bind
   them again once the switch is ready), so a port in use stops the start before the
   journal is opened or any bank signed on.

With ``[switch] workers`` > 1 this is one worker's start (switch.core.workers; the
supervisor, switch.supervisor, checked first that the config may run that many): its
view of the config, and its listeners' ports bound with ``SO_REUSEPORT`` beside the
other workers' (the supervisor holds them too).

Then the switch runs (:class:`switch.app.SwitchApp`): the journal is opened and proved
writable (JournalUnavailable otherwise), recovery, banks, listeners. Anything that
fails before the switch has started is a start-up failure (exit 2); after, a crash
(exit 1); each is one line on stderr and one JSON line in the log, never a traceback.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import msgspec
import structlog
import trio

from switch import store
from switch.app import SwitchApp
from switch.config import ListenerSection, SwitchConfig, config_problems
from switch.core.clock import BusinessClock
from switch.core.workers import SINGLE, Worker, worker_config, worker_problems
from switch.errors import StartupError, SwitchError
from switch.log import (
    configure_logging,
    describe_exception,
    exception_leaves,
    log_uncaught_exceptions,
)
from switch.store.port import JournalLock, JournalUnavailable

log = structlog.get_logger()

FD_RESERVE_BASE: Final = 32
"""Descriptors kept for the process itself, beyond its bank links: the standard
streams, the event loop's (epoll, wake-up pair), the journal's (writer, reader and a
checkpoint's connection: file, WAL and shared memory), the lock file, the two listening
sockets and a connection accepted past a listener's cap before it is closed. Measured:
17 of them in use at most on the demo configuration; the rest is margin (name look-ups
and lazy imports open files of their own for a moment)."""

REFUSED_CONNECTION_EVENT: Final = "connection_refused"
"""The channel's log line for a connection closed at accept."""


def descriptor_reserve(config: SwitchConfig) -> int:
    """Descriptors the switch needs besides its terminals' connections: FD_RESERVE_BASE,
    each bank's links (a simulated bank in this process also holds a listener and the
    far end of each link) and the admin interface's listener and connections."""
    bank_fds = sum(
        bank.links * 2 + 1 if bank.simulate else bank.links for bank in config.banks.values()
    )
    admin_fds = config.admin.max_connections + 1 if config.admin.enabled else 0
    return FD_RESERVE_BASE + bank_fds + admin_fds


def raise_open_files_limit() -> tuple[int, int]:
    """Raises the soft RLIMIT_NOFILE to the hard limit; (the limit before, the limit
    now). Where the hard limit is unlimited, to the kernel's usual per-process cap."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft  # kept; the budget below is computed from what is in force
        return soft, target
    return soft, soft


def fit_connections(config: SwitchConfig, room: int) -> dict[str, int] | None:
    """Each listener's connection cap within ``room`` descriptors: as configured when
    they fit, else each its share of ``room`` in proportion to its ``max_connections``
    (at least one); None when ``room`` cannot hold one connection per listener."""
    listeners = _listeners(config)
    wanted = sum(section.max_connections for section in listeners.values())
    if wanted <= room:
        return {name: section.max_connections for name, section in listeners.items()}
    if room < len(listeners):
        return None
    return {
        name: max(1, section.max_connections * room // wanted)
        for name, section in listeners.items()
    }


def _listeners(config: SwitchConfig) -> dict[str, ListenerSection]:
    return {"pos": config.pos, "online": config.online}


class Startup:
    """What the start-up holds while the switch runs: the journal's lock (for the
    process's life) and the listeners' ports (until the listeners have bound them)."""

    def __init__(self, config: SwitchConfig, worker: Worker = SINGLE) -> None:
        self.worker = worker
        self.config = config
        """As loaded, but with the listeners' ``max_connections`` fitted to the
        descriptors there are."""
        self.app: SwitchApp | None = None
        self.started = False
        """Set once the switch serves: a failure after it is a crash, not a refusal."""
        self._lock: JournalLock | None = None
        self._ports: list[socket.socket] = []

    def listening(self) -> None:
        """The listeners have bound their ports: the reservations can go."""
        self.started = True
        self._release_ports()

    def close(self) -> None:
        self._release_ports()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _release_ports(self) -> None:
        for reservation in self._ports:
            reservation.close()
        self._ports.clear()

    def run(self, main: Callable[[Startup], Awaitable[None]]) -> int:
        """Runs ``main`` under trio; the exit status: 0 when it returns, 2 when it
        failed before the switch started, 1 after (one line on stderr either way)."""
        try:
            trio.run(main, self)
        except BaseException as exc:
            return self._failed(exc)
        return 0

    def _failed(self, exc: BaseException) -> int:
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in exception_leaves(exc)):
            print("switch: interrupted", file=sys.stderr)
            return 130
        if not self.started:
            return refuse(exc)
        log.critical("switch_crashed", exc_info=exc)
        print(f"switch: stopped by an error: {describe_exception(exc)}", file=sys.stderr)
        return 1

    def lock_journal(self) -> None:
        """Locks the journal for the process's life; JournalUnavailable if another
        switch holds it (naming its pid), before anything has opened the journal."""
        worker = self.worker
        try:
            self._lock = store.lock_journal(self.config, worker.slot)
        except JournalUnavailable as exc:
            if worker.hosts == 1 or "in use by another switch" not in str(exc):
                raise
            raise JournalUnavailable(
                f"[switch] host_id {worker.host} is taken: another switch on this journal runs "
                f"as host {worker.host} ({exc}); give each host its own host_id"
            ) from None

    def reserve_ports(self) -> None:
        """Binds each listener's host and port (as ``trio.open_tcp_listeners`` will,
        ``SO_REUSEADDR``, IPv6 only on IPv6), without listening: StartupError naming the
        listener when one is in use. Port 0 is skipped: any free port will do."""
        for label, host, port in _bound_ports(self.config):
            shared = not self.worker.alone and label in SHARED_PORTS
            reserve_port(label, host, port, self._ports, reuse_port=shared)


SHARED_PORTS: Final = ("[pos]", "[online]")
"""The ports N workers listen on together (SO_REUSEPORT)."""


def reserve_port(
    label: str, host: str, port: int, taken: list[socket.socket], *, reuse_port: bool = False
) -> None:
    """Binds one listener's addresses into ``taken`` (which the caller closes); with
    ``reuse_port``, beside other SO_REUSEPORT sockets of this user (the workers')."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"{label} host {host!r}: {exc.strerror}") from exc
    for family, kind, protocol, _, address in addresses:
        try:
            reservation = socket.socket(family, kind, protocol)
        except OSError as exc:
            if exc.errno == errno.EAFNOSUPPORT:
                continue  # as trio does: an address family this system lacks
            raise
        taken.append(reservation)
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            reservation.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            reservation.bind(address)
        except OSError as exc:
            what = "is in use" if exc.errno == errno.EADDRINUSE else "cannot be bound"
            raise StartupError(f"{label} port {port} on {host} {what}: {exc.strerror}") from exc


def _bound_ports(config: SwitchConfig) -> list[tuple[str, str, int]]:
    """What the switch listens on: its channels, and the banks it simulates itself."""
    ports = [
        (f"[{name}]", section.host, section.port) for name, section in _listeners(config).items()
    ]
    ports += [
        (f"[banks.{name}] (simulated)", bank.host, bank.port)
        for name, bank in config.banks.items()
        if bank.simulate
    ]
    if config.admin.enabled:
        ports.append(("[admin]", config.admin.host, config.admin.port))
    return [(label, host, port) for label, host, port in ports if port != 0]


def prepare(
    config: SwitchConfig, worker: Worker = SINGLE, clock: BusinessClock | None = None
) -> Startup:
    """Steps 1 to 5 of the module's docstring; raises the first failure (its text the
    one line to print), having released whatever it took. ``worker``: which of the
    switch's processes this is (the one, by default); ``clock``: the business clock
    (the real one by default)."""
    config = worker_config(config, worker)
    limit_before, limit = raise_open_files_limit()
    reserve = descriptor_reserve(config)
    caps = fit_connections(config, limit - reserve)
    listeners = _listeners(config)
    capped = caps is not None and any(
        caps[name] < section.max_connections for name, section in listeners.items()
    )
    configure_logging(
        config.log.level,
        rate_limited_events=(REFUSED_CONNECTION_EVENT,) if capped else (),
        format=config.log.format,
    )
    log_uncaught_exceptions()
    log.info("file_descriptors", limit=limit, raised_from=limit_before, reserve=reserve)
    for problem in worker_problems(config, sqlite_for_tests=worker.own_journal):
        raise StartupError(problem)
    if caps is None:
        raise StartupError(
            f"the file descriptor limit ({limit}) leaves no room for connections: the "
            f"switch keeps {reserve} for the journal, bank links and itself (raise the hard "
            f"limit: ulimit -Hn, systemd LimitNOFILE=)"
        )
    if capped:
        log.warning(
            "connections_capped",
            fd_limit=limit,
            fd_reserve=reserve,
            max_connections={name: section.max_connections for name, section in listeners.items()},
            capped_to=caps,
            note="a connection beyond the cap is closed at accept; raise the hard "
            "RLIMIT_NOFILE (ulimit -Hn, systemd LimitNOFILE=) or lower max_connections",
        )
    config = msgspec.structs.replace(
        config,
        pos=msgspec.structs.replace(config.pos, max_connections=caps["pos"]),
        online=msgspec.structs.replace(config.online, max_connections=caps["online"]),
    )
    startup = Startup(config, worker)
    try:
        startup.app = SwitchApp(config, worker, clock)  # reads keys, admin token
        startup.lock_journal()
        startup.reserve_ports()
    except BaseException:
        startup.close()
        raise
    return startup


def refuse(exc: BaseException) -> int:
    """A start-up failure: one line on stderr, one in the log; exit status 2."""
    cause = describe_exception(exc)
    log.critical("switch_start_refused", reason=cause)
    print(f"switch: {cause}", file=sys.stderr)
    return 2


class Preflight(msgspec.Struct, frozen=True, kw_only=True):
    """What ``switch config check`` found: ``problems``, each a reason ``switch run``
    would refuse to start; ``notes``, what a running switch of this journal holds (its
    journal, its ports): information, since a reload of the file is what it is checked
    for."""

    problems: list[str]
    notes: list[str]


JOURNAL_IN_USE: Final = "is in use by another switch"
"""How either journal engine says another switch holds the journal (its lock)."""


def preflight(config: SwitchConfig, *, sqlite_workers_for_tests: bool = False) -> Preflight:
    """Everything ``switch run`` would refuse to start on, one sentence a problem,
    found without starting anything (``switch config check``): the cross-checks, the
    card keys, the journal (in use, or not writable), the ports (bound and let go at
    once) and the file descriptors. The journal held by a running switch, and a port
    held by a ``switch run`` process while it is, are notes, not problems."""
    problems = config_problems(config)
    notes: list[str] = []
    problems.extend(worker_problems(config, sqlite_for_tests=sqlite_workers_for_tests))
    try:
        SwitchApp(config)  # builds the codecs and reads the card keys
    except (SwitchError, KeyError) as exc:
        if str(exc) not in problems:  # the cross-checks found it already (a rules file)
            problems.append(str(exc).strip("'\""))
    journal = store.journal_problem(config)
    running = journal is not None and JOURNAL_IN_USE in journal
    if journal is not None:
        (notes if running else problems).append(
            journal.replace(JOURNAL_IN_USE, "is in use by the running switch")
        )
    for label, host, port in _bound_ports(config):
        taken: list[socket.socket] = []
        try:
            reserve_port(label, host, port, taken)
        except StartupError as exc:
            owners = _switches_listening(port) if running else []
            if owners:
                pids = ", ".join(map(str, owners))
                notes.append(f"{label} port {port} on {host} is in use by the running switch "
                             f"(pid {pids})")  # fmt: skip
            else:
                problems.append(str(exc))
        finally:
            for reservation in taken:
                reservation.close()
    _, limit = raise_open_files_limit()
    if fit_connections(config, limit - descriptor_reserve(config)) is None:
        problems.append(
            f"the file descriptor limit ({limit}) leaves no room for connections beyond "
            f"the {descriptor_reserve(config)} the switch keeps"
        )
    return Preflight(problems=problems, notes=notes)


def _switches_listening(port: int) -> list[int]:
    """The pids of the ``switch run`` processes listening on TCP ``port`` (any address),
    when every process listening on it is one; else none. From /proc: the listening
    sockets' inodes, then whose descriptors they are (processes of other users cannot
    be looked into: a port of theirs is not the switch's)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # sl, local address:port (hex), remote, state (0A: listening), ..., inode
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return []
    owners: set[int] = set()
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            descriptors = {os.readlink(fd) for fd in (process / "fd").iterdir()}
        except OSError:
            continue  # another user's, or gone meanwhile
        if descriptors & inodes:
            owners.add(int(process.name))
    if not owners or not all(_is_switch_run(pid) for pid in owners):
        return []
    return sorted(owners)


def _is_switch_run(pid: int) -> bool:
    """Whether process ``pid`` is ``switch run`` (``switch`` or ``python -m switch``)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    names = [os.path.basename(arg) for arg in argv]
    for index, name in enumerate(names[:-1]):
        if name == b"switch" and names[index + 1] == b"run":
            return True
    return False
