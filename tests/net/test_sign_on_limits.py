"""Sign-ons are limited per terminal, per source address and switch-wide, over real
loopback sockets: a flood from one address, or one terminal in a sign-on loop, is
answered 91 without taking the allowance of anyone else.

The clock is trio's MockClock, standing still unless a test moves it: no bucket
refills behind a test's back, and where a refill is the point, the test jumps."""

from __future__ import annotations

import trio
import trio.testing

from switch.net.clients import PosClient
from switch.terminal import Terminal
from switch.wire.iso8583 import Iso8583Message
from tests.conftest import make_config
from tests.net.helpers import POS_CODEC, start_switch

FLOOD_CONNECTIONS = 4
FLOOD_PER_CONNECTION = 15
"""Under a connection's own pacing of immediate answers (20 at once): the flood is
refused by the switch's limits, not slowed down by its connections."""


async def connect_from(port: int, source: str, terminal: Terminal) -> PosClient:
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    return PosClient(stream, POS_CODEC, terminal)


async def sign_on(client: PosClient, stan: int = 1) -> Iso8583Message:
    with trio.fail_after(10):
        return await client.request(client.terminal.sign_on(stan))


async def test_a_flood_of_sign_ons_from_one_address_leaves_another_address_served(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    config = make_config(
        switch={
            "sign_on_burst": 40,
            "sign_on_source_burst": 20,
            "sign_on_terminal_burst": 3,
        }
    )
    app = await start_switch(nursery, config)
    assert app.switchboard is not None
    codes: list[str] = []
    for connection in range(FLOOD_CONNECTIONS):
        # Each sign-on names a terminal of its own: only the address is in common.
        flooder = await connect_from(app.pos_port, "127.0.0.1", Terminal())
        for stan in range(1, FLOOD_PER_CONNECTION + 1):
            flooder.terminal = Terminal(terminal_id=f"F{connection:02d}{stan:05d}")
            codes.append(str((await sign_on(flooder, stan)).fields[39]))
    assert codes.count("00") == 20  # the address's burst, and no more
    assert codes.count("91") == FLOOD_CONNECTIONS * FLOOD_PER_CONNECTION - 20
    legitimate = await connect_from(app.pos_port, "127.0.0.2", Terminal(terminal_id="LEGIT001"))
    answer = await sign_on(legitimate)
    assert answer.fields[39] == "00" and len(str(answer.fields[37])) == 12
    statistics = app.switchboard.sign_ons.statistics()
    assert statistics["refused_source"] == 40
    assert statistics["refused_switch_wide"] == statistics["refused_terminal"] == 0
    assert statistics["sources_tracked"] == 2


async def test_a_terminal_in_a_sign_on_loop_exhausts_only_its_own_allowance(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    config = make_config(
        switch={
            "sign_on_burst": 10,
            "sign_on_source_burst": 8,
            "sign_on_terminal_burst": 3,
            "sign_ons_per_terminal_per_s": 0.1,
        }
    )
    app = await start_switch(nursery, config)
    assert app.switchboard is not None
    looping = await connect_from(app.pos_port, "127.0.0.1", Terminal(terminal_id="LOOP0001"))
    codes = [str((await sign_on(looping, stan)).fields[39]) for stan in range(1, 16)]
    assert codes == ["00"] * 3 + ["91"] * 12
    # The same terminal id at another merchant is another terminal.
    elsewhere = Terminal(terminal_id="LOOP0001", merchant_id="898310048990002")
    # Its refusals took nothing from its address: five more terminals there sign on
    # (3 + 5 = the address's burst of 8).
    for index in range(5):
        terminal = elsewhere if index == 0 else Terminal(terminal_id=f"NEXT{index:04d}")
        other = await connect_from(app.pos_port, "127.0.0.1", terminal)
        assert (await sign_on(other)).fields[39] == "00"
    assert app.switchboard.sign_ons.statistics()["refused_terminal"] == 12
    # Ten seconds later (one token at 0.1 a second) the looping terminal may sign on once.
    mock_clock.jump(10.0)
    assert (await sign_on(looping, 16)).fields[39] == "00"
    assert (await sign_on(looping, 17)).fields[39] == "91"
