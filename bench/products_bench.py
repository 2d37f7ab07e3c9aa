"""What each product costs the switch, in one run (issues #20, #22 and #23's targets).

One switch process (SQLite journal, its ledger beside it) and one bank simulator
process; the same terminals send, phase after phase, on the same switch: card sales to
the simulated bank, pre-authorisations, completions of those pre-authorisations,
payment-code sales funded by a wallet, and payment-code sales funded by a credit line
(codes issued beforehand, in this process, through the ledger store; each terminal's codes
from ``--customers`` customers in turn, a few dozen purchases each). The switch's CPU
(its process, worker threads included, from /proc) before and after each phase gives
its CPU ms per transaction. Then ``paced``: card sales and wallet code sales at once,
each at half the slower phase's closed-loop rate (half the maximum), with their
latencies (p50, p99). The ratios the targets name are in ``ratios``::

    python -m bench.products_bench [--count 1600] [--terminals 8] [--rounds 2]

``--rounds`` repeats the phases in turn (the ratios from the sums): the machine is
shared, so each product is measured beside the others under the same load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench.onus_bench import DIALECTS, PAN, _config, _logged, _start
from bench.procstat import cpu_seconds
from bench.versions import SwitchVersion, baseline_version, current_version, resolve_commit
from switch.config import load_config
from switch.core import ledger, paycode
from switch.core.ledger import TransferKey, TransferSpec
from switch.net.clients import PosClient
from switch.store import open_ledger_store
from switch.terminal import Terminal
from switch.wire.dialect import load_dialect
from switch.wire.iso8583 import Iso8583Codec

Message = tuple[str, dict[int, Any]]
PHASES = ("card_sale", "preauth", "completion", "wallet_code_sale", "credit_code_sale")


def _amount(n: int) -> int:
    """1 to 5 yuan: whole yuan, so that no amount ends in a simulated bank's test hooks
    (05, 51, 54, 61 declined; 68 never answered, which would open the bank's circuit)."""
    return 100 * (1 + n % 5)


def _terminal(index: int) -> Terminal:
    return Terminal(terminal_id=f"BNCH{index:04d}")


async def _connect(port: int, codec: Iso8583Codec, index: int) -> PosClient:
    return await PosClient.connect("127.0.0.1", port, codec, _terminal(index))


async def _closed(
    port: int, codec: Iso8583Codec, messages: list[list[Message]], pid: int
) -> tuple[float, list[list[Any]], dict[str, int]]:
    """Each terminal's messages one after the other: (switch CPU seconds, every
    terminal's responses, answers by code)."""
    answers: list[list[Any]] = [[] for _ in messages]
    codes: dict[str, int] = {}

    async def terminal(index: int, mine: list[Message]) -> None:
        client = await _connect(port, codec, index)
        try:
            for message in mine:
                response = await client.request(message)
                answers[index].append(response)
                code = str(response.fields.get(39))
                codes[code] = codes.get(code, 0) + 1
        finally:
            await client.aclose()

    cpu = cpu_seconds(pid)
    async with trio.open_nursery() as nursery:
        for index, mine in enumerate(messages):
            nursery.start_soon(terminal, index, mine)
    return cpu_seconds(pid) - cpu, answers, codes


async def _paced(
    port: int, codec: Iso8583Codec, groups: dict[str, list[list[Message]]], rate: float
) -> dict[str, Any]:
    """Each group's terminals at once, the group's requests at ``rate`` a second in
    all (each terminal waits for its answer before the next, so latencies add no
    backlog): per group, p50 and p99 ms."""
    latencies: dict[str, list[float]] = {name: [] for name in groups}

    async def terminal(name: str, index: int, mine: list[Message], every: float) -> None:
        client = await _connect(port, codec, index)
        try:
            due = time.monotonic()
            for message in mine:
                began = time.monotonic()
                await client.request(message)
                latencies[name].append(time.monotonic() - began)
                due += every
                await trio.sleep(max(0.0, due - time.monotonic()))
        finally:
            await client.aclose()

    index = 0
    async with trio.open_nursery() as nursery:
        for name, terminals in groups.items():
            for mine in terminals:
                nursery.start_soon(terminal, name, index, mine, len(terminals) / rate)
                index += 1

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        name: {"p50_ms": pct(values, 0.5), "p99_ms": pct(values, 0.99), "count": len(values)}
        for name, values in latencies.items()
    }


class _Codes:
    """Payment codes issued through the ledger store, outside the switch."""

    def __init__(self, config_path: Path, terminals: int, customers: int) -> None:
        self.config = load_config(config_path)
        self.store = open_ledger_store(self.config)
        self.store.open()
        settings = self.config.wallet.paycodes()
        self.settings = type(settings)(prefix=settings.prefix, ttl_s=3600, max_open=100_000,
                                       probe_limit=settings.probe_limit)  # fmt: skip
        self.customers = customers
        self.turn = 0
        today = datetime.date.today()
        for t in range(terminals * customers):
            for funding in ("wallet", "credit"):
                customer = self.customer(funding, t)
                self.store.open_wallet(customer, "app:bench", 3, today.isoformat(), time.time())
                self.store.transfer(TransferSpec(
                    key=TransferKey("bench", customer, "topup"), debit="bank_clearing:icbc",
                    credit=ledger.wallet_account(customer), amount=100_000_000, kind="topup",
                ), time.time())  # fmt: skip
            self.store.credit_open(self.customer("credit", t), "app:bench", 100_000_000,
                                   statement_day=1, grace_days=9, business_date=today,
                                   at=time.time())  # fmt: skip

    @staticmethod
    def customer(funding: str, number: int) -> str:
        return f"{funding[0].upper()}{number:09d}"

    def issue(self, funding: str, terminal: int) -> str:
        """A code of one of the terminal's customers, in turn (a customer's purchases
        in a period are a credit book's lines: a few dozen, as a real one's)."""
        self.turn += 1
        number = terminal * self.customers + self.turn % self.customers
        issued = self.store.issue_paycode(
            self.customer(funding, number), "app:bench", funding, "A", time.time(),  # type: ignore[arg-type]
            self.settings, lambda: paycode.draw(self.settings.prefix),
        )  # fmt: skip
        return issued.code

    def close(self) -> None:
        self.store.close()


async def _start_switch(log: Path, config: Path, version: SwitchVersion) -> trio.Process:
    with log.open("wb") as out:
        return await trio.lowlevel.open_process(
            version.switch_command("run", "--config", str(config)), stdout=out,
            stderr=subprocess.STDOUT, cwd=version.tree, env=version.environment(),
        )  # fmt: skip


async def run(
    count: int,
    terminals: int,
    rounds: int,
    paced_s: float,
    profile: Path | None = None,
    version: SwitchVersion | None = None,
    customers: int = 25,
) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="products-bench-"))
    bank_config = folder / "bank.toml"
    bank_config.write_text(_config(folder, 0))
    bank_log, switch_log = folder / "bank.log", folder / "switch.log"
    bank = await _start(bank_log, "sim-bank", "--config", str(bank_config), "--bank", "icbc",
                        "--port", "0")  # fmt: skip
    processes = [bank]
    cpu: dict[str, float] = dict.fromkeys(PHASES, 0.0)
    took: dict[str, float] = dict.fromkeys(PHASES, 0.0)
    done: dict[str, int] = dict.fromkeys(PHASES, 0)
    codes: dict[str, dict[str, int]] = {phase: {} for phase in PHASES}
    per = count // terminals
    stans = [1] * terminals

    def stan(t: int) -> int:
        stans[t] += 1
        return stans[t]

    try:
        bank_port = int((await _logged(bank_log, "simulator_started"))["port"])
        config_path = folder / "switch.toml"
        text = _config(folder, bank_port)
        if "demo_terminals" not in text:  # the bench's terminals are registered (no sign-on)
            text = text.replace("demo_keys = true", "demo_keys = true\ndemo_terminals = true")
        config_path.write_text(text)
        switch = await _start_switch(switch_log, config_path, version or current_version())
        processes.append(switch)
        port = int((await _logged(switch_log, "switch_started"))["pos_port"])
        codec = Iso8583Codec(load_dialect(DIALECTS / "cup-pos.toml"))
        issuer = _Codes(config_path, terminals, customers)

        async def phase(name: str, messages: list[list[Message]]) -> list[list[Any]]:
            spy = None
            if profile is not None:  # py-spy's collapsed stacks of the switch, per phase
                await trio.Path(profile).mkdir(parents=True, exist_ok=True)
                spy = await trio.lowlevel.open_process([
                    "py-spy", "record", "--pid", str(switch.pid), "--format", "raw",
                    "--threads", "--nonblocking", "-o", str(profile / f"{name}.txt"),
                ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
                await trio.sleep(1)
            began = time.monotonic()
            used, answers, seen = await _closed(port, codec, messages, switch.pid)
            if spy is not None:
                spy.send_signal(2)
                await spy.wait()
            took[name] += time.monotonic() - began
            cpu[name] += used
            done[name] += sum(len(mine) for mine in messages)
            for code, n in seen.items():
                codes[name][code] = codes[name].get(code, 0) + n
            return answers

        for _ in range(rounds):
            await phase("card_sale", [
                [_terminal(t).sale(stan(t), PAN, _amount(n)) for n in range(per)]
                for t in range(terminals)
            ])  # fmt: skip
            preauths = [
                [_terminal(t).preauth(stan(t), PAN, 10_000 + _amount(n)) for n in range(per)]
                for t in range(terminals)
            ]
            answers = await phase("preauth", preauths)
            completions = []
            for t in range(terminals):
                mine = []
                for (_, fields), response in zip(preauths[t], answers[t], strict=True):
                    if response.fields.get(39) == "00":
                        mine.append(_terminal(t).completion(
                            stan(t), PAN, int(fields[4]), str(response.fields[38]),
                            int(fields[11]), str(response.fields[13]),
                        ))  # fmt: skip
                completions.append(mine)
            await phase("completion", completions)
            for funding in ("wallet", "credit"):
                messages = [
                    [_terminal(t).code_sale(stan(t), issuer.issue(funding, t), _amount(n))
                     for n in range(per)]
                    for t in range(terminals)
                ]  # fmt: skip
                await phase(f"{funding}_code_sale", messages)
        # Half the maximum: half the slower of card and wallet code sales' closed rates.
        rate = min(done[p] / took[p] for p in ("card_sale", "wallet_code_sale")) / 2
        each = max(1, int(rate / 2 * paced_s / (terminals // 2)))
        half = max(1, terminals // 2)
        paced = await _paced(port, codec, {
            "card_sale": [[_terminal(t).sale(stan(t), PAN, _amount(n)) for n in range(each)]
                          for t in range(half)],
            "wallet_code_sale": [
                [_terminal(t).code_sale(stan(t), issuer.issue("wallet", t), _amount(n))
                 for n in range(each)]
                for t in range(half, 2 * half)
            ],
        }, rate / 2)  # fmt: skip
        issuer.close()
    finally:
        for process in processes:
            process.terminate()
            with trio.move_on_after(10):
                await process.wait()
    per_txn = {p: cpu[p] * 1e6 / max(1, done[p]) for p in PHASES}
    return {
        "terminals": terminals, "rounds": rounds,
        "phases": {
            p: {"count": done[p], "cpu_us": round(per_txn[p]), "per_s": round(done[p] / took[p]),
                "codes": codes[p]}
            for p in PHASES
        },
        "paced": {"rate_per_s": round(rate), **paced},
        "ratios": {
            "preauth_vs_sale": round(per_txn["preauth"] / per_txn["card_sale"], 3),
            "completion_vs_sale": round(per_txn["completion"] / per_txn["card_sale"], 3),
            "wallet_code_vs_card_sale": round(
                per_txn["wallet_code_sale"] / per_txn["card_sale"], 3),
            "credit_vs_wallet_code": round(
                per_txn["credit_code_sale"] / per_txn["wallet_code_sale"], 3),
            "paced_p99_wallet_code_vs_card": round(
                paced["wallet_code_sale"]["p99_ms"] / max(0.01, paced["card_sale"]["p99_ms"]), 3),
        },
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1600, help="transactions per phase")
    parser.add_argument("--terminals", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="the phases in turn, this often")
    parser.add_argument("--paced-s", type=float, default=5.0, help="seconds of the paced phase")
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="DIR",
        help="py-spy (on PATH) records the switch per phase into DIR",
    )
    parser.add_argument("--customers", type=int, default=25, help="customers per terminal")
    parser.add_argument(
        "--baseline",
        metavar="REF",
        default=None,
        help="also run REF's switch (git archive of it), after the current's",
    )
    args = parser.parse_args(argv)
    result = trio.run(run, args.count, args.terminals, args.rounds, args.paced_s, args.py_spy,
                      None, args.customers)  # fmt: skip
    if args.baseline is not None:
        with tempfile.TemporaryDirectory(prefix="products-baseline-") as folder:
            version = baseline_version(args.baseline, resolve_commit(args.baseline), Path(folder))
            base = trio.run(run, args.count, args.terminals, args.rounds, args.paced_s, None,
                            version, args.customers)  # fmt: skip
        ratio = {
            phase: round(now["cpu_us"] / max(1, base["phases"][phase]["cpu_us"]), 3)
            for phase, now in result["phases"].items()
        }  # fmt: skip
        result = {"current": result, "baseline": {"ref": args.baseline, **base},
                  "current_vs_baseline": ratio}  # fmt: skip
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
