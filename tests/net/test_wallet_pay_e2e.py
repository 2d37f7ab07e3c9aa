"""wallet.md's ``wallet_pay`` and ``wallet_topup``: the app principal's signed requests
over a real online connection, through the real switchboard onto the real ledger store
(SQLite and PostgreSQL), top-ups to the simulated bank (one that declines, one that
does not answer)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.core import ledger, wallet
from switch.core.ledger import TransferKey, TransferSpec
from switch.net.clients import OnlineClient, OnlineKey
from switch.store.ledger_port import LedgerStore, QrRecord
from switch.wire import emvqr
from switch.wire import online as wire
from tests.conftest import luhn_complete, make_config
from tests.net.helpers import (
    FAST_SAF,
    PAN_CMB,
    PAN_ICBC,
    PAN_NO_ROUTE,
    eventually,
    online_client,
    start_switch,
)

CUSTOMER = "C100000001"
QR_MERCHANT = "898110054110001"
QR_NAME = "京东便利店 JD Mart"
TOPUP_MERCHANT = "898310065400001"
WALLET = ledger.wallet_account(CUSTOMER)
MERCHANTS = (
    "merchant_id,name,mcc,mdr_bps,fee_min_fen,fee_cap_fen,account\n"
    "SHOP01,Online checkout,5311,55,1,0,6222021000000000027\n"
    f"{QR_MERCHANT},{QR_NAME},5411,38,0,2600,6222021000000000035\n"
    f"{TOPUP_MERCHANT},Wallet top-ups,6540,0,0,0,6222021000000000043\n"
    "*,Default profile,5999,60,0,0,DEMO-ACCOUNT\n"
)
PAN_CREDIT = luhn_complete("625808000000000001")  # CITIC co-branded credit
ROUTES = [
    {"prefix": "622202", "bank": "icbc", "card": "debit"},
    {"prefix": "622848", "bank": "abc", "card": "debit"},
    {"prefix": "622588", "bank": "cmb"},  # no `card`: credit
    {"prefix": "625808", "bank": "citic", "card": "credit"},
]


def wallet_config(tmp_path: Path, **sections: Any) -> SwitchConfig:
    path = tmp_path / "merchants.csv"
    path.write_text(MERCHANTS, encoding="utf-8")
    return make_config(settlement={"merchants_file": str(path)}, routes=ROUTES, **sections)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "postgresql":
        dsn = request.getfixturevalue("postgres_dsn")
        return {"journal": {"backend": "postgresql", "dsn": dsn}}
    return {}


def store_of(app: SwitchApp) -> LedgerStore:
    assert app._ledger is not None
    return app._ledger.store


async def in_store(app: SwitchApp, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    assert app._ledger is not None
    return await app._ledger._run(lambda: call(*args, **kwargs))


async def open_wallet(app: SwitchApp, funds: int = 0, *, wallet_class: int = 2) -> None:
    today = time.strftime("%Y-%m-%d")
    store = store_of(app)
    await in_store(app, store.open_wallet, CUSTOMER, "app:wallet", wallet_class, today,
                   time.time())  # fmt: skip
    if funds:
        spec = TransferSpec(
            key=TransferKey("test", f"fund-{funds}", "topup"), debit="bank_clearing:icbc",
            credit=WALLET, amount=funds, kind="topup",
        )  # fmt: skip
        await in_store(app, store.transfer, spec, time.time())


async def make_qr(
    app: SwitchApp,
    qr_id: str,
    *,
    amount: int | None = None,
    online_id: str | None = None,
    expires_in_s: float = 300,
    merchant_id: str = QR_MERCHANT,
) -> str:
    """A QR of the merchant, as ``qr_create`` records one; its payload."""
    payload = wallet.qr_payload(
        app.config.wallet, merchant_id=merchant_id, name=QR_NAME, mcc="5411", city=None,
        qr_id=qr_id, amount=amount,
    )  # fmt: skip
    now = time.time()
    record = QrRecord(
        qr_id=qr_id, merchant_id=merchant_id, kind="dynamic" if amount else "static",
        payload=payload, created_at=now, amount=amount, online_id=online_id,
        expires_at=now + expires_in_s if amount else None,
    )  # fmt: skip
    await in_store(app, store_of(app).create_qr, record)
    return payload


async def app_client(app: SwitchApp) -> OnlineClient:
    return await OnlineClient.connect("127.0.0.1", app.online_port, key=OnlineKey.demo_app())


async def ask(client: OnlineClient, request: wire.OnlineRequest) -> dict[str, Any]:
    await client.send(request)
    body = await client.receive_raw()
    answer: dict[str, Any] = msgspec.msgpack.decode(body)
    return answer


async def balances(app: SwitchApp, name: str) -> tuple[int, int]:
    view = await in_store(app, store_of(app).account, name)
    if view is None:
        return 0, 0
    return view.balances.balance, view.balances.available


async def verified(app: SwitchApp) -> None:
    assert await in_store(app, store_of(app).verify) == []
    assert await in_store(app, store_of(app).pending_transfers) == []


def pay(request_id: str, qr: str, **extra: Any) -> wire.WalletPay:
    fields: dict[str, Any] = {"customer_id": CUSTOMER, "funding": "wallet", "verification": "B"}
    fields.update(extra)
    return wire.WalletPay(id=request_id, qr=qr, **fields)


async def test_wallet_pay_of_a_dynamic_qr_as_wallet_md_answers(
    nursery: trio.Nursery, tmp_path: Path, engine: dict[str, Any]
) -> None:
    app = await start_switch(nursery, wallet_config(tmp_path, **engine))
    await open_wallet(app, 50_000)
    qr = await make_qr(app, "K7Q2M9X4D8P3A6TB", amount=8_800, online_id="qr-1")
    client = await app_client(app)
    body = pay("pay-20261207-0001", qr)
    answer = await ask(client, body)
    assert list(answer) == [
        "type", "id", "code", "approved", "rrn", "auth_code", "settlement_date", "amount",
        "merchant_id", "merchant_name", "qr_id", "funding", "balance_after", "message",
    ]  # fmt: skip
    assert answer["code"] == "00" and answer["approved"] is True
    assert (answer["amount"], answer["merchant_id"], answer["merchant_name"]) == (
        8_800, QR_MERCHANT, QR_NAME,
    )  # fmt: skip
    assert (answer["qr_id"], answer["funding"], answer["balance_after"]) == (
        "K7Q2M9X4D8P3A6TB", "wallet", 41_200,
    )  # fmt: skip
    assert len(answer["rrn"]) == 12 and len(answer["auth_code"]) == 6
    assert await balances(app, WALLET) == (41_200, 41_200)
    assert await balances(app, ledger.merchant_account(QR_MERCHANT)) == (8_800, 8_800)
    # Journaled, under its merchant, as an on-us payment.
    assert app.journal is not None
    record = await app.journal.transaction_by_rrn(answer["rrn"])
    assert record is not None
    assert (record.kind, record.bank, record.state, record.merchant_id, record.amount) == (
        "wallet_pay", "on-us", "approved", QR_MERCHANT, 8_800,
    )  # fmt: skip
    assert record.pan_masked == "" and CUSTOMER not in repr(record)
    # The QR is paid: its repeat by id is the same answer, byte for byte; another id 94.
    again = await ask(client, body)
    assert again == answer
    assert (await ask(client, pay("pay-2", qr)))["code"] == "94"
    # The same id with other content: error 94.
    other = await ask(client, pay("pay-20261207-0001", qr, verification="A"))
    assert (other["type"], other["code"]) == ("error", "94")
    assert await balances(app, WALLET) == (41_200, 41_200)
    status = await in_store(app, store_of(app).qr, "K7Q2M9X4D8P3A6TB")
    assert status.state == "paid"
    await verified(app)


async def test_wallet_pay_checks_in_wallet_md_order(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = wallet_config(tmp_path, wallet={"daily_b_fen": 30_000, "static_qr_daily_fen": 20_000})
    app = await start_switch(nursery, config)
    client = await app_client(app)
    static = await make_qr(app, "S5N8W2R6C4J9E3HL")
    # No wallet: 14 (before anything about the QR, even another network's).
    foreign = static.replace("CN.COM.CHINABANK", "CN.COM.OTHERBANK")
    foreign = foreign[:-4] + f"{emvqr.crc16(foreign[:-4].encode()):04X}"
    assert (await ask(client, pay("c-1", foreign, amount=100)))["code"] == "14"
    await open_wallet(app, 100_000)
    # The payload does not read (CRC wrong): error 30 naming qr.
    broken = static[:-4] + ("0000" if not static.endswith("0000") else "0001")
    error = await ask(client, pay("c-2", broken, amount=100))
    assert (error["type"], error["code"]) == ("error", "30") and "qr" in error["message"]
    # Another network's: 40; a merchant not listed under its own id: 03.
    assert (await ask(client, pay("c-3", foreign, amount=100)))["code"] == "40"
    unlisted = await make_qr(app, "U5N8W2R6C4J9E3HL", merchant_id="999999999999999")
    assert (await ask(client, pay("c-4", unlisted, amount=100)))["code"] == "03"
    # A QR id the merchant never issued, or not as issued: 14.
    forged = wallet.qr_payload(
        app.config.wallet, merchant_id=QR_MERCHANT, name=QR_NAME, mcc="5411", city=None,
        qr_id="ZZZZZZZZZZZZZZZZ",
    )  # fmt: skip
    assert (await ask(client, pay("c-5", forged, amount=100)))["code"] == "14"
    as_dynamic = wallet.qr_payload(
        app.config.wallet, merchant_id=QR_MERCHANT, name=QR_NAME, mcc="5411", city=None,
        qr_id="S5N8W2R6C4J9E3HL", amount=100,
    )  # fmt: skip
    assert (await ask(client, pay("c-6", as_dynamic)))["code"] == "14"
    # Dynamic: expired 54; static without an amount, dynamic with another: 13.
    expired = await make_qr(app, "E5N8W2R6C4J9E3HL", amount=500, expires_in_s=-1)
    assert (await ask(client, pay("c-7", expired)))["code"] == "54"
    assert (await ask(client, pay("c-8", static)))["code"] == "13"
    dynamic = await make_qr(app, "D5N8W2R6C4J9E3HL", amount=500)
    assert (await ask(client, pay("c-9", dynamic, amount=501)))["code"] == "13"
    # The daily caps (61): tier B's 30,000, then the static cap of 20,000.
    capped = await ask(client, pay("c-10", static, amount=30_001))
    assert capped["code"] == "61" and "tier B" in capped["message"]
    static_cap = await ask(client, pay("c-11", static, amount=20_001))
    assert static_cap["code"] == "61" and "static" in static_cap["message"]
    # Balance: 51 (tier A's cap is far); the QR stays open.
    big = await make_qr(app, "B5N8W2R6C4J9E3HL", amount=100_001)
    low = await ask(client, pay("c-12", big, verification="A"))
    assert low["code"] == "51" and "balance_after" not in low
    # The class limit (61) comes before the balance: class I's 100,000 since opening.
    await in_store(app, store_of(app).open_wallet, CUSTOMER, "app:wallet", 1,
                   time.strftime("%Y-%m-%d"), time.time())  # fmt: skip
    limited = await ask(client, pay("c-13", big, verification="A"))
    assert limited["code"] == "61" and "class" in limited["message"]
    paid = await ask(client, pay("c-14", dynamic, verification="A"))
    assert paid["code"] == "00" and paid["balance_after"] == 99_500
    assert await balances(app, WALLET) == (99_500, 99_500)
    # Credit funding is credit.md's: no credit account, 14, the QR left open.
    credit_qr = await make_qr(app, "R5N8W2R6C4J9E3HL", amount=300)
    credit = await ask(client, pay("c-16", credit_qr, funding="credit"))
    assert credit["code"] == "14" and "balance_after" not in credit
    assert (await in_store(app, store_of(app).qr, "R5N8W2R6C4J9E3HL")).state == "open"
    # A merchant's key may not send it: error 03.
    merchant = await online_client(app)
    refused = await merchant.request(pay("c-17", static, amount=100))
    assert (refused.code, type(refused)) == ("03", wire.Error)
    await verified(app)


def topup(request_id: str, amount: int, pan: str = PAN_ICBC, **extra: Any) -> wire.WalletTopup:
    card = wire.Card(pan=pan, expiry="2812")
    return wire.WalletTopup(id=request_id, customer_id=CUSTOMER, amount=amount, card=card,
                            **extra)  # fmt: skip


async def test_wallet_topup_is_a_card_sale_credited_only_when_approved(
    nursery: trio.Nursery, tmp_path: Path, engine: dict[str, Any]
) -> None:
    config = wallet_config(
        tmp_path, banks={"icbc": {"issuer_timeout_s": 0.3, "circuit_timeouts": 5}},
        saf=FAST_SAF, **engine,
    )  # fmt: skip
    app = await start_switch(nursery, config)
    client = await app_client(app)
    bank = app.simulators["icbc"]
    # No wallet: 14, nothing sent.
    assert (await ask(client, topup("t-0", 50_000)))["code"] == "14"
    await open_wallet(app)
    # No route: 92; not a debit card (a route saying credit, or saying nothing): 57.
    assert (await ask(client, topup("t-1", 50_000, PAN_NO_ROUTE)))["code"] == "92"
    assert (await ask(client, topup("t-2", 50_000, PAN_CREDIT)))["code"] == "57"
    assert (await ask(client, topup("t-3", 50_000, PAN_CMB)))["code"] == "57"
    assert bank.totals().approvals == 0
    # Approved by the bank: credited.
    body = topup("t-4", 50_000)
    approved = await ask(client, body)
    assert list(approved) == [
        "type", "id", "code", "approved", "rrn", "auth_code", "settlement_date",
        "balance_after", "message",
    ]  # fmt: skip
    assert (approved["code"], approved["balance_after"]) == ("00", 50_000)
    assert await balances(app, WALLET) == (50_000, 50_000)
    assert await balances(app, "bank_clearing:icbc") == (-50_000, -50_000)
    assert bank.totals().approvals == 1
    # Its repeat: the same answer, the bank sees it once, credited once.
    assert await ask(client, body) == approved
    assert bank.totals().approvals == 1
    assert await balances(app, WALLET) == (50_000, 50_000)
    # In the journal: a card sale of the top-up merchant to the card's bank.
    assert app.journal is not None
    record = await app.journal.transaction_by_rrn(approved["rrn"])
    assert record is not None
    assert (record.kind, record.bank, record.merchant_id, record.state) == (
        "wallet_topup", "icbc", TOPUP_MERCHANT, "approved",
    )  # fmt: skip
    # Declined by the bank (51): the bank's code, nothing credited.
    declined = await ask(client, topup("t-5", 10_051))
    assert declined["code"] == "51" and "balance_after" not in declined
    # The bank does not answer: 68, reversed at the bank, never credited.
    never = await ask(client, topup("t-6", 10_068))
    assert never["code"] == "68" and "balance_after" not in never
    await eventually(lambda: bank.totals().reversals + bank.totals().unmatched_reversals == 1)
    unanswered = await app.journal.transaction_by_rrn(never["rrn"])
    assert unanswered is not None and unanswered.reversed
    assert await balances(app, WALLET) == (50_000, 50_000)
    history = await in_store(app, store_of(app).history, CUSTOMER, None, 10, None)
    assert [(item.kind, item.amount, item.rrn) for item in history.items] == [
        ("topup", 50_000, approved["rrn"]),
    ]
    # A merchant's key may not top a wallet up: error 03.
    merchant = await online_client(app)
    refused = await merchant.request(topup("t-7", 100))
    assert (type(refused), refused.code) == (wire.Error, "03")
    await verified(app)



async def test_merchant_voids_and_refunds_a_qr_payment_by_qr_create_id_or_rrn(
    nursery: trio.Nursery, tmp_path: Path, engine: dict[str, Any]
) -> None:
    """wallet.md: a dynamic QR's payment is named by its ``qr_create``'s id, any on-us
    payment by its RRN; only its merchant may name it; the money goes back to the
    wallet; the QR is not reopened."""
    app = await start_switch(nursery, wallet_config(tmp_path, **engine))
    await open_wallet(app, 20_000)
    client = await app_client(app)
    dynamic = await make_qr(app, "V5N8W2R6C4J9E3HL", amount=3_000, online_id="qr-create-1")
    static = await make_qr(app, "W5N8W2R6C4J9E3HL")
    paid = await ask(client, pay("v-1", dynamic))
    assert paid["code"] == "00"
    by_static = await ask(client, pay("v-2", static, amount=1_000))
    assert by_static["code"] == "00"
    assert await balances(app, WALLET) == (16_000, 16_000)
    shop = await OnlineClient.connect(
        "127.0.0.1", app.online_port, key=OnlineKey.demo_merchant(QR_MERCHANT)
    )
    # Another merchant names them: not found (25).
    other = await online_client(app)
    assert (await other.request(wire.Void(id="x-1", merchant_id="SHOP01",
                                          original_id="qr-create-1"))).code == "25"
    assert (await other.request(wire.Void(id="x-2", merchant_id="SHOP01",
                                          original_rrn=by_static["rrn"]))).code == "25"
    # Its merchant refunds part of the dynamic QR's payment by the qr_create id...
    refund = await shop.request(wire.Refund(id="r-1", merchant_id=QR_MERCHANT,
                                            original_id="qr-create-1", amount=1_200))
    assert isinstance(refund, wire.Result) and refund.code == "00"
    assert refund.funding == "wallet" and refund.balance is None
    assert await balances(app, WALLET) == (17_200, 17_200)
    # ...at most what is left (64, or the book's 61 as for cards)...
    beyond = await shop.request(wire.Refund(id="r-2", merchant_id=QR_MERCHANT,
                                            original_id="qr-create-1", amount=1_801))
    assert beyond.code in ("61", "64")
    # ...and voids the static QR's payment by its RRN: all of it back.
    void = await shop.request(wire.Void(id="r-3", merchant_id=QR_MERCHANT,
                                        original_rrn=by_static["rrn"]))
    assert isinstance(void, wire.Result) and void.code == "00"
    assert await balances(app, WALLET) == (18_200, 18_200)
    assert await balances(app, ledger.merchant_account(QR_MERCHANT)) == (1_800, 1_800)
    # status by the qr_create id, or by the RRN: the payment as its merchant sees it.
    for named in ({"original_id": "qr-create-1"}, {"original_rrn": paid["rrn"]}):
        status = await shop.request(wire.Status(id="st", merchant_id=QR_MERCHANT, **named))
        assert isinstance(status, wire.Result), status
        assert (status.code, status.rrn, status.auth_code, status.funding) == (
            "00", paid["rrn"], paid["auth_code"], "wallet",
        )  # fmt: skip
        assert status.settlement_date == paid["settlement_date"] and status.balance is None
    assert (await other.request(wire.Status(id="st", merchant_id="SHOP01",
                                            original_rrn=paid["rrn"]))).code == "25"
    # The dynamic QR stays paid.
    assert (await in_store(app, store_of(app).qr, "V5N8W2R6C4J9E3HL")).state == "paid"
    # qr_status names each QR's payments, with what was refunded of them.
    for qr_id, rrn, amount, refunded in (
        ("V5N8W2R6C4J9E3HL", paid["rrn"], 3_000, 1_200),
        ("W5N8W2R6C4J9E3HL", by_static["rrn"], 1_000, 1_000),
    ):
        await shop.send_raw(msgspec.msgpack.encode({
            "type": "qr_status", "id": f"st-{qr_id}", "merchant_id": QR_MERCHANT,
            "qr_id": qr_id,
        }))  # fmt: skip
        status = msgspec.msgpack.decode(await shop.receive_raw())
        assert status["code"] == "00", status
        assert [(p["rrn"], p["amount"], p["refunded"], p["settlement_date"])
                for p in status["payments"]] == [
            (rrn, amount, refunded, paid["settlement_date"])
        ]  # fmt: skip
    kinds = [item.kind for item in
             (await in_store(app, store_of(app).history, CUSTOMER, None, 10, None)).items]
    assert kinds == ["void", "refund", "pay", "pay", "topup"]
    await verified(app)


async def test_two_payments_racing_for_one_dynamic_qr_pay_it_once(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    app = await start_switch(nursery, wallet_config(tmp_path))
    await open_wallet(app, 50_000)
    qr = await make_qr(app, "P5N8W2R6C4J9E3HL", amount=4_000)
    first, second = await app_client(app), await app_client(app)
    answers: list[dict[str, Any]] = []

    async def one(client: OnlineClient, request_id: str) -> None:
        answers.append(await ask(client, pay(request_id, qr)))

    async with trio.open_nursery() as race:
        race.start_soon(one, first, "race-1")
        race.start_soon(one, second, "race-2")
    assert sorted(answer["code"] for answer in answers) == ["00", "94"]
    assert await balances(app, WALLET) == (46_000, 46_000)
    await verified(app)


async def test_a_crash_between_a_topups_approval_and_its_credit_is_recovered(
    nursery: trio.Nursery, tmp_path: Path, engine: dict[str, Any]
) -> None:
    """The ledger fails to post a top-up whose approval is journaled (answered 96, the
    transfer left pending), and a wallet payment's: the next start posts both as the
    journal says, and the dynamic QR is paid."""
    config = wallet_config(tmp_path, **engine)
    async with trio.open_nursery() as first_life:
        app = await start_switch(first_life, config)
        await open_wallet(app, 10_000)
        qr = await make_qr(app, "C5N8W2R6C4J9E3HL", amount=2_000)
        store = store_of(app)

        def fail_ends(step: str) -> None:
            if step in ("end_topup", "end_payment"):
                raise RuntimeError("ledger lost")

        store.fault = fail_ends
        store.errors = (*store.errors, RuntimeError)  # type: ignore[attr-defined]
        client = await app_client(app)
        top = await ask(client, topup("crash-1", 30_000))
        assert top["code"] == "96"
        paid = await ask(client, pay("crash-2", qr))
        assert paid["code"] == "96"
        assert app.simulators["icbc"].totals().approvals == 1
        assert await balances(app, WALLET) == (10_000, 8_000)  # nothing credited yet
        pending = await in_store(app, store.pending_transfers)
        assert len(pending) == 2
        topup_key = next(t.spec.key for t in pending if t.spec.key.leg == "topup")
        await client.aclose()
        app.shutdown()
    app = await start_switch(nursery, config)  # same journal and ledger
    assert await balances(app, WALLET) == (38_000, 38_000)
    # Under the sale's RRN, as the top-up's own end books it: settlement's corrections
    # of the wallet find it by that RRN.
    credited = await in_store(app, store_of(app).transfer_of, topup_key)
    assert credited is not None and credited.spec.rrn == top["rrn"]
    assert (await in_store(app, store_of(app).qr, "C5N8W2R6C4J9E3HL")).state == "paid"
    await verified(app)
    # The repeat of the top-up is its journaled approval; the bank sees it once.
    client = await app_client(app)
    again = await ask(client, topup("crash-1", 30_000))
    assert again["code"] == "00" and again["rrn"] == top["rrn"]
    assert await balances(app, WALLET) == (38_000, 38_000)


TOPUP_RULES = """[[rules]]
id = "topup-cap"
mode = "enforce"
kind = "amount_cap"
kinds = ["topup"]
max_fen = 20000
action = "decline"
code = "61"
"""


async def test_a_topup_meets_the_risk_rules_of_its_kind(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """risk.md's rules of kind ``topup`` decline a top-up before its bank (journaled,
    its transfer voided, nothing credited); a sale of the same amount is not one."""
    rules = tmp_path / "risk.toml"
    rules.write_text(TOPUP_RULES)
    app = await start_switch(nursery, wallet_config(tmp_path, risk={"rules_file": str(rules)}))
    await open_wallet(app)
    client = await app_client(app)
    declined = await ask(client, topup("risk-1", 20_001))
    assert declined["code"] == "61" and "balance_after" not in declined
    assert app.simulators["icbc"].totals().approvals == 0
    assert await balances(app, WALLET) == (0, 0)
    assert app.journal is not None
    record = await app.journal.transaction_by_rrn(declined["rrn"])
    assert record is not None and (record.state, record.risk_rule) == ("declined", "topup-cap")
    assert (await ask(client, topup("risk-2", 20_000)))["code"] == "00"
    shop = await online_client(app)
    sale = await shop.request(wire.Purchase(
        id="sale-1", merchant_id="SHOP01", amount=20_001, currency="CNY",
        card=wire.Card(pan=PAN_ICBC, expiry="2812"),
    ))  # fmt: skip
    assert sale.code == "00"
    assert await balances(app, WALLET) == (20_000, 20_000)
    await verified(app)


async def test_a_wallet_pay_whose_key_is_held_elsewhere_is_94_and_leaves_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The same app id in flight at another worker (its transfer reserved there, its
    result not yet kept): this one is refused 94 and the other's transfer is not ended
    by it."""
    app = await start_switch(nursery, wallet_config(tmp_path))
    await open_wallet(app, 10_000)
    qr = await make_qr(app, "H5N8W2R6C4J9E3HL")
    elsewhere = TransferSpec(
        key=TransferKey("app:wallet", "dup-1", "pay"), debit=WALLET,
        credit=ledger.merchant_account(QR_MERCHANT), amount=1_000, kind="pay",
        merchant_id=QR_MERCHANT,
    )  # fmt: skip
    await in_store(app, store_of(app).reserve, elsewhere, time.time())
    client = await app_client(app)
    answer = await ask(client, pay("dup-1", qr, amount=1_000))
    assert answer["code"] == "94"
    held = await in_store(app, store_of(app).transfer_of, elsewhere.key)
    assert held is not None and held.state == "pending"
    assert await balances(app, WALLET) == (10_000, 9_000)


async def test_a_wallet_another_app_opened_is_error_03(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    app = await start_switch(nursery, wallet_config(tmp_path))
    await in_store(app, store_of(app).open_wallet, CUSTOMER, "app:other", 2,
                   time.strftime("%Y-%m-%d"), time.time())  # fmt: skip
    qr = await make_qr(app, "A5N8W2R6C4J9E3HL", amount=100)
    client = await app_client(app)
    for request in (pay("o-1", qr), topup("o-2", 100)):
        answer = await ask(client, request)
        assert (answer["type"], answer["code"]) == ("error", "03"), answer
        assert "customer_id" in answer["message"]
    assert app.simulators["icbc"].totals().approvals == 0
    assert (await in_store(app, store_of(app).qr, "A5N8W2R6C4J9E3HL")).state == "open"


async def test_a_topup_approved_too_late_is_reversed_and_never_credited(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The bank approves after issuer_timeout_s: the app was answered 68, the late
    approval is no answer, the sale is reversed at the bank, the wallet never credited
    (its transfer voided)."""
    config = wallet_config(
        tmp_path, banks={"icbc": {"issuer_timeout_s": 0.3, "circuit_timeouts": 5}},
        saf=FAST_SAF,
    )  # fmt: skip
    app = await start_switch(nursery, config)
    await open_wallet(app)
    bank = app.simulators["icbc"]
    bank.latency_s = 0.8
    client = await app_client(app)
    late = await ask(client, topup("late-1", 30_000))
    assert late["code"] == "68" and "balance_after" not in late
    bank.latency_s = 0.0
    # Reversed at the bank (the simulator may take the reversal before the sale it
    # names, which it applies at the end of its latency: then it is unmatched).
    await eventually(lambda: bank.totals().reversals + bank.totals().unmatched_reversals >= 1)
    assert app.journal is not None
    record = await app.journal.transaction_by_rrn(late["rrn"])
    assert record is not None and record.reversed and record.state != "approved"
    assert await balances(app, WALLET) == (0, 0)
    await verified(app)
