"""The journal port on SQLite: the embedded default (one file, one process)."""

from switch.store.sqlite.journal import JournalFile, SqliteJournal
from switch.store.sqlite.operator import SqliteOperatorJournal

__all__ = ["JournalFile", "SqliteJournal", "SqliteOperatorJournal"]
