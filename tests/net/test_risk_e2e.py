"""Risk rules (risk.md) over real sockets, a real journal file and the simulated bank:
a decline is answered with its rule's code, journaled with its id and sent to no bank;
a shadow rule's hit is journaled and changes nothing; a review flags; velocity windows
reserve, give back (a bank's decline) and let go of a voided sale; they are rebuilt from
the journal at a restart, and a reload swaps the rules (a bad file refused whole)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from switch.admin.status import status_decoder
from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.net.clients import PosClient
from switch.terminal import Terminal
from switch.wire import online as wire
from tests.admin.http import get
from tests.admin.test_http import labels, samples
from tests.conftest import make_config
from tests.net.helpers import PAN_ABC, PAN_ICBC, online_client, pos_client, purchase, start_switch
from tests.store.engines import journal_rows

DECISIONS = """[[rules]]
id = "big"
mode = "enforce"
kind = "amount_cap"
max_fen = 100000
action = "decline"
code = "61"

[[rules]]
id = "shadow-small"
mode = "shadow"
kind = "amount_cap"
max_fen = 500
action = "decline"
code = "59"

[[rules]]
id = "online-review"
mode = "enforce"
kind = "amount_cap"
channels = ["online"]
max_fen = 1000
action = "review"

[[rules]]
id = "blocked-devices"
mode = "enforce"
kind = "blocklist"
key = "device"
values = ["bad-phone-1"]
action = "decline"
code = "59"
"""

WINDOWS = """[[rules]]
id = "pos-card-day"
mode = "enforce"
kind = "velocity"
channels = ["pos"]
key = "card"
window = "day"
counts = "approved"
max_fen = 5000
action = "decline"
code = "61"

[[rules]]
id = "online-card-tries"
mode = "enforce"
kind = "velocity"
channels = ["online"]
key = "card"
window = "1h"
counts = "attempts"
max_count = 3
action = "decline"
code = "65"
"""


def config_with_rules(tmp_path: Path, text: str) -> SwitchConfig:
    path = tmp_path / "risk.toml"
    path.write_text(text)
    return make_config(risk={"rules_file": str(path)}, admin={"enabled": True, "port": 0})


def rows(config: SwitchConfig) -> list[dict[str, Any]]:
    return journal_rows(
        config,
        "SELECT kind, amount, state, code, risk_version, risk_rule, risk_review, risk_shadow, "
        "device_id FROM txn ORDER BY created_at",
    )


def sales_at_bank(app: SwitchApp) -> list[int]:
    return [
        int(str(m.fields[4]))
        for m in app.simulators["icbc"].received
        if m.mti == "0200" and str(m.fields[3]).startswith("00")
    ]


async def stop(app: SwitchApp) -> None:
    app.shutdown()
    with trio.fail_after(10):
        await app.stopped.wait()


async def sale(client: PosClient, stan: int, amount: int, pan: str = PAN_ICBC) -> dict[int, Any]:
    return (await client.request(client.terminal.sale(stan, pan, amount))).fields


async def test_a_decline_is_answered_with_its_code_journaled_and_sent_to_no_bank(
    tmp_path: Path,
) -> None:
    config = config_with_rules(tmp_path, DECISIONS)
    async with trio.open_nursery() as nursery:
        app = await start_switch(nursery, config)
        pos = await pos_client(app)
        declined = await sale(pos, 1, 200000)
        shadowed = await sale(pos, 2, 1000)
        online = await online_client(app)
        reviewed = await online.request(purchase("r-1", 2000))
        blocked = await online.request(purchase("r-2", 300, device_id="bad-phone-1"))
        plain = await online.request(purchase("r-3", 300, device_id="good-phone"))
        at_bank = sales_at_bank(app)
        status = status_decoder.decode((await get(app.admin_port, "/status")).body).risk
        scrape = (await get(app.admin_port, "/metrics")).body.decode()
        await stop(app)
    assert declined[39] == "61" and 37 in declined and 15 in declined
    assert shadowed[39] == "00"
    assert isinstance(reviewed, wire.Result) and reviewed.approved
    assert isinstance(blocked, wire.Result) and blocked.code == "59"
    assert blocked.message == "suspected fraud"  # the code's meaning, never the rule
    assert isinstance(plain, wire.Result) and plain.approved
    # Neither decline reached the bank; the shadow hit and the review went on.
    assert at_bank == [1000, 2000, 300]
    journaled = rows(config)
    version = journaled[0]["risk_version"]
    assert version is not None and len(version) == 12
    assert [
        (r["amount"], r["state"], r["code"], r["risk_rule"], r["risk_review"], r["risk_shadow"])
        for r in journaled
    ] == [
        (200000, "declined", "61", "big", None, "shadow-small:decline:59"),
        (1000, "approved", "00", None, None, "shadow-small:decline:59"),
        (2000, "approved", "00", None, "online-review", "shadow-small:decline:59"),
        (300, "declined", "59", "blocked-devices", None, None),
        (300, "approved", "00", None, None, None),
    ]
    assert [r["device_id"] for r in journaled][3:] == ["bad-phone-1", "good-phone"]
    assert status is not None and status.version == version and status.last_error is None
    assert {rule.id: rule.hits_today for rule in status.rules} == {
        "big": 1, "shadow-small": 3, "online-review": 1, "blocked-devices": 1,
    }  # fmt: skip
    hits = samples(scrape, "payswitch_risk_hits_total")
    assert hits == {
        labels(rule="big", mode="enforce", action="decline"): 1,
        labels(rule="shadow-small", mode="shadow", action="decline"): 3,
        labels(rule="online-review", mode="enforce", action="review"): 1,
        labels(rule="blocked-devices", mode="enforce", action="decline"): 1,
    }
    # Every request the rules met was timed: five sales and purchases.
    assert samples(scrape, "payswitch_risk_evaluation_seconds_count") == {(): 5}


async def test_windows_reserve_give_back_let_go_of_voids_and_are_rebuilt_at_a_restart(
    tmp_path: Path,
) -> None:
    config = config_with_rules(tmp_path, WINDOWS)
    async with trio.open_nursery() as nursery:
        app = await start_switch(nursery, config)
        pos = await pos_client(app)
        first = await sale(pos, 1, 3000)
        over = await sale(pos, 2, 3000)  # 6000 > 5000 on the card today
        void = await pos.request(pos.terminal.void(3, PAN_ICBC, 3000, str(first[37]), 1))
        after_void = await sale(pos, 4, 3000)  # the voided one left the window
        bank_declined = await sale(pos, 5, 1005)  # the bank says 05: its hold goes
        fills = await sale(pos, 6, 2000)  # 3000 + 2000 = 5000: not more than the cap
        online = await online_client(app)
        tries = [await online.request(purchase(f"t-{n}", 100, pan=PAN_ABC)) for n in range(4)]
        await stop(app)
        # A new process on the same journal: the windows hold what they held.
        app = await start_switch(nursery, config)
        pos = await pos_client(app, Terminal())
        again = await sale(pos, 7, 100)
        other_card = await sale(pos, 8, 100, pan=PAN_ABC)
        online = await online_client(app)
        fifth = await online.request(purchase("t-5", 100, pan=PAN_ABC))
        await stop(app)
    assert [first[39], over[39], void.fields[39], after_void[39]] == ["00", "61", "00", "00"]
    assert [bank_declined[39], fills[39]] == ["05", "00"]
    assert [t.code for t in tries if isinstance(t, wire.Result)] == ["00", "00", "00", "65"]
    assert again[39] == "61" and other_card[39] == "00"
    assert isinstance(fifth, wire.Result) and fifth.code == "65"


async def test_a_reload_swaps_the_rules_and_a_bad_file_is_refused_whole(tmp_path: Path) -> None:
    config = config_with_rules(tmp_path, DECISIONS)
    rules_file = tmp_path / "risk.toml"
    async with trio.open_nursery() as nursery:
        app = await start_switch(nursery, config)
        pos = await pos_client(app)
        before = await sale(pos, 1, 150000)
        old_version = app.risk.rules.version
        rules_file.write_text(DECISIONS.replace("max_fen = 100000", "max_fn = 100000"))
        refused = await app.reload(app.config)
        still = await sale(pos, 2, 150000)  # the running rules stay
        status = app.risk.statistics()
        rules_file.write_text(DECISIONS.replace("max_fen = 100000", "max_fen = 200000"))
        applied = await app.reload(app.config)
        now_passes = await sale(pos, 3, 150000)
        new_version = app.risk.rules.version
        reloads = dict(app.risk.reloads)
        await stop(app)
    assert before[39] == "61" and still[39] == "61" and now_passes[39] == "00"
    assert not refused.accepted
    assert any("risk.toml: rule 'big': key max_fn: unknown key" in p for p in refused.problems)
    assert status["last_error"] is not None and "max_fn" in str(status["last_error"])
    assert status["version"] == old_version
    assert applied.accepted and new_version != old_version
    assert reloads == {"refused": 1, "applied": 1}
    assert [r["risk_version"] for r in rows(config)] == [old_version, old_version, new_version]
