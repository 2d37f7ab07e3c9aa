"""Operator commands over the journal: read transactions and the store-and-forward
queue, and put a reversal back in the queue, through the journal's operator port. They
print masked card numbers only, because only masked numbers are stored in the clear."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from switch.store.port import OperatorError, OperatorJournal

__all__ = [
    "OperatorError",
    "UnknownBank",
    "journal_find",
    "journal_show",
    "local_day",
    "print_rows",
    "saf_list",
    "saf_retry",
]

_TIME_FIELDS = frozenset({"at", "created_at", "updated_at", "next_attempt_at"})


def _readable(row: msgspec.Struct) -> dict[str, Any]:
    """A row for people and scripts: times as ISO 8601 UTC, everything else as stored."""
    return {
        name: (
            datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")
            if name in _TIME_FIELDS and isinstance(value, float | int)
            else value
        )
        for name, value in msgspec.structs.asdict(row).items()
    }


def journal_show(journal: OperatorJournal, rrn: str) -> dict[str, Any]:
    history = journal.transaction(rrn)
    return {
        "transaction": _readable(history.transaction),
        "events": [_readable(event) for event in history.events],
        "reversal": _readable(history.reversal) if history.reversal else None,
    }


def journal_find(
    journal: OperatorJournal, terminal: str, date: str, *, utc_offset_h: int
) -> list[dict[str, Any]]:
    """A terminal's transactions on a local date of the switch (UTC + ``utc_offset_h``):
    ``MMDD`` (any year) or ``YYYY-MM-DD``; OperatorError if ``date`` is neither."""
    try:
        local_date, since, until = local_day(date, utc_offset_h=utc_offset_h)
    except ValueError as exc:
        raise OperatorError(f"date {date!r}: {exc}") from None
    rows = journal.terminal_transactions(terminal, local_date, since, until)
    return [_readable(row) for row in rows]


def local_day(date: str, *, utc_offset_h: int) -> tuple[str, float, float]:
    """A local date of the switch as the journal finds it: its ``MMDD`` (field 13, the
    journal's ``local_date``) and the UTC times [since, until) it covers. ``YYYY-MM-DD``
    is that one local day: at +8, 2026-11-23 runs from 2026-11-22 16:00 UTC to
    2026-11-23 16:00 UTC; ``MMDD`` is that day in any year. ValueError says why not."""
    if len(date) == 10 and date[4] == "-" and date[7] == "-":
        try:
            day = datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise ValueError("not a date (YYYY-MM-DD)") from None
        since = (day - timedelta(hours=utc_offset_h)).timestamp()
        return date[5:7] + date[8:10], since, since + 86400
    if len(date) == 4 and date.isascii() and date.isdigit():
        try:
            datetime.strptime(f"2000{date}", "%Y%m%d")  # a leap year: 0229 is a date
        except ValueError:
            raise ValueError("not a month and day (MMDD)") from None
        return date, 0.0, float("inf")
    raise ValueError("neither MMDD nor YYYY-MM-DD")


class UnknownBank(OperatorError):
    """A bank named that neither the config nor the queue has: a typo, not an empty
    list."""


def saf_list(
    journal: OperatorJournal,
    *,
    bank: str | None = None,
    state: str | None = None,
    banks: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """Reversals in the queue; by default those not yet delivered. UnknownBank when
    ``bank`` is not among ``banks`` (the config's) and the queue lists none of its: a
    bank taken out of the config keeps its reversals, and they are still listed."""
    rows = [_readable(row) for row in journal.reversals(bank=bank, state=state)]
    if not rows and bank is not None and banks is not None and bank not in banks:
        which = f"{state} reversals" if state else "reversals"
        raise UnknownBank(
            f"--bank {bank}: no such bank in the config (its banks: {', '.join(sorted(banks))}), "
            f"and the queue has none of its {which}"
        )
    return rows


def saf_retry(journal: OperatorJournal, saf_id: int) -> dict[str, Any]:
    """Puts a reversal that is not delivered back in the queue, due now. The running
    switch picks it up at its next poll; its attempts count on (so a repeat is 0401)."""
    return _readable(journal.retry_reversal(saf_id, time.time()))


def print_rows(rows: Sequence[dict[str, Any]], *, as_json: bool) -> None:
    """A table for people; with ``as_json`` one JSON array for scripts (``[]`` when
    there is nothing)."""
    if as_json:
        print(json.dumps(list(rows)))
        return
    if not rows:
        print("(none)")
        return
    columns = list(rows[0])
    widths = [max(len(column), *(len(str(row[column])) for row in rows)) for column in columns]
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)))
    for row in rows:
        cells = (str(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True))
        print("  ".join(cells))
