"""Settlement under trio: the business day's cut-off and cutovers, the banks' clearing
files as they arrive, the settlement of each closed date and its files (settlement.md).

Every decision is elsewhere: which date a moment belongs to is the calendar's
(``switch.core.calendar``), what a file says is the codec's (``switch.wire.clearing``),
what is matched, paid and posted is the settlement store's set-based SQL. This module
carries out the sequence: close the date (persisted before anything else), send each
bank its cutover, read each bank's file, settle when all are in or at the deadline,
write the files, hand the reversals decided to store-and-forward. Each step is
idempotent, so after a crash the switch simply runs the sequence again.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final, TypeVar

import msgspec
import structlog
import trio

from switch.core import products
from switch.core.bank import OriginalData
from switch.core.book import TxnRecord
from switch.core.calendar import BusinessCalendar, DateClosed, parse_local_time
from switch.core.changes import BankOnlyFound, Change, ReversalQueued
from switch.core.ledger import LedgerError, TransferKey, TransferSpec, account_class
from switch.core.merchants import MerchantBook
from switch.core.settlement import (
    HOLD_DATES,
    LedgerBalance,
    LedgerOrder,
    PayoutLine,
    ReconLine,
    ReversalOrder,
    SettlementStatus,
    SettlementWatch,
    payout_file,
    payout_file_name,
    recon_file,
    recon_file_name,
    split_correction,
)
from switch.errors import SwitchError
from switch.files import make_private_folder, write_private
from switch.net.bank_link import BankConnector
from switch.store.ledger_port import LedgerStore
from switch.store.port import Journal, JournalError
from switch.store.settlement_port import SettlementError, SettlementStore
from switch.wire.clearing import (
    ClearingDecoder,
    ClearingFile,
    ClearingFileRejected,
    clearing_file_name,
)

log = structlog.get_logger()

POLL_INTERVAL_S: Final = 1.0
"""How often the clearing folders are looked at while a date waits for its files."""
CUTOVER_RETRY_S: Final = 30.0
"""A cutover a bank did not answer 00 is sent again this often, until the date settles."""

SETTLE_RETRY_S: Final = 60.0
"""A date whose settlement failed is tried again this much later."""
CLOSE_POLL_S: Final = 0.5
"""How often a worker other than the one that closes dates reads the closes."""
CLOSE_NOTICE_S: Final = 2.0
"""With several workers, an operator's close is recorded this long before it takes
effect: several polls, so that every worker dates by it from the same second."""
READ_CHUNK_BYTES: Final = 1 << 20
"""A clearing file is read and decoded this much at a time: memory holds its records,
never its bytes."""
LEDGER_BATCH: Final = 1000
"""A settlement's transfers on the on-us ledger, this many at a commit."""
_T = TypeVar("_T")


class SettlementService:
    """The business day of a running switch. ``store`` must be open."""

    def __init__(
        self,
        *,
        store: SettlementStore,
        journal: Journal,
        calendar: BusinessCalendar,
        merchants: MerchantBook,
        connectors: Mapping[str, BankConnector],
        clearing_dir: Callable[[str], Path],
        out_dir: Path,
        banks: Callable[[], list[str]],
        institution_of: Callable[[str], str],
        settle_deadline: str,
        utc_offset_h: int,
        nudge: Callable[[str], None],
        clock: Callable[[], float] = time.time,
        speed: float = 1.0,
        close_notice_s: float = 0.0,
        max_clearing_file_bytes: int = 1 << 28,
        on_close: Callable[[str], Awaitable[object]] | None = None,
        ledger: LedgerStore | None = None,
        own_merchants: Sequence[str] = (),
        on_settled: Callable[[str, list[ReconLine]], Awaitable[object]] | None = None,
    ) -> None:
        self.store = store
        self.own_merchants = tuple(own_merchants)
        """The switch's own merchants (``[credit] own_merchant_id``, ``[wallet]
        topup_merchant_id``): matched, in no payout (settlement.md); a verdict that
        changes a top-up's money corrects its wallet."""
        self.on_settled = on_settled
        """Called with each date settled now and its reconciliation lines: credit.md's
        co-brand corrections (``CobrandDesk.settled``)."""
        self.ledger = ledger
        """The on-us ledger (wallet.md), open, on a connection of the service's own: what
        a settlement decides on it (on-us fees, payouts, recon corrections). None: no
        on-us money (a test's switch)."""
        self._ledger_lock = trio.Lock()
        self._ledger_behind = False
        """A hand-over to the ledger failed: tried again at each poll until it is done."""
        self.on_close = on_close
        """Called with each date closed, before its cutovers: the pre-authorisations
        whose last completion date it is expire (``Switchboard.expire_holds``)."""
        self.max_clearing_file_bytes = max_clearing_file_bytes
        """A larger clearing file is rejected unread ([settlement] key of that name)."""
        self.close_notice_s = close_notice_s
        """0 for one process; CLOSE_NOTICE_S when other workers follow the closes."""
        self.journal = journal
        self.calendar = calendar
        self.merchants = merchants
        self.connectors = connectors
        self.clearing_dir = clearing_dir
        self.out_dir = out_dir
        self.banks = banks
        """The banks whose files a date waits for: those configured now."""
        self.institution_of = institution_of
        """A bank's institution id, which its files' header must name ("0": any)."""
        self.deadline = parse_local_time(settle_deadline)
        self.offset = timedelta(hours=utc_offset_h)
        self.nudge = nudge
        self.clock = clock
        """Business time (switch.core.clock.BusinessClock.now): the dates, cut-off and
        deadline, and what the store records."""
        self.speed = speed
        """The business clock's speed: a wait until a business moment sleeps the
        business seconds to it divided by this. Retries and polls are real seconds."""
        self._store_lock = trio.Lock()
        """One thread at a time on the store's connection."""
        self._closing = trio.Lock()
        self._settling = trio.Lock()
        self._reading = trio.Lock()
        """One reader of the banks' files: the settler's rounds and an operator's settle
        both read them, and a file two readers found untaken was accepted twice."""
        self._wake_cutoff = trio.Event()
        self._wake_settler = trio.Event()
        self._cutover_tried: dict[tuple[str, str], float] = {}
        """When each cutover was last sent, on trio's (real) clock."""

    async def _in_store(self, work: Callable[..., _T], *args: object) -> _T:
        async with self._store_lock:
            return await trio.to_thread.run_sync(work, *args)

    # -- running ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        now = self.clock()
        current = self.calendar.date_at(now)
        first_open = await self._in_store(self.store.first_open_date) or current
        # Dates that ended while the switch was down close at their natural ends.
        for close in self.calendar.due_closes(now, first_open):
            await self._close(close)
        await self._in_store(self.store.record_open, self.calendar.date_at(now), now)
        await self._hand_over_reversals()
        await self._hand_over_ledger_orders()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._cutoffs)
            nursery.start_soon(self._settler)
            task_status.started()

    async def _cutoffs(self) -> None:
        """Closes each date at its cut-off (unless an operator closed it first). The
        wait is in real seconds, the business seconds to the cut-off over the clock's
        speed; when the clock has passed several cut-offs meanwhile (a fast simulated
        clock, a machine suspended), each of those dates closes at its own."""
        first_open = self.calendar.date_at(self.clock())
        while True:
            async with self._closing:  # every date ended and not closed, oldest first
                for close in self.calendar.due_closes(self.clock(), first_open):
                    await self._close(close)
            now = self.clock()
            end = self.calendar.natural_end(self.calendar.date_at(now))
            with trio.move_on_after(max(0.0, end - now) / self.speed):
                await self._wake_cutoff.wait()
                self._wake_cutoff = trio.Event()  # closed early by an operator

    async def close_now(self) -> DateClosed:
        """The operator's cut-off: the open date closes now, the next one opens."""
        async with self._closing:
            close = self.calendar.force_close(self.clock(), self.close_notice_s * self.speed)
            # Recorded at once, for the other workers to read before it takes effect.
            await self._in_store(self.store.record_close, close)
            # It takes effect on a whole second: wait it out, so that every request of
            # the closed date was received before the cutovers leave.
            await trio.sleep(max(0.0, close.at - self.clock()) / self.speed)
            await self._close(close)
        self._wake_cutoff.set()
        return close

    async def _close(self, close: DateClosed) -> None:
        self.calendar.record(close)
        await self._in_store(self.store.record_close, close)  # again: idempotent
        if self.on_close is not None:
            try:
                await self.on_close(close.business_date.isoformat())
            except JournalError as exc:  # those left open expire at the next close
                log.warning("holds_not_expired", error=str(exc))
        log.info(
            "business_date_closed", business_date=close.business_date.isoformat(),
            forced=close.forced,
        )  # fmt: skip
        await self._cutovers(close.business_date.isoformat())
        self._wake_settler.set()

    async def _cutovers(self, business_date: str) -> None:
        """One cutover to each bank not yet answered 00 for the date, all at once."""
        done = await self._in_store(self.store.cutovers, business_date)
        async with trio.open_nursery() as nursery:
            for bank in self.banks():
                if done.get(bank) != "00" and bank in self.connectors:
                    nursery.start_soon(self._cutover, bank, business_date)

    async def _cutover(self, bank: str, business_date: str) -> None:
        self._cutover_tried[(business_date, bank)] = trio.current_time()
        try:
            code = await self.connectors[bank].cutover(date.fromisoformat(business_date))
        except SwitchError as exc:
            code = f"not answered: {exc}"
        await self._in_store(self.store.record_cutover, business_date, bank, code, self.clock())
        event = "cutover_answered" if code == "00" else "cutover_failed"
        (log.info if code == "00" else log.warning)(
            event, bank=bank, business_date=business_date, code=code
        )

    # -- clearing files and settling ----------------------------------------------------

    async def _settler(self) -> None:
        failed_until: dict[str, float] = {}
        while True:
            for business_date in await self._in_store(self.store.unsettled_closed_dates):
                if failed_until.get(business_date, -math.inf) > trio.current_time():
                    continue
                try:
                    await self._advance(business_date)
                except SettlementError as exc:
                    # The date stays closed and unsettled, its files kept: tried again
                    # later, and the switch goes on serving meanwhile.
                    failed_until[business_date] = trio.current_time() + SETTLE_RETRY_S
                    log.error("settlement_failed", business_date=business_date, error=str(exc),
                              retry_in_s=SETTLE_RETRY_S)  # fmt: skip
            if self._ledger_behind:
                await self._hand_over_ledger_orders()
            with trio.move_on_after(POLL_INTERVAL_S):
                await self._wake_settler.wait()
                self._wake_settler = trio.Event()

    async def _advance(self, business_date: str) -> None:
        """What a closed date waits for, looked at once: its cutovers, its files; it
        settles once every bank's file is in, or at the deadline."""
        now = self.clock()
        close = self.calendar.close_of(date.fromisoformat(business_date))
        if close is not None and close.at > now:
            return  # an operator's close still on notice (restarted meanwhile)
        if not self._closing.locked():  # a close under way sends its own cutovers
            await self._retry_cutovers(business_date)
        missing = await self.read_files(business_date)
        if not missing or now >= self.deadline_of(business_date):
            await self.settle(business_date)

    async def _retry_cutovers(self, business_date: str) -> None:
        """The date's cutovers again, if a bank has not answered 00 for a while (real
        seconds, whatever the business clock's speed)."""
        cutovers = await self._in_store(self.store.cutovers, business_date)
        now = trio.current_time()
        for bank in self.banks():
            tried = self._cutover_tried.get((business_date, bank), -math.inf)
            if cutovers.get(bank) != "00" and now - tried >= CUTOVER_RETRY_S:
                await self._cutovers(business_date)
                return

    def deadline_of(self, business_date: str) -> float:
        """settle_deadline local time on the next date (settlement.md)."""
        local = datetime.combine(date.fromisoformat(business_date) + timedelta(days=1),
                                 self.deadline)  # fmt: skip
        return (local - self.offset).replace(tzinfo=UTC).timestamp()

    async def read_files(self, business_date: str) -> list[str]:
        """Reads each bank's file for the date that has arrived and is not yet taken;
        returns the banks whose file is still missing or rejected."""
        async with self._reading:
            return await self._read_files(business_date)

    async def _read_files(self, business_date: str) -> list[str]:
        missing = []
        day = date.fromisoformat(business_date)
        for bank in self.banks():
            path = self.clearing_dir(bank) / clearing_file_name(bank, day)
            known = await self._in_store(self.store.clearing_file, bank, business_date)
            if known is not None and known.status == "accepted":
                continue
            try:
                # Not followed: a link is looked at as itself (and rejected).
                modified = path.lstat().st_mtime
            except (FileNotFoundError, NotADirectoryError):
                missing.append(bank)
                continue
            except OSError as exc:  # the folder cannot be looked into: said once
                reason = f"cannot be looked at: {exc.strerror or exc}"
                if known is None or known.reason != reason:
                    await self._reject(bank, business_date, path, reason)
                missing.append(bank)
                continue
            if known is not None and modified <= known.read_at:  # the same rejected file
                missing.append(bank)
                continue
            if not await self._read_file(bank, day, path):
                missing.append(bank)
        return missing

    async def _read_file(self, bank: str, day: date, path: Path) -> bool:
        # Wall time, not business time: it is compared with the files' modification times.
        business_date, now = day.isoformat(), time.time()
        try:
            # In a thread left behind on cancellation: a read that hangs (a dead network
            # file system) never holds up the switch's shutdown.
            decoded = await trio.to_thread.run_sync(
                read_clearing_file, path, self.max_clearing_file_bytes, abandon_on_cancel=True
            )
            header = decoded.header
            if header.business_date != day:
                raise ClearingFileRejected(
                    1, "wrong_date", f"header date {header.business_date} is not {day}"
                )
            expected = self.institution_of(bank).lstrip("0")
            if expected and header.institution_id.lstrip("0") != expected:
                raise ClearingFileRejected(
                    1, "wrong_institution", f"header names institution {header.institution_id}, "
                    f"not {bank}'s {expected}",
                )  # fmt: skip
        except (ClearingFileUnreadable, ClearingFileRejected) as exc:
            await self._reject(bank, business_date, path, str(exc), now)
            return False
        if decoded.pans_masked:
            log.warning("clearing_file_pans_masked", bank=bank, business_date=business_date,
                        file=str(path), records=decoded.pans_masked,
                        first_line=decoded.first_masked_line)  # fmt: skip
        rows = [msgspec.structs.astuple(record) for record in decoded.records]
        count = await self._in_store(
            self.store.accept_clearing_file, bank, business_date, path.name, rows, now
        )
        log.info("clearing_file_accepted", bank=bank, business_date=business_date, records=count)
        return True

    async def _reject(
        self, bank: str, business_date: str, path: Path, reason: str, now: float | None = None
    ) -> None:
        at = self.clock() if now is None else now
        await self._in_store(
            self.store.reject_clearing_file, bank, business_date, path.name, reason, at
        )
        log.error("clearing_file_rejected", bank=bank, business_date=business_date,
                  file=str(path), reason=reason)  # fmt: skip

    async def settle(self, business_date: str) -> SettlementStatus:
        """Settles a closed date (once: settling it again posts nothing) and writes its
        payout and reconciliation files from what was stored."""
        day = date.fromisoformat(business_date)
        if self.calendar.close_of(day) is None:
            raise SettlementError(f"business date {business_date} is not closed")
        async with self._settling:
            # A file that came after its own date settled still counts: the sales it
            # holds are looked for again (held) within the next dates' settlements.
            for days_before in range(HOLD_DATES, -1, -1):
                await self.read_files((day - timedelta(days=days_before)).isoformat())
            merchants = self.merchants.listed()
            at = self.clock()
            settled_now = await self._in_store(
                lambda: self.store.settle(
                    business_date, merchants, at=at, own_merchants=self.own_merchants
                )
            )
            payouts = await self._in_store(self.store.payout_lines, business_date)
            recon = await self._in_store(self.store.recon_lines, business_date)
            await trio.to_thread.run_sync(self._write_files, business_date, payouts, recon)
            await self._hand_over_ledger_orders()
            await self._in_store(self.store.record_files_written, business_date, self.clock())
            await self._hand_over_reversals()
            if self.on_settled is not None:  # again too: its corrections are keyed
                await self.on_settled(business_date, recon)
            status = await self.status(business_date)
        log.info(
            "business_date_settled", business_date=business_date, again=not settled_now,
            merchants=status.merchants, payout_fen=status.payout_fen, held_fen=status.held_fen,
            reversals_queued=status.reversals_queued, missing=status.missing,
        )  # fmt: skip
        return status

    def _write_files(
        self, business_date: str, payouts: list[PayoutLine], recon: list[ReconLine]
    ) -> None:
        make_private_folder(self.out_dir)
        _write_whole(self.out_dir / payout_file_name(business_date), payout_file(payouts))
        _write_whole(self.out_dir / recon_file_name(business_date), recon_file(recon))

    async def _hand_over_reversals(self) -> None:
        """The reversals settlement decided, queued in the journal's store-and-forward
        (idempotent there), then marked handed over."""
        orders = await self._in_store(self.store.pending_reversal_orders)
        if not orders:
            return
        now = self.clock()
        changes: list[Change] = [_reversal_change(order, now) for order in orders]
        try:
            await self.journal.commit(*changes, durable=True)
        except JournalError as exc:  # tried again after the next settlement or start
            log.error("settlement_reversals_not_queued", error=str(exc), count=len(orders))
            return
        await self._in_store(self.store.reversal_orders_handed, [o.rrn for o in orders], now)
        for bank in {order.bank for order in orders}:
            self.nudge(bank)
        log.info("settlement_reversals_queued", count=len(orders))

    async def _hand_over_ledger_orders(self) -> None:
        """The transfers settlement decided on the on-us ledger (wallet.md: on-us fees
        and payouts, recon corrections), made there (keyed: idempotent), then marked
        handed over. A failure leaves the rest for the next poll."""
        if self.ledger is None:
            return
        orders = await self._in_store(self.store.pending_ledger_orders)
        if not orders:
            self._ledger_behind = False
            return
        ledger, at = self.ledger, self.clock()
        async with self._ledger_lock:
            done, error = await trio.to_thread.run_sync(hand_over_ledger_orders, ledger, orders, at)
        if done:
            await self._in_store(self.store.ledger_orders_handed, done, at)
            log.info("settlement_ledger_posted", count=len(done))
        self._ledger_behind = error is not None
        if error is not None:
            log.error("settlement_ledger_not_posted", error=error,
                      count=len(orders) - len(done))  # fmt: skip

    async def status(self, business_date: str) -> SettlementStatus:
        return await self._in_store(self.store.status, business_date, self.banks())

    def knows(self, status: SettlementStatus) -> bool:
        """Whether the switch has had the date of ``status``: closed (the calendar holds
        every close since the settlement store began), the date open now, or one a
        bank's clearing file was delivered for (settlement reads the dates before the
        one it settles, and records a rejected file under its own date)."""
        if status.files or status.cutovers:
            return True
        day = date.fromisoformat(status.business_date)
        calendar = self.calendar
        return calendar.close_of(day) is not None or calendar.date_at(self.clock()) == day

    async def latest_closed_date(self) -> str | None:
        return await self._in_store(self.store.latest_closed_date)

    async def watch(self) -> SettlementWatch:
        """What the operator's alerts read (``SettlementWatch``)."""
        now = self.clock()
        unsettled = await self._in_store(self.store.unsettled_closed_dates)
        late = [now - self.deadline_of(day) for day in unsettled]
        overdue = [seconds for seconds in late if seconds > 0]
        latest = await self.latest_closed_date()
        return SettlementWatch(
            unsettled_dates=len(unsettled),
            overdue_dates=len(overdue),
            overdue_s=round(max(overdue, default=0.0), 3),
            latest=await self.status(latest) if latest is not None else None,
        )

    async def ledger_balances(self, account: str | None) -> list[LedgerBalance]:
        return await self._in_store(self.store.ledger_balances, account)


def hand_over_ledger_orders(
    ledger: LedgerStore, orders: list[LedgerOrder], at: float
) -> tuple[list[LedgerOrder], str | None]:
    """Makes each order's transfers on the ledger store (blocking: run it in a thread):
    the orders done, and why the rest were not (None: all done). A correction that
    debits a wallet takes what the wallet has, and the rest from ``recon_loss``; once
    split, a second run finds its parts under their keys and makes the same ones."""
    done: list[LedgerOrder] = []
    batch: list[LedgerOrder] = []

    def flush() -> None:
        if not batch:
            return
        ledger.transfers([_spec(order) for order in batch], at)
        done.extend(batch)
        batch.clear()

    try:
        for order in orders:
            if account_class(order.debit_account).debit_cap is None:
                batch.append(order)  # no account that may refuse it: many at a commit
                if len(batch) >= LEDGER_BATCH:
                    flush()
                continue
            flush()
            for part in _parts(ledger, order):
                ledger.transfer(_spec(part), at)
            done.append(order)
        flush()
    except LedgerError as exc:
        return done, str(exc)
    return done, None


def _spec(order: LedgerOrder) -> TransferSpec:
    return TransferSpec(
        key=TransferKey(order.business_date, order.request_id, order.leg),
        debit=order.debit_account, credit=order.credit_account, amount=order.amount,
        kind=order.kind, rrn=order.rrn, merchant_id=order.merchant_id,
    )  # fmt: skip


def _parts(ledger: LedgerStore, order: LedgerOrder) -> list[LedgerOrder]:
    whole = split_correction(order, None)[0]
    loss = split_correction(order, 0)[0]
    made = [ledger.transfer_of(_spec(whole).key), ledger.transfer_of(_spec(loss).key)]
    if made[0] is not None or made[1] is not None:  # split by an earlier run
        taken = made[0].spec.amount if made[0] is not None else 0
        return split_correction(order, taken)
    view = ledger.account(order.debit_account)
    return split_correction(order, 0 if view is None else view.balances.available)


def _reversal_change(order: ReversalOrder, at: float) -> Change:
    if order.known:
        return ReversalQueued(rrn=order.rrn, bank=order.bank, reason=order.reason, at=at)
    reason = order.reason
    try:
        kind = products.by_bank(order.mti, order.processing_code).kind
    except products.UnknownProduct as exc:
        kind, reason = products.UNKNOWN_KIND, f"{reason}; {exc}"
    record = TxnRecord(
        kind=kind,
        rrn=order.rrn, bank=order.bank, channel="clearing", request_mti=order.mti,
        terminal_id=order.terminal_id, merchant_id=order.merchant_id, stan=order.stan,
        batch="000000", local_date=order.transmission[:4], pan_masked=order.masked_pan,
        pan_hmac=b"", pan_sealed=b"", amount=order.amount, currency=order.currency,
        bank_processing_code=order.processing_code, business_date=order.business_date,
        sent=OriginalData(mti=order.mti, stan=order.stan, transmission=order.transmission),
        state="bank_only",
    )  # fmt: skip
    return BankOnlyFound(record=record, reason=reason, at=at)


class ClearingFileUnreadable(SwitchError):
    """A clearing file that cannot be read as one: not a regular file (a link, a FIFO,
    a device, a folder), larger than allowed, or a read that failed. It is rejected
    whole with this reason, as a file that breaks the format is."""


_FILE_KINDS: Final = (
    (stat.S_ISLNK, "a symbolic link (never followed)"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> ClearingFileUnreadable | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "of an unknown kind")
    return ClearingFileUnreadable(f"not a regular file: {kind}")


def read_clearing_file(path: Path, max_bytes: int) -> ClearingFile:
    """A bank's clearing file, read and decoded a chunk at a time (blocking: run it in
    a thread). Only a regular file is opened, and opened without following a link or
    waiting on a FIFO's writer (so neither a link to ``/dev/zero`` nor a FIFO is ever
    read); one of more than ``max_bytes`` is rejected unread, or as soon as it has
    grown past them. Raises :class:`ClearingFileUnreadable` or
    :class:`ClearingFileRejected`."""
    try:
        # Looked at before it is opened: opening a device can act on it.
        refused = _not_regular(os.lstat(path).st_mode)
        if refused is not None:
            raise refused
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        descriptor = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # made a link since it was looked at
            raise ClearingFileUnreadable(
                "not a regular file: a symbolic link (never followed)"
            ) from None
        raise ClearingFileUnreadable(f"cannot be opened: {exc.strerror or exc}") from None
    try:
        status = os.fstat(descriptor)
        refused = _not_regular(status.st_mode)  # replaced since it was looked at
        if refused is not None:
            raise refused
        if status.st_size > max_bytes:
            raise _too_large(max_bytes, f"{status.st_size} bytes")
        decoder = ClearingDecoder()
        size = 0
        while chunk := os.read(descriptor, min(READ_CHUNK_BYTES, max_bytes + 1 - size)):
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes, "it grew past that while read")
            decoder.feed(chunk)
        return decoder.close()
    except OSError as exc:
        raise ClearingFileUnreadable(f"unreadable: {exc.strerror or exc}") from None
    finally:
        os.close(descriptor)


def _too_large(max_bytes: int, how: str) -> ClearingFileUnreadable:
    return ClearingFileUnreadable(
        f"larger than [settlement] max_clearing_file_bytes ({max_bytes}): {how}"
    )


def _write_whole(path: Path, data: bytes) -> None:
    """Written under another name, synced, then renamed: a reader sees the whole file
    or none (and settling again writes the same bytes); 0600, its folder 0700."""
    write_private(path, data)  # 0600, whatever the umask


__all__ = ["SettlementError", "SettlementService"]


async def follow_closes(
    store: SettlementStore, calendar: BusinessCalendar, *, interval_s: float = CLOSE_POLL_S
) -> None:
    """On every worker but the one that closes dates: the closes it records, read into
    this worker's calendar (a forced one is recorded CLOSE_NOTICE_S before it takes
    effect, so each worker dates by it from the same second as the closer)."""
    failing = False
    while True:
        try:
            closes = await trio.to_thread.run_sync(store.closes)
        except SettlementError as exc:
            if not failing:  # one line a failure, not one a poll
                log.warning("closes_unreadable", error=str(exc))
            failing = True
        else:
            if failing:
                log.info("closes_readable")
            failing = False
            for close in closes:
                if calendar.close_of(close.business_date) is None:
                    calendar.record(close)
                    log.info("business_date_close_followed",
                             business_date=close.business_date.isoformat(),
                             at=close.at, forced=close.forced)  # fmt: skip
        await trio.sleep(interval_s)
