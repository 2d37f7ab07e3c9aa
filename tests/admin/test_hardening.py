"""The admin interface against a hostile machine, over real loopback HTTP: what changes
state or shows money needs the token even on loopback, a browser's cross-site request
(a foreign Origin, a rebound Host, a ``text/plain`` body) is refused, a cut-off cannot
run the business date ahead of the clock, a bad date is a 4xx with its reason, and
hundreds of half-open connections cannot keep the health probes out."""

from __future__ import annotations

import os
import stat
import time
from datetime import date

import pytest
import trio
import trio.testing

from switch.app import SwitchApp
from switch.config import SwitchConfig
from tests.admin.http import RECEIVE_BYTES, HttpConnection, get, post
from tests.admin.test_http import admin_config
from tests.net.helpers import start_switch

CROSS_SITE_POSTS = 10


def bearer(app: SwitchApp) -> dict[str, str]:
    return {"authorization": f"Bearer {token_of(app)}"}


def token_of(app: SwitchApp) -> str:
    assert app.admin is not None and app.admin.token is not None
    return app.admin.token


def closed_dates(app: SwitchApp) -> list[date]:
    assert app.settlement is not None
    return [close.business_date for close in app.settlement.calendar.closes]


async def test_state_changes_and_money_need_the_token_on_loopback(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery, admin_config())
    port, token = app.admin_port, token_of(app)
    for path in ("/settlement/cutoff", "/settlement/run?date=2026-01-01", "/reload"):
        refused = await post(port, path, token=None)
        assert refused.status == 401, path
        assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = await post(port, path, token=token + "x")
        assert wrong.status == 401, path
    for path in ("/ledger", "/settlement", "/settlement?date=2026-01-01"):
        assert (await get(port, path)).status == 401, path
    assert closed_dates(app) == []  # nothing closed, nothing reloaded
    # The probes a monitor scrapes stay open on loopback.
    for path in ("/healthz", "/readyz", "/metrics", "/status"):
        assert (await get(port, path)).status == 200, path
    assert (await get(port, "/ledger", headers=bearer(app))).status == 200
    closed = await post(port, "/settlement/cutoff", token=token)
    assert closed.status == 200 and closed.json()["forced"] is True
    assert len(closed_dates(app)) == 1


async def test_a_browsers_cross_site_requests_are_refused(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery, admin_config())
    port, token = app.admin_port, token_of(app)
    # What a page on any site can make a browser send: a "simple" text/plain POST.
    for _ in range(CROSS_SITE_POSTS):
        sent = await post(
            port,
            "/settlement/cutoff",
            token=None,
            body=b'{"x": 1}',
            headers={"content-type": "text/plain", "origin": "http://evil.example"},
        )
        assert sent.status == 403
    assert closed_dates(app) == []
    # Each check on its own, the token given: a foreign Origin, a page's host name made
    # to resolve to 127.0.0.1 (DNS rebinding), a browser's cross-site mark.
    refusals = {
        "origin": {"origin": "http://evil.example"},
        "origin of another port": {"origin": f"http://127.0.0.1:{port + 1}"},
        "opaque origin": {"origin": "null"},
        "rebound host": {"host": f"evil.example:{port}"},
        "another port": {"host": f"127.0.0.1:{port + 1}"},
        "cross-site": {"sec-fetch-site": "cross-site"},
    }
    for why, headers in refusals.items():
        answer = await post(port, "/settlement/cutoff", token=token, headers=headers)
        assert answer.status == 403, why
        assert "error" in answer.json(), why
    rebound_read = await get(port, "/status", headers={"host": f"rebind.example:{port}"})
    assert rebound_read.status == 403
    # The body must be a JSON object, sent as one.
    for content_type, body, status in (
        ("text/plain", b"{}", 415),
        ("application/x-www-form-urlencoded", b"a=b", 415),
        ("multipart/form-data; boundary=x", b"--x--", 415),
        ("application/json", b"", 400),
        ("application/json", b"not json", 400),
        ("application/json", b"[]", 400),
    ):
        answer = await post(
            port, "/settlement/cutoff", token=token, body=body,
            headers={"content-type": content_type},
        )  # fmt: skip
        assert answer.status == status, (content_type, body)
    no_type = await HttpConnection.open(port)
    answer = await no_type.request("/settlement/cutoff", method="POST", headers=bearer(app))
    assert answer.status == 415
    await no_type.aclose()
    assert closed_dates(app) == []
    # The admin's own origin, by either loopback name, is let through.
    same = await post(
        port, "/settlement/cutoff", token=token,
        headers={"host": f"localhost:{port}", "origin": f"http://localhost:{port}"},
    )  # fmt: skip
    assert same.status == 200
    assert len(closed_dates(app)) == 1


async def test_a_cutoff_never_closes_a_date_that_has_not_begun(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery, admin_config())
    port, token = app.admin_port, token_of(app)
    first = await post(port, "/settlement/cutoff", token=token)
    assert first.status == 200
    closed = date.fromisoformat(first.json()["business_date"])
    for _ in range(CROSS_SITE_POSTS):
        again = await post(port, "/settlement/cutoff", token=token)
        assert again.status == 409
        assert "has not begun" in again.json()["error"]
    assert closed_dates(app) == [closed]
    assert app.settlement is not None
    assert (app.settlement.calendar.date_at(time.time()) - closed).days == 1


async def test_a_date_that_is_not_closed_is_refused_with_its_reason(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery, admin_config())
    port, token = app.admin_port, token_of(app)
    assert app.settlement is not None
    open_date = app.settlement.calendar.date_at(time.time()).isoformat()
    for day in ("0001-01-01", "9999-12-31", open_date):
        answer = await post(port, f"/settlement/run?date={day}", token=token)
        assert answer.status == 422, day
        assert answer.json()["error"] == f"business date {day} is not closed"
        status = await get(port, f"/settlement?date={day}", headers=bearer(app))
        if day == open_date:  # known, not closed
            assert status.status == 200 and status.json()["closed_at"] is None
        else:
            assert status.status == 404, day
            assert status.json()["error"] == f"unknown date: the switch has no business day {day}"
    for query in ("date=0001-13-01", "date=yesterday", ""):
        answer = await post(port, f"/settlement/run?{query}", token=token)
        assert answer.status == 400 and "date" in answer.json()["error"], query
    assert app.admin is not None and 500 not in app.admin.refusals


async def test_on_loopback_the_switch_makes_a_token_only_its_user_reads(
    nursery: trio.Nursery,
) -> None:
    from switch.admin.auth import token_path  # new with the token file: imported here

    config = admin_config()
    app = await start_switch(nursery, config)
    path = token_path(config)
    assert path.parent == config.path(config.journal.path).parent
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == token_of(app)
    assert len(token_of(app)) >= 32
    assert SwitchApp(config).admin is not None  # the next start reads the same one
    assert token_of(SwitchApp(config)) == token_of(app)
    assert not [name for name in os.listdir(path.parent) if name.startswith(".admin-token")]


# -- slowloris -------------------------------------------------------------------------

HALF_OPEN = 500
PROBES = 20


async def serve_admin(nursery: trio.Nursery, config: SwitchConfig) -> int:
    """The admin listener of a switch made from ``config`` (only it: no banks, no
    journal), on a port of its own."""
    app = SwitchApp(config)
    assert app.admin is not None
    port: int = await nursery.start(app.admin.serve)
    return port


async def test_half_open_connections_cannot_keep_the_probes_out(nursery: trio.Nursery) -> None:
    # A head deadline longer than the test: the probes get in by taking the place of
    # the longest-waiting connections, not because those timed out.
    port = await serve_admin(nursery, admin_config(head_deadline_s=3600, read_deadline_s=3600))
    held: list[trio.SocketStream] = []
    answered = 0
    try:
        for _ in range(PROBES):
            for _ in range(HALF_OPEN // PROBES):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.send_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n")
                held.append(stream)
            probe = await get(port, "/healthz")
            assert probe.status == 200
            answered += 1
            metrics = await get(port, "/metrics")
            assert metrics.status == 200
    finally:
        for stream in held:
            await trio.aclose_forcefully(stream)
    assert answered == PROBES


async def exchange(port: int, data: bytes) -> bytes:
    """``data`` sent as it is; what comes back until the server closes."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(data)
        answer = bytearray()
        with trio.fail_after(60):
            while chunk := await stream.receive_some(RECEIVE_BYTES):
                answer += chunk
    return bytes(answer)


async def test_a_head_must_come_within_its_deadline(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        port = await serve_admin(nursery, admin_config(head_deadline_s=2, read_deadline_s=30))
        begun = trio.current_time()
        answer = await exchange(port, b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert trio.current_time() - begun == pytest.approx(2, abs=0.5)
        # Nothing sent at all: closed without a word after the same deadline.
        begun = trio.current_time()
        assert await exchange(port, b"") == b""
        assert trio.current_time() - begun == pytest.approx(2, abs=0.5)
        # A head in time, its body late: the whole request's deadline.
        begun = trio.current_time()
        slow_body = (
            b"POST /reload HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: 10\r\n\r\n{"
        )
        assert (await exchange(port, slow_body)).startswith(b"HTTP/1.1 408 ")
        assert trio.current_time() - begun == pytest.approx(30, abs=0.5)
        nursery.cancel_scope.cancel()
