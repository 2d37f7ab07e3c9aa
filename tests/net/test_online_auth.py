"""security.md's online channel authentication over real sockets: each check of the
envelope answered with its code and cause (unsigned), every other answer signed and
verified by the client, principals held to their own merchant, keys rotated and
revoked by an operator while the switch runs. Each runs on both journal engines (the
nonces are kept in the journal's database)."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest
import trio

from switch.app import SwitchApp
from switch.net.clients import OnlineClient, OnlineKey
from switch.security.errors import OperatorInputError
from switch.security.keystore import KeyStore, load_lmk
from switch.security.software import SoftwareSecurityModule
from switch.wire import envelope
from switch.wire import online as wire
from tests.net.helpers import PAN_ICBC, start_switch
from tests.store.engines import ENGINES, Configure, config_maker

OTHER = "898310048990001"


@pytest.fixture(params=ENGINES)
def make_config(request: pytest.FixtureRequest) -> Configure:
    return config_maker(request)


def purchase(request_id: str, amount: int, merchant: str = "SHOP01") -> wire.Purchase:
    card = wire.Card(pan=PAN_ICBC, expiry="2812", cvv2="123")
    return wire.Purchase(
        id=request_id, merchant_id=merchant, amount=amount, currency="CNY", card=card
    )


def operator_module(app: SwitchApp) -> SoftwareSecurityModule:
    """The key store as an operator's ``switch keys`` command opens it: another
    instance over the same files than the running switch's."""
    section = app.config.security
    lmk = load_lmk(lmk_file=app.config.path(section.lmk_file or ""))
    return SoftwareSecurityModule(KeyStore(app.config.path(section.key_store)), lmk)


async def connect(app: SwitchApp, key: OnlineKey | None = None) -> OnlineClient:
    return await OnlineClient.connect("127.0.0.1", app.online_port, key=key)


async def answer_to(client: OnlineClient, frame: bytes) -> wire.OnlineResponse:
    await client.send_frame(frame)
    with trio.fail_after(10):
        return wire.decode_response(await client.receive_raw())


def body(request: wire.OnlineRequest) -> bytes:
    return wire.encode_request(request)


async def test_each_failed_check_is_answered_unsigned_naming_its_cause(
    nursery: trio.Nursery, make_config: Configure
) -> None:
    app = await start_switch(nursery, make_config())
    key = OnlineKey.demo_merchant("SHOP01")
    client = await connect(app, key)
    payload = body(purchase("auth-1", 100))
    now = int(time.time())

    def refused(answer: wire.OnlineResponse, code: str, message: str) -> None:
        assert isinstance(answer, wire.Error), answer
        assert (answer.id, answer.code, answer.message) == ("auth-1", code, message)
        assert not client.last_signed

    # Step 1: not an envelope (a bare request, as before security.md): 30 naming a key.
    bare = await answer_to(client, payload)
    assert isinstance(bare, wire.Error) and bare.code == "30" and bare.id is None
    assert "unknown field `type`" in bare.message
    no_sig = msgspec.msgpack.encode(
        {"key_id": key.key_id, "ts": now, "nonce": "N" * 16, "body": payload}
    )
    answer = await answer_to(client, no_sig)
    assert isinstance(answer, wire.Error) and (answer.code, answer.id) == ("30", "auth-1")
    assert "sig" in answer.message
    # Step 2: unknown key id.
    stranger = OnlineKey("no-such-key", bytes(32))
    refused(await answer_to(client, stranger.seal(payload)), "A0", "unknown key")
    # Step 3: signed with another secret, or the body altered after signing.
    forged = OnlineKey(key.key_id, bytes(32))
    refused(await answer_to(client, forged.seal(payload)), "A0", "bad signature")
    altered = envelope.decode(key.seal(payload))
    altered = msgspec.structs.replace(altered, body=payload.replace(b"\x64", b"\x65", 1))
    answer = await answer_to(client, envelope.encode(altered))
    assert isinstance(answer, wire.Error) and (answer.code, answer.message) == (
        "A0", "bad signature",
    )  # fmt: skip
    # Step 4: more than 300 s from the switch's wall clock, either way.
    for skew in (-400, 400):
        stale = key.seal(payload, ts=now + skew)
        refused(await answer_to(client, stale), "A0", "timestamp outside ±300 s")
    # None of these reached a bank; the request itself still goes through after them.
    assert app.simulators["icbc"].totals().approved == 0
    result = await client.request(purchase("auth-1", 100))
    assert isinstance(result, wire.Result) and result.approved and client.last_signed


async def test_a_replayed_envelope_is_refused_and_not_processed_again(
    nursery: trio.Nursery, make_config: Configure
) -> None:
    app = await start_switch(nursery, make_config())
    key = OnlineKey.demo_merchant("SHOP01")
    client = await connect(app, key)
    frame = key.seal(body(purchase("replay-1", 250)))
    first = await answer_to(client, frame)
    assert isinstance(first, wire.Result) and first.approved and client.last_signed
    # The same envelope again, on this connection and on another one.
    other = await connect(app, key)
    for connection in (client, other):
        again = await answer_to(connection, frame)
        assert isinstance(again, wire.Error), again
        assert (again.id, again.code, again.message) == ("replay-1", "A0", "nonce replayed")
        assert not connection.last_signed
    # Resent as security.md says (new ts and nonce, same id): the stored result.
    resent = await client.request(purchase("replay-1", 250))
    assert resent == first
    assert app.simulators["icbc"].totals().approved == 250


async def test_signed_answers_verify_and_a_forged_one_is_no_answer(
    nursery: trio.Nursery, make_config: Configure
) -> None:
    app = await start_switch(nursery, make_config())
    key = OnlineKey.demo_merchant("SHOP01")
    client = await connect(app, key)
    await client.send(purchase("signed-1", 300))
    frame = await client.receive_frame()
    signed = envelope.decode(frame)
    assert signed.key_id == key.key_id and abs(signed.ts - time.time()) < 60
    assert 16 <= len(signed.nonce) <= 32
    result = wire.decode_response(key.open(signed))
    assert isinstance(result, wire.Result) and result.approved
    # A validation error after authentication is signed too (30 naming the field).
    await client.send_raw(body(purchase("signed-2", 300)).replace(b"CNY", b"cny"))
    error = await client.receive()
    assert isinstance(error, wire.Error) and error.code == "30" and client.last_signed
    assert "currency" in error.message
    # Another's key cannot have made the answer.
    with pytest.raises(Exception, match="bad signature"):
        OnlineKey(key.key_id, bytes(32)).open(signed)


async def test_a_merchant_acts_only_on_its_own_transactions(
    nursery: trio.Nursery, make_config: Configure
) -> None:
    app = await start_switch(nursery, make_config())
    shop = await connect(app, OnlineKey.demo_merchant("SHOP01"))
    other = await connect(app, OnlineKey.demo_merchant(OTHER))
    sold = await shop.request(purchase("own-1", 1000))
    assert isinstance(sold, wire.Result) and sold.approved

    def refused(answer: wire.OnlineResponse, code: str) -> None:
        assert isinstance(answer, wire.Error), answer
        assert answer.code == code, answer

    # Naming SHOP01 with the other merchant's key: 03, whatever the type.
    for request in (
        wire.Void(id="x-1", merchant_id="SHOP01", original_id="own-1"),
        wire.Refund(id="x-2", merchant_id="SHOP01", original_id="own-1", amount=1),
        wire.Status(id="x-3", merchant_id="SHOP01", original_id="own-1"),
        purchase("x-4", 1, merchant="SHOP01"),
    ):
        answer = await other.request(request)
        refused(answer, "03")
        assert other.last_signed and "merchant_id" in answer.message
    # Under its own merchant_id, SHOP01's purchase is not found: 25, never 00.
    for request in (
        wire.Status(id="y-1", merchant_id=OTHER, original_id="own-1"),
        wire.Void(id="y-2", merchant_id=OTHER, original_id="own-1"),
        wire.Refund(id="y-3", merchant_id=OTHER, original_id="own-1", amount=1),
    ):
        answer = await other.request(request)
        assert isinstance(answer, wire.Error | wire.Result) and answer.code == "25", answer
    # The app principal has no merchant type.
    app_key = await connect(app, OnlineKey.demo_app())
    refused(await app_key.request(wire.Status(id="z-1", merchant_id="SHOP01",
                                              original_id="own-1")), "03")  # fmt: skip
    # SHOP01's purchase stands: neither voided nor refunded.
    assert app.simulators["icbc"].totals().approved == 1000
    status = await shop.request(wire.Status(id="own-2", merchant_id="SHOP01", original_id="own-1"))
    assert isinstance(status, wire.Result) and status.approved


async def test_keys_rotate_with_two_active_and_a_revoked_one_stops_at_once(
    nursery: trio.Nursery, make_config: Configure, tmp_path: Path
) -> None:
    app = await start_switch(nursery, make_config())
    operator = operator_module(app)
    principal = f"merchant:{OTHER}"
    first = operator.create_online_key(principal, tmp_path / "first")
    second = operator.create_online_key(principal, tmp_path / "second")
    assert (first.owner, second.owner) == (f"m-{OTHER}-1", f"m-{OTHER}-2")
    with pytest.raises(OperatorInputError, match="2 active keys"):
        operator.create_online_key(principal, tmp_path / "third")
    old = OnlineKey.from_file(first.owner, tmp_path / "first")
    new = OnlineKey.from_file(second.owner, tmp_path / "second")
    old_client, new_client = await connect(app, old), await connect(app, new)
    # Both work while the merchant's back ends move to the new key.
    for n, client in enumerate((old_client, new_client)):
        answer = await client.request(purchase(f"rot-{n}", 100 + n, merchant=OTHER))
        assert isinstance(answer, wire.Result) and answer.approved and client.last_signed
    # Revoked by the operator's command: refused from the next request on.
    operator.revoke_online_key(first.owner)
    refused = await old_client.request(purchase("rot-2", 102, merchant=OTHER))
    assert isinstance(refused, wire.Error) and (refused.code, refused.message) == (
        "A0", "unknown key",
    )  # fmt: skip
    assert not old_client.last_signed
    still = await new_client.request(purchase("rot-3", 103, merchant=OTHER))
    assert isinstance(still, wire.Result) and still.approved
    # A key of one merchant does not sign for another.
    shop = await new_client.request(purchase("rot-4", 104, merchant="SHOP01"))
    assert isinstance(shop, wire.Error) and shop.code == "03"


async def test_a_replay_after_a_restart_is_still_refused(
    nursery: trio.Nursery, make_config: Configure
) -> None:
    """The nonces a switch accepted are in its journal's database: the next life of the
    switch on the same journal refuses the envelope again."""
    config = make_config()
    key = OnlineKey.demo_merchant("SHOP01")
    frame = key.seal(body(purchase("restart-1", 600)))
    async with trio.open_nursery() as first_life:
        app = await start_switch(first_life, config)
        client = await connect(app, key)
        first = await answer_to(client, frame)
        assert isinstance(first, wire.Result) and first.approved
        await client.aclose()
        app.shutdown()
    app = await start_switch(nursery, config)
    client = await connect(app, key)
    again = await answer_to(client, frame)
    assert isinstance(again, wire.Error) and (again.code, again.message) == (
        "A0", "nonce replayed",
    )  # fmt: skip
