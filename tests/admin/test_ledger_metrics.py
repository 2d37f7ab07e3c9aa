"""The on-us ledger in ``/metrics`` and ``switch status``, scraped over real HTTP from a
running switch on each journal engine: its transfers by state
(``payswitch_ledger_transfers``) and, per unit and phase, every account's debits minus
credits (``payswitch_ledger_imbalance``), 0 until a posted sum is changed behind the
ledger's back."""

from __future__ import annotations

import sqlite3
import time

import pytest
import trio

from switch.admin import console
from switch.admin.status import status_decoder
from switch.config import SwitchConfig
from switch.core.ledger import TransferKey, TransferSpec
from switch.store import open_ledger_store
from tests.admin.http import get
from tests.admin.test_console import text_of
from tests.admin.test_http import admin_config, labels, samples
from tests.net.helpers import make_config, pos_client, start_switch
from tests.net.test_onus_e2e import WALLET, fund, in_store, issue, store_of

ADMIN = {"enabled": True, "port": 0}


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_config(request: pytest.FixtureRequest) -> SwitchConfig:
    if request.param == "postgresql":
        dsn = request.getfixturevalue("postgres_dsn")
        return make_config(journal={"backend": "postgresql", "dsn": dsn}, admin=ADMIN, banks={})
    return admin_config()


def _spec(request_id: str, amount: int) -> TransferSpec:
    return TransferSpec(key=TransferKey("test", request_id, "pay"), debit=WALLET,
                        credit="merchant:898310048990001", amount=amount, kind="pay")  # fmt: skip


async def test_ledger_transfers_and_imbalance_are_in_the_metrics(
    nursery: trio.Nursery, ledger_config: SwitchConfig
) -> None:
    app = await start_switch(nursery, ledger_config)
    await fund(app, 50_000)  # one posted top-up
    client = await pos_client(app)
    sale = await client.request(client.terminal.code_sale(1, await issue(app), 2_500))
    assert sale.fields[39] == "00"  # posted
    await client.aclose()
    store = store_of(app)
    now = time.time()
    await in_store(app, store.reserve, _spec("held", 700), now)  # stays pending
    await in_store(app, store.reserve, _spec("dropped", 300), now)
    await in_store(app, store.void, TransferKey("test", "dropped", "pay"), now)

    text = (await get(app.admin_port, "/metrics")).body.decode()
    assert samples(text, "payswitch_ledger_transfers") == {
        labels(state="pending"): 1, labels(state="posted"): 2, labels(state="voided"): 1,
    }  # fmt: skip
    imbalance = samples(text, "payswitch_ledger_imbalance")
    assert imbalance[labels(unit="fen", phase="posted")] == 0
    assert imbalance[labels(unit="fen", phase="pending")] == 0
    status = status_decoder.decode((await get(app.admin_port, "/status")).body)
    assert status.ledger is not None and status.ledger.transfers["pending"] == 1
    shown = text_of(console.render(console.frame(None, status)))  # `switch status`'s table
    assert "ledger: 1 pending, 2 posted, 1 voided transfers, balanced" in shown

    # A posted sum changed behind the ledger's back: the gauge leaves 0.
    damage = "UPDATE ledger_account SET credits_posted = credits_posted + 1 WHERE name = %s"
    if app.config.journal.backend == "postgresql":
        import psycopg

        with psycopg.connect(app.config.journal.dsn or "") as connection:
            connection.execute(damage, (WALLET,))
    else:
        held = open_ledger_store(app.config)
        path = held.path  # type: ignore[attr-defined]
        with sqlite3.connect(path) as connection:
            connection.execute(damage.replace("%s", "?"), (WALLET,))
        connection.close()
    text = (await get(app.admin_port, "/metrics")).body.decode()
    assert samples(text, "payswitch_ledger_imbalance")[labels(unit="fen", phase="posted")] == -1
    status = status_decoder.decode((await get(app.admin_port, "/status")).body)
    shown = text_of(console.render(console.frame(None, status)))
    assert "NOT BALANCED (debits - credits: fen posted -1)" in shown
