"""Field 48 of batch settlement and upload (pos-cup.md, "Batch settlement"), as tables."""

from __future__ import annotations

import pytest

from switch.core.batch import (
    BatchTotals,
    UploadRecord,
    answer_field48,
    settlement_result,
    settlement_totals,
    upload_end_field48,
    upload_field48,
    upload_records,
    upload_total,
)
from switch.errors import TransactionRefused
from switch.wire.samples import POS_SETTLEMENT_ANSWER_FIELDS, POS_SETTLEMENT_FIELDS

SAMPLE_48 = str(POS_SETTLEMENT_FIELDS[48])
SAMPLE_ANSWER_48 = str(POS_SETTLEMENT_ANSWER_FIELDS[48])
ZEROS = "0" * 31


def test_the_sample_settlements_48_is_its_one_sale() -> None:
    assert settlement_totals(SAMPLE_48) == BatchTotals(debit_fen=10000, debit_count=1)
    assert answer_field48(SAMPLE_48, "1") == SAMPLE_ANSWER_48


@pytest.mark.parametrize(
    ("field48", "totals"),
    [
        ("0" * 62, BatchTotals()),
        (
            "000000010000" + "001" + "000000002500" + "002" + "0" + ZEROS,
            BatchTotals(debit_fen=10000, debit_count=1, credit_fen=2500, credit_count=2),
        ),
        (
            "999999999999" + "999" + "999999999999" + "999" + "0" + ZEROS,
            BatchTotals(10**12 - 1, 999, 10**12 - 1, 999),
        ),
    ],
)
def test_settlement_totals_read_and_write_the_same_62_digits(
    field48: str, totals: BatchTotals
) -> None:
    assert settlement_totals(field48) == totals
    assert totals.field48() == field48
    assert totals.field48("2") == field48[:30] + "2" + ZEROS
    assert BatchTotals.from_layout(field48) == totals


@pytest.mark.parametrize(
    ("field48", "why"),
    [
        ("", "62 digits"),
        ("0" * 61, "62 digits"),
        ("0" * 63, "62 digits"),
        ("0" * 12, "62 digits"),
        ("00000001000A" + "0" * 50, "62 digits"),
        ("０" * 62, "62 digits"),  # digits, but not ASCII ones
        (" " * 62, "62 digits"),
        ("0" * 30 + "1" + ZEROS, "48.5 must be 0"),
        ("0" * 30 + "2" + ZEROS, "48.5 must be 0"),
        ("0" * 31 + "000000000001" + "0" * 19, "foreign"),
        ("0" * 61 + "1", "foreign"),
    ],
)
def test_a_bad_settlement_48_is_refused_30_naming_it(field48: str, why: str) -> None:
    with pytest.raises(TransactionRefused) as info:
        settlement_totals(field48)
    assert (info.value.response_code, info.value.field) == ("30", "48")
    assert why in str(info.value)


@pytest.mark.parametrize(
    ("terminal", "switch", "result"),
    [
        (BatchTotals(), BatchTotals(), "1"),
        (BatchTotals(10000, 1, 500, 1), BatchTotals(10000, 1, 500, 1), "1"),
        (BatchTotals(10000, 1, 500, 1), BatchTotals(10001, 1, 500, 1), "2"),
        (BatchTotals(10000, 1, 500, 1), BatchTotals(10000, 2, 500, 1), "2"),
        (BatchTotals(10000, 1, 500, 1), BatchTotals(10000, 1, 501, 1), "2"),
        (BatchTotals(10000, 1, 500, 1), BatchTotals(10000, 1, 500, 0), "2"),
        (BatchTotals(10000, 1), BatchTotals(0, 0, 10000, 1), "2"),  # the same sum, other side
        (BatchTotals(10**12 - 1, 999), BatchTotals(10**12 - 1, 1000), "2"),  # past 48.2
    ],
)
def test_balanced_only_when_all_four_parts_agree(
    terminal: BatchTotals, switch: BatchTotals, result: str
) -> None:
    assert settlement_result(terminal, switch) == result


@pytest.mark.parametrize(
    "totals",
    [BatchTotals(debit_fen=10**12), BatchTotals(debit_count=1000), BatchTotals(credit_fen=-1)],
)
def test_totals_that_do_not_fit_are_not_written_unless_saturated(totals: BatchTotals) -> None:
    assert not totals.fits
    with pytest.raises(ValueError):
        totals.field48()
    saturated = totals.field48(saturate=True)
    assert len(saturated) == 62 and saturated.isdigit()


def test_a_0510s_48_echoes_the_0500s_with_48_5_set() -> None:
    asked = "000000010000" + "001" + "000000002500" + "002" + "0" + ZEROS
    assert answer_field48(asked, "1") == asked[:30] + "1" + ZEROS
    assert answer_field48(asked, "2") == asked[:30] + "2" + ZEROS


# -- batch upload ------------------------------------------------------------------------

SALE_7 = UploadRecord(kind="22", stan="000007", amount=10000)
REFUND_9 = UploadRecord(kind="25", stan="000009", amount=2500)
SALE_7_DIGITS = "22" + "000007" + "000000010000"
REFUND_9_DIGITS = "25" + "000009" + "000000002500"


@pytest.mark.parametrize(
    ("field48", "records"),
    [
        ("01" + SALE_7_DIGITS, (SALE_7,)),
        ("02" + SALE_7_DIGITS + REFUND_9_DIGITS, (SALE_7, REFUND_9)),
        ("08" + SALE_7_DIGITS * 8, (SALE_7,) * 8),
        (
            "01" + "22" + "000000" + "000000000000",
            (UploadRecord(kind="22", stan="000000", amount=0),),
        ),
    ],
)
def test_upload_records_read_and_write_alike(
    field48: str, records: tuple[UploadRecord, ...]
) -> None:
    assert upload_records(field48) == records
    assert upload_field48(records) == field48


@pytest.mark.parametrize(
    ("field48", "why"),
    [
        ("", "digits"),
        ("1", "digits"),
        ("0A" + SALE_7_DIGITS, "digits"),
        ("00", "1 to 8 records, not 0"),
        ("09" + SALE_7_DIGITS * 9, "1 to 8 records, not 9"),
        ("99", "1 to 8 records, not 99"),
        ("01", "says 1 records but holds 0"),
        ("01" + SALE_7_DIGITS[:-1], "says 1 records but holds 19"),
        ("01" + SALE_7_DIGITS + "0", "says 1 records but holds 21"),
        ("02" + SALE_7_DIGITS, "says 2 records but holds 20"),
        ("01" + "23" + SALE_7_DIGITS[2:], "'23' is none of 22"),  # a void is not uploaded
        ("02" + SALE_7_DIGITS + "00" + REFUND_9_DIGITS[2:], "'00' is none of 22"),
    ],
)
def test_a_bad_upload_48_is_refused_30_naming_it(field48: str, why: str) -> None:
    with pytest.raises(TransactionRefused) as info:
        upload_records(field48)
    assert (info.value.response_code, info.value.field) == ("30", "48")
    assert why in str(info.value)


@pytest.mark.parametrize(("field48", "total"), [("0000", 0), ("0003", 3), ("9999", 9999)])
def test_the_last_uploads_48_is_its_total(field48: str, total: int) -> None:
    assert upload_total(field48) == total
    assert upload_end_field48(total) == field48


@pytest.mark.parametrize("field48", ["", "3", "003", "00003", "000A", "01" + "2" * 20])
def test_a_bad_upload_total_is_refused_30_naming_48(field48: str) -> None:
    with pytest.raises(TransactionRefused) as info:
        upload_total(field48)
    assert (info.value.response_code, info.value.field) == ("30", "48")


@pytest.mark.parametrize(
    "records",
    [
        (),
        (SALE_7,) * 9,
        (UploadRecord(kind="22", stan="7", amount=1),),
        (UploadRecord(kind="22", stan="00000A", amount=1),),
        (UploadRecord(kind="22", stan="000007", amount=10**12),),
    ],
)
def test_an_upload_that_does_not_fit_48_is_not_written(records: tuple[UploadRecord, ...]) -> None:
    with pytest.raises(ValueError):
        upload_field48(records)


@pytest.mark.parametrize("total", [-1, 10_000])
def test_an_upload_total_past_4_digits_is_not_written(total: int) -> None:
    with pytest.raises(ValueError):
        upload_end_field48(total)
