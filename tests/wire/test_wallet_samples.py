"""wallet.md's ``wallet_pay`` sample, to the byte: its request body decodes to the
request Struct, and the result the switch builds from the sample's outcome is the
sample's result body."""

from __future__ import annotations

import re
from pathlib import Path

from switch.core import wallet_online
from switch.core.model import Outcome
from switch.wire import emvqr
from switch.wire import online as wire

SPEC = Path(__file__).resolve().parents[2] / "docs" / "spec" / "wallet.md"
GUI = "CN.COM.CHINABANK"


def _blocks() -> list[bytes]:
    text = SPEC.read_text(encoding="utf-8")
    hexes = re.findall(r"```\n([0-9a-f\n]+)\n```", text)
    return [bytes.fromhex(block.replace("\n", "")) for block in hexes]


REQUEST = bytes.fromhex(
    "86a474797065aa77616c6c65745f706179a26964b17061792d32303236313230"
    "372d30303031ab637573746f6d65725f6964aa43313030303030303031a27172"
    "d9c23030303230313031303231323236353930303136434e2e434f4d2e434849"
    "4e4142414e4b30313135383938313130303534313130303031303231364b3751"
    "324d395834443850334136544235323034353431313533303331353635343035"
    "38382e303035383032434e353930374a44204d617274363030374245494a494e"
    "4736323138303531344f5244323032363132303730303136343233303030325a"
    "4830313133e4baace4b89ce4bebfe588a9e5ba97204a44204d61727436333034"
    "43303238a766756e64696e67a677616c6c6574ac766572696669636174696f6e"
    "a142"
)
RESULT = bytes.fromhex(
    "8ea474797065a6726573756c74a26964b17061792d32303236313230372d3030"
    "3031a4636f6465a23030a8617070726f766564c3a372726eac36333431313030"
    "3030313331a9617574685f636f6465a6523854325735af736574746c656d656e"
    "745f64617465aa323032362d31322d3037a6616d6f756e74cd2260ab6d657263"
    "68616e745f6964af383938313130303534313130303031ad6d65726368616e74"
    "5f6e616d65b7e4baace4b89ce4bebfe588a9e5ba97204a44204d617274a57172"
    "5f6964b04b3751324d3958344438503341365442a766756e64696e67a677616c"
    "6c6574ad62616c616e63655f6166746572cda0f0a76d657373616765a8617070"
    "726f766564"
)


def test_the_samples_are_the_specs() -> None:
    blocks = _blocks()
    assert REQUEST in blocks and RESULT in blocks


def test_wallet_pay_sample_request_and_result() -> None:
    request = wire.decode_request(REQUEST)
    assert isinstance(request, wire.WalletPay)
    assert (request.id, request.customer_id, request.funding, request.verification) == (
        "pay-20261207-0001", "C100000001", "wallet", "B",
    )  # fmt: skip
    assert request.amount is None and wire.encode_request(request) == REQUEST
    payload = emvqr.decode(request.qr, GUI)
    assert (payload.kind, payload.amount, payload.qr_id) == ("dynamic", 8800, "K7Q2M9X4D8P3A6TB")
    outcome = Outcome(code="00", message="approved", rrn="634110000131", auth_code="R8T2W5",
                      settlement_date="2026-12-07", balance_after=41_200)  # fmt: skip
    result = wallet_online.pay_result(request, outcome, payload=payload,
                                      merchant_name="京东便利店 JD Mart")  # fmt: skip
    assert wire.encode_response(result) == RESULT


def test_a_declined_wallet_pay_reads_as_an_online_result() -> None:
    request = wire.decode_request(REQUEST)
    assert isinstance(request, wire.WalletPay)
    payload = emvqr.decode(request.qr, GUI)
    outcome = Outcome(code="51", rrn="634110000132", settlement_date="2026-12-07")
    body = wire.encode_response(wallet_online.pay_result(request, outcome, payload=payload,
                                                         merchant_name="JD Mart"))  # fmt: skip
    generic = wire.decode_response(body)
    assert isinstance(generic, wire.Result)
    assert (generic.code, generic.approved, generic.auth_code) == ("51", False, None)
    assert generic.message == "insufficient funds"
