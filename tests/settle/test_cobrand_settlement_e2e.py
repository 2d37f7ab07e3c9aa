"""The co-brand card's day at settlement, over real sockets and real files (credit.md,
settlement.md): a linked card's sale and its conversion's payment to the card cleared by
the simulated partner bank (the payment as a ``C`` record), the operator's cut-off, the
files matched: the payment matched and paid to no one (no payout row for the credit
line's own merchant, no merchant posting), the sale paid to its merchant as any."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import msgspec
import pytest
import trio

from switch.store import open_ledger_store
from switch.wire import online as wire
from tests.net import helpers
from tests.net.helpers import PAN_CITIC_CREDIT, online_client, start_switch
from tests.net.test_app_desk_e2e import App, result
from tests.settle.test_day_e2e import day_config, on_engine, operator, rows, settled
from tests.store.engines import ENGINES

APP, C = "app:wallet", "C100000001"
OWN_MERCHANT = "898310099990001"


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_conversion_s_payment_is_matched_and_paid_to_no_one(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    config = day_config(tmp_path)
    credit = msgspec.structs.replace(
        config.credit, cobrand_bins=("625808",), own_merchant_id=OWN_MERCHANT
    )
    config = on_engine(msgspec.structs.replace(config, credit=credit), engine, request)
    store = open_ledger_store(config)
    store.open()
    try:
        today = date.today()
        store.open_wallet(C, APP, 2, today.isoformat(), 0.0)
        store.credit_open(C, APP, 2_000_000, statement_day=1, grace_days=9,
                          business_date=today, at=0.0)  # fmt: skip
    finally:
        store.close()
    async with trio.open_nursery() as nursery:
        switch = await start_switch(nursery, config)
        app = await App.connect(switch)
        result(await app.ask("cobrand_link", "l-1", customer_id=C, pan=PAN_CITIC_CREDIT))
        client = await online_client(switch)
        sold = await client.request(helpers.purchase("s-1", 299_900, pan=PAN_CITIC_CREDIT))
        assert isinstance(sold, wire.Result) and sold.code == "00" and sold.rrn is not None
        converted = result(await app.ask("cobrand_convert", "cv-1", customer_id=C,
                                         rrn=sold.rrn, instalments=3))  # fmt: skip
        payment_rrn = converted["plan"]["purchase_id"]

        code, closed = await operator(switch, "settle", "cutoff")
        assert code == 0
        business_date = closed["business_date"]
        status = await settled(switch, business_date)
        assert status["missing"] == []
        stamp = business_date.replace("-", "")
        out = tmp_path / "out"
        clearing = (tmp_path / "clearing" / f"citic-{stamp}.clr").read_text()
        assert any(line[1:5] == "0200" and line[5:11] == "280030" and line[-1] == "C"
                   and payment_rrn in line for line in clearing.splitlines())  # fmt: skip
        payouts = {row["merchant_id"]: row for row in rows(out / f"payouts-{stamp}.csv")}
        assert set(payouts) == {"SHOP01"}  # the own merchant: no row
        assert int(payouts["SHOP01"]["sales_fen"]) == 299_900
        assert rows(out / f"recon-{stamp}.csv") == []  # both matched
        settlement = switch.settlement
        assert settlement is not None
        balances = {b.account: b for b in await settlement.ledger_balances(None)}
        assert not [name for name in balances if OWN_MERCHANT in name]
        ledger = switch._ledger_store
        assert ledger is not None
        assert ledger.credit_status(C).outstanding_principal_fen == 299_900
        nursery.cancel_scope.cancel()
