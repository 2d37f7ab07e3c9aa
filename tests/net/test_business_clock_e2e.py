"""A switch on a simulated business clock (``switch run --clock START --clock-speed
N``), over loopback TCP with its simulated banks and a real SQLite journal: what it
stamps and dates follows the clock, its cut-off happens as the clock passes 23:00, and
a journal refuses the other kind of clock (or a simulated clock set behind it) in one
line, before any bank is signed on to."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import trio

from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.core.clock import BusinessClock, parse_clock_start
from switch.errors import StartupError
from switch.log import exception_leaves
from switch.store import open_operator_journal
from switch.terminal import Terminal
from switch.wire.clearing import clearing_file_name, decode_clearing_file
from tests.conftest import make_config
from tests.net.helpers import FAST_SAF, H2H, PAN_ICBC, eventually, pos_client
from tests.sim.test_server import Client, sale_fields
from tests.switch_process import (
    Process,
    assert_refused_in_one_line,
    demo_config,
    run_switch,
    start_switch,
    write_config,
)

START = "2027-01-31T22:55:00+08:00"
SPEED = 60  # a business minute a real second: 23:00 comes 5 s after the start (time to start)
CST = timedelta(hours=8)


def simulated(start: str = START, speed: float = SPEED) -> BusinessClock:
    return BusinessClock.simulated(parse_clock_start(start), speed)


def utc_field7(local_date: str, local_time: str) -> str:
    """Field 7 (MMDDhhmmss UTC) of a local 13 and 12 in 2027 at +8."""
    local = datetime.strptime(f"2027{local_date}{local_time}", "%Y%m%d%H%M%S")
    return (local - CST).strftime("%m%d%H%M%S")


async def start_on(
    nursery: trio.Nursery, config: SwitchConfig, clock: BusinessClock | None
) -> SwitchApp:
    app: SwitchApp = await nursery.start(SwitchApp(config, clock=clock).run)
    with trio.fail_after(10):
        for connector in app.connectors.values():
            await connector.wait_up()
    return app


async def refusal(nursery: trio.Nursery, app: SwitchApp) -> str:
    """Why ``app`` refused to start: the StartupError its nurseries raised."""
    try:
        await nursery.start(app.run)
    except BaseException as exc:  # what the CLI reads: a group's leaf
        (leaf,) = exception_leaves(exc)
        assert isinstance(leaf, StartupError), repr(leaf)
        assert "\n" not in str(leaf)
        assert app.connectors == {} and app.simulators == {}  # no bank was started
        return str(leaf)
    raise AssertionError("it started")


async def stop(app: SwitchApp) -> None:
    app.shutdown()
    with trio.fail_after(10):
        await app.stopped.wait()


async def test_a_simulated_clock_stamps_dates_and_cuts_off_as_it_passes_23_00(
    nursery: trio.Nursery,
) -> None:
    config = make_config()
    app = await start_on(nursery, config, simulated())
    client = await pos_client(app, Terminal())

    sale = await client.request(client.terminal.sale(1, PAN_ICBC, 10000))
    fields = sale.fields
    assert fields[39] == "00"
    local_time, local_date = str(fields[12]), str(fields[13])
    # The switch started at 22:55 on 31 January 2027 (business time), not today.
    assert local_date == "0131" and "225500" <= local_time < "240000"
    assert fields[15] == ("0131" if local_time < "230000" else "0201")
    rrn = str(fields[37])
    assert rrn[:4] == "7031"  # 2027, day 31
    sent = app.simulators["icbc"].received[-1]
    assert sent.mti == "0200" and sent.fields[37] == rrn
    assert (sent.fields[12], sent.fields[13]) == (local_time, local_date)
    assert sent.fields[7] == utc_field7(local_date, local_time)
    # The journal keeps the business time of what it records.
    operator = open_operator_journal(config)
    try:
        created_at = operator.transaction(rrn).transaction.created_at
    finally:
        operator.close()
    local = datetime.fromtimestamp(created_at, UTC) + CST
    assert (local.month, local.day, local.hour) in {(1, 31, 22), (1, 31, 23)}

    # A few real seconds at most: the business clock passes 23:00 and the date closes.
    settlement = app.settlement
    assert settlement is not None
    await eventually(lambda: settlement.calendar.last_closed() == date(2027, 1, 31))
    close = settlement.calendar.close_of(date(2027, 1, 31))
    assert close is not None and not close.forced
    assert close.at == parse_clock_start("2027-01-31T23:00:00+08:00").timestamp()
    simulator = app.simulators["icbc"]
    await eventually(
        lambda: any(m.mti == "0800" and m.fields.get(70) == "201" for m in simulator.received)
    )
    cutover = next(m for m in simulator.received if m.fields.get(70) == "201")
    assert cutover.fields[15] == "0131"
    assert str(cutover.fields[7])[:4] == "0131"  # 15:00 UTC on 31 January, or later
    # The simulated bank in the switch's process is on the same clock: it wrote its
    # clearing file for the 31st just after 23:00 on the 31st.
    path = config.clearing_dir("icbc") / clearing_file_name("icbc", date(2027, 1, 31))
    await eventually(path.exists)
    created = decode_clearing_file(path.read_bytes()).header.created
    cutoff = datetime(2027, 1, 31, 15, 0, tzinfo=UTC)
    assert cutoff <= created < cutoff + timedelta(hours=1)

    after = (await client.request(client.terminal.sale(2, PAN_ICBC, 2000))).fields
    assert after[39] == "00" and after[15] == "0201"
    assert str(after[37])[:4] == ("7031" if after[13] == "0131" else "7032")
    await client.aclose()
    await stop(app)


async def test_card_expiry_is_judged_by_the_business_month(nursery: trio.Nursery) -> None:
    """The test terminal's card expires at the end of December 2028: good today, expired
    (54, before any bank) on a clock in January 2029."""
    app = await start_on(nursery, make_config(), simulated("2029-01-01T09:00:00+08:00"))
    client = await pos_client(app, Terminal())
    refused = await client.request(client.terminal.sale(1, PAN_ICBC, 100, expiry="2812"))
    assert (refused.fields[39], refused.fields[13]) == ("54", "0101")
    assert not [m for m in app.simulators["icbc"].received if m.mti == "0200"]
    await client.aclose()
    await stop(app)


async def test_store_and_forward_reverses_on_a_clock_years_ahead(nursery: trio.Nursery) -> None:
    """Reversals are queued on the business clock and come due on it: one owed in 2028
    is sent at once, not when the wall clock reaches 2028."""
    config = make_config(banks={"icbc": {"issuer_timeout_s": 0.3}}, saf=FAST_SAF)
    app = await start_on(nursery, config, simulated("2028-06-01T10:00:00+08:00", 1440))
    client = await pos_client(app, Terminal())
    never = await client.request(client.terminal.sale(9, PAN_ICBC, 10068))  # never answered
    assert never.fields[39] == "68"
    rrn = str(never.fields[37])
    assert rrn[:4] == "8153"  # 2028, day 153

    def reversal() -> tuple[str, float] | None:
        with sqlite3.connect(config.path(config.journal.path)) as connection:
            row = connection.execute("SELECT state, created_at FROM saf WHERE rrn = ?", (rrn,))
            return row.fetchone()  # type: ignore[no-any-return]

    await eventually(lambda: (reversal() or ("", 0.0))[0] == "delivered")
    queued = reversal()
    assert queued is not None
    assert queued[1] >= parse_clock_start("2028-06-01T10:00:00+08:00").timestamp()
    reversals = [m for m in app.simulators["icbc"].received if m.mti == "0400"]
    assert [m.fields[37] for m in reversals] == [rrn]
    assert str(reversals[0].fields[7])[:4] == "0601"  # stamped on the business clock
    await client.aclose()
    await stop(app)


async def test_a_journal_refuses_the_other_kind_of_clock_in_one_line(
    nursery: trio.Nursery,
) -> None:
    rehearsal = make_config()
    app = await start_on(nursery, rehearsal, simulated())
    await stop(app)
    text = await refusal(nursery, SwitchApp(rehearsal))
    assert str(rehearsal.journal.path) in text
    assert "first run on a simulated clock" in text and "refuses the real one" in text

    production = make_config()
    app = await start_on(nursery, production, None)
    await stop(app)
    text = await refusal(nursery, SwitchApp(production, clock=simulated()))
    assert "first run on the real clock" in text and "refuses a simulated one" in text


async def test_a_simulated_clock_is_refused_behind_what_the_journal_holds(
    nursery: trio.Nursery,
) -> None:
    config = make_config()
    app = await start_on(nursery, config, simulated())
    client = await pos_client(app, Terminal())
    assert (await client.request(client.terminal.sale(1, PAN_ICBC, 100))).fields[39] == "00"
    await client.aclose()
    await stop(app)
    # A rehearsal run again from the start of the month would hand out 31 January's
    # RRNs and dates again.
    earlier = SwitchApp(config, clock=simulated("2027-01-01T09:00:00+08:00"))
    assert "behind the journal" in await refusal(nursery, earlier)
    # Later than everything it holds, the same journal runs on.
    app = await start_on(nursery, config, simulated("2027-02-03T10:00:00+08:00"))
    await stop(app)


async def test_switch_run_refuses_a_rehearsal_journal_on_the_real_clock(tmp_path: Path) -> None:
    """The operator's view: ``switch run`` on a journal first run with ``--clock``
    exits 2 with one line, before it signs on to any bank."""
    config = write_config(tmp_path, demo_config(tmp_path))
    rehearsal = await start_switch(config, args=["--clock", START, "--clock-speed", "1440"])
    try:
        started = await rehearsal.wait_for_event("switch_started")
        assert started["clock"] == "simulated from 2027-01-31T14:55:00+00:00 at 1440x"
    finally:
        assert await rehearsal.stop() == 0, rehearsal.output()
    result = run_switch(["run", "--config", str(config)])
    assert_refused_in_one_line(
        result, str(tmp_path / "journal.sqlite3"), "first run on a simulated clock"
    )
    assert '"link_signed_on"' not in result.stdout and '"bank_sim_listening"' not in result.stdout


async def test_switch_sim_bank_dates_by_the_clock_it_is_given(tmp_path: Path) -> None:
    """A stand-alone simulator on ``--clock``: in June 2029 a card that expired in
    December 2028 is declined 54 (on today's real clock it would still be good)."""
    config = write_config(tmp_path, demo_config(tmp_path))
    sim = await Process.start(
        ["sim-bank", "--config", str(config), "--bank", "icbc", "--port", "0",
         "--clock", "2029-06-15T10:00:00+08:00"],
        tmp_path, name="sim-icbc",
    )  # fmt: skip
    try:
        started = await sim.wait_for_event("simulator_started")
        assert started["clock"] == "simulated from 2029-06-15T02:00:00+00:00 at 1x"
        stream = await trio.open_tcp_stream("127.0.0.1", int(started["port"]))
        client = Client(stream, H2H)
        async with client.stream:
            await client.sign_on()
            expired = await client.exchange("0200", {**sale_fields(100), 14: "2812"})
            good = await client.exchange("0200", {**sale_fields(100), 14: "2906"})
        assert (expired.fields[39], good.fields[39]) == ("54", "00")
    finally:
        assert await sim.stop() == 0, sim.output()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--clock", "2027-01-31T22:59:00"], ["--clock", "names no UTC offset"]),
        (["--clock", "next monday"], ["--clock", "not an ISO 8601 date and time"]),
        (["--clock", START, "--clock-speed", "0"], ["--clock-speed", "'0'", "above 0"]),
        (["--clock", START, "--clock-speed", "fast"], ["--clock-speed", "'fast'"]),
        (["--clock", START, "--clock-speed", "1e9"], ["--clock-speed", "at most 86400"]),
        (["--clock-speed", "60"], ["--clock-speed needs --clock START"]),
    ],
)
@pytest.mark.parametrize("command", [["run"], ["sim-bank", "--bank", "icbc"]])
def test_bad_clock_options_are_refused_in_one_line(
    tmp_path: Path, command: list[str], options: list[str], expected: list[str]
) -> None:
    config = write_config(tmp_path, demo_config(tmp_path))
    result = run_switch([*command, "--config", str(config), *options])
    assert_refused_in_one_line(result, *expected)
    assert not (tmp_path / "journal.sqlite3").exists()
