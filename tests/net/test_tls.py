"""TLS on the online listener and the admin interface (security.md, "TLS and the admin
interface"), over real loopback sockets with a self-signed certificate made for the
test: purchases and the admin's probes over TLS, and whatever is not TLS 1.2 or later
(plain TCP, TLS 1.1, a handshake never finished) ends only its own connection."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing

from switch.admin.client import AdminClient, AdminUnavailable, admin_tls, admin_url
from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.tls import client_context
from switch.wire import online as wire
from tests.certs import make_certificate
from tests.conftest import LogSink, make_config
from tests.net.helpers import online_client, purchase, start_switch

TOKEN = "tls-test-admin-token-0123456789"


def tls_config(tmp_path: Path, **sections: dict[str, object]) -> SwitchConfig:
    """The test config with ``[online]`` over TLS (and whatever else ``sections`` say)."""
    cert, key = make_certificate(tmp_path)
    online = {"tls_cert_file": str(cert), "tls_key_file": str(key), **sections.pop("online", {})}
    return make_config(online=online, banks={}, **sections)


def trusting(tmp_path: Path) -> ssl.SSLContext:
    """A client's context that trusts the test's certificate (names checked)."""
    return client_context(tmp_path / "switch.crt")


async def approved(app: SwitchApp, tmp_path: Path, request_id: str) -> None:
    client = await online_client(app, tls=trusting(tmp_path))
    try:
        with trio.fail_after(10):
            result = await client.request(purchase(request_id, 1_200))
    finally:
        await client.aclose()
    assert isinstance(result, wire.Result) and result.approved and result.code == "00"


async def test_an_online_purchase_over_tls_is_approved(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    app = await start_switch(nursery, tls_config(tmp_path))
    await approved(app, tmp_path, "tls-1")
    # Several answers pipelined on one TLS connection, all through the writer's queue.
    client = await online_client(app, tls=trusting(tmp_path))
    with trio.fail_after(10):
        for index in range(20):
            await client.send(purchase(f"tls-many-{index}", 2_000 + 100 * index))
        answers = [await client.receive() for _ in range(20)]
    await client.aclose()
    assert all(isinstance(a, wire.Result) and a.approved for a in answers), answers
    assert {a.id for a in answers} == {f"tls-many-{index}" for index in range(20)}


async def test_plain_tcp_to_the_tls_listener_gets_its_connection_closed(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    app = await start_switch(nursery, tls_config(tmp_path))
    plain = await trio.open_tcp_stream("127.0.0.1", app.online_port)
    frame = wire.encode_request(purchase("plain-1", 1_000))
    await plain.send_all(len(frame).to_bytes(4, "big") + frame)
    received = b""
    with trio.fail_after(10):
        try:
            while data := await plain.receive_some(65536):
                received += data
        except trio.BrokenResourceError:
            pass  # reset: closed all the same
    await plain.aclose()
    # At most a TLS alert record (content type 21), never an online answer.
    assert received == b"" or received[0] == 0x15, received
    assert app.simulators["icbc"].totals().approved == 0  # the purchase never got in
    await approved(app, tmp_path, "after-plain")  # the listener serves on


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_a_tls_1_1_client_is_refused_and_tls_1_2_accepted(
    nursery: trio.Nursery, tmp_path: Path, log_sink: LogSink
) -> None:
    app = await start_switch(nursery, tls_config(tmp_path))

    def client(version: ssl.TLSVersion) -> ssl.SSLContext:
        context = trusting(tmp_path)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = version
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this OpenSSL offer TLS 1.1
        return context

    with trio.fail_after(10), pytest.raises(trio.BrokenResourceError) as refused:
        await online_client(app, tls=client(ssl.TLSVersion.TLSv1_1))
    # The client offered TLS 1.1 (it did not fail to offer anything) and the switch
    # refused it, saying why.
    assert isinstance(refused.value.__cause__, ssl.SSLEOFError), refused.value.__cause__
    reasons = [event["reason"] for event in log_sink.events("connection_lost")]
    assert "TLS handshake failed: UNSUPPORTED_PROTOCOL" in reasons, reasons
    with trio.fail_after(10):
        twelve = await online_client(app, tls=client(ssl.TLSVersion.TLSv1_2))
        result = await twelve.request(purchase("tls12-1", 1_000))
    assert isinstance(twelve.stream, trio.SSLStream)
    assert twelve.stream.version() == "TLSv1.2"
    await twelve.aclose()
    assert isinstance(result, wire.Result) and result.approved


async def test_a_handshake_never_finished_costs_only_its_own_connection(
    nursery: trio.Nursery, tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """A client that begins a TLS record and stops is closed once the listener's read
    deadline has passed; the clock is trio's, standing still until the test moves it."""
    config = tls_config(tmp_path)
    app = await start_switch(nursery, config)
    assert app.online is not None
    stalled = await trio.open_tcp_stream("127.0.0.1", app.online_port)
    await stalled.send_all(b"\x16\x03\x01\x02")  # a handshake record's header, cut short
    while app.online.connections < 1:  # accepted: its handshake has its deadline now
        await trio.lowlevel.checkpoint()
    await trio.testing.wait_all_tasks_blocked()
    assert app.online.connections == 1
    mock_clock.jump(config.online.read_deadline_s - 0.5)
    await trio.testing.wait_all_tasks_blocked()
    assert app.online.connections == 1  # within its deadline: still held
    mock_clock.jump(1.0)
    await trio.testing.wait_all_tasks_blocked()
    assert app.online.connections == 0  # past it: closed
    with contextlib.suppress(trio.BrokenResourceError):  # reset: closed all the same
        assert await stalled.receive_some(100) == b""
    await stalled.aclose()
    await approved(app, tmp_path, "after-stalled")


async def test_the_admin_interface_serves_https_with_its_token(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path, "admin")
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    config = make_config(
        admin={
            "enabled": True,
            "host": "0.0.0.0",  # off loopback: TLS and the token are both required
            "port": 0,
            "token_file": str(token_file),
            "tls_cert_file": str(cert),
            "tls_key_file": str(key),
        },
        banks={},
    )
    app = await start_switch(nursery, config)
    url = f"https://127.0.0.1:{app.admin_port}"
    assert admin_url(config).startswith("https://127.0.0.1:")
    trusted = admin_tls(config)
    assert trusted is not None

    def ask(client: AdminClient, path: str) -> int:
        try:
            return client.get(path)[0]
        finally:
            client.close()

    with_token = AdminClient(url, token=TOKEN, tls=trusted)
    assert await trio.to_thread.run_sync(ask, with_token, "/healthz") == 200
    without = AdminClient(url, token=None, tls=admin_tls(config))
    assert await trio.to_thread.run_sync(ask, without, "/healthz") == 401
    # In the clear, the HTTPS port answers nothing a client could take for a response.
    plain = AdminClient(f"http://127.0.0.1:{app.admin_port}", token=TOKEN)
    with pytest.raises(AdminUnavailable):
        await trio.to_thread.run_sync(ask, plain, "/healthz")
    # Nor is a certificate the client was not told to trust.
    stranger = AdminClient(url, token=TOKEN)  # the system's authorities only
    with pytest.raises(AdminUnavailable, match="certificate is not trusted"):
        await trio.to_thread.run_sync(ask, stranger, "/healthz")
    assert await trio.to_thread.run_sync(ask, AdminClient(url, token=TOKEN, tls=trusted),
                                         "/healthz") == 200  # fmt: skip
