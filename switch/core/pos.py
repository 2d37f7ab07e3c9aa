"""POS terminal messages (pos-cup.md) to the canonical model, and outcomes back.

Pure functions over decoded ISO 8583 fields: which transaction a message is, whether its
mandatory fields are there, and which fields its response carries.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import date
from typing import Final

import msgspec

from switch.core import batch as batch48
from switch.core import products, validate
from switch.core.clock import Stamp
from switch.core.model import (
    REQUEST_TYPES,
    Acceptor,
    BatchSettlement,
    BatchUpload,
    Card,
    Echo,
    OriginalRef,
    Outcome,
    Request,
    SignOn,
)
from switch.errors import TransactionRefused
from switch.security.port import LmkKey

Fields = Mapping[int, str | bytes]

ECHOED_FIELDS: Final = (2, 3, 4, 11, 41, 42, 49, 60)
"""What a response copies from its request (pos-cup.md, "Transactions")."""

NETWORK_TYPE_CODE: Final = "00"
"""Field 60.1 of a sign-on (0800) and an echo test (0820); a financial request's is its
product's (``switch.core.products``), a reversal's its original's."""
SETTLEMENT_ECHOED_FIELDS: Final = (11, 41, 42, 48, 49, 60)
UPLOAD_ECHOED_FIELDS: Final = (11, 41, 42, 60)
"""What a 0510 and a 0330 copy from their request (pos-cup.md, "Batch settlement")."""
SETTLEMENT_CURRENCY: Final = "156"
SETTLEMENT_CODE: Final = "201"
LAST_UPLOAD_CODE: Final = "202"
"""60.3 of a 0500 and of every 0320 but the last; 60.3 of the last 0320."""


def _check_type_code(reserved: str, mti: str, expected: str | None) -> None:
    """60.1 must name the transaction the MTI and processing code say it is (None: a
    reversal's, which names a product that may be reversed)."""
    type_code = reserved[:2]
    if expected is None:
        if type_code in products.REVERSIBLE_TYPES:
            return
        expected = "that of the original"
    elif type_code == expected:
        return
    raise TransactionRefused(
        "30", f"field 60.1 is {type_code!r}, not {expected} for this {mti}", field="60"
    )


def _check_batch_reserved(reserved: str, mti: str, network_codes: tuple[str, ...]) -> str:
    """A 0500's or 0320's 60: 60.1 = 00, a batch (60.2) and one of ``network_codes``
    in 60.3, which it returns; else 30 naming field 60."""
    network_code = reserved[8:11]
    if reserved[:2] != "00" or len(reserved) < 11 or network_code not in network_codes:
        expected = " or ".join(network_codes)
        raise TransactionRefused(
            "30", f"field 60 of a {mti} must be 00, its batch and {expected}", field="60"
        )
    return network_code


def response_mti(mti: str) -> str:
    """0200 -> 0210, 0220 -> 0230, 0320 -> 0330, 0400 -> 0410, 0500 -> 0510, 0800 -> 0810,
    0820 -> 0830."""
    return f"{mti[:2]}{int(mti[2]) + 1}{mti[3]}"


def _text(fields: Fields, number: int) -> str | None:
    value = fields.get(number)
    if value is None:
        return None
    if isinstance(value, bytes):  # only b fields are bytes; none of those are read as text
        raise TransactionRefused("30", f"field {number} has the wrong format", field=str(number))
    return value


def _required(fields: Fields, number: int) -> str:
    value = _text(fields, number)
    if value is None:
        raise TransactionRefused("30", f"mandatory field {number} is missing", field=str(number))
    return value


def _acceptor_id(fields: Fields, number: int) -> str:
    """41 or 42 as the bank sees it: without the right space padding of its fixed ans
    field. A blank id, or one that starts with a space, is refused (30): the bank would
    not tell it from another terminal's or merchant's."""
    value = _required(fields, number).rstrip(" ")
    if not value or value[0] == " ":
        raise TransactionRefused(
            "30", f"field {number} is blank or starts with a space", field=str(number)
        )
    return value


def acceptor_ids(fields: Fields) -> tuple[str, str]:
    """41 and 42 without their padding; 30 for a missing, blank or space-led one (it
    names no terminal entry: answered before any MAC check, without 64)."""
    return _acceptor_id(fields, 41), _acceptor_id(fields, 42)


def request_from_pos(
    mti: str,
    fields: Fields,
    *,
    currencies: Collection[str] = validate.SETTLED_CURRENCIES,
    today: date | None = None,
    paycode_prefix: str | None = None,
) -> Request:
    """The canonical request for a decoded POS message; refusals raise TransactionRefused.
    ``currencies``: those the switch settles (57 for another 49, but in a reversal,
    which is always taken). ``today``: the local date of the request's stamp (its 13),
    by which a sale's or balance inquiry's card has expired (54); None checks no date.
    ``paycode_prefix``: wallet.md's ``paycode_prefix`` when on-us payments are served: a
    field 2 that begins with it is a payment code (never a card)."""
    stan = _required(fields, 11)
    acceptor = Acceptor(
        channel="pos",
        terminal_id=_acceptor_id(fields, 41),
        merchant_id=_acceptor_id(fields, 42),
    )
    reserved = _required(fields, 60)
    batch = reserved[2:8] if len(reserved) >= 8 else "000000"
    if mti == "0800":
        _check_type_code(reserved, mti, NETWORK_TYPE_CODE)
        return SignOn(acceptor=acceptor, stan=stan, batch=batch, request_mti=mti)
    if mti == "0820":
        _check_type_code(reserved, mti, NETWORK_TYPE_CODE)
        return Echo(acceptor=acceptor, stan=stan, batch=batch, request_mti=mti)
    if mti == "0500":
        _check_batch_reserved(reserved, mti, (SETTLEMENT_CODE,))
        if _required(fields, 49) != SETTLEMENT_CURRENCY:
            raise TransactionRefused("30", "field 49 of a 0500 must be 156", field="49")
        field48 = _required(fields, 48)
        return BatchSettlement(
            acceptor=acceptor,
            stan=stan,
            batch=batch,
            request_mti=mti,
            totals=batch48.settlement_totals(field48),
            field48=field48,
        )
    if mti == "0320":
        network_code = _check_batch_reserved(reserved, mti, (SETTLEMENT_CODE, LAST_UPLOAD_CODE))
        field48 = _required(fields, 48)
        if network_code == LAST_UPLOAD_CODE:
            return BatchUpload(
                acceptor=acceptor, stan=stan, batch=batch, request_mti=mti,
                total=batch48.upload_total(field48),
            )  # fmt: skip
        return BatchUpload(
            acceptor=acceptor, stan=stan, batch=batch, request_mti=mti,
            records=batch48.upload_records(field48),
        )  # fmt: skip
    if mti not in products.POS_MTIS:
        raise TransactionRefused("40", f"message type {mti} is not supported", field="mti")

    processing_code = _required(fields, 3)
    field2 = _text(fields, 2)
    if paycode_prefix and field2 is not None and field2.startswith(paycode_prefix):
        product = _paycode_product(mti, processing_code[:2], fields)
        card = _paycode(field2, fields)
    else:
        product = products.by_pos(mti, processing_code[:2], _text(fields, 25))
        card = None
    if product is not None:
        _check_type_code(reserved, mti, product.pos_type)
    if card is None:
        card = _card(fields)
    currency = _required(fields, 49)
    if product is None or product.original != "trace":
        # a reversal is answered 00 whatever it names (pos-cup.md)
        currency = validate.settled_currency(currency, currencies, field="49")
        if product is not None and product.destination == "ledger" and currency != ONUS_CURRENCY:
            raise TransactionRefused("57", "on-us money is CNY only", field="49")
    if (
        today is not None
        and product is not None
        and product.original == "none"
        and product.instrument == "card"
    ):
        validate.check_not_expired(card.expiry, today, field="14")
    amount = _amount(fields) if product is None or product.carries_amount else None
    if product is None:
        raise TransactionRefused(
            "40", f"processing code {processing_code} is not supported with {mti}", field="3"
        )
    request: dict[str, object] = {}
    if amount is not None:
        if product.original != "trace":
            validate.check_amount(amount, field="4")
        request["amount"] = amount
    if product.original == "reference":
        auth = _required(fields, 38) if product.kind in products.NAMES_ORIGINAL_AUTH else None
        request["original"] = OriginalRef(
            rrn=_required(fields, 37), auth_code=auth, **_original_trace(fields)
        )
    elif product.original == "authorisation":
        # A completion: its pre-authorisation's 38 and 61 (61.3 its date), 37 optional.
        _required(fields, 61)
        trace = _original_trace(fields)
        if "date" not in trace:
            raise TransactionRefused("30", "field 61 has no original date", field="61")
        request["original"] = OriginalRef(
            rrn=_text(fields, 37), auth_code=_required(fields, 38), **trace
        )
    elif product.original == "trace":
        trace = _original_trace(fields)
        # A reversal repeats the original's STAN in 11; 61 names batch and date.
        request["original"] = OriginalRef(
            batch=trace.get("batch", batch), stan=trace.get("stan", stan), date=trace.get("date")
        )
        request["reason"] = _text(fields, 39) or "98"
    return REQUEST_TYPES[product.kind](
        acceptor=acceptor,
        stan=stan,
        batch=batch,
        request_mti=mti,
        processing_code=processing_code,
        card=card,
        currency=currency,
        **request,
    )


ONUS_FUNDING_CODE: Final = {"wallet": "WAL", "credit": "CRL"}
"""63.1 of an on-us answer by the payment's funding (wallet.md)."""
PAYCODE_ENTRY_MODE: Final = "032"
"""wallet.md: field 22 of a scanned payment code (03: bar code; 2: no PIN)."""
PAYCODE_ABSENT_FIELDS: Final = (14, 35, 52, 53, 55)
"""What a payment-code request must not carry (30 naming the first present)."""
ONUS_CURRENCY: Final = "156"


def _paycode_product(mti: str, code: str, fields: Fields) -> products.Product | None:
    """The product of a request whose field 2 is a payment code: a paycode row, or a
    terminal's reversal (which names its original by trace whatever it was); a
    balance inquiry with a code is not permitted (57)."""
    condition = _text(fields, 25)
    card_row = products.by_pos(mti, code, condition)
    product = products.by_pos(mti, code, condition, "paycode")
    if product is not None:
        return product
    if card_row is not None and card_row.original == "trace":
        return card_row
    if card_row is not None and not card_row.carries_amount:
        raise TransactionRefused("57", "a balance inquiry with a payment code", field="3")
    return None


def _paycode(code: str, fields: Fields) -> Card:
    """Field 2 as a payment code (wallet.md): 22 must be 032 (else 14, the cashier asks
    for a fresh code), none of 14, 35, 52, 53 and 55 (30). The code's own checks (Luhn,
    open) are the ledger's, answered 14 alike, and counted against the terminal."""
    for number in PAYCODE_ABSENT_FIELDS:
        if number in fields:
            raise TransactionRefused(
                "30", f"field {number} is not sent with a payment code", field=str(number)
            )
    entry_mode = _required(fields, 22)
    if entry_mode != PAYCODE_ENTRY_MODE:
        raise TransactionRefused("14", "a payment code without entry mode 032", field="22")
    if not (code.isascii() and code.isdigit() and len(code) <= 19):
        raise TransactionRefused("14", "not a payment code", field="2")
    return Card(pan=code, entry_mode=entry_mode, condition_code=_required(fields, 25))


def _amount(fields: Fields) -> int:
    amount_digits = _required(fields, 4)
    if not (amount_digits.isascii() and amount_digits.isdigit()):
        raise TransactionRefused("30", "field 4 is not an amount", field="4")
    return int(amount_digits)


def _original_trace(fields: Fields) -> dict[str, str]:
    """Field 61: original batch n6, original STAN n6, original date MMDD n4."""
    original = _text(fields, 61)
    if original is None:
        return {}
    if len(original) < 12:
        raise TransactionRefused("30", "field 61 is too short", field="61")
    trace = {"batch": original[:6], "stan": original[6:12]}
    if len(original) >= 16:
        trace["date"] = original[12:16]
    return trace


def _card(fields: Fields) -> Card:
    pan = _text(fields, 2)
    track2 = _text(fields, 35)
    expiry = _text(fields, 14)
    if pan is None:
        if track2 is None:
            raise TransactionRefused("30", "neither field 2 nor 35 is present", field="2")
        pan, _, after = track2.partition("=")
        if expiry is None and len(after) >= 4:
            expiry = after[:4]
        field = "35"
    else:
        field = "2"
    validate.check_pan(pan, field=field)
    validate.check_expiry(expiry, field="14")
    return Card(  # its PIN, if any, is the channel's to check first (with_pin)
        pan=pan,
        expiry=expiry,
        track2=track2,
        entry_mode=_required(fields, 22),
        condition_code=_required(fields, 25),
        chip=55 in fields,
    )


def with_pin(request: Request, block: bytes, pik: LmkKey) -> Request:
    """``request`` with its card's PIN block under the terminal's PIK (security.md): the
    channel checked 22, 53 and the block's size against the key set that verified it."""
    card = getattr(request, "card", None)
    if card is None:
        return request
    card = msgspec.structs.replace(card, pin_block=block, pin_key=pik)
    return msgspec.structs.replace(request, card=card)


def response_fields(
    request_fields: Fields,
    outcome: Outcome,
    stamp: Stamp,
    acquirer_id: str,
) -> dict[int, str | bytes]:
    """A response's fields: the request's echoed ones plus 12, 13, 15, 32, 37, 38, 39, 54."""
    fields: dict[int, str | bytes] = {
        number: request_fields[number] for number in ECHOED_FIELDS if number in request_fields
    }
    fields[12] = stamp.local_time
    fields[13] = stamp.local_date
    if outcome.settlement_date is not None:  # YYYY-MM-DD; field 15 is MMDD
        fields[15] = outcome.settlement_date[5:7] + outcome.settlement_date[8:10]
    fields[32] = acquirer_id
    if outcome.rrn is not None:
        fields[37] = outcome.rrn
    if outcome.approved and outcome.auth_code:
        fields[38] = outcome.auth_code
    fields[39] = outcome.code
    if outcome.balance is not None:
        fields[54] = outcome.balance
    if outcome.funding is not None:  # wallet.md: 63.1, once the payment code was open
        fields[63] = ONUS_FUNDING_CODE.get(outcome.funding, "WAL")
    if outcome.batch is not None:
        reserved = request_fields.get(60)
        if isinstance(reserved, str) and len(reserved) >= 2:
            fields[60] = reserved[:2] + outcome.batch + reserved[8:]
    return fields


def settlement_answer_fields(
    request_fields: Fields, outcome: Outcome, stamp: Stamp
) -> dict[int, str | bytes]:
    """A 0510's fields: the 0500's 11, 41, 42, 49, 60 and 48 (48.5 set to the result,
    when there is one), plus 12, 13, 15, 37 and 39; no 32 (pos-cup.md's sample)."""
    fields: dict[int, str | bytes] = {
        number: request_fields[number]
        for number in SETTLEMENT_ECHOED_FIELDS
        if number in request_fields
    }
    fields[12] = stamp.local_time
    fields[13] = stamp.local_date
    if outcome.settlement_date is not None:  # YYYY-MM-DD; field 15 is MMDD
        fields[15] = outcome.settlement_date[5:7] + outcome.settlement_date[8:10]
    if outcome.rrn is not None:
        fields[37] = outcome.rrn
    fields[39] = outcome.code
    field48 = request_fields.get(48)
    if outcome.batch_result is not None and isinstance(field48, str):
        fields[48] = batch48.answer_field48(field48, outcome.batch_result)
    return fields


def upload_answer_fields(request_fields: Fields, outcome: Outcome) -> dict[int, str | bytes]:
    """A 0330's fields: the 0320's 11, 41, 42 and 60, and 39."""
    fields: dict[int, str | bytes] = {
        number: request_fields[number]
        for number in UPLOAD_ECHOED_FIELDS
        if number in request_fields
    }
    fields[39] = outcome.code
    return fields


def answer_fields(
    mti: str, request_fields: Fields, outcome: Outcome, stamp: Stamp, acquirer_id: str
) -> dict[int, str | bytes]:
    """The fields of the answer to a ``mti`` request, in the layout of its kind."""
    if mti == "0500":
        return settlement_answer_fields(request_fields, outcome, stamp)
    if mti == "0320":
        return upload_answer_fields(request_fields, outcome)
    return response_fields(request_fields, outcome, stamp, acquirer_id)


def format_error_fields(
    partial_fields: Fields, stamp: Stamp, acquirer_id: str, *, mti: str = ""
) -> dict[int, str | bytes] | None:
    """The 30 answer to a ``mti`` message that did not parse, or None when it cannot be
    addressed (11 or 41 unreadable): then the connection is closed instead."""
    if not isinstance(partial_fields.get(11), str) or not isinstance(partial_fields.get(41), str):
        return None
    return answer_fields(mti, partial_fields, Outcome(code="30"), stamp, acquirer_id)
