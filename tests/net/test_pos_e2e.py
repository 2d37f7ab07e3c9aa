"""POS terminals through the real listener, switchboard, bank links and simulators,
over loopback TCP."""

from __future__ import annotations

import gc
import inspect
import types
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

import switch
from switch.core.model import Sale
from switch.terminal import Terminal, with_pin
from switch.wire.framing import PosEnvelope
from switch.wire.iso8583 import Iso8583Message
from tests.conftest import luhn_complete, make_config
from tests.net.helpers import (
    PAN_ABC,
    PAN_CITIC_CREDIT,
    PAN_CMB,
    PAN_ICBC,
    PAN_NO_ROUTE,
    eventually,
    pos_client,
    start_switch,
)

BANK_SALE_FIELDS = [2, 3, 4, 7, 11, 12, 13, 22, 25, 32, 37, 41, 42, 49, 64]
"""The fields of bank-h2h.md's sample sale, which the switch sends for a sale, with its
MAC in 64 (security.md); without a PIN (the client enters none: 22 = 022)."""


async def test_sign_on_starts_a_new_batch_and_echo_answers(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery)
    client = await pos_client(app, Terminal(batch=41))
    sign_on = await client.request(client.terminal.sign_on(1))
    assert sign_on.mti == "0810"
    assert sign_on.fields[39] == "00"
    assert sign_on.fields[60] == "00000042003"  # 60.3 echoed: 003, 3DES working keys
    assert len(str(sign_on.fields[37])) == 12
    assert len(sign_on.fields[62]) == 40 and 64 not in sign_on.fields  # security.md
    echo = await client.request(client.terminal.echo(2))
    assert (echo.mti, echo.fields[39], echo.fields[11]) == ("0830", "00", "000002")


async def test_sale_is_approved_and_reaches_the_bank_as_the_spec_shows(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    client = await pos_client(app)
    await client.send(client.terminal.sale(123, PAN_ICBC, 10000))
    envelope, response = await client.receive()
    assert envelope.tpdu == bytes.fromhex("6000000003")  # addresses swapped
    assert envelope.header == bytes.fromhex("603100310730")
    assert response.mti == "0210"
    fields = response.fields
    assert fields[39] == "00"
    assert (fields[2], fields[4], fields[11], fields[41]) == (
        PAN_ICBC,
        "000000010000",
        "000123",
        "POS00001",
    )
    assert len(str(fields[38])) == 6 and len(str(fields[37])) == 12
    assert fields[32] == "48990000"
    assert sorted(fields) == [2, 3, 4, 11, 12, 13, 15, 32, 37, 38, 39, 41, 42, 49, 60]
    # Before the 23:00 cut-off the business date is the local date, after it the next.
    local_time, local_date = str(fields[12]), str(fields[13])
    if local_time < "230000":
        assert fields[15] == local_date
    else:
        assert fields[15] != local_date

    sent = app.simulators["icbc"].received[-1]
    assert sent.mti == "0200"
    assert sorted(sent.fields) == BANK_SALE_FIELDS
    assert sent.fields[37] == fields[37]
    assert sent.fields[12] == fields[12] and sent.fields[13] == fields[13]
    assert app.simulators["icbc"].totals().approved == 10000


async def test_a_terminal_that_has_stopped_sending_still_gets_its_answer(
    nursery: trio.Nursery,
) -> None:
    """The terminal half-closes its connection while its sale is at the bank: the switch
    stops reading but answers, and only then closes its side."""
    app = await start_switch(nursery)
    app.simulators["icbc"].latency_s = 0.3
    client = await pos_client(app)
    await client.send(client.terminal.sale(7, PAN_ICBC, 2500))
    received = app.simulators["icbc"].received  # sign-ons too: look for the sale
    await eventually(lambda: any(message.mti == "0200" for message in received))
    await client.stream.send_eof()
    _, response = await client.receive()
    assert (response.mti, response.fields[39], response.fields[11]) == ("0210", "00", "000007")
    assert await client.stream.receive_some(1) == b""  # then the switch closes


SWITCH_DIR = Path(switch.__file__).parent
SIMULATORS_DIR = SWITCH_DIR / "sim"


def switch_code(code: types.CodeType) -> bool:
    """Code of the switch itself (not the test, nor the bank simulators around it)."""
    path = Path(code.co_filename)
    return path.is_relative_to(SWITCH_DIR) and not path.is_relative_to(SIMULATORS_DIR)


async def test_an_idle_connection_holds_nothing_of_its_last_request(
    nursery: trio.Nursery,
) -> None:
    """Once a sale is answered, nothing keeps its decoded request or the bank's decoded
    answer (and the clear card number in them) alive while the terminal and the link
    stay connected: thousands of idle terminals must not each hold their last sale.
    (Python does not zero what it frees: this is about live objects, not erasure.)"""
    app = await start_switch(nursery)
    client = await pos_client(app)
    amount = 31_337  # no other test's sale has it: their leftovers are not this one's
    response = await client.request(client.terminal.sale(11, PAN_ICBC, amount))
    assert response.fields[39] == "00"
    del response

    def held() -> list[object]:
        gc.collect()
        objects = gc.get_objects()
        sales = [o for o in objects if isinstance(o, Sale) and o.amount == amount]
        # Nor may a waiting task hold a decoded message of it: the bank link's reader,
        # waiting for the bank's next answer, held the last one (card number included).
        # Messages and their fields are not tracked by the collector: look in frames.
        messages = [
            (o.cr_code.co_qualname, name)
            for o in objects
            if inspect.iscoroutine(o) and o.cr_frame is not None and switch_code(o.cr_code)
            for name, value in o.cr_frame.f_locals.items()
            if isinstance(value, Iso8583Message) and value.fields.get(4) == f"{amount:012d}"
        ]
        return [*sales, *messages]

    # The request's task ends just after its answer is written: give it its turn.
    with trio.move_on_after(2):
        while held():
            await trio.sleep(0.02)
    assert held() == []
    assert (await client.request(client.terminal.echo(12))).fields[39] == "00"  # still up


async def test_each_bin_goes_to_its_bank(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery)
    client = await pos_client(app)
    for stan, (pan, bank) in enumerate(
        [(PAN_ICBC, "icbc"), (PAN_ABC, "abc"), (PAN_CMB, "cmb"), (PAN_CITIC_CREDIT, "citic")],
        start=1,
    ):
        response = await client.request(client.terminal.sale(stan, pan, 500 + stan * 100))
        assert response.fields[39] == "00", bank
        assert app.simulators[bank].totals().approved == 500 + stan * 100


async def test_decline_codes_come_from_the_bank(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery)
    client = await pos_client(app)
    for stan, code in enumerate(["51", "05", "54", "61"], start=1):
        response = await client.request(client.terminal.sale(stan, PAN_ICBC, 10000 + int(code)))
        assert response.fields[39] == code
        assert 38 not in response.fields
    assert app.simulators["icbc"].totals().approved == 0


async def test_balance_inquiry_answers_field_54(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery)
    client = await pos_client(app)
    await client.request(client.terminal.sale(1, PAN_ABC, 2500))
    response = await client.request(client.terminal.balance(2, PAN_ABC))
    assert response.fields[39] == "00"
    opening = app.config.banks["abc"].sim.opening_balance
    assert response.fields[54] == f"1002156C{opening - 2500:012d}"


async def test_refusals_before_any_bank(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery)
    client = await pos_client(app)
    unknown_bin = await client.request(client.terminal.sale(1, PAN_NO_ROUTE, 100))
    assert unknown_bin.fields[39] == "92"
    bad_luhn = await client.request(client.terminal.sale(2, PAN_ICBC[:-1] + "2", 100))
    assert bad_luhn.fields[39] == "14"
    zero = await client.request(client.terminal.sale(3, PAN_ICBC, 0))
    assert zero.fields[39] == "13"
    sent = [m for sim in app.simulators.values() for m in sim.received if m.mti != "0800"]
    assert sent == []


async def test_void_refund_and_their_limits(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery)
    client = await pos_client(app)
    terminal = client.terminal
    sale = await client.request(terminal.sale(1, PAN_CMB, 30000))
    rrn = str(sale.fields[37])

    refund = await client.request(terminal.refund(2, PAN_CMB, 10000, rrn, 1))
    assert refund.mti == "0230" and refund.fields[39] == "00"
    too_much = await client.request(terminal.refund(3, PAN_CMB, 20001, rrn, 1))
    assert too_much.fields[39] == "61"
    void_partly_refunded = await client.request(terminal.void(4, PAN_CMB, 30000, rrn, 1))
    assert void_partly_refunded.fields[39] == "12"

    bank_sale, bank_refund = [m for m in app.simulators["cmb"].received if m.mti == "0200"]
    assert bank_refund.fields[3] == "200000"
    assert bank_refund.fields[90] == (
        f"0200{bank_sale.fields[11]}{bank_sale.fields[7]}00048990000{'0' * 11}"
    )

    second = await client.request(terminal.sale(5, PAN_CMB, 7000))
    void = await client.request(terminal.void(6, PAN_CMB, 7000, str(second.fields[37]), 5))
    assert void.fields[39] == "00"
    again = await client.request(terminal.void(7, PAN_CMB, 7000, str(second.fields[37]), 5))
    assert again.fields[39] == "12"
    unknown = await client.request(terminal.void(8, PAN_CMB, 7000, "699999999999", 5))
    assert unknown.fields[39] == "25"

    totals = app.simulators["cmb"].totals()
    assert (totals.approved, totals.refunded, totals.voided) == (37000, 10000, 7000)
    assert totals.net == 20000


async def test_reversal_is_answered_00_and_reverses_at_the_bank(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery)
    client = await pos_client(app)
    sale_message = client.terminal.sale(9, PAN_ICBC, 4200)
    assert (await client.request(sale_message)).fields[39] == "00"
    reversal = await client.request(client.terminal.reversal(sale_message))
    assert reversal.mti == "0410" and reversal.fields[39] == "00"
    simulator = app.simulators["icbc"]
    await eventually(lambda: simulator.totals().reversals == 1)  # store-and-forward
    sent = simulator.received[-1]
    assert sent.mti == "0400"
    assert 35 not in sent.fields and 52 not in sent.fields
    totals = app.simulators["icbc"].totals()
    assert (totals.approved, totals.reversed, totals.net) == (4200, 4200, 0)

    # A reversal of something that never reached a bank is simply acknowledged.
    never_sent = client.terminal.sale(10, PAN_ICBC, 100)
    alone = await client.request(client.terminal.reversal(never_sent))
    assert alone.fields[39] == "00"
    assert app.simulators["icbc"].received[-1].mti == "0400"  # nothing new was sent
    assert app.simulators["icbc"].totals().reversals == 1


async def test_issuer_timeout_answers_68_and_a_late_answer_is_dropped(
    nursery: trio.Nursery, log_sink
) -> None:  # type: ignore[no-untyped-def]
    config = make_config(banks={"icbc": {"issuer_timeout_s": 0.3}})
    app = await start_switch(nursery, config)
    client = await pos_client(app)
    never = await client.request(client.terminal.sale(1, PAN_ICBC, 10068))  # sim never answers
    assert never.fields[39] == "68"

    app.simulators["icbc"].latency_s = 0.6  # answers, but after the timeout
    late = await client.request(client.terminal.sale(2, PAN_ICBC, 10000))
    assert late.fields[39] == "68"
    with trio.fail_after(5):
        while not any(link.unsolicited for link in app.connectors["icbc"].links):
            await trio.sleep(0.05)
    app.simulators["icbc"].latency_s = 0
    after = await client.request(client.terminal.sale(3, PAN_ICBC, 10000))
    assert after.fields[39] == "00"
    timed_out = [line for line in log_sink.events("txn") if line["code"] == "68"]
    assert len(timed_out) == 2  # the log says the time went to the bank
    assert all(0.3 * 1000 <= line["bank_ms"] < line["latency_ms"] for line in timed_out)


async def test_200_terminals_10_sales_each_every_response_is_its_own(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    pans = [PAN_ICBC, PAN_ABC, PAN_CMB, PAN_CITIC_CREDIT]
    results: list[tuple[str, int, str]] = []

    async def terminal_run(index: int) -> None:
        terminal = Terminal(terminal_id=f"T{index:07d}", merchant_id=f"M{index:014d}")
        client = await pos_client(app, terminal)
        try:
            for stan in range(1, 11):
                amount = 100 * index + stan * 1000 + 100  # never ends in a decline code
                response = await client.request(terminal.sale(stan, pans[index % 4], amount))
                assert response.fields[41] == terminal.terminal_id
                assert response.fields[11] == f"{stan:06d}"
                assert response.fields[4] == f"{amount:012d}"
                results.append((terminal.terminal_id, stan, str(response.fields[39])))
        finally:
            await client.aclose()

    with trio.fail_after(60):
        async with trio.open_nursery() as terminals:
            for index in range(200):
                terminals.start_soon(terminal_run, index)
    assert len(results) == 2000
    assert {code for _, _, code in results} == {"00"}
    assert len(set((t, s) for t, s, _ in results)) == 2000
    approvals = sum(sim.totals().approvals for sim in app.simulators.values())
    assert approvals == 2000


async def test_link_killed_mid_flight_answers_91_then_recovers(
    nursery: trio.Nursery, switch_clock: trio.testing.MockClock
) -> None:
    config = make_config(banks={"abc": {"links": 1, "issuer_timeout_s": 5.0}})
    app = await start_switch(nursery, config)
    simulator = app.simulators["abc"]
    simulator.latency_s = 1.0
    codes: list[str] = []

    async def one_sale(stan: int) -> None:
        client = await pos_client(app, Terminal(terminal_id=f"K{stan:07d}"))
        response = await client.request(client.terminal.sale(stan, PAN_ABC, 1000 + stan * 100))
        codes.append(str(response.fields[39]))

    async with trio.open_nursery() as senders:
        for stan in range(1, 6):
            senders.start_soon(one_sale, stan)
        with trio.fail_after(5):
            while simulator.statistics().pending < 5:
                await trio.sleep(0.01)
        simulator.drop_links()
    assert codes == ["91"] * 5
    assert simulator.totals().approvals == 0

    simulator.latency_s = 0
    with trio.fail_after(10):
        await app.connectors["abc"].wait_up()
        client = await pos_client(app)
        while True:  # the link comes back after its backoff
            response = await client.request(client.terminal.sale(99, PAN_ABC, 2000))
            if response.fields[39] == "00":
                break
            assert response.fields[39] == "91"
            await trio.sleep(0.05)
    assert app.connectors["abc"].links[0].connects >= 2


async def test_card_numbers_never_reach_the_log(nursery: trio.Nursery, log_sink) -> None:  # type: ignore[no-untyped-def]
    app = await start_switch(nursery)
    client = await pos_client(app)
    track_pan = luhn_complete("622202777766665")
    pans = [PAN_ICBC, PAN_ABC, PAN_NO_ROUTE, track_pan]
    for stan, pan in enumerate(pans, start=1):
        await client.request(client.terminal.sale(stan, pan, 1200))
    message = client.terminal.sale(9, track_pan, 1300, expiry=None)
    fields = dict(message[1])
    del fields[2]
    fields[35] = f"{track_pan}=28121011234"
    # The card's PIN under the terminal's PIK, translated to the link's ZPK: the bank
    # finds it right (security.md); neither block reaches the log.
    assert client.security is not None
    with_pin_message = with_pin(("0200", fields), client.security, "123456")
    assert (await client.request(with_pin_message)).fields[39] == "00"
    translated = app.simulators["icbc"].received[-1].fields[52]
    assert isinstance(translated, bytes) and translated != with_pin_message[1][52]

    text = log_sink.text()
    for pan in pans:
        assert pan not in text
    assert "28121011234" not in text
    for block in (translated, with_pin_message[1][52]):
        assert isinstance(block, bytes)
        assert block.hex() not in text.lower() and block.hex().upper() not in text
    lines = [line for line in log_sink.events("txn") if line["kind"] != "sign_on"]
    assert len(lines) == 5
    for line in lines:
        for key in (
            "channel",
            "terminal",
            "merchant",
            "pan",
            "amount_fen",
            "route",
            "bank",
            "stan",
            "rrn",
            "code",
            "latency_ms",
        ):
            assert key in line
    approved = [line for line in lines if line["code"] == "00"]
    assert approved[0]["pan"] == "622202*********2221"
    assert approved[0]["bank"] == "icbc" and approved[0]["route"] == "622202"
    for line in approved:  # where the time went: two commits, one bank exchange
        assert line["journal_ms"] > 0 and line["bank_ms"] > 0
        assert line["journal_ms"] + line["bank_ms"] <= line["latency_ms"]
    unrouted = next(line for line in lines if line["code"] != "00")
    assert unrouted["journal_ms"] is None and unrouted["bank_ms"] is None


async def test_a_terminal_looping_on_echo_tests_is_slowed_and_the_others_served(
    nursery: trio.Nursery, switch_clock: trio.testing.MockClock
) -> None:
    """Echo tests and sign-ons wait for nothing, so they are answered at once; past a
    few a second a connection's next ones are read more slowly, and nobody else's."""
    app = await start_switch(nursery)
    looping = await pos_client(app, Terminal(terminal_id="L0000001"))
    for stan in range(1, 101):
        await looping.send(looping.terminal.echo(stan))
    other = await pos_client(app)
    assert (await other.request(other.terminal.sale(1, PAN_ICBC, 1200))).fields[39] == "00"
    with trio.fail_after(20):
        echoes = [(await looping.receive())[1].fields[39] for _ in range(100)]
    assert echoes == ["00"] * 100  # slowed down, never refused
    assert app.pos is not None and app.pos.statistics()["slowed"] >= 1


async def test_sign_ons_are_bounded_switch_wide_so_the_days_rrns_cannot_run_out(
    nursery: trio.Nursery,
) -> None:
    """Each sign-on takes an RRN of the day's sequence: beyond their switch-wide rate a
    sign-on is answered 91 (and takes none); transactions are not affected."""
    app = await start_switch(
        nursery, make_config(switch={"sign_ons_per_s": 0.001, "sign_on_burst": 3})
    )
    assert app.switchboard is not None
    codes, rrns, clients = [], set(), []
    for index in range(6):
        client = await pos_client(app, Terminal(terminal_id=f"S{index:07d}", batch=2))
        clients.append(client)
        response = await client.request(client.terminal.sign_on(1))
        codes.append(response.fields[39])
        if 37 in response.fields:
            rrns.add(response.fields[37])
    assert codes == ["00"] * 3 + ["91"] * 3 and len(rrns) == 3
    assert app.switchboard.statistics()["sign_ons_refused"] == 3
    # A terminal that signed on transacts (its 0810 opened batch 3); one refused has no
    # working keys: 77 (security.md), and its sign-on again is refused too.
    signed_on = msgspec.structs.replace(clients[0].terminal, batch=3)
    sale = signed_on.sale(1, PAN_ICBC, 1300)
    assert (await clients[0].request(sale)).fields[39] == "00"
    assert (await client.request(client.terminal.sale(1, PAN_ICBC, 1300))).fields[39] == "77"


async def test_a_frame_that_is_not_pos_cup_is_closed_and_a_wrong_60_1_is_30(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    stranger = await pos_client(app, Terminal(envelope=PosEnvelope(
        tpdu=bytes.fromhex("7000030000"), header=bytes.fromhex("603100310730")
    )))  # fmt: skip
    await stranger.send(stranger.terminal.sale(1, PAN_ICBC, 1000))
    with pytest.raises(EOFError):
        await stranger.receive()
    client = await pos_client(app)
    mti, fields = client.terminal.sale(2, PAN_ICBC, 1000)
    fields[60] = "23" + str(fields[60])[2:]  # a void's 60.1 on a sale
    response = await client.request((mti, fields))
    assert response.fields[39] == "30"
    assert app.simulators["icbc"].totals().approvals == 0
