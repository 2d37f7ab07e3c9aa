"""``switch online`` as a merchant's developer runs it against a running switch (real
processes): signed with the DEMO key, then with a key issued by ``switch keys online
new``, which ``switch keys online revoke`` stops at once."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import REPO
from tests.test_cli import _demo_config_on_free_ports, _start

pytestmark = pytest.mark.slow

MERCHANT = "898310048990001"


async def _switch(*args: str) -> tuple[int, str, str]:
    result = await trio.run_process(
        [sys.executable, "-m", "switch", *args],
        capture_stdout=True, capture_stderr=True, check=False, cwd=REPO,
    )  # fmt: skip
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def _online(config: Path, port: object, *args: str) -> dict[str, Any]:
    code, out, err = await _switch("online", *args, "--config", str(config), "--port", str(port))
    assert code == 0, out + err
    printed: dict[str, Any] = json.loads(out)
    return printed


async def test_switch_online_signs_with_the_demo_key_then_an_issued_one(tmp_path: Path) -> None:
    config = _demo_config_on_free_ports(tmp_path)
    store, lmk = tmp_path / "key-store.json", tmp_path / "lmk"
    text = config.read_text()
    text = text.replace('key_store = "../var/key-store.json"', f'key_store = "{store}"')
    text = text.replace('lmk_file = "../var/lmk"', f'lmk_file = "{lmk}"')
    config.write_text(text)
    switch = await _start(config)
    try:
        port = (await switch.wait_for_event("switch_started"))["online_port"]
        await switch.wait_for_event("link_signed_on", count=8)
        bought = await _online(config, port, "purchase", "--id", "cli-1", "--amount", "12.34",
                               "--cvv2", "123")  # fmt: skip
        assert (bought["type"], bought["code"], bought["approved"]) == ("result", "00", True)
        assert bought["id"] == "cli-1" and bought["signed"] is True
        # An operator issues the merchant a key; its developer signs with it.
        keys = ("--store", str(store), "--lmk-file", str(lmk))
        secret = str(tmp_path / "secret")
        code, out, err = await _switch(
            "keys", "online", "new", *keys, "--principal", f"merchant:{MERCHANT}", "--out", secret
        )
        assert code == 0, out + err
        key_id = f"m-{MERCHANT}-1"
        assert key_id in out and (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
        own = ("--key-id", key_id, "--secret-file", str(tmp_path / "secret"))
        status = await _online(config, port, "status", "--original-id", "cli-1", *own)
        assert (status["code"], status["approved"], status["signed"]) == ("00", True, True)
        # Revoked: the running switch refuses it from the next request on (unsigned A0).
        code, out, err = await _switch("keys", "online", "revoke", *keys, key_id)
        assert code == 0, out + err
        refused = await _online(config, port, "void", "--original-id", "cli-1", *own)
        assert (refused["type"], refused["code"], refused["message"]) == (
            "error", "A0", "unknown key",
        )  # fmt: skip
        assert refused["signed"] is False
        voided = await _online(config, port, "void", "--original-id", "cli-1")
        assert (voided["code"], voided["approved"], voided["signed"]) == ("00", True, True)
        # A key id without its secret is refused before anything is sent.
        code, _, err = await _switch("online", "status", "--original-id", "cli-1",
                                     "--key-id", key_id, "--config", str(config))  # fmt: skip
        assert code == 2 and "--secret-file" in err
    finally:
        switch.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await switch.read_to_end()
            assert await switch.process.wait() == 0


async def test_switch_online_sends_the_wallet_and_qr_types(tmp_path: Path) -> None:
    """``switch online send`` takes any type, its fields one by one, signed with the
    DEMO key of its principal: the app's for wallet.md's wallet types, the merchant's
    for ``qr_create``."""
    config = _demo_config_on_free_ports(tmp_path)
    switch = await _start(config)
    try:
        port = (await switch.wait_for_event("switch_started"))["online_port"]
        opened = await _online(config, port, "send", "wallet_open", "--id", "cli-o-1",
                               "--field", "customer_id=CLI0001", "--field", "class:=2")  # fmt: skip
        assert (opened["type"], opened["code"], opened["class"], opened["balance"]) == (
            "result", "00", 2, 0,
        )  # fmt: skip
        assert opened["signed"] is True
        balance = await _online(config, port, "send", "wallet_balance",
                                "--field", "customer_id=CLI0001")  # fmt: skip
        assert (balance["code"], balance["class_left"]) == ("00", 10_000_000)
        qr = await _online(config, port, "send", "qr_create", "--field", f"merchant_id={MERCHANT}",
                           "--field", "amount:=8800")  # fmt: skip
        assert (qr["code"], qr.get("kind")) == ("00", "dynamic"), qr
        assert qr["kind"] == "dynamic" and qr["qr"].startswith("000201")
        wrong = await _online(config, port, "send", "wallet_open",
                              "--field", "customer_id=CLI0001", "--field", "class:=9")  # fmt: skip
        assert (wrong["type"], wrong["code"]) == ("error", "30") and "class" in wrong["message"]
        code, _, err = await _switch("online", "send", "wallet_open", "--field", "oops",
                                     "--config", str(config))  # fmt: skip
        assert code == 2 and "NAME=TEXT" in err
    finally:
        switch.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await switch.read_to_end()
            assert await switch.process.wait() == 0
