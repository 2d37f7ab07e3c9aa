"""The runtime's floor: a trio server with the POS framing that answers each frame with
itself, as a response (``python -m bench.echo_server --port 0``).

It reads, splits 2-byte-length frames, swaps the TPDU addresses, turns the request MTI
into its response (0200 -> 0210) and writes every answer of one read back in one send:
the least work any trio server can do for this traffic, so the switch's CPU per
transaction is reported as a multiple of this one's CPU per message.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence

import trio

from bench.procstat import raise_open_files_limit

RECEIVE_BYTES = 65536
MTI_SECOND_BYTE = 2 + 5 + 6 + 1
"""Offset in a frame (length prefix included) of the MTI's second BCD byte, whose high
nibble is the message class (0 request, 1 response)."""
TPDU_AT = 2


def answers(buffer: bytearray) -> bytes:
    """Takes every whole frame off ``buffer`` and returns their answers, joined."""
    out = bytearray()
    while len(buffer) >= 2:
        end = 2 + int.from_bytes(buffer[:2], "big")
        if len(buffer) < end:
            break
        frame = bytearray(buffer[:end])
        del buffer[:end]
        if end > MTI_SECOND_BYTE:
            frame[MTI_SECOND_BYTE] |= 0x10
            frame[TPDU_AT + 1 : TPDU_AT + 5] = (
                frame[TPDU_AT + 3 : TPDU_AT + 5] + frame[TPDU_AT + 1 : TPDU_AT + 3]
            )
        out += frame
    return bytes(out)


async def echo(stream: trio.SocketStream) -> None:
    buffer = bytearray()
    try:
        while data := await stream.receive_some(RECEIVE_BYTES):
            buffer += data
            if reply := answers(buffer):
                await stream.send_all(reply)
    except trio.BrokenResourceError:
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def serve(port: int) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    bound = listeners[0].socket.getsockname()[1]
    line = {"event": "echo_started", "port": bound, "pid": os.getpid()}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, echo, listeners)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                return


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.echo_server", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any)")
    args = parser.parse_args(argv)
    raise_open_files_limit()
    trio.run(serve, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
