"""Shared fixtures: a real switch on loopback with real simulated banks, and the log
lines it writes."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, settings

from switch.config import SwitchConfig, check_config
from switch.log import configure_logging
from switch.store.sqlite.journal import WriterThread
from tests.pg_server import PostgresServer, ServerUnavailable

# Speed is the bench's to judge, never a test's: on a shared 2-core machine hypothesis's
# timing checks (a deadline per example, "input generation is slow") fail for load alone.
settings.register_profile(
    "shared_machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("shared_machine")

REPO = Path(__file__).resolve().parent.parent
DIALECTS = REPO / "conf" / "dialects"


class LogSink:
    """Where every structlog line of the test session goes, so tests can read them."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.lines.append(data)
        return len(data)

    def flush(self) -> None:
        pass

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in b"".join(self.lines).splitlines() if line]
        return [e for e in parsed if event is None or e.get("event") == event]

    def text(self) -> str:
        return b"".join(self.lines).decode()


LOG_SINK = LogSink()
# At info, as a switch runs: at debug the message trace would follow every message.
configure_logging("info", stream=LOG_SINK)  # type: ignore[arg-type]


@pytest.fixture
def log_sink() -> LogSink:
    LOG_SINK.lines.clear()
    return LOG_SINK


BASE_CONFIG: dict[str, Any] = {
    "switch": {
        "acquirer_id": "48990000",
        "utc_offset_h": 8,
        "shutdown_grace_s": 5.0,
        "dialects_dir": str(DIALECTS),
        "max_in_flight": 1024,  # functional tests; test_switch_wide_cap checks shedding
    },
    "pos": {"host": "127.0.0.1", "port": 0, "read_deadline_s": 5.0},
    "online": {"host": "127.0.0.1", "port": 0, "read_deadline_s": 5.0},
    "banks": {
        name: {
            "host": "127.0.0.1",
            "port": 0,
            "links": 2,
            "window": 64,
            "issuer_timeout_s": 2.0,
            "simulate": True,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2,
        }
        for name in ("icbc", "abc", "cmb", "citic")
    },
    "routes": [
        {"prefix": "622202", "bank": "icbc"},
        {"prefix": "622848", "bank": "abc"},
        {"prefix": "621483", "bank": "cmb"},
        {"prefix": "622588", "bank": "cmb"},
        {"prefix": "622690", "bank": "citic"},
        {"prefix": "625808", "bank": "citic"},
    ],
}


_CONFIG_FOLDERS: list[Path] = []
"""Where make_config makes its folders: under the session's base folder once the session
has begun (pytest keeps the last three sessions' and removes older ones, as it does
every tmp_path), else the usual temporary folder, where nothing ever removed them."""


@pytest.fixture(scope="session", autouse=True)
def _config_folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    _CONFIG_FOLDERS[:] = [tmp_path_factory.mktemp("configs")]
    yield
    _CONFIG_FOLDERS.clear()


def make_config(**sections: Any) -> SwitchConfig:
    """The test config with sections merged in: ``make_config(banks={"icbc": {...}})``
    updates the icbc bank, ``routes=[...]`` replaces the routes; other keys update
    top-level sections."""
    raw = copy.deepcopy(BASE_CONFIG)
    folder = Path(tempfile.mkdtemp(prefix="switch-test-", dir=next(iter(_CONFIG_FOLDERS), None)))
    # DEMO keys (security.md's sample ZMK for every bank): the LMK and the key store
    # are made at the first start in the test's folder.
    raw["security"] = {
        "demo_keys": True,
        "demo_terminals": True,
        "key_store": str(folder / "key-store.json"),
        "lmk_file": str(folder / "lmk"),
    }
    raw["journal"] = {
        "path": str(folder / "journal.sqlite3"),
        "key_file": str(REPO / "conf" / "card-keys.toml"),
        "key_env": None,
    }
    for section, values in sections.items():
        if section == "routes":
            raw["routes"] = values
        elif section == "banks":
            for bank, settings in values.items():
                raw["banks"].setdefault(bank, {}).update(settings)
        else:
            raw.setdefault(section, {}).update(values)
    config = msgspec.convert(raw, SwitchConfig)
    check_config(config)
    return config


def luhn_complete(partial: str) -> str:
    """``partial`` with the check digit that makes it Luhn-valid."""
    from switch.core.validate import luhn_valid

    for digit in "0123456789":
        if luhn_valid(partial + digit):
            return partial + digit
    raise AssertionError("unreachable")


# -- trio's MockClock, for a whole switch in the test's process -------------------------


@pytest.fixture
def switch_clock() -> trio.testing.MockClock:
    """The test's clock (pytest-trio runs a test on the clock among its arguments): trio's
    MockClock, jumping to the next deadline once every task has waited a millisecond and
    no worker thread is running. A switch in the test's process commits its SQLite
    journal in its writer thread, reads it and writes files in threads (``trio.to_thread``,
    the default limiter); while one works its caller only looks blocked, and the ``autojump_clock``
    would jump over the commit and fire a timeout real time never would. Here a commit
    takes the real time it takes and no virtual time, and the switch's own timers (read
    deadlines, echo intervals, queueing deadlines, a bank's latency, reconnect backoffs)
    take virtual time and no real time. Not for a server in another process (PostgreSQL,
    a ``switch`` process): waiting on its socket looks idle too.

    trio's run loop calls the clock's ``_autojump`` once everything has been idle for
    ``autojump_threshold`` (it offers no public hook): that call is the one guarded."""
    return thread_aware_mock_clock()


def thread_aware_mock_clock() -> trio.testing.MockClock:
    """:func:`switch_clock`'s clock, for a test that calls ``trio.run`` itself."""
    clock = trio.testing.MockClock(autojump_threshold=0.001)
    autojump = clock._autojump

    def _autojump_unless_a_thread_works() -> None:
        if (
            trio.to_thread.current_default_thread_limiter().borrowed_tokens == 0
            and WriterThread.working == 0
        ):
            autojump()

    clock._autojump = _autojump_unless_a_thread_works  # type: ignore[method-assign]
    return clock


# -- a real PostgreSQL server, for the tests of stored state on that engine ------------

POSTGRESQL_REQUIRED = (
    os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
    or os.environ.get("SWITCH_TEST_POSTGRESQL") == "required"
)
"""In CI (and always under .ci/run) a PostgreSQL test never skips: a server that
cannot be started fails them."""
_POSTGRESQL_MISSING: list[str] = []


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for the session (about a second to start), stopped at its end. Where
    none can be started the tests that need it skip, saying why, and the session's
    summary says so loudly; in CI (``CI`` set, or under .ci/run) they fail instead."""
    server = PostgresServer()
    try:
        server.start()
    except (ServerUnavailable, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        reason = f"no PostgreSQL server could be started: {exc}"
        if POSTGRESQL_REQUIRED:
            pytest.fail(f"{reason} (in CI PostgreSQL tests must run)", pytrace=False)
        _POSTGRESQL_MISSING.append(reason)
        pytest.skip(reason)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """A new empty database on the session's server, for one test."""
    return postgres_server.create_database()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for reason in _POSTGRESQL_MISSING[:1]:
        terminalreporter.section("PostgreSQL tests SKIPPED", sep="!", red=True, bold=True)
        terminalreporter.line(f"{reason}\nEvery test of the PostgreSQL journal was skipped.")


# -- the `slow` marker: every test that starts a Python process carries it ------------------

_PYTHON_STARTED: list[str] = []
"""What the running test started with this interpreter (the switch, the bench, a
settlement child), from the ``subprocess.Popen`` audit event: ``trio.run_process`` and
``open_process`` reach it too, in whichever thread."""


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "subprocess.Popen":
        return
    executable, argv = args[0], args[1]
    words = [argv] if isinstance(argv, str | bytes | os.PathLike) else list(argv or ())
    first = os.fsdecode(executable if executable is not None else words[0] if words else "")
    if first.split(" ", 1)[0] == sys.executable:
        _PYTHON_STARTED.append(" ".join(os.fsdecode(word) for word in words[:4]))


sys.addaudithook(_audit)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _PYTHON_STARTED.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """A test that started a Python process and is not marked ``slow`` fails at its
    teardown, naming the process: ``pytest -m "not slow"`` (the quick loop) must leave
    every process-level test out."""
    outcome = yield
    if call.when != "teardown" or not _PYTHON_STARTED or item.get_closest_marker("slow"):
        return
    report = outcome.get_result()
    report.outcome = "failed"
    report.longrepr = (
        f"{item.nodeid} started {_PYTHON_STARTED[0]!r} ({len(_PYTHON_STARTED)} Python "
        "process(es)) and is not marked slow: add @pytest.mark.slow (or the module's "
        "pytestmark)"
    )

