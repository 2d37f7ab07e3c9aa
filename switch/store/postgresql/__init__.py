"""The journal port on PostgreSQL: for volumes past one process and one file, and for a
synchronous standby (see ``journal.py``)."""

from switch.store.postgresql.journal import JournalDatabase, PostgresJournal, describe_dsn

__all__ = ["JournalDatabase", "PostgresJournal", "describe_dsn"]
