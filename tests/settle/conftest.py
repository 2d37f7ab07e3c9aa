"""Fixtures of the settlement tests: the place of a test's journal and store, once per
engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.settle.ledger_days import Place, place_on
from tests.store.engines import ENGINES


@pytest.fixture(params=ENGINES)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    """The journal and settlement store of one test, on SQLite and then PostgreSQL."""
    return place_on(request.param, tmp_path, request)
