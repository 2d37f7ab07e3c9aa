"""On-us payments with two workers on one PostgreSQL journal (wallet.md): a terminal's
repeat, void and reversal of a payment-code sale may land on the worker that did not
take it; the wallet is debited once, and restored once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from switch.core import ledger, paycode
from switch.core.ledger import TransferKey, TransferSpec
from switch.core.paycode import PaycodeSettings
from switch.net.clients import OnlineClient
from switch.store.postgresql.ledger import PostgresLedgerStore
from tests.test_workers_shared import exchange, shared_switch

pytestmark = pytest.mark.slow

CUSTOMER = "C200000001"
QR_MERCHANT = "898110054110001"  # conf/merchants.csv: listed under its own id


def _balance(store: PostgresLedgerStore) -> int:
    view = store.account(ledger.wallet_account(CUSTOMER))
    assert view is not None
    return view.balances.balance


async def test_repeat_void_and_reversal_of_a_code_sale_at_the_other_worker(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with shared_switch(tmp_path, postgres_dsn) as shared:
        store = PostgresLedgerStore(postgres_dsn)
        store.open()
        settings = PaycodeSettings()
        try:
            store.open_wallet(CUSTOMER, "app:wallet", 2, time.strftime("%Y-%m-%d"), time.time())
            store.transfer(TransferSpec(
                key=TransferKey("test", CUSTOMER, "topup"), debit="bank_clearing:icbc",
                credit=ledger.wallet_account(CUSTOMER), amount=10_000, kind="topup",
            ), time.time())  # fmt: skip

            def issue() -> str:
                return store.issue_paycode(
                    CUSTOMER, "app:wallet", "wallet", "B", time.time(), settings,
                    lambda: paycode.draw(settings.prefix),
                ).code  # fmt: skip

            terminal, here, there = await shared.terminal_at_both_workers()
            code = issue()
            sale = terminal.code_sale(1, code, 3_000)
            first = await exchange(here, sale)
            assert (first[39], first[63]) == ("00", "WAL")
            # The repeat at the other worker: the first's answer (its code is used by
            # then, and never looked at again), the wallet debited once.
            repeat = await exchange(there, sale)
            assert (repeat[39], repeat[37], repeat[38]) == ("00", first[37], first[38])
            assert _balance(store) == 7_000
            # Voided at the other worker.
            void = await exchange(there, terminal.code_void(2, code, 3_000, str(first[37]), 1))
            assert void[39] == "00"
            assert _balance(store) == 10_000
            # Paid at one worker, reversed by the terminal at the other.
            code2 = issue()
            paid = terminal.code_sale(3, code2, 4_000)
            assert (await exchange(here, paid))[39] == "00"
            assert _balance(store) == 6_000
            assert (await exchange(there, terminal.reversal(paid)))[39] == "00"
            assert _balance(store) == 10_000
            assert store.verify() == [] and store.pending_transfers() == []
            for client in (here, there):
                await client.aclose()
        finally:
            store.close()


async def test_two_workers_racing_for_one_dynamic_qr_pay_it_once(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """wallet.md: a dynamic QR is paid at most once, even by two ``wallet_pay`` requests
    at once through two workers (two processes, two ledger connections): one is
    approved, the other 94; the wallet is debited once. Repeated many times, with the
    requests sent together, so that they meet in the ledger."""
    from switch.core.wallet import WalletSettings, qr_payload
    from switch.net.clients import OnlineKey
    from switch.store.ledger_port import QrRecord
    from switch.wire import online as wire

    async with shared_switch(tmp_path, postgres_dsn) as shared:
        store = PostgresLedgerStore(postgres_dsn)
        store.open()
        try:
            store.open_wallet(CUSTOMER, "app:wallet", 2, time.strftime("%Y-%m-%d"), time.time())
            store.transfer(TransferSpec(
                key=TransferKey("test", CUSTOMER, "topup"), debit="bank_clearing:icbc",
                credit=ledger.wallet_account(CUSTOMER), amount=100_000, kind="topup",
            ), time.time())  # fmt: skip
            clients = [await shared.online_connection_to(worker) for worker in (0, 1)]
            for client in clients:  # from now on as the app
                client.key = OnlineKey.demo_app()
                client._keys[client.key.key_id] = client.key
            rounds = 8
            for n in range(rounds):
                qr_id = f"RACE{n:012d}"
                payload = qr_payload(
                    WalletSettings(), merchant_id=QR_MERCHANT, name="JD Mart", mcc="5411",
                    city=None, qr_id=qr_id, amount=1_000,
                )  # fmt: skip
                store.create_qr(QrRecord(
                    qr_id=qr_id, merchant_id=QR_MERCHANT, kind="dynamic", payload=payload,
                    created_at=time.time(), amount=1_000, expires_at=time.time() + 300,
                ))  # fmt: skip
                codes: list[str] = []

                async def pay(
                    client: OnlineClient, request_id: str, payload: str, codes: list[str]
                ) -> None:
                    request = wire.WalletPay(
                        id=request_id, customer_id=CUSTOMER, qr=payload, funding="wallet",
                        verification="A",
                    )  # fmt: skip
                    with trio.fail_after(15):
                        answer = await client.request(request)
                    codes.append(answer.code)

                async with trio.open_nursery() as race:
                    for worker, client in enumerate(clients):
                        race.start_soon(pay, client, f"race-{n}-{worker}", payload, codes)
                assert sorted(codes) == ["00", "94"], (n, codes)
                record = store.qr(qr_id)
                assert record is not None and record.state == "paid"
            assert _balance(store) == 100_000 - rounds * 1_000
            assert store.verify() == [] and store.pending_transfers() == []
            for client in clients:
                await client.aclose()
        finally:
            store.close()
