"""The app desk's sans-IO part (``switch.core.app_desk``): decoding into the registered
types (field errors name the field), the principal checks, and a property: arbitrary
bytes only ever raise the decoder's declared error."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from switch.core.app_desk import (
    DeskDecodeError,
    DeskDecoder,
    DeskType,
    local_time,
    next_date,
    principal_of,
    probe_type,
)
from switch.errors import TransactionRefused
from switch.wire import app as wire

DECODER = DeskDecoder([wire.WalletOpen, wire.WalletWithdraw, wire.QrCreate, wire.WalletHistory])
OPEN = DeskType(name="wallet_open", request=wire.WalletOpen, principal="app")
QR = DeskType(name="qr_create", request=wire.QrCreate, principal="merchant")
ACCOUNT = {"account": "6222021000111133335", "account_name": "张三", "bank_code": "102100099996"}


def body(**fields: object) -> bytes:
    return msgspec.msgpack.encode(fields)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"type": "wallet_open", "id": "a", "customer_id": "C1", "class": 0}, "class"),
        ({"type": "wallet_open", "id": "a", "customer_id": "C1"}, None),  # missing class
        ({"type": "wallet_open", "id": "a b", "customer_id": "C1", "class": 1}, "id"),
        ({"type": "wallet_open", "id": "a", "customer_id": "", "class": 1}, "customer_id"),
        ({"type": "wallet_withdraw", "id": "a", "customer_id": "C1", "amount": -1, **ACCOUNT},
         "amount"),
        ({"type": "wallet_withdraw", "id": "a", "customer_id": "C1", "amount": 1,
          **{**ACCOUNT, "account_name": 'Zhang "San"'}}, "account_name"),
        ({"type": "wallet_withdraw", "id": "a", "customer_id": "C1", "amount": 1,
          **{**ACCOUNT, "account_name": "A" * 61}}, "account_name"),
        ({"type": "wallet_withdraw", "id": "a", "customer_id": "C1", "amount": 1,
          **{**ACCOUNT, "account_name": "tab\there"}}, "account_name"),
        ({"type": "wallet_history", "id": "a", "customer_id": "C1", "limit": 0}, "limit"),
        ({"type": "qr_create", "id": "a", "merchant_id": "M1", "order_id": "é"}, "order_id"),
        ({"type": "qr_create", "id": "a", "merchant_id": "M1", "amount": 1, "expires_s": 3601},
         "expires_s"),
    ],
)  # fmt: skip
def test_field_errors_name_the_field(fields: dict[str, object], field: str | None) -> None:
    with pytest.raises(DeskDecodeError) as raised:
        DECODER.decode(body(**fields))
    assert raised.value.field == field


def test_a_good_body_decodes_into_its_struct() -> None:
    message = DECODER.decode(body(type="wallet_open", id="o-1", customer_id="C1", **{"class": 3}))
    assert message == wire.WalletOpen(id="o-1", customer_id="C1", wallet_class=3)
    history = DECODER.decode(body(type="wallet_history", id="h", customer_id="C1"))
    assert isinstance(history, wire.WalletHistory) and (history.limit, history.cursor) == (20, None)


def test_principals() -> None:
    opening = wire.WalletOpen(id="o", customer_id="C1", wallet_class=1)
    assert principal_of(OPEN, opening, "app:wallet") == "app:wallet"
    with pytest.raises(TransactionRefused) as raised:
        principal_of(OPEN, opening, "merchant:M1")
    assert raised.value.response_code == "03"
    qr = wire.QrCreate(id="q", merchant_id="M1")
    assert principal_of(QR, qr, "merchant:M1") == "merchant:M1"
    for principal in ("merchant:M2", "app:wallet"):
        with pytest.raises(TransactionRefused) as raised:
            principal_of(QR, qr, principal)
        assert raised.value.response_code == "03"


def test_times_and_dates() -> None:
    assert local_time(1_796_610_030.9, 8) == "2026-12-07T10:20:30+08:00"
    assert next_date("2026-12-31") == "2027-01-01"
    assert probe_type(body(type="qr_status", id="s")) == "qr_status"
    assert probe_type(b"\xc1") is None and probe_type(body(type=3)) is None


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_the_declared_error(data: bytes) -> None:
    with contextlib.suppress(DeskDecodeError):
        DECODER.decode(data)
    probe_type(data)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "type",
                "id",
                "customer_id",
                "class",
                "amount",
                "account",
                "limit",
                "merchant_id",
                "cursor",
            ]
        ),
        st.one_of(
            st.text(max_size=40),
            st.integers(-(2**63), 2**64 - 1),
            st.none(),
            st.sampled_from(["wallet_open", "wallet_withdraw", "qr_create", "wallet_history"]),
        ),
    )
)
def test_arbitrary_maps_raise_only_the_declared_error(fields: dict[str, object]) -> None:
    with contextlib.suppress(DeskDecodeError):
        DECODER.decode(msgspec.msgpack.encode(fields))
