"""``switch keys`` as an operator runs it: real processes, real files, components on
standard input. Nothing printed, logged or written holds a clear key, component or
secret (the LMK files and a secret's delivery file apart)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from switch.security import algorithms as alg
from tests.conftest import REPO
from tests.security import vectors as v
from tests.security.helpers import split


def _switch(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switch", "keys", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
        env={**os.environ, **(env or {})},
    )


def _events(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line["event"] == "security_event"]


def _entry(cipher: alg.KeyCipher, components: list[bytes], confirm: str) -> str:
    """What the holders type: each component, then its KCV; then the key's KCV."""
    lines = []
    for component in components:
        lines += [component.hex(), alg.kcv(cipher, component).hex()[:6].upper()]
    return "\n".join([*lines, confirm]) + "\n"


def test_operator_commands_end_to_end_show_no_secret(tmp_path: Path) -> None:
    store = ["--store", str(tmp_path / "keys.json"), "--lmk-file", str(tmp_path / "lmk.hex")]
    outputs: list[subprocess.CompletedProcess[str]] = []

    def run(*args: str, stdin: str = "", code: int = 0) -> subprocess.CompletedProcess[str]:
        result = _switch(*args, stdin=stdin)
        assert result.returncode == code, result.stderr
        outputs.append(result)
        return result

    made = run("lmk", "new", "--out", str(tmp_path / "lmk.hex"))
    assert "check value" in made.stdout
    assert stat.S_IMODE((tmp_path / "lmk.hex").stat().st_mode) == 0o600
    assert _events(run("init", *store))[0]["kind"] == "key_store_created"

    tmk_parts = split(v.TMK_3DES)
    loaded = run(
        "load-tmk", *store, "--terminal", "POS00001", "--merchant", "898310048990001",
        "--cipher", "3des", stdin=_entry("3des", tmk_parts, "43C6CC"),
    )  # fmt: skip
    assert "key KCV: 43C6CC" in loaded.stdout
    assert "stored tmk:POS00001 (3des) with KCV 43C6CC" in loaded.stdout
    for number, part in enumerate(tmk_parts, 1):
        shown = alg.kcv("3des", part).hex().upper()[:6]
        assert f"component {number}: KCV {shown} checked" in loaded.stdout
    (event,) = _events(loaded)
    assert (event["kind"], event["key"], event["kcv"]) == ("key_loaded", "tmk:POS00001", "43C6CC")

    sm4_parts = split(v.TMK_SM4)
    run(
        "load-tmk", *store, "--terminal", "POS00002", "--merchant", "898310048990001",
        "--cipher", "sm4", "--require-sm4", stdin=_entry("sm4", sm4_parts, "AF29DEF9"),
    )  # fmt: skip
    zmk_parts = split(v.ZMK, 3)
    run("load-zmk", *store, "--bank", "icbc", "--components", "3",
        stdin=_entry("3des", zmk_parts, "19f9c7"))  # fmt: skip

    secret_file = tmp_path / "m1.hex"
    created = run("online", "new", *store, "--principal", "merchant:898310048990001",
                  "--out", str(secret_file))  # fmt: skip
    assert "m-898310048990001-1" in created.stdout
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = bytes.fromhex(secret_file.read_text())
    assert len(secret) == 32
    run(
        "online",
        "new",
        *store,
        "--principal",
        "merchant:898310048990001",
        "--out",
        str(tmp_path / "m1.hex"),
        code=2,
    )  # fmt: skip  (never over an existing file)

    listed = json.loads(run("list", *store, "--json").stdout)
    assert [(k["kind"], k["owner"], k["kcv"], k["state"]) for k in listed] == [
        (
            "online",
            "m-898310048990001-1",
            alg.hmac_key_check_value(secret).hex().upper()[:6],
            "active",
        ),
        ("tmk", "POS00001", "43C6CC", "active"),
        ("tmk", "POS00002", "AF29DE", "active"),
        ("zmk", "icbc", "19F9C7", "active"),
    ]
    assert set(listed[1]) == {"kind", "owner", "cipher", "kcv", "state", "created", "profile"}
    assert "merchant=898310048990001" in listed[1]["profile"]
    assert "require-sm4" in listed[2]["profile"]

    run("lmk", "new", "--out", str(tmp_path / "new.hex"))
    rotated = run("rotate-lmk", *store, "--new-lmk-file", str(tmp_path / "new.hex"))
    assert "4 keys re-encrypted" in rotated.stdout
    refused = run("list", *store, code=1)
    assert refused.stderr.count("\n") == 1 and "not the LMK given" in refused.stderr
    new_store = [*store[:3], str(tmp_path / "new.hex")]
    table = run("list", *new_store).stdout
    assert "43C6CC" in table and "19F9C7" in table

    revoked = run("online", "revoke", *new_store, "m-898310048990001-1")
    assert _events(revoked)[0]["kind"] == "online_key_revoked"
    online = json.loads(run("online", "list", *new_store, "--json").stdout)
    assert [(k["owner"], k["state"]) for k in online] == [("m-898310048990001-1", "revoked")]

    # Every command wrote its security event, and nothing shows a secret.
    kinds = [e["kind"] for result in outputs for e in _events(result)]
    for kind in ("key_store_created", "key_loaded", "online_key_created", "lmk_rotated",
                 "online_key_revoked"):  # fmt: skip
        assert kind in kinds
    lmks = [bytes.fromhex((tmp_path / n).read_text()) for n in ("lmk.hex", "new.hex")]
    clear = [v.TMK_3DES, v.TMK_SM4, v.ZMK, *tmk_parts, *sm4_parts, *zmk_parts, secret, *lmks]
    shown = "".join(r.stdout + r.stderr for r in outputs).lower()
    files = "".join(
        p.read_bytes().decode("latin-1").lower()
        for p in tmp_path.iterdir()
        if p.name not in ("lmk.hex", "new.hex", "m1.hex")
    )
    for value in clear:
        assert value.hex() not in shown and value.hex() not in files
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def _with_store(tmp_path: Path) -> list[str]:
    store = ["--store", str(tmp_path / "keys.json"), "--lmk-file", str(tmp_path / "lmk.hex")]
    assert _switch("lmk", "new", "--out", str(tmp_path / "lmk.hex")).returncode == 0
    assert _switch("init", *store).returncode == 0
    return store


def test_a_component_not_matching_its_kcv_stops_before_the_next(tmp_path: Path) -> None:
    store = _with_store(tmp_path)
    parts = split(v.ZMK)
    typed = (
        f"{parts[0].hex()}\n000000\n{parts[1].hex()}\n{alg.kcv('3des', parts[1]).hex()}\n19F9C7\n"
    )
    result = _switch("load-zmk", *store, "--bank", "icbc", stdin=typed)
    assert result.returncode == 1
    assert "switch: component 1 does not match its KCV" in result.stderr
    assert "component 2 of 2" not in result.stderr  # the next one was never asked for
    (event,) = _events(result)
    assert (event["kind"], event["key"], event["component"]) == ("component_refused", "zmk:icbc", 1)
    assert parts[0].hex() not in (result.stdout + result.stderr).lower()
    assert json.loads(_switch("list", *store, "--json").stdout) == []


def test_a_key_whose_kcv_is_not_confirmed_is_not_stored(tmp_path: Path) -> None:
    store = _with_store(tmp_path)
    result = _switch(
        "load-tmk", *store, "--terminal", "POS00001", "--merchant", "898310048990001",
        "--cipher", "3des", stdin=_entry("3des", split(v.TMK_3DES), "43C6CD"),
    )  # fmt: skip
    assert result.returncode == 1
    assert "switch: the key's KCV is 43C6CC, not the one confirmed" in result.stderr
    assert [e["kind"] for e in _events(result)] == ["key_not_confirmed"]
    assert json.loads(_switch("list", *store, "--json").stdout) == []


def test_a_store_open_to_others_is_refused_in_one_line(tmp_path: Path) -> None:
    store = _with_store(tmp_path)
    os.chmod(tmp_path / "keys.json", 0o644)
    result = _switch("list", *store)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line == (
        f"switch: key store {tmp_path / 'keys.json'} is mode 0644; it must be 0600 "
        f"(chmod 600 {tmp_path / 'keys.json'})"
    )


def test_the_lmk_from_an_environment_variable(tmp_path: Path) -> None:
    lmk = os.urandom(32).hex()
    store = ["--store", str(tmp_path / "keys.json"), "--lmk-env", "SWITCH_TEST_LMK"]
    assert _switch("init", *store, env={"SWITCH_TEST_LMK": lmk}).returncode == 0
    result = _switch("online", "new", *store, "--principal", "app:wallet", "--out",
                     str(tmp_path / "w.hex"), env={"SWITCH_TEST_LMK": lmk})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert lmk not in result.stdout + result.stderr
    assert "a-wallet-1" in _switch("online", "list", *store, env={"SWITCH_TEST_LMK": lmk}).stdout


def test_a_file_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    result = _switch("lmk", "new", "--out", str(tmp_path / "missing" / "lmk.hex"))
    assert result.returncode == 1
    assert (
        result.stderr == f"switch: {tmp_path / 'missing' / 'lmk.hex'}: No such file or directory\n"
    )
    store = _with_store(tmp_path)
    ended = _switch("load-zmk", *store, "--bank", "icbc", stdin=split(v.ZMK)[0].hex() + "\n")
    assert ended.returncode == 1 and "switch: no key stored (input ended)" in ended.stderr
