"""The card and currency rules of both channels, through the real listeners, bank links
and simulators over loopback TCP: a currency the switch does not settle is refused 57
and a past expiry 54 before anything is journaled or sent; a keyed card's expiry
reaches the bank in its 14."""

from __future__ import annotations

import msgspec
import trio

from switch.app import SwitchApp
from switch.core.clock import WALL_CLOCK
from switch.wire import online as wire
from switch.wire.iso8583 import Iso8583Message
from tests.net.helpers import PAN_ICBC, online_client, pos_client, start_switch


def bank_requests(app: SwitchApp) -> list[Iso8583Message]:
    """What the banks got besides their links' sign-ons and echo tests."""
    return [m for sim in app.simulators.values() for m in sim.received if m.mti != "0800"]


def this_month() -> str:
    """YYMM of the switch's local date (fields 12/13, UTC+8 in the tests' config)."""
    local = WALL_CLOCK.stamp(8).local
    return f"{local.year % 100:02d}{local.month:02d}"


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


async def test_pos_expired_card_is_54_and_valid_through_its_month(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    client = await pos_client(app)
    terminal = client.terminal
    expired = await client.request(terminal.sale(1, PAN_ICBC, 10000, expiry="2001"))
    assert (expired.fields[39], len(str(expired.fields[15]))) == ("54", 4)
    assert 38 not in expired.fields and 37 not in expired.fields
    inquiry = await client.request(terminal.balance(2, PAN_ICBC, expiry="2001"))
    assert inquiry.fields[39] == "54"
    mti, track_only = terminal.sale(3, PAN_ICBC, 10000, expiry=None)
    del track_only[2]
    track_only[35] = f"{PAN_ICBC}=2001101"  # the expiry of track 2 counts as well
    assert (await client.request((mti, track_only))).fields[39] == "54"
    assert bank_requests(app) == []

    current = await client.request(terminal.sale(4, PAN_ICBC, 10000, expiry=this_month()))
    assert current.fields[39] == "00"
    # Swiped (22 = 02x): the expiry is the card's, not the bank's to read from 14
    # (bank-h2h.md's sample sale, which is pos-cup.md's, has none). The terminal entered
    # no PIN: 022 (security.md).
    [swiped] = bank_requests(app)
    assert swiped.fields[22] == "022" and 14 not in swiped.fields

    mti, keyed = terminal.sale(5, PAN_ICBC, 10000, expiry="2812")
    keyed[22] = "012"  # card number keyed in, no PIN
    assert (await client.request((mti, keyed))).fields[39] == "00"
    sent = bank_requests(app)[-1]
    assert (sent.fields[22], sent.fields[14]) == ("012", "2812")


async def test_online_expired_card_is_error_54_and_a_valid_expiry_reaches_the_bank(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    client = await online_client(app)
    expired = await client.request(card_purchase("exp-1", 10000, expiry="2001"))
    assert isinstance(expired, wire.Error)
    assert (expired.id, expired.code) == ("exp-1", "54") and "card.expiry" in expired.message
    balance = await client.request(
        wire.Balance(id="bal-1", merchant_id="SHOP01", card=wire.Card(pan=PAN_ICBC, expiry="2001"))
    )
    assert isinstance(balance, wire.Error) and balance.code == "54"
    assert bank_requests(app) == []

    current = await client.request(card_purchase("exp-1", 10000, expiry=this_month()))
    assert isinstance(current, wire.Result) and current.approved
    [sent] = bank_requests(app)
    assert (sent.fields[14], sent.fields[22], sent.fields[25]) == (this_month(), "012", "08")
