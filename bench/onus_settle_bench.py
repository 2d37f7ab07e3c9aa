"""The settlement of a business date of on-us payments (wallet.md, "Settlement and
files"): ``python -m bench.onus_settle_bench [--payments 1000000] [--merchants 10000]``
(SQLite: journal, ledger and settlement store as files in a folder of its own).

Built first, not timed, in this process: the journal's on-us records written through
the journal's own writes (a payment-code sale each, 1% voided, 1% partly refunded, 2%
declined), and the on-us ledger's transfers for them (wallets funded, each payment,
void and refund posted) loaded in bulk into the ledger store's tables, as its steps
would leave them (fsyncs off, no history rows: settlement reads neither); one payment in
a thousand is missing on the ledger and one in a thousand posted for a fen more, so
the reconciliation has ``ledger_mismatch`` lines to write and corrections to post.

Then a process of its own settles the date as the switch does
(``SettlementService.settle``: the settlement's SQL against the attached journal and
ledger, the payout and reconciliation files, the on-us fees, payouts and corrections
handed to the ledger store), timed from the call to its return;
its peak resident set (VmHWM) is read just after. Target: 60 s and 1 GB for a million
payments. Then, not timed, it checks what it found: the payout sums, the mismatches,
every merchant's on-us account back at zero. One JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any, Final

import trio

from bench.procstat import memory_mb
from switch.core.book import TxnRecord
from switch.core.calendar import BusinessCalendar, DateClosed, parse_local_time
from switch.core.changes import TxnStarted
from switch.core.merchants import MerchantBook, MerchantTerms
from switch.net.settlement import SettlementService
from switch.store.sqlite import JournalFile, SqliteJournal
from switch.store.sqlite.ledger import SqliteLedgerStore
from switch.store.sqlite.settlement import SqliteSettlementStore
from switch.store.sqlite.sql import writes_of

STEPS: list[tuple[str, float]] = []
"""Each statement of the settlement's SQL and its seconds (the store's ``on_step``)."""
DAY: Final = "2026-12-07"
CLOSED_AT: Final = 1_765_119_600.0  # 2026-12-07 23:00 +08:00
CUSTOMERS: Final = 10_000
MDR_BPS: Final = 38
WRITE_CHUNK: Final = 20_000
CODE_MASK: Final = "882750******0572"
_HMAC: Final = b"\x01" + bytes(range(32))


def _merchant(index: int) -> str:
    return f"8981{index:011d}"


def _record(rrn: str, kind: str, amount: int, merchant: str, **fields: Any) -> TxnRecord:
    values: dict[str, Any] = {
        "kind": kind, "rrn": rrn, "bank": "on-us", "channel": "pos", "request_mti": "0200",
        "terminal_id": "POS00001", "merchant_id": merchant, "stan": rrn[-6:],
        "batch": "000001", "local_date": "1207", "pan_masked": CODE_MASK, "pan_hmac": _HMAC,
        "pan_sealed": b"", "amount": amount, "currency": "156",
        "bank_processing_code": "000000", "business_date": DAY, "state": "approved",
        "code": "00", "auth_code": "Q4M7P2",
    }  # fmt: skip
    values.update(fields)
    return TxnRecord(**values)


class Day:
    """What the builder made, and what settling it must find."""

    def __init__(self) -> None:
        self.records: list[TxnRecord] = []
        self.transfers: list[tuple[Any, ...]] = []
        self.sums: dict[str, list[int]] = {}
        """Account -> [debits posted, credits posted]."""
        self.sales_fen = self.refunds_fen = self.fees_fen = 0
        self.mismatches = 0

    def move(self, key: tuple[str, str, str], debit: str, credit: str, amount: int,
             kind: str, rrn: str, merchant: str) -> None:  # fmt: skip
        self.transfers.append((*key, debit, credit, amount, kind, rrn, merchant, "posted",
                               amount, 1.0, 1.0))  # fmt: skip
        self.sums.setdefault(debit, [0, 0])[0] += amount
        self.sums.setdefault(credit, [0, 0])[1] += amount


def plan_day(payments: int, merchants: int, seed: int) -> Day:
    rng = random.Random(seed)
    day = Day()
    for customer in range(CUSTOMERS):
        day.move(("bench", f"topup-{customer}", "topup"), "bank_clearing:icbc",
                 f"wallet:B{customer:09d}", 10**11, "topup", "", "")  # fmt: skip
    for n in range(payments):
        merchant = _merchant(n % merchants)
        wallet = f"wallet:B{rng.randrange(CUSTOMERS):09d}"
        amount = rng.randrange(100, 200_000)
        rrn = f"7{n:011d}"
        principal = f"pos:{merchant}:POS00001"
        draw = rng.random()
        fate = ("declined" if draw < 0.02 else "voided" if draw < 0.03
                else "refunded" if draw < 0.04 else "stands")  # fmt: skip
        fault = rng.random()
        dropped = fate == "stands" and fault < 0.001  # the ledger lost it
        posted = amount + 1 if fate == "stands" and 0.001 <= fault < 0.002 else amount
        day.mismatches += fate == "stands" and fault < 0.002
        if fate == "declined":
            day.records.append(_record(rrn, "onus_sale", amount, merchant, state="declined",
                                       code="51", auth_code=None))  # fmt: skip
            continue
        refunded = max(1, amount // 3) if fate == "refunded" else 0
        day.records.append(_record(rrn, "onus_sale", amount, merchant,
                                   voided=fate == "voided", refunded=refunded))  # fmt: skip
        if not dropped:
            day.move((principal, rrn, "pay"), wallet, f"merchant:{merchant}", posted, "pay",
                     rrn, merchant)  # fmt: skip
        if fate in ("voided", "refunded"):
            back = amount if fate == "voided" else max(1, amount // 3)
            kind = "onus_void" if fate == "voided" else "onus_refund"
            other = f"8{n:011d}"
            day.records.append(_record(other, kind, back, merchant, original_rrn=rrn))
            leg = "void" if fate == "voided" else "refund"
            day.move((principal, other, leg), f"merchant:{merchant}", wallet, back, leg,
                     other, merchant)  # fmt: skip
        if fate == "voided":
            continue  # it and its void cancel out: no fee
        fee = min(2600, (amount * MDR_BPS + 5000) // 10000)
        day.sales_fen += amount
        day.fees_fen += fee
        if fate == "refunded":
            day.refunds_fen += max(1, amount // 3)
    return day


def build(folder: Path, payments: int, merchants: int, seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    day = plan_day(payments, merchants, seed)
    journal = JournalFile(folder / "journal.sqlite3", synchronous="OFF")
    journal.open()
    try:
        for start in range(0, len(day.records), WRITE_CHUNK):
            journal.apply(
                write
                for record in day.records[start : start + WRITE_CHUNK]
                for write in writes_of(TxnStarted(record=record, at=CLOSED_AT - 3600))
            )
    finally:
        journal.close()
    ledger = SqliteLedgerStore(folder / "ledger.sqlite3")
    ledger.open()  # its tables, as the switch makes them
    ledger.close()
    # Bulk, as the ledger's steps would have left the rows (bench only: the switch
    # writes these tables through switch/store alone).
    db = sqlite3.connect(folder / "ledger.sqlite3", isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO ledger_account (name, type, unit, debit_cap, debits_posted, "
        "credits_posted) VALUES (?, ?, 'fen', ?, ?, ?)",
        (
            (name, _type(name), 0 if name.startswith("wallet:") else None, sums[0], sums[1])
            for name, sums in day.sums.items()
        ),
    )
    db.executemany(
        "INSERT INTO ledger_transfer (principal, request_id, leg, debit_account, "
        "credit_account, amount, kind, rrn, merchant_id, state, posted_amount, created_at, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        day.transfers,
    )
    db.execute("COMMIT")
    db.close()
    (folder / "expected.json").write_text(json.dumps({
        "payments": payments, "merchants": merchants, "records": len(day.records),
        "sales_fen": day.sales_fen, "refunds_fen": day.refunds_fen,
        "fees_fen": day.fees_fen, "mismatches": day.mismatches,
    }))  # fmt: skip
    return {"build_s": round(time.perf_counter() - started, 1), "records": len(day.records)}


def _type(name: str) -> str:
    return {"wallet": "liability", "merchant": "liability"}.get(name.split(":")[0], "asset")


async def _settle(folder: Path, merchants: int) -> tuple[float, Any, SqliteLedgerStore, Any]:
    store = SqliteSettlementStore(folder / "settlement.sqlite3", folder / "journal.sqlite3")
    store.on_step = lambda statement, seconds: STEPS.append(
        (" ".join(statement.split())[:70], round(seconds, 2))
    )
    store.open()
    store.record_close(DateClosed(date.fromisoformat(DAY), CLOSED_AT, False))
    ledger = SqliteLedgerStore(folder / "ledger.sqlite3")
    ledger.open()
    journal = SqliteJournal(JournalFile(folder / "journal.sqlite3"))
    terms = [
        MerchantTerms(merchant_id=_merchant(n), name=f"M{n}", mcc="5411", mdr_bps=MDR_BPS,
                      fee_cap_fen=2600, account=f"ACCT{n:08d}")
        for n in range(merchants)
    ]  # fmt: skip
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        service = SettlementService(
            store=store, journal=journal,
            calendar=BusinessCalendar(cutoff=parse_local_time("23:00"), utc_offset_h=8,
                                      closes=store.closes()),
            merchants=MerchantBook(terms), connectors={},
            clearing_dir=lambda bank: folder / "clearing", out_dir=folder / "out",
            banks=lambda: [], institution_of=lambda bank: "0", settle_deadline="03:00",
            utc_offset_h=8, nudge=lambda bank: None, clock=lambda: CLOSED_AT + 60,
            ledger=ledger,
        )  # fmt: skip
        started = time.perf_counter()
        status = await service.settle(DAY)
        seconds = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return seconds, status, ledger, store


def settle(folder: Path) -> dict[str, Any]:
    expected = json.loads((folder / "expected.json").read_text())
    seconds, status, ledger, store = trio.run(_settle, folder, expected["merchants"])
    peak = memory_mb(os.getpid())[1]
    problems = []
    found = {"sales_fen": status.sales_fen, "refunds_fen": status.refunds_fen,
             "fees_fen": status.fees_fen}  # fmt: skip
    for name, value in found.items():
        if value != expected[name]:
            problems.append(f"{name}: {value}, expected {expected[name]}")
    mismatches = sum(c.count for c in status.categories if c.category == "ledger_mismatch")
    if mismatches < expected["mismatches"]:
        problems.append(f"ledger_mismatch: {mismatches}, at least {expected['mismatches']}")
    if store.pending_ledger_orders():
        problems.append("ledger orders left pending")
    left = [
        view.balances.name
        for view in ledger.accounts()
        if view.balances.name.startswith("merchant:") and view.balances.balance != 0
    ]
    if left:
        problems.append(f"{len(left)} merchants' on-us accounts not at zero, e.g. {left[0]}")
    ledger.close()
    store.close()
    return {
        "backend": "sqlite", "payments": expected["payments"], "records": expected["records"],
        "merchants": expected["merchants"], "seconds": round(seconds, 2),
        "rate_per_s": round(expected["records"] / seconds), "peak_rss_mb": round(peak),
        "ledger_mismatch": mismatches, "payout_fen": status.payout_fen,
        "sql_s": round(sum(seconds for _, seconds in STEPS), 2),
        "slowest_steps": sorted(STEPS, key=lambda step: -step[1])[:5],
        "ok": not problems, "problems": problems,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--merchants", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--folder", type=Path, help="build here (default: a temp dir)")
    parser.add_argument("--settle-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.settle_only is not None:  # the child: settle a built day
        print(json.dumps(settle(args.settle_only)))
        return 0
    folder = args.folder or Path(tempfile.mkdtemp(prefix="onus-settle-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    built = build(folder, args.payments, args.merchants, args.seed)
    child = subprocess.run(
        [sys.executable, "-m", "bench.onus_settle_bench", "--settle-only", str(folder)],
        capture_output=True, check=False, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    if child.returncode != 0:
        sys.stderr.write(child.stderr.decode(errors="replace")[-3000:])
        return 1
    result = {**json.loads(child.stdout.decode().splitlines()[-1]), **built}
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
