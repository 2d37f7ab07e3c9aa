"""Numbers the switch assigns: RRNs and STANs."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from switch.core.numbers import SEQUENCE_LIMIT, RrnAllocator, RrnExhausted, StanSequence

# 2025-11-22 14:30:15 local: day 326 of 2025 (pos-cup.md's sample RRN starts 5326).
SAMPLE_LOCAL = datetime(2025, 11, 22, 14, 30, 15)


@pytest.mark.parametrize(
    ("local", "prefix"),
    [
        (SAMPLE_LOCAL, "5326"),
        (datetime(2025, 1, 1, 0, 0, 0), "5001"),
        (datetime(2024, 12, 31, 23, 59, 59), "4366"),  # a leap year's last day
        (datetime(2023, 12, 31, 12, 0, 0), "3365"),
        (datetime(2030, 2, 1, 8, 0, 0), "0032"),
        (datetime(2029, 7, 4, 8, 0, 0), "9185"),
    ],
)
def test_rrn_prefix_is_year_digit_and_day_of_year(local: datetime, prefix: str) -> None:
    rrn = RrnAllocator().allocate(local)
    assert len(rrn) == 12
    assert rrn.isdigit()
    assert rrn[:4] == prefix


def test_rrns_are_unique_over_a_busy_day() -> None:
    allocator = RrnAllocator()
    moments = [datetime(2025, 11, 22, 0, 0, 0) + timedelta(minutes=14 * n) for n in range(100)]
    rrns = [allocator.allocate(moments[index // 1000]) for index in range(100_000)]
    assert len(set(rrns)) == 100_000
    assert all(len(rrn) == 12 and rrn.isdigit() and rrn[:4] == "5326" for rrn in rrns)


def test_late_in_the_day_still_fits_twelve_digits() -> None:
    allocator = RrnAllocator()
    late = datetime(2025, 11, 22, 23, 59, 59)
    rrns = [allocator.allocate(late) for _ in range(1000)]
    assert len(set(rrns)) == 1000
    assert all(len(rrn) == 12 and rrn[:4] == "5326" for rrn in rrns)


def test_a_restart_later_the_same_day_does_not_repeat_earlier_numbers() -> None:
    morning = datetime(2025, 11, 22, 9, 0, 0)
    before = RrnAllocator()
    issued = {before.allocate(morning) for _ in range(1000)}
    after = RrnAllocator()  # a restart one minute later
    again = {after.allocate(morning + timedelta(minutes=1)) for _ in range(1000)}
    assert not issued & again


def test_a_new_day_starts_a_new_prefix() -> None:
    allocator = RrnAllocator()
    today = datetime(2025, 11, 22, 23, 59, 59)
    first = [allocator.allocate(today) for _ in range(5)]
    tomorrow = datetime(2025, 11, 23, 0, 0, 1)
    second = [allocator.allocate(tomorrow) for _ in range(5)]
    assert {rrn[:4] for rrn in first} == {"5326"}
    assert {rrn[:4] for rrn in second} == {"5327"}
    # The new day's sequence starts from its time of day, as a fresh start would.
    assert second[0] == RrnAllocator().allocate(tomorrow)
    assert int(second[0][4:]) < int(first[0][4:])


def test_the_sequence_runs_out_rather_than_repeat() -> None:
    allocator = RrnAllocator()
    allocator.allocate(SAMPLE_LOCAL)  # settles the day
    allocator._next["5326"] = SEQUENCE_LIMIT - 2
    assert allocator.allocate(SAMPLE_LOCAL) == "532699999998"
    assert allocator.allocate(SAMPLE_LOCAL) == "532699999999"
    for _ in range(2):
        with pytest.raises(RrnExhausted):
            allocator.allocate(SAMPLE_LOCAL)
    # The next day has numbers again.
    assert allocator.allocate(SAMPLE_LOCAL + timedelta(days=1))[:4] == "5327"


def test_stamps_straddling_midnight_out_of_order_do_not_repeat() -> None:
    allocator = RrnAllocator()
    before_midnight = datetime(2025, 11, 22, 23, 59, 59)
    after_midnight = datetime(2025, 11, 23, 0, 0, 0)
    rrns = [
        allocator.allocate(before_midnight),
        allocator.allocate(after_midnight),
        allocator.allocate(before_midnight),  # a request stamped earlier, allocated later
        allocator.allocate(after_midnight),
    ]
    assert len(set(rrns)) == len(rrns)


# -- STANs ---------------------------------------------------------------------------


def test_stans_start_at_000001() -> None:
    stans = StanSequence()
    assert [stans.next() for _ in range(3)] == ["000001", "000002", "000003"]


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (999_998, ["999998", "999999", "000001", "000002"]),
        (999_999, ["999999", "000001", "000002", "000003"]),
        (7, ["000007", "000008", "000009", "000010"]),
    ],
)
def test_stans_wrap_past_999999_to_000001(start: int, expected: list[str]) -> None:
    stans = StanSequence(start)
    assert [stans.next() for _ in range(len(expected))] == expected


def test_around_the_wrap_never_000000_and_no_repeats() -> None:
    stans = StanSequence(998_000)
    window = [stans.next() for _ in range(4_000)]
    assert "000000" not in window
    assert len(set(window)) == 4_000
    assert all(len(stan) == 6 and stan.isdigit() for stan in window)
    assert window[1_999:2_001] == ["999999", "000001"]
    assert window[-1] == "002000"


# -- worker processes ([switch] workers = N) -------------------------------------------


@pytest.mark.parametrize("workers", [2, 3, 7])
def test_workers_rrns_never_collide_and_carry_the_worker_index(workers: int) -> None:
    """Each worker hands out only the sequences that are its index modulo N, from the
    same moments and the same journal high-water mark as the others."""
    allocators = [RrnAllocator(worker=index, workers=workers) for index in range(workers)]
    for allocator in allocators:
        allocator.resume("5326", 52_215_003)  # what a shared journal holds: any worker's
    seen: set[str] = set()
    for index, allocator in enumerate(allocators):
        rrns = [allocator.allocate(SAMPLE_LOCAL) for _ in range(2000)]
        assert all(len(rrn) == 12 and rrn[:4] == "5326" for rrn in rrns)
        assert {int(rrn[4:]) % workers for rrn in rrns} == {index}
        assert not seen & set(rrns)
        seen |= set(rrns)


def test_one_worker_of_one_is_the_single_process_allocator() -> None:
    one, plain = RrnAllocator(worker=0, workers=1), RrnAllocator()
    rrns = [one.allocate(SAMPLE_LOCAL) for _ in range(3)]
    assert rrns == [plain.allocate(SAMPLE_LOCAL) for _ in range(3)]
    assert rrns == ["532652215000", "532652215001", "532652215002"]


def test_a_restarted_worker_continues_past_the_journal_in_its_own_numbers() -> None:
    allocator = RrnAllocator(worker=1, workers=2)
    allocator.resume("5326", 60_000_001)
    assert allocator.allocate(SAMPLE_LOCAL) == "532660000001"
    assert allocator.allocate(SAMPLE_LOCAL) == "532660000003"


def test_a_worker_index_outside_the_count_is_refused() -> None:
    with pytest.raises(ValueError, match="worker 2 is not one of 2"):
        RrnAllocator(worker=2, workers=2)


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_workers_stans_to_one_bank_are_blocks_of_their_own(workers: int) -> None:
    block = 999_999 // workers
    seen: set[str] = set()
    for index in range(workers):
        stans = StanSequence(worker=index, workers=workers)
        numbers = [stans.next() for _ in range(block + 3)]  # around its block once
        assert numbers[0] == f"{index * block + 1:06d}"
        assert numbers[block] == numbers[0]
        assert not seen & set(numbers)
        seen |= set(numbers)
        stans.resume_after(index * block + 10, margin=5)
        assert stans.next() == f"{index * block + 16:06d}"
        stans.resume_after((index + 1) % workers * block + 10, margin=5)  # another's
        assert stans.next() == f"{index * block + 17:06d}"


def test_one_process_keeps_the_whole_stan_range() -> None:
    one, plain = StanSequence(999_998, worker=0, workers=1), StanSequence(999_998)
    assert [one.next() for _ in range(3)] == [plain.next() for _ in range(3)]
    assert [StanSequence(999_998).next() for _ in range(1)] == ["999998"]
    one.resume_after(999_990, margin=20)
    plain.resume_after(999_990, margin=20)
    assert one.next() == plain.next() == "000012"


def test_a_fast_simulated_clock_never_repeats_a_number_stamped_days_earlier() -> None:
    """On a simulated clock at its fastest (a day a real second) a request stamped a few
    real seconds before its RRN is taken is days behind the others: its day's sequence
    must still be remembered, not started again from its time of day."""
    allocator = RrnAllocator()
    first_day = datetime(2027, 1, 31, 8, 0, 0)
    given = {allocator.allocate(first_day) for _ in range(2000)}  # a busy second
    for days in range(1, 6):  # the others' requests, on the days that followed
        allocator.allocate(first_day + timedelta(days=days))
    late = allocator.allocate(first_day + timedelta(seconds=1))  # stamped back then
    assert late[:4] == "7031"
    assert late not in given
