"""The ledger's end of a payment (its post or void, once its answer is journaled)
committed without its own fsync (design.md, "The ledger's post without its own
fsync"), on a real SQLite file: the payment's own step still commits with its fsync, and
so does any group an end shares with such a step; a power cut, which may take away the
ends committed since the last fsync, leaves what start-up's recovery posts again by the
journal's answers: every approved payment posted once, no wallet paid twice or below
zero.

PostgreSQL's ledger keeps every commit synchronous (its server can lose an asynchronous
commit while the switch lives on): checked here too.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import trio

from switch.core import ledger, paycode
from switch.core.ledger import TransferKey, TransferSpec
from switch.core.onus import EndTransfer, LedgerAnswered, PayByCode
from switch.net.onus import LedgerDesk
from switch.store.ledger_store import LedgerStoreBase
from switch.store.sqlite.ledger import SqliteLedgerStore
from tests.conftest import make_config
from tests.store.records import make_record

SETTINGS = make_config().wallet
MERCHANT = "898000000000001"
FUNDING = 10_000


class RecordingStore(SqliteLedgerStore):
    """Each commit's level (1 NORMAL, 2 FULL), in order."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.commits: list[int] = []

    def _synced(self, durable: bool) -> None:  # once a transaction, before its BEGIN
        super()._synced(durable)
        self.commits.append(int(self._db.execute("PRAGMA synchronous").fetchone()[0]))


class PowerCutStore(SqliteLedgerStore):
    """Keeps what a power cut would leave of the WAL: its frames up to the end of the
    last commit that synced it (``synchronous = FULL``). It never checkpoints, so the
    database file holds only what was there before and the WAL only grows."""

    def open(self) -> None:
        super().open()
        self._db.execute("PRAGMA wal_autocheckpoint = 0")
        self.wal = self.path.with_name(self.path.name + "-wal")
        self.synced_wal_bytes = self.wal.stat().st_size  # opening commits with FULL

    def _synced(self, durable: bool) -> None:
        super()._synced(durable)
        self._db.execute("PRAGMA wal_autocheckpoint = 0")

    def _transaction(self) -> Any:
        synced = self._durable
        inner = super()._transaction()
        store = self

        class Marking:
            def __enter__(self) -> None:
                inner.__enter__()

            def __exit__(self, *exc: object) -> bool | None:
                result = inner.__exit__(*exc)
                if synced and exc[0] is None:
                    store.synced_wal_bytes = store.wal.stat().st_size
                return result

        return Marking()

    def after_power_cut(self, folder: Path) -> Path:
        """The ledger as the disk would hold it after a power cut now."""
        folder.mkdir()
        image = folder / self.path.name
        image.write_bytes(self.path.read_bytes())
        image.with_name(image.name + "-wal").write_bytes(
            self.wal.read_bytes()[: self.synced_wal_bytes]
        )
        return image


def _customers(store: LedgerStoreBase, n: int) -> list[str]:
    """``n`` wallets of FUNDING each, one open code each: the codes."""
    today = time.strftime("%Y-%m-%d")
    settings = SETTINGS.paycodes()
    codes = []
    for i in range(n):
        customer = f"C2{i:08d}"
        store.open_wallet(customer, "app:wallet", 2, today, time.time())
        store.transfer(TransferSpec(
            key=TransferKey("test", f"topup-{customer}", "topup"), debit="bank_clearing:icbc",
            credit=ledger.wallet_account(customer), amount=FUNDING, kind="topup",
        ), time.time())  # fmt: skip
        issued = store.issue_paycode(customer, "app:wallet", "wallet", "B", time.time(),
                                     settings, lambda: paycode.draw(settings.prefix))  # fmt: skip
        codes.append(issued.code)
    return codes


def _payment(n: int, code: str, amount: int) -> PayByCode:
    rrn = f"{n:012d}"
    return PayByCode(
        code=code, terminal=f"T0000001:{MERCHANT}",
        key=TransferKey(f"pos:{MERCHANT}:T0000001", f"000001{n:06d}", "pay"),
        merchant_id=MERCHANT, amount=amount, rrn=rrn, local_date=time.strftime("%Y-%m-%d"),
    )  # fmt: skip


async def _pay(desk: LedgerDesk, step: PayByCode) -> tuple[LedgerAnswered, LedgerAnswered]:
    """The payment's step, then (its answer journaled) its end: post or void."""
    answered = await desk.carry_out(step)
    ended = await desk.carry_out(EndTransfer(key=step.key, approved=answered.ok, payment=True))
    return answered, ended


async def test_an_end_commits_without_its_own_fsync(tmp_path: Path) -> None:
    """The payment's step (the code taken, the checks, the pending transfer) commits at
    FULL; its end at NORMAL. A void (a declined answer) goes the same way."""
    store = RecordingStore(tmp_path / "ledger.sqlite3")
    store.open()
    try:
        codes = _customers(store, 2)
        desk = LedgerDesk(store, SETTINGS)
        store.commits.clear()
        answered, ended = await _pay(desk, _payment(1, codes[0], 2_500))
        assert answered.ok and ended.ok
        assert store.commits == [2, 1]
        # Declined by the journal (say, its answer failed to commit): voided the same way.
        step = _payment(2, codes[1], 1_000)
        assert (await desk.carry_out(step)).ok
        assert (await desk.carry_out(EndTransfer(key=step.key, approved=False, payment=True))).ok
        assert store.commits[2:] == [2, 1]
        posted, voided = store.transfer_of(_payment(1, "", 0).key), store.transfer_of(step.key)
        assert posted is not None and posted.state == "posted"
        assert voided is not None and voided.state == "voided"
        assert store.verify() == [] and store.pending_transfers() == []
        # Steps elsewhere commit as before: a top-up's, the app desk's.
        store.commits.clear()
        _customers(store, 1)
        assert set(store.commits) == {2}
    finally:
        store.close()


async def test_a_group_with_a_payment_in_it_commits_with_its_fsync(tmp_path: Path) -> None:
    """An end that waits for the store's thread goes in its next group; with a payment's
    step beside it, the group commits at FULL (the payment's pending transfer must be on
    disk before its answer is journaled)."""
    store = RecordingStore(tmp_path / "ledger.sqlite3")
    store.open()
    try:
        codes = _customers(store, 3)
        desk = LedgerDesk(store, SETTINGS)
        first = _payment(1, codes[0], 1_000)
        assert (await desk.carry_out(first)).ok
        entered, release = threading.Event(), threading.Event()

        def hold(name: str) -> None:
            if name == "pay_by_code" and not entered.is_set():
                entered.set()
                release.wait(10)

        store.fault = hold
        store.commits.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(desk.carry_out, _payment(2, codes[1], 1_000))  # holds the thread
            await trio.to_thread.run_sync(entered.wait, 10)
            nursery.start_soon(desk.carry_out, EndTransfer(key=first.key, approved=True,
                                                           payment=True))  # fmt: skip
            nursery.start_soon(desk.carry_out, _payment(3, codes[2], 1_000))
            with trio.fail_after(5):
                while len(desk._queue) < 2:  # they wait together
                    await trio.sleep(0.01)
            release.set()
        store.fault = None
        assert store.commits == [2, 2]  # the held payment's; the end's group with a payment
        transfer = store.transfer_of(first.key)
        assert transfer is not None and transfer.state == "posted"
    finally:
        store.close()


async def test_a_power_cut_loses_only_ends_that_recovery_posts_again(tmp_path: Path) -> None:
    """Payments one after another, each its step then its end, the journal's answer
    between them (here a dict: the journal commits each answer with its fsync before the
    end). A power cut the moment each end returns, and after the last: each image, once
    start-up's recovery has ended its pending transfers by the journal's answers, holds
    every approved payment posted once, every wallet its funding less them, nothing
    pending, and balances. The ends committed since the last fsync are the ones lost
    (the last payment's in the last image): recovery is what posts them."""
    store = PowerCutStore(tmp_path / "ledger.sqlite3")
    store.open()
    approved: dict[TransferKey, int] = {}
    answers: dict[TransferKey, str] = {}
    images: list[tuple[Path, dict[TransferKey, int]]] = []
    try:
        codes = _customers(store, 6)
        desk = LedgerDesk(store, SETTINGS)
        for n, code in enumerate(codes, start=1):
            amount = 20_000 if n == 4 else 1_000 * n  # the fourth: more than its wallet
            step = _payment(n, code, amount)
            answered = await desk.carry_out(step)
            assert answered.ok == (n != 4), answered
            answers[step.key] = "approved" if answered.ok else "declined"
            if answered.ok:
                approved[step.key] = amount
            ended = await desk.carry_out(
                EndTransfer(key=step.key, approved=answered.ok, payment=True)
            )
            assert ended.ok
            images.append((store.after_power_cut(tmp_path / f"cut-{n}"), dict(approved)))
    finally:
        store.close()

    lost = 0
    for image, paid in images:
        cut = SqliteLedgerStore(image)
        cut.open()
        try:
            pending = cut.pending_transfers()
            lost += len(pending)
            recovering = LedgerDesk(cut, SETTINGS)

            async def read(key: TransferKey, merchant_id: str) -> Any:
                return msgspec.structs.replace(make_record(), state=answers[key])

            await recovering.recover(read)
            assert cut.verify() == [] and cut.pending_transfers() == []
            for key, amount in paid.items():
                transfer = cut.transfer_of(key)
                assert transfer is not None and transfer.state == "posted", key
                assert transfer.posted_amount == amount
            merchant = cut.account(ledger.merchant_account(MERCHANT))
            assert merchant is not None and merchant.balances.balance == sum(paid.values())
            wallets = [cut.account(f"wallet:C2{i:08d}") for i in range(len(codes))]
            assert sum(view.balances.balance for view in wallets if view is not None) == (
                FUNDING * len(codes) - sum(paid.values())
            )
        finally:
            cut.close()
    assert lost >= 1  # the ends a power cut took away were there to be posted again


async def test_postgresql_ends_stay_synchronous(postgres_dsn: str) -> None:
    """PostgreSQL's ledger: every commit synchronous, as before."""
    from switch.store.postgresql.ledger import PostgresLedgerStore

    store = PostgresLedgerStore(postgres_dsn)
    store.open()
    try:
        assert not store.lazy_ends
        codes = _customers(store, 1)
        desk = LedgerDesk(store, SETTINGS)
        answered, ended = await _pay(desk, _payment(1, codes[0], 2_500))
        assert answered.ok and ended.ok and desk.groups == 2
        setting = store._execute("SHOW synchronous_commit")
        assert setting[0]["synchronous_commit"] == "on"
    finally:
        store.close()
