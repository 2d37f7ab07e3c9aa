"""What a client sends is checked against what its bank can receive before anything is
journaled: field formats of the bank's dialect, ids the bank would not tell apart, and
card data in free text that would be kept. Through the real listeners, simulated banks
and journal files."""

from __future__ import annotations

import shutil
import time
import tomllib
from pathlib import Path

import pytest
import tomli_w
import trio

from switch import ops
from switch.app import SwitchApp
from switch.config import load_config
from switch.core.bank import OriginalData
from switch.core.book import TxnRecord
from switch.core.clock import WALL_CLOCK
from switch.errors import ConfigError
from switch.store.port import TxnStarted
from switch.terminal import Terminal
from switch.wire import online as wire
from tests.conftest import DIALECTS, REPO, make_config
from tests.net.helpers import (
    FAST_SAF,
    PAN_ABC,
    PAN_ICBC,
    eventually,
    online_client,
    pos_client,
    purchase,
    start_switch,
)
from tests.net.test_durability import db, journal_as_a_crash_left_it, rows, stored_bytes
from tests.store.engines import ENGINES, Configure, config_maker


def transactions(app: SwitchApp) -> list[dict[str, object]]:
    return rows(app, "SELECT rrn, merchant_id, state FROM txn")


def bank_requests(app: SwitchApp, bank: str) -> list[str]:
    """The MTIs of what ``bank`` received other than network management."""
    return [m.mti for m in app.simulators[bank].received if m.mti != "0800"]


# -- item: every field the bank receives is valid for its dialect, before the journal ---


async def test_a_merchant_id_the_bank_cannot_carry_is_refused_30_before_the_journal(
    nursery: trio.Nursery,
) -> None:
    """Full-width letters and control characters in merchant_id (42 is ans15 at every
    bank): 30 naming the field, the connection still open, nothing journaled, nothing
    sent, and the bank's circuit untouched (one timeout would open it here)."""
    config = make_config(banks={"icbc": {"circuit_timeouts": 1, "circuit_open_s": 120}})
    app = await start_switch(nursery, config)
    client = await online_client(app)
    for n, merchant_id in enumerate(["ＳＨＯＰ", "SH\x01P", "SHOP\x7f"]):
        bad = wire.Purchase(
            id=f"fw-{n}", merchant_id=merchant_id, amount=1000, currency="CNY",
            card=wire.Card(pan=PAN_ICBC, expiry="2812"),
        )  # fmt: skip
        with trio.fail_after(5):
            answer = await client.request(bad)
        assert isinstance(answer, wire.Error), answer
        assert (answer.id, answer.code) == (f"fw-{n}", "30")
        assert "merchant_id" in answer.message
    assert transactions(app) == []
    assert bank_requests(app, "icbc") == []
    assert not app.connectors["icbc"].circuit_open()
    good = await client.request(purchase("fw-ok", 1000))  # same connection
    assert isinstance(good, wire.Result) and good.approved


def narrow_dialects(tmp_path: Path) -> Path:
    """The stock dialects and ``h2h-narrow``: h2h-ascii whose 42 is ``an`` (letters,
    digits and spaces only), as some banks define it."""
    folder = tmp_path / "dialects"
    shutil.copytree(DIALECTS, folder)
    text = (DIALECTS / "h2h-ascii.toml").read_text()
    text = text.replace('name = "h2h-ascii"', 'name = "h2h-narrow"')
    merchant = 'name = "card acceptor id (merchant)"\nformat = "ans"'
    assert merchant in text
    text = text.replace(merchant, 'name = "card acceptor id (merchant)"\nformat = "an"')
    (folder / "h2h-narrow.toml").write_text(text)
    return folder


async def test_each_request_is_checked_against_its_own_banks_dialect(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """icbc's 42 takes no dash; abc's does. A merchant id with a dash is refused 30
    (naming merchant_id online, 42 on POS) for an icbc card, with nothing journaled
    or sent and the id free to be used again, and approved for an abc card."""
    config = make_config(
        switch={"dialects_dir": str(narrow_dialects(tmp_path))},
        banks={"icbc": {"dialect": "h2h-narrow", "circuit_timeouts": 1, "circuit_open_s": 120}},
    )
    app = await start_switch(nursery, config)
    online = await online_client(app)
    refused = await online.request(
        wire.Purchase(
            id="dash-1", merchant_id="SHOP-01", amount=1000, currency="CNY",
            card=wire.Card(pan=PAN_ICBC, expiry="2812"),
        )
    )  # fmt: skip
    assert isinstance(refused, wire.Error), refused
    assert (refused.id, refused.code) == ("dash-1", "30")
    assert "merchant_id" in refused.message and "42" in refused.message

    terminal = Terminal(merchant_id="SHOP-01")
    pos = await pos_client(app, terminal)
    answer = await pos.request(terminal.sale(1, PAN_ICBC, 1000))
    assert answer.fields[39] == "30"

    assert transactions(app) == []
    assert bank_requests(app, "icbc") == []
    assert not app.connectors["icbc"].circuit_open()

    # Nothing was kept: the id may carry the corrected request (an abc card).
    fixed = await online.request(
        wire.Purchase(
            id="dash-1", merchant_id="SHOP-01", amount=1000, currency="CNY",
            card=wire.Card(pan=PAN_ABC, expiry="2812"),
        )
    )  # fmt: skip
    assert isinstance(fixed, wire.Result) and fixed.approved
    assert (await pos.request(terminal.sale(2, PAN_ABC, 1000))).fields[39] == "00"
    sale = await online.request(purchase("dash-2", 1000))  # icbc still serves SHOP01
    assert isinstance(sale, wire.Result) and sale.approved


@pytest.fixture(params=ENGINES)
def on_each_engine(request: pytest.FixtureRequest) -> Configure:
    """``make_config``, with the journal on this run's engine."""
    return config_maker(request)


async def test_a_reversal_that_can_never_be_encoded_goes_to_manual_not_to_the_circuit(
    nursery: trio.Nursery, on_each_engine: Configure
) -> None:
    """A sale left in doubt (``sending``) with a merchant id the bank cannot carry, as
    the switch journaled them before it checked: at start-up its reversal goes to
    ``manual`` at once with the reason, no attempt counted, nothing sent, and the bank's
    circuit stays closed (one timeout would open it here) so its sales are approved."""
    config = on_each_engine(
        saf=FAST_SAF, banks={"icbc": {"circuit_timeouts": 1, "circuit_open_s": 120}}
    )
    app = SwitchApp(config)
    stamp = WALL_CLOCK.stamp(8)
    for n in range(1, 4):
        record = TxnRecord(
            kind="sale", rrn=f"{stamp.rrn_day}0000000{n}", bank="icbc", channel="online",
            request_mti="0200", terminal_id="ONLINE01", merchant_id="ＳＨＯＰ",
            stan=f"00000{n}", batch="000000", local_date=stamp.local_date,
            pan_masked="622202*********2221", pan_hmac=app.vault.lookup(PAN_ICBC),
            pan_sealed=app.vault.seal(PAN_ICBC), amount=1000 * n, currency="156",
            bank_processing_code="000000", online_id=f"in-doubt-{n}",
            sent=OriginalData(mti="0200", stan=f"00000{n}", transmission=stamp.transmission),
        )  # fmt: skip
        journal_as_a_crash_left_it(config, TxnStarted.of(record, time.time()))

    app = await start_switch(nursery, config)
    await eventually(lambda: [r["state"] for r in ops.saf_list(db(app))] == ["manual"] * 3)
    for reversal in ops.saf_list(db(app)):
        assert reversal["attempts"] == 0
        assert "field 42" in str(reversal["last_result"]), reversal
    assert bank_requests(app, "icbc") == []
    assert not app.connectors["icbc"].circuit_open()
    client = await online_client(app)
    for n in range(5):
        sale = await client.request(purchase(f"after-{n}", 1000 + n))
        assert isinstance(sale, wire.Result) and sale.code == "00", sale


# -- item: card data typed into free text is refused, never stored ----------------------


async def test_card_data_in_order_id_or_memo_is_refused_and_never_stored(
    nursery: trio.Nursery, on_each_engine: Configure
) -> None:
    app = await start_switch(nursery, on_each_engine())
    client = await online_client(app)
    spaced = " ".join(PAN_ABC[i : i + 4] for i in range(0, len(PAN_ABC), 4))
    cases = [
        ("memo", {"memo": f"card {PAN_ABC} exp 2812"}),
        ("order_id", {"order_id": spaced}),
        ("memo", {"memo": f"track {PAN_ABC}=28121015555"}),
        ("memo", {"memo": "cvv is 987, thanks"}),
    ]
    for n, (field, extra) in enumerate(cases):
        answer = await client.request(
            purchase(f"free-{n}", 1500, pan=PAN_ICBC, cvv2="987", **extra)
        )
        assert isinstance(answer, wire.Error), (field, answer)
        assert (answer.id, answer.code) == (f"free-{n}", "30") and field in answer.message
    void = await client.request(
        wire.Void(id="free-v", merchant_id="SHOP01", original_id="x", memo=f"pan {PAN_ICBC}")
    )
    assert isinstance(void, wire.Error) and void.code == "30" and "memo" in void.message

    kept = await client.request(
        purchase("free-ok", 1500, cvv2="987", order_id="ORD-2025-11-22-0001", memo="order 9870")
    )
    assert isinstance(kept, wire.Result) and kept.approved
    assert kept.order_id == "ORD-2025-11-22-0001"
    assert bank_requests(app, "icbc") == ["0200"]  # only the clean one went out
    stored = stored_bytes(app)
    for secret in (PAN_ABC, spaced, "28121015555"):
        assert secret.encode() not in stored, secret


# -- item: look-alike ids are refused; what the bank sees is the key -------------------


async def test_merchant_ids_with_spaces_at_either_end_or_blank_are_refused(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery, make_config())
    client = await online_client(app)
    for n, merchant_id in enumerate(["SHOP01 ", " SHOP01", "   ", "\tSHOP01"]):
        answer = await client.request(
            wire.Purchase(
                id=f"ws-{n}", merchant_id=merchant_id, amount=1000, currency="CNY",
                card=wire.Card(pan=PAN_ICBC, expiry="2812"),
            )
        )  # fmt: skip
        assert isinstance(answer, wire.Error), (merchant_id, answer)
        assert answer.code == "30" and "merchant_id" in answer.message
        assert "printable ASCII with no space at either end" in answer.message
    status = await client.request(wire.Status(id="ws-s", merchant_id="SHOP01 ", original_id="a"))
    assert isinstance(status, wire.Error) and status.code == "30"
    assert transactions(app) == [] and bank_requests(app, "icbc") == []

    # POS: 42 and 41 are fixed ans fields padded on the right, which is their normal
    # form; blank, or a space before the id, is refused.
    for n, terminal in enumerate(
        [
            Terminal(merchant_id="               "),
            Terminal(merchant_id=" 898310048990001"[:15]),
            Terminal(terminal_id="        "),
            Terminal(terminal_id=" POS0001"),
        ]
    ):
        pos = await pos_client(app, terminal)
        assert (await pos.request(terminal.sale(n + 1, PAN_ICBC, 1000))).fields[39] == "30"
        await pos.aclose()
    assert transactions(app) == [] and bank_requests(app, "icbc") == []

    padded = Terminal(merchant_id="SHOP01")  # sent as "SHOP01" and 9 spaces
    pos = await pos_client(app, padded)
    assert (await pos.request(padded.sale(9, PAN_ICBC, 1000))).fields[39] == "00"
    online_sale = await client.request(purchase("ws-ok", 1000))
    assert isinstance(online_sale, wire.Result) and online_sale.approved
    assert {row["merchant_id"] for row in transactions(app)} == {"SHOP01"}


def test_an_online_terminal_id_with_a_space_at_either_end_fails_the_config(
    tmp_path: Path,
) -> None:
    """41 of online requests comes from the config: it is held to the same rule, at
    start-up, naming the key."""
    raw = tomllib.loads((REPO / "conf" / "switch.toml").read_text())
    path = tmp_path / "switch.toml"
    for terminal_id in ("ONLINE1 ", " ONLINE1", "        "):
        raw["online"]["terminal_id"] = terminal_id
        path.write_text(tomli_w.dumps(raw))
        with pytest.raises(ConfigError, match=r"online\.terminal_id"):
            load_config(path, check=False)
    raw["online"]["terminal_id"] = "ONLINE01"
    path.write_text(tomli_w.dumps(raw))
    assert load_config(path, check=False).online.terminal_id == "ONLINE01"
