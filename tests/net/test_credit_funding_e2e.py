"""Credit as a funding source (credit.md, "Purchases and plans", "Ledger"): payment codes
bound to the credit line paid at the POS (0200, 22 = 032) and by a merchant's online
``purchase`` with ``paycode``, their voids, refunds and reversals giving back to the line,
through the real listeners onto the real ledger store, on both journal engines."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.core import ledger, paycode
from switch.core.credit.plan import statement_after
from switch.core.ledger import TransferKey
from switch.core.wallet import BadField
from switch.net.clients import OnlineClient, OnlineKey
from switch.store.credit_store import CreditStopped, NoCreditAccount
from switch.terminal import Terminal
from switch.wire import online as wire
from tests.conftest import make_config
from tests.net.helpers import PAN_ICBC, online_client, pos_client, start_switch
from tests.net.test_onus_e2e import balance, fund, in_store, store_of
from tests.net.test_wallet_pay_e2e import QR_MERCHANT, app_client, ask, make_qr, pay, wallet_config

C = "C100000001"
MERCHANT = Terminal().merchant_id
RECEIVABLE = f"credit_receivable:{C}"
WALLET = ledger.wallet_account(C)


@pytest.fixture(params=["sqlite", "postgresql"])
def credit_config(request: pytest.FixtureRequest) -> SwitchConfig:
    if request.param == "postgresql":
        dsn = request.getfixturevalue("postgres_dsn")
        return make_config(journal={"backend": "postgresql", "dsn": dsn})
    return make_config()


def today(app: SwitchApp) -> date:
    stamp = app.clock.stamp(app.config.switch.utc_offset_h)
    return date.fromisoformat(app.switchboard.business_date(stamp))


async def open_credit(app: SwitchApp, limit_fen: int, wallet_fen: int = 0) -> None:
    await fund(app, wallet_fen or 1)
    store = store_of(app)
    await in_store(app, store.credit_open, C, "app:wallet", limit_fen, statement_day=1,
                   grace_days=9, business_date=today(app), at=time.time())  # fmt: skip


async def credit_code(app: SwitchApp, instalments: int | None = None) -> str:
    store = store_of(app)
    settings = app.config.wallet.paycodes()
    code = await in_store(
        app, store.issue_paycode, C, "app:wallet", "credit", "A", time.time(), settings,
        lambda: paycode.draw(settings.prefix), instalments=instalments,
    )  # fmt: skip
    assert code.funding == "credit" and code.instalments == instalments
    return str(code.code)


async def status(app: SwitchApp) -> object:
    return await in_store(app, store_of(app).credit_status, C)


async def verified(app: SwitchApp) -> None:
    assert await in_store(app, store_of(app).verify) == []
    assert await in_store(app, store_of(app).pending_transfers) == []


async def test_pos_credit_code_in_12_instalments_then_void(
    nursery: trio.Nursery, credit_config: SwitchConfig
) -> None:
    app = await start_switch(nursery, credit_config)
    await open_credit(app, 2_000_000)
    client = await pos_client(app)
    terminal = client.terminal
    code = await credit_code(app, 12)
    sale = await client.request(terminal.code_sale(41, code, 600_000))
    assert (sale.mti, sale.fields[39], sale.fields[63]) == ("0210", "00", "CRL")
    rrn = str(sale.fields[37])
    # Posted: credit_receivable:<c> -> merchant:<m>; the line used, the plan made.
    assert await balance(app, RECEIVABLE) == (-600_000, 0)
    assert await balance(app, ledger.merchant_account(MERCHANT)) == (600_000, 0)
    account = await status(app)
    assert (account.available_fen, account.outstanding_principal_fen) == (1_400_000, 600_000)
    plan = await in_store(app, store_of(app).credit_plan, C, rrn)
    assert (plan.principal_fen, plan.instalments, plan.fee_bps, plan.fee_fen) == (
        600_000, 12, 60, 3_600,
    )  # fmt: skip
    assert (plan.total_fee_fen, plan.apr_bps, plan.periods_billed) == (43_200, 1303, 0)
    first = statement_after(today(app), 1)
    assert [(row.period, row.statement_date, row.principal_fen) for row in plan.schedule][:2] == [
        (1, first, 50_000), (2, statement_after(today(app), 1, 2), 50_000),
    ]  # fmt: skip
    # The void gives it all back to the line: never billed, principal freed.
    void = await client.request(terminal.code_void(42, code, 600_000, rrn, 41))
    assert (void.fields[39], void.fields[63]) == ("00", "CRL")
    assert await balance(app, RECEIVABLE) == (0, 0)
    assert await balance(app, ledger.merchant_account(MERCHANT)) == (0, 0)
    account = await status(app)
    assert (account.available_fen, account.outstanding_principal_fen, account.payoff_fen) == (
        2_000_000, 0, 0,
    )  # fmt: skip
    book = (await in_store(app, store_of(app).credit_account, C)).book
    assert [(p.purchase_id, p.standing) for p in book.purchases] == [(rrn, False)]
    assert book.backs == ()
    await verified(app)


async def test_refunds_reduce_the_plan_then_go_to_the_wallet(
    nursery: trio.Nursery, credit_config: SwitchConfig
) -> None:
    app = await start_switch(nursery, credit_config)
    await open_credit(app, 1_000_000, wallet_fen=50_000)
    client = await pos_client(app)
    terminal = client.terminal
    code = await credit_code(app, 3)
    sale = await client.request(terminal.code_sale(51, code, 299_900))
    assert sale.fields[39] == "00"
    rrn = str(sale.fields[37])
    # A refund of 100,000: from the last period backwards (period 3 removed with its
    # fee, period 2 reduced in part keeping it).
    refund = await client.request(terminal.code_refund(52, code, 100_000, rrn, 51))
    assert (refund.mti, refund.fields[39], refund.fields[63]) == ("0230", "00", "CRL")
    plan = await in_store(app, store_of(app).credit_plan, C, rrn)
    assert [(r.period, r.principal_fen, r.fee_fen) for r in plan.schedule] == [
        (1, 99_968, 1_500), (2, 99_932, 1_500),
    ]  # fmt: skip
    assert (plan.waived_fee_fen, plan.unbilled_principal_fen) == (1_500, 199_900)
    assert await balance(app, RECEIVABLE) == (-199_900, 0)
    # 50,000 prepaid from the wallet, then the rest of the purchase refunded: its
    # unbilled principal, then what had been repaid goes to the wallet.
    repaid = await in_store(
        app, store_of(app).credit_repay_from_wallet, C, key=TransferKey("test", "r1", "repay"),
        rrn="600000000001", amount_fen=50_000, purchase_id=None, at=time.time(),
    )  # fmt: skip
    assert repaid.allocation.prepaid_fen == 50_000
    assert await balance(app, WALLET) == (0, 0)
    rest = await client.request(terminal.code_refund(53, code, 199_900, rrn, 51))
    assert rest.fields[39] == "00"
    assert await balance(app, RECEIVABLE) == (0, 0)
    assert await balance(app, WALLET) == (50_000, 0)
    assert await balance(app, ledger.merchant_account(MERCHANT)) == (0, 0)
    account = await status(app)
    assert (account.available_fen, account.payoff_fen) == (1_000_000, 0)
    await verified(app)


async def test_reversal_and_the_credit_checks(
    nursery: trio.Nursery, credit_config: SwitchConfig
) -> None:
    app = await start_switch(nursery, credit_config)
    await open_credit(app, 100_000)
    client = await pos_client(app)
    terminal = client.terminal
    store = store_of(app)
    # A terminal's reversal gives the line back.
    code = await credit_code(app)
    sale = terminal.code_sale(61, code, 80_000)
    assert (await client.request(sale)).fields[39] == "00"
    assert (await status(app)).available_fen == 20_000
    reversal = await client.request(terminal.reversal(sale))
    assert (reversal.mti, reversal.fields[39]) == ("0410", "00")
    assert (await status(app)).available_fen == 100_000
    assert await balance(app, RECEIVABLE) == (0, 0)
    # Above available: 51; a plan under min_plan_fen: 13; the code used either way.
    above = await client.request(terminal.code_sale(62, await credit_code(app), 100_001))
    assert (above.fields[39], above.fields[63]) == ("51", "CRL")
    small = await client.request(terminal.code_sale(63, await credit_code(app, 6), 9_999))
    assert small.fields[39] == "13"
    # Frozen: 62 at the POS for a code issued before, and no credit code issued (62).
    frozen_code = await credit_code(app)
    await in_store(app, store.credit_freeze, C, True, "lost phone", time.time())
    frozen = await client.request(terminal.code_sale(64, frozen_code, 100))
    assert frozen.fields[39] == "62"
    with pytest.raises(CreditStopped) as refused:
        await credit_code(app)
    assert refused.value.response_code == "62"
    # instalments with funding wallet: 30; a credit code without an account: 14.
    settings = app.config.wallet.paycodes()
    with pytest.raises(BadField):
        await in_store(app, store.issue_paycode, C, "app:wallet", "wallet", "B", time.time(),
                       settings, lambda: paycode.draw(settings.prefix), instalments=3)  # fmt: skip
    await fund(app, 1, customer_id="C2")
    with pytest.raises(NoCreditAccount):
        await in_store(app, store.issue_paycode, "C2", "app:wallet", "credit", "B", time.time(),
                       settings, lambda: paycode.draw(settings.prefix))  # fmt: skip
    assert await balance(app, RECEIVABLE) == (0, 0)
    await verified(app)


async def test_online_purchase_by_credit_code_carries_the_plan(
    nursery: trio.Nursery, credit_config: SwitchConfig
) -> None:
    app = await start_switch(nursery, credit_config)
    await open_credit(app, 1_000_000)
    client = await online_client(app)
    code = await credit_code(app, 6)
    buy = wire.Purchase(id="cr-1", merchant_id="SHOP01", amount=299_900, currency="CNY",
                        paycode=code)  # fmt: skip
    result = await client.request(buy)
    assert isinstance(result, wire.Result)
    assert (result.code, result.funding) == ("00", "credit")
    plan = result.plan
    assert plan is not None
    assert list(plan) == [
        "purchase_id", "principal_fen", "instalments", "fee_bps", "fee_fen", "total_fee_fen",
        "waived_fee_fen", "apr_bps", "periods_billed", "unbilled_principal_fen", "schedule",
    ]  # fmt: skip
    # credit.md's worked plan: ¥2,999.00 in 6 at 50 bps.
    assert (plan["purchase_id"], plan["principal_fen"], plan["fee_fen"], plan["apr_bps"]) == (
        result.rrn, 299_900, 1_500, 1022,
    )  # fmt: skip
    assert [(r["principal_fen"], r["fee_fen"]) for r in plan["schedule"]] == [
        (49_985, 1_500),
        *[(49_983, 1_500)] * 5,
    ]
    assert plan["schedule"][0]["statement_date"] == statement_after(today(app), 1).isoformat()
    # The repeat: the same bytes, nothing moves again.
    assert await client.request(buy) == result
    assert await balance(app, RECEIVABLE) == (-299_900, 0)
    refund = await client.request(wire.Refund(id="cr-2", merchant_id="SHOP01",
                                              original_id="cr-1", amount=99_900))  # fmt: skip
    assert isinstance(refund, wire.Result)
    assert (refund.code, refund.funding, refund.plan) == ("00", "credit", None)
    assert await balance(app, RECEIVABLE) == (-200_000, 0)
    # Without instalments: no plan.
    second = await client.request(wire.Purchase(
        id="cr-3", merchant_id="SHOP01", amount=5_000, currency="CNY",
        paycode=await credit_code(app)))  # fmt: skip
    assert isinstance(second, wire.Result)
    assert (second.code, second.funding, second.plan) == ("00", "credit", None)
    void = await client.request(wire.Void(id="cr-4", merchant_id="SHOP01", original_id="cr-3"))
    assert isinstance(void, wire.Result) and (void.code, void.funding) == ("00", "credit")
    assert (await status(app)).available_fen == 800_000
    await verified(app)


async def test_wallet_pay_on_credit_in_instalments_then_its_refund(
    nursery: trio.Nursery, tmp_path: Path, credit_config: SwitchConfig
) -> None:
    """wallet.md's ``wallet_pay`` with ``funding`` = ``credit`` and ``instalments``: the
    credit line pays the merchant's QR, the result carries the plan; the merchant's
    refund gives back to the line; a plan on the wallet, or of 5, is ``error`` 30."""
    config = wallet_config(tmp_path, journal=msgspec.structs.asdict(credit_config.journal))
    app = await start_switch(nursery, config)
    await open_credit(app, 1_000_000)
    qr = await make_qr(app, "K7Q2M9X4D8P3A6TB", amount=600_000, online_id="qr-1")
    client = await app_client(app)
    wrong = await ask(client, pay("pw-0", qr, instalments=12))
    assert (wrong["type"], wrong["code"]) == ("error", "30") and "instalments" in wrong["message"]
    five = await ask(client, pay("pw-1", qr, funding="credit", instalments=5))
    assert (five["type"], five["code"]) == ("error", "30")
    answer = await ask(client, pay("pw-2", qr, funding="credit", verification="A",
                                   instalments=12))  # fmt: skip
    assert list(answer) == [
        "type", "id", "code", "approved", "rrn", "auth_code", "settlement_date", "amount",
        "merchant_id", "merchant_name", "qr_id", "funding", "plan", "message",
    ]  # fmt: skip
    assert (answer["code"], answer["funding"]) == ("00", "credit")
    plan = answer["plan"]
    assert (plan["purchase_id"], plan["instalments"], plan["fee_fen"], plan["apr_bps"]) == (
        answer["rrn"], 12, 3_600, 1303,
    )  # fmt: skip
    assert await balance(app, RECEIVABLE) == (-600_000, 0)
    assert (await status(app)).available_fen == 400_000
    # Above available: 51, the QR open again afterwards.
    qr2 = await make_qr(app, "S5N8W2R6C4J9E3HL", amount=400_001, online_id="qr-2")
    above = await ask(client, pay("pw-3", qr2, funding="credit", verification="A"))
    assert (above["code"], above["funding"]) == ("51", "credit")
    # The merchant refunds 100,000 of it by RRN: the plan loses its last two periods.
    shop = await OnlineClient.connect("127.0.0.1", app.online_port,
                                      key=OnlineKey.demo_merchant(QR_MERCHANT))  # fmt: skip
    back = wire.Refund(id="rf-1", merchant_id=QR_MERCHANT, original_rrn=answer["rrn"],
                       amount=100_000)  # fmt: skip
    refund = await shop.request(back)
    assert isinstance(refund, wire.Result)
    assert (refund.code, refund.funding) == ("00", "credit")
    plan_now = await in_store(app, store_of(app).credit_plan, C, answer["rrn"])
    assert [row.period for row in plan_now.schedule] == list(range(1, 11))
    assert await balance(app, RECEIVABLE) == (-500_000, 0)
    await verified(app)


async def test_credit_repay_by_debit_card_is_a_card_sale(
    nursery: trio.Nursery, tmp_path: Path, credit_config: SwitchConfig
) -> None:
    """credit.md's ``credit_repay`` ``from`` ``card``: a debit card by its route (92, 57),
    then a sale to the card's bank (41 ``own_terminal_id``, 42 ``own_merchant_id``)
    whose approval repays (``bank_clearing:<bank>`` → ``credit_receivable:<c>``); a
    decline answers the bank's code, no answer 68 with the sale reversed; nothing is
    repaid for either."""
    from tests.net.helpers import FAST_SAF, PAN_CMB, PAN_ICBC, PAN_NO_ROUTE, eventually
    from tests.net.test_app_desk_e2e import App, result
    from tests.net.test_wallet_pay_e2e import PAN_CREDIT

    config = wallet_config(
        tmp_path, journal=msgspec.structs.asdict(credit_config.journal),
        credit={"own_merchant_id": "SHOP01", "own_terminal_id": "CREDIT01"},
        banks={"icbc": {"issuer_timeout_s": 0.3, "circuit_timeouts": 5}}, saf=FAST_SAF,
    )  # fmt: skip
    app = await start_switch(nursery, config)
    await open_credit(app, 1_000_000)
    client = await pos_client(app)
    sale = await client.request(client.terminal.code_sale(31, await credit_code(app), 200_000))
    assert sale.fields[39] == "00"
    bank = app.simulators["icbc"]
    before = bank.totals().approvals
    clearing, _ = await balance(app, "bank_clearing:icbc")  # the wallet's funding
    desk = await App.connect(app)

    def card(pan: str) -> dict[str, str]:
        return {"pan": pan, "expiry": "3012"}

    async def repay(request_id: str, amount: int, pan: str = PAN_ICBC) -> dict[str, object]:
        return await desk.ask("credit_repay", request_id, customer_id=C, amount=amount,
                              card=card(pan), **{"from": "card"})  # fmt: skip

    # No card with from card: 30; no route 92; a credit card (or a route saying
    # nothing) 57; above the payoff 13: nothing sent.
    answer = await desk.ask("credit_repay", "k-0", customer_id=C, amount=1, **{"from": "card"})
    assert (answer["type"], answer["code"]) == ("error", "30")
    result(await repay("k-1", 1_000, PAN_NO_ROUTE), "92")
    result(await repay("k-2", 1_000, PAN_CREDIT), "57")
    result(await repay("k-3", 1_000, PAN_CMB), "57")
    result(await repay("k-4", 200_001), "13")
    assert bank.totals().approvals == before
    # Approved by the bank: repaid, allocated as from the wallet.
    paid = result(await repay("k-5", 50_000))
    assert paid["allocated"] == {"penalty_fen": 0, "fee_fen": 0, "principal_fen": 0,
                                 "prepaid_fen": 50_000}  # fmt: skip
    assert paid["account"]["payoff_fen"] == 150_000
    assert bank.totals().approvals == before + 1
    assert await balance(app, "bank_clearing:icbc") == (clearing - 50_000, 0)
    assert await balance(app, RECEIVABLE) == (-150_000, 0)
    assert app.journal is not None
    record = await app.journal.transaction_by_rrn(str(paid["rrn"]))
    assert record is not None
    assert (record.kind, record.bank, record.merchant_id, record.terminal_id, record.state) == (
        "sale", "icbc", "SHOP01", "CREDIT01", "approved",
    )  # fmt: skip
    # Its repeat: the same answer, the bank sees it once; with a CVV2 too (never kept,
    # so never compared, online.md).
    assert await repay("k-5", 50_000) == paid
    again = await desk.ask("credit_repay", "k-5", customer_id=C, amount=50_000,
                           card={**card(PAN_ICBC), "cvv2": "123"}, **{"from": "card"})  # fmt: skip
    assert again == paid
    assert bank.totals().approvals == before + 1
    # Declined by the bank (51): its code; no answer: 68, reversed; nothing repaid.
    declined = result(await repay("k-6", 10_051), "51")
    assert declined["rrn"] and "allocated" not in declined
    never = result(await repay("k-7", 10_068), "68")
    await eventually(lambda: bank.totals().reversals + bank.totals().unmatched_reversals == 1)
    unanswered = await app.journal.transaction_by_rrn(str(never["rrn"]))
    assert unanswered is not None and unanswered.reversed
    assert (await status(app)).payoff_fen == 150_000
    assert await balance(app, RECEIVABLE) == (-150_000, 0)
    book = (await in_store(app, store_of(app).credit_account, C)).book
    assert book.repays == ()
    await verified(app)


async def test_a_card_repayment_approved_but_not_booked_is_booked_at_start_up(
    nursery: trio.Nursery, tmp_path: Path, credit_config: SwitchConfig
) -> None:
    """The bank approved a repayment by card, and the store failed to book it: the next
    start posts its pending transfer as the journal's approval says, and the book
    allocates it then."""
    from tests.net.test_app_desk_e2e import App

    config = wallet_config(
        tmp_path, journal=msgspec.structs.asdict(credit_config.journal),
        credit={"own_merchant_id": "SHOP01"},
    )  # fmt: skip
    async with trio.open_nursery() as first_life:
        app = await start_switch(first_life, config)
        await open_credit(app, 1_000_000)
        client = await pos_client(app)
        sale = await client.request(client.terminal.code_sale(32, await credit_code(app), 80_000))
        assert sale.fields[39] == "00"
        store: Any = store_of(app)

        def fail(step: str) -> None:
            if step == "desk_kept":  # the repayment booked with its kept result
                raise RuntimeError("ledger lost")

        store.fault = fail
        store.errors = (*store.errors, RuntimeError)
        desk = await App.connect(app)
        answer = await desk.ask("credit_repay", "k-1", customer_id=C, amount=30_000,
                                card={"pan": PAN_ICBC, "expiry": "3012"},
                                **{"from": "card"})  # fmt: skip
        assert answer["code"] == "91"  # not booked: not 00
        assert (await status(app)).payoff_fen == 80_000
        await client.aclose()
        app.shutdown()
    app = await start_switch(nursery, config)  # same journal and ledger
    account = await status(app)
    assert (account.payoff_fen, account.available_fen) == (50_000, 950_000)
    assert await balance(app, RECEIVABLE) == (-50_000, 0)
    book = (await in_store(app, store_of(app).credit_account, C)).book
    assert book.repays == () and [line.amount_fen for line in book.cycle] == [0]
    # The app's repeat of its id: the journal's answer, kept; nothing repaid twice.
    desk = await App.connect(app)
    card = {"pan": PAN_ICBC, "expiry": "3012"}
    again = await desk.ask("credit_repay", "k-1", customer_id=C, amount=30_000, card=card,
                           **{"from": "card"})  # fmt: skip
    assert (again["code"], again["account"]["payoff_fen"]) == ("00", 50_000)
    assert len(again["rrn"]) == 12
    assert await desk.ask("credit_repay", "k-1", customer_id=C, amount=30_000, card=card,
                          **{"from": "card"}) == again  # fmt: skip
    assert (await status(app)).payoff_fen == 50_000
    await verified(app)
