"""Backpressure through the real listeners, switchboard, bank links and simulators over
loopback: work that finds capacity full waits in a bounded queue for a bounded time;
91 is answered only when a queue is full or the wait is over, and then at once."""

from __future__ import annotations

import sqlite3
from collections import Counter

import trio
import trio.testing

from switch.app import SwitchApp
from switch.terminal import Terminal
from switch.wire import online as wire
from tests.conftest import LogSink, make_config
from tests.net.helpers import PAN_ABC, PAN_ICBC, eventually, online_client, pos_client, start_switch


async def sales(app: SwitchApp, count: int, pan: str, *, first_stan: int = 1) -> list[str]:
    """One sale from each of ``count`` terminals at once; their codes, in answer order."""
    answers: list[str] = []

    async def one_sale(index: int) -> None:
        client = await pos_client(app, Terminal(terminal_id=f"T{pan[:3]}{index:04d}"))
        # Amounts end in 00: the simulator's test hooks decline some other endings.
        response = await client.request(client.terminal.sale(index, pan, 100_000 + index * 100))
        answers.append(str(response.fields[39]))
        await client.aclose()

    async with trio.open_nursery() as senders:
        for index in range(first_stan, first_stan + count):
            senders.start_soon(one_sale, index)
    return answers


def journaled_rows(app: SwitchApp, table: str) -> int:
    with sqlite3.connect(app.config.path(app.config.journal.path)) as connection:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def test_a_full_bank_window_queues_requests_instead_of_refusing_them(
    nursery: trio.Nursery, switch_clock: trio.testing.MockClock
) -> None:
    config = make_config(banks={"icbc": {"links": 1, "window": 4, "issuer_timeout_s": 10.0}})
    app = await start_switch(nursery, config)
    simulator = app.simulators["icbc"]
    simulator.latency_s = 0.2
    most_at_the_bank = 0

    async def watch() -> None:
        nonlocal most_at_the_bank
        while True:
            most_at_the_bank = max(most_at_the_bank, simulator.statistics().pending)
            await trio.sleep(0.01)

    with trio.fail_after(20):
        async with trio.open_nursery() as load:
            load.start_soon(watch)
            answers = await sales(app, 20, PAN_ICBC)
            load.cancel_scope.cancel()
    assert answers == ["00"] * 20
    assert most_at_the_bank == 4  # never more than the window at the bank
    assert app.connectors["icbc"].statistics()["queued_total"] >= 16


async def test_a_full_bank_queue_answers_91_at_once_and_journals_nothing_for_it(
    nursery: trio.Nursery,
) -> None:
    config = make_config(
        banks={"icbc": {"links": 1, "window": 2, "queue": 3, "issuer_timeout_s": 10.0}}
    )
    app = await start_switch(nursery, config)
    app.simulators["icbc"].latency_s = 0.3  # all queued get their turn within max_wait_s
    with trio.fail_after(20):
        answers = await sales(app, 10, PAN_ICBC)
    assert Counter(answers) == {"00": 5, "91": 5}  # 2 at the bank, 3 queued, 5 refused
    assert answers.index("00") == 5  # the refusals came at once, before any approval
    assert journaled_rows(app, "txn") == 5  # what was refused left nothing behind
    assert app.connectors["icbc"].statistics()["refused_queue_full"] == 5


async def test_a_request_that_waits_longer_than_max_wait_is_answered_91_then(
    nursery: trio.Nursery, log_sink: LogSink
) -> None:
    config = make_config(
        switch={"max_wait_s": 0.3},
        banks={"icbc": {"links": 1, "window": 1, "issuer_timeout_s": 10.0}},
    )
    app = await start_switch(nursery, config)
    app.simulators["icbc"].latency_s = 1.5
    with trio.fail_after(20):
        answers = await sales(app, 2, PAN_ICBC)
    assert answers == ["91", "00"]  # the waiting one is refused before the other is done
    [refused] = [line for line in log_sink.events("txn") if line["code"] == "91"]
    assert "within the wait allowed" in refused["reason"]
    assert 300 <= refused["latency_ms"] < 1500


async def test_more_terminals_than_switch_slots_wait_their_turn_and_are_all_served(
    nursery: trio.Nursery, switch_clock: trio.testing.MockClock
) -> None:
    app = await start_switch(nursery, make_config(switch={"max_in_flight": 2}))
    app.simulators["icbc"].latency_s = 0.05  # 20 sales, 2 at a time: 0.5 s, within max_wait_s
    network: list[str] = []

    async def sign_on_and_echo_while_full() -> None:
        # Nothing to wait for in them: answered at once even now, never queued.
        await trio.sleep(0.05)
        client = await pos_client(app, Terminal(terminal_id="N0000001"))
        for message in (client.terminal.sign_on(1), client.terminal.echo(2)):
            network.append(str((await client.request(message)).fields[39]))
        network.append(f"waiting {app.admission.statistics().waiting}")  # type: ignore[union-attr]

    with trio.fail_after(20):
        async with trio.open_nursery() as load:
            load.start_soon(sign_on_and_echo_while_full)
            answers = await sales(app, 20, PAN_ICBC)
    assert answers == ["00"] * 20, Counter(answers)
    assert network[:2] == ["00", "00"] and network[2] != "waiting 0"
    statistics = app.admission.statistics()  # type: ignore[union-attr]
    assert (statistics.admitted, statistics.in_use, statistics.waiting) == (20, 0, 0)


async def test_a_full_admission_queue_answers_91_at_once_and_logs_a_summary(
    nursery: trio.Nursery, log_sink: LogSink
) -> None:
    config = make_config(
        switch={"max_in_flight": 1, "queue_limit": 2},
        banks={"icbc": {"issuer_timeout_s": 10.0}},
    )
    app = await start_switch(nursery, config)
    app.simulators["icbc"].latency_s = 0.3
    with trio.fail_after(20):
        answers = await sales(app, 10, PAN_ICBC)
    assert Counter(answers) == {"00": 3, "91": 7}  # 1 in progress and 2 waiting
    assert answers.index("00") == 7  # refused at once, before the first approval
    shed = log_sink.events("requests_shed")
    assert shed and sum(line["count"] for line in shed) <= 7
    assert app.pos is not None and app.pos.shed == 7
    assert not [line for line in log_sink.events("txn") if line["code"] == "91"]


async def test_a_slow_bank_holds_at_most_its_windows_and_queue_of_the_switch(
    nursery: trio.Nursery, switch_clock: trio.testing.MockClock
) -> None:
    """A bank that slows down holds at most its window plus its queue of the switch's
    slots (the excess for it is refused at once): the other banks keep the rest, and
    their traffic is served meanwhile."""
    config = make_config(
        switch={"max_in_flight": 6, "max_wait_s": 10.0},
        banks={"icbc": {"links": 1, "window": 1, "issuer_timeout_s": 10.0, "queue": 2}},
    )
    app = await start_switch(nursery, config)
    app.simulators["icbc"].latency_s = 0.5
    order: list[str] = []

    async def bank_load(pan: str, name: str, first_stan: int) -> None:
        for code in await sales(app, 8, pan, first_stan=first_stan):
            order.append(f"{name} {code}")

    with trio.fail_after(30):
        async with trio.open_nursery() as load:
            load.start_soon(bank_load, PAN_ICBC, "icbc", 1)
            await trio.sleep(0.1)  # icbc's window and queue are full: 3 of 6 slots
            load.start_soon(bank_load, PAN_ABC, "abc", 100)
    assert Counter(order) == {"icbc 91": 5, "icbc 00": 3, "abc 00": 8}, str(order)
    # All of abc was answered while icbc still had its queued sales to go.
    assert order.index("icbc 00") > max(i for i, item in enumerate(order) if item == "abc 00")


async def test_one_online_client_cannot_take_the_capacity_of_every_terminal(
    nursery: trio.Nursery,
) -> None:
    """3 connections x 64 voids of originals that do not exist, at once with 100 POS
    sales: the voids never hold a slot of the bank path (they are refused 25 before),
    every sale is approved, and nothing of the voids is kept in the journal."""
    config = make_config(switch={"max_in_flight": 8})
    app = await start_switch(nursery, config)
    void_codes: list[str] = []

    async def voids_of_nothing(connection: int) -> None:
        client = await online_client(app)
        for index in range(64):
            await client.send(
                wire.Void(
                    id=f"void-{connection}-{index}",
                    merchant_id="SHOP01",
                    original_id=f"nothing-{connection}-{index}",
                )
            )
        for _ in range(64):
            response = await client.receive()
            void_codes.append(response.code)

    with trio.fail_after(30):
        async with trio.open_nursery() as load:
            for connection in range(3):
                load.start_soon(voids_of_nothing, connection)
            sale_codes = await sales(app, 100, PAN_ICBC)
    assert sale_codes == ["00"] * 100
    assert void_codes == ["25"] * 192
    assert journaled_rows(app, "idempotency") == 0
    assert journaled_rows(app, "txn") == 100


async def test_200_terminals_in_a_closed_loop_on_the_demo_windows_are_all_approved(
    nursery: trio.Nursery,
) -> None:
    """The demo configuration's bank windows (2 links x 32) and slots, zero-latency
    banks, 200 terminals each sending its next sale when answered: none refused."""
    config = make_config(switch={"max_in_flight": 64}, banks={"icbc": {"links": 2, "window": 32}})
    app = await start_switch(nursery, config)
    codes: Counter[str] = Counter()
    clients = [await pos_client(app, Terminal(terminal_id=f"C{n:07d}")) for n in range(200)]

    async def terminal(index: int) -> None:
        client = clients[index]
        for stan in range(1, 6):
            response = await client.request(client.terminal.sale(stan, PAN_ICBC, 100 * stan))
            codes[str(response.fields[39])] += 1
        await client.aclose()

    with trio.fail_after(60):
        async with trio.open_nursery() as load:
            for index in range(200):
                load.start_soon(terminal, index)
    assert codes == {"00": 1000}, app.admission.statistics()  # type: ignore[union-attr]


async def test_a_request_waiting_for_a_slot_when_the_switch_drains_is_answered(
    nursery: trio.Nursery,
) -> None:
    config = make_config(switch={"max_in_flight": 1}, banks={"icbc": {"issuer_timeout_s": 10.0}})
    app = await start_switch(nursery, config)
    app.simulators["icbc"].latency_s = 0.3
    holder = await pos_client(app, Terminal(terminal_id="H0000001"))
    waiting = await pos_client(app, Terminal(terminal_id="W0000001"))
    await holder.send(holder.terminal.sale(1, PAN_ICBC, 1001))
    await eventually(lambda: app.admission is not None and app.admission.statistics().in_use == 1)
    await waiting.send(waiting.terminal.sale(1, PAN_ICBC, 1002))
    await eventually(lambda: app.admission is not None and app.admission.statistics().waiting == 1)
    app.shutdown()
    with trio.fail_after(10):
        assert (await holder.receive())[1].fields[39] == "00"
        assert (await waiting.receive())[1].fields[39] == "00"  # read before the drain: served
