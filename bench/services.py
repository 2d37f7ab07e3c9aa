"""The processes under test, each started on its own and always stopped.

The switch, each bank simulator and the echo server run as separate processes, so the
switch's CPU and memory are its own. Each writes its log (JSON lines) to a file in the
run dir; the bench reads that file for the line saying the process is listening, and
on which port. Leaving a context stops the process: SIGTERM, a grace period, SIGKILL.
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec
import trio

from bench.runconfig import REPO, BankPlan, TomlTable, switch_config, write_config
from bench.versions import SwitchVersion, child_environment
from switch.core.workers import Worker, link_share

START_TIMEOUT_S: Final = 30.0
STOP_GRACE_S: Final = 8.0


class Service(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    pid: int
    log_path: str
    started: dict[str, Any]
    """The log line that said the process is up (it carries the ports)."""


class ServiceFailed(Exception):
    """A process under test exited or never said it had started."""


async def stop_process(process: trio.Process, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; always waits for it to be reaped."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with trio.move_on_after(grace_s):
                await process.wait()
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


async def start_process(argv: list[str], *, tree: Path = REPO, **options: Any) -> trio.Process:
    """Starts ``argv`` in ``tree`` with ``tree``'s code first on the import path."""
    # No PR_SET_PDEATHSIG: trio starts processes from a worker thread, and the kernel
    # would signal the child when that thread (not the bench) ends. Stopping is the
    # callers' finally blocks' job, and the bench turns SIGTERM into a cancellation.
    return await trio.lowlevel.open_process(
        argv, cwd=str(tree), env=child_environment(tree), **options
    )


@contextlib.asynccontextmanager
async def service(
    name: str,
    argv: list[str],
    run_dir: Path,
    started_event: str,
    *,
    ready: Callable[[trio.Process, Path], Awaitable[None]] | None = None,
    tree: Path = REPO,
    started_by: Callable[[dict[str, Any]], bool] | None = None,
) -> AsyncIterator[Service]:
    """Runs ``argv`` (in ``tree``, with its code) with its stdout and stderr in
    ``<run_dir>/<name>.log``, until the log says ``started_event`` (in a line that
    ``started_by`` also accepts, when given), and ``ready``, given the process and its
    log, returns; stops it on exit."""
    log_path = run_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = await start_process(
            argv, tree=tree, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        started = await wait_for_log_line(
            process,
            log_path,
            lambda line: (
                line.get("event") == started_event and (started_by is None or started_by(line))
            ),
        )
        if ready is not None:
            await ready(process, log_path)
        yield Service(name=name, pid=process.pid, log_path=str(log_path), started=started)
    finally:
        await stop_process(process)


async def wait_for_log_line(
    process: trio.Process,
    log_path: Path,
    wanted: Callable[[dict[str, Any]], bool],
    timeout_s: float = START_TIMEOUT_S,
) -> dict[str, Any]:
    """The first JSON line of the log that ``wanted`` accepts; raises ServiceFailed if the
    process exits or the time runs out first."""
    offset = 0
    with trio.move_on_after(timeout_s):
        while True:
            chunk = _read_from(log_path, offset)
            complete = chunk[: chunk.rfind(b"\n") + 1]
            offset += len(complete)
            for raw in complete.splitlines():
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(line, dict) and wanted(line):
                    return line
            if process.returncode is not None or process.poll() is not None:
                break
            await trio.sleep(0.05)
    tail = _read_from(log_path, 0)[-2000:].decode(errors="replace")
    raise ServiceFailed(f"{log_path.name}: not started (exit code {process.returncode}):\n{tail}")


def _read_from(path: Path, offset: int) -> bytes:
    """What a log file holds past ``offset`` (a small local file: reading it is quick)."""
    with path.open("rb") as log_file:
        log_file.seek(offset)
        return log_file.read()


def switch_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "switch", *arguments]


class SwitchUnderTest(msgspec.Struct, frozen=True, kw_only=True):
    """A running switch with its bank simulators."""

    label: str
    switch: Service
    simulators: dict[str, Service]
    config: TomlTable
    config_path: str
    dropped_config_keys: list[str]
    """Keys the bench generates that this switch's version does not know: left out."""
    signs_online: bool = True
    """Its online channel takes security.md's signed envelopes (a baseline from before
    them takes bare requests)."""

    @property
    def pos_port(self) -> int:
        return int(self.switch.started["pos_port"])

    @property
    def online_port(self) -> int:
        return int(self.switch.started["online_port"])


@contextlib.asynccontextmanager
async def switch_under_test(
    run_dir: Path,
    label: str,
    banks: list[BankPlan],
    *,
    extra: Mapping[str, Any],
    version: SwitchVersion,
    pos_max_connections: int = 20_000,
    workers: int = 1,
) -> AsyncIterator[SwitchUnderTest]:
    """Starts a bank simulator process per bank (each on an ephemeral port), then the
    switch of ``version`` with a config pointing at them (cut to the keys that version
    knows), and waits until every bank link has signed on (with ``workers`` > 1, as the
    config says, every worker started and each one's share of the links signed on: the
    switch's pid is then its supervisor's, and its log every worker's lines). Everything
    is stopped on exit, the switch first. The simulators are the same version's: the bank
    interface changed with security.md (a key change after sign-on, MACs), so a switch of
    before it is served by banks of before it; their CPU is reported apart from the
    switch's."""
    async with contextlib.AsyncExitStack() as stack:
        sims_config, _ = version.fit(
            switch_config(banks, {}, extra=extra, dialects_dir=version.dialects_dir)
        )
        sims_path = write_config(
            run_dir / f"{label}-sims.toml", sims_config, check=version.side == "current"
        )
        simulators: dict[str, Service] = {}
        for plan in banks:
            argv = version.switch_command(
                "sim-bank", "--config", str(sims_path), "--bank", plan.name, "--port", "0"
            )
            simulators[plan.name] = await stack.enter_async_context(
                service(
                    f"{label}-sim-{plan.name}", argv, run_dir, "simulator_started",
                    tree=Path(version.tree),
                )
            )
        ports = {name: int(sim.started["port"]) for name, sim in simulators.items()}
        generated = switch_config(
            banks,
            ports,
            pos_max_connections=pos_max_connections,
            extra=extra,
            dialects_dir=version.dialects_dir,
        )
        config, dropped = version.fit(generated)
        config_path = write_config(
            run_dir / f"{label}-switch.toml", config, check=version.side == "current"
        )
        argv = version.switch_command("run", "--config", str(config_path))
        links = sum(
            link_share(plan.links, Worker(index=index, count=workers))
            for plan in banks
            for index in range(workers)
        )
        switch = await stack.enter_async_context(  # entered last: stopped first
            service(
                f"{label}-switch",
                argv,
                run_dir,
                "switch_started",
                ready=functools.partial(_wait_for_links, links=links, workers=workers),
                tree=Path(version.tree),
                # Worker 0's line: it has the admin interface, and its port.
                started_by=lambda line: line.get("worker", 0) == 0,
            )
        )
        yield SwitchUnderTest(
            label=label,
            switch=switch,
            simulators=simulators,
            config=config,
            config_path=str(config_path),
            dropped_config_keys=dropped,
            signs_online=(Path(version.tree) / "switch" / "wire" / "envelope.py").exists(),
        )


async def _wait_for_links(
    process: trio.Process, log_path: Path, links: int, workers: int = 1
) -> None:
    """Waits for ``links`` distinct links (of any worker) to log ``link_signed_on`` and
    for ``workers`` workers to log ``switch_started``."""
    seen: set[tuple[object, object, object]] = set()
    started: set[object] = set()

    def signed_on(line: dict[str, Any]) -> bool:
        if line.get("event") == "link_signed_on":
            seen.add((line.get("worker"), line.get("bank"), line.get("link")))
        elif line.get("event") == "switch_started":
            started.add(line.get("worker"))
        return len(seen) >= links and len(started) >= workers

    await wait_for_log_line(process, log_path, signed_on)


@contextlib.asynccontextmanager
async def echo_server(run_dir: Path) -> AsyncIterator[Service]:
    argv = [sys.executable, "-m", "bench.echo_server", "--port", "0"]
    async with service("echo-server", argv, run_dir, "echo_started") as started:
        yield started
