"""Properties of the POS security: any single-bit change of a MAC'd frame is refused
(A0 whenever the changed message still parses as the same terminal's), and a PIN block
round-trips through the translation to the bank's ZPK for every PIN length 4-12 and
every key layout."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.core.model import Origin
from switch.core.terminal_keys import TerminalKeys
from switch.errors import FramingError, MessageDecodeError
from switch.net.channel import CloseConnection
from switch.net.pos import PosProtocol, PosWork
from switch.security import algorithms as alg
from switch.security.port import TerminalProfile
from switch.security.software import SoftwareSecurityModule
from switch.terminal import Terminal, TerminalSecurity
from switch.wire.framing import split_pos_frame
from tests.net.helpers import POS_CODEC
from tests.security import vectors as v
from tests.security.helpers import ScriptedRandom, load, new_store
from tests.security.test_pos_frames import MERCHANT, SampleSwitchboard

TMKS = {"003": v.TMK_3DES, "001": v.TMK_3DES, "005": v.TMK_SM4}


@functools.cache
def module() -> SoftwareSecurityModule:
    folder = Path(tempfile.mkdtemp(prefix="possec-"))
    built = new_store(folder, ScriptedRandom())
    load(built, "tmk", "POS00001", "3des", v.TMK_3DES,
         TerminalProfile(MERCHANT, allow_single_des=True))  # fmt: skip
    load(built, "tmk", "POS00002", "sm4", v.TMK_SM4, TerminalProfile(MERCHANT))
    load(built, "zmk", "icbc", "3des", v.ZMK)
    return built


def run(function: Any, *args: Any) -> Any:
    async def main() -> Any:
        return function(*args)

    return trio.run(main)


@functools.cache
def signed_on(layout: str) -> tuple[PosProtocol, TerminalSecurity, Terminal]:
    """A POS channel with POS00001 (3des) or POS00002 (sm4) signed on, and the terminal."""
    protocol = PosProtocol(
        POS_CODEC,
        SampleSwitchboard(),  # type: ignore[arg-type]
        acquirer_id="48990000",
        utc_offset_h=8,
        keys=TerminalKeys(module(), lifetime_s=3600),
    )
    terminal = Terminal(terminal_id="POS00002" if layout == "005" else "POS00001", batch=0)
    security = TerminalSecurity(TMKS[layout], "sm4" if layout == "005" else "3des", layout=layout)
    mti, fields = terminal.sign_on(1, layout)
    answer = run(protocol.accept, terminal.envelope.tpdu + terminal.envelope.header
                 + POS_CODEC.encode(mti, fields), Origin("pos", 1, 0.0))  # fmt: skip
    response = POS_CODEC.decode(split_pos_frame(answer)[1])
    assert response.fields[39] == "00", response.fields
    security.accept_sign_on(response.fields[62], str(response.fields[60])[2:8])  # type: ignore[arg-type]
    return protocol, security, Terminal(terminal_id=terminal.terminal_id, batch=1)


def answer_code(protocol: PosProtocol, payload: bytes) -> str | None:
    """The answer's 39 at once; "work" when the request goes on; None when closed."""
    try:
        answer = run(protocol.accept, payload, Origin("pos", 1, 1.0))
    except (CloseConnection, FramingError):
        return None
    if isinstance(answer, PosWork):
        return "work"
    return str(POS_CODEC.decode(split_pos_frame(answer)[1]).fields[39])


@settings(max_examples=300, deadline=None)
@given(layout=st.sampled_from(["003", "005"]), data=st.data())
def test_any_single_bit_change_of_a_maced_frame_is_refused_a0(layout: str, data: Any) -> None:
    protocol, security, terminal = signed_on(layout)
    mti, fields = terminal.sale(7, v.PAN, 10000)
    fields[22] = "022"  # no PIN: the MAC alone is under test
    message = security.encode(POS_CODEC, mti, fields)
    envelope = terminal.envelope.tpdu + terminal.envelope.header
    assert answer_code(protocol, envelope + message) == "work"  # as sent: accepted
    bit = data.draw(st.integers(0, len(message) * 8 - 1), label="bit")
    changed = bytearray(message)
    changed[bit // 8] ^= 0x80 >> (bit % 8)
    code = answer_code(protocol, envelope + bytes(changed))
    assert code != "work"
    try:
        decoded = POS_CODEC.decode(bytes(changed))
    except MessageDecodeError:
        return  # no longer parses: 30 or closed (pos-cup.md)
    if decoded.mti == mti and decoded.fields.get(41) == terminal.terminal_id:
        assert code == "A0"
    else:
        assert code in {None, "30", "40", "97", "A0"}


@functools.cache
def bank_zpk() -> Any:
    """The link's ZPK: security.md's sample (the module's random gives it)."""
    built = module()
    built._random = ScriptedRandom(v.ZPK, v.ZAK)  # type: ignore[attr-defined]
    return built.make_bank_keys("zmk:icbc", "icbc.0").zpk


@settings(max_examples=200, deadline=None)
@given(
    layout=st.sampled_from(["003", "005", "001"]),
    pin=st.text("0123456789", min_size=4, max_size=12),
    pan=st.text("0123456789", min_size=13, max_size=19),
)
def test_a_pin_block_round_trips_through_translation(layout: str, pin: str, pan: str) -> None:
    _, security, _ = signed_on(layout)
    keys = module()
    # The terminal's key set as the switch holds it: the one that verified the MAC.
    working = protocol_keys(layout)
    block_field = security.pin_fields(pin, pan)
    block = block_field[62 if layout == "005" else 52]
    assert isinstance(block, bytes)
    translated = keys.translate_pin(working.pik, bank_zpk(), block, pan)
    clear = alg.ecb_decrypt("3des", v.ZPK, translated)
    assert alg.pin_from_clear_block(clear, pan) == pin
    assert len(translated) == 8


def protocol_keys(layout: str) -> Any:
    protocol, _, terminal = signed_on(layout)
    assert protocol.keys is not None
    return protocol.keys._held[terminal.terminal_id].current


@settings(max_examples=200, deadline=None)
@given(cipher=st.sampled_from(["des", "sm4"]), mab=st.binary(max_size=300), key=st.binary(
    min_size=16, max_size=16))
def test_the_prepared_mac_key_is_the_algorithm(cipher: str, mab: bytes, key: bytes) -> None:
    """The module's prepared MAK (its cipher made once) gives security.md's MAC."""
    mak = key[:8] if cipher == "des" else key
    assert alg.PosMacKey(cipher, mak).mac(mab) == alg.pos_mac(cipher, mak, mab)  # type: ignore[arg-type]
