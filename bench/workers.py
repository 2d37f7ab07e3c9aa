"""The bench's side of its load-generator processes: a pool that runs one job at a time
across several ``python -m bench.loadgen`` processes, each with trio inside.

A job is split over the workers (connections and arrival rate alike), every worker is
told the same wall-clock start so the measurement windows line up, and their progress
is summed into one line on stderr each second.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Final, TextIO

import trio

from bench.jobs import (
    Go,
    Job,
    JobResult,
    LineReader,
    Progress,
    Ready,
    line,
    worker_message_decoder,
)
from bench.services import start_process, stop_process

START_DELAY_S: Final = 0.2
"""Between Go and the start of the warm-up: time for every worker to read its Go."""
READY_TIMEOUT_S: Final = 120.0
"""Opening 10,000 connections may take a while on a busy machine."""

Observer = Callable[[float, float], Awaitable[None]]
"""Called with the measurement window (trio clock) while a job runs; samples the
processes under test and returns once the window has ended."""


class WorkerFailed(Exception):
    """A load-generator process ended in the middle of a job."""


class _Worker:
    def __init__(self, process: trio.Process, errors_path: Path) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self.stdin = process.stdin
        self.lines = LineReader(process.stdout)
        self.errors_path = errors_path

    async def send(self, data: bytes) -> None:
        await self.stdin.send_all(data)

    async def next_message(self) -> Ready | Progress | JobResult:
        try:
            raw = await self.lines.next_line()
        except EOFError:
            await self.process.wait()
            errors = self.errors_path.read_text(errors="replace")[-3000:]
            raise WorkerFailed(
                f"load generator {self.process.pid} exited ({self.process.returncode}):\n{errors}"
            ) from None
        return worker_message_decoder.decode(raw)


class ProgressLine:
    """One status line a second on stderr: overwritten in a terminal, appended in a log."""

    def __init__(self, stream: TextIO = sys.stderr, *, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.overwrite = stream.isatty()
        self._width = 0

    def show(self, text: str) -> None:
        if self.quiet:
            return
        if self.overwrite:
            padding = " " * max(0, self._width - len(text))
            self.stream.write(f"\r{text}{padding}")
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.overwrite and self._width and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
        self._width = 0


class WorkerPool:
    def __init__(self, workers: list[_Worker], progress: ProgressLine) -> None:
        self.workers = workers
        self.progress = progress

    @property
    def size(self) -> int:
        return len(self.workers)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, count: int, run_dir: Path, progress: ProgressLine
    ) -> AsyncIterator[WorkerPool]:
        """Starts ``count`` worker processes; stops them all on exit (their stdin closes,
        which ends them, and stragglers are killed)."""
        workers: list[_Worker] = []
        try:
            for index in range(count):
                errors_path = run_dir / f"loadgen-{index}.err"
                with errors_path.open("wb") as errors:
                    process = await start_process(
                        [sys.executable, "-m", "bench.loadgen"],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=errors,
                    )
                workers.append(_Worker(process, errors_path))
            yield cls(workers, progress)
        finally:
            with trio.CancelScope(shield=True):
                for worker in workers:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await worker.stdin.aclose()
                for worker in workers:
                    await stop_process(worker.process, grace_s=2.0)

    async def run(self, jobs: list[Job], label: str, observe: Observer) -> list[JobResult]:
        """Runs one job per worker (job.worker names it) and returns their results."""
        workers = [self.workers[job.worker] for job in jobs]
        for worker, job in zip(workers, jobs, strict=True):
            await worker.send(line(job))
        with trio.fail_after(READY_TIMEOUT_S):
            for worker in workers:
                message = await worker.next_message()
                if not isinstance(message, Ready):
                    raise RuntimeError(f"worker sent {message!r} before it was ready")
        start_at = time.time() + START_DELAY_S
        for worker in workers:
            await worker.send(line(Go(start_at=start_at)))
        start = trio.current_time() + START_DELAY_S
        window_start = start + jobs[0].warmup_s
        window_end = window_start + jobs[0].duration_s

        results: list[JobResult | None] = [None] * len(jobs)
        latest: dict[int, Progress] = {}

        async def collect(index: int, worker: _Worker) -> None:
            while True:
                message = await worker.next_message()
                if isinstance(message, Progress):
                    latest[message.worker] = message
                elif isinstance(message, JobResult):
                    results[index] = message
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._show_progress, label, latest, start, window_start)
            async with trio.open_nursery() as running:
                running.start_soon(observe, window_start, window_end)  # returns after the window
                for index, worker in enumerate(workers):
                    running.start_soon(collect, index, worker)
            nursery.cancel_scope.cancel()
        self.progress.done()
        return [result for result in results if result is not None]

    async def _show_progress(
        self, label: str, latest: dict[int, Progress], start: float, window_start: float
    ) -> None:
        previous = 0
        while True:
            await trio.sleep(1.0)
            answered = sum(p.answered for p in latest.values())
            sent = sum(p.sent for p in latest.values())
            approved = sum(p.approved for p in latest.values())
            in_flight = sum(p.in_flight for p in latest.values())
            now = trio.current_time()
            phase = "warm-up" if now < window_start else "measuring"
            self.progress.show(
                f"[{label}] {now - start:5.1f}s {phase}: sent {sent}, answered {answered}"
                f" ({answered - previous}/s), approved {approved}, in flight {in_flight}"
            )
            previous = answered
