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

import msgspec

from switch.config import ListenerSection, SwitchConfig

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


class ReloadResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a reload did: taken (with what it changed) or refused (with why)."""

    accepted: bool
    version: int
    changes: dict[str, object] = msgspec.field(default_factory=dict)
    problems: list[str] = msgspec.field(default_factory=list)


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
    needs_restart: tuple[str, ...]
    """The keys whose change only a restart can make; any of them refuses the reload."""

    @property
    def changes_anything(self) -> bool:
        return bool(
            self.banks_added or self.banks_removed or self.banks_changed or self.routes_changed
            or self.admission_changed or self.listeners_changed or self.saf_changed
            or self.book_changed or self.log_level_changed
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
        }
        return {key: value for key, value in changed.items() if value}


def plan_reload(running: SwitchConfig, new: SwitchConfig) -> ReloadPlan:
    """The plan that takes ``running`` to ``new`` (both already validated)."""
    restart: list[str] = []
    for key in msgspec.structs.fields(running.switch):
        if key.name not in _SWITCH_LIVE and _differs(running.switch, new.switch, key.name):
            restart.append(f"switch.{key.name}")
    listeners_changed: list[str] = []
    for name in ("pos", "online"):
        old_section: ListenerSection = getattr(running, name)
        new_section: ListenerSection = getattr(new, name)
        for key in msgspec.structs.fields(old_section):
            if _differs(old_section, new_section, key.name):
                if key.name in _LISTENER_FIXED:
                    restart.append(f"{name}.{key.name}")
                elif name not in listeners_changed:
                    listeners_changed.append(name)
    for key in msgspec.structs.fields(running.journal):
        if _differs(running.journal, new.journal, key.name):
            restart.append(f"journal.{key.name}")
    if running.log.format != new.log.format:
        restart.append("log.format")
    old_banks, new_banks = running.banks, new.banks
    return ReloadPlan(
        banks_added=tuple(sorted(set(new_banks) - set(old_banks))),
        banks_removed=tuple(sorted(set(old_banks) - set(new_banks))),
        banks_changed=tuple(
            sorted(
                name
                for name in old_banks.keys() & new_banks.keys()
                if old_banks[name] != new_banks[name]
            )
        ),
        routes_changed=running.routes != new.routes,
        admission_changed=any(_differs(running.switch, new.switch, key) for key in _SWITCH_LIVE),
        listeners_changed=tuple(listeners_changed),
        saf_changed=running.saf != new.saf,
        book_changed=running.book != new.book,
        log_level_changed=running.log.level != new.log.level,
        needs_restart=tuple(restart),
    )


def _differs(old: msgspec.Struct, new: msgspec.Struct, key: str) -> bool:
    return bool(getattr(old, key) != getattr(new, key))
