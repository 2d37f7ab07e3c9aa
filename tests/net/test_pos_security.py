"""security.md on the POS channel, over real sockets: sign-on and its refusals, the MAC
checks in their order (97, 77, A0, 03, 12) with what each answer carries, the key set a
sign-on replaces, key lifetime, the PIN checks (30, 99) and the PIN translated to the
link's ZPK (00, 55 from the bank), SM4 and 001 terminals, and what never reaches a file
or the log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from switch.app import SwitchApp
from switch.net.clients import PosClient
from switch.security import algorithms as alg
from switch.security.port import TerminalProfile
from switch.terminal import DEMO_TMK, Terminal, TerminalSecurity, with_pin
from switch.wire.framing import split_pos_frame
from tests.conftest import LogSink
from tests.net.helpers import PAN_ICBC, POS_CODEC, start_switch
from tests.security import vectors as v
from tests.security.helpers import load
from tests.store.engines import ENGINES, Configure, config_maker, journal_rows

MERCHANT = "898310048990001"
TMK_OTHER = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


@pytest.fixture(params=ENGINES)
def make_config(request: pytest.FixtureRequest) -> Configure:
    return config_maker(request)


async def secured_switch(nursery: trio.Nursery, make_config: Configure) -> SwitchApp:
    """A switch without the demo ``*`` entry; POS00001 has security.md's sample TMK."""
    app = await start_switch(nursery, make_config(security={"demo_terminals": False}))
    load(app.security, "tmk", "POS00001", "3des", v.TMK_3DES, TerminalProfile(MERCHANT))
    return app


async def terminal(
    app: SwitchApp,
    terminal: Terminal | None = None,
    *,
    tmk: bytes = v.TMK_3DES,
    cipher: str = "3des",
    layout: str | None = None,
    auto: bool = False,
    pin: str | None = "123456",
) -> PosClient:
    return await PosClient.connect(
        "127.0.0.1",
        app.pos_port,
        POS_CODEC,
        terminal or Terminal(),
        security=TerminalSecurity(tmk, cipher, layout=layout),
        auto_sign_on=auto,
        pin=pin,
    )


async def exchange(client: PosClient, payload: bytes) -> Any:
    """Sends a frame's payload as it is; the answer's message, as received (64 in)."""
    await client.stream.send_all(client.framer.frame(payload))
    frame = await client._next_frame()
    return POS_CODEC.decode(split_pos_frame(frame)[1])


def journaled(app: SwitchApp) -> list[dict[str, Any]]:
    return journal_rows(app.config, "SELECT rrn, stan FROM txn")


def bank_requests(app: SwitchApp) -> list[Any]:
    return [m for m in app.simulators["icbc"].received if m.mti == "0200"]


async def test_unknown_terminal_97_wrong_merchant_03_no_keys_77_then_signed_on(
    nursery: trio.Nursery, make_config: Configure
) -> None:
    app = await secured_switch(nursery, make_config)
    stranger = await terminal(app, Terminal(terminal_id="POS00009"))
    answer = await stranger.request(stranger.terminal.sign_on(1))
    assert (answer.fields[39], 62 in answer.fields) == ("97", False)
    sale = await stranger.request(stranger.terminal.sale(2, PAN_ICBC, 1000))
    assert (sale.fields[39], 37 in sale.fields, stranger.last_mac) == ("97", False, None)

    elsewhere = await terminal(app, Terminal(merchant_id="898310048990002"))
    answer = await elsewhere.request(elsewhere.terminal.sign_on(3))
    assert (answer.fields[39], 62 in answer.fields) == ("03", False)

    client = await terminal(app, Terminal(batch=0))
    early = await client.request(client.terminal.sale(4, PAN_ICBC, 1000))
    assert (early.fields[39], 37 in early.fields, client.last_mac) == ("77", False, None)
    signed_on = await client.request(client.terminal.sign_on(5))
    assert signed_on.fields[39] == "00" and signed_on.fields[60] == "00000001003"
    assert client.security is not None and client.security.current is not None
    client.terminal = Terminal(batch=1)
    approved = await client.request(with_pin(client.terminal.sale(6, PAN_ICBC, 1000),
                                             client.security, "123456"))  # fmt: skip
    assert approved.fields[39] == "00" and client.last_mac is not None  # answer MAC'd
    # A MAC'd request for another merchant: 03, itself MAC'd.
    mti, fields = client.terminal.sale(7, PAN_ICBC, 1000)
    fields[42] = "898310048990002"
    fields[22] = "022"
    refused = await client.request((mti, fields))
    assert refused.fields[39] == "03" and client.last_mac is not None
    assert [row["stan"] for row in journaled(app)] == ["000006"]
    assert len(bank_requests(app)) == 1


async def test_a_bad_or_missing_mac_is_a0_without_64_or_37_and_a_security_event(
    nursery: trio.Nursery, make_config: Configure, log_sink: LogSink
) -> None:
    app = await secured_switch(nursery, make_config)
    client = await terminal(app, auto=True, pin=None)
    message = client.terminal.sale(11, PAN_ICBC, 1000)
    message[1][22] = "022"
    await client.sign_on_for(message[1])
    payload = bytearray(client.encode(message))
    payload[-1] ^= 0x01  # the MAC's last bit
    answer = await exchange(client, bytes(payload))
    assert answer.fields[39] == "A0"
    assert 64 not in answer.fields and 37 not in answer.fields
    unmaced = POS_CODEC.encode(*message)  # no 64 at all
    answer = await exchange(client, client.terminal.envelope.tpdu + client.terminal.envelope.header
                            + unmaced)  # fmt: skip
    assert answer.fields[39] == "A0" and 64 not in answer.fields
    events = [e for e in log_sink.events("security_event") if e["kind"].startswith("pos_mac")]
    assert [(e["kind"], e["terminal"], e["stan"], e["channel"]) for e in events] == [
        ("pos_mac_failed", "POS00001", "000011", "pos"),
        ("pos_mac_missing", "POS00001", "000011", "pos"),
    ]
    assert journaled(app) == [] and bank_requests(app) == []
    assert (await client.request(message)).fields[39] == "00"  # the same, MAC'd right


async def test_replaced_keys_verify_for_60_s_then_77_and_expired_keys_are_77(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    load(app.security, "tmk", "POS00001", "3des", v.TMK_3DES, TerminalProfile(MERCHANT))
    first = await terminal(app, auto=True)
    second = await terminal(app, auto=True)
    assert (await first.request(first.terminal.sale(1, PAN_ICBC, 1000))).fields[39] == "00"
    assert (await second.request(second.terminal.sale(2, PAN_ICBC, 1000))).fields[39] == "00"
    # first's keys were replaced by second's sign-on just now: still valid, and its
    # answer is MAC'd with them (first knows no other MAK: it verified).
    assert (await first.request(first.terminal.sale(3, PAN_ICBC, 1000))).fields[39] == "00"
    app.terminal_keys.previous_valid_s = 0.0  # as 60 s later
    first.auto_sign_on = False
    answer = await first.request(first.terminal.sale(4, PAN_ICBC, 1000))
    assert answer.fields[39] == "77" and first.last_mac is None
    assert (await second.request(second.terminal.sale(5, PAN_ICBC, 1000))).fields[39] == "00"
    # Two sign-ons later first's keys are neither current nor previous: A0.
    second.stale = True  # it signs on again before its next request
    assert (await second.request(second.terminal.sale(6, PAN_ICBC, 1000))).fields[39] == "00"
    assert (await first.request(first.terminal.sale(7, PAN_ICBC, 1000))).fields[39] == "A0"
    app.terminal_keys.lifetime_s = 0.0  # key_lifetime_h passed
    second.auto_sign_on = False
    assert (await second.request(second.terminal.sale(8, PAN_ICBC, 1000))).fields[39] == "77"


async def test_a_3des_request_outside_its_batch_is_12_and_an_sm4_one_is_not(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    load(app.security, "tmk", "POS00002", "sm4", v.TMK_SM4,
         TerminalProfile(MERCHANT, require_sm4=True))  # fmt: skip
    client = await terminal(app, auto=True)  # the demo '*' entry, 3des
    client.security = TerminalSecurity(DEMO_TMK)
    assert (await client.request(client.terminal.sale(1, PAN_ICBC, 1000))).fields[39] == "00"
    client.auto_sign_on = False
    other_batch = Terminal(batch=7)
    answer = await client.request(other_batch.sale(2, PAN_ICBC, 1000))
    assert answer.fields[39] == "12" and client.last_mac is not None
    sm4 = await terminal(app, Terminal(terminal_id="POS00002"), tmk=v.TMK_SM4, cipher="sm4",
                         auto=True)  # fmt: skip
    refused = await sm4.request(Terminal(terminal_id="POS00002").sign_on(3, "003"))
    assert refused.fields[39] == "40" and 62 not in refused.fields
    assert (await sm4.request(sm4.terminal.sale(4, PAN_ICBC, 1000))).fields[39] == "00"
    sm4.auto_sign_on = False
    answer = await sm4.request(Terminal(terminal_id="POS00002", batch=7).sale(5, PAN_ICBC, 1000))
    assert answer.fields[39] == "00"  # no batch check under sm4 keys
    sent = bank_requests(app)[-1]
    assert sent.fields[53] == "2600000000000000" and len(sent.fields[52]) == 8


async def test_pin_checks_30_and_99_and_the_issuers_55(
    nursery: trio.Nursery, make_config: Configure, log_sink: LogSink
) -> None:
    app = await secured_switch(nursery, make_config)
    client = await terminal(app, auto=True, pin=None)
    security = client.security
    assert security is not None
    sale = client.terminal.sale(1, PAN_ICBC, 1000)  # 22 = 021: a PIN is sent
    await client.sign_on_for(sale[1])
    sale[1][53] = "2600000000000000"  # ... but no block in 52
    missing = await client.request(sale)
    assert (missing.fields[39], client.last_mac is not None) == ("30", True)
    mti, fields = with_pin(client.terminal.sale(2, PAN_ICBC, 1000), security, "123456")
    fields[53] = "2000000000000000"  # a 001 key set's 53 under 003 keys
    assert (await client.request((mti, fields))).fields[39] == "30"
    mti, fields = with_pin(client.terminal.sale(3, PAN_ICBC, 1000), security, "123456")
    fields[22] = "022"  # a PIN against the rule
    assert (await client.request((mti, fields))).fields[39] == "30"
    # A block under the PIK that is no format 0 block: 99, a security event, no bank.
    keys = security.current
    assert keys is not None
    bad = bytearray(alg.clear_pin_block("123456", PAN_ICBC))
    bad[0] |= 0x10  # first nibble 1
    mti, fields = with_pin(client.terminal.sale(4, PAN_ICBC, 1000), security, "123456")
    fields[52] = alg.ecb_encrypt("3des", keys.pik, bytes(bad))
    answer = await client.request((mti, fields))
    assert answer.fields[39] == "99" and client.last_mac is not None
    assert [e["kind"] for e in log_sink.events("security_event")].count("pin_block_refused") == 1
    assert bank_requests(app) == [] and journaled(app) == []
    wrong = await client.request(with_pin(client.terminal.sale(5, PAN_ICBC, 1000), security,
                                          "654321"))  # fmt: skip
    assert wrong.fields[39] == "55"  # the issuer's verdict, passed on
    right = await client.request(with_pin(client.terminal.sale(6, PAN_ICBC, 1000), security,
                                          "123456"))  # fmt: skip
    assert right.fields[39] == "00"
    assert [r["stan"] for r in journaled(app)] == ["000005", "000006"]


async def test_a_001_terminal_where_allowed(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery, make_config_plain())
    load(app.security, "tmk", "POS00003", "3des", TMK_OTHER,
         TerminalProfile(MERCHANT, allow_single_des=True))  # fmt: skip
    client = await terminal(app, Terminal(terminal_id="POS00003"), tmk=TMK_OTHER, layout="001",
                            auto=True)  # fmt: skip
    assert (await client.request(client.terminal.sale(1, PAN_ICBC, 1000))).fields[39] == "00"
    assert client.security is not None and client.security.current is not None
    assert len(client.security.current.pik) == 8
    demo = await terminal(app, Terminal(terminal_id="POS00004"), tmk=DEMO_TMK, layout="001")
    refused = await demo.request(demo.terminal.sign_on(1, "001"))
    assert refused.fields[39] == "40"  # the '*' entry does not allow 001


def make_config_plain(**sections: Any) -> Any:
    from tests.conftest import make_config

    return make_config(**sections)


async def test_no_clear_key_or_pin_block_in_any_file_or_the_log(
    nursery: trio.Nursery, make_config: Configure, log_sink: LogSink
) -> None:
    app = await start_switch(nursery, make_config())
    client = await terminal(app, tmk=DEMO_TMK, auto=True)
    secrets: list[bytes] = [DEMO_TMK, v.ZMK]
    await client.sign_on_for(client.terminal.sale(1, PAN_ICBC, 1000)[1])
    for stan in range(1, 4):
        mti, fields = with_pin(client.terminal.sale(stan, PAN_ICBC, 1000 + stan), *_sec(client))
        assert (await client.request((mti, fields))).fields[39] == "00"
        block = fields[52]
        assert isinstance(block, bytes)
        sent = bank_requests(app)[-1].fields[52]
        assert isinstance(sent, bytes)
        secrets += [block, sent, alg.clear_pin_block("123456", PAN_ICBC)]
    keys = client.security.current  # type: ignore[union-attr]
    assert keys is not None
    secrets += [keys.pik, keys.mak]
    app.shutdown()
    await trio.sleep(0.2)
    folder = Path(app.config.path(app.config.security.key_store)).parent
    stored = b"".join(path.read_bytes() for path in folder.rglob("*") if path.is_file())
    if app.config.journal.backend == "postgresql":
        for table in ("txn", "txn_event", "saf"):
            stored += repr(journal_rows(app.config, f"SELECT * FROM {table}")).encode()
    logged = log_sink.text().encode()
    for secret in secrets:
        for form in (secret, secret.hex().encode(), secret.hex().upper().encode()):
            assert form not in stored and form not in logged


def _sec(client: PosClient) -> tuple[TerminalSecurity, str]:
    assert client.security is not None
    if client.security.current is None:
        raise AssertionError("not signed on")
    return client.security, "123456"
