"""A queue served fairly: the channels (POS, online) take turns, and within a channel
its connections take turns, each connection's items in their order. Plain Python.

What waits for a bank's link slots waits here: one online client with many pipelined
requests, or one channel, cannot keep a bank's windows from the others, as the
switch-wide admission queue (``switch.core.admission``) keeps its slots.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Connection = Hashable


class FairQueue(Generic[Item]):
    __slots__ = ("_count", "_queues", "_turns")

    def __init__(self) -> None:
        # Per channel, per connection, its items in order; the channels' turn order. A
        # connection (a channel) leaves when it has nothing waiting.
        self._queues: dict[str, OrderedDict[Connection, deque[Item]]] = {}
        self._turns: deque[str] = deque()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def push(self, channel: str, connection: Connection, item: Item) -> None:
        """``item`` waits behind its connection's earlier ones."""
        queue = self._queues.get(channel)
        if queue is None:
            queue = self._queues[channel] = OrderedDict()
            self._turns.append(channel)
        items = queue.get(connection)
        if items is None:
            items = queue[connection] = deque()
        items.append(item)
        self._count += 1

    def pop(self) -> Item | None:
        """The next channel in turn serves the connection at its front (which then goes
        to the back of its channel, if it has more); None when nothing waits."""
        if not self._count:
            return None
        channel = self._turns.popleft()
        queue = self._queues[channel]
        connection, items = next(iter(queue.items()))
        item = items.popleft()
        if items:
            queue.move_to_end(connection)
        else:
            del queue[connection]
        if queue:
            self._turns.append(channel)
        else:
            del self._queues[channel]
        self._count -= 1
        return item

    def remove(self, channel: str, connection: Connection, item: Item) -> bool:
        """Takes ``item`` out (it gave up waiting); False if it was not waiting."""
        queue = self._queues.get(channel)
        items = queue.get(connection) if queue is not None else None
        if queue is None or items is None or item not in items:
            return False
        items.remove(item)
        if not items:
            del queue[connection]
            if not queue:
                del self._queues[channel]
                self._turns.remove(channel)
        self._count -= 1
        return True

    def drain(self) -> list[Item]:
        """Takes every item out, in turn order."""
        items = []
        while (item := self.pop()) is not None:
            items.append(item)
        return items

    def waiting_by_channel(self) -> dict[str, int]:
        return {
            channel: sum(len(items) for items in queue.values())
            for channel, queue in self._queues.items()
        }
