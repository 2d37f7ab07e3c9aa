"""Settlement of the switch's own merchants over real sockets and real files
(settlement.md, "Merchants"; wallet.md, "Settlement and files"): wallet top-ups cleared
by the simulated bank, one left out of its file and one at another amount. The bank's
amount corrects its wallet at once (``amount_mismatch``); the one left out is held for
its 2 dates, then reversed at the bank and taken back from the wallet; both as history
kind ``adjust``, in no payout row, and a settlement run again corrects nothing twice."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from switch.config import ClearingFaults, SwitchConfig
from switch.core import ledger
from switch.core.credit.plan import Terms
from switch.core.ledger import TransferKey
from switch.net.clients import OnlineClient, OnlineKey
from switch.store import open_ledger_store
from switch.wire import online as wire
from tests.conftest import REPO, make_config
from tests.net.helpers import FAST_SAF, PAN_ICBC, start_switch
from tests.net.test_app_desk_e2e import App, result
from tests.settle.test_day_e2e import (
    a_day_passes,
    on_engine,
    operator,
    rows,
    settled,
)
from tests.store.engines import ENGINES

APP, C = "app:wallet", "C100000001"
TOPUP_MERCHANT = "898310065400001"  # conf/merchants.csv's own row
WALLET = ledger.wallet_account(C)
ROUTES = [
    {"prefix": "622202", "bank": "icbc", "card": "debit"},
    {"prefix": "622848", "bank": "abc", "card": "debit"},
    {"prefix": "622588", "bank": "cmb"},
    {"prefix": "625808", "bank": "citic", "card": "credit"},
]


def own_config(tmp_path: Path) -> SwitchConfig:
    banks: dict[str, dict[str, Any]] = {
        name: {"clearing_dir": str(tmp_path / "clearing")}
        for name in ("icbc", "abc", "cmb", "citic")
    }
    return make_config(
        banks=banks, routes=ROUTES, saf=FAST_SAF, admin={"enabled": True, "port": 0},
        settlement={"merchants_file": str(REPO / "conf" / "merchants.csv"),
                    "out_dir": str(tmp_path / "out")},
    )  # fmt: skip


async def top_up(client: OnlineClient, request_id: str, amount: int) -> str:
    card = wire.Card(pan=PAN_ICBC, expiry="2812")
    await client.send(wire.WalletTopup(id=request_id, customer_id=C, amount=amount, card=card))
    with trio.fail_after(10):
        answer = await client.receive()
    assert isinstance(answer, wire.Result) and answer.code == "00", answer
    assert answer.rrn is not None
    return answer.rrn


@pytest.mark.parametrize("engine", ENGINES)
async def test_top_ups_the_bank_pays_otherwise_correct_the_wallet_once(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    config = on_engine(own_config(tmp_path), engine, request)
    store = open_ledger_store(config)
    store.open()
    try:
        store.open_wallet(C, APP, 2, date.today().isoformat(), 0.0)
    finally:
        store.close()
    async with trio.open_nursery() as nursery:
        switch = await start_switch(nursery, config)
        ledger_store = switch._ledger_store
        desk = switch._ledger
        assert ledger_store is not None and desk is not None

        async def balance(name: str) -> int:
            view = await desk.call(lambda: ledger_store.account(name))
            return 0 if view is None else view.balances.balance

        async def reaches(name: str, expected: int) -> None:
            # The corrections follow the files' writing (settlement's on_settled hook).
            with trio.move_on_after(10):
                while await balance(name) != expected:
                    await trio.sleep(0.05)
            assert await balance(name) == expected

        async def adjustments() -> list[tuple[int, str]]:
            history = await desk.call(lambda: ledger_store.history(C, APP, 50, None))
            return sorted((item.amount, item.rrn) for item in history.items
                          if item.kind == "adjust")  # fmt: skip

        client = await OnlineClient.connect(
            "127.0.0.1", switch.online_port, key=OnlineKey.demo_app()
        )
        dropped = await top_up(client, "t-1", 50_000)
        changed = await top_up(client, "t-2", 20_000)
        kept = await top_up(client, "t-3", 10_000)
        assert await balance(WALLET) == 80_000
        icbc = switch.simulators["icbc"]
        icbc.clearing_faults = ClearingFaults(drop_rrns=(dropped,), amount_rrns=(changed,))

        code, closed = await operator(switch, "settle", "cutoff")
        assert code == 0
        business_date = closed["business_date"]
        await settled(switch, business_date)
        out, stamp = tmp_path / "out", business_date.replace("-", "")
        recon = {(r["category"], r["rrn"]): r for r in rows(out / f"recon-{stamp}.csv")}
        assert recon[("switch_only", dropped)]["action"] == "held"
        assert recon[("amount_mismatch", changed)]["bank_fen"] == "20001"
        assert ("matched", kept) not in recon
        assert not [r for r in rows(out / f"payouts-{stamp}.csv")
                    if r["merchant_id"] == TOPUP_MERCHANT]  # fmt: skip
        # The bank paid 0.01 more: the wallet has it, as an adjustment. The held one:
        # nothing yet.
        await reaches(WALLET, 80_001)
        assert await adjustments() == [(1, changed)]

        # Two dates on, the left-out top-up is reversed at the bank and taken back.
        await settled(switch, await a_day_passes(switch))
        assert await balance(WALLET) == 80_001
        third = await a_day_passes(switch)
        await settled(switch, third)
        recon = {(r["category"], r["rrn"]): r
                 for r in rows(out / f"recon-{third.replace('-', '')}.csv")}  # fmt: skip
        assert recon[("switch_only", dropped)]["action"] == "reversal_queued"
        await reaches(WALLET, 30_001)
        assert await adjustments() == [(-50_000, dropped), (1, changed)]
        assert await balance("bank_clearing:icbc") == -30_001
        assert await balance("recon_loss") == 0

        # Settled again: nothing is corrected twice.
        for day in (business_date, third):
            code, _ = await operator(switch, "settle", "run", "--date", day)
            assert code == 0
        assert await balance(WALLET) == 30_001
        assert await adjustments() == [(-50_000, dropped), (1, changed)]
        assert await desk.call(ledger_store.verify) == []
        await client.aclose()
        nursery.cancel_scope.cancel()


OWN_MERCHANT = "898310099990001"


@pytest.mark.parametrize("engine", ENGINES)
async def test_repayments_by_card_the_bank_pays_otherwise_are_undone_or_booked_again(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    """credit.md, "Repayment": one repayment by card left out of the bank's files is
    undone after its 2 dates (owed again as before), one cleared at another amount is
    booked again at the bank's amount at once; a settlement run again changes nothing."""
    config = own_config(tmp_path)
    credit = msgspec.structs.replace(config.credit, own_merchant_id=OWN_MERCHANT)
    config = on_engine(msgspec.structs.replace(config, credit=credit), engine, request)
    store = open_ledger_store(config)
    store.open()
    try:
        today = date.today()
        store.open_wallet(C, APP, 2, today.isoformat(), 0.0)
        store.credit_open(C, APP, 2_000_000, statement_day=1, grace_days=9,
                          business_date=today, at=0.0)  # fmt: skip
        key = TransferKey("pos:test", "P1", "pay")
        store.credit_purchase(C, key=key, purchase_id="P1", merchant_id="SHOP01",
                              amount_fen=300_000, instalments=3, terms=Terms(),
                              at=1.0)  # fmt: skip
        store.credit_end_purchase(C, key, "P1", True, 2.0)
    finally:
        store.close()
    async with trio.open_nursery() as nursery:
        switch = await start_switch(nursery, config)
        ledger_store = switch._ledger_store
        desk = switch._ledger
        assert ledger_store is not None and desk is not None

        async def payoff() -> int:
            status = await desk.call(lambda: ledger_store.credit_status(C))
            return int(status.payoff_fen)

        owed = await payoff()
        app = await App.connect(switch)
        card = {"pan": PAN_ICBC, "expiry": "2812"}
        dropped = result(await app.ask("credit_repay", "r-1", customer_id=C, amount=100_000,
                                       card=card, **{"from": "card"}))["rrn"]  # fmt: skip
        changed = result(await app.ask("credit_repay", "r-2", customer_id=C, amount=50_000,
                                       card=card, **{"from": "card"}))["rrn"]  # fmt: skip
        assert await payoff() == owed - 150_000
        switch.simulators["icbc"].clearing_faults = ClearingFaults(
            drop_rrns=(dropped,), amount_rrns=(changed,)
        )
        code, closed = await operator(switch, "settle", "cutoff")
        assert code == 0
        business_date = closed["business_date"]
        await settled(switch, business_date)
        out, stamp = tmp_path / "out", business_date.replace("-", "")
        recon = {(r["category"], r["rrn"]): r for r in rows(out / f"recon-{stamp}.csv")}
        assert recon[("amount_mismatch", changed)]["bank_fen"] == "50001"
        assert not [r for r in rows(out / f"payouts-{stamp}.csv")
                    if r["merchant_id"] == OWN_MERCHANT]  # fmt: skip

        async def reaches(expected: int) -> None:
            with trio.move_on_after(10):  # after the files: settlement's on_settled hook
                while await payoff() != expected:
                    await trio.sleep(0.05)
            assert await payoff() == expected

        await reaches(owed - 100_000 - 50_001)  # booked again at the bank's 500.01
        await settled(switch, await a_day_passes(switch))
        assert await payoff() == owed - 150_001
        third = await a_day_passes(switch)
        await settled(switch, third)
        await reaches(owed - 50_001)  # the one never paid: owed again
        for day in (business_date, third):
            code, _ = await operator(switch, "settle", "run", "--date", day)
            assert code == 0
        assert await payoff() == owed - 50_001
        assert await desk.call(ledger_store.verify) == []
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_card_repayment_booked_at_start_up_is_undone_once_at_settlement(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    """A repayment by card whose sale the bank approved but whose booking failed (the
    switch stopped between the two: its transfer left pending) is booked by the next
    start's recovery under the sale's RRN, as the desk books one, so that settlement
    finds it: its sale left out of the bank's file, it is undone after its 2 dates,
    once, and a settlement run again changes nothing."""
    config = own_config(tmp_path)
    credit = msgspec.structs.replace(config.credit, own_merchant_id=OWN_MERCHANT)
    config = on_engine(msgspec.structs.replace(config, credit=credit), engine, request)
    store = open_ledger_store(config)
    store.open()
    try:
        today = date.today()
        store.open_wallet(C, APP, 2, today.isoformat(), 0.0)
        store.credit_open(C, APP, 2_000_000, statement_day=1, grace_days=9,
                          business_date=today, at=0.0)  # fmt: skip
        key = TransferKey("pos:test", "P1", "pay")
        store.credit_purchase(C, key=key, purchase_id="P1", merchant_id="SHOP01",
                              amount_fen=300_000, instalments=3, terms=Terms(),
                              at=1.0)  # fmt: skip
        store.credit_end_purchase(C, key, "P1", True, 2.0)
    finally:
        store.close()
    card = {"pan": PAN_ICBC, "expiry": "2812"}
    repay_key = TransferKey(APP, "r-1", "repay_card")
    async with trio.open_nursery() as first_life:
        switch = await start_switch(first_life, config)
        ledger_store = switch._ledger_store
        assert ledger_store is not None

        def fail_booking(step: str) -> None:
            if step == "desk_kept":  # the card's approval in hand, its booking lost
                raise RuntimeError("ledger lost")

        ledger_store.fault = fail_booking
        ledger_store.errors = (*ledger_store.errors, RuntimeError)  # type: ignore[misc]
        app = await App.connect(switch)
        lost = await app.ask("credit_repay", "r-1", customer_id=C, amount=100_000, card=card,
                             **{"from": "card"})  # fmt: skip
        assert lost.get("code") != "00", lost
        assert switch.simulators["icbc"].totals().approvals == 1
        assert switch.journal is not None
        sale = await switch.journal.transaction_by_online_id(OWN_MERCHANT, f"{APP} r-1")
        assert sale is not None and sale.state == "approved" and sale.rrn
        rrn = sale.rrn
        assert switch._ledger is not None
        held = await switch._ledger.call(lambda: ledger_store.transfer_of(repay_key))
        assert held is not None and held.state == "pending"
        await app.client.aclose()
        switch.shutdown()

    async with trio.open_nursery() as nursery:
        switch = await start_switch(nursery, config)  # same journal and ledger
        ledger_store = switch._ledger_store
        desk = switch._ledger
        assert ledger_store is not None and desk is not None

        async def payoff() -> int:
            status = await desk.call(lambda: ledger_store.credit_status(C))
            return int(status.payoff_fen)

        booked = await desk.call(lambda: ledger_store.transfer_of(repay_key))
        assert booked is not None and booked.state == "posted"
        repaid = await payoff()
        owed = repaid + 100_000
        # The app's repeat is the journal's approval, under the sale's RRN.
        app = await App.connect(switch)
        again = result(await app.ask("credit_repay", "r-1", customer_id=C, amount=100_000,
                                     card=card, **{"from": "card"}))  # fmt: skip
        assert again["rrn"] == rrn
        switch.simulators["icbc"].clearing_faults = ClearingFaults(drop_rrns=(rrn,))
        code, closed = await operator(switch, "settle", "cutoff")
        assert code == 0
        business_date = closed["business_date"]
        await settled(switch, business_date)
        recon = rows(tmp_path / "out" / f"recon-{business_date.replace('-', '')}.csv")
        assert [r["action"] for r in recon if r["rrn"] == rrn] == ["held"]
        assert await payoff() == repaid
        await settled(switch, await a_day_passes(switch))
        third = await a_day_passes(switch)
        await settled(switch, third)

        with trio.move_on_after(10):  # after the files: settlement's on_settled hook
            while await payoff() != owed:
                await trio.sleep(0.05)
        assert await payoff() == owed  # the repayment never paid: owed again, once
        for day in (business_date, third):
            code, _ = await operator(switch, "settle", "run", "--date", day)
            assert code == 0
        assert await payoff() == owed
        assert await desk.call(ledger_store.verify) == []
        await app.client.aclose()
        nursery.cancel_scope.cancel()
