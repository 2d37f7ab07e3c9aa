"""Frames over real loopback TCP: order and completeness when the kernel's buffers fill,
half frames, resets."""

from __future__ import annotations

import pytest
import trio

from switch.net.framed import FrameReader, FrameWriter
from switch.wire.framing import LengthPrefixedFramer


async def connected_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return client, server


def framer() -> LengthPrefixedFramer:
    return LengthPrefixedFramer(prefix_bytes=2, max_frame_bytes=60000)


async def test_frames_sent_while_the_peer_is_not_reading_arrive_whole_and_in_order() -> None:
    client, server = await connected_pair()
    frames = [framer().frame(bytes([n % 251]) * (1000 + n)) for n in range(3000)]
    async with trio.open_nursery() as nursery:
        writer = FrameWriter(server, capacity=len(frames), nursery=nursery)
        for frame in frames:  # far more than the kernel's buffers: most are queued
            writer.send_nowait(frame)
        assert writer.statistics()["queued"] > 0
        reader = FrameReader(client, framer(), read_deadline_s=5)
        for n in range(len(frames)):
            assert await reader.receive_frame() == bytes([n % 251]) * (1000 + n)
        writer.close()
    assert writer.frames_sent == len(frames)


async def test_a_full_queue_refuses_at_once_and_send_waits_for_room() -> None:
    client, server = await connected_pair()
    big = framer().frame(b"x" * 50000)
    async with trio.open_nursery() as nursery:
        writer = FrameWriter(server, capacity=2, nursery=nursery)
        accepted = 0

        def fill() -> None:
            nonlocal accepted
            with pytest.raises(trio.WouldBlock):
                for _ in range(1000):  # the kernel's buffers fill, then the queue
                    writer.send_nowait(big)
                    accepted += 1

        fill()
        await trio.testing.wait_all_tasks_blocked()  # the task sends the queue, and blocks
        fill()
        waiting = trio.Event()

        async def send_one_more() -> None:
            await writer.send(big)
            waiting.set()

        nursery.start_soon(send_one_more)
        await trio.testing.wait_all_tasks_blocked()
        assert not waiting.is_set()  # no room until the peer reads
        reader = FrameReader(client, framer(), read_deadline_s=5)
        for _ in range(accepted + 1):
            assert await reader.receive_frame() == b"x" * 50000
        assert waiting.is_set()
        writer.close()


async def test_a_half_frame_not_completed_in_time_is_too_slow() -> None:
    client, server = await connected_pair()
    await client.send_all(b"\x00\x10abc")  # 16 bytes announced, 3 sent
    reader = FrameReader(server, framer(), read_deadline_s=0.2)
    with pytest.raises(trio.TooSlowError):
        await reader.receive_frame()


async def test_end_of_stream_is_none_and_a_reset_is_a_broken_resource() -> None:
    client, server = await connected_pair()
    await client.send_all(framer().frame(b"last"))
    await client.aclose()
    reader = FrameReader(server, framer(), read_deadline_s=5)
    assert await reader.receive_frame() == b"last"
    assert await reader.receive_frame() is None

    client, server = await connected_pair()
    client.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    await client.aclose()  # linger 0: the peer gets a reset
    with pytest.raises(trio.BrokenResourceError):
        await FrameReader(server, framer(), read_deadline_s=5).receive_frame()
    async with trio.open_nursery() as nursery:
        writer = FrameWriter(server, capacity=4, nursery=nursery, raise_failures=False)
        with pytest.raises(trio.BrokenResourceError):
            for _ in range(10):
                writer.send_nowait(framer().frame(b"to nobody"))


async def test_an_idle_connection_has_no_writer_task_and_a_backlog_starts_one() -> None:
    client, server = await connected_pair()
    async with trio.open_nursery() as nursery:
        writer = FrameWriter(server, capacity=10_000, nursery=nursery)
        writer.send_nowait(framer().frame(b"small"))  # straight to the socket
        assert len(nursery.child_tasks) == 0
        big = framer().frame(b"y" * 50000)
        while writer.statistics()["queued"] == 0:
            writer.send_nowait(big)
        assert len(nursery.child_tasks) == 1  # the flush task, for the backlog only
        reader = FrameReader(client, framer(), read_deadline_s=5)
        assert await reader.receive_frame() == b"small"
        while len(nursery.child_tasks):
            assert await reader.receive_frame() == b"y" * 50000
        writer.close()


async def test_wait_flushed_returns_once_the_backlog_is_sent_and_at_once_without_one() -> None:
    client, server = await connected_pair()
    async with trio.open_nursery() as nursery:
        writer = FrameWriter(server, capacity=10_000, nursery=nursery)
        writer.send_nowait(framer().frame(b"small"))
        with trio.fail_after(1):
            await writer.wait_flushed()  # nothing queued: no wait
        big = framer().frame(b"z" * 50000)
        while writer.statistics()["queued"] == 0:
            writer.send_nowait(big)
        sent_before = writer.frames_sent
        writer.close()
        flushed = trio.Event()

        async def wait_for_the_flush() -> None:
            await writer.wait_flushed()
            flushed.set()

        nursery.start_soon(wait_for_the_flush)
        await trio.testing.wait_all_tasks_blocked()
        assert not flushed.is_set()  # the peer has not read: the backlog is still queued
        reader = FrameReader(client, framer(), read_deadline_s=5)
        assert await reader.receive_frame() == b"small"
        received = 0
        while not flushed.is_set():
            assert await reader.receive_frame() == b"z" * 50000
            received += 1
            await trio.testing.wait_all_tasks_blocked()
        assert writer.statistics()["queued"] == 0
        assert writer.frames_sent > sent_before
