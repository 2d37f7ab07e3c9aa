"""The switch's cutover (BankConnector.cutover) over real loopback TCP against the bank
simulator, and the clearing file the simulator then delivers into a real folder."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from switch.config import BankSection, ClearingFaults, SimulatorSection
from switch.core.bank import Institution, OriginalData
from switch.core.calendar import mmdd
from switch.core.clock import WALL_CLOCK
from switch.core.model import mask_pan
from switch.net.bank_link import BankConnector, CutoverFailed
from switch.sim.server import BankSimulator
from switch.wire.clearing import (
    ClearingFile,
    ClearingFileRejected,
    ClearingRecord,
    clearing_file_name,
    decode_clearing_file,
)
from switch.wire.iso8583 import FieldValue, Iso8583Message
from switch.wire.samples import BANK_SALE_FIELDS, PAN
from tests.net.helpers import H2H, PAN_ICBC, pos_client, start_switch

WAIT_S = 10.0
ACQUIRER = "48990000"
INSTITUTION = Institution(acquirer_id=ACQUIRER)
BANK_ID = "1020000"

_stans: Iterator[int] = itertools.count(1)
_rrns: Iterator[int] = itertools.count(532614100000)

Fields = dict[int, FieldValue]


class Bank:
    """A simulator writing into ``folder`` and the switch's connector to it."""

    def __init__(self, simulator: BankSimulator, connector: BankConnector, folder: Path) -> None:
        self.simulator = simulator
        self.connector = connector
        self.folder = folder

    async def exchange(self, mti: str, fields: Fields) -> Iso8583Message:
        """One request on a window slot of the connector, as the switch sends it."""
        link = self.connector.try_reserve_link()
        assert link is not None
        try:
            with trio.fail_after(WAIT_S):
                return await link.exchange(mti, fields)
        finally:
            self.connector.release(link)

    async def file(self, day: date) -> bytes:
        """The clearing file of ``day``, once delivered (the 0810 comes first)."""
        path = trio.Path(self.folder / clearing_file_name("testbank", day))
        with trio.fail_after(WAIT_S):
            while not await path.exists():
                await trio.sleep(0.005)
        return await path.read_bytes()

    async def cleared(self, day: date) -> ClearingFile:
        return decode_clearing_file(await self.file(day))


@pytest.fixture
async def bank(nursery: trio.Nursery, tmp_path: Path) -> Bank:
    section = BankSection(
        port=0,
        links=2,
        issuer_timeout_s=1.0,
        institution_id=BANK_ID,
        sim=SimulatorSection(opening_balance=10_000_000),
    )
    folder = tmp_path / "clearing"
    # The connector holds no keys here (no security module): a bank without a ZMK.
    simulator = BankSimulator("testbank", section, H2H, clearing_dir=folder, zmk=None)
    port = await nursery.start(simulator.serve)
    connector = BankConnector(
        "testbank", msgspec.structs.replace(section, port=port), H2H, utc_offset_h=8
    )
    await nursery.start(connector.run)
    with trio.fail_after(WAIT_S):
        await connector.wait_up()
    return Bank(simulator, connector, folder)


def today() -> date:
    """The business date closed in these tests: the simulator takes the year of 15
    from its own clock, so a date near now."""
    return datetime.now(UTC).date()


class Sent(msgspec.Struct, frozen=True):
    """A request as the switch sent it and the bank's 38."""

    fields: Fields
    auth_code: str


async def sale(bank: Bank, amount: int) -> Sent:
    stamp = WALL_CLOCK.stamp(8)
    fields: Fields = {
        **BANK_SALE_FIELDS,
        4: f"{amount:012d}",
        7: stamp.transmission,
        11: f"{next(_stans):06d}",
        12: stamp.local_time,
        13: stamp.local_date,
        37: f"{next(_rrns):012d}",
    }
    reply = await bank.exchange("0200", fields)
    code, auth = reply.fields.get(39), reply.fields.get(38, "")
    assert isinstance(auth, str)
    return Sent(fields, auth if code == "00" else "")


def reversal_of(original: Fields, *, card: bool = True) -> Fields:
    stan, when = original[11], original[7]
    assert isinstance(stan, str) and isinstance(when, str)
    fields: Fields = {n: original[n] for n in (2, 3, 4, 32, 37, 41, 42, 49)}
    fields[7] = WALL_CLOCK.stamp(8).transmission
    fields[11] = f"{next(_stans):06d}"
    fields[90] = OriginalData("0200", stan, when).field_90(INSTITUTION)
    if not card:
        del fields[2]
    return dict(sorted(fields.items()))


def record(
    sent: Fields, *, mti: str = "0200", auth: str = "", direction: str = "D", amount: int = 0
) -> ClearingRecord:
    """The clearing record the bank writes for ``sent``."""
    return ClearingRecord(
        mti=mti,
        processing_code=str(sent[3]),
        stan=str(sent[11]),
        transmission=str(sent[7]),
        rrn=str(sent[37]),
        amount=amount or int(str(sent[4])),
        currency="156",
        response_code="00",
        auth_code=auth,
        terminal_id="POS00001",
        merchant_id="898310048990001",
        masked_pan=mask_pan(PAN),
        direction=direction,  # type: ignore[arg-type]
    )


def approved(sent: Sent) -> ClearingRecord:
    return record(sent.fields, auth=sent.auth_code)


def rrn(sent: Sent) -> str:
    return str(sent.fields[37])


# -- the cutover and its file --------------------------------------------------------


async def test_after_sales_a_cutover_delivers_exactly_what_the_bank_did(bank: Bank) -> None:
    first = await sale(bank, 10_000)
    declined = await sale(bank, 100_51)  # the simulator declines amounts ending 51
    reversed_sale = await sale(bank, 3_000)
    undo = reversal_of(reversed_sale.fields)
    assert (await bank.exchange("0400", undo)).fields[39] == "00"
    assert (await bank.exchange("0401", undo | {11: "999999"})).fields[39] == "00"  # once
    assert declined.auth_code == ""

    day = today()
    assert await bank.connector.cutover(day) == "00"
    file = await bank.cleared(day)
    assert (file.header.business_date, file.header.institution_id) == (day, BANK_ID)
    assert file.records == (
        approved(first),
        approved(reversed_sale),
        record(undo, mti="0400", direction="C"),
    )
    assert (file.debits_fen, file.credits_fen) == (13_000, 3_000)

    cutovers = [m for m in bank.simulator.received if m.fields.get(70) == "201"]
    assert len(cutovers) == 1
    assert sorted(cutovers[0].fields) == [7, 11, 15, 70]
    assert cutovers[0].fields[15] == mmdd(day)


async def test_the_next_date_begins_after_the_cutover(bank: Bank) -> None:
    day = today()
    before = await sale(bank, 1_000)
    assert await bank.connector.cutover(day) == "00"
    after = await sale(bank, 2_000)
    assert await bank.connector.cutover(day + timedelta(days=1)) == "00"
    assert (await bank.cleared(day)).records == (approved(before),)
    assert (await bank.cleared(day + timedelta(days=1))).records == (approved(after),)


async def test_a_repeated_cutover_is_00_and_changes_nothing(bank: Bank) -> None:
    day = today()
    first = await sale(bank, 1_000)
    assert await bank.connector.cutover(day) == "00"
    delivered = await bank.file(day)
    later = await sale(bank, 2_000)
    assert await bank.connector.cutover(day) == "00"
    assert await bank.connector.cutover(day) == "00"
    # What came after the first cutover waits for the next date's; once that file is
    # there, every delivery the repeats could have made would have been made.
    assert await bank.connector.cutover(day + timedelta(days=1)) == "00"
    assert (await bank.cleared(day + timedelta(days=1))).records == (approved(later),)
    assert bank.simulator.statistics().clearing_files == 2
    assert await bank.file(day) == delivered
    assert decode_clearing_file(delivered).records == (approved(first),)


# -- faults --------------------------------------------------------------------------


async def test_fault_drop(bank: Bank) -> None:
    kept, dropped = await sale(bank, 1_000), await sale(bank, 2_000)
    bank.simulator.clearing_faults = ClearingFaults(drop_rrns=(rrn(dropped),))
    assert await bank.connector.cutover(today()) == "00"
    assert (await bank.cleared(today())).records == (approved(kept),)


async def test_fault_amount(bank: Bank) -> None:
    kept, bumped = await sale(bank, 1_000), await sale(bank, 2_000)
    bank.simulator.clearing_faults = ClearingFaults(amount_rrns=(rrn(bumped),))
    assert await bank.connector.cutover(today()) == "00"
    file = await bank.cleared(today())
    assert file.records == (approved(kept), msgspec.structs.replace(approved(bumped), amount=2_001))
    assert file.debits_fen == 3_001


async def test_fault_next_date(bank: Bank) -> None:
    moved, kept = await sale(bank, 1_000), await sale(bank, 2_000)
    bank.simulator.clearing_faults = ClearingFaults(next_date_rrns=(rrn(moved),))
    tomorrow = today() + timedelta(days=1)
    assert await bank.connector.cutover(today()) == "00"
    assert (await bank.cleared(today())).records == (approved(kept),)
    assert await bank.connector.cutover(tomorrow) == "00"
    assert (await bank.cleared(tomorrow)).records == (approved(moved),)


async def test_fault_extra_records_and_their_cardless_reversal(bank: Bank) -> None:
    ours = await sale(bank, 1_000)
    bank.simulator.clearing_faults = ClearingFaults(extra_records=2)
    assert await bank.connector.cutover(today()) == "00"
    file = await bank.cleared(today())
    assert file.records[0] == approved(ours)
    extras = file.records[1:]
    assert len(extras) == 2 and all(r.rrn.startswith("S") for r in extras)

    # The switch reverses a record it never sent: no card, 90 and 37 name it.
    bank.simulator.clearing_faults = ClearingFaults()
    extra = extras[0]
    request: Fields = {
        3: extra.processing_code,
        4: f"{extra.amount:012d}",
        7: WALL_CLOCK.stamp(8).transmission,
        11: f"{next(_stans):06d}",
        32: ACQUIRER,
        37: extra.rrn,
        41: extra.terminal_id,
        42: extra.merchant_id,
        49: extra.currency,
        90: OriginalData("0200", extra.stan, extra.transmission).field_90(INSTITUTION),
    }
    reply = await bank.exchange("0400", request)
    assert reply.fields[39] == "00"
    assert bank.simulator.totals().reversals == 1
    tomorrow = today() + timedelta(days=1)
    assert await bank.connector.cutover(tomorrow) == "00"
    (undo,) = (await bank.cleared(tomorrow)).records
    assert (undo.mti, undo.rrn, undo.direction) == ("0400", extra.rrn, "C")
    assert undo.amount == extra.amount
    assert undo.masked_pan == extra.masked_pan


async def test_fault_corrupt_trailer(bank: Bank) -> None:
    await sale(bank, 1_000)
    await sale(bank, 2_000)
    bank.simulator.clearing_faults = ClearingFaults(corrupt_trailer=True)
    assert await bank.connector.cutover(today()) == "00"
    with pytest.raises(ClearingFileRejected) as caught:
        decode_clearing_file(await bank.file(today()))
    assert (caught.value.line, caught.value.reason) == (4, "trailer_count")


# -- failures ------------------------------------------------------------------------


async def test_no_answer_within_the_issuer_timeout_fails(
    bank: Bank, autojump_clock: trio.testing.MockClock
) -> None:
    bank.simulator.latency_s = 5.0
    start = trio.current_time()
    with pytest.raises(CutoverFailed, match="no answer within 1 s"):
        await bank.connector.cutover(today())
    assert trio.current_time() - start == pytest.approx(1.0, abs=0.1)


async def test_a_link_dropped_under_the_cutover_fails(
    bank: Bank, switch_clock: trio.testing.MockClock
) -> None:
    # switch_clock, not autojump_clock: the file written afterwards is written by a
    # thread, which a clock that jumps whenever every task waits would not wait for.
    bank.simulator.latency_s = 0.5

    async def drop_once_received() -> None:
        while not any(m.fields.get(70) == "201" for m in bank.simulator.received):
            await trio.sleep(0.001)
        bank.simulator.drop_links()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drop_once_received)
        with pytest.raises(CutoverFailed, match="dropped"):
            await bank.connector.cutover(today())
    # The bank never applied it: once the links are back, the cutover goes through.
    bank.simulator.latency_s = 0.0
    with trio.fail_after(WAIT_S):
        await bank.connector.wait_up()
    assert await bank.connector.cutover(today()) == "00"
    assert (await bank.cleared(today())).records == ()


async def test_no_link_up_fails_at_once() -> None:
    section = BankSection(port=1, links=1)
    connector = BankConnector("testbank", section, H2H, utc_offset_h=8)  # never run
    with pytest.raises(CutoverFailed, match="no link is up"):
        await connector.cutover(today())


# -- through the whole switch --------------------------------------------------------


async def test_a_running_switch_cuts_over_and_its_simulator_delivers(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    client = await pos_client(app)
    answers = [await client.request(client.terminal.sale(n, PAN_ICBC, 1_000 * n)) for n in (1, 2)]
    assert [answer.fields[39] for answer in answers] == ["00", "00"]
    day = today()
    assert await app.connectors["icbc"].cutover(day) == "00"
    path = trio.Path(app.config.clearing_dir("icbc") / clearing_file_name("icbc", day))
    with trio.fail_after(WAIT_S):
        while not await path.exists():
            await trio.sleep(0.005)
    file = decode_clearing_file(await path.read_bytes())
    sent = [m.fields for m in app.simulators["icbc"].received if m.mti == "0200"]
    assert [(r.rrn, r.stan, r.transmission, r.amount) for r in file.records] == [
        (f[37], f[11], f[7], int(str(f[4]))) for f in sent
    ]
    assert [r.rrn for r in file.records] == [answer.fields[37] for answer in answers]
    assert [r.auth_code for r in file.records] == [answer.fields[38] for answer in answers]
