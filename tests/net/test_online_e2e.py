"""Online clients through the real listener, pipelining over one connection."""

from __future__ import annotations

import gc

import msgspec
import pytest
import trio

from switch.core.model import Sale
from switch.wire import online as wire
from tests.net import helpers
from tests.net.helpers import PAN_ABC, PAN_ICBC, eventually, online_client, start_switch
from tests.store.engines import ENGINES, Configure, config_maker


@pytest.fixture(params=ENGINES)
def make_config(request: pytest.FixtureRequest) -> Configure:
    """The tests' ``make_config``, with the journal on this run's engine."""
    return config_maker(request)


def purchase(request_id: str, amount: int, **extra: object) -> wire.Purchase:
    return helpers.purchase(request_id, amount, cvv2="123", **extra)


async def test_pipelined_purchases_come_back_by_id(
    nursery: trio.Nursery, make_config: Configure
) -> None:
    app = await start_switch(nursery, make_config(online={"max_in_flight_per_connection": 128}))
    app.simulators["icbc"].latency_s = 0.05
    client = await online_client(app)
    amounts = {f"order-{n}": 1000 + n * 100 for n in range(100)}
    for request_id, amount in amounts.items():  # all sent before any answer is read
        await client.send(purchase(request_id, amount))
    results: dict[str, wire.OnlineResponse] = {}
    with trio.fail_after(20):
        while len(results) < len(amounts):
            response = await client.receive()
            assert response.id is not None
            results[response.id] = response
    assert set(results) == set(amounts)
    for response in results.values():
        assert isinstance(response, wire.Result)
        assert response.approved and response.code == "00" and len(response.rrn or "") == 12
    assert app.simulators["icbc"].totals().approved == sum(amounts.values())


async def test_an_idle_connection_holds_nothing_of_its_last_purchase(
    nursery: trio.Nursery,
    make_config: Configure,
) -> None:
    """As on POS: once answered, the purchase (its card among its fields) is held by
    nothing while the connection waits for the next one."""
    app = await start_switch(nursery, make_config())
    client = await online_client(app)
    amount = 31_338  # no other test's purchase has it
    result = await client.request(purchase("held-1", amount))
    assert isinstance(result, wire.Result) and result.approved

    def held() -> list[object]:
        gc.collect()
        return [
            o
            for o in gc.get_objects()
            if isinstance(o, Sale | wire.Purchase) and o.amount == amount
        ]

    # The request's task ends just after its answer is written: give it its turn.
    with trio.move_on_after(2):
        while held():
            await trio.sleep(0.02)
    assert held() == []


async def test_pipelining_beyond_the_connection_cap_waits_and_is_all_served(
    nursery: trio.Nursery,
    make_config: Configure,
) -> None:
    """A client that pipelines more than its connection's window is slowed down (its
    next requests are read as earlier ones end), not refused: all are approved, at most
    a window's worth at the bank at once."""
    app = await start_switch(nursery, make_config(online={"max_in_flight_per_connection": 8}))
    simulator = app.simulators["icbc"]
    simulator.latency_s = 0.2
    client = await online_client(app)
    for n in range(20):
        await client.send(purchase(f"cap-{n}", 1000 + n * 100))
    most_at_the_bank = 0
    responses = []
    with trio.fail_after(10):
        while len(responses) < 20:
            most_at_the_bank = max(most_at_the_bank, simulator.statistics().pending)
            with trio.move_on_after(0.01):
                responses.append(await client.receive())
    assert all(isinstance(r, wire.Result) and r.approved for r in responses), responses
    assert sorted(str(r.id) for r in responses) == sorted(f"cap-{n}" for n in range(20))
    assert 1 <= most_at_the_bank <= 8
    assert app.online is not None and app.online.statistics()["slowed"] >= 1


async def test_result_echoes_order_and_memo_and_balance(
    nursery: trio.Nursery, make_config: Configure
) -> None:
    app = await start_switch(nursery, make_config())
    client = await online_client(app)
    result = await client.request(purchase("p-1", 2500, order_id="ORD-9", memo="two books"))
    assert isinstance(result, wire.Result)
    assert (result.order_id, result.memo, result.balance) == ("ORD-9", "two books", None)
    balance = await client.request(
        wire.Balance(id="b-1", merchant_id="SHOP01", card=wire.Card(pan=PAN_ABC, expiry="2812"))
    )
    assert isinstance(balance, wire.Result)
    assert balance.balance == app.config.banks["abc"].sim.opening_balance


async def test_idempotency_same_id(nursery: trio.Nursery, make_config: Configure) -> None:
    app = await start_switch(nursery, make_config())
    client = await online_client(app)
    first = wire.encode_request(purchase("same-1", 7000))
    await client.send_raw(first)
    stored = await client.receive_raw()
    await client.send_raw(first)
    assert await client.receive_raw() == stored  # byte for byte
    assert app.simulators["icbc"].totals().approvals == 1  # the bank saw it once

    different = await client.request(purchase("same-1", 7001))
    assert isinstance(different, wire.Error) and different.code == "94"

    status = await client.request(wire.Status(id="s-1", merchant_id="SHOP01", original_id="same-1"))
    original = wire.decode_response(stored)
    assert isinstance(status, wire.Result) and isinstance(original, wire.Result)
    assert (status.id, status.rrn, status.code) == ("s-1", original.rrn, "00")


async def test_same_id_while_in_flight_is_94_in_progress(
    nursery: trio.Nursery, make_config: Configure
) -> None:
    app = await start_switch(nursery, make_config())
    app.simulators["icbc"].latency_s = 0.5
    client = await online_client(app)
    await client.send(purchase("slow-1", 3000))
    await client.send(purchase("slow-1", 3000))
    first = await client.receive()
    assert isinstance(first, wire.Error) and first.code == "94" and "progress" in first.message
    second = await client.receive()
    assert isinstance(second, wire.Result) and second.approved


async def test_void_and_refund_by_original_id(
    nursery: trio.Nursery, make_config: Configure
) -> None:
    app = await start_switch(nursery, make_config())
    client = await online_client(app)
    await client.request(purchase("buy-1", 9000))
    await client.request(purchase("buy-2", 5000))
    void = await client.request(wire.Void(id="void-1", merchant_id="SHOP01", original_id="buy-1"))
    assert isinstance(void, wire.Result) and void.approved
    refund = await client.request(
        wire.Refund(id="ref-1", merchant_id="SHOP01", original_id="buy-2", amount=3000)
    )
    assert isinstance(refund, wire.Result) and refund.approved
    over = await client.request(
        wire.Refund(id="ref-2", merchant_id="SHOP01", original_id="buy-2", amount=2001)
    )
    assert isinstance(over, wire.Result) and over.code == "61"
    unknown = await client.request(wire.Void(id="void-2", merchant_id="SHOP01", original_id="nope"))
    assert isinstance(unknown, wire.Result) and unknown.code == "25"
    other_merchant = await client.request(
        wire.Void(id="void-3", merchant_id="SHOP02", original_id="buy-2")
    )
    assert isinstance(other_merchant, wire.Result) and other_merchant.code == "25"
    totals = app.simulators["icbc"].totals()
    assert (totals.approved, totals.voided, totals.refunded, totals.net) == (
        14000,
        9000,
        3000,
        2000,
    )


async def test_validation_errors_name_the_field_and_keep_the_connection(
    nursery: trio.Nursery,
    make_config: Configure,
) -> None:
    app = await start_switch(nursery, make_config())
    client = await online_client(app)
    bad_luhn = await client.request(
        wire.Purchase(
            id="v-1",
            merchant_id="SHOP01",
            amount=100,
            currency="CNY",
            card=wire.Card(pan=PAN_ICBC[:-1] + "0", expiry="2812"),
        )
    )
    assert isinstance(bad_luhn, wire.Error)
    assert (bad_luhn.id, bad_luhn.code) == ("v-1", "14") and "card.pan" in bad_luhn.message

    zero = await client.request(purchase("v-2", 0))
    assert isinstance(zero, wire.Error) and zero.code == "13" and "amount" in zero.message

    raw = msgspec.msgpack.encode(
        {
            "type": "purchase",
            "id": "v-3",
            "merchant_id": "SHOP01",
            "amount": "lots",
            "currency": "CNY",
            "card": {"pan": PAN_ICBC, "expiry": "2812"},
        }
    )
    await client.send_raw(raw)
    wrong_type = wire.decode_response(await client.receive_raw())
    assert isinstance(wrong_type, wire.Error)
    assert (wrong_type.id, wrong_type.code) == ("v-3", "13") and "amount" in wrong_type.message

    await client.send_raw(b"\xc1 not msgpack")
    garbage = wire.decode_response(await client.receive_raw())
    assert isinstance(garbage, wire.Error) and garbage.id is None and garbage.code == "30"

    fine = await client.request(purchase("v-4", 100))  # the connection is still open
    assert isinstance(fine, wire.Result) and fine.approved
    # A corrected request may reuse the id that failed validation.
    fixed = await client.request(purchase("v-2", 100))
    assert isinstance(fixed, wire.Result) and fixed.approved


async def test_ids_that_left_memory_are_still_answered_from_the_journal(
    nursery: trio.Nursery,
    make_config: Configure,
) -> None:
    app = await start_switch(nursery, make_config(online={"idempotency_max_entries": 2}))
    client = await online_client(app)
    first = wire.encode_request(purchase("mem-0", 1100))
    await client.send_raw(first)
    stored = await client.receive_raw()
    for n in range(1, 4):  # push mem-0 out of the two-entry memory
        await client.request(purchase(f"mem-{n}", 1100 + n * 100))
    status = await client.request(
        wire.Status(id="ask-0", merchant_id="SHOP01", original_id="mem-0")
    )
    original = wire.decode_response(stored)
    assert isinstance(status, wire.Result) and isinstance(original, wire.Result)
    assert (status.id, status.rrn, status.code) == ("ask-0", original.rrn, "00")
    unknown = await client.request(
        wire.Status(id="ask-1", merchant_id="SHOP01", original_id="never-sent")
    )
    assert isinstance(unknown, wire.Error) and unknown.code == "25"
    await client.send_raw(first)
    assert await client.receive_raw() == stored  # byte for byte, from the journal
    changed = await client.request(purchase("mem-0", 9900))
    assert isinstance(changed, wire.Error) and changed.code == "94"
    assert app.simulators["icbc"].totals().approvals == 4  # mem-0 reached the bank once


async def test_an_id_in_flight_never_leaves_memory_early_so_its_repeat_is_refused(
    nursery: trio.Nursery,
    make_config: Configure,
) -> None:
    """The in-memory window holds 2 results; 10 finish while one id is still at a slow
    bank: a repeat of that id is refused 94, and the bank sees the request once."""
    app = await start_switch(nursery, make_config(online={"idempotency_max_entries": 2}))
    app.simulators["icbc"].latency_s = 0.5
    slow = await online_client(app)
    await slow.send(purchase("slow-1", 4400))
    await eventually(lambda: app.simulators["icbc"].statistics().pending == 1)
    fast = await online_client(app)
    for n in range(10):
        result = await fast.request(
            wire.Purchase(
                id=f"fast-{n}", merchant_id="SHOP01", amount=1000 + n * 100, currency="CNY",
                card=wire.Card(pan=PAN_ABC, expiry="2812"),
            )
        )  # fmt: skip
        assert isinstance(result, wire.Result) and result.approved
    repeat = await fast.request(purchase("slow-1", 4400))
    assert isinstance(repeat, wire.Error) and repeat.code == "94"
    assert "in progress" in repeat.message
    first = await slow.receive()
    assert isinstance(first, wire.Result) and first.approved
    assert app.simulators["icbc"].totals().approvals == 1
