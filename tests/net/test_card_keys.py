"""Card keys over the switch's lives: rotated as documented (a key added, made active),
and replaced so that stored card data no longer opens. Real switch, real simulator as
a bank of its own for both lives, real journal file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import trio

from switch import ops
from switch.config import SwitchConfig
from switch.sim.server import BankSimulator
from switch.store import open_operator_journal
from tests.conftest import LogSink, make_config
from tests.net.helpers import (
    FAST_SAF,
    H2H,
    PAN_ICBC,
    eventually,
    online_client,
    pos_client,
    purchase,
    start_switch,
)

KEY_1 = '[[keys]]\nid = 1\nhmac_key = "{}"\naes_key = "{}"\n'.format("a1" * 32, "b1" * 32)
KEY_2 = '[[keys]]\nid = 2\nhmac_key = "{}"\naes_key = "{}"\n'.format("a2" * 32, "b2" * 32)
KEY_1_REPLACED = '[[keys]]\nid = 1\nhmac_key = "{}"\naes_key = "{}"\n'.format("c1" * 32, "d1" * 32)


def with_keys(config: SwitchConfig, tmp_path: Path, name: str, text: str) -> SwitchConfig:
    """The keys of the key file ``name``, imported (demo_keys) into a key store of that
    file's own at the first start: the store holds the card-data keys, and a store
    whose keys are those of another file is how a key is added or replaced here."""
    key_file = tmp_path / name
    key_file.write_text(text)
    key_file.chmod(0o600)  # a key file others can read is refused
    return msgspec.structs.replace(
        config,
        journal=msgspec.structs.replace(config.journal, key_file=str(key_file)),
        security=msgspec.structs.replace(
            config.security, key_store=str(tmp_path / f"{name}.key-store.json")
        ),
    )


async def test_after_a_rotation_as_documented_every_look_up_still_finds_its_record(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Key 2 added and made active: a repeat of a sale made under key 1 gets its first
    answer (not 94), its reversal reverses it, a void opens its card, and an online
    repeat gets its stored result."""
    simulator = BankSimulator("icbc", make_config().banks["icbc"], H2H)
    port = await nursery.start(simulator.serve)
    base = make_config(banks={"icbc": {"simulate": False, "port": port}}, saf=FAST_SAF)
    async with trio.open_nursery() as first_life:
        app = await start_switch(
            first_life, with_keys(base, tmp_path, "k1.toml", f"active = 1\n{KEY_1}")
        )
        client = await pos_client(app)
        reversed_sale = client.terminal.sale(1, PAN_ICBC, 1100)
        first = await client.request(reversed_sale)
        voided = await client.request(client.terminal.sale(2, PAN_ICBC, 2200))
        online = await online_client(app)
        kept = await online.request(purchase("rotate-1", 3300))
        await client.aclose()
        await online.aclose()
        app.shutdown()
    assert first.fields[39] == "00" and voided.fields[39] == "00"

    rotated = with_keys(base, tmp_path, "k12.toml", f"active = 2\n{KEY_1}\n{KEY_2}")
    app = await start_switch(nursery, rotated)
    client = await pos_client(app)
    repeat = await client.request(reversed_sale)
    assert [repeat.fields[n] for n in (37, 38, 39)] == [first.fields[n] for n in (37, 38, 39)]
    reversal = await client.request(client.terminal.reversal(reversed_sale))
    assert reversal.fields[39] == "00"
    await eventually(lambda: simulator.totals().reversed == 1100)
    void = await client.request(client.terminal.void(3, PAN_ICBC, 2200, str(voided.fields[37]), 2))
    assert void.fields[39] == "00"
    online = await online_client(app)
    assert await online.request(purchase("rotate-1", 3300)) == kept
    totals = simulator.totals()
    assert (totals.approvals, totals.voids, totals.net) == (3, 1, 3300)


async def test_card_data_no_key_opens_is_left_for_an_operator_not_a_crash(
    nursery: trio.Nursery, tmp_path: Path, log_sink: LogSink
) -> None:
    """Key 1 replaced by another under the same id: the reversal of a sale sealed under
    the old one cannot be sent. The switch starts, serves, and leaves that reversal to
    an operator with the reason; with the key back, it is delivered."""
    simulator = BankSimulator("icbc", make_config().banks["icbc"], H2H)
    port = await nursery.start(simulator.serve)
    base = make_config(
        banks={"icbc": {"simulate": False, "port": port, "issuer_timeout_s": 0.2}}, saf=FAST_SAF
    )
    original = with_keys(base, tmp_path, "k1.toml", f"active = 1\n{KEY_1}")
    async with trio.open_nursery() as first_life:
        app = await start_switch(first_life, original)
        client = await pos_client(app)
        simulator.latency_s = 5.0  # the bank goes quiet: the sale and its reversals time out
        never = await client.request(client.terminal.sale(1, PAN_ICBC, 4400))
        assert never.fields[39] == "68"
        await client.aclose()
        app.shutdown()
    simulator.latency_s = 0

    replaced = with_keys(base, tmp_path, "k1b.toml", f"active = 1\n{KEY_1_REPLACED}")
    journal = base.path(base.journal.path)

    def saf_row() -> tuple[int, str, str]:
        with sqlite3.connect(journal) as connection:
            row = connection.execute("SELECT id, state, last_result FROM saf").fetchone()
        return (int(row[0]), str(row[1]), str(row[2]))

    async with trio.open_nursery() as second_life:
        app = await start_switch(second_life, replaced)
        await eventually(lambda: saf_row()[1] == "manual")
        assert "does not open with card key 1" in saf_row()[2]
        assert log_sink.events("reversal_card_data_unreadable")
        client = await pos_client(app)  # and it goes on serving
        assert (await client.request(client.terminal.sale(2, PAN_ICBC, 5500))).fields[39] == "00"
        await client.aclose()
        app.shutdown()

    app = await start_switch(nursery, original)  # the key restored; an operator retries
    ops.saf_retry(open_operator_journal(original), saf_row()[0])
    await eventually(lambda: saf_row()[1] == "delivered")
    reversals = [m.fields[37] for m in simulator.received if m.mti.startswith("04")]
    assert reversals[-1] == never.fields[37]
