"""The switchboard: the trio driver of each transaction's lifecycle.

Both channels hand their requests here. What happens to a request is decided by its
state machine in ``switch.core.lifecycle``; this module only carries the machine's
actions out (a journal read or commit, a wait for a slot or for a link, the exchange
with the bank under the issuer timeout, a reversal handed to store-and-forward) and
feeds back what happened. Where the time went (the journal, the bank) is measured
here, for the transaction's log line.

Once a request may be at its bank, nothing can stop its settlement: the switch
stopping cancels the wait for the bank's answer (the machine hears Stopped), and every
action after that runs shielded, so the outcome and any reversal are journaled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final, Protocol

import msgspec
import structlog
import trio

from switch.core.bank import Institution
from switch.core.batch_lifecycle import (
    BatchEvent,
    BatchTotalsLoaded,
    LoadBatchTotals,
    LoadSettledBatch,
    SettledBatchLoaded,
    TerminalSettlement,
    TerminalUpload,
)
from switch.core.book import BOOK_CHANGE_TYPES, TransactionBook, TxnRecord
from switch.core.calendar import BusinessCalendar
from switch.core.clock import WALL_CLOCK, BusinessClock, Stamp
from switch.core.ledger import TransferKey
from switch.core.lifecycle import (
    WAITS,
    AcquireLink,
    Action,
    Admit,
    Admitted,
    Answer,
    AwaitFirst,
    BankAnswered,
    BankTimedOut,
    BankTransaction,
    Cards,
    Event,
    Finalizer,
    FirstElsewhere,
    FirstFinished,
    Journal,
    Journaled,
    JournalFailed,
    LinkGranted,
    LinkLost,
    LoadOriginal,
    NotSent,
    NudgeReversals,
    OriginalLoaded,
    PinToSend,
    Refused,
    ReleaseLink,
    ReverseUnjournaled,
    SendToBank,
    Stopped,
    TerminalReversal,
    expiry_changes,
    recovery_changes,
)
from switch.core.merchants import MerchantBook
from switch.core.model import (
    BatchSettlement,
    BatchUpload,
    Echo,
    Origin,
    Outcome,
    Request,
    Reversal,
    SignOn,
)
from switch.core.numbers import RrnAllocator, RrnExhausted
from switch.core.onus import LedgerAnswered, PostToLedger, app_online_id, parse_pos_key
from switch.core.onus_hold import ReleaseHold, holds_on_ledger
from switch.core.ratelimit import SignOnLimiter
from switch.core.riskgate import RiskGate
from switch.core.routing import BinTable
from switch.core.stats import TransactionStats
from switch.core.stip import StandInDesk, StandInReason
from switch.errors import TransactionRefused
from switch.net.admission import Admission, Busy
from switch.net.bank_link import BankConnector, BankLink, BankUnavailable, LinkDown, LinkNotSent
from switch.net.onus import LedgerDesk
from switch.store.port import Journal as JournalPort
from switch.store.port import (
    JournalError,
    RequestRepeated,
    ReversalQueued,
    StandInCapTaken,
    TxnUpdated,
)

log = structlog.get_logger()

STAN_RESTART_MARGIN: Final = 10_000
"""STANs skipped after a restart: more than a bank's echoes and reversal repeats could
have used since the last journaled request."""
RRN_RESTART_MARGIN: Final = 10_000
"""RRNs skipped after a restart. A request's start is committed without its own fsync
(the SQLite journal): a power cut can lose one group of starts of requests that were at
their banks, unanswered (at most ``max_in_flight`` and ``max_group`` of them), and the
journal's high-water mark would then hand their RRNs out again."""
LOOKUPS_IN_FLIGHT: Final = 16
"""Journal reads for originals the book no longer holds, at once; more wait (within
their own deadline): a flood of voids of unknown originals queues here, never in the
slots of the bank path."""
ELSEWHERE_WAIT_S: Final = 10.0
"""How long a repeat or a reversal watches a first at another worker: its bank's
timeout is a few seconds, and a dead worker is restarted and recovers its in-doubt
ones within a few more; past this the first is answered as in doubt (96)."""
ELSEWHERE_POLL_S: Final = 0.05


class ReversalQueue(Protocol):
    """What the switchboard needs of store-and-forward."""

    def nudge(self, bank: str) -> None:
        """A reversal was journaled for ``bank``: look now rather than at the next poll."""
        ...

    def reverse_unjournaled(self, record: TxnRecord, reason: str) -> None:
        """The journal failed: reverse ``record`` at its bank from memory."""
        ...


class _Run:
    """What one transaction holds while it is driven: its admission ticket and link
    slot (released at the end, whatever happens), and where its time went."""

    __slots__ = ("bank_s", "journal_s", "link", "registered", "ticket")

    def __init__(self) -> None:
        self.ticket: object | None = None
        self.link: tuple[BankConnector, BankLink] | None = None
        self.registered: str | None = None
        self.journal_s: float | None = None  # None: never waited for the journal
        self.bank_s: float | None = None  # None: never went to a bank

    def waited_for_journal(self, seconds: float) -> None:
        self.journal_s = (self.journal_s or 0.0) + seconds

    def stamp(self, outcome: Outcome) -> Outcome:
        return msgspec.structs.replace(
            outcome,
            journal_ms=None if self.journal_s is None else round(self.journal_s * 1000, 3),
            bank_ms=None if self.bank_s is None else round(self.bank_s * 1000, 3),
        )


class Switchboard:
    def __init__(
        self,
        *,
        bins: BinTable,
        connectors: dict[str, BankConnector],
        institution: Institution,
        book: TransactionBook,
        journal: JournalPort,
        cards: Cards,
        admission: Admission,
        utc_offset_h: int,
        rrns: RrnAllocator | None = None,
        reversals: ReversalQueue,
        calendar: BusinessCalendar,
        merchants: MerchantBook,
        sign_ons: SignOnLimiter,
        clock: BusinessClock = WALL_CLOCK,
        hold_terms: tuple[int, int] = (30, 115),
        stand_in: StandInDesk | None = None,
        ledger: LedgerDesk | None = None,
    ) -> None:
        self.hold_terms = hold_terms
        """``[preauth]``'s (expiry_days, completion_max_pct)."""
        self.bins = bins
        self.stand_in = stand_in or StandInDesk()
        """Stand-in processing: every bank's section, its tally and its counters."""
        self.ledger = ledger
        """The on-us ledger (wallet.md), when the switch serves payment codes."""
        self.clock = clock
        """Business time: what the machines and the journal record, the RRN's day. The
        sign-on rate and every wait stay on real time."""
        self.connectors = connectors
        self.institution = institution
        self.book = book
        self.journal = journal
        self.cards = cards
        self.admission = admission
        self.utc_offset_h = utc_offset_h
        self.reversals = reversals
        self.calendar = calendar
        self.merchants = merchants
        self._rrns = rrns or RrnAllocator()
        self._in_flight: dict[str, trio.Event] = {}
        self._lookups = trio.CapacityLimiter(LOOKUPS_IN_FLIGHT)
        self.sign_ons = sign_ons
        self.risk: RiskGate | None = None
        """The risk rules (risk.md); None: none are evaluated."""
        self.on_final: Callable[[BankTransaction | TerminalReversal, Outcome], None] | None = None
        """Told each bank-bound transaction and terminal reversal answered, with its
        outcome, once journaled (credit.md's points: ``net/cobrand.py``); never blocks."""
        self.stats = TransactionStats()
        """Every transaction answered, counted (the admin interface reads it)."""
        self.duplicates = 0

    def statistics(self) -> dict[str, object]:
        return {
            "in_flight": len(self._in_flight),
            "book": len(self.book),
            "duplicates": self.duplicates,
            "sign_ons_refused": self.sign_ons.refused,
            "sign_ons": self.sign_ons.statistics(),
            "admission": msgspec.structs.asdict(self.admission.statistics()),
            "journal": msgspec.structs.asdict(self.journal.statistics()),
            "banks": [connector.statistics() for connector in self.connectors.values()],
        }

    def network_management(self, request: SignOn | Echo, stamp: Stamp, origin: Origin) -> Outcome:
        """A sign-on or an echo test: answered at once, with nothing to wait for, so a
        channel answers them itself and never sheds them (a terminal whose echo test
        is refused under load takes its line for dead and reconnects, adding to it).
        Sign-ons are limited per terminal, per source address and switch-wide: 91."""
        if isinstance(request, Echo):
            return Outcome(code="00")
        acceptor = request.acceptor
        refused = self.sign_ons.take(
            (acceptor.terminal_id, acceptor.merchant_id), origin.source, trio.current_time()
        )
        if refused is not None:
            return Outcome(code="91", message=refused)
        try:
            rrn = self._rrns.allocate(stamp.local, stamp.rrn_day)
        except RrnExhausted as exc:
            return Outcome(code="96", message="system malfunction", detail=str(exc))
        new_batch = f"{(int(request.batch) + 1) % 1_000_000:06d}"
        return Outcome(code="00", rrn=rrn, batch=new_batch)

    @property
    def paycode_prefix(self) -> str | None:
        """wallet.md's ``paycode_prefix`` when payment codes are served (a ledger)."""
        return self.ledger.paycode_prefix if self.ledger is not None else None

    def check_merchant(self, merchant_id: str) -> None:
        """Refuses (03) a merchant that is neither listed nor covered by a ``*`` row."""
        if self.merchants.terms(merchant_id) is None:
            raise TransactionRefused("03", f"merchant {merchant_id} is not served", field="42")

    def business_date(self, stamp: Stamp) -> str:
        """The business date (YYYY-MM-DD) of a request stamped ``stamp``."""
        return self.calendar.date_at(stamp.epoch_s).isoformat()

    async def process(
        self,
        request: Request,
        stamp: Stamp,
        origin: Origin,
        finalize: Finalizer | None = None,
    ) -> Outcome:
        """The outcome of one request. Never raises for a refusal: that is an outcome.
        ``finalize``'s changes are committed with an outcome that reached a bank."""
        if isinstance(request, SignOn | Echo):
            return self.network_management(request, stamp, origin)
        machine: BankTransaction | TerminalReversal
        business_date = self.business_date(stamp)
        if isinstance(request, BatchSettlement):
            return await self._drive_batch(
                TerminalSettlement(
                    request, stamp, business_date=business_date,
                    allocate_rrn=self._allocate_rrn, now=self.clock.now(),
                ),
                origin,
            )  # fmt: skip
        if isinstance(request, BatchUpload):
            return await self._drive_batch(TerminalUpload(request, now=self.clock.now()), origin)
        if isinstance(request, Reversal):
            machine = TerminalReversal(
                request, book=self.book, cards=self.cards, now=self.clock.now(),
                in_flight=self._in_flight.__contains__, stand_in=self.stand_in,
                risk=self.risk,
            )  # fmt: skip
            outcome = await self._drive(machine, origin)
            if self.on_final is not None:
                self.on_final(machine, outcome)
            # A reversal belongs to the date on which it was received (settlement.md).
            return msgspec.structs.replace(outcome, settlement_date=business_date)
        machine = BankTransaction(
            request, stamp, book=self.book, cards=self.cards, route=self.bins.choose,
            institution=self.institution, allocate_rrn=self._allocate_rrn,
            in_flight=self._in_flight.__contains__, now=self.clock.now(),
            business_date=business_date, mcc=self._mcc(request.acceptor.merchant_id),
            finalize=finalize, hold_terms=self.hold_terms, stand_in=self.stand_in,
            risk=self.risk,
        )  # fmt: skip
        outcome = await self._drive(machine, origin)
        if self.on_final is not None:
            self.on_final(machine, outcome)
        return outcome

    def _mcc(self, merchant_id: str) -> str | None:
        terms = self.merchants.terms(merchant_id)
        return terms.mcc if terms is not None else None

    def _allocate_rrn(self, stamp: Stamp) -> str:
        return self._rrns.allocate(stamp.local, stamp.rrn_day)

    def _open_circuits(self) -> frozenset[str]:
        """The banks whose circuit is open now: what the machine routes a card with a
        secondary bank by (read only when some route has one)."""
        if not self.bins.has_secondaries:
            return _NONE_OPEN
        return frozenset(name for name, bank in self.connectors.items() if bank.circuit_open())

    # -- carrying the actions out ----------------------------------------------------

    async def _drive(self, machine: BankTransaction | TerminalReversal, origin: Origin) -> Outcome:
        run = _Run()
        stopped: BaseException | None = None
        actions = machine.start()
        try:
            while True:
                *effects, last = actions
                for effect in effects:
                    self._carry_out(effect, run)
                if isinstance(last, Answer):
                    if stopped is not None:
                        raise stopped
                    return run.stamp(last.outcome)
                assert isinstance(last, WAITS), last
                if isinstance(last, PostToLedger):
                    # A ledger step runs to its end (its store call cannot be taken
                    # back); a stop asked meanwhile is heard after it, and what follows
                    # (the answer journaled, the transfer ended) runs to the end, as
                    # after a bank's SendToBank.
                    with trio.CancelScope(shield=True):
                        event = await self._wait(last, run, origin)
                    if stopped is None:
                        try:
                            await trio.lowlevel.checkpoint_if_cancelled()
                        except trio.Cancelled as exc:
                            stopped = exc
                elif stopped is None:  # no cancel scope of its own: 15 µs a wait
                    try:
                        event = await self._wait(last, run, origin)
                    except trio.Cancelled as exc:
                        if not isinstance(last, SendToBank):
                            raise
                        stopped, event = exc, Stopped()
                else:  # the request may be at the bank: its settlement runs to the end
                    with trio.CancelScope(shield=True):
                        event = await self._wait(last, run, origin)
                actions = machine.handle(event, self.clock.now())
                if isinstance(machine, BankTransaction):
                    self._register(machine, run)
        finally:
            self._let_go(run)

    async def _drive_batch(
        self, machine: TerminalSettlement | TerminalUpload, origin: Origin
    ) -> Outcome:
        """A terminal's settlement or upload: admission, journal reads and a commit;
        nothing goes to a bank, so nothing needs finishing once the switch stops."""
        run = _Run()
        try:
            actions = machine.start()
            while True:
                (action,) = actions  # each of their steps is one wait or the answer
                event: BatchEvent
                match action:
                    case Answer(outcome=outcome):
                        return run.stamp(outcome)
                    case LoadSettledBatch(key=key) | LoadBatchTotals(key=key):
                        event = await self._read_batch(action, key, run)
                    case _:  # Admit, Journal: as for any transaction
                        waited = await self._wait(action, run, origin)
                        assert isinstance(waited, Admitted | Refused | Journaled | JournalFailed)
                        event = waited
                actions = machine.handle(event, self.clock.now())
        finally:
            self._let_go(run)

    async def _read_batch(
        self, action: LoadSettledBatch | LoadBatchTotals, key: tuple[str, str, str], run: _Run
    ) -> SettledBatchLoaded | BatchTotalsLoaded | JournalFailed:
        began = trio.current_time()
        try:
            if isinstance(action, LoadSettledBatch):
                return SettledBatchLoaded(await self.journal.settled_batch(*key))
            return BatchTotalsLoaded(await self.journal.batch_totals(*key))
        except JournalError as exc:
            return JournalFailed(str(exc))
        finally:
            run.waited_for_journal(trio.current_time() - began)

    def _register(self, machine: BankTransaction, run: _Run) -> None:
        """From the moment it has an RRN, a transaction is in flight: a repeat of it,
        or a reversal naming it, waits for it to end."""
        if run.registered is None and machine.rrn is not None:
            run.registered = machine.rrn
            self._in_flight[machine.rrn] = trio.Event()

    def _let_go(self, run: _Run) -> None:
        if run.link is not None:  # a bug or a cancellation left it held: no verdict
            connector, link = run.link
            connector.release(link)
            connector.record_result(answered=None)
        if run.ticket is not None:
            self.admission.release(run.ticket)  # type: ignore[arg-type]
        if run.registered is not None:
            self._in_flight.pop(run.registered).set()

    def _carry_out(self, action: Action, run: _Run) -> None:
        if type(action) in BOOK_CHANGE_TYPES:
            # At once, before anything is awaited: the next request sees it.
            self.book.apply(action)  # type: ignore[arg-type]  # a BookChange, by its type
            return
        match action:
            case ReleaseLink(answered=answered):
                assert run.link is not None
                connector, link = run.link
                run.link = None
                connector.release(link)
                connector.record_result(answered=answered)
            case NudgeReversals(bank=bank):
                self.reversals.nudge(bank)
            case ReverseUnjournaled(record=record, reason=reason):
                log.critical("reversed_without_journal", rrn=record.rrn, bank=record.bank)
                self.reversals.reverse_unjournaled(record, reason)
            case _:
                raise AssertionError(f"not an effect: {action!r}")

    async def _wait(self, action: Action, run: _Run, origin: Origin) -> Event:
        deadline = origin.received_at + self.admission.max_wait_s
        match action:
            case Journal(changes=changes, durable=durable):
                began = trio.current_time()
                try:
                    await self.journal.commit(*changes, durable=durable)
                except RequestRepeated as exc:  # journaled first by another worker
                    return FirstElsewhere(str(exc))
                except StandInCapTaken as exc:  # caps taken by other workers' stand-ins
                    return JournalFailed(str(exc), cap_taken=True)
                except JournalError as exc:
                    return JournalFailed(str(exc))
                finally:
                    run.waited_for_journal(trio.current_time() - began)
                return Journaled()
            case Admit():
                try:
                    run.ticket = await self.admission.admit(
                        origin.channel,
                        origin.connection,
                        arrived_at=origin.received_at,
                        retry=origin.retry,
                    )
                except Busy as exc:
                    return Refused(str(exc))
                return Admitted(self._open_circuits())
            case AcquireLink(bank=bank):
                connector = self.connectors.get(bank)
                if connector is None:  # a reload removed it: it takes nothing new
                    return Refused(f"bank {bank} is no longer configured")
                return await self._acquire_link(connector, run, deadline, origin)
            case SendToBank(mti=mti, fields=fields, encoded=encoded, pin=pin):
                return await self._exchange(mti, fields, encoded, run, pin)
            case LoadOriginal():
                if run.ticket is not None:
                    # Holding its slot (a repeat's first, read once the journal named
                    # it): bounded as a wait for a first, not by its queueing deadline.
                    deadline = trio.current_time() + ELSEWHERE_WAIT_S
                return self._taken_in(await self._load_original(action, deadline, run), action)
            case PostToLedger(step=step):
                if self.ledger is None:  # a ledger product is recognised only with one
                    return LedgerAnswered(code="96", detail="no ledger store")
                began = trio.current_time()
                try:
                    return await self.ledger.carry_out(step)
                finally:
                    run.bank_s = (run.bank_s or 0.0) + trio.current_time() - began
            case AwaitFirst(rrn=rrn, elsewhere=True):
                return await self._await_elsewhere(rrn, run)
            case AwaitFirst(rrn=rrn):
                done = self._in_flight.get(rrn)
                if done is not None:
                    await done.wait()
                return FirstFinished()
        raise AssertionError(f"not a wait: {action!r}")

    async def _acquire_link(
        self, connector: BankConnector, run: _Run, deadline: float, origin: Origin
    ) -> Event:
        try:
            link = await connector.acquire_link(
                deadline=deadline, channel=origin.channel, connection=origin.connection
            )
        except BankUnavailable as exc:
            return Refused(str(exc), unavailable=_unavailable(connector))
        run.link = (connector, link)
        return LinkGranted(
            stan=connector.stans.next(), encode=link.encode, translate_pin=link.translate_pin
        )

    async def _exchange(
        self,
        mti: str,
        fields: dict[int, str | bytes],
        encoded: bytes | None,
        run: _Run,
        pin: PinToSend | None = None,
    ) -> Event:
        assert run.link is not None
        connector, link = run.link
        began = trio.current_time()
        try:
            with trio.move_on_after(connector.config.issuer_timeout_s):
                response = await link.exchange(mti, fields, encoded=encoded, pin=pin)
                return BankAnswered(response.mti, response.fields)
            return BankTimedOut()
        except LinkNotSent as exc:
            return NotSent(str(exc))
        except LinkDown as exc:
            return LinkLost(str(exc))
        finally:
            run.bank_s = trio.current_time() - began

    async def _await_elsewhere(self, rrn: str, run: _Run) -> Event:
        began = trio.current_time()
        try:
            record = await self._once_ended(partial(self.journal.transaction_by_rrn, rrn))
        except JournalError:
            record = None  # what the book holds answers: still in doubt
        finally:
            run.waited_for_journal(trio.current_time() - began)
        return FirstFinished(None if record is None else self.book.take_fresh(record))

    async def online_first(self, merchant_id: str, online_id: str) -> TxnRecord | None:
        """The transaction journaled for an online id (by another worker: a client's
        repeat may come through any), once it has ended or the wait ran out; None if
        none was journaled. JournalError if the journal cannot say."""
        return await self._once_ended(
            partial(self.journal.transaction_by_online_id, merchant_id, online_id)
        )

    async def _once_ended(
        self, read: Callable[[], Awaitable[TxnRecord | None]]
    ) -> TxnRecord | None:
        """A first at another worker ends within its bank's timeout, or, if that worker
        died, when its restart recovers it: watched in the journal for a bounded time
        (still ``sending`` if it ran out)."""
        record = None
        with trio.move_on_after(ELSEWHERE_WAIT_S):
            while True:
                async with self._lookups:
                    record = await read()
                if record is None or record.state != "sending":
                    break
                await trio.sleep(ELSEWHERE_POLL_S)
        return record

    def _taken_in(self, event: Event, load: LoadOriginal) -> Event:
        """Records read back from the journal go into the book as they are read (its
        copy is kept if it is the newer, ``take_fresh``; only one of ``only_key`` if the
        load names one): the machine is fed the copies the book holds, and finds them
        there."""
        if not isinstance(event, OriginalLoaded):
            return event
        if load.only_key is not None and (
            event.record is None or event.record.request_key != load.only_key
        ):
            return event
        take = self.book.take_fresh
        return OriginalLoaded(
            None if event.record is None else take(event.record),
            tuple(take(other) for other in event.others),
        )

    async def _load_original(self, load: LoadOriginal, deadline: float, run: _Run) -> Event:
        began = trio.current_time()
        try:
            with trio.move_on_at(deadline):
                async with self._lookups:
                    if load.rrn is not None:
                        record = await self.journal.transaction_by_rrn(load.rrn)
                    elif load.authorisation is not None and load.merchant_id is not None:
                        found = await self.journal.holds_by_authorisation(
                            load.merchant_id, *load.authorisation
                        )
                        return OriginalLoaded(
                            found[0] if found else None, others=tuple(found[1:])
                        )
                    elif load.online_id is not None and load.merchant_id is not None:
                        record = await self.journal.transaction_by_online_id(
                            load.merchant_id, load.online_id
                        )
                    else:
                        assert load.trace is not None
                        record = await self.journal.transaction_by_trace(*load.trace)
                    return OriginalLoaded(record)
            return Refused("busy: the original could not be looked up in time")
        except JournalError as exc:
            return JournalFailed(str(exc))
        finally:
            run.waited_for_journal(trio.current_time() - began)

    async def expire_holds(self, business_date: str) -> int:
        """At the close of ``business_date``: the open pre-authorisations whose last
        completion date it is (or earlier) expire, each with its reversal queued in its
        bank's store-and-forward, in one durable commit. Returns how many."""
        found = await self.journal.holds_open_until(business_date)
        changes = expiry_changes(self.book, found, self.clock.now())
        if not changes:
            return 0
        await self.journal.commit(*changes, durable=True)
        banks = {change.bank for change in changes if isinstance(change, ReversalQueued)}
        for bank in sorted(banks):
            self.reversals.nudge(bank)
        ended = [change for change in changes if isinstance(change, TxnUpdated)]
        await self._release_onus_holds(ended)
        expired = len(ended)
        log.info("holds_expired", business_date=business_date, expired=expired)
        return expired

    async def _release_onus_holds(self, expired: list[TxnUpdated]) -> None:
        """risk.md: an on-us pre-authorisation's expiry voids its hold on the ledger
        (no bank to reverse at). One the ledger cannot reach now is released by the
        next start's recovery (the journal says expired)."""
        for change in expired:
            record = self.book.by_rrn(change.rrn)
            if self.ledger is None or record is None or not holds_on_ledger(record.kind):
                continue
            answered = await self.ledger.carry_out(ReleaseHold(preauth=record.rrn))
            if not answered.ok:
                log.error("onus_hold_not_released", rrn=record.rrn, code=answered.code,
                          detail=answered.detail)  # fmt: skip

    # -- start-up ------------------------------------------------------------------

    async def _ledger_record(self, key: TransferKey, merchant_id: str = "") -> TxnRecord | None:
        """The journal's record of the request a ledger transfer key names (an app's
        transaction is its merchant's record, ``merchant_id``: the transfer's)."""
        trace = parse_pos_key(key)
        if trace is not None:
            return await self.journal.transaction_by_trace(*trace)
        if key.principal.startswith("app:"):
            online_id = app_online_id(key.principal, key.id)
            return await self.journal.transaction_by_online_id(merchant_id, online_id)
        _, _, merchant_id = key.principal.partition(":")
        return await self.journal.transaction_by_online_id(merchant_id, key.id)

    async def recover(self, *, recovery_since: float, max_records: int) -> int:
        """Loads recent transactions as originals and queues reversals for those left
        in doubt by a crash; returns how many were in doubt."""
        # Held until committed: another worker's recovery never takes the same ones.
        async with self.journal.in_doubt() as in_doubt:
            changes = recovery_changes(self.book, in_doubt, self.clock.now())
            if changes:
                # Durable whatever the journal's mode: the book is loaded from it next.
                await self.journal.commit(*changes, durable=True)
                log.warning("recovered_in_doubt", transactions=len(in_doubt))
            if self.ledger is not None:
                # wallet.md: each pending transfer as the journal's answer says, while
                # the in-doubt claim is held (the journal's side settled first).
                await self.ledger.recover(self._ledger_record)
        for record in await self.journal.recent_transactions(recovery_since, max_records):
            self.book.add(record)
        now = self.clock.now()
        today = Stamp.at(now, self.utc_offset_h)
        # The stand-in caps count what was stood in today (and yesterday, across
        # midnight) and every advice without a final answer.
        days = sorted({today.local_date, Stamp.at(now - 86400, self.utc_offset_h).local_date})
        self.stand_in.tally.load(
            (row.bank, row.card_key, row.local_date, row.amount, row.standing, row.pending)
            for row in await self.journal.stood_in(days)
        )
        for name, connector in self.connectors.items():
            last_stan = await self.journal.last_bank_stan(name)
            if last_stan is not None:
                connector.stans.resume_after(last_stan, margin=STAN_RESTART_MARGIN)
        # RRNs already journaled today (and yesterday, across midnight) are not reused,
        # nor those of starts a power cut may have taken (RRN_RESTART_MARGIN).
        for day in {today.rrn_day, Stamp.at(now - 86400, self.utc_offset_h).rrn_day}:
            highest = await self.journal.highest_rrn_sequence(day)
            self._rrns.resume(day, highest + 1 + RRN_RESTART_MARGIN)
        return len(in_doubt)


_NONE_OPEN: Final[frozenset[str]] = frozenset()


def _unavailable(connector: BankConnector) -> StandInReason | None:
    """Why a bank refused a slot, when it is known not to act on what it is sent (no
    link signed on, its circuit open), rather than busy (risk.md: only then stand-in)."""
    if not any(link.status == "up" for link in connector.links):
        return "no_link"
    if connector.circuit_open():
        return "circuit_open"
    return None
