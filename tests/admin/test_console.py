"""``switch top``'s screen from status documents, synchronously: the numbers of a frame
(rates and window percentiles between two documents, or since start from one) as
tables of cases, and what the rendering shows."""

from __future__ import annotations

import io
from typing import Any

import msgspec
import pytest
from rich.console import Console

from switch.admin import console
from switch.admin.status import (
    BankStatus,
    ChannelStatus,
    ConfigStatus,
    JournalStatus,
    LinkStatus,
    StandInStatus,
    StatusDocument,
)
from switch.core.admission import AdmissionStatistics
from switch.core.stats import HistogramSnapshot, LatencyHistogram


def histogram(*values_ms: float) -> HistogramSnapshot:
    recorded = LatencyHistogram()
    for value in values_ms:
        recorded.record(value)
    return recorded.snapshot()


def link(index: int, *, state: str = "up", in_flight: int = 0) -> LinkStatus:
    return LinkStatus(
        index=index, state=state, in_flight=in_flight, window=32, connects=1, unsolicited=0
    )


def bank(name: str = "icbc", **fields: Any) -> BankStatus:
    values: dict[str, Any] = {
        "name": name,
        "links": [link(0), link(1)],
        "links_up": 2,
        "circuit_open": False,
        "queued": 0,
        "queue_limit": 64,
        "refused_queue_full": 0,
        "expired": 0,
        "link_state_changes": 6,
        "transactions": 0,
        "approved": 0,
        "latency": histogram(),
        "bank_wait": histogram(),
        "saf_pending": 0,
        "saf_manual": 0,
        "saf_oldest_age_s": None,
        "saf_unjournaled": 0,
    }
    return BankStatus(**(values | fields))


def channel(name: str = "pos", **fields: Any) -> ChannelStatus:
    values: dict[str, Any] = {
        "name": name,
        "connections": 0,
        "max_connections": 20000,
        "connections_refused": 0,
        "transactions": 0,
        "shed": 0,
        "latency": histogram(),
    }
    return ChannelStatus(**(values | fields))


def journal(**fields: Any) -> JournalStatus:
    values: dict[str, Any] = {
        "backend": "sqlite",
        "durability": "sync",
        "writable": True,
        "commits": 0,
        "changes": 0,
        "failures": 0,
        "queued": 0,
        "commit_latency": histogram(),
        "group_size": histogram(),
        "journal_wait": histogram(),
    }
    return JournalStatus(**(values | fields))


def document(uptime_s: float, **fields: Any) -> StatusDocument:
    values: dict[str, Any] = {
        "switch_version": "0.1.0",
        "started_at": "2026-11-22T06:00:00.000Z",
        "now": "2026-11-22T06:00:10.000Z",
        "uptime_s": uptime_s,
        "ready": True,
        "not_ready": [],
        "config": ConfigStatus(
            version=1, loaded_at="2026-11-22T06:00:00.000Z", path="", last_reload_error=None
        ),
        "admission": AdmissionStatistics(
            slots=128,
            in_use=3,
            waiting=0,
            queue_limit=4096,
            overloaded=False,
            admitted=0,
            refused_queue_full=0,
            refused_overload=0,
            expired=0,
            oldest_wait_s=0.0,
        ),
        "channels": [channel()],
        "banks": [bank()],
        "journal": journal(),
        "transactions": [],
    }
    return StatusDocument(**(values | fields))


SLOW = [400.0] * 10  # ms: what happened before the window
FAST = [1.5] * 99 + [8.0]

BANK_CASES = [
    pytest.param(
        None,
        bank(transactions=100, approved=90, latency=histogram(*FAST)),
        10.0,
        {"tps": 10.0, "approval": 0.9, "p50_ms": 2.0, "p99_ms": 2.0},
        id="since start: over the uptime",
    ),
    pytest.param(
        bank(transactions=10, approved=10, latency=histogram(*SLOW)),
        bank(
            transactions=110,
            approved=100,
            latency=histogram(*SLOW, *FAST),
        ),
        2.0,
        {"tps": 50.0, "approval": 0.9, "p50_ms": 2.0, "p99_ms": 2.0},
        id="between two: the window only, not the slow ones before it",
    ),
    pytest.param(
        bank(transactions=10, approved=10, latency=histogram(*[1.0] * 10)),
        bank(transactions=20, approved=10, latency=histogram(*[1.0] * 10, *[4000.0] * 10)),
        1.0,
        {"tps": 10.0, "approval": 0.0, "p50_ms": 5000.0, "p99_ms": 5000.0},
        id="a window of timeouts: nothing approved, the percentiles show it",
    ),
    pytest.param(
        bank(transactions=10, approved=10, latency=histogram(*[1.0] * 10)),
        bank(transactions=10, approved=10, latency=histogram(*[1.0] * 10)),
        1.0,
        {"tps": 0.0, "approval": None, "p50_ms": None, "p99_ms": None},
        id="an idle window: no rate, no percentiles",
    ),
]


@pytest.mark.parametrize(("before", "after", "seconds", "expected"), BANK_CASES)
def test_a_banks_numbers(
    before: BankStatus | None, after: BankStatus, seconds: float, expected: dict[str, Any]
) -> None:
    previous = document(5.0, banks=[before]) if before is not None else None
    current = document(5.0 + seconds if before is not None else seconds, banks=[after])
    [row] = console.frame(previous, current).banks
    assert {key: getattr(row, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (
            bank(links=[link(0, in_flight=8), link(1, state="down")], links_up=1, queued=5),
            {"links_up": 1, "links": 2, "in_flight": 8, "window": 64, "queued": 5},
        ),
        (bank(saf_pending=7, saf_manual=2), {"saf_pending": 7, "saf_manual": 2}),
        (bank(circuit_open=True, links_up=0), {"circuit_open": True, "links_up": 0}),
    ],
)
def test_a_banks_state_of_the_moment(after: BankStatus, expected: dict[str, Any]) -> None:
    [row] = console.frame(document(1.0), document(2.0, banks=[after])).banks
    assert {key: getattr(row, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (
            channel(transactions=100, shed=10, connections_refused=1),
            channel(transactions=300, shed=50, connections_refused=4, connections=12),
            {"tps": 100.0, "shed_per_s": 20.0, "connections_refused": 3, "connections": 12},
        ),
        (
            None,
            channel(transactions=300, shed=50, connections_refused=4),
            {"tps": 30.0, "shed_per_s": 5.0, "connections_refused": 4},
        ),
    ],
)
def test_a_channels_numbers(
    before: ChannelStatus | None, after: ChannelStatus, expected: dict[str, Any]
) -> None:
    # Since start: 10 s of uptime; between two: 2 s.
    previous = document(8.0, channels=[before]) if before is not None else None
    [row] = console.frame(previous, document(10.0, channels=[after])).channels
    assert {key: getattr(row, key) for key in expected} == expected


def test_the_journals_commit_p99_is_of_the_window() -> None:
    before = journal(commits=10, changes=40, commit_latency=histogram(*[300.0] * 10))
    after = journal(commits=110, changes=340, commit_latency=histogram(*[300.0] * 10, *[0.4] * 100))
    row = console.frame(document(1.0, journal=before), document(3.0, journal=after)).journal
    assert (row.commit_p99_ms, row.commits_per_s, row.changes_per_commit) == (0.5, 50.0, 3.0)


@pytest.mark.parametrize(
    ("previous_uptime_s", "interval_s"),
    [(9.0, 1.0), (10.0, None), (50.0, None)],
    ids=["a second apart", "the same moment: since start", "the switch restarted"],
)
def test_the_span_of_a_frame(previous_uptime_s: float, interval_s: float | None) -> None:
    previous = document(previous_uptime_s, banks=[bank(transactions=0)])
    current = document(10.0, banks=[bank(transactions=100)])
    shown = console.frame(previous, current)
    assert shown.interval_s == interval_s
    assert shown.banks[0].tps == (100.0 if interval_s else 10.0)


def text_of(renderable: Any) -> str:
    output = Console(file=io.StringIO(), width=160, color_system=None)
    output.print(renderable)
    assert isinstance(output.file, io.StringIO)
    return output.file.getvalue()


def test_a_rendered_frame_shows_every_bank_channel_and_the_journal() -> None:
    current = document(
        10.0,
        banks=[bank("icbc", transactions=50, approved=50), bank("abc", saf_pending=3)],
        channels=[channel("pos", connections=7), channel("online")],
    )
    text = text_of(console.render(console.frame(None, current)))
    for shown in ("icbc", "abc", "pos", "online", "journal: commit p99", "ready", "since start"):
        assert shown in text, shown
    assert "7/20000" in text and "100.0%" in text and "3 (0)" in text
    assert "NOT READY" not in text


def test_what_is_not_ready_and_a_silent_switch_are_said() -> None:
    current = document(10.0, ready=False, not_ready=["bank icbc: no link signed on (0 of 2 up)"])
    shown = console.frame(None, current)
    text = text_of(console.render(shown, error="connection refused"))
    assert "switch not answering: connection refused" in text
    assert "NOT READY" in text and "bank icbc: no link signed on" in text
    alone = text_of(console.render(None, error="connection refused"))
    assert "connection refused" in alone and "banks" not in alone


def test_a_frame_is_plain_data() -> None:
    shown = console.frame(document(1.0), document(2.0))
    assert msgspec.json.decode(msgspec.json.encode(shown), type=console.Frame) == shown


def test_the_stand_in_table_shows_each_bank_s_advices_and_losses() -> None:
    stand_in = StandInStatus(
        bank="citic", enabled=True, approvals=9, today=7, declines={"single cap": 2},
        advices={"accepted": 3}, losses_today=1, pending=4, pending_fen=123456, manual=1,
        oldest_age_s=125.0,
    )  # fmt: skip
    text = text_of(console.render(console.frame(None, document(10.0, stand_in=[stand_in]))))
    assert "stand-in" in text
    for shown in ("citic", "7", "4", "1234.56", "00:02:05"):
        assert shown in text, shown
    plain = text_of(console.render(console.frame(None, document(10.0))))
    assert "stand-in" not in plain  # no bank with stand-in: no table
