"""The key store: every stored key under the LMK, in one JSON file of mode 0600.

A record holds a key's kind, owner, cipher, profile flags, KCV, creation and revocation
times and the key itself encrypted under the LMK with AES-256-GCM (a fresh 12-byte nonce
per record, ``kind:owner`` as associated data, so a record moved to another name does
not open). The file also holds the LMK's check value, so a wrong LMK is a one-line
refusal rather than a failure at the first key.

The store is a file, not journal tables: it is small, read once at start, and changed
only by operator commands; a file replaced whole (written beside it, synced, renamed,
the folder synced) makes every change, LMK rotation included, complete or absent.
Operator commands hold an exclusive lock on ``<store>.lock`` while they change it.

The LMK is 32 random bytes, 64 hexadecimal characters in a file of mode 0600 or in an
environment variable. A file readable or writable by anyone but its owner (the store,
the LMK file) is refused in one line.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Final

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from switch.files import open_private, write_private
from switch.security.algorithms import aes_key_check_value
from switch.security.errors import KeyStoreError

LMK_BYTES: Final = 32
NONCE_BYTES: Final = 12
STORE_FORMAT: Final = 1
OTHERS_PERMISSIONS: Final = stat.S_IRWXG | stat.S_IRWXO
LMK_CHECK_AD: Final = b"lmk-check"


class KeyRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One stored key. ``blob``: nonce, then the AES-256-GCM ciphertext and tag."""

    kind: str
    owner: str
    cipher: str
    kcv: str
    """8 upper-case hexadecimal characters."""
    blob: bytes
    created: datetime
    revoked: datetime | None = None
    merchant: str | None = None
    allow_single_des: bool = False
    require_sm4: bool = False
    principal: str | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.owner}"

    def __repr__(self) -> str:
        return f"KeyRecord({self.name}, kcv={self.kcv[:6]})"

    __str__ = __repr__


class KeyStoreFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: int
    lmk_check: str
    """The LMK's check value (8 hexadecimal characters): AES-ECB of a zero block."""
    lmk_proof: bytes
    """AES-GCM of nothing under the LMK: the LMK opens this store."""
    keys: tuple[KeyRecord, ...] = ()


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(KeyStoreFile)


class Lmk:
    """The local master key: seals and opens key records. Holds the clear LMK; made only
    by :func:`load_lmk` and the software security module."""

    __slots__ = ("_aead", "check")

    def __init__(self, key: bytes) -> None:
        if len(key) != LMK_BYTES:
            raise KeyStoreError(f"an LMK is {LMK_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self.check = aes_key_check_value(key).hex().upper()

    def __repr__(self) -> str:
        return f"Lmk(check={self.check[:6]})"

    def seal(self, associated: str, clear: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, clear, associated.encode("utf-8"))

    def open(self, associated: str, blob: bytes) -> bytes:
        """The clear key; :class:`KeyStoreError` when the blob does not open under this LMK
        with this name (altered, moved to another name, or another LMK's)."""
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated.encode())
        except (InvalidTag, ValueError):
            raise KeyStoreError(f"key {associated} does not open under the LMK") from None


def new_lmk_text() -> str:
    return secrets.token_bytes(LMK_BYTES).hex() + "\n"


def write_new_lmk_file(path: Path) -> str:
    """A fresh LMK in the new file ``path`` (0600, never over an existing file); its
    check value."""
    text = new_lmk_text()
    descriptor = open_private(path, os.O_WRONLY | os.O_EXCL)
    try:
        os.write(descriptor, text.encode("ascii"))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return Lmk(bytes.fromhex(text)).check


def check_private(path: Path, what: str) -> None:
    """One line, and no start, when ``path`` is open to anyone but its owner."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyStoreError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise KeyStoreError(f"{what} {path}: {exc.strerror}") from None
    if mode & OTHERS_PERMISSIONS:
        raise KeyStoreError(
            f"{what} {path} is mode {stat.S_IMODE(mode):04o}; it must be 0600 (chmod 600 {path})"
        )


def load_lmk(*, lmk_file: Path | None = None, lmk_env: str | None = None) -> Lmk:
    """The LMK from a 0600 file or from the environment variable named ``lmk_env``."""
    if (lmk_file is None) == (lmk_env is None):
        raise KeyStoreError("give the LMK as a file or an environment variable (one of them)")
    if lmk_file is not None:
        check_private(lmk_file, "LMK file")
        text, source = (
            lmk_file.read_text(encoding="ascii", errors="replace"),
            f"LMK file {lmk_file}",
        )
    else:
        assert lmk_env is not None
        found = os.environ.get(lmk_env)
        if found is None:
            raise KeyStoreError(f"environment variable {lmk_env} (the LMK) is not set")
        text, source = found, f"environment variable {lmk_env}"
    text = text.strip()
    if len(text) != 2 * LMK_BYTES or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise KeyStoreError(f"{source} is not {2 * LMK_BYTES} hexadecimal characters")
    return Lmk(bytes.fromhex(text))


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class KeyStore:
    """The store's file: read whole, replaced whole."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()

    def read(self, lmk: Lmk) -> KeyStoreFile:
        """The store as it is, checked to be 0600 and to be under ``lmk``."""
        check_private(self.path, "key store")
        try:
            store = _DECODER.decode(self.path.read_bytes())
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise KeyStoreError(f"key store {self.path} is not a key store: {exc}") from None
        if store.format != STORE_FORMAT:
            raise KeyStoreError(
                f"key store {self.path} has format {store.format}, not {STORE_FORMAT}"
            )
        if store.lmk_check != lmk.check:
            raise KeyStoreError(
                f"key store {self.path} is under the LMK with check {store.lmk_check[:6]}, "
                f"not the LMK given (check {lmk.check[:6]})"
            )
        lmk.open("lmk-check", store.lmk_proof)
        return store

    def empty(self, lmk: Lmk) -> KeyStoreFile:
        return KeyStoreFile(STORE_FORMAT, lmk.check, lmk.seal("lmk-check", b""))

    def write(self, store: KeyStoreFile) -> None:
        """Replaces the file whole: written beside it (0600), synced, renamed, and the
        folder synced; a crash leaves the old file or the new one."""
        write_private(self.path, _ENCODER.encode(store) + b"\n")
        _sync_folder(self.path.parent)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Held by every command that changes the store, so two never interleave."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        descriptor = open_private(lock_path, os.O_RDWR)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)
