"""BIN routing: the longest configured prefix of the card number names the bank.

Prefixes are kept in one dict per prefix length, so a lookup costs one probe per
distinct length (at most 11), whatever the table's size: no scan of the table.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from switch.errors import TransactionRefused


class BinTable:
    __slots__ = ("_by_length", "_lengths", "has_secondaries")

    def __init__(self, routes: Iterable[tuple[str, str] | tuple[str, str, str | None]]) -> None:
        """``routes`` are (prefix, bank) or (prefix, bank, secondary bank) tuples; a
        prefix listed twice is an error."""
        by_length: dict[int, dict[str, tuple[str, str | None]]] = {}
        for route in routes:
            prefix, bank = route[0], route[1]
            secondary = route[2] if len(route) > 2 else None
            if not prefix.isdigit():
                raise ValueError(f"BIN prefix {prefix!r} is not digits")
            table = by_length.setdefault(len(prefix), {})
            if prefix in table:
                raise ValueError(f"BIN prefix {prefix} is routed twice")
            table[prefix] = (bank, secondary)
        self.has_secondaries = any(
            second is not None for table in by_length.values() for _, second in table.values()
        )
        """Whether any route names a secondary bank (only then does the circuits' state
        matter to routing)."""
        self._lengths = tuple(sorted(by_length, reverse=True))
        self._by_length = tuple(by_length[length] for length in self._lengths)

    def lookup(self, pan: str) -> tuple[str, str] | None:
        """(matching prefix, bank) for ``pan``, or None when no prefix matches."""
        match = self.route_or_none(pan)
        return None if match is None else (match[0], match[1])

    def route_or_none(self, pan: str) -> tuple[str, str, str | None] | None:
        for length, table in zip(self._lengths, self._by_length, strict=True):
            prefix = pan[:length]
            banks = table.get(prefix)
            if banks is not None:
                return prefix, banks[0], banks[1]
        return None

    def route(self, pan: str) -> tuple[str, str, str | None]:
        """(matching prefix, bank, secondary bank or None) for ``pan``; no match is
        refused with 92."""
        match = self.route_or_none(pan)
        if match is None:
            raise TransactionRefused("92", "no route for this card's BIN", field="pan")
        return match

    def choose(
        self, pan: str, *, secondary: bool = True, open_circuits: Container[str] = ()
    ) -> tuple[str, str]:
        """(route as logged, bank) for ``pan``: its bank, or its route's secondary while
        the primary's circuit is open and the secondary's is not (and ``secondary``
        allows it: a hold is its card's own bank's). ``open_circuits`` are the banks
        whose circuit the trio layer found open (an input, never a call into it); no
        route is refused with 92."""
        prefix, bank, second = self.route(pan)
        if (
            secondary
            and second is not None
            and bank in open_circuits
            and second not in open_circuits
        ):
            return f"{prefix}>{second}", second
        return prefix, bank

    def __len__(self) -> int:
        return sum(len(table) for table in self._by_length)
