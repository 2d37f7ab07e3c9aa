"""N switch processes on one set of ports (``[switch] workers``): what each worker is
given, and when more than one may run. Plain functions of the config: the processes
themselves are :mod:`switch.supervisor`'s.

A worker is one ``switch run`` process among N, started by the supervisor:

- it listens on the same POS and online ports as the others (``SO_REUSEPORT``: the
  kernel spreads new connections over the workers' listeners);
- it holds its share of each bank's ``links`` (:func:`link_share`: worker i gets
  links // N, plus one of the remainder for the first ones, and at least one);
- its RRNs are the sequences equal to its index modulo N
  (:class:`switch.core.numbers.RrnAllocator`), so the workers never collide, and its
  STANs (to each bank, and the online channel's) a block of 999,999 // N of its own
  (:class:`switch.core.numbers.StanSequence`): two workers' links to one bank sending
  the same STAN were answered 94, duplicate;
- worker 0 alone runs the settlement service (a business date closes and settles
  once) and the admin interface (its status is worker 0's own view; the supervisor's
  log says which workers run). A reload (SIGHUP to the supervisor) reaches every
  worker.

The workers share one journal, PostgreSQL's (``workers > 1`` is refused on SQLite, one
process's file: :func:`worker_problems`). What crosses workers goes through it:

- a repeat, void, refund or terminal reversal reads its first or original from the
  journal (a terminal reconnects to any worker, and what another worker did is not in
  this one's book), and one whose first is still at another worker's bank watches it
  end there (``TransactionBook.shared``); an online request's id is looked up in the
  journal too;
- each queued reversal is claimed by one worker at a time (a lease, ``FOR UPDATE SKIP
  LOCKED``; only its claimer's result of an attempt is kept);
- each transaction is marked with its worker, and each worker holds an advisory lock
  of its own for its life: a worker's start-up recovery takes its own in-doubt
  transactions and those of workers that are gone, each by exactly one recoverer,
  never a live worker's sales still at their bank; a restarted worker resumes its own
  STANs (``Journal.last_bank_stan`` is its own);
- worker 0 records the business dates' closes; the others poll them, and an operator's
  forced close is recorded ``CLOSE_NOTICE_S`` before it takes effect, so every worker
  dates by it from the same second.

For the supervisor's own tests only, :data:`SQLITE_WORKERS_FOR_TESTS` set in the
environment lets the workers run on SQLite, each on a journal file of its own
(``worker-<i>/`` beside the configured one). Those journals are NOT one switch's
journal (see above): never set it in production.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import TYPE_CHECKING, Final

import msgspec

if TYPE_CHECKING:
    from switch.config import SwitchConfig

SQLITE_WORKERS_FOR_TESTS: Final = "SWITCH_TEST_ONLY_WORKERS_ON_SQLITE"
"""Set to 1 (tests only): workers > 1 on SQLite, one journal per worker."""


class Worker(msgspec.Struct, frozen=True, kw_only=True):
    """Which of the switch's processes this one is."""

    index: int = 0
    count: int = 1
    pos_port: int | None = None
    online_port: int | None = None
    """The listeners' ports as the supervisor bound them (a configured port 0 becomes
    one port, the same for every worker); None: the config's."""
    own_journal: bool = False
    """Tests only (SQLITE_WORKERS_FOR_TESTS): a journal of its own, see the module."""
    host: int = 0
    hosts: int = 1
    """``[switch] host_id`` and ``hosts``: switches on other hosts share the journal."""
    peers_dir: str | None = None
    """The supervisor's private folder where the workers and it answer worker 0's admin
    interface (switch.admin.peers); None: not started by a supervisor."""

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"worker {self.index} is not one of {self.count}")
        if not 0 <= self.host < self.hosts:
            raise ValueError(f"host {self.host} is not one of {self.hosts}")

    @property
    def slot(self) -> int:
        """This worker among every host's: what it is known as in the shared journal
        (its lock, its transactions' mark) and its share of RRNs and STANs."""
        return self.host * self.count + self.index

    @property
    def slots(self) -> int:
        """Workers on every host: each host runs ``count`` of them."""
        return self.hosts * self.count

    @property
    def alone(self) -> bool:
        """The one process of the switch (workers = 1): everything as ever."""
        return self.count == 1

    @property
    def shares_journal(self) -> bool:
        """Other workers (this host's or another's) write the same journal: what this
        one holds in memory of a transaction may be stale (see
        :class:`switch.core.book.TransactionBook`)."""
        return self.slots > 1 and not self.own_journal

    @property
    def runs_settlement(self) -> bool:
        """Worker 0 of host 0: a date closes and settles once, whichever host."""
        return self.slot == 0

    @property
    def serves_admin(self) -> bool:
        return self.index == 0


SINGLE: Final = Worker()


def link_share(links: int, worker: Worker) -> int:
    """A bank's links held by ``worker``: links // N, one more for each of the first
    links % N workers, and at least one (a worker without a link to a bank could not
    route to it)."""
    base, extra = divmod(links, worker.count)
    return max(1, base + (1 if worker.index < extra else 0))


def worker_problems(config: SwitchConfig, *, sqlite_for_tests: bool = False) -> list[str]:
    """Why ``config`` cannot run its ``[switch] workers`` processes, one sentence each
    naming its key (none when workers = 1)."""
    workers = config.switch.workers
    problems: list[str] = []
    hosts = config.switch.hosts
    if hosts > 1 and config.journal.backend != "postgresql":
        problems.append(
            f'switch.hosts = {hosts} needs [journal] backend = "postgresql": the hosts '
            "share one journal"
        )
    if workers == 1:
        return problems
    if config.journal.backend != "postgresql" and not sqlite_for_tests:
        problems.append(
            f'switch.workers = {workers} needs [journal] backend = "postgresql": a SQLite '
            f"journal belongs to one process (set workers = 1)"
        )
    for name, bank in config.banks.items():
        if bank.simulate:
            problems.append(
                f"banks.{name}.simulate = true runs the bank inside the switch process: "
                f"with switch.workers = {workers} run it on its own (switch sim-bank)"
            )
    return problems


def worker_config(config: SwitchConfig, worker: Worker) -> SwitchConfig:
    """What ``worker`` runs of ``config`` (at start and at each reload of its file):
    ``workers`` as the supervisor counts them, the ports it bound, its share of every
    bank's links, the admin interface on worker 0 only, and with ``own_journal`` (tests
    only, see the module) its journal in ``worker-<index>/`` beside the configured
    file. Unchanged for a switch of one process."""
    if worker.alone:
        if config.switch.workers == 1:
            return config
        # switch run --workers 1 on a file that says more: one process, as asked.
        return msgspec.structs.replace(
            config, switch=msgspec.structs.replace(config.switch, workers=1)
        )
    banks = {
        name: msgspec.structs.replace(bank, links=link_share(bank.links, worker))
        for name, bank in config.banks.items()
    }
    admin = config.admin
    if not worker.serves_admin:
        admin = msgspec.structs.replace(admin, enabled=False)
    journal = config.journal
    if worker.own_journal:
        path = PurePath(journal.path)
        journal = msgspec.structs.replace(
            journal, path=str(path.parent / f"worker-{worker.index}" / path.name)
        )
    pos, online = config.pos, config.online
    if worker.pos_port is not None:
        pos = msgspec.structs.replace(pos, port=worker.pos_port)
    if worker.online_port is not None:
        online = msgspec.structs.replace(online, port=worker.online_port)
    return msgspec.structs.replace(
        config,
        switch=msgspec.structs.replace(config.switch, workers=worker.count),
        banks=banks,
        admin=admin,
        journal=journal,
        pos=pos,
        online=online,
    )
