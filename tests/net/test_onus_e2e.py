"""On-us payments (wallet.md): payment-code sales on POS, their void, refund and the
terminal's reversal, through the real listener and switchboard onto the real ledger
store, on both journal engines (SQLite: ledger.sqlite3 beside the journal; PostgreSQL:
the journal's database)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import trio

from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.core import ledger, paycode
from switch.core.ledger import TransferKey, TransferSpec
from switch.store import open_ledger_store
from switch.store.ledger_port import LedgerStore
from switch.terminal import Terminal
from switch.wire import online as wire
from switch.wire.iso8583 import Iso8583Message
from tests.conftest import make_config
from tests.net.helpers import online_client, pos_client, start_switch

CUSTOMER = "C100000001"
MERCHANT = Terminal().merchant_id
MERCHANT_ACCOUNT = ledger.merchant_account(MERCHANT)
WALLET = ledger.wallet_account(CUSTOMER)


@pytest.fixture(params=["sqlite", "postgresql"])
def onus_config(request: pytest.FixtureRequest) -> SwitchConfig:
    if request.param == "postgresql":
        dsn = request.getfixturevalue("postgres_dsn")
        return make_config(journal={"backend": "postgresql", "dsn": dsn})
    return make_config()


def store_of(app: SwitchApp) -> LedgerStore:
    assert app._ledger is not None
    return app._ledger.store


async def in_store(app: SwitchApp, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    assert app._ledger is not None
    return await app._ledger._run(lambda: call(*args, **kwargs))


async def fund(app: SwitchApp, amount: int, customer_id: str = CUSTOMER) -> None:
    """Opens the wallet (class II) and credits it as an approved top-up would."""
    store = store_of(app)
    today = time.strftime("%Y-%m-%d")
    await in_store(app, store.open_wallet, customer_id, "app:wallet", 2, today, time.time())
    spec = TransferSpec(
        key=TransferKey("test", f"topup-{customer_id}-{amount}", "topup"),
        debit="bank_clearing:icbc", credit=ledger.wallet_account(customer_id),
        amount=amount, kind="topup",
    )  # fmt: skip
    await in_store(app, store.transfer, spec, time.time())


async def issue(app: SwitchApp, customer_id: str = CUSTOMER) -> str:
    store = store_of(app)
    settings = app.config.wallet.paycodes()
    code = await in_store(
        app, store.issue_paycode, customer_id, "app:wallet", "wallet", "B", time.time(),
        settings, lambda: paycode.draw(settings.prefix),
    )  # fmt: skip
    return str(code.code)


async def balance(app: SwitchApp, name: str) -> tuple[int, int]:
    """(posted balance, pending debits) of an account."""
    view = await in_store(app, store_of(app).account, name)
    if view is None:
        return 0, 0
    return view.balances.balance, view.balances.debits_pending


async def verified(app: SwitchApp) -> None:
    assert await in_store(app, store_of(app).verify) == []
    assert await in_store(app, store_of(app).pending_transfers) == []


async def test_pay_by_code_approved_debits_the_wallet_once(
    nursery: trio.Nursery, onus_config: SwitchConfig
) -> None:
    app = await start_switch(nursery, onus_config)
    await fund(app, 50_000)
    code = await issue(app)
    client = await pos_client(app)
    sale = client.terminal.code_sale(124, code, 2500)
    response = await client.request(sale)
    fields = response.fields
    assert (response.mti, fields[39], fields[63]) == ("0210", "00", "WAL")
    assert len(str(fields[38])) == 6 and len(str(fields[37])) == 12
    assert fields[2] == code and 54 not in fields  # no balance to a terminal
    assert await balance(app, WALLET) == (47_500, 0)
    assert await balance(app, MERCHANT_ACCOUNT) == (2_500, 0)
    # The terminal's repeat is answered from the journal: paid once.
    again = await client.request(sale)
    assert (again.fields[39], again.fields[37], again.fields[38]) == (
        "00", fields[37], fields[38],
    )  # fmt: skip
    assert await balance(app, WALLET) == (47_500, 0)
    # The journal has it, as an on-us sale.
    assert app.journal is not None
    record = await app.journal.transaction_by_rrn(str(fields[37]))
    assert record is not None
    assert (record.kind, record.bank, record.state, record.amount) == (
        "onus_sale", "on-us", "approved", 2500,
    )  # fmt: skip
    assert code not in record.pan_masked
    # The code is used: a second sale with it is 14, nothing moves.
    second = await client.request(client.terminal.code_sale(125, code, 100))
    assert second.fields[39] == "14" and 63 not in second.fields
    assert await balance(app, WALLET) == (47_500, 0)
    await verified(app)


async def test_codes_refused_as_wallet_md_says(
    nursery: trio.Nursery, onus_config: SwitchConfig
) -> None:
    app = await start_switch(nursery, onus_config)
    await fund(app, 1_000)
    client = await pos_client(app)
    # Balance too low: 51, the code is used all the same (wallet.md).
    code = await issue(app)
    low = await client.request(client.terminal.code_sale(1, code, 1_001))
    assert (low.fields[39], low.fields[63]) == ("51", "WAL")
    again = await client.request(client.terminal.code_sale(2, code, 10))
    assert again.fields[39] == "14"
    # Unknown, failing Luhn: 14 alike.
    prefix = app.config.wallet.paycode_prefix
    unknown = paycode.make_code(prefix, "1234567890123456")
    assert (await client.request(client.terminal.code_sale(3, unknown, 10))).fields[39] == "14"
    bad_luhn = unknown[:-1] + str((int(unknown[-1]) + 1) % 10)
    assert (await client.request(client.terminal.code_sale(4, bad_luhn, 10))).fields[39] == "14"
    # Expired: 14.
    expired = await issue(app)
    await in_store(app, store_of(app).purge_paycodes, 0.0)
    await trio.to_thread.run_sync(_expire, app, expired)
    assert (await client.request(client.terminal.code_sale(5, expired, 10))).fields[39] == "14"
    # A code with another 22: 14; with 14 (expiry): 30; a balance inquiry: 57.
    fresh = await issue(app)
    mti, fields = client.terminal.code_sale(6, fresh, 10)
    fields[22] = "021"
    assert (await client.request((mti, fields))).fields[39] == "14"
    mti, fields = client.terminal.code_sale(7, fresh, 10)
    fields[14] = "2812"
    answer = await client.request((mti, fields))
    assert answer.fields[39] == "30"
    mti, fields = client.terminal.balance(8, fresh, expiry=None)
    fields[22] = "032"
    assert (await client.request((mti, fields))).fields[39] == "57"
    # Nothing moved, the fresh code is still good.
    assert await balance(app, WALLET) == (1_000, 0)
    ok = await client.request(client.terminal.code_sale(9, fresh, 1_000))
    assert ok.fields[39] == "00"
    assert await balance(app, WALLET) == (0, 0)
    await verified(app)


def _expire(app: SwitchApp, code: str) -> None:
    """Makes ``code`` past its expiry (as 60 real seconds would)."""
    store = store_of(app)
    if app.config.journal.backend == "postgresql":
        statement = "UPDATE paycode SET expires_at = 0 WHERE code = %s"
    else:
        statement = "UPDATE paycode SET expires_at = 0 WHERE code = ?"
    with store._transaction():  # type: ignore[attr-defined]
        store._execute(statement, (code,))  # type: ignore[attr-defined]


async def test_void_and_refund_restore_the_wallet(
    nursery: trio.Nursery, onus_config: SwitchConfig
) -> None:
    app = await start_switch(nursery, onus_config)
    await fund(app, 10_000)
    client = await pos_client(app)
    terminal = client.terminal
    code = await issue(app)
    sale = await client.request(terminal.code_sale(10, code, 3_000))
    assert sale.fields[39] == "00"
    rrn = str(sale.fields[37])
    void = await client.request(terminal.code_void(11, code, 3_000, rrn, 10))
    assert (void.mti, void.fields[39]) == ("0210", "00")
    assert await balance(app, WALLET) == (10_000, 0)
    assert await balance(app, MERCHANT_ACCOUNT) == (0, 0)
    # A second void of it: 12 (voided), nothing moves.
    twice = await client.request(terminal.code_void(12, code, 3_000, rrn, 10))
    assert twice.fields[39] == "12"
    # Another sale, refunded in two parts; a third beyond what is left: 61.
    code2 = await issue(app)
    sale2 = await client.request(terminal.code_sale(13, code2, 4_000))
    rrn2 = str(sale2.fields[37])
    assert await balance(app, WALLET) == (6_000, 0)
    first = await client.request(terminal.code_refund(14, code2, 1_500, rrn2, 13))
    assert (first.mti, first.fields[39]) == ("0230", "00")
    second = await client.request(terminal.code_refund(15, code2, 2_500, rrn2, 13))
    assert second.fields[39] == "00"
    beyond = await client.request(terminal.code_refund(16, code2, 1, rrn2, 13))
    assert beyond.fields[39] == "61"
    assert await balance(app, WALLET) == (10_000, 0)
    assert await balance(app, MERCHANT_ACCOUNT) == (0, 0)
    # A void carrying another code than its sale's: 25.
    code3 = await issue(app)
    sale3 = await client.request(terminal.code_sale(17, code3, 500))
    other = await client.request(terminal.code_void(18, code, 500, str(sale3.fields[37]), 17))
    assert other.fields[39] == "25"
    await verified(app)


async def test_terminal_reversal_undoes_the_payment(
    nursery: trio.Nursery, onus_config: SwitchConfig
) -> None:
    app = await start_switch(nursery, onus_config)
    await fund(app, 10_000)
    client = await pos_client(app)
    terminal = client.terminal
    code = await issue(app)
    sale = terminal.code_sale(20, code, 7_000)
    answer = await client.request(sale)
    assert answer.fields[39] == "00"
    assert await balance(app, WALLET) == (3_000, 0)
    reversal = await client.request(terminal.reversal(sale))
    assert (reversal.mti, reversal.fields[39]) == ("0410", "00")
    assert await balance(app, WALLET) == (10_000, 0)
    assert await balance(app, MERCHANT_ACCOUNT) == (0, 0)
    # Its repeat changes nothing.
    again = await client.request(terminal.reversal(sale))
    assert again.fields[39] == "00"
    assert await balance(app, WALLET) == (10_000, 0)
    assert app.journal is not None
    record = await app.journal.transaction_by_rrn(str(answer.fields[37]))
    assert record is not None and record.reversed
    # Voided payments leave the wallet's counts: the class II year limit is whole.
    view = await in_store(app, store_of(app).wallet, CUSTOMER, None, time.strftime("%Y-%m-%d"))
    assert view.class_left == 10_000_000
    # The reversal of a declined sale moves nothing.
    code2 = await issue(app)
    declined = terminal.code_sale(21, code2, 20_000)
    assert (await client.request(declined)).fields[39] == "51"
    assert (await client.request(terminal.reversal(declined))).fields[39] == "00"
    assert await balance(app, WALLET) == (10_000, 0)
    await verified(app)


def response_code(message: Iso8583Message) -> str:
    return str(message.fields[39])


async def test_start_up_posts_or_voids_what_the_journal_answered(
    nursery: trio.Nursery, onus_config: SwitchConfig
) -> None:
    """The ledger fails to post an approval the journal holds (answered 96), and to
    void a decline's hold: the next start ends each as the journal says (wallet.md)."""
    async with trio.open_nursery() as first_life:
        app = await start_switch(first_life, onus_config)
        await fund(app, 10_000)
        code, code2 = await issue(app), await issue(app)
        store = store_of(app)

        def fail_ends(step: str) -> None:
            if step == "end_payment":
                raise RuntimeError("ledger lost")

        store.fault = fail_ends
        # (RuntimeError is no ledger error: the engines' own errors are, so map it.)
        store.errors = (*store.errors, RuntimeError)  # type: ignore[attr-defined]
        client = await pos_client(app)
        approved = await client.request(client.terminal.code_sale(30, code, 4_000))
        assert approved.fields[39] == "96"  # journaled approved, not posted: not 00
        declined = await client.request(client.terminal.code_sale(31, code2, 60_000))
        assert declined.fields[39] == "51"  # refused by the ledger: nothing held
        assert await balance(app, WALLET) == (10_000, 4_000)  # the approval still held
        assert len(await in_store(app, store.pending_transfers)) == 1
        await client.aclose()
        app.shutdown()
    app = await start_switch(nursery, onus_config)  # same journal and ledger
    assert await balance(app, WALLET) == (6_000, 0)  # posted: the journal approved it
    assert await balance(app, MERCHANT_ACCOUNT) == (4_000, 0)
    await verified(app)
    # The terminal's repeat gets the journal's answer; nothing moves again.
    client = await pos_client(app)
    again = await client.request(client.terminal.code_sale(30, code, 4_000))
    assert again.fields[39] == "00"
    assert await balance(app, WALLET) == (6_000, 0)


async def test_online_purchase_by_code_and_its_void_refund_status(
    nursery: trio.Nursery, onus_config: SwitchConfig
) -> None:
    """online.md's purchase with ``paycode`` instead of ``card`` (wallet.md), its void
    and refund by ``original_id``, its status and its repeat."""
    app = await start_switch(nursery, onus_config)
    await fund(app, 20_000)
    shop = ledger.merchant_account("SHOP01")
    client = await online_client(app)
    code = await issue(app)
    buy = wire.Purchase(id="onus-1", merchant_id="SHOP01", amount=5_000, currency="CNY",
                        paycode=code)  # fmt: skip
    result = await client.request(buy)
    assert isinstance(result, wire.Result)
    assert (result.code, result.approved, result.funding) == ("00", True, "wallet")
    assert result.auth_code and result.rrn and result.balance is None
    assert await balance(app, WALLET) == (15_000, 0)
    assert await balance(app, shop) == (5_000, 0)
    # The same id again: the same result, nothing moves.
    assert await client.request(buy) == result
    assert await balance(app, WALLET) == (15_000, 0)
    status = await client.request(wire.Status(id="st-1", merchant_id="SHOP01",
                                              original_id="onus-1"))  # fmt: skip
    assert isinstance(status, wire.Result) and status.rrn == result.rrn and status.code == "00"
    refund = await client.request(wire.Refund(id="onus-2", merchant_id="SHOP01",
                                              original_id="onus-1", amount=2_000))  # fmt: skip
    assert isinstance(refund, wire.Result) and refund.code == "00"
    assert await balance(app, WALLET) == (17_000, 0)
    # Partly refunded: a void is refused (12), nothing moves.
    void = await client.request(wire.Void(id="onus-3", merchant_id="SHOP01",
                                          original_id="onus-1"))  # fmt: skip
    assert isinstance(void, wire.Result) and void.code == "12"
    code2 = await issue(app)
    second = await client.request(wire.Purchase(
        id="onus-4", merchant_id="SHOP01", amount=1_000, currency="CNY", paycode=code2))
    assert isinstance(second, wire.Result) and second.code == "00"
    void = await client.request(wire.Void(id="onus-5", merchant_id="SHOP01",
                                          original_id="onus-4"))  # fmt: skip
    assert isinstance(void, wire.Result) and void.code == "00"
    assert await balance(app, WALLET) == (17_000, 0)
    assert await balance(app, shop) == (3_000, 0)
    # A used code, a balance inquiry with a code, a code and a card: 14, 57, 30.
    used = await client.request(wire.Purchase(
        id="onus-6", merchant_id="SHOP01", amount=10, currency="CNY", paycode=code))
    assert used.code == "14"
    asked = await client.request(wire.Balance(id="onus-7", merchant_id="SHOP01", paycode=code))
    assert asked.code == "57"
    both = await client.request(wire.Purchase(
        id="onus-8", merchant_id="SHOP01", amount=10, currency="CNY", paycode=code,
        card=wire.Card(pan="6222021000111122221", expiry="2812")))  # fmt: skip
    assert both.code == "30"
    await verified(app)


async def test_a_stop_during_a_ledger_step_still_settles_the_payment(
    nursery: trio.Nursery, onus_config: SwitchConfig
) -> None:
    """The switch stops (its grace run out) while a payment's ledger step is running:
    the step ends, then its answer is journaled and its transfer posted, as a card sale
    at its bank is settled when the switch stops. Nothing is left `sending` or pending."""
    import threading

    config = msgspec.structs.replace(
        onus_config,
        switch=msgspec.structs.replace(onus_config.switch, shutdown_grace_s=0.1),
    )
    async with trio.open_nursery() as life:
        app = await start_switch(life, config)
        await fund(app, 10_000)
        code = await issue(app)
        store = store_of(app)
        entered, release = threading.Event(), threading.Event()

        def slow_reserve(step: str) -> None:
            if step == "reserve_payment":
                entered.set()
                release.wait(10)

        store.fault = slow_reserve
        client = await pos_client(app)
        await client.send(client.terminal.code_sale(40, code, 2_500))
        await trio.to_thread.run_sync(entered.wait, 10)
        app.shutdown()
        await trio.sleep(0.5)  # the grace runs out while the step is held
        release.set()
    store.fault = None
    reopened = open_ledger_store(config)
    reopened.open()
    try:
        assert reopened.pending_transfers() == []
        view = reopened.account(WALLET)
        assert view is not None and view.balances.balance == 7_500
    finally:
        reopened.close()
    app = await start_switch(nursery, config)
    assert app.journal is not None
    record = await app.journal.transaction_by_trace(
        Terminal().terminal_id, MERCHANT, "000001", "000040"
    )
    assert record is not None and (record.state, record.kind) == ("approved", "onus_sale")


async def test_online_void_and_refund_by_rrn_find_on_us_payments_only(
    nursery: trio.Nursery, onus_config: SwitchConfig
) -> None:
    """wallet.md: a merchant's void or refund may name an on-us payment by
    ``original_rrn`` (a POS one too); a card sale's RRN is not found that way (25)."""
    app = await start_switch(nursery, onus_config)
    await fund(app, 10_000)
    pos = await pos_client(app, Terminal(merchant_id="SHOP01"))
    code = await issue(app)
    sale = await pos.request(pos.terminal.code_sale(50, code, 2_000))
    assert sale.fields[39] == "00"
    card = await pos.request(pos.terminal.sale(51, "6222021000111122221", 3_000))
    assert card.fields[39] == "00"
    client = await online_client(app)
    refund = await client.request(wire.Refund(
        id="by-rrn-1", merchant_id="SHOP01", original_rrn=str(sale.fields[37]), amount=500))
    assert isinstance(refund, wire.Result) and refund.code == "00"
    assert await balance(app, WALLET) == (8_500, 0)
    void_card = await client.request(wire.Void(
        id="by-rrn-2", merchant_id="SHOP01", original_rrn=str(card.fields[37])))
    assert void_card.code == "25"
    neither = await client.request(wire.Void(id="by-rrn-3", merchant_id="SHOP01"))
    assert neither.code == "30" and "original_id" in neither.message
    await verified(app)


async def test_payments_waiting_together_share_a_transaction_each_its_own_outcome(
    nursery: trio.Nursery, onus_config: SwitchConfig
) -> None:
    """Code sales that wait for the ledger together go to it in one transaction (one
    commit), yet each is its own: the one refused 51 (its wallet short) holds nothing
    though its code is used, the others are approved and posted, once each."""
    import threading

    from tests.net.helpers import eventually

    app = await start_switch(nursery, onus_config)
    customers = [CUSTOMER, "C100000002", "C100000003", "C100000004"]
    for customer in customers[:3]:
        await fund(app, 10_000, customer)
    await fund(app, 1_000, customers[3])
    codes = [await issue(app, customer) for customer in customers[:3] for _ in range(2)]
    poor = await issue(app, customers[3])
    desk, store = app._ledger, store_of(app)
    assert desk is not None
    entered, release = threading.Event(), threading.Event()

    names: list[str] = []

    def hold_first(name: str) -> None:
        names.append(name)  # each step's, and each transaction's
        if name == "pay_by_code" and not entered.is_set():
            entered.set()
            release.wait(10)

    store.fault = hold_first
    steps, groups = desk.steps, desk.groups
    answers: dict[int, str] = {}

    async def pay(stan: int, code: str, amount: int) -> None:
        client = await pos_client(app)
        response = await client.request(client.terminal.code_sale(stan, code, amount))
        answers[stan] = str(response.fields[39])
        await client.aclose()

    async with trio.open_nursery() as payments:
        payments.start_soon(pay, 200, codes[0], 1_000)
        await trio.to_thread.run_sync(entered.wait, 10)
        for n, code in enumerate(codes[1:], start=201):
            payments.start_soon(pay, n, code, 1_000)
        payments.start_soon(pay, 300, poor, 5_000)
        await eventually(lambda: len(desk._queue) == 6)  # they wait together
        release.set()
    store.fault = None
    assert answers == {**{n: "00" for n in range(200, 206)}, 300: "51"}
    for customer in customers[:3]:
        assert await balance(app, ledger.wallet_account(customer)) == (8_000, 0)
    assert await balance(app, ledger.wallet_account(customers[3])) == (1_000, 0)
    assert await balance(app, MERCHANT_ACCOUNT) == (6_000, 0)
    assert desk.steps - steps == 14  # 7 payments, 7 ends (the refused one voids)
    assert desk.groups - groups <= 10  # the six waiting went together
    assert names.count("grouped") >= 1 and names.count("pay_by_code") == 7
    client = await pos_client(app)
    used = await client.request(client.terminal.code_sale(400, poor, 100))
    assert used.fields[39] == "14"  # the refused payment's code was used all the same
    await client.aclose()
    await verified(app)
