"""POS terminals' working keys as the switch holds them, and the checks of a MAC'd
message (security.md, "POS sign-on and working keys", "MAC on the POS (field 64)",
"PIN").

Sans-IO: times are passed in (trio's clock in the channel, a number in the tests), the
keys are :class:`~switch.security.port.LmkKey` values (under the LMK) and every
operation on them goes through the security module's port. Nothing here holds a clear
key or a clear PIN block.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Final

import msgspec

from switch.errors import TransactionRefused
from switch.security.errors import LayoutNotAllowedError, UnknownKeyError
from switch.security.port import (
    KeyName,
    LmkKey,
    PosWorkingKeys,
    SecurityModule,
    TerminalProfile,
    key_name,
)

MAC_MTIS: Final = frozenset({"0100", "0200", "0220", "0320", "0400", "0500"})
"""The requests that carry field 64; their responses carry it too."""
BATCH_CHECKED_MTIS: Final = frozenset({"0100", "0200", "0220"})
"""Under a ``3des`` key set these are answered 12 outside the current batch."""
PIN_MTIS: Final = frozenset({"0100", "0200"})
"""The requests that may carry a PIN (third digit of 22 = 1)."""
LAYOUTS: Final = ("003", "005", "001")
MAC_BYTES: Final = 8
PREVIOUS_VALID_S: Final = 60.0
"""How long a replaced key set still verifies requests already on their way."""
WILDCARD: Final = "*"
"""A terminal entry for any terminal id and merchant (the demo configuration's)."""
SECURITY_CONTROL: Final[dict[str, str]] = {
    "003": "2600000000000000",
    "005": "2400000000000000",
    "001": "2000000000000000",
}
"""Field 53 of a PIN request under each key layout (security.md's sign-on table)."""
BANK_SECURITY_CONTROL: Final = "2600000000000000"
"""Field 53 of the bank's PIN request: format 0 under the ZPK (double-length 3DES)."""
DEFAULT_MAX_TERMINALS: Final = 200_000
MAX_REPLACED: Final = 8
"""Replaced key sets a terminal keeps within their 60 s (sign-ons are limited per
terminal, 1 a second after a burst: ``sign_ons_per_terminal_per_s``)."""


class KeySet(msgspec.Struct, frozen=True, gc=False):
    """The PIK and MAK of one sign-on, with the batch its 0810 opened (the ``3des``
    batch check) and when it was made (trio time: ``key_lifetime_h``)."""

    terminal_id: str
    keys: PosWorkingKeys
    batch: str
    made_at: float

    @property
    def layout(self) -> str:
        return self.keys.layout

    @property
    def pik(self) -> LmkKey:
        return self.keys.pik

    @property
    def mak(self) -> LmkKey:
        return self.keys.mak


class _Held(msgspec.Struct, gc=False):
    current: KeySet
    replaced: list[tuple[KeySet, float]] = msgspec.field(default_factory=list)
    """Sets this terminal's sign-ons replaced, newest first, with when: each verifies
    for ``previous_valid_s`` after its replacement; the newest is kept after that too,
    so that a request under it is told 77 (it missed its new keys), not A0."""


class MacRefused(TransactionRefused):
    """97, 77 or A0 before anything else (security.md, steps 1-3): answered without 64
    and 37, not journaled, sent to no bank. ``event``: the security event to write (A0)."""

    def __init__(self, code: str, message: str, *, event: str | None = None) -> None:
        super().__init__(code, message, field="64" if code == "A0" else "41")
        self.event = event


class PinSource(msgspec.Struct, frozen=True, gc=False):
    """A PIN as it came from a terminal: its block (52, or 62 from an SM4 terminal)
    under the PIK of the key set that verified the request's MAC. Held in memory only,
    until the bank answers; its repr shows neither block nor PAN."""

    block: bytes
    pik: LmkKey

    def __repr__(self) -> str:
        return f"PinSource({self.pik!r})"

    __str__ = __repr__


class TerminalKeys:
    """Every terminal's current key set (and those it replaced, for 60 s), bounded:
    past ``max_terminals`` the longest-unsigned-on terminal is forgotten (it is then
    answered 77 once, as after a restart)."""

    def __init__(
        self,
        module: SecurityModule,
        *,
        lifetime_s: float,
        previous_valid_s: float = PREVIOUS_VALID_S,
        max_terminals: int = DEFAULT_MAX_TERMINALS,
    ) -> None:
        self.module = module
        self.lifetime_s = lifetime_s
        self.previous_valid_s = previous_valid_s
        self.max_terminals = max_terminals
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self.sign_ons = 0
        self.mac_failures = 0

    def __len__(self) -> int:
        return len(self._held)

    def forget(self) -> None:
        """Drops every key set (a test's restart; each terminal is then answered 77)."""
        self._held.clear()

    # -- the terminal's entry --------------------------------------------------------

    def entry(self, terminal_id: str) -> tuple[KeyName, TerminalProfile] | None:
        """The TMK and profile of ``terminal_id``: its own entry, else a ``*`` entry."""
        for owner in (terminal_id, WILDCARD):
            name = key_name("tmk", owner)
            try:
                return name, self.module.terminal_profile(name)
            except UnknownKeyError:
                continue
        return None

    @staticmethod
    def merchant_matches(profile: TerminalProfile, merchant_id: str) -> bool:
        return profile.merchant in (WILDCARD, merchant_id)

    # -- sign-on ---------------------------------------------------------------------

    def check_sign_on(self, terminal_id: str, merchant_id: str, layout: str) -> KeyName:
        """The TMK for a sign-on; else 97 (no entry), 03 (not its merchant) or 40 (a
        60.3 its entry does not allow: checked again when the keys are made)."""
        found = self.entry(terminal_id)
        if found is None:
            raise TransactionRefused("97", f"terminal {terminal_id} is not registered", field="41")
        name, profile = found
        if not self.merchant_matches(profile, merchant_id):
            raise TransactionRefused(
                "03", f"merchant {merchant_id} is not the terminal's", field="42"
            )
        if layout not in LAYOUTS or (layout == "001" and not profile.allow_single_des):
            raise TransactionRefused("40", f"60.3 = {layout!r} is not allowed", field="60")
        if profile.require_sm4 and layout != "005":
            raise TransactionRefused("40", "this terminal must sign on with 60.3 = 005", field="60")
        return name

    def sign_on(
        self, tmk: KeyName, terminal_id: str, layout: str, batch: str, now: float
    ) -> PosWorkingKeys:
        """Fresh keys for the terminal, in force from now; the set they replace stays
        valid ``previous_valid_s``. 40 for a layout of the other cipher."""
        try:
            keys = self.module.make_pos_working_keys(tmk, layout)
        except LayoutNotAllowedError as exc:
            raise TransactionRefused("40", str(exc), field="60") from None
        fresh = KeySet(terminal_id=terminal_id, keys=keys, batch=batch, made_at=now)
        held = self._held.pop(terminal_id, None)
        if held is None:
            held = _Held(current=fresh)
        else:
            replaced = [(held.current, now)] + [
                (old, at) for old, at in held.replaced if now - at < self.previous_valid_s
            ]
            held = _Held(current=fresh, replaced=replaced[:MAX_REPLACED])
        self._held[terminal_id] = held
        while len(self._held) > self.max_terminals:
            self._held.popitem(last=False)
        self.sign_ons += 1
        return keys

    # -- a MAC'd request ---------------------------------------------------------------

    def verify(
        self,
        terminal_id: str,
        data: bytes,
        fields: Mapping[int, object],
        now: float,
    ) -> KeySet:
        """security.md's steps 1-3 for a message that takes a MAC (``data``: the ISO
        8583 message as received, ``fields``: as decoded): the key set that verified
        it, else :class:`MacRefused` (97, 77 or A0)."""
        if self.entry(terminal_id) is None:
            raise MacRefused("97", f"terminal {terminal_id} is not registered")
        held = self._held.get(terminal_id)
        if held is None:
            raise MacRefused("77", "no working keys: sign on")
        current = held.current
        if now - current.made_at > self.lifetime_s:
            raise MacRefused("77", "working keys expired: sign on")
        mac = fields.get(64)
        if not isinstance(mac, bytes) or len(mac) != MAC_BYTES or not data.endswith(mac):
            self.mac_failures += 1
            raise MacRefused("A0", "no MAC", event="pos_mac_missing")
        mab = data[:-MAC_BYTES]
        if self.module.verify_pos_mac(current.mak, mab, mac):
            return current
        for previous, replaced_at in held.replaced:
            if self.module.verify_pos_mac(previous.mak, mab, mac):
                if now - replaced_at < self.previous_valid_s:
                    return previous
                raise MacRefused("77", "MAC under replaced keys: sign on")
        self.mac_failures += 1
        raise MacRefused("A0", "MAC verification failed", event="pos_mac_failed")

    def check_after_mac(
        self, keys: KeySet, profile_merchant_id: str, mti: str, reserved: object
    ) -> None:
        """Steps 4 and 5: 03 when 42 is not the entry's merchant; 12 for a 0100, 0200 or
        0220 under a ``3des`` key set whose 60.2 is not its batch."""
        found = self.entry(keys.terminal_id)
        if found is None or not self.merchant_matches(found[1], profile_merchant_id):
            raise TransactionRefused(
                "03", f"merchant {profile_merchant_id} is not the terminal's", field="42"
            )
        if keys.layout != "005" and mti in BATCH_CHECKED_MTIS:
            batch = reserved[2:8] if isinstance(reserved, str) else None
            if batch != keys.batch:
                raise TransactionRefused(
                    "12", f"batch {batch} is not the terminal's current {keys.batch}", field="60"
                )

    def pin(self, keys: KeySet, mti: str, fields: Mapping[int, object]) -> PinSource | None:
        """The PIN of a 0100 or 0200 whose 22 says one is sent: 53 checked against the
        key set, the block from 52 (``3des``) or 62 (``sm4``); 30 naming the field when
        one is missing, present against the rule, or 53 is not the key set's. None when
        the request carries no PIN (a 52 or 53 in another request is ignored)."""
        if mti not in PIN_MTIS:
            return None
        entry_mode = fields.get(22)
        with_pin = isinstance(entry_mode, str) and len(entry_mode) >= 3 and entry_mode[2] == "1"
        block_field = 62 if keys.layout == "005" else 52
        other_field = 52 if block_field == 62 else None
        if not with_pin:
            for number in (52, 53, *((62,) if block_field == 62 else ())):
                if number in fields:
                    raise TransactionRefused(
                        "30", f"field {number} without a PIN (22 = {entry_mode})", field=str(number)
                    )
            return None
        control = fields.get(53)
        if control is None:
            raise TransactionRefused("30", "mandatory field 53 is missing", field="53")
        if control != SECURITY_CONTROL[keys.layout]:
            raise TransactionRefused("30", "field 53 is not that of the key set", field="53")
        if other_field is not None and other_field in fields:
            raise TransactionRefused("30", "an SM4 terminal's PIN block goes in 62", field="52")
        block = fields.get(block_field)
        if not isinstance(block, bytes):
            raise TransactionRefused(
                "30", f"mandatory field {block_field} is missing", field=str(block_field)
            )
        expected = 16 if block_field == 62 else 8
        if len(block) != expected:
            raise TransactionRefused(
                "30", f"field {block_field} is not a {expected}-byte PIN block",
                field=str(block_field),
            )  # fmt: skip
        return PinSource(block=block, pik=keys.pik)

    def mac(self, keys: KeySet, mab: bytes) -> bytes:
        return self.module.make_pos_mac(keys.mak, mab)
