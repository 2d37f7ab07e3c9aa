"""pyiso8583's view of the switch's dialect tables: the independent ISO 8583
implementation that the differential tests and the codec benchmark compare against.
BCD n/z fields become pyiso8583 hex strings counting nibbles; b fields raw bytes."""

from __future__ import annotations

from typing import Any

from switch.wire.dialect import Dialect, FieldSpec

PyisoSpec = dict[str, dict[str, Any]]


def pyiso_field(spec: FieldSpec, encoding: str) -> dict[str, Any]:
    """One field of our dialect as a pyiso8583 field spec."""
    bcd = encoding == "bcd"
    digits = spec.format in ("n", "z")
    len_type = {"fixed": 0, "LLVAR": 1 if bcd else 2, "LLLVAR": 2 if bcd else 3}[spec.length]
    field: dict[str, Any] = {
        "data_enc": "b" if spec.format == "b" or (bcd and digits) else "ascii",
        "len_enc": "bcd" if bcd else "ascii",
        "len_type": len_type,
        "max_len": spec.max_length,
        "desc": spec.name,
    }
    if bcd and digits:
        field["len_count"] = "nibbles"
        field["left_pad" if spec.length == "fixed" else "right_pad"] = "0"
    return field


def pyiso_spec(dialect: Dialect) -> PyisoSpec:
    """A whole dialect as a pyiso8583 spec (no header; MTI and bitmaps)."""
    bcd = dialect.encoding == "bcd"
    fixed = {"len_enc": "ascii", "len_type": 0}
    spec: PyisoSpec = {
        "h": {"data_enc": "ascii", "max_len": 0, **fixed, "desc": "no header"},
        "t": {"data_enc": "b" if bcd else "ascii", "max_len": 4, **fixed, "desc": "MTI"},
        "p": {"data_enc": "b", "max_len": 8, **fixed, "desc": "primary bitmap"},
        "1": {"data_enc": "b", "max_len": 8, **fixed, "desc": "secondary bitmap"},
    }
    for field in dialect.fields:
        spec[str(field.number)] = pyiso_field(field, dialect.encoding)
    return spec
