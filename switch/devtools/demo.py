"""``switch demo``: the demo configuration run as separate processes, so that it can run
with several workers on a PostgreSQL journal of its own.

From a config (``conf/switch.toml`` by default) it:

1. with ``--journal postgresql``, finds or installs the PostgreSQL server binaries
   (:mod:`switch.devtools.postgresql`), starts the persistent cluster in
   ``<var>/postgresql`` (initialised the first time; ``<var>`` is the folder of the
   config's ``[journal] path``, the demo's ``var/``) on a free loopback port and makes
   the database ``switch`` if it is not there;
2. writes ``<var>/demo-<journal>.toml``: the config with its paths made absolute, the
   journal on that database, every bank ``simulate = false``, ``[switch] workers``
   as asked, and any port 0 replaced by a free one (the file says where everything
   is: the operator commands take it as ``--config``, or from ``SWITCH_CONFIG``: the
   demo says ``export SWITCH_CONFIG=...`` on stderr, and in ``demo_ready``);
3. starts each bank as a ``switch sim-bank`` process on its configured port, then
   ``switch run`` (its supervisor and workers), and says ``demo_ready`` once the POS
   port accepts and, with ``[admin]`` on loopback, ``/readyz`` answers 200;
4. on SIGINT or SIGTERM (or when one of its processes ends by itself) stops the switch
   (it drains), then the banks, then the server, each within a bound, killing what
   does not stop in time.

Something that cannot start ends the demo with one line on stderr saying why, exit 2,
after stopping what had started. The processes run in sessions of their own (a
terminal's Ctrl-C reaches the demo only, which stops them in order) and stop by
themselves if the demo itself dies (:func:`switch.supervisor.stop_with_parent`); the
PostgreSQL server, a daemon, is then left running, and the next demo says so.
"""

from __future__ import annotations

import shlex
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import structlog
import trio

from switch.admin.auth import client_token
from switch.admin.client import AdminClient, AdminUnavailable, admin_tls, admin_url
from switch.admin.settings import is_loopback
from switch.config import CONFIG_ENV, SwitchConfig, load_config
from switch.devtools.postgresql import PostgresServer, ServerUnavailable, find_bin_dir
from switch.errors import ConfigError
from switch.files import write_private
from switch.log import configure_logging
from switch.supervisor import STOP_MARGIN_S, child_environment

log = structlog.get_logger()

Journal = Literal["sqlite", "postgresql"]
DATABASE: Final = "switch"
CLUSTER_FOLDER: Final = "postgresql"
START_TIMEOUT_S: Final = 60.0
"""A bank's port accepting, or the switch ready (its workers recover and sign on)."""
BANK_STOP_S: Final = 10.0
"""A bank simulator still running this long after SIGTERM is killed."""
SWITCH_STOP_MARGIN_S: Final = 5.0
"""Beyond the supervisor's own bound on its drain (shutdown_grace_s + STOP_MARGIN_S)."""
POLL_S: Final = 0.1
REFUSED: Final = 2
PATH_KEYS: Final = (
    ("switch", "dialects_dir"),
    ("journal", "path"),
    ("journal", "key_file"),
    ("admin", "token_file"),
    ("admin", "tls_cert_file"),
    ("admin", "tls_key_file"),
    ("online", "tls_cert_file"),
    ("online", "tls_key_file"),
    ("settlement", "merchants_file"),
    ("settlement", "out_dir"),
    ("settlement", "path"),
    ("security", "key_store"),
    ("security", "lmk_file"),
    ("risk", "rules_file"),
)
"""The config's paths (relative to its file) outside ``[banks.*]``, whose
``clearing_dir`` is one too."""
PORT_KEYS: Final = ("pos", "online", "admin")


class DemoError(Exception):
    """Something of the demo cannot start; says why, in one line."""


def one_line(text: str) -> str:
    return " ".join(text.split())


def var_folder(config: SwitchConfig) -> Path:
    """Where the demo keeps what it makes: the folder of the config's journal path."""
    return config.path(config.journal.path).parent.resolve()  # named as an operator reads it


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def derived_config(config: SwitchConfig, *, workers: int, dsn: str | None) -> dict[str, Any]:
    """The demo's config as TOML data: ``config``'s file with its paths absolute, every
    bank ``simulate = false``, ``workers``, any port 0 a free one, and with ``dsn`` the
    journal on that PostgreSQL database."""
    assert config.source is not None, "loaded from a file"
    raw: dict[str, Any] = tomllib.loads(Path(config.source).read_text())
    base = Path(config.base_dir)
    for section, key in PATH_KEYS:
        value = raw.get(section, {}).get(key)
        if isinstance(value, str):
            raw[section][key] = str((base / value).resolve())
    raw["switch"]["workers"] = workers
    if dsn is not None:
        journal = raw.setdefault("journal", {})
        journal.update(backend="postgresql", dsn=dsn)
        journal.pop("dsn_env", None)
    for name, bank in raw["banks"].items():
        bank["simulate"] = False
        if isinstance(bank.get("clearing_dir"), str):
            bank["clearing_dir"] = str((base / bank["clearing_dir"]).resolve())
        if bank["port"] == 0:
            bank["port"] = _free_port(config.banks[name].host)
    for section in PORT_KEYS:
        if section in raw and raw[section].get("port") == 0:
            raw[section]["port"] = _free_port(raw[section].get("host", "127.0.0.1"))
    return raw


class Child:
    """One process of the demo: its stdout (log lines) is the demo's; its stderr is held
    while it starts (a refusal's one line becomes the demo's reason) and passed on once
    it is up. With ``started_event``, its stdout is passed on line by line, and
    ``said_started`` is set at the first line naming that event."""

    def __init__(self, name: str, process: trio.Process, started_event: bytes | None) -> None:
        self.name = name
        self.process = process
        self.up = False
        self.held: list[str] = []
        self.stderr_done = trio.Event()
        self.started_event = started_event
        self.said_started = trio.Event()
        self.stdout_done = trio.Event()
        if started_event is None:
            self.stdout_done.set()  # not ours: it writes to the demo's own stdout

    @classmethod
    async def start(
        cls,
        name: str,
        args: list[str],
        nursery: trio.Nursery,
        *,
        started_event: str | None = None,
    ) -> Child:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "switch", *args],
            stdin=subprocess.DEVNULL,
            stdout=None if started_event is None else subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=child_environment(),
        )
        child = cls(name, process, None if started_event is None else started_event.encode())
        nursery.start_soon(child._relay_stderr, name=f"stderr:{name}")
        if started_event is not None:
            nursery.start_soon(child._relay_stdout, name=f"stdout:{name}")
        log.info("demo_process_started", process=name, pid=process.pid)
        return child

    async def started(self) -> bool:
        return self.said_started.is_set()

    async def _relay_stdout(self) -> None:
        stream = self.process.stdout
        assert stream is not None and self.started_event is not None
        out = sys.stdout.buffer
        pending = b""
        try:
            async for data in stream:
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    out.write(line + b"\n")
                    if self.started_event in line:
                        self.said_started.set()
                out.flush()
            if pending:
                out.write(pending + b"\n")
                out.flush()
        finally:
            self.stdout_done.set()

    async def _relay_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        pending = b""
        try:
            async for data in stream:
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._line(line.decode(errors="replace"))
            if pending:
                self._line(pending.decode(errors="replace"))
        finally:
            self.stderr_done.set()

    def _line(self, line: str) -> None:
        if self.up:
            print(line, file=sys.stderr, flush=True)
        else:
            self.held.append(line)

    def mark_up(self) -> None:
        self.up = True
        for line in self.held:
            print(line, file=sys.stderr, flush=True)
        self.held.clear()

    async def why_ended(self) -> str:
        """What the process said before it ended at start (its last stderr line)."""
        with trio.move_on_after(2):
            await self.stderr_done.wait()
        said = next((line for line in reversed(self.held) if line.strip()), None)
        self.held.clear()  # said once, in the demo's own line
        status = self.process.returncode
        reason = said or (
            f"killed by {signal.Signals(-status).name}"
            if status is not None and status < 0
            else f"exit status {status}"
        )
        return one_line(reason.removeprefix("switch: "))

    async def stop(self, timeout_s: float) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s``; its exit status."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(timeout_s):
            return await self.process.wait()
        log.error("demo_process_killed", process=self.name, pid=self.process.pid,
                  reason=f"still running {timeout_s} s after SIGTERM")  # fmt: skip
        self.process.kill()
        await self.process.wait()
        return -signal.SIGKILL


async def _accepts(host: str, port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError:
        return False
    await stream.aclose()
    return True


class Demo:
    def __init__(self, config: SwitchConfig, *, journal: Journal, workers: int) -> None:
        self.config = config
        self.journal = journal
        self.workers = workers
        self.var = var_folder(config)
        self.config_path = self.var / f"demo-{journal}.toml"
        self.server: PostgresServer | None = None
        self.banks: list[Child] = []
        self.switch: Child | None = None
        self.ended = trio.Event()
        self.stopping = False
        self.ended_by: str | None = None
        """The process that ended by itself, if one did (exit 1)."""
        self._starting = trio.CancelScope()

    async def run(self) -> int:
        """The demo until SIGINT or SIGTERM; its exit status."""
        refusal: str | None = None
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._on_signals, signals)
                try:
                    with self._starting:
                        await self._start(nursery)
                    if not self.ended.is_set():
                        for child in (*self.banks, self.switch):
                            assert child is not None
                            nursery.start_soon(self._watch, child)
                        await self.ended.wait()
                except DemoError as exc:
                    refusal = str(exc)
                finally:
                    with trio.CancelScope(shield=True):
                        statuses = await self._stop()
                nursery.cancel_scope.cancel()
        if refusal is not None:
            print(f"switch: demo: {refusal}", file=sys.stderr)
            return REFUSED
        if self.ended_by is not None:
            return 1
        return 0 if all(status == 0 for status in statuses) else 1

    async def _on_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if self.stopping:
                log.info("signal_received", signal=name, note="already stopping")
                continue
            log.info("demo_stopping", signal=name)
            self.stopping = True
            self._starting.cancel()
            self.ended.set()

    async def _watch(self, child: Child) -> None:
        status = await child.process.wait()
        if not self.stopping:
            log.error("demo_process_ended", process=child.name, pid=child.process.pid,
                      status=status, note="stopping the demo")  # fmt: skip
            self.stopping = True
            self.ended_by = child.name
            self.ended.set()

    async def _start(self, nursery: trio.Nursery) -> None:
        dsn = await self._start_postgresql() if self.journal == "postgresql" else None
        raw = derived_config(self.config, workers=self.workers, dsn=dsn)
        try:
            self.var.mkdir(parents=True, exist_ok=True)
            write_private(self.config_path, msgspec.toml.encode(raw))  # 0600: names the DSN
            config = load_config(self.config_path)
        except (OSError, ConfigError) as exc:
            raise DemoError(f"{self.config_path}: {one_line(str(exc))}") from exc
        path = str(self.config_path)
        for name in config.banks:
            # Its own word that it listens: a port that accepts may be another's.
            child = await Child.start(
                f"bank {name}",
                ["sim-bank", "--config", path, "--bank", name],
                nursery,
                started_event="simulator_started",
            )
            self.banks.append(child)
            await self._wait_up(child, child.started)
        self.switch = await Child.start("the switch", ["run", "--config", path], nursery)
        await self._wait_up(self.switch, lambda: self._switch_ready(config))
        log.info(
            "demo_ready",
            config=path,
            journal=dsn or str(config.path(config.journal.path)),
            workers=self.workers,
            pos_port=config.pos.port,
            online_port=config.online.port,
            admin_port=config.admin.port if config.admin.enabled else None,
            banks={name: bank.port for name, bank in config.banks.items()},
            operator_commands=self.export_line,
            stop="Ctrl-C or SIGTERM",
        )
        # For the person at the terminal (stdout is the log's, one JSON object a line):
        # without it `switch journal show` in another shell reads conf/switch.toml's
        # journal, not this demo's.
        print(
            f"{self.export_line}  # then `switch journal show RRN`, `switch status`, ... "
            "read this demo",
            file=sys.stderr,
            flush=True,
        )

    @property
    def export_line(self) -> str:
        """The shell line that points the operator commands at the demo's config."""
        return f"export {CONFIG_ENV}={shlex.quote(str(self.config_path.resolve()))}"

    async def _start_postgresql(self) -> str:
        folder = self.var / CLUSTER_FOLDER
        server = PostgresServer(folder=folder, fsync=True)
        if find_bin_dir() is None:
            log.info("demo_postgresql_installing", note="Debian's postgresql, with apt-get")
        self.server = server
        try:
            await trio.to_thread.run_sync(server.start)
            dsn = await trio.to_thread.run_sync(server.ensure_database, DATABASE)
        except (ServerUnavailable, OSError, subprocess.SubprocessError) as exc:
            raise DemoError(f"PostgreSQL in {folder} cannot start: {one_line(str(exc))}") from exc
        except Exception as exc:  # psycopg's: the server up, its database not made
            raise DemoError(f"PostgreSQL in {folder}: {one_line(str(exc))}") from exc
        log.info("demo_postgresql_started", folder=str(folder), port=server.port, dsn=dsn)
        return dsn

    async def _switch_ready(self, config: SwitchConfig) -> bool:
        if not await _accepts(config.pos.host, config.pos.port):
            return False
        if not config.admin.enabled or not is_loopback(config.admin.host):
            return True
        client = AdminClient(admin_url(config), token=client_token(config), tls=admin_tls(config))
        try:
            status, _ = await trio.to_thread.run_sync(client.get, "/readyz")
        except AdminUnavailable:
            return False
        finally:
            client.close()
        return status == 200

    async def _wait_up(self, child: Child, ready: Callable[[], Awaitable[bool]]) -> None:
        """Until ``ready()`` is true; DemoError if the child ends first or takes longer
        than START_TIMEOUT_S."""
        with trio.move_on_after(START_TIMEOUT_S):
            while child.process.poll() is None:
                if await ready():
                    child.mark_up()
                    return
                await trio.sleep(POLL_S)
            raise DemoError(f"{child.name} did not start: {await child.why_ended()}")
        raise DemoError(f"{child.name} is not ready after {START_TIMEOUT_S:.0f} s")

    async def _stop(self) -> list[int]:
        """The switch (it drains), the banks, the server: in that order, each bounded."""
        self.stopping = True
        statuses: list[int] = []
        if self.switch is not None:
            grace = self.config.switch.shutdown_grace_s + STOP_MARGIN_S + SWITCH_STOP_MARGIN_S
            statuses.append(await self.switch.stop(grace))
            log.info("demo_process_stopped", process=self.switch.name, status=statuses[-1])
        async with trio.open_nursery() as nursery:
            for bank in self.banks:
                nursery.start_soon(self._stop_bank, bank, statuses)
        if self.server is not None:
            try:
                await trio.to_thread.run_sync(self.server.stop)
            except (ServerUnavailable, OSError, subprocess.SubprocessError) as exc:
                log.error("demo_postgresql_not_stopped", error=one_line(str(exc)))
                statuses.append(1)
            else:
                log.info("demo_postgresql_stopped", folder=str(self.server.folder))
        for child in (*self.banks, *([self.switch] if self.switch else [])):
            with trio.move_on_after(1):  # what it said last, passed on
                await child.stderr_done.wait()
                await child.stdout_done.wait()
            child.mark_up()
        log.info("demo_stopped", ended_by=self.ended_by)
        return statuses

    async def _stop_bank(self, bank: Child, statuses: list[int]) -> None:
        status = await bank.stop(BANK_STOP_S)
        statuses.append(status)
        log.info("demo_process_stopped", process=bank.name, status=status)


def run_demo(config: SwitchConfig, *, journal: Journal, workers: int) -> int:
    """``switch demo``: runs until SIGINT or SIGTERM; the exit status (2: something
    could not start, one line on stderr)."""
    configure_logging(config.log.level, format=config.log.format)
    if config.source is None:
        print("switch: demo: it starts from a config file: --config", file=sys.stderr)
        return REFUSED
    return trio.run(Demo(config, journal=journal, workers=workers).run)
