"""Two workers on one PostgreSQL journal, as real processes on one set of ports, with a
bank simulator of their own: what one worker did, the other finds. A terminal's
connection may land on either worker (the kernel spreads them), so a repeat, a void, a
refund or a reversal may reach a worker that never saw the original; the bank must see
each request once, and the journal must say what the bank did. An operator's forced
cut-off, taken by worker 0, dates the other worker's sales too.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
from psycopg.rows import dict_row

from switch.net.clients import OnlineClient, OnlineKey, PosClient
from switch.terminal import Terminal
from switch.wire import envelope
from switch.wire import online as wire
from switch.wire.iso8583 import FieldValue
from tests.admin.http import post
from tests.net.helpers import PAN_ICBC, POS_CODEC, purchase
from tests.switch_process import (
    Process,
    demo_config,
    one_bank_config,
    start_switch,
    write_config,
)

# Every test here starts switch processes: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

WORKERS = 2
_terminal_ids = itertools.count(1)


class SharedSwitch:
    """The supervisor, its bank's simulator, and the journal they write."""

    def __init__(self, switch: Process, bank: Process, dsn: str, totals: Path) -> None:
        self.switch = switch
        self.bank = bank
        self.dsn = dsn
        self.totals = totals
        started = switch.events("supervisor_started")[0]
        self.pos_port = int(started["pos_port"])
        self.online_port = int(started["online_port"])
        self.admin_port = int(switch.events("admin_listening")[0]["port"])

    def rows(self, statement: str, *parameters: object) -> list[dict[str, Any]]:
        with psycopg.connect(self.dsn, row_factory=dict_row) as connection:
            return connection.execute(statement, parameters).fetchall()

    async def connection_to(self, worker: int, terminal: Terminal) -> PosClient:
        """A connection of ``terminal``'s served by ``worker`` (found by its echo's
        canonical line, which names the peer)."""
        with trio.fail_after(20):
            while True:
                client = await PosClient.connect("127.0.0.1", self.pos_port, POS_CODEC, terminal)
                await exchange(client, terminal.echo(next(_stans)))
                peer = f"127.0.0.1:{client.stream.socket.getsockname()[1]}"
                served_by = [
                    r["worker"] for r in self.switch.events("txn") if r.get("peer") == peer
                ]
                if served_by == [worker]:
                    return client
                await client.aclose()

    async def terminal_at_both_workers(self) -> tuple[Terminal, PosClient, PosClient]:
        """A new terminal with a connection served by worker 0 and one by worker 1, as
        after a reconnect that landed on the other worker."""
        terminal = Terminal(terminal_id=f"XWRK{next(_terminal_ids):04d}")
        here = await self.connection_to(0, terminal)
        return terminal, here, await self.connection_to(1, terminal)

    async def online_connection_to(self, worker: int) -> OnlineClient:
        """An online connection served by ``worker`` (found by a purchase's canonical
        line)."""
        with trio.fail_after(30):
            while True:
                client = await OnlineClient.connect("127.0.0.1", self.online_port)
                result = await client.request(purchase(f"probe-{next(_stans)}", 100, cvv2="123"))
                assert isinstance(result, wire.Result) and result.approved, result
                peer = f"127.0.0.1:{client.stream.socket.getsockname()[1]}"
                served_by = {
                    r["worker"] for r in self.switch.events("txn") if r.get("peer") == peer
                }
                if served_by == {worker}:
                    return client
                await client.aclose()

    async def reversal_delivered(self, rrn: str) -> None:
        """Waits until the transaction's one queued reversal is delivered."""
        with trio.fail_after(15):
            while self.rows("SELECT state FROM saf WHERE rrn = %s", rrn) != [
                {"state": "delivered"}
            ]:
                await trio.sleep(0.05)

    async def bank_totals(self) -> dict[str, int]:
        """The simulator's ledger, written when it stops."""
        assert await self.bank.stop() == 0, self.bank.output()
        totals: dict[str, int] = json.loads(self.totals.read_bytes())
        return totals


_stans = itertools.count(100)


async def exchange(client: PosClient, message: tuple[str, dict[int, FieldValue]]) -> dict[int, Any]:
    with trio.fail_after(15):
        response = await client.request(message)
    return dict(response.fields)


@asynccontextmanager
async def shared_switch(
    tmp_path: Path, dsn: str, *, latency_ms: float = 0.0
) -> AsyncIterator[SharedSwitch]:
    sim_settings = demo_config(tmp_path)
    sim_settings["banks"]["icbc"]["sim"] = {"latency_ms": latency_ms}
    totals = tmp_path / "bank-totals.json"
    bank = await Process.start(
        ["sim-bank", "--config", str(write_config(tmp_path, sim_settings, "sim.toml")),
         "--bank", "icbc", "--port", "0", "--totals-file", str(totals)],
        tmp_path, name="sim-icbc",
    )  # fmt: skip
    bank_port = int((await bank.wait_for_event("simulator_started"))["port"])
    settings = one_bank_config(tmp_path, bank_port)
    settings["journal"].update(backend="postgresql", dsn=dsn)
    settings["switch"]["workers"] = WORKERS
    switch = await start_switch(write_config(tmp_path, settings))
    try:
        await switch.wait_for_event("switch_started", count=WORKERS)
        await switch.wait_for_event("link_signed_on", count=settings["banks"]["icbc"]["links"])
        yield SharedSwitch(switch, bank, dsn, totals)
        assert await switch.stop() == 0, switch.output()
    finally:
        for process in (switch, bank):
            if process.process.poll() is None:
                process.process.kill()
                await process.process.wait()


def _txn(shared: SharedSwitch, rrn: str) -> dict[str, Any]:
    [row] = shared.rows("SELECT * FROM txn WHERE rrn = %s", rrn)
    return row


async def test_repeats_voids_refunds_and_reversals_find_their_original_at_either_worker(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with shared_switch(tmp_path, postgres_dsn) as shared:
        terminal, here, there = await shared.terminal_at_both_workers()

        # A repeat at the other worker gets the first's answer; the bank sees it once.
        sale = terminal.sale(1, PAN_ICBC, 10000)
        first = await exchange(here, sale)
        assert first[39] == "00"
        repeat = await exchange(there, sale)
        assert (repeat[39], repeat[37], repeat[38]) == ("00", first[37], first[38])
        assert len(shared.rows("SELECT rrn FROM txn WHERE terminal_id = %s AND stan = %s",
                               terminal.terminal_id, "000001")) == 1  # fmt: skip
        duplicate = [r for r in shared.switch.events("txn") if r.get("route") == "duplicate"]
        assert [r["worker"] for r in duplicate] == [1]

        # Voided at the other worker; voided again where it was sold: 12.
        void = await exchange(there, terminal.void(2, PAN_ICBC, 10000, str(first[37]), 1))
        assert void[39] == "00"
        assert _txn(shared, str(first[37]))["voided"]
        again = await exchange(here, terminal.void(3, PAN_ICBC, 10000, str(first[37]), 1))
        assert again[39] == "12"

        # Refunds at both workers never together exceed the sale.
        sold = await exchange(here, terminal.sale(4, PAN_ICBC, 5000))
        rrn = str(sold[37])
        assert (await exchange(there, terminal.refund(5, PAN_ICBC, 3000, rrn, 4)))[39] == "00"
        assert (await exchange(here, terminal.refund(6, PAN_ICBC, 2001, rrn, 4)))[39] == "61"
        assert (await exchange(here, terminal.refund(7, PAN_ICBC, 2000, rrn, 4)))[39] == "00"
        assert _txn(shared, rrn)["refunded"] == 5000

        # A terminal's reversal at the other worker reverses the sale at the bank once.
        reversed_sale = terminal.sale(8, PAN_ICBC, 777)
        reversed_rrn = str((await exchange(here, reversed_sale))[37])
        assert (await exchange(there, terminal.reversal(reversed_sale)))[39] == "00"
        await shared.reversal_delivered(reversed_rrn)
        assert _txn(shared, reversed_rrn)["reversed"]
        for client in (here, there):
            await client.aclose()
        totals = await shared.bank_totals()
    # The bank's ledger: 10,000 sold and voided, 5,000 sold and refunded, 777 reversed.
    assert (totals["approvals"], totals["voids"], totals["refunds"]) == (3, 1, 2)
    assert (totals["reversals"], totals["net"]) == (1, 0)


async def test_a_repeat_and_a_reversal_of_a_sale_at_the_other_workers_bank_wait_for_it(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with shared_switch(tmp_path, postgres_dsn, latency_ms=1500.0) as shared:
        terminal, here, there = await shared.terminal_at_both_workers()
        sale = terminal.sale(1, PAN_ICBC, 10000)
        await here.send(sale)
        await trio.sleep(0.3)  # at the bank, from worker 0
        repeat = await exchange(there, sale)  # worker 1 watches it end
        _, first = await here.receive()
        assert (repeat[39], repeat[37], repeat[38]) == ("00", first.fields[37], first.fields[38])

        slow = terminal.sale(2, PAN_ICBC, 2500)
        await here.send(slow)
        await trio.sleep(0.3)
        assert (await exchange(there, terminal.reversal(slow)))[39] == "00"
        _, answered = await here.receive()
        slow_rrn = str(dict(answered.fields)[37])
        row = _txn(shared, slow_rrn)
        assert (row["state"], row["reversed"]) == ("approved", True)
        await shared.reversal_delivered(slow_rrn)
        for client in (here, there):
            await client.aclose()

        # An online purchase repeated at the other worker while the first is at the bank.
        online_here = await shared.online_connection_to(0)
        online_there = await shared.online_connection_to(1)
        buy = purchase("twice-1", 4200, cvv2="123")
        await online_here.send(buy)
        await trio.sleep(0.3)
        repeated = await online_there.request(buy)
        first_result = await online_here.receive()
        assert isinstance(first_result, wire.Result) and first_result.approved
        assert repeated == first_result
        assert len(shared.rows("SELECT rrn FROM txn WHERE online_id = 'twice-1'")) == 1
        for online_client in (online_here, online_there):
            await online_client.aclose()
        approved = shared.rows(
            "SELECT count(*) AS n FROM txn WHERE kind = 'sale' AND state = 'approved'"
        )[0]["n"]
        totals = await shared.bank_totals()
    assert (totals["approvals"], totals["reversals"]) == (approved, 1)  # each sale once


async def test_a_sale_sent_to_both_workers_at_once_reaches_the_bank_once(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """Neither worker has journaled it when the other reads it: the journal refuses the
    second start, and that worker answers with the first's answer."""
    async with shared_switch(tmp_path, postgres_dsn, latency_ms=300.0) as shared:
        terminal, here, there = await shared.terminal_at_both_workers()
        sale = terminal.sale(1, PAN_ICBC, 10000)
        await here.send(sale)
        await there.send(sale)
        with trio.fail_after(15):
            answers = [dict((await client.receive())[1].fields) for client in (here, there)]
        assert [(a[39], a[37], a[38]) for a in answers[1:]] == [
            (answers[0][39], answers[0][37], answers[0][38])
        ]
        assert answers[0][39] == "00"
        rows = shared.rows(
            "SELECT rrn FROM txn WHERE terminal_id = %s AND stan = %s",
            terminal.terminal_id, "000001",
        )  # fmt: skip
        assert len(rows) == 1
        for client in (here, there):
            await client.aclose()
        totals = await shared.bank_totals()
    assert totals["approvals"] == 1


async def test_an_operators_cutoff_at_worker_0_dates_the_other_workers_sales_too(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with shared_switch(tmp_path, postgres_dsn) as shared:
        terminal = Terminal(terminal_id=f"XWRK{next(_terminal_ids):04d}")
        there = await shared.connection_to(1, terminal)
        before = await exchange(there, terminal.sale(1, PAN_ICBC, 1000))
        token = (tmp_path / "admin-token").read_text().strip()  # made by the switch
        answer = await post(shared.admin_port, "/settlement/cutoff", token=token)
        assert answer.status == 200, answer.body
        closed = answer.json()
        after = await exchange(there, terminal.sale(2, PAN_ICBC, 1000))
        await there.aclose()
        followed = shared.switch.events("business_date_close_followed")
        assert [r["worker"] for r in followed] == [1]
    closed_date = date.fromisoformat(closed["business_date"])
    assert before[15] == f"{closed_date:%m%d}"
    assert after[15] == f"{closed_date + timedelta(days=1):%m%d}"  # worker 1's sale


async def test_an_envelope_replayed_at_the_other_worker_is_refused_there(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """security.md: a nonce counts across all the switch's processes once it passes.
    The same signed envelope at worker 0, then at worker 1: the second is refused A0
    "nonce replayed" (unsigned), and the bank saw the purchase once."""
    async with shared_switch(tmp_path, postgres_dsn) as shared:
        here = await shared.online_connection_to(0)
        there = await shared.online_connection_to(1)
        key = OnlineKey.demo_merchant("SHOP01")
        frame = key.seal(wire.encode_request(purchase("nonce-x", 4321, cvv2="123")))
        answers = []
        for client in (here, there):
            await client.send_frame(frame)
            with trio.fail_after(15):
                answers.append((wire.decode_response(await client.receive_raw()),
                                client.last_signed))  # fmt: skip
        (first, first_signed), (second, second_signed) = answers
        assert isinstance(first, wire.Result) and first.approved and first_signed
        assert isinstance(second, wire.Error) and not second_signed
        assert (second.id, second.code, second.message) == ("nonce-x", "A0", "nonce replayed")
        refused = [
            e for e in shared.switch.events("security_event") if e.get("check") == "nonce replayed"
        ]
        assert [e["worker"] for e in refused] == [1]
        [row] = shared.rows("SELECT count(*) AS n FROM online_nonces WHERE nonce = %s",
                            envelope.decode(frame).nonce)  # fmt: skip
        assert row["n"] == 1
        sent = shared.rows("SELECT amount FROM txn WHERE online_id = %s", "nonce-x")
        assert sent == [{"amount": 4321}]
        for client in (here, there):
            await client.aclose()
