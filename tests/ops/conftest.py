"""Fixtures of the shipped operations files' tests (ops/): promtool, and a running
switch's /metrics to check every query and alert names a metric the switch has."""

from __future__ import annotations

import os
import re
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from switch.devtools.promtool import PromtoolUnavailable, install_promtool
from tests.conftest import REPO, make_config
from tests.net.helpers import PAN_ICBC, pos_client, start_switch

OPS = REPO / "ops"
PROMTOOL_REQUIRED = (
    os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
    or os.environ.get("SWITCH_TEST_PROMTOOL") == "required"
)
"""In CI (or with SWITCH_TEST_PROMTOOL=required) the rules' tests never skip: a
promtool that cannot be installed fails them."""
METRIC_NAME = re.compile(r"\b((?:payswitch|process)_[a-z0-9_]+)\b")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


@pytest.fixture(scope="session")
def promtool() -> Path:
    """promtool, installed from Debian's prometheus package where missing and allowed;
    else the test skips, saying why (fails in CI)."""
    try:
        return install_promtool()
    except PromtoolUnavailable as exc:
        if PROMTOOL_REQUIRED:
            pytest.fail(f"{exc} (required here)", pytrace=False)
        pytest.skip(str(exc))


def names_in(text: str) -> set[str]:
    """The metric names a PromQL expression uses."""
    return set(METRIC_NAME.findall(text))


def exposed(scrape: str) -> set[str]:
    """Every family and sample name in a scrape (HELP and TYPE lines included: a family
    without samples yet, such as a histogram nothing has filled, is named there)."""
    found: set[str] = set()
    for line in scrape.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            found.add(line.split()[2])
        elif line and not line.startswith("#"):
            found.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return found


def missing(used: set[str], scrape: str) -> set[str]:
    """The names of ``used`` that the scrape has neither as such nor as a family."""
    have = exposed(scrape)
    absent = set()
    for name in used:
        bases = {name} | {name.removesuffix(suffix) for suffix in SUFFIXES}
        if not bases & have:
            absent.add(name)
    return absent


@pytest.fixture
async def scrape(nursery: trio.Nursery) -> AsyncIterator[str]:
    """/metrics of a running switch (simulated banks, its settlement service) after a
    sale, as Prometheus reads it."""
    app = await start_switch(nursery, make_config(admin={"enabled": True, "port": 0}))
    client = await pos_client(app)
    with trio.fail_after(10):
        response = await client.request(client.terminal.sale(1, PAN_ICBC, 1000))
    assert response.fields[39] == "00"
    await client.aclose()

    def get() -> str:
        url = f"http://127.0.0.1:{app.admin_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return str(answer.read().decode())

    yield await trio.to_thread.run_sync(get)
    app.shutdown()
