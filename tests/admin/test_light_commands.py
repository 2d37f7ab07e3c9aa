"""A ``switch`` command that only reads its config and talks to a running switch imports
neither the switch itself (``switch.app``, start-up, the journal, the links) nor trio,
structlog or cryptography: each command imports what it runs when it runs. Checked in a
process of its own, by the modules it has loaded once the command is done (what it
costs to start is what the operators' commands and the test suite's pay each time)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.admin.conftest import SwitchRun
from tests.conftest import REPO

HEAVY = (
    "switch.app", "switch.startup", "switch.supervisor", "switch.store", "switch.net",
    "switch.sim", "switch.log", "switch.ops", "trio", "structlog", "cryptography",
    "prometheus_client", "psycopg",
)  # fmt: skip
"""What `switch run` (and the commands working on the journal or the links) need."""

# Each test starts a `switch` command's process: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

RUN = """
import json, sys
from switch import cli
if sys.argv[1] == "--parse":
    for line in sys.argv[2:]:
        cli._parser().parse_args(line.split())
    code = 0
else:
    code = cli.main(sys.argv[1:])
sys.stdout.flush()
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def loaded(*args: str) -> tuple[int, list[str], str]:
    """The exit status of ``args`` run in a process of its own, the heavy modules it had
    loaded by its end, and what it printed."""
    result = subprocess.run(
        [sys.executable, "-c", RUN, *args],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    *said, last = result.stderr.splitlines() or [""]
    report = json.loads(last)
    heavy = [m for m in report["modules"] if any(m == h or m.startswith(f"{h}.") for h in HEAVY)]
    return report["code"], heavy, result.stdout + "\n".join(said)


def test_the_parser_of_every_command_is_built_from_light_modules() -> None:
    code, heavy, _ = loaded(
        "--parse",
        "status --json",
        "reload",
        "wallet balance C1",
        "credit status C1",
        "risk card-hash",
        "settle status --date 0101",
        "ledger balance",
        "keys list --store s --lmk-file l",
        "online balance",
        "journal show 123456789012",
        "run",
    )
    assert code == 0
    assert heavy == []


def test_status_and_reload_load_none_of_the_switch(running_switch: SwitchRun) -> None:
    config = ["--config", str(running_switch.config), "--url", running_switch.url]
    code, heavy, said = loaded("status", "--json", *config)
    assert code == 0, said
    assert json.loads(said.splitlines()[0])["ready"] is True
    assert heavy == []
    code, heavy, said = loaded("reload", *config)
    assert code == 0, said
    assert said.startswith("reloaded: nothing changed")
    assert heavy == []
