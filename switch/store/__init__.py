"""Durable state behind the journal port (``port.py``): one module per engine, card
data at rest (``crypto.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from switch.config import SwitchConfig
from switch.store.port import Journal, JournalLock, OperatorJournal

if TYPE_CHECKING:
    from switch.store.sqlite.settlement import SqliteSettlementStore


def open_journal(config: SwitchConfig) -> Journal:
    """The journal the config names (not yet running: run it in a nursery)."""
    from switch.store.sqlite import JournalFile, SqliteJournal

    section = config.journal
    return SqliteJournal(
        JournalFile(config.path(section.path)),
        durability=section.durability,
        queue_size=section.queue_size,
        max_group=section.max_group,
    )


def lock_journal(config: SwitchConfig) -> JournalLock:
    """Locks the journal the config names for this process's life, before it is opened:
    JournalUnavailable if another switch holds it (or its folder cannot be written)."""
    from switch.store.sqlite import LockFile

    lock = LockFile(config.path(config.journal.path))
    lock.acquire()
    return lock


def journal_problem(config: SwitchConfig) -> str | None:
    """Why ``switch run`` could not take the journal the config names now, or None;
    without creating or locking anything."""
    from switch.store.sqlite import LockFile

    return LockFile(config.path(config.journal.path)).check()


def open_operator_journal(config: SwitchConfig) -> OperatorJournal:
    """The journal the config names, for an operator's command."""
    from switch.store.sqlite import SqliteOperatorJournal

    return SqliteOperatorJournal(config.path(config.journal.path))


def open_settlement_store(config: SwitchConfig) -> SqliteSettlementStore:
    """The settlement store the config names (not yet open), beside the journal."""
    from switch.store.sqlite.settlement import SqliteSettlementStore

    return SqliteSettlementStore(config.settlement_db_path(), config.path(config.journal.path))
