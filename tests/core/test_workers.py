"""What each of N worker processes runs of the config, and when N > 1 may run."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from switch.config import SwitchConfig, load_config
from switch.core.workers import (
    SINGLE,
    Worker,
    link_share,
    worker_config,
    worker_problems,
)
from tests.conftest import REPO


def _demo(workers: int = 1, *, simulate: bool = False) -> SwitchConfig:
    config = load_config(REPO / "conf" / "switch.toml")
    banks = {
        name: msgspec.structs.replace(bank, simulate=simulate, links=5)
        for name, bank in config.banks.items()
    }
    return msgspec.structs.replace(
        config, switch=msgspec.structs.replace(config.switch, workers=workers), banks=banks
    )


@pytest.mark.parametrize(
    ("links", "workers", "shares"),
    [
        (2, 1, [2]),
        (2, 2, [1, 1]),
        (5, 2, [3, 2]),
        (7, 3, [3, 2, 2]),
        (1, 3, [1, 1, 1]),  # every worker needs a link to route to the bank
        (2, 4, [1, 1, 1, 1]),
        (8, 4, [2, 2, 2, 2]),
    ],
)
def test_a_banks_links_are_spread_over_the_workers(
    links: int, workers: int, shares: list[int]
) -> None:
    got = [link_share(links, Worker(index=i, count=workers)) for i in range(workers)]
    assert got == shares
    assert sum(got) == max(links, workers)


@pytest.mark.parametrize(("index", "count"), [(1, 1), (-1, 2), (0, 0)])
def test_a_worker_outside_its_count_is_refused(index: int, count: int) -> None:
    with pytest.raises(ValueError, match="is not one of"):
        Worker(index=index, count=count)


def test_one_process_runs_the_config_as_it_is() -> None:
    config = _demo()
    assert worker_config(config, SINGLE) is config
    assert worker_problems(config) == []
    assert SINGLE.alone and SINGLE.runs_settlement and SINGLE.serves_admin


def test_each_worker_gets_its_links_and_only_worker_0_the_admin_interface() -> None:
    config = _demo(2)
    config = msgspec.structs.replace(
        config, admin=msgspec.structs.replace(config.admin, enabled=True)
    )
    first = worker_config(config, Worker(index=0, count=2))
    second = worker_config(config, Worker(index=1, count=2))
    assert {bank.links for bank in first.banks.values()} == {3}
    assert {bank.links for bank in second.banks.values()} == {2}
    assert (first.admin.enabled, second.admin.enabled) == (True, False)
    assert first.journal == second.journal == config.journal  # one shared journal
    assert not Worker(index=1, count=2).runs_settlement


def test_own_journals_are_a_folder_per_worker_beside_the_configured_file() -> None:
    config = _demo(2)
    second = worker_config(config, Worker(index=1, count=2, own_journal=True))
    configured = Path(config.journal.path)
    assert Path(second.journal.path) == configured.parent / "worker-1" / configured.name
    # Settlement's database and files follow the journal's folder unless named.
    assert second.settlement_db_path().parent.name == "worker-1"


def test_workers_on_sqlite_are_refused_naming_the_key() -> None:
    config = _demo(2)
    assert config.journal.backend == "sqlite"
    assert worker_problems(config) == [
        'switch.workers = 2 needs [journal] backend = "postgresql": a SQLite journal '
        "belongs to one process (set workers = 1)"
    ]
    assert worker_problems(config, sqlite_for_tests=True) == []


def test_workers_on_postgresql_are_accepted_and_share_the_journal() -> None:
    config = _demo(2)
    shared = msgspec.structs.replace(
        config, journal=msgspec.structs.replace(config.journal, backend="postgresql",
                                                dsn="host=127.0.0.1 dbname=switch")
    )  # fmt: skip
    assert worker_problems(shared) == []
    assert Worker(index=1, count=2).shares_journal
    assert not Worker(index=1, count=2, own_journal=True).shares_journal  # tests only
    assert not SINGLE.shares_journal


def test_workers_cannot_simulate_a_bank_in_their_own_processes() -> None:
    problems = worker_problems(_demo(3, simulate=True), sqlite_for_tests=True)
    assert len(problems) == 4
    assert problems[0].startswith("banks.")
    assert "simulate = true" in problems[0] and "switch sim-bank" in problems[0]


def test_the_supervisors_ports_and_count_win_over_the_file() -> None:
    """A reload reads the file again: what the supervisor decided must not look like a
    change that needs a restart."""
    config = _demo(1)
    worker = Worker(index=1, count=3, pos_port=40001, online_port=40002)
    view = worker_config(config, worker)
    assert (view.switch.workers, view.pos.port, view.online.port) == (3, 40001, 40002)
    assert worker_config(_demo(4), SINGLE).switch.workers == 1  # switch run --workers 1
