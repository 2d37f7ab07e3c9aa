"""Stand-in eligibility (risk.md, "Stand-in processing (STIP)"), sans-IO, as a table:
each case changes one thing of an eligible sale and names the refusal it must get."""

from __future__ import annotations

from datetime import date
from typing import Any

import msgspec
import pytest

from switch.config import StandInSection
from switch.core.stip import (
    NoStandIn,
    StandIn,
    StandInDesk,
    StandInRequest,
    StandInTally,
    auth_code,
    decide,
    expired,
)

CONFIG = StandInSection(
    enabled=True,
    bins=["625808"],
    single_cap_fen=200_000,
    card_daily_cap_fen=500_000,
    card_daily_count=5,
    max_pending_fen=1_000_000,
)
CARD = b"card-hash-1"
SALE = StandInRequest(
    kind="sale", channel="pos", pan="6258080000123453", card_key=CARD, amount=8800,
    currency="156", expiry="2812", has_pin=False, has_chip=False, mcc="5411",
    local_date="1122", business_date=date(2025, 11, 22),
)  # fmt: skip


def sale(**changes: Any) -> StandInRequest:
    return msgspec.structs.replace(SALE, **changes)


@pytest.mark.parametrize(
    ("request_", "config", "refusal"),
    [
        (SALE, msgspec.structs.replace(CONFIG, enabled=False), "stand-in off"),
        (sale(kind="balance"), CONFIG, "not a sale (balance)"),
        (sale(kind="refund"), CONFIG, "not a sale (refund)"),
        (sale(kind="preauth"), CONFIG, "not a sale (preauth)"),
        (sale(channel="online"), CONFIG, "channel online not stood in"),
        (sale(has_pin=True), CONFIG, "PIN present"),
        (sale(has_chip=True), CONFIG, "chip data present"),
        (sale(currency="840"), CONFIG, "currency 840"),
        (sale(pan="6226901234567893"), CONFIG, "card not covered"),
        (sale(mcc="6011"), CONFIG, "MCC 6011 excluded"),
        (sale(mcc=None), CONFIG, "MCC unknown"),
        (sale(expiry=None), CONFIG, "no expiry"),
        (sale(expiry="2510"), CONFIG, "card expired"),
        (sale(amount=200_001), CONFIG, "single cap"),
    ],
)
def test_each_rule_refuses_with_its_reason(
    request_: StandInRequest, config: StandInSection, refusal: str
) -> None:
    assert decide(request_, "citic", "circuit_open", config, StandInTally()) == NoStandIn(refusal)


@pytest.mark.parametrize(
    ("request_", "config"),
    [
        (SALE, CONFIG),
        (sale(amount=200_000), CONFIG),  # at the cap: within it
        (sale(expiry="2511"), CONFIG),  # good to the end of its month
        (sale(channel="online"), msgspec.structs.replace(CONFIG, channels=["pos", "online"])),
    ],
)
def test_eligible_sales_are_stood_in_with_the_reason_given(
    request_: StandInRequest, config: StandInSection
) -> None:
    for why in ("circuit_open", "no_link", "bank_91"):
        assert decide(request_, "citic", why, config, StandInTally()) == StandIn(why)


def test_the_defaults_are_risk_md_s() -> None:
    defaults = StandInSection()
    assert not defaults.enabled and defaults.bins == [] and defaults.channels == ["pos"]
    assert defaults.mcc_excluded == ["4829", "6010", "6011", "6051", "7995"]


def test_a_card_s_daily_amount_and_count_count_this_one_on_its_local_date() -> None:
    desk = StandInDesk({"citic": CONFIG})
    for _ in range(2):
        assert desk.decide("citic", sale(amount=200_000), "no_link") == StandIn("no_link")
    # 400,000 standing: 100,000 more is at the cap, 100,001 past it.
    assert desk.decide("citic", sale(amount=100_001), "no_link") == NoStandIn("card daily cap")
    assert desk.decide("citic", sale(amount=100_000), "no_link") == StandIn("no_link")
    # Another local date, another card: their own tallies.
    assert desk.decide("citic", sale(local_date="1123"), "no_link") == StandIn("no_link")
    assert desk.decide("citic", sale(card_key=b"other"), "no_link") == StandIn("no_link")
    assert desk.declines == {("citic", "card daily cap"): 1}

    counted = StandInDesk({"citic": msgspec.structs.replace(CONFIG, card_daily_count=2)})
    assert counted.decide("citic", sale(amount=100), "no_link") == StandIn("no_link")
    assert counted.decide("citic", sale(amount=100), "no_link") == StandIn("no_link")
    assert counted.decide("citic", sale(amount=100), "no_link") == NoStandIn("card daily count")
    unlimited = StandInDesk({"citic": msgspec.structs.replace(CONFIG, card_daily_count=0)})
    for _ in range(10):
        assert unlimited.decide("citic", sale(amount=100), "no_link") == StandIn("no_link")


def test_a_void_of_a_stood_in_sale_gives_its_card_s_day_back() -> None:
    desk = StandInDesk({"citic": msgspec.structs.replace(CONFIG, card_daily_count=1)})
    assert desk.decide("citic", SALE, "no_link") == StandIn("no_link")
    assert desk.decide("citic", SALE, "no_link") == NoStandIn("card daily count")
    desk.tally.undone("citic", CARD, "1122", SALE.amount)
    assert desk.decide("citic", SALE, "no_link") == StandIn("no_link")


def test_the_bank_s_pending_amount_is_capped_and_released_by_final_answers() -> None:
    config = msgspec.structs.replace(CONFIG, max_pending_fen=20_000, card_daily_cap_fen=10**9,
                                     card_daily_count=0)  # fmt: skip
    desk = StandInDesk({"citic": config})
    assert desk.decide("citic", sale(amount=15_000), "circuit_open") == StandIn("circuit_open")
    assert desk.decide("citic", sale(amount=5_001), "circuit_open") == NoStandIn(
        "bank pending cap"
    )
    assert desk.decide("citic", sale(amount=5_000), "circuit_open") == StandIn("circuit_open")
    desk.advised("citic", "accepted", 15_000, final=True, on="2025-11-22")
    assert desk.tally.pending("citic") == 5_000
    # A retry or a manual advice is still pending at the bank.
    desk.advised("citic", "manual", 5_000, final=False, on="2025-11-22")
    assert desk.tally.pending("citic") == 5_000
    assert desk.decide("citic", sale(amount=15_000), "circuit_open") == StandIn("circuit_open")


def test_the_tally_is_rebuilt_from_the_journal_s_rows() -> None:
    tally = StandInTally()
    tally.load([
        ("citic", CARD, "1122", 1000, True, True),
        ("citic", CARD, "1122", 2000, False, False),  # voided, its advice cancelled
        ("citic", CARD, "1121", 4000, True, False),
        ("abc", CARD, "1122", 8000, True, True),
    ])  # fmt: skip
    assert tally.card("citic", CARD, "1122") == (1, 1000)
    assert tally.card("citic", CARD, "1121") == (1, 4000)
    assert (tally.pending("citic"), tally.pending("abc")) == (1000, 8000)


def test_a_shared_tally_is_the_journal_s_rows_and_its_own_not_yet_shown() -> None:
    """Several workers on one journal: each read of every worker's stood-in sales
    replaces the tally; a stand-in decided here counts until a read shows it (once);
    voids and answers count once the journal says so."""
    config = msgspec.structs.replace(CONFIG, card_daily_count=3, card_daily_cap_fen=10**9)
    desk = StandInDesk({"citic": config})
    desk.tally.share()
    # Another worker's stood-in sale on the card, read from the journal.
    desk.tally.replace([("532614000001", "citic", CARD, "1122", 1000, True, True)])
    assert desk.decide("citic", sale(rrn="532614000002"), "no_link") == StandIn("no_link")
    assert desk.tally.card("citic", CARD, "1122") == (2, 1000 + SALE.amount)
    # A read that does not show this worker's yet keeps it; one that does counts it once.
    desk.tally.replace([("532614000001", "citic", CARD, "1122", 1000, True, True)])
    assert desk.tally.card("citic", CARD, "1122") == (2, 1000 + SALE.amount)
    journal = [
        ("532614000001", "citic", CARD, "1122", 1000, True, True),
        ("532614000002", "citic", CARD, "1122", SALE.amount, True, True),
    ]
    desk.tally.replace(journal)
    assert desk.tally.card("citic", CARD, "1122") == (2, 1000 + SALE.amount)
    assert desk.tally.pending("citic") == 1000 + SALE.amount
    # A third here, then the cap (3) holds whichever worker the fourth reaches.
    assert desk.decide("citic", sale(rrn="532614000003"), "no_link") == StandIn("no_link")
    assert desk.decide("citic", sale(rrn="532614000004"), "no_link") == NoStandIn(
        "card daily count"
    )
    # An answer or a void here waits for the journal (the caps err towards refusing).
    desk.advised("citic", "accepted", 1000, final=True, on="2025-11-22")
    desk.tally.undone("citic", CARD, "1122", 1000)
    assert desk.tally.card("citic", CARD, "1122")[0] == 3
    desk.tally.replace([
        ("532614000001", "citic", CARD, "1122", 1000, False, False),  # voided, advised
        *journal[1:],
        ("532614000003", "citic", CARD, "1122", SALE.amount, True, True),
    ])  # fmt: skip
    assert desk.tally.card("citic", CARD, "1122") == (2, 2 * SALE.amount)
    assert desk.tally.pending("citic") == 2 * SALE.amount
    # One not journaled is forgotten at once.
    assert desk.decide("citic", sale(rrn="532614000005"), "no_link") == StandIn("no_link")
    desk.undo("citic", sale(rrn="532614000005"))
    desk.tally.replace(journal[1:])
    assert desk.tally.card("citic", CARD, "1122") == (1, SALE.amount)


def test_the_auth_code_is_s_and_the_rrn_s_last_five() -> None:
    assert auth_code("532614000150") == "S00150"


@pytest.mark.parametrize(
    ("expiry", "on", "past"),
    [("2511", date(2025, 11, 30), False), ("2510", date(2025, 11, 1), True),
     ("2612", date(2025, 11, 22), False), ("2412", date(2025, 1, 1), True)],
)  # fmt: skip
def test_expiry_is_past_after_its_month(expiry: str, on: date, past: bool) -> None:
    assert expired(expiry, on) is past
