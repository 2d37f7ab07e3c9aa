"""The bank simulator over real loopback TCP, spoken to by a plain trio client."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from switch.config import BankSection, ClearingFaults, SimulatorSection
from switch.core import bank as bankmsg
from switch.core.calendar import mmdd
from switch.security.algorithms import clear_pin_block, ecb_encrypt, x919_mac
from switch.sim.server import BankSimulator
from switch.wire.clearing import ClearingFileRejected, decode_clearing_file
from switch.wire.dialect import load_dialect
from switch.wire.framing import LengthPrefixedFramer
from switch.wire.iso8583 import Iso8583Codec, Iso8583Message
from switch.wire.samples import BANK_SALE_FIELDS, PAN

DIALECT = Path(__file__).resolve().parents[2] / "conf" / "dialects" / "h2h-ascii.toml"
DATE_TIME = "1122063015"
WAIT_S = 10.0

# security.md, "Sample frames and vectors": the bank key change (ZPK and ZAK under the
# demo ZMK), then bank-h2h.md's sale (with 52 = PIN 123456 under the ZPK, 53 and 64) and
# its reversal (128), as the switch sends them.
SAMPLE_FIELD_48 = "3D041B4AE9D0CC07C9650C0C269799465CC54A20CC3EFA41645F4F4DC510C79F3D4A6E2D30D25FA0"
SAMPLE_KEY_CHANGE = bytes.fromhex(
    "007a303830308220000000010000040000000000000031313232303630303031"
    "3030303030323038303344303431423441453944304343303743393635304330"
    "4332363937393934363543433534413230434333454641343136343546344634"
    "44433531304337394633443441364532443330443235464130313031"
)
SAMPLE_KEY_CHANGE_ANSWER = bytes.fromhex(
    "00293038313082200000020000000400000000000000313132323036303030313030303030323030313031"
)
SAMPLE_ZAK = bytes.fromhex("4C5857E59D23FDBC0B20DAB0D6B0166D")
SAMPLE_SALE = bytes.fromhex(
    "00a2303230307238048108c09801313936323232303231303030313131313232"
    "3232313030303030303030303030303031303030303131323230363330313530"
    "3030303037313433303135313132323032313030303834383939303030303533"
    "32363134303030313233504f5330303030313839383331303034383939303030"
    "313135363d6b0f925e99fb7a323630303030303030303030303030305f79b885"
    "8fa78aa9"
)
SAMPLE_REVERSAL = bytes.fromhex(
    "00ad30343030f220000108c08000000000400000000131393632323230323130"
    "3030313131313232323231303030303030303030303030303130303030313132"
    "3230363335323030303030313930383438393930303030353332363134303030"
    "313233504f533030303031383938333130303438393930303031313536303230"
    "3030303030303731313232303633303135303030343839393030303030303030"
    "30303030303030a2668fb6de8df39a"
)

Fields = dict[int, str | bytes]


@pytest.fixture(scope="module")
def codec() -> Iso8583Codec:
    return Iso8583Codec(load_dialect(DIALECT))


_stans: Iterator[int] = itertools.count(100)


def sale_fields(amount: int, stan: str | None = None) -> Fields:
    """bank-h2h.md's sample sale, for another amount and trace number."""
    return {
        **BANK_SALE_FIELDS,
        4: f"{amount:012d}",
        7: DATE_TIME,
        11: stan or f"{next(_stans):06d}",
    }


class Client:
    """The switch's side of one link, as plainly as it can be written."""

    def __init__(self, stream: trio.SocketStream, codec: Iso8583Codec) -> None:
        self.stream = stream
        self.codec = codec
        self.framer = LengthPrefixedFramer(prefix_bytes=2, max_frame_bytes=4096)
        self.keyed = False

    async def send(self, mti: str, fields: Fields, *, zak: bytes | None = SAMPLE_ZAK) -> None:
        """Sends a request; one that carries a MAC is MAC'd under ``zak``."""
        if zak is None or not bankmsg.carries_mac(mti):
            await self.stream.send_all(self.framer.frame(self.codec.encode(mti, fields)))
            return
        message = self.codec.encode(mti, bankmsg.with_mac_placeholder(mti, fields))
        mab = message[:-8]
        await self.stream.send_all(self.framer.frame(mab + x919_mac(zak, mab)))

    async def receive_frame(self) -> bytes:
        with trio.fail_after(WAIT_S):
            while (frame := self.framer.next_frame()) is None:
                data = await self.stream.receive_some(65536)
                assert data, "the simulator closed the link"
                self.framer.feed(data)
        return frame

    async def receive(self) -> Iso8583Message:
        frame = await self.receive_frame()
        message = self.codec.decode(frame)
        if self.keyed and bankmsg.carries_mac(message.mti):  # every answer's MAC verifies
            split = bankmsg.split_mac(frame, message.fields)
            assert split is not None and x919_mac(SAMPLE_ZAK, split[0]) == split[1]
        return message

    async def exchange(self, mti: str, fields: Fields) -> Iso8583Message:
        await self.send(mti, fields)
        return await self.receive()

    async def sign_on(self) -> None:
        """Sign-on, then security.md's sample key change (its ZPK and ZAK)."""
        reply = await self.exchange("0800", {7: DATE_TIME, 11: "000001", 70: "001"})
        assert (reply.mti, reply.fields[39]) == ("0810", "00")
        await self.stream.send_all(SAMPLE_KEY_CHANGE)
        assert await self.receive_frame() == SAMPLE_KEY_CHANGE_ANSWER[2:]
        self.keyed = True

    async def wait_closed(self) -> None:
        """Returns once the simulator has closed the link."""
        with trio.fail_after(WAIT_S):
            try:
                while await self.stream.receive_some(65536):
                    pass
            except trio.BrokenResourceError:
                pass  # a reset is a close too


@pytest.fixture
async def simulator(codec: Iso8583Codec, nursery: trio.Nursery) -> BankSimulator:
    bank = BankSection(port=0, sim=SimulatorSection(opening_balance=1_000_000))
    sim = BankSimulator("testbank", bank, codec, max_in_flight=4)
    port = await nursery.start(sim.serve)
    assert port == sim.port != 0
    return sim


async def open_client(simulator: BankSimulator, codec: Iso8583Codec) -> Client:
    stream = await trio.open_tcp_stream("127.0.0.1", simulator.port)
    return Client(stream, codec)


# The simulator reports through statistics(), not events, so a test polls it.


async def wait_until_received(simulator: BankSimulator, count: int) -> None:
    with trio.fail_after(WAIT_S):
        while simulator.statistics().requests < count:
            await trio.sleep(0.001)


async def test_sign_on_then_sale(simulator: BankSimulator, codec: Iso8583Codec) -> None:
    client = await open_client(simulator, codec)
    async with client.stream:
        await client.sign_on()
        request = sale_fields(10_000, "000042")
        reply = await client.exchange("0200", request)
        assert reply.mti == "0210"
        assert reply.fields[39] == "00"
        assert len(str(reply.fields[38])) == 6
        assert reply.fields[15] == "1122"
        for number in (2, 3, 4, 7, 11, 32, 37, 41, 42, 49):
            assert reply.fields[number] == request[number]
    assert simulator.totals().approved == 10_000
    assert simulator.balance(PAN) == 1_000_000 - 10_000
    assert [message.mti for message in simulator.received] == ["0800", "0800", "0200"]
    stats = simulator.statistics()
    assert (stats.requests, stats.responses, stats.pending) == (3, 3, 0)


async def test_request_before_sign_on_is_91(simulator: BankSimulator, codec: Iso8583Codec) -> None:
    client = await open_client(simulator, codec)
    async with client.stream:
        reply = await client.exchange("0200", sale_fields(10_000))
        assert (reply.mti, reply.fields[39]) == ("0210", "91")
        await client.sign_on()
        reply = await client.exchange("0200", sale_fields(10_000))
        assert reply.fields[39] == "00"
    assert simulator.totals().approvals == 1


async def test_each_link_signs_on(simulator: BankSimulator, codec: Iso8583Codec) -> None:
    first = await open_client(simulator, codec)
    second = await open_client(simulator, codec)
    async with first.stream, second.stream:
        await first.sign_on()
        reply = await second.exchange("0200", sale_fields(100))
        assert reply.fields[39] == "91"


async def test_sample_sale_and_its_reversal(simulator: BankSimulator, codec: Iso8583Codec) -> None:
    client = await open_client(simulator, codec)
    async with client.stream:
        await client.sign_on()
        await client.stream.send_all(SAMPLE_SALE)
        reply = await client.receive()
        assert reply.mti == "0210"
        assert reply.fields[39] == "00"
        assert reply.fields[11] == "000007"
        assert reply.fields[37] == "532614000123"
        assert reply.fields[2] == PAN
        assert simulator.totals().approved == 10_000

        await client.stream.send_all(SAMPLE_REVERSAL)
        reply = await client.receive()
        assert (reply.mti, reply.fields[39], reply.fields[11]) == ("0410", "00", "000019")
    totals = simulator.totals()
    assert (totals.reversed, totals.reversals, totals.net) == (10_000, 1, 0)


async def test_pipelined_requests_answered_out_of_order(
    simulator: BankSimulator, codec: Iso8583Codec, autojump_clock: trio.testing.MockClock
) -> None:
    client = await open_client(simulator, codec)
    async with client.stream:
        await client.sign_on()
        # Each request waits the latency current when it is read: 3 s, 2 s, then 1 s.
        for index, stan in enumerate(("000011", "000012", "000013")):
            simulator.latency_s = 3.0 - index
            await client.send("0200", sale_fields(1_000, stan))
            await wait_until_received(simulator, 3 + index)
        assert simulator.statistics().pending == 3
        start = trio.current_time()
        stans = [(await client.receive()).fields[11] for _ in range(3)]
        assert stans == ["000013", "000012", "000011"]
        assert trio.current_time() - start == pytest.approx(3.0, abs=0.1)
    assert simulator.totals().approvals == 3


async def test_beyond_the_in_flight_cap_answers_91_at_once(
    simulator: BankSimulator, codec: Iso8583Codec, autojump_clock: trio.testing.MockClock
) -> None:
    client = await open_client(simulator, codec)
    async with client.stream:
        await client.sign_on()
        simulator.latency_s = 5.0
        for number in range(5):  # the fixture's cap is 4
            await client.send("0200", sale_fields(1_000, f"{200 + number:06d}"))
        start = trio.current_time()
        first = await client.receive()
        assert (first.fields[11], first.fields[39]) == ("000204", "91")
        assert trio.current_time() - start < 1.0
        later = [await client.receive() for _ in range(4)]
        assert {message.fields[39] for message in later} == {"00"}
    assert simulator.statistics().busy == 1
    assert simulator.totals().approvals == 4


async def test_hook_68_is_never_answered(
    simulator: BankSimulator, codec: Iso8583Codec, autojump_clock: trio.testing.MockClock
) -> None:
    client = await open_client(simulator, codec)
    async with client.stream:
        await client.sign_on()
        await client.send("0200", sale_fields(1_068, "000301"))
        reply = await client.exchange("0200", sale_fields(1_000, "000302"))
        assert reply.fields[11] == "000302"
        with trio.move_on_after(WAIT_S / 2) as waited:
            await client.receive()
        assert waited.cancelled_caught
    assert simulator.statistics().unanswered == 1


async def test_drop_links_closes_every_link(
    simulator: BankSimulator, codec: Iso8583Codec, autojump_clock: trio.testing.MockClock
) -> None:
    first = await open_client(simulator, codec)
    second = await open_client(simulator, codec)
    async with first.stream, second.stream:
        await first.sign_on()
        await second.sign_on()
        simulator.latency_s = 5.0
        await first.send("0200", sale_fields(1_000))
        await wait_until_received(simulator, 5)
        assert simulator.statistics().pending == 1
        simulator.drop_links()
        await first.wait_closed()
        await second.wait_closed()
    # The sale was still waiting out its latency: the bank never applied it.
    assert simulator.totals().approvals == 0
    with trio.fail_after(WAIT_S):
        while simulator.statistics().connections:
            await trio.sleep(0.01)
    assert simulator.statistics().pending == 0

    # The simulator still accepts new links, which must sign on again.
    simulator.latency_s = 0.0
    again = await open_client(simulator, codec)
    async with again.stream:
        assert (await again.exchange("0200", sale_fields(1_000))).fields[39] == "91"
        await again.sign_on()
        assert (await again.exchange("0200", sale_fields(1_000))).fields[39] == "00"


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x04ABCD",  # not an MTI
        b"\x00\x0c0200\x80\x00\x00\x00\x00\x00\x00\x00",  # secondary bitmap missing
        b"\x00\x00",  # a frame of length 0
        b"\xff\xff",  # longer than max_frame_bytes
    ],
)
async def test_garbage_closes_only_its_own_link(
    simulator: BankSimulator, codec: Iso8583Codec, garbage: bytes
) -> None:
    good = await open_client(simulator, codec)
    bad = await open_client(simulator, codec)
    async with good.stream, bad.stream:
        await good.sign_on()
        await bad.sign_on()
        await bad.stream.send_all(garbage)
        await bad.wait_closed()
        reply = await good.exchange("0200", sale_fields(1_000))
        assert reply.fields[39] == "00"
    assert simulator.statistics().protocol_errors == 1


async def test_requests_split_across_reads(simulator: BankSimulator, codec: Iso8583Codec) -> None:
    client = await open_client(simulator, codec)
    async with client.stream:
        await client.sign_on()
        frame = SAMPLE_SALE
        for index in range(len(frame)):
            await client.stream.send_all(frame[index : index + 1])
        assert (await client.receive()).fields[39] == "00"


# -- cutover and clearing files --------------------------------------------------------


@pytest.fixture
async def clearing_simulator(
    codec: Iso8583Codec, nursery: trio.Nursery, tmp_path: Path
) -> BankSimulator:
    bank = BankSection(port=0, institution_id="1020000", sim=SimulatorSection())
    sim = BankSimulator("testbank", bank, codec, clearing_dir=tmp_path / "clearing")
    await nursery.start(sim.serve)
    return sim


async def wait_for_file(path: Path) -> bytes:
    """The file once the simulator has delivered it (after its 0810)."""
    file = trio.Path(path)
    with trio.fail_after(WAIT_S):
        while not await file.exists():
            await trio.sleep(0.005)
    return await file.read_bytes()


def cutover_fields(mmdd: str, stan: str = "000900") -> Fields:
    return {7: DATE_TIME, 11: stan, 15: mmdd, 70: "201"}


async def test_a_cutover_delivers_the_clearing_file(
    clearing_simulator: BankSimulator, codec: Iso8583Codec, tmp_path: Path
) -> None:
    client = await open_client(clearing_simulator, codec)
    async with client.stream:
        await client.sign_on()
        sale = sale_fields(10_000, "000042")
        auth = (await client.exchange("0200", sale)).fields[38]
        day = datetime.now(UTC).date()
        reply = await client.exchange("0800", cutover_fields(mmdd(day)))
        assert (reply.mti, reply.fields[39], reply.fields[70]) == ("0810", "00", "201")
    folder = tmp_path / "clearing"
    file = decode_clearing_file(await wait_for_file(folder / f"testbank-{day:%Y%m%d}.clr"))
    assert (file.header.business_date, file.header.institution_id) == (day, "1020000")
    assert [(r.stan, r.rrn, r.amount, r.auth_code, r.direction) for r in file.records] == [
        ("000042", "532614000123", 10_000, auth, "D")
    ]
    # Written under another name first; nothing of it is left beside the file.
    assert [path.name for path in await trio.Path(folder).iterdir()] == [
        f"testbank-{day:%Y%m%d}.clr"
    ]
    assert clearing_simulator.statistics().clearing_files == 1


async def test_faults_set_at_run_time_reach_the_next_file(
    clearing_simulator: BankSimulator, codec: Iso8583Codec, tmp_path: Path
) -> None:
    client = await open_client(clearing_simulator, codec)
    day = datetime.now(UTC).date()
    async with client.stream:
        await client.sign_on()
        assert (await client.exchange("0200", sale_fields(1_000))).fields[39] == "00"
        clearing_simulator.clearing_faults = ClearingFaults(corrupt_trailer=True)
        assert (await client.exchange("0800", cutover_fields(mmdd(day)))).fields[39] == "00"
    data = await wait_for_file(tmp_path / "clearing" / f"testbank-{day:%Y%m%d}.clr")
    with pytest.raises(ClearingFileRejected):
        decode_clearing_file(data)


async def test_without_a_clearing_dir_the_date_closes_and_no_file_is_written(
    simulator: BankSimulator, codec: Iso8583Codec, tmp_path: Path
) -> None:
    client = await open_client(simulator, codec)
    async with client.stream:
        await client.sign_on()
        day = datetime.now(UTC).date()
        reply = await client.exchange("0800", cutover_fields(mmdd(day)))
        assert reply.fields[39] == "00"
    assert simulator.clearing_dir is None
    assert simulator.statistics().clearing_files == 0
    assert list(await trio.Path(tmp_path).iterdir()) == []


async def test_a_request_whose_mac_fails_is_answered_a0_and_not_applied(
    simulator: BankSimulator, codec: Iso8583Codec
) -> None:
    client = await open_client(simulator, codec)
    async with client.stream:
        await client.sign_on()
        await client.send("0200", sale_fields(10_000), zak=bytes(16))  # not the ZAK
        reply = await client.receive()  # its own MAC verifies under the link's ZAK
        assert (reply.mti, reply.fields[39]) == ("0210", "A0")
        await client.send("0200", sale_fields(10_000), zak=None)  # no MAC at all
        assert (await client.receive()).fields[39] == "A0"
    assert simulator.totals().approvals == 0
    assert simulator.statistics().mac_failures == 2


async def test_a_key_change_with_a_wrong_kcv_is_refused(
    simulator: BankSimulator, codec: Iso8583Codec
) -> None:
    client = await open_client(simulator, codec)
    async with client.stream:
        reply = await client.exchange("0800", {7: DATE_TIME, 11: "000001", 70: "001"})
        bad = SAMPLE_FIELD_48[:32] + "00000000" + SAMPLE_FIELD_48[40:]
        reply = await client.exchange("0800", {7: DATE_TIME, 11: "000002", 48: bad, 70: "101"})
        assert (reply.mti, reply.fields[39]) == ("0810", "30")
        # No keys yet: a financial request is refused 91.
        assert (await client.exchange("0200", sale_fields(1_000))).fields[39] == "91"


def pin_block(pin: str, pan: str = PAN) -> bytes:
    """A format 0 PIN block under security.md's sample ZPK (the sample key change's)."""
    zpk = bytes.fromhex("6E1F68F7838F6DE086832FE907265D5D")
    return ecb_encrypt("3des", zpk, clear_pin_block(pin, pan))


async def test_pins_are_checked_55_then_75(codec: Iso8583Codec, nursery: trio.Nursery) -> None:
    other = "6222021000111133332"
    sim_section = SimulatorSection(pins={other: "4321"})
    sim = BankSimulator("testbank", BankSection(port=0, sim=sim_section), codec)
    await nursery.start(sim.serve)
    client = await open_client(sim, codec)
    async with client.stream:
        await client.sign_on()

        async def sale(pin: str, pan: str = PAN) -> str:
            fields = {**sale_fields(1_000), 52: pin_block(pin, pan), 53: "2600000000000000"}
            if pan != PAN:
                fields[2] = pan
            return str((await client.exchange("0200", fields)).fields[39])

        assert await sale("123456") == "00"  # every card's PIN by default
        assert await sale("4321", other) == "00"  # its own
        assert [await sale("111111") for _ in range(2)] == ["55", "55"]
        assert await sale("123456") == "00"  # a right one starts the count again
        assert [await sale("111111") for _ in range(3)] == ["55", "55", "75"]
        assert await sale("123456") == "75"  # refused from then on
        assert await sale("4321", other) == "00"  # another card is not
    assert sim.totals().approvals == 4
