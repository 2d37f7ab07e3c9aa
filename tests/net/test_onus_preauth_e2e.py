"""Pre-authorisation and completion by payment code (risk.md, "On-us funding"): POS
frames (0100 03xxxx 25 = 06 with 2 = the code, 22 = 032; its void, the completion, the
completion's void, terminal reversals) and signed online requests (``preauth`` with
``paycode``, ``completion``, ``preauth_void``, ``void``, ``status``) through the real
listeners onto the real ledger store: the hold is a pending transfer while ``open``, a
completion posts min(amount, held) plus the excess (51 when it is not there), a void or
expiry releases it, a completion's void holds it again, a restart keeps it pending; the
ledger's invariants hold after each."""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Any

import pytest
import trio
import trio.testing

from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.core import ledger
from switch.core.clock import BusinessClock, parse_clock_start
from switch.core.wallet import MoneyAsk, WalletSettings
from switch.store.ledger_port import Reserved
from switch.terminal import Terminal
from switch.wire import online as wire
from switch.wire.iso8583 import Iso8583Message
from tests.conftest import make_config
from tests.net.helpers import eventually, online_client, pos_client, start_switch
from tests.net.test_credit_funding_e2e import RECEIVABLE, credit_code, open_credit, status
from tests.net.test_onus_e2e import CUSTOMER, balance, fund, in_store, issue, store_of
from tests.store.engines import journal_rows

MERCHANT = Terminal().merchant_id
MERCHANT_ACCOUNT = ledger.merchant_account(MERCHANT)
WALLET = ledger.wallet_account(CUSTOMER)
Frame = tuple[str, dict[int, Any]]


@pytest.fixture(params=["sqlite", "postgresql"])
def onus_config(request: pytest.FixtureRequest) -> SwitchConfig:
    if request.param == "postgresql":
        dsn = request.getfixturevalue("postgres_dsn")
        return make_config(journal={"backend": "postgresql", "dsn": dsn})
    return make_config()


def by_code(frame: Frame) -> Frame:
    """A terminal's frame for a scanned payment code: 22 = 032, no expiry."""
    mti, fields = frame
    fields = {n: v for n, v in fields.items() if n != 14}
    fields[22] = "032"
    return mti, fields


class Desk:
    """A hotel's terminal paid by codes: each request's STAN its own."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.terminal: Terminal = client.terminal
        self.stan = 100

    def next(self) -> int:
        self.stan += 1
        return self.stan

    async def preauth(self, code: str, amount: int) -> tuple[Iso8583Message, int]:
        stan = self.next()
        frame = by_code(self.terminal.preauth(stan, code, amount, expiry=None))
        return await self.client.request(frame), stan

    async def complete(
        self, code: str, amount: int, held: Iso8583Message, held_stan: int
    ) -> tuple[Iso8583Message, int]:
        stan = self.next()
        frame = by_code(self.terminal.completion(
            stan, code, amount, str(held.fields[38]), held_stan, str(held.fields[13]),
        ))  # fmt: skip
        return await self.client.request(frame), stan

    async def void_preauth(
        self, code: str, amount: int, held: Iso8583Message, held_stan: int
    ) -> Iso8583Message:
        frame = by_code(self.terminal.preauth_void(
            self.next(), code, amount, str(held.fields[37]), str(held.fields[38]), held_stan,
        ))  # fmt: skip
        return await self.client.request(frame)

    async def void_completion(
        self, code: str, amount: int, done: Iso8583Message, done_stan: int
    ) -> Iso8583Message:
        frame = by_code(self.terminal.completion_void(
            self.next(), code, amount, str(done.fields[37]), str(done.fields[38]), done_stan,
        ))  # fmt: skip
        return await self.client.request(frame)


async def sound(app: SwitchApp, pending: int = 0) -> None:
    """wallet.md's invariants: debits equal credits, no wallet past its cap, the sums
    are the transfers'; ``pending`` transfers left (the open holds)."""
    assert await in_store(app, store_of(app).verify) == []
    assert len(await in_store(app, store_of(app).pending_transfers)) == pending


def hold_state(app: SwitchApp, rrn: object) -> str:
    [row] = journal_rows(app.config, "SELECT hold_state FROM txn WHERE rrn = ?", str(rrn))
    return str(row["hold_state"])


async def class_used(app: SwitchApp) -> int:
    view = await in_store(app, store_of(app).wallet, CUSTOMER, None, time.strftime("%Y-%m-%d"))
    return 10_000_000 - int(view.class_left)


async def test_wallet_code_preauth_completions_below_equal_and_above_the_hold(
    nursery: trio.Nursery, onus_config: SwitchConfig
) -> None:
    app = await start_switch(nursery, onus_config)
    await fund(app, 50_000)
    desk = Desk(await pos_client(app))
    # Held: a pending transfer, counted as a payment at approval (wallet.md).
    held, held_stan = await desk.preauth(await issue(app), 10_000)
    assert (held.mti, held.fields[39], held.fields[63]) == ("0110", "00", "WAL")
    assert await balance(app, WALLET) == (50_000, 10_000)
    assert await class_used(app) == 10_000
    assert hold_state(app, held.fields[37]) == "open"
    await sound(app, pending=1)
    # Below the hold: 8,000 posted, the rest released; not counted again.
    code = str(held.fields[2])
    done, _ = await desk.complete(code, 8_000, held, held_stan)
    assert (done.mti, done.fields[39], done.fields[63]) == ("0210", "00", "WAL")
    assert await balance(app, WALLET) == (42_000, 0)
    assert await balance(app, MERCHANT_ACCOUNT) == (8_000, 0)
    assert await class_used(app) == 10_000
    assert hold_state(app, held.fields[37]) == "completed"
    again, _ = await desk.complete(code, 100, held, held_stan)
    assert again.fields[39] == "12"  # one completion: not open any more
    await sound(app)
    # Equal to the hold.
    held2, stan2 = await desk.preauth(await issue(app), 5_000)
    done2, _ = await desk.complete(str(held2.fields[2]), 5_000, held2, stan2)
    assert done2.fields[39] == "00"
    assert await balance(app, WALLET) == (37_000, 0)
    # Above it, up to completion_max_pct (115): the excess is a linked transfer, and
    # counts; beyond the limit, 61 and the hold stands.
    held3, stan3 = await desk.preauth(await issue(app), 10_000)
    code3 = str(held3.fields[2])
    beyond, _ = await desk.complete(code3, 11_501, held3, stan3)
    assert beyond.fields[39] == "61"
    assert await balance(app, WALLET) == (37_000, 10_000)
    done3, done3_stan = await desk.complete(code3, 11_500, held3, stan3)
    assert done3.fields[39] == "00"
    assert await balance(app, WALLET) == (25_500, 0)
    assert await balance(app, MERCHANT_ACCOUNT) == (24_500, 0)
    assert await class_used(app) == 10_000 + 5_000 + 10_000 + 1_500
    # The completion's RRN names all it posted (settlement's reconciliation reads it).
    excess = await in_store(app, store_of(app).transfer_of, ledger.TransferKey(
        f"pos:{MERCHANT}:{desk.terminal.terminal_id}", f"{desk.terminal.batch:06d}"
        f"{desk.stan:06d}", "pay",
    ))  # fmt: skip
    assert (excess.state, excess.posted_amount, excess.spec.rrn) == (
        "posted", 1_500, str(done3.fields[37])
    )
    # A completion is refunded by its RRN like a sale (risk.md), at most what it took.
    rrn3 = str(done3.fields[37])
    refund = await desk.client.request(
        desk.terminal.code_refund(desk.next(), code3, 2_000, rrn3, done3_stan)
    )
    assert (refund.mti, refund.fields[39], refund.fields[63]) == ("0230", "00", "WAL")
    beyond = await desk.client.request(
        desk.terminal.code_refund(desk.next(), code3, 9_501, rrn3, done3_stan)
    )
    assert beyond.fields[39] == "61"
    assert await balance(app, WALLET) == (27_500, 0)
    assert await balance(app, MERCHANT_ACCOUNT) == (22_500, 0)
    await sound(app)


async def test_an_excess_not_available_is_51_and_the_hold_stands(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    await fund(app, 10_000)
    desk = Desk(await pos_client(app))
    held, stan = await desk.preauth(await issue(app), 10_000)
    code = str(held.fields[2])
    short, _ = await desk.complete(code, 10_500, held, stan)
    assert short.fields[39] == "51"  # both or neither: nothing posted
    assert await balance(app, WALLET) == (10_000, 10_000)
    assert await balance(app, MERCHANT_ACCOUNT) == (0, 0)
    assert hold_state(app, held.fields[37]) == "open"
    await sound(app, pending=1)
    done, _ = await desk.complete(code, 10_000, held, stan)
    assert done.fields[39] == "00"
    assert await balance(app, WALLET) == (0, 0)
    await sound(app)


async def test_preauth_void_releases_and_completion_void_holds_again(
    nursery: trio.Nursery, onus_config: SwitchConfig
) -> None:
    app = await start_switch(nursery, onus_config)
    await fund(app, 20_000)
    desk = Desk(await pos_client(app))
    # A void of the pre-authorisation releases the hold and its count.
    held, stan = await desk.preauth(await issue(app), 6_000)
    code = str(held.fields[2])
    void = await desk.void_preauth(code, 6_000, held, stan)
    assert (void.mti, void.fields[39]) == ("0110", "00")
    assert await balance(app, WALLET) == (20_000, 0)
    assert await class_used(app) == 0
    assert hold_state(app, held.fields[37]) == "voided"
    late, _ = await desk.complete(code, 6_000, held, stan)
    assert late.fields[39] == "12"
    await sound(app)
    # A completion's void gives back what it posted (hold and excess) and holds the
    # pre-authorisation's amount again: open, completed again later.
    held, stan = await desk.preauth(await issue(app), 8_000)
    code = str(held.fields[2])
    done, done_stan = await desk.complete(code, 9_000, held, stan)
    assert done.fields[39] == "00"
    assert await balance(app, WALLET) == (11_000, 0)
    undone = await desk.void_completion(code, 9_000, done, done_stan)
    assert (undone.mti, undone.fields[39]) == ("0210", "00")
    assert await balance(app, WALLET) == (20_000, 8_000)
    assert await balance(app, MERCHANT_ACCOUNT) == (0, 0)
    assert hold_state(app, held.fields[37]) == "open"
    assert await class_used(app) == 8_000  # the excess out of the counts again
    await sound(app, pending=1)
    again, _ = await desk.complete(code, 7_000, held, stan)
    assert again.fields[39] == "00"
    assert await balance(app, WALLET) == (13_000, 0)
    assert await balance(app, MERCHANT_ACCOUNT) == (7_000, 0)
    await sound(app)


async def test_a_completion_void_whose_funds_are_gone_ends_the_preauth_voided(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    await fund(app, 10_000)
    desk = Desk(await pos_client(app))
    held, stan = await desk.preauth(await issue(app), 10_000)
    code = str(held.fields[2])
    done, done_stan = await desk.complete(code, 6_000, held, stan)
    assert done.fields[39] == "00"
    spent = await desk.client.request(desk.terminal.code_sale(desk.next(), await issue(app), 3_000))
    assert spent.fields[39] == "00"
    assert await balance(app, WALLET) == (1_000, 0)
    undone = await desk.void_completion(code, 6_000, done, done_stan)
    assert undone.fields[39] == "00"
    # 7,000 back, 10,000 to hold: not held again, the pre-authorisation voided.
    assert await balance(app, WALLET) == (7_000, 0)
    assert hold_state(app, held.fields[37]) == "voided"
    late, _ = await desk.complete(code, 1_000, held, stan)
    assert late.fields[39] == "12"
    await sound(app)


async def test_terminal_reversals_release_the_hold_and_give_a_completion_back(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    await fund(app, 30_000)
    desk = Desk(await pos_client(app))
    terminal = desk.terminal
    code = await issue(app)
    stan = desk.next()
    request = by_code(terminal.preauth(stan, code, 5_000, expiry=None))
    held = await desk.client.request(request)
    assert held.fields[39] == "00"
    reversal = await desk.client.request(terminal.reversal(request))
    assert (reversal.mti, reversal.fields[39]) == ("0410", "00")
    assert await balance(app, WALLET) == (30_000, 0)
    assert await class_used(app) == 0
    await sound(app)
    # A completion reversed: given back, the pre-authorisation held again.
    held, stan = await desk.preauth(await issue(app), 5_000)
    code = str(held.fields[2])
    completion_stan = desk.next()
    completion = by_code(terminal.completion(
        completion_stan, code, 5_500, str(held.fields[38]), stan, str(held.fields[13])
    ))  # fmt: skip
    assert (await desk.client.request(completion)).fields[39] == "00"
    assert await balance(app, WALLET) == (24_500, 0)
    reversed_ = await desk.client.request(terminal.reversal(completion))
    assert reversed_.fields[39] == "00"
    assert await balance(app, WALLET) == (30_000, 5_000)
    assert await balance(app, MERCHANT_ACCOUNT) == (0, 0)
    assert hold_state(app, held.fields[37]) == "open"
    await sound(app, pending=1)
    done, _ = await desk.complete(code, 5_000, held, stan)
    assert done.fields[39] == "00"
    assert await balance(app, WALLET) == (25_000, 0)
    await sound(app)


async def test_a_preauth_void_reversed_holds_again_while_the_funds_are_there(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    await fund(app, 10_000)
    desk = Desk(await pos_client(app))
    terminal = desk.terminal
    held, stan = await desk.preauth(await issue(app), 6_000)
    code = str(held.fields[2])
    void = by_code(terminal.preauth_void(
        desk.next(), code, 6_000, str(held.fields[37]), str(held.fields[38]), stan
    ))  # fmt: skip
    assert (await desk.client.request(void)).fields[39] == "00"
    assert await balance(app, WALLET) == (10_000, 0)
    reversal = await desk.client.request(terminal.reversal(void))
    assert (reversal.mti, reversal.fields[39]) == ("0410", "00")
    assert await balance(app, WALLET) == (10_000, 6_000)  # held again
    assert await class_used(app) == 6_000
    assert hold_state(app, held.fields[37]) == "open"
    await sound(app, pending=1)
    # Voided again, the wallet spent, the void reversed: nothing to hold it with.
    void = by_code(terminal.preauth_void(
        desk.next(), code, 6_000, str(held.fields[37]), str(held.fields[38]), stan
    ))  # fmt: skip
    assert (await desk.client.request(void)).fields[39] == "00"
    spent = await desk.client.request(terminal.code_sale(desk.next(), await issue(app), 8_000))
    assert spent.fields[39] == "00"
    assert (await desk.client.request(terminal.reversal(void))).fields[39] == "00"
    assert await balance(app, WALLET) == (2_000, 0)
    assert hold_state(app, held.fields[37]) == "voided"
    late, _ = await desk.complete(code, 1_000, held, stan)
    assert late.fields[39] == "12"
    await sound(app)


async def test_a_completion_void_reversed_makes_the_completion_stand_again(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    await fund(app, 20_000)
    desk = Desk(await pos_client(app))
    terminal = desk.terminal
    held, stan = await desk.preauth(await issue(app), 8_000)
    code = str(held.fields[2])
    done, done_stan = await desk.complete(code, 9_000, held, stan)
    assert done.fields[39] == "00"
    void = by_code(terminal.completion_void(
        desk.next(), code, 9_000, str(done.fields[37]), str(done.fields[38]), done_stan
    ))  # fmt: skip
    assert (await desk.client.request(void)).fields[39] == "00"
    assert await balance(app, WALLET) == (20_000, 8_000)
    reversal = await desk.client.request(terminal.reversal(void))
    assert (reversal.mti, reversal.fields[39]) == ("0410", "00")
    # Paid again, the hold released: as after the completion.
    assert await balance(app, WALLET) == (11_000, 0)
    assert await balance(app, MERCHANT_ACCOUNT) == (9_000, 0)
    assert hold_state(app, held.fields[37]) == "completed"
    assert await class_used(app) == 9_000
    await sound(app)
    # Again above the hold, but the wallet spent meanwhile (the hold freed does not
    # cover the completion): answered 00, the void stands.
    held, stan = await desk.preauth(await issue(app), 5_000)
    code = str(held.fields[2])
    done, done_stan = await desk.complete(code, 5_750, held, stan)
    void = by_code(terminal.completion_void(
        desk.next(), code, 5_750, str(done.fields[37]), str(done.fields[38]), done_stan
    ))  # fmt: skip
    assert (await desk.client.request(void)).fields[39] == "00"
    spent = await desk.client.request(terminal.code_sale(desk.next(), await issue(app), 6_000))
    assert spent.fields[39] == "00"
    assert await balance(app, WALLET) == (5_000, 5_000)
    assert (await desk.client.request(terminal.reversal(void))).fields[39] == "00"
    assert await balance(app, WALLET) == (5_000, 5_000)
    assert hold_state(app, held.fields[37]) == "open"
    await sound(app, pending=1)


async def test_a_restart_keeps_the_open_hold_pending(
    nursery: trio.Nursery, onus_config: SwitchConfig
) -> None:
    async with trio.open_nursery() as first_life:
        app = await start_switch(first_life, onus_config)
        await fund(app, 10_000)
        desk = Desk(await pos_client(app))
        held, stan = await desk.preauth(await issue(app), 4_000)
        assert held.fields[39] == "00"
        voided, _ = await desk.preauth(await issue(app), 3_000)
        assert (await desk.void_preauth(
            str(voided.fields[2]), 3_000, voided, desk.stan
        )).fields[39] == "00"  # fmt: skip
        # A hold with no journaled request behind it (as if never received).
        store = store_of(app)
        orphan = ledger.TransferSpec(
            key=ledger.TransferKey(f"pos:{MERCHANT}:POS00099", "000001000999", "hold"),
            debit=WALLET, credit=MERCHANT_ACCOUNT, amount=1_000, kind="pay",
            rrn="999999000001", merchant_id=MERCHANT,
        )  # fmt: skip
        ask = MoneyAsk(customer_id=CUSTOMER, amount=1_000, counted="pay", channel="code",
                       verification="B", local_date=time.strftime("%Y-%m-%d"))  # fmt: skip
        reserved = await in_store(app, store.reserve_payment, ask, orphan, WalletSettings(), 1.0)
        assert isinstance(reserved, Reserved)
        await in_store(app, store.hold_keep, orphan, customer_id=CUSTOMER, funding="wallet",
                       verification="B", instalments=None, at=1.0)  # fmt: skip
        assert await balance(app, WALLET) == (10_000, 5_000)
        await desk.client.aclose()
        app.shutdown()
    app = await start_switch(nursery, onus_config)  # same journal and ledger
    # The open pre-authorisation's hold still pending; the orphan voided.
    assert await balance(app, WALLET) == (10_000, 4_000)
    assert await class_used(app) == 4_000
    await sound(app, pending=1)
    desk = Desk(await pos_client(app))
    desk.stan = 200
    done, _ = await desk.complete(str(held.fields[2]), 4_000, held, stan)
    assert done.fields[39] == "00"
    assert await balance(app, WALLET) == (6_000, 0)
    await sound(app)


async def test_credit_code_preauth_holds_a_pending_purchase_its_completion_is_the_purchase(
    nursery: trio.Nursery, onus_config: SwitchConfig
) -> None:
    app = await start_switch(nursery, onus_config)
    await open_credit(app, 100_000)
    desk = Desk(await pos_client(app))
    code = await credit_code(app, 3)
    held, stan = await desk.preauth(code, 50_000)
    assert (held.fields[39], held.fields[63]) == ("00", "CRL")
    assert await balance(app, RECEIVABLE) == (0, 50_000)
    account = await status(app)
    assert account.available_fen == 50_000  # the hold uses the line
    # Above the hold, past what the line has left: 51, the hold stands.
    held2, stan2 = await desk.preauth(await credit_code(app), 45_000)
    assert held2.fields[39] == "00"
    short, _ = await desk.complete(code, 56_000, held, stan)
    assert (short.fields[39], short.fields[63]) == ("51", "CRL")
    assert (await status(app)).available_fen == 5_000
    # The completion is the purchase, with the code's instalments on its amount.
    done, _ = await desk.complete(code, 55_000, held, stan)
    assert (done.fields[39], done.fields[63]) == ("00", "CRL")
    assert await balance(app, RECEIVABLE) == (-55_000, 45_000)
    assert await balance(app, MERCHANT_ACCOUNT) == (55_000, 0)
    plan = await in_store(app, store_of(app).credit_plan, CUSTOMER, str(done.fields[37]))
    assert (plan.principal_fen, plan.instalments) == (55_000, 3)
    assert (await status(app)).available_fen == 0
    # The completion voided: the purchase stops standing, the hold is a pending
    # purchase again (the line has room for it once the purchase is freed).
    undone = await desk.void_completion(code, 55_000, done, desk.stan)
    assert (undone.fields[39], undone.fields[63]) == ("00", "CRL")
    assert await balance(app, RECEIVABLE) == (0, 95_000)
    assert await balance(app, MERCHANT_ACCOUNT) == (0, 0)
    assert (await status(app)).available_fen == 5_000
    assert hold_state(app, held.fields[37]) == "open"
    # The other one voided: the line is free of it.
    released = await desk.void_preauth(str(held2.fields[2]), 45_000, held2, stan2)
    assert (released.fields[39], released.fields[63]) == ("00", "CRL")
    assert (await status(app)).available_fen == 50_000
    again, again_stan = await desk.complete(code, 50_000, held, stan)
    assert again.fields[39] == "00"
    assert await balance(app, RECEIVABLE) == (-50_000, 0)
    assert (await status(app)).available_fen == 50_000
    # Refunded in part: back to the line, as credit.md refunds a purchase.
    refund = await desk.client.request(desk.terminal.code_refund(
        desk.next(), code, 10_000, str(again.fields[37]), again_stan
    ))  # fmt: skip
    assert (refund.fields[39], refund.fields[63]) == ("00", "CRL")
    assert await balance(app, RECEIVABLE) == (-40_000, 0)
    assert (await status(app)).available_fen == 60_000
    await sound(app)


async def test_online_preauth_by_paycode_completion_voids_and_status(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    await fund(app, 20_000)
    client = await online_client(app)
    merchant = "SHOP01"
    shop = ledger.merchant_account(merchant)
    hold = await client.request(wire.Preauth(
        id="opa-1", merchant_id=merchant, amount=6_000, currency="CNY",
        paycode=await issue(app),
    ))  # fmt: skip
    assert isinstance(hold, wire.Result) and hold.approved, hold
    assert hold.funding == "wallet" and hold.last_completion_date and not hold.settlement_date
    assert await balance(app, WALLET) == (20_000, 6_000)
    done = await client.request(
        wire.Completion(id="oc-1", merchant_id=merchant, original_id="opa-1", amount=6_500)
    )
    assert isinstance(done, wire.Result) and done.approved and done.settlement_date, done
    assert done.funding == "wallet"
    assert await balance(app, WALLET) == (13_500, 0)
    asked = await client.request(wire.Status(id="os-0", merchant_id=merchant, original_id="oc-1"))
    assert isinstance(asked, wire.Result) and (asked.rrn, asked.code) == (done.rrn, "00")
    assert await balance(app, shop) == (6_500, 0)
    # A completion is voided by `void` naming it: given back, held again.
    void = await client.request(wire.Void(id="ov-1", merchant_id=merchant, original_id="oc-1"))
    assert isinstance(void, wire.Result) and void.approved, void
    assert await balance(app, WALLET) == (20_000, 6_000)
    status_ = await client.request(
        wire.Status(id="os-1", merchant_id=merchant, original_id="opa-1")
    )
    assert isinstance(status_, wire.Result)
    assert (status_.rrn, status_.last_completion_date) == (hold.rrn, hold.last_completion_date)
    released = await client.request(
        wire.PreauthVoid(id="opv-1", merchant_id=merchant, original_id="opa-1")
    )
    assert isinstance(released, wire.Result) and released.approved, released
    assert released.settlement_date is None
    assert await balance(app, WALLET) == (20_000, 0)
    await sound(app)


# -- expiry at the cut-off, on a simulated business clock ---------------------------------

START = "2027-03-10T22:58:00+08:00"


async def test_an_open_onus_preauth_expires_at_the_cutoff_and_its_hold_is_voided(
    nursery: trio.Nursery, switch_clock: trio.testing.MockClock
) -> None:
    """expiry_days = 1: at the cut-off that closes D + 1 the open pre-authorisation is
    ``expired`` and its hold voided on the ledger (no bank reversal queued); 3,600
    business seconds a second of trio's mock clock."""
    clock = BusinessClock.simulated(parse_clock_start(START), 3600, monotonic=trio.current_time)
    config = make_config(preauth={"expiry_days": 1})
    app: SwitchApp = await nursery.start(SwitchApp(config, clock=clock).run)
    settlement = app.settlement
    assert settlement is not None
    await fund(app, 10_000)
    desk = Desk(await pos_client(app))
    held, stan = await desk.preauth(await issue(app), 2_500)
    assert held.fields[39] == "00"
    booked = date(2027, int(str(held.fields[15])[:2]), int(str(held.fields[15])[2:]))
    await eventually(lambda: settlement.calendar.last_closed() == booked, within_s=120)
    assert hold_state(app, held.fields[37]) == "open"
    assert await balance(app, WALLET) == (10_000, 2_500)
    await eventually(
        lambda: settlement.calendar.last_closed() == booked + timedelta(days=1), within_s=120
    )
    await eventually(lambda: hold_state(app, held.fields[37]) == "expired", within_s=60)
    for _ in range(100):
        if await balance(app, WALLET) == (10_000, 0):
            break
        await trio.sleep(0.1)
    assert await balance(app, WALLET) == (10_000, 0)
    assert journal_rows(app.config, "SELECT rrn FROM saf") == []
    late, _ = await desk.complete(str(held.fields[2]), 2_500, held, stan)
    assert late.fields[39] == "12"
    await sound(app)


RULES = """[[rules]]
id = "preauth-wallet-cap"
mode = "enforce"
kind = "amount_cap"
funding = ["wallet"]
kinds = ["preauth"]
max_fen = 5000
action = "decline"
code = "61"

[[rules]]
id = "blocked-customers"
mode = "enforce"
kind = "blocklist"
key = "customer"
values = ["C-BLOCKED"]
action = "decline"
code = "62"
"""


async def test_risk_rules_see_a_code_preauth_as_kind_preauth_and_its_completion_blocklists(
    nursery: trio.Nursery, tmp_path: Any
) -> None:
    """risk.md: a pre-authorisation by code meets the rules as kind ``preauth`` with the
    code's customer and funding (a sale of the same amount does not); a completion only
    the blocklists of its pre-authorisation's scope."""
    path = tmp_path / "risk.toml"
    path.write_text(RULES)
    app = await start_switch(nursery, make_config(risk={"rules_file": str(path)}))
    await fund(app, 20_000)
    desk = Desk(await pos_client(app))
    refused, _ = await desk.preauth(await issue(app), 6_000)
    assert (refused.fields[39], refused.fields[63]) == ("61", "WAL")
    assert await balance(app, WALLET) == (20_000, 0)  # nothing held
    [row] = journal_rows(app.config, "SELECT risk_rule, customer_id FROM txn WHERE rrn = ?",
                         str(refused.fields[37]))  # fmt: skip
    assert (row["risk_rule"], row["customer_id"]) == ("preauth-wallet-cap", CUSTOMER)
    sale = await desk.client.request(desk.terminal.code_sale(desk.next(), await issue(app), 6_000))
    assert sale.fields[39] == "00"
    # A completion above the cap is not an amount_cap's (blocklists only).
    held, stan = await desk.preauth(await issue(app), 5_000)
    assert held.fields[39] == "00"
    done, _ = await desk.complete(str(held.fields[2]), 5_750, held, stan)
    assert done.fields[39] == "00"
    assert await balance(app, WALLET) == (8_250, 0)
    await sound(app)


async def test_a_credit_completion_void_reversed_stands_again_when_the_line_can_take_it(
    nursery: trio.Nursery, onus_config: SwitchConfig
) -> None:
    app = await start_switch(nursery, onus_config)
    await open_credit(app, 100_000)
    desk = Desk(await pos_client(app))
    terminal = desk.terminal
    held, stan = await desk.preauth(await credit_code(app, 3), 50_000)
    code = str(held.fields[2])
    done, done_stan = await desk.complete(code, 55_000, held, stan)
    assert (done.fields[39], done.fields[63]) == ("00", "CRL")
    void = by_code(terminal.completion_void(
        desk.next(), code, 55_000, str(done.fields[37]), str(done.fields[38]), done_stan
    ))  # fmt: skip
    voided = await desk.client.request(void)
    assert voided.fields[39] == "00"
    assert await balance(app, RECEIVABLE) == (0, 50_000)  # held again
    # Reversed: the hold's pending purchase dropped, the completion a purchase again
    # (named by its void's RRN, as its transfer is), credit.md's checks passed.
    reversal = await desk.client.request(terminal.reversal(void))
    assert (reversal.mti, reversal.fields[39]) == ("0410", "00")
    assert await balance(app, RECEIVABLE) == (-55_000, 0)
    assert await balance(app, MERCHANT_ACCOUNT) == (55_000, 0)
    assert (await status(app)).available_fen == 45_000
    plan = await in_store(app, store_of(app).credit_plan, CUSTOMER, str(voided.fields[37]))
    assert (plan.principal_fen, plan.instalments) == (55_000, 3)
    assert hold_state(app, held.fields[37]) == "completed"
    await sound(app)
    again = await desk.client.request(terminal.reversal(void))  # the terminal's repeat
    assert again.fields[39] == "00"
    assert await balance(app, RECEIVABLE) == (-55_000, 0)
    # The line cannot take it (another hold uses it meanwhile): 00, the void stands.
    held, stan = await desk.preauth(await credit_code(app), 20_000)
    code = str(held.fields[2])
    done, done_stan = await desk.complete(code, 23_000, held, stan)
    assert done.fields[39] == "00"
    void = by_code(terminal.completion_void(
        desk.next(), code, 23_000, str(done.fields[37]), str(done.fields[38]), done_stan
    ))  # fmt: skip
    assert (await desk.client.request(void)).fields[39] == "00"
    other, _ = await desk.preauth(await credit_code(app), 24_000)
    assert other.fields[39] == "00"
    assert (await status(app)).available_fen == 1_000  # 21,000 with the hold freed
    assert (await desk.client.request(terminal.reversal(void))).fields[39] == "00"
    assert await balance(app, RECEIVABLE) == (-55_000, 44_000)
    assert await balance(app, MERCHANT_ACCOUNT) == (55_000, 0)
    assert hold_state(app, held.fields[37]) == "open"
    await sound(app, pending=2)
    late, _ = await desk.complete(code, 20_000, held, stan)
    assert late.fields[39] == "00"
    assert await balance(app, RECEIVABLE) == (-75_000, 24_000)
    await sound(app, pending=1)
