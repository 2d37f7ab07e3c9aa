"""BIN routing: the longest configured prefix names the bank."""

from __future__ import annotations

import random

import pytest

from switch.core.routing import BinTable
from switch.errors import TransactionRefused

SAMPLE_PAN = "6222021000111122221"

ROUTES = [
    ("6222", "bank-short"),
    ("622202", "bank-six"),
    ("62220212", "bank-eight"),
    ("4", "bank-visa"),
    ("62", "bank-cup"),
]


@pytest.mark.parametrize(
    ("pan", "match"),
    [
        # 62220210... : 62220212 does not match, 622202 is the longest that does
        (SAMPLE_PAN, ("622202", "bank-six")),
        ("6222021200111122221", ("62220212", "bank-eight")),
        ("6222031000111122221", ("6222", "bank-short")),
        ("6223001000111122221", ("62", "bank-cup")),
        ("4111111111111111", ("4", "bank-visa")),
        # a PAN shorter than a prefix cannot match that prefix
        ("622202", ("622202", "bank-six")),
        ("6222021", ("622202", "bank-six")),
    ],
)
def test_longest_prefix_wins(pan: str, match: tuple[str, str]) -> None:
    table = BinTable(ROUTES)
    assert table.lookup(pan) == match
    assert table.route(pan) == (*match, None)


@pytest.mark.parametrize("routes", [ROUTES, list(reversed(ROUTES))])
def test_order_of_routes_does_not_matter(routes: list[tuple[str, str]]) -> None:
    assert BinTable(routes).lookup(SAMPLE_PAN) == ("622202", "bank-six")


@pytest.mark.parametrize("pan", ["5555555555554444", "6111111111111111", "", "6"])
def test_no_match(pan: str) -> None:
    table = BinTable(ROUTES)
    assert table.lookup(pan) is None
    with pytest.raises(TransactionRefused) as info:
        table.route(pan)
    assert info.value.response_code == "92"


def test_empty_table_routes_nothing() -> None:
    table = BinTable([])
    assert len(table) == 0
    assert table.lookup(SAMPLE_PAN) is None
    with pytest.raises(TransactionRefused) as info:
        table.route(SAMPLE_PAN)
    assert info.value.response_code == "92"


@pytest.mark.parametrize(
    "routes",
    [
        [("622202", "a"), ("622202", "b")],
        [("622202", "a"), ("622202", "a")],
        [("4", "a"), ("622202", "b"), ("4", "c")],
    ],
)
def test_duplicate_prefix_is_an_error(routes: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError, match="twice"):
        BinTable(routes)


@pytest.mark.parametrize("prefix", ["", "62x2", " 622", "6222-"])
def test_non_digit_prefix_is_an_error(prefix: str) -> None:
    with pytest.raises(ValueError):
        BinTable([(prefix, "bank")])


def test_len_counts_routes() -> None:
    assert len(BinTable(ROUTES)) == len(ROUTES)


# -- cost of a lookup ----------------------------------------------------------------


class CountingDict(dict[str, str]):
    """A dict that counts how often it is probed."""

    probes = 0

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        CountingDict.probes += 1
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        CountingDict.probes += 1
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        CountingDict.probes += 1
        return super().__contains__(key)


def reference_lookup(routes: dict[str, str], pan: str) -> tuple[str, str] | None:
    """Independent of BinTable's layout: try every prefix of the PAN, longest first."""
    for length in range(len(pan), 0, -1):
        bank = routes.get(pan[:length])
        if bank is not None:
            return pan[:length], bank
    return None


def test_lookup_cost_does_not_grow_with_table_size() -> None:
    rng = random.Random(8583)
    lengths = rng.choices((6, 7, 8, 9), k=220_000)
    drawn = [f"{rng.getrandbits(30) % 10**length:0{length}d}" for length in lengths]
    configured = list(dict.fromkeys(drawn))[:200_000]  # distinct, in a reproducible order
    assert len(configured) == 200_000
    banks = [f"bank-{index}" for index in range(7)]
    routes = {prefix: banks[index % 7] for index, prefix in enumerate(configured)}
    table = BinTable(routes.items())
    assert len(table) == 200_000

    # Some PANs that extend a configured prefix, some entirely random.
    pans = [
        prefix + "".join(rng.choice("0123456789") for _ in range(16 - len(prefix)))
        for prefix in rng.sample(configured, 500)
    ] + [f"{rng.randrange(10**16):016d}" for _ in range(500)]
    matched = 0
    for pan in pans:
        expected = reference_lookup(routes, pan)
        assert table.lookup(pan) == expected
        matched += expected is not None
    assert matched >= 500

    # One probe per distinct prefix length (four here: 6..9), never a scan.
    distinct_lengths = len({len(prefix) for prefix in configured})
    assert distinct_lengths == 4
    table._by_length = tuple(CountingDict(by_prefix) for by_prefix in table._by_length)
    for pan in pans:
        CountingDict.probes = 0
        assert table.lookup(pan) == reference_lookup(routes, pan)
        assert 1 <= CountingDict.probes <= distinct_lengths


def test_a_larger_table_of_the_same_lengths_costs_the_same() -> None:
    small = BinTable([("622202", "a"), ("62220212", "b")])
    big = BinTable(
        [("622202", "a"), ("62220212", "b")]
        + [(f"{n:06d}", "c") for n in range(100_000, 110_000)]
        + [(f"{n:08d}", "d") for n in range(10_000_000, 10_010_000)]
    )
    probes = []
    for table in (small, big):
        table._by_length = tuple(CountingDict(by_prefix) for by_prefix in table._by_length)
        CountingDict.probes = 0
        assert table.lookup("5555555555554444") is None
        probes.append(CountingDict.probes)
    assert probes == [2, 2]


def test_a_route_may_name_a_secondary_bank() -> None:
    table = BinTable([("622202", "icbc", "abc"), ("6222", "cmb")])
    assert table.route(SAMPLE_PAN) == ("622202", "icbc", "abc")
    assert table.route("6222991234567890") == ("6222", "cmb", None)


@pytest.mark.parametrize(
    ("open_circuits", "secondary", "chosen"),
    [
        ((), True, ("622202", "icbc")),
        (("abc",), True, ("622202", "icbc")),  # only the secondary's is open
        (("icbc",), True, ("622202>abc", "abc")),  # the primary's is open: around it
        (("icbc", "abc"), True, ("622202", "icbc")),  # both open: the card's own bank
        (("icbc",), False, ("622202", "icbc")),  # a hold never goes to a secondary
    ],
)
def test_the_route_chosen_by_the_circuits_the_trio_layer_found_open(
    open_circuits: tuple[str, ...], secondary: bool, chosen: tuple[str, str]
) -> None:
    table = BinTable([("622202", "icbc", "abc"), ("4", "visa")])
    assert table.has_secondaries and not BinTable([("4", "visa")]).has_secondaries
    assert table.choose(SAMPLE_PAN, secondary=secondary, open_circuits=open_circuits) == chosen
    assert table.choose("4111111111111111", open_circuits=("visa",)) == ("4", "visa")
    with pytest.raises(TransactionRefused):
        table.choose("9999999999999999")
