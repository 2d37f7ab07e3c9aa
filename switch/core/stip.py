"""Stand-in processing (risk.md, "Stand-in processing (STIP)"): whether the switch may
approve a sale in the place of a bank known not to have acted, and the tallies its caps
are checked against.

Plain Python, no I/O. :func:`decide` takes the request, the bank's ``stand_in`` section
and its :class:`StandInTally`, and gives either the approval's reason and auth code or
the refusal's reason (journaled; the terminal sees 91 either way, as it would have
without stand-in: caps are neither disclosed nor an invitation to split a sale).

The tally holds, per bank, the stood-in sales standing per card on each local date and
the amount whose advice is not yet accepted. It is rebuilt from the journal at start-up
(:meth:`StandInTally.load`) and kept by the lifecycle and the advice forwarder since.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Final, Literal, Protocol

import msgspec

from switch.config import StandInSection

StandInReason = Literal["circuit_open", "no_link", "bank_91"]
"""Why the bank is known not to have acted on the request."""

CNY: Final = "156"

AdviceState = Literal["queued", "sent", "accepted", "refused", "manual", "cancelled"]
"""An advice's life: ``queued`` never sent; ``sent`` sent at least once, no final
answer yet; ``accepted`` 0230 with 00; ``refused`` 0230 with any other final code;
``manual`` its attempts ran out (``switch saf retry``); ``cancelled`` its sale was
voided or reversed in the switch before the bank heard of it."""

CAPS_TAKEN: Final = "caps taken by other workers' stand-ins"
"""The refusal's reason when the journal refused a stood-in approval at its commit:
stand-ins the other workers committed first had taken its card's or bank's caps."""

UNSETTLED: Final = frozenset({"queued", "sent", "manual"})
"""Advices whose amount counts as pending at the bank (no final answer)."""


class StandInRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What eligibility looks at, taken from a sale on its way to a bank."""

    kind: str
    """Its product's kind: only ``sale`` is ever stood in."""
    channel: str
    pan: str
    card_key: bytes
    """The card's look-up HMAC (the tally never holds a card number)."""
    amount: int
    currency: str
    expiry: str | None
    """YYMM, from 14, 35 or the online ``expiry``."""
    has_pin: bool
    has_chip: bool
    mcc: str | None
    local_date: str
    """MMDD, the local date the card's daily caps count on."""
    business_date: date
    rrn: str = ""
    """Its RRN: on a shared journal, how the tally knows it once the journal has it."""


class StandIn(msgspec.Struct, frozen=True):
    """Approve in the bank's place."""

    reason: StandInReason


class NoStandIn(msgspec.Struct, frozen=True):
    """Answer 91, as without stand-in; ``reason`` is journaled."""

    reason: str


def auth_code(rrn: str) -> str:
    """38 of a stood-in approval: ``S`` and the RRN's last five characters."""
    return "S" + rrn[-5:]


def expired(expiry: str, on: date) -> bool:
    """Whether a YYMM expiry is past on ``on`` (a card is good to its month's end)."""
    year, month = 2000 + int(expiry[:2]), int(expiry[2:4])
    return (on.year, on.month) > (year, month)


class _Card(msgspec.Struct):
    count: int = 0
    amount: int = 0


RECENT_READS: Final = 100
"""On a shared journal, reads of it after which a stand-in decided here that it never
showed is forgotten (its commit failed; undone at once in any case)."""

StoodInRow = tuple[str, str, bytes, str, int, bool, bool]
"""(rrn, bank, card key, local date, amount, standing, pending) of a journaled one."""


class StandInTally:
    """Per bank: each card's standing stood-in sales on each local date, and the
    amount of stood-in sales whose advice has no final answer (``UNSETTLED``).

    Alone on its journal, a worker keeps the tally as it decides and advises. On a
    journal several workers share (:meth:`share`), the tally is what the journal last
    said of every worker's stood-in sales (:meth:`replace`, read every
    ``[risk] sync_interval_s``) plus the stand-ins decided here that the journal did
    not show yet, by RRN: a cap holds whichever worker each sale reached. What undoes
    or settles one (a void, an advice's answer, at any worker) counts once the journal
    says so: meanwhile the caps err towards refusing."""

    __slots__ = ("_cards", "_pending", "_reads", "_recent", "shared")

    def __init__(self) -> None:
        self._cards: dict[tuple[str, bytes, str], _Card] = {}
        self._pending: dict[str, int] = {}
        self.shared = False
        self._reads = 0
        self._recent: dict[str, tuple[int, str, bytes, str, int]] = {}
        """RRN -> (the read it was decided after, bank, card key, local date, amount)."""

    def share(self) -> None:
        """The journal is shared: the tally follows it (:meth:`replace`)."""
        self.shared = True

    def replace(self, rows: Iterable[StoodInRow]) -> None:
        """The journal's stood-in sales of every worker (today's and the pending ones),
        in place of what the tally held, with those decided here it does not show yet."""
        self._reads += 1
        self._cards, self._pending = {}, {}
        seen: set[str] = set()
        for rrn, bank, card_key, local_date, amount, standing, pending in rows:
            seen.add(rrn)
            self.load([(bank, card_key, local_date, amount, standing, pending)])
        for rrn, (read, bank, card_key, local_date, amount) in list(self._recent.items()):
            if rrn in seen or read < self._reads - RECENT_READS:
                del self._recent[rrn]
            else:
                self._add_card(bank, card_key, local_date, amount)
                self._pending[bank] = self._pending.get(bank, 0) + amount

    def forget(self, rrn: str) -> None:
        """A stand-in decided here was not journaled (shared tally)."""
        self._recent.pop(rrn, None)

    def load(self, rows: Iterable[tuple[str, bytes, str, int, bool, bool]]) -> None:
        """(bank, card key, local date, amount, standing, pending) of each stood-in
        sale the journal holds (today's and the pending ones)."""
        for bank, card_key, local_date, amount, standing, pending in rows:
            if standing:
                self._add_card(bank, card_key, local_date, amount)
            if pending:
                self._pending[bank] = self._pending.get(bank, 0) + amount

    def pending(self, bank: str) -> int:
        return self._pending.get(bank, 0)

    def card(self, bank: str, card_key: bytes, local_date: str) -> tuple[int, int]:
        held = self._cards.get((bank, card_key, local_date))
        return (0, 0) if held is None else (held.count, held.amount)

    def stood_in(
        self, bank: str, card_key: bytes, local_date: str, amount: int, rrn: str = ""
    ) -> None:
        """A sale was stood in: it counts on its card's date and is pending."""
        self._add_card(bank, card_key, local_date, amount)
        self._pending[bank] = self._pending.get(bank, 0) + amount
        if self.shared and rrn:
            self._recent[rrn] = (self._reads, bank, card_key, local_date, amount)

    def settled(self, bank: str, amount: int) -> None:
        """Its advice got a final answer (or was cancelled): no longer pending."""
        if self.shared:
            return  # once the journal says so (another worker may have advised it)
        self._pending[bank] = max(0, self._pending.get(bank, 0) - amount)

    def undone(self, bank: str, card_key: bytes, local_date: str, amount: int) -> None:
        """A stood-in sale was voided or reversed: it no longer stands on its date."""
        if self.shared:
            return  # once the journal says so
        held = self._cards.get((bank, card_key, local_date))
        if held is not None:
            held.count = max(0, held.count - 1)
            held.amount = max(0, held.amount - amount)

    def forget_dates_except(self, keep: set[str]) -> None:
        """Drops the cards' tallies of local dates other than ``keep`` (bounded)."""
        for key in [key for key in self._cards if key[2] not in keep]:
            del self._cards[key]

    def _add_card(self, bank: str, card_key: bytes, local_date: str, amount: int) -> None:
        held = self._cards.setdefault((bank, card_key, local_date), _Card())
        held.count += 1
        held.amount += amount


def decide(
    request: StandInRequest,
    bank: str,
    why: StandInReason,
    config: StandInSection,
    tally: StandInTally,
) -> StandIn | NoStandIn:
    """Whether ``request`` is stood in for ``bank`` (known not to have acted: ``why``);
    the first rule it fails names the refusal, in risk.md's order."""
    if not config.enabled:
        return NoStandIn("stand-in off")
    if request.kind != "sale":
        return NoStandIn(f"not a sale ({request.kind})")
    if request.channel not in config.channels:
        return NoStandIn(f"channel {request.channel} not stood in")
    if request.has_pin:
        return NoStandIn("PIN present")
    if request.has_chip:
        return NoStandIn("chip data present")
    if request.currency != CNY:
        return NoStandIn(f"currency {request.currency}")
    if not any(request.pan.startswith(prefix) for prefix in config.bins):
        return NoStandIn("card not covered")
    if request.mcc is None:
        return NoStandIn("MCC unknown")  # no merchants file: nothing says it is not excluded
    if request.mcc in config.mcc_excluded:
        return NoStandIn(f"MCC {request.mcc} excluded")
    if request.expiry is None:
        return NoStandIn("no expiry")
    if expired(request.expiry, request.business_date):
        return NoStandIn("card expired")
    if request.amount > config.single_cap_fen:
        return NoStandIn("single cap")
    count, amount = tally.card(bank, request.card_key, request.local_date)
    if amount + request.amount > config.card_daily_cap_fen:
        return NoStandIn("card daily cap")
    if config.card_daily_count and count + 1 > config.card_daily_count:
        return NoStandIn("card daily count")
    if tally.pending(bank) + request.amount > config.max_pending_fen:
        return NoStandIn("bank pending cap")
    return StandIn(why)


class _StoodInSale(Protocol):
    """What the desk reads of a stood-in sale's record (``switch.core.book.TxnRecord``)."""

    bank: str
    pan_hmac: bytes
    local_date: str
    amount: int
    advice: str | None


class StandInDesk:
    """Every bank's ``stand_in`` section, the tally its caps are checked against and
    what it did (the metrics' counters). One per process; a reload replaces the
    sections (``configure``), never the tally."""

    def __init__(self, banks: Mapping[str, StandInSection] | None = None) -> None:
        self.banks: dict[str, StandInSection] = dict(banks or {})
        self.tally = StandInTally()
        self.approvals: dict[str, int] = {}
        """Stand-in approvals by bank."""
        self.declines: dict[tuple[str, str], int] = {}
        """Requests not stood in by (bank, reason), stand-in being on for the bank."""
        self.advices: dict[tuple[str, str], int] = {}
        """Advices' final results and attempts by (bank, result)."""
        self.approved_on: dict[tuple[str, str], int] = {}
        """Stand-in approvals by (bank, business date), for today's figures."""
        self.losses_on: dict[tuple[str, str], int] = {}
        """Refused advices by (bank, business date)."""

    def configure(self, banks: Mapping[str, StandInSection]) -> None:
        self.banks = dict(banks)

    def enabled(self, bank: str) -> bool:
        config = self.banks.get(bank)
        return config is not None and config.enabled

    def decide(
        self, bank: str, request: StandInRequest, why: StandInReason
    ) -> StandIn | NoStandIn:
        config = self.banks.get(bank)
        if config is None:
            return NoStandIn("stand-in off")
        verdict = decide(request, bank, why, config, self.tally)
        if isinstance(verdict, StandIn):
            self.tally.stood_in(
                bank, request.card_key, request.local_date, request.amount, request.rrn
            )
            self.approvals[bank] = self.approvals.get(bank, 0) + 1
            key = (bank, request.business_date.isoformat())
            self.approved_on[key] = self.approved_on.get(key, 0) + 1
        elif config.enabled:
            self.declines[(bank, verdict.reason)] = self.declines.get((bank, verdict.reason), 0) + 1
        return verdict

    def claimed_caps(self, bank: str) -> tuple[int, int, int] | None:
        """What a stood-in approval's commit claims at ``bank`` (``card_daily_cap_fen``,
        ``card_daily_count``, ``max_pending_fen``), on a journal several workers share;
        None alone on its journal, where this tally decides exactly."""
        config = self.banks.get(bank)
        if not self.tally.shared or config is None:
            return None
        return (config.card_daily_cap_fen, config.card_daily_count, config.max_pending_fen)

    def refused_at_commit(self, bank: str, request: StandInRequest) -> None:
        """The journal refused a stand-in decided here (``CAPS_TAKEN``): undone, and
        counted as a stand-in decline for that reason."""
        self.undo(bank, request)
        key = (bank, CAPS_TAKEN)
        self.declines[key] = self.declines.get(key, 0) + 1

    def undo(self, bank: str, request: StandInRequest) -> None:
        """A stand-in that was not journaled: as if it had never been decided."""
        if self.tally.shared:
            self.tally.forget(request.rrn)
        self.tally.undone(bank, request.card_key, request.local_date, request.amount)
        self.tally.settled(bank, request.amount)
        self.approvals[bank] = max(0, self.approvals.get(bank, 0) - 1)
        key = (bank, request.business_date.isoformat())
        self.approved_on[key] = max(0, self.approved_on.get(key, 0) - 1)

    def undone(self, sale: _StoodInSale) -> None:
        """A stood-in sale voided or reversed: it no longer stands on its card's date,
        and an advice never sent (cancelled) is no longer pending."""
        self.tally.undone(sale.bank, sale.pan_hmac, sale.local_date, sale.amount)
        if sale.advice == "queued":
            self.tally.settled(sale.bank, sale.amount)

    def redone(self, sale: _StoodInSale) -> None:
        """An ``undone`` that was not journaled: as it was."""
        if self.tally.shared:
            return  # the journal still says it stands
        self.tally.load([(sale.bank, sale.pan_hmac, sale.local_date, sale.amount, True,
                          sale.advice == "queued")])  # fmt: skip

    def advised(self, bank: str, result: str, amount: int, *, final: bool, on: str) -> None:
        """An advice's attempt gave ``result`` (accepted, refused, retry, manual...)."""
        self.advices[(bank, result)] = self.advices.get((bank, result), 0) + 1
        if final:
            self.tally.settled(bank, amount)
        if result == "refused":
            self.losses_on[(bank, on)] = self.losses_on.get((bank, on), 0) + 1
