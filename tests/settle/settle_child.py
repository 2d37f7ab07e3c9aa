"""``python -m tests.settle.settle_child FOLDER [--die-after POINT]``: the switch's
settlement of a synthetic day (bench/synthetic_day.py) in a process of its own, as
``bench.settle_day`` runs it (SettlementService.settle, a real journal beside it), on
the engine the day was built on.

With ``--die-after``, the process kills itself (SIGKILL: no cleanup, no flush) just
after one of the moments a random kill seldom lands on, the narrow ones between the
settlement's own commits:

- ``settled``: the settlement's transaction committed, no file written yet;
- ``payouts_written``: the payout file renamed into place, the reconciliation file not;
- ``reversals_queued``: the reversals committed to the journal's store-and-forward, not
  yet marked handed over in the settlement store.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

import switch.net.settlement
from bench.settle_day import settle_dates
from bench.synthetic_day import load_day
from switch.log import configure_logging
from switch.store.postgresql import PostgresJournal
from switch.store.postgresql.settlement import PostgresSettlementStore
from switch.store.sqlite import SqliteJournal
from switch.store.sqlite.settlement import SqliteSettlementStore

POINTS = ("settled", "payouts_written", "reversals_queued")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def die_after(point: str) -> None:
    """Makes the process kill itself just after ``point`` (on either engine's store or
    journal, whichever the day is on)."""
    if point == "settled":
        for store in (SqliteSettlementStore, PostgresSettlementStore):
            settle = store.settle

            def settle_then_die(
                self: Any, *args: Any, _settle: Any = settle, **kwargs: Any
            ) -> bool:
                _settle(self, *args, **kwargs)
                _die()
                raise AssertionError("unreachable")

            store.settle = settle_then_die  # type: ignore[method-assign]
    elif point == "payouts_written":
        write_whole = switch.net.settlement._write_whole

        def write_then_die(path: Path, data: bytes) -> None:
            write_whole(path, data)
            if path.name.startswith("payouts-"):
                _die()

        switch.net.settlement._write_whole = write_then_die
    elif point == "reversals_queued":
        for journal in (SqliteJournal, PostgresJournal):
            commit = journal.commit

            async def commit_then_die(
                self: Any, *changes: Any, _commit: Any = commit, **kwargs: Any
            ) -> None:
                await _commit(self, *changes, **kwargs)
                _die()

            journal.commit = commit_then_die  # type: ignore[method-assign]
    else:
        raise ValueError(f"no such point {point!r}: one of {', '.join(POINTS)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.settle.settle_child")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--die-after", choices=POINTS)
    args = parser.parse_args(argv)
    configure_logging("warning", stream=sys.stderr.buffer)
    if args.die_after:
        die_after(args.die_after)
    day = load_day(args.folder)
    trio.run(lambda: settle_dates(args.folder, [day.business_date]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
