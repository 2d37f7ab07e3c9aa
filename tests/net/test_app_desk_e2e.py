"""The app desk over real sockets (wallet.md's "Online requests" of the ``app:``
principal and the merchants' QR codes): signed requests to the running switch, its
signed answers checked, the ledger store read back; on both engines where the store is
touched (SQLite: ledger.sqlite3 beside the journal; PostgreSQL: the journal's
database)."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest
import trio

from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.core import ledger
from switch.core.ledger import TransferKey, TransferSpec
from switch.net.clients import OnlineClient, OnlineKey
from switch.store.ledger_port import LedgerStore
from tests.conftest import make_config
from tests.net.helpers import start_switch

CUSTOMER = "C100000001"
QR_MERCHANT = "898310048990001"
ACCOUNT = {"account": "6222021000111133335", "account_name": "张三", "bank_code": "102100099996"}


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_config(request: pytest.FixtureRequest) -> SwitchConfig:
    if request.param == "postgresql":
        dsn = request.getfixturevalue("postgres_dsn")
        return make_config(journal={"backend": "postgresql", "dsn": dsn})
    return make_config()


class App:
    """A signed client of one principal, speaking MessagePack maps."""

    def __init__(self, client: OnlineClient) -> None:
        self.client = client

    @classmethod
    async def connect(cls, switch: SwitchApp, key: OnlineKey | None = None) -> App:
        client = await OnlineClient.connect(
            "127.0.0.1", switch.online_port, key=key or OnlineKey.demo_app()
        )
        return cls(client)

    async def ask(self, type_: str, id_: str, **fields: Any) -> dict[str, Any]:
        await self.client.send_raw(msgspec.msgpack.encode({"type": type_, "id": id_, **fields}))
        return await self.answer()

    async def answer(self) -> dict[str, Any]:
        with trio.fail_after(10):
            raw = await self.client.receive_raw()
        assert self.client.last_signed, raw
        answer: dict[str, Any] = msgspec.msgpack.decode(raw)
        return answer


def store_of(switch: SwitchApp) -> LedgerStore:
    assert switch._ledger is not None
    return switch._ledger.store


async def in_store(switch: SwitchApp, call: Any, *args: Any) -> Any:
    assert switch._ledger is not None
    return await switch._ledger.call(lambda: call(*args))


async def credit(switch: SwitchApp, amount: int, customer_id: str = CUSTOMER) -> None:
    """Credits a wallet as an approved top-up would (top-ups are not the desk's)."""
    spec = TransferSpec(
        key=TransferKey("test", f"topup-{customer_id}-{amount}", "topup"),
        debit="bank_clearing:icbc", credit=ledger.wallet_account(customer_id),
        amount=amount, kind="topup", rrn="634110000001",
    )  # fmt: skip
    await in_store(switch, store_of(switch).transfer, spec, time.time())


def result(answer: dict[str, Any], code: str = "00") -> dict[str, Any]:
    assert answer["type"] == "result", answer
    assert answer["code"] == code, answer
    assert answer["approved"] is (code == "00"), answer
    assert isinstance(answer["message"], str) and answer["message"]
    return answer


def error(answer: dict[str, Any], code: str, field: str | None = None) -> dict[str, Any]:
    assert answer["type"] == "error", answer
    assert answer["code"] == code, answer
    if field is not None:
        assert f"field {field}" in answer["message"] or f"$.{field}" in answer["message"], answer
    return answer


async def test_open_balance_and_class(nursery: trio.Nursery, engine_config: SwitchConfig) -> None:
    switch = await start_switch(nursery, engine_config)
    app = await App.connect(switch)
    # No wallet yet: 14 (a result).
    answer = result(await app.ask("wallet_balance", "b-0", customer_id=CUSTOMER), "14")
    assert set(answer) == {"type", "id", "code", "approved", "message"}
    opened = result(await app.ask("wallet_open", "o-1", customer_id=CUSTOMER, **{"class": 1}))
    today = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 8 * 3600))
    assert {k: opened[k] for k in ("id", "customer_id", "class", "balance", "opened")} == {
        "id": "o-1", "customer_id": CUSTOMER, "class": 1, "balance": 0, "opened": today,
    }  # fmt: skip
    await credit(switch, 50_000)
    balance = result(await app.ask("wallet_balance", "b-1", customer_id=CUSTOMER))
    assert {k: balance[k] for k in ("customer_id", "class", "balance", "class_left")} == {
        "customer_id": CUSTOMER, "class": 1, "balance": 50_000, "class_left": 100_000,
    }  # fmt: skip
    assert "opened" not in balance
    # wallet_open again sets the class and keeps the balance.
    again = result(await app.ask("wallet_open", "o-2", customer_id=CUSTOMER, **{"class": 2}))
    assert (again["class"], again["balance"]) == (2, 50_000)
    balance = result(await app.ask("wallet_balance", "b-2", customer_id=CUSTOMER))
    assert (balance["class"], balance["class_left"]) == (2, 10_000_000)
