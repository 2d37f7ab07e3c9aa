"""Frames over a TCP connection: a reader with a deadline for half frames, and a writer
that sends at once when it can and otherwise queues for a flush task.

Both work on the socket's file descriptor directly when it is ready, and fall back to
waiting in trio when it is not (a TLS stream is read and written with trio's stream
methods only). A frame's bytes are few and the kernel's buffers
usually have room, so the common case costs one system call and no task switch: with
trio's stream methods every read and every write also costs a trip through the
scheduler (a checkpoint), and a separate writer task two more. At a few thousand
transactions a second those trips are most of the work a connection does.

Many tasks answer on one connection at once. ``send_nowait`` writes a frame straight
to the socket when nothing is queued before it; what the socket cannot take now is
queued, in order, for a flush task started for the purpose, which sends everything
queued with one ``send_all`` and ends when the queue is empty. The queue is bounded:
callers hold a slot of the connection's in-flight window before they queue, so it
cannot fill unless the window is misused.
"""

from __future__ import annotations

import errno
import math
import os

import trio

from switch.wire.framing import LengthPrefixedFramer

RECEIVE_BYTES = 65536


class FrameReader:
    """Reads whole frames from a socket stream.

    A frame begun but not completed within ``read_deadline_s`` of its first byte raises
    :class:`trio.TooSlowError` (so a peer trickling a byte at a time is dropped all the
    same); an idle connection between frames has no deadline. Framing errors (length 0
    or above the maximum) propagate as FramingError; a reset connection as
    trio.BrokenResourceError.
    """

    def __init__(
        self,
        stream: trio.abc.ReceiveStream,
        framer: LengthPrefixedFramer,
        *,
        read_deadline_s: float,
    ) -> None:
        self._stream = stream
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        """None: another kind of stream (TLS), read with its receive_some."""
        self._framer = framer
        self._read_deadline_s = read_deadline_s
        self._partial_since: float | None = None
        self._drained = True

    async def receive_frame(self) -> bytes | None:
        """The next frame's payload, or None once the peer has closed."""
        # One coroutine, not a helper for the socket read: an idle connection waits in
        # here, and every coroutine in its chain is held for as long as it is connected.
        framer = self._framer
        socket = self._socket
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
            if socket is None:
                with trio.CancelScope(deadline=deadline) as scope:
                    received = await self._stream.receive_some(RECEIVE_BYTES)
                if scope.cancelled_caught:
                    raise trio.TooSlowError
                if not received:
                    return None
                framer.feed(received)
                continue
            data = None
            if not self._drained:
                # The last read filled the buffer: more may be waiting. Read it now, then
                # let other tasks run (a peer that keeps sending must not hold the loop).
                data = _read(socket)
                if data is not None:
                    await trio.lowlevel.cancel_shielded_checkpoint()
            while data is None:  # None: nothing yet (woken without data can happen)
                if deadline == math.inf:
                    await trio.lowlevel.wait_readable(socket)
                else:
                    with trio.CancelScope(deadline=deadline) as scope:
                        await trio.lowlevel.wait_readable(socket)
                    if scope.cancelled_caught:
                        raise trio.TooSlowError
                data = _read(socket)
            self._drained = len(data) < RECEIVE_BYTES
            if not data:
                return None
            framer.feed(data)


def _read(socket: trio.socket.SocketType) -> bytes | None:
    """What the socket has now (b"" at end of stream), or None if nothing yet."""
    try:
        return os.read(socket.fileno(), RECEIVE_BYTES)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno == errno.EBADF:  # closed under us: fileno() is -1 once closed
            raise trio.ClosedResourceError("the connection is closed") from None
        raise trio.BrokenResourceError(f"receive failed: {exc!r}") from exc


class FrameWriter:
    """Owns a socket stream's sending side. ``send_nowait`` sends or queues a ready
    frame; a flush task, started in ``nursery`` only while something is queued, sends
    what the socket could not take at once (an idle connection has no writer task).

    When the connection fails, later sends raise trio.BrokenResourceError; the flush
    task also raises it into its nursery when ``raise_failures`` is set (a bank link
    then starts over), and otherwise just stops (a terminal's connection ends when its
    reader sees the reset)."""

    def __init__(
        self,
        stream: trio.abc.SendStream,
        *,
        capacity: int,
        nursery: trio.Nursery,
        raise_failures: bool = True,
    ) -> None:
        self._stream = stream
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        """None: another kind of stream (TLS): every frame goes by the flush task."""
        self._capacity = capacity
        self._nursery = nursery
        self._raise_failures = raise_failures
        # A list, not a deque: it is only ever appended to and emptied whole, and an
        # empty list allocates nothing (a deque, 600 bytes on every idle connection).
        self._queued: list[bytes] = []
        self._flushing = False  # the flush task runs: it empties the queue before it ends
        self._sending = False  # it is in send_all: nothing may be written around it
        self._closed = False
        self._broken: BaseException | None = None
        # Made when a sender first waits for room (rare: the queue is sized for the
        # window), not for every connection: 250 bytes each.
        self._room: trio.lowlevel.ParkingLot | None = None
        self._flushed: trio.Event | None = None  # made when someone waits for the flush
        self.frames_sent = 0

    async def send(self, frame: bytes) -> None:
        """Sends or queues a frame, waiting for room in the queue;
        trio.BrokenResourceError once the connection has failed."""
        while True:
            try:
                self.send_nowait(frame)
                return
            except trio.WouldBlock:
                if self._room is None:
                    self._room = trio.lowlevel.ParkingLot()
                await self._room.park()

    def send_nowait(self, frame: bytes) -> None:
        """Sends a frame now, or queues it behind those queued before; raises
        trio.WouldBlock when the bounded queue is full, trio.ClosedResourceError once
        closed and trio.BrokenResourceError once the connection has failed."""
        if self._closed:
            raise trio.ClosedResourceError("the writer is closed")
        if self._broken is not None:
            raise trio.BrokenResourceError("the connection failed") from self._broken
        if self._queued or self._sending:
            if len(self._queued) >= self._capacity:
                raise trio.WouldBlock
            self._queued.append(frame)
            return
        try:
            sent = os.write(self._socket.fileno(), frame) if self._socket is not None else 0
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._fail(exc)
            raise trio.BrokenResourceError(f"send failed: {exc!r}") from exc
        if sent < len(frame):  # the kernel's buffer is full: the flush task sends the rest
            self._queued.append(frame[sent:] if sent else frame)
            if not self._flushing:
                self._flushing = True
                self._nursery.start_soon(self._flush)
        else:
            self.frames_sent += 1

    def close(self) -> None:
        """No more frames; what is queued is still sent by the flush task."""
        self._closed = True
        self._wake_senders()

    async def wait_flushed(self) -> None:
        """Returns once nothing is queued (the flush task, if any, has ended)."""
        if self._flushing:
            if self._flushed is None:
                self._flushed = trio.Event()
            await self._flushed.wait()

    async def _flush(self) -> None:
        queued = self._queued
        try:
            while queued:
                data = queued[0] if len(queued) == 1 else b"".join(queued)
                count = len(queued)
                queued.clear()
                self._sending = True
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    self._fail(exc)
                    if self._raise_failures:
                        raise
                    return
                finally:
                    self._sending = False
                self.frames_sent += count
                self._wake_senders()
        finally:
            self._flushing = False
            if self._flushed is not None:
                self._flushed.set()
                self._flushed = None

    def _fail(self, exc: BaseException) -> None:
        if self._broken is None:
            self._broken = exc
        self._queued.clear()
        self._wake_senders()

    def _wake_senders(self) -> None:
        if self._room is not None:
            self._room.unpark_all()

    def statistics(self) -> dict[str, int]:
        return {"queued": len(self._queued), "capacity": self._capacity}
