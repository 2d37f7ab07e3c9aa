"""Properties of the MACs, PIN blocks and signatures (hypothesis), through the software
security module on a real key store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from switch.security import algorithms as alg
from switch.security.errors import (
    KeyStoreError,
    PinBlockFieldError,
    PinBlockFormatError,
    UnknownKeyError,
)
from switch.security.port import BankKeys, PosWorkingKeys, TerminalProfile
from switch.security.software import SoftwareSecurityModule
from tests.conftest import LogSink
from tests.security import vectors as v
from tests.security.helpers import ScriptedRandom, load, new_store


class Keys:
    def __init__(self, folder: Path) -> None:
        self.random = ScriptedRandom()
        self.module: SoftwareSecurityModule = new_store(folder, self.random)
        load(self.module, "tmk", "POS00001", "3des", v.TMK_3DES,
             TerminalProfile("898310048990001", allow_single_des=True))  # fmt: skip
        load(self.module, "tmk", "POS00002", "sm4", v.TMK_SM4)
        load(self.module, "zmk", "icbc", "3des", v.ZMK)
        self.pos: dict[str, tuple[PosWorkingKeys, bytes]] = {}
        for terminal, layout in (("POS00001", "003"), ("POS00002", "005"), ("POS00001", "001")):
            keys = self.module.make_pos_working_keys(f"tmk:{terminal}", layout)
            self.pos[layout] = (keys, self.random.given[-2])  # the clear PIK, for the test
            if layout != "005":
                self.pos[layout] = (keys, alg.with_odd_parity(self.random.given[-2]))
        self.bank: BankKeys = self.module.make_bank_keys("zmk:icbc", "icbc")
        self.zpk = alg.with_odd_parity(self.random.given[-2])
        assert alg.kcv("3des", self.zpk) == self.bank.zpk.kcv
        self.module.create_online_key("merchant:898310048990001", folder / "secret.hex")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    yield Keys(tmp_path_factory.mktemp("keys"))


def _flip(data: bytes, bit: int) -> bytes:
    changed = bytearray(data)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


messages = st.binary(min_size=1, max_size=300)
SETTINGS = settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(message=messages, data=st.data())
def test_any_single_bit_change_fails_every_mac(
    keys: Keys, message: bytes, data: st.DataObject
) -> None:
    bit = data.draw(st.integers(0, len(message) * 8 - 1))
    changed = _flip(message, bit)
    module = keys.module
    for layout in ("003", "005", "001"):
        mak = keys.pos[layout][0].mak
        mac = module.make_pos_mac(mak, message)
        assert module.verify_pos_mac(mak, message, mac)
        assert not module.verify_pos_mac(mak, changed, mac), layout
    zak = keys.bank.zak
    mac = module.make_bank_mac(zak, message)
    assert module.verify_bank_mac(zak, message, mac)
    assert not module.verify_bank_mac(zak, changed, mac)
    key_id = "m-898310048990001-1"
    sig = module.sign_online(key_id, 1763793015, "Q7f2Lk9XwB3nR8sT", message)
    assert module.verify_online(key_id, 1763793015, "Q7f2Lk9XwB3nR8sT", message, sig)
    assert not module.verify_online(key_id, 1763793015, "Q7f2Lk9XwB3nR8sT", changed, sig)
    assert not module.verify_online(key_id, 1763793016, "Q7f2Lk9XwB3nR8sT", message, sig)


@SETTINGS
@given(message=messages, bit=st.integers(0, 63))
def test_any_single_bit_change_of_a_mac_fails(keys: Keys, message: bytes, bit: int) -> None:
    mak = keys.pos["005"][0].mak
    mac = keys.module.make_pos_mac(mak, message)
    assert not keys.module.verify_pos_mac(mak, message, _flip(mac, bit))
    zak = keys.bank.zak
    assert not keys.module.verify_bank_mac(
        zak, message, _flip(keys.module.make_bank_mac(zak, message), bit)
    )


pans = st.text("0123456789", min_size=13, max_size=19)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(length=st.integers(4, 12), data=st.data(), pan=pans)
def test_a_pin_block_round_trips_through_translation(
    keys: Keys, length: int, data: st.DataObject, pan: str
) -> None:
    pin = data.draw(st.text("0123456789", min_size=length, max_size=length))
    for layout in ("003", "005", "001"):
        working, pik = keys.pos[layout]
        cipher = working.pik.cipher
        block = alg.ecb_encrypt(
            cipher, pik, alg.clear_pin_block(pin, pan, alg.pin_block_bytes(cipher))
        )
        translated = keys.module.translate_pin(working.pik, keys.bank.zpk, block, pan)
        clear = alg.ecb_decrypt("3des", keys.zpk, translated)
        assert alg.pin_from_clear_block(clear, pan) == pin
        assert clear == alg.clear_pin_block(pin, pan)


@pytest.mark.parametrize(
    ("pin_field", "why"),
    [
        ("16123456FFFFFFFF", "not format 0"),
        ("03123FFFFFFFFFFF", "length"),
        ("0D1234567890123F", "length"),
        ("061234A6FFFFFFFF", "non-digit"),
        ("06123456FFFFFFFE", "fill"),
        ("0412340000000000", "fill"),
    ],
)
def test_a_block_that_is_no_format_0_pin_is_answered_99(
    keys: Keys, pin_field: str, why: str, log_sink: LogSink
) -> None:
    working, pik = keys.pos["003"]
    pan_field = bytes.fromhex(alg.pan_field_digits(v.PAN).rjust(16, "0"))
    clear = bytes(a ^ b for a, b in zip(bytes.fromhex(pin_field), pan_field, strict=True))
    block = alg.ecb_encrypt("3des", pik, clear)
    with pytest.raises(PinBlockFormatError, match=why) as caught:
        keys.module.translate_pin(working.pik, keys.bank.zpk, block, v.PAN)
    assert caught.value.response_code == "99"
    assert block.hex() not in str(caught.value).lower() and pin_field not in str(caught.value)
    (event,) = log_sink.events("security_event")
    assert (event["kind"], event["key"]) == ("pin_block_refused", "pik:POS00001")
    assert block.hex() not in log_sink.text().lower() and pin_field not in log_sink.text()


def test_a_pin_block_of_the_wrong_size_is_a_field_error(keys: Keys) -> None:
    with pytest.raises(PinBlockFieldError) as caught:
        keys.module.translate_pin(keys.pos["005"][0].pik, keys.bank.zpk, bytes(8), v.PAN)
    assert (caught.value.response_code, caught.value.field) == ("30", 62)
    with pytest.raises(PinBlockFieldError) as caught:
        keys.module.translate_pin(keys.pos["003"][0].pik, keys.bank.zpk, bytes(16), v.PAN)
    assert caught.value.field == 52


def test_unknown_and_misused_keys(keys: Keys) -> None:
    with pytest.raises(UnknownKeyError, match="unknown key"):
        keys.module.verify_online("m-nobody-1", 0, "abcdefghijklmnop", b"", bytes(32))
    with pytest.raises(UnknownKeyError):
        keys.module.make_pos_working_keys("tmk:POS99999", "003")
    with pytest.raises(UnknownKeyError):
        keys.module.make_bank_keys("tmk:POS00001", "icbc")  # a TMK is no ZMK
    # A working key presented as another kind does not open: its name is bound to it.
    pik = keys.pos["003"][0].pik
    with pytest.raises(KeyStoreError):
        keys.module.make_pos_mac(replace(pik, kind="mak"), b"x")
    with pytest.raises(KeyStoreError):
        keys.module.make_pos_mac(replace(keys.pos["003"][0].mak, owner="POS00002"), b"x")


def test_reprs_show_names_and_kcvs_only(keys: Keys) -> None:
    working, pik = keys.pos["003"]
    shown = repr(working) + str(working.pik) + repr(keys.bank) + str([working.mak])
    assert "pik:POS00001" in shown and alg.kcv("3des", pik).hex().upper()[:6] in shown
    for secret in (pik, working.pik.blob, working.mak.blob, keys.zpk, keys.bank.zak.blob):
        assert secret.hex() not in shown.lower()
