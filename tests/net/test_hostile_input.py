"""Bad peers only ever end their own connection; good ones keep being served."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from switch.terminal import DEFAULT_ENVELOPE, Terminal
from tests.conftest import LogSink, make_config
from tests.net.helpers import PAN_ICBC, POS_CODEC, pos_client, start_switch


async def _raw_connection(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def _closed_by_switch(stream: trio.SocketStream) -> bool:
    """True once the switch has closed the connection (EOF or reset)."""
    with trio.fail_after(5):
        try:
            while await stream.receive_some(4096):
                pass
        except trio.BrokenResourceError:
            pass
    return True


async def _still_serves(app: object) -> None:
    client = await pos_client(app)  # type: ignore[arg-type]
    response = await client.request(client.terminal.sale(77, PAN_ICBC, 1000))
    assert response.fields[39] == "00"
    await client.aclose()


async def test_length_zero_and_oversized_frames_close_only_that_connection(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    bystander = await pos_client(app)
    for bad in (b"\x00\x00", b"\x08\x01" + b"x" * 10, b"\xff\xff"):
        stream = await _raw_connection(app.pos_port)
        await stream.send_all(bad)
        assert await _closed_by_switch(stream)
    response = await bystander.request(bystander.terminal.sale(1, PAN_ICBC, 1000))
    assert response.fields[39] == "00"


async def test_unparseable_message_with_readable_11_and_41_is_answered_30(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    terminal = Terminal()
    mti, fields = terminal.sale(5, PAN_ICBC, 1000)
    message = bytearray(POS_CODEC.encode(mti, fields))
    # Field 2 follows MTI (2) + bitmap (8) + its length byte: make its first digit pair
    # not BCD. Its bounds are still known, so 11 and 41 remain readable.
    message[11] = 0xAB
    client = await pos_client(app, terminal)
    await client.stream.send_all(
        client.framer.frame(DEFAULT_ENVELOPE.tpdu + DEFAULT_ENVELOPE.header + bytes(message))
    )
    _, response = await client.receive()
    assert response.mti == "0210"
    assert (response.fields[39], response.fields[11], response.fields[41]) == (
        "30",
        "000005",
        "POS00001",
    )
    # The connection stays usable.
    assert (await client.request(terminal.sale(6, PAN_ICBC, 1000))).fields[39] == "00"


async def test_unreadable_message_closes_the_connection(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery)
    stream = await _raw_connection(app.pos_port)
    payload = DEFAULT_ENVELOPE.tpdu + DEFAULT_ENVELOPE.header + b"\x02\x00" + b"\xff" * 8
    await stream.send_all(len(payload).to_bytes(2, "big") + payload)
    assert await _closed_by_switch(stream)
    too_short = await _raw_connection(app.pos_port)
    await too_short.send_all(b"\x00\x05" + b"\x60\x00\x00\x00\x00")
    assert await _closed_by_switch(too_short)
    await _still_serves(app)


async def test_half_frame_is_dropped_after_the_read_deadline(
    nursery: trio.Nursery, switch_clock: trio.testing.MockClock
) -> None:
    app = await start_switch(nursery, make_config(pos={"read_deadline_s": 0.3}))
    stream = await _raw_connection(app.pos_port)
    await stream.send_all(b"\x00\x40" + b"\x60" * 10)  # 10 of 64 promised bytes
    assert await _closed_by_switch(stream)
    # A connection that is idle between frames is not dropped.
    idle = await pos_client(app)
    await trio.sleep(0.6)
    assert (await idle.request(idle.terminal.echo(1))).fields[39] == "00"


async def test_connections_beyond_the_listener_maximum_are_refused(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery, make_config(pos={"max_connections": 3}))
    held = [await pos_client(app) for _ in range(3)]
    for client in held:
        assert (await client.request(client.terminal.echo(1))).fields[39] == "00"
    extra = await _raw_connection(app.pos_port)
    assert await _closed_by_switch(extra)
    assert app.pos is not None and app.pos.refused >= 1
    await held[0].aclose()
    with trio.fail_after(5):
        while app.pos.connections >= 3:
            await trio.sleep(0.01)
    await _still_serves(app)


async def test_many_garbage_connections_while_terminals_transact(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery)
    approved: list[str] = []

    async def terminal_run(index: int) -> None:
        client = await pos_client(app, Terminal(terminal_id=f"G{index:07d}"))
        for stan in range(1, 6):
            response = await client.request(client.terminal.sale(stan, PAN_ICBC, 1000 + stan * 100))
            approved.append(str(response.fields[39]))
        await client.aclose()

    async def garbage(index: int) -> None:
        stream = await _raw_connection(app.pos_port)
        try:
            await stream.send_all(bytes([index % 256]) * (index % 300 + 1))
            await _closed_by_switch(stream) if index % 3 == 0 else await stream.aclose()
        except (trio.BrokenResourceError, trio.TooSlowError):
            pass

    with trio.fail_after(30):
        async with trio.open_nursery() as load:
            for index in range(20):
                load.start_soon(terminal_run, index)
            for index in range(300):
                load.start_soon(garbage, index)
    assert approved == ["00"] * 100


async def test_a_bug_met_on_one_request_ends_only_its_own_connection(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, log_sink: LogSink
) -> None:
    """Requests run in the listener's nursery, not their connection's: an exception
    escaping one must still end only the connection it came on."""
    app = await start_switch(nursery)
    assert app.pos is not None
    protocol = app.pos.protocol
    respond = protocol.respond

    async def respond_with_a_bug(work: Any) -> Any:
        if work.request.stan == "000666":
            raise RuntimeError("a bug met on this request")
        return await respond(work)

    monkeypatch.setattr(protocol, "respond", respond_with_a_bug)
    bystander = await pos_client(app)
    assert (await bystander.request(bystander.terminal.sale(1, PAN_ICBC, 1000))).fields[39] == "00"
    victim = await pos_client(app)
    await victim.send(victim.terminal.sale(666, PAN_ICBC, 1000))
    assert await _closed_by_switch(victim.stream)
    failures = log_sink.events("connection_failed")
    assert len(failures) == 1 and "a bug met on this request" in failures[0]["error"]
    assert (await bystander.request(bystander.terminal.sale(2, PAN_ICBC, 1000))).fields[39] == "00"
    await _still_serves(app)
    assert app.admission is not None and app.admission.statistics().in_use == 0
