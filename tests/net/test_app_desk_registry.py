"""The app desk's registry: a type is registered once, under its Struct's tag, and never
under a name the card types' decoder takes first."""

from __future__ import annotations

from typing import Any

import pytest

from switch.core.app_desk import DeskType
from switch.net.app_desk import AppDesk
from switch.wire import app as wire


class Status(wire.MerchantRequest, frozen=True, kw_only=True, tag="status"):
    pass


def desk() -> AppDesk:
    ledger: Any = None  # never reached: registering touches no store
    return AppDesk(ledger, digest=bytes, matches=lambda a, b: a == b,
                   business_date=lambda stamp: "", utc_offset_h=8, stats=None)  # fmt: skip


async def handler(message: Any, call: Any) -> wire.DeskResult:
    raise AssertionError("not called")


def test_registering() -> None:
    registry = desk()
    row = DeskType(name="wallet_balance", request=wire.WalletBalance, principal="app", read=True)
    registry.register(row, handler)
    assert registry.types == {"wallet_balance"}
    with pytest.raises(ValueError, match="twice"):
        registry.register(row, handler)
    with pytest.raises(ValueError, match="tagged"):
        registry.register(DeskType(name="wallet_open", request=wire.WalletBalance,
                                   principal="app"), handler)  # fmt: skip
    with pytest.raises(ValueError, match="card type"):
        registry.register(DeskType(name="status", request=Status, principal="merchant"), handler)
