"""A terminal's batch settlement and upload as state machines: synchronous tables of
events in, actions out (no I/O), and pos-cup.md's sample 0510 to the byte."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from switch.core.batch import BatchTotals, SettledBatch, SettlementResult, UploadRecord
from switch.core.batch_lifecycle import (
    BatchAction,
    BatchEvent,
    BatchTotalsLoaded,
    LoadBatchTotals,
    LoadSettledBatch,
    SettledBatchLoaded,
    TerminalSettlement,
    TerminalUpload,
)
from switch.core.changes import BatchRecordsUploaded, BatchSettled, BatchUploadEnded
from switch.core.clock import Stamp
from switch.core.lifecycle import (
    Admit,
    Admitted,
    Answer,
    Journal,
    Journaled,
    JournalFailed,
    Refused,
)
from switch.core.model import Acceptor, BatchSettlement, BatchUpload, Outcome
from switch.core.numbers import RrnExhausted
from switch.core.pos import answer_fields, request_from_pos, response_mti
from switch.errors import LocalProtocolError
from switch.wire.dialect import load_dialects
from switch.wire.framing import join_pos_frame, split_pos_frame
from switch.wire.iso8583 import Iso8583Codec
from switch.wire.samples import POS_SETTLEMENT_ANSWER_FRAME, POS_SETTLEMENT_FRAME
from tests.conftest import DIALECTS

# 22:05:01 local (UTC+8) on 22 November 2025: the sample 0510's time, before the cut-off.
STAMP = Stamp.at(datetime(2025, 11, 22, 14, 5, 1, tzinfo=UTC).timestamp(), 8)
SAMPLE_RRN = "532614000131"
ACCEPTOR = Acceptor(channel="pos", terminal_id="POS00001", merchant_id="898310048990001")
KEY = ("POS00001", "898310048990001", "000042")
ONE_SALE = BatchTotals(debit_fen=10000, debit_count=1)
FIELD48 = ONE_SALE.field48()
REQUEST = BatchSettlement(
    acceptor=ACCEPTOR, stan="000130", batch="000042", request_mti="0500", totals=ONE_SALE,
    field48=FIELD48,
)  # fmt: skip


def settlement(request: BatchSettlement = REQUEST, rrn: str = SAMPLE_RRN) -> TerminalSettlement:
    return TerminalSettlement(
        request, STAMP, business_date="2025-11-22", allocate_rrn=lambda stamp: rrn, now=500.0
    )


def drive(
    machine: TerminalSettlement | TerminalUpload, *events: BatchEvent
) -> list[list[BatchAction]]:
    """The actions after each step: start, then each event in turn."""
    steps = [machine.start()]
    for event in events:
        steps.append(machine.handle(event, 500.0))
    return steps


def answer_of(steps: list[list[BatchAction]]) -> Outcome:
    [last] = steps[-1]
    assert isinstance(last, Answer), last
    return last.outcome


def stored(
    result: SettlementResult, totals: BatchTotals = ONE_SALE, rrn: str = "532600000001"
) -> SettledBatch:
    return SettledBatch(
        terminal_id="POS00001", merchant_id="898310048990001", batch="000042",
        terminal_totals=totals, switch_totals=ONE_SALE if result == "1" else BatchTotals(),
        result=result, business_date="2025-11-21", rrn=rrn, settled_at=100.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("switch_totals", "result"),
    [
        (ONE_SALE, "1"),
        (BatchTotals(), "2"),
        (BatchTotals(debit_fen=10000, debit_count=2), "2"),
        (BatchTotals(debit_fen=10000, debit_count=1, credit_fen=1, credit_count=1), "2"),
        (BatchTotals(debit_fen=10**12, debit_count=1000), "2"),  # past what 48 holds
    ],
)
def test_a_first_settlement_is_compared_journaled_then_answered(
    switch_totals: BatchTotals, result: SettlementResult
) -> None:
    machine = settlement()
    steps = drive(
        machine, Admitted(), SettledBatchLoaded(None), BatchTotalsLoaded(switch_totals),
        Journaled(),
    )  # fmt: skip
    assert steps[:3] == [[Admit()], [LoadSettledBatch(KEY)], [LoadBatchTotals(KEY)]]
    kept = SettledBatch(
        terminal_id="POS00001", merchant_id="898310048990001", batch="000042",
        terminal_totals=ONE_SALE, switch_totals=switch_totals, result=result,
        business_date="2025-11-22", rrn=SAMPLE_RRN, settled_at=500.0,
    )  # fmt: skip
    # The result is on its way to the journal before the answer exists.
    assert steps[3] == [Journal((BatchSettled(kept),))]
    outcome = answer_of(steps)
    assert (outcome.code, outcome.batch_result, outcome.rrn) == ("00", result, SAMPLE_RRN)
    assert outcome.settlement_date == "2025-11-22"
    assert machine.phase == "answered"


@pytest.mark.parametrize("result", ["1", "2"])
def test_a_repeat_with_the_same_totals_gets_the_same_answer_and_writes_nothing(
    result: SettlementResult,
) -> None:
    steps = drive(settlement(rrn="unused"), Admitted(), SettledBatchLoaded(stored(result)))
    outcome = answer_of(steps)
    # Its 48.5, RRN and business date are the first answer's.
    assert (outcome.code, outcome.batch_result) == ("00", result)
    assert (outcome.rrn, outcome.settlement_date) == ("532600000001", "2025-11-21")
    assert not any(isinstance(a, Journal | LoadBatchTotals) for s in steps for a in s)


def test_other_totals_for_a_settled_batch_are_compared_again_and_replace_the_answer() -> None:
    earlier = stored("1", totals=BatchTotals(debit_fen=9999, debit_count=1))
    machine = settlement()
    steps = drive(machine, Admitted(), SettledBatchLoaded(earlier), BatchTotalsLoaded(ONE_SALE))
    [journal] = steps[-1]
    assert isinstance(journal, Journal)
    [change] = journal.changes
    assert isinstance(change, BatchSettled)
    assert change.settled.terminal_totals == ONE_SALE and change.settled.result == "1"
    assert change.settled.rrn == SAMPLE_RRN  # a new answer, a new number
    assert answer_of(drive_on(machine, Journaled())).batch_result == "1"


def drive_on(machine: TerminalSettlement, event: BatchEvent) -> list[list[BatchAction]]:
    return [machine.handle(event, 501.0)]


@pytest.mark.parametrize(
    ("events", "code"),
    [
        ([Refused("busy")], "91"),
        ([Admitted(), JournalFailed("disk I/O error")], "96"),
        ([Admitted(), SettledBatchLoaded(None), JournalFailed("disk I/O error")], "96"),
        (
            [Admitted(), SettledBatchLoaded(None), BatchTotalsLoaded(ONE_SALE), JournalFailed("x")],
            "96",
        ),
    ],
)
def test_refused_or_failed_settlements_answer_without_a_result(
    events: list[BatchEvent], code: str
) -> None:
    outcome = answer_of(drive(settlement(), *events))
    assert outcome.code == code and outcome.batch_result is None
    assert outcome.settlement_date == "2025-11-22"  # every 0510 names the date
    assert outcome.shed == (code == "91")
    if code == "96":
        assert outcome.message == "system malfunction" and outcome.detail


def test_a_settlement_without_rrns_left_answers_96_and_journals_nothing() -> None:
    def exhausted(stamp: Stamp) -> str:
        raise RrnExhausted("RRN sequence for day 5326 is exhausted")

    machine = TerminalSettlement(
        REQUEST, STAMP, business_date="2025-11-22", allocate_rrn=exhausted, now=500.0
    )
    steps = drive(machine, Admitted(), SettledBatchLoaded(None), BatchTotalsLoaded(ONE_SALE))
    assert answer_of(steps).code == "96"


@pytest.mark.parametrize(
    ("events", "phase"),
    [
        ([Journaled()], "admitting"),
        ([Admitted(), BatchTotalsLoaded(ONE_SALE)], "loading_settled"),
        ([Admitted(), SettledBatchLoaded(None), SettledBatchLoaded(None)], "loading_totals"),
        ([Refused("busy"), Admitted()], "answered"),
    ],
)
def test_an_event_a_phase_does_not_expect_is_our_bug(events: list[BatchEvent], phase: str) -> None:
    machine = settlement()
    machine.start()
    *before, unexpected = events
    for event in before:
        machine.handle(event, 500.0)
    assert machine.phase == phase
    with pytest.raises(LocalProtocolError):
        machine.handle(unexpected, 500.0)
    with pytest.raises(LocalProtocolError):
        machine.start()


def test_the_sample_settlement_is_answered_as_the_spec_shows() -> None:
    """pos-cup.md's 0500 in, its 0510 out, to the byte: received at 22:05:01 local on
    22 November, the journal holding the batch's one sale, RRN 532614000131."""
    codec = Iso8583Codec(load_dialects(DIALECTS)["cup-pos"])
    envelope, data = split_pos_frame(POS_SETTLEMENT_FRAME[2:])
    message = codec.decode(data)
    request = request_from_pos(message.mti, message.fields)
    assert isinstance(request, BatchSettlement)
    assert request.totals == ONE_SALE  # debit 100.00 in 1, credit 0 in 0
    machine = TerminalSettlement(
        request, STAMP, business_date="2025-11-22", allocate_rrn=lambda stamp: SAMPLE_RRN,
        now=500.0,
    )  # fmt: skip
    steps = drive(
        machine, Admitted(), SettledBatchLoaded(None), BatchTotalsLoaded(ONE_SALE), Journaled()
    )
    fields = answer_fields(message.mti, message.fields, answer_of(steps), STAMP, "48990000")
    answer = join_pos_frame(envelope.reply(), codec.encode(response_mti(message.mti), fields))
    assert len(answer).to_bytes(2, "big") + answer == POS_SETTLEMENT_ANSWER_FRAME


# -- batch upload -------------------------------------------------------------------------

RECORDS = (
    UploadRecord(kind="22", stan="000123", amount=10000),
    UploadRecord(kind="25", stan="000125", amount=2500),
)
UPLOAD = BatchUpload(
    acceptor=ACCEPTOR, stan="000131", batch="000042", request_mti="0320", records=RECORDS
)
LAST_UPLOAD = msgspec.structs.replace(UPLOAD, stan="000132", records=(), total=2)


UPLOADED = BatchRecordsUploaded(
    terminal_id="POS00001", merchant_id="898310048990001", batch="000042", records=RECORDS,
    at=500.0,
)  # fmt: skip
UPLOAD_ENDED = BatchUploadEnded(
    terminal_id="POS00001", merchant_id="898310048990001", batch="000042", total=2, at=500.0
)


@pytest.mark.parametrize(("request_", "change"), [(UPLOAD, UPLOADED), (LAST_UPLOAD, UPLOAD_ENDED)])
def test_an_upload_is_journaled_then_answered_00(
    request_: BatchUpload, change: BatchRecordsUploaded | BatchUploadEnded
) -> None:
    steps = drive(TerminalUpload(request_, now=400.0), Admitted(), Journaled())
    assert steps[:2] == [[Admit()], [Journal((change,))]]
    assert answer_of(steps) == Outcome(code="00")


@pytest.mark.parametrize(
    ("events", "code"),
    [([Refused("busy")], "91"), ([Admitted(), JournalFailed("disk I/O error")], "96")],
)
def test_a_refused_or_failed_upload(events: list[BatchEvent], code: str) -> None:
    outcome = answer_of(drive(TerminalUpload(UPLOAD, now=400.0), *events))
    assert outcome.code == code


def test_an_upload_expects_only_its_own_events() -> None:
    machine = TerminalUpload(UPLOAD, now=400.0)
    machine.start()
    with pytest.raises(LocalProtocolError):
        machine.handle(SettledBatchLoaded(None), 400.0)
