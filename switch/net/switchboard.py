"""The switchboard: where a canonical request is routed, sent to its bank and answered.

Both channels hand their requests here. It routes by BIN (or to the original's bank for
voids, refunds and reversals), assigns the RRN and the bank STAN, holds the issuer
timeout as a cancel scope around the bank exchange, and records what happened in the
transaction book.
"""

from __future__ import annotations

from typing import Final

import msgspec
import structlog
import trio

from switch.core import bank as bankmsg
from switch.core.bank import BankTrace, Institution, OriginalData, ReversalSubject
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
from switch.errors import SwitchError, TransactionRefused
from switch.net.bank_link import BankConnector, BankUnavailable, LinkDown

log = structlog.get_logger()

REVERSAL_ATTEMPTS: Final = 2
"""0400, then one 0401 repeat; a later issue hands what is left to store-and-forward."""


class Switchboard:
    def __init__(
        self,
        *,
        bins: BinTable,
        connectors: dict[str, BankConnector],
        institution: Institution,
        book: TransactionBook,
        utc_offset_h: int,
    ) -> None:
        self.bins = bins
        self.connectors = connectors
        self.institution = institution
        self.book = book
        self.utc_offset_h = utc_offset_h
        self._rrns = RrnAllocator()
        self._in_flight: dict[str, trio.Event] = {}

    def statistics(self) -> dict[str, object]:
        return {
            "in_flight": len(self._in_flight),
            "book": len(self.book),
            "banks": [connector.statistics() for connector in self.connectors.values()],
        }

    async def process(self, request: Request, stamp: Stamp) -> Outcome:
        """The outcome of one request. Never raises for a refusal: that is an outcome."""
        try:
            rrn = self._rrns.allocate(stamp.local)
        except RrnExhausted as exc:
            return Outcome(code="96", message=str(exc))
        try:
            match request:
                case SignOn():
                    new_batch = f"{(int(request.batch) + 1) % 1_000_000:06d}"
                    return Outcome(code="00", rrn=rrn, batch=new_batch)
                case Echo():
                    return Outcome(code="00")
                case Sale() | BalanceInquiry():
                    return await self._purchase(request, stamp, rrn)
                case Void() | Refund():
                    return await self._void_or_refund(request, stamp, rrn)
                case Reversal():
                    return await self._reversal(request, stamp)
        except TransactionRefused as exc:
            return Outcome(code=exc.response_code, message=str(exc), field=exc.field, rrn=rrn)
        raise AssertionError(f"unhandled request {type(request).__name__}")

    async def _purchase(self, request: Sale | BalanceInquiry, stamp: Stamp, rrn: str) -> Outcome:
        prefix, bank = self.bins.route(request.card.pan)
        record = self._record(request, stamp, rrn, bank=bank, amount=request.amount)
        return await self._to_bank(record, request, stamp, route=prefix)

    async def _void_or_refund(self, request: Void | Refund, stamp: Stamp, rrn: str) -> Outcome:
        merchant_id = request.acceptor.merchant_id
        original = self.book.find_sale(
            merchant_id=merchant_id, rrn=request.original.rrn, online_id=request.original.online_id
        )
        if request.card is not None and request.card.pan != original.pan:
            raise TransactionRefused("25", "card differs from the original's", field="pan")
        amount = original.amount if request.amount is None else request.amount
        if isinstance(request, Void):
            self.book.reserve_void(original, amount)
        else:
            self.book.reserve_refund(original, amount)
        card = request.card or Card(pan=original.pan)
        resolved = msgspec.structs.replace(
            request, card=card, amount=amount, currency=request.currency or original.currency
        )
        record = self._record(resolved, stamp, rrn, bank=original.bank, amount=amount)
        record.original_rrn = original.rrn
        return await self._to_bank(
            record, resolved, stamp, route="original", original=original.sent
        )

    def _record(
        self, request: BankBound, stamp: Stamp, rrn: str, *, bank: str, amount: int
    ) -> TxnRecord:
        acceptor = request.acceptor
        assert request.card is not None and request.currency is not None
        record = TxnRecord(
            kind=KIND_NAMES[type(request)],  # type: ignore[arg-type]
            rrn=rrn,
            bank=bank,
            terminal_id=acceptor.terminal_id,
            merchant_id=acceptor.merchant_id,
            stan=request.stan,
            batch=request.batch,
            local_date=stamp.local_date,
            pan=request.card.pan,
            amount=amount,
            currency=request.currency,
            bank_processing_code=request.processing_code,
            online_id=request.online_id,
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
    ) -> Outcome:
        """Sends one request to its bank within the issuer timeout and settles the
        record, whatever happens: approved, declined, no answer, or never sent."""
        connector = self.connectors[record.bank]
        base = Outcome(code="91", rrn=record.rrn, bank=record.bank, route=route)
        try:
            link = connector.reserve_link()
        except BankUnavailable as exc:
            self.book.settle(record, state="not_sent", code="91", auth_code=None)
            return msgspec.structs.replace(base, message=str(exc))
        done = trio.Event()
        self._in_flight[record.rrn] = done
        state: State = "no_answer"
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
            base = msgspec.structs.replace(base, bank_stan=stan)
            with trio.move_on_after(connector.config.issuer_timeout_s):
                response = await link.exchange(mti, fields)
                outcome = bankmsg.outcome_from_bank(
                    response.fields, rrn=record.rrn, bank=record.bank
                )
                outcome = msgspec.structs.replace(outcome, route=route, bank_stan=stan)
                state = "approved" if outcome.approved else "declined"
                self.book.settle(
                    record, state=state, code=outcome.code, auth_code=outcome.auth_code
                )
                return outcome
            self.book.settle(record, state="no_answer", code="68", auth_code=None)
            return msgspec.structs.replace(base, code="68", message="issuer did not answer in time")
        except LinkDown as exc:
            self.book.settle(record, state="no_answer", code="91", auth_code=None)
            return msgspec.structs.replace(base, message=str(exc))
        finally:
            link.release()
            if record.state == "in_flight":  # cancelled from outside (shutdown)
                self.book.settle(record, state="no_answer", code="96", auth_code=None)
            del self._in_flight[record.rrn]
            done.set()

    async def _reversal(self, request: Reversal, stamp: Stamp) -> Outcome:
        """A terminal's reversal is answered 00 whether or not its original reached a
        bank (pos-cup.md); if it did, the bank is sent a 0400 for it."""
        acceptor = request.acceptor
        ref = request.original
        record = self.book.by_trace(
            acceptor.terminal_id,
            acceptor.merchant_id,
            ref.batch or request.batch,
            ref.stan or request.stan,
        )
        if record is None or record.pan != request.card.pan:
            return Outcome(code="00", message="no original reached a bank")
        done = self._in_flight.get(record.rrn)
        if done is not None:
            # Never let a reversal overtake its original at the bank.
            connector = self.connectors[record.bank]
            with trio.move_on_after(connector.config.issuer_timeout_s):
                await done.wait()
        subject = record.reversal_subject()
        if subject is None or record.reversed:
            return Outcome(code="00", rrn=record.rrn, bank=record.bank)
        self.book.mark_reversed(record)
        await self.send_reversal(record.bank, subject, stamp)
        return Outcome(code="00", rrn=record.rrn, bank=record.bank, route="original")

    async def send_reversal(self, bank: str, subject: ReversalSubject, stamp: Stamp) -> bool:
        """Sends a 0400 (then a 0401 repeat) until the bank answers; True once it has.
        What is still undelivered after that is logged for the operators."""
        connector = self.connectors[bank]
        for attempt in range(REVERSAL_ATTEMPTS):
            stan = connector.stans.next()
            mti, fields = bankmsg.reversal_request(
                subject, stan, stamp, self.institution, repeat=attempt > 0
            )
            try:
                link = connector.reserve_link()
            except BankUnavailable:
                await trio.sleep(0.1 * (attempt + 1))
                continue
            try:
                with trio.move_on_after(connector.config.issuer_timeout_s):
                    response = await link.exchange(mti, fields)
                    log.info(
                        "reversal_answered",
                        bank=bank,
                        rrn=subject.rrn,
                        bank_stan=stan,
                        code=response.fields.get(39),
                    )
                    return True
            except SwitchError:
                pass
            finally:
                link.release()
        log.error("reversal_undelivered", bank=bank, rrn=subject.rrn, attempts=REVERSAL_ATTEMPTS)
        return False
