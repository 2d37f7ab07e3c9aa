"""Pre-authorisation, its void, completion and completion void (risk.md) through the
real switch over loopback TCP: POS terminals, the simulated banks (which hold and
release), a real SQLite journal, batch totals, the expiry at the cut-off on a
simulated business clock, and a bank of the test's own that misbehaves."""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta
from typing import Any

import pytest
import trio
import trio.testing

from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.core.batch import BatchTotals
from switch.core.clock import BusinessClock, parse_clock_start
from switch.terminal import Terminal
from switch.wire import online as wire
from switch.wire.iso8583 import Iso8583Message
from tests.conftest import luhn_complete, make_config
from tests.net.helpers import (
    FAST_SAF,
    H2H,
    PAN_ICBC,
    eventually,
    online_client,
    pos_client,
    start_switch,
)
from tests.net.rogue_bank import Reply, RogueBank, echoed
from tests.store.engines import ENGINES, Configure, config_maker
from tests.store.engines import journal_rows as engine_rows

PAN = luhn_complete("622690123456789")  # citic's
HOTEL = Terminal(terminal_id="POS00007", merchant_id="898310070110001", batch=17)
FRONT_DESK = Terminal(terminal_id="POS00008", merchant_id="898310070110001", batch=3)


def journal_rows(app: SwitchApp, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(app.config.path(app.config.journal.path)) as connection:
        return list(connection.execute(sql, args))


def hold_state(app: SwitchApp, rrn: object) -> str:
    [(state,)] = journal_rows(app, "SELECT hold_state FROM txn WHERE rrn = ?", rrn)
    return str(state)


def saf_states(app: SwitchApp) -> list[tuple[str, str]]:
    return [
        (str(rrn), str(state))
        for rrn, state in journal_rows(app, "SELECT rrn, state FROM saf ORDER BY id")
    ]


def bank_messages(app: SwitchApp, bank: str, mti: str) -> list[Iso8583Message]:
    return [m for m in app.simulators[bank].received if m.mti == mti]


async def test_preauth_completion_limit_and_batch_totals(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery)
    citic = app.simulators["citic"]
    opening = citic.balance(PAN)
    client = await pos_client(app, HOTEL)
    approval = await client.request(client.terminal.preauth(201, PAN, 50000))
    fields = approval.fields
    assert (approval.mti, fields[39]) == ("0110", "00")
    assert sorted(fields) == [2, 3, 4, 11, 12, 13, 15, 32, 37, 38, 39, 41, 42, 49, 60]
    auth, rrn, day = str(fields[38]), str(fields[37]), str(fields[13])
    [sent] = bank_messages(app, "citic", "0100")
    assert (sent.fields[3], sent.fields[25], sent.fields[37]) == ("030000", "06", rrn)
    assert 90 not in sent.fields and 38 not in sent.fields
    assert citic.held(PAN) == 50000 and citic.balance(PAN) == opening - 50000
    assert hold_state(app, rrn) == "open"

    # Above 115 %: 61, nothing sent. Then 520.00 from another terminal of the hotel.
    desk = await pos_client(app, FRONT_DESK)
    over = await desk.request(desk.terminal.completion(1, PAN, 57501, auth, 201, day,
                                                       original_batch=17))  # fmt: skip
    assert (over.mti, over.fields[39]) == ("0210", "61")
    assert bank_messages(app, "citic", "0200") == []
    wrong_card = await desk.request(
        desk.terminal.completion(2, luhn_complete("622690123456788"), 52000, auth, 201, day,
                                 original_batch=17)
    )  # fmt: skip
    assert wrong_card.fields[39] == "25"
    done = await desk.request(desk.terminal.completion(3, PAN, 52000, auth, 201, day,
                                                       original_batch=17))  # fmt: skip
    assert (done.mti, done.fields[39]) == ("0210", "00")
    [completion] = bank_messages(app, "citic", "0200")
    assert (completion.fields[3], completion.fields[25], completion.fields[38]) == (
        "000000", "06", auth,
    )  # fmt: skip
    assert str(completion.fields[90]).startswith("0100" + str(sent.fields[11]))
    assert citic.held(PAN) == 0 and citic.balance(PAN) == opening - 52000
    assert hold_state(app, rrn) == "completed"
    again = await desk.request(desk.terminal.completion(4, PAN, 100, auth, 201, day,
                                                        original_batch=17))  # fmt: skip
    assert again.fields[39] == "12"

    # Batch totals: the completion counts at the desk (a debit), the pre-auth nowhere.
    hotel = await client.request(client.terminal.settlement(300, BatchTotals()))
    assert str(hotel.fields[48])[30] == "1"
    desk_totals = BatchTotals(debit_fen=52000, debit_count=1)
    settled = await desk.request(desk.terminal.settlement(5, desk_totals))
    assert str(settled.fields[48])[30] == "1"
    # The completion is in the bank's clearing, the pre-authorisation is not.
    [record] = citic.open_records()
    assert (record.mti, record.amount, record.direction) == ("0200", 52000, "D")


async def test_voids_release_and_a_completion_void_reopens(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery)
    citic = app.simulators["citic"]
    client = await pos_client(app, HOTEL)
    first = await client.request(client.terminal.preauth(1, PAN, 30000))
    auth, rrn = str(first.fields[38]), str(first.fields[37])
    wrong = await client.request(client.terminal.preauth_void(2, PAN, 29999, rrn, auth, 1))
    assert (wrong.mti, wrong.fields[39]) == ("0110", "64")
    void = await client.request(client.terminal.preauth_void(3, PAN, 30000, rrn, auth, 1))
    assert (void.mti, void.fields[39]) == ("0110", "00")
    [sent] = [m for m in bank_messages(app, "citic", "0100") if m.fields[3] == "020000"]
    assert (sent.fields[25], sent.fields[38]) == ("06", auth)
    assert str(sent.fields[90]).startswith("0100")
    assert citic.held(PAN) == 0 and hold_state(app, rrn) == "voided"
    late = await client.request(
        client.terminal.completion(4, PAN, 100, auth, 1, str(first.fields[13]))
    )
    assert late.fields[39] == "12"

    second = await client.request(client.terminal.preauth(5, PAN, 40000))
    auth2, rrn2, day = str(second.fields[38]), str(second.fields[37]), str(second.fields[13])
    done = await client.request(client.terminal.completion(6, PAN, 40000, auth2, 5, day, rrn=rrn2))
    assert done.fields[39] == "00" and citic.held(PAN) == 0
    cancel = await client.request(
        client.terminal.completion_void(7, PAN, 40000, str(done.fields[37]),
                                        str(done.fields[38]), 6)
    )  # fmt: skip
    assert (cancel.mti, cancel.fields[39]) == ("0210", "00")
    bank_void = bank_messages(app, "citic", "0200")[-1]
    assert bank_void.fields[3] == "020000" and 38 not in bank_void.fields
    assert citic.held(PAN) == 40000  # held again
    await eventually(lambda: hold_state(app, rrn2) == "open")
    redo = await client.request(client.terminal.completion(8, PAN, 45000, auth2, 5, day))
    assert redo.fields[39] == "00" and citic.held(PAN) == 0
    # In the batch: only the standing completion.
    totals = BatchTotals(debit_fen=45000, debit_count=1)
    settled = await client.request(client.terminal.settlement(9, totals))
    assert str(settled.fields[48])[30] == "1"


async def test_terminal_reversals_release_and_reopen(nursery: trio.Nursery) -> None:
    config = make_config(saf=FAST_SAF)
    app = await start_switch(nursery, config)
    citic = app.simulators["citic"]
    client = await pos_client(app, HOTEL)
    preauth = client.terminal.preauth(1, PAN, 20000)
    held = await client.request(preauth)
    auth, rrn, day = str(held.fields[38]), str(held.fields[37]), str(held.fields[13])
    completion = client.terminal.completion(2, PAN, 21000, auth, 1, day)
    assert (await client.request(completion)).fields[39] == "00"
    assert citic.held(PAN) == 0
    # The terminal reverses the completion: the hold is back, the pre-auth open again.
    reversed_ = await client.request(client.terminal.reversal(completion))
    assert (reversed_.mti, reversed_.fields[39]) == ("0410", "00")
    await eventually(lambda: citic.held(PAN) == 20000)
    assert hold_state(app, rrn) == "open"
    # ...and then the pre-authorisation: its 0400 names the 0100, the hold goes.
    assert (await client.request(client.terminal.reversal(preauth))).fields[39] == "00"
    await eventually(lambda: citic.held(PAN) == 0)
    reversal = bank_messages(app, "citic", "0400")[-1]
    assert str(reversal.fields[90]).startswith("0100") and reversal.fields[37] == rrn
    assert hold_state(app, rrn) == "reversed"
    late = await client.request(client.terminal.completion(3, PAN, 100, auth, 1, day))
    assert late.fields[39] == "12"


async def test_an_issuer_answering_late_gets_the_hold_reversed(nursery: trio.Nursery) -> None:
    config = make_config(banks={"citic": {"issuer_timeout_s": 0.3}}, saf=FAST_SAF)
    app = await start_switch(nursery, config)
    simulator = app.simulators["citic"]
    simulator.latency_s = 0.6
    client = await pos_client(app, HOTEL)
    answer = await client.request(client.terminal.preauth(1, PAN, 10000))
    assert (answer.mti, answer.fields[39]) == ("0110", "68")
    rrn = str(answer.fields[37])
    simulator.latency_s = 0.0
    await eventually(lambda: saf_states(app) == [(rrn, "delivered")])
    await eventually(lambda: simulator.held(PAN) == 0)  # the late hold is released
    reversal = bank_messages(app, "citic", "0400")[-1]
    assert str(reversal.fields[90]).startswith("0100")


# -- a bank of the test's own -----------------------------------------------------------


def preauth_answered_with(answer_0100: list[str] | None) -> RogueBank:
    """A bank that answers a 0100 with these MTIs' approvals (None or []: never)."""

    def answer(request: Iso8583Message) -> list[Reply]:
        if request.mti == "0100":
            return [echoed(request, mti, f39="00", f38="R0GUE1") for mti in answer_0100 or ()]
        if request.mti.startswith("040"):
            return [echoed(request, "0410", f39="00")]
        return [echoed(request, "0210", f39="00", f38="R0GUE2")]

    return RogueBank(H2H, answer)


async def rogue_switch(nursery: trio.Nursery, rogue: RogueBank) -> SwitchApp:
    port = await nursery.start(rogue.serve)
    config: SwitchConfig = make_config(
        banks={"icbc": {"simulate": False, "port": port, "links": 1, "issuer_timeout_s": 0.3}},
        saf=FAST_SAF,
    )
    return await start_switch(nursery, config)


async def test_a_bank_that_never_answers_or_answers_the_wrong_type_is_reversed(
    nursery: trio.Nursery,
) -> None:
    for answers, code in (([], "68"), (["0210"], "96"), (["0410"], "96")):
        async with trio.open_nursery() as inner:
            rogue = preauth_answered_with(answers)
            app = await rogue_switch(inner, rogue)
            client = await pos_client(app, HOTEL)
            response = await client.request(client.terminal.preauth(1, PAN_ICBC, 10000))
            assert (response.mti, response.fields[39]) == ("0110", code), answers
            rrn = str(response.fields[37])
            await eventually(lambda: saf_states(app) == [(rrn, "delivered")])  # noqa: B023
            reversal = rogue.received[-1]
            assert (reversal.mti, reversal.fields[37]) == ("0400", rrn)
            assert str(reversal.fields[90]).startswith("0100")
            # No hold: a completion of it is refused before any bank.
            sent = len(rogue.received)
            late = await client.request(
                client.terminal.completion(2, PAN_ICBC, 100, "R0GUE1", 1, str(response.fields[13]))
            )
            assert late.fields[39] in ("25", "12") and len(rogue.received) == sent
            inner.cancel_scope.cancel()


# -- expiry at the cut-off, on a simulated business clock ---------------------------------

START = "2027-03-10T22:58:00+08:00"


async def test_an_open_preauth_expires_at_the_cutoff_and_is_reversed(
    nursery: trio.Nursery, switch_clock: trio.testing.MockClock
) -> None:
    """expiry_days = 1: a pre-authorisation of business date D expires at the cut-off
    that closes D + 1 (not before), and its reversal (0400 naming its 0100) is queued
    and delivered; the simulated bank's hold is released. 3,600 business seconds a
    second of trio's mock clock: two cut-offs pass in under a minute of it."""
    clock = BusinessClock.simulated(parse_clock_start(START), 3600, monotonic=trio.current_time)
    config = make_config(saf=FAST_SAF, preauth={"expiry_days": 1})
    app: SwitchApp = await nursery.start(SwitchApp(config, clock=clock).run)
    with trio.fail_after(10):
        for connector in app.connectors.values():
            await connector.wait_up()
    settlement = app.settlement
    assert settlement is not None
    citic = app.simulators["citic"]
    client = await pos_client(app, HOTEL)
    approval = await client.request(client.terminal.preauth(1, PAN, 10000))
    assert approval.fields[39] == "00"
    rrn, auth = str(approval.fields[37]), str(approval.fields[38])
    booked = date(2027, int(str(approval.fields[15])[:2]), int(str(approval.fields[15])[2:]))
    [(until,)] = journal_rows(app, "SELECT hold_until FROM txn WHERE rrn = ?", rrn)
    assert until == (booked + timedelta(days=1)).isoformat()
    await eventually(lambda: settlement.calendar.last_closed() == booked, within_s=120)
    assert hold_state(app, rrn) == "open" and citic.held(PAN) == 10000  # not yet
    await eventually(
        lambda: settlement.calendar.last_closed() == booked + timedelta(days=1), within_s=120
    )
    await eventually(lambda: saf_states(app) == [(rrn, "delivered")], within_s=60)
    assert hold_state(app, rrn) == "expired"
    reversal = bank_messages(app, "citic", "0400")[-1]
    assert reversal.fields[37] == rrn and str(reversal.fields[90]).startswith("0100")
    assert citic.held(PAN) == 0
    [(reason,)] = journal_rows(app, "SELECT reason FROM saf WHERE rrn = ?", rrn)
    assert reason == "expired"
    late = await client.request(
        client.terminal.completion(2, PAN, 100, auth, 1, str(approval.fields[13]))
    )
    assert late.fields[39] == "12"


# -- online (risk.md, "Online request types") ---------------------------------------------


async def test_online_preauth_completion_and_their_voids(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery)
    citic = app.simulators["citic"]
    client = await online_client(app)
    card = wire.Card(pan=PAN, expiry="2812")
    hold = await client.request(
        wire.Preauth(id="pa-1", merchant_id="SHOP01", amount=50000, currency="CNY", card=card,
                     device_id="phone:42")
    )  # fmt: skip
    assert isinstance(hold, wire.Result) and hold.approved, hold
    assert hold.settlement_date is None and hold.auth_code is not None
    last = date.fromisoformat(str(hold.last_completion_date))
    [sent] = bank_messages(app, "citic", "0100")
    assert (sent.fields[3], sent.fields[25]) == ("030000", "06")
    assert citic.held(PAN) == 50000
    [(until,)] = journal_rows(app, "SELECT hold_until FROM txn WHERE rrn = ?", hold.rrn)
    assert until == last.isoformat()

    over = await client.request(
        wire.Completion(id="c-0", merchant_id="SHOP01", original_id="pa-1", amount=57501)
    )
    assert isinstance(over, wire.Result) and over.code == "61"
    done = await client.request(
        wire.Completion(id="c-1", merchant_id="SHOP01", original_id="pa-1", amount=52000)
    )
    assert isinstance(done, wire.Result) and done.approved and done.settlement_date
    completion = bank_messages(app, "citic", "0200")[-1]
    assert (completion.fields[25], completion.fields[38]) == ("06", hold.auth_code)
    # A completion is voided by `void` and refunded by `refund` naming it.
    void = await client.request(wire.Void(id="v-1", merchant_id="SHOP01", original_id="c-1"))
    assert isinstance(void, wire.Result) and void.approved
    assert citic.held(PAN) == 50000
    again = await client.request(
        wire.Completion(id="c-2", merchant_id="SHOP01", original_id="pa-1", amount=50000)
    )
    assert isinstance(again, wire.Result) and again.approved
    refund = await client.request(
        wire.Refund(id="r-1", merchant_id="SHOP01", original_id="c-2", amount=1000)
    )
    assert isinstance(refund, wire.Result) and refund.approved

    other = await client.request(
        wire.Preauth(id="pa-2", merchant_id="SHOP01", amount=7000, currency="CNY", card=card)
    )
    assert isinstance(other, wire.Result) and other.approved
    released = await client.request(
        wire.PreauthVoid(id="pv-1", merchant_id="SHOP01", original_id="pa-2")
    )
    assert isinstance(released, wire.Result) and released.approved
    assert released.settlement_date is None and citic.held(PAN) == 0
    status = await client.request(wire.Status(id="s-1", merchant_id="SHOP01", original_id="pa-1"))
    assert isinstance(status, wire.Result)
    assert (status.rrn, status.last_completion_date) == (hold.rrn, hold.last_completion_date)
    bad = await client.request(
        wire.Preauth(id="pa-3", merchant_id="SHOP01", amount=7000, currency="CNY", card=card,
                     device_id="phone 42")
    )  # fmt: skip
    assert isinstance(bad, wire.Error) and bad.code == "30" and "device_id" in bad.message


# -- a pre-authorisation the book no longer holds, on both engines ------------------------


@pytest.fixture(params=ENGINES)
def configure(request: pytest.FixtureRequest) -> Configure:
    return config_maker(request)


async def test_a_completion_finds_in_the_journal_a_preauth_the_book_forgot(
    nursery: trio.Nursery, configure: Configure
) -> None:
    """A book of 2 records: by the completion the pre-authorisation is only in the
    journal, found there by merchant, 38 and 61.3 (holds_by_authorisation); its
    void-by-completion-void and the hold's state are the journal's too."""
    config = configure(book={"max_records": 2})
    app = await start_switch(nursery, config)
    client = await pos_client(app, HOTEL)
    held = await client.request(client.terminal.preauth(1, PAN, 50000))
    auth, rrn, day = str(held.fields[38]), str(held.fields[37]), str(held.fields[13])
    for stan in (2, 3, 4):  # push it out of the book
        assert (await client.request(client.terminal.sale(stan, PAN_ICBC, 100))).fields[39] == "00"
    over = await client.request(client.terminal.completion(5, PAN, 57501, auth, 1, day))
    assert over.fields[39] == "61"
    done = await client.request(client.terminal.completion(6, PAN, 57500, auth, 1, day))
    assert done.fields[39] == "00"
    [row] = engine_rows(config, "SELECT hold_state FROM txn WHERE rrn = ?", rrn)
    assert row["hold_state"] == "completed"
    for stan in (7, 8, 9):
        assert (await client.request(client.terminal.sale(stan, PAN_ICBC, 100))).fields[39] == "00"
    cancel = await client.request(
        client.terminal.completion_void(10, PAN, 57500, str(done.fields[37]),
                                        str(done.fields[38]), 6)
    )  # fmt: skip
    assert cancel.fields[39] == "00"
    [row] = engine_rows(config, "SELECT hold_state FROM txn WHERE rrn = ?", rrn)
    assert row["hold_state"] == "open"
    assert app.simulators["citic"].held(PAN) == 50000
