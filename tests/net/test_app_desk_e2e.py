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


def desk_of(switch: SwitchApp) -> Any:
    assert switch.online is not None
    return switch.online.protocol.desk


def business_date(switch: SwitchApp) -> str:
    assert switch.switchboard is not None
    return switch.switchboard.business_date(switch.clock.stamp(switch.config.switch.utc_offset_h))


async def test_types_are_open_to_their_principal_only_and_fields_are_checked(
    nursery: trio.Nursery, tmp_path: Any
) -> None:
    switch = await start_switch(nursery, make_config())
    app = await App.connect(switch)
    shop = await App.connect(switch, OnlineKey.demo_merchant(QR_MERCHANT))
    result(await app.ask("wallet_open", "o-1", customer_id=CUSTOMER, **{"class": 2}))
    # A merchant's key for an app type, the app's for a merchant type: 03 (error).
    error(await shop.ask("wallet_balance", "p-1", customer_id=CUSTOMER), "03")
    error(await shop.ask("wallet_open", "p-2", customer_id="C2", **{"class": 1}), "03")
    error(await app.ask("qr_create", "p-3", merchant_id=QR_MERCHANT, amount=100), "03")
    # A merchant naming another merchant_id: 03 naming it.
    error(await shop.ask("qr_create", "p-4", merchant_id="SHOP01"), "03", "merchant_id")
    # Another app principal: 03 for any request naming a customer the first one opened.
    operator = operator_module(switch)
    other_key = operator.create_online_key("app:other", tmp_path / "other")
    other = await App.connect(switch, OnlineKey.from_file(other_key.owner, tmp_path / "other"))
    for type_, fields in (
        ("wallet_balance", {}),
        ("wallet_open", {"class": 3}),
        ("wallet_history", {}),
        ("wallet_bind_account", ACCOUNT),
        ("wallet_withdraw", {**ACCOUNT, "amount": 100}),
        ("paycode_issue", {"funding": "wallet", "verification": "B"}),
    ):
        error(await other.ask(type_, f"x-{type_}", customer_id=CUSTOMER, **fields), "03")
    # The first app's wallet is untouched (class 2 still).
    balance = result(await app.ask("wallet_balance", "b-1", customer_id=CUSTOMER))
    assert balance["class"] == 2
    # Validation: error 30 naming the field, with the request's id; the connection stays.
    for request_id, type_, fields, field in (
        ("v-1", "wallet_open", {"customer_id": CUSTOMER, "class": 4}, "class"),
        ("v-2", "wallet_open", {"customer_id": "C 1", "class": 1}, "customer_id"),
        ("v-3", "wallet_open", {"customer_id": "C" * 33, "class": 1}, "customer_id"),
        ("v-4", "wallet_bind_account", {"customer_id": CUSTOMER, **ACCOUNT,
                                        "account_name": "Zhang, San"}, "account_name"),
        ("v-5", "wallet_bind_account", {"customer_id": CUSTOMER, **ACCOUNT,
                                        "bank_code": "10210009999"}, "bank_code"),
        ("v-6", "wallet_bind_account", {"customer_id": CUSTOMER, **ACCOUNT,
                                        "account": "1234567"}, "account"),
        ("v-7", "wallet_withdraw", {"customer_id": CUSTOMER, **ACCOUNT, "amount": 0}, "amount"),
        ("v-8", "wallet_withdraw", {"customer_id": CUSTOMER, **ACCOUNT,
                                    "amount": 10**12}, "amount"),
        ("v-9", "wallet_history", {"customer_id": CUSTOMER, "limit": 101}, "limit"),
        ("v-10", "wallet_history", {"customer_id": CUSTOMER, "cursor": "x" * 65}, "cursor"),
        ("v-11", "paycode_issue", {"customer_id": CUSTOMER, "funding": "cash",
                                   "verification": "B"}, "funding"),
        ("v-12", "paycode_issue", {"customer_id": CUSTOMER, "funding": "wallet",
                                   "verification": "D"}, "verification"),
        ("v-13", "paycode_issue", {"customer_id": CUSTOMER, "funding": "wallet",
                                   "verification": "B", "instalments": 3}, "instalments"),
        ("v-14", "wallet_balance", {"customer_id": CUSTOMER, "colour": "red"}, None),
        ("v-15", "wallet_balance", {"customer_id": CUSTOMER, "memo": "card 6222021234567890128"},
         "memo"),
    ):  # fmt: skip
        answer = error(await app.ask(type_, request_id, **fields), "30", field)
        assert answer["id"] == request_id
    for request_id, fields, field in (
        ("q-1", {"merchant_id": QR_MERCHANT, "expires_s": 60}, "expires_s"),
        ("q-2", {"merchant_id": QR_MERCHANT, "amount": 100, "expires_s": 29}, "expires_s"),
        ("q-3", {"merchant_id": QR_MERCHANT, "amount": 100, "expires_s": 3601}, "expires_s"),
        ("q-4", {"merchant_id": QR_MERCHANT, "order_id": "X" * 26}, "order_id"),
    ):
        error(await shop.ask("qr_create", request_id, **fields), "30", field)
    error(await shop.ask("qr_status", "q-5", merchant_id=QR_MERCHANT, qr_id="short"), "30", "qr_id")
    # A merchant's id is one space across its card requests and its desk requests.
    from tests.net.helpers import PAN_ICBC

    card = {"pan": PAN_ICBC, "expiry": "2812"}
    bought = result(await shop.ask("purchase", "dup-1", merchant_id=QR_MERCHANT, amount=100,
                                   currency="CNY", card=card))  # fmt: skip
    assert bought["approved"]
    error(await shop.ask("qr_create", "dup-1", merchant_id=QR_MERCHANT, amount=100), "94")


def operator_module(switch: SwitchApp) -> Any:
    from tests.net.test_online_auth import operator_module as module

    return module(switch)


async def test_bound_accounts(nursery: trio.Nursery, engine_config: SwitchConfig) -> None:
    switch = await start_switch(nursery, engine_config)
    app = await App.connect(switch)
    result(await app.ask("wallet_bind_account", "n-0", customer_id=CUSTOMER, **ACCOUNT), "14")
    result(await app.ask("wallet_open", "o-1", customer_id=CUSTOMER, **{"class": 2}))
    accounts = [
        {"account": f"62220210001111{n:05d}", "account_name": f"Zhang San {n}",
         "bank_code": "102100099996"}
        for n in range(6)
    ]  # fmt: skip
    for n, account in enumerate(accounts[:5]):
        bound = result(await app.ask("wallet_bind_account", f"n-{n + 1}", customer_id=CUSTOMER,
                                     **account))  # fmt: skip
        assert bound["accounts"] == accounts[: n + 1]
    # One already bound: unchanged (its name as first bound); a sixth: 12.
    again = {**accounts[0], "account_name": "Other Name"}
    bound = result(await app.ask("wallet_bind_account", "n-6", customer_id=CUSTOMER, **again))
    assert bound["accounts"] == accounts[:5]
    sixth = result(
        await app.ask("wallet_bind_account", "n-7", customer_id=CUSTOMER, **accounts[5]), "12"
    )
    assert "accounts" not in sixth
    # Unbinding: one not bound 14; one bound leaves the others.
    unbind = {"account": accounts[5]["account"], "bank_code": "102100099996"}
    result(await app.ask("wallet_unbind_account", "u-1", customer_id=CUSTOMER, **unbind), "14")
    unbind = {"account": accounts[2]["account"], "bank_code": "102100099996"}
    left = result(await app.ask("wallet_unbind_account", "u-2", customer_id=CUSTOMER, **unbind))
    assert left["accounts"] == accounts[:2] + accounts[3:5]
    # The same unbind again under its id: its kept result, not 14.
    repeat = result(await app.ask("wallet_unbind_account", "u-2", customer_id=CUSTOMER, **unbind))
    assert repeat == left
    # A refusal that changed nothing is not kept: the same id may be sent again.
    now_free = result(
        await app.ask("wallet_bind_account", "n-7", customer_id=CUSTOMER, **accounts[5])
    )
    assert now_free["accounts"][-1] == accounts[5]


async def test_withdrawal_debits_once_and_makes_its_files_row(
    nursery: trio.Nursery, engine_config: SwitchConfig
) -> None:
    switch = await start_switch(nursery, engine_config)
    app = await App.connect(switch)
    store = store_of(switch)
    result(await app.ask("wallet_open", "o-1", customer_id=CUSTOMER, **{"class": 2}))
    await credit(switch, 50_000)
    result(await app.ask("wallet_bind_account", "n-1", customer_id=CUSTOMER, **ACCOUNT))
    day = business_date(switch)
    ask = {"customer_id": CUSTOMER, "amount": 10_000, **ACCOUNT}
    await app.client.send_raw(msgspec.msgpack.encode({"type": "wallet_withdraw", "id": "w-1",
                                                      **ask}))  # fmt: skip
    with trio.fail_after(10):
        first_raw = await app.client.receive_raw()
    first = result(msgspec.msgpack.decode(first_raw))
    assert len(first["rrn"]) == 12 and first["rrn"].isdigit()
    expected_value_date = (
        __import__("datetime").date.fromisoformat(day) + __import__("datetime").timedelta(days=1)
    ).isoformat()
    assert {k: first[k] for k in ("settlement_date", "value_date", "balance_after")} == {
        "settlement_date": day, "value_date": expected_value_date, "balance_after": 40_000,
    }  # fmt: skip
    # The same request again, on another connection: the same bytes, debited once.
    other = await App.connect(switch)
    await other.client.send_raw(msgspec.msgpack.encode({"type": "wallet_withdraw", "id": "w-1",
                                                        **ask}))  # fmt: skip
    with trio.fail_after(10):
        assert await other.client.receive_raw() == first_raw
    # The same id with other content: 94.
    error(await app.ask("wallet_withdraw", "w-1", **{**ask, "amount": 10_001}), "94")
    wallet = await in_store(switch, store.account, ledger.wallet_account(CUSTOMER))
    assert (wallet.balances.balance, wallet.balances.debits_pending) == (40_000, 0)
    payable = await in_store(switch, store.account, "withdrawals_payable")
    assert payable.balances.balance == 10_000
    # Checks in wallet.md's order, each with its code; declines carry RRN and date too.
    for request_id, fields, code in (
        ("w-2", {**ask, "account": "6222021000111199999"}, "14"),
        ("w-3", {**ask, "account_name": "李四"}, "14"),
        ("w-4", {**ask, "amount": 40_001}, "51"),
        ("w-5", {**ask, "customer_id": "C-NONE"}, "14"),
    ):
        declined = result(await app.ask("wallet_withdraw", request_id, **fields), code)
        assert declined["settlement_date"] == day and len(declined["rrn"]) == 12
        assert "balance_after" not in declined and "value_date" not in declined
    # Class I: ¥1,000 since opening, withdrawals counted.
    result(await app.ask("wallet_open", "o-2", customer_id="C2", **{"class": 1}))
    await credit(switch, 150_000, "C2")
    result(await app.ask("wallet_bind_account", "n-2", customer_id="C2", **ACCOUNT))
    two = {**ask, "customer_id": "C2"}
    result(await app.ask("wallet_withdraw", "w-6", **{**two, "amount": 60_000}))
    limited = result(await app.ask("wallet_withdraw", "w-7", **{**two, "amount": 40_001}), "61")
    assert "class" in limited["message"]
    result(await app.ask("wallet_withdraw", "w-8", **{**two, "amount": 40_000}))
    # The business date's withdrawals: the approved ones, as their file's rows.
    lines = await in_store(switch, store.withdrawals, day)
    assert [(line.rrn, line.customer_id, line.amount) for line in lines] == sorted(
        [(first["rrn"], CUSTOMER, 10_000)]
        + [(line.rrn, "C2", line.amount) for line in lines if line.customer_id == "C2"]
    )
    assert sorted(line.amount for line in lines) == [10_000, 40_000, 60_000]
    # The wallet's history shows it, newest first.
    history = result(await app.ask("wallet_history", "h-1", customer_id=CUSTOMER))
    assert history["items"][0] == {
        "time": history["items"][0]["time"], "kind": "withdraw", "amount": -10_000,
        "balance_after": 40_000, "rrn": first["rrn"],
    }  # fmt: skip
    assert history["items"][1]["kind"] == "topup" and history["next"] is None


async def test_history_pages(nursery: trio.Nursery) -> None:
    switch = await start_switch(nursery, make_config())
    app = await App.connect(switch)
    result(await app.ask("wallet_history", "h-0", customer_id=CUSTOMER), "14")
    result(await app.ask("wallet_open", "o-1", customer_id=CUSTOMER, **{"class": 3}))
    empty = result(await app.ask("wallet_history", "h-1", customer_id=CUSTOMER))
    assert (empty["items"], empty["next"]) == ([], None)
    for amount in (100, 200, 300, 400, 500):
        await credit(switch, amount)
    first = result(await app.ask("wallet_history", "h-2", customer_id=CUSTOMER, limit=2))
    assert [item["amount"] for item in first["items"]] == [500, 400]
    assert [item["balance_after"] for item in first["items"]] == [1500, 1000]
    assert first["items"][0]["time"].endswith("+08:00") and first["next"]
    second = result(await app.ask("wallet_history", "h-3", customer_id=CUSTOMER, limit=2,
                                  cursor=first["next"]))  # fmt: skip
    assert [item["amount"] for item in second["items"]] == [300, 200]
    last = result(await app.ask("wallet_history", "h-4", customer_id=CUSTOMER, limit=2,
                                cursor=second["next"]))  # fmt: skip
    assert [item["amount"] for item in last["items"]] == [100] and last["next"] is None
    assert all(set(item) == {"time", "kind", "amount", "balance_after", "rrn"}
               for item in first["items"] + last["items"])  # fmt: skip
    # A read is answered from the current state each time: its id is not kept.
    await credit(switch, 600)
    again = result(await app.ask("wallet_history", "h-2", customer_id=CUSTOMER, limit=2))
    assert [item["amount"] for item in again["items"]] == [600, 500]
    error(await app.ask("wallet_history", "h-5", customer_id=CUSTOMER, cursor="abc"), "30",
          "cursor")  # fmt: skip


async def test_payment_codes(nursery: trio.Nursery, engine_config: SwitchConfig) -> None:
    switch = await start_switch(nursery, engine_config)
    app = await App.connect(switch)
    store = store_of(switch)
    ask = {"customer_id": CUSTOMER, "funding": "wallet", "verification": "B"}
    result(await app.ask("paycode_issue", "c-0", **ask), "14")
    result(await app.ask("wallet_open", "o-1", customer_id=CUSTOMER, **{"class": 2}))
    before = time.time()
    issued = result(await app.ask("paycode_issue", "c-1", **ask))
    code = issued["paycode"]
    assert len(code) == 19 and code.startswith("88") and issued["funding"] == "wallet"
    from switch.core.paycode import well_formed

    assert well_formed(code, "88")
    expires = __import__("datetime").datetime.fromisoformat(issued["expires"])
    assert before + 59 <= expires.timestamp() <= time.time() + 61
    assert issued["expires"].endswith("+08:00")
    # A repeat of the id: the same code, not a second one.
    assert result(await app.ask("paycode_issue", "c-1", **ask)) == issued
    taken = await in_store(switch, store.take_paycode, code, "test", time.time(),
                           switch.config.wallet.paycodes())  # fmt: skip
    assert taken.response_code == "00" and taken.paycode.verification == "B"
    # Credit: credit.md's account (14), not frozen (62).
    on_credit = {**ask, "funding": "credit"}
    result(await app.ask("paycode_issue", "c-2", **on_credit), "14")
    import datetime

    await in_store(switch, lambda: store.credit_open(  # type: ignore[attr-defined]
        CUSTOMER, "app:wallet", 500_000, statement_day=1, grace_days=9,
        business_date=datetime.date.today(), at=time.time()))  # fmt: skip
    credit_code = result(await app.ask("paycode_issue", "c-3", **on_credit))
    assert credit_code["funding"] == "credit" and credit_code["paycode"] != code
    await in_store(switch, lambda: store.credit_freeze(  # type: ignore[attr-defined]
        CUSTOMER, True, "app", time.time()))  # fmt: skip
    result(await app.ask("paycode_issue", "c-4", **on_credit), "62")


SAMPLE_MERCHANT = "898110054110001"
SAMPLE_DYNAMIC = (
    "00020101021226590016CN.COM.CHINABANK01158981100541100010216K7Q2M9X4D8P3A6TB52045411"
    "5303156540588.005802CN5907JD Mart6007BEIJING62180514ORD2026120700164230002ZH0113"
    "京东便利店 JD Mart6304C028"
)
SAMPLE_STATIC = (
    "00020101021126590016CN.COM.CHINABANK01158981100541100010216S5N8W2R6C4J9E3HL52045411"
    "5303156"
    "5802CN5907JD Mart6007BEIJING64230002ZH0113京东便利店 JD Mart63048A19"
)


def as_issued(sample: str, sample_qr_id: str, qr_id: str) -> str:
    """wallet.md's sample payload with another (random) ``qr_id``, its CRC made again."""
    from switch.wire.emvqr import crc16

    body = sample[:-4].replace(sample_qr_id, qr_id)
    return body + f"{crc16(body.encode()):04X}"


def qr_config(tmp_path: Any, **sections: Any) -> SwitchConfig:
    merchants = tmp_path / "merchants.csv"
    rows = REPO_MERCHANTS.read_text(encoding="utf-8").rstrip("\n") + "\n"
    if f"\n{SAMPLE_MERCHANT}," not in rows:  # the demo's file lists it (wallet.md's sample)
        rows += f"{SAMPLE_MERCHANT},京东便利店 JD Mart,5411,38,0,2600,6222021000000000035\n"
    merchants.write_text(rows, encoding="utf-8")  # fmt: skip
    return make_config(settlement={"merchants_file": str(merchants)}, **sections)


from pathlib import Path  # noqa: E402

REPO_MERCHANTS = Path(__file__).resolve().parents[2] / "conf" / "merchants.csv"


@pytest.fixture(params=["sqlite", "postgresql"])
def qr_engine_config(request: pytest.FixtureRequest, tmp_path: Any) -> SwitchConfig:
    if request.param == "postgresql":
        dsn = request.getfixturevalue("postgres_dsn")
        return qr_config(tmp_path, journal={"backend": "postgresql", "dsn": dsn})
    return qr_config(tmp_path)


async def test_qr_codes_are_created_as_the_samples_and_read_back(
    nursery: trio.Nursery, qr_engine_config: SwitchConfig
) -> None:
    switch = await start_switch(nursery, qr_engine_config)
    shop = await App.connect(switch, OnlineKey.demo_merchant(SAMPLE_MERCHANT))
    before = time.time()
    dynamic = result(await shop.ask("qr_create", "qr-1", merchant_id=SAMPLE_MERCHANT,
                                    amount=8800, order_id="ORD20261207001"))  # fmt: skip
    qr_id = dynamic["qr_id"]
    assert len(qr_id) == 16 and qr_id.isalnum() and qr_id.upper() == qr_id
    assert dynamic["qr"] == as_issued(SAMPLE_DYNAMIC, "K7Q2M9X4D8P3A6TB", qr_id)
    assert dynamic["kind"] == "dynamic" and dynamic["order_id"] == "ORD20261207001"
    expires = __import__("datetime").datetime.fromisoformat(dynamic["expires"]).timestamp()
    assert before + 299 <= expires <= time.time() + 301  # [wallet] qr_expires_s
    static = result(await shop.ask("qr_create", "qr-2", merchant_id=SAMPLE_MERCHANT))
    assert static["qr"] == as_issued(SAMPLE_STATIC, "S5N8W2R6C4J9E3HL", static["qr_id"])
    assert static["kind"] == "static" and "expires" not in static
    # A repeat of qr_create's id: the same QR, not a second one.
    assert result(await shop.ask("qr_create", "qr-2", merchant_id=SAMPLE_MERCHANT)) == static
    short = result(await shop.ask("qr_create", "qr-3", merchant_id=SAMPLE_MERCHANT, amount=1,
                                  expires_s=30, currency="CNY"))  # fmt: skip
    # qr_status: the state as now, nothing kept.
    status = result(await shop.ask("qr_status", "s-1", merchant_id=SAMPLE_MERCHANT, qr_id=qr_id))
    assert {k: status[k] for k in ("qr_id", "kind", "state", "amount", "expires", "payments")} == {
        "qr_id": qr_id, "kind": "dynamic", "state": "open", "amount": 8800,
        "expires": dynamic["expires"], "payments": [],
    }  # fmt: skip
    assert "balance_after" not in status and "class_left" not in status
    status = result(await shop.ask("qr_status", "s-2", merchant_id=SAMPLE_MERCHANT,
                                   qr_id=static["qr_id"]))  # fmt: skip
    assert (status["kind"], status["state"], status["payments"]) == ("static", "open", [])
    assert "amount" not in status and "expires" not in status
    desk = desk_of(switch)
    desk.wall_clock = lambda: time.time() + 31  # past the short QR's 30 s
    status = result(await shop.ask("qr_status", "s-1", merchant_id=SAMPLE_MERCHANT,
                                   qr_id=short["qr_id"]))  # fmt: skip
    assert status["state"] == "expired"
    # Another merchant's QR, or none: 25.
    other = await App.connect(switch, OnlineKey.demo_merchant(QR_MERCHANT))
    result(await other.ask("qr_status", "s-3", merchant_id=QR_MERCHANT, qr_id=qr_id), "25")
    result(await other.ask("qr_status", "s-4", merchant_id=QR_MERCHANT,
                           qr_id="0000000000000000"), "25")  # fmt: skip
    # Currency other than CNY: 57; a merchant on the * profile gets no QR: 03.
    result(await shop.ask("qr_create", "qr-4", merchant_id=SAMPLE_MERCHANT, amount=100,
                          currency="USD"), "57")  # fmt: skip
    unlisted = await App.connect(switch, OnlineKey.demo_merchant("SHOP99"))
    error(await unlisted.ask("qr_create", "qr-5", merchant_id="SHOP99"), "03", "merchant_id")


async def test_the_close_writes_the_withdrawals_file_once(
    nursery: trio.Nursery, engine_config: SwitchConfig
) -> None:
    import os
    import stat

    from switch.net.withdrawals import WithdrawalsFiles

    switch = await start_switch(nursery, engine_config)
    app = await App.connect(switch)
    store = store_of(switch)
    result(await app.ask("wallet_open", "o-1", customer_id=CUSTOMER, **{"class": 2}))
    await credit(switch, 50_000)
    result(await app.ask("wallet_bind_account", "n-1", customer_id=CUSTOMER, **ACCOUNT))
    ask = {"customer_id": CUSTOMER, **ACCOUNT}
    first = result(await app.ask("wallet_withdraw", "w-1", amount=10_000, **ask))
    second = result(await app.ask("wallet_withdraw", "w-2", amount=2_500, **ask))
    result(await app.ask("wallet_withdraw", "w-3", amount=99_999, **ask), "51")
    day = first["settlement_date"]
    assert switch.settlement is not None
    closed = await switch.settlement.close_now()
    assert closed.business_date.isoformat() == day
    path = switch.config.settlement_out_dir() / f"withdrawals-{day.replace('-', '')}.csv"
    value_date = first["value_date"]
    rows = sorted([(first["rrn"], 10_000), (second["rrn"], 2_500)])
    expected = (
        "business_date,value_date,rrn,customer_id,bank_code,account,account_name,amount_fen\n"
        + "".join(f"{day},{value_date},{rrn},{CUSTOMER},102100099996,6222021000111133335,"
                  f"张三,{amount}\n" for rrn, amount in rows)
    ).encode()  # fmt: skip
    assert path.read_bytes() == expected
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    payable = await in_store(switch, store.account, "withdrawals_payable")
    payouts = await in_store(switch, store.account, "payouts")
    assert (payable.balances.balance, payouts.balances.balance) == (0, 12_500)
    # Written again: the same bytes, nothing posted twice.
    again = WithdrawalsFiles(store, switch.config.settlement_out_dir(), time.time)
    assert await again.close(day) == path and path.read_bytes() == expected
    payouts = await in_store(switch, store.account, "payouts")
    assert payouts.balances.balance == 12_500
    # A date without withdrawals has its file too: the header alone.
    empty = await again.close(first["value_date"])
    assert empty is not None and empty.read_bytes() == expected.split(b"\n")[0] + b"\n"


async def test_a_result_is_kept_with_its_change_or_neither_and_repeats_wait_for_the_first(
    nursery: trio.Nursery, engine_config: SwitchConfig
) -> None:
    import threading

    switch = await start_switch(nursery, engine_config)
    app = await App.connect(switch)
    store = store_of(switch)
    result(await app.ask("wallet_open", "o-1", customer_id=CUSTOMER, **{"class": 2}))
    await credit(switch, 50_000)
    result(await app.ask("wallet_bind_account", "n-1", customer_id=CUSTOMER, **ACCOUNT))
    ask = {"customer_id": CUSTOMER, "amount": 10_000, **ACCOUNT}
    engine_error = type(store).errors[0]  # type: ignore[attr-defined]

    def fail(name: str) -> None:
        if name == "desk_kept":
            raise engine_error("injected: the commit fails")

    # The store fails at the commit: the debit and the kept result roll back together.
    store.fault = fail
    result(await app.ask("wallet_withdraw", "w-1", **ask), "91")
    store.fault = None
    wallet = await in_store(switch, store.account, ledger.wallet_account(CUSTOMER))
    assert (wallet.balances.balance, wallet.balances.debits_pending) == (50_000, 0)
    # Sent again, it is checked anew and debits once.
    done = result(await app.ask("wallet_withdraw", "w-1", **ask))
    assert done["balance_after"] == 40_000
    # A repeat that comes while its first is in flight waits for the first's result.
    release = threading.Event()

    def hold(name: str) -> None:
        if name == "desk_kept":
            release.wait(10)

    store.fault = hold
    second = await App.connect(switch)
    third = await App.connect(switch)
    frame = msgspec.msgpack.encode({"type": "wallet_withdraw", "id": "w-2", **ask})
    await app.client.send_raw(frame)
    desk = desk_of(switch)
    with trio.fail_after(10):
        while desk.statistics()["in_flight"] != 1:
            await trio.sleep(0.01)
    await second.client.send_raw(frame)
    with trio.fail_after(10):
        while desk.statistics()["repeats_waiting"] != 1:
            await trio.sleep(0.01)
    # Different content under the id in flight: 94 at once.
    error(await third.ask("wallet_withdraw", "w-2", **{**ask, "amount": 1}), "94")
    release.set()
    with trio.fail_after(10):
        first_raw = await app.client.receive_raw()
        second_raw = await second.client.receive_raw()
    store.fault = None
    assert first_raw == second_raw and result(msgspec.msgpack.decode(first_raw))
    wallet = await in_store(switch, store.account, ledger.wallet_account(CUSTOMER))
    assert wallet.balances.balance == 30_000


async def test_a_withdrawals_class_limit_comes_before_the_balance(
    nursery: trio.Nursery,
) -> None:
    """wallet.md's order after the account (14): the class limit (61), then the balance;
    risk.md's rules, between the two, are tests/net/test_risk_wallet_credit_e2e.py's."""
    switch = await start_switch(nursery, make_config())
    app = await App.connect(switch)
    result(await app.ask("wallet_open", "o-1", customer_id=CUSTOMER, **{"class": 1}))
    await credit(switch, 150_000)
    result(await app.ask("wallet_bind_account", "n-1", customer_id=CUSTOMER, **ACCOUNT))
    ask = {"customer_id": CUSTOMER, **ACCOUNT}
    other = {**ask, "account": "6222021000111199999"}
    result(await app.ask("wallet_withdraw", "w-1", amount=200_000, **other), "14")
    result(await app.ask("wallet_withdraw", "w-3", amount=10_000, **ask))
    result(await app.ask("wallet_withdraw", "w-4", amount=90_001, **ask), "61")


async def test_a_repeat_after_a_restart_gets_the_kept_result(
    nursery: trio.Nursery, engine_config: SwitchConfig
) -> None:
    ask = {"customer_id": CUSTOMER, "amount": 10_000, **ACCOUNT}
    frame = msgspec.msgpack.encode({"type": "wallet_withdraw", "id": "w-1", **ask})
    async with trio.open_nursery() as first_life:
        switch = await start_switch(first_life, engine_config)
        app = await App.connect(switch)
        result(await app.ask("wallet_open", "o-1", customer_id=CUSTOMER, **{"class": 2}))
        await credit(switch, 50_000)
        result(await app.ask("wallet_bind_account", "n-1", customer_id=CUSTOMER, **ACCOUNT))
        await app.client.send_raw(frame)
        with trio.fail_after(10):
            first = await app.client.receive_raw()
        await app.client.aclose()
        switch.shutdown()
    switch = await start_switch(nursery, engine_config)
    app = await App.connect(switch)
    await app.client.send_raw(frame)
    with trio.fail_after(10):
        assert await app.client.receive_raw() == first
    balance = result(await app.ask("wallet_balance", "b-1", customer_id=CUSTOMER))
    assert balance["balance"] == 40_000
