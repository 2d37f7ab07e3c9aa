"""The terminal's side of batch settlement: the 0500 and 0320 it builds, and what it
keeps of its batch (pos-cup.md, "Batch settlement"), as tables."""

from __future__ import annotations

import msgspec
import pytest

from switch.core.batch import BatchTotals, UploadRecord
from switch.core.model import BatchSettlement, BatchUpload
from switch.core.pos import request_from_pos
from switch.terminal import BatchEntry, Terminal, TerminalBatch, encode_pos_request
from switch.wire.samples import POS_SETTLEMENT_FIELDS, POS_SETTLEMENT_FRAME
from tests.net.helpers import POS_CODEC

SAMPLE_TERMINAL = Terminal(batch=42)


def test_the_sample_settlement_is_what_the_terminal_builds() -> None:
    message = SAMPLE_TERMINAL.settlement(130, BatchTotals(debit_fen=10000, debit_count=1))
    assert message == ("0500", POS_SETTLEMENT_FIELDS)
    assert encode_pos_request(POS_CODEC, SAMPLE_TERMINAL, message) == POS_SETTLEMENT_FRAME[2:]


def test_batch_upload_messages() -> None:
    records = [UploadRecord(kind="22", stan="000123", amount=10000)] * 8
    mti, fields = SAMPLE_TERMINAL.batch_upload(131, records)
    assert (mti, fields[60], fields[48]) == (
        "0320",
        "00000042201",
        "08" + "22000123000000010000" * 8,
    )
    assert 49 not in fields  # pos-cup.md lists 11, 41, 42, 60 and 48
    request = request_from_pos(mti, fields)
    assert isinstance(request, BatchUpload) and request.records == tuple(records)
    mti, fields = SAMPLE_TERMINAL.batch_upload(132, [], last_total=17)
    assert (mti, fields[60], fields[48]) == ("0320", "00000042202", "0017")
    assert request_from_pos(mti, fields) == BatchUpload(
        acceptor=request.acceptor, stan="000132", batch="000042", request_mti="0320", total=17
    )


@pytest.mark.parametrize(
    ("records", "last_total"),
    [([], None), ([UploadRecord(kind="22", stan="000123", amount=1)] * 9, None)],
)
def test_an_upload_that_48_cannot_hold_is_not_built(
    records: list[UploadRecord], last_total: int | None
) -> None:
    with pytest.raises(ValueError):
        SAMPLE_TERMINAL.batch_upload(1, records, last_total=last_total)


def test_the_last_upload_carries_no_records() -> None:
    with pytest.raises(ValueError, match="not records"):
        SAMPLE_TERMINAL.batch_upload(1, [UploadRecord(kind="22", stan="1", amount=1)], last_total=1)


def test_a_settlement_the_terminal_builds_is_one_the_switch_reads() -> None:
    totals = BatchTotals(debit_fen=123456, debit_count=7, credit_fen=99, credit_count=1)
    request = request_from_pos(*Terminal(batch=3).settlement(9, totals))
    assert isinstance(request, BatchSettlement)
    assert (request.totals, request.batch, request.stan) == (totals, "000003", "000009")


# -- what the terminal keeps -------------------------------------------------------------

EMPTY = TerminalBatch(batch=5)


def kept(*steps: tuple[str, tuple[object, ...]]) -> TerminalBatch:
    batch = EMPTY
    for name, arguments in steps:
        batch = getattr(batch, f"with_{name}")(*arguments)
    return batch


SALE_1 = ("sale", (1, 10000, "532600000001"))
SALE_2 = ("sale", (2, 3000, "532600000002"))


@pytest.mark.parametrize(
    ("steps", "totals", "uploaded"),
    [
        ((), BatchTotals(), ()),
        ((SALE_1,), BatchTotals(10000, 1), (("22", "000001", 10000),)),
        ((SALE_1, SALE_2), BatchTotals(13000, 2),
         (("22", "000001", 10000), ("22", "000002", 3000))),
        # a void takes its sale out; the void itself counts nowhere
        ((SALE_1, SALE_2, ("void", (3, 3000, "532600000003", "532600000002"))),
         BatchTotals(10000, 1), (("22", "000001", 10000),)),
        # a reversed void puts the sale back
        ((SALE_1, ("void", (3, 10000, "532600000003", "532600000001")), ("reversal", (3,))),
         BatchTotals(10000, 1), (("22", "000001", 10000),)),
        # a refund is a credit; the sale stays a debit
        ((SALE_1, ("refund", (4, 2500, "532600000004", "532600000001"))),
         BatchTotals(10000, 1, 2500, 1), (("22", "000001", 10000), ("25", "000004", 2500))),
        # a reversed refund counts nowhere
        ((SALE_1, ("refund", (4, 2500, "532600000004", "532600000001")), ("reversal", (4,))),
         BatchTotals(10000, 1), (("22", "000001", 10000),)),
        # a reversed sale counts nowhere; a reversal of what is not kept changes nothing
        ((SALE_1, SALE_2, ("reversal", (1,)), ("reversal", (9,))),
         BatchTotals(3000, 1), (("22", "000002", 3000),)),
    ],
)  # fmt: skip
def test_the_terminals_totals_and_upload_follow_pos_cup_rules(
    steps: tuple[tuple[str, tuple[object, ...]], ...],
    totals: BatchTotals,
    uploaded: tuple[tuple[str, str, int], ...],
) -> None:
    batch = kept(*steps)
    assert batch.totals() == totals
    records = tuple(UploadRecord(kind=k, stan=s, amount=a) for k, s, a in uploaded)  # type: ignore[arg-type]
    assert batch.upload_records() == records


def test_a_batch_finds_its_sales_and_moves_on_to_the_next() -> None:
    batch = kept(SALE_1, ("void", (3, 10000, "532600000003", "532600000001")))
    assert batch.sale("532600000001") == BatchEntry(
        kind="sale", stan=1, amount=10000, rrn="532600000001"
    )
    assert batch.sale("532600000003") is None  # a void is not a sale
    assert batch.terminal == Terminal(batch=5)
    assert batch.next_batch() == TerminalBatch(batch=6)
    assert TerminalBatch(batch=999_999).next_batch().batch == 0


def test_a_batch_reads_back_from_its_json() -> None:
    batch = kept(SALE_1, ("refund", (4, 2500, "532600000004", "532600000001")))
    assert msgspec.json.decode(msgspec.json.encode(batch), type=TerminalBatch) == batch


def test_a_batch_upload_is_0320s_of_up_to_8_records_then_the_last_with_their_number() -> None:
    batch = EMPTY
    for stan in range(1, 10):
        batch = batch.with_sale(stan, 100 * stan, f"5326000000{stan:02d}")
    messages = batch.upload_messages(999_998)
    assert [(mti, fields[11], fields[60]) for mti, fields in messages] == [
        ("0320", "999998", "00000005201"),
        ("0320", "999999", "00000005201"),
        ("0320", "000001", "00000005202"),  # STANs go round as the terminal's do
    ]
    assert str(messages[0][1][48]).startswith("08") and str(messages[1][1][48]).startswith("01")
    assert messages[2][1][48] == "0009"
    [(mti, fields)] = EMPTY.upload_messages(1)  # nothing standing: only the last one
    assert (mti, fields[48], fields[60]) == ("0320", "0000", "00000005202")
