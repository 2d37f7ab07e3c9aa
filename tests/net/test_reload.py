"""Hot reload of a running switch, under load, over loopback with real simulated banks:
a bank and a route added, a bank removed, a bank's settings changed, a bad
configuration refused; and SIGHUP to a real `switch run`."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from switch.admin.collect import StatusCollector
from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.terminal import Terminal
from tests.conftest import LogSink, luhn_complete, make_config
from tests.net.helpers import PAN_ABC, PAN_ICBC, eventually, pos_client, start_switch
from tests.test_cli import _demo_config_on_free_ports, _start

PAN_BOC = luhn_complete("621700000000000001")


def edited(app: SwitchApp, **sections: Any) -> SwitchConfig:
    """The running configuration with ``sections`` merged in (``banks`` entries
    replace or add a bank, a bank set to None is removed; ``routes`` replaces)."""
    raw = msgspec.to_builtins(app.config)
    for section, values in sections.items():
        if section == "routes":
            raw["routes"] = values
        elif section == "banks":
            for name, settings in values.items():
                if settings is None:
                    raw["banks"].pop(name)
                else:
                    raw["banks"][name] = {
                        **raw["banks"].get(name, raw["banks"]["icbc"]),
                        **settings,
                    }
        else:
            raw[section].update(values)
    return msgspec.convert(raw, SwitchConfig)


class Load:
    """Terminals in closed loops of sales while a reload happens; every code kept."""

    def __init__(self, app: SwitchApp, pans: list[str], terminals: int = 8) -> None:
        self.app = app
        self.pans = pans
        self.terminals = terminals
        self.codes: Counter[str] = Counter()
        self.scope = trio.CancelScope()

    async def run(self) -> None:
        with self.scope:
            async with trio.open_nursery() as nursery:
                for index in range(self.terminals):
                    nursery.start_soon(self._terminal, index)

    async def _terminal(self, index: int) -> None:
        client = await pos_client(self.app, Terminal(terminal_id=f"L{index:07d}"))
        pan = self.pans[index % len(self.pans)]
        stan = 0
        while True:
            stan += 1
            response = await client.request(client.terminal.sale(stan, pan, 100 * stan))
            self.codes[str(response.fields[39])] += 1

    async def until(self, sales: int) -> None:
        await eventually(lambda: sum(self.codes.values()) >= sales)


async def test_a_bank_and_a_route_added_under_load_fail_nothing(
    nursery: trio.Nursery, log_sink: LogSink
) -> None:
    app = await start_switch(nursery)
    load = Load(app, [PAN_ICBC, PAN_ABC])
    nursery.start_soon(load.run)
    await load.until(50)
    routes = [*msgspec.to_builtins(app.config.routes), {"prefix": "621700", "bank": "boc"}]
    result = await app.reload(
        edited(app, banks={"boc": {"simulate": True, "port": 0}}, routes=routes)
    )
    assert result.accepted, result.problems
    assert result.changes == {"banks_added": ["boc"], "routes": True}
    assert result.version == app.config_version == 2
    before = sum(load.codes.values())
    await load.until(before + 50)
    load.scope.cancel()
    assert set(load.codes) == {"00"}, load.codes  # nothing failed or refused throughout
    client = await pos_client(app, Terminal(terminal_id="NEWBANK1"))
    sale = await client.request(client.terminal.sale(1, PAN_BOC, 4200))
    assert sale.fields[39] == "00"
    assert app.simulators["boc"].totals().approved == 4200
    assert [line["version"] for line in log_sink.events("config_reloaded")] == [2]


async def test_a_bank_removed_finishes_its_sales_and_keeps_delivering_reversals(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(
        nursery, make_config(saf={"poll_interval_s": 0.05, "backoff_min_s": 0.05})
    )
    simulator = app.simulators["icbc"]
    client = await pos_client(app)
    earlier = client.terminal.sale(1, PAN_ICBC, 3100)
    assert (await client.request(earlier)).fields[39] == "00"
    simulator.latency_s = 0.5
    busy = await pos_client(app, Terminal(terminal_id="BUSY0001"))
    await busy.send(busy.terminal.sale(1, PAN_ICBC, 5200))
    await eventually(lambda: simulator.statistics().pending == 1)
    routes = [r for r in msgspec.to_builtins(app.config.routes) if r["bank"] != "icbc"]
    result = await app.reload(edited(app, banks={"icbc": None}, routes=routes))
    assert result.accepted and result.changes["banks_removed"] == ["icbc"]
    assert (await busy.receive())[1].fields[39] == "00"  # what it had in flight finished
    unrouted = await client.request(client.terminal.sale(2, PAN_ICBC, 1000))
    assert unrouted.fields[39] == "92"  # no route to it any more
    simulator.latency_s = 0
    reversal = await client.request(client.terminal.reversal(earlier))
    assert reversal.fields[39] == "00"
    await eventually(lambda: simulator.totals().reversed == 3100)  # its SAF delivers on
    assert "icbc" in app.retired and "icbc" not in app.connectors
    # The status document still shows it, for its reversals (a collector of its own:
    # the tests' config has no admin interface).
    [icbc] = [bank for bank in StatusCollector(app).document().banks if bank.name == "icbc"]
    assert icbc.retired and icbc.links_up == 2


async def test_a_banks_settings_changed_under_load_take_new_links(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery)
    old = app.connectors["icbc"]
    load = Load(app, [PAN_ICBC])
    nursery.start_soon(load.run)
    await load.until(50)
    result = await app.reload(edited(app, banks={"icbc": {"links": 1, "window": 4}}))
    assert result.accepted and result.changes == {"banks_changed": ["icbc"]}
    new = app.connectors["icbc"]
    assert new is not old and len(new.links) == 1 and new.links[0].window == 4
    before = sum(load.codes.values())
    await load.until(before + 50)
    load.scope.cancel()
    assert set(load.codes) == {"00"}, load.codes
    await eventually(lambda: all(link.status == "down" for link in old.links))  # retired


async def test_a_bad_or_restart_only_configuration_is_refused_whole(
    nursery: trio.Nursery, log_sink: LogSink
) -> None:
    app = await start_switch(nursery)
    running = app.config
    routes = [*msgspec.to_builtins(app.config.routes), {"prefix": "621700", "bank": "nobody"}]
    bad = await app.reload(edited(app, routes=routes, switch={"max_in_flight": 3}))
    assert not bad.accepted and bad.version == 1
    assert bad.problems == ["routes: prefix 621700 names unknown bank 'nobody'"]
    moved = await app.reload(edited(app, pos={"port": 1}, banks={"boc": {"simulate": True}}))
    assert moved.problems == ["pos.port cannot change without a restart"]
    assert app.config is running and "boc" not in app.connectors  # nothing was applied
    assert app.admission is not None and app.admission.queue.config.slots != 3
    assert app.last_reload_error == "pos.port cannot change without a restart"
    assert len(log_sink.events("config_reload_refused")) == 2
    client = await pos_client(app)
    assert (await client.request(client.terminal.sale(1, PAN_ICBC, 1000))).fields[39] == "00"


async def test_a_new_bank_that_does_not_sign_on_is_refused_and_nothing_changes(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    probe = trio.socket.socket()
    await probe.bind(("127.0.0.1", 0))
    closed_port = probe.getsockname()[1]
    probe.close()
    routes = [*msgspec.to_builtins(app.config.routes), {"prefix": "621700", "bank": "boc"}]
    silent = {"port": closed_port, "simulate": False, "connect_timeout_s": 0.2,
              "sign_on_timeout_s": 0.2}  # fmt: skip
    result = await app.reload(edited(app, banks={"boc": silent}, routes=routes))
    assert not result.accepted and "did not all sign on" in result.problems[0]
    assert "boc" not in app.connectors and app.switchboard is not None
    assert app.switchboard.bins.route_or_none(PAN_BOC) is None  # no route to it


@pytest.mark.slow
async def test_sighup_reloads_the_file_a_running_switch_was_started_from(tmp_path: Path) -> None:
    config = _demo_config_on_free_ports(tmp_path)
    switch = await _start(config)
    try:
        await switch.wait_for_event("switch_started")
        config.write_text(config.read_text().replace('level = "info"', 'level = "warning"'))
        switch.process.send_signal(signal.SIGHUP)
        reloaded = await switch.wait_for_event("config_reloaded")
        assert (reloaded["version"], reloaded["log_level"]) == (2, True)
        config.write_text(config.read_text().replace("[log]", "[log]\nlevel_typo = 1\n"))
        switch.process.send_signal(signal.SIGHUP)
        refused = await switch.wait_for_event("config_reload_refused")
        assert "level_typo" in str(refused["problems"])
    finally:
        switch.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await switch.read_to_end()
            assert await switch.process.wait() == 0
