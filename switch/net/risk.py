"""The risk rules' windows and the journal (risk.md, "Evaluation and counting").

The windows derive from the journal: :func:`rebuild` counts the requests the journal
holds into them at start-up, before the listeners accept; :func:`apply_rules` swaps a
new rule set in (a reload) and rebuilds the windows of the rules that did not keep
theirs. With several workers on one journal, :func:`follow_other_workers` reads the
rows the other workers wrote or changed and counts them here as they did there, so a
limit is one limit whichever worker each request reached (docs/design.md, "Risk
rules").
"""

from __future__ import annotations

from typing import Final

import structlog
import trio

from switch.core.book import TxnRecord
from switch.core.clock import BusinessClock
from switch.core.risk import Reload, RuleSet
from switch.core.riskgate import RiskGate
from switch.store.port import Journal, JournalError

log = structlog.get_logger()

FOLLOW_OVERLAP_S: Final = 1.0
"""How far back each read of the other workers' rows reaches before the newest change
it saw: a row's ``updated_at`` is stamped when its change is made and committed a few
milliseconds later, so one committed late is still read; rows read again change
nothing (each row's effect is applied once)."""
SEEN_HORIZON_S: Final = 2 * 86400 + 3600
"""Rows whose effect is remembered at most this long after they were received: past
it they have left every window (the longest is a local day)."""


async def rebuild(journal: Journal, gate: RiskGate, now: float) -> list[TxnRecord]:
    """Counts what the journal holds into every window; returns the rows it read."""
    engine = gate.engine
    if not engine.rules.velocity_rules():
        return []
    since = engine.history_since(now)
    records = await journal.risk_history(since)
    counted = gate.rebuild(records, now)
    log.info("risk_windows_rebuilt", requests=len(records), entries=counted, since=since)
    return records


async def apply_rules(journal: Journal, gate: RiskGate, rules: RuleSet, now: float) -> Reload:
    """Swaps ``rules`` in, between requests; the windows that start empty are rebuilt
    from the journal (the requests counted live since the swap are not counted twice).
    A journal that cannot be read leaves them counting from now, logged."""
    reload = gate.apply(rules, now)
    if reload.rebuild:
        try:
            records = await journal.risk_history(reload.since)
        except JournalError as exc:
            log.error("risk_windows_not_rebuilt", rules=list(reload.rebuild), error=str(exc))
        else:
            gate.rebuild(records, now, rule_ids=reload.rebuild, until=reload.until)
    gate.reloads["applied"] = gate.reloads.get("applied", 0) + 1
    log.info(
        "risk_rules_applied", version=reload.version, added=list(reload.added),
        removed=list(reload.removed), changed=list(reload.changed),
        rebuilt=list(reload.rebuild),
    )  # fmt: skip
    return reload


class OtherWorkers:
    """What the journal says the other workers did, counted here once each: their
    requests as they stand (a row first seen counts as a rebuild would count it; one
    that stood and no longer does, declined by its bank, timed out, voided or reversed,
    leaves the ``approved`` windows), and this worker's own approved requests that
    another worker voided or reversed. This worker's own requests were counted as they
    were evaluated, and their bank's answers given back as they came."""

    def __init__(self, gate: RiskGate) -> None:
        self.gate = gate
        self.standing: dict[str, tuple[bool, float]] = {}
        """Other workers' RRN -> (whether it stands in the approved windows here,
        received)."""
        self.cursor = 0.0

    def seed(self, records: list[TxnRecord]) -> None:
        """The rows a rebuild counted (every worker's): read again, they change
        nothing."""
        for record in records:
            past = self.gate.past(record)
            if past is not None:
                self.standing[record.rrn] = (past.outcome == "approved", past.received)
                if past.outcome == "removed":
                    self.gate.removed[record.rrn] = past.received

    def take(self, records: list[tuple[TxnRecord, float, bool]], now: float) -> int:
        """Applies what changed; returns how many rows changed something."""
        gate, standing, changed = self.gate, self.standing, 0
        for record, updated_at, mine in records:
            self.cursor = max(self.cursor, updated_at)
            past = gate.past(record)
            if past is None:
                continue
            seen = standing.get(record.rrn)
            if mine and seen is None:  # counted live; only another's void or reversal
                if past.outcome == "removed" and gate.remove(record, now):
                    changed += 1
                continue
            stands = past.outcome == "approved"
            if seen is None:
                gate.engine.rebuild([past], now)
                if past.outcome == "removed":
                    gate.removed[record.rrn] = past.received
            elif seen[0] and not stands:
                if past.outcome == "removed":
                    gate.remove(record, now)
                else:  # its bank declined it, or it timed out
                    gate.engine.remove(past.request, past.received, now)
            else:
                continue
            standing[record.rrn] = (stands, past.received)
            changed += 1
        return changed

    def forget(self, now: float) -> None:
        horizon = now - SEEN_HORIZON_S
        for rrn in [rrn for rrn, (_, received) in self.standing.items() if received < horizon]:
            del self.standing[rrn]
        removed = self.gate.removed
        for rrn in [rrn for rrn, received in removed.items() if received < horizon]:
            del removed[rrn]


async def follow_other_workers(
    journal: Journal, others: OtherWorkers, clock: BusinessClock, interval_s: float
) -> None:
    """Every ``interval_s``, the rows the other workers changed since the last read
    (less FOLLOW_OVERLAP_S), into this worker's windows. Runs for the life of the
    worker; a journal that cannot be read is tried again at the next tick."""
    others.cursor = clock.now()
    ticks = 0
    while True:
        await trio.sleep(interval_s)
        try:
            records = await journal.risk_changes(others.cursor - FOLLOW_OVERLAP_S)
        except JournalError as exc:
            log.warning("risk_follow_failed", error=str(exc))
            continue
        now = clock.now()
        others.take(records, now)
        ticks += 1
        if ticks % 10_000 == 0:
            others.forget(now)
