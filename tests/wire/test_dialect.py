"""Dialect tables: the shipped ones load, and a broken one fails naming file and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch.errors import ConfigError
from switch.wire.dialect import Dialect, load_dialect, load_dialects

DIALECTS_DIR = Path(__file__).resolve().parents[2] / "conf" / "dialects"

POS_FIELDS = [2, 3, 4, 11, 12, 13, 14, 15, 22, 23, 25, 26, 32, 35, 37, 38, 39, 41, 42, 44, 48, 49]
POS_FIELDS += [52, 53, 54, 55, 60, 61, 62, 63, 64]
BANK_FIELDS = [2, 3, 4, 7, 11, 12, 13, 14, 15, 18, 22, 25, 32, 33, 35, 37, 38, 39, 41, 42, 43]
BANK_FIELDS += [49, 52, 54, 70, 90, 48, 53, 64, 128]  # the dialect file's order


def test_shipped_dialects_load() -> None:
    dialects = load_dialects(DIALECTS_DIR)
    assert set(dialects) == {"cup-pos", "h2h-ascii"}
    pos, bank = dialects["cup-pos"], dialects["h2h-ascii"]
    assert (pos.encoding, pos.secondary_bitmap) == ("bcd", False)
    assert (bank.encoding, bank.secondary_bitmap) == ("ascii", True)
    assert [spec.number for spec in pos.fields] == POS_FIELDS
    assert [spec.number for spec in bank.fields] == BANK_FIELDS


@pytest.mark.parametrize(
    ("dialect_name", "number", "layout"),
    [
        ("cup-pos", 2, ("n", "LLVAR", 19)),
        ("cup-pos", 35, ("z", "LLVAR", 37)),
        ("cup-pos", 41, ("ans", "fixed", 8)),
        ("cup-pos", 48, ("n", "LLLVAR", 322)),
        ("cup-pos", 49, ("an", "fixed", 3)),
        ("cup-pos", 53, ("n", "fixed", 16)),
        ("cup-pos", 54, ("ans", "LLLVAR", 20)),
        ("cup-pos", 55, ("b", "LLLVAR", 255)),
        ("cup-pos", 60, ("n", "LLLVAR", 17)),
        ("cup-pos", 62, ("b", "LLLVAR", 512)),
        ("cup-pos", 64, ("b", "fixed", 8)),
        ("h2h-ascii", 43, ("ans", "fixed", 40)),
        ("h2h-ascii", 49, ("n", "fixed", 3)),
        ("h2h-ascii", 54, ("ans", "LLLVAR", 120)),
        ("h2h-ascii", 90, ("n", "fixed", 42)),
    ],
)
def test_field_layouts_follow_the_specs(
    dialect_name: str, number: int, layout: tuple[str, str, int]
) -> None:
    dialect = load_dialects(DIALECTS_DIR)[dialect_name]
    spec = next(spec for spec in dialect.fields if spec.number == number)
    assert (spec.format, spec.length, spec.max_length) == layout


HEADER = 'name = "test"\nencoding = "bcd"\nsecondary_bitmap = false\n'


def field(number: int, format: str = "n", length: str = "fixed", max_length: int = 6) -> str:
    return (
        f'\n[[fields]]\nnumber = {number}\nname = "f{number}"\nformat = "{format}"\n'
        f'length = "{length}"\nmax_length = {max_length}\n'
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (HEADER + field(2) + field(2), "field 2 (f2) is defined twice"),
        (HEADER + field(1), "fields[0].number"),
        (HEADER + field(129), "fields[0].number"),
        (HEADER + field(70), "secondary_bitmap is false"),
        (HEADER + field(2, length="LLVAR", max_length=100), "at most 99"),
        (HEADER + field(2, length="LLLVAR", max_length=1000), "fields[0].max_length"),
        (HEADER + field(2, max_length=0), "fields[0].max_length"),
        (HEADER + field(35, format="z", max_length=37), "must be LLVAR or LLLVAR"),
        (HEADER + field(2, format="x"), "fields[0].format"),
        (HEADER + field(2, length="LLLLVAR"), "fields[0].length"),
        (HEADER + field(2) + "colour = 1\n", "colour"),
        (HEADER.replace('"bcd"', '"ebcdic"'), "encoding"),
        (HEADER.replace('name = "test"', 'name = ""') + field(2), "name is empty"),
        ('name = "test"\nencoding = "bcd"\n', "secondary_bitmap"),
        (HEADER + "[[fields]\n", "line 4"),
    ],
)
def test_bad_dialect_raises_config_error(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_dialect(path)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


def test_missing_file_and_folder_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read dialect"):
        load_dialect(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_dialects(tmp_path / "absent")


def test_two_files_with_one_name_raise_config_error(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(HEADER + field(2))
    (tmp_path / "b.toml").write_text(HEADER + field(3))
    with pytest.raises(ConfigError, match="already used"):
        load_dialects(tmp_path)


def test_load_dialects_reads_only_toml_files(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(HEADER + field(2))
    (tmp_path / "notes.txt").write_text("not a dialect")
    dialects = load_dialects(tmp_path)
    assert list(dialects) == ["test"]
    assert isinstance(dialects["test"], Dialect)
