"""Batch settlement (0500) and batch upload (0320) of POS terminals through the real
listener, switchboard, journal, bank links and simulators, over loopback TCP."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import trio

from switch.app import SwitchApp
from switch.core.batch import BatchTotals, UploadRecord
from switch.core.numbers import RrnAllocator
from switch.net.clients import PosClient
from switch.store.port import Journal
from switch.terminal import Terminal, TerminalBatch
from switch.wire.iso8583 import FieldValue, Iso8583Message
from switch.wire.samples import POS_SALE_FRAME, POS_SETTLEMENT_ANSWER_FRAME, POS_SETTLEMENT_FRAME
from tests.conftest import LogSink
from tests.net.helpers import PAN_ABC, PAN_CMB, PAN_ICBC, pos_client, start_switch
from tests.net.test_journal_faults import FailingDisk
from tests.store.engines import ENGINES, Configure, config_maker

SETTLEMENT_ANSWER_FIELDS = [11, 12, 13, 15, 37, 39, 41, 42, 48, 49, 60]
"""pos-cup.md: a 0510 echoes 11, 41, 42, 49, 60 and 48, and adds 12, 13, 15, 37, 39."""


@pytest.fixture(params=ENGINES)
def make_config(request: pytest.FixtureRequest) -> Configure:
    """The tests' ``make_config``, with the journal on this run's engine."""
    return config_maker(request)


class BatchTerminal:
    """A terminal that keeps its batch as it goes, as a real one does."""

    def __init__(self, client: PosClient) -> None:
        self.client = client
        terminal = client.terminal
        self.batch = TerminalBatch(
            terminal_id=terminal.terminal_id, merchant_id=terminal.merchant_id,
            batch=terminal.batch,
        )  # fmt: skip
        self.stan = 0

    def next_stan(self) -> int:
        self.stan += 1
        return self.stan

    async def sale(self, pan: str, amount: int) -> Iso8583Message:
        stan = self.next_stan()
        response = await self.client.request(self.client.terminal.sale(stan, pan, amount))
        if response.fields[39] == "00":
            self.batch = self.batch.with_sale(stan, amount, str(response.fields[37]))
        return response

    async def void(self, pan: str, sale: Iso8583Message) -> Iso8583Message:
        stan, rrn, amount = self.next_stan(), str(sale.fields[37]), int(str(sale.fields[4]))
        original_stan = int(str(sale.fields[11]))
        message = self.client.terminal.void(stan, pan, amount, rrn, original_stan)
        response = await self.client.request(message)
        assert response.fields[39] == "00"
        self.batch = self.batch.with_void(stan, amount, str(response.fields[37]), rrn)
        return response

    async def refund(self, pan: str, sale: Iso8583Message, amount: int) -> Iso8583Message:
        stan, rrn = self.next_stan(), str(sale.fields[37])
        message = self.client.terminal.refund(stan, pan, amount, rrn, int(str(sale.fields[11])))
        response = await self.client.request(message)
        assert response.fields[39] == "00"
        self.batch = self.batch.with_refund(stan, amount, str(response.fields[37]), rrn)
        return response

    async def sale_reversed(self, pan: str, amount: int) -> None:
        """A sale approved, then reversed (the terminal could not use the answer)."""
        stan = self.next_stan()
        sale = self.client.terminal.sale(stan, pan, amount)
        response = await self.client.request(sale)
        assert response.fields[39] == "00"
        self.batch = self.batch.with_sale(stan, amount, str(response.fields[37]))
        reversal = await self.client.request(self.client.terminal.reversal(sale, reason="06"))
        assert reversal.fields[39] == "00"
        self.batch = self.batch.with_reversal(stan)

    async def settle(self, totals: BatchTotals | None = None) -> Iso8583Message:
        totals = self.batch.totals() if totals is None else totals
        return await self.client.request(self.client.terminal.settlement(self.next_stan(), totals))

    async def upload(self, records: tuple[UploadRecord, ...]) -> list[Iso8583Message]:
        """The batch upload: 0320s of up to 8 records, then the last with the total."""
        answers = []
        for start in range(0, len(records), 8):
            chunk = records[start : start + 8]
            message = self.client.terminal.batch_upload(self.next_stan(), chunk)
            answers.append((message, await self.client.request(message)))
        last = self.client.terminal.batch_upload(self.next_stan(), (), last_total=len(records))
        answers.append((last, await self.client.request(last)))
        for (_, sent), answer in answers:
            assert answer.mti == "0330"
            assert answer.fields == {n: sent[n] for n in (11, 41, 42, 60)} | {39: "00"}
        return [answer for _, answer in answers]


def result_of(answer: Iso8583Message) -> str:
    return str(answer.fields[48])[30]


async def batch_terminal(app: SwitchApp, terminal: Terminal) -> BatchTerminal:
    return BatchTerminal(await pos_client(app, terminal))


def journal_of(app: SwitchApp) -> Journal:
    assert app.journal is not None
    return app.journal


async def test_a_batch_of_every_kind_of_transaction_settles_balanced(
    nursery: trio.Nursery, make_config: Configure, log_sink: LogSink
) -> None:
    """Sales, a void, a refund, a reversal, a decline and a balance inquiry: the switch's
    totals from its journal are the terminal's, and 48.5 says so."""
    app = await start_switch(nursery, make_config())
    terminal = await batch_terminal(app, Terminal(terminal_id="B0000001", batch=7))
    kept = await terminal.sale(PAN_ICBC, 10000)
    refunded = await terminal.sale(PAN_CMB, 30000)
    voided = await terminal.sale(PAN_ABC, 5000)
    await terminal.void(PAN_ABC, voided)
    await terminal.refund(PAN_CMB, refunded, 2500)
    await terminal.sale_reversed(PAN_ICBC, 4200)
    assert (await terminal.sale(PAN_ICBC, 10051)).fields[39] == "51"  # declined: not kept
    balance = await terminal.client.request(terminal.client.terminal.balance(99, PAN_ABC))
    assert balance.fields[39] == "00"
    totals = terminal.batch.totals()
    assert totals == BatchTotals(debit_fen=40000, debit_count=2, credit_fen=2500, credit_count=1)

    answer = await terminal.settle()
    assert answer.mti == "0510"
    assert sorted(answer.fields) == SETTLEMENT_ANSWER_FIELDS
    assert answer.fields[39] == "00" and result_of(answer) == "1"
    assert answer.fields[48] == totals.field48("1")
    assert answer.fields[60] == "00000007201"
    # 15 is the business date: the local date before the 23:00 cut-off, else the next.
    assert (answer.fields[15] == answer.fields[13]) == (str(answer.fields[12]) < "230000")
    assert kept.fields[37] != answer.fields[37]

    settled = await journal_of(app).settled_batch("B0000001", "898310048990001", "000007")
    assert settled is not None
    assert (settled.result, settled.switch_totals, settled.terminal_totals) == ("1", totals, totals)
    assert settled.rrn == answer.fields[37]
    [line] = [line for line in log_sink.events("txn") if line["kind"] == "settlement"]
    assert (line["code"], line["batch"], line["batch_result"]) == ("00", "000007", "1")
    assert line["terminal"] == "B0000001" and line["journal_ms"] > 0


async def test_an_unbalanced_batch_is_uploaded_and_the_upload_is_journaled(
    nursery: trio.Nursery,
    make_config: Configure,
) -> None:
    app = await start_switch(nursery, make_config())
    terminal = await batch_terminal(app, Terminal(terminal_id="B0000002", batch=3))
    first = await terminal.sale(PAN_ICBC, 10000)
    await terminal.sale(PAN_CMB, 20000)
    await terminal.refund(PAN_ICBC, first, 1000)
    journal = journal_of(app)
    # The terminal lost its second sale (say, a power cut before it kept it).
    terminal.batch = terminal.batch.with_reversal(2)
    answer = await terminal.settle()
    assert answer.fields[39] == "00" and result_of(answer) == "2"
    assert str(answer.fields[48])[:30] == terminal.batch.totals().field48()[:30]

    records = terminal.batch.upload_records()
    assert records == (
        UploadRecord(kind="22", stan="000001", amount=10000),
        UploadRecord(kind="25", stan="000003", amount=1000),
    )
    await terminal.upload(records)
    key = ("B0000002", "898310048990001", "000003")
    assert await journal.batch_upload(*key) == sorted(records, key=lambda r: (r.kind, r.stan))
    settled = await journal.settled_batch(*key)
    assert settled is not None and settled.upload_count == 2 and settled.result == "2"
    assert settled.switch_totals == BatchTotals(30000, 2, 1000, 1)

    # The same 0500 again (a new STAN: the terminal missed the answer): the same answer.
    again = await terminal.settle()
    assert (result_of(again), again.fields[37], again.fields[15]) == (
        "2", answer.fields[37], answer.fields[15],
    )  # fmt: skip
    assert again.fields[11] != answer.fields[11]
    assert await journal.batch_upload(*key) != []  # a repeat leaves the upload alone


async def test_a_batch_settled_again_with_other_totals_is_compared_again(
    nursery: trio.Nursery,
    make_config: Configure,
) -> None:
    app = await start_switch(nursery, make_config())
    terminal = await batch_terminal(app, Terminal(terminal_id="B0000003", batch=5))
    await terminal.sale(PAN_ICBC, 10000)
    await terminal.sale(PAN_ICBC, 2000)
    wrong = await terminal.settle(BatchTotals(debit_fen=10000, debit_count=1))
    assert result_of(wrong) == "2"
    await terminal.upload(terminal.batch.upload_records()[:1])
    right = await terminal.settle()
    assert result_of(right) == "1" and right.fields[37] != wrong.fields[37]
    key = ("B0000003", "898310048990001", "000005")
    settled = await journal_of(app).settled_batch(*key)
    assert settled is not None and settled.result == "1" and settled.upload_count is None
    assert await journal_of(app).batch_upload(*key) == []  # it belonged to the other totals
    # An empty batch balances with zero totals.
    empty = await batch_terminal(app, Terminal(terminal_id="B0000004", batch=1))
    assert result_of(await empty.settle()) == "1"


def _settlement(stan: int, field48: str, reserved: str = "00000009201") -> dict[int, FieldValue]:
    return {11: f"{stan:06d}", 41: "B0000005", 42: "898310048990001", 48: field48, 49: "156",
            60: reserved}  # fmt: skip


ZEROS_31 = "0" * 31
GOOD_48 = BatchTotals(debit_fen=10000, debit_count=1).field48()


@pytest.mark.parametrize(
    ("mti", "fields", "field"),
    [
        ("0500", _settlement(1, GOOD_48[:30] + "1" + ZEROS_31), "48"),  # 48.5 set by the terminal
        ("0500", _settlement(2, GOOD_48[:-1] + "7"), "48"),  # foreign-card totals
        ("0500", _settlement(3, GOOD_48[:-1]), "48"),  # 61 digits
        ("0500", _settlement(4, GOOD_48 + "0"), "48"),
        ("0500", _settlement(5, GOOD_48, reserved="22000009201"), "60"),
        ("0500", _settlement(6, GOOD_48, reserved="00000009202"), "60"),
        ("0500", {**_settlement(7, GOOD_48), 49: "840"}, "49"),
        ("0320", _settlement(8, "03" + "22000001000000010000", reserved="00000009201"), "48"),
        ("0320", _settlement(9, "0001", reserved="00000009201"), "48"),
        ("0320", _settlement(10, "0001", reserved="00000009203"), "60"),
    ],
)
async def test_a_bad_batch_message_is_answered_30_and_keeps_nothing(
    nursery: trio.Nursery,
    make_config: Configure,
    log_sink: LogSink,
    mti: str,
    fields: dict[int, FieldValue],
    field: str,
) -> None:
    app = await start_switch(nursery, make_config())
    client = await pos_client(app, Terminal(terminal_id="B0000005", batch=9))
    fields = dict(fields)  # the case's own table is shared by each engine's run
    if mti == "0320":
        del fields[49]
    answer = await client.request((mti, fields))
    assert answer.mti == ("0510" if mti == "0500" else "0330")
    assert answer.fields[39] == "30" and answer.fields[11] == fields[11]
    assert 37 not in answer.fields
    if mti == "0500":
        assert answer.fields[48] == fields[48]  # echoed as sent: there is no result
    key = ("B0000005", "898310048990001", "000009")
    assert await journal_of(app).settled_batch(*key) is None
    assert await journal_of(app).batch_upload(*key) == []
    [line] = [line for line in log_sink.events("txn") if line["stan"] == fields[11]]
    assert line["code"] == "30" and f"field {field}" in line["reason"]


class PinnedRrns(RrnAllocator):
    def __init__(self, rrn: str) -> None:
        super().__init__()
        self.rrn = rrn

    def allocate(self, local: datetime, day: str | None = None) -> str:
        return self.rrn


async def receive_frame(client: PosClient) -> bytes:
    """The next answer, as the bytes of its frame (its length prefix included)."""
    with trio.fail_after(10):
        while (frame := client.framer.next_frame()) is None:
            data = await client.stream.receive_some(65536)
            assert data, "switch closed the connection"
            client.framer.feed(data)
    return len(frame).to_bytes(2, "big") + frame


async def test_the_sample_settlement_frame_is_answered_with_the_sample_answer_frame(
    nursery: trio.Nursery, make_config: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pos-cup.md's sample sale, then its sample 0500 of that batch at 22:05:01 local on
    22 November: the switch answers the sample 0510, byte for byte (its RRN pinned)."""
    app = await start_switch(nursery, make_config())
    client = await pos_client(app)
    # pos-cup.md's samples show the messages without 64 (and the sale without its PIN):
    # the terminal sends them with their MAC (security.md), the answer is the sample's
    # with the answer's MAC appended.
    sale_message = client.codec.decode(POS_SALE_FRAME[13:])
    await client.sign_on_for(sale_message.fields)
    await client.stream.send_all(client.framer.frame(
        client.encode((sale_message.mti, dict(sale_message.fields)))
    ))  # fmt: skip
    sale = await receive_frame(client)
    assert client.codec.decode(sale[13:]).fields[39] == "00"
    assert app.switchboard is not None
    app.switchboard._rrns = PinnedRrns("532614000131")
    sample_s = datetime(2025, 11, 22, 14, 5, 1, tzinfo=UTC).timestamp()
    monkeypatch.setattr(app.clock, "_wall", lambda: sample_s)  # the real clock's wall time
    settlement = client.codec.decode(POS_SETTLEMENT_FRAME[13:])
    await client.stream.send_all(client.framer.frame(
        client.encode((settlement.mti, dict(settlement.fields)))
    ))  # fmt: skip
    assert without_mac(await receive_frame(client)) == POS_SETTLEMENT_ANSWER_FRAME


def without_mac(frame: bytes) -> bytes:
    """A POS frame (length prefix included) as it would be without its 64: 8 bytes
    fewer, bit 64 of the bitmap clear."""
    body = bytearray(frame[2:-8])
    body[11 + 2 + 7] &= 0xFE  # the bitmap's last byte, after TPDU, header and MTI
    return len(body).to_bytes(2, "big") + bytes(body)


async def test_a_settlement_is_shed_91_when_the_switch_is_full(
    nursery: trio.Nursery, make_config: Configure
) -> None:
    config = make_config(
        switch={"max_in_flight": 1, "max_wait_s": 0.2}, banks={"icbc": {"issuer_timeout_s": 10.0}}
    )
    app = await start_switch(nursery, config)
    app.simulators["icbc"].latency_s = 1.0
    busy = await pos_client(app, Terminal(terminal_id="B0000006"))
    await busy.send(busy.terminal.sale(1, PAN_ICBC, 1000))  # holds the switch's one slot
    await trio.sleep(0.1)
    terminal = await batch_terminal(app, Terminal(terminal_id="B0000007"))
    answer = await terminal.settle()
    assert (answer.mti, answer.fields[39]) == ("0510", "91")
    assert 37 not in answer.fields and answer.fields[48] == BatchTotals().field48()
    upload = await terminal.client.request(
        terminal.client.terminal.batch_upload(9, (), last_total=0)
    )
    assert (upload.mti, upload.fields[39]) == ("0330", "91")
    assert (await busy.receive())[1].fields[39] == "00"
    assert result_of(await terminal.settle()) == "1"  # room again


async def test_a_journal_failure_answers_96(nursery: trio.Nursery, make_config: Configure) -> None:
    app = await start_switch(nursery, make_config())
    disk = FailingDisk(app)
    terminal = await batch_terminal(app, Terminal(terminal_id="B0000008"))
    await terminal.sale(PAN_ICBC, 1000)
    disk.failing = True
    answer = await terminal.settle()
    assert (answer.mti, answer.fields[39]) == ("0510", "96")
    upload = await terminal.client.request(
        terminal.client.terminal.batch_upload(50, terminal.batch.upload_records())
    )
    assert upload.fields[39] == "96"
    disk.failing = False
    assert result_of(await terminal.settle()) == "1"
