"""Frames over TLS on real loopback TCP (the reader and writer use the stream's own
methods there, not the socket's descriptor): order and completeness while the peer is
not reading, half frames within the read deadline, the end of the stream."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from switch.net.framed import FrameReader, FrameWriter
from switch.tls import client_context, server_context
from switch.wire.framing import LengthPrefixedFramer
from tests.certs import make_certificate


async def tls_pair(folder: Path) -> tuple[trio.SSLStream[trio.SocketStream], ...]:
    """A client and a server end of one TLS connection, handshakes done."""
    cert, key = make_certificate(folder)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_ssl_over_tcp_stream(
        "127.0.0.1", port, ssl_context=client_context(cert)
    )
    accepted = await listeners[0].accept()
    await listeners[0].aclose()
    server = trio.SSLStream(accepted, server_context("online", cert, key), server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)
    return client, server


def framer() -> LengthPrefixedFramer:
    return LengthPrefixedFramer(prefix_bytes=2, max_frame_bytes=60000)


async def test_frames_sent_while_the_peer_is_not_reading_arrive_whole_and_in_order(
    tmp_path: Path,
) -> None:
    client, server = await tls_pair(tmp_path)
    frames = [framer().frame(bytes([n % 251]) * (1000 + n)) for n in range(500)]
    async with trio.open_nursery() as nursery:
        writer = FrameWriter(server, capacity=len(frames), nursery=nursery)
        for frame in frames:
            writer.send_nowait(frame)  # queued: the flush task sends them
        reader = FrameReader(client, framer(), read_deadline_s=5)
        with trio.fail_after(10):
            for frame in frames:
                assert await reader.receive_frame() == frame[2:]
        writer.close()
        await writer.wait_flushed()
    assert writer.frames_sent == len(frames)
    await server.aclose()
    with trio.fail_after(10):
        assert await reader.receive_frame() is None  # the end of the stream


async def test_a_half_frame_not_completed_in_time_is_too_slow(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = await tls_pair(tmp_path)
    await client.send_all(b"\x00\x10abc")  # 16 bytes announced, 3 sent
    reader = FrameReader(server, framer(), read_deadline_s=5)
    start = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await reader.receive_frame()
    assert trio.current_time() - start == pytest.approx(5)
