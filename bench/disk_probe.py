"""Baseline (c): the journal's disk on its own.

Under ``durability = "sync"`` every sale waits for two journal commits, and each commit
waits for an fsync of the journal's file: the switch's latency cannot be better than
the tail of this disk's fsync. The probe writes 4 KiB and fsyncs it, over and over, in
the run dir (where the switch's journals are), with nothing else of the bench running,
and reports the latencies the way the scenarios do.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Final

import msgspec

from bench.histogram import LatencyHistogram, LatencySummary
from switch.store.sqlite.journal import SLOW_COMMIT_S

BLOCK: Final = b"\0" * 4096
PAUSE_S: Final = 0.001
"""Between syncs: about the pace of a journal's group commits at moderate load."""
STALL_MS: Final = SLOW_COMMIT_S * 1000
"""A stall, as the switch's journal counts one (its ``journal_commit_slow`` lines)."""


class DiskProbe(msgspec.Struct, frozen=True, kw_only=True):
    directory: str
    duration_s: float
    latency_ms: LatencySummary
    stalls: int
    """fsyncs slower than STALL_MS."""


def probe_disk(directory: Path, duration_s: float) -> DiskProbe:
    """Blocking: run it in a thread."""
    histogram = LatencyHistogram()
    stalls = 0
    path = directory / "disk-probe.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            os.write(fd, BLOCK)
            began = time.perf_counter()
            os.fsync(fd)
            took_us = int((time.perf_counter() - began) * 1e6)
            histogram.record(took_us)
            stalls += took_us > STALL_MS * 1000
            time.sleep(PAUSE_S)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return DiskProbe(
        directory=str(directory),
        duration_s=duration_s,
        latency_ms=histogram.summary(),
        stalls=stalls,
    )
