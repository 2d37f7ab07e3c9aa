"""What a reload would change, as tables: banks added, removed, changed; the routes;
what may change live and what only a restart can."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from switch.config import SwitchConfig
from switch.core.reconfig import plan_reload
from tests.conftest import make_config

RUNNING = make_config()


def edited(**sections: Any) -> SwitchConfig:
    """The running configuration with ``sections`` merged in (``banks`` and ``routes``
    replace what they name); the same journal, so only what is named differs."""
    raw = msgspec.to_builtins(RUNNING)
    for section, values in sections.items():
        if section in ("banks", "routes"):
            raw[section] = values
        else:
            raw[section].update(values)
    return msgspec.convert(raw, SwitchConfig)


def bank(**settings: Any) -> dict[str, Any]:
    return msgspec.to_builtins(RUNNING.banks["icbc"]) | settings


def test_the_same_configuration_changes_nothing() -> None:
    plan = plan_reload(RUNNING, edited())
    assert not plan.changes_anything and plan.needs_restart == () and plan.summary() == {}


def test_banks_added_removed_and_changed_and_the_routes() -> None:
    plan = plan_reload(
        RUNNING,
        edited(
            banks={"icbc": bank(), "abc": bank(window=8), "boc": bank()},
            routes=[{"prefix": "621700", "bank": "boc"}, {"prefix": "622202", "bank": "icbc"}],
        ),
    )
    assert plan.banks_added == ("boc",)
    assert plan.banks_removed == ("citic", "cmb")
    assert plan.banks_changed == ("abc",)
    assert plan.routes_changed and plan.needs_restart == ()
    assert plan.summary()["banks_added"] == ["boc"]


LIVE: list[tuple[str, dict[str, Any], str]] = [
    ("admission", {"switch": {"max_in_flight": 7}}, "admission"),
    ("a listener's per-connection cap", {"pos": {"max_in_flight_per_connection": 1}}, "listeners"),
    ("store-and-forward", {"saf": {"max_attempts": 3}}, "saf"),
    ("the book", {"book": {"max_records": 10}}, "book"),
    ("the log level", {"log": {"level": "warning"}}, "log_level"),
]


@pytest.mark.parametrize(("case", "sections", "summary_key"), LIVE, ids=[c[0] for c in LIVE])
def test_what_changes_live(case: str, sections: dict[str, Any], summary_key: str) -> None:
    plan = plan_reload(RUNNING, edited(**sections))
    assert plan.needs_restart == () and plan.changes_anything
    assert list(plan.summary()) == [summary_key]


RESTART: list[tuple[dict[str, Any], str]] = [
    ({"pos": {"port": 9999}}, "pos.port"),
    ({"online": {"host": "0.0.0.0"}}, "online.host"),
    ({"online": {"terminal_id": "ONL2"}}, "online.terminal_id"),
    ({"switch": {"acquirer_id": "12345678"}}, "switch.acquirer_id"),
    ({"switch": {"utc_offset_h": 0}}, "switch.utc_offset_h"),
    ({"journal": {"durability": "async"}}, "journal.durability"),
    ({"log": {"format": "console"}}, "log.format"),
]


@pytest.mark.parametrize(("sections", "key"), RESTART, ids=[r[1] for r in RESTART])
def test_what_only_a_restart_changes(sections: dict[str, Any], key: str) -> None:
    assert plan_reload(RUNNING, edited(**sections)).needs_restart == (key,)


def test_a_journal_elsewhere_is_a_restart() -> None:
    assert "journal.path" in plan_reload(RUNNING, make_config()).needs_restart


def test_tls_on_the_online_listener_is_a_restart() -> None:
    """Its files are read at start-up: a reload that names others is refused."""
    tls = edited(online={"tls_cert_file": "tls/new.crt", "tls_key_file": "tls/new.key"})
    restart = plan_reload(RUNNING, tls).needs_restart
    assert restart == ("online.tls_cert_file", "online.tls_key_file")


BANKS = msgspec.to_builtins(RUNNING.banks)
ROUTES = msgspec.to_builtins(RUNNING.routes)


@pytest.mark.parametrize(
    ("sections", "lines"),
    [
        ({}, []),
        ({"switch": {"max_in_flight": 256}}, ["switch.max_in_flight 1024 \u2192 256"]),
        (
            {"switch": {"acquirer_id": "12345678"}},
            ['switch.acquirer_id "48990000" \u2192 "12345678"  (only at a restart)'],
        ),
        (
            {"banks": {**BANKS, "icbc": bank(window=8, issuer_timeout_s=3)}},
            ["banks.icbc.window 64 \u2192 8", "banks.icbc.issuer_timeout_s 2.0 \u2192 3.0"],
        ),
        (
            {"banks": {**BANKS, "boc": bank(port=9)}},
            ["banks.boc added"],
        ),
        (
            {"routes": [{**ROUTES[0], "secondary": "abc"}, *ROUTES[1:]]},
            ['routes.622202.secondary (not set) \u2192 "abc"'],
        ),
        (
            {"routes": ROUTES[1:]},
            ["routes.622202 removed"],
        ),
        (
            {"journal": {"backend": "postgresql", "dsn": "postgresql://switch:secret@db/switch"}},
            [
                'journal.backend "sqlite" \u2192 "postgresql"  (only at a restart)',
                "journal.dsn (not set) \u2192 (hidden)  (only at a restart)",
            ],
        ),
        ({"log": {"level": "debug"}}, ['log.level "info" \u2192 "debug"']),
    ],
)
def test_the_diff_names_each_key_with_its_old_and_new_value(
    sections: dict[str, Any], lines: list[str]
) -> None:
    plan = plan_reload(RUNNING, edited(**sections))
    assert [change.describe() for change in plan.diff] == lines
    assert "secret" not in msgspec.json.encode(plan.diff).decode()
