"""The journal port on SQLite: the embedded default (one file, one process)."""

from switch.store.sqlite.journal import JournalFile, LockFile, SqliteJournal
from switch.store.sqlite.operator import SqliteOperatorJournal

__all__ = ["JournalFile", "LockFile", "SqliteJournal", "SqliteOperatorJournal"]
