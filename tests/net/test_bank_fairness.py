"""A bank's link slots are shared fairly between channels and connections, over real
loopback sockets: one online connection that keeps a bank's windows full and its queue
long does not make a terminal's sale wait behind all of its requests."""

from __future__ import annotations

import trio

from switch.terminal import Terminal
from switch.wire import online as wire
from tests.conftest import make_config
from tests.net.helpers import (
    PAN_ICBC,
    eventually,
    online_client,
    pos_client,
    purchase,
    start_switch,
)

ONLINE_REQUESTS = 12
WINDOW = 2


async def test_a_terminal_is_served_between_a_busy_online_clients_queued_requests(
    nursery: trio.Nursery,
) -> None:
    config = make_config(
        switch={"max_wait_s": 30.0},
        banks={"icbc": {"links": 1, "window": WINDOW, "queue": 64, "issuer_timeout_s": 30.0}},
    )
    app = await start_switch(nursery, config)
    simulator, connector = app.simulators["icbc"], app.connectors["icbc"]
    simulator.latency_s = 0.3  # a slot comes free every 0.15 s: the queue can be watched
    client = await online_client(app)
    for n in range(ONLINE_REQUESTS):
        await client.send(purchase(f"busy-{n}", 1000 + n * 100))
    # The window is full and the client's other requests wait in the bank's queue.
    await eventually(lambda: connector.queued == ONLINE_REQUESTS - WINDOW)
    terminal = await pos_client(app, Terminal(terminal_id="FAIR0001"))
    await terminal.send(terminal.terminal.sale(1, PAN_ICBC, 500))
    await eventually(lambda: "pos" in connector.statistics()["queued_by_channel"])  # type: ignore[operator]
    waiting = connector.statistics()["queued_by_channel"]
    assert isinstance(waiting, dict) and waiting["pos"] == 1
    online_ahead = waiting["online"]  # queued before the sale, all of them
    assert online_ahead >= ONLINE_REQUESTS - WINDOW - 2
    with trio.fail_after(30):
        answer = (await terminal.receive())[1]
        results = [await client.receive() for _ in range(ONLINE_REQUESTS)]
    assert answer.fields[39] == "00"
    assert all(isinstance(r, wire.Result) and r.code == "00" for r in results)
    # The sale took the next slot but one (the channels take turns): of the online
    # requests queued before it, at most one went to the bank before it.
    sales = [str(m.fields[41]).strip() for m in simulator.received if m.mti == "0200"]
    assert sales.count("FAIR0001") == 1 and len(sales) == ONLINE_REQUESTS + 1
    after = len(sales) - 1 - sales.index("FAIR0001")
    assert after >= online_ahead - 1, (after, online_ahead)
    # Every slot and place was given back.
    statistics = connector.statistics()
    assert statistics["queued"] == 0 and statistics["queued_by_channel"] == {}
    assert all(link["in_flight"] == 0 for link in statistics["links"])  # type: ignore[attr-defined]


async def test_beside_a_terminals_work_a_busy_online_client_holds_only_its_share(
    nursery: trio.Nursery,
) -> None:
    """Switch-wide slots: while a terminal's sale is in progress, the online client
    pipelining many requests holds at most its share of max_in_flight, though slots are
    free; the next terminal's sale is admitted at once and reaches the bank before the
    client's queued requests. Once the terminals are done, the client uses them all."""
    config = make_config(
        switch={
            "max_in_flight": 4,
            "max_wait_s": 30.0,
            "channel_shares": {"pos": 0.75, "online": 0.25},
        },
        banks={"icbc": {"window": 32, "issuer_timeout_s": 30.0}},
    )
    app = await start_switch(nursery, config)
    assert app.admission is not None
    admission, simulator = app.admission, app.simulators["icbc"]
    simulator.latency_s = 0.5

    def in_use() -> dict[str, int]:
        return admission.statistics().in_use_by_channel

    first = await pos_client(app, Terminal(terminal_id="FIRST001"))
    await first.send(first.terminal.sale(1, PAN_ICBC, 500))
    await eventually(lambda: in_use() == {"pos": 1})
    client = await online_client(app)
    for n in range(6):
        await client.send(purchase(f"share-{n}", 1000 + n * 100))
    await eventually(lambda: admission.statistics().waiting == 5)
    assert in_use() == {"pos": 1, "online": 1}  # 0.25 x 4, though two slots are free
    second = await pos_client(app, Terminal(terminal_id="SECOND01"))
    await second.send(second.terminal.sale(1, PAN_ICBC, 600))
    await eventually(lambda: in_use() == {"pos": 2, "online": 1})  # admitted at once
    with trio.fail_after(30):
        assert (await first.receive())[1].fields[39] == "00"
        assert (await second.receive())[1].fields[39] == "00"
        results = [await client.receive() for _ in range(6)]
    assert all(isinstance(r, wire.Result) and r.code == "00" for r in results)
    sales = [str(m.fields[41]).strip() for m in simulator.received if m.mti == "0200"]
    assert sales[:3] == ["FIRST001", "ONLINE01", "SECOND01"]
    statistics = admission.statistics()
    assert statistics.in_use == 0 and statistics.waiting == 0 and statistics.expired == 0
