"""Listeners that share a port with other workers' (SO_REUSEPORT), and a worker's drain."""

from __future__ import annotations

import errno

import pytest
import trio

from switch.app import SwitchApp
from switch.net.channel import open_reuse_port_listeners
from tests.conftest import make_config


async def test_two_listeners_share_a_port_and_a_plain_one_is_refused_on_it() -> None:
    first = await open_reuse_port_listeners(0, host="127.0.0.1")
    port = first[0].socket.getsockname()[1]
    second = await open_reuse_port_listeners(port, host="127.0.0.1")
    try:
        assert second[0].socket.getsockname()[1] == port
        with pytest.raises(OSError) as refused:
            await trio.open_tcp_listeners(port, host="127.0.0.1")
        assert refused.value.errno == errno.EADDRINUSE
        # Both accept: the kernel spreads connections over them by their source port.
        accepted: set[int] = set()
        for _ in range(40):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            for index, listener in enumerate((*first, *second)):
                with trio.move_on_after(0.05):
                    await (await listener.accept()).aclose()
                    accepted.add(index)
            await stream.aclose()
        assert accepted == {0, 1}
    finally:
        for listener in (*first, *second):
            await listener.aclose()


async def test_a_shutdown_asked_while_starting_drains_once_started() -> None:
    """A SIGTERM that reaches a switch before its listeners are up (a supervisor
    draining a worker that is still starting) is not lost: the switch drains as soon
    as it has started, instead of serving on."""
    app = SwitchApp(make_config())
    async with trio.open_nursery() as nursery:
        app.shutdown()  # nothing is running yet
        await nursery.start(app.run)
        with trio.fail_after(10):
            await app.stopped.wait()
    assert app.pos is not None and not app.pos.listening
