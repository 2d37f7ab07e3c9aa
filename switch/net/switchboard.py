"""The switchboard: where a canonical request is routed, sent to its bank and answered.

Both channels hand their requests here. It routes by BIN (or to the original's bank for
voids, refunds and reversals), assigns the RRN and the bank STAN, and holds the issuer
timeout as a cancel scope around the bank exchange. Every bank-bound transaction is
journaled before it leaves and again, with its answer, before the answer leaves; one
that may have reached its bank without a final answer gets a reversal queued for
store-and-forward in that same commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import msgspec
import structlog
import trio

from switch.core import bank as bankmsg
from switch.core.bank import BankTrace, Institution, OriginalData
from switch.core.book import State, TransactionBook, TxnRecord
from switch.core.clock import Stamp
from switch.core.model import (
    KIND_NAMES,
    BalanceInquiry,
    BankBound,
    Card,
    Echo,
    Outcome,
    Refund,
    Request,
    Reversal,
    Sale,
    SignOn,
    Void,
)
from switch.core.numbers import RrnAllocator, RrnExhausted
from switch.core.routing import BinTable
from switch.errors import TransactionRefused
from switch.net.bank_link import (
    BankConnector,
    BankLink,
    BankUnavailable,
    LinkDown,
    LinkNotSent,
)
from switch.store.crypto import CardVault
from switch.store.port import (
    Change,
    Journal,
    JournalError,
    ReversalQueued,
    TxnStarted,
    TxnUpdated,
)

log = structlog.get_logger()

STAN_RESTART_MARGIN = 10_000
"""STANs skipped after a restart: more than a bank's echoes and reversal repeats could
have used since the last journaled request."""

Finalizer = Callable[[Outcome], Sequence[Change]]
"""Changes a channel wants committed with the outcome (online idempotency)."""


class ReversalQueue(Protocol):
    """What the switchboard needs of store-and-forward: a nudge when one is queued."""

    def nudge(self, bank: str) -> None: ...


class _NoReversalQueue:
    def nudge(self, bank: str) -> None:
        pass


class Switchboard:
    def __init__(
        self,
        *,
        bins: BinTable,
        connectors: dict[str, BankConnector],
        institution: Institution,
        book: TransactionBook,
        journal: Journal,
        vault: CardVault,
        utc_offset_h: int,
        rrns: RrnAllocator | None = None,
        reversals: ReversalQueue | None = None,
    ) -> None:
        self.bins = bins
        self.connectors = connectors
        self.institution = institution
        self.book = book
        self.journal = journal
        self.vault = vault
        self.utc_offset_h = utc_offset_h
        self.reversals = reversals or _NoReversalQueue()
        self._rrns = rrns or RrnAllocator()
        self._in_flight: dict[str, trio.Event] = {}
        self.duplicates = 0

    def statistics(self) -> dict[str, object]:
        return {
            "in_flight": len(self._in_flight),
            "book": len(self.book),
            "duplicates": self.duplicates,
            "journal": self.journal.statistics(),
            "banks": [connector.statistics() for connector in self.connectors.values()],
        }

    def network_management(self, request: SignOn | Echo, stamp: Stamp) -> Outcome:
        """A sign-on or an echo test: answered at once, with nothing to wait for, so a
        channel answers them itself and never sheds them (a terminal whose echo test
        is refused under load takes its line for dead and reconnects, adding to it)."""
        if isinstance(request, Echo):
            return Outcome(code="00")
        try:
            rrn = self._rrns.allocate(stamp.local, stamp.rrn_day)
        except RrnExhausted as exc:
            return Outcome(code="96", message=str(exc))
        new_batch = f"{(int(request.batch) + 1) % 1_000_000:06d}"
        return Outcome(code="00", rrn=rrn, batch=new_batch)

    async def process(
        self, request: Request, stamp: Stamp, finalize: Finalizer | None = None
    ) -> Outcome:
        """The outcome of one request. Never raises for a refusal: that is an outcome.
        ``finalize``'s operations are committed with the outcome, before it is returned."""
        if isinstance(request, SignOn | Echo):
            return self.network_management(request, stamp)
        try:
            rrn = self._rrns.allocate(stamp.local, stamp.rrn_day)
        except RrnExhausted as exc:
            return Outcome(code="96", message=str(exc))
        try:
            match request:
                case Sale() | BalanceInquiry():
                    return await self._purchase(request, stamp, rrn, finalize)
                case Void() | Refund():
                    return await self._void_or_refund(request, stamp, rrn, finalize)
                case Reversal():
                    return await self._reversal(request)
        except TransactionRefused as exc:
            outcome = Outcome(code=exc.response_code, message=str(exc), field=exc.field, rrn=rrn)
            operations = finalize(outcome) if finalize is not None else ()
            if operations:
                try:
                    await self.journal.commit(*operations)
                except JournalError as error:
                    return Outcome(code="96", message=str(error), rrn=rrn)
            return outcome
        raise AssertionError(f"unhandled request {type(request).__name__}")

    # -- duplicates ----------------------------------------------------------------

    def _request_digest(self, request: BankBound, pan: str) -> bytes:
        amount = "" if request.amount is None else str(request.amount)
        return self.vault.digest(f"{pan}|{amount}|{request.processing_code}|{request.currency}")

    async def _repeat_of(self, request: BankBound, pan: str, local_date: str) -> Outcome | None:
        """The first answer, when a POS request repeats one (same terminal, merchant,
        batch, STAN, date and MTI): the bank sees it once. A repeat that asks something
        else under the same identity is refused 94."""
        if request.acceptor.channel != "pos":
            return None  # online repeats are the idempotency book's
        key = (
            request.acceptor.terminal_id, request.acceptor.merchant_id, request.batch,
            request.stan, local_date, request.request_mti,
        )  # fmt: skip
        first = self.book.by_request(key)
        if first is None or first.state == "not_sent":
            return None  # unseen, or never reached a bank: safe to process (again)
        self.duplicates += 1
        if first.request_digest != self._request_digest(request, pan):
            raise TransactionRefused("94", "duplicate transmission with different content")
        done = self._in_flight.get(first.rrn)
        if done is not None:
            await done.wait()
        return Outcome(
            code=first.code or "96",
            rrn=first.rrn,
            auth_code=first.auth_code,
            balance=first.balance,
            bank=first.bank,
            route="duplicate",
            bank_stan=first.sent.stan if first.sent else None,
        )

    # -- sales, balance inquiries, voids, refunds ---------------------------------

    async def _purchase(
        self, request: Sale | BalanceInquiry, stamp: Stamp, rrn: str, finalize: Finalizer | None
    ) -> Outcome:
        pan = request.card.pan
        repeat = await self._repeat_of(request, pan, stamp.local_date)
        if repeat is not None:
            return repeat
        prefix, bank = self._route(pan)
        self._refuse_if_no_room(bank)
        record = self._record(request, stamp, rrn, bank=bank, pan=pan, amount=request.amount)
        return await self._to_bank(record, request, stamp, route=prefix, finalize=finalize)

    def _refuse_if_no_room(self, bank: str) -> None:
        """91 at once, before any card data is sealed or anything journaled, when the
        bank cannot take the request now: under overload, refusing must cost little."""
        connector = self.connectors[bank]
        if not connector.has_room():
            reason = "circuit open" if connector.circuit_open() else "every link is full or down"
            raise TransactionRefused("91", f"bank {bank}: {reason}")

    def _route(self, pan: str) -> tuple[str, str]:
        prefix, bank, secondary = self.bins.route(pan)
        if (
            secondary is not None
            and self.connectors[bank].circuit_open()
            and not self.connectors[secondary].circuit_open()
        ):
            return f"{prefix}>{secondary}", secondary
        return prefix, bank

    async def _void_or_refund(
        self, request: Void | Refund, stamp: Stamp, rrn: str, finalize: Finalizer | None
    ) -> Outcome:
        if request.card is not None:  # a POS repeat is answered before any rule runs
            repeat = await self._repeat_of(request, request.card.pan, stamp.local_date)
            if repeat is not None:
                return repeat
        merchant_id = request.acceptor.merchant_id
        await self._load_original(request)
        original = self.book.find_sale(
            merchant_id=merchant_id, rrn=request.original.rrn, online_id=request.original.online_id
        )
        pan = self.vault.open(original.pan_sealed)
        if request.card is not None and request.card.pan != pan:
            raise TransactionRefused("25", "card differs from the original's", field="pan")
        amount = original.amount if request.amount is None else request.amount
        resolved = msgspec.structs.replace(
            request,
            card=request.card or Card(pan=pan),
            amount=amount,
            currency=request.currency or original.currency,
        )
        self._refuse_if_no_room(original.bank)
        if isinstance(request, Void):
            self.book.reserve_void(original, amount)
        else:
            self.book.reserve_refund(original, amount)
        record = self._record(resolved, stamp, rrn, bank=original.bank, pan=pan, amount=amount)
        record.original_rrn = original.rrn
        return await self._to_bank(
            record, resolved, stamp, route="original", original=original.sent, finalize=finalize
        )

    async def _load_original(self, request: Void | Refund) -> None:
        """The book is a bounded cache of recent transactions: an original older than it
        holds is read back from the journal."""
        ref, merchant_id = request.original, request.acceptor.merchant_id
        if ref.rrn is not None:
            if self.book.by_rrn(ref.rrn) is None:
                self._remember(await self.journal.transaction_by_rrn(ref.rrn))
        elif (
            ref.online_id is not None and self.book.by_online_id(merchant_id, ref.online_id) is None
        ):
            self._remember(await self.journal.transaction_by_online_id(merchant_id, ref.online_id))

    def _remember(self, record: TxnRecord | None) -> TxnRecord | None:
        """Adds a record read from the journal, unless another task added it meanwhile
        (two copies of one original would each take reservations)."""
        if record is None:
            return None
        existing = self.book.by_rrn(record.rrn)
        if existing is not None:
            return existing
        self.book.add(record)
        return record

    def _record(
        self, request: BankBound, stamp: Stamp, rrn: str, *, bank: str, pan: str, amount: int
    ) -> TxnRecord:
        acceptor = request.acceptor
        assert request.currency is not None
        record = TxnRecord(
            kind=KIND_NAMES[type(request)],  # type: ignore[arg-type]
            rrn=rrn,
            bank=bank,
            channel=acceptor.channel,
            request_mti=request.request_mti,
            terminal_id=acceptor.terminal_id,
            merchant_id=acceptor.merchant_id,
            stan=request.stan,
            batch=request.batch,
            local_date=stamp.local_date,
            pan_masked=request.card.masked_pan if request.card else "",
            pan_hmac=self.vault.lookup(pan),
            pan_sealed=self.vault.seal(pan),
            amount=amount,
            currency=request.currency,
            bank_processing_code=request.processing_code,
            online_id=request.online_id,
            request_digest=self._request_digest(request, pan),
        )
        self.book.add(record)
        return record

    async def _to_bank(
        self,
        record: TxnRecord,
        request: BankBound,
        stamp: Stamp,
        *,
        route: str,
        original: OriginalData | None = None,
        finalize: Finalizer | None = None,
    ) -> Outcome:
        """Sends one request to its bank within the issuer timeout and settles it,
        whatever happens: approved, declined, no answer (reversal queued), or never sent.
        The settlement is durable before this returns."""
        connector = self.connectors[record.bank]
        outcome = Outcome(code="91", rrn=record.rrn, bank=record.bank, route=route)
        done = trio.Event()
        self._in_flight[record.rrn] = done
        try:
            stan = connector.stans.next()
            mti, fields = bankmsg.bank_request(
                request,
                BankTrace(stan=stan, rrn=record.rrn, stamp=stamp),
                self.institution,
                original,
            )
            record.bank_processing_code = str(fields[3])
            record.sent = OriginalData(mti=mti, stan=stan, transmission=stamp.transmission)
            outcome = msgspec.structs.replace(outcome, bank_stan=stan)
            timing = _Timing()
            try:  # on disk before it leaves: after a crash, it is known and reversed
                with timing.journal():
                    await self.journal.commit(TxnStarted.of(record, time.time()))
            except JournalError as exc:
                self.book.settle(record, state="not_sent", code="96")
                return timing.stamp(msgspec.structs.replace(outcome, code="96", message=str(exc)))
            # The window slot is taken only now, so it is held only while the bank has
            # the request, not while the journal writes it.
            try:
                link = connector.reserve_link()
            except BankUnavailable as exc:
                outcome = msgspec.structs.replace(outcome, message=str(exc))
                return await self._settle(
                    record, outcome, "not_sent", finalize, timing, durable=False
                )
            return await self._exchange(record, link, mti, fields, outcome, route, finalize, timing)
        finally:
            del self._in_flight[record.rrn]
            done.set()

    async def _exchange(
        self,
        record: TxnRecord,
        link: BankLink,
        mti: str,
        fields: dict[int, str | bytes],
        outcome: Outcome,
        route: str,
        finalize: Finalizer | None,
        timing: _Timing,
    ) -> Outcome:
        connector = self.connectors[record.bank]
        # From here the request may be at the bank: without a final answer it is reversed.
        state: State = "no_answer"
        finished = False
        outcome = msgspec.structs.replace(
            outcome, code="68", message="issuer did not answer in time"
        )
        try:
            with trio.move_on_after(connector.config.issuer_timeout_s), timing.bank():
                response = await link.exchange(mti, fields)
                answer = bankmsg.outcome_from_bank(
                    response.fields, rrn=record.rrn, bank=record.bank
                )
                outcome = msgspec.structs.replace(answer, route=route, bank_stan=outcome.bank_stan)
                state = "approved" if outcome.approved else "declined"
            finished = True
        except LinkNotSent as exc:
            state, finished = "not_sent", True
            outcome = msgspec.structs.replace(outcome, code="91", message=str(exc))
        except LinkDown as exc:
            finished = True
            outcome = msgspec.structs.replace(outcome, code="91", message=str(exc))
        finally:
            link.release()
            verdict = {"not_sent": None, "no_answer": False}.get(state, True)
            connector.record_result(answered=verdict)
            if not finished and state == "no_answer":  # cancelled: shutting down
                outcome = msgspec.structs.replace(
                    outcome, code="96", message="switch stopped before the bank answered"
                )
            with trio.CancelScope(shield=True):
                outcome = await self._settle(record, outcome, state, finalize, timing)
        return outcome

    async def _settle(
        self,
        record: TxnRecord,
        outcome: Outcome,
        state: State,
        finalize: Finalizer | None,
        timing: _Timing,
        *,
        durable: bool | None = None,
    ) -> Outcome:
        """Journals the settlement (and queues a reversal for a request with no final
        answer) in one commit; returns the outcome to answer with."""
        now = time.time()
        touched = self.book.settle(
            record, state=state, code=outcome.code, auth_code=outcome.auth_code,
            balance=outcome.balance,
        )  # fmt: skip
        queued = (
            self._queue_reversal(record, f"no final answer ({outcome.code})", now)
            if state == "no_answer"
            else []
        )
        operations: list[Change] = []
        if record.sent is None:  # never journaled: it never left
            operations.append(TxnStarted.of(record, now))
        else:  # written after _queue_reversal, so it carries reversed
            operations.append(TxnUpdated.of(record, now, outcome.message or None))
        if touched is not None:
            operations.append(TxnUpdated.of(touched, now))
        operations.extend(queued)
        if finalize is not None:
            operations.extend(finalize(outcome))
        try:
            with timing.journal():
                await self.journal.commit(*operations, durable=durable)
        except JournalError as exc:
            log.critical("settlement_not_journaled", rrn=record.rrn, code=outcome.code)
            return timing.stamp(msgspec.structs.replace(outcome, code="96", message=str(exc)))
        if state == "no_answer":
            self.reversals.nudge(record.bank)
        return timing.stamp(outcome)

    # -- reversals -----------------------------------------------------------------

    def _queue_reversal(self, record: TxnRecord, reason: str, now: float) -> list[Change]:
        """Marks ``record`` reversed (undoing its effect on its original) and returns the
        writes that queue its reversal for store-and-forward, the original's included.
        The caller journals the record itself, after this, so it carries ``reversed``."""
        operations: list[Change] = [
            ReversalQueued(rrn=record.rrn, bank=record.bank, reason=reason, at=now)
        ]
        original = self.book.mark_reversed(record)
        if original is not None:
            operations.append(TxnUpdated.of(original, now))
        return operations

    async def _reversal(self, request: Reversal) -> Outcome:
        """A terminal's reversal is answered 00 whether or not its original reached a
        bank (pos-cup.md); if it did, its reversal is queued for store-and-forward."""
        acceptor = request.acceptor
        ref = request.original
        trace = (
            acceptor.terminal_id, acceptor.merchant_id, ref.batch or request.batch,
            ref.stan or request.stan,
        )  # fmt: skip
        record = self.book.by_trace(*trace)
        if record is None:  # older than the book holds
            record = self._remember(await self.journal.transaction_by_trace(*trace))
        if record is None or record.pan_hmac != self.vault.lookup(request.card.pan):
            return Outcome(code="00", message="no original reached a bank")
        done = self._in_flight.get(record.rrn)
        if done is not None:
            await done.wait()  # never let a reversal overtake its original
        if record.sent is None or record.reversed:
            return Outcome(code="00", rrn=record.rrn, bank=record.bank)
        now = time.time()
        queued = self._queue_reversal(record, f"terminal reversal {request.reason}", now)
        operations = [
            TxnUpdated.of(record, now, "reversal requested by terminal"),
            *queued,
        ]
        try:
            await self.journal.commit(*operations)
        except JournalError as exc:
            return Outcome(code="96", message=str(exc), rrn=record.rrn)
        self.reversals.nudge(record.bank)
        return Outcome(code="00", rrn=record.rrn, bank=record.bank, route="original")

    # -- start-up ------------------------------------------------------------------

    async def recover(self, *, recovery_since: float, max_records: int) -> int:
        """Loads recent transactions as originals and queues reversals for those left
        in doubt by a crash; returns how many were in doubt."""
        in_doubt = await self.journal.transactions_in_doubt()
        now = time.time()
        operations: list[Change] = []
        for record in in_doubt:
            record.state, record.code = "no_answer", "96"
            operations.extend(self._queue_reversal(record, "in doubt after restart", now))
            operations.append(TxnUpdated.of(record, now, "in doubt after restart"))
        if operations:
            # Durable whatever the journal's mode: the book is loaded from it next.
            await self.journal.commit(*operations, durable=True)
            log.warning("recovered_in_doubt", transactions=len(in_doubt))
        recent = await self.journal.recent_transactions(recovery_since, max_records)
        for record in recent:
            self.book.add(record)
        for name, connector in self.connectors.items():
            last_stan = await self.journal.last_bank_stan(name)
            if last_stan is not None:
                connector.stans.resume_after(last_stan, margin=STAN_RESTART_MARGIN)
        # RRNs already journaled today (and yesterday, across midnight) are not reused.
        today = Stamp.now(self.utc_offset_h)
        for day in {today.rrn_day, Stamp.at(time.time() - 86400, self.utc_offset_h).rrn_day}:
            highest = await self.journal.highest_rrn_sequence(day)
            self._rrns.resume(day, highest + 1)
        return len(in_doubt)


class _Timing:
    """Where one transaction's time went: waiting for the journal, and for the bank
    (logged with it, so that an operator can tell a slow disk from a slow bank)."""

    __slots__ = ("bank_s", "journal_s")

    def __init__(self) -> None:
        self.journal_s = 0.0
        self.bank_s: float | None = None

    @contextmanager
    def journal(self) -> Iterator[None]:
        began = trio.current_time()
        try:
            yield
        finally:
            self.journal_s += trio.current_time() - began

    @contextmanager
    def bank(self) -> Iterator[None]:
        began = trio.current_time()
        try:
            yield
        finally:
            self.bank_s = trio.current_time() - began

    def stamp(self, outcome: Outcome) -> Outcome:
        return msgspec.structs.replace(
            outcome,
            journal_ms=round(self.journal_s * 1000, 3),
            bank_ms=None if self.bank_s is None else round(self.bank_s * 1000, 3),
        )
