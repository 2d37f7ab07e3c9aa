"""Payment codes (switch.core.paycode): wallet.md's sample code, Luhn, and its POS sale
frame read by pyiso8583 (the independent codec) and by ours: 2 = the code, 22 = 032,
no 14, 35, 52, 53 or 55."""

from __future__ import annotations

from pathlib import Path

import iso8583
import pytest

from bench.pyiso_oracle import pyiso_spec
from switch.core.paycode import (
    ENTRY_MODE,
    draw,
    is_paycode,
    luhn_digit,
    make_code,
    mask,
    well_formed,
)
from switch.wire.dialect import load_dialects
from switch.wire.framing import split_pos_frame
from switch.wire.iso8583 import Iso8583Codec
from switch.wire.samples import frame

SALE = frame(
    """
    004f600003000060310031073002007020048000c08010198827503188461290
    5720000000000000002500000124003200504f53303030303138393833313030
    3438393930303031313536000822000042
    """
)
APPROVAL = frame(
    """
    007160000000036031003107300210703a00010ec08012198827503188461290
    5720000000000000002500000124101530120712070848990000363334313130
    30303031323451344d3750323030504f53303030303138393833313030343839
    3930303031313536000822000042000357414c
    """
)
DIALECT = load_dialects(Path(__file__).resolve().parents[2] / "conf" / "dialects")["cup-pos"]
CODE = "8827503188461290572"


def test_the_sample_code() -> None:
    assert make_code("88", "2750318846129057") == CODE
    assert luhn_digit(CODE[:-1]) == "2"
    assert well_formed(CODE, "88")
    assert not well_formed(CODE[:-1] + "3", "88")  # Luhn
    assert not well_formed("77" + CODE[2:], "88")  # prefix
    assert not well_formed(CODE[:-1], "88")  # length
    assert mask(CODE) == "882750*********0572"
    assert is_paycode(CODE, "88") and not is_paycode("6222021000111122221", "88")


def test_drawn_codes_are_well_formed() -> None:
    for value in (0, 1, 10**16 - 1, 2750318846129057):
        code = draw("88", lambda _bound, v=value: v)  # type: ignore[misc]
        assert well_formed(code, "88") and code[2:18] == f"{value:016d}"


@pytest.mark.parametrize("data", [SALE, APPROVAL], ids=["0200", "0210"])
def test_the_pos_frames_of_wallet_md(data: bytes) -> None:
    _, message = split_pos_frame(data[2:])
    theirs, _ = iso8583.decode(message, pyiso_spec(DIALECT))
    ours = Iso8583Codec(DIALECT).decode(message)
    assert theirs["2"] == ours.fields[2] == CODE
    if theirs["t"] == "0200":  # the 0210 is a card sale's: 22 is not echoed
        assert theirs["22"] == ours.fields[22] == ENTRY_MODE
    assert not {"14", "35", "52", "53", "55"} & set(theirs)
    assert theirs["49"] == "156" and theirs["4"] == "000000002500"
    if theirs["t"] == "0210":
        assert (theirs["37"], theirs["38"], theirs["39"]) == ("634110000124", "Q4M7P2", "00")
        assert ours.fields[63] == "WAL"
