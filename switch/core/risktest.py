"""``switch risk test``'s dry run (risk.md, "Actions, shadow mode and reload"), sans-IO:
a rules file's rules evaluated on one request after the requests of a history, as the
switch would, touching nothing but a fresh engine. The caller reads the files and the
clock and hands in the card hashing and the merchants' MCCs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from switch.core.risk import (
    CARD_FUNDING,
    MAX_BIN_DIGITS,
    SCOPES,
    Channel,
    Funding,
    PastOutcome,
    PastRequest,
    RiskEngine,
    RiskKind,
    RiskRequest,
    Rule,
    RuleSet,
    Verdict,
)

RuleResult = Literal["hit", "pass", "out of scope"]


class TestRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A request as ``--request`` (and each line of ``--history``) gives it."""

    __test__ = False  # not a pytest class

    channel: Channel
    kind: RiskKind = "sale"
    funding: Funding = "card"
    merchant_id: Annotated[str, Meta(min_length=1, max_length=15)]
    terminal_id: Annotated[str, Meta(min_length=1, max_length=8)] | None = None
    pan: Annotated[str, Meta(pattern=r"^[0-9]{12,19}$")] | None = None
    card_hash: Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    customer_id: str | None = None
    device_id: str | None = None
    amount: Annotated[int, Meta(ge=0)]
    time: float | str | None = None
    """Epoch seconds, or ISO 8601 (without an offset: the switch's local time); none:
    now (the request), or the request's time (a history line)."""
    outcome: PastOutcome | None = None
    """A history line's: ``approved``, ``declined`` or ``removed``."""


class DryRunError(ValueError):
    """A request or history line that cannot be read: the text names it and the field."""


def decode_request(text: str | bytes, *, source: str) -> TestRequest:
    try:
        return msgspec.json.decode(text, type=TestRequest)
    except msgspec.ValidationError as exc:
        raise DryRunError(f"{source}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise DryRunError(f"{source}: not a JSON object: {exc}") from None


def moment(value: float | str | None, default: float, utc_offset_h: int, source: str) -> float:
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise DryRunError(
            f"{source}: time {value!r} is neither epoch seconds nor ISO 8601"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone(timedelta(hours=utc_offset_h)))
    return parsed.astimezone(UTC).timestamp()


def risk_request(
    request: TestRequest,
    *,
    card_hashes: Callable[[str], tuple[str, ...]],
    mcc_of: Callable[[str], str | None],
) -> RiskRequest:
    if request.pan is not None:
        cards = card_hashes(request.pan)
    elif request.card_hash is not None:
        cards = (request.card_hash.lower(),)
    else:
        cards = ()
    return RiskRequest(
        channel=request.channel,
        kind=request.kind,
        funding=request.funding,
        amount=request.amount,
        merchant_id=request.merchant_id,
        terminal_id=request.terminal_id,
        mcc=mcc_of(request.merchant_id),
        card=cards,
        pan_prefix=(request.pan or "")[:MAX_BIN_DIGITS],
        customer_id=request.customer_id,
        device_id=request.device_id,
    )


def dry_run(
    rules: RuleSet,
    request: TestRequest,
    history: Iterable[tuple[str, TestRequest]],
    *,
    now: float,
    utc_offset_h: int,
    card_hashes: Callable[[str], tuple[str, ...]],
    mcc_of: Callable[[str], str | None],
) -> tuple[list[tuple[str, RuleResult]], Verdict]:
    """Each rule's result on ``request`` after ``history`` ((source, line) pairs, in
    order), and the verdict."""
    engine = RiskEngine(rules, utc_offset_h=utc_offset_h)
    at = moment(request.time, now, utc_offset_h, "request")
    past: list[PastRequest] = []
    for source, line in history:
        if line.outcome is None:
            raise DryRunError(f"{source}: outcome: missing (approved, declined or removed)")
        received = moment(line.time, at, utc_offset_h, source)
        made = risk_request(line, card_hashes=card_hashes, mcc_of=mcc_of)
        past.append(PastRequest(request=made, received=received, outcome=line.outcome))
    engine.rebuild(past, at)
    made = risk_request(request, card_hashes=card_hashes, mcc_of=mcc_of)
    verdict = engine.evaluate(made, at)
    hit = {h.rule for h in verdict.hits}
    scope = SCOPES.index((made.channel, made.funding, made.kind))
    results: list[tuple[str, RuleResult]] = []
    for rule in rules.rules:
        if rule.id in hit:
            results.append((rule.id, "hit"))
        elif _applies(rule, made, scope):
            results.append((rule.id, "pass"))
        else:
            results.append((rule.id, "out of scope"))
    return results, verdict


def _applies(rule: Rule, request: RiskRequest, scope: int) -> bool:
    """Whether ``rule`` meets ``request`` at all: its scope, and a value for its key
    (risk.md: a request with none is outside it)."""
    if not rule.in_scope(scope):
        return False
    if rule.kind == "mcc":
        return request.mcc is not None
    key = rule.key
    if key is None:
        return True
    if key == "bin":
        return request.funding in CARD_FUNDING and bool(request.pan_prefix)
    values = {
        "card": request.card[0] if request.card else None,
        "terminal": request.terminal_id,
        "merchant": request.merchant_id,
        "customer": request.customer_id,
        "device": request.device_id,
    }
    return values.get(key) is not None
