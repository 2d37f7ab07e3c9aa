"""Card-data keys in the key store (security.md's key table): added, rotated with old
data still readable, retired, imported once from a card key file; and the start-up
rule that takes them from the store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from switch.errors import CardDataUnreadable, StartupError
from switch.security.errors import OperatorInputError
from switch.security.setup import open_card_vault, open_security_module
from switch.store.crypto import load_card_keys
from tests.conftest import REPO, make_config
from tests.security.helpers import new_store, open_module

DEMO_FILE = REPO / "conf" / "card-keys.toml"
PAN = "6222021000111122221"


def test_a_new_pair_hashes_and_seals_and_the_older_still_matches_and_opens(
    tmp_path: Path,
) -> None:
    module = new_store(tmp_path)
    assert module.card_vault() is None
    assert module.add_card_keys() == 1
    first = module.card_vault()
    assert first is not None
    sealed, hashed = first.seal(PAN), first.lookup(PAN)
    assert (sealed[0], hashed[0]) == (1, 1)
    assert module.add_card_keys() == 2
    # Another process (the switch at its next start) reads the store.
    rotated = open_module(tmp_path).card_vault()
    assert rotated is not None
    assert rotated.seal(PAN)[0] == 2 and rotated.lookup(PAN)[0] == 2
    assert rotated.open(sealed) == PAN and rotated.matches(PAN, hashed)
    # The newest cannot be retired; an older one can, and what it made is gone.
    with pytest.raises(OperatorInputError, match="hashes and seals"):
        module.retire_card_keys(2)
    module.retire_card_keys(1)
    retired = open_module(tmp_path).card_vault()
    assert retired is not None and not retired.matches(PAN, hashed)
    with pytest.raises(CardDataUnreadable, match="card key 1"):
        retired.open(sealed)
    # Ids never come back: the next pair is 3.
    assert module.add_card_keys() == 3
    listed = {(k.kind, k.owner, k.state) for k in module.list_keys()}
    assert {("lookup", "1", "revoked"), ("sealing", "3", "active")} <= listed
    store_text = (tmp_path / "keys.json").read_text()
    assert first.lookup(PAN).hex() not in store_text


def test_a_key_file_is_imported_once_with_its_active_key_newest(tmp_path: Path) -> None:
    key_file = tmp_path / "card-keys.toml"
    key_file.write_text(
        "active = 1\n[[keys]]\nid = 1\n" + f'hmac_key = "{"a1" * 32}"\naes_key = "{"b1" * 32}"\n'
        "[[keys]]\nid = 7\n" + f'hmac_key = "{"a7" * 32}"\naes_key = "{"b7" * 32}"\n'
    )
    key_file.chmod(0o600)
    from_file = load_card_keys(key_file=key_file, key_env=None)
    from switch.store.crypto import CardVault

    old = CardVault(from_file)
    sealed_7 = old.seal(PAN)  # under the file's active key, 1
    module = new_store(tmp_path)
    assert module.import_card_keys(from_file) == [7, 1]
    assert module.import_card_keys(from_file) == []  # once
    vault = module.card_vault()
    assert vault is not None
    assert vault.seal(PAN)[0] == 1 and vault.open(sealed_7) == PAN
    assert vault.matches(PAN, old.lookup(PAN))
    other = msgspec.structs.replace(
        from_file, keys=(msgspec.structs.replace(from_file.keys[0], hmac_key="c1" * 32),)
    )
    with pytest.raises(OperatorInputError, match="other keys"):
        module.import_card_keys(other)


@pytest.mark.slow  # starts `switch keys` processes
def test_the_import_command_moves_the_demo_key_file_into_the_store(tmp_path: Path) -> None:
    new_store(tmp_path)
    store = ("--store", str(tmp_path / "keys.json"), "--lmk-file", str(tmp_path / "lmk.hex"))

    def switch_keys(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "switch", "keys", *args], capture_output=True, text=True,
            timeout=60, cwd=REPO, check=False,
        )  # fmt: skip

    imported = switch_keys("import-card-keys", *store, "--key-file", str(DEMO_FILE))
    assert imported.returncode == 0, imported.stderr
    assert "imported: 1; active: 1" in imported.stdout
    again = switch_keys("card", "import", *store, "--key-file", str(DEMO_FILE))
    assert again.returncode == 0 and "none" in again.stdout
    assert switch_keys("card", "new", *store).returncode == 0
    listed = json.loads(switch_keys("list", *store, "--json").stdout)
    assert {(k["kind"], k["owner"]) for k in listed} == {
        ("lookup", "1"), ("sealing", "1"), ("lookup", "2"), ("sealing", "2"),
    }  # fmt: skip
    for text in (imported.stdout, imported.stderr, (tmp_path / "keys.json").read_text()):
        assert "6d656d6f" not in text  # no key, clear, in any output or file
    refused = switch_keys("card", "retire", *store, "2")
    assert refused.returncode == 1 and "hashes and seals" in refused.stderr
    vault = open_module(tmp_path).card_vault()
    assert vault is not None and vault.seal(PAN)[0] == 2


def test_start_up_takes_the_card_keys_from_the_store(tmp_path: Path) -> None:
    config = make_config()
    # Demo: the configured key file is imported at the first start; then only the store.
    module = open_security_module(config)
    vault = open_card_vault(module, config)
    demo = load_card_keys(key_file=DEMO_FILE, key_env=None)
    from switch.store.crypto import CardVault

    assert vault.open(CardVault(demo).seal(PAN)) == PAN and vault.demo
    assert module.card_key_ids() == [1]
    # Without demo keys: a key file not yet imported, or no card keys at all, refuse.
    strict = msgspec.structs.replace(
        config,
        security=msgspec.structs.replace(
            config.security, demo_keys=False, key_store=str(tmp_path / "keys.json"),
            lmk_file=str(tmp_path / "lmk.hex"),
        ),
    )  # fmt: skip
    new_store(tmp_path)
    strict_module = open_module(tmp_path)
    with pytest.raises(StartupError, match="import-card-keys"):
        open_card_vault(strict_module, strict)
    no_file = msgspec.structs.replace(
        strict, journal=msgspec.structs.replace(strict.journal, key_file=None, key_env=None)
    )
    with pytest.raises(StartupError, match="switch keys card new"):
        open_card_vault(strict_module, no_file)
    strict_module.add_card_keys()
    assert open_card_vault(strict_module, no_file).seal(PAN)[0] == 1


def test_workers_starting_at_once_store_one_pair_and_read_each_others_data(
    tmp_path: Path,
) -> None:
    """Two modules on one store, as two demo workers' first start: the second finds the
    first's pair (one change of the store under its lock), so both seal under it."""
    new_store(tmp_path)
    first, second = open_module(tmp_path), open_module(tmp_path)  # both read an empty store
    assert first.add_card_keys(only_if_none=True) == 1
    assert second.add_card_keys(only_if_none=True) == 1
    one, two = first.card_vault(), second.card_vault()
    assert one is not None and two is not None
    assert two.open(one.seal(PAN)) == PAN and one.matches(PAN, two.lookup(PAN))
    assert second.card_key_ids() == [1]
