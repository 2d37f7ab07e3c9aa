"""The EMVCo MPM payload (switch.wire.emvqr) against wallet.md's samples, byte for byte,
its reading rules as a table, and a property: decoding arbitrary text raises only the
declared errors, and decode(encode(x)) == x."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switch.wire import emvqr
from switch.wire.emvqr import QrMalformed, QrOtherNetwork, crc16, decode, encode, make

GUI = "CN.COM.CHINABANK"
DYNAMIC = (
    "00020101021226590016CN.COM.CHINABANK01158981100541100010216K7Q2M9X4D8P3A6TB52045411"
    "5303156540588.005802CN5907JD Mart6007BEIJING62180514ORD2026120700164230002ZH0113"
    "京东便利店 JD Mart6304C028"
)
STATIC = (
    "00020101021126590016CN.COM.CHINABANK01158981100541100010216S5N8W2R6C4J9E3HL52045411"
    "5303156"
    "5802CN5907JD Mart6007BEIJING64230002ZH0113京东便利店 JD Mart63048A19"
)
MERCHANT = {"gui": GUI, "merchant_id": "898110054110001", "mcc": "5411",
            "name": "京东便利店 JD Mart", "city": "BEIJING"}  # fmt: skip


def test_the_samples_to_the_byte() -> None:
    dynamic = make(kind="dynamic", qr_id="K7Q2M9X4D8P3A6TB", amount=8800,
                   order_id="ORD20261207001", **MERCHANT)  # fmt: skip
    assert encode(dynamic) == DYNAMIC
    assert (len(DYNAMIC), len(DYNAMIC.encode())) == (184, 194)
    assert crc16(DYNAMIC[:-4].encode()) == 0xC028
    static = make(kind="static", qr_id="S5N8W2R6C4J9E3HL", **MERCHANT)
    assert encode(static) == STATIC
    assert decode(DYNAMIC, GUI) == dynamic
    assert decode(STATIC, GUI) == static
    assert dynamic.name == "JD Mart" and dynamic.amount == 8800


def test_crc16_ccitt_false_check_value() -> None:
    assert crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize(
    ("name", "folded"),
    [("Café  Zürich", "Cafe Zurich"), ("京东便利店 JD Mart", "JD Mart"), ("京东", "M1"),
     ("  a   very long merchant name indeed here ", "a very long merchant name")],
)  # fmt: skip
def test_folding(name: str, folded: str) -> None:
    assert emvqr.fold_name(name, "M1") == folded


def _with_crc(body: str) -> str:
    body += "6304"
    return body + f"{crc16(body.encode()):04X}"


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (DYNAMIC[:-4] + "C029", QrMalformed),  # wrong CRC
        (DYNAMIC[:-4] + "c028", None),  # either case
        (_with_crc(STATIC[:-8].replace("5303156", "5303840")), QrMalformed),  # 53 not 156
        (_with_crc(STATIC[:-8].replace("5802CN", "")), QrMalformed),  # 58 missing
        (_with_crc(STATIC[:-8] + "5405 1.00"), QrMalformed),  # 54 in a static QR
        (_with_crc(DYNAMIC[:-8].replace("540588.00", "")), QrMalformed),  # 54 missing
        (_with_crc(STATIC[:-8] + "5802CN"), QrMalformed),  # a duplicate ID
        (_with_crc(STATIC[:-8] + "9950x"), QrMalformed),  # a length past the end
        (_with_crc(STATIC[:-8].replace("CN.COM.CHINABANK", "CN.COM.OTHERBANK")), QrOtherNetwork),
        (_with_crc(STATIC[:-8] + "9903abc"), None),  # an ID it does not use
        ("63040000", QrMalformed),  # 00 not first
        ("", QrMalformed),
    ],
)
def test_reading_rules(payload: str, error: type[Exception] | None) -> None:
    if error is None:
        assert decode(payload, GUI).merchant_id == "898110054110001"
    else:
        with pytest.raises(error) as raised:
            decode(payload, GUI)
        assert raised.value.response_code == ("40" if error is QrOtherNetwork else "30")


@given(st.text(max_size=300))
def test_decoding_text_raises_only_declared_errors(text: str) -> None:
    with contextlib.suppress(QrMalformed, QrOtherNetwork):
        decode(text, GUI)


_ascii = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=25)


@given(
    kind=st.sampled_from(["static", "dynamic"]),
    qr_id=st.text(emvqr.QR_ID_ALPHABET, min_size=16, max_size=16),
    merchant_id=st.text("0123456789", min_size=1, max_size=15),
    amount=st.integers(1, 10**12 - 1),
    name=st.text(max_size=40),
    city=_ascii.map(lambda s: s[:15]),
    order_id=st.none() | _ascii,
)
def test_decode_of_encode(kind: str, qr_id: str, merchant_id: str, amount: int, name: str,
                          city: str, order_id: str | None) -> None:  # fmt: skip
    payload = make(kind=kind, gui=GUI, merchant_id=merchant_id, qr_id=qr_id, mcc="5411",  # type: ignore[arg-type]
                   name=name, city=city, amount=amount, order_id=order_id)  # fmt: skip
    assert decode(encode(payload), GUI) == payload


def test_render_terminal_draws_blocks() -> None:
    drawn = emvqr.render_terminal(STATIC)
    assert drawn.count("\n") > 20 and "█" in drawn


def test_new_qr_ids() -> None:
    ids = {emvqr.new_qr_id() for _ in range(100)}
    assert len(ids) == 100 and all(emvqr._QR_ID.fullmatch(qr_id) for qr_id in ids)
