"""The on-us ledger in ``/metrics`` and ``switch status``, scraped over real HTTP from a
running switch on each journal engine: its transfers by state
(``payswitch_ledger_transfers``), per unit and phase every account's debits minus
credits (``payswitch_ledger_imbalance``), 0 until a posted sum is changed behind the
ledger's back, and the wallets' total balance (``payswitch_ledger_wallets_balance_fen``),
read again at most every ``[admin] wallet_totals_interval_s``."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import msgspec
import pytest
import trio

from switch.admin import console
from switch.admin.status import status_decoder
from switch.config import SwitchConfig
from switch.core.ledger import TransferKey, TransferSpec, wallet_account
from switch.net.credit import CreditBilling
from switch.store import open_ledger_store
from switch.store.ledger_store import LedgerStoreBase
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


OTHER = "C100000002"


async def test_the_wallets_total_balance_is_in_the_metrics(
    nursery: trio.Nursery, ledger_config: SwitchConfig
) -> None:
    """Every wallet's balance summed, posted and pending apart, in a real scrape and in
    the status document (read at every scrape here: interval 0)."""
    admin = msgspec.structs.replace(ledger_config.admin, wallet_totals_interval_s=0.0)
    app = await start_switch(nursery, msgspec.structs.replace(ledger_config, admin=admin))
    await fund(app, 50_000)
    await fund(app, 12_000, customer_id=OTHER)
    client = await pos_client(app)
    sale = await client.request(client.terminal.code_sale(1, await issue(app), 2_500))
    assert sale.fields[39] == "00"  # posted: the wallet paid the merchant
    await client.aclose()
    store = store_of(app)
    await in_store(app, store.reserve, _spec("held", 700), time.time())  # a payment held

    text = (await get(app.admin_port, "/metrics")).body.decode()
    assert samples(text, "payswitch_ledger_wallets_balance_fen") == {
        labels(phase="posted"): 50_000 + 12_000 - 2_500, labels(phase="pending"): -700,
    }  # fmt: skip
    # The payment held is let go; a top-up waits for its bank (a pending credit).
    await in_store(app, store.void, TransferKey("test", "held", "pay"), time.time())
    topup = TransferSpec(key=TransferKey("test", "topup-pending", "topup"),
                         debit="bank_clearing:icbc", credit=wallet_account(OTHER),
                         amount=3_000, kind="topup")  # fmt: skip
    await in_store(app, store.reserve, topup, time.time())
    text = (await get(app.admin_port, "/metrics")).body.decode()
    assert samples(text, "payswitch_ledger_wallets_balance_fen") == {
        labels(phase="posted"): 59_500, labels(phase="pending"): 3_000,
    }  # fmt: skip
    status = status_decoder.decode((await get(app.admin_port, "/status")).body)
    assert status.ledger is not None and status.ledger.wallets is not None
    assert (status.ledger.wallets.posted_fen, status.ledger.wallets.pending_fen) == (59_500, 3_000)


async def test_the_wallets_total_is_read_at_most_once_an_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The figures the metrics read: the ledger's sums at each call, the wallets' total
    (every wallet's account read) again only once its interval has passed."""
    config = make_config(journal={"path": str(tmp_path / "journal.sqlite3")})
    store = open_ledger_store(config)
    assert isinstance(store, LedgerStoreBase)
    store.open()
    try:
        billing = CreditBilling(store, config.credit.terms(), tmp_path, time.time,
                                wallet_totals_interval_s=60.0)  # fmt: skip

        def top_up(request_id: str, amount: int) -> None:
            store.transfer(TransferSpec(key=TransferKey("test", request_id, "topup"),
                                        debit="bank_clearing:icbc", credit=WALLET,
                                        amount=amount, kind="topup"), time.time())  # fmt: skip

        top_up("t-1", 10_000)
        first = await billing.ledger()
        assert first.wallets is not None and first.wallets.posted_fen == 10_000
        top_up("t-2", 5_000)
        await trio.sleep(59)
        cached = await billing.ledger()
        assert cached.transfers["posted"] == 2  # the ledger's own figures: read now
        assert cached.wallets == first.wallets  # the wallets': not yet again
        await trio.sleep(1)
        again = await billing.ledger()
        assert again.wallets is not None and again.wallets.posted_fen == 15_000
    finally:
        store.close()
