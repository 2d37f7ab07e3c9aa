"""The co-brand card through a real switch (loopback, port 0) and its simulated partner
bank, on each journal engine (credit.md, "Co-brand card"): a linked card's online sales
earn points, a refund and a void take theirs back; ``cobrand_convert`` sends the bank a
payment to the card (0200, 3 = 280030, 41/42 the credit line's own) that the simulator
applies (the plan is made, the hold posted), declines (its code answers, the hold is
released) or never answers (68, the payment reversed at the bank, the hold released)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
import trio

from switch.config import SwitchConfig
from switch.core.ledger import TransferKey
from switch.core.model import Origin
from switch.core.settlement import ReconLine
from switch.store import open_ledger_store
from switch.terminal import Terminal
from switch.wire import online as wire
from tests.conftest import LogSink
from tests.conftest import make_config as sqlite_config
from tests.net import helpers
from tests.net.helpers import FAST_SAF, PAN_CITIC_CREDIT, eventually, online_client, start_switch
from tests.net.test_app_desk_e2e import App, result
from tests.store.engines import ENGINES, Configure, config_maker

APP = "app:wallet"
C = "C100000001"
OWN_MERCHANT = "898310099990001"
CARD = PAN_CITIC_CREDIT


@pytest.fixture(params=ENGINES)
def make_config(request: pytest.FixtureRequest) -> Configure:
    return config_maker(request)


def configure(make_config: Configure, **sections: Any) -> SwitchConfig:
    sections.setdefault("banks", {"citic": {"issuer_timeout_s": 1.0}})
    config = make_config(
        credit={"cobrand_bins": ["625808"], "own_merchant_id": OWN_MERCHANT},
        saf=FAST_SAF,
        **sections,
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


def hold_key(request_id: str) -> TransferKey:
    """A conversion's hold: the journal's payment of the own merchant, by online id."""
    return TransferKey(f"cobrand:{OWN_MERCHANT}", f"{APP}:{request_id}", "cobrand_convert")


def purchase(request_id: str, amount: int) -> wire.Purchase:
    return helpers.purchase(request_id, amount, pan=CARD, cvv2="123")


async def convert(app: App, request_id: str, rrn: str) -> dict[str, Any]:
    answer = await app.ask("cobrand_convert", request_id, customer_id=C, rrn=rrn, instalments=3)
    assert answer["type"] == "result", answer
    return answer


def by_rrn(sales: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {sale["rrn"]: sale for sale in sales}


async def test_link_points_and_conversions(
    nursery: trio.Nursery, make_config: Configure, log_sink: LogSink
) -> None:
    config = configure(make_config)
    switch = await start_switch(nursery, config)
    app = await App.connect(switch)
    result(await convert(app, "conv-0", "000000000000"), "25")  # no card linked
    result(await app.ask("cobrand_convert", "conv-00", customer_id="C999", rrn="000000000000",
                         instalments=3), "14")  # fmt: skip
    refused = await app.ask("cobrand_link", "l-0", customer_id=C, pan=helpers.PAN_ICBC)
    result(refused, "14")  # not co-brand
    bad = await app.ask("cobrand_link", "l-0b", customer_id=C, pan=CARD[:-1] + "0")
    assert (bad["type"], bad["code"]) == ("error", "30") and "pan" in bad["message"]
    assert result(await app.ask("points_balance", "p-0", customer_id=C))["masked_pan"] is None
    client = await online_client(switch)
    before = await client.request(purchase("before-link", 10_000))
    assert before.code == "00"
    masked = f"{CARD[:6]}{'*' * 9}{CARD[-4:]}"
    linked = result(await app.ask("cobrand_link", "l-1", customer_id=C, pan=CARD))
    assert linked["masked_pan"] == masked
    assert CARD not in repr(linked)

    sales: dict[str, str] = {}
    for request_id, amount in (("s-applied", 299_900), ("s-declined", 100_012),
                               ("s-silent", 100_000), ("s-void", 20_000)):  # fmt: skip
        answer = await client.request(purchase(request_id, amount))
        assert isinstance(answer, wire.Result) and answer.code == "00", answer
        assert answer.rrn is not None
        sales[request_id] = answer.rrn
    refund = await client.request(
        wire.Refund(id="r-1", merchant_id="SHOP01", original_id="s-silent", amount=32)
    )
    assert refund.code == "00"
    void = await client.request(wire.Void(id="v-1", merchant_id="SHOP01", original_id="s-void"))
    assert void.code == "00"
    desk = switch.cobrand
    assert desk is not None
    await desk.drain()
    # 2999 + 1000 + (1000 - 1, the refund) + (200 - 200, the void); none before the link.
    points = result(await app.ask("points_balance", "p-1", customer_id=C))
    assert (points["points"], points["masked_pan"]) == (2999 + 1000 + 999, masked)
    listed = by_rrn(result(await app.ask("cobrand_sales", "cs-1", customer_id=C))["sales"])
    assert set(listed) == {sales["s-applied"], sales["s-declined"], sales["s-silent"]}
    assert listed[sales["s-silent"]]["refunded_fen"] == 32
    assert list(listed[sales["s-silent"]]) == [
        "rrn", "date", "merchant_id", "amount_fen", "refunded_fen", "points", "converted"
    ]  # fmt: skip

    simulator = switch.simulators["citic"]
    balance = simulator.balance(CARD)
    store = switch._ledger_store
    assert store is not None

    # Applied: the plan is made, named by the payment's RRN; the hold is posted.
    applied = await convert(app, "conv-1", sales["s-applied"])
    assert applied["code"] == "00", applied
    assert applied["settlement_date"] == listed[sales["s-applied"]]["date"]  # today
    plan = applied["plan"]
    assert plan["principal_fen"] == 299_900 and plan["instalments"] == 3
    assert [row["principal_fen"] for row in plan["schedule"]] == [99_968, 99_966, 99_966]
    payment_rrn = plan["purchase_id"]
    assert simulator.balance(CARD) == balance + 299_900
    sent = [m for m in simulator.received if m.mti == "0200" and m.fields[3] == "280030"]
    assert [(m.fields[2], m.fields[4], m.fields[37], m.fields[41], m.fields[42])
            for m in sent] == [
        (CARD, "000000299900", payment_rrn, "CREDIT01", OWN_MERCHANT)
    ]  # fmt: skip
    held = store.transfer_of(hold_key("conv-1"))
    assert held is not None and (held.state, held.spec.credit) == ("posted", "bank_clearing:citic")
    listed = by_rrn(result(await app.ask("cobrand_sales", "cs-2", customer_id=C))["sales"])
    assert listed[sales["s-applied"]]["converted"] is True
    assert await convert(app, "conv-1", sales["s-applied"]) == applied  # kept: the same
    assert len([m for m in simulator.received if m.fields.get(3) == "280030"]) == 1
    result(await convert(app, "conv-1b", sales["s-applied"]), "12")  # converted already

    # Declined by the bank's test mode (a payment ending in 12): its code, released.
    declined = result(await convert(app, "conv-2", sales["s-declined"]), "12")
    assert "plan" not in declined
    released = store.transfer_of(hold_key("conv-2"))
    assert released is not None and released.state == "voided"
    listed = by_rrn(result(await app.ask("cobrand_sales", "cs-3", customer_id=C))["sales"])
    assert listed[sales["s-declined"]]["converted"] is False

    # Not answered (99,968 ends in 68): 68, reversed at the bank, released.
    result(await convert(app, "conv-3", sales["s-silent"]), "68")
    silent = [m for m in simulator.received if m.mti == "0200" and m.fields[4] == "000000099968"]
    assert len(silent) == 1 and silent[0].fields[3] == "280030"
    silent_rrn = silent[0].fields[37]
    await eventually(lambda: any(
        m.mti in ("0400", "0401") and m.fields[37] == silent_rrn and m.fields[3] == "280030"
        for m in simulator.received
    ))  # fmt: skip
    released = store.transfer_of(hold_key("conv-3"))
    assert released is not None and released.state == "voided"
    assert simulator.balance(CARD) == balance + 299_900
    status = store.credit_status(C)
    assert status.outstanding_principal_fen == 299_900
    assert status.available_fen == 2_000_000 - 299_900
    assert store.verify() == []

    payments = [e for e in log_sink.events("txn") if e.get("kind") == "card_payment"]
    assert [e["code"] for e in payments] == ["00", "12", "68"]
    assert {e["pan"] for e in payments} == {masked}
    assert CARD not in log_sink.text()  # the card number never reaches a log

    # Settlement gives up on the applied payment (switch_only, its reversal queued) and
    # on the declined one's sale: the conversion is cancelled, the sale's points back.
    def gave_up(rrn: str, amount: int) -> ReconLine:
        return ReconLine(
            business_date="2026-12-08", category="switch_only", bank="citic", rrn=rrn,
            terminal_id="CREDIT01", merchant_id=OWN_MERCHANT, masked_pan=masked,
            switch_fen=amount, bank_fen=None, action="reversal_queued",
        )  # fmt: skip

    lines = [gave_up(payment_rrn, 299_900), gave_up(sales["s-declined"], 100_012)]
    await desk.settled("2026-12-08", lines)
    await desk.settled("2026-12-08", lines)  # settled again: nothing more
    status = store.credit_status(C)
    assert (status.outstanding_principal_fen, status.available_fen) == (0, 2_000_000)
    listed = by_rrn(result(await app.ask("cobrand_sales", "cs-4", customer_id=C))["sales"])
    assert listed[sales["s-applied"]]["converted"] is False  # may be converted again
    assert sales["s-declined"] not in listed  # not standing
    points = result(await app.ask("points_balance", "p-2", customer_id=C))
    assert points["points"] == 2999 + 999
    assert store.verify() == []


async def test_pos_sales_earn_points_and_a_terminal_reversal_takes_them_back(
    nursery: trio.Nursery, make_config: Configure
) -> None:
    switch = await start_switch(nursery, configure(make_config))
    app = await App.connect(switch)
    result(await app.ask("cobrand_link", "l-1", customer_id=C, pan=CARD))
    client = await helpers.pos_client(switch)
    kept = client.terminal.sale(21, CARD, 12_345)
    assert (await client.request(kept)).fields[39] == "00"
    reversed_sale = client.terminal.sale(22, CARD, 50_000)
    assert (await client.request(reversed_sale)).fields[39] == "00"
    # A sale to the credit line's own merchant (a repayment by card) earns none.
    own = await helpers.pos_client(switch, Terminal(terminal_id="POS00009",
                                                    merchant_id=OWN_MERCHANT))  # fmt: skip
    assert (await own.request(own.terminal.sale(23, CARD, 70_000))).fields[39] == "00"
    desk = switch.cobrand
    assert desk is not None
    await desk.drain()
    assert result(await app.ask("points_balance", "p-1", customer_id=C))["points"] == 123 + 500
    reversal = await client.request(client.terminal.reversal(reversed_sale))
    assert reversal.fields[39] == "00"
    await desk.drain()
    assert result(await app.ask("points_balance", "p-2", customer_id=C))["points"] == 123
    sales = result(await app.ask("cobrand_sales", "cs-1", customer_id=C))["sales"]
    assert [sale["amount_fen"] for sale in sales] == [12_345]


async def test_reversing_a_void_or_a_refund_gives_back_the_points_it_took(
    nursery: trio.Nursery, make_config: Configure
) -> None:
    """A terminal's reversal (0400) of a void puts the sale back, so its points come
    back with it; one of a refund gives back what the refund took and its refunded
    amount. The reversal again (the terminal repeats it) gives nothing more."""
    switch = await start_switch(nursery, configure(make_config))
    app = await App.connect(switch)
    result(await app.ask("cobrand_link", "l-1", customer_id=C, pan=CARD))
    client = await helpers.pos_client(switch)
    desk = switch.cobrand
    assert desk is not None

    async def points() -> int:
        await desk.drain()
        answer = result(await app.ask("points_balance", f"p-{trio.current_time()}",
                                      customer_id=C))  # fmt: skip
        return int(answer["points"])

    async def listed() -> dict[str, dict[str, Any]]:
        await desk.drain()
        return by_rrn(result(await app.ask("cobrand_sales", f"cs-{trio.current_time()}",
                                           customer_id=C))["sales"])  # fmt: skip

    voided_sale = await client.request(client.terminal.sale(31, CARD, 50_000))
    assert voided_sale.fields[39] == "00"
    voided_rrn = str(voided_sale.fields[37])
    void = client.terminal.void(32, CARD, 50_000, voided_rrn, 31)
    assert (await client.request(void)).fields[39] == "00"
    assert await points() == 0
    assert voided_rrn not in await listed()
    for _ in range(2):  # the terminal's repeat: answered 00 again, nothing more moves
        assert (await client.request(client.terminal.reversal(void))).fields[39] == "00"
        assert await points() == 500
    assert (await listed())[voided_rrn]["points"] == 500

    refunded_sale = await client.request(client.terminal.sale(33, CARD, 30_050))
    assert refunded_sale.fields[39] == "00"
    refunded_rrn = str(refunded_sale.fields[37])
    refund = client.terminal.refund(34, CARD, 10_000, refunded_rrn, 33)
    assert (await client.request(refund)).fields[39] == "00"
    assert await points() == 500 + 200  # floor(200.50) kept
    assert (await listed())[refunded_rrn]["refunded_fen"] == 10_000
    for _ in range(2):
        assert (await client.request(client.terminal.reversal(refund))).fields[39] == "00"
        assert await points() == 500 + 300
    sale = (await listed())[refunded_rrn]
    assert (sale["refunded_fen"], sale["points"]) == (0, 300)
    store = switch._ledger_store
    assert store is not None and store.verify() == []


async def test_a_conversion_a_crash_left_unended_is_ended_at_start_up(
    nursery: trio.Nursery, make_config: Configure
) -> None:
    """The payment approved at the bank and journaled, then the switch stops before the
    hold's end: the next start posts the hold and makes the plan (named by the
    payment's RRN), as the journal's answer says."""
    config = configure(make_config)
    async with trio.open_nursery() as first:
        switch = await start_switch(first, config)
        app = await App.connect(switch)
        result(await app.ask("cobrand_link", "l-1", customer_id=C, pan=CARD))
        client = await online_client(switch)
        sold = await client.request(purchase("s-1", 299_900))
        assert isinstance(sold, wire.Result) and sold.rrn is not None
        desk = switch.cobrand
        assert desk is not None
        await desk.drain()
        origin = Origin("online", 0, trio.current_time())
        paid = await desk.pay(C, APP, "conv-1", rrn=sold.rrn, instalments=3, origin=origin)
        assert paid.approved and paid.outcome.rrn is not None  # and no end: a crash
        first.cancel_scope.cancel()
    switch = await start_switch(nursery, config)
    store = switch._ledger_store
    assert store is not None
    held = store.transfer_of(hold_key("conv-1"))
    assert held is not None and held.state == "posted"
    plans = store.credit_status(C)
    assert plans.outstanding_principal_fen == 299_900
    book = store.credit_account(C).book  # the plan is the payment's RRN's at once
    assert [p.purchase_id for p in book.purchases] == [paid.outcome.rrn]
    app = await App.connect(switch)
    listed = by_rrn(result(await app.ask("cobrand_sales", "cs-1", customer_id=C))["sales"])
    assert listed[sold.rrn]["converted"] is True
    # The app's repeat of its request is answered from the journal's answer: 00 and the
    # plan, and the bank saw one payment.
    again = result(await convert(app, "conv-1", sold.rrn))
    assert again["plan"]["purchase_id"] == paid.outcome.rrn
    assert store.verify() == []


async def test_a_stood_in_sale_earns_its_points_once_its_advice_is_accepted(
    nursery: trio.Nursery,
) -> None:
    """credit.md: a stood-in sale earns its points once its advice is accepted. citic is
    down (its simulator not started): the sale is stood in and earns nothing; citic
    back, the advice is accepted and the points come."""
    from tests.net.test_stand_in_e2e import (
        MERCHANTS,
        STAND_IN,
        citic_back,
        free_port,
        start_without_citic,
    )

    port = await free_port()
    config = configure(
        sqlite_config,
        banks={"citic": {"simulate": False, "port": port, "links": 1, "stand_in": STAND_IN}},
        settlement={"merchants_file": MERCHANTS},
    )
    switch = await start_without_citic(nursery, config)
    app = await App.connect(switch)
    result(await app.ask("cobrand_link", "l-1", customer_id=C, pan=CARD))
    client = await helpers.pos_client(switch)
    stood = await client.request(client.terminal.sale(1, CARD, 8_800))
    assert stood.fields[39] == "00" and str(stood.fields[38]).startswith("S")
    desk = switch.cobrand
    assert desk is not None
    await desk.drain()
    assert result(await app.ask("points_balance", "p-1", customer_id=C))["points"] == 0
    await citic_back(nursery, config)

    async def points() -> int:
        await desk.drain()
        answer = result(await app.ask("points_balance", f"p-{trio.current_time()}",
                                      customer_id=C))  # fmt: skip
        return int(answer["points"])

    with trio.fail_after(20):
        while await points() != 88:
            await trio.sleep(0.1)


CONVERSION_CAP = """[[rules]]
id = "conversion-cap"
mode = "enforce"
kind = "amount_cap"
kinds = ["conversion"]
funding = ["cobrand"]
max_fen = 200000
action = "decline"
code = "61"
"""


async def test_risk_rules_decide_a_conversion_and_its_hold_is_released(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """risk.md: kind ``conversion`` is cobrand_convert; a rule that declines it answers
    its code, nothing goes to the bank, and the hold is released. A sale of the same
    amount is not a conversion: the rule leaves it alone."""
    rules = tmp_path / "rules.toml"
    rules.write_text(CONVERSION_CAP)
    config = configure(sqlite_config, risk={"rules_file": str(rules)})
    switch = await start_switch(nursery, config)
    app = await App.connect(switch)
    result(await app.ask("cobrand_link", "l-1", customer_id=C, pan=CARD))
    client = await online_client(switch)
    sold = await client.request(purchase("s-1", 299_900))  # a sale: out of the rule's scope
    assert isinstance(sold, wire.Result) and sold.code == "00" and sold.rrn is not None
    desk = switch.cobrand
    assert desk is not None
    await desk.drain()
    result(await convert(app, "conv-1", sold.rrn), "61")
    simulator = switch.simulators["citic"]
    assert not [m for m in simulator.received if m.fields.get(3) == "280030"]
    store = switch._ledger_store
    assert store is not None
    released = store.transfer_of(hold_key("conv-1"))
    assert released is not None and released.state == "voided"
    assert store.credit_status(C).available_fen == 2_000_000
    listed = by_rrn(result(await app.ask("cobrand_sales", "cs-1", customer_id=C))["sales"])
    assert listed[sold.rrn]["converted"] is False
