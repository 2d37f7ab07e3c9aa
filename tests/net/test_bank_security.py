"""Bank links' keys and MAC (security.md, "Bank links: keys and MAC"): the key change
after every sign-on, X9.19 on every financial message, a bad MAC either way, the
periodic key change; security.md's sample frames are the vectors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from switch.app import SwitchApp
from switch.config import BankSection, SimulatorSection
from switch.core import bank as bankmsg
from switch.core.clock import BusinessClock
from switch.errors import StartupError
from switch.net.bank_link import BankConnector, BankSecurity
from switch.security import algorithms as alg
from switch.security.setup import DEMO_ZMK, bank_zmks, open_security_module
from switch.sim.server import BankSimulator
from switch.wire.samples import BANK_REVERSAL_FIELDS, BANK_SALE_FIELDS
from tests.conftest import make_config
from tests.net.helpers import H2H, eventually, pos_client, start_switch
from tests.security.helpers import ScriptedRandom, load, new_store
from tests.sim.test_server import (
    SAMPLE_FIELD_48,
    SAMPLE_KEY_CHANGE,
    SAMPLE_REVERSAL,
    SAMPLE_SALE,
    SAMPLE_ZAK,
)

SAMPLE_ZPK = bytes.fromhex("6E1F68F7838F6DE086832FE907265D5D")
PAN_ICBC = "6222021000111122221"


def test_key_change_and_macs_are_security_md_s_sample_frames(tmp_path: Path) -> None:
    """The switch's side through the security module: the sample ZPK and ZAK made under
    the demo ZMK give the sample key change; the sale (52, 53) and its reversal, MAC'd
    under the ZAK, are the sample frames byte for byte (64, then 128)."""
    module = new_store(tmp_path, ScriptedRandom(SAMPLE_ZPK, SAMPLE_ZAK))
    load(module, "zmk", "icbc", "3des", DEMO_ZMK)
    keys = module.make_bank_keys("zmk:icbc", "icbc.0")
    assert keys.field_48() == SAMPLE_FIELD_48
    at = datetime(2025, 11, 22, 6, 0, 1, tzinfo=UTC).timestamp()
    stamp = BusinessClock.real(lambda: at).stamp(8)
    mti, fields = bankmsg.key_change_request("000002", stamp, keys.field_48())
    assert H2H.encode(mti, fields) == SAMPLE_KEY_CHANGE[2:]

    sale = {**BANK_SALE_FIELDS, 52: bytes.fromhex("3D6B0F925E99FB7A"), 53: "2600000000000000"}
    for (mti, values), sample in (
        (("0200", sale), SAMPLE_SALE),
        (("0400", BANK_REVERSAL_FIELDS), SAMPLE_REVERSAL),
    ):
        encoded = H2H.encode(mti, bankmsg.with_mac_placeholder(mti, values))
        mab = encoded[:-8]
        assert mab + module.make_bank_mac(keys.zak, mab) == sample[2:]
        assert module.verify_bank_mac(keys.zak, mab, sample[-8:])
    # The PIN block of the sample is PIN 123456 under the ZPK.
    assert alg.pin_from_clear_block(alg.ecb_decrypt("3des", SAMPLE_ZPK, sale[52]), PAN_ICBC) == (
        "123456"
    )


async def test_each_link_changes_its_keys_after_sign_on(nursery: trio.Nursery, log_sink) -> None:  # type: ignore[no-untyped-def]
    app = await start_switch(nursery)
    received = list(app.simulators["icbc"].received)
    changes = [m for m in received if m.mti == "0800" and m.fields.get(70) == "101"]
    assert len(changes) == 2  # one per link, each after its sign-on
    for change in changes:
        raw = bytes.fromhex(str(change.fields[48]))
        zpk = alg.unwrap_key("3des", DEMO_ZMK, raw[:16])
        zak = alg.unwrap_key("3des", DEMO_ZMK, raw[20:36])
        assert alg.kcv("3des", zpk) == raw[16:20] and alg.kcv("3des", zak) == raw[36:40]
    sign_on = received.index(next(m for m in received if m.fields.get(70) == "001"))
    assert received.index(changes[0]) > sign_on
    events = [e for e in log_sink.events("security_event") if e["kind"] == "bank_key_change"]
    assert {e["bank"] for e in events} == {"icbc", "abc", "cmb", "citic"}
    assert SAMPLE_FIELD_48 not in log_sink.text() and str(changes[0].fields[48]) not in (
        log_sink.text()
    )
    assert log_sink.events("demo_keys")  # DEMO material is said at every start


async def test_an_answer_with_a_bad_mac_is_no_answer(nursery: trio.Nursery) -> None:
    """96 to the terminal, the sale reversed, and the link's keys changed."""
    app = await start_switch(nursery)
    simulator = app.simulators["icbc"]
    connector = app.connectors["icbc"]
    before = sum(link.key_changes for link in connector.links)
    simulator.bad_macs = 1
    client = await pos_client(app)
    response = await client.request(client.terminal.sale(21, PAN_ICBC, 3000))
    assert response.fields[39] == "96"
    assert sum(link.mac_failures for link in connector.links) == 1
    await eventually(lambda: sum(link.key_changes for link in connector.links) == before + 1)
    await eventually(lambda: simulator.totals().reversals == 1)
    assert simulator.totals().net == 0
    # The next sale goes under the new keys and is approved.
    response = await client.request(client.terminal.sale(22, PAN_ICBC, 3100))
    assert response.fields[39] == "00"


async def test_an_a0_from_the_bank_is_96_and_not_reversed(nursery: trio.Nursery) -> None:
    """The bank refused the switch's MAC (its ZAK no longer the bank's): the terminal
    gets 96, nothing is reversed, and the keys are changed."""
    app = await start_switch(nursery)
    simulator = app.simulators["icbc"]
    connector = app.connectors["icbc"]
    before = sum(link.key_changes for link in connector.links)
    simulator.refuse_macs = 1  # the bank's ZAK is no longer the link's
    client = await pos_client(app)
    response = await client.request(client.terminal.sale(23, PAN_ICBC, 3200))
    assert response.fields[39] == "96"
    assert simulator.statistics().mac_failures == 1
    await eventually(lambda: sum(link.key_changes for link in connector.links) == before + 1)
    assert simulator.totals().approvals == 0
    assert simulator.totals().reversals == 0


async def test_keys_change_every_key_change_h(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(banks={"icbc": {"links": 1, "key_change_h": 2.0}})
    module = open_security_module(config)
    section = BankSection(port=0, links=1, key_change_h=2.0, sim=SimulatorSection())
    simulator = BankSimulator("icbc", section, H2H)
    port = await nursery.start(simulator.serve)
    connector = BankConnector(
        "icbc",
        msgspec.structs.replace(section, port=port),
        H2H,
        utc_offset_h=8,
        security=BankSecurity(module, bank_zmks(module, config, ["icbc"])["icbc"]),
    )
    await nursery.start(connector.run)
    await connector.wait_up()
    link = connector.links[0]
    assert link.key_changes == 1
    await trio.sleep(2 * 3600 - 60)
    assert link.key_changes == 1
    await trio.sleep(120)
    assert link.key_changes == 2
    await trio.sleep(2 * 3600)
    assert link.key_changes == 3
    assert link.connects == 1  # the same link all along


def test_a_bank_without_a_zmk_stops_the_start() -> None:
    demo = make_config()
    open_security_module(demo)  # the store and the LMK, without a ZMK yet
    config = msgspec.structs.replace(
        demo, security=msgspec.structs.replace(demo.security, demo_keys=False)
    )
    with pytest.raises(StartupError, match=r"bank .* has no ZMK .*load-zmk --bank"):
        SwitchApp(config)
    # With demo_keys the demo ZMK is stored for every bank; without, it is refused.
    SwitchApp(demo)
    with pytest.raises(StartupError, match="DEMO ZMK"):
        SwitchApp(config)


async def test_a_refused_key_change_drops_the_link_and_takes_no_request(
    nursery: trio.Nursery,
    log_sink,  # type: ignore[no-untyped-def]
) -> None:
    """The bank holds another ZMK: it answers the key change 30; the switch writes a
    security event, drops the link and connects again; the link never takes a request."""
    config = make_config()
    module = open_security_module(config)
    section = BankSection(port=0, links=1, reconnect_min_s=0.05, reconnect_max_s=0.1)
    simulator = BankSimulator("icbc", section, H2H, zmk=bytes.fromhex("0123456789ABCDEF" * 2))
    port = await nursery.start(simulator.serve)
    connector = BankConnector(
        "icbc",
        msgspec.structs.replace(section, port=port),
        H2H,
        utc_offset_h=8,
        security=BankSecurity(module, bank_zmks(module, config, ["icbc"])["icbc"]),
    )
    await nursery.start(connector.run)
    await eventually(lambda: connector.links[0].connects >= 2)
    failed = [e for e in log_sink.events("security_event") if e["kind"] == "bank_key_change_failed"]
    assert failed and "'30'" in failed[0]["reason"]
    assert connector.links[0].status != "up" and connector.links[0].key_changes == 0
    assert connector.circuit_open()  # its requests are refused 91 at once
