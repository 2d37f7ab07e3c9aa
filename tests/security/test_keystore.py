"""The key store on real files: modes, the LMK, records bound to their names, atomic LMK
rotation (a process killed between write and rename), online keys, and no clear key,
component or secret in any file it writes or any log line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from switch.security import algorithms as alg
from switch.security.errors import (
    KeyStoreError,
    LayoutNotAllowedError,
    OperatorInputError,
    UnknownKeyError,
)
from switch.security.keystore import KeyStore, load_lmk, write_new_lmk_file
from switch.security.port import KeyComponent, TerminalProfile
from switch.security.software import SoftwareSecurityModule
from tests.conftest import REPO, LogSink
from tests.security import vectors as v
from tests.security.helpers import ScriptedRandom, load, new_store, open_module, split


def _secrets_in(text: str, secrets: list[bytes]) -> list[str]:
    """Which of ``secrets`` appear in ``text``, as hex (either case) or base64."""
    import base64

    found = []
    lowered = text.lower()
    for secret in secrets:
        forms = [secret.hex(), base64.b64encode(secret).decode().lower()]
        if any(form in lowered for form in forms):
            found.append(secret.hex()[:4] + "...")
    return found


def _all_files(folder: Path, skip: tuple[str, ...] = ()) -> str:
    return "".join(
        p.read_bytes().decode("latin-1")
        for p in folder.rglob("*")
        if p.is_file() and p.name not in skip
    )


def test_the_store_and_the_lmk_file_must_be_0600(tmp_path: Path) -> None:
    new_store(tmp_path)
    os.chmod(tmp_path / "keys.json", 0o644)
    with pytest.raises(KeyStoreError) as caught:
        open_module(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "keys.json is mode 0644; it must be 0600" in message
    os.chmod(tmp_path / "keys.json", 0o600)
    os.chmod(tmp_path / "lmk.hex", 0o640)
    with pytest.raises(KeyStoreError, match=r"LMK file .*lmk.hex is mode 0640; it must be 0600"):
        open_module(tmp_path)
    os.chmod(tmp_path / "lmk.hex", 0o600)
    open_module(tmp_path)


def test_the_lmk_from_an_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_store(tmp_path)
    monkeypatch.setenv("TEST_LMK", (tmp_path / "lmk.hex").read_text().strip())
    open_module(tmp_path, lmk=load_lmk(lmk_env="TEST_LMK"))
    monkeypatch.setenv("TEST_LMK", "00" * 31)
    with pytest.raises(KeyStoreError, match="TEST_LMK is not 64 hexadecimal characters"):
        load_lmk(lmk_env="TEST_LMK")
    with pytest.raises(KeyStoreError, match=r"NOT_SET_LMK \(the LMK\) is not set"):
        load_lmk(lmk_env="NOT_SET_LMK")


def test_another_lmk_is_refused_in_one_line(tmp_path: Path) -> None:
    new_store(tmp_path)
    write_new_lmk_file(tmp_path / "other.hex")
    with pytest.raises(
        KeyStoreError, match=r"is under the LMK with check \w{6}, not the LMK given"
    ):
        open_module(tmp_path, lmk=load_lmk(lmk_file=tmp_path / "other.hex"))


def test_a_record_moved_to_another_name_does_not_open(tmp_path: Path) -> None:
    module = new_store(tmp_path)
    load(module, "tmk", "POS00001", "3des", v.TMK_3DES)
    load(module, "tmk", "POS00002", "3des", v.TMK_3DES[::-1])
    store = json.loads((tmp_path / "keys.json").read_text())
    store["keys"][0]["blob"], store["keys"][1]["blob"] = (
        store["keys"][1]["blob"],
        store["keys"][0]["blob"],
    )
    (tmp_path / "keys.json").write_text(json.dumps(store))
    with pytest.raises(KeyStoreError, match="key tmk:POS00001 does not open under the LMK"):
        open_module(tmp_path)  # at start, not at the terminal's first sign-on


def test_a_record_whose_kcv_was_altered_stops_the_start(tmp_path: Path) -> None:
    module = new_store(tmp_path)
    load(module, "zmk", "icbc", "3des", v.ZMK)
    store = json.loads((tmp_path / "keys.json").read_text())
    store["keys"][0]["kcv"] = "00000000"
    (tmp_path / "keys.json").write_text(json.dumps(store))
    with pytest.raises(KeyStoreError, match=r"key zmk:icbc does not match its KCV 000000$"):
        open_module(tmp_path)


def test_the_software_module_warns_at_start_while_it_holds_keys(
    tmp_path: Path, log_sink: LogSink
) -> None:
    module = new_store(tmp_path)
    assert not module.warn_at_start()
    load(module, "zmk", "icbc", "3des", v.ZMK)
    assert open_module(tmp_path).warn_at_start()
    (warning,) = log_sink.events("software_security_module")
    assert warning["level"] == "warning" and warning["keys"] == 1
    assert "payment HSM" in warning["message"]


def _usable(module: SoftwareSecurityModule, folder: Path) -> None:
    """Every key of the store works as it did."""
    keys = module.make_pos_working_keys("tmk:POS00001", "003")
    assert (
        module.import_pos_working_keys("tmk:POS00001", "003", keys.field_62()).mak.kcv
        == keys.mak.kcv
    )
    sm4 = module.make_pos_working_keys("tmk:POS00002", "005")
    assert (
        module.import_pos_working_keys("tmk:POS00002", "005", sm4.field_62()).pik.kcv == sm4.pik.kcv
    )
    bank = module.make_bank_keys("zmk:icbc", "icbc")
    assert module.import_bank_keys("zmk:icbc", "icbc", bank.field_48()).zak.kcv == bank.zak.kcv
    assert module.sign_online(
        "m-898310048990001-1", 1, "abcdefghijklmnop", b"x"
    ) == alg.online_signature(v.ONLINE_SECRET, "m-898310048990001-1", 1, "abcdefghijklmnop", b"x")


def _full_store(folder: Path) -> SoftwareSecurityModule:
    module = new_store(folder, ScriptedRandom(v.ONLINE_SECRET))
    load(module, "tmk", "POS00001", "3des", v.TMK_3DES)
    load(module, "tmk", "POS00002", "sm4", v.TMK_SM4)
    load(module, "zmk", "icbc", "3des", v.ZMK)
    module.create_online_key("merchant:898310048990001", folder / "secret.hex")
    return module


def test_lmk_rotation_keeps_every_key_usable_and_kcvs_unchanged(
    tmp_path: Path, log_sink: LogSink
) -> None:
    module = _full_store(tmp_path)
    before = module.list_keys()
    write_new_lmk_file(tmp_path / "new.hex")
    new_lmk = load_lmk(lmk_file=tmp_path / "new.hex")
    log_sink.lines.clear()
    assert module.rotate_lmk(new_lmk) == 4
    assert [e["kind"] for e in log_sink.events("security_event")] == ["lmk_rotated"]
    _usable(module, tmp_path)
    reopened = open_module(tmp_path, lmk=load_lmk(lmk_file=tmp_path / "new.hex"))
    assert [(k.kind, k.owner, k.kcv, k.created) for k in reopened.list_keys()] == [
        (k.kind, k.owner, k.kcv, k.created) for k in before
    ]
    _usable(reopened, tmp_path)
    with pytest.raises(KeyStoreError, match="not the LMK given"):
        open_module(tmp_path)  # the old LMK no longer opens it
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600


CRASH_BEFORE_RENAME = """
import os, sys
from pathlib import Path
from switch.security.keystore import KeyStore, load_lmk
from switch.security.software import SoftwareSecurityModule

folder = Path(sys.argv[1])
lmk = load_lmk(lmk_file=folder / "lmk.hex")
module = SoftwareSecurityModule(KeyStore(folder / "keys.json"), lmk)
real_replace = os.replace
def crash(source, target):
    if str(target).endswith("keys.json"):
        os.kill(os.getpid(), 9)  # the new store is written and synced; the rename never comes
    real_replace(source, target)
os.replace = crash
module.rotate_lmk(load_lmk(lmk_file=folder / "new.hex"))
"""


def test_a_rotation_killed_between_write_and_rename_leaves_the_old_store(tmp_path: Path) -> None:
    _full_store(tmp_path)
    before = (tmp_path / "keys.json").read_bytes()
    write_new_lmk_file(tmp_path / "new.hex")
    killed = subprocess.run(
        [sys.executable, "-c", CRASH_BEFORE_RENAME, str(tmp_path)], cwd=REPO, check=False,
        capture_output=True,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr.decode()
    assert (tmp_path / ".keys.json.partial").exists()  # the write happened
    assert (tmp_path / "keys.json").read_bytes() == before
    module = open_module(tmp_path)
    _usable(module, tmp_path)
    with pytest.raises(KeyStoreError, match="not the LMK given"):
        open_module(tmp_path, lmk=load_lmk(lmk_file=tmp_path / "new.hex"))
    # And the rotation, done again, completes.
    assert module.rotate_lmk(load_lmk(lmk_file=tmp_path / "new.hex")) == 4
    _usable(open_module(tmp_path, lmk=load_lmk(lmk_file=tmp_path / "new.hex")), tmp_path)


def test_components_are_checked_and_the_key_confirmed(tmp_path: Path) -> None:
    module = new_store(tmp_path)
    good = [KeyComponent(c, alg.kcv("3des", c).hex()[:6]) for c in (v.TMK_3DES, bytes(16))]
    profile = TerminalProfile("898310048990001")
    bad_kcv = [good[0], KeyComponent(good[1].value, "000000")]
    with pytest.raises(OperatorInputError, match="component 2 does not match its KCV"):
        module.import_key_from_components(
            "tmk", "POS00001", "3des", bad_kcv, confirm_kcv="43C6CC", profile=profile
        )
    with pytest.raises(OperatorInputError, match="not the one confirmed"):
        module.import_key_from_components(
            "tmk", "POS00001", "3des", good, confirm_kcv="43C6CD", profile=profile
        )
    with pytest.raises(OperatorInputError, match="2 or 3 components"):
        module.import_key_from_components(
            "tmk", "POS00001", "3des", good[:1], confirm_kcv="43C6CC", profile=profile
        )
    assert open_module(tmp_path).list_keys() == []
    info = module.import_key_from_components(
        "tmk", "POS00001", "3des", good, confirm_kcv="43c6cccb", profile=profile
    )
    assert (info.kcv, info.merchant, info.allow_single_des) == ("43C6CC", "898310048990001", False)
    with pytest.raises(OperatorInputError, match="tmk:POS00001 exists"):
        module.import_key_from_components(
            "tmk", "POS00001", "3des", good, confirm_kcv="43C6CC", profile=profile
        )
    with pytest.raises(OperatorInputError, match="requires 005 has an sm4 TMK"):
        module.import_key_from_components(
            "tmk", "POS00003", "3des", good, confirm_kcv="43C6CC",
            profile=TerminalProfile("898310048990001", require_sm4=True),
        )  # fmt: skip


def test_a_sign_on_layout_the_entry_does_not_allow_is_answered_40(tmp_path: Path) -> None:
    module = new_store(tmp_path)
    sm4_only = TerminalProfile("898310048990001", require_sm4=True)
    load(module, "tmk", "POS00002", "sm4", v.TMK_SM4, sm4_only)
    load(module, "tmk", "POS00001", "3des", v.TMK_3DES)
    load(module, "tmk", "POS00003", "3des", v.TMK_3DES, TerminalProfile("1", allow_single_des=True))
    for tmk, layout, why in (
        ("tmk:POS00002", "003", r"60\.3 = 003 needs a 3des TMK; tmk:POS00002 is sm4"),
        ("tmk:POS00002", "001", r"60\.3 = 001 needs a 3des TMK"),
        ("tmk:POS00001", "005", r"60\.3 = 005 needs a sm4 TMK"),
        ("tmk:POS00001", "001", r"60\.3 = 001 is not allowed for tmk:POS00001"),
        ("tmk:POS00001", "002", r"60\.3 = '002' is no working key layout"),
    ):
        with pytest.raises(LayoutNotAllowedError, match=why) as caught:
            module.make_pos_working_keys(tmk, layout)
        assert caught.value.response_code == "40"
    assert len(module.make_pos_working_keys("tmk:POS00003", "001").field_62()) == 24
    assert module.terminal_profile("tmk:POS00002") == sm4_only
    with pytest.raises(UnknownKeyError):
        module.terminal_profile("tmk:POS00009")


def test_online_keys_two_active_at_most_revoke_at_once(tmp_path: Path) -> None:
    module = new_store(tmp_path)
    principal = "app:wallet"
    first = module.create_online_key(principal, tmp_path / "s1.hex")
    second = module.create_online_key(principal, tmp_path / "s2.hex")
    assert (first.owner, second.owner) == ("a-wallet-1", "a-wallet-2")
    for name in ("s1.hex", "s2.hex"):
        secret_file = tmp_path / name
        assert secret_file.stat().st_mode & 0o777 == 0o600
        assert len(secret_file.read_text().strip()) == 64
    with pytest.raises(OperatorInputError, match="app:wallet has 2 active keys"):
        module.create_online_key(principal, tmp_path / "s3.hex")
    assert not (tmp_path / "s3.hex").exists()
    with pytest.raises(FileExistsError):
        module.create_online_key("app:other", tmp_path / "s1.hex")
    assert [k.owner for k in module.list_keys()] == ["a-wallet-1", "a-wallet-2"]
    module.revoke_online_key("a-wallet-1")
    with pytest.raises(UnknownKeyError, match="unknown key"):
        module.sign_online("a-wallet-1", 1, "abcdefghijklmnop", b"")
    # Revoked in the file too, for every process that reads it from now on.
    with pytest.raises(UnknownKeyError):
        open_module(tmp_path).online_principal("a-wallet-1")
    third = module.create_online_key(principal, tmp_path / "s3.hex")
    assert third.owner == "a-wallet-3"
    with pytest.raises(OperatorInputError, match="already revoked"):
        module.revoke_online_key("a-wallet-1")
    with pytest.raises(OperatorInputError, match="principal 'shop' is not"):
        module.create_online_key("shop", tmp_path / "s4.hex")


def test_no_clear_key_component_or_secret_in_any_file_or_log(
    tmp_path: Path, log_sink: LogSink
) -> None:
    random = ScriptedRandom()
    components: list[bytes] = []
    module = new_store(tmp_path, random)
    for kind, owner, cipher, key in (
        ("tmk", "POS00001", "3des", v.TMK_3DES),
        ("tmk", "POS00002", "sm4", v.TMK_SM4),
        ("zmk", "icbc", "3des", v.ZMK),
    ):
        parts = split(key)
        components += parts
        module.import_key_from_components(
            kind, owner, cipher,  # type: ignore[arg-type]
            [KeyComponent(p, alg.kcv(cipher, p).hex()) for p in parts],  # type: ignore[arg-type]
            confirm_kcv=alg.kcv(cipher, key).hex(),  # type: ignore[arg-type]
            profile=TerminalProfile("898310048990001") if kind == "tmk" else None,
        )  # fmt: skip
    module.create_online_key("merchant:898310048990001", tmp_path / "delivered.hex")
    pos = module.make_pos_working_keys("tmk:POS00001", "003")
    module.make_bank_keys("zmk:icbc", "icbc")
    write_new_lmk_file(tmp_path / "new.hex")
    module.rotate_lmk(load_lmk(lmk_file=tmp_path / "new.hex"))
    module.revoke_online_key("m-898310048990001-1")
    lmks = [bytes.fromhex((tmp_path / n).read_text()) for n in ("lmk.hex", "new.hex")]
    clear = [v.TMK_3DES, v.TMK_SM4, v.ZMK, *components, *random.given, *lmks]
    # The only files that hold a secret are the LMKs' own and the delivery file.
    assert (
        _secrets_in(_all_files(tmp_path, skip=("lmk.hex", "new.hex", "delivered.hex")), clear) == []
    )
    assert (tmp_path / "delivered.hex").read_text().strip() == random.given[0].hex()
    # Nor do the encrypted working keys reach a log: only names and KCVs.
    events = log_sink.events("security_event")
    assert [e["kind"] for e in events] == [
        "key_store_created", "key_loaded", "key_loaded", "key_loaded", "online_key_created",
        "working_keys_made", "bank_keys_made", "lmk_rotated", "online_key_revoked",
    ]  # fmt: skip
    text = log_sink.text()
    assert _secrets_in(text, [*clear, pos.pik.blob, pos.mak.blob, pos.pik_under_tmk]) == []
    assert events[1]["kcv"] == "43C6CC" and events[1]["key"] == "tmk:POS00001"


def test_the_store_file_refuses_to_be_created_twice(tmp_path: Path) -> None:
    new_store(tmp_path)
    with pytest.raises(KeyStoreError, match="exists, not overwritten"):
        SoftwareSecurityModule.create_store(
            KeyStore(tmp_path / "keys.json"), load_lmk(lmk_file=tmp_path / "lmk.hex")
        )
