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

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

import structlog
import trio

from switch.core.book import TxnRecord
from switch.core.clock import BusinessClock
from switch.core.ledger import LedgerError
from switch.core.risk import Reload, RuleSet
from switch.core.riskgate import RiskEvent, RiskGate
from switch.store.ledger_port import LedgerStore, LedgerUnavailable
from switch.store.port import Journal, JournalError
from switch.wire import app as wire

if TYPE_CHECKING:
    from switch.net.app_desk import DeskCall
    from switch.net.onus import RulesInStore

log = structlog.get_logger()

FOLLOW_OVERLAP_S: Final = 1.0
"""How far back each read of the other workers' rows reaches before the newest change
it saw: a row's ``updated_at`` is stamped when its change is made and committed a few
milliseconds later, so one committed late is still read; rows read again change
nothing (each row's effect is applied once)."""
SEEN_HORIZON_S: Final = 2 * 86400 + 3600
"""Rows whose effect is remembered at most this long after they were received: past
it they have left every window (the longest is a local day)."""


DeskEvents = Callable[[float], Awaitable[list[RiskEvent]]]
T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)
"""The ledger's records of desk requests received since a time (``risk_events``)."""


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


async def rebuild_desk(events: DeskEvents, gate: RiskGate, now: float) -> list[RiskEvent]:
    """Counts the ledger's records of desk requests (withdrawals, conversions) into
    every window, as :func:`rebuild` counts the journal's rows; returns them."""
    engine = gate.engine
    if not engine.rules.velocity_rules():
        return []
    since = engine.history_since(now)
    found = await events(since)
    counted = engine.rebuild(map(gate.past_event, found), now)
    log.info("risk_desk_windows_rebuilt", requests=len(found), entries=counted, since=since)
    return found


async def apply_rules(
    journal: Journal,
    gate: RiskGate,
    rules: RuleSet,
    now: float,
    events: DeskEvents | None = None,
) -> Reload:
    """Swaps ``rules`` in, between requests; the windows that start empty are rebuilt
    from the journal and the ledger's records of desk requests (``events``; the
    requests counted live since the swap are not counted twice). A journal or ledger
    that cannot be read leaves them counting from now, logged."""
    reload = gate.apply(rules, now)
    if reload.rebuild:
        try:
            records = await journal.risk_history(reload.since)
        except JournalError as exc:
            log.error("risk_windows_not_rebuilt", rules=list(reload.rebuild), error=str(exc))
        else:
            gate.rebuild(records, now, rule_ids=reload.rebuild, until=reload.until)
        if events is not None:
            try:
                found = await events(reload.since)
            except LedgerError as exc:
                log.error("risk_desk_windows_not_rebuilt", rules=list(reload.rebuild),
                          error=str(exc))  # fmt: skip
            else:
                past = map(gate.past_event, found)
                gate.engine.rebuild(past, now, rule_ids=reload.rebuild, until=reload.until)
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


class _Follower(Protocol[T_contra]):
    """What a follow loop feeds: a cursor read from, records taken, old ones forgotten."""

    cursor: float

    def take(self, found: T_contra, now: float) -> int: ...

    def forget(self, now: float) -> None: ...


async def _follow(
    read: Callable[[float], Awaitable[T]],
    others: _Follower[T],
    clock: BusinessClock,
    interval_s: float,
    failed: tuple[str, type[Exception]],
) -> None:
    """Every ``interval_s``, what ``read`` finds since the cursor (less
    FOLLOW_OVERLAP_S), into this worker's windows, for the life of the worker; a read
    that fails (``failed``: the log event and the store's error) is tried again at the
    next tick."""
    event, error = failed
    ticks = 0
    while True:
        await trio.sleep(interval_s)
        try:
            found = await read(others.cursor - FOLLOW_OVERLAP_S)
        except error as exc:
            log.warning(event, error=str(exc))
            continue
        now = clock.now()
        others.take(found, now)
        ticks += 1
        if ticks % 10_000 == 0:
            others.forget(now)


async def follow_other_workers(
    journal: Journal, others: OtherWorkers, clock: BusinessClock, interval_s: float
) -> None:
    """The rows the other workers changed (``Journal.risk_changes``), followed."""
    others.cursor = clock.now()
    failed = ("risk_follow_failed", JournalError)
    await _follow(journal.risk_changes, others, clock, interval_s, failed)


# -- desk requests (withdrawals, conversions): records in the ledger's database ---------


async def keep_judged(
    call: DeskCall,
    rules: RulesInStore,
    body: Callable[[LedgerStore], tuple[wire.DeskResult, bool]],
    *,
    rrn: str = "",
) -> bytes:
    """``call.keep(body)`` for a desk request judged by ``rules`` inside ``body``: the
    rules' record of it (``RiskEvent``) is written in the same transaction as the
    step, so a restart and the other workers count it exactly when its step stands.
    A step that refuses by raising (a ``LedgerError``: nothing of it is kept) after it
    reached the rules has its record written in a transaction of its own (its
    ``attempts`` count and its hits). A failed step's reservation goes back
    (``rules.guarding``)."""
    wall_clock = call.desk.wall_clock
    online_id = call.message.id
    written: list[bool] = []

    def judged(store: LedgerStore) -> tuple[wire.DeskResult, bool]:
        written.clear()
        result, keep = body(store)
        event = rules.event(
            result.approved, result.code, online_id=online_id, rrn=rrn, written_at=wall_clock()
        )
        if event is not None:
            store.add_risk_event(event)
            written.append(True)
        return result, keep

    try:
        return await rules.guarding(call.keep(judged))
    except LedgerError as exc:
        if isinstance(exc, LedgerUnavailable) or written:
            raise
        event = rules.event(
            False, exc.response_code, online_id=online_id, rrn=rrn, written_at=wall_clock()
        )
        if event is not None:
            store = call.store
            try:
                with trio.CancelScope(shield=True):
                    await call.desk.ledger.call(lambda: store.add_risk_event(event))
            except LedgerError as failed:
                log.warning("risk_event_not_written", kind=event.kind, error=str(failed))
        raise


class OtherWorkersDesk:
    """The other workers' desk requests (their ``RiskEvent`` records), counted here
    once each; this worker's own were counted as they were judged."""

    def __init__(self, gate: RiskGate, cursor: float) -> None:
        self.gate = gate
        self.cursor = cursor
        """Wall time: the newest record's ``written_at`` seen (at first, when the
        start-up rebuild read them)."""
        self.seen: dict[int, float] = {}
        """Record id -> received, of those counted (or seeded)."""

    def seed(self, events: list[RiskEvent]) -> None:
        for event in events:
            self.seen[event.id] = event.received_at

    def take(self, events: list[RiskEvent], now: float) -> int:
        gate, seen, changed = self.gate, self.seen, 0
        for event in events:
            self.cursor = max(self.cursor, event.written_at)
            if event.id in seen:
                continue
            seen[event.id] = event.received_at
            if event.worker == gate.worker:
                continue
            gate.engine.rebuild([gate.past_event(event)], now)
            changed += 1
        return changed

    def forget(self, now: float) -> None:
        horizon = now - SEEN_HORIZON_S
        for key in [key for key, received in self.seen.items() if received < horizon]:
            del self.seen[key]


async def follow_other_workers_desk(
    written: DeskEvents,
    others: OtherWorkersDesk,
    clock: BusinessClock,
    interval_s: float,
) -> None:
    """The records of desk requests written since the last read (a record is stamped
    just before its commit), followed through the ledger's database."""
    failed = ("risk_desk_follow_failed", LedgerError)
    await _follow(written, others, clock, interval_s, failed)
