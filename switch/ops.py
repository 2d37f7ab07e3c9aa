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
_FEN_FIELDS = {"amount": "amount_fen", "refunded": "refunded_fen"}
"""Amounts are kept in fen (the smallest unit, as field 4 carries them): their names
say so wherever a command prints them."""


def _readable(row: msgspec.Struct) -> dict[str, Any]:
    """A row for people and scripts: times as ISO 8601 UTC, amounts named with their
    unit (``amount_fen``), everything else as stored."""
    return {
        _FEN_FIELDS.get(name, name): (
            datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")
            if name in _TIME_FIELDS and isinstance(value, float | int)
            else value
        )
        for name, value in msgspec.structs.asdict(row).items()
    }


def yuan(fen: int) -> str:
    """An amount in fen as the operator types it: ``12345`` is ``123.45 yuan``."""
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d} yuan"


def journal_show(journal: OperatorJournal, rrn: str) -> dict[str, Any]:
    """One transaction, its history (each event saying what happened: ``what``) and
    its reversal, for ``--json``; ``show_lines`` draws it for people."""
    history = journal.transaction(rrn)
    events = [_readable(event) for event in history.events]
    previous: dict[str, Any] | None = None
    for event in events:
        event["what"] = _what_happened(event, previous)
        previous = event
    return {
        "transaction": _readable(history.transaction),
        "events": events,
        "reversal": _readable(history.reversal) if history.reversal else None,
    }


def _what_happened(event: dict[str, Any], previous: dict[str, Any] | None) -> str:
    """An event as a sentence: its state and code, and what its detail says (a void,
    refund or reversal names itself and its RRN in its original's history)."""
    what = str(event["state"]) + (f" {event['code']}" if event["code"] else "")
    if event["detail"] and event["detail"] != event["state"]:
        return f"{what}: {event['detail']}"
    if previous is not None and (previous["state"], previous["code"]) == (
        event["state"],
        event["code"],
    ):  # written before events named what they did
        return f"{what}: a void, refund or reversal of it was answered (not named)"
    return what


def find_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``switch journal find``'s table for people: a transaction a row, what tells them
    apart (``journal show RRN`` has the rest, ``--json`` has every field)."""
    return [
        {
            "created_at": row["created_at"],
            "rrn": row["rrn"],
            "kind": row["kind"],
            "state": row["state"],
            "code": row["code"] or "-",
            "amount": yuan(row["amount_fen"]),
            "card": row["pan_masked"],
            "stan": row["stan"],
            "bank": row["bank"],
            "notes": _notes(row),
        }
        for row in rows
    ]


def _notes(row: dict[str, Any]) -> str:
    notes = []
    if row["original_rrn"]:
        notes.append(f"of RRN {row['original_rrn']}")
    if row["voided"]:
        notes.append("voided")
    if row["refunded_fen"]:
        notes.append(f"refunded {yuan(row['refunded_fen'])}")
    if row["reversed"]:
        notes.append("reversed")
    return ", ".join(notes) or "-"


def show_lines(found: dict[str, Any]) -> list[str]:
    """``switch journal show`` for people: the transaction one field a line, amounts in
    yuan with their fen, then its history as events, then its reversal."""
    transaction = found["transaction"]
    lines = [f"transaction {transaction['rrn']}"]
    for name, value in transaction.items():
        if name == "rrn":
            continue
        if name in ("amount_fen", "refunded_fen"):
            shown = f"{yuan(value)} ({value} fen)"
            name = name.removesuffix("_fen")
        elif value is None:
            shown = "-"
        elif isinstance(value, bool) or name in ("voided", "reversed"):
            shown = "yes" if value else "no"
        else:
            shown = str(value)
        lines.append(f"  {name:<14} {shown}")
    lines.append("")
    lines.append("history (UTC)")
    lines.extend(f"  {event['at']}  {event['what']}" for event in found["events"])
    if not found["events"]:
        lines.append("  (none)")
    lines.append("")
    lines.append("reversal")
    reversal = found["reversal"]
    if reversal is None:
        lines.append("  (none)")
    else:
        lines.extend(
            f"  {name:<16} {'-' if value is None else value}" for name, value in reversal.items()
        )
    return lines


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


def advice_list(
    journal: OperatorJournal, *, bank: str | None = None, state: str | None = None
) -> list[dict[str, Any]]:
    """Advices of stood-in sales (risk.md); by default those without a final answer
    (queued, sent, manual), in the order of stand-in. Ids read ``A<n>``."""
    rows = []
    for advice in journal.advices(bank=bank, state=state):
        row = _readable(advice)
        row["id"] = f"A{advice.id}"
        rows.append(row)
    return rows


def advice_retry(journal: OperatorJournal, advice_id: int) -> dict[str, Any]:
    """Puts a ``manual`` advice back in its bank's queue, in its place (the order of
    stand-in): the running switch sends it (a 0221 if it was sent before) when it comes
    to the head."""
    row = _readable(journal.retry_advice(advice_id, time.time()))
    row["id"] = f"A{advice_id}"
    return row


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
