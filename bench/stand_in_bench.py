"""Stand-in under load (risk.md, "Stand-in processing"): a bank down for a while, its
sales stood in, then back, every advice delivered. Reported, never asserted.

``python -m bench.stand_in_bench [--down-s 5] [--terminals 16] [--keep-run-dir]``
starts a ``switch run`` whose bank ``citic`` has stand-in on (``bins`` its BIN's first
six digits) and no simulator listening, so no link signs on; ``--terminals`` POS
terminals send sales in closed loops for ``--down-s`` seconds: half of them with a card
the stand-in covers and amounts within its caps (stood in, 00 with an ``S`` code), the
other half above the single cap (91). Then a ``switch sim-bank`` starts on the bank's
port; the run times how long until every advice is accepted (``switch saf list --kind
advice``) and checks the simulator got each once as a 0220 (its log). One JSON line:
answers by code, latency percentiles of each, the advices and how long they took.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import trio

from bench.runconfig import BANK_BINS, BankPlan, extra_sections, switch_config, write_config
from bench.services import service, switch_command
from switch.net.clients import PosClient
from switch.terminal import Terminal
from switch.wire.dialect import load_dialect
from switch.wire.iso8583 import Iso8583Codec

REPO: Final = Path(__file__).resolve().parents[1]
POS_CODEC: Final = Iso8583Codec(load_dialect(REPO / "conf" / "dialects" / "cup-pos.toml"))
BANK: Final = "citic"
SINGLE_CAP_FEN: Final = 200_000


def luhn(partial: str) -> str:
    for digit in "0123456789":
        number = partial + digit
        total = 0
        for index, char in enumerate(reversed(number)):
            value = int(char) * (2 if index % 2 else 1)
            total += value - 9 if value > 9 else value
        if total % 10 == 0:
            return number
    raise AssertionError("unreachable")


def percentile(values: list[float], share: float) -> float:
    """Nearest rank of sorted ``values``."""
    return values[min(len(values) - 1, max(0, round(share * len(values)) - 1))]


async def free_port() -> int:
    probe = trio.socket.socket()
    await probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


async def terminal_loop(
    port: int, number: int, until: float, covered: bool, seen: list[tuple[str, float]]
) -> None:
    client = await PosClient.connect(
        "127.0.0.1", port, POS_CODEC, Terminal(terminal_id=f"STIP{number:04d}")
    )
    pan = luhn(f"{BANK_BINS[BANK]}{number:012d}")
    stan = 0
    while trio.current_time() < until:
        stan += 1
        amount = 1000 + stan if covered else SINGLE_CAP_FEN + stan
        began = trio.current_time()
        response = await client.request(client.terminal.sale(stan, pan, amount))
        seen.append((str(response.fields[39]), (trio.current_time() - began) * 1000))
    await client.aclose()


def advices(config_path: Path) -> list[dict[str, Any]]:
    listed = subprocess.run(
        switch_command("saf", "list", "--kind", "advice", "--state", "accepted", "--config",
                       str(config_path), "--json"),
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout  # fmt: skip
    rows: list[dict[str, Any]] = json.loads(listed)
    return rows


def pending(config_path: Path) -> int:
    listed = subprocess.run(
        switch_command("saf", "list", "--kind", "advice", "--config", str(config_path), "--json"),
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout  # fmt: skip
    return len(json.loads(listed))


async def run(down_s: float, terminals: int, run_dir: Path) -> dict[str, Any]:
    bank_port = await free_port()
    extra = extra_sections(run_dir, "stip")
    extra["banks"] = {BANK: {"stand_in": {
        "enabled": True, "bins": [BANK_BINS[BANK]], "single_cap_fen": SINGLE_CAP_FEN,
        "card_daily_count": 0, "card_daily_cap_fen": 10**12, "max_pending_fen": 10**12,
    }}}  # fmt: skip
    extra["settlement"] = {"merchants_file": str(REPO / "conf" / "merchants.csv"),
                           "out_dir": str(run_dir / "settlement")}  # fmt: skip
    extra["saf"] = {"poll_interval_s": 0.05}
    config = switch_config([BankPlan(name=BANK)], {BANK: bank_port}, extra=extra)
    config_path = write_config(run_dir / "stip.toml", config)
    seen: list[tuple[str, float]] = []
    async with service("stip-switch", switch_command("run", "--config", str(config_path)),
                       run_dir, "switch_started") as switch:  # fmt: skip
        pos_port = int(switch.started["pos_port"])
        until = trio.current_time() + down_s
        async with trio.open_nursery() as nursery:
            for number in range(terminals):
                nursery.start_soon(terminal_loop, pos_port, number, until, number % 2 == 0, seen)
        stood = sum(1 for code, _ in seen if code == "00")
        sims_path = write_config(run_dir / "stip-sims.toml", config)
        began = time.monotonic()
        argv = switch_command("sim-bank", "--config", str(sims_path), "--bank", BANK,
                              "--port", str(bank_port))  # fmt: skip
        async with service("stip-sim", argv, run_dir, "simulator_started") as simulator:
            with trio.fail_after(600):
                # Another process's journal, read by the operator's command: polled.
                while await trio.to_thread.run_sync(pending, config_path):  # noqa: ASYNC110
                    await trio.sleep(0.2)
            delivered_s = time.monotonic() - began
            accepted = await trio.to_thread.run_sync(advices, config_path)
            sim_log = Path(simulator.log_path)
    by_code: dict[str, list[float]] = {}
    for code, latency in seen:
        by_code.setdefault(code, []).append(latency)
    return {
        "bench": "stand_in",
        "down_s": down_s,
        "terminals": terminals,
        "answers": {code: len(latencies) for code, latencies in sorted(by_code.items())},
        "latency_ms": {
            code: {
                "p50": round(percentile(sorted(values), 0.50), 3),
                "p99": round(percentile(sorted(values), 0.99), 3),
            }
            for code, values in sorted(by_code.items())
        },
        "stood_in": stood,
        "advices_accepted": len(accepted),
        "advices_per_s": round(len(accepted) / delivered_s, 1) if delivered_s else None,
        "delivered_all_in_s": round(delivered_s, 2),
        "simulator_log": str(sim_log),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--down-s", type=float, default=5.0)
    parser.add_argument("--terminals", type=int, default=16)
    parser.add_argument("--keep-run-dir", action="store_true")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.keep_run_dir:
            run_dir = Path(tempfile.mkdtemp(prefix="stip-bench-"))
        else:
            run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stip-bench-")))
        print(json.dumps(trio.run(run, args.down_s, args.terminals, run_dir)))


if __name__ == "__main__":
    main()
