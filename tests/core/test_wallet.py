"""Wallets' rules (switch.core.wallet): the money checks in wallet.md's order, as a
table, and the bound account's fields."""

from __future__ import annotations

import pytest

from switch.core.wallet import (
    BadField,
    MoneyAsk,
    Refusal,
    Usage,
    Wallet,
    WalletSettings,
    WithdrawalLine,
    check_bound_account,
    class_left,
    money_check,
    qr_payload,
    recon_debit,
    withdrawals_file,
    withdrawals_file_name,
)

SETTINGS = WalletSettings()


def wallet(wallet_class: int) -> Wallet:
    return Wallet(customer_id="C1", app="app:a", wallet_class=wallet_class, opened="2026-01-01")  # type: ignore[arg-type]


def ask(amount: int, **fields: object) -> MoneyAsk:
    base: dict[str, object] = {
        "customer_id": "C1",
        "amount": amount,
        "counted": "pay",
        "channel": "code",
        "verification": "C",
        "local_date": "2026-12-07",
    }
    return MoneyAsk(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("wallet_class", "usage", "request_", "available", "expected"),
    [
        # class I: ¥1,000 since opening, whatever the year
        (1, Usage(since_opening=99_000), ask(1_001), 10**9, Refusal("61", "class 1 limit")),
        (1, Usage(since_opening=99_000), ask(1_000), 10**9, None),
        # class II: ¥100,000 this calendar year
        (2, Usage(since_opening=10**9, this_year=9_950_000), ask(50_001, verification="A"),
         10**9, Refusal("61", "class 2 limit")),
        (3, Usage(this_year=19_999_999), ask(2, counted="withdraw", channel="none",
         verification=None), 10**9, Refusal("61", "class 3 limit")),
        # the class limit before the daily cap, the daily cap before the balance
        (1, Usage(), ask(100_001), 0, Refusal("61", "class 1 limit")),
        (2, Usage(today=99_000), ask(1_001), 0, Refusal("61", "daily cap of tier C")),
        (2, Usage(today=99_000), ask(1_000), 999, Refusal("51", "balance too low")),
        (2, Usage(today=4_999_999), ask(1, verification="A"), 1, None),
        (2, Usage(static_today=49_000), ask(1_001, channel="qr_static", verification="A"), 10**9,
         Refusal("61", "daily cap of static QR payments")),
        # credit: no class limit, no balance (credit.md's), but the daily caps
        (1, Usage(since_opening=100_000), ask(500, funding="credit"), 0, None),
        (1, Usage(today=100_000), ask(1, funding="credit"), 0,
         Refusal("61", "daily cap of tier C")),
        # a withdrawal: no daily cap
        (2, Usage(today=10**9), ask(5, counted="withdraw", channel="none", verification=None), 5,
         None),
    ],
)  # fmt: skip
def test_money_checks_in_order(
    wallet_class: int, usage: Usage, request_: MoneyAsk, available: int, expected: Refusal | None
) -> None:
    assert money_check(wallet(wallet_class), usage, request_, available, SETTINGS) == expected


def test_class_left() -> None:
    assert class_left(1, Usage(since_opening=30_000, this_year=0)) == 70_000
    assert class_left(2, Usage(since_opening=10**9, this_year=30_000)) == 9_970_000
    assert class_left(1, Usage(since_opening=200_000)) == 0


@pytest.mark.parametrize(
    ("account", "name", "bank_code", "field"),
    [("1234567", "张三", "102100099996", "account"), ("12345678", "a,b", "102100099996",
     "account_name"), ("12345678", 'a"b', "102100099996", "account_name"),
     ("12345678", "a\nb", "102100099996", "account_name"), ("12345678", "x" * 61,
     "102100099996", "account_name"), ("12345678", "张三", "10210009999", "bank_code")],
)  # fmt: skip
def test_bound_account_fields(account: str, name: str, bank_code: str, field: str) -> None:
    with pytest.raises(BadField) as raised:
        check_bound_account(account, name, bank_code)
    assert raised.value.field == field and raised.value.response_code == "30"


def test_the_withdrawals_file_of_wallet_md() -> None:
    line = WithdrawalLine(rrn="634114000140", customer_id="C100000001",
                          bank_code="102100099996", account="6222021000111133335",
                          account_name="张三", amount=10000)  # fmt: skip
    assert (
        withdrawals_file("2026-12-07", [line])
        == (
            "business_date,value_date,rrn,customer_id,bank_code,account,account_name,amount_fen\n"
            "2026-12-07,2026-12-08,634114000140,C100000001,102100099996,6222021000111133335,"
            "张三,10000\n"
        ).encode()
    )
    assert withdrawals_file("2026-12-31", []) == (
        b"business_date,value_date,rrn,customer_id,bank_code,account,account_name,amount_fen\n"
    )
    assert withdrawals_file_name("2026-12-07") == "withdrawals-20261207.csv"


def test_the_wallet_section_is_checked_at_start_up() -> None:
    from switch.errors import ConfigError
    from tests.conftest import make_config

    assert make_config().wallet == WalletSettings()
    with pytest.raises(ConfigError, match=r"wallet.paycode_prefix: BIN route 622202 begins"):
        make_config(wallet={"paycode_prefix": "62"})
    with pytest.raises(ConfigError, match=r"wallet.paycode_prefix: '8' is not 2 digits"):
        make_config(wallet={"paycode_prefix": "8"})
    with pytest.raises(Exception, match="paycode_ttl"):
        make_config(wallet={"paycode_ttl": 60})  # a typo names the key


def test_qr_create_payloads_are_wallet_md_samples() -> None:
    from tests.wire.test_emvqr import DYNAMIC, STATIC

    merchant = {"merchant_id": "898110054110001", "name": "京东便利店 JD Mart", "mcc": "5411"}
    assert qr_payload(SETTINGS, city=None, qr_id="K7Q2M9X4D8P3A6TB", amount=8800,
                      order_id="ORD20261207001", **merchant) == DYNAMIC  # fmt: skip
    assert qr_payload(SETTINGS, city="BEIJING", qr_id="S5N8W2R6C4J9E3HL", **merchant) == STATIC


@pytest.mark.parametrize(
    ("available", "amount", "split"),
    [(10_000, 2_000, (2_000, 0)), (500, 2_000, (500, 1_500)), (0, 2_000, (0, 2_000))],
)
def test_a_recon_correction_debits_a_wallet_at_most_to_zero(
    available: int, amount: int, split: tuple[int, int]
) -> None:
    assert recon_debit(available, amount) == split
