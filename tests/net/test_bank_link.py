"""Bank links against a real simulator: sign-on first, echo when idle, reconnect."""

from __future__ import annotations

import json
import subprocess
import sys

import msgspec
import pytest
import trio
import trio.testing

from switch.app import SwitchApp
from switch.sim.server import BankSimulator
from tests.conftest import REPO, make_config
from tests.net.helpers import H2H, PAN_ICBC, pos_client, start_switch


async def test_every_link_signs_on_before_any_traffic(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery)
    client = await pos_client(app)
    for stan in range(1, 6):
        assert (
            await client.request(client.terminal.sale(stan, PAN_ICBC, 1000 + stan * 100))
        ).fields[39] == "00"
    received = list(app.simulators["icbc"].received)
    sign_ons = [m for m in received if m.mti == "0800" and m.fields.get(70) == "001"]
    assert len(sign_ons) == 2  # one per link
    first_sale = next(i for i, m in enumerate(received) if m.mti == "0200")
    assert first_sale > max(received.index(m) for m in sign_ons)


async def test_an_idle_link_echoes(
    nursery: trio.Nursery, switch_clock: trio.testing.MockClock
) -> None:
    config = make_config(banks={"abc": {"links": 1, "echo_interval_s": 0.2}})
    app = await start_switch(nursery, config)
    simulator = app.simulators["abc"]
    with trio.fail_after(5):
        while not any(m.fields.get(70) == "301" for m in simulator.received):
            await trio.sleep(0.05)
    echo = next(m for m in simulator.received if m.fields.get(70) == "301")
    assert echo.mti == "0800" and sorted(echo.fields) == [7, 11, 70]
    assert app.connectors["abc"].links[0].status == "up"


async def test_a_bank_down_at_start_is_refused_91_then_joined_with_backoff(
    nursery: trio.Nursery,
) -> None:
    # Find a free port, then leave it closed: the bank is "down" when the switch starts.
    probe = trio.socket.socket()
    await probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    config = make_config(banks={"icbc": {"simulate": False, "port": port, "links": 1}})
    app = await nursery.start(SwitchApp(config).run)
    client = await pos_client(app)
    refused = await client.request(client.terminal.sale(1, PAN_ICBC, 1000))
    assert refused.fields[39] == "91"
    assert app.connectors["icbc"].links[0].status != "up"

    bank = msgspec.structs.replace(config.banks["icbc"], port=port)
    await nursery.start(BankSimulator("icbc", bank, H2H).serve)
    with trio.fail_after(10):
        await app.connectors["icbc"].wait_up()
    # The terminal resends the same request: it never reached a bank, so it is processed
    # again rather than answered with the first 91.
    approved = await client.request(client.terminal.sale(1, PAN_ICBC, 1000))
    assert approved.fields[39] == "00"


@pytest.mark.slow
async def test_sim_bank_command_serves_a_switch_in_another_process(
    nursery: trio.Nursery,
) -> None:
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "switch",
            "sim-bank",
            "--config",
            "conf/switch.toml",
            "--bank",
            "icbc",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(20):
            while b"simulator_started" not in output:
                chunk = await process.stdout.receive_some(65536)
                assert chunk, output
                output += chunk
        line = next(x for x in output.splitlines() if b"simulator_started" in x)
        port = json.loads(line)["port"]
        config = make_config(banks={"icbc": {"simulate": False, "port": port}})
        app = await start_switch(nursery, config)
        client = await pos_client(app)
        assert (await client.request(client.terminal.sale(1, PAN_ICBC, 1000))).fields[39] == "00"
    finally:
        process.terminate()
        with trio.fail_after(10):
            await process.wait()
