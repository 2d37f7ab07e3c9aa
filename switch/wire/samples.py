"""The specs' sample frames (pos-cup.md, bank-h2h.md), to the byte, with the fields
each carries: the reference the codec is tested against (tests/wire) and benchmarked
on (bench/codec_bench.py)."""

from __future__ import annotations

from typing import Final

from switch.wire.framing import split_pos_frame
from switch.wire.iso8583 import FieldValue

PAN: Final = "6222021000111122221"


def frame(hex_text: str) -> bytes:
    """A sample frame of the specs, checked against its length prefix."""
    data = bytes.fromhex("".join(hex_text.split()))
    if int.from_bytes(data[:2], "big") != len(data) - 2:
        raise ValueError("a sample frame's length prefix does not match its length")
    return data


POS_SALE_FRAME: Final = frame(
    """
    0051600003000060310031073002007024048000c08010196222021000111122
    22100000000000000100000001232812002100504f5330303030313839383331
    30303438393930303031313536000822000042
    """
)
POS_SALE_APPROVAL_FRAME: Final = frame(
    """
    006a60000000036031003107300210703800010ec08010196222021000111122
    2210000000000000010000000123143015112208489900003533323631343030
    303132334131423243333030504f533030303031383938333130303438393930
    303031313536000822000042
    """
)
BANK_SALE_FRAME: Final = frame(
    """
    0082303230307238048108c08000313936323232303231303030313131313232
    3232313030303030303030303030303031303030303131323230363330313530
    3030303037313433303135313132323032313030303834383939303030303533
    32363134303030313233504f5330303030313839383331303034383939303030
    31313536
    """
)
BANK_REVERSAL_FRAME: Final = frame(
    """
    00a530343030f220000108c08000000000400000000031393632323230323130
    3030313131313232323231303030303030303030303030303130303030313132
    3230363335323030303030313930383438393930303030353332363134303030
    313233504f533030303031383938333130303438393930303031313536303230
    3030303030303731313232303633303135303030343839393030303030303030
    30303030303030
    """
)

POS_SALE: Final = split_pos_frame(POS_SALE_FRAME[2:])[1]
POS_SALE_APPROVAL: Final = split_pos_frame(POS_SALE_APPROVAL_FRAME[2:])[1]
BANK_SALE: Final = BANK_SALE_FRAME[2:]
BANK_REVERSAL: Final = BANK_REVERSAL_FRAME[2:]

POS_SALE_FIELDS: Final[dict[int, FieldValue]] = {
    2: PAN,
    3: "000000",
    4: "000000010000",
    11: "000123",
    14: "2812",
    22: "021",
    25: "00",
    41: "POS00001",
    42: "898310048990001",
    49: "156",
    60: "22000042",
}
POS_SALE_APPROVAL_FIELDS: Final[dict[int, FieldValue]] = {
    **{n: v for n, v in POS_SALE_FIELDS.items() if n not in (14, 22, 25)},
    12: "143015",
    13: "1122",
    32: "48990000",
    37: "532614000123",
    38: "A1B2C3",
    39: "00",
}
BANK_SALE_FIELDS: Final[dict[int, FieldValue]] = {
    2: PAN,
    3: "000000",
    4: "000000010000",
    7: "1122063015",
    11: "000007",
    12: "143015",
    13: "1122",
    22: "021",
    25: "00",
    32: "48990000",
    37: "532614000123",
    41: "POS00001",
    42: "898310048990001",
    49: "156",
}
BANK_REVERSAL_FIELDS: Final[dict[int, FieldValue]] = {
    **{n: v for n, v in BANK_SALE_FIELDS.items() if n not in (12, 13, 22, 25)},
    7: "1122063520",
    11: "000019",
    90: "0200000007112206301500048990000" + "00000000000",
}
