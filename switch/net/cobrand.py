"""The co-brand card's desk (credit.md, "Co-brand card"): the app's ``cobrand_link``,
``cobrand_sales``, ``points_balance`` and ``cobrand_convert``, and the points of linked
cards' sales, on the ledger store.

``cobrand_convert`` is a transaction: its checks and the pending hold on the credit
line are one store step; then the payment to the card (bank-h2h.md: 0200, 3 = 280030)
goes through the switchboard like any card request (journaled with its RRN, sent to its
card's own bank, reversed when it gets no final answer); its answer posts the hold and
makes the plan (00), or voids it (a decline: the bank's code; no answer: 68).

Points follow the journal: the switchboard reports each transaction it has answered
(``note``, called with what it journaled); an approved sale or completion of a card
under ``cobrand_bins``, a void, a refund and a terminal's reversal of any of them are
queued here, and one task applies them to the store in order (each keyed: noted twice,
they move points once). A stood-in sale earns its points once its advice is accepted
(credit.md): the advice sender tells ``advice_accepted``.

The store's calls are blocking: they run in a worker thread through the ledger desk,
one at a time with its own (one connection).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any, Final, TypeVar

import msgspec
import structlog
import trio

from switch.core.app_desk import DESK_MESSAGES, DeskType, approved, echo
from switch.core.book import TxnRecord
from switch.core.clock import WALL_CLOCK, BusinessClock
from switch.core.credit import cobrand
from switch.core.credit.book import PlanView
from switch.core.credit.settings import CreditSettings
from switch.core.ledger import LedgerError, TransferKey
from switch.core.lifecycle import BankTransaction, Cards, Finalizer, TerminalReversal
from switch.core.model import (
    KIND_NAMES,
    Acceptor,
    Card,
    CardPayment,
    Origin,
    Outcome,
    mask_pan,
)
from switch.core.numbers import StanSequence
from switch.core.settlement import ReconLine
from switch.core.validate import luhn_valid
from switch.errors import TransactionRefused
from switch.net.app_desk import AppDesk, DeskCall
from switch.net.channel import log_transaction
from switch.net.onus import LedgerDesk
from switch.net.switchboard import Switchboard
from switch.store.cobrand_store import CobrandPort, PointsBalance
from switch.store.credit_store import CreditStopped
from switch.store.port import JournalError
from switch.wire import cobrand as cw
from switch.wire.app import DeskResult

log = structlog.get_logger()

T = TypeVar("T")

POINTS_BACKLOG: Final = 10_000
"""Points changes queued for the store; past this many (the store far behind), one is
logged and dropped (its sale keeps or lacks its points until the operator looks)."""
PAYMENT_CODE: Final = "280030"
"""Field 3 of a payment to a card: 28 payment, 00 from the default account, 30 to a
credit account (bank-h2h.md)."""
CNY: Final = "156"
HOLD_LEG: Final = "cobrand_convert"
EARNS: Final = frozenset({"sale", "completion"})
"""The kinds of an approved sale (0200, 3 = 00xxxx) that earn points."""
_CHANGES: Final[dict[str, cobrand.Change]] = {
    "void": "void",
    "completion_void": "void",
    "refund": "refund",
}


class ConvertResult(msgspec.Struct, frozen=True, kw_only=True):
    """``cobrand_convert``'s answer: the payment's outcome (its RRN, settlement date,
    the bank's code or 68) and, approved, the plan."""

    outcome: Outcome
    plan: PlanView | None = None


def payment_id(app: str, request_id: str) -> str:
    """The online id a conversion's payment is journaled under (merchant
    ``own_merchant_id``): the app principal's and its request's id."""
    return f"{app}:{request_id}"


class Paid(msgspec.Struct, frozen=True, kw_only=True):
    """A conversion's payment answered (or not): what ends its hold."""

    customer_id: str
    key: TransferKey
    sale_rrn: str
    outcome: Outcome

    @property
    def approved(self) -> bool:
        return self.outcome.approved and self.outcome.rrn is not None


class _Earned(msgspec.Struct, frozen=True):
    record: TxnRecord


class _Changed(msgspec.Struct, frozen=True):
    rrn: str
    change: cobrand.Change
    ref: str
    amount: int


class _Undone(msgspec.Struct, frozen=True):
    """A terminal's reversal of a void or refund (``ref``) of the sale ``rrn``."""

    rrn: str
    change: cobrand.Change
    ref: str
    amount: int


_Note = _Earned | _Changed | _Undone


class CobrandDesk:
    def __init__(
        self,
        ledger: LedgerDesk,
        store: CobrandPort,
        switchboard: Switchboard,
        cards: Cards,
        settings: CreditSettings,
        *,
        utc_offset_h: int,
        clock: BusinessClock = WALL_CLOCK,
        wall_clock: Callable[[], float] = time.time,
        stans: StanSequence | None = None,
    ) -> None:
        self.ledger = ledger
        self.store = store
        """The ledger desk's store, by its co-brand steps (run through ``ledger``)."""
        self.switchboard = switchboard
        self.cards = cards
        self.settings = settings
        self.terms = settings.terms()
        self.utc_offset_h = utc_offset_h
        self.clock = clock
        self.wall_clock = wall_clock
        self._stans = stans or StanSequence()
        """Field 11 of the payments to cards (terminal ``own_terminal_id``)."""
        self._send, self._receive = trio.open_memory_channel[_Note](POINTS_BACKLOG)
        self.points_dropped = 0
        self._pending = 0
        """Points changes noted and not yet applied (``drain``)."""
        self._drained = trio.Event()

    # -- the app's requests -------------------------------------------------------------

    async def link(self, customer_id: str, app: str, pan: str) -> str:
        """``cobrand_link``: the masked card number; TransactionRefused with credit.md's
        code (30 naming ``pan``, 14, 12; 03 another app's customer)."""
        if not (pan.isdigit() and 12 <= len(pan) <= 19 and luhn_valid(pan)):
            raise TransactionRefused("30", "pan is not 12 to 19 Luhn-valid digits", field="pan")
        if not cobrand.is_cobrand(pan, self.settings.cobrand_bins):
            raise TransactionRefused("14", "not a co-brand card")
        hmac, sealed, masked = self.cards.lookup(pan), self.cards.seal(pan), mask_pan(pan)
        store = self.store
        return await self._store(
            lambda: store.cobrand_link(
                customer_id,
                app,
                pan_hmac=hmac,
                pan_sealed=sealed,
                masked_pan=masked,
                at=self.clock.now(),  # the journal's clock: sales before it earn nothing
            )
        )

    async def sales(self, customer_id: str, app: str) -> list[cobrand.SaleView]:
        store, days = self.store, self.settings.convert_days
        return await self._store(lambda: store.cobrand_sales(customer_id, app, days))

    async def points(self, customer_id: str, app: str | None = None) -> PointsBalance:
        store = self.store
        return await self._store(lambda: store.points_balance(customer_id, app))

    async def convert(
        self,
        customer_id: str,
        app: str,
        request_id: str,
        *,
        rrn: str,
        instalments: int,
        origin: Origin,
        finalize: Finalizer | None = None,
    ) -> ConvertResult:
        """``cobrand_convert`` of the sale ``rrn``: refused before the bank with
        TransactionRefused (14, 25, 12, 13, 62, 51), else the payment's result."""
        paid = await self.pay(customer_id, app, request_id, rrn=rrn, instalments=instalments,
                              origin=origin, finalize=finalize)  # fmt: skip
        with trio.CancelScope(shield=True):
            plan = await self._end(paid)
        if paid.approved and plan is None:
            return ConvertResult(outcome=msgspec.structs.replace(
                paid.outcome, code="96", message="system malfunction",
                detail="the payment was approved; its plan is not made yet",
            ))  # fmt: skip
        return ConvertResult(outcome=paid.outcome, plan=plan)

    async def pay(
        self,
        customer_id: str,
        app: str,
        request_id: str,
        *,
        rrn: str,
        instalments: int,
        origin: Origin,
        finalize: Finalizer | None = None,
    ) -> Paid:
        """The conversion's checks and hold, then its payment to the card through the
        switchboard: what the bank answered, for ``end`` (the hold posted or voided).
        Refused before the bank: TransactionRefused, nothing held. Cancelled while the
        payment is on its way: the hold is voided (the switchboard reverses the payment
        that got no final answer)."""
        settings = self.settings
        if not settings.own_merchant_id:
            raise TransactionRefused("96", "[credit] own_merchant_id is not configured")
        store = self.store
        link = await self._store(lambda: store.cobrand_link_of(customer_id))
        if link is None:  # no account is 14 first, another app's customer 03
            await self._store(lambda: store.credit_status(customer_id, app))
            raise TransactionRefused("25", "no co-brand card is linked")
        pan = self.cards.open(link.pan_sealed)
        route = self.switchboard.bins.route_or_none(pan)
        if route is None:
            raise TransactionRefused("92", "no route for the linked card")
        bank = route[1]
        key = self._hold_key(payment_id(app, request_id))
        hold = await self._store(
            lambda: store.cobrand_hold(
                customer_id, app, key=key, sale_rrn=rrn, instalments=instalments, bank=bank,
                convert_days=settings.convert_days, terms=self.terms, at=self.wall_clock(),
            )
        )  # fmt: skip
        if hold.again:
            # The same id held before and has no result (a crash, or the store failed at
            # its end): its payment's journaled answer ends it; one still in doubt is
            # 96. Nothing is sent twice.
            first = await self._journaled(key.id)
            if first is None:
                raise TransactionRefused("96", "the first request with this id is in doubt")
            return Paid(customer_id=customer_id, key=key, sale_rrn=rrn, outcome=first)
        stamp = self.clock.stamp(self.utc_offset_h)
        payment = CardPayment(
            acceptor=Acceptor(channel="online", terminal_id=settings.own_terminal_id,
                              merchant_id=settings.own_merchant_id),
            stan=self._stans.next(), processing_code=PAYMENT_CODE, card=Card(pan=pan),
            currency=CNY, amount=hold.amount_fen, online_id=key.id,
        )  # fmt: skip
        try:
            outcome = await self.switchboard.process(payment, stamp, origin, finalize)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._end(Paid(customer_id=customer_id, key=key, sale_rrn=rrn,
                                     outcome=Outcome(code="96")))  # fmt: skip
            raise
        log_transaction(
            payment, outcome, stats=self.switchboard.stats, channel="online",
            kind=KIND_NAMES[CardPayment], received_at=origin.received_at,
        )  # fmt: skip
        return Paid(customer_id=customer_id, key=key, sale_rrn=rrn, outcome=outcome)

    def _hold_key(self, key_id: str) -> TransferKey:
        """A conversion's hold: keyed as the ledger's start-up recovery reads a key (the
        journal's request of merchant ``own_merchant_id`` with online id ``key_id``),
        so that it ends the hold as the payment's journaled answer says."""
        return TransferKey(f"cobrand:{self.settings.own_merchant_id}", key_id, HOLD_LEG)

    async def _journaled(self, key_id: str) -> Outcome | None:
        """The journaled answer of a conversion's payment: never journaled (never sent)
        is a 96; still ``sending`` (a live worker's, or in doubt): None."""
        journal = self.switchboard.journal
        record = await journal.transaction_by_online_id(self.settings.own_merchant_id, key_id)
        if record is None:
            return Outcome(code="96", message="system malfunction")
        if record.state == "sending":
            return None
        stands = record.state == "approved" and not record.reversed
        return Outcome(
            code="00" if stands else (record.code if record.code not in (None, "00") else "96"),
            rrn=record.rrn, settlement_date=record.business_date or None,
        )  # fmt: skip

    async def recover(self) -> int:
        """At start-up, after the journal's and the ledger's recovery: each conversion
        a crash left between its payment and its end is ended as the payment's
        journaled answer says (the plan made, or the hold released); one still in
        doubt is left. How many were ended."""
        store = self.store
        if not self.settings.own_merchant_id:
            return 0
        ended = 0
        for pending in await self._store(store.cobrand_pending):
            try:
                outcome = await self._journaled(pending.key_id)
            except JournalError as exc:  # the next start tries again
                log.error("cobrand_recovery_failed", error=str(exc))
                return ended
            if outcome is None:
                continue
            paid = Paid(customer_id=pending.customer_id, key=self._hold_key(pending.key_id),
                        sale_rrn=pending.sale_rrn, outcome=outcome)  # fmt: skip
            await self._end(paid)
            ended += 1
        if ended:
            log.warning("cobrand_conversions_recovered", ended=ended)
        return ended

    def end(self, store: CobrandPort, paid: Paid) -> PlanView | None:
        """The hold posted and the plan made (an approval: its view), or voided (None):
        blocking, in the store's worker thread (an app desk's ``keep``)."""
        return store.cobrand_end(
            paid.customer_id, key=paid.key, sale_rrn=paid.sale_rrn,
            payment_rrn=paid.outcome.rrn, approved=paid.approved, at=self.wall_clock(),
        )  # fmt: skip

    async def _end(self, paid: Paid) -> PlanView | None:
        store = self.store
        try:
            return await self._store(lambda: self.end(store, paid))
        except TransactionRefused as exc:
            log.error(
                "cobrand_convert_not_ended", customer_id=paid.customer_id,
                sale_rrn=paid.sale_rrn, payment_rrn=paid.outcome.rrn, approved=paid.approved,
                error=str(exc),
            )  # fmt: skip
            return None

    async def _store(self, call: Callable[[], T]) -> T:
        """A store step: credit.md's refusals as TransactionRefused with their code; the
        store unavailable 91; our misuse of the ledger 96 (logged)."""
        try:
            return await self.ledger.call(call)
        except CreditStopped as exc:
            raise TransactionRefused(exc.response_code, str(exc)) from None
        except LedgerError as exc:
            code = exc.response_code
            if code not in ("91", "96"):  # a refusal (03 another app's customer)
                raise TransactionRefused(code, str(exc)) from None
            log.error("cobrand_store_failed", error=str(exc), code=code)
            raise TransactionRefused(code, "system malfunction") from None

    # -- points ---------------------------------------------------------------------------

    def note(self, machine: BankTransaction | TerminalReversal, outcome: Outcome) -> None:
        """What the switchboard answered and journaled, for the points of linked cards'
        sales: never blocks, never raises."""
        record = machine.record
        if (
            record is None
            or not cobrand.may_be_cobrand(record.pan_masked, self.settings.cobrand_bins)
            or record.merchant_id == self.settings.own_merchant_id  # repayments, payments
        ):
            return
        note: _Note | None = None
        if isinstance(machine, TerminalReversal):
            reversed_approval = outcome.approved and record.reversed and record.state == "approved"
            if reversed_approval and record.kind in EARNS:
                note = _Changed(record.rrn, "reversal", record.rrn, record.amount)
            elif reversed_approval and record.kind in _CHANGES and record.original_rrn:
                # A void or refund undone: what it took comes back.
                note = _Undone(record.original_rrn, _CHANGES[record.kind], record.rrn,
                               record.amount)  # fmt: skip
        elif outcome.approved and outcome.stand_in is None:
            if record.kind in EARNS:
                note = _Earned(record)
            elif record.kind in _CHANGES and record.original_rrn is not None:
                note = _Changed(record.original_rrn, _CHANGES[record.kind], record.rrn,
                                record.amount)  # fmt: skip
        if note is not None:
            self._queue(note, record.rrn)

    def _queue(self, note: _Note, rrn: str) -> None:
        try:
            self._send.send_nowait(note)
            self._pending += 1
        except trio.WouldBlock:
            self.points_dropped += 1
            log.error("cobrand_points_dropped", rrn=rrn, backlog=POINTS_BACKLOG)

    def advice_accepted(self, record: TxnRecord) -> None:
        """A stood-in sale whose advice its bank accepted: it earns its points now
        (credit.md). Never blocks, never raises."""
        if (
            record.kind in EARNS
            and cobrand.may_be_cobrand(record.pan_masked, self.settings.cobrand_bins)
            and record.merchant_id != self.settings.own_merchant_id
        ):
            self._queue(_Earned(record), record.rrn)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Applies the points noted, in order, until cancelled."""
        task_status.started()
        async for note in self._receive:
            try:
                await self._apply(note)
            except Exception as exc:  # a refusal, the store down, our own bug: logged
                rrn = note.record.rrn if isinstance(note, _Earned) else note.rrn
                log.error("cobrand_points_failed", rrn=rrn, error=str(exc),
                          error_type=type(exc).__name__)  # fmt: skip
            finally:
                self._pending -= 1
                if not self._pending:
                    self._drained.set()

    async def _apply(self, note: _Note) -> None:
        store, ppy, at = self.store, self.settings.points_per_yuan, self.wall_clock()
        if isinstance(note, _Earned):
            record = note.record
            await self._store(
                lambda: store.cobrand_sale_approved(
                    pan_hmac=record.pan_hmac, rrn=record.rrn,
                    business_date=record.business_date, merchant_id=record.merchant_id,
                    bank=record.bank, amount_fen=record.amount, points_per_yuan=ppy,
                    sold_at=record.received_at, at=at,
                )
            )  # fmt: skip
        elif isinstance(note, _Undone):
            await self._store(
                lambda: store.cobrand_change_reversed(
                    note.rrn, note.change, ref=note.ref, amount_fen=note.amount, at=at
                )
            )
        else:
            await self._store(
                lambda: store.cobrand_sale_changed(
                    note.rrn,
                    note.change,
                    ref=note.ref,
                    amount_fen=note.amount,
                    points_per_yuan=ppy,
                    at=at,
                )
            )

    async def drain(self) -> None:
        """Tests: waits until every points change noted so far is applied."""
        if self._pending:
            self._drained = trio.Event()
            await self._drained.wait()

    # -- the app desk's types (credit.md, "Online requests") --------------------------------

    def register(self, desk: AppDesk) -> None:
        for row, handler in (
            (DeskType(name="cobrand_link", request=cw.CobrandLink, principal="app"),
             self._on_link),
            (DeskType(name="cobrand_sales", request=cw.CobrandSales, principal="app",
                      read=True), self._on_sales),
            (DeskType(name="cobrand_convert", request=cw.CobrandConvert, principal="app"),
             self._on_convert),
            (DeskType(name="points_balance", request=cw.PointsBalance, principal="app",
                      read=True), self._on_points),
        ):  # fmt: skip
            desk.register(row, handler)

    async def _on_link(self, message: cw.CobrandLink, call: DeskCall) -> bytes:
        pan = message.pan
        if not luhn_valid(pan):
            raise TransactionRefused("30", "pan is not Luhn-valid", field="pan")
        if not cobrand.is_cobrand(pan, self.settings.cobrand_bins):
            raise TransactionRefused("14", "not a co-brand card")
        hmac, sealed, masked = self.cards.lookup(pan), self.cards.seal(pan), mask_pan(pan)
        at = self.clock.now()

        def body(store: Any) -> tuple[DeskResult, bool]:
            linked = store.cobrand_link(message.customer_id, call.principal, pan_hmac=hmac,
                                        pan_sealed=sealed, masked_pan=masked, at=at)  # fmt: skip
            return cw.CobrandLinkResult(**approved(message), masked_pan=linked), True

        return await call.keep(body)

    async def _on_sales(self, message: cw.CobrandSales, call: DeskCall) -> DeskResult:
        days = self.settings.convert_days
        store = self.store
        sales = await self._store(
            lambda: store.cobrand_sales(message.customer_id, call.principal, days)
        )
        out = [
            cw.SaleOut(rrn=s.rrn, date=s.date.isoformat(), merchant_id=s.merchant_id,
                       amount_fen=s.amount_fen, refunded_fen=s.refunded_fen, points=s.points,
                       converted=s.converted)
            for s in sales
        ]  # fmt: skip
        return cw.CobrandSalesResult(**approved(message), sales=out)

    async def _on_points(self, message: cw.PointsBalance, call: DeskCall) -> DeskResult:
        store = self.store
        balance = await self._store(
            lambda: store.points_balance(message.customer_id, call.principal)
        )
        return cw.PointsBalanceResult(
            **approved(message), points=balance.points, masked_pan=balance.masked_pan
        )

    async def _on_convert(self, message: cw.CobrandConvert, call: DeskCall) -> bytes:
        origin = Origin("online", 0, trio.current_time())
        paid = await self.pay(message.customer_id, call.principal, message.id,
                              rrn=message.rrn, instalments=message.instalments,
                              origin=origin)  # fmt: skip
        outcome = paid.outcome

        def body(store: Any) -> tuple[DeskResult, bool]:
            plan = self.end(store, paid)
            if paid.approved and plan is None:
                raise LedgerError("the payment was approved and its plan not found")
            said = approved(message) if paid.approved else {
                **echo(message), "code": outcome.code, "approved": False,
                "message": outcome.message or DESK_MESSAGES.get(outcome.code, "declined"),
            }  # fmt: skip
            return cw.CobrandConvertResult(
                **said, settlement_date=outcome.settlement_date, plan=plan
            ), True

        # Kept with the hold's end in one transaction: a repeat of the id gets this.
        with trio.CancelScope(shield=True):
            answer = await call.keep(body)
        return answer

    # -- settlement (credit.md, "Conversion" and "Points"; settlement.md) --------------------

    async def settled(self, business_date: str, recon: list[ReconLine]) -> None:
        """A date settled: a conversion's payment settlement finally does not pay is
        cancelled (the purchase refunded whole, the sale convertible again), an
        ``amount_mismatch`` on one books the difference to ``recon_loss``, and a linked
        card's sale it never pays gives back its points. Each keyed: a date settled
        again changes nothing more. Never raises (logged)."""
        store, ppy = self.store, self.settings.points_per_yuan
        for line in recon:
            if not cobrand.may_be_cobrand(line.masked_pan, self.settings.cobrand_bins):
                continue
            rrn, at = line.rrn, self.wall_clock()
            try:
                if line.category == "switch_only" and line.action == "reversal_queued":
                    cancelled = await self._store(partial(store.cobrand_cancel, rrn, at))
                    taken = await self._store(
                        partial(store.cobrand_sale_changed, rrn, "not_paid", ref=rrn,
                                amount_fen=0, points_per_yuan=ppy, at=at)
                    )  # fmt: skip
                    if cancelled or taken:
                        log.info("cobrand_not_paid", business_date=business_date, rrn=rrn,
                                 conversion_cancelled_fen=cancelled, points_back=taken)  # fmt: skip
                elif line.category == "amount_mismatch" and line.bank_fen is not None:
                    await self._store(
                        partial(store.cobrand_mismatch, rrn, line.switch_fen or 0,
                                line.bank_fen, at)
                    )  # fmt: skip
            except Exception as exc:  # one line's correction: the others go on
                log.error("cobrand_settlement_failed", business_date=business_date, rrn=rrn,
                          error=str(exc), error_type=type(exc).__name__)  # fmt: skip
