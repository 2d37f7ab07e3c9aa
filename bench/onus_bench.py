"""What an on-us payment costs the switch, next to a card sale (wallet.md; issue #22's
target: an on-us payment costs at most a card sale's CPU).

One switch process (SQLite journal, its ledger beside it) and one bank simulator process;
a few terminals send card sales to the bank, then payment-code sales from funded wallets
(codes issued beforehand, in this process, through the ledger store), then both at
once (``mixed``: half the terminals card sales to the simulated bank, half code sales,
in the same run: each kind's rate and latency while the other runs beside it). The
switch's CPU (its process, worker threads included, from /proc) is read before and
after each phase: CPU ms per transaction, and the rate each phase reached. Run::

    python -m bench.onus_bench [--count 2000] [--terminals 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench.procstat import cpu_seconds
from switch.config import load_config
from switch.core import ledger, paycode
from switch.core.ledger import TransferKey, TransferSpec
from switch.net.clients import PosClient
from switch.store import open_ledger_store
from switch.terminal import Terminal
from switch.wire.dialect import load_dialect
from switch.wire.iso8583 import Iso8583Codec

REPO = Path(__file__).resolve().parent.parent
DIALECTS = REPO / "conf" / "dialects"
PAN = "6222021000111122221"
CODES: dict[str, int] = {}


def _config(folder: Path, bank_port: int) -> str:
    return f"""
[switch]
acquirer_id = "48990000"
utc_offset_h = 8
dialects_dir = "{DIALECTS}"
max_in_flight = 1024

[pos]
host = "127.0.0.1"
port = 0

[online]
host = "127.0.0.1"
port = 0

[log]
level = "info"

[security]
demo_keys = true
demo_terminals = true
key_store = "{folder / "key-store.json"}"
lmk_file = "{folder / "lmk"}"

[journal]
path = "{folder / "journal.sqlite3"}"
key_file = "{REPO / "conf" / "card-keys.toml"}"

[banks.icbc]
host = "127.0.0.1"
port = {bank_port}
links = 2
window = 64
simulate = false

[[routes]]
prefix = "622202"
bank = "icbc"
"""


async def _start(log: Path, *args: str) -> trio.Process:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        return await trio.lowlevel.open_process(
            [sys.executable, "-m", "switch", *args], stdout=out, stderr=subprocess.STDOUT,
            cwd=REPO, env=env,
        )  # fmt: skip


async def _logged(log: Path, event: str, count: int = 1) -> dict[str, Any]:
    with trio.fail_after(30):
        while True:
            seen = [
                record for line in (await trio.Path(log).read_bytes()).splitlines()
                if line.startswith(b"{") and (record := json.loads(line)).get("event") == event
            ]  # fmt: skip
            if len(seen) >= count:
                return seen[count - 1]
            await trio.sleep(0.05)


async def _phase(
    port: int, codec: Iso8583Codec, messages: list[list[tuple[str, dict[int, Any]]]], pid: int
) -> tuple[float, float, int]:
    """(CPU ms per transaction, transactions per second, approvals)."""
    approved = 0

    async def terminal(index: int, mine: list[tuple[str, dict[int, Any]]]) -> None:
        nonlocal approved
        client = await PosClient.connect("127.0.0.1", port, codec, Terminal(
            terminal_id=f"BNCH{index:04d}"))  # fmt: skip
        try:
            for message in mine:
                response = await client.request(message)
                approved += response.fields.get(39) == "00"
                CODES[str(response.fields.get(39))] = CODES.get(str(response.fields.get(39)), 0) + 1
        finally:
            await client.aclose()

    cpu, began = cpu_seconds(pid), time.monotonic()
    async with trio.open_nursery() as nursery:
        for index, mine in enumerate(messages):
            nursery.start_soon(terminal, index, mine)
    took, used = time.monotonic() - began, cpu_seconds(pid) - cpu
    total = sum(len(mine) for mine in messages)
    return used * 1000 / total, total / took, approved


async def _mixed(
    port: int,
    codec: Iso8583Codec,
    groups: dict[str, list[list[tuple[str, dict[int, Any]]]]],
    pid: int,
) -> dict[str, Any]:
    """Each group's terminals at the same time: per group, its rate, approvals and
    latency (p50, p99 ms); overall, the switch's CPU ms per transaction."""
    latencies: dict[str, list[float]] = {name: [] for name in groups}
    approved = dict.fromkeys(groups, 0)
    ended: dict[str, float] = {}

    async def terminal(name: str, index: int, mine: list[tuple[str, dict[int, Any]]]) -> None:
        client = await PosClient.connect("127.0.0.1", port, codec, Terminal(
            terminal_id=f"MIX{index:05d}"))  # fmt: skip
        try:
            for message in mine:
                sent = time.monotonic()
                response = await client.request(message)
                latencies[name].append((time.monotonic() - sent) * 1000)
                approved[name] += response.fields.get(39) == "00"
        finally:
            await client.aclose()
        ended[name] = max(ended.get(name, 0.0), time.monotonic())

    cpu, began = cpu_seconds(pid), time.monotonic()
    async with trio.open_nursery() as nursery:
        index = 0
        for name, messages in groups.items():
            for mine in messages:
                nursery.start_soon(terminal, name, index, mine)
                index += 1
    used = cpu_seconds(pid) - cpu
    total = sum(len(mine) for messages in groups.values() for mine in messages)
    found: dict[str, Any] = {"cpu_ms": round(used * 1000 / total, 3)}
    for name, seen in latencies.items():
        seen.sort()
        found[name] = {
            "per_s": round(len(seen) / (ended[name] - began)), "approved": approved[name],
            "p50_ms": round(seen[len(seen) // 2], 2),
            "p99_ms": round(seen[len(seen) * 99 // 100], 2),
        }  # fmt: skip
    return found


async def run(count: int, terminals: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="onus-bench-"))
    bank_config = folder / "bank.toml"
    bank_config.write_text(_config(folder, 0))
    bank_log, switch_log = folder / "bank.log", folder / "switch.log"
    bank = await _start(bank_log, "sim-bank", "--config", str(bank_config), "--bank", "icbc",
                        "--port", "0")  # fmt: skip
    processes = [bank]
    try:
        bank_port = int((await _logged(bank_log, "simulator_started"))["port"])
        config_path = folder / "switch.toml"
        config_path.write_text(_config(folder, bank_port))
        switch = await _start(switch_log, "run", "--config", str(config_path))
        processes.append(switch)
        port = int((await _logged(switch_log, "switch_started"))["pos_port"])
        config = load_config(config_path)
        codec = Iso8583Codec(load_dialect(DIALECTS / "cup-pos.toml"))
        per = count // terminals
        cards = [
            [Terminal(terminal_id=f"BNCH{t:04d}").sale(n + 1, PAN, 100 + n) for n in range(per)]
            for t in range(terminals)
        ]
        card = await _phase(port, codec, cards, switch.pid)
        store = open_ledger_store(config)
        store.open()
        settings = config.wallet.paycodes()
        settings = type(settings)(prefix=settings.prefix, ttl_s=3600, max_open=2 * per + 1,
                                  probe_limit=settings.probe_limit)  # fmt: skip

        def draw() -> str:
            return paycode.draw(settings.prefix)

        codes: list[list[tuple[str, dict[int, Any]]]] = []
        mixed_codes: list[list[tuple[str, dict[int, Any]]]] = []
        half = max(1, terminals // 2)
        today = time.strftime("%Y-%m-%d")
        for t in range(terminals):
            customer = f"B{t:09d}"
            store.open_wallet(customer, "app:bench", 3, today, time.time())
            store.transfer(TransferSpec(
                key=TransferKey("bench", customer, "topup"), debit="bank_clearing:icbc",
                credit=ledger.wallet_account(customer), amount=10_000_000, kind="topup",
            ), time.time())  # fmt: skip
            mine = []
            for n in range(per):
                issued = store.issue_paycode(customer, "app:bench", "wallet", "A", time.time(),
                                             settings, draw)  # fmt: skip
                mine.append(Terminal(terminal_id=f"BNCH{t:04d}").code_sale(
                    100_000 + n + 1, issued.code, 100 + n))  # fmt: skip
            codes.append(mine)
            if t < half:  # the mixed phase's code terminals, their codes drawn now too
                later = []
                for n in range(per):
                    issued = store.issue_paycode(customer, "app:bench", "wallet", "A",
                                                 time.time(), settings, draw)  # fmt: skip
                    later.append(Terminal(terminal_id=f"MIX{half + t:05d}").code_sale(
                        200_000 + n + 1, issued.code, 100 + n))  # fmt: skip
                mixed_codes.append(later)
        store.close()
        onus = await _phase(port, codec, codes, switch.pid)
        mixed_cards = [
            [Terminal(terminal_id=f"MIX{t:05d}").sale(300_000 + n + 1, PAN, 100 + n)
             for n in range(per)]
            for t in range(half)
        ]  # fmt: skip
        mixed = await _mixed(port, codec, {"card_sale": mixed_cards,
                                           "onus_code_sale": mixed_codes}, switch.pid)  # fmt: skip
    finally:
        for process in processes:
            process.terminate()
            with trio.move_on_after(10):
                await process.wait()
    return {
        "transactions_per_phase": per * terminals, "terminals": terminals,
        "card_sale": {"cpu_ms": round(card[0], 3), "per_s": round(card[1]), "approved": card[2]},
        "onus_code_sale": {"cpu_ms": round(onus[0], 3), "per_s": round(onus[1]),
                           "approved": onus[2]},
        "mixed": mixed,
        "codes": CODES,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="transactions per phase")
    parser.add_argument("--terminals", type=int, default=8)
    args = parser.parse_args(argv)
    print(json.dumps(trio.run(run, args.count, args.terminals), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
