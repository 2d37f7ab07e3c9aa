"""Card data at rest: sealed, keyed look-ups, keys from file or environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch.errors import CardDataUnreadable, ConfigError
from switch.store.crypto import CardKey, CardKeyFile, CardVault, load_card_keys, new_key_file_text
from tests.conftest import REPO

PAN = "6222021000111122221"


def vault(active: int = 1, *ids: int) -> CardVault:
    keys = tuple(
        CardKey(id=i, hmac_key=f"{i:02x}" * 32, aes_key=f"{i + 100:02x}" * 32)
        for i in (ids or (active,))
    )
    return CardVault(CardKeyFile(active=active, keys=keys))


def test_seal_opens_and_hides_the_number() -> None:
    card_vault = vault()
    sealed = card_vault.seal(PAN)
    assert PAN.encode() not in sealed
    assert card_vault.open(sealed) == PAN
    assert card_vault.seal(PAN) != sealed  # a fresh nonce each time


def test_lookup_is_keyed_and_stable() -> None:
    assert vault().lookup(PAN) == vault().lookup(PAN)
    assert vault(2).lookup(PAN) != vault(1).lookup(PAN)
    assert PAN.encode() not in vault().lookup(PAN)


def test_tampering_is_detected() -> None:
    card_vault = vault()
    sealed = bytearray(card_vault.seal(PAN))
    sealed[-1] ^= 1
    with pytest.raises(CardDataUnreadable, match="does not open with card key 1"):
        card_vault.open(bytes(sealed))
    with pytest.raises(CardDataUnreadable, match="damaged"):
        card_vault.open(bytes(sealed[:5]))


def test_rotation_keeps_old_data_readable() -> None:
    old = vault(1)
    sealed_before = old.seal(PAN)
    rotated = vault(2, 1, 2)
    assert rotated.open(sealed_before) == PAN
    assert rotated.seal(PAN)[0] == 2
    with pytest.raises(CardDataUnreadable, match="card key 1 is needed"):
        vault(2).open(sealed_before)  # key 1 retired: says which key is missing
    replaced = CardVault(  # key 1 replaced by another under the same id
        CardKeyFile(active=1, keys=(CardKey(id=1, hmac_key="aa" * 32, aes_key="bb" * 32),))
    )
    with pytest.raises(CardDataUnreadable, match="replaced"):
        replaced.open(sealed_before)


def test_lookups_and_digests_match_under_every_key_still_held() -> None:
    """Rotation as documented (add key 2, active = 2): what was hashed under key 1 still
    matches while key 1 is in the file; a new HMAC is under key 2."""
    old = vault(1)
    hashed_before = old.lookup(PAN)
    assert hashed_before[0] == 1 and len(hashed_before) == 33
    rotated = vault(2, 1, 2)
    assert rotated.lookup(PAN) != hashed_before and rotated.lookup(PAN)[0] == 2
    assert rotated.matches(PAN, hashed_before)
    assert rotated.matches(PAN, rotated.lookup(PAN))
    assert not rotated.matches("6222021000111122239", hashed_before)
    assert not vault(2).matches(PAN, hashed_before)  # key 1 retired: no longer matches
    # An HMAC stored before key ids were prefixed is compared under every key.
    legacy = hashed_before[1:]
    assert rotated.matches(PAN, legacy) and not vault(2).matches(PAN, legacy)
    assert not rotated.matches(PAN, b"short")


def test_keys_from_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    demo = load_card_keys(key_file=REPO / "conf" / "card-keys.toml", key_env=None)
    assert demo.demo is True
    fresh = new_key_file_text()
    monkeypatch.setenv("TEST_CARD_KEYS", fresh)
    from_env = load_card_keys(key_file=REPO / "conf" / "card-keys.toml", key_env="TEST_CARD_KEYS")
    assert from_env.demo is False and from_env.keys[0].aes_key in fresh
    with pytest.raises(ConfigError, match="cannot read"):
        load_card_keys(key_file=tmp_path / "missing.toml", key_env=None)
    bad = tmp_path / "bad.toml"
    bad.write_text('active = 1\n[[keys]]\nid = 1\nhmac_key = "00"\naes_key = "00"\n')
    bad.chmod(0o600)
    with pytest.raises(ConfigError, match="32 bytes"):
        CardVault(load_card_keys(key_file=bad, key_env=None))
