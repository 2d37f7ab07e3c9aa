"""A software security module on real files in a test's folder."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from switch.security import algorithms as alg
from switch.security.keystore import KeyStore, Lmk, load_lmk, write_new_lmk_file
from switch.security.port import KeyComponent, TerminalProfile, TmkCipher
from switch.security.software import SoftwareSecurityModule


class ScriptedRandom:
    """Gives the queued values first (security.md's keys, to reproduce its vectors),
    then the OS's random bytes; records everything it gave."""

    def __init__(self, *queued: bytes) -> None:
        self.queued = list(queued)
        self.given: list[bytes] = []

    def __call__(self, size: int) -> bytes:
        value = self.queued.pop(0) if self.queued else secrets.token_bytes(size)
        assert len(value) == size, f"queued {len(value)} bytes for a {size}-byte request"
        self.given.append(value)
        return value


def new_store(folder: Path, random: ScriptedRandom | None = None) -> SoftwareSecurityModule:
    """An LMK file and an empty store in ``folder``, and a module on them."""
    write_new_lmk_file(folder / "lmk.hex")
    lmk = load_lmk(lmk_file=folder / "lmk.hex")
    store = KeyStore(folder / "keys.json")
    SoftwareSecurityModule.create_store(store, lmk)
    return open_module(folder, random)


def open_module(
    folder: Path, random: ScriptedRandom | None = None, lmk: Lmk | None = None
) -> SoftwareSecurityModule:
    return SoftwareSecurityModule(
        KeyStore(folder / "keys.json"),
        lmk or load_lmk(lmk_file=folder / "lmk.hex"),
        random_bytes=random or ScriptedRandom(),
    )


def split(key: bytes, parts: int = 2) -> list[bytes]:
    """Random components whose XOR is ``key``."""
    components = [os.urandom(len(key)) for _ in range(parts - 1)]
    return [alg.xor_components([key, *components]), *components]


def load(
    module: SoftwareSecurityModule,
    kind: Literal["tmk", "zmk"],
    owner: str,
    cipher: TmkCipher,
    key: bytes,
    profile: TerminalProfile | None = None,
) -> None:
    components = [KeyComponent(value=c, kcv=alg.kcv(cipher, c).hex()[:6]) for c in split(key)]
    if kind == "tmk" and profile is None:
        profile = TerminalProfile(merchant="898310048990001")
    module.import_key_from_components(
        kind, owner, cipher, components, confirm_kcv=alg.kcv(cipher, key).hex(), profile=profile
    )
