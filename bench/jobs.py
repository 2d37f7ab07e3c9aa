"""What the bench and its load-generator processes say to each other: JSON lines.

The bench writes a :class:`Job` line to a worker's stdin; the worker opens its
connections and answers :class:`Ready`; the bench writes a :class:`Go` line naming the
wall-clock start (the same for every worker, so their windows line up); the worker
writes a :class:`Progress` line each second and a :class:`JobResult` at the end.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec
import trio

from bench.histogram import HistogramWire

Mode = Literal["closed", "open", "idle", "online"]
TIMEOUT: Final = "timeout"
"""Pseudo response code: no answer within the request timeout (a terminal gives up)."""
CLOSED: Final = "closed"
"""Pseudo response code: the connection ended before the answer came."""
APPROVED: Final = "00"
REFUSED: Final = "91"
"""The switch's "busy": what it answers when it sheds a request."""


class Job(msgspec.Struct, frozen=True, kw_only=True):
    mode: Mode
    worker: int
    """This worker's number: part of every terminal id and online request id."""
    host: str
    port: int
    dialects_dir: str
    connections: int
    """Terminals (POS) or connections (online) this worker opens."""
    bins: list[str]
    """Card BINs, one per bank, used round-robin over connections."""
    warmup_s: float
    duration_s: float
    rate_per_s: float = 0.0
    """Open loop: this worker's share of the arrival rate (Poisson)."""
    pipeline_depth: int = 1
    """Online: requests outstanding at once on each connection."""
    request_timeout_s: float = 5.0
    parts: int = 1
    """The window cut into this many equal parts, each with its own latency histogram
    (by when each request was due), so a part the disk stalled can be told apart."""
    connect_concurrency: int = 200
    amount_fen: int = 100
    batch: int = 1
    """The terminals' batch number (60.2), and part of online request ids: unique per job,
    so the switch never takes one job's request for a duplicate of another's."""
    seed: int = 1
    sign_online: bool = True
    """Online: each request in a signed envelope (security.md) under the DEMO key of
    its merchant; False for a switch from before envelopes."""


class Ready(msgspec.Struct, frozen=True, tag="ready", kw_only=True):
    worker: int
    connected: int
    connect_failures: int


class Go(msgspec.Struct, frozen=True, kw_only=True):
    start_at: float
    """Wall-clock (time.time) start of the warm-up."""


class Progress(msgspec.Struct, frozen=True, tag="progress", kw_only=True):
    worker: int
    sent: int
    answered: int
    approved: int
    in_flight: int


class JobResult(msgspec.Struct, frozen=True, tag="result", kw_only=True):
    worker: int
    mode: Mode
    connected: int
    connect_failures: int
    window_s: float
    offered: int
    """Requests due in the window: arrivals (open loop), or sends (closed loop)."""
    sent: int
    """Requests sent in the window; each ends in exactly one entry of ``codes``."""
    not_sent: int
    """Open loop: arrivals that found no idle terminal (the generator's own limit)."""
    codes: dict[str, int]
    answered_in_window: int
    """Answers received inside the window, whenever their request was sent: throughput."""
    approved_in_window: int
    latency: HistogramWire
    """Answers to requests sent in the window, from when they were due."""
    latency_approved: HistogramWire
    latency_refused: HistogramWire
    """Answers 91 only: how long a refusal took to reach the terminal."""
    latency_parts: list[HistogramWire]
    """Answers by part of the window (``Job.parts``); empty for a window of one part."""
    cpu_s: float
    """This worker's own CPU (user + system) over the window."""
    max_lag_ms: float
    """Open loop: how late the arrival schedule ran at worst."""


WorkerMessage = Ready | Progress | JobResult
worker_message_decoder: Final[msgspec.json.Decoder[Ready | Progress | JobResult]] = (
    msgspec.json.Decoder(WorkerMessage)
)
go_decoder: Final = msgspec.json.Decoder(Go)
job_decoder: Final = msgspec.json.Decoder(Job)
encoder: Final = msgspec.json.Encoder()


def line(message: msgspec.Struct) -> bytes:
    return encoder.encode(message) + b"\n"


class LineReader:
    """Whole lines from a byte stream (a pipe's end)."""

    def __init__(self, stream: trio.abc.ReceiveStream, max_line_bytes: int = 1 << 24) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._max = max_line_bytes

    async def next_line(self) -> bytes:
        """The next line without its newline; raises EOFError at the end of the stream."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                text = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return text
            if len(self._buffer) > self._max:
                raise ValueError("line too long")
            data = await self._stream.receive_some(65536)
            if not data:
                raise EOFError("stream ended")
            self._buffer += data
