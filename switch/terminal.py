"""A POS terminal's side of pos-cup.md, as pure functions: the messages a terminal
sends. The CLI's smoke test, the tests and the bench all speak through these."""

from __future__ import annotations

from typing import Final

import msgspec

from switch.wire.framing import PosEnvelope, join_pos_frame, split_pos_frame
from switch.wire.iso8583 import FieldValue, Iso8583Codec, Iso8583Message

DEFAULT_ENVELOPE: Final = PosEnvelope(
    tpdu=bytes.fromhex("6000030000"), header=bytes.fromhex("603100310730")
)
"""The TPDU and header of pos-cup.md's sample sale."""


class Terminal(msgspec.Struct, frozen=True, kw_only=True):
    terminal_id: str = "POS00001"
    merchant_id: str = "898310048990001"
    batch: int = 1
    envelope: PosEnvelope = DEFAULT_ENVELOPE

    def _base(self, stan: int, reserved_type: str, network_code: str = "") -> dict[int, FieldValue]:
        return {
            11: f"{stan:06d}",
            41: self.terminal_id,
            42: self.merchant_id,
            60: f"{reserved_type}{self.batch:06d}{network_code}",
        }

    def sign_on(self, stan: int) -> tuple[str, dict[int, FieldValue]]:
        return "0800", self._base(stan, "00", "001")

    def echo(self, stan: int) -> tuple[str, dict[int, FieldValue]]:
        return "0820", self._base(stan, "00", "301")

    def _financial(
        self,
        stan: int,
        reserved_type: str,
        processing_code: str,
        pan: str,
        amount: int,
        *,
        expiry: str | None,
        currency: str,
    ) -> dict[int, FieldValue]:
        fields = self._base(stan, reserved_type)
        fields.update(
            {2: pan, 3: processing_code, 4: f"{amount:012d}", 22: "021", 25: "00", 49: currency}
        )
        if expiry is not None:
            fields[14] = expiry
        return fields

    def sale(
        self,
        stan: int,
        pan: str,
        amount: int,
        *,
        expiry: str | None = "2812",
        currency: str = "156",
    ) -> tuple[str, dict[int, FieldValue]]:
        return "0200", self._financial(
            stan, "22", "000000", pan, amount, expiry=expiry, currency=currency
        )

    def balance(
        self, stan: int, pan: str, *, expiry: str | None = "2812", currency: str = "156"
    ) -> tuple[str, dict[int, FieldValue]]:
        return "0200", self._financial(
            stan, "01", "310000", pan, 0, expiry=expiry, currency=currency
        )

    def void(
        self, stan: int, pan: str, amount: int, original_rrn: str, original_stan: int
    ) -> tuple[str, dict[int, FieldValue]]:
        return "0200", self._referencing(stan, "23", pan, amount, original_rrn, original_stan)

    def refund(
        self, stan: int, pan: str, amount: int, original_rrn: str, original_stan: int
    ) -> tuple[str, dict[int, FieldValue]]:
        return "0220", self._referencing(stan, "25", pan, amount, original_rrn, original_stan)

    def _referencing(
        self,
        stan: int,
        reserved_type: str,
        pan: str,
        amount: int,
        original_rrn: str,
        original_stan: int,
    ) -> dict[int, FieldValue]:
        """A void's or refund's fields: 37 and 61 name the sale (pos-cup.md)."""
        fields = self._financial(
            stan, reserved_type, "200000", pan, amount, expiry=None, currency="156"
        )
        fields[37] = original_rrn
        fields[61] = f"{self.batch:06d}{original_stan:06d}"
        return fields

    def reversal(
        self, original: tuple[str, dict[int, FieldValue]], *, reason: str = "98", date: str = ""
    ) -> tuple[str, dict[int, FieldValue]]:
        """The 0400 for an earlier request: same 2, 3, 4, 11 and 60; 61 names it."""
        _, fields = original
        reversal = {n: v for n, v in fields.items() if n not in (14, 35, 52)}
        reversal[39] = reason
        reversal[61] = f"{self.batch:06d}{fields[11]!s}{date}"
        return "0400", reversal


def encode_pos_request(
    codec: Iso8583Codec, terminal: Terminal, message: tuple[str, dict[int, FieldValue]]
) -> bytes:
    """A frame's payload (no length prefix): envelope + ISO 8583 message."""
    mti, fields = message
    return join_pos_frame(terminal.envelope, codec.encode(mti, fields))


def decode_pos_response(codec: Iso8583Codec, payload: bytes) -> tuple[PosEnvelope, Iso8583Message]:
    envelope, data = split_pos_frame(payload)
    return envelope, codec.decode(data)
