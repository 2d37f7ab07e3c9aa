"""Frames over a trio stream: a reader with a deadline for half frames, and a writer
task that owns the stream's sending side.

Many tasks answer on one connection at once; they hand whole frames to the writer,
which sends everything queued in one ``send_all`` (fewer system calls under load).
The writer's queue is bounded: callers hold a slot of the connection's in-flight
window before they queue, so the queue cannot fill unless the window is misused.
"""

from __future__ import annotations

import math

import trio

from switch.wire.framing import LengthPrefixedFramer

RECEIVE_BYTES = 65536


class FrameReader:
    """Reads whole frames from a stream.

    A frame begun but not completed within ``read_deadline_s`` of its first byte raises
    :class:`trio.TooSlowError` (so a peer trickling a byte at a time is dropped all the
    same); an idle connection between frames has no deadline. Framing errors (length 0
    or above the maximum) propagate as FramingError.
    """

    def __init__(
        self,
        stream: trio.abc.ReceiveStream,
        framer: LengthPrefixedFramer,
        *,
        read_deadline_s: float,
    ) -> None:
        self._stream = stream
        self._framer = framer
        self._read_deadline_s = read_deadline_s
        self._partial_since: float | None = None

    async def receive_frame(self) -> bytes | None:
        """The next frame's payload, or None once the peer has closed."""
        framer = self._framer
        while True:
            frame = framer.next_frame()
            if frame is not None:
                self._partial_since = None
                return frame
            if framer.has_partial_frame:
                if self._partial_since is None:
                    self._partial_since = trio.current_time()
                deadline = self._partial_since + self._read_deadline_s
            else:
                deadline = math.inf
            with trio.fail_at(deadline):
                data = await self._stream.receive_some(RECEIVE_BYTES)
            if not data:
                return None
            framer.feed(data)


class FrameWriter:
    """Owns a stream's sending side. ``send_nowait`` queues a ready frame; ``run``
    sends what is queued, coalescing frames that are waiting together."""

    def __init__(self, stream: trio.abc.SendStream, *, capacity: int) -> None:
        self._stream = stream
        self._send, self._receive = trio.open_memory_channel[bytes](capacity)
        self.frames_sent = 0

    async def send(self, frame: bytes) -> None:
        """Queues a frame, waiting for room; trio.BrokenResourceError once the writer
        has stopped."""
        await self._send.send(frame)

    def send_nowait(self, frame: bytes) -> None:
        """Queues a frame; raises trio.WouldBlock when the bounded queue is full and
        trio.ClosedResourceError once the writer has stopped."""
        self._send.send_nowait(frame)

    def close(self) -> None:
        """No more frames: ``run`` returns once what is queued has been sent."""
        self._send.close()

    async def run(self) -> None:
        receive = self._receive
        stream = self._stream
        async with receive:
            async for frame in receive:
                batch = [frame]
                while True:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await stream.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
                self.frames_sent += len(batch)

    def statistics(self) -> trio.MemoryChannelStatistics:
        return self._send.statistics()
