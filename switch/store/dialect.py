"""What differs between the two engines' SQL, as data: the statements that both engines
run are written once (``settlement_sql.py``, ``questions.py``, ``operator.py``) in one
form, with ``?`` and ``:name`` placeholders, and each engine gives its
:class:`Dialect` (``sqlite/sql.py``, ``postgresql/sql.py``): its types, its
placeholders, and the few expressions the two spell differently. The statements are
built once, at import, never per call."""

from __future__ import annotations

import re
from typing import Final

import msgspec

_NAMED: Final = re.compile(r"(?<![:\w]):(\w+)")
"""A named placeholder, ``:name`` (not a cast's ``::type``, nor a colon in a string:
``'sales:'``, ``'settlement: ...'``)."""


class Dialect(msgspec.Struct, frozen=True, kw_only=True):
    """An engine's spelling of what the shared statements say. Templates take their
    operands by ``str.format``."""

    positional: str
    """A positional placeholder: ``?`` or ``%s``."""
    named: str
    """A named placeholder, its name as ``{}``: ``:{}`` or ``%({})s``."""

    # types
    text: str
    integer: str
    real: str
    flag: str
    """A boolean column."""
    row_id: str
    """A generated integer primary key."""
    true: str
    false: str

    # tables
    journal: str
    """What the journal's tables are named with in a settlement: SQLite attaches the
    journal as ``j``; PostgreSQL's are in the same database."""
    ledger: str
    """What the on-us ledger's tables are named with in a settlement (wallet.md's
    reconciliation against the ledger): SQLite attaches ``ledger.sqlite3`` as ``l``;
    PostgreSQL's are in the same database."""
    temp_table: str
    """A settlement's temporary table: ``{name}`` and ``{columns}``."""
    temp_index: str
    """An index of one: ``{name}``, ``{table}`` and ``{definition}``."""
    drop_temp_before: str
    """Run before a temporary table is made (one a failed settlement left), or empty."""
    drop_temp_after: str
    """Run once a settlement is done with one, or empty (dropped at commit)."""

    # expressions
    cross_join: str
    """A join whose order the statement fixes (SQLite's ``CROSS JOIN``; PostgreSQL
    plans its own)."""
    least: str
    """Of two values, the smaller: a function's name."""
    greatest: str
    any_of: str
    """Whether any of a group's conditions holds: an aggregate's name."""
    count_if: str
    """How many of a group's rows a condition holds for."""
    whole: str
    """A sum of whole numbers as a whole number (PostgreSQL's ``sum`` of a BIGINT is a
    NUMERIC)."""
    as_text: str
    """A parameter joined to text with ``||``."""
    day_before: str
    """The ISO date before a column's."""
    days_between: str
    """``{0}`` less ``{1}``, in days, of two ISO dates."""
    newest_first: str
    """The journal's order of creation, newest first (PostgreSQL breaks the ties of one
    commit's timestamp by ``seq``, as SQLite's rowid does)."""
    oldest_first: str

    def sql(self, statement: str) -> str:
        """A shared statement (``?`` and ``:name`` placeholders) in this engine's form."""
        if self.positional != "?":
            statement = statement.replace("?", self.positional)
        if self.named != ":{}":
            statement = _NAMED.sub(lambda found: self.named.format(found[1]), statement)
        return statement
