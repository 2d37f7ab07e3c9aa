"""A switch of two worker processes seen whole from worker 0's admin interface:
``/status`` (totals and each worker), ``/metrics`` (a ``worker`` label), ``/readyz``
(503 while a worker is down), ``switch status`` and ``switch top``.

Real processes, real ports, the workers on the test-only SQLite journals (what the
monitoring reads does not cross the journal)."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from switch.admin.status import status_decoder
from switch.net.clients import PosClient
from tests.admin.test_cli import cells
from tests.switch_process import (
    demo_config,
    one_bank_config,
    run_switch,
    start_sim_bank,
    start_switch,
    write_config,
)
from tests.test_workers import TEST_ONLY_SQLITE, _connect_to_each_worker, _sale

pytestmark = pytest.mark.slow


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def get(url: str) -> tuple[int, bytes]:
    return await trio.to_thread.run_sync(_get, url)


def _post_trace(base: str, token: str, selection: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        f"{base}/trace", method="POST", data=json.dumps(selection).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, object] = json.loads(response.read())
        return answer


async def post_trace(base: str, token: str, selection: dict[str, object]) -> dict[str, object]:
    return await trio.to_thread.run_sync(_post_trace, base, token, selection)


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def test_every_worker_is_in_status_metrics_readiness_and_top(tmp_path: Path) -> None:
    sim, bank_port = await start_sim_bank(write_config(tmp_path, demo_config(tmp_path), "sim.toml"))
    settings = one_bank_config(tmp_path, bank_port)
    settings["banks"]["icbc"]["links"] = 2  # one a worker
    config = write_config(tmp_path, settings)
    switch = await start_switch(config, args=["--workers", "2"], env=TEST_ONLY_SQLITE)
    clients: list[PosClient] = []
    try:
        started = await switch.wait_for_event("supervisor_started")
        await switch.wait_for_event("link_signed_on", count=2)
        await switch.wait_for_event("switch_started", count=2)
        base = f"http://127.0.0.1:{switch.events('admin_listening')[0]['port']}"
        held = await _connect_to_each_worker(switch, int(started["pos_port"]), 2)
        clients = [client for each in held.values() for client in each]
        sold = {index: len(each) for index, each in held.items()}  # one sale a connection
        # Each connection also signed on before its sale (security.md): answered, counted.
        answered = {index: 2 * count for index, count in sold.items()}
        pids = {r["worker"]: r["pid"] for r in switch.events("worker_started")}

        # /status: the switch's totals, and each worker with its own.
        status, body = await get(f"{base}/status")
        assert status == 200
        document = status_decoder.decode(body)
        assert [(w.index, w.state, w.pid, w.ready) for w in document.workers] == [
            (0, "running", pids[0], True),
            (1, "running", pids[1], True),
        ]
        assert [w.transactions for w in document.workers] == [answered[0], answered[1]]
        assert sum(t.count for t in document.transactions) == answered[0] + answered[1]
        icbc = next(bank for bank in document.banks if bank.name == "icbc")
        assert icbc.approved == sold[0] + sold[1]
        assert (icbc.links_up, len(icbc.links)) == (2, 2)  # one at each worker
        pos = next(channel for channel in document.channels if channel.name == "pos")
        assert pos.connections == len(clients)
        assert document.ready and document.not_ready == []

        # /metrics: each worker's series labelled with it; the process's too.
        status, body = await get(f"{base}/metrics")
        assert status == 200
        text = body.decode()
        series = samples(text, "payswitch_transactions_total")
        by_worker: dict[str, float] = {}
        for labels, value in series.items():
            worker = dict(labels)["worker"]
            by_worker[worker] = by_worker.get(worker, 0) + value
        assert by_worker == {"0": answered[0], "1": answered[1]}
        assert set(samples(text, "payswitch_worker_up")) == {
            (("worker", "0"),),
            (("worker", "1"),),
        }
        assert set(samples(text, "payswitch_worker_up").values()) == {1.0}
        assert samples(text, "payswitch_workers") == {(): 2.0}
        assert {dict(k)["worker"] for k in samples(text, "process_resident_memory_bytes")} == {
            "0",
            "1",
        }
        # The reversal backlog is the journal's: given once, with no worker label.
        assert all("worker" not in dict(k) for k in samples(text, "payswitch_saf_pending"))

        # switch status and switch top draw each worker.
        for command in (["status"], ["top", "--once", "--interval", "0.2"]):
            result = await trio.to_thread.run_sync(
                run_switch, [*command, "--config", str(config), "--url", base]
            )
            assert result.returncode == 0, result.stderr
            row = cells(result.stdout, "1")
            assert row[1:3] == ["running", str(pids[1])], result.stdout

        # The trace, set at worker 0's admin, reaches worker 1.
        token = (tmp_path / "worker-0" / "admin-token").read_text().strip()
        answer = await post_trace(base, token, {"terminals": ["POS00001"]})
        assert answer == {
            "selection": {"all": False, "terminals": ["POS00001"], "merchants": [], "banks": []},
            "workers_not_answering": [],
        }
        before = len(switch.records())
        assert (await _sale(held[1][0]))[39] == "00"
        traced = [r for r in switch.records()[before:] if r.get("event") == "trace"]
        assert {(r["worker"], r["channel"], r["direction"]) for r in traced} == {
            (1, "pos", "in"), (1, "bank", "out"), (1, "bank", "in"), (1, "pos", "out"),
        }  # fmt: skip

        # Worker 1 killed: not ready until its successor answers, the restart counted.
        assert (await get(f"{base}/readyz"))[0] == 200
        os.kill(pids[1], signal.SIGKILL)
        refusals: list[str] = []
        with trio.fail_after(20):
            while not refusals:
                status, body = await get(f"{base}/readyz")
                if status == 503:
                    refusals = [line for line in body.decode().split('"') if "worker 1" in line]
                await trio.sleep(0.05)
        assert refusals, body
        await switch.wait_for_event("switch_started", count=3)
        with trio.fail_after(20):
            while (await get(f"{base}/readyz"))[0] != 200:
                await trio.sleep(0.1)
        status, body = await get(f"{base}/status")
        restarted = status_decoder.decode(body).workers[1]
        assert (restarted.state, restarted.restarts) == ("running", 1)
        assert restarted.last_exit == "killed by SIGKILL"
        assert restarted.pid not in (None, pids[1])
        text = (await get(f"{base}/metrics"))[1].decode()
        assert samples(text, "payswitch_worker_restarts_total")[(("worker", "1"),)] == 1.0
    finally:
        for client in clients:
            await client.aclose()
        assert await switch.stop() == 0, switch.output()
        assert await sim.stop() == 0, sim.output()
