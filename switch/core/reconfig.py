"""What a reload changes: the difference between the running configuration and a new
one, as a plan the trio layer carries out (``SwitchApp.reload``). Plain Python.

Live: banks added, removed or changed (any of their keys), the routes, the admission
settings, the listeners' per-connection settings (new connections take them), store-
and-forward's settings, the book's size and the log level. Everything else (where the
switch listens, its identity and clock, the journal, the card keys' source, the log's
format) needs a restart: a new configuration that changes any of it is refused whole,
naming each key, and the running one stays.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

from switch.config import BankSection, ListenerSection, StandInSection, SwitchConfig

_SWITCH_LIVE = frozenset(
    {
        "max_in_flight",
        "queue_limit",
        "max_wait_s",
        "overload_wait_s",
        "shutdown_grace_s",
        "channel_shares",
    }
)
"""[switch] keys a reload changes at once (the rest are the switch's identity)."""
_LISTENER_FIXED = frozenset(
    {"host", "port", "dialect", "terminal_id", "tls_cert_file", "tls_key_file"}
)
"""Listener keys that only a restart changes (where it listens, what it speaks)."""


_NOT_COMPARED: Final = frozenset({"base_dir", "source"})
"""Where the file was read from, not what it says."""
_SECRET_WORDS: Final = ("dsn", "password", "secret")
"""A key naming one of these holds what no output shows (a DSN may carry a password)."""
HIDDEN: Final = "(hidden)"
_RELOADED_SECTIONS: Final = frozenset(
    {"switch", "pos", "online", "banks", "routes", "saf", "book", "log"}
)
"""Sections whose keys a reload takes (but those ``_restart_keys`` names)."""


class ConfigChange(msgspec.Struct, frozen=True, kw_only=True):
    """One key a new configuration changes: ``section.key`` (``banks.icbc.window``,
    ``routes.622202.bank``), its value before and after (``None`` where it is not set;
    a whole bank or route ``added`` or ``removed`` has no values), and when it takes
    effect: at once (``reload``), or only at a restart (``restart``: what the switch is,
    which refuses the reload, and sections a reload does not read, such as [admin])."""

    key: str
    change: Literal["changed", "added", "removed"]
    old: Any = None
    new: Any = None
    takes_effect: Literal["reload", "restart"] = "reload"

    def describe(self) -> str:
        """One line: ``switch.max_in_flight 128 → 256``, ``banks.boc added``."""
        if self.change == "changed":
            text = f"{self.key} {_shown(self.old)} \u2192 {_shown(self.new)}"
        else:
            text = f"{self.key} {self.change}"
        return text + ("  (only at a restart)" if self.takes_effect == "restart" else "")


def config_diff(running: SwitchConfig, new: SwitchConfig) -> tuple[ConfigChange, ...]:
    """Every key that differs from ``running`` to ``new``, section by section in the
    file's order: banks by name, routes by prefix, lists and tables as one value.
    Values that may hold a secret (a DSN) are shown as ``(hidden)``."""
    changes: list[ConfigChange] = []
    old_tree = msgspec.to_builtins(running)
    new_tree = msgspec.to_builtins(new)
    for section in msgspec.structs.fields(running):
        name = section.name
        if name in _NOT_COMPARED:
            continue
        old, new_value = old_tree.get(name), new_tree.get(name)
        if name == "routes":
            old, new_value = _by_prefix(old), _by_prefix(new_value)
        _walk(name, old, new_value, changes, nested=name in ("banks", "routes"))
    restart = set(_restart_keys(running, new))
    return tuple(
        change
        if change.key not in restart and change.key.partition(".")[0] in _RELOADED_SECTIONS
        else msgspec.structs.replace(change, takes_effect="restart")
        for change in changes
    )


def _by_prefix(routes: Any) -> dict[str, Any]:
    return {route["prefix"]: route for route in routes or ()}


def _walk(key: str, old: Any, new: Any, changes: list[ConfigChange], *, nested: bool) -> None:
    """Compares two decoded sections (dicts of values); ``nested``: a table of sections
    (banks, routes), each compared key by key, added or removed whole."""
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict) and (nested or _is_section(key)):
        for name in [*old, *(name for name in new if name not in old)]:
            path = f"{key}.{name}"
            if name not in new:
                changes.append(ConfigChange(key=path, change="removed"))
            elif name not in old:
                changes.append(ConfigChange(key=path, change="added"))
            elif nested:
                _walk(path, old[name], new[name], changes, nested=False)
            elif old[name] != new[name]:
                changes.append(_changed(path, name, old[name], new[name]))
        return
    changes.append(_changed(key, key.rpartition(".")[2], old, new))


def _is_section(key: str) -> bool:
    """A section of the file, or one bank's or route's: its values are keys. Below
    that (a bank's [sim], [switch] channel_shares) a table is one value."""
    return key.count(".") <= 1


def _changed(path: str, name: str, old: Any, new: Any) -> ConfigChange:
    if any(word in name.lower() for word in _SECRET_WORDS):
        old, new = (HIDDEN if old is not None else None), (HIDDEN if new is not None else None)
    return ConfigChange(key=path, change="changed", old=old, new=new)


def _shown(value: Any) -> str:
    if value is None:
        return "(not set)"
    if value == HIDDEN:
        return HIDDEN
    return msgspec.json.encode(value).decode()  # as TOML writes it: "text", true, 5.0


class ReloadResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a reload did: taken (with what it changed) or refused (with why)."""

    accepted: bool
    version: int
    changes: dict[str, object] = msgspec.field(default_factory=dict)
    problems: list[str] = msgspec.field(default_factory=list)
    diff: list[ConfigChange] = msgspec.field(default_factory=list)
    """What it changed (or, refused, would have), key by key, old and new value."""


class ReloadPlan(msgspec.Struct, frozen=True, kw_only=True):
    banks_added: tuple[str, ...]
    banks_removed: tuple[str, ...]
    banks_changed: tuple[str, ...]
    routes_changed: bool
    admission_changed: bool
    listeners_changed: tuple[str, ...]
    saf_changed: bool
    book_changed: bool
    log_level_changed: bool
    stand_in_changed: tuple[str, ...] = ()
    """Banks whose ``stand_in`` alone changed: applied between requests, links kept."""
    needs_restart: tuple[str, ...]
    """The keys whose change only a restart can make; any of them refuses the reload."""
    diff: tuple[ConfigChange, ...] = ()
    """What changes, key by key (``config_diff``)."""

    @property
    def changes_anything(self) -> bool:
        return bool(
            self.banks_added or self.banks_removed or self.banks_changed or self.routes_changed
            or self.admission_changed or self.listeners_changed or self.saf_changed
            or self.book_changed or self.log_level_changed or self.stand_in_changed
        )  # fmt: skip

    def summary(self) -> dict[str, object]:
        """What it changes, for the log and the reload's answer."""
        changed = {
            "banks_added": list(self.banks_added),
            "banks_removed": list(self.banks_removed),
            "banks_changed": list(self.banks_changed),
            "routes": self.routes_changed,
            "admission": self.admission_changed,
            "listeners": list(self.listeners_changed),
            "saf": self.saf_changed,
            "book": self.book_changed,
            "log_level": self.log_level_changed,
            "stand_in": list(self.stand_in_changed),
        }
        return {key: value for key, value in changed.items() if value}


def plan_reload(running: SwitchConfig, new: SwitchConfig) -> ReloadPlan:
    """The plan that takes ``running`` to ``new`` (both already validated)."""
    restart = _restart_keys(running, new)
    listeners_changed: list[str] = []
    for name in ("pos", "online"):
        old_section: ListenerSection = getattr(running, name)
        new_section: ListenerSection = getattr(new, name)
        for key in msgspec.structs.fields(old_section):
            differs = _differs(old_section, new_section, key.name)
            if differs and key.name not in _LISTENER_FIXED and name not in listeners_changed:
                listeners_changed.append(name)
    old_banks, new_banks = running.banks, new.banks
    return ReloadPlan(
        banks_added=tuple(sorted(set(new_banks) - set(old_banks))),
        banks_removed=tuple(sorted(set(old_banks) - set(new_banks))),
        banks_changed=tuple(
            sorted(
                name
                for name in old_banks.keys() & new_banks.keys()
                if _without_stand_in(old_banks[name]) != _without_stand_in(new_banks[name])
            )
        ),
        stand_in_changed=tuple(
            sorted(
                name
                for name in old_banks.keys() & new_banks.keys()
                if old_banks[name].stand_in != new_banks[name].stand_in
            )
        ),
        routes_changed=running.routes != new.routes,
        admission_changed=any(_differs(running.switch, new.switch, key) for key in _SWITCH_LIVE),
        listeners_changed=tuple(listeners_changed),
        saf_changed=running.saf != new.saf,
        book_changed=running.book != new.book,
        log_level_changed=running.log.level != new.log.level,
        needs_restart=tuple(restart),
        diff=config_diff(running, new),
    )


def _without_stand_in(bank: BankSection) -> BankSection:
    """A bank's section but its stand-in (a change of which keeps its links)."""
    return msgspec.structs.replace(bank, stand_in=StandInSection())


def _restart_keys(running: SwitchConfig, new: SwitchConfig) -> list[str]:
    """The keys that differ and that only a restart changes."""
    restart: list[str] = []
    for key in msgspec.structs.fields(running.switch):
        if key.name not in _SWITCH_LIVE and _differs(running.switch, new.switch, key.name):
            restart.append(f"switch.{key.name}")
    for name in ("pos", "online"):
        old_section: ListenerSection = getattr(running, name)
        new_section: ListenerSection = getattr(new, name)
        for key in msgspec.structs.fields(old_section):
            if key.name in _LISTENER_FIXED and _differs(old_section, new_section, key.name):
                restart.append(f"{name}.{key.name}")
    for key in msgspec.structs.fields(running.journal):
        if _differs(running.journal, new.journal, key.name):
            restart.append(f"journal.{key.name}")
    if running.log.format != new.log.format:
        restart.append("log.format")
    return restart


def _differs(old: msgspec.Struct, new: msgspec.Struct, key: str) -> bool:
    return bool(getattr(old, key) != getattr(new, key))
