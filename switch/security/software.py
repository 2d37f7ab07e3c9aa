"""The software security module: security.md's algorithms on ``cryptography``, with the
LMK and the key store in this process. For development, tests and demos; in production a
payment HSM implements the same port (docs/design.md).

Clear keys exist only inside these methods: a stored key is opened from its record, a
working key from its :class:`LmkKey`, used, and dropped. What leaves is encrypted (under
the LMK, a TMK or a ZMK), a KCV, a MAC, a translated PIN block or a signature. The one
exception is a new online secret, written once to its delivery file and nowhere else.

Every key operation writes a ``security_event`` line: its kind, the key's kind and
owner and its KCV (6 characters), never more.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal, cast

import structlog

from switch.files import open_private
from switch.security import algorithms as alg
from switch.security.errors import (
    KcvMismatchError,
    KeyLengthError,
    KeyStoreError,
    KeyUsageError,
    LayoutNotAllowedError,
    OperatorInputError,
    PinBlockFormatError,
    UnknownKeyError,
)
from switch.security.keystore import KeyRecord, KeyStore, KeyStoreFile, Lmk
from switch.security.port import (
    BankKeys,
    KeyComponent,
    KeyInfo,
    KeyKind,
    KeyName,
    LmkKey,
    PosKeyLayout,
    PosWorkingKeys,
    TerminalProfile,
    TmkCipher,
    key_name,
    operator_kcv,
)
from switch.store.crypto import CardKey, CardKeyFile, CardVault

log = structlog.get_logger()

ONLINE_SECRET_BYTES: Final = 32
MAX_ACTIVE_ONLINE_KEYS: Final = 2
"""A principal's active keys: a new one is deployed before the old one is revoked."""
KEY_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
PRINCIPAL: Final = re.compile(r"(merchant:[0-9A-Za-z]{1,15}|app:[A-Za-z0-9._-]{1,40})")
OWNER: Final = re.compile(r"[A-Za-z0-9._-]{1,40}")
KCV_ENTRY: Final = re.compile(r"[0-9A-Fa-f]{6}|[0-9A-Fa-f]{8}")
LAYOUT_CIPHERS: Final[dict[str, tuple[alg.KeyCipher, alg.KeyCipher, alg.KeyCipher]]] = {
    # 60.3: (the TMK's cipher, the PIK's, the MAK's)
    "003": ("3des", "3des", "des"),
    "005": ("sm4", "sm4", "sm4"),
    "001": ("3des", "des", "des"),
}
FIELD_62_BYTES: Final = {"003": 40, "005": 40, "001": 24}
MAC_KEYS_KEPT: Final = 256
"""ZAKs kept prepared for X9.19 (two per link in a key change, old and new)."""
CARD_KINDS: Final = ("lookup", "sealing")
CARD_KEY_BYTES: Final = 32
MAX_CARD_KEY_ID: Final = 255
"""A card-data key id is the first byte of every hash and seal it makes."""
ONLINE_KEYS_KEPT: Final = 4096
"""Online secrets kept prepared for HMAC (opened from the LMK once, not per frame)."""
DEMO_ONLINE_SECRET: Final = bytes.fromhex(
    "dd245b45470baa3ea93f22b6396f41506ec902e2e5f24e96f27225a6d09cdb93"
)
"""security.md's sample online secret: every DEMO online key's. Published, so never real."""
DEMO_APP_KEY_ID: Final = "demo-app"
DEMO_APP_PRINCIPAL: Final = "app:wallet"
DEMO_MERCHANT_KEY_PREFIX: Final = "demo-m-"
"""``demo-m-<merchant id>`` is a DEMO key of ``merchant:<merchant id>``, for any id."""
_DEMO_MERCHANT_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,15}")


def demo_online_principal(key_id: str) -> str | None:
    """The principal of a DEMO online key id (``demo-app``, ``demo-m-<merchant id>``),
    or None for any other id."""
    if key_id == DEMO_APP_KEY_ID:
        return DEMO_APP_PRINCIPAL
    if key_id.startswith(DEMO_MERCHANT_KEY_PREFIX):
        merchant = key_id[len(DEMO_MERCHANT_KEY_PREFIX) :]
        if _DEMO_MERCHANT_ID.fullmatch(merchant):
            return f"merchant:{merchant}"
    return None
POS_MAC_KEYS_KEPT: Final = 8192
"""MAKs kept prepared for POS MACs: the terminals transacting now (a few KB each)."""


def security_event(kind: str, **fields: str | int) -> None:
    """One ``security_event`` line. Callers pass names, KCVs, channels, STANs: never a
    key, MAC, PIN block or full PAN."""
    log.info("security_event", kind=kind, **fields)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _kcv_hex(kcv: bytes) -> str:
    return kcv.hex().upper()


def _info(record: KeyRecord) -> KeyInfo:
    return KeyInfo(
        kind=record.kind,
        owner=record.owner,
        cipher=record.cipher,
        kcv=record.kcv[:6],
        state="revoked" if record.revoked is not None else "active",
        created=record.created,
        revoked=record.revoked,
        merchant=record.merchant,
        allow_single_des=record.allow_single_des,
        require_sm4=record.require_sm4,
        principal=record.principal,
    )


def kcv_matches(entered: str, kcv: bytes) -> bool:
    """An operator's 6 or 8 hexadecimal characters against a KCV (any case)."""
    if KCV_ENTRY.fullmatch(entered) is None:
        return False
    return alg.macs_equal(entered.upper().encode(), _kcv_hex(kcv)[: len(entered)].encode())


def component_kcv(cipher: TmkCipher, component: bytes) -> bytes:
    """A component's KCV (what its form shows), to check it as it is entered."""
    return alg.kcv(cipher, component)


class SoftwareSecurityModule:
    """:class:`switch.security.port.SecurityModule` in software. ``random_bytes`` makes
    the working keys and online secrets (the OS's secure source; tests give fixed ones to
    reproduce security.md's vectors)."""

    def __init__(
        self,
        store: KeyStore,
        lmk: Lmk,
        *,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        clock: Callable[[], datetime] = _now,
        demo_online_keys: bool = False,
    ) -> None:
        self._store = store
        self._lmk = lmk
        self._random = random_bytes
        self._clock = clock
        self._records: dict[KeyName, KeyRecord] = {}
        self._x919: dict[bytes, alg.X919Key] = {}
        """Prepared ZAKs by their blob under the LMK (a blob opens under one name only)."""
        self._pos_macs: dict[tuple[str, str, str, bytes], alg.PosMacKey] = {}
        """Prepared MAKs by their blob under the LMK, as ``_x919``."""
        self._pin_keys: dict[tuple[str, str, str, bytes], alg.PinKey] = {}
        """Prepared PIKs and ZPKs by their blob under the LMK, as ``_pos_macs``."""
        self._online: dict[str, tuple[str, hmac.HMAC]] = {}
        """Active online keys by id: their principal and their secret prepared for HMAC."""
        self.demo_online_keys = demo_online_keys
        """``demo-app`` and ``demo-m-<merchant id>`` are keys, with the published secret."""
        self._store_seen: tuple[int, int, int] | None = None
        self.reload()

    @classmethod
    def create_store(cls, store: KeyStore, lmk: Lmk) -> None:
        """A new, empty store under ``lmk`` (never over an existing one)."""
        if store.exists():
            raise KeyStoreError(f"key store {store.path} exists, not overwritten")
        with store.locked():
            store.write(store.empty(lmk))
        security_event("key_store_created", lmk_check=lmk.check[:6])

    def reload(self) -> None:
        """Reads the store again (after an operator command changed it). Every record is
        opened and its KCV checked now, so a store that was altered, or a record moved
        to another name, stops the start in one line rather than a sign-on later."""
        store = self._store.read(self._lmk)
        for record in store.keys:
            clear = self._lmk.open(record.name, record.blob)
            if record.kind in ("online", "lookup"):
                check = alg.hmac_key_check_value(clear)
            elif record.kind == "sealing":
                check = alg.aes_key_check_value(clear)
            elif record.cipher in alg.KEY_BYTES and len(clear) == alg.KEY_BYTES[record.cipher]:
                check = alg.kcv(record.cipher, clear)  # type: ignore[arg-type]
            else:
                raise KeyStoreError(f"key {record.name} is not a {record.cipher} key")
            if _kcv_hex(check) != record.kcv:
                raise KeyStoreError(f"key {record.name} does not match its KCV {record.kcv[:6]}")
        self._set_records(store.keys)
        self._store_seen = self._store_stamp()

    def _set_records(self, records: Sequence[KeyRecord]) -> None:
        self._records = {record.name: record for record in records}
        self._online.clear()

    def _store_stamp(self) -> tuple[int, int, int] | None:
        try:
            found = os.stat(self._store.path)
        except OSError:
            return None
        return (found.st_ino, found.st_mtime_ns, found.st_size)

    def refresh(self) -> None:
        """Reads the store again if an operator command has replaced it since (a key
        revoked or made by ``switch keys online``): revoking takes effect at once. A
        store that no longer reads keeps the keys held, with an error line."""
        stamp = self._store_stamp()
        if stamp == self._store_seen:
            return
        try:
            self.reload()
        except KeyStoreError as exc:
            self._store_seen = stamp
            log.error("key_store_unreadable", error=str(exc))

    def warn_at_start(self) -> bool:
        """security.md: while the software module holds keys, the switch says so at every
        start (a payment HSM belongs in production). Whether it warned."""
        if not self._records:
            return False
        log.warning(
            "software_security_module",
            message="keys are held by the software security module, for development, tests "
            "and demos only; production needs a payment HSM",
            keys=len(self._records),
            lmk_check=self.lmk_check,
        )
        return True

    @property
    def lmk_check(self) -> str:
        return self._lmk.check[:6]

    def holds_real_keys(self) -> bool:
        """Whether any key is stored (the start-up warning of security.md is due)."""
        return bool(self._records)

    # -- clear keys, inside only --------------------------------------------------------

    def _stored(self, name: KeyName, kind: str) -> tuple[KeyRecord, bytes]:
        record = self._records.get(name)
        if record is None or record.kind != kind or record.revoked is not None:
            raise UnknownKeyError(f"no active {kind} named {name}")
        return record, self._lmk.open(record.name, record.blob)

    def _open(self, key: LmkKey, *kinds: KeyKind) -> bytes:
        if key.kind not in kinds:
            raise KeyUsageError(f"{key.name} is a {key.kind}, not a {' or '.join(kinds)}")
        clear = self._lmk.open(key.name, key.blob)
        if len(clear) != alg.KEY_BYTES[key.cipher]:
            raise KeyLengthError(f"{key.name} is not a {key.cipher} key")
        return clear

    def _seal(self, kind: KeyKind, owner: str, cipher: alg.KeyCipher, clear: bytes) -> LmkKey:
        return LmkKey(
            kind=kind,
            owner=owner,
            cipher=cipher,
            kcv=alg.kcv(cipher, clear),
            blob=self._lmk.seal(key_name(kind, owner), clear),
        )

    def _fresh(self, cipher: alg.KeyCipher) -> bytes:
        key = self._random(alg.KEY_BYTES[cipher])
        return key if cipher == "sm4" else alg.with_odd_parity(key)

    # -- POS ----------------------------------------------------------------------------

    def _tmk(self, tmk: KeyName, layout: str, *, enforce: bool) -> tuple[KeyRecord, bytes]:
        """The TMK for a sign-on with this 60.3; with ``enforce``, the switch's side, also
        what the terminal's entry allows (001, ``require_sm4``)."""
        record, clear = self._stored(tmk, "tmk")
        if layout not in LAYOUT_CIPHERS:
            raise LayoutNotAllowedError(f"60.3 = {layout!r} is no working key layout")
        if LAYOUT_CIPHERS[layout][0] != record.cipher:
            raise LayoutNotAllowedError(
                f"60.3 = {layout} needs a {LAYOUT_CIPHERS[layout][0]} TMK; {tmk} is {record.cipher}"
            )
        if enforce and layout == "001" and not record.allow_single_des:
            raise LayoutNotAllowedError(f"60.3 = 001 is not allowed for {tmk}")
        return record, clear

    def terminal_profile(self, tmk: KeyName) -> TerminalProfile:
        record = self._records.get(tmk)
        if record is None or record.kind != "tmk" or record.revoked is not None:
            raise UnknownKeyError(f"no active tmk named {tmk}")
        return TerminalProfile(
            merchant=record.merchant or "",
            allow_single_des=record.allow_single_des,
            require_sm4=record.require_sm4,
        )

    def make_pos_working_keys(self, tmk: KeyName, layout: str) -> PosWorkingKeys:
        record, tmk_clear = self._tmk(tmk, layout, enforce=True)
        tmk_cipher, pik_cipher, mak_cipher = LAYOUT_CIPHERS[layout]
        pik, mak = self._fresh(pik_cipher), self._fresh(mak_cipher)
        keys = PosWorkingKeys(
            layout=cast(PosKeyLayout, layout),
            pik=self._seal("pik", record.owner, pik_cipher, pik),
            mak=self._seal("mak", record.owner, mak_cipher, mak),
            pik_under_tmk=alg.wrap_key(tmk_cipher, tmk_clear, pik),
            mak_under_tmk=alg.wrap_key(tmk_cipher, tmk_clear, mak),
        )
        security_event(
            "working_keys_made", key=tmk, layout=layout,
            pik_kcv=operator_kcv(keys.pik.kcv), mak_kcv=operator_kcv(keys.mak.kcv),
        )  # fmt: skip
        return keys

    def import_pos_working_keys(self, tmk: KeyName, layout: str, field_62: bytes) -> PosWorkingKeys:
        record, tmk_clear = self._tmk(tmk, layout, enforce=False)
        tmk_cipher, pik_cipher, mak_cipher = LAYOUT_CIPHERS[layout]
        if len(field_62) != FIELD_62_BYTES[layout]:
            raise KcvMismatchError(f"field 62 of 60.3 = {layout} is {FIELD_62_BYTES[layout]} bytes")
        pik_len, mak_len = alg.KEY_BYTES[pik_cipher], alg.KEY_BYTES[mak_cipher]
        pik_under = field_62[:pik_len]
        pik_kcv = field_62[pik_len : pik_len + 4]
        mak_under = field_62[pik_len + 4 : pik_len + 4 + mak_len]
        mak_kcv = field_62[-4:]
        pik = alg.unwrap_key(tmk_cipher, tmk_clear, pik_under)
        mak = alg.unwrap_key(tmk_cipher, tmk_clear, mak_under)
        if not alg.macs_equal(alg.kcv(pik_cipher, pik), pik_kcv) or not alg.macs_equal(
            alg.kcv(mak_cipher, mak), mak_kcv
        ):
            security_event("working_keys_refused", key=tmk, layout=layout)
            raise KcvMismatchError("a working key of field 62 does not match its KCV")
        keys = PosWorkingKeys(
            layout=cast(PosKeyLayout, layout),
            pik=self._seal("pik", record.owner, pik_cipher, pik),
            mak=self._seal("mak", record.owner, mak_cipher, mak),
            pik_under_tmk=pik_under,
            mak_under_tmk=mak_under,
        )
        security_event(
            "working_keys_imported", key=tmk, layout=layout,
            pik_kcv=operator_kcv(keys.pik.kcv), mak_kcv=operator_kcv(keys.mak.kcv),
        )  # fmt: skip
        return keys

    def make_pos_mac(self, mak: LmkKey, mab: bytes) -> bytes:
        # On every POS request and answer: the MAK is opened and its cipher made once
        # per key, then kept here (bounded: the terminals transacting now).
        # Keyed by name, cipher and blob: a blob relabelled (another owner or kind) is
        # not found here, and fails to open under its new name's associated data.
        cache_key = (mak.kind, mak.owner, mak.cipher, mak.blob)
        prepared = self._pos_macs.get(cache_key)
        if prepared is None:
            prepared = alg.PosMacKey(mak.cipher, self._open(mak, "mak"))
            if len(self._pos_macs) >= POS_MAC_KEYS_KEPT:
                del self._pos_macs[next(iter(self._pos_macs))]  # the oldest
            self._pos_macs[cache_key] = prepared
        return prepared.mac(mab)

    def verify_pos_mac(self, mak: LmkKey, mab: bytes, mac: bytes) -> bool:
        return alg.macs_equal(self.make_pos_mac(mak, mab), mac)

    def _pin_key(self, key: LmkKey, kind: KeyKind) -> alg.PinKey:
        # On every request with a PIN: the PIK and the ZPK are opened and their cipher
        # contexts made once per key, then kept here (bounded, as the POS MAKs).
        if key.kind != kind:  # before the cache, which holds PIKs and ZPKs both
            raise KeyUsageError(f"{key.name} is a {key.kind}, not a {kind}")
        cache_key = (key.kind, key.owner, key.cipher, key.blob)
        prepared = self._pin_keys.get(cache_key)
        if prepared is None:
            prepared = alg.PinKey(key.cipher, self._open(key, kind))
            if len(self._pin_keys) >= POS_MAC_KEYS_KEPT:
                del self._pin_keys[next(iter(self._pin_keys))]  # the oldest
            self._pin_keys[cache_key] = prepared
        return prepared

    def translate_pin(self, pik: LmkKey, zpk: LmkKey, pin_block: bytes, pan: str) -> bytes:
        try:
            return alg.translate_pin_block_with(
                self._pin_key(pik, "pik"), self._pin_key(zpk, "zpk"), pin_block, pan
            )
        except PinBlockFormatError as exc:
            # The caller's context (channel, terminal, STAN) is in the contextvars.
            security_event("pin_block_refused", key=pik.name, check=str(exc))
            raise

    # -- bank links ---------------------------------------------------------------------

    def make_bank_keys(self, zmk: KeyName, link: str) -> BankKeys:
        _, zmk_clear = self._stored(zmk, "zmk")
        zpk, zak = self._fresh("3des"), self._fresh("3des")
        keys = BankKeys(
            zpk=self._seal("zpk", link, "3des", zpk),
            zak=self._seal("zak", link, "3des", zak),
            zpk_under_zmk=alg.wrap_key("3des", zmk_clear, zpk),
            zak_under_zmk=alg.wrap_key("3des", zmk_clear, zak),
        )
        security_event(
            "bank_keys_made", key=zmk, link=link,
            zpk_kcv=operator_kcv(keys.zpk.kcv), zak_kcv=operator_kcv(keys.zak.kcv),
        )  # fmt: skip
        return keys

    def import_bank_keys(self, zmk: KeyName, link: str, field_48: str) -> BankKeys:
        _, zmk_clear = self._stored(zmk, "zmk")
        if len(field_48) != 80 or any(c not in "0123456789abcdefABCDEF" for c in field_48):
            raise KcvMismatchError("field 48 of a key change is 80 hexadecimal characters")
        raw = bytes.fromhex(field_48)
        zpk_under, zpk_kcv, zak_under, zak_kcv = raw[:16], raw[16:20], raw[20:36], raw[36:40]
        zpk = alg.unwrap_key("3des", zmk_clear, zpk_under)
        zak = alg.unwrap_key("3des", zmk_clear, zak_under)
        if not alg.macs_equal(alg.kcv("3des", zpk), zpk_kcv) or not alg.macs_equal(
            alg.kcv("3des", zak), zak_kcv
        ):
            security_event("bank_keys_refused", key=zmk, link=link)
            raise KcvMismatchError("a key of field 48 does not match its KCV")
        keys = BankKeys(
            zpk=self._seal("zpk", link, "3des", zpk),
            zak=self._seal("zak", link, "3des", zak),
            zpk_under_zmk=zpk_under,
            zak_under_zmk=zak_under,
        )
        security_event(
            "bank_keys_imported", key=zmk, link=link,
            zpk_kcv=operator_kcv(keys.zpk.kcv), zak_kcv=operator_kcv(keys.zak.kcv),
        )  # fmt: skip
        return keys

    def make_bank_mac(self, zak: LmkKey, mab: bytes) -> bytes:
        # On every bank message: the ZAK is opened and its ciphers made once per key,
        # then kept here (bounded; a link's keys change every key_change_h).
        prepared = self._x919.get(zak.blob)
        if prepared is None:
            prepared = alg.X919Key(self._open(zak, "zak"))
            if len(self._x919) >= MAC_KEYS_KEPT:
                del self._x919[next(iter(self._x919))]  # the oldest
            self._x919[zak.blob] = prepared
        return prepared.mac(mab)

    def verify_bank_mac(self, zak: LmkKey, mab: bytes, mac: bytes) -> bool:
        return alg.macs_equal(self.make_bank_mac(zak, mab), mac)

    # -- online -------------------------------------------------------------------------

    def _online_key(self, key_id: str) -> tuple[str, hmac.HMAC]:
        """The principal of an active online key and its secret prepared for HMAC;
        :class:`UnknownKeyError` for an unknown or revoked one."""
        prepared = self._online.get(key_id)
        if prepared is not None:
            return prepared
        record = self._records.get(key_name("online", key_id))
        if record is not None:
            if record.revoked is not None or record.principal is None:
                raise UnknownKeyError("unknown key")
            principal = record.principal
            secret = self._stored(record.name, "online")[1]
        else:
            demo = demo_online_principal(key_id) if self.demo_online_keys else None
            if demo is None:
                raise UnknownKeyError("unknown key")
            principal, secret = demo, DEMO_ONLINE_SECRET
        prepared = (principal, hmac.new(secret, digestmod=hashlib.sha256))
        if len(self._online) >= ONLINE_KEYS_KEPT:
            del self._online[next(iter(self._online))]  # the oldest
        self._online[key_id] = prepared
        return prepared

    def online_principal(self, key_id: str) -> str:
        """The store is looked at again first when it has changed (an operator's command
        replaced it), so a revocation takes effect at the next request."""
        self.refresh()
        return self._online_key(key_id)[0]

    def sign_online(self, key_id: str, ts: int, nonce: str, body: bytes) -> bytes:
        mac = self._online_key(key_id)[1].copy()
        mac.update(alg.signed_bytes(key_id, ts, nonce, body))
        return mac.digest()

    def verify_online(self, key_id: str, ts: int, nonce: str, body: bytes, sig: bytes) -> bool:
        return alg.macs_equal(self.sign_online(key_id, ts, nonce, body), sig)

    # -- operator commands --------------------------------------------------------------

    def _change(self, change: Callable[[KeyStoreFile], KeyStoreFile]) -> None:
        """Re-reads the store under its lock, changes it, replaces it whole."""
        with self._store.locked():
            store = self._store.read(self._lmk)
            changed = change(store)
            self._store.write(changed)
            self._set_records(changed.keys)
            self._store_seen = self._store_stamp()

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
        if kind not in ("tmk", "zmk"):
            raise OperatorInputError(f"keys from components are TMKs and ZMKs, not {kind}")
        if OWNER.fullmatch(owner) is None and not (kind == "tmk" and owner == "*"):
            raise OperatorInputError(f"{owner!r} is no terminal id or bank name")
        if kind == "zmk" and cipher != "3des":
            raise OperatorInputError("a ZMK is a 3des key")
        if kind == "tmk" and profile is None:
            raise OperatorInputError("a TMK needs its terminal's merchant")
        if profile is not None and profile.require_sm4 and cipher != "sm4":
            raise OperatorInputError("a terminal that requires 005 has an sm4 TMK")
        if profile is not None and profile.allow_single_des and cipher != "3des":
            raise OperatorInputError("60.3 = 001 is for a 3des TMK only")
        if not 2 <= len(components) <= 3:
            raise OperatorInputError("a key is made of 2 or 3 components")
        for number, component in enumerate(components, 1):
            if len(component.value) != alg.KEY_BYTES[cipher]:
                raise OperatorInputError(
                    f"component {number} is not {2 * alg.KEY_BYTES[cipher]} hexadecimal characters"
                )
            if not kcv_matches(component.kcv, component_kcv(cipher, component.value)):
                security_event("component_refused", key=key_name(kind, owner), component=number)
                raise OperatorInputError(f"component {number} does not match its KCV")
        clear = alg.xor_components([component.value for component in components])
        kcv = alg.kcv(cipher, clear)
        name = key_name(kind, owner)
        if not kcv_matches(confirm_kcv, kcv):
            security_event("key_not_confirmed", key=name, kcv=operator_kcv(kcv))
            raise OperatorInputError(f"the key's KCV is {operator_kcv(kcv)}, not the one confirmed")
        record = KeyRecord(
            kind=kind,
            owner=owner,
            cipher=cipher,
            kcv=_kcv_hex(kcv),
            blob=self._lmk.seal(name, clear),
            created=self._clock(),
            merchant=profile.merchant if profile else None,
            allow_single_des=profile.allow_single_des if profile else False,
            require_sm4=profile.require_sm4 if profile else False,
        )
        replaced: list[KeyRecord] = []

        def add(store: KeyStoreFile) -> KeyStoreFile:
            kept = []
            for existing in store.keys:
                if existing.name == name:
                    if not replace:
                        raise OperatorInputError(
                            f"{name} exists (KCV {existing.kcv[:6]}); --replace to replace it"
                        )
                    replaced.append(existing)
                else:
                    kept.append(existing)
            return KeyStoreFile(store.format, store.lmk_check, store.lmk_proof, (*kept, record))

        self._change(add)
        for old in replaced:
            security_event("key_replaced", key=name, kcv=old.kcv[:6])
        security_event("key_loaded", key=name, cipher=cipher, kcv=operator_kcv(kcv),
                       components=len(components))  # fmt: skip
        return _info(record)

    def create_online_key(
        self, principal: str, deliver_to: Path, key_id: str | None = None
    ) -> KeyInfo:
        if PRINCIPAL.fullmatch(principal) is None:
            raise OperatorInputError(
                f"principal {principal!r} is not merchant:<merchant id> or app:<name>"
            )
        secret = self._random(ONLINE_SECRET_BYTES)
        created = self._clock()
        chosen: list[KeyRecord] = []

        def add(store: KeyStoreFile) -> KeyStoreFile:
            active = [
                k for k in store.keys
                if k.kind == "online" and k.principal == principal and k.revoked is None
            ]  # fmt: skip
            if len(active) >= MAX_ACTIVE_ONLINE_KEYS:
                raise OperatorInputError(
                    f"{principal} has {len(active)} active keys; revoke one first"
                )
            new_id = key_id or _next_key_id(principal, store)
            if KEY_ID.fullmatch(new_id) is None:
                raise OperatorInputError(f"key id {new_id!r} is not 1-64 of [A-Za-z0-9._:-]")
            name = key_name("online", new_id)
            if any(k.name == name for k in store.keys):
                raise OperatorInputError(f"key id {new_id} exists")
            record = KeyRecord(
                kind="online",
                owner=new_id,
                cipher="hmac-sha256",
                kcv=_kcv_hex(alg.hmac_key_check_value(secret)),
                blob=self._lmk.seal(name, secret),
                created=created,
                principal=principal,
            )
            # Delivered first, in a new file: a store that failed to be written then
            # leaves a file whose key was never active (removed below), never an active
            # key whose secret no one got.
            _deliver(deliver_to, secret)
            chosen.append(record)
            return KeyStoreFile(
                store.format, store.lmk_check, store.lmk_proof, (*store.keys, record)
            )

        try:
            self._change(add)
        except BaseException:
            if chosen:
                deliver_to.unlink(missing_ok=True)
            raise
        record = chosen[0]
        security_event("online_key_created", key=record.name, principal=principal,
                       kcv=record.kcv[:6])  # fmt: skip
        return _info(record)

    def revoke_online_key(self, key_id: str) -> KeyInfo:
        name = key_name("online", key_id)
        revoked: list[KeyRecord] = []

        def revoke(store: KeyStoreFile) -> KeyStoreFile:
            keys = []
            for record in store.keys:
                if record.name == name:
                    if record.revoked is not None:
                        raise OperatorInputError(f"key {key_id} is already revoked")
                    record = _replace(record, revoked=self._clock())
                    revoked.append(record)
                keys.append(record)
            if not revoked:
                raise OperatorInputError(f"no online key {key_id}")
            return KeyStoreFile(store.format, store.lmk_check, store.lmk_proof, tuple(keys))

        self._change(revoke)
        security_event("online_key_revoked", key=name, kcv=revoked[0].kcv[:6])
        return _info(revoked[0])

    # -- card-data keys (security.md's look-up and sealing keys) ----------------------

    def card_key_ids(self) -> list[int]:
        """The ids of the card-data key pairs in the store, not retired, oldest first
        (the last one hashes and seals)."""
        active = {
            r.name for r in self._records.values()
            if r.kind in CARD_KINDS and r.revoked is None
        }  # fmt: skip
        return [
            int(record.owner) for record in self._records.values()
            if record.kind == "sealing" and record.revoked is None
            and key_name("lookup", record.owner) in active
        ]  # fmt: skip

    def card_vault(self) -> CardVault | None:
        """What hashes, matches, seals and opens card data in this process, under the
        stored card-data keys: the newest hashes and seals, every one not retired matches
        and opens. None when the store holds none."""
        ids = self.card_key_ids()
        if not ids:
            return None
        keys = tuple(
            CardKey(
                id=key_id,
                hmac_key=self._stored(key_name("lookup", str(key_id)), "lookup")[1].hex(),
                aes_key=self._stored(key_name("sealing", str(key_id)), "sealing")[1].hex(),
            )
            for key_id in ids
        )
        return CardVault(CardKeyFile(active=ids[-1], keys=keys))

    def _card_records(self, key_id: int, lookup: bytes, sealing: bytes) -> tuple[KeyRecord, ...]:
        if len(lookup) != CARD_KEY_BYTES or len(sealing) != CARD_KEY_BYTES:
            raise OperatorInputError(f"a card-data key is {CARD_KEY_BYTES} bytes")
        if not 1 <= key_id <= MAX_CARD_KEY_ID:
            raise OperatorInputError(f"card key id {key_id} is outside 1..{MAX_CARD_KEY_ID}")
        created = self._clock()
        return tuple(
            KeyRecord(
                kind=kind,
                owner=str(key_id),
                cipher=cipher,
                kcv=_kcv_hex(check(clear)),
                blob=self._lmk.seal(key_name(kind, str(key_id)), clear),
                created=created,
            )
            for kind, cipher, check, clear in (
                ("lookup", "hmac-sha256", alg.hmac_key_check_value, lookup),
                ("sealing", "aes-256-gcm", alg.aes_key_check_value, sealing),
            )
        )

    def add_card_keys(self, *, only_if_none: bool = False) -> int:
        """A new card-data key pair (random), which hashes and seals from then on; its id,
        one more than any so far (retired ones included). ``only_if_none``: only when
        the store holds no pair in use (several workers starting at once make one), else
        the newest's id."""
        lookup, sealing = self._random(CARD_KEY_BYTES), self._random(CARD_KEY_BYTES)
        chosen: list[int] = []

        def add(store: KeyStoreFile) -> KeyStoreFile:
            used = [int(k.owner) for k in store.keys if k.kind in CARD_KINDS]
            in_use = [int(k.owner) for k in store.keys if k.kind == "sealing" and k.revoked is None]
            if only_if_none and in_use:
                chosen.append(in_use[-1])
                return store
            chosen.append(max(used, default=0) + 1)
            records = self._card_records(chosen[0], lookup, sealing)
            return KeyStoreFile(
                store.format, store.lmk_check, store.lmk_proof, (*store.keys, *records)
            )

        self._change(add)
        security_event("card_keys_added", key=f"card:{chosen[0]}")
        return chosen[0]

    def import_card_keys(self, key_file: CardKeyFile) -> list[int]:
        """A card key file's keys (``[journal] key_file``) into the store, once, in one
        change of the store: its active key last, so that it hashes and seals. Ids
        already in the store with the same keys are skipped; with other keys, refused
        (what they sealed would no longer open). The ids imported."""
        CardVault(key_file)  # every key checked as it would be used (ConfigError naming it)
        ordered = sorted(key_file.keys, key=lambda k: (k.id == key_file.active, k.id))
        imported: list[int] = []

        def add(store: KeyStoreFile) -> KeyStoreFile:
            imported.clear()
            stored = {r.name: r for r in store.keys}
            added: list[KeyRecord] = []
            for key in ordered:
                lookup, sealing = bytes.fromhex(key.hmac_key), bytes.fromhex(key.aes_key)
                held = stored.get(key_name("lookup", str(key.id)))
                if held is not None:
                    if held.kcv != _kcv_hex(alg.hmac_key_check_value(lookup)):
                        raise OperatorInputError(
                            f"card key id {key.id} is in the store with other keys: not imported"
                        )
                    continue
                added.extend(self._card_records(key.id, lookup, sealing))
                imported.append(key.id)
            if not added:
                return store
            return KeyStoreFile(
                store.format, store.lmk_check, store.lmk_proof, (*store.keys, *added)
            )

        self._change(add)
        security_event("card_keys_imported", keys=len(imported))
        return imported

    def retire_card_keys(self, key_id: int) -> None:
        """Retires a card-data key pair: what it hashed no longer matches, what it sealed
        no longer opens. The newest (the one that hashes and seals) is refused."""
        ids = self.card_key_ids()
        if key_id not in ids:
            raise OperatorInputError(f"no card key {key_id} in use")
        if key_id == ids[-1]:
            raise OperatorInputError(
                f"card key {key_id} hashes and seals: add a new one first (switch keys card new)"
            )
        names = {key_name("lookup", str(key_id)), key_name("sealing", str(key_id))}
        now = self._clock()

        def retire(store: KeyStoreFile) -> KeyStoreFile:
            keys = tuple(_replace(r, revoked=now) if r.name in names else r for r in store.keys)
            return KeyStoreFile(store.format, store.lmk_check, store.lmk_proof, keys)

        self._change(retire)
        security_event("card_keys_retired", key=f"card:{key_id}")

    def list_keys(self) -> list[KeyInfo]:
        security_event("keys_listed", keys=len(self._records))
        return [_info(record) for record in sorted(self._records.values(), key=lambda r: r.name)]

    def rotate_lmk(self, new_lmk: Lmk) -> int:
        """Every record re-encrypted under ``new_lmk`` in one replacement of the store
        (complete, or the store as it was); the number of keys. This module then holds
        the new LMK; working keys made under the old one no longer open."""
        if new_lmk.check == self._lmk.check:
            raise OperatorInputError("the new LMK is the LMK in use")
        count = 0
        with self._store.locked():
            store = self._store.read(self._lmk)
            keys = []
            for record in store.keys:
                clear = self._lmk.open(record.name, record.blob)
                keys.append(_replace(record, blob=new_lmk.seal(record.name, clear)))
            rotated = KeyStoreFile(
                store.format, new_lmk.check, new_lmk.seal("lmk-check", b""), tuple(keys)
            )
            self._store.write(rotated)
            count = len(keys)
        old_check = self._lmk.check
        self._lmk = new_lmk
        self._x919.clear()
        self._pos_macs.clear()
        self._pin_keys.clear()
        self.reload()
        security_event("lmk_rotated", old_lmk_check=old_check[:6],
                       new_lmk_check=new_lmk.check[:6], keys=count)  # fmt: skip
        return count


def _replace(record: KeyRecord, **changes: object) -> KeyRecord:
    import msgspec

    return msgspec.structs.replace(record, **changes)


def _next_key_id(principal: str, store: KeyStoreFile) -> str:
    """``m-<merchant id>-<n>`` or ``a-<app name>-<n>``, n one more than the highest."""
    kind, _, who = principal.partition(":")
    prefix = f"{'m' if kind == 'merchant' else 'a'}-{who}-"
    used = [
        int(k.owner[len(prefix) :]) for k in store.keys
        if k.kind == "online" and k.owner.startswith(prefix) and k.owner[len(prefix) :].isdigit()
    ]  # fmt: skip
    return f"{prefix}{max(used, default=0) + 1}"


def _deliver(path: Path, secret: bytes) -> None:
    """The secret, once, as 64 lower-case hexadecimal characters in the new file ``path``."""
    descriptor = open_private(path, os.O_WRONLY | os.O_EXCL)
    try:
        os.write(descriptor, secret.hex().encode("ascii") + b"\n")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
