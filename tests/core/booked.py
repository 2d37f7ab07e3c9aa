"""The machines as the switchboard drives them, for the synchronous tests: each step's
book changes carried out at once, in order (``TransactionBook.apply``), and records fed
in as read from the journal taken into the book first (``take_fresh``), as
``switch.net.switchboard`` does. A step returns the other actions; its book changes
are kept on ``booked``, the last step's on ``last_booked``. Tests of the book changes
themselves drive the plain machines."""

from __future__ import annotations

from switch.core.book import BOOK_CHANGES, BookChange, TransactionBook
from switch.core.lifecycle import (
    Action,
    BankTransaction,
    Event,
    FirstFinished,
    LoadOriginal,
    OriginalLoaded,
    Start,
    TerminalReversal,
)


def taken_in(
    book: TransactionBook, event: Event | Start, load: LoadOriginal | None
) -> Event | Start:
    """A journal read's records, as the book holds them once taken in."""
    if isinstance(event, OriginalLoaded):
        if load is not None and load.only_key is not None and (
            event.record is None or event.record.request_key != load.only_key
        ):
            return event
        others = tuple(book.take_fresh(other) for other in event.others)
        record = None if event.record is None else book.take_fresh(event.record)
        return OriginalLoaded(record, others)
    if isinstance(event, FirstFinished) and event.record is not None:
        return FirstFinished(book.take_fresh(event.record))
    return event


def carried_out(
    book: TransactionBook, actions: list[Action], booked: list[BookChange]
) -> list[Action]:
    rest: list[Action] = []
    for action in actions:
        if isinstance(action, BOOK_CHANGES):
            book.apply(action)
            booked.append(action)
        else:
            rest.append(action)
    return rest


class BookedTransaction(BankTransaction):
    booked: list[BookChange]
    last_booked: list[BookChange]
    _load: LoadOriginal | None

    def _step(self, event: Event | Start, now: float) -> list[Action]:
        self.booked = getattr(self, "booked", [])
        self.last_booked = []
        actions = super()._step(taken_in(self.book, event, getattr(self, "_load", None)), now)
        rest = carried_out(self.book, actions, self.last_booked)
        self.booked += self.last_booked
        self._load = rest[-1] if rest and isinstance(rest[-1], LoadOriginal) else None
        return rest


class BookedReversal(TerminalReversal):
    booked: list[BookChange]
    last_booked: list[BookChange]
    _load: LoadOriginal | None

    def _step(self, event: Event | Start, now: float) -> list[Action]:
        self.booked = getattr(self, "booked", [])
        self.last_booked = []
        actions = super()._step(taken_in(self.book, event, getattr(self, "_load", None)), now)
        rest = carried_out(self.book, actions, self.last_booked)
        self.booked += self.last_booked
        self._load = rest[-1] if rest and isinstance(rest[-1], LoadOriginal) else None
        return rest
