"""ISO 8583 dialects as data: a field table per interface, read from ``conf/dialects``.

Like a jPOS packager definition, a dialect only says how each field is laid out
(number, format, length type, maximum length) and how numerics and length prefixes are
encoded. :class:`switch.wire.iso8583.Iso8583Codec` compiles one into fast per-field
encoders and decoders, so a bank with a new dialect is a new table, not new code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from switch.errors import ConfigError

FieldNumber = Annotated[int, Meta(ge=2, le=128)]
FieldLength = Annotated[int, Meta(ge=1, le=999)]

MAX_VARIABLE_LENGTH: dict[str, int] = {"LLVAR": 99, "LLLVAR": 999}
"""The largest length each prefix can state (in digits for n/z, bytes otherwise)."""


class FieldSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One data element of a dialect."""

    number: FieldNumber
    name: str
    format: Literal["n", "z", "an", "ans", "b"]
    """n digits, z track data (digits and ``=``), an letters/digits/space,
    ans printable ASCII, b raw bytes."""
    length: Literal["fixed", "LLVAR", "LLLVAR"]
    max_length: FieldLength
    """For fixed fields the exact length; digits for n/z, bytes otherwise."""


class Dialect(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A whole interface: the encoding of numerics and the field table."""

    name: str
    encoding: Literal["bcd", "ascii"]
    """How the MTI, n/z field data and LL/LLL length prefixes are encoded."""
    secondary_bitmap: bool
    """Whether bit 1 may be set, announcing a secondary bitmap (fields 65..128)."""
    fields: tuple[FieldSpec, ...]


def check_dialect(dialect: Dialect) -> None:
    """Cross-checks that the types alone cannot express; raises ValueError."""
    if not dialect.name:
        raise ValueError("name is empty")
    seen: set[int] = set()
    for spec in dialect.fields:
        where = f"field {spec.number} ({spec.name})"
        if spec.number in seen:
            raise ValueError(f"{where} is defined twice")
        seen.add(spec.number)
        if spec.number > 64 and not dialect.secondary_bitmap:
            raise ValueError(f"{where} needs a secondary bitmap, but secondary_bitmap is false")
        limit = MAX_VARIABLE_LENGTH.get(spec.length)
        if limit is not None and spec.max_length > limit:
            raise ValueError(
                f"{where}: max_length {spec.max_length} does not fit a {spec.length} prefix "
                f"(at most {limit})"
            )
        if spec.format == "z" and spec.length == "fixed":
            raise ValueError(f"{where}: track data (z) must be LLVAR or LLLVAR")


def load_dialect(path: str | Path) -> Dialect:
    """Reads and checks one dialect table; every problem raises ConfigError naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read dialect {path}: {exc}") from exc
    try:
        dialect = msgspec.toml.decode(raw, type=Dialect)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"dialect {path}: {exc}") from exc
    try:
        check_dialect(dialect)
    except ValueError as exc:
        raise ConfigError(f"dialect {path}: {exc}") from exc
    return dialect


def load_dialects(directory: str | Path) -> dict[str, Dialect]:
    """Every ``*.toml`` dialect in ``directory``, keyed by its name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"dialects folder {directory} does not exist")
    dialects: dict[str, Dialect] = {}
    origins: dict[str, Path] = {}
    for path in sorted(directory.glob("*.toml")):
        dialect = load_dialect(path)
        if dialect.name in dialects:
            raise ConfigError(
                f"dialect {path}: name {dialect.name!r} is already used by {origins[dialect.name]}"
            )
        dialects[dialect.name] = dialect
        origins[dialect.name] = path
    return dialects
