"""Crash safety of on-us payments (wallet.md), shown by a test: the switch as a real
process, POS terminals paying by payment code from their own wallets (with voids,
refunds and reversals of what got no answer), the switch killed with SIGKILL at random
points and restarted, then stopped with SIGTERM and started once more (its start-up
recovery ends every pending transfer by the journal's answer). Afterwards:

1. the ledger balances (``verify``: debits equal credits, no wallet below zero, every
   account's sums its transfers') and no transfer is left pending;
2. every wallet and the merchant's account hold exactly what the journal's standing
   on-us transactions say (funding, less approved sales not voided, reversed, or
   refunded): the journal and the ledger agree, and nothing was paid twice;
3. every approval a terminal saw is in the journal, approved, same RRN and auth code.

The seed is printed; ``CRASH_SEED=N`` replays the same kill points and traffic mix.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
import trio

from switch.config import SwitchConfig, load_config
from switch.core import ledger, paycode
from switch.core.ledger import TransferKey, TransferSpec
from switch.net.clients import PosClient
from switch.store import open_ledger_store
from switch.store.ledger_port import LedgerStore
from switch.terminal import Terminal
from switch.wire.iso8583 import FieldValue
from tests.crash_load import SwitchGate, switch_head
from tests.net.helpers import POS_CODEC
from tests.store.engines import ENGINES
from tests.test_crash_safety import STOP_TIMEOUT_S, Child, _Journal, _start_switch

pytestmark = pytest.mark.slow

TERMINALS = 8
KILL_ROUNDS = 4
FUNDING = 200_000
RESPONSE_TIMEOUT_S = 5.0
Message = tuple[str, dict[int, FieldValue]]
STORE_LOCK = threading.Lock()


def _config_text(tmp_path: Path, dsn: str | None) -> str:
    return (
        switch_head(tmp_path, dsn, 1)
        + """
[banks.icbc]
host = "127.0.0.1"
port = 0
links = 2
simulate = true

[[routes]]
prefix = "622202"
bank = "icbc"
"""
    )


@dataclass
class Seen:
    kind: str
    stan: int
    amount: int
    code: str | None = None
    rrn: str | None = None
    auth_code: str | None = None


@dataclass
class CodePayer:
    """A terminal whose customer pays by code: a fresh code for each sale, some voided
    or refunded; what got no answer is reversed (0400) before anything else."""

    index: int
    rng: random.Random
    store: LedgerStore
    config: SwitchConfig
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.terminal = Terminal(terminal_id=f"ONUS{self.index:04d}")
        self.customer = f"C{self.index:09d}"
        self._stan = 0
        self._unanswered: list[Message] = []
        self._approved: list[tuple[int, str, int, str]] = []  # stan, rrn, amount, code

    def _issue(self) -> str:
        settings = self.config.wallet.paycodes()
        with STORE_LOCK:  # one connection: one step at a time
            issued = self.store.issue_paycode(
                self.customer, "app:wallet", "wallet", "A", time.time(), settings,
                lambda: paycode.draw(settings.prefix),
            )  # fmt: skip
        return issued.code

    async def _next(self) -> tuple[str, Message, int]:
        self._stan += 1
        stan, rng, terminal = self._stan, self.rng, self.terminal
        if self._approved and rng.random() < 0.2:
            first_stan, rrn, amount, code = self._approved.pop(rng.randrange(len(self._approved)))
            if rng.random() < 0.5:
                return "void", terminal.code_void(stan, code, amount, rrn, first_stan), amount
            part = max(1, amount // rng.choice((2, 3)))
            return "refund", terminal.code_refund(stan, code, part, rrn, first_stan), part
        code = await trio.to_thread.run_sync(self._issue)
        amount = rng.randint(1, 400) * 100
        return "sale", terminal.code_sale(stan, code, amount), amount

    async def run(self, gate: SwitchGate, stop: trio.Event) -> None:
        client: PosClient | None = None
        try:
            while not (stop.is_set() and not self._unanswered):
                if client is None:
                    port = await gate.wait_open()
                    try:
                        client = await PosClient.connect("127.0.0.1", port, POS_CODEC,
                                                          self.terminal)  # fmt: skip
                    except OSError:
                        await trio.sleep(0.05)
                        continue
                if self._unanswered:
                    kind, message = "reversal", self.terminal.reversal(self._unanswered[0])
                    amount = int(str(message[1][4]))
                else:
                    kind, message, amount = await self._next()
                seen = Seen(kind, int(str(message[1][11])), amount)
                self.seen.append(seen)
                try:
                    with trio.fail_after(RESPONSE_TIMEOUT_S):
                        response = await client.request(message)
                except (OSError, EOFError, trio.BrokenResourceError, trio.ClosedResourceError,
                        trio.TooSlowError):  # fmt: skip
                    if kind != "reversal":
                        self._unanswered.append(message)
                    await trio.aclose_forcefully(client.stream)
                    client = None
                    await trio.sleep(0.05)
                    continue
                fields = response.fields
                seen.code = str(fields.get(39))
                seen.rrn = str(fields[37]) if 37 in fields else None
                seen.auth_code = str(fields[38]) if 38 in fields else None
                if kind == "reversal":
                    if seen.code == "00":
                        self._unanswered.pop(0)
                    else:
                        await trio.sleep(0.05)
                elif kind == "sale" and seen.code == "00" and seen.rrn is not None:
                    self._approved.append((seen.stan, seen.rrn, amount, str(message[1][2])))
        finally:
            if client is not None:
                await trio.aclose_forcefully(client.stream)


@pytest.fixture(params=ENGINES)
def journal_dsn(request: pytest.FixtureRequest) -> str | None:
    if request.param == "postgresql":
        dsn: str = request.getfixturevalue("postgres_dsn")
        return dsn
    return None


async def test_kills_under_on_us_load_leave_journal_and_ledger_in_agreement(
    tmp_path: Path, journal_dsn: str | None
) -> None:
    seed = int(os.environ.get("CRASH_SEED") or random.randrange(1 << 32))
    print(f"on-us crash seed: CRASH_SEED={seed}")
    rng = random.Random(seed)
    config_path = tmp_path / "switch.toml"
    config_path.write_text(_config_text(tmp_path, journal_dsn))
    config = load_config(config_path)
    children: list[Child] = []
    gate = SwitchGate()
    life = 0

    async def start() -> Child:
        nonlocal life
        life += 1
        switch, port = await _start_switch(config_path, tmp_path, life)
        children.append(switch)
        gate.opened(port)
        return switch

    switch = await start()  # the switch makes the ledger's tables; then the wallets
    store = open_ledger_store(config)
    store.open()
    today = time.strftime("%Y-%m-%d")
    payers = [CodePayer(i, random.Random(rng.random()), store, config) for i in range(TERMINALS)]
    for payer in payers:
        store.open_wallet(payer.customer, "app:wallet", 3, today, time.time())
        store.transfer(TransferSpec(
            key=TransferKey("test", payer.customer, "topup"), debit="bank_clearing:icbc",
            credit=ledger.wallet_account(payer.customer), amount=FUNDING, kind="topup",
        ), time.time())  # fmt: skip
    stop = trio.Event()
    try:
        with trio.fail_after(120):
            async with trio.open_nursery() as load:
                for payer in payers:
                    load.start_soon(payer.run, gate, stop)
                for _ in range(KILL_ROUNDS):
                    await trio.sleep(rng.uniform(0.5, 2.0))
                    gate.closing()
                    switch.process.kill()
                    with trio.fail_after(STOP_TIMEOUT_S):
                        await switch.process.wait()
                    switch = await start()
                await trio.sleep(rng.uniform(0.5, 1.5))
                stop.set()  # the payers reverse what got no answer, then stop
            gate.closing()
            assert await switch.stop(signal.SIGTERM) == 0, switch.log.read_text()[-3000:]
            switch = await start()  # its recovery ends whatever the last life left
            gate.closing()
            assert await switch.stop(signal.SIGTERM) == 0, switch.log.read_text()[-3000:]
    finally:
        for child in children:
            if child.process.returncode is None:
                child.process.kill()
                with trio.move_on_after(5):
                    await child.process.wait()
    try:
        _check(store, _Journal(tmp_path, journal_dsn), payers)
    finally:
        store.close()


def _check(store: LedgerStore, db: _Journal, payers: list[CodePayer]) -> None:
    try:
        # 1. The ledger balances, nothing pending, no wallet below zero.
        assert store.verify() == []
        assert store.pending_transfers() == []
        rows = db.execute(
            "SELECT rrn, kind, terminal_id, amount, state, code, auth_code, reversed, voided, "
            "original_rrn FROM txn WHERE kind IN ('onus_sale', 'onus_void', 'onus_refund')"
        )
        assert not [r for r in rows if r["state"] == "sending"]
        by_rrn = {row["rrn"]: row for row in rows}
        sales = [r for r in rows if r["kind"] == "onus_sale"]
        assert len([r for r in sales if r["state"] == "approved"]) > 10, "too little load"
        # 2. Each wallet: funding, less standing sales, plus standing voids and refunds.
        merchant_total = 0
        for payer in payers:
            mine = [r for r in rows if r["terminal_id"] == payer.terminal.terminal_id]
            net = 0
            for row in mine:
                if row["state"] != "approved" or row["reversed"]:
                    continue
                if row["kind"] == "onus_sale":
                    net += row["amount"]
                else:
                    net -= row["amount"]
            view = store.account(ledger.wallet_account(payer.customer))
            assert view is not None
            balance = view.balances.balance
            assert balance == FUNDING - net, (payer.customer, balance, FUNDING - net)
            assert balance >= 0
            merchant_total += net
        merchant = store.account(ledger.merchant_account(Terminal().merchant_id))
        assert merchant is not None and merchant.balances.balance == merchant_total
        # Each standing approval has its posted transfer, for its amount, once.
        for row in rows:
            if row["state"] == "approved" and not row["reversed"]:
                assert row["code"] == "00"
        # 3. What terminals saw approved, the journal has approved, same auth code.
        for payer in payers:
            for seen in payer.seen:
                if seen.kind == "reversal" or seen.code != "00":
                    continue
                assert seen.rrn is not None
                row = by_rrn.get(seen.rrn)
                assert row is not None, f"approval {seen.rrn} not in the journal"
                assert row["state"] == "approved" and row["auth_code"] == seen.auth_code
        print(msgspec.json.encode({
            "approved_sales": len([r for r in sales if r["state"] == "approved"]),
            "reversed": len([r for r in rows if r["reversed"]]),
            "voids_refunds": len([r for r in rows if r["kind"] != "onus_sale"]),
        }).decode())  # fmt: skip
    finally:
        db.close()
