"""Merchants over real sockets: who is served (03 otherwise), the category code the
banks receive in field 18, and the business date on every financial answer."""

from __future__ import annotations

from pathlib import Path

import trio

from switch.terminal import Terminal
from switch.wire import online as wire
from tests.conftest import make_config
from tests.net.helpers import PAN_ICBC, online_client, pos_client, purchase, start_switch

MERCHANTS = """merchant_id,name,mcc,mdr_bps,fee_min_fen,fee_cap_fen,account
898310048990001,Sample merchant,5411,38,0,2600,ACC-1
SHOP01,Online shop,5311,60,0,0,ACC-2
"""


def config_with_merchants(tmp_path: Path, text: str = MERCHANTS):  # type: ignore[no-untyped-def]
    path = tmp_path / "merchants.csv"
    path.write_text(text)
    return make_config(settlement={"merchants_file": str(path)})


async def test_unlisted_merchants_are_refused_03_without_a_default_profile(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        app = await start_switch(nursery, config_with_merchants(tmp_path))
        listed = await pos_client(app)
        approved = await listed.request(listed.terminal.sale(1, PAN_ICBC, 10000))
        stranger = await pos_client(app, Terminal(terminal_id="POS00009", merchant_id="NOBODY"))
        refused = await stranger.request(stranger.terminal.sale(1, PAN_ICBC, 10000))
        online = await online_client(app)
        shop = await online.request(purchase("m-1", 500))
        other = await online.request(
            wire.Purchase(id="m-2", merchant_id="OTHER", amount=500, currency="CNY",
                          card=wire.Card(pan=PAN_ICBC, expiry="2812"))
        )  # fmt: skip
        simulator = app.simulators["icbc"]
        sent = [message for message in simulator.received if message.mti == "0200"]
        app.shutdown()
    assert approved.fields[39] == "00"
    assert refused.fields[39] == "03" and 15 in refused.fields  # declines name their date too
    assert isinstance(shop, wire.Result) and shop.approved
    assert isinstance(other, wire.Error) and other.code == "03" and "OTHER" in other.message
    # Only the listed merchants' sales reached the bank, each with its category code.
    assert [(m.fields[42].rstrip(), m.fields[18]) for m in sent] == [  # type: ignore[union-attr]
        ("898310048990001", "5411"),
        ("SHOP01", "5311"),
    ]


async def test_online_results_carry_the_settlement_date_and_pos_answers_field_15(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        app = await start_switch(nursery, config_with_merchants(tmp_path))
        online = await online_client(app)
        approved = await online.request(purchase("d-1", 700))
        declined = await online.request(purchase("d-2", 705))  # the simulator declines *05
        card = wire.Card(pan=PAN_ICBC, expiry="2812")
        balance = await online.request(wire.Balance(id="d-3", merchant_id="SHOP01", card=card))
        pos = await pos_client(app)
        sale = await pos.request(pos.terminal.sale(1, PAN_ICBC, 10000))
        app.shutdown()
    assert isinstance(approved, wire.Result) and isinstance(declined, wire.Result)
    assert approved.settlement_date is not None and declined.code == "05"
    assert declined.settlement_date == approved.settlement_date
    assert isinstance(balance, wire.Result) and balance.settlement_date is None
    # The same business date on both channels: field 15 is its MMDD.
    assert sale.fields[15] == approved.settlement_date[5:7] + approved.settlement_date[8:10]
