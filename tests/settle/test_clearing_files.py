"""What a bank's clearing folder may hold besides a clearing file, under the running
settlement service and trio's MockClock, over real files: a link to ``/dev/zero``, a
FIFO, a folder, a file over ``[settlement] max_clearing_file_bytes`` are each rejected
with their reason, the service goes on, the date settles at its deadline with the
good file it has, and cancelling the service (what SIGTERM does) ends it. A card
number a bank writes into the masked PAN column reaches none of the switch's files."""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import sqlite3
import stat
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from time import time as clock_now
from typing import Any

import msgspec
import pytest
import trio

from switch import cli
from switch.core.calendar import BusinessCalendar
from switch.core.merchants import MerchantBook
from switch.net.settlement import SettlementService
from switch.wire.clearing import (
    ClearingHeader,
    ClearingRecord,
    clearing_file_name,
    encode_clearing_file,
)
from tests.conftest import LogSink
from tests.settle.ledger_days import Place
from tests.settle.test_business_day import (
    CutoverRecorder,
    local,
    run_with_clock,
    stores,
    written,
)
from tests.switch_process import demo_config, start_switch, write_config
from tests.test_startup import can_mount  # noqa: F401  (a fixture)

DAY = date(2026, 11, 22)
MAX_BYTES = 4096
FULL_PAN = "6222021234567890"


def _service(place: Place, clock: Callable[[], float], banks: list[str]) -> SettlementService:
    folder = place.folder
    store, journal = stores(place)
    store.open()
    calendar = BusinessCalendar(cutoff=time(23, 0), utc_offset_h=8, closes=store.closes())
    return SettlementService(
        store=store, journal=journal, calendar=calendar, merchants=MerchantBook.open_to_all(),
        connectors={bank: CutoverRecorder(clock) for bank in banks},  # type: ignore[misc]
        clearing_dir=lambda bank: folder / ("loop" if bank == "loop" else "clearing"),
        out_dir=folder / "out",
        banks=lambda: banks, institution_of=lambda bank: "0", settle_deadline="03:00",
        utc_offset_h=8, nudge=lambda bank: None, clock=clock,
        max_clearing_file_bytes=MAX_BYTES,
    )  # fmt: skip


async def _tick(scope: trio.CancelScope) -> None:
    with scope:
        while True:
            await trio.sleep(0.001)


def _record(rrn: str, masked_pan: str) -> ClearingRecord:
    return ClearingRecord(
        mti="0200", processing_code="000000", stan="000001", transmission="1122063015",
        rrn=rrn, amount=10_000, currency="156", response_code="00", auth_code="A1B2C3",
        terminal_id="POS00001", merchant_id="898310048990001", masked_pan=masked_pan,
        direction="D",
    )  # fmt: skip


def _clearing_file(*records: ClearingRecord) -> bytes:
    header = ClearingHeader(DAY, "0", datetime(2026, 11, 22, 15, 30, tzinfo=UTC))
    return encode_clearing_file(header, list(records))


def _path(place: Place, bank: str) -> Path:
    return place.folder / "clearing" / clearing_file_name(bank, DAY)


def test_what_is_not_a_clearing_file_is_rejected_and_the_date_settles_at_its_deadline(
    place: Place, log_sink: LogSink
) -> None:
    (place.folder / "clearing").mkdir()
    _path(place, "good").write_bytes(_clearing_file(_record("532614000001", "622202******1111")))
    # Before: read whole, following the link: a MemoryError that ended the switch.
    _path(place, "zero").symlink_to("/dev/zero")
    # Before: read in a thread that waited for a writer forever; the date never settled
    # and the service could not be cancelled.
    os.mkfifo(_path(place, "fifo"))
    _path(place, "folder").mkdir()
    big = _clearing_file(*(_record(f"{n:012d}", "") for n in range(40)))
    assert len(big) > MAX_BYTES
    _path(place, "big").write_bytes(big)
    # A folder that cannot be looked into (a link to itself). Before: an OSError out of
    # the settler that ended the switch.
    (place.folder / "loop").symlink_to(place.folder / "loop")
    banks = ["big", "fifo", "folder", "good", "loop", "zero"]
    reasons = {
        "zero": "not a regular file: a symbolic link (never followed)",
        "fifo": "not a regular file: a FIFO",
        "folder": "not a regular file: a directory",
        "big": f"larger than [settlement] max_clearing_file_bytes ({MAX_BYTES}): {len(big)} bytes",
        "loop": "cannot be looked at: Too many levels of symbolic links",
    }
    # A device node itself (where the test may make one: root): looked at, never opened.
    with contextlib.suppress(PermissionError):
        os.mknod(_path(place, "device"), stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
        banks.insert(0, "device")
        reasons["device"] = "not a regular file: a character device"

    async def main(wall: Callable[[], float]) -> None:
        settlement = _service(place, wall, banks)
        async with trio.open_nursery() as nursery:
            await nursery.start(settlement.journal.run)
            await nursery.start(settlement.run)
            # The cut-off at 23:00: every file is looked at, each bad one rejected.
            await trio.sleep(local("2026-11-22 23:00:00") - wall() + 2)

            async def files() -> dict[str, tuple[str, str | None]]:
                status = await settlement.status(DAY.isoformat())
                return {f.bank: (f.status, f.reason) for f in status.files}

            found: dict[str, tuple[str, str | None]] = {}
            # While threads read, a near deadline keeps the mock clock from jumping to
            # the next day's cut-off.
            ticking = trio.CancelScope()
            nursery.start_soon(_tick, ticking)
            while len(found) < len(banks):
                found = await files()
            ticking.cancel()
            assert wall() < local("2026-11-23 00:00:00")
            assert found == {
                "good": ("accepted", None),
                **{bank: ("rejected", reason) for bank, reason in reasons.items()},
            }
            # No file comes for the others: at 03:00 on the 23rd the 22nd settles.
            await trio.sleep(local("2026-11-23 02:59:58") - wall())
            assert (await settlement.status(DAY.isoformat())).settled_at is None
            await trio.sleep(3)
            status = await written(settlement, DAY.isoformat())
            assert status.settled_at is not None and status.settled_at >= local(
                "2026-11-23 03:00:00"
            )
            assert status.missing == [bank for bank in banks if bank != "good"]
            # The folder that cannot be looked into is said once a date (the settlement
            # looks at the two before too), not once a poll.
            loop = [e for e in log_sink.events("clearing_file_rejected") if e["bank"] == "loop"]
            assert sorted(e["business_date"] for e in loop) == [
                "2026-11-20", "2026-11-21", "2026-11-22",
            ]  # fmt: skip
            # Cancelled (as SIGTERM cancels it), the service ends.
            nursery.cancel_scope.cancel()
        settlement.store.close()

    run_with_clock("2026-11-22 22:00:00", main)


def test_a_card_number_in_the_masked_pan_column_reaches_no_file_of_the_switch(
    tmp_path: Path,
) -> None:
    """On SQLite, whose files can be read: the settlement database, its WAL, the
    journal (the bank_only record's reversal is queued there), its WAL, the payout and
    reconciliation files. The record is kept, masked: it is a bank_only, reversed."""
    place = Place(tmp_path)
    (tmp_path / "clearing").mkdir()
    _path(place, "icbc").write_bytes(_clearing_file(_record("532614000002", FULL_PAN)))
    assert FULL_PAN.encode() in _path(place, "icbc").read_bytes()

    async def main(wall: Callable[[], float]) -> None:
        settlement = _service(place, wall, ["icbc"])
        async with trio.open_nursery() as nursery:
            await nursery.start(settlement.journal.run)
            await nursery.start(settlement.run)
            await settlement.close_now()
            status = await written(settlement, DAY.isoformat())
            assert [(f.bank, f.status, f.records) for f in status.files] == [
                ("icbc", "accepted", 1)
            ]
            # Kept (reversed at the bank: the switch never sent it), masked.
            recon = (tmp_path / "out" / "recon-20261122.csv").read_text()
            assert "622202******7890" in recon and "532614000002" in recon
            assert status.reversals_queued == 1
            nursery.cancel_scope.cancel()
        settlement.store.close()

    run_with_clock("2026-11-22 15:00:00", main)
    written_files = [
        tmp_path / name
        for name in (
            "settlement.sqlite3",
            "settlement.sqlite3-wal",
            "journal.sqlite3",
            "journal.sqlite3-wal",
        )
        if (tmp_path / name).exists()
    ] + sorted((tmp_path / "out").iterdir())
    assert {path.name for path in written_files} >= {
        "settlement.sqlite3", "journal.sqlite3", "payouts-20261122.csv", "recon-20261122.csv",
    }  # fmt: skip
    for path in written_files:
        data = path.read_bytes()
        assert FULL_PAN.encode() not in data, path
        assert FULL_PAN[:12].encode() not in data, path  # nor its first 12 digits


def test_a_bank_record_is_journaled_as_its_product_and_one_of_no_product_as_unknown(
    tmp_path: Path,
) -> None:
    """Records the switch never sent are journaled (bank_only, their reversal queued)
    under the kind the product table gives their MTI and processing code; one whose
    code names no product is journaled as ``unknown``, its reason saying so, never
    taken for a sale. Over real SQLite files."""
    place = Place(tmp_path)
    (tmp_path / "clearing").mkdir()
    records = [
        msgspec.structs.replace(_record(rrn, "622202******1111"), processing_code=code)
        for rrn, code in (
            ("532614000011", "000000"), ("532614000012", "200000"),
            ("532614000013", "990000"),
        )
    ]  # fmt: skip
    _path(place, "icbc").write_bytes(_clearing_file(*records))

    async def main(wall: Callable[[], float]) -> None:
        settlement = _service(place, wall, ["icbc"])
        async with trio.open_nursery() as nursery:
            await nursery.start(settlement.journal.run)
            await nursery.start(settlement.run)
            await settlement.close_now()
            status = await written(settlement, DAY.isoformat())
            assert status.reversals_queued == 3
            for _ in range(1000):  # until the orders are handed to the journal
                if len(_journaled(tmp_path)) == 3:
                    break
                await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        settlement.store.close()

    run_with_clock("2026-11-22 15:00:00", main)
    journaled = _journaled(tmp_path)
    assert {rrn: kind for rrn, (kind, _, _) in journaled.items()} == {
        "532614000011": "sale", "532614000012": "refund", "532614000013": "unknown",
    }  # fmt: skip
    assert {state for _, state, _ in journaled.values()} == {"bank_only"}
    assert "no product is a bank 0200 with processing code '99'" in journaled["532614000013"][2]
    assert "no product" not in journaled["532614000011"][2]


def _journaled(folder: Path) -> dict[str, tuple[str, str, str]]:
    """The journal's bank_only records: RRN -> (kind, state, the reason of its reversal)."""
    with contextlib.closing(sqlite3.connect(folder / "journal.sqlite3")) as db:
        rows = db.execute(
            "SELECT t.rrn, t.kind, t.state, s.reason FROM txn t JOIN saf s ON s.rrn = t.rrn"
        ).fetchall()
    return {rrn: (kind, state, reason) for rrn, kind, state, reason in rows}


# -- in a running switch ---------------------------------------------------------------


def _address_space(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


async def _operator(port: int, token: Path, *arguments: str) -> tuple[int, Any]:
    """``switch ...`` against the running switch's admin port (its ``token`` file), in a
    thread."""
    out = io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out):
            url = f"http://127.0.0.1:{port}"
            return cli.main([*arguments, "--url", url, "--token-file", str(token), "--json"])

    code = await trio.to_thread.run_sync(run)
    return code, json.loads(out.getvalue()) if out.getvalue() else None


@pytest.mark.slow
async def test_a_running_switch_rejects_them_settles_and_stops_on_sigterm(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``switch run`` with the demo's four simulated banks: the files of the two dates
    before the one closed are looked at when it settles (a file that came after its own
    date settled still counts), and there a link to /dev/zero, a FIFO, a folder, an
    oversized file and one the switch may not read wait. Before: the link ended the
    switch (MemoryError; its address space is bounded here so that it does not take
    the machine's memory first), the FIFO hung the settlement and SIGTERM with it."""
    settings = demo_config(tmp_path)
    settings["settlement"]["max_clearing_file_bytes"] = MAX_BYTES
    config = write_config(tmp_path, settings)
    calendar = BusinessCalendar(cutoff=time(23, 0), utc_offset_h=8, closes=[])
    closing = calendar.date_at(clock_now())
    before, two_before = closing - timedelta(days=1), closing - timedelta(days=2)
    clearing = tmp_path / "clearing"
    clearing.mkdir()
    (clearing / clearing_file_name("icbc", before)).symlink_to("/dev/zero")
    os.mkfifo(clearing / clearing_file_name("abc", before))
    (clearing / clearing_file_name("cmb", before)).mkdir()
    (clearing / clearing_file_name("citic", before)).write_bytes(b"H" * (MAX_BYTES + 1))
    expected = {
        (before, "icbc"): "not a regular file: a symbolic link (never followed)",
        (before, "abc"): "not a regular file: a FIFO",
        (before, "cmb"): "not a regular file: a directory",
        (before, "citic"): f"larger than [settlement] max_clearing_file_bytes ({MAX_BYTES}): "
        f"{MAX_BYTES + 1} bytes",
    }
    # One it may not read: a write-only kernel file mounted over it (root reads any
    # file's bytes whatever its mode), or its mode where the test is not root.
    unreadable = clearing / clearing_file_name("icbc", two_before)
    unreadable.write_bytes(_clearing_file())
    wrapper: list[str] = []
    if request.getfixturevalue("can_mount"):
        script = 'mount --bind /proc/sys/vm/drop_caches "$1" && shift && exec "$@"'
        wrapper = ["unshare", "-m", "sh", "-c", script, "sh", str(unreadable)]
    elif os.geteuid() != 0:
        unreadable.chmod(0)
    if wrapper or os.geteuid() != 0:
        expected[(two_before, "icbc")] = "cannot be opened: Permission denied"

    switch = await start_switch(config, preexec_fn=_address_space(4 << 30), wrapper=wrapper)
    try:
        port = int((await switch.wait_for_event("switch_started"))["admin_port"])
        token = Path((await switch.wait_for_event("admin_listening"))["token_file"])
        code, closed = await _operator(port, token, "settle", "cutoff")
        assert code == 0 and closed["business_date"] == closing.isoformat(), switch.output()
        # Every bank delivers the closed date's file: it settles without its deadline.
        with trio.fail_after(30):
            while True:
                code, status = await _operator(port, token, "settle", "status", "--date",
                                               closing.isoformat())  # fmt: skip
                assert switch.process.poll() is None, switch.output()
                if code == 0 and status["files_written_at"] is not None:
                    break
                await trio.sleep(0.1)
        assert status["missing"] == [] and {f["status"] for f in status["files"]} == {"accepted"}
        found = {}
        for day in (before, two_before):
            day_status = ("settle", "status", "--date", day.isoformat())
            code, status = await _operator(port, token, *day_status)
            assert code == 0
            found.update(
                {
                    (day, f["bank"]): f["reason"]
                    for f in status["files"]
                    if f["status"] == "rejected"
                }
            )
        assert found == expected
        rejected = switch.events("clearing_file_rejected")
        assert {(event["bank"], event["reason"]) for event in rejected} == {
            (bank, reason) for (_, bank), reason in expected.items()
        }
        # Still serving; SIGTERM stops it.
        assert (await _operator(port, token, "settle", "status"))[0] == 0
        assert await switch.stop() == 0, switch.output()
    finally:
        if switch.process.poll() is None:
            switch.process.kill()
            await switch.process.wait()


def test_two_readers_of_one_date_take_its_file_once(place: Place) -> None:
    """The settler's round and an operator's settle read the banks' files at once: the
    file both found untaken is taken once, and neither reader fails (before: the second
    got "icbc's file ... is already accepted")."""
    (place.folder / "clearing").mkdir()
    _path(place, "icbc").write_bytes(_clearing_file(_record("532614000001", "622202******1111")))

    async def main(wall: Callable[[], float]) -> None:
        settlement = _service(place, wall, ["icbc"])
        missing: list[list[str]] = []

        async def read() -> None:
            missing.append(await settlement.read_files(DAY.isoformat()))

        async with trio.open_nursery() as nursery:
            await nursery.start(settlement.journal.run)
            async with trio.open_nursery() as readers:
                readers.start_soon(read)
                readers.start_soon(read)
            nursery.cancel_scope.cancel()
        known = settlement.store.clearing_file("icbc", DAY.isoformat())
        settlement.store.close()
        assert missing == [[], []]
        assert known is not None and known.status == "accepted"

    run_with_clock("2026-11-23 09:00:00", main)
