"""The settlement store on SQLite: business days, clearing files, the matching of a
date, payouts, the reconciliation and the ledger (settlement.md).

A database of its own beside the journal: settling a date of a million transactions
writes for seconds, and the journal's writer (every approval's commit) must never wait
on that. The journal is attached read-only (WAL: the switch keeps committing while a
settlement reads one consistent snapshot of it).

Settlement is set-based: one SQL statement a step over whole tables (candidates, what
the banks' files say of them, the verdicts, the sums per merchant, the postings), never
a Python loop per transaction, all in one transaction: a date is settled wholly or
not at all, and once settled its stored rows are what its files are written from.
Plain blocking calls: the trio layer runs them in a worker thread.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

from switch.core.calendar import DateClosed
from switch.core.merchants import DEFAULT_PROFILE, MerchantTerms
from switch.core.settlement import (
    HOLD_DATES,
    CategoryCount,
    ClearingFileStatus,
    LedgerBalance,
    PayoutLine,
    ReconLine,
    ReversalOrder,
    SettlementStatus,
)
from switch.files import make_private_folder, open_private
from switch.store.settlement_port import CLEARING_COLUMNS
from switch.store.settlement_port import LedgerUnbalanced as LedgerUnbalanced
from switch.store.settlement_port import SettlementError as SettlementError
from switch.store.settlement_port import StepHook as StepHook

BUSY_TIMEOUT_MS: Final = 30_000
"""Two settlements of one date (the switch's own and an operator's) take turns."""

MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE business_day (
        business_date TEXT PRIMARY KEY,     -- YYYY-MM-DD
        opened_at REAL NOT NULL,
        closed_at REAL,                     -- from then on the next date is open
        forced INTEGER NOT NULL DEFAULT 0,  -- closed by an operator before its cut-off
        settled_at REAL,
        files_at REAL                       -- its payout and recon files last written
    );
    CREATE TABLE cutover (
        business_date TEXT NOT NULL,
        bank TEXT NOT NULL,
        code TEXT NOT NULL,                 -- the bank's 39, or why none came
        at REAL NOT NULL,
        PRIMARY KEY (business_date, bank)
    );
    CREATE TABLE clearing_file (
        bank TEXT NOT NULL,
        business_date TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,               -- accepted, rejected
        reason TEXT,
        records INTEGER NOT NULL,
        read_at REAL NOT NULL,
        PRIMARY KEY (bank, business_date)
    );
    CREATE TABLE clearing_record (
        bank TEXT NOT NULL,
        file_date TEXT NOT NULL,
        mti TEXT NOT NULL,
        mti_class TEXT NOT NULL,            -- 02 the message itself, 04 its reversal
        processing_code TEXT NOT NULL,
        stan TEXT NOT NULL,
        transmission TEXT NOT NULL,
        rrn TEXT NOT NULL,
        amount INTEGER NOT NULL,
        currency TEXT NOT NULL,
        response_code TEXT NOT NULL,
        auth_code TEXT NOT NULL,
        terminal_id TEXT NOT NULL,
        merchant_id TEXT NOT NULL,
        masked_pan TEXT NOT NULL,
        direction TEXT NOT NULL
    );
    CREATE INDEX clearing_by_rrn ON clearing_record (rrn, bank, file_date);
    CREATE INDEX clearing_by_file ON clearing_record (file_date, bank);
    CREATE TABLE settlement_item (          -- each transaction examined, as last decided
        rrn TEXT PRIMARY KEY,
        bank TEXT NOT NULL,
        kind TEXT NOT NULL,                 -- sale, void, refund; unknown: the bank's only
        txn_date TEXT NOT NULL,             -- its own business date
        merchant_id TEXT NOT NULL,
        terminal_id TEXT NOT NULL,
        masked_pan TEXT NOT NULL,
        original_rrn TEXT,
        switch_fen INTEGER,
        bank_fen INTEGER,
        paid_fen INTEGER,
        category TEXT NOT NULL,
        action TEXT NOT NULL,
        state TEXT NOT NULL,                -- held (looked for again), final
        settled_on TEXT NOT NULL            -- the settlement that decided it last
    );
    CREATE INDEX item_held ON settlement_item (state) WHERE state = 'held';
    CREATE TABLE recon_line (
        business_date TEXT NOT NULL,
        category TEXT NOT NULL,
        bank TEXT NOT NULL,
        rrn TEXT NOT NULL,
        terminal_id TEXT NOT NULL,
        merchant_id TEXT NOT NULL,
        masked_pan TEXT NOT NULL,
        switch_fen INTEGER,
        bank_fen INTEGER,
        action TEXT NOT NULL
    );
    CREATE INDEX recon_by_date ON recon_line (business_date);
    CREATE TABLE payout (
        business_date TEXT NOT NULL,
        merchant_id TEXT NOT NULL,
        account TEXT NOT NULL,
        sales_count INTEGER NOT NULL,
        sales_fen INTEGER NOT NULL,
        refunds_count INTEGER NOT NULL,
        refunds_fen INTEGER NOT NULL,
        fees_fen INTEGER NOT NULL,
        held_fen INTEGER NOT NULL,
        carried_in_fen INTEGER NOT NULL,
        net_fen INTEGER NOT NULL,
        payout_fen INTEGER NOT NULL,
        carried_out_fen INTEGER NOT NULL,
        PRIMARY KEY (business_date, merchant_id)
    );
    CREATE INDEX payout_by_merchant ON payout (merchant_id, business_date);
    CREATE TABLE ledger_entry (             -- one line of a posting; a posting balances
        id INTEGER PRIMARY KEY,
        business_date TEXT NOT NULL,
        posting TEXT NOT NULL,              -- what and for whom, e.g. sales:icbc:M1
        account TEXT NOT NULL,
        debit_fen INTEGER NOT NULL,
        credit_fen INTEGER NOT NULL
    );
    CREATE INDEX ledger_by_account ON ledger_entry (account);
    CREATE INDEX ledger_by_date ON ledger_entry (business_date);
    CREATE TABLE reversal_order (           -- reversals settlement decided on
        rrn TEXT PRIMARY KEY,
        bank TEXT NOT NULL,
        business_date TEXT NOT NULL,
        reason TEXT NOT NULL,
        known INTEGER NOT NULL,             -- 0: a bank's record the switch never sent
        mti TEXT NOT NULL DEFAULT '',
        processing_code TEXT NOT NULL DEFAULT '',
        stan TEXT NOT NULL DEFAULT '',
        transmission TEXT NOT NULL DEFAULT '',
        amount INTEGER NOT NULL DEFAULT 0,
        currency TEXT NOT NULL DEFAULT '',
        terminal_id TEXT NOT NULL DEFAULT '',
        merchant_id TEXT NOT NULL DEFAULT '',
        masked_pan TEXT NOT NULL DEFAULT '',
        handed_at REAL                      -- queued in the journal's store-and-forward
    );
    CREATE INDEX reversal_order_pending ON reversal_order (handed_at) WHERE handed_at IS NULL;
    """,
    # 2: what a settlement reads of earlier dates, found without reading all of them:
    # the matched items of the date (its status) and the merchants carrying a balance.
    """
    CREATE INDEX item_by_settlement ON settlement_item (settled_on);
    CREATE INDEX payout_carried ON payout (merchant_id, business_date)
        WHERE carried_out_fen != 0;
    """,
)


_CLEARING_COLUMNS: Final = CLEARING_COLUMNS
_INSERT_RECORD: Final = (
    "INSERT INTO clearing_record (bank, file_date, mti_class, "
    f"{', '.join(_CLEARING_COLUMNS)}) VALUES (?, ?, ?, {', '.join('?' * len(_CLEARING_COLUMNS))})"
)


def _day(text: str, days: int) -> str:
    return (date.fromisoformat(text) + timedelta(days=days)).isoformat()


class SqliteSettlementStore:
    def __init__(self, path: Path, journal_path: Path) -> None:
        self.path = path
        self.journal_path = journal_path
        self._connection: sqlite3.Connection | None = None
        self.on_step: StepHook | None = None
        """A debugging hook (the bench's): called after each statement of a settlement
        with the statement and the seconds it took."""

    # -- opening ------------------------------------------------------------------

    def open(self) -> None:
        """Opens (creating and migrating) the store; SettlementError naming the file."""
        try:
            if not self.path.exists():  # 0600 before SQLite makes it (and its -wal, -shm)
                make_private_folder(self.path.parent)
                os.close(open_private(self.path, os.O_RDONLY))
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            connection.row_factory = sqlite3.Row
            _migrate(connection)
        except (OSError, sqlite3.Error) as exc:
            raise SettlementError(f"settlement store {self.path}: {exc}") from exc
        self._connection = connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise SettlementError("the settlement store is not open")
        return self._connection

    def _attach_journal(self) -> None:
        """The journal, read-only, as ``j``: a settlement's one snapshot of it."""
        names = [row[1] for row in self._db.execute("PRAGMA database_list")]
        if "j" not in names:
            if not self.journal_path.exists():
                raise SettlementError(f"no journal at {self.journal_path}")
            self._db.execute("ATTACH DATABASE ? AS j", (f"file:{self.journal_path}?mode=ro",))

    # -- business days --------------------------------------------------------------

    def closes(self) -> list[DateClosed]:
        try:  # read by every worker, polling: its failure is theirs to log and retry
            rows = self._db.execute(
                "SELECT business_date, closed_at, forced FROM business_day "
                "WHERE closed_at IS NOT NULL ORDER BY closed_at"
            ).fetchall()
        except sqlite3.Error as exc:
            raise SettlementError(f"settlement store: {exc}") from exc
        return [DateClosed(date.fromisoformat(row[0]), row[1], bool(row[2])) for row in rows]

    def first_open_date(self) -> date | None:
        """The earliest date opened and not closed."""
        row = self._db.execute(
            "SELECT min(business_date) FROM business_day WHERE closed_at IS NULL"
        ).fetchone()
        return None if row[0] is None else date.fromisoformat(row[0])

    def record_open(self, business_date: date, at: float) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO business_day (business_date, opened_at) VALUES (?, ?)",
            (business_date.isoformat(), at),
        )

    def record_close(self, close: DateClosed) -> None:
        day = close.business_date.isoformat()
        with _transaction(self._db):
            self._db.execute(
                "INSERT OR IGNORE INTO business_day (business_date, opened_at) VALUES (?, ?)",
                (day, close.at),
            )
            self._db.execute(
                "UPDATE business_day SET closed_at = ?, forced = ? "
                "WHERE business_date = ? AND closed_at IS NULL",
                (close.at, int(close.forced), day),
            )
            self._db.execute(
                "INSERT OR IGNORE INTO business_day (business_date, opened_at) VALUES (?, ?)",
                ((close.business_date + timedelta(days=1)).isoformat(), close.at),
            )

    def record_cutover(self, business_date: str, bank: str, code: str, at: float) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO cutover (business_date, bank, code, at) VALUES (?, ?, ?, ?)",
            (business_date, bank, code, at),
        )

    def cutovers(self, business_date: str) -> dict[str, str]:
        rows = self._db.execute(
            "SELECT bank, code FROM cutover WHERE business_date = ?", (business_date,)
        )
        return {row[0]: row[1] for row in rows}

    def unsettled_closed_dates(self) -> list[str]:
        rows = self._db.execute(
            "SELECT business_date FROM business_day WHERE closed_at IS NOT NULL "
            "AND settled_at IS NULL ORDER BY business_date"
        )
        return [row[0] for row in rows]

    def is_settled(self, business_date: str) -> bool:
        row = self._db.execute(
            "SELECT settled_at FROM business_day WHERE business_date = ?", (business_date,)
        ).fetchone()
        return row is not None and row[0] is not None

    def is_closed(self, business_date: str) -> bool:
        row = self._db.execute(
            "SELECT closed_at FROM business_day WHERE business_date = ?", (business_date,)
        ).fetchone()
        return row is not None and row[0] is not None

    # -- clearing files --------------------------------------------------------------

    def clearing_file(self, bank: str, business_date: str) -> ClearingFileStatus | None:
        row = self._db.execute(
            "SELECT bank, business_date, name, status, reason, records, read_at "
            "FROM clearing_file WHERE bank = ? AND business_date = ?",
            (bank, business_date),
        ).fetchone()
        return None if row is None else ClearingFileStatus(**dict(row))

    def accept_clearing_file(
        self,
        bank: str,
        business_date: str,
        name: str,
        records: Iterable[Sequence[Any]],
        at: float,
    ) -> int:
        """Keeps a file's records (each in ``_CLEARING_COLUMNS`` order), replacing a
        rejected earlier delivery; an accepted file is final. Returns the count kept."""
        db = self._db
        with _transaction(db):
            known = db.execute(
                "SELECT status FROM clearing_file WHERE bank = ? AND business_date = ?",
                (bank, business_date),
            ).fetchone()
            if known is not None and known[0] == "accepted":
                raise SettlementError(f"{bank}'s file of {business_date} is already accepted")
            db.execute(
                "DELETE FROM clearing_record WHERE bank = ? AND file_date = ?",
                (bank, business_date),
            )
            rows = (
                (bank, business_date, "04" if record[0].startswith("04") else "02", *record)
                for record in records
            )
            cursor = db.executemany(_INSERT_RECORD, rows)
            count = cursor.rowcount
            db.execute(
                "INSERT OR REPLACE INTO clearing_file (bank, business_date, name, status, "
                "reason, records, read_at) VALUES (?, ?, ?, 'accepted', NULL, ?, ?)",
                (bank, business_date, name, count, at),
            )
        return count

    def reject_clearing_file(
        self, bank: str, business_date: str, name: str, reason: str, at: float
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO clearing_file (bank, business_date, name, status, reason, "
            "records, read_at) VALUES (?, ?, ?, 'rejected', ?, 0, ?)",
            (bank, business_date, name, reason, at),
        )

    def clearing_files(self, business_date: str) -> list[ClearingFileStatus]:
        rows = self._db.execute(
            "SELECT bank, business_date, name, status, reason, records, read_at "
            "FROM clearing_file WHERE business_date = ? ORDER BY bank",
            (business_date,),
        )
        return [ClearingFileStatus(**dict(row)) for row in rows]

    # -- settling a date -------------------------------------------------------------

    def settle(self, business_date: str, merchants: Sequence[MerchantTerms], *, at: float) -> bool:
        """Settles a closed date, in one transaction: True if it did now, False if it
        was settled before (then nothing is posted again). Banks whose file for the
        date is missing or rejected simply have no records: their transactions are
        held as ``switch_only``."""
        db = self._db
        self._attach_journal()
        with _transaction(db):
            row = db.execute(
                "SELECT closed_at, settled_at FROM business_day WHERE business_date = ?",
                (business_date,),
            ).fetchone()
            if row is None or row[0] is None:
                raise SettlementError(f"business date {business_date} is not closed")
            if row[1] is not None:
                return False
            try:
                _settle(db, business_date, merchants, self.on_step)
            except sqlite3.Error as exc:  # rolled back whole: nothing of it stays
                raise SettlementError(f"settling {business_date} failed: {exc}") from exc
            db.execute(
                "UPDATE business_day SET settled_at = ? WHERE business_date = ?",
                (at, business_date),
            )
        return True

    def record_files_written(self, business_date: str, at: float) -> None:
        self._db.execute(
            "UPDATE business_day SET files_at = ? WHERE business_date = ?", (at, business_date)
        )

    def payout_lines(self, business_date: str) -> list[PayoutLine]:
        rows = self._db.execute(
            f"SELECT {', '.join(PayoutLine.__struct_fields__)} FROM payout "
            "WHERE business_date = ? ORDER BY merchant_id",
            (business_date,),
        )
        return [PayoutLine(**dict(row)) for row in rows]

    def recon_lines(self, business_date: str) -> list[ReconLine]:
        rows = self._db.execute(
            f"SELECT {', '.join(ReconLine.__struct_fields__)} FROM recon_line "
            "WHERE business_date = ? ORDER BY rrn, category, terminal_id",
            (business_date,),
        )
        return [ReconLine(**dict(row)) for row in rows]

    # -- reversals decided -----------------------------------------------------------

    def pending_reversal_orders(self) -> list[ReversalOrder]:
        rows = self._db.execute(
            f"SELECT {', '.join(ReversalOrder.__struct_fields__)} FROM reversal_order "
            "WHERE handed_at IS NULL ORDER BY business_date, rrn"
        )
        return [ReversalOrder(**{**dict(row), "known": bool(row["known"])}) for row in rows]

    def reversal_orders_handed(self, rrns: Sequence[str], at: float) -> None:
        with _transaction(self._db):
            self._db.executemany(
                "UPDATE reversal_order SET handed_at = ? WHERE rrn = ?", ((at, rrn) for rrn in rrns)
            )

    # -- what the operator reads -----------------------------------------------------

    def status(self, business_date: str, banks: Sequence[str]) -> SettlementStatus:
        db = self._db
        day = db.execute(
            "SELECT closed_at, forced, settled_at, files_at FROM business_day "
            "WHERE business_date = ?",
            (business_date,),
        ).fetchone()
        files = self.clearing_files(business_date)
        accepted = {status.bank for status in files if status.status == "accepted"}
        counts = [
            CategoryCount(
                category=row[0],
                action=row[1],
                count=row[2],
                switch_fen=row[3] or 0,
                bank_fen=row[4] or 0,
            )
            for row in db.execute(_CATEGORY_COUNTS, {"d": business_date})
        ]
        sums = db.execute(
            "SELECT count(*), sum(sales_fen), sum(refunds_fen), sum(fees_fen), sum(payout_fen), "
            "sum(carried_out_fen), sum(held_fen) FROM payout WHERE business_date = ?",
            (business_date,),
        ).fetchone()
        queued = db.execute(
            "SELECT count(*) FROM reversal_order WHERE business_date = ?", (business_date,)
        ).fetchone()[0]
        return SettlementStatus(
            business_date=business_date,
            closed_at=day["closed_at"] if day is not None else None,
            forced=bool(day["forced"]) if day is not None else False,
            settled_at=day["settled_at"] if day is not None else None,
            files_written_at=day["files_at"] if day is not None else None,
            cutovers=self.cutovers(business_date),
            files=files,
            missing=[bank for bank in banks if bank not in accepted],
            categories=counts,
            merchants=sums[0],
            sales_fen=sums[1] or 0,
            refunds_fen=sums[2] or 0,
            fees_fen=sums[3] or 0,
            payout_fen=sums[4] or 0,
            carried_out_fen=sums[5] or 0,
            held_fen=sums[6] or 0,
            reversals_queued=queued,
        )

    def latest_closed_date(self) -> str | None:
        row = self._db.execute(
            "SELECT max(business_date) FROM business_day WHERE closed_at IS NOT NULL"
        ).fetchone()
        return row[0]  # type: ignore[no-any-return]

    def ledger_balances(self, account: str | None = None) -> list[LedgerBalance]:
        where, parameters = ("WHERE account = ?", (account,)) if account else ("", ())
        rows = self._db.execute(
            f"SELECT account, sum(debit_fen), sum(credit_fen) FROM ledger_entry {where} "
            "GROUP BY account ORDER BY account",
            parameters,
        )
        return [LedgerBalance(account=row[0], debit_fen=row[1], credit_fen=row[2]) for row in rows]

    def ledger_totals(self) -> tuple[int, int]:
        """All debits and all credits ever posted: equal, or the store is damaged."""
        row = self._db.execute(
            "SELECT coalesce(sum(debit_fen), 0), coalesce(sum(credit_fen), 0) FROM ledger_entry"
        ).fetchone()
        return row[0], row[1]


# -- the settlement of one date, statement by statement ----------------------------------


def _settle(
    db: sqlite3.Connection,
    day: str,
    merchants: Sequence[MerchantTerms],
    on_step: StepHook | None = None,
) -> None:
    """Everything a date's settlement writes, inside the caller's transaction."""
    parameters = {"d": day, "d_1": _day(day, -1), "d_hold": _day(day, -HOLD_DATES),
                  "hold": HOLD_DATES}  # fmt: skip
    for statement in _TEMP_TABLES:
        db.execute(statement)
    db.executemany(
        "INSERT INTO temp.terms VALUES (?, ?, ?, ?, ?)",
        (
            (terms.merchant_id, terms.account, terms.mdr_bps, terms.fee_min_fen, terms.fee_cap_fen)
            for terms in merchants
        ),
    )
    if not any(terms.merchant_id == DEFAULT_PROFILE for terms in merchants):
        db.execute("INSERT INTO temp.terms VALUES ('*', '', 0, 0, 0)")
    for statement in _SETTLE_STEPS:
        started = time.perf_counter()
        db.execute(statement, parameters)
        if on_step is not None:
            on_step(statement, time.perf_counter() - started)
    started = time.perf_counter()
    unbalanced = db.execute(_UNBALANCED, parameters).fetchone()
    if on_step is not None:
        on_step(_UNBALANCED, time.perf_counter() - started)
    if unbalanced is not None:
        raise LedgerUnbalanced(f"posting {unbalanced[0]} is off by {unbalanced[1]} fen")
    for statement in _DROP_TEMP_TABLES:
        db.execute(statement)


_CATEGORY_COUNTS: Final = (
    "WITH pair AS (SELECT v.rrn AS void_rrn, s.rrn AS sale_rrn FROM settlement_item v"
    " JOIN settlement_item s ON s.rrn = v.original_rrn"
    " WHERE v.settled_on = :d AND v.kind = 'void' AND v.action = 'paid'"
    "  AND s.settled_on = :d AND s.kind = 'sale' AND s.action = 'paid'),"
    " cancelled (rrn) AS (SELECT void_rrn FROM pair UNION SELECT sale_rrn FROM pair) "
    "SELECT category, CASE WHEN action = 'paid' AND rrn IN (SELECT rrn FROM cancelled)"
    " THEN 'cancelled' ELSE action END AS shown, count(*), sum(switch_fen), sum(bank_fen) "
    "FROM ("
    " SELECT category, action, rrn, switch_fen, bank_fen FROM recon_line"
    "  WHERE business_date = :d"
    " UNION ALL SELECT 'matched', action, rrn, switch_fen, bank_fen FROM settlement_item"
    "  WHERE settled_on = :d AND category = 'matched') "
    "GROUP BY category, shown ORDER BY category, shown"
)
"""A date's transactions by category and action, as its status shows them: a sale and
its void paid by the same settlement cancel out (step 7), so both show ``cancelled``."""

_UNBALANCED: Final = (
    "SELECT posting, sum(debit_fen) - sum(credit_fen) FROM ledger_entry "
    "WHERE business_date = :d GROUP BY posting HAVING sum(debit_fen) != sum(credit_fen) "
    "LIMIT 1"
)

_TEMP_TABLES: Final = (
    "DROP TABLE IF EXISTS temp.terms",
    "CREATE TEMP TABLE terms (merchant_id TEXT PRIMARY KEY, account TEXT, mdr_bps INTEGER, "
    "fee_min INTEGER, fee_cap INTEGER)",
    "DROP TABLE IF EXISTS temp.cand",
    """CREATE TEMP TABLE cand (
        rrn TEXT PRIMARY KEY, bank TEXT, kind TEXT, txn_date TEXT, merchant_id TEXT,
        terminal_id TEXT, masked_pan TEXT, amount INTEGER, original_rrn TEXT, stands INTEGER
    )""",
    "DROP TABLE IF EXISTS temp.seen",
    "CREATE TEMP TABLE seen (rrn TEXT PRIMARY KEY, amount02 INTEGER, date02 TEXT, has04 INTEGER)",
    "DROP TABLE IF EXISTS temp.decided",
    """CREATE TEMP TABLE decided (
        rrn TEXT PRIMARY KEY, bank TEXT, kind TEXT, txn_date TEXT, merchant_id TEXT,
        terminal_id TEXT, masked_pan TEXT, original_rrn TEXT, switch_fen INTEGER,
        bank_fen INTEGER, category TEXT, action TEXT, paid_fen INTEGER
    )""",
    # The voids paid, by the sale they void: step 7 asks of each sale paid whether one
    # voids it (without this, a scan of every verdict for every sale).
    "CREATE INDEX temp.decided_void_of ON decided (original_rrn) "
    "WHERE kind = 'void' AND action = 'paid'",
    "DROP TABLE IF EXISTS temp.counted",
    """CREATE TEMP TABLE counted (
        rrn TEXT PRIMARY KEY, bank TEXT, merchant_id TEXT, role TEXT, paid_fen INTEGER,
        fee INTEGER
    )""",
    "DROP TABLE IF EXISTS temp.merchant_day",
    """CREATE TEMP TABLE merchant_day (
        merchant_id TEXT PRIMARY KEY, account TEXT, sales_count INTEGER, sales_fen INTEGER,
        refunds_count INTEGER, refunds_fen INTEGER, fees_fen INTEGER, held_fen INTEGER,
        carried_in_fen INTEGER
    )""",
)
_DROP_TEMP_TABLES: Final = tuple(
    f"DROP TABLE temp.{name}"
    for name in ("terms", "cand", "seen", "decided", "counted", "merchant_day")
)

_FEE = """min(
    CASE WHEN t.fee_cap > 0 THEN t.fee_cap ELSE 9223372036854775807 END,
    max(t.fee_min, (d.paid_fen * t.mdr_bps + 5000) / 10000)
)"""
"""A sale's fee (settlement.md): its amount x bps / 10000 rounded half up, raised to
the minimum, lowered to the cap (as MerchantTerms.fee)."""


def _postings(source: str, key: str, *postings: tuple[str, str, str, str]) -> str:
    """One INSERT of ledger lines: for each row of ``source`` (one per ``key``) and
    each (posting, amount, debit account, credit account) whose amount is positive, a
    debit line and a credit line of that amount, under the posting's name."""
    lines = []
    for number, (posting, amount, debit, credit) in enumerate(postings):
        name = f"'{posting}:' || " + " || ':' || ".join(key.split(", "))
        for side, account, debit_fen, credit_fen in ((0, debit, amount, "0"),
                                                     (1, credit, "0", amount)):  # fmt: skip
            lines.append(
                f"SELECT {key}, {2 * number + side} AS line, {name} AS posting, "
                f"{account} AS account, {debit_fen} AS debit, {credit_fen} AS credit "
                f"FROM {source}_sums WHERE {amount} > 0"
            )
    return (
        f"INSERT INTO ledger_entry (business_date, posting, account, debit_fen, credit_fen) "
        f"WITH {source}_sums AS ({_SUMS[source]}) "
        f"SELECT :d, posting, account, debit, credit FROM ({' UNION ALL '.join(lines)}) "
        f"ORDER BY {key}, line"
    )


_SUMS: Final = {
    "counted": "SELECT bank, merchant_id, "
    "sum(CASE WHEN role = 'sale' THEN paid_fen ELSE 0 END) AS sales_fen, "
    "sum(CASE WHEN role = 'refund' THEN paid_fen ELSE 0 END) AS refunds_fen "
    "FROM counted GROUP BY bank, merchant_id",
    "payout": "SELECT * FROM payout WHERE business_date = :d",
}
"""What the postings are made of: per bank and merchant, the date's paid sales and
refunds; per merchant, its payout row."""


_SETTLE_STEPS: Final = (
    # 1. The candidates: the date's transactions that went to a bank (declined, timed
    #    out and reversed ones included: the bank may say otherwise), and the sales held
    #    by earlier dates, looked for again.
    """INSERT INTO cand
    SELECT rrn, bank, kind, business_date, merchant_id, terminal_id, pan_masked, amount,
           original_rrn, state = 'approved' AND reversed = 0
    FROM j.txn
    WHERE business_date = :d AND kind IN ('sale', 'void', 'refund')
      AND state IN ('approved', 'declined', 'no_answer', 'sending')""",
    """INSERT OR IGNORE INTO cand
    SELECT t.rrn, t.bank, t.kind, t.business_date, t.merchant_id, t.terminal_id, t.pan_masked,
           t.amount, t.original_rrn, t.state = 'approved' AND t.reversed = 0
    FROM settlement_item s JOIN j.txn t ON t.rrn = s.rrn
    WHERE s.state = 'held' AND t.business_date < :d""",
    # 2. What the banks' files say of each: its own record (by RRN and MTI class) in
    #    the file of its date or of the date before (timing) and, for one held, the
    #    files since; and whether a reversal of it is listed. (CROSS JOIN fixes SQLite's
    #    join order: each candidate looks its records up by RRN; the other way round
    #    reads the records of every date up to this one.)
    """INSERT INTO seen
    SELECT c.rrn,
           max(CASE WHEN r.mti_class = '02' THEN r.amount END),
           max(CASE WHEN r.mti_class = '02' THEN r.file_date END),
           max(r.mti_class = '04')
    FROM cand c CROSS JOIN clearing_record r ON r.rrn = c.rrn AND r.bank = c.bank
    WHERE r.file_date BETWEEN date(c.txn_date, '-1 day') AND :d
    GROUP BY c.rrn""",
    # 3. The verdicts, as settlement.md's table; what is paid, at the bank's amount (the
    #    same as the switch's, but for a mismatch), in the same pass (an UPDATE of every
    #    verdict after it cost a second pass, and on PostgreSQL a new version of each row).
    """INSERT INTO decided
    SELECT rrn, bank, kind, txn_date, merchant_id, terminal_id, masked_pan, original_rrn,
           switch_fen, bank_fen, category, action,
           CASE WHEN action = 'paid' THEN bank_fen END
    FROM (
        SELECT w.*, CASE category
            WHEN 'matched' THEN CASE WHEN switch_fen IS NULL THEN 'not_paid' ELSE 'paid' END
            WHEN 'switch_only' THEN CASE WHEN julianday(:d) - julianday(txn_date) >= :hold
                                         THEN 'reversal_queued' ELSE 'held' END
            WHEN 'bank_only' THEN 'reversal_queued'
            ELSE 'paid' END AS action
        FROM (
            SELECT v.*, CASE
                WHEN switch_fen IS NOT NULL AND bank_fen IS NOT NULL THEN CASE
                    WHEN bank_fen != switch_fen THEN 'amount_mismatch'
                    WHEN date02 != txn_date THEN 'timing'
                    ELSE 'matched' END
                WHEN switch_fen IS NOT NULL THEN 'switch_only'
                WHEN bank_fen IS NOT NULL THEN 'bank_only'
                ELSE 'matched' END AS category
            FROM (
                SELECT c.*, s.date02,
                       CASE WHEN c.stands THEN c.amount END AS switch_fen,
                       CASE WHEN s.amount02 IS NOT NULL AND NOT s.has04 THEN s.amount02 END
                           AS bank_fen
                FROM cand c LEFT JOIN seen s ON s.rrn = c.rrn
            ) AS v
        ) AS w
    ) AS x""",
    # 4. Records the switch never sent (standing: no reversal of them listed), in the
    #    files of the dates this settlement looks at.
    """INSERT INTO decided
    SELECT r.rrn, r.bank, 'unknown', r.file_date, r.merchant_id, r.terminal_id, r.masked_pan,
           NULL, NULL, r.amount, 'bank_only', 'reversal_queued', NULL
    FROM clearing_record r
    WHERE r.file_date BETWEEN :d_hold AND :d AND r.mti_class = '02'
      AND NOT EXISTS (SELECT 1 FROM j.txn t WHERE t.rrn = r.rrn)
      AND NOT EXISTS (SELECT 1 FROM settlement_item s WHERE s.rrn = r.rrn)
      AND NOT EXISTS (SELECT 1 FROM clearing_record x
                      WHERE x.rrn = r.rrn AND x.bank = r.bank AND x.mti_class = '04')
    ON CONFLICT (rrn) DO NOTHING""",
    # 5. The reconciliation: every verdict other than matched.
    """INSERT INTO recon_line
    SELECT :d, category, bank, rrn, terminal_id, merchant_id, masked_pan, switch_fen, bank_fen,
           action
    FROM decided WHERE category != 'matched'""",
    # A terminal's batch upload, against the journal: approvals the terminal lists that
    # the journal does not have standing, and standing ones it left out, paid as the
    # bank's file decides: this settlement's verdict, or an earlier one's (the date's
    # batches first, CROSS JOIN, then their transactions: not the whole journal).
    """INSERT INTO recon_line
    SELECT :d, 'terminal_only', coalesce(t.bank, ''), coalesce(t.rrn, ''), u.terminal_id,
           u.merchant_id, coalesce(t.pan_masked, ''), NULL, NULL, 'not_paid'
    FROM j.batch_settlement b
    JOIN j.batch_upload u ON u.terminal_id = b.terminal_id AND u.merchant_id = b.merchant_id
                          AND u.batch = b.batch
    LEFT JOIN j.txn t ON t.terminal_id = u.terminal_id AND t.merchant_id = u.merchant_id
                      AND t.batch = u.batch AND t.stan = u.stan
                      AND t.kind = CASE u.kind WHEN '22' THEN 'sale' ELSE 'refund' END
    WHERE b.business_date = :d AND b.upload_count IS NOT NULL
      AND (t.rrn IS NULL OR t.state != 'approved' OR t.reversed = 1
           OR (t.kind = 'sale' AND t.voided = 1))""",
    """INSERT INTO recon_line
    SELECT :d, 'terminal_missing', t.bank, t.rrn, t.terminal_id, t.merchant_id, t.pan_masked,
           t.amount, NULL, coalesce(v.action, s.action, 'paid')
    FROM j.batch_settlement b
    CROSS JOIN j.txn t ON t.terminal_id = b.terminal_id AND t.merchant_id = b.merchant_id
                       AND t.batch = b.batch
    LEFT JOIN decided v ON v.rrn = t.rrn
    LEFT JOIN settlement_item s ON s.rrn = t.rrn
    WHERE b.business_date = :d AND b.upload_count IS NOT NULL
      AND t.state = 'approved' AND t.reversed = 0
      AND ((t.kind = 'sale' AND t.voided = 0) OR t.kind = 'refund')
      AND NOT EXISTS (SELECT 1 FROM j.batch_upload u
                      WHERE u.terminal_id = t.terminal_id AND u.merchant_id = t.merchant_id
                        AND u.batch = t.batch AND u.stan = t.stan
                        AND u.kind = CASE t.kind WHEN 'sale' THEN '22' ELSE '25' END)""",
    # 6. Each verdict kept: held ones are looked for again by the next settlements.
    """INSERT OR REPLACE INTO settlement_item
    SELECT rrn, bank, kind, txn_date, merchant_id, terminal_id, masked_pan, original_rrn,
           switch_fen, bank_fen, paid_fen, category, action,
           CASE action WHEN 'held' THEN 'held' ELSE 'final' END, :d
    FROM decided""",
    # 7. What is paid counts as a sale or a refund; a sale voided in the same settlement
    #    and its void cancel out (no fee); a later void returns money like a refund.
    """INSERT INTO counted
    SELECT d.rrn, d.bank, d.merchant_id, role, d.paid_fen,
           CASE WHEN role = 'sale' THEN {fee} ELSE 0 END
    FROM (
        SELECT p.*, CASE
            WHEN p.kind = 'sale' AND EXISTS (SELECT 1 FROM decided v WHERE v.action = 'paid'
                AND v.kind = 'void' AND v.original_rrn = p.rrn) THEN 'cancelled'
            WHEN p.kind = 'void' AND EXISTS (SELECT 1 FROM decided s WHERE s.action = 'paid'
                AND s.kind = 'sale' AND s.rrn = p.original_rrn) THEN 'cancelled'
            WHEN p.kind = 'sale' THEN 'sale'
            ELSE 'refund' END AS role
        FROM decided p WHERE p.action = 'paid'
    ) AS d
    JOIN terms t ON t.merchant_id = CASE
        WHEN EXISTS (SELECT 1 FROM terms m WHERE m.merchant_id = d.merchant_id)
        THEN d.merchant_id ELSE '*' END""".replace("{fee}", _FEE),
    # 8. Per merchant: its paid sales and refunds, fees, held sales and what earlier
    #    dates left owing.
    """INSERT INTO merchant_day
    SELECT m.merchant_id,
           coalesce((SELECT nullif(account, '') FROM terms WHERE merchant_id = m.merchant_id),
                    (SELECT nullif(account, '') FROM terms WHERE merchant_id = '*'),
                    m.merchant_id),
           coalesce(c.sales_count, 0), coalesce(c.sales_fen, 0), coalesce(c.refunds_count, 0),
           coalesce(c.refunds_fen, 0), coalesce(c.fees_fen, 0), coalesce(h.held_fen, 0),
           coalesce((SELECT p.carried_out_fen FROM payout p
                     WHERE p.merchant_id = m.merchant_id AND p.business_date < :d
                     ORDER BY p.business_date DESC LIMIT 1), 0)
    FROM (
        SELECT merchant_id FROM counted
        UNION SELECT merchant_id FROM settlement_item WHERE state = 'held' AND kind = 'sale'
        UNION SELECT p.merchant_id FROM payout p
              WHERE p.carried_out_fen != 0 AND p.business_date = (
                  SELECT max(q.business_date) FROM payout q
                  WHERE q.merchant_id = p.merchant_id AND q.business_date < :d)
    ) AS m
    LEFT JOIN (
        SELECT merchant_id,
               sum(role = 'sale') AS sales_count,
               sum(CASE WHEN role = 'sale' THEN paid_fen ELSE 0 END) AS sales_fen,
               sum(role = 'refund') AS refunds_count,
               sum(CASE WHEN role = 'refund' THEN paid_fen ELSE 0 END) AS refunds_fen,
               sum(fee) AS fees_fen
        FROM counted GROUP BY merchant_id
    ) AS c ON c.merchant_id = m.merchant_id
    LEFT JOIN (
        SELECT merchant_id, sum(switch_fen) AS held_fen FROM settlement_item
        WHERE state = 'held' AND kind = 'sale' GROUP BY merchant_id
    ) AS h ON h.merchant_id = m.merchant_id""",
    """INSERT INTO payout
    SELECT :d, merchant_id, account, sales_count, sales_fen, refunds_count, refunds_fen,
           fees_fen, held_fen, carried_in_fen, net,
           CASE WHEN net > 0 THEN net ELSE 0 END, CASE WHEN net > 0 THEN 0 ELSE net END
    FROM (SELECT *, sales_fen - refunds_fen - fees_fen + carried_in_fen AS net
          FROM merchant_day)""",
    # 9. The ledger: each amount paid as a posting of a debit and a credit line.
    #    Banks owe the sales they approved (bank:), merchants are owed them (merchant:);
    #    refunds the other way; fees move from the merchant to fees:; a carried
    #    negative balance moves between merchant: and carried:; payouts leave to
    #    payouts: (the money sent).
    _postings(
        "counted",
        "bank, merchant_id",
        ("sales", "sales_fen", "'bank:' || bank", "'merchant:' || merchant_id"),
        ("refunds", "refunds_fen", "'merchant:' || merchant_id", "'bank:' || bank"),
    ),
    _postings(
        "payout",
        "merchant_id",
        ("fees", "fees_fen", "'merchant:' || merchant_id", "'fees'"),
        ("carry_in", "-carried_in_fen", "'merchant:' || merchant_id", "'carried:' || merchant_id"),
        ("payout", "payout_fen", "'merchant:' || merchant_id", "'payouts'"),
        (
            "carry_out",
            "-carried_out_fen",
            "'carried:' || merchant_id",
            "'merchant:' || merchant_id",
        ),
    ),
    # 10. The reversals decided: of the switch's own transactions, and of records the
    #     switch never sent (with what the bank's file says of them; the verdicts first,
    #     CROSS JOIN, not every date's records).
    """INSERT OR IGNORE INTO reversal_order (rrn, bank, business_date, reason, known)
    SELECT rrn, bank, :d,
           CASE category WHEN 'bank_only' THEN 'settlement: bank_only'
                         ELSE 'settlement: switch_only after ' || :hold || ' dates' END, 1
    FROM decided WHERE action = 'reversal_queued' AND kind != 'unknown'""",
    """INSERT OR IGNORE INTO reversal_order (rrn, bank, business_date, reason, known, mti,
        processing_code, stan, transmission, amount, currency, terminal_id, merchant_id,
        masked_pan)
    SELECT r.rrn, r.bank, :d, 'settlement: bank_only, never sent by the switch', 0, r.mti,
           r.processing_code, r.stan, r.transmission, r.amount, r.currency, r.terminal_id,
           r.merchant_id, r.masked_pan
    FROM decided d CROSS JOIN clearing_record r ON r.rrn = d.rrn AND r.bank = d.bank
                                               AND r.file_date = d.txn_date
                                               AND r.mti_class = '02'
    WHERE d.kind = 'unknown'""",
)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


def _migrate(connection: sqlite3.Connection) -> None:
    version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise SettlementError(
            f"settlement store schema {version} is newer than this switch ({len(MIGRATIONS)})"
        )
    for number in range(version, len(MIGRATIONS)):
        connection.executescript(
            f"BEGIN;\n{MIGRATIONS[number]}\nPRAGMA user_version = {number + 1};\nCOMMIT;"
        )
