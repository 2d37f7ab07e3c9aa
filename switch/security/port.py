"""The security-module port: every operation the switch does with a key (security.md).

The rest of the switch holds key *names* (``tmk:POS00001``, ``zmk:icbc``, an online key
id) and :class:`LmkKey` values (a working key encrypted under the LMK, with its KCV); it
never holds a clear key, a component, a secret or a clear PIN block. Operations are in
domain terms: make a terminal's working keys under its TMK, verify or make a POS MAC,
translate a PIN block from a terminal's PIK to a bank's ZPK, make a link's ZPK and ZAK
under its ZMK, make or verify a bank MAC, sign or verify an online envelope, load a key
from components.

:class:`switch.security.software.SoftwareSecurityModule` implements it with
``cryptography`` for development, tests and demos; a payment HSM (host commands over
TCP) is meant to be a second implementation (docs/design.md, "Security module").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Final, Literal, Protocol

import msgspec

from switch.security.algorithms import KeyCipher

KeyName = str
"""``kind:owner``: ``tmk:POS00001``, ``zmk:icbc``, ``online:m-898310048990001-1``,
``lookup:1`` and ``sealing:1`` (card-data keys, by their key id 1-255)."""
KeyKind = Literal["tmk", "zmk", "online", "pik", "mak", "zpk", "zak"]
PosKeyLayout = Literal["001", "003", "005"]
"""60.3 of a sign-on: which working keys and field 62 layout (security.md)."""
TmkCipher = Literal["3des", "sm4"]

STORED_KINDS: Final = ("tmk", "zmk", "online", "lookup", "sealing")
"""Kinds kept in the key store; the working kinds live in memory, under the LMK."""
OPERATOR_KCV_CHARS: Final = 6
"""Operators see the first 6 hexadecimal characters of a KCV."""


def key_name(kind: str, owner: str) -> KeyName:
    return f"{kind}:{owner}"


def operator_kcv(kcv: bytes) -> str:
    """The KCV as an operator sees it: its first 6 upper-case hexadecimal characters."""
    return kcv.hex().upper()[:OPERATOR_KCV_CHARS]


class LmkKey(msgspec.Struct, frozen=True):
    """A key encrypted under the security module's LMK, bound to its kind and owner:
    what the switch holds of a working key. Its repr shows kind, owner and KCV only."""

    kind: KeyKind
    owner: str
    cipher: KeyCipher
    kcv: bytes
    blob: bytes
    """The module's own encryption (software: a 12-byte nonce then AES-256-GCM)."""

    @property
    def name(self) -> KeyName:
        return key_name(self.kind, self.owner)

    def __repr__(self) -> str:
        return f"LmkKey({self.name}, {self.cipher}, kcv={operator_kcv(self.kcv)})"

    __str__ = __repr__


class PosWorkingKeys(msgspec.Struct, frozen=True):
    """A terminal's PIK and MAK from one sign-on: under the LMK for the switch, under
    the TMK for field 62 of the 0810."""

    layout: PosKeyLayout
    pik: LmkKey
    mak: LmkKey
    pik_under_tmk: bytes
    mak_under_tmk: bytes

    def field_62(self) -> bytes:
        """The 0810's field 62 in the layout 60.3 asked for (security.md's table)."""
        if self.layout == "003":
            padding = bytes(8)
            return self.pik_under_tmk + self.pik.kcv + self.mak_under_tmk + padding + self.mak.kcv
        return self.pik_under_tmk + self.pik.kcv + self.mak_under_tmk + self.mak.kcv

    def __repr__(self) -> str:
        return f"PosWorkingKeys({self.layout}, {self.pik!r}, {self.mak!r})"

    __str__ = __repr__


class BankKeys(msgspec.Struct, frozen=True):
    """A bank link's ZPK and ZAK from one key change."""

    zpk: LmkKey
    zak: LmkKey
    zpk_under_zmk: bytes
    zak_under_zmk: bytes

    def field_48(self) -> str:
        """The key change's field 48: 80 upper-case hexadecimal characters."""
        return (
            self.zpk_under_zmk.hex() + self.zpk.kcv.hex() + self.zak_under_zmk.hex()
            + self.zak.kcv.hex()
        ).upper()  # fmt: skip

    def __repr__(self) -> str:
        return f"BankKeys({self.zpk!r}, {self.zak!r})"

    __str__ = __repr__


class KeyComponent(msgspec.Struct, frozen=True):
    """One holder's component as entered, with the KCV on its form (6 or 8 hex)."""

    value: bytes
    kcv: str

    def __repr__(self) -> str:
        return "KeyComponent(<hidden>)"

    __str__ = __repr__


class TerminalProfile(msgspec.Struct, frozen=True):
    """What a TMK's record says of its terminal (security.md's terminal entry)."""

    merchant: str
    allow_single_des: bool = False
    """60.3 = 001 (single-DES keys) is allowed."""
    require_sm4: bool = False
    """Only 60.3 = 005 is taken (the TMK is then an SM4 key)."""


class KeyInfo(msgspec.Struct, frozen=True):
    """What may be shown of a stored key: never the key."""

    kind: str
    owner: str
    cipher: str
    kcv: str
    """Operator form: 6 hexadecimal characters."""
    state: Literal["active", "revoked"]
    created: datetime
    revoked: datetime | None = None
    merchant: str | None = None
    allow_single_des: bool = False
    require_sm4: bool = False
    principal: str | None = None


class SecurityModule(Protocol):
    """Every operation on a key. Clear keys, components, secrets and clear PIN blocks
    stay inside the implementation; what it returns is safe to hold and to log by repr
    (kind, owner, KCV)."""

    def terminal_profile(self, tmk: KeyName) -> TerminalProfile:
        """The terminal entry stored with its TMK (merchant, 001, ``require_sm4``);
        :class:`UnknownKeyError` when there is none (the channel answers 97)."""
        ...

    def make_pos_working_keys(self, tmk: KeyName, layout: str) -> PosWorkingKeys:
        """A fresh PIK and MAK for a sign-on with this 60.3 under the terminal's TMK;
        :class:`LayoutNotAllowedError` (40) for a 60.3 its entry does not allow."""
        ...

    def import_pos_working_keys(self, tmk: KeyName, layout: str, field_62: bytes) -> PosWorkingKeys:
        """A terminal's side of the sign-on: field 62 opened under its TMK, both KCVs
        checked (:class:`KcvMismatchError` else)."""
        ...

    def make_pos_mac(self, mak: LmkKey, mab: bytes) -> bytes:
        """Field 64 over the MAB: the ``3des`` profile's 8 ASCII characters under a DES
        MAK, the ``sm4`` profile's 8 binary bytes under an SM4 MAK."""
        ...

    def verify_pos_mac(self, mak: LmkKey, mab: bytes, mac: bytes) -> bool:
        """Whether ``mac`` is field 64 of ``mab`` (compared in constant time)."""
        ...

    def translate_pin(self, pik: LmkKey, zpk: LmkKey, pin_block: bytes, pan: str) -> bytes:
        """A terminal's PIN block (52, or 62 from an SM4 terminal) as a format 0 block
        under the link's ZPK. Raises :class:`PinBlockFieldError` (30) for a block of the
        wrong size and :class:`PinBlockFormatError` (99) for one that is no format 0 block
        of a 4-12 digit PIN."""
        ...

    def make_bank_keys(self, zmk: KeyName, link: str) -> BankKeys:
        """A fresh ZPK and ZAK for ``link`` under the bank's ZMK (the key change)."""
        ...

    def import_bank_keys(self, zmk: KeyName, link: str, field_48: str) -> BankKeys:
        """A bank's side of the key change: field 48 opened under its ZMK, both KCVs
        checked (:class:`KcvMismatchError`, 30, else)."""
        ...

    def make_bank_mac(self, zak: LmkKey, mab: bytes) -> bytes:
        """The X9.19 retail MAC under the ZAK: 8 bytes."""
        ...

    def verify_bank_mac(self, zak: LmkKey, mab: bytes, mac: bytes) -> bool: ...

    def online_principal(self, key_id: str) -> str:
        """The principal of an active online key; :class:`UnknownKeyError` (A0) for an
        unknown or revoked one."""
        ...

    def sign_online(self, key_id: str, ts: int, nonce: str, body: bytes) -> bytes:
        """An envelope's ``sig``: HMAC-SHA256 under the key's secret."""
        ...

    def verify_online(self, key_id: str, ts: int, nonce: str, body: bytes, sig: bytes) -> bool:
        """Whether ``sig`` signs the envelope (constant time); :class:`UnknownKeyError`
        for an unknown or revoked key."""
        ...

    def import_key_from_components(
        self,
        kind: Literal["tmk", "zmk"],
        owner: str,
        cipher: TmkCipher,
        components: Sequence[KeyComponent],
        *,
        confirm_kcv: str,
        profile: TerminalProfile | None = None,
        replace: bool = False,
    ) -> KeyInfo:
        """A TMK or ZMK from 2 or 3 components: each one's KCV checked, the key their XOR,
        stored only when ``confirm_kcv`` (from the key form) is its KCV."""
        ...

    def create_online_key(
        self, principal: str, deliver_to: Path, key_id: str | None = None
    ) -> KeyInfo:
        """A new online secret for ``principal``, written once, as 64 lower-case
        hexadecimal characters, to the new file ``deliver_to`` (0600)."""
        ...

    def revoke_online_key(self, key_id: str) -> KeyInfo: ...

    def list_keys(self) -> list[KeyInfo]: ...
