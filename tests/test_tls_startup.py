"""``switch run`` refusing to start on its TLS settings (security.md, "TLS and the admin
interface"): off loopback without TLS, a key file not of mode 0600, one file of the two,
a certificate or key that does not load. Each is one line naming the key or the file,
exit status 2, before the journal or any port is touched. And a config's TLS files are
found relative to the config file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from switch.app import SwitchApp
from switch.config import load_config
from switch.startup import preflight
from tests.certs import make_certificate
from tests.switch_process import assert_refused_in_one_line, demo_config, run_switch, write_config

pytestmark = pytest.mark.slow  # runs `switch run` as a process


def _refused(tmp_path: Path, settings: dict[str, Any], *expected: str) -> None:
    result = run_switch(["run", "--config", str(write_config(tmp_path, settings))])
    assert_refused_in_one_line(result, *expected)
    assert not (tmp_path / "journal.sqlite3").exists()  # refused before the journal
    assert not (tmp_path / "journal.sqlite3.lock").exists()


def _with_tls(settings: dict[str, Any], section: str, cert: Path, key: Path) -> dict[str, Any]:
    settings[section].update(tls_cert_file=str(cert), tls_key_file=str(key))
    return settings


@pytest.mark.parametrize("section", ["online", "admin"])
def test_off_loopback_without_tls_the_switch_refuses_to_start(tmp_path: Path, section: str) -> None:
    settings = demo_config(tmp_path)
    settings[section]["host"] = "0.0.0.0"
    if section == "admin":
        token = tmp_path / "admin-token"
        token.write_text("a-token-of-thirty-two-characters\n")
        token.chmod(0o600)
        settings["admin"]["token_file"] = str(token)
    _refused(
        tmp_path, settings, f"[{section}] host '0.0.0.0' is not loopback",
        "tls_cert_file and tls_key_file are required",
    )  # fmt: skip


@pytest.mark.parametrize("section", ["online", "admin"])
def test_a_key_file_not_of_mode_0600_stops_the_start(tmp_path: Path, section: str) -> None:
    cert, key = make_certificate(tmp_path)
    key.chmod(0o644)
    settings = _with_tls(demo_config(tmp_path), section, cert, key)
    _refused(tmp_path, settings, f"[{section}] tls_key_file {key} is of mode 0644", "0600")


@pytest.mark.parametrize("given", ["tls_cert_file", "tls_key_file"])
def test_one_of_the_two_files_alone_is_refused_naming_the_other(tmp_path: Path, given: str) -> None:
    cert, key = make_certificate(tmp_path)
    settings = demo_config(tmp_path)
    settings["online"][given] = str(cert if given == "tls_cert_file" else key)
    missing = "tls_key_file" if given == "tls_cert_file" else "tls_cert_file"
    _refused(tmp_path, settings, f"online.{missing}: {given} is set without it")


def test_a_certificate_or_key_that_does_not_load_is_refused_naming_it(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    missing = tmp_path / "no-such.crt"
    settings = _with_tls(demo_config(tmp_path), "online", missing, key)
    _refused(tmp_path, settings, f"[online] tls_cert_file {missing} cannot be read")
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    settings = _with_tls(demo_config(tmp_path), "online", garbage, key)
    _refused(tmp_path, settings, f"[online] tls_cert_file {garbage} is not a PEM certificate")
    _, other_key = make_certificate(tmp_path / "other")
    settings = _with_tls(demo_config(tmp_path), "admin", cert, other_key)
    _refused(tmp_path, settings, f"[admin] tls_key_file {other_key} is not the key of", str(cert))
    not_a_key = tmp_path / "not-a.key"
    shutil.copy(cert, not_a_key)  # a certificate where the key should be
    not_a_key.chmod(0o600)
    settings = _with_tls(demo_config(tmp_path), "online", cert, not_a_key)
    _refused(tmp_path, settings, f"[online] tls_key_file {not_a_key} is not a PEM private key")


def test_tls_files_are_relative_to_the_config_and_checked_by_config_check(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "etc"
    make_certificate(folder / "tls")
    settings = demo_config(tmp_path)
    settings["online"].update(host="0.0.0.0", tls_cert_file="tls/switch.crt",
                              tls_key_file="tls/switch.key")  # fmt: skip
    config = load_config(write_config(folder, settings))
    assert config.tls_files("online") == (folder / "tls/switch.crt", folder / "tls/switch.key")
    assert SwitchApp(config).online_tls is not None
    assert preflight(config).problems == []
    (folder / "tls/switch.key").chmod(0o640)
    problems = preflight(config).problems
    assert problems == [
        f"[online] tls_key_file {folder / 'tls/switch.key'} is of mode 0640: it must be 0600 "
        f"(readable by the switch's user only: chmod 600 {folder / 'tls/switch.key'})"
    ], problems
