"""BIN routing: the longest configured prefix of the card number names the bank.

Prefixes are kept in one dict per prefix length, so a lookup costs one probe per
distinct length (at most 11), whatever the table's size: no scan of the table.
"""

from __future__ import annotations

from collections.abc import Iterable

from switch.errors import TransactionRefused


class BinTable:
    __slots__ = ("_by_length", "_lengths")

    def __init__(self, routes: Iterable[tuple[str, str]]) -> None:
        """``routes`` are (prefix, bank) pairs; a prefix listed twice is an error."""
        by_length: dict[int, dict[str, str]] = {}
        for prefix, bank in routes:
            if not prefix.isdigit():
                raise ValueError(f"BIN prefix {prefix!r} is not digits")
            table = by_length.setdefault(len(prefix), {})
            if prefix in table:
                raise ValueError(f"BIN prefix {prefix} is routed twice")
            table[prefix] = bank
        self._lengths = tuple(sorted(by_length, reverse=True))
        self._by_length = tuple(by_length[length] for length in self._lengths)

    def lookup(self, pan: str) -> tuple[str, str] | None:
        """(matching prefix, bank) for ``pan``, or None when no prefix matches."""
        for length, table in zip(self._lengths, self._by_length, strict=True):
            prefix = pan[:length]
            bank = table.get(prefix)
            if bank is not None:
                return prefix, bank
        return None

    def route(self, pan: str) -> tuple[str, str]:
        """(matching prefix, bank) for ``pan``; no match is refused with 92."""
        match = self.lookup(pan)
        if match is None:
            raise TransactionRefused("92", "no route for this card's BIN", field="pan")
        return match

    def __len__(self) -> int:
        return sum(len(table) for table in self._by_length)
