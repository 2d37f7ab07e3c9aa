"""``switch run`` with ``[switch] workers`` = N > 1: one supervisor process, N workers.

The supervisor serves nothing itself. It:

1. refuses, like any start-up refusal (one line naming the key, exit 2), a config that
   cannot run N workers (switch.core.workers.worker_problems: today, any SQLite
   journal);
2. binds the POS and online ports with ``SO_REUSEPORT`` and holds them, bound and not
   listening, for its life: a configured port 0 becomes one port for every worker, and
   the port stays the switch's while a worker restarts;
3. starts the workers, ``switch run --workers N --worker-index i`` (each with the same
   config file and the ports it bound); each worker's log lines carry ``worker``;
4. restarts a worker that dies, after a backoff (RESTART_MIN_S doubling to
   RESTART_MAX_S, back to the minimum once a worker has lived STABLE_S), logging why
   (``worker_died``: its exit status or signal). A worker that refuses its very first
   start (exit 2: the config, its journal, a port) stops the whole switch, exit 2: a
   restart would only refuse again;
5. forwards SIGHUP (reload) to every worker, and SIGTERM or SIGINT (drain): then waits
   for the workers to finish their transactions (each has ``shutdown_grace_s``) and
   exits 0, or 1 if one had to be killed or failed to stop cleanly.

Workers run in sessions of their own (a terminal's Ctrl-C reaches the supervisor only,
which forwards it once) and send themselves SIGTERM when the supervisor has ended,
however it ended (:func:`stop_with_parent`), so none is left serving without one.

What each worker is given, and what crosses workers through their shared PostgreSQL
journal, is in switch.core.workers' docstring.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Final

import msgspec
import structlog
import trio

from switch import store
from switch.admin.peers import SUPERVISOR_SOCKET, SupervisorReport, WorkerState, serve_unix
from switch.config import SwitchConfig
from switch.core.workers import SQLITE_WORKERS_FOR_TESTS, worker_problems
from switch.errors import StartupError
from switch.log import configure_logging, describe_exception, log_uncaught_exceptions
from switch.startup import SHARED_PORTS, refuse, reserve_port
from switch.store.port import JournalError

log = structlog.get_logger()

RESTART_MIN_S: Final = 0.5
RESTART_MAX_S: Final = 30.0
STABLE_S: Final = 60.0
"""A worker that ran this long before it died is restarted after RESTART_MIN_S again."""
STOP_MARGIN_S: Final = 10.0
"""Beyond ``shutdown_grace_s``: a worker's journal flush and close after its drain.
A worker still running then is killed."""
REFUSED: Final = 2
"""A worker's exit status when it refused to start (switch.startup)."""
PARENT_PID_ENV: Final = "SWITCH_PARENT_PID"
"""Set by a process for the ``switch`` processes it starts, to its own pid: each of them
stops when that process has ended (:func:`stop_with_parent`)."""


def sqlite_workers_for_tests() -> bool:
    """Whether the test-only switch (switch.core.workers.SQLITE_WORKERS_FOR_TESTS) is
    set: workers on SQLite, each on a journal of its own. Never in production."""
    return os.environ.get(SQLITE_WORKERS_FOR_TESTS) == "1"


def supervise(config: SwitchConfig, workers: int, clock_argv: Sequence[str] = ()) -> int:
    """Runs the switch as ``workers`` processes until SIGTERM or SIGINT; the exit
    status (2: refused to start, one line on stderr). ``clock_argv``: the business
    clock's options for every worker (the same simulated clock, from the same moment)."""
    configure_logging(config.log.level, format=config.log.format)
    log_uncaught_exceptions()
    config = msgspec.structs.replace(
        config, switch=msgspec.structs.replace(config.switch, workers=workers)
    )
    problems = worker_problems(config, sqlite_for_tests=sqlite_workers_for_tests())
    if problems:
        return refuse(StartupError(problems[0]))
    if config.source is None:
        return refuse(StartupError("workers are started from a config file: --config"))
    try:
        host_lock = store.lock_host(config)  # [switch] host_id: one switch each
    except JournalError as exc:
        return refuse(StartupError(str(exc)))
    held: list[socket.socket] = []
    # Where worker 0's admin asks the other workers and this supervisor (admin/peers.py).
    peers_dir = tempfile.mkdtemp(prefix="switch-workers-")  # mode 0700
    try:
        ports: list[int] = []
        for label, section in zip(SHARED_PORTS, (config.pos, config.online), strict=True):
            before = len(held)
            reserve_port(label, section.host, section.port, held, reuse_port=True)
            ports.append(held[before].getsockname()[1] if len(held) > before else section.port)
        supervisor = Supervisor(
            config, pos_port=ports[0], online_port=ports[1], clock_argv=clock_argv,
            peers_dir=peers_dir,
        )  # fmt: skip
        return trio.run(supervisor.run)
    except StartupError as exc:
        return refuse(exc)
    except KeyboardInterrupt:
        print("switch: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # its workers end with it (stop_with_parent)
        log.critical("supervisor_crashed", exc_info=exc)
        print(f"switch: the supervisor stopped by an error: {describe_exception(exc)}",
              file=sys.stderr)  # fmt: skip
        return 1
    finally:
        for reservation in held:
            reservation.close()
        shutil.rmtree(peers_dir, ignore_errors=True)
        if host_lock is not None:
            host_lock.release()


def child_environment() -> dict[str, str]:
    """The environment of a ``switch`` process this one starts: ours, and our pid, so
    that it stops when we end (:func:`stop_with_parent`)."""
    return {**os.environ, PARENT_PID_ENV: str(os.getpid())}


async def stop_with_parent() -> None:
    """Sends this process SIGTERM (its own handler then drains it) once the process
    that started it, named in PARENT_PID_ENV, has ended, however it ended; returns at
    once when none is named.

    Not ``PR_SET_PDEATHSIG``: that signal follows the *thread* that forked the child,
    and trio forks in a thread of its cache, which ends after 10 s idle: every worker
    was sent SIGTERM 10 s after it started, while its supervisor ran on."""
    named = os.environ.get(PARENT_PID_ENV, "")
    if not named.isdigit():
        return
    parent = int(named)
    try:
        pidfd = os.pidfd_open(parent)
    except ProcessLookupError:
        pidfd = None
    try:
        # Ours is gone if we were handed to another parent (its pid may be reused).
        if pidfd is not None and os.getppid() == parent:
            await trio.lowlevel.wait_readable(pidfd)  # readable once it has exited
    finally:
        if pidfd is not None:
            os.close(pidfd)
    log.warning("parent_ended", parent_pid=parent, note="stopping as on SIGTERM")
    os.kill(os.getpid(), signal.SIGTERM)


def _reason(status: int) -> str:
    if status < 0:
        return f"killed by {signal.Signals(-status).name}"
    return f"exit status {status}"


class Supervisor:
    def __init__(
        self,
        config: SwitchConfig,
        *,
        pos_port: int,
        online_port: int,
        clock_argv: Sequence[str] = (),
        peers_dir: str | None = None,
    ) -> None:
        self.config = config
        self.peers_dir = peers_dir
        self.clock_argv = list(clock_argv)
        self.count = config.switch.workers
        self.pos_port = pos_port
        self.online_port = online_port
        self.processes: dict[int, trio.Process] = {}
        """The workers running now, by index."""
        self.restarts = 0
        self._stopping = False
        self._failed = False
        """A worker was killed at the end, or stopped badly: exit 1."""
        self._refused = False
        """A worker refused its first start: exit 2."""
        self._stop_requested = trio.Event()
        self._stop_signal: int = signal.SIGTERM
        self._running = self.count
        self._all_ended = trio.Event()
        self.states: dict[int, WorkerState] = {
            index: WorkerState(index=index, state="starting", pid=None, restarts=0, last_exit=None)
            for index in range(self.count)
        }
        """Each worker as worker 0's admin is told (switch.admin.peers)."""

    def command(self, index: int) -> list[str]:
        assert self.config.source is not None
        return [
            sys.executable, "-m", "switch", "run",
            "--config", self.config.source,
            "--workers", str(self.count),
            "--worker-index", str(index),
            "--pos-port", str(self.pos_port),
            "--online-port", str(self.online_port),
            *self.clock_argv,
            *(["--peers-dir", self.peers_dir] if self.peers_dir is not None else []),
        ]  # fmt: skip

    def _set_state(self, index: int, state: str, **changes: object) -> None:
        self.states[index] = msgspec.structs.replace(self.states[index], state=state, **changes)

    async def _report(self, request: bytes) -> bytes:
        return msgspec.json.encode(
            SupervisorReport(pid=os.getpid(), workers=list(self.states.values()))
        )

    async def run(self) -> int:
        signals_wanted = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        with trio.open_signal_receiver(*signals_wanted) as signals:
            async with trio.open_nursery() as nursery:
                for index in range(self.count):
                    nursery.start_soon(self._keep_running, index, name=f"worker:{index}")
                log.info(
                    "supervisor_started",
                    workers=self.count,
                    pos_port=self.pos_port,
                    online_port=self.online_port,
                    pid=os.getpid(),
                )
                nursery.start_soon(self._on_signals, signals)
                nursery.start_soon(stop_with_parent)  # when a demo started it
                if self.peers_dir is not None:
                    await nursery.start(
                        serve_unix, Path(self.peers_dir) / SUPERVISOR_SOCKET, self._report
                    )
                await self._stop_requested.wait()  # a signal, or a worker's refused start
                await self._wait_or_kill()
                nursery.cancel_scope.cancel()  # the signals' task
        log.info("supervisor_stopped", restarts=self.restarts, clean=not self._failed)
        if self._refused:
            return REFUSED
        return 1 if self._failed else 0

    async def _on_signals(self, signals: AsyncIterator[int]) -> None:
        """SIGHUP is forwarded; the first SIGTERM or SIGINT drains, later ones are only
        logged (the drain is bounded: shutdown_grace_s + STOP_MARGIN_S)."""
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                log.info("signal_received", signal=name, forwarded_to=self._pids())
                self._send(signum)
            elif self._stopping:
                log.info("signal_received", signal=name, note="already draining")
            else:
                log.info(
                    "supervisor_draining",
                    signal=name,
                    workers=self._pids(),
                    grace_s=self.config.switch.shutdown_grace_s,
                )
                self.stop(signum)

    def statistics(self) -> dict[str, object]:
        return {
            "workers": self.count,
            "running": {index: process.pid for index, process in self.processes.items()},
            "restarts": self.restarts,
        }

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """No more restarts; ``signum`` to every worker running."""
        self._stopping = True
        self._stop_signal = signum
        self._stop_requested.set()
        self._send(signum)

    def _pids(self) -> list[int]:
        return [process.pid for process in self.processes.values()]

    def _send(self, signum: int) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signum)

    async def _wait_or_kill(self) -> None:
        with trio.move_on_after(self.config.switch.shutdown_grace_s + STOP_MARGIN_S):
            await self._all_ended.wait()
            return
        for index, process in self.processes.items():
            log.error("worker_killed", worker=index, pid=process.pid, reason="did not drain")
            process.kill()
            self._failed = True
        await self._all_ended.wait()

    async def _pause(self, seconds: float) -> None:
        """Sleeps before a restart, but not past a drain's start."""
        with trio.move_on_after(seconds):
            await self._stop_requested.wait()

    async def _keep_running(self, index: int) -> None:
        backoff = RESTART_MIN_S
        first = True
        try:
            while not self._stopping:
                began = trio.current_time()
                try:
                    process = await trio.lowlevel.open_process(
                        self.command(index),
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                        env=child_environment(),
                    )
                except OSError as exc:  # no process (EAGAIN, ENOMEM): tried again
                    log.error(
                        "worker_not_started", worker=index, error=str(exc), retry_in_s=backoff
                    )
                    first = False
                    await self._pause(backoff)
                    backoff = min(backoff * 2, RESTART_MAX_S)
                    continue
                self.processes[index] = process
                self._set_state(index, "running", pid=process.pid)
                log.info("worker_started", worker=index, pid=process.pid, restart=not first)
                with trio.CancelScope(shield=True):  # a worker is waited for, never left
                    status = await process.wait()
                del self.processes[index]
                ended = "stopped" if self._stopping else "restarting"
                self._set_state(index, ended, pid=None, last_exit=_reason(status))
                if self._stopping:
                    if status == -self._stop_signal:
                        # Ended by the drain's own signal before it could handle it: it
                        # was still starting, and had taken no transaction.
                        log.info("worker_stopped", worker=index, pid=process.pid,
                                 status=status, note="stopped while starting")  # fmt: skip
                    else:
                        log.info("worker_stopped", worker=index, pid=process.pid, status=status)
                        if status != 0:
                            self._failed = True
                    return
                if first and status == REFUSED:
                    log.critical(
                        "worker_refused", worker=index, pid=process.pid, note="see its line"
                    )
                    self._refused = True
                    self.stop()
                    return
                if trio.current_time() - began >= STABLE_S:
                    backoff = RESTART_MIN_S
                log.warning(
                    "worker_died",
                    worker=index,
                    pid=process.pid,
                    reason=_reason(status),
                    restart_in_s=backoff,
                )
                first = False
                await self._pause(backoff)
                backoff = min(backoff * 2, RESTART_MAX_S)
                self.restarts += 1
                self._set_state(index, "restarting", restarts=self.states[index].restarts + 1)
        finally:
            self._running -= 1
            if self._running == 0:
                self._all_ended.set()
