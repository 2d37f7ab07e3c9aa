"""The online envelopes' nonces across the switch's processes (security.md, step 5).

Workers sharing a journal (``shared``, PostgreSQL): claims gathered from every
connection and decided in batches, one thread hop and one statement per batch, in the
journal's database (:mod:`switch.store.nonces`), which alone knows what the other
workers took. A switch of one process: decided at once in memory, the nonces accepted
written to the journal's database behind (every ``WRITE_BEHIND_S``) and read back at
start, so a restart still refuses a replay; no claim waits for the journal's write
lock (a SQLite journal has one, taken by every commit)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import structlog
import trio

from switch.store.nonces import NonceStore
from switch.store.port import JournalError
from switch.wire.envelope import NONCE_MEMORY_S

log = structlog.get_logger()

MAX_BATCH: Final = 256
PURGE_EVERY_S: Final = 60.0
QUEUE_SIZE: Final = 4096
"""Claims waiting for their batch (each connection's window bounds its own)."""
WRITE_BEHIND_S: Final = 10.0
"""Every second cost the online channel some 17% of its rate on a SQLite journal (each
write takes the journal's write lock); every ten, none measurable. A crash forgets at
most these seconds' nonces, and the ±300 s check still bounds their envelopes."""
MAX_REMEMBERED: Final = 2_000_000
"""Nonces one process holds in memory (ten minutes at over 3,000 requests a second);
beyond, a claim is refused as undecidable rather than an older nonce forgotten."""


class _Claim:
    __slots__ = ("accepted", "done", "error", "key")

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key
        self.done = trio.Event()
        self.accepted = False
        self.error: str | None = None


class NonceGuard:
    """``await claim(key_id, nonce)``: whether the nonce is new with that key (True) or
    was accepted in the last ten minutes, here or by another worker (False). Raises
    :class:`JournalError` when the database cannot say."""

    def __init__(
        self, store: NonceStore, *, shared: bool, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.shared = shared
        self.wall_clock = wall_clock
        self._send, self._receive = trio.open_memory_channel[_Claim](QUEUE_SIZE)
        self._held: OrderedDict[tuple[str, str], float] = OrderedDict()
        """Unshared: every nonce accepted in the last ten minutes, oldest first."""
        self._unwritten: list[tuple[str, str, float]] = []
        self.claims = 0
        self.replayed = 0
        self.batches = 0

    def statistics(self) -> dict[str, int]:
        return {"claims": self.claims, "replayed": self.replayed, "batches": self.batches}

    async def claim(self, key_id: str, nonce: str) -> bool:
        if not self.shared:
            return self.claim_nowait(key_id, nonce)
        claim = _Claim((key_id, nonce))
        await self._send.send(claim)
        await claim.done.wait()
        if claim.error is not None:
            raise JournalError(claim.error)
        return claim.accepted

    def claim_nowait(self, key_id: str, nonce: str) -> bool:
        """The unshared decision, in memory."""
        now = self.wall_clock()
        held = self._held
        cutoff = now - NONCE_MEMORY_S
        while held:
            oldest = next(iter(held.values()))
            if oldest >= cutoff:
                break
            held.popitem(last=False)
        key = (key_id, nonce)
        self.claims += 1
        if held.get(key, cutoff - 1) >= cutoff:
            self.replayed += 1
            return False
        if len(held) >= MAX_REMEMBERED:
            raise JournalError(f"{MAX_REMEMBERED} nonces held: no room for another")
        held[key] = now
        held.move_to_end(key)
        self._unwritten.append((key_id, nonce, now))
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Opens the store (unshared: reads back the last ten minutes' nonces) and
        decides or writes claims until cancelled; purges every minute."""
        await trio.to_thread.run_sync(self.store.open)
        try:
            if not self.shared:
                since = self.wall_clock() - NONCE_MEMORY_S
                for key_id, nonce, accepted_at in await trio.to_thread.run_sync(
                    self.store.recent, since
                ):
                    self._held[(key_id, nonce)] = accepted_at
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._purge)
                task_status.started()
                if self.shared:
                    await self._decide()
                else:
                    await self._write_behind()
        finally:
            with trio.CancelScope(shield=True):
                if self._unwritten:
                    await self._write()
                await trio.to_thread.run_sync(self.store.close)

    async def _write_behind(self) -> None:
        while True:
            await trio.sleep(WRITE_BEHIND_S)
            await self._write()

    async def _write(self) -> None:
        written, self._unwritten = self._unwritten, []
        if not written:
            return
        try:
            await trio.to_thread.run_sync(self.store.remember, written)
        except JournalError as exc:
            # Held in memory all the same: only a restart would forget them.
            log.error("nonce_write_failed", error=str(exc), nonces=len(written))

    async def _decide(self) -> None:
        receive = self._receive
        while True:
            batch = [await receive.receive()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(receive.receive_nowait())
                except trio.WouldBlock:
                    break
            distinct: dict[tuple[str, str], None] = dict.fromkeys(c.key for c in batch)
            keys = list(distinct)
            try:
                decided = await trio.to_thread.run_sync(
                    self.store.claim, keys, self.wall_clock(), float(NONCE_MEMORY_S)
                )
            except JournalError as exc:
                log.error("nonce_check_failed", error=str(exc))
                for claim in batch:
                    claim.error = str(exc)
                    claim.done.set()
                continue
            accepted = dict(zip(keys, decided, strict=True))
            self.batches += 1
            for claim in batch:
                # The first of two identical claims in one batch takes the nonce.
                claim.accepted = accepted.pop(claim.key, False)
                self.claims += 1
                self.replayed += not claim.accepted
                claim.done.set()

    async def _purge(self) -> None:
        while True:
            await trio.sleep(PURGE_EVERY_S)
            try:
                await trio.to_thread.run_sync(self.store.purge, self.wall_clock() - NONCE_MEMORY_S)
            except JournalError as exc:
                log.error("nonce_purge_failed", error=str(exc))
