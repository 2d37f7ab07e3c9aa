"""Switch-wide admission, synchronously: slots, the bounded queue, fairness between
channels and connections, and overload told apart from a long steady queue."""

from __future__ import annotations

import pytest

from switch.core.admission import (
    OVERLOAD_INTERVALS,
    AdmissionConfig,
    AdmissionQueue,
    Ticket,
)
from switch.core.ratelimit import TokenBucket

CONFIG = AdmissionConfig(slots=2, queue_limit=4, max_wait_s=1.0, target_s=0.02, interval_s=0.1)


def come(
    queue: AdmissionQueue, channel: str, connection: int, now: float, *, retry: bool = False
) -> Ticket:
    """A request read at ``now``: through the door, then asking for its slot (a ticket
    refused at the door comes back refused, as the channel answers it)."""
    reason = queue.at_the_door(now, retry=retry)
    if reason is not None:
        ticket = Ticket(channel, connection, now)
        ticket.state, ticket.reason = "refused", reason
        return ticket
    return queue.arrive(channel, connection, now, retry=retry)


def release(queue: AdmissionQueue, now: float, channel: str = "pos") -> Ticket | None:
    """A transaction of ``channel`` ended: the one ticket its slot went to, if any."""
    granted = queue.release(now, channel)
    assert len(granted) <= 1, granted
    return granted[0] if granted else None


def states(tickets: list[Ticket]) -> list[str]:
    return [ticket.state for ticket in tickets]


def test_free_slots_admit_at_once_then_requests_wait_then_the_queue_refuses() -> None:
    queue = AdmissionQueue(CONFIG)
    tickets = [come(queue, "pos", n, 0.0) for n in range(7)]
    assert states(tickets) == ["admitted"] * 2 + ["waiting"] * 4 + ["refused"]
    assert "waiting" in tickets[-1].reason
    assert (queue.in_use, queue.waiting, queue.refused_queue_full) == (2, 4, 1)


def test_a_released_slot_goes_to_the_oldest_waiting_of_the_next_channel_in_turn() -> None:
    queue = AdmissionQueue(CONFIG)
    come(queue, "pos", 1, 0.0)
    come(queue, "pos", 2, 0.0)
    first = come(queue, "pos", 3, 0.01)
    second = come(queue, "pos", 3, 0.02)
    assert release(queue, 0.03) is first and first.state == "admitted"
    assert release(queue, 0.04) is second
    assert release(queue, 0.05) is None
    assert (queue.in_use, queue.waiting) == (1, 0)


def test_channels_take_turns_whatever_one_of_them_queued() -> None:
    """An online client with many pipelined requests waits its channel's turn: the
    terminals queued after it are served in between."""
    queue = AdmissionQueue(AdmissionConfig(slots=1, queue_limit=100, max_wait_s=1.0))
    come(queue, "online", 1, 0.0)
    online = [come(queue, "online", 1, 0.001 * n) for n in range(1, 11)]
    pos = [come(queue, "pos", 100 + n, 0.02 + 0.001 * n) for n in range(3)]
    served, holder = [], "online"
    for n in range(6):
        ticket = release(queue, 0.1 + n * 0.01, holder)
        assert ticket is not None
        served.append(ticket)
        holder = ticket.channel
    assert served == [online[0], pos[0], online[1], pos[1], online[2], pos[2]]


def test_connections_of_a_channel_take_turns() -> None:
    queue = AdmissionQueue(AdmissionConfig(slots=1, queue_limit=100, max_wait_s=1.0))
    come(queue, "online", 1, 0.0)
    busy = [come(queue, "online", 1, 0.001 * n) for n in range(1, 5)]
    quiet = come(queue, "online", 2, 0.01)
    served = [release(queue, 0.1 + n * 0.01, "online") for n in range(3)]
    assert served == [busy[0], quiet, busy[1]]


def test_a_withdrawn_ticket_gives_its_place_up() -> None:
    queue = AdmissionQueue(CONFIG)
    come(queue, "pos", 1, 0.0)
    come(queue, "pos", 2, 0.0)
    expired = come(queue, "pos", 3, 0.0)
    later = come(queue, "pos", 4, 0.5)
    queue.withdraw(expired, 1.0, expired=True)
    assert expired.state == "withdrawn" and queue.expired == 1
    assert queue.oldest_wait_s(1.0) == pytest.approx(0.5)
    assert release(queue, 1.1) is later
    queue.withdraw(later, 1.2, expired=True)  # admitted already: nothing to withdraw
    assert later.state == "admitted" and queue.expired == 1


def test_a_long_steady_queue_is_served_not_refused() -> None:
    """A closed loop of many terminals: each sends its next request when answered, so
    demand equals service however long the queue; nothing is refused."""
    queue = AdmissionQueue(AdmissionConfig(slots=4, queue_limit=1000, max_wait_s=1.0))
    now = 0.0
    for connection in range(200):  # a fleet that all sends at once: a burst
        come(queue, "pos", connection, now)
    refused = 0
    for step in range(3000):  # 30 s: one answer and one new request every 10 ms
        now = 0.01 * (step + 1)
        release(queue, now)
        refused += come(queue, "pos", step % 200, now).state == "refused"
    assert refused == 0 and not queue.overloaded
    assert queue.oldest_wait_s(now) > CONFIG.target_s  # a long queue, all the same


def test_demand_beyond_service_interval_after_interval_is_overload_and_sheds() -> None:
    """Twice as many arrivals as answers: once it has lasted OVERLOAD_INTERVALS, new
    arrivals are refused whenever they would wait over target_s, so what is admitted
    waits about that long, and the excess is told at once."""
    config = AdmissionConfig(slots=4, queue_limit=10_000, max_wait_s=1.0, target_s=0.02)
    queue = AdmissionQueue(config)
    now, waited, refused = 0.0, [], 0
    tickets: list[Ticket] = []
    for step in range(4000):  # 4 s: an answer every 1 ms, an arrival every 0.5 ms
        now = step * 0.0005
        ticket = come(queue, "pos", step, now)
        refused += ticket.state == "refused"
        tickets.append(ticket)
        if step % 2:
            granted = release(queue, now)
            if granted is not None and now > 1.0:
                waited.append(now - granted.arrived_at)
    assert queue.overloaded
    assert refused > 1500  # about half of what arrived after the first few intervals
    assert max(waited) < config.target_s + 0.01  # once shedding, accepted wait is short


def test_overload_ends_when_demand_falls_back() -> None:
    queue = AdmissionQueue(AdmissionConfig(slots=1, queue_limit=10_000, max_wait_s=10.0))
    now = 0.0
    for step in range(2000):
        now = step * 0.0005
        come(queue, "pos", step, now)
        if step % 2:
            release(queue, now)
    assert queue.overloaded
    for step in range(2000):  # as many answers as arrivals
        now += 0.001
        release(queue, now)
        come(queue, "pos", step, now)
    assert not queue.overloaded


def test_retries_of_refused_requests_are_not_counted_as_new_demand() -> None:
    """Terminals that resend the moment they are refused (a crowd beyond capacity):
    were their retries counted as demand, the switch would stay 'overloaded' and refuse
    them for ever in a loop."""
    queue = AdmissionQueue(AdmissionConfig(slots=4, queue_limit=1000, max_wait_s=1.0))
    now = 0.0
    for step in range(5000):
        now = step * 0.001
        release(queue, now)
        come(queue, "pos", step % 300, now)  # the served terminal's next request
        for retry in range(3):  # and three refused ones resending
            come(queue, "pos", 1000 + retry, now, retry=True)
    assert not queue.overloaded


def test_a_few_either_way_at_low_rates_is_noise() -> None:
    queue = AdmissionQueue(AdmissionConfig(slots=1, queue_limit=100, max_wait_s=10.0))
    now = 0.0
    for _ in range(OVERLOAD_INTERVALS * 5):
        for n in range(6):  # 6 arrivals, 1 answer an interval: MIN_EXCESS not reached
            come(queue, "pos", n, now + 0.01 * n)
        release(queue, now + 0.09)
        now += 0.1
    assert not queue.overloaded


def test_requests_a_rule_answers_before_they_ask_for_a_slot_are_not_demand() -> None:
    """A flood of cards with no route (92 before any slot) beside steady traffic that
    fills the queue: let in at the door, they never ask for a slot, and must not make
    the switch look overloaded."""
    queue = AdmissionQueue(AdmissionConfig(slots=4, queue_limit=1000, max_wait_s=1.0))
    for connection in range(100):
        come(queue, "pos", connection, 0.0)
    for step in range(2000):
        now = 0.001 * (step + 1)
        release(queue, now)
        come(queue, "pos", step % 100, now)
        for _ in range(5):
            assert queue.at_the_door(now) is None  # then answered 92 by the lifecycle
    assert not queue.overloaded


def test_statistics_say_what_is_held_and_why_refused() -> None:
    queue = AdmissionQueue(CONFIG)
    for n in range(7):
        come(queue, "pos", n, 0.0)
    statistics = queue.statistics(0.5)
    assert (statistics.in_use, statistics.waiting, statistics.refused_queue_full) == (2, 4, 1)
    assert statistics.oldest_wait_s == pytest.approx(0.5)


def test_a_token_bucket_allows_a_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate_per_s=10.0, burst=3.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s(0.0) == pytest.approx(0.1)
    assert bucket.take(0.1) and not bucket.take(0.1)
    assert bucket.take(10.0) and bucket.take(10.0) and bucket.take(10.0)
    assert not bucket.take(10.0)  # refilled to its burst, not beyond


# -- shares: a channel holds at most its share while another has work -------------------

SHARED = AdmissionConfig(
    slots=8, queue_limit=100, max_wait_s=1.0, shares={"pos": 0.75, "online": 0.25}
)


def test_a_channel_alone_uses_every_slot_whatever_its_share() -> None:
    queue = AdmissionQueue(SHARED)
    tickets = [come(queue, "online", 1, 0.0) for _ in range(9)]
    assert states(tickets) == ["admitted"] * 8 + ["waiting"]


def test_beside_another_channel_a_busy_one_is_held_to_its_share() -> None:
    """Free slots do not go to the online client beyond its share while terminals
    have work: the terminals' requests are admitted at once, the client's wait."""
    queue = AdmissionQueue(SHARED)
    pos = come(queue, "pos", 10, 0.0)
    online = [come(queue, "online", 1, 0.001 * n) for n in range(6)]
    assert states(online) == ["admitted"] * 2 + ["waiting"] * 4  # 0.25 x 8
    assert queue.in_use == 3 and queue.statistics(0.01).in_use_by_channel == {
        "pos": 1,
        "online": 2,
    }
    more_pos = [come(queue, "pos", 11 + n, 0.01) for n in range(5)]
    assert states(more_pos) == ["admitted"] * 5  # slots free, and under pos's share
    # An online request ending frees a slot for the next online one, not beyond.
    assert queue.release(0.02, "online") == [online[2]]
    # The terminals' last requests end: the share no longer applies, every free slot
    # goes to the waiting online requests at once.
    for _ in more_pos:
        queue.release(0.03, "pos")
    assert queue.release(0.04, "pos") == online[3:]
    assert pos.admitted and queue.waiting == 0 and queue.held == {"pos": 0, "online": 5}


def test_shares_keep_the_order_within_a_channel() -> None:
    queue = AdmissionQueue(SHARED)
    come(queue, "pos", 10, 0.0)
    online = [come(queue, "online", n % 2, 0.001 * n) for n in range(6)]
    assert states(online) == ["admitted"] * 2 + ["waiting"] * 4
    granted = [queue.release(0.1, "online") for _ in range(4)]
    assert granted == [[ticket] for ticket in online[2:]]  # one for one, in turn
