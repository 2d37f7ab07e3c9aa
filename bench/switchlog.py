"""The switch's own view of a scenario: its ``txn`` log lines in the window.

Each line carries ``latency_ms``, the time from the frame's arrival to its answer inside
the switch, and of it, ``journal_ms`` waiting for the journal's commits (the disk) and
``bank_ms`` waiting for the bank. Next to the latency at the terminal, they show how
much of the end-to-end time the switch spent on the request once it had read it (the
rest is the network, the kernel's socket queues and the load generator), and where.
The journal's ``journal_commit_slow`` lines say when the disk stalled during the window.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Final

import msgspec

from bench.histogram import LatencyHistogram
from bench.model import SwitchLogged


class _LogLine(msgspec.Struct, frozen=True):
    """The keys of a log line the bench reads; msgspec skips the rest."""

    event: str = ""
    timestamp: str = ""
    latency_ms: float | None = None
    journal_ms: float | None = None
    bank_ms: float | None = None
    ms: float | None = None
    """journal_commit_slow: how long the commit took."""


_decoder: Final = msgspec.json.Decoder(_LogLine)


class LogReader:
    """Reads a switch log from where it last stopped (the file only grows)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def logged(self, wall_start: float, wall_end: float) -> SwitchLogged:
        """Percentiles of the txn lines of requests that arrived within the window."""
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        latency, journal, bank = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
        slow_commits: list[tuple[float, float]] = []  # (when it ended, wall clock; ms)
        for raw in complete.splitlines():
            if b'"txn"' not in raw and b'"journal_commit_slow"' not in raw:
                continue  # the cheap test first: most lines are txn lines, others are few
            try:
                line = _decoder.decode(raw)
            except msgspec.DecodeError:
                continue
            if line.event == "journal_commit_slow" and line.ms is not None:
                # Logged when the commit ended: it counts if any of it was in the window.
                ended = datetime.fromisoformat(line.timestamp).timestamp()
                if ended - line.ms / 1000 < wall_end and ended >= wall_start:
                    slow_commits.append((ended, line.ms))
                continue
            if line.event != "txn" or line.latency_ms is None:
                continue
            # By when the request arrived (the line is written when it is answered), as
            # the generator counts the requests sent in the window: a stall at the
            # window's end must not drop its slow answers from one side only.
            answered_at = datetime.fromisoformat(line.timestamp).timestamp()
            if not wall_start <= answered_at - line.latency_ms / 1000 < wall_end:
                continue
            latency.record(_us(line.latency_ms))
            if line.journal_ms is not None:
                journal.record(_us(line.journal_ms))
            if line.bank_ms is not None:
                bank.record(_us(line.bank_ms))
        return SwitchLogged(
            latency_ms=latency.summary(),
            journal_ms=journal.summary(),
            bank_ms=bank.summary(),
            slow_commits=len(slow_commits),
            slowest_commit_ms=max((ms for _, ms in slow_commits), default=None),
            slow_commit_spans_s=[
                (round(ended - ms / 1000 - wall_start, 3), round(ended - wall_start, 3))
                for ended, ms in slow_commits
            ],
        )


def _us(milliseconds: float) -> int:
    return int(milliseconds * 1000)
