"""Pre-authorisations and completions in a business day's settlement, on both journal
engines, over real sockets and real files (risk.md, "Settlement"): a pre-authorisation
and its void are never paid, in no clearing file and no reconciliation line; a
completion is paid like a sale (its fee on its amount), its void cancels it, and its
batch upload record (kind 20) matches it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import trio

from switch.core.batch import BatchTotals, UploadRecord
from switch.wire.clearing import clearing_file_name, decode_clearing_file
from tests.conftest import luhn_complete
from tests.net.helpers import pos_client, start_switch
from tests.settle.test_day_e2e import (
    SAMPLE_MERCHANT,
    day_config,
    fee,
    on_engine,
    operator,
    rows,
    settled,
)
from tests.store.engines import ENGINES

PAN = luhn_complete("622690123456789")  # citic's


@pytest.mark.parametrize("engine", ENGINES)
async def test_preauths_are_never_paid_and_completions_are_paid_like_sales(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    async with trio.open_nursery() as nursery:
        app = await start_switch(nursery, on_engine(day_config(tmp_path), engine, request))
        pos = await pos_client(app)
        terminal = pos.terminal

        async def preauth(stan: int, amount: int) -> tuple[str, str, str]:
            answer = await pos.request(terminal.preauth(stan, PAN, amount))
            assert answer.fields[39] == "00"
            return str(answer.fields[37]), str(answer.fields[38]), str(answer.fields[13])

        await preauth(1, 50000)  # left open
        _, auth_b, day = await preauth(2, 30000)
        kept = await pos.request(terminal.completion(3, PAN, 31000, auth_b, 2, day))
        _, auth_c, _ = await preauth(4, 20000)
        undone = await pos.request(terminal.completion(5, PAN, 20000, auth_c, 4, day))
        assert kept.fields[39] == undone.fields[39] == "00"
        cancel = terminal.completion_void(
            6, PAN, 20000, str(undone.fields[37]), str(undone.fields[38]), 5
        )
        assert (await pos.request(cancel)).fields[39] == "00"
        rrn_d, auth_d, _ = await preauth(7, 10000)
        void_d = await pos.request(terminal.preauth_void(8, PAN, 10000, rrn_d, auth_d, 7))
        assert void_d.fields[39] == "00"

        # The terminal's totals are off (it missed the completion): it uploads it, kind 20.
        answer = await pos.request(terminal.settlement(9, BatchTotals()))
        assert str(answer.fields[48])[30] == "2"
        records = [UploadRecord("20", "000003", 31000)]
        for message in (terminal.batch_upload(10, records),
                        terminal.batch_upload(11, (), last_total=1)):  # fmt: skip
            assert (await pos.request(message)).fields[39] == "00"

        code, closed = await operator(app, "settle", "cutoff")
        assert code == 0
        business_date = closed["business_date"]
        await settled(app, business_date)
        stamp = business_date.replace("-", "")
        # Nothing unmatched: no pre-authorisation is a switch_only, the upload's kind 20
        # is the journal's completion.
        assert rows(tmp_path / "out" / f"recon-{stamp}.csv") == []
        [payout] = [
            row
            for row in rows(tmp_path / "out" / f"payouts-{stamp}.csv")
            if row["merchant_id"] == SAMPLE_MERCHANT
        ]
        assert (payout["sales_count"], payout["sales_fen"]) == ("1", "31000")
        assert payout["fees_fen"] == str(fee(31000, 38, cap=2600))
        assert payout["refunds_fen"] == "0"
        # citic's file: the completions and the completion void, no 0100.
        name = clearing_file_name("citic", date.fromisoformat(business_date))
        clearing = Path(app.config.clearing_dir("citic")) / name
        cleared = decode_clearing_file(clearing.read_bytes())
        assert sorted((r.mti, r.amount, r.direction) for r in cleared.records) == [
            ("0200", 20000, "C"), ("0200", 20000, "D"), ("0200", 31000, "D"),
        ]  # fmt: skip
        await pos.aclose()
        app.shutdown()
