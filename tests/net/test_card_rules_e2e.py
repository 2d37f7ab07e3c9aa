"""The card and currency rules of both channels, through the real listeners, bank links
and simulators over loopback TCP: a currency the switch does not settle is refused 57
before anything is journaled or sent."""

from __future__ import annotations

import msgspec
import trio

from switch.app import SwitchApp
from switch.wire import online as wire
from switch.wire.iso8583 import Iso8583Message
from tests.conftest import make_config
from tests.net.helpers import PAN_ICBC, online_client, pos_client, start_switch


def bank_requests(app: SwitchApp) -> list[Iso8583Message]:
    """What the banks got besides their links' sign-ons and echo tests."""
    return [m for sim in app.simulators.values() for m in sim.received if m.mti != "0800"]


def card_purchase(
    request_id: str, amount: int, *, currency: str = "CNY", expiry: str = "2812"
) -> wire.Purchase:
    return wire.Purchase(
        id=request_id,
        merchant_id="SHOP01",
        amount=amount,
        currency=currency,
        card=wire.Card(pan=PAN_ICBC, expiry=expiry, cvv2="123"),
    )


async def test_pos_foreign_currencies_are_refused_57_before_any_bank(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    client = await pos_client(app)
    terminal = client.terminal
    for stan, currency in enumerate(["840", "392", "999"], start=1):  # USD, JPY, unknown
        response = await client.request(terminal.sale(stan, PAN_ICBC, 10000, currency=currency))
        fields = response.fields
        assert (response.mti, fields[39], fields[49]) == ("0210", "57", currency)
        assert 38 not in fields and 37 not in fields  # no RRN: nothing was journaled
        assert len(str(fields[15])) == 4  # the business date, declines included
    balance = await client.request(terminal.balance(4, PAN_ICBC, currency="840"))
    assert balance.fields[39] == "57"
    assert bank_requests(app) == []
    assert app.switchboard is not None and len(app.switchboard.book) == 0

    cny = await client.request(terminal.sale(5, PAN_ICBC, 10000))
    assert cny.fields[39] == "00"
    [sent] = bank_requests(app)
    assert (sent.fields[4], sent.fields[49]) == ("000000010000", "156")
    assert app.simulators["icbc"].totals().approved == 10000


async def test_pos_a_configured_currency_goes_to_the_bank_in_its_own_minor_units(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery, make_config(switch={"currencies": ["156", "392"]}))
    client = await pos_client(app)
    yen = await client.request(client.terminal.sale(1, PAN_ICBC, 10000, currency="392"))
    assert yen.fields[39] == "00"
    [sent] = bank_requests(app)
    assert (sent.fields[4], sent.fields[49]) == ("000000010000", "392")  # 10,000 yen
    dollars = await client.request(client.terminal.sale(2, PAN_ICBC, 10000, currency="840"))
    assert dollars.fields[39] == "57"
    assert len(bank_requests(app)) == 1


async def test_online_foreign_currencies_are_error_57_before_any_bank(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    client = await online_client(app)
    for request_id, currency in [("usd-1", "USD"), ("jpy-1", "JPY")]:
        await client.send(card_purchase(request_id, 10000, currency=currency))
        raw = msgspec.msgpack.decode(await client.receive_raw())
        # online.md's error: type, id, code and a message naming the field; no more.
        assert sorted(raw) == ["code", "id", "message", "type"]
        assert (raw["type"], raw["id"], raw["code"]) == ("error", request_id, "57")
        assert "currency" in raw["message"]
    assert bank_requests(app) == []
    assert app.switchboard is not None and len(app.switchboard.book) == 0
    # Refused before it reached the switchboard: the id may be used again, corrected.
    fixed = await client.request(card_purchase("usd-1", 10000))
    assert isinstance(fixed, wire.Result) and fixed.approved
    [sent] = bank_requests(app)
    assert (sent.fields[4], sent.fields[49]) == ("000000010000", "156")
