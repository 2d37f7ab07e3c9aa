"""The online envelopes' nonces across the switch's processes (security.md, step 5):
claims gathered from every connection and decided in batches, one thread hop and one
statement per batch, in the journal's database (:mod:`switch.store.nonces`)."""

from __future__ import annotations

import time
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

    def __init__(self, store: NonceStore, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.wall_clock = wall_clock
        self._send, self._receive = trio.open_memory_channel[_Claim](QUEUE_SIZE)
        self.claims = 0
        self.replayed = 0
        self.batches = 0

    def statistics(self) -> dict[str, int]:
        return {"claims": self.claims, "replayed": self.replayed, "batches": self.batches}

    async def claim(self, key_id: str, nonce: str) -> bool:
        claim = _Claim((key_id, nonce))
        await self._send.send(claim)
        await claim.done.wait()
        if claim.error is not None:
            raise JournalError(claim.error)
        return claim.accepted

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Opens the store and decides claims until cancelled; purges every minute."""
        await trio.to_thread.run_sync(self.store.open)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._purge)
                task_status.started()
                await self._decide()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.store.close)

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
