"""The prepared keys the software module keeps per key (POS MAKs, bank ZAKs, PIKs and
ZPKs) keep their cipher contexts open across messages: one key used for a run of
messages gives, for each, what the algorithm gives it alone with a fresh cipher (a
context whose chaining leaked from one message into the next would pass on the first
message and fail on the second)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.security import algorithms as alg
from switch.security.errors import KeyUsageError
from tests.security import vectors as v
from tests.security.test_pos_properties import bank_zpk, module, protocol_keys, signed_on

MESSAGES = st.lists(st.binary(max_size=300), min_size=2, max_size=8)
KEY = st.binary(min_size=16, max_size=16)


@settings(max_examples=200, deadline=None)
@given(cipher=st.sampled_from(["des", "sm4"]), mabs=MESSAGES, key=KEY)
def test_one_pos_mac_key_for_many_messages(cipher: str, mabs: list[bytes], key: bytes) -> None:
    mak = key[:8] if cipher == "des" else key
    prepared = alg.PosMacKey(cipher, mak)  # type: ignore[arg-type]
    for mab in mabs:
        assert prepared.mac(mab) == alg.pos_mac(cipher, mak, mab)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(mabs=MESSAGES, zak=KEY)
def test_one_x919_key_for_many_messages(mabs: list[bytes], zak: bytes) -> None:
    prepared = alg.X919Key(zak)
    for mab in mabs:
        assert prepared.mac(mab) == alg.x919_mac(zak, mab)


def test_one_x919_key_gives_the_spec_vectors_one_after_the_other() -> None:
    prepared = alg.X919Key(v.ZAK)
    for frame in (v.BANK_SALE_0200, v.BANK_REVERSAL_0400, v.BANK_SALE_0200) * 2:
        assert prepared.mac(frame[2:-8]) == frame[-8:]


@settings(max_examples=100, deadline=None)
@given(
    pik_cipher=st.sampled_from(["3des", "sm4"]),
    pins=st.lists(st.text("0123456789", min_size=4, max_size=12), min_size=2, max_size=5),
    pik=KEY,
    zpk=KEY,
)
def test_one_pin_key_pair_for_many_blocks(
    pik_cipher: alg.KeyCipher, pins: list[str], pik: bytes, zpk: bytes
) -> None:
    prepared_pik, prepared_zpk = alg.PinKey(pik_cipher, pik), alg.PinKey("3des", zpk)
    size = alg.pin_block_bytes(pik_cipher)
    for pin in pins:
        block = alg.ecb_encrypt(pik_cipher, pik, alg.clear_pin_block(pin, v.PAN, size))
        translated = alg.translate_pin_block_with(prepared_pik, prepared_zpk, block, v.PAN)
        assert alg.ecb_encrypt("3des", zpk, alg.clear_pin_block(pin, v.PAN)) == translated


def test_the_spec_pin_translation_twice_through_prepared_keys() -> None:
    for from_cipher, pik, block in (
        ("3des", v.PIK_3DES, "5C01552BB3E298D9"),
        ("sm4", v.PIK_SM4, "4BE06BDCB05FB15558D963AC0824EC8C"),
    ):
        prepared = alg.PinKey(from_cipher, pik)  # type: ignore[arg-type]
        zpk = alg.PinKey("3des", v.ZPK)
        for _ in range(2):
            translated = alg.translate_pin_block_with(prepared, zpk, bytes.fromhex(block), v.PAN)
            assert translated.hex().upper() == "3D6B0F925E99FB7A"


def test_a_kept_zpk_is_still_no_pik() -> None:
    """The module keeps PIKs and ZPKs prepared in one place; a ZPK it has prepared for a
    translation is still refused where a PIK goes (and a PIK where a ZPK goes)."""
    keys = module()
    working = protocol_keys("003")
    _, security, _ = signed_on("003")
    block = security.pin_fields("1234", v.PAN)[52]
    assert isinstance(block, bytes)
    zpk = bank_zpk()
    keys.translate_pin(working.pik, zpk, block, v.PAN)  # both kept now
    with pytest.raises(KeyUsageError):
        keys.translate_pin(zpk, zpk, block, v.PAN)
    with pytest.raises(KeyUsageError):
        keys.translate_pin(working.pik, working.pik, block, v.PAN)
