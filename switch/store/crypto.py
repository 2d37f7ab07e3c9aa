"""Card data at rest (PCI DSS 3.3, 3.5).

A card number is kept only as: its masked form (first 6 / last 4), a keyed HMAC for
look-ups (comparable, not reversible), and AES-256-GCM ciphertext for what must be sent
to a bank again (reversals, voids, refunds). Track 2, PIN block and CVV2 are never
written anywhere: nothing here takes them.

Keys come from a key file or an environment variable named in config. Each ciphertext
and each HMAC starts with its key's id, so keys rotate: the active key seals and
hashes, every key still in the file opens and compares (an HMAC from before ids were
prefixed is compared under every key). Retire a key only once nothing sealed or
hashed under it is still needed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import tomllib
from pathlib import Path
from typing import Final

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from switch.errors import CardDataUnreadable, ConfigError

NONCE_BYTES: Final = 12
KEY_BYTES: Final = 32
NONCE_POOL: Final = 256
MAC_BYTES: Final = 32
"""HMAC-SHA256; stored behind its key's id (1 byte)."""
KEY_FILE_MODE: Final = 0o600
"""A key file opens every sealed card number: only its owner reads it."""
OTHERS_PERMISSIONS: Final = stat.S_IRWXG | stat.S_IRWXO
"""A key file with any of these is refused (``demo = true`` excepted: its keys are
published with the code and protect nothing)."""


class CardKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One generation of keys: ``id`` (1..255) prefixes what it seals."""

    id: int
    hmac_key: str
    """Hex, 32 bytes: keys the look-up HMAC."""
    aes_key: str
    """Hex, 32 bytes: AES-256-GCM."""


class CardKeyFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    active: int
    """The id of the key that seals; the others only open."""
    keys: tuple[CardKey, ...]
    demo: bool = False
    """Set in the demo key file: logged loudly at start-up."""


class CardVault:
    """Seals and opens card numbers, and computes their look-up HMACs."""

    def __init__(self, key_file: CardKeyFile) -> None:
        self.demo = key_file.demo
        self._nonce_pool = b""
        self._nonce_offset = 0
        self._aead: dict[int, AESGCM] = {}
        hmac_keys: dict[int, bytes] = {}
        for key in key_file.keys:
            if not 1 <= key.id <= 255:
                raise ConfigError(f"card key id {key.id} is outside 1..255")
            aes, mac = _hex_key(key.aes_key, key.id), _hex_key(key.hmac_key, key.id)
            self._aead[key.id] = AESGCM(aes)
            hmac_keys[key.id] = mac
        if key_file.active not in self._aead:
            raise ConfigError(f"active card key {key_file.active} is not among the keys")
        self._active = key_file.active
        # Keyed once each: copying a keyed state is cheaper than keying.
        self._hmacs = {
            key_id: hmac.new(key, digestmod=hashlib.sha256) for key_id, key in hmac_keys.items()
        }
        self._active_prefix = bytes([key_file.active])

    def lookup(self, pan: str) -> bytes:
        return self.digest(pan)

    def card_hashes(self, pan: str) -> tuple[str, ...]:
        """The card's look-up hash under each key held, the active key's first,
        lowercase hexadecimal without the key id (risk.md: what a rule names a card by,
        and what ``switch risk card-hash`` prints)."""
        others = (key_id for key_id in self._hmacs if key_id != self._active)
        return tuple(self._mac(key_id, pan).hex() for key_id in (self._active, *others))

    def digest(self, text: str | bytes) -> bytes:
        """Keyed HMAC-SHA256 under the active key, behind its id: comparable with
        :meth:`matches`, not reversible without the key."""
        return self._active_prefix + self._mac(self._active, text)

    def _mac(self, key_id: int, text: str | bytes) -> bytes:
        mac = self._hmacs[key_id].copy()
        mac.update(text.encode() if isinstance(text, str) else text)
        return mac.digest()

    def matches(self, text: str | bytes, stored: bytes) -> bool:
        """Whether ``stored`` is the HMAC of ``text`` under a key held: its own key's
        (named by its first byte), or any key for one stored before ids were prefixed."""
        if len(stored) == MAC_BYTES + 1:
            key_id = stored[0]
            if key_id not in self._hmacs:
                return False
            return hmac.compare_digest(self._mac(key_id, text), stored[1:])
        if len(stored) == MAC_BYTES:
            return any(hmac.compare_digest(self._mac(k, text), stored) for k in self._hmacs)
        return False

    def seal(self, pan: str, *, context: bytes = b"pan") -> bytes:
        nonce = self._nonce()
        key_id = self._active
        sealed = self._aead[key_id].encrypt(nonce, pan.encode(), context)
        return bytes([key_id]) + nonce + sealed

    def _nonce(self) -> bytes:
        """A random nonce, from a pool filled by one system call per NONCE_POOL nonces
        (a getrandom call per seal cost as much as the seal itself)."""
        if self._nonce_offset >= len(self._nonce_pool):
            self._nonce_pool = os.urandom(NONCE_BYTES * NONCE_POOL)
            self._nonce_offset = 0
        start = self._nonce_offset
        self._nonce_offset = start + NONCE_BYTES
        return self._nonce_pool[start : start + NONCE_BYTES]

    def open(self, blob: bytes, *, context: bytes = b"pan") -> str:
        """The sealed text; CardDataUnreadable when no key held opens it (its key was
        retired, or replaced by another under the same id, or the data is damaged)."""
        if len(blob) <= 1 + NONCE_BYTES:
            raise CardDataUnreadable("stored card data is damaged")
        key_id, nonce, sealed = blob[0], blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        aead = self._aead.get(key_id)
        if aead is None:
            raise CardDataUnreadable(f"card key {key_id} is needed to open stored card data")
        try:
            return aead.decrypt(nonce, sealed, context).decode()
        except InvalidTag:
            raise CardDataUnreadable(
                f"stored card data does not open with card key {key_id} (replaced?)"
            ) from None


def _hex_key(text: str, key_id: int) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"card key {key_id}: not hex") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"card key {key_id}: must be {KEY_BYTES} bytes, not {len(key)}")
    return key


def load_card_keys(*, key_file: Path | None, key_env: str | None) -> CardKeyFile:
    """The key file's content, from the environment variable (TOML text) when it is set,
    else from the file; ConfigError, in one line, for a file whose mode lets anyone but
    its owner in (group or other permissions), unless it is a demo file."""
    mode = KEY_FILE_MODE
    if key_env and os.environ.get(key_env):
        text, source = os.environ[key_env], f"${key_env}"
    elif key_file is not None:
        try:
            with key_file.open() as file:
                mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)  # of the file read
                text, source = file.read(), str(key_file)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read card keys from {key_file}: {exc}") from exc
    else:
        raise ConfigError("no card keys: set [journal] key_file or key_env")
    try:
        keys = msgspec.convert(tomllib.loads(text), CardKeyFile)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"card keys in {source}: {exc}") from exc
    if mode & OTHERS_PERMISSIONS and not keys.demo:
        raise ConfigError(
            f"card key file {key_file} is mode {mode:04o}: users other than its owner "
            f"can reach the keys that open every stored card number (chmod 600 {key_file})"
        )
    return keys


def new_key_file_text(key_id: int = 1) -> str:
    """A fresh key file (``switch keys new``)."""
    return (
        f"active = {key_id}\n\n[[keys]]\nid = {key_id}\n"
        f'hmac_key = "{os.urandom(KEY_BYTES).hex()}"\naes_key = "{os.urandom(KEY_BYTES).hex()}"\n'
    )


def write_new_key_file(path: Path, key_id: int = 1) -> None:
    """Writes a fresh key file to ``path``, created 0600 (never another mode, not even
    for a moment); FileExistsError rather than overwrite one (the keys it holds may be
    the only way to open what they sealed). A file left half written is removed."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    try:
        os.fchmod(descriptor, KEY_FILE_MODE)  # exactly 0600, whatever the umask
        with open(descriptor, "w", closefd=False) as file:
            file.write(new_key_file_text(key_id))
        os.fsync(descriptor)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(descriptor)
