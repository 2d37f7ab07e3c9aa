"""The fair queue of what waits for a bank's link slots: channels take turns, then
their connections, each connection's items in order."""

from __future__ import annotations

from switch.core.fairqueue import FairQueue


def test_one_connection_with_many_waiting_does_not_hold_back_the_others() -> None:
    queue: FairQueue[str] = FairQueue()
    for n in range(5):
        queue.push("online", 1, f"o{n}")
    queue.push("pos", 10, "p10")
    queue.push("pos", 11, "p11")
    queue.push("online", 2, "q0")
    assert len(queue) == 8
    assert queue.waiting_by_channel() == {"online": 6, "pos": 2}
    assert queue.drain() == ["o0", "p10", "q0", "p11", "o1", "o2", "o3", "o4"]
    assert not queue and queue.pop() is None


def test_a_channel_that_empties_rejoins_at_the_back_of_the_turns() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("pos", 1, "p1")
    queue.push("online", 1, "o1")
    queue.push("online", 1, "o2")
    assert queue.pop() == "p1"  # pos had nothing more: it left the turns
    queue.push("pos", 2, "p2")  # and comes back after online
    assert [queue.pop(), queue.pop(), queue.pop()] == ["o1", "p2", "o2"]


def test_an_item_that_gives_up_leaves_without_disturbing_the_order() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("online", 1, "o1")
    queue.push("pos", 1, "p1")
    queue.push("online", 1, "o2")
    assert queue.remove("pos", 1, "p1")
    assert not queue.remove("pos", 1, "p1")  # not waiting any more
    assert not queue.remove("online", 2, "o1")  # not its connection
    assert len(queue) == 2 and queue.waiting_by_channel() == {"online": 2}
    assert queue.drain() == ["o1", "o2"]


def test_items_equal_in_value_are_told_apart_by_identity_of_position() -> None:
    """Waiters are objects; removing one takes the first equal one of its connection,
    which for distinct objects is itself."""
    queue: FairQueue[object] = FairQueue()
    first, second = object(), object()
    queue.push("pos", 1, first)
    queue.push("pos", 1, second)
    assert queue.remove("pos", 1, second)
    assert queue.pop() is first and queue.pop() is None
