"""The app desk's kept results in the ledger store (``store/desk_results.py``), on both
engines: kept with what the request changed or not at all, the first's kept result
returned to a repeat without running it again, forgotten after their time."""

from __future__ import annotations

import pytest

from switch.core.ledger import TransferKey, TransferSpec
from switch.store.ledger_store import LedgerStoreBase
from tests.store.ledgers import ledger_store as ledger_store

AT = 1_796_610_030.0


def topup(store: LedgerStoreBase, request_id: str) -> TransferSpec:
    spec = TransferSpec(key=TransferKey("app:wallet", request_id, "topup"),
                        debit="bank_clearing:icbc", credit="wallet:C1", amount=100,
                        kind="topup")  # fmt: skip
    store.open_wallet("C1", "app:wallet", 2, "2026-12-07", AT)
    return spec


def test_kept_with_its_change_or_neither(ledger_store: LedgerStoreBase) -> None:
    store = ledger_store
    spec = topup(store, "r-1")
    runs: list[int] = []

    def body() -> tuple[bytes, bool]:
        runs.append(1)
        store.transfer(spec, AT)
        return b"result-1", True

    kept = store.desk_kept("app:wallet", "r-1", b"digest", AT, body)
    assert (kept.response, kept.again, kept.kept) == (b"result-1", False, True)
    again = store.desk_kept("app:wallet", "r-1", b"other", AT, body)
    assert (again.response, again.fingerprint, again.again) == (b"result-1", b"digest", True)
    assert runs == [1]
    assert store.desk_result("app:wallet", "r-1") == again
    assert store.desk_result("app:other", "r-1") is None  # per principal

    # What the body raises rolls its change back with the result.
    failing = topup(store, "r-2")

    def fails() -> tuple[bytes, bool]:
        store.transfer(failing, AT)
        raise ValueError("after the change")

    with pytest.raises(ValueError):
        store.desk_kept("app:wallet", "r-2", b"digest", AT, fails)
    assert store.desk_result("app:wallet", "r-2") is None
    assert store.transfer_of(failing.key) is None
    # Not kept: answered, nothing kept, the id free.
    refusal = store.desk_kept("app:wallet", "r-3", b"d", AT, lambda: (b"refused", False))
    assert (refusal.response, refusal.kept) == (b"refused", False)
    assert store.desk_result("app:wallet", "r-3") is None
    # Forgotten after their time.
    store.desk_purge(AT + 1)
    assert store.desk_result("app:wallet", "r-1") is None
