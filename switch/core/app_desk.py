"""The app desk's sans-IO part: what a request type of the desk is (a row: its name, its
Struct, the principal it is open to, whether it is a read), the principal checks of
security.md's step 6, decoding a body into the registered types (``error`` 30 naming
the field), what a refusal answers (an ``error`` for 03, 30 and 94, else a ``result``),
and the local times of results. No I/O: ``switch/net/app_desk.py`` carries it out.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from functools import reduce
from typing import Any, Final, Literal

import msgspec

from switch.core.online import MESSAGES
from switch.errors import TransactionRefused
from switch.wire import app as wire
from switch.wire import online as online_wire

PrincipalKind = Literal["app", "merchant"]

ERROR_CODES: Final = frozenset(("03", "30", "94"))
"""Refusals answered as online.md's ``error`` (wallet.md's Errors: the principal's
mistakes, validation, an ``id`` conflict); every other refusal is a ``result``."""

DESK_MESSAGES: Final = {
    **MESSAGES,
    "12": "invalid transaction",
    "14": "no such wallet, code, QR or account",
    "54": "expired",
    "62": "restricted",
}


class DeskType(msgspec.Struct, frozen=True, kw_only=True):
    """One request type of the desk."""

    name: str
    """online.md's ``type``: the Struct's tag."""
    request: type[wire.DeskRequest]
    principal: PrincipalKind
    read: bool = False
    """online.md's reads: answered from the current state each time, their ``id``
    checked, not stored."""


class DeskDecodeError(Exception):
    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.field = field


_PATH_FIELD: Final = re.compile(r"at `\$\.?([A-Za-z0-9_.\[\]]*)`")


class DeskDecoder:
    """Decodes a body into one of the registered types (one Decoder, built once per
    registration)."""

    def __init__(self, types: Iterable[type[wire.DeskRequest]]) -> None:
        members = tuple(types)
        union: Any = reduce(operator.or_, members) if members else None
        self._decoder: msgspec.msgpack.Decoder[Any] | None = (
            msgspec.msgpack.Decoder(union) if members else None
        )

    def decode(self, body: bytes) -> wire.DeskRequest:
        """The request; DeskDecodeError naming the field (``error`` 30)."""
        assert self._decoder is not None, "no type registered"
        try:
            message: wire.DeskRequest = self._decoder.decode(body)
        except msgspec.ValidationError as exc:
            match = _PATH_FIELD.search(str(exc))
            field = match.group(1) if match else None
            raise DeskDecodeError(str(exc), field or None) from None
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise DeskDecodeError(f"not a valid MessagePack request: {exc}", None) from None
        return message


_type_probe: Final = msgspec.msgpack.Decoder(dict[str, Any])


def probe_type(body: bytes) -> str | None:
    """The body's ``type`` when it is a map with a string one."""
    try:
        probe = _type_probe.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    kind = probe.get("type")
    return kind if isinstance(kind, str) else None


def principal_of(row: DeskType, message: wire.DeskRequest, principal: str) -> str:
    """security.md's step 6 for a desk type: the type open to the key's principal (03),
    a merchant's request for its own ``merchant_id`` (03 naming it). The principal whose
    ``id`` space the request is in: ``app:<name>`` or ``merchant:<id>``."""
    kind, _, owner = principal.partition(":")
    if kind != row.principal:
        raise TransactionRefused("03", f"type not open to the key's principal {kind}")
    if isinstance(message, wire.MerchantRequest) and message.merchant_id != owner:
        raise TransactionRefused(
            "03", "not the merchant of the key that signed it", field="merchant_id"
        )
    return principal


_content_encoder: Final = msgspec.msgpack.Encoder()


def content(message: wire.DeskRequest) -> bytes:
    """What a repeat of the same ``id`` is compared by: the request's canonical form (its
    Struct's fields in their order; absent optional fields omitted)."""
    return _content_encoder.encode(message)


def refusal_error(request_id: str | None, exc: TransactionRefused) -> online_wire.Error:
    where = f" (field {exc.field})" if exc.field else ""
    return online_wire.Error(id=request_id, code=exc.response_code, message=f"{exc}{where}")


def refused_result(message: wire.DeskRequest, code: str, text: str = "") -> wire.DeskResult:
    """A refusal as the type's bare result (its own fields absent)."""
    return wire.DeskResult(
        id=message.id, code=code, approved=False,
        message=text or DESK_MESSAGES.get(code, "declined"),
        order_id=message.order_id, memo=message.memo,
    )  # fmt: skip


def echo(message: wire.DeskRequest) -> dict[str, Any]:
    """The fields every result of ``message`` repeats: ``id``, ``order_id``, ``memo``."""
    return {"id": message.id, "order_id": message.order_id, "memo": message.memo}


def approved(message: wire.DeskRequest) -> dict[str, Any]:
    return {**echo(message), "code": "00", "approved": True, "message": "approved"}


def local_time(at: float, utc_offset_h: int) -> str:
    """wallet.md's times: ISO 8601 local time with its offset, to the second."""
    zone = timezone(timedelta(hours=utc_offset_h))
    return datetime.fromtimestamp(int(at), zone).isoformat(timespec="seconds")


def next_date(day: str) -> str:
    return (datetime.fromisoformat(day) + timedelta(days=1)).date().isoformat()
