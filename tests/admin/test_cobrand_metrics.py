"""The co-brand card in ``/metrics``, scraped over real HTTP from a running switch
(credit.md, "Co-brand card"): cards linked, points given and taken back, and
conversions by result: one approved and later finally not paid by settlement (its
payment left out of the simulated bank's clearing file for its 2 dates: cancelled),
one declined by the bank, one approved and standing."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import msgspec
import trio

from switch.config import ClearingFaults
from switch.store import open_ledger_store
from switch.wire import online as wire
from tests.admin.http import get
from tests.admin.test_http import labels, samples
from tests.net import helpers
from tests.net.helpers import PAN_CITIC_CREDIT, online_client, start_switch
from tests.net.test_app_desk_e2e import App, result
from tests.settle.test_day_e2e import a_day_passes, day_config, operator, settled

APP, C = "app:wallet", "C100000001"
OWN_MERCHANT = "898310099990001"


async def scrape(port: int) -> str:
    answer = await get(port, "/metrics")
    assert answer.status == 200
    return answer.body.decode()


def value(text: str, name: str, **label: str) -> float | None:
    return samples(text, name).get(labels(**label))


async def test_cobrand_links_points_and_conversions_by_result_are_in_the_metrics(
    tmp_path: Path,
) -> None:
    config = day_config(tmp_path)
    credit = msgspec.structs.replace(
        config.credit, cobrand_bins=("625808",), own_merchant_id=OWN_MERCHANT
    )
    config = msgspec.structs.replace(config, credit=credit)
    ppy = config.credit.points_per_yuan
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

        async def sale(request_id: str, amount: int) -> str:
            sold = await client.request(helpers.purchase(request_id, amount, pan=PAN_CITIC_CREDIT))
            assert isinstance(sold, wire.Result) and sold.code == "00", sold
            assert sold.rrn is not None
            return sold.rrn

        async def convert(request_id: str, rrn: str) -> dict[str, Any]:
            return await app.ask("cobrand_convert", request_id, customer_id=C, rrn=rrn,
                                 instalments=3)  # fmt: skip

        first, second, third = (await sale("s-1", 299_900), await sale("s-2", 200_000),
                                await sale("s-3", 150_000))  # fmt: skip
        voided = await sale("s-4", 10_000)
        void = await client.request(wire.Void(id="v-4", merchant_id="SHOP01", original_id="s-4"))
        assert isinstance(void, wire.Result) and void.code == "00"
        refund = await client.request(
            wire.Refund(id="r-2", merchant_id="SHOP01", original_id="s-2", amount=95)
        )
        assert isinstance(refund, wire.Result) and refund.code == "00"
        cancelled = result(await convert("c-1", first))["plan"]["purchase_id"]
        declined = await convert("c-2", second)  # 199,905 fen: the bank declines 05
        assert declined["code"] == "05", declined
        result(await convert("c-3", third))
        assert voided

        # The first conversion's payment is left out of the bank's files: held for its
        # 2 dates, then reversed at the bank, and the conversion cancelled.
        switch.simulators["citic"].clearing_faults = ClearingFaults(drop_rrns=(cancelled,))
        code, closed = await operator(switch, "settle", "cutoff")
        assert code == 0
        await settled(switch, closed["business_date"])
        await settled(switch, await a_day_passes(switch))
        await settled(switch, await a_day_passes(switch))

        earned = (299_900 + 200_000 + 150_000 + 10_000) // 100 * ppy
        back = 10_000 // 100 * ppy + (200_000 // 100 - (200_000 - 95) // 100) * ppy
        with trio.fail_after(10):  # the credit line's figures are read at each scrape
            while True:
                text = await scrape(switch.admin_port)
                if value(text, "payswitch_cobrand_conversions_total", result="cancelled"):
                    break
                await trio.sleep(0.1)
        assert value(text, "payswitch_cobrand_linked_cards") == 1
        assert value(text, "payswitch_cobrand_points_issued_total") == earned
        assert value(text, "payswitch_cobrand_points_reversed_total") == back
        assert {result_: value(text, "payswitch_cobrand_conversions_total", result=result_)
                for result_ in ("approved", "not_approved", "pending", "cancelled")} == {
            "approved": 2, "not_approved": 1, "pending": 0, "cancelled": 1,
        }  # fmt: skip
        nursery.cancel_scope.cancel()
