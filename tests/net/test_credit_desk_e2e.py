"""credit.md's "Online requests" of the ``app:`` principal over real sockets: signed
requests to the running switch, its signed answers checked, the ledger store read
back; on both engines (SQLite: ledger.sqlite3 beside the journal; PostgreSQL: the
journal's database)."""

from __future__ import annotations

import time
from datetime import date
from typing import Any

import msgspec
import trio

from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.core.credit.plan import Terms
from switch.core.ledger import TransferKey
from switch.net.clients import OnlineClient, OnlineKey
from tests.net.helpers import pos_client, start_switch
from tests.net.test_app_desk_e2e import App, credit, engine_config, error, result, store_of
from tests.net.test_credit_funding_e2e import today

__all__ = ["engine_config"]

C = "C100000001"
ACCOUNT_KEYS = [
    "state", "frozen_by", "limit_fen", "available_fen", "outstanding_principal_fen",
    "payoff_fen", "due_fen", "overdue_fen", "overdue_days", "statement_day", "grace_days",
    "statement", "next_due_date", "next_statement_date",
]  # fmt: skip

# credit.md's MessagePack sample: credit_convert of 606411000201 into 3 periods.
CONVERT_REQUEST = bytes.fromhex(
    "85a474797065ae6372656469745f636f6e76657274a26964af636f6e762d3230"
    "3236303330372d31ab637573746f6d65725f6964aa43313030303030303031ab"
    "70757263686173655f6964ac363036343131303030323031ab696e7374616c6d"
    "656e747303"
)


async def in_store(switch: SwitchApp, call: Any, *args: Any, **kwargs: Any) -> Any:
    assert switch._ledger is not None
    return await switch._ledger.call(lambda: call(*args, **kwargs))


async def opened(switch: SwitchApp, app: App, limit_fen: int = 2_000_000) -> dict[str, Any]:
    result(await app.ask("wallet_open", "w-1", customer_id=C, **{"class": 2}))
    answer = result(await app.ask("credit_open", "c-1", customer_id=C, limit_fen=limit_fen))
    return dict(answer["account"])


async def test_open_limit_freeze_status(nursery: trio.Nursery, engine_config: SwitchConfig) -> None:
    switch = await start_switch(nursery, engine_config)
    app = await App.connect(switch)
    # No wallet: 14; a field out of range: error 30 naming it.
    result(await app.ask("credit_open", "c-0", customer_id=C, limit_fen=100), "14")
    error(await app.ask("credit_open", "c-x", customer_id=C, limit_fen=100_000_001), "30",
          "limit_fen")  # fmt: skip
    account = await opened(switch, app)
    assert list(account) == ACCOUNT_KEYS
    first = today(switch).replace(day=1)
    assert account == {
        "state": "open", "frozen_by": [], "limit_fen": 2_000_000, "available_fen": 2_000_000,
        "outstanding_principal_fen": 0, "payoff_fen": 0, "due_fen": 0, "overdue_fen": 0,
        "overdue_days": 0, "statement_day": 1, "grace_days": 9, "statement": None,
        "next_due_date": None,
        "next_statement_date": date(first.year + first.month // 12, first.month % 12 + 1,
                                    1).isoformat(),
    }  # fmt: skip
    # The same id again: the same result; another id: 12.
    again = result(await app.ask("credit_open", "c-1", customer_id=C, limit_fen=2_000_000))
    assert again["account"] == account
    result(await app.ask("credit_open", "c-2", customer_id=C, limit_fen=5), "12")
    limited = result(await app.ask("credit_limit", "l-1", customer_id=C, limit_fen=300_000))
    assert limited["account"]["available_fen"] == 300_000
    frozen = result(await app.ask("credit_freeze", "f-1", customer_id=C, reason="lost phone"))
    assert (frozen["account"]["state"], frozen["account"]["frozen_by"]) == ("frozen", ["app"])
    # A frozen account issues no credit code (62).
    result(await app.ask("paycode_issue", "p-1", customer_id=C, funding="credit",
                         verification="A"), "62")  # fmt: skip
    thawed = result(await app.ask("credit_unfreeze", "f-2", customer_id=C))
    assert thawed["account"]["state"] == "open"
    status = result(await app.ask("credit_status", "s-1", customer_id=C))
    assert status["account"] == thawed["account"]
    # A read's id is not kept: the same id again reads again.
    result(await app.ask("credit_status", "s-1", customer_id=C))
    # A customer whose wallet another app principal opened: error 03, whatever asked.
    store: Any = store_of(switch)
    await in_store(switch, store.open_wallet, "C3", "app:other", 2, "2026-01-01", time.time())
    await in_store(switch, store.credit_open, "C3", "app:other", 100, statement_day=1,
                   grace_days=9, business_date=today(switch), at=time.time())  # fmt: skip
    for type_, fields in (("credit_status", {}), ("credit_limit", {"limit_fen": 5}),
                          ("credit_freeze", {}), ("credit_open", {"limit_fen": 5}),
                          ("credit_plans", {}), ("credit_statement", {"period": "2026-01"}),
                          ("credit_repay", {"amount": 1, "from": "wallet"}),
                          ("credit_convert", {"purchase_id": "600000000001",
                                              "instalments": 3})):  # fmt: skip
        error(await app.ask(type_, f"o-{type_}", customer_id="C3", **fields), "03")
    # A merchant: 03.
    shop = await App.connect(switch, OnlineKey.demo_merchant("SHOP01"))
    error(await shop.ask("credit_status", "s-3", customer_id=C), "03")
    # No account: 14.
    result(await app.ask("wallet_open", "w-2", customer_id="C2", **{"class": 2}))
    result(await app.ask("credit_status", "s-4", customer_id="C2"), "14")


async def test_buy_in_12_repay_early_plans_and_statement(
    nursery: trio.Nursery, engine_config: SwitchConfig
) -> None:
    """A code issued with 12 instalments bought with at a POS, the plan read back, an
    early repayment from the wallet waiving the fees of the periods it removes."""
    switch = await start_switch(nursery, engine_config)
    app = await App.connect(switch)
    await opened(switch, app)
    await credit(switch, 200_000)
    error(await app.ask("paycode_issue", "p-0", customer_id=C, funding="wallet",
                        verification="A", instalments=12), "30", "instalments")  # fmt: skip
    error(await app.ask("paycode_issue", "p-9", customer_id=C, funding="credit",
                        verification="A", instalments=5), "30", "instalments")  # fmt: skip
    issued = result(await app.ask("paycode_issue", "p-1", customer_id=C, funding="credit",
                                  verification="A", instalments=12))  # fmt: skip
    assert issued["funding"] == "credit"
    client = await pos_client(switch)
    sale = await client.request(client.terminal.code_sale(71, issued["paycode"], 600_000))
    assert (sale.fields[39], sale.fields[63]) == ("00", "CRL")
    purchase_id = str(sale.fields[37])
    plans = result(await app.ask("credit_plans", "pl-1", customer_id=C))["plans"]
    assert [(p["purchase_id"], p["fee_fen"], p["apr_bps"], "schedule" in p) for p in plans] == [
        (purchase_id, 3_600, 1303, False),
    ]  # fmt: skip
    plan = result(await app.ask("credit_plans", "pl-2", customer_id=C,
                                purchase_id=purchase_id))["plans"][0]  # fmt: skip
    assert len(plan["schedule"]) == 12 and plan["total_fee_fen"] == 43_200
    result(await app.ask("credit_plans", "pl-3", customer_id=C, purchase_id="600000000000"), "25")
    # Repay early, 150,000 of the plan: periods 10..12 removed, their fees waived.
    repaid = result(await app.ask("credit_repay", "r-1", customer_id=C, amount=150_000,
                                  **{"from": "wallet"}))  # fmt: skip
    assert list(repaid)[:7] == ["type", "id", "code", "approved", "rrn", "settlement_date",
                                "allocated"]  # fmt: skip
    assert list(repaid)[-1] == "message"
    assert repaid["allocated"] == {
        "penalty_fen": 0, "fee_fen": 0, "principal_fen": 0, "prepaid_fen": 150_000,
    }  # fmt: skip
    assert repaid["waived_fee_fen"] == 3 * 3_600
    assert repaid["account"]["payoff_fen"] == 450_000
    assert repaid["settlement_date"] == today(switch).isoformat()
    # Its repeat: the same bytes, nothing moves again.
    assert await app.ask("credit_repay", "r-1", customer_id=C, amount=150_000,
                         **{"from": "wallet"}) == repaid  # fmt: skip
    wallet = result(await app.ask("wallet_balance", "b-1", customer_id=C))
    assert wallet["balance"] == 50_000
    history = result(await app.ask("wallet_history", "h-1", customer_id=C))
    assert history["items"][0]["kind"] == "repay" and history["items"][0]["amount"] == -150_000
    # Above the payoff: 13; short in the wallet: 51; card given with wallet: 30.
    result(await app.ask("credit_repay", "r-2", customer_id=C, amount=450_001,
                         **{"from": "wallet"}), "13")  # fmt: skip
    result(await app.ask("credit_repay", "r-3", customer_id=C, amount=450_000,
                         **{"from": "wallet"}), "51")  # fmt: skip
    error(
        await app.ask(
            "credit_repay",
            "r-4",
            customer_id=C,
            amount=1,
            card={"pan": "6222021000111122221", "expiry": "2812"},
            **{"from": "wallet"},
        ),
        "30",
        "card",
    )
    plan = result(await app.ask("credit_plans", "pl-4", customer_id=C,
                                purchase_id=purchase_id))["plans"][0]  # fmt: skip
    assert [row["period"] for row in plan["schedule"]] == list(range(1, 10))
    assert plan["waived_fee_fen"] == 10_800
    # No statement yet: 25.
    result(await app.ask("credit_statement", "st-1", customer_id=C, period="2026-01"), "25")
    assert await in_store(switch, store_of(switch).verify) == []


async def test_convert_a_purchase_and_read_its_statement(
    nursery: trio.Nursery, engine_config: SwitchConfig
) -> None:
    """A purchase without a plan converted into 3 (credit.md's request sample's shape),
    then the account closed to its first statement and the statement read back."""
    switch = await start_switch(nursery, engine_config)
    app = await App.connect(switch)
    await opened(switch, app)
    issued = result(await app.ask("paycode_issue", "p-1", customer_id=C, funding="credit",
                                  verification="A"))  # fmt: skip
    client = await pos_client(switch)
    sale = await client.request(client.terminal.code_sale(81, issued["paycode"], 299_900))
    assert sale.fields[39] == "00"
    purchase_id = str(sale.fields[37])
    # The sample request's body, with this purchase's id: its keys in the spec's order.
    body = msgspec.msgpack.decode(CONVERT_REQUEST)
    assert list(body) == ["type", "id", "customer_id", "purchase_id", "instalments"]
    body["purchase_id"] = purchase_id
    assert isinstance(app.client, OnlineClient)
    await app.client.send_raw(msgspec.msgpack.encode(body))
    converted = result(await app.answer())
    assert list(converted) == ["type", "id", "code", "approved", "settlement_date", "plan",
                               "message"]  # fmt: skip
    assert converted["settlement_date"] == today(switch).isoformat()
    plan = converted["plan"]
    assert [(r["principal_fen"], r["fee_fen"]) for r in plan["schedule"]] == [
        (99_968, 1_500), (99_966, 1_500), (99_966, 1_500),
    ]  # fmt: skip
    assert (plan["apr_bps"], plan["total_fee_fen"], plan["periods_billed"]) == (898, 4_500, 0)
    # Planned already: 12; not this customer's: 25.
    result(await app.ask("credit_convert", "cv-2", customer_id=C, purchase_id=purchase_id,
                         instalments=6), "12")  # fmt: skip
    result(await app.ask("credit_convert", "cv-3", customer_id=C, purchase_id="600000000001",
                         instalments=6), "25")  # fmt: skip
    # The closes up to the first statement (the switch's cut-off runs them; here the
    # store's close, as the cut-off calls it).
    first = date.fromisoformat(plan["schedule"][0]["statement_date"])
    store: Any = store_of(switch)
    await in_store(switch, store.credit_close, date.fromordinal(first.toordinal() - 1), Terms(),
                   time.time())  # fmt: skip
    period = plan["schedule"][0]["statement_date"][:7]
    statement = result(await app.ask("credit_statement", "st-1", customer_id=C,
                                     period=period))["statement"]  # fmt: skip
    assert list(statement) == ["period", "statement_date", "due_date", "previous_balance_fen",
                               "new_balance_fen", "unpaid_fen", "lines"]  # fmt: skip
    assert (statement["new_balance_fen"], statement["unpaid_fen"]) == (101_468, 101_468)
    assert statement["lines"] == [{
        "kind": "instalment", "date": today(switch).isoformat(), "ref": purchase_id,
        "amount_fen": 101_468, "period": "1/3", "principal_fen": 99_968, "fee_fen": 1_500,
        "merchant_id": client.terminal.merchant_id,
    }]  # fmt: skip
    assert await in_store(switch, store.verify) == []


async def test_credit_metrics_in_a_real_scrape(nursery: trio.Nursery) -> None:
    """The admin's /metrics: outstanding principal, overdue, frozen accounts and the
    penalties accrued, as the store has them after closes past a due date."""
    from tests.admin.http import get
    from tests.admin.test_http import admin_config, samples

    switch = await start_switch(nursery, admin_config())
    store: Any = store_of(switch)
    now = time.time()

    def prepare() -> None:
        for customer in ("C1", "C2"):
            store.open_wallet(customer, "app:wallet", 2, "2026-01-05", now)
            store.credit_open(customer, "app:wallet", 2_000_000, statement_day=1, grace_days=9,
                              business_date=date(2026, 1, 5), at=now)  # fmt: skip
        store.credit_close(date(2026, 1, 11), Terms(), now)
        key = TransferKey("pos:test", "601210000101", "pay")
        store.credit_purchase("C1", key=key, purchase_id="601210000101", merchant_id="SHOP01",
                              amount_fen=600_000, instalments=3, terms=Terms(),
                              at=now)  # fmt: skip
        store.credit_end_purchase("C1", key, "601210000101", True, now)
        # Billed on 02-01, due 02-10: overdue from 02-11, a penalty at each close.
        store.credit_close(date(2026, 2, 13), Terms(), now)
        store.credit_freeze("C2", True, "lost phone", now)

    assert switch._ledger is not None
    await switch._ledger.call(prepare)
    text = (await get(switch.admin_port, "/metrics")).body.decode()
    assert samples(text, "payswitch_credit_accounts")[()] == 2
    assert samples(text, "payswitch_credit_frozen_accounts")[()] == 1
    assert samples(text, "payswitch_credit_outstanding_principal_fen")[()] == 600_000
    # 2,030.00 billed and unpaid (period 1: 2,000.00 + the fee 30.00).
    assert samples(text, "payswitch_credit_overdue_fen")[()] == 203_000
    assert samples(text, "payswitch_credit_overdue_accounts")[()] == 1
    # round_half_up(203,000 x 5 / 10,000) = 102 fen, at the closes of 02-11, 02-12, 02-13.
    assert samples(text, "payswitch_credit_penalties_accrued_fen_total")[()] == 306


async def test_credit_convert_sample_to_the_byte(
    nursery: trio.Nursery, engine_config: SwitchConfig
) -> None:
    """credit.md's MessagePack sample over a real socket: the 101-byte request of
    ``credit_convert`` of 606411000201 (¥2,999.00 bought 2026-03-05) on 2026-03-07,
    answered with the sample's 530 bytes."""
    from tests.core.test_credit import CONVERT_RESULT

    switch = await start_switch(nursery, engine_config)
    store: Any = store_of(switch)
    now = time.time()

    def prepare() -> None:
        store.open_wallet(C, "app:wallet", 2, "2026-03-05", now)
        store.credit_open(C, "app:wallet", 2_000_000, statement_day=1, grace_days=9,
                          business_date=date(2026, 3, 5), at=now)  # fmt: skip
        key = TransferKey("pos:test", "606411000201", "pay")
        store.credit_purchase(C, key=key, purchase_id="606411000201", merchant_id="SHOP01",
                              amount_fen=299_900, instalments=None, terms=Terms(),
                              at=now)  # fmt: skip
        store.credit_end_purchase(C, key, "606411000201", True, now)
        store.credit_close(date(2026, 3, 6), Terms(), now)  # the account's date: 03-07

    assert switch._ledger is not None
    await switch._ledger.call(prepare)
    app = await App.connect(switch)
    assert len(CONVERT_REQUEST) == 101 and len(CONVERT_RESULT) == 530
    await app.client.send_raw(CONVERT_REQUEST)
    with trio.fail_after(10):
        raw = await app.client.receive_raw()
    assert app.client.last_signed
    assert raw == CONVERT_RESULT
    # Its repeat: the same bytes again.
    await app.client.send_raw(CONVERT_REQUEST)
    assert await app.client.receive_raw() == CONVERT_RESULT


async def test_credit_statement_sample_as_the_app_reads_it(
    nursery: trio.Nursery, engine_config: SwitchConfig
) -> None:
    """credit.md's statement sample (customer C100000001, March 2026) walked through the
    store as the switch's steps and closes make it, then read by the app's signed
    ``credit_statement`` and ``credit_status``: the statement map to the fen."""
    from tests.store.test_credit_store import walk_sample

    switch = await start_switch(nursery, engine_config)
    assert switch._ledger is not None
    store = store_of(switch)
    await switch._ledger.call(lambda: walk_sample(store))  # type: ignore[arg-type]
    app = await App.connect(switch)
    statement = result(await app.ask("credit_statement", "st-3", customer_id=C,
                                     period="2026-03"))["statement"]  # fmt: skip
    assert {k: v for k, v in statement.items() if k != "lines"} == {
        "period": "2026-03", "statement_date": "2026-03-01", "due_date": "2026-03-10",
        "previous_balance_fen": 249_000, "new_balance_fen": 323_000, "unpaid_fen": 323_000,
    }  # fmt: skip
    assert statement["lines"] == [
        {"kind": "repayment", "date": "2026-02-08", "ref": "603920000104",
         "amount_fen": -100_000, "prepaid_fen": 0},
        {"kind": "repayment", "date": "2026-02-14", "ref": "604521000105",
         "amount_fen": -149_225, "prepaid_fen": 0},
        {"kind": "penalty", "date": "2026-02-13", "ref": "", "amount_fen": 225, "days": 3},
        {"kind": "instalment", "date": "2026-01-12", "ref": "601210000101",
         "amount_fen": 203_000, "period": "2/3", "principal_fen": 200_000, "fee_fen": 3_000,
         "merchant_id": "898110000012345"},
        {"kind": "purchase", "date": "2026-02-16", "ref": "604719000103",
         "amount_fen": 120_000, "merchant_id": "898310048990001"},
    ]  # fmt: skip
    account = result(await app.ask("credit_status", "s-9", customer_id=C))["account"]
    assert (account["payoff_fen"], account["due_fen"], account["outstanding_principal_fen"]) == (
        523_000, 323_000, 520_000,
    )  # fmt: skip
    assert account["statement"] == {
        "period": "2026-03", "statement_date": "2026-03-01", "due_date": "2026-03-10",
        "new_balance_fen": 323_000, "unpaid_fen": 323_000,
    }  # fmt: skip
