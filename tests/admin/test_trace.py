"""The message trace switched on and off live through the admin interface of a running
switch (loopback, real simulated banks, real HTTP): a terminal's messages in and out of
the POS channel and to and from its bank, a merchant's online request and its result,
field by field, card numbers masked; nobody else's; nothing once it is off."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import trio

from switch.app import SwitchApp
from switch.terminal import Terminal
from switch.wire.dump import mask_number
from tests.conftest import LogSink, make_config
from tests.net.helpers import PAN_ICBC, online_client, pos_client, purchase, start_switch


def _call(app: SwitchApp, method: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    assert app.admin is not None and app.admin.token is not None
    request = urllib.request.Request(
        f"http://127.0.0.1:{app.admin_port}/trace",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"authorization": f"Bearer {app.admin.token}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def call(app: SwitchApp, method: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    return await trio.to_thread.run_sync(_call, app, method, body)


async def sale(app: SwitchApp, terminal: Terminal, stan: int) -> None:
    client = await pos_client(app, terminal)
    try:
        with trio.fail_after(10):
            response = await client.request(terminal.sale(stan, PAN_ICBC, 1000))
        assert response.fields[39] == "00"
    finally:
        await client.aclose()


def body_fields(fields: dict[str, str]) -> dict[str, str]:
    """An online message's fields, the signed envelope's ``body.`` taken off."""
    return {key.removeprefix("body."): value for key, value in fields.items()}


def traced(sink: LogSink) -> list[dict[str, Any]]:
    return sink.events("trace")


async def test_a_terminal_and_a_merchant_traced_live_then_not(log_sink: LogSink) -> None:
    config = make_config(admin={"enabled": True, "host": "127.0.0.1", "port": 0})
    traced_terminal = Terminal(terminal_id="TRACED01")
    other = Terminal(terminal_id="OTHER001")
    async with trio.open_nursery() as nursery:
        app = await start_switch(nursery, config)
        await sale(app, traced_terminal, 1)
        assert traced(log_sink) == []  # nobody traced at level info

        status, answer = await call(app, "POST", {"terminals": ["TRACED01"]})
        assert status == 200 and answer["selection"]["terminals"] == ["TRACED01"]
        assert (await call(app, "GET"))[1]["selection"]["terminals"] == ["TRACED01"]
        await sale(app, other, 2)
        await sale(app, traced_terminal, 3)
        lines = traced(log_sink)
        assert [(r["channel"], r["direction"], r["mti"]) for r in lines] == [
            ("pos", "in", "0200"),
            ("bank", "out", "0200"),
            ("bank", "in", "0210"),
            ("pos", "out", "0210"),
        ]
        assert {r["fields"]["41"] for r in lines} == {"TRACED01"}
        assert lines[0]["fields"]["2"] == mask_number(PAN_ICBC)
        assert lines[0]["fields"]["14"] == "[hidden: 4 bytes]"
        assert lines[1]["bank"] == "icbc" and lines[1]["fields"]["2"] == mask_number(PAN_ICBC)
        assert lines[3]["fields"]["39"] == "00"

        # A merchant online: its request names it; its result is traced by its connection.
        assert (await call(app, "POST", {"merchants": ["SHOP01"]}))[0] == 200
        client = await online_client(app)
        with trio.fail_after(10):
            result = await client.request(purchase("trace-1", 500))
        await client.aclose()
        assert result.code == "00"  # type: ignore[union-attr]
        online = [r for r in traced(log_sink) if r["channel"] == "online"]
        assert [r["direction"] for r in online] == ["in", "out"]
        request, answer = (body_fields(line["fields"]) for line in online)
        assert request["card.pan"] == mask_number(PAN_ICBC)
        assert request["card.expiry"] == "[hidden: 4 bytes]"
        assert answer["id"] == "trace-1"
        if "sig" in online[0]["fields"]:  # a signed envelope: its signature never shown
            assert online[0]["fields"]["sig"].startswith("[hidden: ")

        # A bad selection: 400 naming what is wrong; the trace stays as it was.
        status, answer = await call(app, "POST", {"terminals": "TRACED01"})
        assert status == 400 and "terminals" in answer["error"]
        status, answer = await call(app, "POST", {"terminal": ["TRACED01"]})
        assert status == 400 and "terminal" in answer["error"]

        # Off: nothing more.
        before = len(traced(log_sink))
        assert (await call(app, "DELETE"))[1]["selection"] == {
            "all": False, "terminals": [], "merchants": [], "banks": []
        }  # fmt: skip
        await sale(app, traced_terminal, 4)
        assert len(traced(log_sink)) == before
        assert PAN_ICBC not in log_sink.text()
        app.shutdown()
