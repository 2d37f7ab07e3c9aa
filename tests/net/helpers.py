"""Starting a real switch (with real simulated banks) inside a test's nursery."""

from __future__ import annotations

import ssl
from collections.abc import Callable

import trio

from switch.app import Codecs, SwitchApp
from switch.config import SwitchConfig
from switch.net.clients import OnlineClient, PosClient
from switch.terminal import Terminal
from switch.wire import online as wire
from switch.wire.dialect import load_dialect
from switch.wire.iso8583 import Iso8583Codec
from tests.conftest import DIALECTS, luhn_complete, make_config

POS_CODEC = Iso8583Codec(load_dialect(DIALECTS / "cup-pos.toml"))
H2H = Codecs(DIALECTS).get("h2h-ascii")

# A store-and-forward queue that retries within a test's patience.
FAST_SAF = {"poll_interval_s": 0.05, "backoff_min_s": 0.05, "backoff_max_s": 0.2}

PAN_ICBC = "6222021000111122221"  # pos-cup.md's sample card
PAN_ABC = luhn_complete("622848000000000001")
PAN_CMB = luhn_complete("622588000000000001")
PAN_CITIC_CREDIT = luhn_complete("625808000000000001")
PAN_NO_ROUTE = "4111111111111111"


async def start_switch(nursery: trio.Nursery, config: SwitchConfig | None = None) -> SwitchApp:
    app: SwitchApp = await nursery.start(SwitchApp(config or make_config()).run)
    with trio.fail_after(10):
        for connector in app.connectors.values():
            await connector.wait_up()
    return app


async def pos_client(app: SwitchApp, terminal: Terminal | None = None) -> PosClient:
    return await PosClient.connect("127.0.0.1", app.pos_port, POS_CODEC, terminal or Terminal())


async def online_client(app: SwitchApp, *, tls: ssl.SSLContext | None = None) -> OnlineClient:
    return await OnlineClient.connect("127.0.0.1", app.online_port, tls=tls)


async def eventually(predicate: Callable[[], bool], *, within_s: float = 10.0) -> None:
    """Waits until ``predicate()`` holds (for work the switch finishes in the background,
    such as store-and-forward); fails the test after ``within_s``."""
    with trio.fail_after(within_s):
        while not predicate():
            await trio.sleep(0.02)


def purchase(
    request_id: str, amount: int, *, pan: str = PAN_ICBC, cvv2: str | None = None, **extra: object
) -> wire.Purchase:
    """An online purchase of SHOP01 with a card of ``pan``."""
    return wire.Purchase(
        id=request_id,
        merchant_id="SHOP01",
        amount=amount,
        currency="CNY",
        card=wire.Card(pan=pan, expiry="2812", cvv2=cvv2),
        **extra,  # type: ignore[arg-type]
    )
