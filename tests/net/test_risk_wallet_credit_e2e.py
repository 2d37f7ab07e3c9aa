"""risk.md's rules in front of the app's money requests that had none (issue #24), over
real sockets, signed requests, a real journal and the real ledger store: ``wallet_pay``
(kind ``sale``, wallet or credit funding) meets them after the QR's checks and before
the money checks; ``wallet_withdraw`` (kind ``withdrawal``) after its account's check
and before the class limit and the balance; ``credit_convert`` (kind ``conversion``)
after the purchase's checks (25, 12, 13) and before the freeze (62); ``credit_repay``
from a card as the card sale it is. A rule's decline answers its code; an approved
request's reservation stands, any other's is given back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from switch.app import SwitchApp
from switch.core import wallet
from switch.net.clients import OnlineClient, OnlineKey
from switch.wire import online as wire
from tests.conftest import make_config
from tests.net.helpers import PAN_ICBC, pos_client, start_switch
from tests.net.test_app_desk_e2e import ACCOUNT, App, credit, in_store, result, store_of
from tests.net.test_credit_desk_e2e import C, opened
from tests.net.test_wallet_pay_e2e import (
    CUSTOMER,
    QR_MERCHANT,
    QR_NAME,
    WALLET,
    app_client,
    ask,
    balances,
    make_qr,
    open_wallet,
    pay,
    verified,
    wallet_config,
)
from tests.store.engines import journal_rows


def rules_file(tmp_path: Path, text: str) -> dict[str, Any]:
    path = tmp_path / "risk.toml"
    path.write_text(text)
    return {"rules_file": str(path)}


def hits(switch: SwitchApp, rule: str) -> int:
    return switch.risk.hits.get((rule, "enforce", "decline"), 0)


async def stop(switch: SwitchApp) -> None:
    switch.shutdown()
    with trio.fail_after(10):
        await switch.stopped.wait()


PAY_RULES = """
[[rules]]
id = "qr-wallet-cap"
mode = "enforce"
kind = "amount_cap"
funding = ["wallet"]
kinds = ["sale"]
max_fen = 5000
action = "decline"
code = "61"

[[rules]]
id = "qr-credit-cap"
mode = "enforce"
kind = "amount_cap"
funding = ["credit"]
max_fen = 3000
action = "decline"
code = "57"

[[rules]]
id = "customer-day"
mode = "enforce"
kind = "velocity"
key = "customer"
funding = ["wallet"]
kinds = ["sale"]
window = "day"
counts = "approved"
max_count = 2
action = "decline"
code = "65"

[[rules]]
id = "customer-tries"
mode = "shadow"
kind = "velocity"
key = "customer"
window = "1h"
counts = "attempts"
max_count = 0
action = "decline"
code = "59"
"""


async def test_wallet_pay_meets_the_rules_after_the_qr_and_before_the_money(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = wallet_config(tmp_path, risk=rules_file(tmp_path, PAY_RULES))
    app = await start_switch(nursery, config)
    await open_wallet(app, 5_500)
    client = await app_client(app)
    static = await make_qr(app, "S5N8W2R6C4J9E3HL")
    # A QR the merchant never issued: 14, before the rules; it counts nowhere.
    forged = wallet.qr_payload(
        app.config.wallet, merchant_id=QR_MERCHANT, name=QR_NAME, mcc="5411", city=None,
        qr_id="ZZZZZZZZZZZZZZZZ",
    )  # fmt: skip
    assert (await ask(client, pay("r-0", forged, amount=100)))["code"] == "14"
    # Above the rule's cap and above the balance: the rule decides (61, its meaning),
    # not the balance (51): the rules come before the money checks.
    big = await ask(client, pay("r-1", static, amount=6_000))
    assert (big["code"], big["message"]) == ("61", "exceeds amount limit")
    assert "balance_after" not in big
    first = await ask(client, pay("r-2", static, amount=1_000))
    assert first["code"] == "00"
    # Within the rules, above the balance: 51 on the ledger, its reservation given
    # back, so the next is the second approved today, not the third.
    assert (await ask(client, pay("r-3", static, amount=4_900)))["code"] == "51"
    assert (await ask(client, pay("r-4", static, amount=1_000)))["code"] == "00"
    third = await ask(client, pay("r-5", static, amount=100))
    assert (third["code"], third["message"]) == ("65", "exceeds frequency limit")
    # Credit funding meets the credit rules before credit.md's checks (no account: 14).
    on_credit = await ask(client, pay("r-6", static, amount=4_000, funding="credit"))
    assert on_credit["code"] == "57"
    # The merchant voids the first: it leaves the window, and the next one passes.
    shop = await OnlineClient.connect(
        "127.0.0.1", app.online_port, key=OnlineKey.demo_merchant(QR_MERCHANT)
    )
    void = await shop.request(
        wire.Void(id="x-1", merchant_id=QR_MERCHANT, original_rrn=first["rrn"])
    )
    assert void.code == "00"
    assert (await ask(client, pay("r-7", static, amount=100)))["code"] == "00"
    assert await balances(app, WALLET) == (4_400, 4_400)
    await verified(app)
    await stop(app)
    # A new process on the same journal: the customer's window holds what it held.
    app = await start_switch(nursery, config)
    client = await app_client(app)
    assert (await ask(client, pay("r-8", static, amount=100)))["code"] == "65"
    await stop(app)
    journaled = journal_rows(
        config,
        "SELECT amount, state, code, customer_id, funding, risk_version, risk_rule, "
        "risk_shadow FROM txn WHERE kind = 'wallet_pay' ORDER BY created_at",
    )
    assert [
        (r["amount"], r["state"], r["code"], r["customer_id"], r["funding"], r["risk_rule"])
        for r in journaled
    ] == [
        (100, "declined", "14", None, None, None),
        (6_000, "declined", "61", CUSTOMER, "wallet", "qr-wallet-cap"),
        (1_000, "approved", "00", CUSTOMER, "wallet", None),
        (4_900, "declined", "51", CUSTOMER, "wallet", None),
        (1_000, "approved", "00", CUSTOMER, "wallet", None),
        (100, "declined", "65", CUSTOMER, "wallet", "customer-day"),
        (4_000, "declined", "57", CUSTOMER, "credit", "qr-credit-cap"),
        (100, "approved", "00", CUSTOMER, "wallet", None),
        (100, "declined", "65", CUSTOMER, "wallet", "customer-day"),
    ]
    # Every payment that reached the rules carries the set's version and the shadow
    # rule's hit; the QR refused before them, neither.
    assert [r["risk_shadow"] is not None for r in journaled] == [False] + [True] * 8
    version = journaled[1]["risk_version"]
    assert version is not None and len(version) == 12 and journaled[0]["risk_version"] is None


WITHDRAW_RULES = """
[[rules]]
id = "withdraw-cap"
mode = "enforce"
kind = "amount_cap"
kinds = ["withdrawal"]
max_fen = 20000
action = "decline"
code = "59"

[[rules]]
id = "withdraw-day"
mode = "enforce"
kind = "velocity"
key = "customer"
kinds = ["withdrawal"]
window = "day"
counts = "approved"
max_count = 1
action = "decline"
code = "65"

[[rules]]
id = "sales-only"
mode = "enforce"
kind = "amount_cap"
kinds = ["sale"]
max_fen = 1
action = "decline"
code = "57"
"""


async def test_a_withdrawal_meets_the_rules_after_its_account_and_before_the_money(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    switch = await start_switch(
        nursery, make_config(risk=rules_file(tmp_path, WITHDRAW_RULES))
    )
    app = await App.connect(switch)
    result(await app.ask("wallet_open", "o-1", customer_id=CUSTOMER, **{"class": 2}))
    await credit(switch, 10_000)
    result(await app.ask("wallet_bind_account", "n-1", customer_id=CUSTOMER, **ACCOUNT))
    bound = {"customer_id": CUSTOMER, **ACCOUNT}
    # An account not bound: 14 before the rules (the cap would say 59).
    other = {**bound, "account": "6222021000111199999"}
    result(await app.ask("wallet_withdraw", "w-1", amount=30_000, **other), "14")
    assert hits(switch, "withdraw-cap") == 0
    # Above the rule's cap and the balance: the rule's code, with its RRN (kept).
    refused = result(await app.ask("wallet_withdraw", "w-2", amount=30_000, **bound), "59")
    assert refused["message"] == "suspected fraud" and len(refused["rrn"]) == 12
    assert hits(switch, "withdraw-cap") == 1
    # Past the rules, the balance (51): its reservation is given back...
    result(await app.ask("wallet_withdraw", "w-3", amount=15_000, **bound), "51")
    # ...so this is the day's first approved withdrawal; its repeat is not counted.
    done = result(await app.ask("wallet_withdraw", "w-4", amount=5_000, **bound))
    assert result(await app.ask("wallet_withdraw", "w-4", amount=5_000, **bound)) == done
    # The second today: the velocity rule's 65; the sale rule never applies.
    again = result(await app.ask("wallet_withdraw", "w-5", amount=1_000, **bound), "65")
    assert again["message"] == "exceeds frequency limit"
    assert (hits(switch, "withdraw-day"), hits(switch, "sales-only")) == (1, 0)
    assert done["balance_after"] == 5_000
    balance = result(await app.ask("wallet_balance", "b-1", customer_id=CUSTOMER))
    assert balance["balance"] == 5_000


CONVERT_RULES = """
[[rules]]
id = "convert-cap"
mode = "enforce"
kind = "amount_cap"
funding = ["credit"]
kinds = ["conversion"]
max_fen = 100000
action = "decline"
code = "57"

[[rules]]
id = "convert-day"
mode = "enforce"
kind = "velocity"
key = "customer"
kinds = ["conversion"]
window = "day"
counts = "approved"
max_count = 2
action = "decline"
code = "65"
"""


async def test_credit_convert_meets_the_rules_before_the_freeze(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    switch = await start_switch(nursery, make_config(risk=rules_file(tmp_path, CONVERT_RULES)))
    app = await App.connect(switch)
    await opened(switch, app)
    client = await pos_client(switch)
    purchases = []
    for stan, amount in enumerate((200_000, 50_000, 40_000, 30_000), start=81):
        issued = result(await app.ask("paycode_issue", f"p-{stan}", customer_id=C,
                                      funding="credit", verification="A"))  # fmt: skip
        sale = await client.request(client.terminal.code_sale(stan, issued["paycode"], amount))
        assert sale.fields[39] == "00"
        purchases.append(str(sale.fields[37]))
    big, first, second, third = purchases

    async def convert(request_id: str, purchase_id: str) -> dict[str, Any]:
        return await app.ask("credit_convert", request_id, customer_id=C,
                             purchase_id=purchase_id, instalments=3)  # fmt: skip

    # Its principal above the rule's cap: 57, nothing planned; frozen as well, the
    # rule still answers (credit.md: risk.md decides, then a frozen account is 62).
    result(await app.ask("credit_freeze", "f-1", customer_id=C, reason="lost phone"))
    result(await convert("cv-1", big), "57")
    assert hits(switch, "convert-cap") == 1
    # Within the rules, frozen: 62, its reservation given back.
    result(await convert("cv-2", first), "62")
    result(await app.ask("credit_unfreeze", "u-1", customer_id=C))
    result(await convert("cv-3", first))
    result(await convert("cv-4", second))
    # The third today: the velocity rule's 65.
    result(await convert("cv-5", third), "65")
    assert hits(switch, "convert-day") == 1
    plans = result(await app.ask("credit_plans", "pl-1", customer_id=C))["plans"]
    assert sorted(plan["purchase_id"] for plan in plans) == sorted([first, second])


REPAY_RULES = """
[[rules]]
id = "card-cap"
mode = "enforce"
kind = "amount_cap"
funding = ["card"]
kinds = ["sale"]
max_fen = 30000
action = "decline"
code = "61"
"""


async def test_credit_repay_from_a_card_meets_the_rules_as_a_sale(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """risk.md: kind ``sale`` is a ``credit_repay`` by card (the rules of its card
    sale, before its bank); one from the wallet is no sale and meets none."""
    config = wallet_config(
        tmp_path, risk=rules_file(tmp_path, REPAY_RULES),
        credit={"own_merchant_id": "SHOP01", "own_terminal_id": "CREDIT01"},
    )  # fmt: skip
    switch = await start_switch(nursery, config)
    app = await App.connect(switch)
    await opened(switch, app)
    await credit(switch, 100_000, C)
    issued = result(await app.ask("paycode_issue", "p-1", customer_id=C, funding="credit",
                                  verification="A"))  # fmt: skip
    client = await pos_client(switch)
    sale = await client.request(client.terminal.code_sale(1, issued["paycode"], 200_000))
    assert sale.fields[39] == "00"
    bank = switch.simulators["icbc"]
    before = bank.totals().approvals
    card = {"pan": PAN_ICBC, "expiry": "3012"}
    declined = result(await app.ask("credit_repay", "k-1", customer_id=C, amount=40_000,
                                    card=card, **{"from": "card"}), "61")  # fmt: skip
    assert declined["message"] == "exceeds amount limit" and "allocated" not in declined
    assert bank.totals().approvals == before
    assert switch.journal is not None
    record = await switch.journal.transaction_by_rrn(str(declined["rrn"]))
    assert record is not None
    assert (record.kind, record.state, record.code, record.risk_rule) == (
        "sale", "declined", "61", "card-cap",
    )  # fmt: skip
    status = result(await app.ask("credit_status", "s-1", customer_id=C))
    assert status["account"]["payoff_fen"] == 200_000
    # From the wallet: no rule of kind sale applies.
    repaid = result(await app.ask("credit_repay", "k-2", customer_id=C, amount=40_000,
                                  **{"from": "wallet"}))  # fmt: skip
    assert repaid["account"]["payoff_fen"] == 160_000
    assert repaid["allocated"]["prepaid_fen"] == 40_000
    assert await balances(switch, WALLET) == (60_000, 60_000)


CONVERT_ONCE_RULES = """
[[rules]]
id = "convert-once"
mode = "enforce"
kind = "velocity"
key = "customer"
kinds = ["conversion"]
window = "day"
counts = "approved"
max_count = 1
action = "decline"
code = "65"

[[rules]]
id = "convert-tries"
mode = "shadow"
kind = "velocity"
key = "customer"
kinds = ["conversion"]
window = "1h"
counts = "attempts"
max_count = 2
action = "decline"
code = "59"
"""


async def test_conversions_windows_are_kept_in_the_ledger_over_a_restart(
    tmp_path: Path,
) -> None:
    """A ``credit_convert`` has no journal row: its record is written in the ledger's
    database with its step (a refusal raised after the rules, in a step of its own), so
    a new process on the same files counts it (issue #24)."""
    config = make_config(risk=rules_file(tmp_path, CONVERT_ONCE_RULES))
    async with trio.open_nursery() as nursery:
        switch = await start_switch(nursery, config)
        app = await App.connect(switch)
        await opened(switch, app)
        client = await pos_client(switch)
        purchases = []
        for stan in (91, 92, 93):
            issued = result(await app.ask("paycode_issue", f"p-{stan}", customer_id=C,
                                          funding="credit", verification="A"))  # fmt: skip
            sale = await client.request(client.terminal.code_sale(stan, issued["paycode"], 30_000))
            assert sale.fields[39] == "00"
            purchases.append(str(sale.fields[37]))

        async def convert(request_id: str, purchase_id: str, code: str = "00") -> None:
            result(await app.ask("credit_convert", request_id, customer_id=C,
                                 purchase_id=purchase_id, instalments=3), code)  # fmt: skip

        result(await app.ask("credit_freeze", "f-1", customer_id=C, reason="lost phone"))
        await convert("cv-1", purchases[0], "62")  # past the rules: an attempt, no approval
        result(await app.ask("credit_unfreeze", "u-1", customer_id=C))
        await convert("cv-2", purchases[0])
        await stop(switch)
        switch = await start_switch(nursery, config)
        app = await App.connect(switch)
        # The day's one conversion stands in the new process's window: 65; and its
        # attempts are three, the refused one included (the shadow rule's hit).
        await convert("cv-3", purchases[1], "65")
        shadow = switch.risk.hits.get(("convert-tries", "shadow", "decline"), 0)
        # A reload whose rule counts in a new window: rebuilt from the records too.
        (tmp_path / "risk.toml").write_text(
            CONVERT_ONCE_RULES.replace('"convert-once"', '"convert-once-24h"').replace(
                'window = "day"', 'window = "24h"'
            )
        )
        assert (await switch.reload(switch.config)).accepted
        await convert("cv-4", purchases[2], "65")
        events = await in_store(switch, store_of(switch).risk_events, 0.0)
        await stop(switch)
    assert shadow == 1
    assert [(e.online_id, e.kind, e.funding, e.customer_id, e.outcome, e.code, e.risk_rule)
            for e in events] == [
        ("cv-1", "conversion", "credit", C, "declined", "62", None),
        ("cv-2", "conversion", "credit", C, "approved", None, None),
        ("cv-3", "conversion", "credit", C, "declined", "65", "convert-once"),
        ("cv-4", "conversion", "credit", C, "declined", "65", "convert-once-24h"),
    ]  # fmt: skip
    assert events[2].risk_shadow == "convert-tries:decline:59"
