"""A business day end to end, over real sockets and real files: sales, voids, refunds,
reversals (the terminal's and the switch's own), declines and a timeout through both
channels against the simulated banks; the cut-off forced by the operator's command;
every bank's clearing file written, read and matched; every fault kind classified and
acted on (the reversals reach the bank); the payout file checked row by row against
amounts this test computes from the answers it got."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from switch import cli
from switch.admin.auth import token_path
from switch.app import SwitchApp
from switch.config import ClearingFaults, SwitchConfig
from switch.core.batch import BatchTotals, UploadRecord
from switch.core.calendar import DateClosed
from switch.terminal import Terminal
from switch.wire import online as wire
from tests.conftest import REPO, LogSink, make_config
from tests.net.helpers import (
    FAST_SAF,
    PAN_ABC,
    PAN_ICBC,
    eventually,
    online_client,
    pos_client,
    purchase,
    start_switch,
)
from tests.store.engines import ENGINES

SAMPLE_MERCHANT = "898310048990001"  # conf/merchants.csv: 38 bps, capped at 2,600 fen
DEFAULT_ACCOUNT = "DEMO-ACCOUNT"  # the * profile: 60 bps


def fee(amount: int, bps: int, minimum: int = 0, cap: int = 0) -> int:
    """settlement.md's fee, written out here rather than taken from the switch."""
    value = amount * bps // 10000 + (1 if (amount * bps) % 10000 * 2 >= 10000 else 0)
    value = max(value, minimum) if minimum else value
    return min(value, cap) if cap else value


def day_config(tmp_path: Path, *, icbc_timeout_s: float = 0.5) -> SwitchConfig:
    banks: dict[str, dict[str, Any]] = {
        name: {"clearing_dir": str(tmp_path / "clearing")}
        for name in ("icbc", "abc", "cmb", "citic")
    }
    banks["icbc"]["issuer_timeout_s"] = icbc_timeout_s  # the *68 sale times out quickly
    return make_config(
        banks=banks,
        settlement={
            "merchants_file": str(REPO / "conf" / "merchants.csv"),
            "out_dir": str(tmp_path / "out"),
        },
        saf=FAST_SAF,
        admin={"enabled": True, "port": 0},
    )


async def operator(app: SwitchApp, *arguments: str) -> tuple[int, Any]:
    """``switch ...`` as an operator types it, against the running switch's admin port,
    in a thread (it blocks); returns its exit code and its --json output."""
    url = f"http://127.0.0.1:{app.admin_port}"
    token = str(token_path(app.config))
    out = io.StringIO()

    def run() -> int:
        import contextlib

        with contextlib.redirect_stdout(out):
            return cli.main([*arguments, "--url", url, "--token-file", token, "--json"])

    code = await trio.to_thread.run_sync(run)
    return code, json.loads(out.getvalue()) if out.getvalue() else None


async def a_day_passes(app: SwitchApp) -> str:
    """The open date closed as its own cut-off closes it once its day has come (an
    operator's cut-off closes no date whose day has not begun, so the test's later
    dates come this way): recorded and its cutovers sent, as the switch's cut-off task
    does. The date closed."""
    settlement = app.settlement
    assert settlement is not None
    async with settlement._closing:
        now = time.time()
        open_date = settlement.calendar.date_at(now)
        await settlement._close(DateClosed(open_date, float(int(now) + 1), forced=False))
    await trio.sleep(max(0.0, int(now) + 1 - time.time()))
    return open_date.isoformat()


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


async def settled(app: SwitchApp, business_date: str) -> dict[str, Any]:
    status: dict[str, Any] = {}

    async def check() -> bool:
        nonlocal status
        code, status = await operator(app, "settle", "status", "--date", business_date)
        return code == 0 and status["files_written_at"] is not None

    with trio.fail_after(15):
        while not await check():
            await trio.sleep(0.1)
    return status


async def until(predicate: Callable[[], bool]) -> None:
    await eventually(predicate, within_s=10)


def on_engine(config: SwitchConfig, engine: str, request: pytest.FixtureRequest) -> SwitchConfig:
    """``config`` with its journal (and so its settlement store) on ``engine``: SQLite
    beside the config, or a PostgreSQL database of the test's own."""
    if engine == "sqlite":
        return config
    dsn: str = request.getfixturevalue("postgres_dsn")
    journal = msgspec.structs.replace(config.journal, backend="postgresql", dsn=dsn)
    return msgspec.structs.replace(config, journal=journal)


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_business_day_settles_with_every_fault_classified(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    async with trio.open_nursery() as nursery:
        app = await start_switch(nursery, on_engine(day_config(tmp_path), engine, request))
        icbc, abc = app.simulators["icbc"], app.simulators["abc"]
        pos = await pos_client(app)
        terminal = pos.terminal

        async def sale(stan: int, amount: int) -> dict[int, Any]:
            response = await pos.request(terminal.sale(stan, PAN_ICBC, amount))
            return response.fields

        approved = {}
        for stan, amount in ((1, 10000), (2, 20000), (3, 30000), (4, 40000), (7, 50000),
                             (8, 60000), (9, 70000)):  # fmt: skip
            fields = await sale(stan, amount)
            assert fields[39] == "00", fields
            approved[stan] = fields
        void = await pos.request(terminal.void(10, PAN_ICBC, 20000, str(approved[2][37]), 2))
        refund = await pos.request(terminal.refund(11, PAN_ICBC, 5000, str(approved[3][37]), 3))
        reversal = await pos.request(terminal.reversal(terminal.sale(4, PAN_ICBC, 40000)))
        declined = await sale(5, 10005)  # the simulator declines amounts ending in 05
        timed_out = await sale(6, 10068)  # ...and never answers those ending in 68
        assert void.fields[39] == refund.fields[39] == reversal.fields[39] == "00"
        assert declined[39] == "05" and timed_out[39] == "68"

        online = await online_client(app)
        bought = [await online.request(purchase(f"o-{n}", amount)) for n, amount in
                  ((1, 8000), (2, 9000), (3, 3000))]  # fmt: skip
        assert all(isinstance(result, wire.Result) and result.approved for result in bought)
        online_refund = await online.request(
            wire.Refund(id="o-r", merchant_id="SHOP01", original_id="o-2", amount=1000)
        )
        online_void = await online.request(
            wire.Void(id="o-v", merchant_id="SHOP01", original_id="o-3")
        )
        assert isinstance(online_refund, wire.Result) and online_refund.approved
        assert isinstance(online_void, wire.Result) and online_void.approved
        other = await pos_client(app, Terminal(terminal_id="POS00077", merchant_id="SHOP99"))
        abc_sale = await other.request(other.terminal.sale(1, PAN_ABC, 12345))
        assert abc_sale.fields[39] == "00"
        # The switch's own reversal of the timed-out sale reaches the bank.
        await until(lambda: _reversals_sent(icbc) >= 2)

        rrn = {stan: str(fields[37]) for stan, fields in approved.items()}
        icbc.clearing_faults = ClearingFaults(
            drop_rrns=(rrn[7],), amount_rrns=(rrn[8],), next_date_rrns=(rrn[9],), extra_records=1
        )
        reversals_before = icbc.totals().reversals

        code, closed = await operator(app, "settle", "cutoff")
        business_date = closed["business_date"]
        # Every answer of the day named the date closed: field 15 is its MMDD.
        assert approved[1][15] == business_date[5:7] + business_date[8:10]
        results = (*bought, online_refund, online_void)
        assert {result.settlement_date for result in results} == {business_date}  # type: ignore[union-attr]
        assert code == 0 and closed["cutovers"] == {
            bank: "00" for bank in ("abc", "citic", "cmb", "icbc")
        }
        after = await sale(12, 1500)  # after the cut-off: the next date
        assert after[15] != approved[1][15]

        status = await settled(app, business_date)
        assert status["missing"] == [] and {f["status"] for f in status["files"]} == {"accepted"}
        out = tmp_path / "out"
        stamp = business_date.replace("-", "")
        payouts = {row["merchant_id"]: row for row in rows(out / f"payouts-{stamp}.csv")}
        recon = rows(out / f"recon-{stamp}.csv")

        # The payouts, from what the terminals and the online client were told.
        pos_sales = [10000, 30000, 60000 + 1]  # the bank's amount for the changed one
        expected_pos = {
            "sales_count": 3, "sales_fen": sum(pos_sales), "refunds_count": 1,
            "refunds_fen": 5000, "fees_fen": sum(fee(a, 38, cap=2600) for a in pos_sales),
            "held_fen": 50000 + 70000, "carried_in_fen": 0,
        }  # fmt: skip
        expected_online = {
            "sales_count": 2, "sales_fen": 17000, "refunds_count": 1, "refunds_fen": 1000,
            "fees_fen": fee(8000, 55, minimum=1) + fee(9000, 55, minimum=1), "held_fen": 0,
            "carried_in_fen": 0,
        }  # fmt: skip
        expected_abc = {
            "sales_count": 1, "sales_fen": 12345, "refunds_count": 0, "refunds_fen": 0,
            "fees_fen": fee(12345, 60), "held_fen": 0, "carried_in_fen": 0,
        }  # fmt: skip
        for merchant, expected, account in (
            (SAMPLE_MERCHANT, expected_pos, "6222021000000000019"),
            ("SHOP01", expected_online, "6222021000000000027"),
            ("SHOP99", expected_abc, DEFAULT_ACCOUNT),
        ):
            row = payouts[merchant]
            assert {key: int(row[key]) for key in expected} == expected, merchant
            net = expected["sales_fen"] - expected["refunds_fen"] - expected["fees_fen"]
            assert (int(row["net_fen"]), int(row["payout_fen"]), int(row["carried_out_fen"])) == (
                net, net, 0,
            )  # fmt: skip
            assert row["account"] == account and row["business_date"] == business_date
        assert set(payouts) == {SAMPLE_MERCHANT, "SHOP01", "SHOP99"}

        by_category = {(row["category"], row["rrn"]): row for row in recon}
        assert by_category[("switch_only", rrn[7])]["action"] == "held"
        assert by_category[("switch_only", rrn[9])]["action"] == "held"
        mismatch = by_category[("amount_mismatch", rrn[8])]
        assert (mismatch["switch_fen"], mismatch["bank_fen"], mismatch["action"]) == (
            "60000", "60001", "paid",
        )  # fmt: skip
        unknown = [row for row in recon if row["category"] == "bank_only"]
        assert len(unknown) == 1 and unknown[0]["action"] == "reversal_queued"
        assert unknown[0]["switch_fen"] == "" and unknown[0]["bank"] == "icbc"
        assert len(recon) == 4  # nothing else differs: voids, reversals, declines all agree
        # The bank_only record is reversed at the bank, though the switch never sent it.
        await until(lambda: icbc.totals().reversals == reversals_before + 1)

        # The next date: the moved sale turns up (timing) and is paid with it.
        next_date = await a_day_passes(app)
        await settled(app, next_date)
        next_stamp = next_date.replace("-", "")
        payouts = {row["merchant_id"]: row for row in rows(out / f"payouts-{next_stamp}.csv")}
        sample = payouts[SAMPLE_MERCHANT]
        assert (int(sample["sales_fen"]), int(sample["held_fen"])) == (70000 + 1500, 50000)
        assert int(sample["fees_fen"]) == fee(70000, 38, cap=2600) + fee(1500, 38, cap=2600)
        recon = rows(out / f"recon-{next_stamp}.csv")
        assert {(row["category"], row["rrn"], row["action"]) for row in recon} >= {
            ("timing", rrn[9], "paid"), ("switch_only", rrn[7], "held"),
        }  # fmt: skip

        # Two dates on, the dropped sale is reversed at the bank and never paid.
        net_before = icbc.totals().net
        third = await a_day_passes(app)
        await settled(app, third)
        recon = rows(out / f"recon-{third.replace('-', '')}.csv")
        assert ("switch_only", rrn[7], "reversal_queued") in {
            (row["category"], row["rrn"], row["action"]) for row in recon
        }
        await until(lambda: icbc.totals().net == net_before - 50000)

        # The ledger balances; every merchant's payable is back to 0.
        code, ledgers = await operator(app, "ledger", "balance")
        assert code == 0
        balances = ledgers["settlement"]
        assert sum(b["debit_fen"] for b in balances) == sum(b["credit_fen"] for b in balances)
        assert all(b["balance_fen"] == 0 for b in balances if b["account"].startswith("merchant:"))
        # Settling a date again writes the same files and posts nothing more.
        first = (
            (out / f"payouts-{stamp}.csv").read_bytes(),
            (out / f"recon-{stamp}.csv").read_bytes(),
        )
        code, _ = await operator(app, "settle", "run", "--date", business_date)
        assert code == 0
        assert ((out / f"payouts-{stamp}.csv").read_bytes(),
                (out / f"recon-{stamp}.csv").read_bytes()) == first  # fmt: skip
        assert (await operator(app, "ledger", "balance"))[1]["settlement"] == balances
        for client in (pos, other, online):
            await client.aclose()
        app.shutdown()
    assert abc.totals().approvals == 1


def _reversals_sent(simulator: Any) -> int:
    return sum(1 for message in simulator.received if message.mti in ("0400", "0401"))


async def test_a_corrupt_file_is_rejected_with_its_reason_and_the_date_waits(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        app = await start_switch(nursery, day_config(tmp_path))
        pos = await pos_client(app)
        sale = await pos.request(pos.terminal.sale(1, PAN_ABC, 4000))
        assert sale.fields[39] == "00"
        app.simulators["abc"].clearing_faults = ClearingFaults(corrupt_trailer=True)
        code, closed = await operator(app, "settle", "cutoff")
        business_date = closed["business_date"]

        async def rejected() -> dict[str, Any]:
            with trio.fail_after(10):
                while True:
                    _, status = await operator(app, "settle", "status", "--date", business_date)
                    files = {f["bank"]: f for f in status["files"]}
                    if "abc" in files and len(files) == 4:
                        return status
                    await trio.sleep(0.1)

        status = await rejected()
        abc_file = {f["bank"]: f for f in status["files"]}["abc"]
        assert abc_file["status"] == "rejected" and "trailer" in abc_file["reason"]
        assert status["missing"] == ["abc"] and status["settled_at"] is None
        # The operator settles it anyway: abc's approval is held, not paid.
        code, status = await operator(app, "settle", "run", "--date", business_date)
        assert code == 0 and status["settled_at"] is not None
        assert {(c["category"], c["action"]) for c in status["categories"]} >= {
            ("switch_only", "held")
        }
        # The bank delivers its file again, corrected, after the date settled: the held
        # sale is found in it and paid with the next date.
        path = tmp_path / "clearing" / f"abc-{business_date.replace('-', '')}.clr"
        lines = path.read_bytes().split(b"\n")
        details = sum(1 for line in lines if line.startswith(b"D"))
        trailer = next(i for i, line in enumerate(lines) if line.startswith(b"T"))
        lines[trailer] = b"T" + b"%09d" % details + lines[trailer][10:]
        path.write_bytes(b"\n".join(lines))
        app.simulators["abc"].clearing_faults = ClearingFaults()
        next_date = await a_day_passes(app)
        await settled(app, next_date)
        stamp = next_date.replace("-", "")
        payouts = {
            row["merchant_id"]: row for row in rows(tmp_path / "out" / f"payouts-{stamp}.csv")
        }
        assert (payouts[SAMPLE_MERCHANT]["sales_fen"], payouts[SAMPLE_MERCHANT]["held_fen"]) == (
            "4000", "0",
        )  # fmt: skip
        await pos.aclose()
        app.shutdown()


async def test_in_flight_across_the_cutoff_and_a_batch_upload_in_the_reconciliation(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        app = await start_switch(nursery, day_config(tmp_path, icbc_timeout_s=5.0))
        icbc = app.simulators["icbc"]
        pos = await pos_client(app)
        terminal = pos.terminal
        kept = await pos.request(terminal.sale(1, PAN_ICBC, 10000))
        left_out = await pos.request(terminal.sale(2, PAN_ICBC, 20000))
        assert kept.fields[39] == left_out.fields[39] == "00"
        # A sale at the bank while the operator closes the date: it was received
        # before the close, so it is of the closed date, whenever its answer comes.
        icbc.latency_s = 1.5
        in_flight: dict[int, Any] = {}

        async def slow_sale() -> None:
            response = await pos.request(terminal.sale(3, PAN_ICBC, 30000))
            in_flight.update(response.fields)

        nursery.start_soon(slow_sale)
        await trio.sleep(0.3)
        code, closed = await operator(app, "settle", "cutoff")
        assert code == 0
        business_date = closed["business_date"]
        icbc.latency_s = 0.0
        await until(lambda: bool(in_flight))
        assert in_flight[39] == "00"
        assert in_flight[15] == business_date[5:7] + business_date[8:10]
        # The terminal's own record of its batch differs from the journal's: it lists
        # a sale the switch never approved (STAN 9) and leaves out STAN 2.
        totals = BatchTotals(debit_fen=10000 + 30000 + 500, debit_count=3)
        answer = await pos.request(terminal.settlement(4, totals))
        assert answer.fields[39] == "00" and str(answer.fields[48])[30] == "2"  # 48.5: no
        records = [UploadRecord("22", "000001", 10000), UploadRecord("22", "000003", 30000),
                   UploadRecord("22", "000009", 500)]  # fmt: skip
        for message in (terminal.batch_upload(5, records),
                        terminal.batch_upload(6, (), last_total=3)):  # fmt: skip
            assert (await pos.request(message)).fields[39] == "00"
        status = await settled(app, business_date)
        stamp = business_date.replace("-", "")
        assert rows(tmp_path / "out" / f"recon-{stamp}.csv") == []
        payout = {
            row["merchant_id"]: row for row in rows(tmp_path / "out" / f"payouts-{stamp}.csv")
        }
        # The journal and the bank decide: all three sales are paid, the one in flight too.
        assert int(payout[SAMPLE_MERCHANT]["sales_fen"]) == 60000
        assert status["missing"] == []
        # The batch was settled (0500) after the cut-off: its differences are in the
        # reconciliation of the date on which the terminal settled it.
        next_date = await a_day_passes(app)
        await settled(app, next_date)
        recon = rows(tmp_path / "out" / f"recon-{next_date.replace('-', '')}.csv")
        assert {(row["category"], row["rrn"], row["action"]) for row in recon} == {
            ("terminal_only", "", "not_paid"),
            ("terminal_missing", str(left_out.fields[37]), "paid"),
        }
        await pos.aclose()
        app.shutdown()


async def test_on_a_postgresql_journal_a_settlement_run_again_posts_nothing_twice(
    tmp_path: Path, postgres_dsn: str, log_sink: LogSink
) -> None:
    """On a PostgreSQL journal the date settles where the journal is (no SQLite file),
    an operator's second run of it is idempotent, and the switch goes on serving."""
    config = day_config(tmp_path)
    config = msgspec.structs.replace(
        config, journal=msgspec.structs.replace(config.journal, backend="postgresql",
                                                dsn=postgres_dsn)
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        app = await start_switch(nursery, config)
        pos = await pos_client(app)
        assert (await pos.request(pos.terminal.sale(1, PAN_ICBC, 1000))).fields[39] == "00"
        code, closed = await operator(app, "settle", "cutoff")
        assert code == 0 and set(closed["cutovers"].values()) == {"00"}
        business_date = closed["business_date"]
        status = await settled(app, business_date)
        assert status["settled_at"] is not None
        code, again = await operator(app, "settle", "run", "--date", business_date)
        assert code == 0 and again["settled_at"] == status["settled_at"]
        assert (await pos.request(pos.terminal.sale(2, PAN_ICBC, 1000))).fields[39] == "00"
        await pos.aclose()
        app.shutdown()
    assert not log_sink.events("settlement_failed")
    assert not config.settlement_db_path().exists()
