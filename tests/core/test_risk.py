"""Risk rules (risk.md): the file, the indexes, the windows and the counting; synchronous,
times given (epoch seconds), the rules and values files real files in a temporary folder."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.core.risk import (
    SCOPES,
    PastOutcome,
    PastRequest,
    RiskEngine,
    RiskRequest,
    RulesError,
    RuleSet,
    RulesFile,
    RuleSpec,
    Window,
    card_hash,
    card_hashes,
    compile_rules,
    diff,
    load_rules,
)
from switch.store.crypto import CardKey, CardKeyFile, CardVault

ACTIVE_KEY = bytes(range(32))
OLD_KEY = bytes(range(100, 132))
PAN = "6226901234567893"
OTHER_PAN = "6226901234567000"
BLOCKED_PAN = "6222020000000004"

SAMPLE = """\
rules = [
  { id = "card-single", mode = "enforce", kind = "amount_cap", funding = ["card", "cobrand"], max_fen = 5000000, action = "decline", code = "61" },
  { id = "card-1m-tries", mode = "enforce", kind = "velocity", key = "card", window = "1m", counts = "attempts", max_count = 5, action = "decline", code = "65" },
  { id = "card-day-amount", mode = "enforce", kind = "velocity", key = "card", window = "day", counts = "approved", max_fen = 10000000, action = "decline", code = "61" },
  { id = "customer-24h-credit", mode = "enforce", kind = "velocity", key = "customer", funding = ["credit"], window = "24h", counts = "approved", max_count = 20, max_fen = 2000000, action = "decline", code = "61" },
  { id = "device-1h", mode = "shadow", kind = "velocity", key = "device", window = "1h", counts = "attempts", max_count = 10, action = "decline", code = "59" },
  { id = "blocked-cards", mode = "enforce", kind = "blocklist", key = "card", values_file = "blocked-cards.txt", action = "decline", code = "62" },
  { id = "blocked-bins", mode = "enforce", kind = "blocklist", key = "bin", values = ["62284899"], action = "decline", code = "57" },
  { id = "blocked-terminals", mode = "enforce", kind = "blocklist", key = "terminal", values = ["898310099990001/POS00009"], action = "decline", code = "59" },
  { id = "credit-mcc", mode = "enforce", kind = "mcc", funding = ["credit", "cobrand"], deny = ["4829", "6010", "6011", "6051", "7995"], action = "decline", code = "57" },
  { id = "online-large", mode = "enforce", kind = "amount_cap", channels = ["online"], max_fen = 2000000, action = "review" },
]
"""  # noqa: E501  (risk.md's sample, as published)

# 15:02:11 local (UTC + 8) on 22 November 2026, as in risk.md's samples.
T0 = datetime(2026, 11, 22, 7, 2, 11, tzinfo=UTC).timestamp()
LOCAL_MIDNIGHT = datetime(2026, 11, 22, 16, 0, 0, tzinfo=UTC).timestamp()


def blocked_cards_text() -> str:
    # Hashed under the old key: a listed hash matches under every look-up key held.
    return f"# cards reported stolen\n\n{card_hash(OLD_KEY, BLOCKED_PAN)}  # 2026-11-01\n"


def write_sample(folder: Path, text: str = SAMPLE) -> Path:
    (folder / "blocked-cards.txt").write_text(blocked_cards_text())
    path = folder / "risk.toml"
    path.write_text(text)
    return path


def load(path: Path) -> RuleSet:
    return load_rules(
        path.read_bytes(),
        source=str(path),
        read_beside=lambda name: (path.parent / name).read_bytes(),
    )


@pytest.fixture
def sample(tmp_path: Path) -> RuleSet:
    return load(write_sample(tmp_path))


def request(**overrides: Any) -> RiskRequest:
    pan = overrides.pop("pan", PAN)
    values: dict[str, Any] = {
        "channel": "pos",
        "kind": "sale",
        "funding": "card",
        "amount": 10_000,
        "merchant_id": "898310070110001",
        "terminal_id": "POS00007",
        "mcc": "7011",
        "card": card_hashes([ACTIVE_KEY, OLD_KEY], pan) if pan else (),
        "pan_prefix": pan[:11] if pan else "",
    } | overrides
    return RiskRequest(**values)


def spec(rule_id: str, **keys: Any) -> RuleSpec:
    return RuleSpec(id=rule_id, **({"mode": "enforce", "action": "decline", "code": "61"} | keys))


def ruleset(*specs: RuleSpec, values: dict[str, bytes] | None = None) -> RuleSet:
    return compile_rules(RulesFile(rules=specs), values or {}, source="test.toml", version="v")


# -- the file ------------------------------------------------------------------------


def test_the_sample_file_compiles_with_its_version(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    rules = load(path)
    assert [rule.id for rule in rules.rules][:3] == [
        "card-single",
        "card-1m-tries",
        "card-day-amount",
    ]
    assert len(rules) == 10
    expected = hashlib.sha256(path.read_bytes() + (tmp_path / "blocked-cards.txt").read_bytes())
    assert rules.version == expected.hexdigest()[:12]
    # The values file changes the version as the rules file does.
    (tmp_path / "blocked-cards.txt").write_text(blocked_cards_text() + card_hash(OLD_KEY, PAN))
    assert load(path).version != rules.version


RULE = (
    '{ id = "r1", mode = "enforce", kind = "amount_cap", max_fen = 100, action = "decline", '
    'code = "61" }'
)


@pytest.mark.parametrize(
    ("rule", "named"),
    [
        (RULE.replace("max_fen", "max_fne"), "rule 'r1': key max_fne: unknown key"),
        (RULE.replace('mode = "enforce", ', ""), "rule 'r1': key mode: missing key"),
        (
            RULE.replace('"enforce"', '"enforced"'),
            "rule 'r1': key mode: Invalid enum value 'enforced'",
        ),
        (RULE.replace("100", "-1"), "rule 'r1': key max_fen: Expected `int` >= 0"),
        (RULE.replace('"61"', '"05"'), "rule 'r1': key code: Invalid enum value '05'"),
        (RULE.replace('"r1"', '"r 1"'), "rule 'r 1': key id: Expected `str` matching"),
        (RULE.replace('"r1"', '"' + "r" * 33 + '"'), "key id: Expected `str` matching"),
        (RULE.replace(', code = "61"', ""), "rule 'r1': key code: a decline rule needs"),
        (
            RULE.replace('"decline", code = "61"', '"review", code = "61"'),
            "key code: only a decline",
        ),
        (RULE.replace("max_fen = 100", "max_count = 3"), "key max_count: does not apply"),
        (RULE.replace(", max_fen = 100", ""), "rule 'r1': key max_fen: an amount_cap rule needs"),
        (RULE.replace("max_fen = 100", "channels = []"), "key channels: an empty scope"),
        (
            RULE.replace("max_fen = 100", 'funding = ["cash"]'),
            "rule 'r1': key funding[0]: Invalid enum value 'cash'",
        ),
        (
            RULE.replace("max_fen = 100", 'kinds = ["sale", "refund"]'),
            "key kinds[1]: Invalid enum value 'refund'",
        ),
        (RULE + ",\n" + RULE, "rule 'r1': key id: the id is used by an earlier rule"),
        (
            RULE.replace('"amount_cap", max_fen = 100', '"velocity", key = "card", window = "1m"'),
            "rule 'r1': key counts: a velocity rule needs it",
        ),
        (
            RULE.replace(
                '"amount_cap", max_fen = 100',
                '"velocity", key = "card", window = "1m", counts = "approved"',
            ),
            "key max_count: a velocity rule needs max_count, max_fen or both",
        ),
        (
            RULE.replace(
                '"amount_cap", max_fen = 100',
                '"velocity", key = "bin", window = "1m", counts = "approved", max_count = 1',
            ),
            "rule 'r1': key key: a velocity rule counts by one of",
        ),
        (
            RULE.replace(
                '"amount_cap", max_fen = 100',
                '"velocity", key = "card", window = "2h", counts = "approved", max_count = 1',
            ),
            "rule 'r1': key window: Invalid enum value '2h'",
        ),
        (
            RULE.replace(
                '"amount_cap", max_fen = 100', '"blocklist", key = "card", values = ["x"]'
            ),
            "rule 'r1': key values[0]: a 1-character value is not a card's look-up hash",
        ),
        (
            RULE.replace(
                '"amount_cap", max_fen = 100', '"blocklist", key = "bin", values = ["123456789012"]'
            ),
            "key values[0]: a 12-character value is not a card-number prefix of 1-11 digits",
        ),
        (
            RULE.replace(
                '"amount_cap", max_fen = 100', '"blocklist", key = "terminal", values = ["POS1"]'
            ),
            "key values[0]: 'POS1' is not <merchant id>/<terminal id>",
        ),
        (
            RULE.replace('"amount_cap", max_fen = 100', '"blocklist", key = "card"'),
            "key values: a blocklist rule has exactly one of values and values_file",
        ),
        (
            RULE.replace(
                '"amount_cap", max_fen = 100',
                '"blocklist", key = "card", values = [], values_file = "blocked-cards.txt"',
            ),
            "key values: a blocklist rule has exactly one of values and values_file",
        ),
        (
            RULE.replace(
                '"amount_cap", max_fen = 100', '"blocklist", key = "card", values_file = "none.txt"'
            ),
            "rule 'r1': key values_file: cannot read none.txt: No such file or directory",
        ),
        (
            RULE.replace(
                '"amount_cap", max_fen = 100', '"blocklist", key = "card", values_file = "../x"'
            ),
            "rule 'r1': key values_file: '../x' is not the name of a file beside",
        ),
        (
            RULE.replace('"amount_cap", max_fen = 100', '"mcc", allow = ["5411"], deny = ["6011"]'),
            "rule 'r1': key allow: an mcc rule has exactly one of allow and deny",
        ),
        (
            RULE.replace('"amount_cap", max_fen = 100', '"mcc", deny = ["601"]'),
            "rule 'r1': key deny[0]: Expected `str` matching",
        ),
    ],
)
def test_a_fault_refuses_the_file_naming_file_rule_and_key(
    tmp_path: Path, rule: str, named: str
) -> None:
    path = write_sample(tmp_path, f"rules = [\n  {rule},\n]\n")
    with pytest.raises(RulesError) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("rules = [ { id = ", "not TOML"),
        ("rule = []\n", "risk.toml: key rule: unknown key"),
        ('rules = [ { mode = "enforce" } ]\n', "rule #1: key id: missing key"),
    ],
)
def test_a_file_that_is_not_a_rules_file_is_refused(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(RulesError, match=named):
        load(write_sample(tmp_path, text))


def test_a_bad_line_of_a_values_file_is_named_without_showing_the_value(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    (tmp_path / "blocked-cards.txt").write_text(f"{card_hash(OLD_KEY, PAN)}\n{PAN}\n")
    with pytest.raises(RulesError) as caught:
        load(path)
    text = str(caught.value)
    assert "rule 'blocked-cards': key values_file: blocked-cards.txt line 2: " in text
    assert "a 16-character value is not a card's look-up hash" in text
    assert PAN not in text  # a card number pasted by mistake is not echoed to the log


def test_an_unreadable_values_file_refuses_the_file(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    (tmp_path / "blocked-cards.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(RulesError, match=r"key values_file: blocked-cards\.txt is not UTF-8"):
        load(path)


# -- the sample's rules, one by one -----------------------------------------------------


def _evaluate(rules: RuleSet, **overrides: Any) -> str:
    return RiskEngine(rules).evaluate(request(**overrides), T0).trail()


@pytest.mark.parametrize(
    ("overrides", "trail"),
    [
        # card-single: a card or co-brand sale above 50,000.00 CNY; not a wallet payment.
        ({"amount": 5_000_000}, "approve"),
        ({"amount": 5_000_001}, "decline 61 card-single"),
        ({"amount": 5_000_001, "funding": "cobrand"}, "decline 61 card-single"),
        (
            {"amount": 5_000_001, "funding": "wallet", "pan": "", "channel": "online"},
            "review online-large",
        ),
        # blocked-cards: listed under the old look-up key, matched under it.
        ({"pan": BLOCKED_PAN}, "decline 62 blocked-cards"),
        # blocked-bins: a bank card with the prefix; not a wallet payment that carries one.
        ({"pan": "6228489900001234"}, "decline 57 blocked-bins"),
        ({"pan": "6228489800001234"}, "approve"),
        ({"pan": "6228489900001234", "funding": "wallet"}, "approve"),
        # blocked-terminals: <merchant id>/<terminal id>.
        (
            {"merchant_id": "898310099990001", "terminal_id": "POS00009"},
            "decline 59 blocked-terminals",
        ),
        ({"merchant_id": "898310099990001", "terminal_id": "POS00008"}, "approve"),
        ({"merchant_id": "898310099990002", "terminal_id": "POS00009"}, "approve"),
        # credit-mcc: credit or co-brand funding at a denied MCC.
        ({"funding": "cobrand", "mcc": "6011"}, "decline 57 credit-mcc"),
        (
            {"funding": "credit", "mcc": "7995", "pan": "", "customer_id": "c1"},
            "decline 57 credit-mcc",
        ),
        ({"funding": "card", "mcc": "6011"}, "approve"),
        ({"funding": "cobrand", "mcc": "5411"}, "approve"),
        ({"funding": "cobrand", "mcc": None}, "approve"),  # no MCC: outside the rule
        # online-large: online above 20,000.00 CNY is flagged, POS is not.
        ({"channel": "online", "amount": 2_000_001}, "review online-large"),
        ({"channel": "online", "amount": 2_000_000}, "approve"),
        ({"channel": "pos", "amount": 2_000_001}, "approve"),
        # Order: blocklists before amount caps, whatever the file order.
        ({"pan": BLOCKED_PAN, "amount": 6_000_000}, "decline 62 blocked-cards"),
        # A decline decides over a review.
        ({"channel": "online", "amount": 5_000_001}, "decline 61 card-single"),
    ],
)
def test_the_sample_rules_decide_as_risk_md_says(
    sample: RuleSet, overrides: dict[str, Any], trail: str
) -> None:
    assert _evaluate(sample, **overrides) == trail


def test_a_decline_names_its_rule_on_the_journal_row_the_log_line_and_the_trail(
    sample: RuleSet,
) -> None:
    verdict = RiskEngine(sample).evaluate(
        request(channel="online", amount=5_000_001, device_id="d-1"), T0
    )
    assert (verdict.outcome, verdict.code, verdict.rule) == ("decline", "61", "card-single")
    assert verdict.review == ("online-large",)  # both hit; the decline decides
    assert verdict.log_fields() == {"risk_rule": "card-single", "risk_review": "online-large"}
    assert verdict.journal_fields() == {
        "risk_version": sample.version,
        "risk_rule": "card-single",
        "risk_review": "online-large",
        "risk_shadow": None,
    }
    assert verdict.trail() == "decline 61 card-single"
    assert verdict.hold is None  # declined by an enforce rule: nothing reserved


def test_card_1m_tries_counts_every_attempt_its_own_declines_included(sample: RuleSet) -> None:
    engine = RiskEngine(sample)
    trails = [engine.evaluate(request(), T0 + n).trail() for n in range(7)]
    assert trails == ["approve"] * 5 + ["decline 65 card-1m-tries"] * 2
    # Another card is not counted with this one.
    assert engine.evaluate(request(pan=OTHER_PAN), T0 + 7).trail() == "approve"
    # Declines and give-backs do not undo attempts: still 7 in the minute at T0 + 59.
    assert engine.evaluate(request(), T0 + 59).trail() == "decline 65 card-1m-tries"
    # A minute (and up to one 1 s bucket) after the last, every attempt has left.
    assert engine.evaluate(request(), T0 + 59 + 61).trail() == "approve"


def test_card_day_amount_counts_approved_amounts_on_the_local_date(sample: RuleSet) -> None:
    engine = RiskEngine(sample, utc_offset_h=8)
    start = LOCAL_MIDNIGHT - 3600  # 23:00 local
    first = engine.evaluate(request(amount=4_000_000), start)
    second = engine.evaluate(request(amount=4_000_000), start + 120)
    assert first.trail() == second.trail() == "approve"
    # In flight, the two reservations are seen: 12,000,000 would exceed 10,000,000.
    third = engine.evaluate(request(amount=4_000_000), start + 240)
    assert third.trail() == "decline 61 card-day-amount"
    # The second is declined by its bank: its reservation goes.
    engine.release(second.hold, start + 250)
    engine.release(second.hold, start + 250)  # once only
    assert engine.evaluate(request(amount=4_000_000), start + 300).trail() == "approve"
    assert (
        engine.evaluate(request(amount=2_000_001), start + 420).trail()
        == "decline 61 card-day-amount"
    )
    assert engine.evaluate(request(amount=2_000_000), start + 540).trail() == "approve"
    # A new local date starts at 16:00 UTC, whatever the rolling time.
    assert (
        engine.evaluate(request(amount=4_000_000), LOCAL_MIDNIGHT - 1).trail().startswith("decline")
    )
    assert engine.evaluate(request(amount=4_000_000), LOCAL_MIDNIGHT).trail() == "approve"


def test_customer_24h_credit_limits_count_and_amount_per_customer(sample: RuleSet) -> None:
    engine = RiskEngine(sample)

    def credit(n: int, amount: int = 100, customer: str = "cust-1") -> str:
        return engine.evaluate(
            request(
                channel="online",
                funding="credit",
                pan="",
                customer_id=customer,
                amount=amount,
                mcc="5411",
            ),
            T0 + n * 100,  # 100 s apart: card-1m-tries and device-1h are not involved
        ).trail()

    assert [credit(n) for n in range(20)] == ["approve"] * 20
    assert credit(20) == "decline 61 customer-24h-credit"  # the 21st in 24 h
    assert credit(21, customer="cust-2") == "approve"
    assert credit(22, amount=1_999_901, customer="cust-2") == "decline 61 customer-24h-credit"
    assert credit(23, amount=1_999_900, customer="cust-2") == "approve"
    # A card payment by the same customer is outside the rule (funding credit only).
    other = engine.evaluate(request(customer_id="cust-1", amount=100), T0 + 2400)
    assert other.trail() == "approve"
    # 24 h (and one 24 min bucket at most) after the first, it has left.
    assert credit(864 + 15) == "approve"


def test_device_1h_in_shadow_counts_and_reports_but_never_changes_the_answer(
    sample: RuleSet,
) -> None:
    engine = RiskEngine(sample)
    verdicts = [
        engine.evaluate(
            request(channel="online", device_id="dev-9", pan=f"62269012345{n:05d}"), T0 + n
        )
        for n in range(12)
    ]
    assert [v.outcome for v in verdicts] == ["approve"] * 12
    assert [bool(v.shadow) for v in verdicts] == [False] * 10 + [True] * 2
    eleventh = verdicts[10]
    assert [(h.rule, h.mode, h.action, h.code) for h in eleventh.shadow] == [
        ("device-1h", "shadow", "decline", "59")
    ]
    assert eleventh.log_fields() == {"risk_shadow": "device-1h"}
    assert eleventh.journal_fields()["risk_shadow"] == "device-1h:decline:59"
    assert eleventh.rule is None and eleventh.review == ()
    assert eleventh.hits == eleventh.shadow  # counted for the hits metric
    assert engine.statistics()["hits"] == {"device-1h": 2}


# -- counting ------------------------------------------------------------------------


APPROVED_COUNT = spec(
    "card-3", kind="velocity", key="card", window="1h", counts="approved", max_count=3, code="65"
)


def test_a_void_or_reversal_removes_the_original_from_approved_windows_only() -> None:
    attempts = spec(
        "card-tries",
        kind="velocity",
        key="card",
        window="1h",
        counts="attempts",
        max_count=4,
        code="65",
    )
    engine = RiskEngine(ruleset(APPROVED_COUNT, attempts))
    sales = [engine.evaluate(request(), T0 + n) for n in range(3)]
    assert [v.outcome for v in sales] == ["approve"] * 3
    assert engine.evaluate(request(), T0 + 3).rule == "card-3"  # the 4th approved would be too many
    # The second sale is voided: it leaves card-3's window, not card-tries'.
    assert engine.remove(request(), T0 + 1, now=T0 + 10) == 1
    assert engine.window("card-3").snapshot(T0 + 10) != {}
    verdict = engine.evaluate(request(), T0 + 11)
    assert verdict.rule == "card-tries"  # 5 attempts: the void gave none back


def test_a_completion_meets_only_blocklists_and_counts_nowhere(sample: RuleSet) -> None:
    engine = RiskEngine(sample)
    completion = request(kind="preauth", amount=52_000_000, completion=True)
    verdicts = [engine.evaluate(completion, T0 + n) for n in range(10)]
    assert {v.trail() for v in verdicts} == {"approve"}  # no amount cap, no velocity
    assert engine.window("card-1m-tries").snapshot(T0 + 10) == {}
    assert engine.window("card-day-amount").snapshot(T0 + 10) == {}
    blocked = request(kind="preauth", pan=BLOCKED_PAN, completion=True)
    assert engine.evaluate(blocked, T0).trail() == "decline 62 blocked-cards"


def test_velocity_counts_by_the_active_hash_and_a_request_without_the_key_is_outside() -> None:
    rules = ruleset(APPROVED_COUNT)
    engine = RiskEngine(rules)
    for n in range(3):
        engine.evaluate(request(), T0 + n)
    assert engine.evaluate(request(card=card_hashes([ACTIVE_KEY], PAN)), T0 + 5).rule == "card-3"
    no_card = engine.evaluate(request(pan="", funding="wallet", customer_id="c"), T0 + 6)
    assert no_card.trail() == "approve" and no_card.checked == 0


def test_rules_that_count_the_same_requests_share_one_window_counted_once() -> None:
    loose = spec("card-9", kind="velocity", key="card", window="1h", counts="approved", max_count=9)
    pos_only = spec(
        "card-pos", kind="velocity", key="card", window="1h", counts="approved", max_count=9,
        channels=["pos"],
    )  # fmt: skip
    engine = RiskEngine(ruleset(APPROVED_COUNT, loose, pos_only))
    assert engine.window("card-9") is engine.window("card-3")
    assert engine.window("card-pos") is not engine.window("card-3")  # another scope
    verdicts = [engine.evaluate(request(), T0 + n) for n in range(5)]
    assert [v.trail() for v in verdicts] == ["approve"] * 3 + ["decline 65 card-3"] * 2
    assert engine.window("card-9").held(request().card[0], T0 + 5) == (3, 30_000)
    hold = verdicts[0].hold
    # Two counters (the shared one and card-pos's), each a slot of the card's 1h window.
    assert hold is not None and [slots for *_, slots in hold.entries] == [(0, 1)]


def test_hits_decide_in_kind_order_then_file_order() -> None:
    late = spec("b-late", kind="blocklist", key="merchant", values=["898310070110001"], code="57")
    cap = spec("cap", kind="amount_cap", max_fen=1, code="61")
    early = spec(
        "a-early", kind="blocklist", key="terminal", values=["898310070110001/POS00007"], code="59"
    )
    review = spec("flag", kind="amount_cap", max_fen=1, action="review", code=None)
    verdict = RiskEngine(ruleset(cap, review, late, early)).evaluate(request(), T0)
    assert verdict.trail() == "decline 57 b-late"  # blocklists first, then file order
    assert [hit.rule for hit in verdict.hits] == ["b-late", "a-early", "cap", "flag"]
    assert verdict.review == ("flag",)


def test_rolling_windows_let_an_entry_leave_late_by_a_bucket_at_most_never_early() -> None:
    window = Window("1h", utc_offset_h=8)
    window.add("k", T0, 100, T0)
    for offset in range(0, 3600 + 61):
        count, _ = window.held("k", T0 + offset)
        if offset < 3600:
            assert count == 1, offset  # within W of now: always held
        if offset >= 3600 + 60:
            assert count == 0, offset  # left within one 60 s bucket


# -- rebuild and reload ------------------------------------------------------------------


def test_rebuild_from_past_requests_gives_the_windows_live_counting_gave(sample: RuleSet) -> None:
    live = RiskEngine(sample)
    past: list[PastRequest] = []
    for n in range(40):
        req = request(
            pan=PAN if n % 3 else OTHER_PAN,
            amount=1_000_000 + n,
            channel="online" if n % 2 else "pos",
            device_id="dev" if n % 2 else None,
        )
        verdict = live.evaluate(req, T0 + 17 * n)
        outcome: PastOutcome = "approved"
        if verdict.declined:
            outcome = "declined"
        elif n % 5 == 0:
            live.release(verdict.hold, T0 + 17 * n + 5)
            outcome = "declined"
        elif n % 7 == 0:
            live.remove(req, T0 + 17 * n, T0 + 17 * n + 5)
            outcome = "removed"
        past.append(PastRequest(request=req, received=T0 + 17 * n, outcome=outcome))
    now = T0 + 17 * 40
    rebuilt = RiskEngine(sample)
    assert rebuilt.history_since(now) <= T0 + 17 * 40 - 3600
    rebuilt.rebuild(reversed(past), now)  # in any order
    for rule in sample.velocity_rules():
        assert rebuilt.window(rule.id).snapshot(now) == live.window(rule.id).snapshot(now), rule.id
        assert live.window(rule.id).snapshot(now) or rule.id == "customer-24h-credit"


def test_reload_keeps_the_counters_of_unchanged_rules_and_names_those_to_rebuild(
    tmp_path: Path,
) -> None:
    base = [
        APPROVED_COUNT,
        spec(
            "merchant-day",
            kind="velocity",
            key="merchant",
            window="day",
            counts="approved",
            max_fen=10**9,
        ),
        spec(
            "terminal-1m",
            kind="velocity",
            key="terminal",
            window="1m",
            counts="attempts",
            max_count=50,
        ),
        spec("gone", kind="velocity", key="card", window="1m", counts="attempts", max_count=50),
    ]
    engine = RiskEngine(ruleset(*base))
    before = [engine.evaluate(request(), T0 + n) for n in range(3)]
    kept_window = engine.window("card-3")
    changed = [
        spec(
            "card-3",
            kind="velocity",
            key="card",
            window="1h",
            counts="approved",
            max_count=4,
            code="65",
        ),
        spec(
            "merchant-day",
            kind="velocity",
            key="merchant",
            window="day",
            counts="approved",
            max_fen=10**9,
            channels=["pos"],
        ),
        spec(
            "terminal-1m",
            kind="velocity",
            key="terminal",
            window="1h",
            counts="attempts",
            max_count=50,
        ),
        spec("new", kind="velocity", key="card", window="24h", counts="attempts", max_count=50),
        # Counts what "gone" counted (same key, window, counts, scope): its window is taken
        # over, whole, with nothing to rebuild.
        spec("renamed", kind="velocity", key="card", window="1m", counts="attempts", max_count=9),
    ]
    now = T0 + 30
    gone_window = engine.window("gone")
    plan = engine.apply(ruleset(*changed), now)
    assert plan.kept == ("card-3",) and plan.changed == ("card-3", "merchant-day", "terminal-1m")
    assert plan.added == ("new", "renamed") and plan.removed == ("gone",)
    assert plan.rebuild == ("merchant-day", "terminal-1m", "new")
    assert engine.window("renamed") is gone_window
    assert plan.until == now and plan.since <= now - 3600
    assert engine.window("card-3") is kept_window  # max_count changed: counters kept
    # A request received after the swap is counted live; the rebuild skips it.
    after = request()
    engine.evaluate(after, now + 1)
    events = [PastRequest(request=request(), received=T0 + n, outcome="approved") for n in range(3)]
    events.append(PastRequest(request=after, received=now + 1, outcome="approved"))
    engine.rebuild(events, now + 2, rule_ids=plan.rebuild, until=plan.until)
    assert engine.window("terminal-1m").held("898310070110001/POS00007", now + 2) == (4, 40_000)
    assert engine.window("merchant-day").held("898310070110001", now + 2) == (4, 40_000)
    assert engine.window("card-3").held(request().card[0], now + 2) == (4, 40_000)
    assert engine.window("new").held(request().card[0], now + 2) == (4, 40_000)
    assert engine.window("renamed").held(request().card[0], now + 2) == (4, 40_000)
    # The hold of a request evaluated before the swap still gives back its reservation.
    engine.release(before[0].hold, now + 3)
    assert engine.window("card-3").held(request().card[0], now + 3) == (3, 30_000)


def test_a_rebuild_reads_back_as_far_as_the_longest_window_and_a_same_set_rebuilds_nothing(
    tmp_path: Path,
) -> None:
    path = write_sample(tmp_path)
    engine = RiskEngine(load(path), utc_offset_h=8)
    now = LOCAL_MIDNIGHT + 5 * 3600  # 05:00 local
    # card-day-amount: from local midnight; customer-24h-credit: 24 h and one bucket.
    assert engine.history_since(now, ["card-day-amount"]) == LOCAL_MIDNIGHT
    assert now - 86400 - 1440 <= engine.history_since(now) <= now - 86400
    plan = engine.apply(load(path), now)  # the same file read again
    assert plan.rebuild == () and plan.since == now and plan.changed == ()
    assert RiskEngine(RuleSet.empty()).evaluate(request(amount=10**9), now).trail() == "approve"


def test_diff_tells_content_changes_from_counter_changes() -> None:
    old = ruleset(APPROVED_COUNT, spec("cap", kind="amount_cap", max_fen=5))
    new = ruleset(spec("cap", kind="amount_cap", max_fen=6), APPROVED_COUNT)
    assert diff(old, new) == ([], [], ["cap"], ["cap", "card-3"])
    assert diff(old, old) == ([], [], [], ["card-3", "cap"])


# -- properties ----------------------------------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["k1", "k2", "k3", "k4", "k5", "k6"]),
        st.integers(min_value=0, max_value=400),  # seconds after the previous event
        st.integers(min_value=1, max_value=10_000),
    ),
    max_size=120,
)


@given(
    events=EVENTS,
    lags=st.lists(st.integers(min_value=0, max_value=5000), max_size=120),
    window=st.sampled_from(["1m", "1h", "24h", "day"]),
)
@settings(max_examples=150, deadline=None)
def test_windows_never_hold_more_than_their_bound(
    events: list[tuple[str, int, int]], lags: list[int], window: str
) -> None:
    win = Window(window, utc_offset_h=8, max_keys=3)
    buckets = 1 if window == "day" else 61
    now = T0
    for n, (key, step, amount) in enumerate(events):
        now += step
        lag = lags[n] if n < len(lags) else 0  # a rebuild adds past moments too
        win.add(key, now - lag, amount, now)
        stats = win.statistics()
        assert stats["keys"] <= 3
        assert stats["buckets"] <= buckets
        assert stats["entries"] <= 3 * buckets
        # The sums it answers with are what its buckets hold.
        for held_key, held in win.snapshot(now).items():
            assert win.held(held_key, now) == (
                sum(count for _, count, _ in held),
                sum(amount for _, _, amount in held),
            )
    # A rebuild loads the same entries at once, in any order: the same bound, and, with
    # room for every key value, what adding them one by one left.
    entries = []
    moment = T0
    for n, (key, step, amount) in enumerate(events):
        moment += step
        entries.append((key, moment - (lags[n] if n < len(lags) else 0), amount))
    loaded = Window(window, utc_offset_h=8, max_keys=3)
    loaded.load(reversed(entries), now)
    assert loaded.statistics()["keys"] <= 3 and loaded.statistics()["buckets"] <= buckets
    roomy, added = Window(window, utc_offset_h=8), Window(window, utc_offset_h=8)
    roomy.load(reversed(entries), now)
    for key, at, amount in entries:
        added.add(key, at, amount, now)
    assert roomy.snapshot(now) == added.snapshot(now)


@given(events=EVENTS, probe=st.sampled_from(["k1", "k7"]), amount=st.integers(1, 10**6))
@settings(max_examples=150, deadline=None)
def test_reserve_then_release_returns_to_the_same_state(
    events: list[tuple[str, int, int]], probe: str, amount: int
) -> None:
    rules = ruleset(
        spec(
            "by-card", kind="velocity", key="card", window="1m", counts="approved", max_count=10**6
        ),
        spec(
            "by-device",
            kind="velocity",
            key="device",
            window="1h",
            counts="approved",
            max_fen=10**12,
        ),
        spec(
            "by-day",
            kind="velocity",
            key="merchant",
            window="day",
            counts="approved",
            max_count=10**6,
        ),
    )
    engine = RiskEngine(rules)
    now = T0
    for key, step, value in events:
        now += step
        engine.evaluate(request(card=(key,), device_id=key, amount=value), now)

    def state() -> dict[str, Any]:
        return {rule.id: engine.window(rule.id).snapshot(now) for rule in rules.rules}

    before = state()
    verdict = engine.evaluate(request(card=(probe,), device_id=probe, amount=amount), now)
    assert verdict.hold is not None and state() != before
    engine.release(verdict.hold, now)
    assert state() == before


def _irrelevant(n: int) -> RuleSpec:
    """Rules that cannot apply to ``request()`` (a POS card sale at MCC 7011)."""
    shapes: list[dict[str, Any]] = [
        {"kind": "amount_cap", "max_fen": 1, "channels": ["online"]},
        {"kind": "amount_cap", "max_fen": 1, "funding": ["wallet", "credit"]},
        {"kind": "amount_cap", "max_fen": 1, "kinds": ["topup", "withdrawal"]},
        {"kind": "velocity", "key": "device", "window": "1m", "counts": "attempts", "max_count": 0},
        {
            "kind": "velocity",
            "key": "customer",
            "window": "1h",
            "counts": "approved",
            "max_count": 0,
        },
        {
            "kind": "velocity",
            "key": "card",
            "window": "1m",
            "counts": "attempts",
            "max_count": 0,
            "kinds": ["preauth"],
        },
        {"kind": "blocklist", "key": "card", "values": [card_hash(OLD_KEY, f"4{n:015d}")]},
        {"kind": "blocklist", "key": "bin", "values": [f"9{n % 10**8:08d}"]},
        {"kind": "blocklist", "key": "merchant", "values": [f"M{n}"]},
        {"kind": "blocklist", "key": "device", "values": [f"dev-{n}"]},
        {"kind": "mcc", "deny": [f"{n % 7000 + 1000:04d}" if n % 7000 + 1000 != 7011 else "0001"]},
        {"kind": "mcc", "allow": ["7011"], "funding": ["credit"]},
    ]
    return spec(f"irrelevant-{n}", **shapes[n % len(shapes)])


RELEVANT = [
    spec(
        "rel-block",
        kind="blocklist",
        key="card",
        values=[card_hash(ACTIVE_KEY, BLOCKED_PAN)],
        code="62",
    ),
    spec("rel-mcc", kind="mcc", allow=["7011", "5411"], code="57"),
    spec("rel-cap", kind="amount_cap", max_fen=30_000, action="review", code=None),
    spec(
        "rel-count",
        kind="velocity",
        key="card",
        window="1m",
        counts="attempts",
        max_count=4,
        code="65",
    ),
    spec(
        "rel-amount",
        kind="velocity",
        key="terminal",
        window="1h",
        counts="approved",
        max_fen=90_000,
    ),
    spec(
        "rel-shadow",
        kind="velocity",
        key="merchant",
        window="day",
        counts="approved",
        max_count=2,
        mode="shadow",
        code="59",
    ),
]
TRAFFIC = [
    request(amount=amount, pan=pan)
    for amount, pan in [
        (10_000, PAN),
        (40_000, PAN),
        (20_000, OTHER_PAN),
        (10_000, BLOCKED_PAN),
        (30_000, PAN),
        (5_000, PAN),
        (25_000, OTHER_PAN),
    ]
]


def _run(rules: RuleSet) -> tuple[list[tuple[Any, ...]], list[int]]:
    engine = RiskEngine(rules)
    outcomes, checked = [], []
    for n, req in enumerate(TRAFFIC):
        verdict = engine.evaluate(req, T0 + n)
        outcomes.append((verdict.trail(), verdict.hits, verdict.shadow))
        checked.append(verdict.checked)
    return outcomes, checked


@given(data=st.data(), extra=st.integers(min_value=0, max_value=60))
@settings(max_examples=60, deadline=None)
def test_evaluation_does_not_depend_on_the_order_of_irrelevant_rules(
    data: st.DataObject, extra: int
) -> None:
    irrelevant = [_irrelevant(n) for n in range(extra)]
    shuffled = data.draw(st.permutations(irrelevant))
    slots = data.draw(st.lists(st.integers(0, len(RELEVANT)), min_size=extra, max_size=extra))
    merged: list[RuleSpec] = list(RELEVANT)
    for rule, slot in sorted(zip(shuffled, slots, strict=True), key=lambda pair: -pair[1]):
        merged.insert(slot, rule)  # the relevant rules keep their order
    assert _run(ruleset(*merged))[0] == _run(ruleset(*RELEVANT))[0]


def test_evaluation_visits_only_the_rules_that_can_apply() -> None:
    outcomes, checked = _run(ruleset(*RELEVANT))
    # All at one terminal and merchant: rel-amount holds what was approved there,
    # rel-shadow counts approved requests at the merchant (more than 2 from the 3rd on).
    assert [(trail, [hit.rule for hit in hits]) for trail, hits, _ in outcomes] == [
        ("approve", []),
        ("review rel-cap", ["rel-cap"]),  # 40,000 > 30,000: flagged, goes on
        ("approve", ["rel-shadow"]),  # the 3rd approved at the merchant: shadow only
        ("decline 62 rel-block", ["rel-block", "rel-shadow"]),  # reserves nothing
        ("decline 61 rel-amount", ["rel-amount", "rel-shadow"]),  # 70,000 + 30,000
        ("approve", ["rel-shadow"]),  # 75,000
        ("decline 61 rel-amount", ["rel-amount", "rel-shadow"]),  # 75,000 + 25,000
    ]
    # mcc, amount_cap, 3 velocity; the blocklist only where the card is listed.
    assert checked == [5, 5, 5, 6, 5, 5, 5]
    for many in (100, 1_000, 5_000):
        more_outcomes, more_checked = _run(
            ruleset(*RELEVANT, *(_irrelevant(n) for n in range(many)))
        )
        assert more_checked == checked, many
        assert more_outcomes == outcomes


def test_a_blocklist_look_up_costs_the_same_whatever_the_list_holds(tmp_path: Path) -> None:
    hashes = "\n".join(card_hash(OLD_KEY, f"4{n:015d}") for n in range(20_000))
    (tmp_path / "many.txt").write_text(hashes + "\n")
    text = (
        'rules = [ { id = "many", mode = "enforce", kind = "blocklist", key = "card", '
        'values_file = "many.txt", action = "decline", code = "62" } ]\n'
    )
    (tmp_path / "risk.toml").write_text(text)
    rules = load(tmp_path / "risk.toml")
    engine = RiskEngine(rules)
    assert engine.evaluate(request(), T0).checked == 0
    listed = engine.evaluate(request(pan=f"4{12_345:015d}"), T0)
    assert (listed.trail(), listed.checked) == ("decline 62 many", 1)


# -- card hashes -----------------------------------------------------------------------


def test_the_card_hash_is_hmac_sha256_of_the_digits_as_the_journal_keeps_it() -> None:
    mac = crypto_hmac.HMAC(ACTIVE_KEY, hashes.SHA256())  # an independent implementation
    mac.update(PAN.encode("ascii"))
    assert card_hash(ACTIVE_KEY, PAN) == mac.finalize().hex()
    vault = CardVault(
        CardKeyFile(active=3, keys=(CardKey(id=3, hmac_key=ACTIVE_KEY.hex(), aes_key="00" * 32),))
    )
    assert card_hash(ACTIVE_KEY, PAN) == vault.lookup(PAN)[1:].hex()  # behind the key id
    assert card_hashes([ACTIVE_KEY, OLD_KEY], PAN) == (
        card_hash(ACTIVE_KEY, PAN),
        card_hash(OLD_KEY, PAN),
    )
    with pytest.raises(ValueError, match="digits only"):
        card_hash(ACTIVE_KEY, "6226 9012")


def test_a_request_shows_no_more_of_the_card_number_than_its_first_six_digits() -> None:
    text = repr(request())
    assert PAN[:6] in text and PAN[:7] not in text and card_hash(ACTIVE_KEY, PAN) not in text


def test_the_bench_measures_200_rules_all_in_scope_of_its_traffic() -> None:
    from bench import risk_bench

    specs = risk_bench.in_scope_rules(200, random.Random(1))
    rules = ruleset(*specs)
    scope = SCOPES.index(("pos", "card", "sale"))
    assert len(rules) == 200 and all(rule.in_scope(scope) for rule in rules.rules)
    timing = risk_bench.run(rules=200, requests=200, cards=20, irrelevant=50)
    # Looked at: all but the blocklists that do not list the sale's values and the mcc
    # deny lists that do not list its MCC (40 and 10 of the 200); the irrelevant rules
    # (other scopes, keys the sale has no value for, values it does not have) add none.
    assert timing.evaluation.mean_rules_checked == 150.0
    assert timing.evaluation_with_irrelevant.mean_rules_checked == 150.0
