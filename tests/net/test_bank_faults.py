"""What a bank can get wrong, through the real switch over loopback: a bank of the
test's own (tests/net/rogue_bank.py) or the simulator, each a real TCP server."""

from __future__ import annotations

import sqlite3

import trio

from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.terminal import Terminal
from switch.wire import online as wire
from switch.wire.iso8583 import Iso8583Message
from tests.conftest import LogSink, make_config
from tests.net.helpers import (
    FAST_SAF,
    H2H,
    PAN_ABC,
    PAN_ICBC,
    eventually,
    online_client,
    pos_client,
    purchase,
    start_switch,
)
from tests.net.rogue_bank import Reply, RogueBank, echoed


def saf_states(app: SwitchApp) -> list[tuple[str, str]]:
    with sqlite3.connect(app.config.path(app.config.journal.path)) as connection:
        return list(connection.execute("SELECT rrn, state FROM saf ORDER BY id"))


async def rogue_switch(nursery: trio.Nursery, rogue: RogueBank, **icbc: object) -> SwitchApp:
    """A switch whose icbc is ``rogue`` (one link, and ``icbc``'s settings)."""
    port = await nursery.start(rogue.serve)
    config: SwitchConfig = make_config(
        banks={"icbc": {"simulate": False, "port": port, "links": 1, **icbc}}, saf=FAST_SAF
    )
    return await start_switch(nursery, config)


async def test_a_terminal_id_shorter_than_8_is_matched_to_its_answers(
    nursery: trio.Nursery, log_sink: LogSink
) -> None:
    """41 is ans8: the bank echoes it space-padded. The sale is approved (not timed out
    68), and the reversal of one the bank never answers is matched and delivered."""
    config = make_config(
        banks={"icbc": {"issuer_timeout_s": 0.3, "circuit_timeouts": 2}},
        saf=FAST_SAF,
        online={"terminal_id": "ONL1"},
    )
    app = await start_switch(nursery, config)
    client = await pos_client(app, Terminal(terminal_id="T1"))
    for stan in range(1, 4):
        sale = await client.request(client.terminal.sale(stan, PAN_ICBC, 1000 * stan))
        assert sale.fields[39] == "00"
    never = await client.request(client.terminal.sale(9, PAN_ICBC, 10068))  # never answered
    assert never.fields[39] == "68"
    await eventually(lambda: saf_states(app) == [(never.fields[37], "delivered")])
    assert not app.connectors["icbc"].circuit_open()
    assert all(link.unsolicited == 0 for link in app.connectors["icbc"].links)
    online = await online_client(app)
    result = await online.request(purchase("short-1", 2500))
    assert isinstance(result, wire.Result) and result.approved


def answers_0200_with(mti: str) -> RogueBank:
    def answer(request: Iso8583Message) -> list[Reply]:
        if request.mti == "0200":
            return [echoed(request, mti, f39="00", f38="R0GUE1")]
        return [echoed(request, "0410", f39="00")]  # reversals are answered as they should

    return RogueBank(H2H, answer)


async def test_an_answer_of_the_wrong_type_is_no_answer_and_is_reversed(
    nursery: trio.Nursery,
) -> None:
    for wrong in ("0410", "0230"):
        async with trio.open_nursery() as inner:
            rogue = answers_0200_with(wrong)
            app = await rogue_switch(inner, rogue)
            client = await pos_client(app)
            response = await client.request(client.terminal.sale(1, PAN_ICBC, 1000))
            assert response.fields[39] == "96", wrong  # not an approval
            rrn = response.fields[37]
            await eventually(lambda: saf_states(app) == [(rrn, "delivered")])  # noqa: B023
            reversal = rogue.received[-1]
            assert (reversal.mti, reversal.fields[37]) == ("0400", rrn)
            inner.cancel_scope.cancel()


async def test_an_answer_without_field_39_is_no_answer_and_is_reversed(
    nursery: trio.Nursery,
) -> None:
    def answer(request: Iso8583Message) -> list[Reply]:
        if request.mti == "0200":
            return [echoed(request, "0210", f38="R0GUE1")]
        return [echoed(request, "0410", f39="00")]

    rogue = RogueBank(H2H, answer)
    app = await rogue_switch(nursery, rogue)
    client = await pos_client(app)
    response = await client.request(client.terminal.sale(1, PAN_ICBC, 1000))
    assert response.fields[39] == "96"
    await eventually(lambda: saf_states(app) == [(response.fields[37], "delivered")])


async def test_a_bank_that_floods_its_link_is_cut_off_and_slows_nobody_else(
    nursery: trio.Nursery, log_sink: LogSink
) -> None:
    rogue = RogueBank(H2H, flood=20_000)
    app = await rogue_switch(nursery, rogue, unsolicited_limit_per_s=200, reconnect_min_s=0.2)
    link = app.connectors["icbc"].links[0]
    client = await pos_client(app)
    began = trio.current_time()
    codes = []
    for stan in range(1, 31):  # sales to another bank while icbc floods its link
        response = await client.request(client.terminal.sale(stan, PAN_ABC, 1000 * stan))
        codes.append(response.fields[39])
    await eventually(lambda: link.flood_drops >= 1 and rogue.connections >= 2)
    took = trio.current_time() - began
    assert codes == ["00"] * 30
    assert link.unsolicited > 200  # counted
    lines = log_sink.events("bank_unsolicited")
    assert 1 <= len(lines) <= 2 * (took + 1) * rogue.connections  # logged at a bounded rate
    assert sum(line["count"] for line in lines) <= link.unsolicited
    downs = [line for line in log_sink.events("link_down") if "unsolicited" in line["reason"]]
    assert downs  # dropped, and re-established (rogue.connections >= 2)
