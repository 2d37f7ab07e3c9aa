"""Opening the security module for ``switch run`` (the ``[security]`` section), and the
DEMO material of the demo configuration.

Without ``demo_keys`` the key store and its LMK must exist (``switch keys lmk new``,
``switch keys init``) and every bank needs its ZMK, ``zmk:<bank>`` (``switch keys
load-zmk --bank B``): else one line, and no start. A stored ZMK that is the published
demo ZMK is refused too. With ``demo_keys = true`` the LMK and the store are made at
the first start if missing (0600), every bank without a ZMK is given the demo ZMK (in
the store), and a ``demo_keys`` warning is written at every start.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import structlog

from switch.config import SwitchConfig
from switch.errors import StartupError
from switch.security import algorithms as alg
from switch.security.errors import KeyStoreError, OperatorInputError
from switch.security.keystore import KeyStore, Lmk, load_lmk, write_new_lmk_file
from switch.security.port import KeyComponent, KeyInfo, KeyName, key_name, operator_kcv
from switch.security.software import SoftwareSecurityModule, security_event
from switch.store.crypto import CardVault, load_card_keys

log = structlog.get_logger()

DEMO_ZMK: Final = bytes.fromhex("6EB6B3253864862AF23D2FA1042A38BA")
"""security.md's sample ZMK: every demo bank's. Published, so never a real key."""
DEMO_ZMK_KCV: Final = operator_kcv(alg.kcv("3des", DEMO_ZMK))
DEMO_TMK: Final = bytes.fromhex("CA5D92598DCA48CE8A4C76361A9269E9")
"""security.md's sample TMK (``3des``): the demo configuration's ``*`` terminal entry."""
DEMO_TMK_KCV: Final = operator_kcv(alg.kcv("3des", DEMO_TMK))
ANY_TERMINAL: Final = "*"


def open_security_module(config: SwitchConfig) -> SoftwareSecurityModule:
    """The module on the configured store and LMK (made first with ``demo_keys``);
    :class:`StartupError` in one line when it cannot be opened."""
    section = config.security
    store = KeyStore(config.path(section.key_store))
    if section.demo_keys:
        log.warning(
            "demo_keys",
            message="[security] demo_keys = true: DEMO key material (the published demo ZMK, "
            "an LMK made in var/, the online keys demo-app and demo-m-<merchant id> with the "
            "published secret: anyone can sign as any merchant); never in production",
        )
    if section.demo_keys and not store.exists():
        store.path.parent.mkdir(parents=True, exist_ok=True)
        with store.locked():  # several workers may start at once: one makes them
            lmk = _lmk(config, make=True)
            if not store.exists():
                store.write(store.empty(lmk))
                security_event("key_store_created", lmk_check=lmk.check[:6])
    lmk = _lmk(config)
    if not store.exists():
        raise KeyStoreError(
            f"key store {store.path} does not exist (switch keys init; [security] key_store)"
        )
    module = SoftwareSecurityModule(store, lmk, demo_online_keys=section.demo_keys)
    module.warn_at_start()
    return module


def open_card_vault(module: SoftwareSecurityModule, config: SwitchConfig) -> CardVault:
    """The card-data keys of the key store (security.md's look-up and sealing keys).

    A store without them: with ``demo_keys`` the key file of ``[journal] key_file`` /
    ``key_env`` is imported into the store at the first start (as ``switch keys
    import-card-keys`` does), or, with no key file, a new pair is made; without
    ``demo_keys`` the start is refused in one line naming the command. Once the store
    holds them, the key file is no longer read (a warning while it is still named and
    there)."""
    vault = module.card_vault()
    key_file = _card_key_file(config)
    if vault is not None:
        if key_file is not None and (key_file.startswith("$") or Path(key_file).exists()):
            log.warning(
                "card_key_file_ignored",
                message="the card-data keys are in the key store; [journal] key_file / "
                "key_env are no longer read (remove them, and keep the file offline)",
            )
        return vault
    if not config.security.demo_keys:
        if key_file is not None:
            raise StartupError(
                "the card-data keys are still in a key file: import them into the key store "
                f"once (switch keys import-card-keys --key-file {key_file} --store "
                f"{config.path(config.security.key_store)} --lmk-file ...)"
            )
        raise StartupError(
            f"the key store {config.path(config.security.key_store)} holds no card-data keys "
            "(switch keys card new)"
        )
    # Each one change of the store under its lock: workers starting at once store the
    # same keys once (an import skips what is there; a pair is made only if none is).
    if key_file is not None:
        module.import_card_keys(
            load_card_keys(
                key_file=config.path(config.journal.key_file or ""),
                key_env=config.journal.key_env,
            )
        )
    else:
        module.add_card_keys(only_if_none=True)
    log.warning("demo_card_keys_stored", source=key_file or "made")
    vault = module.card_vault()
    if vault is None:
        raise StartupError("no card-data keys could be stored in the key store")
    vault.demo = True  # stored by demo_keys: the "demo_card_keys" warning at every start
    return vault


def _card_key_file(config: SwitchConfig) -> str | None:
    """Where card keys would be read from outside the store: the variable, or the file
    named (which, missing, refuses an import naming it)."""
    section = config.journal
    if section.key_env and os.environ.get(section.key_env):
        return f"${section.key_env}"
    if section.key_file:
        return str(config.path(section.key_file))
    return None


def _lmk(config: SwitchConfig, *, make: bool = False) -> Lmk:
    """The LMK; ``make``: a new LMK file first when there is none (demo keys, under the
    store's lock)."""
    section = config.security
    if section.lmk_env is not None and section.lmk_env in os.environ:
        return load_lmk(lmk_env=section.lmk_env)
    if section.lmk_file is None:
        raise KeyStoreError(
            f"[security] names no lmk_file and {section.lmk_env or 'no lmk_env'} is not set"
        )
    path = config.path(section.lmk_file)
    if make and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_new_lmk_file(path)
    return load_lmk(lmk_file=path)


def bank_zmks(
    module: SoftwareSecurityModule, config: SwitchConfig, banks: Iterable[str]
) -> dict[str, KeyName]:
    """The name of each bank's ZMK; with ``demo_keys``, the demo ZMK is stored for a
    bank that has none. :class:`StartupError` when a bank has none, or has the demo ZMK
    without ``demo_keys``."""
    stored = {(info.kind, info.owner): info for info in module.list_keys()}
    return {bank: _bank_zmk(module, config, bank, stored.get(("zmk", bank))) for bank in banks}


def _bank_zmk(
    module: SoftwareSecurityModule, config: SwitchConfig, bank: str, info: KeyInfo | None
) -> KeyName:
    name = key_name("zmk", bank)
    if info is not None and info.state == "active":
        if info.kcv == DEMO_ZMK_KCV and not config.security.demo_keys:
            raise StartupError(
                f"bank {bank}: its ZMK is the published DEMO ZMK (KCV {DEMO_ZMK_KCV}); "
                "load its own (switch keys load-zmk) or set [security] demo_keys = true"
            )
        return name
    if not config.security.demo_keys:
        raise StartupError(
            f"bank {bank} has no ZMK in the key store {config.path(config.security.key_store)} "
            f"(switch keys load-zmk --bank {bank})"
        )
    mask = secrets.token_bytes(len(DEMO_ZMK))
    components = [
        KeyComponent(value=part, kcv=alg.kcv("3des", part).hex().upper())
        for part in (bytes(a ^ b for a, b in zip(DEMO_ZMK, mask, strict=True)), mask)
    ]
    try:
        module.import_key_from_components("zmk", bank, "3des", components, confirm_kcv=DEMO_ZMK_KCV)
    except OperatorInputError:
        module.reload()  # stored meanwhile by another worker
        if name not in {key_name(i.kind, i.owner) for i in module.list_keys()}:
            raise
    log.warning("demo_zmk", bank=bank, kcv=DEMO_ZMK_KCV)
    return name


def terminal_entries(module: SoftwareSecurityModule, config: SwitchConfig) -> None:
    """The terminal entries as ``[security]`` allows them: with ``demo_terminals`` (and
    ``demo_keys``) a ``*`` entry under the demo TMK is stored if missing. Without
    ``demo_keys`` a stored ``*`` entry or a TMK that is the published demo TMK stops the
    start (:class:`StartupError`), as ``demo_terminals`` does."""
    section = config.security
    if section.demo_terminals and not section.demo_keys:
        raise StartupError(
            "[security] demo_terminals needs demo_keys = true: the demo TMK is published, "
            "never a real terminal's key"
        )
    infos = [info for info in module.list_keys() if info.kind == "tmk" and info.state == "active"]
    if not section.demo_keys:
        for info in infos:
            if info.owner == ANY_TERMINAL or info.kcv == DEMO_TMK_KCV:
                raise StartupError(
                    f"terminal entry {info.owner}: a '*' entry or the published DEMO TMK "
                    f"(KCV {DEMO_TMK_KCV}) is DEMO material; remove it or set [security] "
                    "demo_keys = true"
                )
        return
    if not section.demo_terminals or any(info.owner == ANY_TERMINAL for info in infos):
        return
    from switch.security.port import TerminalProfile

    mask = secrets.token_bytes(len(DEMO_TMK))
    components = [
        KeyComponent(value=part, kcv=alg.kcv("3des", part).hex().upper())
        for part in (bytes(a ^ b for a, b in zip(DEMO_TMK, mask, strict=True)), mask)
    ]
    try:
        module.import_key_from_components(
            "tmk", ANY_TERMINAL, "3des", components, confirm_kcv=DEMO_TMK_KCV,
            profile=TerminalProfile(merchant=ANY_TERMINAL),
        )  # fmt: skip
    except OperatorInputError:
        module.reload()  # stored meanwhile by another worker
        stored = {key_name(info.kind, info.owner) for info in module.list_keys()}
        if key_name("tmk", ANY_TERMINAL) not in stored:
            raise
    log.warning("demo_terminal_entry", terminal=ANY_TERMINAL, kcv=DEMO_TMK_KCV)
