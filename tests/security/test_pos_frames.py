"""security.md's POS samples to the byte, through the switch's POS channel: the
sign-on's 0810 with its working keys, the sale's MAC and PIN (3des and sm4), its
approval's MAC, and the PIN as the bank gets it (translated under the link's ZPK)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import trio

from switch.core.clock import BusinessClock
from switch.core.model import Origin, Outcome, Request, Sale, SignOn
from switch.core.stats import TransactionStats
from switch.core.terminal_keys import TerminalKeys
from switch.net.pos import PosProtocol, PosWork
from switch.security.port import TerminalProfile
from switch.security.software import SoftwareSecurityModule
from tests.net.helpers import POS_CODEC
from tests.security import vectors as v
from tests.security.helpers import ScriptedRandom, load, new_store

MERCHANT = "898310048990001"
UTC8 = timezone(timedelta(hours=8))


class SampleSwitchboard:
    """What the samples' switch answered: the sign-on's RRN and batch, the sale's
    approval (pos-cup.md's)."""

    stats = TransactionStats()

    def network_management(self, request: SignOn, stamp: object, origin: object) -> Outcome:
        return Outcome(code="00", rrn="532614000122", batch=f"{int(request.batch) + 1:06d}")

    def check_merchant(self, merchant_id: str) -> None:
        pass

    def business_date(self, stamp: object) -> str:
        return "2025-11-22"

    async def process(self, request: Request, stamp: object, origin: object) -> Outcome:
        assert isinstance(request, Sale)
        return Outcome(
            code="00", rrn="532614000123", auth_code="A1B2C3", settlement_date="2025-11-22"
        )


def protocol_at(module: SoftwareSecurityModule, when: datetime) -> PosProtocol:
    clock = BusinessClock.simulated(when, monotonic=lambda: 0.0)
    return PosProtocol(
        POS_CODEC,
        SampleSwitchboard(),  # type: ignore[arg-type]
        acquirer_id="48990000",
        utc_offset_h=8,
        clock=clock,
        keys=TerminalKeys(module, lifetime_s=24 * 3600),
    )


def run(function: Any, *args: Any) -> Any:
    async def main() -> Any:
        result = function(*args)
        if hasattr(result, "__await__"):
            result = await result
        return result

    return trio.run(main)


def module_3des(tmp_path: Path) -> SoftwareSecurityModule:
    module = new_store(tmp_path, ScriptedRandom(v.PIK_3DES, v.MAK_DES, v.ZPK, v.ZAK))
    load(module, "tmk", "POS00001", "3des", v.TMK_3DES, TerminalProfile(MERCHANT))
    load(module, "zmk", "icbc", "3des", v.ZMK)
    return module


def test_sign_on_and_sale_are_the_published_frames(tmp_path: Path) -> None:
    module = module_3des(tmp_path)
    protocol = protocol_at(module, datetime(2025, 11, 22, 14, 29, 50, tzinfo=UTC8))
    answer = run(protocol.accept, v.SIGN_ON_0800[2:], Origin("pos", 1, 0.0))
    assert answer == v.SIGN_ON_0810[2:]

    protocol.clock = BusinessClock.simulated(
        datetime(2025, 11, 22, 14, 30, 15, tzinfo=UTC8), monotonic=lambda: 0.0
    )
    work = run(protocol.accept, v.SALE_0200[2:], Origin("pos", 1, 25.0))
    assert isinstance(work, PosWork) and isinstance(work.request, Sale)
    card = work.request.card
    assert card.pin_block == bytes.fromhex("5C01552BB3E298D9") and card.pin_key is not None
    reply = run(protocol.respond, work)
    assert reply.payload == v.SALE_0210[2:]  # 64 = "B089F3AD"

    # The PIN as it leaves for the bank: format 0 under the link's ZPK (security.md).
    bank = module.make_bank_keys("zmk:icbc", "icbc.0")
    assert module.translate_pin(card.pin_key, bank.zpk, card.pin_block, card.pan) == (
        bytes.fromhex("3D6B0F925E99FB7A")
    )


def test_the_sm4_sale_is_the_published_frame(tmp_path: Path) -> None:
    module = new_store(tmp_path, ScriptedRandom(v.PIK_SM4, v.MAK_SM4, v.ZPK, v.ZAK))
    load(module, "tmk", "POS00001", "sm4", v.TMK_SM4, TerminalProfile(MERCHANT, require_sm4=True))
    load(module, "zmk", "icbc", "3des", v.ZMK)
    protocol = protocol_at(module, datetime(2025, 11, 22, 14, 29, 50, tzinfo=UTC8))
    sign_on = bytearray(v.SIGN_ON_0800[2:])
    assert sign_on[-2:] == b"\x00\x30"
    sign_on[-2:] = b"\x00\x50"  # 60.3 = 005
    answer = run(protocol.accept, bytes(sign_on), Origin("pos", 1, 0.0))
    assert answer.endswith(b"\x00\x40" + v.FIELD_62_005)

    work = run(protocol.accept, v.SALE_0200_SM4[2:], Origin("pos", 1, 1.0))
    assert isinstance(work, PosWork) and isinstance(work.request, Sale)
    card = work.request.card
    assert card.pin_block == bytes.fromhex("4BE06BDCB05FB15558D963AC0824EC8C")
    assert card.pin_key is not None
    bank = module.make_bank_keys("zmk:icbc", "icbc.0")
    assert module.translate_pin(card.pin_key, bank.zpk, card.pin_block, card.pan) == (
        bytes.fromhex("3D6B0F925E99FB7A")
    )


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda frame: frame.replace(b"POS00001", b"POS00009"), "97"),
        (lambda frame: frame.replace(b"898310048990001", b"898310048990002"), "03"),
        (lambda frame: frame[:-1] + b"\x40", "40"),  # 60.3 = 004
        (lambda frame: frame[:-2] + b"\x00\x10", "40"),  # 60.3 = 001, not allowed
    ],
)
def test_sign_on_refusals_carry_no_keys(tmp_path: Path, change: Any, code: str) -> None:
    module = module_3des(tmp_path)
    protocol = protocol_at(module, datetime(2025, 11, 22, 14, 29, 50, tzinfo=UTC8))
    answer = run(protocol.accept, change(v.SIGN_ON_0800[2:]), Origin("pos", 1, 0.0))
    response = POS_CODEC.decode(answer[11:])
    assert response.fields[39] == code
    assert 62 not in response.fields and 64 not in response.fields
