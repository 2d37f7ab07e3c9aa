"""One load-generator process: ``python -m bench.loadgen`` runs the jobs given on stdin.

Each job opens its own TCP connections (one per simulated POS terminal, or per online
client) and drives them in one of four modes:

- ``closed``: every terminal sends its next sale as soon as its last one is answered.
- ``open``: sales arrive at a fixed mean rate with exponential gaps (Poisson); each
  arrival is taken by an idle terminal, and its latency is counted from when it was due,
  so time spent waiting for the switch shows (no coordinated omission).
- ``online``: online purchases pipelined ``pipeline_depth`` deep on each connection.
- ``idle``: connections that each send one echo test, then just stay open.

The bench runs several of these processes at once so that the generator is not the
bottleneck; each reports its own CPU so a reader can tell.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import trio

from bench.histogram import LatencyHistogram
from bench.jobs import (
    APPROVED,
    CLOSED,
    REFUSED,
    TIMEOUT,
    Job,
    JobResult,
    LineReader,
    Progress,
    Ready,
    go_decoder,
    job_decoder,
    line,
)
from bench.procstat import own_cpu_seconds, raise_open_files_limit
from bench.traffic import (
    OnlinePurchaseTemplate,
    PosSaleTemplate,
    card_number,
    echo_test_frame,
    next_stan,
    online_sequence,
    read_online_answer,
    read_pos_answer,
    terminal_id,
)
from switch.errors import MessageDecodeError
from switch.terminal import DEMO_TMK, Terminal, TerminalSecurity, encode_pos_request
from switch.wire.dialect import load_dialect
from switch.wire.framing import LengthPrefixedFramer
from switch.wire.iso8583 import Iso8583Codec

RECEIVE_BYTES = 65536
RECONNECT_PAUSE_S = 0.05
SIGN_ON_STAN = 999_999
SIGN_ON_TRIES = 30
PROGRESS_INTERVAL_S = 0.5
"""Twice as often as the bench shows its progress line, so each line is fresh."""


class Tally:
    """Counts and latencies of one job, against its measurement window."""

    def __init__(self, window_start: float, window_end: float, parts: int = 1) -> None:
        self.window_start = window_start
        self.window_end = window_end
        self.offered = 0
        self.sent = 0
        self.not_sent = 0
        self.in_flight = 0
        self.codes: dict[str, int] = {}
        self.answered_in_window = 0
        self.approved_in_window = 0
        self.answered_total = 0
        self.approved_total = 0
        self.sent_total = 0
        self.latency = LatencyHistogram()
        self.latency_approved = LatencyHistogram()
        self.latency_refused = LatencyHistogram()
        self.part_s = (window_end - window_start) / parts
        self.latency_parts = [LatencyHistogram() for _ in range(parts)] if parts > 1 else []
        self.max_lag_s = 0.0

    def in_window(self, moment: float) -> bool:
        return self.window_start <= moment < self.window_end

    def start(self, due: float) -> bool:
        """A request due at ``due`` is being sent; says whether it counts."""
        self.in_flight += 1
        self.sent_total += 1
        counted = self.window_start <= due < self.window_end
        if counted:
            self.sent += 1
        return counted

    def finish(self, due: float, code: str, counted: bool) -> None:
        """Its answer (or its pseudo code: timeout, closed) has arrived now."""
        now = trio.current_time()
        self.in_flight -= 1
        approved = code == APPROVED
        if code not in (TIMEOUT, CLOSED):
            self.answered_total += 1
            self.approved_total += approved
            if self.window_start <= now < self.window_end:
                self.answered_in_window += 1
                self.approved_in_window += approved
        if not counted:
            return
        self.codes[code] = self.codes.get(code, 0) + 1
        if code in (TIMEOUT, CLOSED):
            return
        latency_us = int((now - due) * 1_000_000)
        self.latency.record(latency_us)
        if approved:
            self.latency_approved.record(latency_us)
        elif code == REFUSED:
            self.latency_refused.record(latency_us)
        if self.latency_parts:
            part = min(int((due - self.window_start) / self.part_s), len(self.latency_parts) - 1)
            self.latency_parts[part].record(latency_us)

    def progress(self, worker: int) -> Progress:
        return Progress(
            worker=worker,
            sent=self.sent_total,
            answered=self.answered_total,
            approved=self.approved_total,
            in_flight=self.in_flight,
        )


class Connection:
    """One framed TCP connection of the generator."""

    def __init__(self, stream: trio.SocketStream, prefix_bytes: int) -> None:
        self.stream = stream
        self.framer = LengthPrefixedFramer(prefix_bytes=prefix_bytes, max_frame_bytes=65535)

    @classmethod
    async def open(cls, host: str, port: int, prefix_bytes: int) -> Connection:
        return cls(await trio.open_tcp_stream(host, port), prefix_bytes)

    async def receive(self) -> bytes:
        """The next frame's payload; EOFError when the peer closed."""
        framer = self.framer
        while (frame := framer.next_frame()) is None:
            data = await self.stream.receive_some(RECEIVE_BYTES)
            if not data:
                raise EOFError("peer closed the connection")
            framer.feed(data)
        return frame

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


class PosTerminal:
    """A simulated POS terminal: one connection, one request at a time."""

    def __init__(
        self, job: Job, codec: Iso8583Codec, index: int, connection: Connection | None
    ) -> None:
        self.job = job
        self.codec = codec
        self.connection = connection
        self.terminal = Terminal(terminal_id=terminal_id(job.worker, index), batch=job.batch)
        self.pan = card_number(job.bins[index % len(job.bins)], job.worker * 100_000 + index)
        self.template = PosSaleTemplate(codec, self.terminal, self.pan, job.amount_fen)
        self.signed_on = False
        """A sale's template is made once the terminal signed on (or found it has no
        keys to get: a switch before security.md, the echo server)."""
        self.stan = 0
        """The last STAN sent; with this job's own batch, STANs from 1 are new to the switch."""

    async def sign_on(self) -> None:
        """security.md's sign-on (the DEMO TMK: the bench's switch has the demo '*'
        entry), its 0800's batch one less so that the 0810 opens the job's batch. An
        0810 with keys makes the sale template MAC'd and with a PIN; one without (an
        older switch, the echo server) leaves it as it is. Not counted in the tally."""
        before = msgspec.structs.replace(self.terminal, batch=(self.job.batch - 1) % 1_000_000)
        payload = encode_pos_request(self.codec, before, before.sign_on(SIGN_ON_STAN))
        frame = len(payload).to_bytes(2, "big") + payload
        for _ in range(SIGN_ON_TRIES):
            with trio.move_on_after(self.job.request_timeout_s):
                try:
                    if self.connection is None:
                        self.connection = await Connection.open(self.job.host, self.job.port, 2)
                    await self.connection.stream.send_all(frame)
                    answer = self.codec.decode((await self.connection.receive())[13 - 2 :])
                except (OSError, EOFError, MessageDecodeError, trio.BrokenResourceError,
                        trio.ClosedResourceError):  # fmt: skip
                    await self.close()
                    await trio.sleep(RECONNECT_PAUSE_S)
                    continue
                keys = answer.fields.get(62)
                if answer.fields.get(39) == "91":  # sign-ons limited: later
                    await trio.sleep(1.0)
                    continue
                if answer.fields.get(39) == "00" and isinstance(keys, bytes):
                    security = TerminalSecurity(DEMO_TMK)
                    security.accept_sign_on(keys, f"{self.job.batch:06d}")
                    self.template = PosSaleTemplate(
                        self.codec, self.terminal, self.pan, self.job.amount_fen, security
                    )
                break
        self.signed_on = True

    async def transact(self, frame: bytes) -> str:
        """Sends one request and waits for its answer: the response code, or a pseudo
        code; after a timeout or a dropped line the terminal reconnects, as a real one
        would, so a late answer cannot be taken for the next request's."""
        with trio.move_on_after(self.job.request_timeout_s):
            try:
                if self.connection is None:
                    self.connection = await Connection.open(self.job.host, self.job.port, 2)
                await self.connection.stream.send_all(frame)
                answer = read_pos_answer(self.codec, await self.connection.receive())
            except (OSError, EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
                await self.close()
                await trio.sleep(RECONNECT_PAUSE_S)
                return CLOSED
            if answer.terminal_id != self.terminal.terminal_id or answer.stan != self.stan:
                await self.close()
                return "mismatch"
            return answer.code
        await self.close()
        return TIMEOUT

    async def sale(self) -> str:
        if not self.signed_on:
            await self.sign_on()
        self.stan = next_stan(self.stan)
        return await self.transact(self.template.frame(self.stan))

    async def echo_test(self) -> str:
        self.stan = next_stan(self.stan)
        return await self.transact(echo_test_frame(self.codec, self.terminal, self.stan))

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.aclose()
            self.connection = None


# -- modes ---------------------------------------------------------------------------


async def run_closed(terminals: list[PosTerminal], tally: Tally, job: Job) -> None:
    async def loop(terminal: PosTerminal) -> None:
        while (due := trio.current_time()) < tally.window_end:
            counted = tally.start(due)
            tally.finish(due, await terminal.sale(), counted)

    async with trio.open_nursery() as nursery:
        for terminal in terminals:
            nursery.start_soon(loop, terminal)


async def run_open(terminals: list[PosTerminal], tally: Tally, job: Job) -> None:
    # A zero-size channel hands an arrival only to a terminal already waiting for one:
    # when none is idle, send_nowait fails and the arrival is counted as not sent.
    arrivals_in, arrivals_out = trio.open_memory_channel[float](0)

    async def serve(terminal: PosTerminal) -> None:
        async for due in arrivals_out:
            counted = tally.start(due)
            tally.finish(due, await terminal.sale(), counted)

    async def schedule() -> None:
        rng = random.Random(job.seed)
        due = trio.current_time()
        async with arrivals_in:
            while True:
                due += rng.expovariate(job.rate_per_s)
                if due >= tally.window_end:
                    return
                await trio.sleep_until(due)  # a checkpoint even when already late
                lag = trio.current_time() - due
                counted = tally.in_window(due)
                if counted:
                    tally.offered += 1
                    tally.max_lag_s = max(tally.max_lag_s, lag)
                try:
                    arrivals_in.send_nowait(due)
                except trio.WouldBlock:
                    tally.not_sent += counted

    async with trio.open_nursery() as nursery:
        for terminal in terminals:
            nursery.start_soon(serve, terminal)
        nursery.start_soon(schedule)


async def run_idle(terminals: list[PosTerminal], tally: Tally, job: Job) -> None:
    """Every (already connected) terminal sends one echo test, then the lines stay open
    until the window ends."""
    limiter = trio.CapacityLimiter(job.connect_concurrency)

    async def echo_once(terminal: PosTerminal) -> None:
        async with limiter:
            due = trio.current_time()
            counted = tally.start(due)
            tally.finish(due, await terminal.echo_test(), counted)

    async with trio.open_nursery() as nursery:
        for terminal in terminals:
            nursery.start_soon(echo_once, terminal)
    await trio.sleep_until(tally.window_end)


async def run_online(connections: list[Connection], tally: Tally, job: Job) -> None:
    async def pipeline(index: int, connection: Connection) -> None:
        pan = card_number(job.bins[index % len(job.bins)], job.worker * 100_000 + index)
        template = OnlinePurchaseTemplate(
            job.batch, job.worker, index, pan, job.amount_fen, sign=job.sign_online
        )
        slots = trio.Semaphore(job.pipeline_depth)
        pending: dict[int, tuple[float, bool]] = {}
        sender_done = trio.Event()

        receiving = trio.CancelScope(deadline=tally.window_end + job.request_timeout_s)

        async def send() -> None:
            sequence = 0
            try:
                while True:
                    await slots.acquire()
                    due = trio.current_time()
                    if due >= tally.window_end:
                        return
                    sequence += 1
                    pending[sequence] = (due, tally.start(due))
                    await connection.stream.send_all(template.frame(sequence))
            finally:
                sender_done.set()
                if not pending:
                    receiving.cancel()

        async def receive() -> None:
            while True:
                answer = read_online_answer(await connection.receive())
                started = pending.pop(online_sequence(answer.id), None)
                if started is None:
                    continue  # an error without an id: accounted as a timeout below
                tally.finish(started[0], answer.code, started[1])
                slots.release()
                if sender_done.is_set() and not pending:
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            with receiving:
                try:
                    await receive()
                except (OSError, EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
                    for due, counted in pending.values():
                        tally.finish(due, CLOSED, counted)
                    pending.clear()
            nursery.cancel_scope.cancel()
        for due, counted in pending.values():
            tally.finish(due, TIMEOUT, counted)

    async with trio.open_nursery() as nursery:
        for index, connection in enumerate(connections):
            nursery.start_soon(pipeline, index, connection)


# -- one job ---------------------------------------------------------------------------


async def open_connections(job: Job, prefix_bytes: int) -> tuple[list[Connection | None], int]:
    """Opens the job's connections, ``connect_concurrency`` at a time; failures are None."""
    limiter = trio.CapacityLimiter(job.connect_concurrency)
    connections: list[Connection | None] = [None] * job.connections

    async def connect(index: int) -> None:
        async with limiter:
            try:
                with trio.fail_after(job.request_timeout_s * 2):
                    connections[index] = await Connection.open(job.host, job.port, prefix_bytes)
            except (OSError, trio.TooSlowError):
                pass

    async with trio.open_nursery() as nursery:
        for index in range(job.connections):
            nursery.start_soon(connect, index)
    failures = sum(connection is None for connection in connections)
    return connections, failures


async def run_job(job: Job, lines: LineReader, write: Callable[[bytes], None]) -> None:
    prefix_bytes = 4 if job.mode == "online" else 2
    connections, failures = await open_connections(job, prefix_bytes)
    codec = Iso8583Codec(load_dialect(Path(job.dialects_dir) / "cup-pos.toml"))
    terminals = (
        []
        if job.mode == "online"
        else [PosTerminal(job, codec, i, connection) for i, connection in enumerate(connections)]
    )
    if job.mode in ("closed", "open"):  # their terminals sign on before the run
        limiter = trio.CapacityLimiter(job.connect_concurrency)

        async def sign_on(terminal: PosTerminal) -> None:
            async with limiter:
                await terminal.sign_on()

        async with trio.open_nursery() as nursery:
            for terminal in terminals:
                nursery.start_soon(sign_on, terminal)
    connected = job.connections - failures
    write(line(Ready(worker=job.worker, connected=connected, connect_failures=failures)))

    go = go_decoder.decode(await lines.next_line())
    start = trio.current_time() + (go.start_at - time.time())
    tally = Tally(start + job.warmup_s, start + job.warmup_s + job.duration_s, job.parts)
    cpu: list[float] = []
    await trio.sleep_until(start)

    async def measure_cpu() -> None:
        await trio.sleep_until(tally.window_start)
        cpu.append(own_cpu_seconds())
        await trio.sleep_until(tally.window_end)
        cpu.append(own_cpu_seconds())

    async def report_progress() -> None:
        while True:
            await trio.sleep(PROGRESS_INTERVAL_S)
            write(line(tally.progress(job.worker)))

    drive: dict[str, Callable[[], Awaitable[None]]] = {
        "closed": lambda: run_closed(terminals, tally, job),
        "open": lambda: run_open(terminals, tally, job),
        "idle": lambda: run_idle(terminals, tally, job),
        "online": lambda: run_online([c for c in connections if c is not None], tally, job),
    }
    async with trio.open_nursery() as nursery:
        nursery.start_soon(report_progress)
        async with trio.open_nursery() as measuring:
            measuring.start_soon(measure_cpu)  # returns at the window's end
            await drive[job.mode]()
        nursery.cancel_scope.cancel()
    for connection in connections:
        if connection is not None:
            await connection.aclose()
    for terminal in terminals:
        await terminal.close()
    write(line(_result(job, tally, connected, failures, cpu[1] - cpu[0])))


def _result(job: Job, tally: Tally, connected: int, failures: int, cpu_s: float) -> JobResult:
    return JobResult(
        worker=job.worker,
        mode=job.mode,
        connected=connected,
        connect_failures=failures,
        window_s=tally.window_end - tally.window_start,
        offered=tally.offered if job.mode == "open" else tally.sent,
        sent=tally.sent,
        not_sent=tally.not_sent,
        codes=tally.codes,
        answered_in_window=tally.answered_in_window,
        approved_in_window=tally.approved_in_window,
        latency=tally.latency.to_wire(),
        latency_approved=tally.latency_approved.to_wire(),
        latency_refused=tally.latency_refused.to_wire(),
        latency_parts=[part.to_wire() for part in tally.latency_parts],
        cpu_s=round(cpu_s, 3),
        max_lag_ms=round(tally.max_lag_s * 1000, 3),
    )


async def serve_jobs() -> None:
    """Runs jobs read from stdin until it closes; messages go to stdout."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    lines = LineReader(stdin)
    stdout = sys.stdout.fileno()

    def write(data: bytes) -> None:
        # One small write per line to a pipe the bench reads at once: it does not block
        # for long, and os.write keeps it out of Python's buffering.
        os.write(stdout, data)

    while True:
        try:
            raw = await lines.next_line()
        except EOFError:
            return
        await run_job(job_decoder.decode(raw), lines, write)


def main() -> None:
    # Ctrl-C reaches the whole process group: the bench stops its workers in order (their
    # stdin closes), so a worker itself ignores SIGINT rather than die mid-job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_open_files_limit()
    trio.run(serve_jobs)


if __name__ == "__main__":
    main()
