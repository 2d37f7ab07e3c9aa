"""A synthetic business date on real files: what a day of a busy switch leaves for its
settlement, with known faults in the banks' clearing files (settlement.md).

:func:`build_day` writes into a folder:

- ``journal.sqlite3``: the date's transactions, written through the journal's own write
  path (``JournalFile.apply`` of ``writes_of(TxnStarted)``, as the switch commits them),
  or, for a day on PostgreSQL (``--dsn``), the same through that journal's own writes
  into the database, whose DSN is then in ``journal.dsn``;
  over four banks (icbc, abc, cmb, citic) and a merchants file's merchants: mostly
  approved sales, and voids (the sale marked voided), refunds, declines, terminal
  reversals and timed-out sales auto-reversed; 12-digit RRNs in the switch's own form
  (``YDDD`` + a sequence), masked PANs of each bank's BIN;
- ``merchants.csv``: a ``*`` profile and the merchants, with varied rates, minimums and
  caps (and about 1% of the transactions come from merchants it does not list, on ``*``);
- ``clearing/<bank>-<YYYYMMDD>.clr``: each bank's file of the date, and of the next date
  (where a fault moved records), by ``encode_clearing_file``;
- ``settlement.sqlite3``: the settlement store, with the date and the next one closed (on
  PostgreSQL: its tables in the journal's database, as the switch keeps them);
- ``day.json``: the :class:`SyntheticDay` manifest (what was built, what was injected
  and what settling should find), for the bench and the tests to check against.

The faults, each a ``fault_fraction`` of the transactions (0.1% by default), spread over
the four banks, each with the category settlement.md gives it:

===================  ======================================================  ==================
fault                the bank's file                                         category on D
===================  ======================================================  ==================
``dropped``          leaves out a sale the switch approved                   switch_only, held
``amount_changed``   lists a sale at another amount                          amount_mismatch
``unknown``          lists a sale the switch never sent                      bank_only
``moved``            lists a sale in the next date's file instead            switch_only, held
                     (timing, paid, when the next date settles)
``declined_listed``  lists as approved a sale the switch declined            bank_only
``reversed_listed``  lists a sale the switch reversed, without the reversal  bank_only
===================  ======================================================  ==================

A corrupt trailer rejects a file whole, so it cannot be one record among a bank's
others: it is a fifth, small bank (``boc``, a ``fault_fraction`` of the transactions
on top of the four banks' and at least 10) whose file's trailer disagrees with its
records. Its file is rejected, and its standing sales are ``switch_only`` (held) like a
missing file's.

Independently of the settlement SQL, the builder also works out what each merchant's
payout line of the date must say (:attr:`SyntheticDay.payouts`), from the same
generated transactions and settlement.md's rules.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

import msgspec

from bench.runconfig import BANK_BINS
from switch.core.bank import OriginalData
from switch.core.book import TxnRecord
from switch.core.calendar import DateClosed
from switch.core.changes import TxnStarted
from switch.core.merchants import COLUMNS, MerchantTerms
from switch.store.postgresql import JournalDatabase
from switch.store.postgresql import sql as postgresql_sql
from switch.store.postgresql.settlement import PostgresSettlementStore
from switch.store.settlement_port import SettlementStore
from switch.store.sqlite import JournalFile
from switch.store.sqlite.settlement import SqliteSettlementStore
from switch.store.sqlite.sql import writes_of
from switch.wire.clearing import (
    ClearingHeader,
    ClearingRecord,
    clearing_file_name,
    encode_clearing_file,
    encode_header,
    encode_record,
    encode_trailer,
    trailer_totals,
)

BANKS: Final = ("icbc", "abc", "cmb", "citic")
BANK_SHARES: Final = (0.35, 0.30, 0.20, 0.15)
CORRUPT_BANK: Final = "boc"
BINS: Final = {**{bank: BANK_BINS[bank] for bank in BANKS}, CORRUPT_BANK: "621661"}
INSTITUTIONS: Final = {
    "icbc": "1020000", "abc": "1030000", "cmb": "3080000", "citic": "3020000",
    CORRUPT_BANK: "1040000",
}  # fmt: skip
"""Each bank's institution id, as its files' headers name it."""

DEFAULT_DATE: Final = date(2026, 11, 22)
UTC_OFFSET_H: Final = 8
CUTOFF_HOUR: Final = 23
"""The demo's cut-off (conf/switch.toml): the date runs from 23:00 local the day before."""

JOURNAL: Final = "journal.sqlite3"
STORE: Final = "settlement.sqlite3"
DSN: Final = "journal.dsn"
"""Where a day on PostgreSQL names its database (journal and settlement store in one)."""
MERCHANTS: Final = "merchants.csv"
CLEARING: Final = "clearing"
OUT: Final = "out"
MANIFEST: Final = "day.json"

FAULTS: Final = (
    "dropped", "amount_changed", "unknown", "moved", "declined_listed", "reversed_listed",
)  # fmt: skip
CORRUPT: Final = "corrupt_file"
"""The fifth bank's standing sales, whose file is rejected."""
ON_THE_DATE: Final = {
    "dropped": ("switch_only", "held"),
    "amount_changed": ("amount_mismatch", "paid"),
    "unknown": ("bank_only", "reversal_queued"),
    "moved": ("switch_only", "held"),
    "declined_listed": ("bank_only", "reversal_queued"),
    "reversed_listed": ("bank_only", "reversal_queued"),
    CORRUPT: ("switch_only", "held"),
}
"""What the settlement of the date must find of each fault (settlement.md's table)."""
ON_THE_NEXT_DATE: Final = {
    "moved": ("timing", "paid"),
    "dropped": ("switch_only", "held"),
    CORRUPT: ("switch_only", "held"),
}
"""...and of the next date: the moved records found a date late, the others looked for
again (held for one more date)."""

# The day's mix, as shares of the four banks' transactions (the rest: approved sales).
VOID_SHARE: Final = 0.01
REFUND_SHARE: Final = 0.005
DECLINED_SHARE: Final = 0.03
REVERSED_SHARE: Final = 0.005
"""Approved, then reversed by the terminal: the bank lists the sale and its reversal."""
TIMED_OUT_SHARE: Final = 0.002
"""No answer, auto-reversed: half of them reached the bank (it lists both), half not."""
UNLISTED_SHARE: Final = 0.01
"""Transactions from merchants the merchants file does not list (the ``*`` profile)."""
WRITE_CHUNK: Final = 20_000
"""Transactions a journal transaction, while the day is written."""

MDR_BPS: Final = (38, 45, 60, 78, 100, 125)
FEE_MINS: Final = (0, 0, 0, 10, 50)
FEE_CAPS: Final = (0, 0, 2600, 5000)
MCCS: Final = ("5411", "5812", "5999", "5311", "4121", "5541", "7011")


class DayPlan(msgspec.Struct, frozen=True, kw_only=True):
    transactions: int = 1_000_000
    """The four banks' transactions of the date in the journal."""
    merchants: int = 10_000
    """Merchants listed in the merchants file."""
    fault_fraction: float = 0.001
    """Of each fault kind, this share of ``transactions`` (at least one each if > 0)."""
    corrupt_bank: bool = True
    """A fifth, small bank whose file's trailer is corrupt."""
    business_date: date = DEFAULT_DATE
    seed: int = 1


class SyntheticDay(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`build_day` built and injected (the folder's ``day.json``)."""

    plan: DayPlan
    business_date: str
    next_date: str
    banks: list[str]
    """Every bank whose file the date waits for (the corrupt one included)."""
    institutions: dict[str, str]
    corrupt_bank: str | None
    transactions: int
    """The date's transactions in the journal, every bank."""
    by_bank: dict[str, int]
    candidates: int
    """The date's sales, voids and refunds that went to a bank (what settlement examines)."""
    merchants: int
    unlisted_merchants: int
    clearing_files: dict[str, int]
    """File name: its detail records."""
    injected: dict[str, list[str]]
    """Fault kind (``FAULTS``, ``corrupt_file``): the RRNs it touched."""
    expected: dict[str, dict[str, tuple[str, str]]]
    """Business date: RRN -> (category, action) of every reconciliation line its
    settlement must write (every other transaction matched)."""
    payouts: dict[str, tuple[int, int, int, int, int, int]]
    """Merchant -> (sales_count, sales_fen, refunds_count, refunds_fen, fees_fen, held_fen)
    of the date, worked out here from settlement.md's rules."""
    build_s: dict[str, float]
    """Seconds each part of the build took: generate, journal, clearing, store."""

    @property
    def counts(self) -> dict[str, int]:
        return {kind: len(rrns) for kind, rrns in self.injected.items()}


def journal_path(folder: Path) -> Path:
    return folder / JOURNAL


def store_path(folder: Path) -> Path:
    return folder / STORE


def journal_dsn(folder: Path) -> str | None:
    """The PostgreSQL database of a day on that engine; None for a day on SQLite."""
    path = folder / DSN
    return path.read_text().strip() if path.exists() else None


def engine_of(folder: Path) -> str:
    return "sqlite" if journal_dsn(folder) is None else "postgresql"


def settlement_store(folder: Path) -> SettlementStore:
    """The day's settlement store (not opened), on the day's engine, as the switch's
    ``open_settlement_store`` makes it."""
    dsn = journal_dsn(folder)
    if dsn is not None:
        return PostgresSettlementStore(dsn)
    return SqliteSettlementStore(store_path(folder), journal_path(folder))


def clearing_dir(folder: Path) -> Path:
    return folder / CLEARING


def out_dir(folder: Path) -> Path:
    return folder / OUT


def merchants_path(folder: Path) -> Path:
    return folder / MERCHANTS


def load_day(folder: Path) -> SyntheticDay:
    return msgspec.json.decode((folder / MANIFEST).read_bytes(), type=SyntheticDay)


def close_time(business_date: date) -> float:
    """The date's natural close (the cut-off, local), epoch seconds."""
    local = datetime.combine(business_date, datetime.min.time()).replace(hour=CUTOFF_HOUR)
    return (local - timedelta(hours=UTC_OFFSET_H)).replace(tzinfo=UTC).timestamp()


# -- the transactions ----------------------------------------------------------------


class _Txn:
    """One generated transaction, compact until it is written."""

    __slots__ = (
        "amount", "at", "bank", "bank_amount", "bank_stan", "fault", "kind", "listed",
        "merchant", "original", "pan", "refunded", "reversed", "rrn", "stan", "state",
        "terminal", "voided",
    )  # fmt: skip

    def __init__(
        self, rrn: str, at: float, bank: str, merchant: str, terminal: str, pan: str, amount: int
    ) -> None:
        self.rrn = rrn
        self.at = at
        self.bank = bank
        self.merchant = merchant
        self.terminal = terminal
        self.pan = pan
        self.amount = amount
        self.kind = "sale"
        self.state = "approved"
        self.stan = ""
        self.bank_stan = ""
        self.original: _Txn | None = None
        self.refunded = 0
        self.voided = False
        self.reversed = False
        self.listed = True
        """The bank lists it (its 0200, and its 0400 when reversed), faults aside."""
        self.fault = ""
        self.bank_amount = amount


class _Merchants:
    def __init__(self, rng: random.Random, listed: int) -> None:
        default = MerchantTerms(
            merchant_id="*", name="default profile", mcc="5999", mdr_bps=60,
            account="DEFAULT-POOL-0001",
        )  # fmt: skip
        self.terms: list[MerchantTerms] = [default]
        for index in range(listed):
            cap = rng.choice(FEE_CAPS)
            minimum = rng.choice(FEE_MINS)
            self.terms.append(
                MerchantTerms(
                    merchant_id=f"8983100{index:08d}",
                    name=f"merchant {index}",
                    mcc=rng.choice(MCCS),
                    mdr_bps=rng.choice(MDR_BPS),
                    fee_min_fen=minimum if not cap or minimum <= cap else 0,
                    fee_cap_fen=cap,
                    account=f"62220{index:011d}",
                )
            )
        self.unlisted = [f"8983199{index:08d}" for index in range(max(1, listed // 100))]
        self.ids = [terms.merchant_id for terms in self.terms[1:]]
        # A few merchants take most of the sales (a long tail of small shops).
        self.weights = [rng.paretovariate(1.2) for _ in self.ids]
        self.by_id = {terms.merchant_id: terms for terms in self.terms}
        self.terminals: dict[str, list[str]] = {}
        number = 0
        for merchant in [*self.ids, *self.unlisted]:
            count = 1 + number % 3
            self.terminals[merchant] = [f"{number + t:08d}" for t in range(count)]
            number += count

    def of(self, merchant: str) -> MerchantTerms:
        return self.by_id.get(merchant, self.terms[0])

    def csv(self) -> bytes:
        lines = [",".join(COLUMNS)]
        for t in self.terms:
            lines.append(f"{t.merchant_id},{t.name},{t.mcc},{t.mdr_bps},{t.fee_min_fen},"
                         f"{t.fee_cap_fen},{t.account}")  # fmt: skip
        return ("\n".join(lines) + "\n").encode()


def _amount(rng: random.Random) -> int:
    """A sale's amount in fen: a few yuan to a few thousand, most under 200."""
    return max(100, min(5_000_000, round(rng.lognormvariate(8.8, 1.1))))


def _generate(plan: DayPlan, merchants: _Merchants, rng: random.Random) -> list[_Txn]:
    """The date's transactions in the order the switch received them."""
    day = plan.business_date
    start = close_time(day - timedelta(days=1))
    span = close_time(day) - start
    prefix = f"{day.year % 10}{day.timetuple().tm_yday:03d}"
    corrupt = max(10, round(plan.transactions * plan.fault_fraction)) if plan.corrupt_bank else 0
    total = plan.transactions + corrupt
    corrupt_slots = set(rng.sample(range(total), corrupt)) if corrupt else set()
    main_merchants = rng.choices(merchants.ids, weights=merchants.weights, k=total)
    banks = rng.choices(BANKS, weights=BANK_SHARES, k=total)
    txns: list[_Txn] = []
    plain: list[_Txn] = []  # approved sales nothing else has touched yet
    stans: dict[str, int] = {}
    bank_stans: dict[str, int] = {}
    for index in range(total):
        at = start + (index + rng.random()) * span / total
        rrn = f"{prefix}{index + 1:08d}"
        bank = CORRUPT_BANK if index in corrupt_slots else banks[index]
        merchant = main_merchants[index]
        if rng.random() < UNLISTED_SHARE:
            merchant = rng.choice(merchants.unlisted)
        u = rng.random()
        original: _Txn | None = None
        if bank != CORRUPT_BANK and u < VOID_SHARE + REFUND_SHARE and plain:
            slot = rng.randrange(len(plain))
            original = plain[slot]
            plain[slot] = plain[-1]
            plain.pop()
            txn = _Txn(rrn, at, original.bank, original.merchant, original.terminal,
                       original.pan, original.amount)  # fmt: skip
            txn.original = original
            if u < VOID_SHARE:
                txn.kind = "void"
                original.voided = True
            else:
                txn.kind = "refund"
                txn.amount = txn.bank_amount = max(1, round(original.amount * rng.random()))
                original.refunded = txn.amount
        else:
            pan = f"{BINS[bank]}{'*' * 9}{rng.randrange(10_000):04d}"
            terminal = rng.choice(merchants.terminals[merchant])
            txn = _Txn(rrn, at, bank, merchant, terminal, pan, _amount(rng))
            v = u - VOID_SHARE - REFUND_SHARE
            if v < 0:
                pass
            elif v < DECLINED_SHARE:
                txn.state = "declined"
                txn.listed = False
            elif v < DECLINED_SHARE + REVERSED_SHARE and bank != CORRUPT_BANK:
                txn.reversed = True
            elif v < DECLINED_SHARE + REVERSED_SHARE + TIMED_OUT_SHARE and bank != CORRUPT_BANK:
                txn.state = "no_answer"
                txn.reversed = True
                txn.listed = rng.random() < 0.5
            if txn.state == "approved" and not txn.reversed and bank != CORRUPT_BANK:
                plain.append(txn)
        stans[txn.terminal] = stans.get(txn.terminal, 0) % 999_999 + 1
        bank_stans[txn.bank] = bank_stans.get(txn.bank, 0) % 999_999 + 1
        txn.stan = f"{stans[txn.terminal]:06d}"
        txn.bank_stan = f"{bank_stans[txn.bank]:06d}"
        txns.append(txn)
    return txns


def _inject(
    plan: DayPlan, txns: list[_Txn], merchants: _Merchants, rng: random.Random
) -> tuple[dict[str, list[_Txn]], list[_Txn]]:
    """Picks the transactions each fault touches; returns them, and the unknown records
    (sales the switch never sent, as the banks list them)."""
    count = max(1, round(plan.transactions * plan.fault_fraction)) if plan.fault_fraction else 0
    untouched = [
        t for t in txns
        if t.kind == "sale" and t.state == "approved" and not t.reversed and not t.voided
        and not t.refunded and t.bank != CORRUPT_BANK
    ]  # fmt: skip
    declined = [t for t in txns if t.state == "declined" and t.bank != CORRUPT_BANK]
    reversed_ = [t for t in txns if t.state == "approved" and t.reversed]
    picked = rng.sample(untouched, min(len(untouched), 3 * count))
    chosen: dict[str, list[_Txn]] = {
        "dropped": picked[0::3],
        "amount_changed": picked[1::3],
        "moved": picked[2::3],
        "declined_listed": rng.sample(declined, min(len(declined), count)),
        "reversed_listed": rng.sample(reversed_, min(len(reversed_), count)),
    }
    for kind, touched in chosen.items():
        for txn in touched:
            txn.fault = kind
            if kind == "amount_changed":
                change = rng.randrange(1, 500)
                lower = rng.random() < 0.5 and txn.amount > change
                txn.bank_amount = txn.amount - change if lower else txn.amount + change
    prefix = txns[0].rrn[:4] if txns else "0000"
    unknown = []
    for number in range(count):
        merchant = rng.choice(merchants.ids)
        bank = rng.choice(BANKS)
        pan = f"{BINS[bank]}{'*' * 9}{rng.randrange(10_000):04d}"
        at = rng.choice(txns).at if txns else 0.0
        terminal = rng.choice(merchants.terminals[merchant])
        record = _Txn(f"{prefix}9{number:07d}", at, bank, merchant, terminal, pan, _amount(rng))
        record.stan = record.bank_stan = f"{rng.randrange(1, 1_000_000):06d}"
        record.fault = "unknown"
        unknown.append(record)
    chosen["unknown"] = unknown
    return chosen, unknown


_PROCESSING: Final = {"sale": "000000", "void": "020000", "refund": "200000"}
_PAN_HMAC: Final = b"\x01" + bytes(range(32))
_PAN_SEALED: Final = b"\x01" + bytes(range(12)) + b"\x00" * 19 + bytes(range(16))
"""Stand-ins of the journal's real sizes (a keyed digest, AES-GCM of a 19-digit PAN):
settlement never reads them, but they make the journal's rows as long as a switch's."""


def _transmission(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%m%d%H%M%S")


def _record(txn: _Txn, business_date: str) -> TxnRecord:
    transmission = _transmission(txn.at)
    local = datetime.fromtimestamp(txn.at + UTC_OFFSET_H * 3600, UTC)
    approved = txn.state == "approved"
    return TxnRecord(
        kind=txn.kind,  # type: ignore[arg-type]
        rrn=txn.rrn, bank=txn.bank, channel="pos", request_mti="0200",
        terminal_id=txn.terminal, merchant_id=txn.merchant, stan=txn.stan, batch="000001",
        local_date=local.strftime("%m%d"), pan_masked=txn.pan, pan_hmac=_PAN_HMAC,
        pan_sealed=_PAN_SEALED, amount=txn.amount, currency="156",
        bank_processing_code=_PROCESSING[txn.kind], business_date=business_date,
        original_rrn=txn.original.rrn if txn.original is not None else None,
        sent=OriginalData(mti="0200", stan=txn.bank_stan, transmission=transmission),
        state=txn.state,  # type: ignore[arg-type]
        code="00" if approved else ("51" if txn.state == "declined" else None),
        auth_code=f"{int(txn.rrn[-6:]):06d}" if approved else None,
        refunded=txn.refunded, voided=txn.voided, reversed=txn.reversed,
    )  # fmt: skip


def _write_journal(folder: Path, txns: Sequence[_Txn], business_date: str) -> None:
    dsn = journal_dsn(folder)
    if dsn is not None:
        _write_postgresql_journal(dsn, txns, business_date)
        return
    # a setup's commits need not wait for the disk
    journal = JournalFile(journal_path(folder), synchronous="OFF")
    journal.open()
    try:
        for start in range(0, len(txns), WRITE_CHUNK):
            journal.apply(
                write
                for txn in txns[start : start + WRITE_CHUNK]
                for write in writes_of(TxnStarted(record=_record(txn, business_date), at=txn.at))
            )
    finally:
        journal.close()


def _write_postgresql_journal(dsn: str, txns: Sequence[_Txn], business_date: str) -> None:
    """The same writes through the PostgreSQL journal's own statements, a transaction a
    chunk (the journal's schema made as the switch makes it, on open)."""
    database = JournalDatabase(dsn)
    database.open()
    try:
        for start in range(0, len(txns), WRITE_CHUNK):
            database.apply(
                write
                for txn in txns[start : start + WRITE_CHUNK]
                for write in postgresql_sql.writes_of(
                    TxnStarted(record=_record(txn, business_date), at=txn.at)
                )
            )
    finally:
        database.close()


def _clearing_records(txn: _Txn) -> Iterator[ClearingRecord]:
    """What the bank's file lists of a transaction (faults aside)."""
    direction = "D" if txn.kind == "sale" else "C"
    transmission = _transmission(txn.at)
    yield ClearingRecord(
        "0200", _PROCESSING[txn.kind], txn.bank_stan, transmission, txn.rrn, txn.bank_amount,
        "156", "00", f"{int(txn.rrn[-6:]):06d}", txn.terminal, txn.merchant, txn.pan,
        direction,  # type: ignore[arg-type]
    )  # fmt: skip
    if txn.reversed and txn.fault != "reversed_listed":
        yield ClearingRecord(
            "0400", _PROCESSING[txn.kind], txn.bank_stan, transmission, txn.rrn, txn.amount,
            "156", "00", "", txn.terminal, txn.merchant, txn.pan,
            "C" if direction == "D" else "D",
        )  # fmt: skip


def _write_clearing(
    folder: Path, plan: DayPlan, txns: Sequence[_Txn], unknown: Sequence[_Txn]
) -> dict[str, int]:
    day, next_day = plan.business_date, plan.business_date + timedelta(days=1)
    files: dict[tuple[str, date], list[tuple[float, ClearingRecord]]] = {
        (bank, when): [] for bank in BANKS for when in (day, next_day)
    }
    if plan.corrupt_bank:
        files[(CORRUPT_BANK, day)] = []
    for txn in [*txns, *unknown]:
        listed = txn.listed or txn.fault == "declined_listed"
        if not listed or txn.fault == "dropped":
            continue
        when = next_day if txn.fault == "moved" else day
        for record in _clearing_records(txn):
            files[(txn.bank, when)].append((txn.at, record))
    folder.mkdir(parents=True, exist_ok=True)
    created = datetime.fromtimestamp(close_time(day) + 600, UTC).replace(microsecond=0)
    written = {}
    for (bank, when), entries in files.items():
        entries.sort(key=lambda entry: entry[0])
        records = [record for _, record in entries]
        header = ClearingHeader(when, INSTITUTIONS[bank], created + (when - day))
        if bank == CORRUPT_BANK:
            # The trailer's total of D amounts is one fen off: the file is rejected whole.
            count, debits, credits = trailer_totals(records)
            data = b"".join(
                [encode_header(header), *map(encode_record, records),
                 encode_trailer(count, debits + 1, credits)]
            )  # fmt: skip
        else:
            data = encode_clearing_file(header, records)
        name = clearing_file_name(bank, when)
        (folder / name).write_bytes(data)
        written[name] = len(records)
    return written


def _payouts(
    txns: Sequence[_Txn], merchants: _Merchants
) -> dict[str, tuple[int, int, int, int, int, int]]:
    """Each merchant's line of the date by settlement.md's rules, in Python: paid sales
    at the bank's amount and their fees, paid refunds, held sales; a sale and its void
    paid together cancel out; merchants with nothing paid, cancelled or held have none."""
    lines: dict[str, list[int]] = {}
    for txn in txns:
        if txn.state != "approved" or txn.reversed:
            continue
        line = lines.setdefault(txn.merchant, [0, 0, 0, 0, 0, 0])
        held = txn.fault in ("dropped", "moved") or txn.bank == CORRUPT_BANK
        if txn.kind == "sale" and held:
            line[5] += txn.amount
        elif txn.kind == "sale" and not txn.voided:
            line[0] += 1
            line[1] += txn.bank_amount
            line[4] += merchants.of(txn.merchant).fee(txn.bank_amount)
        elif txn.kind == "refund":
            line[2] += 1
            line[3] += txn.amount
    return {merchant: (a, b, c, d, e, f) for merchant, (a, b, c, d, e, f) in lines.items()}


def build_day(folder: Path, plan: DayPlan | None = None, *, dsn: str | None = None) -> SyntheticDay:
    """Builds the day in ``folder`` (made if missing; it must not hold a day already):
    on SQLite, or with ``dsn`` in that PostgreSQL database (which must be empty)."""
    plan = plan or DayPlan()
    folder.mkdir(parents=True, exist_ok=True)
    if any(path.exists() for path in (journal_path(folder), store_path(folder), folder / DSN)):
        raise FileExistsError(f"{folder} already holds a day")
    if dsn is not None:
        (folder / DSN).write_text(dsn + "\n")
    rng = random.Random(plan.seed)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    merchants = _Merchants(rng, plan.merchants)
    txns = _generate(plan, merchants, rng)
    chosen, unknown = _inject(plan, txns, merchants, rng)
    day, next_day = plan.business_date.isoformat(), (plan.business_date + timedelta(1)).isoformat()
    injected = {kind: [t.rrn for t in chosen[kind]] for kind in FAULTS}
    if plan.corrupt_bank:
        injected[CORRUPT] = [t.rrn for t in txns if t.bank == CORRUPT_BANK
                             and t.state == "approved" and not t.reversed]  # fmt: skip
    expected: dict[str, dict[str, tuple[str, str]]] = {
        day: {rrn: ON_THE_DATE[kind] for kind, rrns in injected.items() for rrn in rrns},
        next_day: {
            rrn: ON_THE_NEXT_DATE[kind]
            for kind, rrns in injected.items() if kind in ON_THE_NEXT_DATE
            for rrn in rrns
        },
    }  # fmt: skip
    payouts = _payouts(txns, merchants)
    by_bank: dict[str, int] = {}
    for txn in txns:
        by_bank[txn.bank] = by_bank.get(txn.bank, 0) + 1
    timings["generate"] = time.perf_counter() - started

    started = time.perf_counter()
    _write_journal(folder, txns, day)
    timings["journal"] = time.perf_counter() - started

    started = time.perf_counter()
    files = _write_clearing(clearing_dir(folder), plan, txns, unknown)
    merchants_path(folder).write_bytes(merchants.csv())
    timings["clearing"] = time.perf_counter() - started

    started = time.perf_counter()
    store = settlement_store(folder)
    store.open()
    try:
        for when in (plan.business_date, plan.business_date + timedelta(days=1)):
            store.record_close(DateClosed(when, close_time(when), False))
    finally:
        store.close()
    out_dir(folder).mkdir(exist_ok=True)
    timings["store"] = time.perf_counter() - started

    built = SyntheticDay(
        plan=plan,
        business_date=day,
        next_date=next_day,
        banks=[*BANKS, *([CORRUPT_BANK] if plan.corrupt_bank else [])],
        institutions={bank: INSTITUTIONS[bank] for bank in BINS},
        corrupt_bank=CORRUPT_BANK if plan.corrupt_bank else None,
        transactions=len(txns),
        by_bank=dict(sorted(by_bank.items())),
        candidates=sum(1 for t in txns if t.state in ("approved", "declined", "no_answer")),
        merchants=plan.merchants,
        unlisted_merchants=len(merchants.unlisted),
        clearing_files=files,
        injected=injected,
        expected=expected,
        payouts=payouts,
        build_s={name: round(seconds, 3) for name, seconds in timings.items()},
    )
    (folder / MANIFEST).write_bytes(msgspec.json.encode(built))
    return built


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.synthetic_day FOLDER [--transactions N] ...``: builds a day and
    prints its manifest's counts."""
    default = DayPlan()
    parser = argparse.ArgumentParser(prog="python -m bench.synthetic_day")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--transactions", type=int, default=default.transactions)
    parser.add_argument("--merchants", type=int, default=default.merchants)
    parser.add_argument("--fault-fraction", type=float, default=default.fault_fraction)
    parser.add_argument("--no-corrupt-bank", action="store_true")
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument(
        "--dsn", help="build the day in this (empty) PostgreSQL database instead of SQLite"
    )
    args = parser.parse_args(argv)
    plan = DayPlan(
        transactions=args.transactions, merchants=args.merchants,
        fault_fraction=args.fault_fraction, corrupt_bank=not args.no_corrupt_bank,
        seed=args.seed,
    )  # fmt: skip
    built = build_day(args.folder, plan, dsn=args.dsn)
    summary = {
        "transactions": built.transactions, "by_bank": built.by_bank,
        "injected": built.counts, "clearing_files": built.clearing_files,
        "build_s": built.build_s,
    }  # fmt: skip
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(summary)).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
