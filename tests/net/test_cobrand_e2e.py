"""The co-brand card through a real switch (loopback, port 0) and its simulated partner
bank, on each journal engine (credit.md, "Co-brand card"): a linked card's online sales
earn points, a refund and a void take theirs back; ``cobrand_convert`` sends the bank a
payment to the card (0200, 3 = 280030, 41/42 the credit line's own) that the simulator
applies (the plan is made, the hold posted), declines (its code answers, the hold is
released) or never answers (68, the payment reversed at the bank, the hold released)."""

from __future__ import annotations

from datetime import date

import pytest
import trio

from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.core.credit.cobrand import SaleView
from switch.core.ledger import TransferKey
from switch.core.model import Origin
from switch.errors import TransactionRefused
from switch.net.cobrand import ConvertResult
from switch.store import open_ledger_store
from switch.wire import online as wire
from tests.net import helpers
from tests.net.helpers import FAST_SAF, PAN_CITIC_CREDIT, eventually, online_client, start_switch
from tests.store.engines import ENGINES, Configure, config_maker

APP = "app:wallet"
C = "C100000001"
OWN_MERCHANT = "898310099990001"
CARD = PAN_CITIC_CREDIT


@pytest.fixture(params=ENGINES)
def make_config(request: pytest.FixtureRequest) -> Configure:
    return config_maker(request)


def configure(make_config: Configure) -> SwitchConfig:
    config = make_config(
        credit={"cobrand_bins": ["625808"], "own_merchant_id": OWN_MERCHANT},
        banks={"citic": {"issuer_timeout_s": 1.0}},
        saf=FAST_SAF,
    )
    store = open_ledger_store(config)
    store.open()
    try:
        today = date.today().isoformat()
        store.open_wallet(C, APP, 2, today, 0.0)
        store.credit_open(C, APP, 2_000_000, statement_day=1, grace_days=9,
                          business_date=date.fromisoformat(today), at=0.0)  # fmt: skip
    finally:
        store.close()
    return config


def purchase(request_id: str, amount: int) -> wire.Purchase:
    return helpers.purchase(request_id, amount, pan=CARD, cvv2="123")


def origin() -> Origin:
    return Origin("online", 0, trio.current_time())


async def convert(app: SwitchApp, request_id: str, rrn: str) -> tuple[str, ConvertResult | None]:
    """The answer's code, and the result when the payment was sent."""
    desk = app.cobrand
    assert desk is not None
    try:
        result = await desk.convert(C, APP, request_id, rrn=rrn, instalments=3, origin=origin())
    except TransactionRefused as refused:
        return refused.response_code, None
    return result.outcome.code, result


def by_rrn(sales: list[SaleView]) -> dict[str, SaleView]:
    return {sale.rrn: sale for sale in sales}


async def test_link_points_and_conversions(nursery: trio.Nursery, make_config: Configure) -> None:
    config = configure(make_config)
    app = await start_switch(nursery, config)
    desk = app.cobrand
    assert desk is not None
    with pytest.raises(TransactionRefused) as refused:
        await desk.link(C, APP, helpers.PAN_ICBC)
    assert refused.value.response_code == "14"  # not co-brand
    client = await online_client(app)
    before = await client.request(purchase("before-link", 10_000))
    assert before.code == "00"
    assert await desk.link(C, APP, CARD) == f"{CARD[:6]}{'*' * 9}{CARD[-4:]}"

    sales: dict[str, str] = {}
    for request_id, amount in (("s-applied", 299_900), ("s-declined", 100_012),
                               ("s-silent", 100_000), ("s-void", 20_000)):  # fmt: skip
        result = await client.request(purchase(request_id, amount))
        assert isinstance(result, wire.Result) and result.code == "00", result
        assert result.rrn is not None
        sales[request_id] = result.rrn
    refund = await client.request(
        wire.Refund(id="r-1", merchant_id="SHOP01", original_id="s-silent", amount=32)
    )
    assert refund.code == "00"
    void = await client.request(wire.Void(id="v-1", merchant_id="SHOP01", original_id="s-void"))
    assert void.code == "00"
    await desk.drain()
    # 2999 + 1000 + (1000 - 1, the refund) + (200 - 200, the void); none before the link.
    assert (await desk.points(C)).points == 2999 + 1000 + 999
    listed = by_rrn(await desk.sales(C, APP))
    assert set(listed) == {sales["s-applied"], sales["s-declined"], sales["s-silent"]}
    assert listed[sales["s-silent"]].refunded_fen == 32

    simulator = app.simulators["citic"]
    balance = simulator.balance(CARD)
    store = app._ledger_store
    assert store is not None

    # Applied: the plan is made, named by the payment's RRN; the hold is posted.
    code, applied = await convert(app, "conv-1", sales["s-applied"])
    assert code == "00" and applied is not None and applied.plan is not None
    plan, payment_rrn = applied.plan, applied.outcome.rrn
    assert plan.purchase_id == payment_rrn and plan.principal_fen == 299_900
    assert simulator.balance(CARD) == balance + 299_900
    sent = [m for m in simulator.received if m.mti == "0200" and m.fields[3] == "280030"]
    assert [(m.fields[2], m.fields[4], m.fields[37], m.fields[41], m.fields[42])
            for m in sent] == [
        (CARD, "000000299900", payment_rrn, "CREDIT01", OWN_MERCHANT)
    ]  # fmt: skip
    held = store.transfer_of(TransferKey(APP, "conv-1", "cobrand_convert"))
    assert held is not None and (held.state, held.spec.credit) == ("posted", "bank_clearing:citic")
    assert by_rrn(await desk.sales(C, APP))[sales["s-applied"]].converted
    code, _ = await convert(app, "conv-1b", sales["s-applied"])
    assert code == "12"  # converted already

    # Declined by the bank's test mode (a payment ending in 12): its code, released.
    code, declined = await convert(app, "conv-2", sales["s-declined"])
    assert code == "12" and declined is not None and declined.plan is None
    released = store.transfer_of(TransferKey(APP, "conv-2", "cobrand_convert"))
    assert released is not None and released.state == "voided"
    assert not by_rrn(await desk.sales(C, APP))[sales["s-declined"]].converted

    # Not answered (99,968 ends in 68): 68, reversed at the bank, released.
    code, silent = await convert(app, "conv-3", sales["s-silent"])
    assert code == "68" and silent is not None
    silent_rrn = silent.outcome.rrn
    await eventually(lambda: any(
        m.mti in ("0400", "0401") and m.fields[37] == silent_rrn and m.fields[3] == "280030"
        for m in simulator.received
    ))  # fmt: skip
    released = store.transfer_of(TransferKey(APP, "conv-3", "cobrand_convert"))
    assert released is not None and released.state == "voided"
    assert simulator.balance(CARD) == balance + 299_900
    status = store.credit_status(C)
    assert status.outstanding_principal_fen == 299_900
    assert status.available_fen == 2_000_000 - 299_900
    assert store.verify() == []
