"""Stand-in processing (risk.md, "Stand-in processing (STIP)") through the real switch
over loopback: citic's bank is a simulator the test starts and stops on a port of its
own, so the switch finds it down (no link signed on) and then back; its advices go out
when it is."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from switch import ops
from switch.admin.collect import StatusCollector
from switch.admin.metrics import exposition, metrics_registry
from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.sim.server import BankSimulator
from switch.store import open_operator_journal
from switch.store.rows import events_of
from switch.terminal import Terminal
from switch.wire import online as wire
from switch.wire.iso8583 import Iso8583Message
from tests.conftest import REPO, LogSink, luhn_complete, make_config
from tests.net.helpers import (
    FAST_SAF,
    H2H,
    PAN_CITIC_CREDIT,
    eventually,
    online_client,
    pos_client,
    purchase,
)
from tests.net.rogue_bank import Reply, RogueBank, echoed
from tests.net.test_durability import saf_list_command
from tests.switch_process import run_switch

MERCHANTS = str(REPO / "conf" / "merchants.csv")
PAN_CITIC_OTHER = luhn_complete("622690000000000001")  # routed to citic, not covered
STAND_IN = {"enabled": True, "bins": ["625808"], "single_cap_fen": 200_000}


async def free_port() -> int:
    probe = trio.socket.socket()
    await probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


def citic_down_config(port: int, **stand_in: object) -> SwitchConfig:
    return make_config(
        banks={"citic": {"simulate": False, "port": port, "links": 1,
                         "stand_in": {**STAND_IN, **stand_in}}},
        saf={**FAST_SAF, "max_attempts": 3},
        settlement={"merchants_file": MERCHANTS},
    )  # fmt: skip


async def start_without_citic(nursery: trio.Nursery, config: SwitchConfig) -> SwitchApp:
    """The switch, its simulated banks up; citic's is not there."""
    app: SwitchApp = await nursery.start(SwitchApp(config).run)
    with trio.fail_after(10):
        for name, connector in app.connectors.items():
            if name != "citic":
                await connector.wait_up()
    return app


async def citic_back(nursery: trio.Nursery, config: SwitchConfig) -> BankSimulator:
    simulator = BankSimulator("citic", config.banks["citic"], H2H)
    await nursery.start(simulator.serve)
    return simulator


def rows(app: SwitchApp, statement: str, *parameters: Any) -> list[dict[str, Any]]:
    with sqlite3.connect(app.config.path(app.config.journal.path)) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute(statement, parameters)]


def advices(app: SwitchApp) -> list[tuple[str, str, int]]:
    return [
        (row["rrn"], row["state"], row["attempts"])
        for row in rows(app, "SELECT rrn, state, attempts FROM advice ORDER BY id")
    ]


async def test_eligible_sales_are_stood_in_the_rest_91_and_advices_go_in_order_after(
    nursery: trio.Nursery, log_sink: LogSink
) -> None:
    port = await free_port()
    config = citic_down_config(port)
    app = await start_without_citic(nursery, config)
    client = await pos_client(app)

    first = await client.request(client.terminal.sale(1, PAN_CITIC_CREDIT, 8800))
    assert first.fields[39] == "00"
    rrn1 = str(first.fields[37])
    assert first.fields[38] == "S" + rrn1[-5:]
    # Not stood in, each journaled with why: above the single cap; a card the bank's
    # stand-in does not cover.
    too_big = await client.request(client.terminal.sale(2, PAN_CITIC_CREDIT, 200_001))
    uncovered = await client.request(client.terminal.sale(3, PAN_CITIC_OTHER, 1000))
    assert (too_big.fields[39], uncovered.fields[39]) == ("91", "91")
    second = await client.request(client.terminal.sale(4, PAN_CITIC_CREDIT, 12000))
    assert second.fields[39] == "00"
    rrn2 = str(second.fields[37])

    stood = rows(app, "SELECT rrn, state, code, auth_code, stand_in FROM txn "
                      "WHERE stand_in IS NOT NULL ORDER BY rrn")  # fmt: skip
    assert [(r["rrn"], r["state"], r["code"], r["stand_in"]) for r in stood] == [
        (rrn1, "approved", "00", "no_link"), (rrn2, "approved", "00", "no_link"),
    ]  # fmt: skip
    refused = [
        detail
        for row in rows(app, "SELECT events FROM txn WHERE state = 'not_sent' ORDER BY rrn")
        for *_, detail in events_of(row["events"])
        if detail is not None
    ]
    assert [detail.split("not stood in: ")[1] for detail in refused] == [
        "single cap", "card not covered"
    ]
    assert advices(app) == [(rrn1, "queued", 0), (rrn2, "queued", 0)]
    lines = [e for e in log_sink.events("txn") if e.get("stand_in")]
    assert [(e["rrn"], e["stand_in_reason"]) for e in lines] == [
        (rrn1, "no_link"), (rrn2, "no_link")
    ]

    # /status, `switch status` and /metrics: per bank, stood in today, advices pending.
    collector = StatusCollector(app)
    await collector.refresh()
    (citic,) = [row for row in collector.document().stand_in if row.bank == "citic"]
    assert (citic.approvals, citic.today, citic.pending, citic.pending_fen, citic.manual) == (
        2, 2, 2, 8800 + 12000, 0
    )
    assert citic.declines == {"single cap": 1, "card not covered": 1}
    assert citic.oldest_age_s is not None
    scraped = exposition(metrics_registry(collector), "text/plain")[0].decode()
    assert 'payswitch_stand_in_approvals_total{bank="citic"} 2.0' in scraped
    assert 'payswitch_stand_in_declines_total{bank="citic",reason="single cap"} 1.0' in scraped
    assert 'payswitch_stand_in_advices_pending_fen{bank="citic"} 20800.0' in scraped

    simulator = await citic_back(nursery, config)
    await eventually(lambda: [a[1] for a in advices(app)] == ["accepted", "accepted"])
    # Counted once the forwarder is back from the commit that recorded the answer.
    await eventually(lambda: app.stand_in.advices.get(("citic", "accepted")) == 2)
    await collector.refresh()
    (citic,) = [row for row in collector.document().stand_in if row.bank == "citic"]
    assert (citic.pending, citic.pending_fen, citic.advices) == (0, 0, {"accepted": 2})
    sent = [m for m in simulator.received if m.mti in ("0220", "0221")]
    assert [(m.mti, m.fields[37], m.fields[38], m.fields[39]) for m in sent] == [
        ("0220", rrn1, "S" + rrn1[-5:], "00"), ("0220", rrn2, "S" + rrn2[-5:], "00"),
    ]  # fmt: skip
    # The accepted send is the sale's bank message now (a later void names it in 90).
    sale = rows(app, "SELECT bank_mti, bank_stan, advice_state FROM txn WHERE rrn = ?", rrn1)[0]
    assert sale == {"bank_mti": "0220", "bank_stan": sent[0].fields[11],
                    "advice_state": "accepted"}  # fmt: skip
    assert app.stand_in.approvals["citic"] == 2
    assert app.stand_in.declines[("citic", "single cap")] == 1
    assert app.stand_in.tally.pending("citic") == 0


async def test_a_refused_advice_is_final_and_one_answered_96_is_repeated_as_0221(
    nursery: trio.Nursery,
) -> None:
    port = await free_port()
    config = citic_down_config(port)
    app = await start_without_citic(nursery, config)
    client = await pos_client(app)
    one = await client.request(client.terminal.sale(1, PAN_CITIC_CREDIT, 5000))
    two = await client.request(client.terminal.sale(2, PAN_CITIC_CREDIT, 6000))
    assert (one.fields[39], two.fields[39]) == ("00", "00")

    refusing = msgspec.structs.replace(
        config.banks["citic"],
        sim=msgspec.structs.replace(config.banks["citic"].sim, refuse_advices="96"),
    )
    simulator = BankSimulator("citic", refusing, H2H)
    await nursery.start(simulator.serve)
    # 96: sent again (0221, new 11 and 7) up to max_attempts, then manual; the next goes.
    await eventually(lambda: advices(app)[0][1:] == ("manual", 3))
    first_sends = [m for m in simulator.received if m.fields.get(37) == one.fields[37]]
    assert [m.mti for m in first_sends] == ["0220", "0221", "0221"]
    assert len({(m.fields[11], m.fields[7]) for m in first_sends}) == 3
    await eventually(lambda: advices(app)[1][1:] == ("manual", 3))

    journal = open_operator_journal(app.config)
    try:
        listed = ops.advice_list(journal)
        assert [(r["id"], r["rrn"], r["state"]) for r in listed] == [
            ("A1", one.fields[37], "manual"), ("A2", two.fields[37], "manual")
        ]
        simulator._bank.refuse_advices = "05"  # the bank now refuses: finally
        ops.advice_retry(journal, 1)
        await eventually(lambda: advices(app)[0][1] == "refused")
        simulator._bank.refuse_advices = None
        ops.advice_retry(journal, 2)
    finally:
        journal.close()
    await eventually(lambda: advices(app)[1][1] == "accepted")
    await eventually(lambda: app.stand_in.advices.get(("citic", "accepted")) == 1)
    again = [m.mti for m in simulator.received if m.fields.get(37) == two.fields[37]]
    assert again[-1] == "0221"
    losses = app.stand_in.advices
    assert losses[("citic", "refused")] == 1 and losses[("citic", "accepted")] == 1


async def test_a_bank_91_is_stood_in_and_a_timed_out_one_never(nursery: trio.Nursery) -> None:
    """91 from the bank: it did not act, so the sale is stood in (bank_91). A request
    that got no answer in time may have been approved: never stood in (68)."""

    def answer(request: Iso8583Message) -> list[Reply]:
        if request.mti == "0200" and request.fields[4] == "000000001091":
            return [echoed(request, "0210", f39="91")]
        if request.mti == "0200":
            return []  # never answered
        if request.mti in ("0220", "0221"):
            return [echoed(request, "0230", f39="00")]
        return [echoed(request, "0410", f39="00")]

    rogue = RogueBank(H2H, answer)
    port = await nursery.start(rogue.serve)
    config = citic_down_config(port, channels=["pos"])
    config = msgspec.structs.replace(
        config,
        banks={**config.banks, "citic": msgspec.structs.replace(
            config.banks["citic"], issuer_timeout_s=0.3, circuit_timeouts=100)},
    )  # fmt: skip
    app = await start_without_citic(nursery, config)
    with trio.fail_after(10):
        await app.connectors["citic"].wait_up()
    client = await pos_client(app, Terminal(terminal_id="POS00002"))
    declined_91 = await client.request(client.terminal.sale(1, PAN_CITIC_CREDIT, 1091))
    assert declined_91.fields[39] == "00"
    rrn = str(declined_91.fields[37])
    assert declined_91.fields[38] == "S" + rrn[-5:]
    assert rows(app, "SELECT stand_in, state FROM txn WHERE rrn = ?", rrn) == [
        {"stand_in": "bank_91", "state": "approved"}
    ]
    timed_out = await client.request(client.terminal.sale(2, PAN_CITIC_CREDIT, 10068))
    assert timed_out.fields[39] == "68"
    await eventually(lambda: advices(app) == [(rrn, "accepted", 1)])
    assert [m.mti for m in rogue.received if m.mti.startswith("022")] == ["0220"]
    assert rows(app, "SELECT count(*) AS n FROM txn WHERE stand_in IS NOT NULL") == [{"n": 1}]


def state_of(app: SwitchApp, rrn: object) -> dict[str, Any]:
    return rows(app, "SELECT state, voided, reversed, advice_state FROM txn WHERE rrn = ?",
                rrn)[0]  # fmt: skip


async def test_voids_reversals_and_refunds_of_stood_in_sales_by_advice_state(
    nursery: trio.Nursery,
) -> None:
    """risk.md's table: advice never sent, the void and the reversal are done in the
    switch (00, advice cancelled), a refund 91; accepted, a void goes to the bank as
    for any sale, 90 naming the accepted 0220."""
    port = await free_port()
    config = citic_down_config(port)
    app = await start_without_citic(nursery, config)
    client = await pos_client(app)
    terminal = client.terminal
    voided = await client.request(terminal.sale(1, PAN_CITIC_CREDIT, 1000))
    reversed_sale = terminal.sale(2, PAN_CITIC_CREDIT, 2000)
    to_reverse = await client.request(reversed_sale)
    kept = await client.request(terminal.sale(3, PAN_CITIC_CREDIT, 3000))
    assert [r.fields[39] for r in (voided, to_reverse, kept)] == ["00", "00", "00"]

    void = await client.request(terminal.void(4, PAN_CITIC_CREDIT, 1000, voided.fields[37], 1))
    assert void.fields[39] == "00"
    reversal = await client.request(terminal.reversal(reversed_sale))
    assert reversal.fields[39] == "00"
    refund = await client.request(terminal.refund(5, PAN_CITIC_CREDIT, 500, kept.fields[37], 3))
    assert refund.fields[39] == "91"
    assert state_of(app, voided.fields[37])["voided"] == 1
    assert state_of(app, to_reverse.fields[37])["reversed"] == 1
    assert rows(app, "SELECT count(*) AS n FROM saf") == [{"n": 0}]  # nothing to reverse

    simulator = await citic_back(nursery, config)
    await eventually(
        lambda: [a[1] for a in advices(app)] == ["cancelled", "cancelled", "accepted"]
    )
    sent = [m for m in simulator.received if m.mti.startswith("02")]
    assert [(m.mti, m.fields[37]) for m in sent] == [("0220", kept.fields[37])]
    # Accepted: its void goes to the bank, 90 naming the accepted advice.
    void_kept = await client.request(terminal.void(6, PAN_CITIC_CREDIT, 3000, kept.fields[37], 3))
    assert void_kept.fields[39] == "00"
    to_bank = [m for m in simulator.received if m.mti == "0200"][-1]
    accepted = sent[0]
    assert str(to_bank.fields[90]).startswith(f"0220{accepted.fields[11]}{accepted.fields[7]}")
    assert state_of(app, kept.fields[37])["voided"] == 1


async def test_a_stood_in_sale_whose_advice_is_out_is_reversed_once_it_is_accepted(
    nursery: trio.Nursery,
) -> None:
    """Sent without a final answer: a void is 91; the terminal's reversal is answered 00
    and its 0400 queued behind the advice, sent once the advice is accepted."""
    answering = trio.Event()

    def answer(request: Iso8583Message) -> list[Reply]:
        if request.mti in ("0220", "0221"):
            return [echoed(request, "0230", f39="00")] if answering.is_set() else []
        if request.mti in ("0400", "0401"):
            return [echoed(request, "0410", f39="00")]
        return [echoed(request, "0210", f39="91")]  # the bank does not act on sales

    rogue = RogueBank(H2H, answer)
    port = await nursery.start(rogue.serve)
    config = citic_down_config(port)
    config = msgspec.structs.replace(
        config,
        banks={**config.banks, "citic": msgspec.structs.replace(
            config.banks["citic"], issuer_timeout_s=0.3, circuit_timeouts=1000)},
        saf=msgspec.structs.replace(config.saf, max_attempts=1000),
    )  # fmt: skip
    app = await start_without_citic(nursery, config)
    with trio.fail_after(10):
        await app.connectors["citic"].wait_up()
    client = await pos_client(app)
    terminal = client.terminal
    sale_request = terminal.sale(1, PAN_CITIC_CREDIT, 4000)
    sale = await client.request(sale_request)
    assert sale.fields[39] == "00"  # the bank's 91, stood in
    rrn = sale.fields[37]
    await eventually(lambda: advices(app)[0][1:] == ("sent", 1))
    void = await client.request(terminal.void(2, PAN_CITIC_CREDIT, 4000, rrn, 1))
    assert void.fields[39] == "91"
    reversal = await client.request(terminal.reversal(sale_request))
    assert reversal.fields[39] == "00"
    assert rows(app, "SELECT count(*) AS n FROM saf") == [{"n": 0}]  # not before the advice
    answering.set()
    await eventually(lambda: rows(app, "SELECT state FROM saf") == [{"state": "delivered"}])
    assert advices(app)[0][1] == "accepted"
    accepted = [m for m in rogue.received if m.mti in ("0220", "0221")][-1]
    reversed_ = [m for m in rogue.received if m.mti == "0400"]
    assert [(m.fields[37], str(m.fields[90])[:20]) for m in reversed_] == [
        (rrn, f"{accepted.mti}{accepted.fields[11]}{accepted.fields[7]}")
    ]


async def test_a_refused_stood_in_sale_is_voided_in_the_switch_and_not_refunded(
    nursery: trio.Nursery,
) -> None:
    port = await free_port()
    config = citic_down_config(port)
    app = await start_without_citic(nursery, config)
    client = await pos_client(app)
    terminal = client.terminal
    one = await client.request(terminal.sale(1, PAN_CITIC_CREDIT, 1000))
    two = await client.request(terminal.sale(2, PAN_CITIC_CREDIT, 2000))
    refusing = msgspec.structs.replace(
        config.banks["citic"],
        sim=msgspec.structs.replace(config.banks["citic"].sim, refuse_advices="05"),
    )
    simulator = BankSimulator("citic", refusing, H2H)
    await nursery.start(simulator.serve)
    await eventually(lambda: [a[1] for a in advices(app)] == ["refused", "refused"])
    void = await client.request(terminal.void(3, PAN_CITIC_CREDIT, 1000, one.fields[37], 1))
    assert void.fields[39] == "00"
    refund = await client.request(terminal.refund(4, PAN_CITIC_CREDIT, 500, two.fields[37], 2))
    assert refund.fields[39] == "12"
    assert [m.mti for m in simulator.received if m.mti.startswith("02")] == ["0220", "0220"]
    assert state_of(app, one.fields[37])["voided"] == 1


async def test_stand_in_is_off_by_default_and_a_reload_turns_it_on_keeping_the_links(
    nursery: trio.Nursery,
) -> None:
    port = await free_port()
    config = citic_down_config(port, enabled=False)
    app = await start_without_citic(nursery, config)
    client = await pos_client(app)
    refused = await client.request(client.terminal.sale(1, PAN_CITIC_CREDIT, 1000))
    assert refused.fields[39] == "91"
    assert rows(app, "SELECT count(*) AS n FROM txn") == [{"n": 0}]  # as before stand-in
    connector = app.connectors["citic"]

    raw = msgspec.to_builtins(app.config)
    raw["banks"]["citic"]["stand_in"]["enabled"] = True
    result = await app.reload(msgspec.convert(raw, SwitchConfig))
    assert result.accepted, result.problems
    assert result.changes == {"stand_in": ["citic"]}
    assert app.connectors["citic"] is connector  # its links were not restarted
    stood = await client.request(client.terminal.sale(2, PAN_CITIC_CREDIT, 1000))
    assert stood.fields[39] == "00" and str(stood.fields[38]).startswith("S")


async def test_an_online_purchase_is_stood_in_only_where_channels_name_online(
    nursery: trio.Nursery,
) -> None:
    port = await free_port()
    config = citic_down_config(port, channels=["pos", "online"])
    app = await start_without_citic(nursery, config)
    client = await online_client(app)
    result = await client.request(purchase("stip-1", 4200, pan=PAN_CITIC_CREDIT))
    assert isinstance(result, wire.Result) and result.approved
    assert result.auth_code == "S" + str(result.rrn)[-5:]
    again = await client.request(purchase("stip-1", 4200, pan=PAN_CITIC_CREDIT))
    assert isinstance(again, wire.Result) and again.auth_code == result.auth_code  # kept
    assert advices(app) == [(result.rrn, "queued", 0)]

    pos_only = citic_down_config(await free_port())
    app = await start_without_citic(nursery, pos_only)
    client = await online_client(app)
    refused = await client.request(purchase("stip-2", 4200, pan=PAN_CITIC_CREDIT))
    assert isinstance(refused, wire.Result) and refused.code == "91"


@pytest.mark.slow
async def test_the_operator_lists_and_retries_advices_by_command(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """`switch saf list --kind advice` and `switch saf retry A<n>`, run as an operator
    runs them (a process of their own) beside the running switch."""
    port = await free_port()
    config = citic_down_config(port)
    app = await start_without_citic(nursery, config)
    client = await pos_client(app)
    sale = await client.request(client.terminal.sale(1, PAN_CITIC_CREDIT, 1000))
    assert sale.fields[39] == "00"
    listed = saf_list_command(config, tmp_path, "--kind", "advice")
    assert [(r["id"], r["rrn"], r["state"], r["amount_fen"]) for r in listed] == [
        ("A1", sale.fields[37], "queued", 1000)
    ]
    assert saf_list_command(config, tmp_path) == []  # the reversals' queue: empty
    config_file = tmp_path / "switch.toml"  # written by saf_list_command
    refused = run_switch(["saf", "retry", "A1", "--config", str(config_file)])
    assert refused.returncode != 0 and "not manual" in refused.stderr
    wrong = run_switch(["saf", "retry", "B1", "--config", str(config_file)])
    assert wrong.returncode == 2 and "A<n>" in wrong.stderr
