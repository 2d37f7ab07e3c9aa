"""The merchant-presented QR payload (EMVCo MPM, wallet.md): ID (2 digits), length (2
digits, counting characters) and value, templates nesting the same way, and a
CRC-16/CCITT-FALSE of the UTF-8 bytes before it (``6304`` included) as 4 hex digits.

Bytes in, typed payload out, and back: :func:`encode` writes wallet.md's IDs in its
order; :func:`decode` reads them in any order (00 first, 63 last), ignores IDs it does
not use and raises :class:`QrMalformed` (``error`` 30 naming ``qr``) or
:class:`QrOtherNetwork` (40) otherwise. :func:`render_terminal` draws a payload for a
terminal (``segno``).
"""

from __future__ import annotations

import io
import re
import secrets
import unicodedata
from typing import Final, Literal

import msgspec

from switch.errors import RemoteProtocolError

Kind = Literal["static", "dynamic"]

QR_ID_LENGTH: Final = 16
QR_ID_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_QR_ID: Final = re.compile(r"[0-9A-Z]{16}")
MAX_PAYLOAD: Final = 512
"""``wallet_pay``'s ``qr``: 1..512 characters."""


class QrMalformed(RemoteProtocolError):
    """The payload does not read, or its CRC is wrong: ``error`` 30 naming ``qr``."""

    response_code = "30"


class QrOtherNetwork(RemoteProtocolError):
    """No template 26 with our GUI: another network's QR (40)."""

    response_code = "40"


class QrPayload(msgspec.Struct, frozen=True, kw_only=True):
    """What a payload says: its kind, the template-26 merchant and QR id, and the rest."""

    kind: Kind
    gui: str
    merchant_id: str
    qr_id: str
    mcc: str
    name: str
    city: str
    amount: int | None = None
    """Fen; dynamic only."""
    order_id: str | None = None
    local_name: str | None = None
    """Template 64's 01 (the name in the merchant's own script)."""


def new_qr_id() -> str:
    """16 random characters of ``[0-9A-Z]`` (``secrets``)."""
    return "".join(secrets.choice(QR_ID_ALPHABET) for _ in range(QR_ID_LENGTH))


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: polynomial 0x1021, initial 0xFFFF, not reflected, no final
    XOR (check value of ``b"123456789"``: 0x29B1)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def fold_name(name: str, merchant_id: str) -> str:
    """wallet.md's folding: NFKD; drop everything outside U+0020..U+007E; collapse runs of
    spaces; trim; cut to 25; trim. Nothing left: the merchant id."""
    kept = "".join(c for c in unicodedata.normalize("NFKD", name) if " " <= c <= "~")
    folded = re.sub(" +", " ", kept).strip()[:25].strip()
    return folded or merchant_id


def _tlv(tag: str, value: str) -> str:
    if len(value) > 99:
        raise ValueError(f"QR ID {tag}: {len(value)} characters")
    return f"{tag}{len(value):02d}{value}"


def _yuan(amount: int) -> str:
    text = f"{amount // 100}.{amount % 100:02d}"
    if len(text) > 13:
        raise ValueError(f"QR amount {amount}: more than 13 characters")
    return text


def encode(payload: QrPayload) -> str:
    """The payload's string, CRC included, in wallet.md's order of IDs."""
    template = _tlv("00", payload.gui) + _tlv("01", payload.merchant_id) + _tlv("02", payload.qr_id)
    parts = [
        _tlv("00", "01"),
        _tlv("01", "12" if payload.kind == "dynamic" else "11"),
        _tlv("26", template),
        _tlv("52", payload.mcc),
        _tlv("53", "156"),
    ]
    if payload.kind == "dynamic":
        assert payload.amount is not None, "a dynamic QR has an amount"
        parts.append(_tlv("54", _yuan(payload.amount)))
    parts += [_tlv("58", "CN"), _tlv("59", payload.name), _tlv("60", payload.city)]
    if payload.order_id is not None:
        parts.append(_tlv("62", _tlv("05", payload.order_id)))
    if payload.local_name is not None:
        parts.append(_tlv("64", _tlv("00", "ZH") + _tlv("01", payload.local_name)))
    body = "".join(parts) + "6304"
    return body + f"{crc16(body.encode()):04X}"


def make(
    *,
    kind: Kind,
    gui: str,
    merchant_id: str,
    qr_id: str,
    mcc: str,
    name: str,
    city: str,
    amount: int | None = None,
    order_id: str | None = None,
) -> QrPayload:
    """A payload for a merchant as wallet.md writes one: the folded name in 59 and, when
    the name has a character outside U+0020..U+007E, its first 25 characters in 64."""
    local = None if all(" " <= c <= "~" for c in name) else name[:25]
    return QrPayload(
        kind=kind, gui=gui, merchant_id=merchant_id, qr_id=qr_id, mcc=mcc,
        name=fold_name(name, merchant_id), city=city,
        amount=amount if kind == "dynamic" else None, order_id=order_id, local_name=local,
    )  # fmt: skip


def _split(text: str, where: str) -> list[tuple[str, str]]:
    """The (ID, value) pairs of a TLV string; QrMalformed on a bad ID or length, a
    length past the end, or a duplicate ID."""
    items: list[tuple[str, str]] = []
    seen: set[str] = set()
    at = 0
    while at < len(text):
        head = text[at : at + 4]
        if len(head) < 4 or not head.isascii() or not head.isdigit():
            raise QrMalformed(f"qr: bad ID or length at {where}{at}")
        tag, length = head[:2], int(head[2:])
        value = text[at + 4 : at + 4 + length]
        if len(value) != length:
            raise QrMalformed(f"qr: ID {where}{tag} runs past the end")
        if tag in seen:
            raise QrMalformed(f"qr: ID {where}{tag} twice")
        seen.add(tag)
        items.append((tag, value))
        at += 4 + length
    return items


def _amount(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,10}\.[0-9]{2}", text):
        raise QrMalformed("qr: ID 54 is not an amount in yuan with 2 decimals")
    whole, cents = text.split(".")
    return int(whole) * 100 + int(cents)


def decode(text: str, gui: str) -> QrPayload:
    """Reads a payload (wallet.md's rules); QrMalformed or QrOtherNetwork."""
    if not 1 <= len(text) <= MAX_PAYLOAD:
        raise QrMalformed("qr: 1..512 characters")
    items = _split(text, "")
    if not items or items[0][0] != "00" or items[-1][0] != "63":
        raise QrMalformed("qr: ID 00 must come first and 63 last")
    crc = items[-1][1]
    if len(crc) != 4 or not re.fullmatch(r"[0-9A-Fa-f]{4}", crc):
        raise QrMalformed("qr: ID 63 is not 4 hex digits")
    if int(crc, 16) != crc16(text[:-4].encode()):
        raise QrMalformed("qr: CRC wrong")
    fields = dict(items)
    missing = [tag for tag in ("01", "52", "53", "58", "59", "60") if tag not in fields]
    if missing:
        raise QrMalformed(f"qr: ID {missing[0]} missing")
    if fields["53"] != "156":
        raise QrMalformed("qr: ID 53 is not 156")
    kind: Kind
    if fields["01"] == "11":
        kind = "static"
    elif fields["01"] == "12":
        kind = "dynamic"
    else:
        raise QrMalformed("qr: ID 01 is neither 11 nor 12")
    if kind == "static" and "54" in fields:
        raise QrMalformed("qr: ID 54 in a static QR")
    if kind == "dynamic" and "54" not in fields:
        raise QrMalformed("qr: ID 54 missing from a dynamic QR")
    amount = _amount(fields["54"]) if kind == "dynamic" else None
    ours = None
    for tag in (f"{n:02d}" for n in range(26, 52)):
        if tag in fields:
            template = dict(_split(fields[tag], f"{tag}."))
            if template.get("00") == gui:
                ours = template
                break
    if ours is None:
        raise QrOtherNetwork(f"qr: no template with {gui}")
    if not ours.get("01") or not _QR_ID.fullmatch(ours.get("02", "")):
        raise QrMalformed("qr: template 26 without merchant id or QR id")
    order_id = dict(_split(fields["62"], "62.")).get("05") if "62" in fields else None
    local = dict(_split(fields["64"], "64.")).get("01") if "64" in fields else None
    return QrPayload(
        kind=kind, gui=gui, merchant_id=ours["01"], qr_id=ours["02"], mcc=fields["52"],
        name=fields["59"], city=fields["60"], amount=amount, order_id=order_id,
        local_name=local,
    )  # fmt: skip


def render_terminal(payload: str) -> str:
    """The payload as a QR code drawn in a terminal's block characters (``switch qr``)."""
    import segno

    buffer = io.StringIO()
    segno.make(payload, error="m", micro=False).terminal(out=buffer, compact=True)
    return buffer.getvalue()
