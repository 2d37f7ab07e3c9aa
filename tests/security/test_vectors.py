"""Every sample and vector of security.md, as synchronous tables: the algorithms alone,
then through the software security module (keys loaded from components into a real
key store, working keys made from the published values)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from switch.security import algorithms as alg
from switch.security.port import TerminalProfile
from switch.security.software import SoftwareSecurityModule
from tests.security import vectors as v
from tests.security.helpers import ScriptedRandom, load, new_store


@pytest.mark.parametrize(("cipher", "key", "kcv"), v.KCVS)
def test_kcv(cipher: alg.KeyCipher, key: bytes, kcv: str) -> None:
    assert alg.kcv(cipher, key).hex().upper() == kcv


@pytest.mark.parametrize(
    ("cipher", "parent", "key", "wrapped"),
    [
        ("3des", v.TMK_3DES, v.PIK_3DES, v.FIELD_62_003[:16]),
        ("3des", v.TMK_3DES, v.MAK_DES, v.FIELD_62_003[20:28]),
        ("sm4", v.TMK_SM4, v.PIK_SM4, v.FIELD_62_005[:16]),
        ("sm4", v.TMK_SM4, v.MAK_SM4, v.FIELD_62_005[20:36]),
        ("3des", v.ZMK, v.ZPK, bytes.fromhex(v.FIELD_48[:32])),
        ("3des", v.ZMK, v.ZAK, bytes.fromhex(v.FIELD_48[40:72])),
    ],
)
def test_key_under_key(cipher: alg.KeyCipher, parent: bytes, key: bytes, wrapped: bytes) -> None:
    assert alg.wrap_key(cipher, parent, key) == wrapped
    assert alg.unwrap_key(cipher, parent, wrapped) == key


def test_published_keys_have_odd_parity_so_generation_keeps_them() -> None:
    for key in (v.PIK_3DES, v.MAK_DES, v.ZPK, v.ZAK):
        assert alg.with_odd_parity(key) == key
    assert alg.with_odd_parity(bytes(8)) == bytes.fromhex("0101010101010101")


def test_cup_mac_of_the_sale_and_its_approval() -> None:
    mab = v.SALE_0200[v.POS_PREFIX : -8]
    assert len(mab) == 86
    r, e1, e2 = alg.cup_mac_steps(v.MAK_DES, mab)
    assert (r.hex().upper(), e1.hex().upper(), e2.hex().upper()) == (
        "80121F7E9516ED61",
        "214451F53A6C04FE",
        "AEA1D3A5E64E6E3A",
    )
    assert alg.pos_mac("des", v.MAK_DES, mab) == b"AEA1D3A5" == v.SALE_0200[-8:]
    approval = v.SALE_0210[v.POS_PREFIX : -8]
    assert alg.pos_mac("des", v.MAK_DES, approval) == b"B089F3AD" == v.SALE_0210[-8:]


def test_sm4_mac_standard_vector_and_sale() -> None:
    block = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    assert alg.pos_mac("sm4", block, block).hex().upper() == "780D0374AF7C0B35"
    mab = v.SALE_0200_SM4[v.POS_PREFIX : -8]
    assert len(mab) == 96
    final = alg.cbc_mac("sm4", v.MAK_SM4, mab + b"\x80" + bytes(15))
    assert final.hex().upper() == "F236F73B59F34071F4085FD458E42FB1"
    assert alg.pos_mac("sm4", v.MAK_SM4, mab) == bytes.fromhex("F236F73B59F34071")
    assert v.SALE_0200_SM4[-8:] == bytes.fromhex("F236F73B59F34071")


def test_pin_blocks_of_the_sale() -> None:
    assert alg.pan_field_digits(v.PAN).rjust(16, "0") == "0000100011112222"
    clear = alg.clear_pin_block("123456", v.PAN)
    assert clear.hex().upper() == "06122456EEEEDDDD"
    assert alg.ecb_encrypt("3des", v.PIK_3DES, clear).hex().upper() == "5C01552BB3E298D9"
    assert bytes.fromhex("5C01552BB3E298D9") in v.SALE_0200
    clear_sm4 = alg.clear_pin_block("123456", v.PAN, 16)
    assert clear_sm4.hex().upper() == "06123456FFFFFFFFFFFFEFFFEEEEDDDD"
    sm4_block = alg.ecb_encrypt("sm4", v.PIK_SM4, clear_sm4)
    assert sm4_block.hex().upper() == "4BE06BDCB05FB15558D963AC0824EC8C"
    assert b"\x00\x16" + sm4_block in v.SALE_0200_SM4  # field 62, LLLVAR 016
    assert alg.pin_from_clear_block(clear, v.PAN) == "123456"
    assert alg.pin_from_clear_block(clear_sm4, v.PAN) == "123456"


@pytest.mark.parametrize(
    ("from_cipher", "pik", "block"),
    [
        ("3des", v.PIK_3DES, "5C01552BB3E298D9"),
        ("sm4", v.PIK_SM4, "4BE06BDCB05FB15558D963AC0824EC8C"),
    ],
)
def test_pin_translation_to_the_bank(from_cipher: alg.KeyCipher, pik: bytes, block: str) -> None:
    translated = alg.translate_pin_block(
        from_cipher, pik, "3des", v.ZPK, bytes.fromhex(block), v.PAN
    )
    assert translated.hex().upper() == "3D6B0F925E99FB7A"
    assert translated in v.BANK_SALE_0200


@pytest.mark.parametrize(
    ("frame", "mac"),
    [(v.BANK_SALE_0200, "5F79B8858FA78AA9"), (v.BANK_REVERSAL_0400, "A2668FB6DE8DF39A")],
)
def test_x919_mac_of_the_bank_sale_and_reversal(frame: bytes, mac: str) -> None:
    assert frame[-8:].hex().upper() == mac
    assert alg.x919_mac(v.ZAK, frame[2:-8]).hex().upper() == mac


def _envelope(frame: bytes) -> dict[str, object]:
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    envelope: dict[str, object] = msgspec.msgpack.decode(frame[4:])
    return envelope


@pytest.mark.parametrize(
    ("frame", "sig"),
    [
        (v.ONLINE_REQUEST, "730dfd9bae7563f5b7142aa7022205dde5371e4988210d0292eb97cf5ceabc67"),
        (v.ONLINE_RESULT, "8f97b789e9d68981e3033d0fa64f8a4771a68f1e320a492ec2b59b7c40e84b48"),
    ],
)
def test_online_signatures(frame: bytes, sig: str) -> None:
    envelope = _envelope(frame)
    body = envelope["body"]
    assert isinstance(body, bytes)
    key_id, ts, nonce = envelope["key_id"], envelope["ts"], envelope["nonce"]
    assert isinstance(key_id, str) and isinstance(ts, int) and isinstance(nonce, str)
    signed = alg.signed_bytes(key_id, ts, nonce, body)
    assert signed == f"{key_id}\n{ts}\n{nonce}\n".encode() + body
    assert alg.online_signature(v.ONLINE_SECRET, key_id, ts, nonce, body).hex() == sig
    assert envelope["sig"] == bytes.fromhex(sig)


def test_the_request_body_is_the_129_bytes_after_c481() -> None:
    body = _envelope(v.ONLINE_REQUEST)["body"]
    assert isinstance(body, bytes) and len(body) == 129
    assert v.ONLINE_REQUEST.index(b"\xc4\x81" + body) > 0


# -- the same vectors through the software security module ------------------------------


def _module(tmp_path: Path, *queued: bytes) -> SoftwareSecurityModule:
    module = new_store(tmp_path, ScriptedRandom(*queued))
    load(module, "tmk", "POS00001", "3des", v.TMK_3DES, TerminalProfile("1", allow_single_des=True))
    load(
        module,
        "tmk",
        "POS00002",
        "sm4",
        v.TMK_SM4,
        TerminalProfile("898310048990001", require_sm4=True),
    )
    load(module, "zmk", "icbc", "3des", v.ZMK)
    return module


def test_sign_on_field_62_003_is_the_published_one(tmp_path: Path) -> None:
    module = _module(tmp_path, v.PIK_3DES, v.MAK_DES)
    keys = module.make_pos_working_keys("tmk:POS00001", "003")
    assert keys.field_62() == v.FIELD_62_003
    assert v.SIGN_ON_0810.endswith(b"\x00\x40" + v.FIELD_62_003)  # LLLVAR 040
    assert module.make_pos_mac(keys.mak, v.SALE_0200[v.POS_PREFIX : -8]) == b"AEA1D3A5"
    assert module.verify_pos_mac(keys.mak, v.SALE_0210[v.POS_PREFIX : -8], b"B089F3AD")
    assert not module.verify_pos_mac(keys.mak, v.SALE_0210[v.POS_PREFIX : -8], b"B089F3AE")
    # The terminal's side takes the 62 it was sent.
    again = module.import_pos_working_keys("tmk:POS00001", "003", v.FIELD_62_003)
    assert (again.pik.kcv, again.mak.kcv) == (keys.pik.kcv, keys.mak.kcv)


def test_sign_on_field_62_005_is_the_published_one(tmp_path: Path) -> None:
    module = _module(tmp_path, v.PIK_SM4, v.MAK_SM4)
    keys = module.make_pos_working_keys("tmk:POS00002", "005")
    assert keys.field_62() == v.FIELD_62_005
    assert module.make_pos_mac(keys.mak, v.SALE_0200_SM4[v.POS_PREFIX : -8]) == v.SALE_0200_SM4[-8:]


def test_sign_on_field_62_001_is_24_bytes(tmp_path: Path) -> None:
    module = _module(tmp_path, v.MAK_DES, v.MAK_DES[::-1])
    keys = module.make_pos_working_keys("tmk:POS00001", "001")
    field = keys.field_62()
    assert len(field) == 24
    assert field[:8] == alg.wrap_key("3des", v.TMK_3DES, v.MAK_DES)
    assert field[8:12] == alg.kcv("des", v.MAK_DES)
    assert field[20:] == alg.kcv("des", alg.with_odd_parity(v.MAK_DES[::-1]))


def test_bank_key_change_field_48_is_the_published_one(tmp_path: Path) -> None:
    module = _module(tmp_path, v.ZPK, v.ZAK)
    keys = module.make_bank_keys("zmk:icbc", "icbc")
    assert keys.field_48() == v.FIELD_48
    assert v.FIELD_48.encode() in v.KEY_CHANGE_0800
    assert module.make_bank_mac(keys.zak, v.BANK_SALE_0200[2:-8]) == v.BANK_SALE_0200[-8:]
    assert module.verify_bank_mac(keys.zak, v.BANK_REVERSAL_0400[2:-8], v.BANK_REVERSAL_0400[-8:])
    bank_side = module.import_bank_keys("zmk:icbc", "icbc", v.FIELD_48.lower())
    assert (bank_side.zpk.kcv, bank_side.zak.kcv) == (keys.zpk.kcv, keys.zak.kcv)


def test_pin_translation_through_the_module(tmp_path: Path) -> None:
    module = _module(tmp_path, v.PIK_3DES, v.MAK_DES, v.PIK_SM4, v.MAK_SM4, v.ZPK, v.ZAK)
    pos = module.make_pos_working_keys("tmk:POS00001", "003")
    sm4 = module.make_pos_working_keys("tmk:POS00002", "005")
    bank = module.make_bank_keys("zmk:icbc", "icbc")
    for pik, block in (
        (pos.pik, "5C01552BB3E298D9"),
        (sm4.pik, "4BE06BDCB05FB15558D963AC0824EC8C"),
    ):
        translated = module.translate_pin(pik, bank.zpk, bytes.fromhex(block), v.PAN)
        assert translated.hex().upper() == "3D6B0F925E99FB7A"


def test_online_signatures_through_the_module(tmp_path: Path) -> None:
    module = _module(tmp_path, v.ONLINE_SECRET)
    info = module.create_online_key("merchant:898310048990001", tmp_path / "secret.hex")
    assert info.owner == v.ONLINE_KEY_ID
    assert (tmp_path / "secret.hex").read_text() == v.ONLINE_SECRET.hex() + "\n"
    for frame in (v.ONLINE_REQUEST, v.ONLINE_RESULT):
        e = _envelope(frame)
        key_id, ts, nonce, body, sig = e["key_id"], e["ts"], e["nonce"], e["body"], e["sig"]
        assert isinstance(key_id, str) and isinstance(ts, int) and isinstance(nonce, str)
        assert isinstance(body, bytes) and isinstance(sig, bytes)
        assert module.sign_online(key_id, ts, nonce, body) == sig
        assert module.verify_online(key_id, ts, nonce, body, sig)
    assert module.online_principal(v.ONLINE_KEY_ID) == "merchant:898310048990001"
