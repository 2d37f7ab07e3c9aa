"""The online envelopes' nonces in the journal's database, on both engines: a claim
takes a nonce once per key within ten minutes, whoever asks (two connections stand
for two workers), and old ones are purged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from switch.store.nonces import NonceStore, PostgresNonces, SqliteNonces

MEMORY_S = 600.0


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[NonceStore]]:
    """Two stores on one database, as two workers' connections."""
    if request.param == "sqlite":
        made: list[NonceStore] = [SqliteNonces(tmp_path / "journal.sqlite3") for _ in range(2)]
    else:
        dsn: str = request.getfixturevalue("postgres_dsn")
        made = [PostgresNonces(dsn) for _ in range(2)]
    for store in made:
        store.open()
    yield made
    for store in made:
        store.close()


def test_a_nonce_is_taken_once_per_key_across_connections(stores: list[NonceStore]) -> None:
    one, two = stores
    assert one.claim([("k1", "n" * 16), ("k1", "m" * 16)], 1000.0, MEMORY_S) == [True, True]
    assert two.claim([("k1", "n" * 16), ("k2", "n" * 16)], 1001.0, MEMORY_S) == [False, True]
    assert one.claim([("k2", "n" * 16)], 1002.0, MEMORY_S) == [False]
    # Ten minutes after it was taken it may be taken again (the timestamp check then
    # refuses any replay of the envelope that carried it).
    assert two.claim([("k1", "n" * 16)], 1000.0 + MEMORY_S - 1, MEMORY_S) == [False]
    assert two.claim([("k1", "n" * 16)], 1000.0 + MEMORY_S + 1, MEMORY_S) == [True]
    assert one.claim([("k1", "n" * 16)], 1000.0 + MEMORY_S + 2, MEMORY_S) == [False]


def test_purge_removes_only_what_is_older_than_asked(stores: list[NonceStore]) -> None:
    one, two = stores
    one.claim([("k", f"old{n:013d}") for n in range(50)], 100.0, MEMORY_S)
    one.claim([("k", "new" + "x" * 13)], 900.0, MEMORY_S)
    assert two.purge(before=800.0) == 50
    assert two.purge(before=800.0) == 0
    assert one.claim([("k", "new" + "x" * 13)], 901.0, MEMORY_S) == [False]
    assert one.claim([("k", "old0000000000000")], 901.0, MEMORY_S) == [True]


def test_nonces_remembered_behind_are_read_back(stores: list[NonceStore]) -> None:
    one, two = stores
    one.remember([("k", "a" * 16, 100.0), ("k", "b" * 16, 200.0), ("j", "a" * 16, 300.0)])
    one.remember([("k", "a" * 16, 150.0)])  # the newest time wins
    assert two.recent(140.0) == [
        ("k", "a" * 16, 150.0), ("k", "b" * 16, 200.0), ("j", "a" * 16, 300.0),
    ]  # fmt: skip
    assert two.recent(250.0) == [("j", "a" * 16, 300.0)]
