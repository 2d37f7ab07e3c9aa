"""The admin interface knows the switch only through ``switch.admin.port.SwitchView``:
no module of ``switch.admin`` imports ``switch.app`` (not even for type checking, nor
through another module), and a fake that has nothing but the protocol's members is
served over real HTTP like the switch itself."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from switch.admin.port import (
    BankReading,
    CreditReading,
    JournalReading,
    ListenerReading,
    SettlementOperations,
    StandInReading,
    SwitchView,
)
from switch.admin.server import AdminServer
from switch.admin.status import ConfigStatus, LinkStatus, status_decoder
from switch.core.admission import AdmissionStatistics
from switch.core.clock import BusinessClock
from switch.core.reconfig import ReloadResult
from switch.core.stats import TransactionStats
from switch.net.trace import TraceAnswer, TraceSelection
from switch.store.port import AdviceBacklog, JournalStatistics, ReversalBacklog
from tests.admin.http import get, post
from tests.admin.test_http import admin_config
from tests.conftest import REPO

ADMIN = REPO / "switch" / "admin"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports anywhere (top level, functions, ``TYPE_CHECKING``),
    relative imports resolved against ``switch.admin``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = ["switch", "admin"][: 2 - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_no_admin_module_imports_the_switch_process() -> None:
    modules = sorted(ADMIN.glob("*.py"))
    assert len(modules) > 5  # the package is where the test looks for it
    importing = {
        path.name: sorted(name for name in imported_modules(path) if name == "switch.app")
        for path in modules
    }
    assert {name: found for name, found in importing.items() if found} == {}


@pytest.mark.slow  # a Python process of its own
def test_the_admin_package_imports_with_switch_app_blocked() -> None:
    """What the admin imports at run time does not reach ``switch.app`` either."""
    modules = [f"switch.admin.{path.stem}" for path in sorted(ADMIN.glob("*.py"))]
    program = (
        "import importlib, sys\n"
        "sys.modules['switch.app'] = None  # any import of it raises ImportError\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print('imported', len(sys.modules) > 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported True"


class FakeSwitch:
    """Nothing but ``SwitchView``'s members: a switch whose POS listener is bound, whose
    online one is not made yet, with one bank (one of its two links up) that owes three
    reversals."""

    def __init__(self) -> None:
        self.clock = BusinessClock.real()
        self.config_status = ConfigStatus(
            version=3,
            loaded_at="2027-01-04T01:02:03.000Z",
            path="fake.toml",
            last_reload_error=None,
        )
        self.settlement: SettlementOperations | None = None
        self.credit: CreditReading | None = None
        self.reloads = 0
        self.selection = TraceSelection()
        self.stats = TransactionStats()
        self.stats.record(
            channel="pos",
            kind="sale",
            bank="icbc",
            code="00",
            latency_ms=3.0,
            journal_ms=1.0,
            bank_ms=2.0,
        )

    def listener_readings(self) -> list[ListenerReading]:
        return [
            ListenerReading(
                name="pos",
                started=True,
                port=4242,
                listening=True,
                connections=2,
                max_connections=64,
                refused=5,
                shed=7,
            ),
            ListenerReading(
                name="online",
                started=False,
                port=0,
                listening=False,
                connections=0,
                max_connections=64,
                refused=0,
                shed=0,
            ),
        ]

    def bank_readings(self) -> list[BankReading]:
        links = tuple(
            LinkStatus(
                index=index,
                state=state,
                in_flight=index,
                window=8,
                connects=1,
                unsolicited=0,
                state_changes=index + 1,
            )
            for index, state in enumerate(("up", "connecting"))
        )
        return [
            BankReading(
                name="icbc",
                retired=False,
                links_configured=2,
                links=links,
                circuit_open=False,
                queued=4,
                queue_limit=100,
                refused_queue_full=6,
                expired=1,
                saf_unjournaled=2,
            )
        ]

    def journal_reading(self) -> JournalReading:
        return JournalReading(
            durability="group",
            statistics=JournalStatistics(
                commits=10, changes=25, failures=0, queued=1, backend="sqlite", writable=True
            ),
        )

    def admission_statistics(self) -> AdmissionStatistics:
        return AdmissionStatistics(
            slots=32,
            in_use=3,
            waiting=0,
            queue_limit=64,
            overloaded=False,
            admitted=11,
            refused_queue_full=0,
            refused_overload=0,
            expired=0,
            oldest_wait_s=0.0,
        )

    def transaction_stats(self) -> TransactionStats:
        return self.stats

    async def reversal_backlog(self) -> list[ReversalBacklog] | None:
        return [
            ReversalBacklog(bank="icbc", pending=2, manual=1, oldest_created_at=time.time() - 60)
        ]

    def risk_status(self) -> None:
        return None

    def stand_in_readings(self) -> list[StandInReading]:
        return []

    async def advice_backlog(self) -> list[AdviceBacklog] | None:
        return []

    async def reload(self) -> ReloadResult:
        self.reloads += 1
        return ReloadResult(accepted=True, version=4, changes={"routes": True})

    def certificate_expiries(self) -> dict[str, float]:
        return {"online": 1893456000.0}

    async def trace(self, selection: TraceSelection | None) -> TraceAnswer:
        if selection is not None:
            self.selection = selection
        return TraceAnswer(selection=self.selection)


async def test_a_fake_with_only_the_protocol_is_served_over_http(nursery: trio.Nursery) -> None:
    fake = FakeSwitch()
    view: SwitchView = fake  # the protocol is all the admin gets
    server = AdminServer(admin_config(), view)
    port: int = await nursery.start(server.serve)

    health = await get(port, "/healthz")
    assert health.status == 200 and health.json()["status"] == "ok"

    answer = await get(port, "/status")
    assert answer.status == 200
    document = status_decoder.decode(answer.body)
    assert document.not_ready == ["the online listener is not bound yet"]
    assert document.config.version == 3
    assert document.admission.admitted == 11
    [pos] = document.channels
    assert (pos.name, pos.connections, pos.connections_refused, pos.shed) == ("pos", 2, 5, 7)
    assert pos.transactions == 1
    [icbc] = document.banks
    assert (icbc.links_up, icbc.queued, icbc.refused_queue_full, icbc.link_state_changes) == (
        1,
        4,
        6,
        3,
    )
    assert (icbc.saf_pending, icbc.saf_manual, icbc.saf_unjournaled) == (3, 1, 2)
    assert icbc.saf_oldest_age_s is not None and icbc.saf_oldest_age_s >= 60
    assert (icbc.transactions, icbc.approved) == (1, 1)
    assert (document.journal.backend, document.journal.commits) == ("sqlite", 10)
    assert document.journal.durability == "group"

    metrics = await get(port, "/metrics")
    assert metrics.status == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.body.decode())
        for sample in family.samples
    }
    assert samples[("payswitch_bank_links_up", (("bank", "icbc"),))] == 1
    assert samples[("payswitch_saf_pending", (("bank", "icbc"),))] == 3

    # The operations go through the protocol too.
    assert server.token is not None
    reloaded = await post(port, "/reload", token=server.token)
    assert (reloaded.status, reloaded.json()["version"], fake.reloads) == (200, 4, 1)
    settlement = await get(port, "/settlement", headers={"authorization": f"Bearer {server.token}"})
    assert settlement.status == 503  # no settlement service: not running yet
