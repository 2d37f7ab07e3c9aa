"""The switch configuration generated for a bench run, written as TOML to the run dir.

Every section is a plain dict first, so a scenario changes one value by merging a dict,
and a new switch section (the journal) is one entry in :func:`extra_sections`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from switch.config import SwitchConfig

REPO: Final = Path(__file__).resolve().parents[1]
DIALECTS_DIR: Final = REPO / "conf" / "dialects"
DEMO_CARD_KEYS: Final = REPO / "conf" / "card-keys.toml"
ACQUIRER_ID: Final = "48990000"

BANK_BINS: Final = {
    "icbc": "622202",
    "abc": "622848",
    "cmb": "622588",
    "citic": "622690",
}
"""Each bank the bench can route to, and the BIN its generated cards start with."""

TomlTable = dict[str, Any]


class BankPlan(msgspec.Struct, frozen=True, kw_only=True):
    """One bank as a run sets it up: its simulator's latency, the switch's links and
    window towards it (the demo configuration's, conf/switch.toml, by default)."""

    name: str
    links: int = 2
    window: int = 32
    latency_ms: float = 0.0
    issuer_timeout_s: float = 5.0


CACHED_RECORDS = 10_000


def extra_sections(
    run_dir: Path,
    label: str,
    *,
    durability: str = "sync",
    key_file: Path = DEMO_CARD_KEYS,
    dsn: str | None = None,
    workers: int = 1,
) -> TomlTable:
    """Switch sections beyond the base config, merged over it: the one place to add one.

    The journal runs as in production, with synchronous durability by default (an
    approval is on disk before its answer leaves), each switch of the run in its own
    SQLite file, or with ``dsn`` in its own PostgreSQL database; the demo card keys are
    good enough for generated cards. ``workers`` > 1: ``[switch] workers``, a supervisor
    and that many worker processes on the same ports.
    """
    journal: TomlTable = (
        # In a folder of its own: the stores beside it (settlement's, the ledger's) are
        # that switch's too, and two versions in one run (``--baseline``) may not share
        # one whose schema only the newer reads.
        {"path": str(run_dir / label / "journal.sqlite3")}
        if dsn is None
        else {"backend": "postgresql", "dsn": dsn}
    )
    return {
        **({"switch": {"workers": workers}} if workers > 1 else {}),
        "journal": {
            **journal,
            "durability": durability,
            "key_file": str(key_file),
        },
        # The in-memory windows of originals and online results are bounded caches
        # (the journal holds everything); sized so that they are full before the
        # measured scenarios, the RSS compared across them is the switch's working
        # memory, not a cache still filling. Production sizes: see conf/switch.toml.
        "book": {"max_records": CACHED_RECORDS},
        # The bench's banks are simulators, which hold the DEMO ZMK (security.md's
        # sample): the switch's store and LMK are made in the run's folder at start.
        "security": {
            "demo_keys": True,
            "demo_terminals": True,
            "key_store": str(run_dir / f"{label}-key-store.json"),
            "lmk_file": str(run_dir / f"{label}-lmk"),
        },
        "online": {"idempotency_max_entries": CACHED_RECORDS},
    }


def switch_config(
    banks: list[BankPlan],
    bank_ports: Mapping[str, int],
    *,
    pos_max_connections: int = 20_000,
    extra: Mapping[str, Any] | None = None,
    dialects_dir: Path = DIALECTS_DIR,
) -> TomlTable:
    """The switch's config: listeners on ephemeral loopback ports, logging at the
    production level, and every bank a real TCP peer (``simulate = false``)."""
    config: TomlTable = {
        "switch": {
            "acquirer_id": ACQUIRER_ID,
            "utc_offset_h": 8,
            "shutdown_grace_s": 5.0,
            "dialects_dir": str(dialects_dir),
        },
        "pos": {
            "host": "127.0.0.1",
            "port": 0,
            "dialect": "cup-pos",
            "max_frame_bytes": 2048,
            "read_deadline_s": 10.0,
            "max_in_flight_per_connection": 2,
            # 10,000 idle terminals, plus the load scenarios' terminals reconnecting.
            "max_connections": pos_max_connections,
        },
        "online": {
            "host": "127.0.0.1",
            "port": 0,
            "max_frame_bytes": 65536,
            "read_deadline_s": 10.0,
            "max_in_flight_per_connection": 64,
            "max_connections": 5000,
        },
        "log": {"level": "info"},
        "banks": {plan.name: _bank_section(plan, bank_ports.get(plan.name, 0)) for plan in banks},
        "routes": [{"prefix": BANK_BINS[plan.name], "bank": plan.name} for plan in banks],
    }
    return merge(config, extra or {})


def _bank_section(plan: BankPlan, port: int) -> TomlTable:
    return {
        "host": "127.0.0.1",
        "port": port,
        "links": plan.links,
        "window": plan.window,
        "issuer_timeout_s": plan.issuer_timeout_s,
        "dialect": "h2h-ascii",
        "simulate": False,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 1.0,
        "sim": {"latency_ms": plan.latency_ms},
    }


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> TomlTable:
    """``base`` with ``extra`` merged in: tables recursively, anything else replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def write_config(path: Path, config: TomlTable, *, check: bool = True) -> Path:
    """Writes ``config`` as TOML and (``check``) that the current switch accepts it, so a
    bad key fails here, naming it, rather than in a child process's log. Another
    version's config is checked by that version, when it starts."""
    text = to_toml(config)
    if check:
        msgspec.toml.decode(text.encode(), type=SwitchConfig)
    path.write_text(text)
    return path


def fit_to_schema(
    table: Mapping[str, Any], schema: Mapping[str, Any]
) -> tuple[TomlTable, list[str]]:
    """``table`` without the keys that a switch version's config schema (its
    ``msgspec.json.schema(SwitchConfig)``) does not know, and those keys, dotted, with
    ``*`` for a bank's name. Values are not checked: the version does that itself."""
    definitions: Mapping[str, Any] = schema.get("$defs", {})
    dropped: list[str] = []
    fitted = _fit_table(table, _object_schema(schema, definitions), definitions, "", dropped)
    return fitted, sorted(set(dropped))


def _object_schema(node: Mapping[str, Any], definitions: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object (or array) a node describes, through ``$ref`` and ``anyOf`` (an
    optional section is ``anyOf`` the section and null)."""
    while "$ref" in node:
        node = definitions[node["$ref"].rsplit("/", 1)[-1]]
    for option in node.get("anyOf", ()):
        resolved = _object_schema(option, definitions)
        if resolved.get("type") in ("object", "array"):
            return resolved
    return node


def _fit_table(
    table: Mapping[str, Any],
    node: Mapping[str, Any],
    definitions: Mapping[str, Any],
    path: str,
    dropped: list[str],
) -> TomlTable:
    properties: Mapping[str, Any] = node.get("properties", {})
    entries = node.get("additionalProperties")
    fitted: TomlTable = {}
    for key, value in table.items():
        if key in properties:
            child, child_path = properties[key], f"{path}{key}"
        elif isinstance(entries, Mapping):  # a dict of sections, such as [banks.*]
            child, child_path = entries, f"{path}*"
        else:
            dropped.append(f"{path}{key}")
            continue
        fitted[key] = _fit_value(value, child, definitions, child_path, dropped)
    return fitted


def _fit_value(
    value: Any,
    node: Mapping[str, Any],
    definitions: Mapping[str, Any],
    path: str,
    dropped: list[str],
) -> Any:
    node = _object_schema(node, definitions)
    if isinstance(value, Mapping) and node.get("type") == "object":
        return _fit_table(value, node, definitions, f"{path}.", dropped)
    if isinstance(value, list) and node.get("type") == "array" and "items" in node:
        items = _object_schema(node["items"], definitions)
        return [
            _fit_table(item, items, definitions, f"{path}[].", dropped)
            if isinstance(item, Mapping) and items.get("type") == "object"
            else item
            for item in value
        ]
    return value


# A TOML writer for what a config holds: tables, arrays of tables, and scalars.
# (msgspec.toml.encode needs the tomli_w package, which the switch does not depend on.)


def to_toml(table: Mapping[str, Any]) -> str:
    lines: list[str] = []
    _write_table(lines, [], table)
    return "\n".join(lines).lstrip("\n") + "\n"


def _write_table(lines: list[str], path: list[str], table: Mapping[str, Any]) -> None:
    subtables: list[tuple[str, Mapping[str, Any]]] = []
    arrays: list[tuple[str, list[Mapping[str, Any]]]] = []
    for key, value in table.items():
        if value is None:
            continue  # TOML has no null: a None leaves the switch's default
        if isinstance(value, Mapping):
            subtables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            arrays.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_scalar(value)}")
    for key, value in subtables:
        lines.extend(["", f"[{'.'.join(_key(part) for part in [*path, key])}]"])
        _write_table(lines, [*path, key], value)
    for key, items in arrays:
        for item in items:
            lines.extend(["", f"[[{'.'.join(_key(part) for part in [*path, key])}]]"])
            _write_table(lines, [*path, key], item)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string of printable text is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
