"""Canonical requests to bank host-to-host messages (bank-h2h.md), and answers back.

The switch sends exactly the key fields of the spec's message table: the sample sale in
bank-h2h.md is what :func:`bank_request` builds from pos-cup.md's sample sale. Beyond
them it sends 14 (expiry) for a keyed card, as the issuer has no track to read it from.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Final

import msgspec

from switch.core.calendar import mmdd
from switch.core.clock import Stamp
from switch.core.model import PRODUCT_OF, BankBound, Outcome
from switch.core.products import PRODUCTS
from switch.errors import LocalProtocolError

KEYED_ENTRY: Final = "01"
"""Field 22's digits 1-2 for a card number keyed in (every online payment): the
request's 14 goes to the bank. A card read (02, magnetic stripe; 05, chip) carries its
expiry in its track or chip data, and its 14 is not forwarded: bank-h2h.md's sample
sale (pos-cup.md's, 22 = 021, which has 14) has none."""

SIGN_ON: Final = "001"
SIGN_OFF: Final = "002"
CUTOVER: Final = "201"
ECHO: Final = "301"


class Institution(msgspec.Struct, frozen=True):
    """The switch as the banks know it: fields 32 and 33."""

    acquirer_id: str
    forwarding_id: str | None = None

    def original_ids(self) -> str:
        """Original 32 and 33 as field 90 carries them: 11 digits each, zero-padded."""
        return self.acquirer_id.zfill(11) + (self.forwarding_id or "").zfill(11)


class BankTrace(msgspec.Struct, frozen=True, gc=False):
    """What the switch assigns to one message on its way to a bank."""

    stan: str
    rrn: str
    stamp: Stamp


class OriginalData(msgspec.Struct, frozen=True, gc=False):
    """A bank message's own identity, which field 90 of a later message repeats."""

    mti: str
    stan: str
    transmission: str

    def field_90(self, institution: Institution) -> str:
        return f"{self.mti}{self.stan}{self.transmission}{institution.original_ids()}"


def network_request(
    code: str, stan: str, stamp: Stamp, *, business_date: date | None = None
) -> tuple[str, dict[int, str | bytes]]:
    """Sign-on, sign-off, echo test or cutover (0800 with 70); a cutover names in 15
    the business date it closes."""
    fields: dict[int, str | bytes] = {7: stamp.transmission, 11: stan}
    if business_date is not None:
        fields[15] = mmdd(business_date)
    fields[70] = code
    return "0800", fields


def bank_request(
    request: BankBound,
    trace: BankTrace,
    institution: Institution,
    original: OriginalData | None = None,
    *,
    mcc: str | None = None,
    original_auth: str | None = None,
) -> tuple[str, dict[int, str | bytes]]:
    """The bank message for a sale, balance inquiry, void or refund (its product's MTI
    and processing code: ``switch.core.products``). A void or refund must first
    be resolved against its original (card, amount and currency filled in). ``mcc``
    is the merchant's category code (field 18), when the merchants file gives one."""
    card, amount, currency = request.card, request.amount, request.currency
    if card is None or amount is None or currency is None:
        raise LocalProtocolError(f"{type(request).__name__} is not resolved against its original")
    product = PRODUCT_OF[type(request)]
    if product.bank_code is None:
        raise LocalProtocolError(f"product {product.kind} names no processing code for banks")
    processing_code = product.bank_code + request.processing_code[2:]
    stamp = trace.stamp
    fields: dict[int, str | bytes] = {
        2: card.pan,
        3: processing_code,
        4: f"{amount:012d}",
        7: stamp.transmission,
        11: trace.stan,
        12: stamp.local_time,
        13: stamp.local_date,
        **({18: mcc} if mcc is not None else {}),
        22: card.entry_mode,
        25: product.bank_condition or card.condition_code,
        32: institution.acquirer_id,
        37: trace.rrn,
        41: request.acceptor.terminal_id,
        42: request.acceptor.merchant_id,
        49: currency,
    }
    if card.expiry is not None and card.entry_mode[:2] == KEYED_ENTRY:
        fields[14] = card.expiry
    if institution.forwarding_id is not None:
        fields[33] = institution.forwarding_id
    if card.track2 is not None:
        fields[35] = card.track2
    if original_auth is not None:  # a pre-authorisation void's, a completion's (risk.md)
        fields[38] = original_auth
    if card.pin_block is not None:
        fields[52] = card.pin_block
    if original is not None:
        fields[90] = original.field_90(institution)
    return product.bank_mti, fields


REVERSAL: Final = PRODUCTS["reversal"]


class ReversalSubject(msgspec.Struct, frozen=True, kw_only=True):
    """What a reversal repeats of the message it reverses (no track 2, no PIN)."""

    pan: str | None
    """None for a bank's record the switch never sent: it never had the card number,
    and the bank finds the original by 37 and 90 (a decision: bank-h2h.md lists 2)."""
    processing_code: str
    amount: int
    currency: str
    rrn: str
    terminal_id: str
    merchant_id: str
    original: OriginalData


def reversal_request(
    subject: ReversalSubject,
    stan: str,
    stamp: Stamp,
    institution: Institution,
    *,
    repeat: bool = False,
) -> tuple[str, dict[int, str | bytes]]:
    """A 0400 (0401 when repeated) with a new 11 and 90 naming the original."""
    fields: dict[int, str | bytes] = {
        **({2: subject.pan} if subject.pan is not None else {}),
        3: subject.processing_code,
        4: f"{subject.amount:012d}",
        7: stamp.transmission,
        11: stan,
        32: institution.acquirer_id,
        37: subject.rrn,
        41: subject.terminal_id,
        42: subject.merchant_id,
        49: subject.currency,
        90: subject.original.field_90(institution),
    }
    if institution.forwarding_id is not None:
        fields[33] = institution.forwarding_id
    mti = REVERSAL.bank_mti
    return (f"{mti[:3]}1" if repeat else mti), fields


ADVICE_MTI: Final = "0220"
ADVICE_REPEAT_MTI: Final = "0221"
ADVICE_RESPONSE_MTI: Final = "0230"
ADVICE_ACCEPTED: Final = "00"
ADVICE_AGAIN: Final = frozenset({"91", "96"})
"""An advice answered with these is sent again (bank-h2h.md); any other 39 is final."""


class AdviceSubject(msgspec.Struct, frozen=True, kw_only=True):
    """A stood-in sale as its advice reports it (risk.md, bank-h2h.md): all but 7 and
    11 are the sale's and the same in every send."""

    pan: str
    processing_code: str
    amount: int
    currency: str
    local_time: str
    local_date: str
    mcc: str | None
    entry_mode: str
    condition_code: str
    rrn: str
    auth_code: str
    terminal_id: str
    merchant_id: str


def advice_request(
    subject: AdviceSubject,
    stan: str,
    stamp: Stamp,
    institution: Institution,
    *,
    repeat: bool = False,
) -> tuple[str, dict[int, str | bytes]]:
    """A 0220 (0221 when repeated) with a new 11 and 7; 39 = 00, the answer the switch
    gave, 38 its ``S`` code."""
    fields: dict[int, str | bytes] = {
        2: subject.pan,
        3: subject.processing_code,
        4: f"{subject.amount:012d}",
        7: stamp.transmission,
        11: stan,
        12: subject.local_time,
        13: subject.local_date,
        **({18: subject.mcc} if subject.mcc is not None else {}),
        22: subject.entry_mode,
        25: subject.condition_code,
        32: institution.acquirer_id,
        37: subject.rrn,
        38: subject.auth_code,
        39: "00",
        41: subject.terminal_id,
        42: subject.merchant_id,
        49: subject.currency,
    }
    if institution.forwarding_id is not None:
        fields[33] = institution.forwarding_id
    return (ADVICE_REPEAT_MTI if repeat else ADVICE_MTI), fields


def outcome_from_bank(fields: Mapping[int, str | bytes], *, rrn: str, bank: str) -> Outcome | None:
    """The switch's outcome from a bank's response fields; None when it has no valid
    response code (39), which is no final answer."""
    code = fields.get(39)
    auth_code = fields.get(38)
    balance = fields.get(54)
    if not isinstance(code, str) or len(code) != 2 or not code.isalnum():
        return None
    if code == "A0":  # its MAC verified here: the bank refused ours, applied nothing
        code = VERIFIED_A0_CODE
    return Outcome(
        code=code,
        rrn=rrn,
        bank=bank,
        auth_code=auth_code if isinstance(auth_code, str) else None,
        balance=balance if isinstance(balance, str) else None,
    )  # the bank's 15 is its own view: the switch's business date decides (settlement.md)


# -- keys and MAC (security.md, "Bank links: keys and MAC") ----------------------------

KEY_CHANGE: Final = "101"
MAC_BYTES: Final = 8
MAC_REQUEST_MTIS: Final = frozenset({"0100", "0200", "0220", "0221", "0400", "0401"})
"""The requests that carry a MAC; their responses carry one too."""
MAC_RESPONSE_MTIS: Final = frozenset({"0110", "0210", "0230", "0410"})
VERIFIED_A0_CODE: Final = "96"
"""What the terminal gets after a bank's verified A0 (its MAC did not verify at the
bank): the request was not applied, so nothing is reversed."""


def key_change_request(
    stan: str, stamp: Stamp, field_48: str
) -> tuple[str, dict[int, str | bytes]]:
    """The key change: 0800 with 7, 11, 48 (the new ZPK and ZAK under the bank's ZMK,
    with their KCVs: 80 hexadecimal characters) and 70 = 101."""
    return "0800", {7: stamp.transmission, 11: stan, 48: field_48, 70: KEY_CHANGE}


def carries_mac(mti: str) -> bool:
    """Whether a message of this MTI carries a MAC (a request or its response)."""
    return mti in MAC_REQUEST_MTIS or mti in MAC_RESPONSE_MTIS


def mac_field(fields: Mapping[int, object]) -> int:
    """Where the MAC goes: 128 when the message has a secondary bitmap (a field above
    64 besides the MAC), else 64."""
    return 128 if any(64 < number < 128 for number in fields) else 64


def with_mac_placeholder(mti: str, fields: dict[int, str | bytes]) -> dict[int, str | bytes]:
    """``fields`` with 8 zero bytes in the MAC's field when ``mti`` carries one: encoded,
    the MAC is then the message's last 8 bytes and what precedes them is the MAB (the
    bitmaps already have the MAC's bit set), so the MAC is put in place of the zeros
    when the message is sent, under the keys in force then."""
    if not carries_mac(mti):
        return fields
    out = {number: value for number, value in fields.items() if number not in (64, 128)}
    out[mac_field(out)] = bytes(MAC_BYTES)
    return out


def split_mac(message: bytes, fields: Mapping[int, object]) -> tuple[bytes, bytes] | None:
    """(MAB, MAC) of a received message as decoded (``fields``), or None when it carries
    no MAC where security.md puts it: 128 with a secondary bitmap, else 64, always its
    last 8 bytes."""
    number = mac_field(fields)
    mac = fields.get(number)
    other = 64 if number == 128 else 128
    if not isinstance(mac, bytes) or len(mac) != MAC_BYTES or other in fields:
        return None
    if not message.endswith(mac) or len(message) <= MAC_BYTES:
        return None
    return message[:-MAC_BYTES], mac
