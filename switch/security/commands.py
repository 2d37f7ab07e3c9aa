"""The ``switch keys`` operator commands of the key store (security.md, "Operators").

Every command names the store (``--store``) and its LMK (``--lmk-file`` or
``--lmk-env``). Components are read from the terminal without echo (from standard input,
one a line, when it is not a terminal); never from the command line, which ``ps``
shows. Nothing printed, logged or written holds a clear key, component or secret, but a
new online secret's delivery file. Human output goes to standard output, prompts and the
``security_event`` lines (JSON) to standard error.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from switch.errors import SwitchError

if TYPE_CHECKING:  # the commands import them as they run: `switch --help` need not
    from switch.security.port import KeyComponent, KeyInfo, TmkCipher
    from switch.security.software import SoftwareSecurityModule

Handler = Callable[[argparse.Namespace, Any], int]


def add_commands(keys_commands: Any) -> None:
    """Adds the key store's actions to ``switch keys`` (``keys_commands``: its
    subparsers)."""
    lmk = keys_commands.add_parser(
        "lmk", help="the LMK (local master key)", description="Make an LMK file."
    )
    lmk_commands = lmk.add_subparsers(required=True, metavar="ACTION")
    lmk_new = lmk_commands.add_parser(
        "new",
        help="a new LMK file",
        description="A new LMK (32 random bytes, 64 hexadecimal characters) in a new file of "
        "mode 0600, never over an existing one; prints its check value.",
    )
    lmk_new.add_argument("--out", required=True, help="the new file")
    _handler(lmk_new, _lmk_new)

    init = keys_commands.add_parser(
        "init",
        help="a new, empty key store under an LMK",
        description="A new key store (mode 0600) under the LMK given; never over an existing one.",
    )
    _store_options(init)
    _handler(init, _init)

    load_tmk = keys_commands.add_parser(
        "load-tmk",
        help="load a terminal's TMK from components",
        description="Load a terminal's TMK from 2 or 3 components, each entered without echo "
        "with its KCV (checked before the next is taken); the key (their XOR) is stored once "
        "its KCV is confirmed against the key form.",
    )
    _store_options(load_tmk)
    load_tmk.add_argument("--terminal", required=True, help="the terminal id (field 41)")
    load_tmk.add_argument("--merchant", required=True, help="its merchant id (field 42)")
    load_tmk.add_argument("--cipher", required=True, choices=["3des", "sm4"])
    load_tmk.add_argument(
        "--allow-single-des",
        action="store_true",
        help="allow sign-ons with 60.3 = 001 (single-DES working keys; 3des only)",
    )
    load_tmk.add_argument(
        "--require-sm4", action="store_true", help="take only 60.3 = 005 (sm4 only)"
    )
    _component_options(load_tmk)
    _handler(load_tmk, _load_tmk)

    load_zmk = keys_commands.add_parser(
        "load-zmk",
        help="load a bank's ZMK from components",
        description="Load a bank's ZMK (3des) from 2 or 3 components, as load-tmk does.",
    )
    _store_options(load_zmk)
    load_zmk.add_argument("--bank", required=True, help="the bank's name in the config")
    _component_options(load_zmk)
    _handler(load_zmk, _load_zmk)

    listing = keys_commands.add_parser(
        "list",
        help="the stored keys: kind, owner, KCV, state, creation",
        description="The stored keys by kind, owner, KCV (6 characters), state and creation "
        "time; never a key.",
    )
    _store_options(listing)
    listing.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    _handler(listing, _list)

    rotate = keys_commands.add_parser(
        "rotate-lmk",
        help="re-encrypt every key under a new LMK",
        description="Re-encrypt every stored key under the new LMK (from `keys lmk new`) in "
        "one replacement of the store: it completes, or the store stays as it was. Then "
        "point the switch at the new LMK; keep the old one until nothing uses it.",
    )
    _store_options(rotate)
    new_lmk = rotate.add_mutually_exclusive_group(required=True)
    new_lmk.add_argument("--new-lmk-file", type=Path, help="the new LMK's file (mode 0600)")
    new_lmk.add_argument("--new-lmk-env", metavar="VAR", help="the new LMK's variable")
    _handler(rotate, _rotate)

    online = keys_commands.add_parser(
        "online", help="online channel keys", description="Create, list and revoke online keys."
    )
    online_commands = online.add_subparsers(required=True, metavar="ACTION")
    online_new = online_commands.add_parser(
        "new",
        help="a new key for a principal",
        description="A new online key for merchant:<merchant id> or app:<name> (at most two "
        "active each). Its secret is written once, as 64 lower-case hexadecimal characters, "
        "to --out, a new file of mode 0600, and never shown again.",
    )
    _store_options(online_new)
    online_new.add_argument("--principal", required=True, help="merchant:<id> or app:<name>")
    online_new.add_argument("--out", required=True, type=Path, help="the new secret's file")
    online_new.add_argument("--key-id", help="the key's id (default m-<id>-<n> or a-<name>-<n>)")
    _handler(online_new, _online_new)
    online_list = online_commands.add_parser("list", help="online keys and their state")
    _store_options(online_list)
    online_list.add_argument("--json", action="store_true", help="a JSON array")
    _handler(online_list, _online_list)
    card = keys_commands.add_parser(
        "card",
        help="card-data keys (look-up and sealing)",
        description="Card-data key pairs in the key store (security.md): the newest hashes "
        "card numbers for look-ups and seals those kept for later bank messages; every one "
        "not retired still matches and opens what it made.",
    )
    card_commands = card.add_subparsers(required=True, metavar="ACTION")
    card_new = card_commands.add_parser(
        "new",
        help="a new pair, which hashes and seals from now on",
        description="A new look-up key and sealing key (random, under the LMK) with the next "
        "key id; running switches take it at their next start.",
    )
    _store_options(card_new)
    _handler(card_new, _card_new)
    card_retire = card_commands.add_parser(
        "retire",
        help="retire a pair: what it made no longer matches or opens",
        description="Retire an older pair, once nothing it hashed or sealed is needed (the "
        "journal's kept card numbers under it no longer open). The newest cannot be retired.",
    )
    _store_options(card_retire)
    card_retire.add_argument("key_id", type=int, metavar="KEYID")
    _handler(card_retire, _card_retire)
    for parser in (
        card_commands.add_parser(
            "import", help="import a card key file (as import-card-keys)",
            description="As `switch keys import-card-keys`.",
        ),
        keys_commands.add_parser(
            "import-card-keys",
            help="move a card key file's keys into the key store, once",
            description="Import the card key file of [journal] key_file (or the text of "
            "its key_env variable) into the key store, each key under its id, its active key "
            "newest; keys already imported are skipped. Then remove key_file and key_env "
            "from the config and keep the file offline: the switch reads the store.",
        ),
    ):  # fmt: skip
        _store_options(parser)
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--key-file", type=Path, help="the card key file (TOML)")
        source.add_argument("--key-env", metavar="VAR", help="a variable holding its text")
        _handler(parser, _card_import)

    revoke = online_commands.add_parser(
        "revoke", help="revoke an online key", description="Revoke an online key, at once."
    )
    _store_options(revoke)
    revoke.add_argument("key_id", metavar="KEYID")
    _handler(revoke, _online_revoke)


def _handler(parser: argparse.ArgumentParser, handler: Callable[[argparse.Namespace], int]) -> None:
    def run(args: argparse.Namespace, config: object) -> int:
        from switch.log import configure_logging

        configure_logging(stream=sys.stderr.buffer)
        try:
            return handler(args)
        except SwitchError as exc:
            print(f"switch: {exc}", file=sys.stderr)
            return 1
        except (EOFError, KeyboardInterrupt):
            print("switch: no key stored (input ended)", file=sys.stderr)
            return 1
        except OSError as exc:  # a folder missing, a file not ours: one line, no traceback
            print(f"switch: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
            return 1

    parser.set_defaults(handler=run, needs_config=False)


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, type=Path, help="the key store file")
    lmk = parser.add_mutually_exclusive_group(required=True)
    lmk.add_argument("--lmk-file", type=Path, help="the LMK's file (mode 0600)")
    lmk.add_argument("--lmk-env", metavar="VAR", help="the environment variable holding the LMK")


def _component_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--components", type=int, choices=[2, 3], default=2)
    parser.add_argument(
        "--replace", action="store_true", help="replace the key of that name if there is one"
    )


def _module(args: argparse.Namespace) -> SoftwareSecurityModule:
    from switch.security.keystore import KeyStore, load_lmk
    from switch.security.software import SoftwareSecurityModule

    lmk = load_lmk(lmk_file=args.lmk_file, lmk_env=args.lmk_env)
    return SoftwareSecurityModule(KeyStore(args.store), lmk)


def _lmk_new(args: argparse.Namespace) -> int:
    from switch.security.keystore import write_new_lmk_file

    try:
        check = write_new_lmk_file(Path(args.out))
    except FileExistsError:
        print(f"switch: --out {args.out}: exists, not overwritten", file=sys.stderr)
        return 2
    print(f"LMK written to {args.out}; check value {check[:6]}")
    return 0


def _init(args: argparse.Namespace) -> int:
    from switch.security.keystore import KeyStore, load_lmk
    from switch.security.software import SoftwareSecurityModule

    lmk = load_lmk(lmk_file=args.lmk_file, lmk_env=args.lmk_env)
    SoftwareSecurityModule.create_store(KeyStore(args.store), lmk)
    print(f"key store {args.store} created under the LMK with check {lmk.check[:6]}")
    return 0


class _Entry:
    """Reads what holders type: without echo from a terminal, else one line each."""

    def __init__(self, stdin: TextIO, prompts: TextIO) -> None:
        self._stdin = stdin
        self._prompts = prompts
        self._tty = stdin.isatty()

    def secret(self, prompt: str) -> str:
        if self._tty:
            return getpass.getpass(prompt, stream=self._prompts)
        self._prompts.write(prompt + "\n")
        line = self._stdin.readline()
        if not line:
            raise EOFError
        return line.strip()

    def plain(self, prompt: str) -> str:
        self._prompts.write(prompt)
        self._prompts.flush()
        line = self._stdin.readline()
        if not self._tty:
            self._prompts.write("\n")
        if not line:
            raise EOFError
        return line.strip()


def _components(name: str, cipher: TmkCipher, count: int) -> tuple[list[KeyComponent], str]:
    """Each component with its KCV, each checked before the next; then the key's KCV
    shown and confirmed (what the operator confirmed)."""
    from switch.security import algorithms
    from switch.security.errors import OperatorInputError
    from switch.security.port import KeyComponent
    from switch.security.software import component_kcv, kcv_matches, security_event

    entry = _Entry(sys.stdin, sys.stderr)
    length = 2 * algorithms.KEY_BYTES[cipher]
    components = []
    for number in range(1, count + 1):
        text = "".join(entry.secret(f"component {number} of {count} (not echoed): ").split())
        if len(text) != length or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise OperatorInputError(f"component {number} is not {length} hexadecimal characters")
        value = bytes.fromhex(text)
        kcv = entry.plain(f"component {number} KCV (6 or 8 hex): ")
        if not kcv_matches(kcv, component_kcv(cipher, value)):
            security_event("component_refused", key=name, component=number)
            raise OperatorInputError(f"component {number} does not match its KCV")
        print(f"component {number}: KCV {component_kcv(cipher, value).hex().upper()[:6]} checked")
        components.append(KeyComponent(value=value, kcv=kcv))
    key = algorithms.xor_components([c.value for c in components])
    print(f"key KCV: {algorithms.kcv(cipher, key).hex().upper()[:6]}")
    sys.stdout.flush()
    confirm = entry.plain("confirm the key's KCV from the key form: ")
    return components, confirm


def _loaded(info: KeyInfo) -> int:
    print(f"stored {info.kind}:{info.owner} ({info.cipher}) with KCV {info.kcv}")
    return 0


def _load_tmk(args: argparse.Namespace) -> int:
    from switch.security.errors import OperatorInputError
    from switch.security.port import TerminalProfile

    module = _module(args)
    cipher: TmkCipher = args.cipher
    profile = TerminalProfile(
        merchant=args.merchant,
        allow_single_des=args.allow_single_des,
        require_sm4=args.require_sm4,
    )
    if args.allow_single_des and cipher != "3des":
        raise OperatorInputError("--allow-single-des is for a 3des TMK only")
    if args.require_sm4 and cipher != "sm4":
        raise OperatorInputError("--require-sm4 takes an sm4 TMK")
    components, confirm = _components(f"tmk:{args.terminal}", cipher, args.components)
    info = module.import_key_from_components(
        "tmk", args.terminal, cipher, components, confirm_kcv=confirm, profile=profile,
        replace=args.replace,
    )  # fmt: skip
    return _loaded(info)


def _load_zmk(args: argparse.Namespace) -> int:
    module = _module(args)
    components, confirm = _components(f"zmk:{args.bank}", "3des", args.components)
    info = module.import_key_from_components(
        "zmk", args.bank, "3des", components, confirm_kcv=confirm, replace=args.replace
    )
    return _loaded(info)


def _row(info: KeyInfo, kind: Literal["all", "online"]) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": info.kind, "owner": info.owner}
    if kind == "online":
        row["principal"] = info.principal
    row.update(
        cipher=info.cipher,
        kcv=info.kcv,
        state=info.state,
        created=info.created.isoformat(),
    )
    if kind == "online":
        row["revoked"] = info.revoked.isoformat() if info.revoked else ""
    elif info.kind == "tmk":
        flags = [f"merchant={info.merchant}"]
        flags += ["001-allowed"] if info.allow_single_des else []
        flags += ["require-sm4"] if info.require_sm4 else []
        row["profile"] = " ".join(flags)
    else:
        row["profile"] = ""
    return row


def _list(args: argparse.Namespace) -> int:
    from switch import ops

    ops.print_rows([_row(i, "all") for i in _module(args).list_keys()], as_json=args.json)
    return 0


def _online_list(args: argparse.Namespace) -> int:
    from switch import ops

    keys = [_row(i, "online") for i in _module(args).list_keys() if i.kind == "online"]
    ops.print_rows(keys, as_json=args.json)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from switch.security.keystore import load_lmk

    module = _module(args)
    new = load_lmk(lmk_file=args.new_lmk_file, lmk_env=args.new_lmk_env)
    count = module.rotate_lmk(new)
    print(f"{count} keys re-encrypted under the LMK with check {new.check[:6]}")
    return 0


def _online_new(args: argparse.Namespace) -> int:
    module = _module(args)
    try:
        info = module.create_online_key(args.principal, args.out, key_id=args.key_id)
    except FileExistsError:
        print(f"switch: --out {args.out}: exists, not overwritten", file=sys.stderr)
        return 2
    print(
        f"online key {info.owner} of {info.principal} (KCV {info.kcv}); its secret is in "
        f"{args.out}, for its principal only"
    )
    return 0


def _card_new(args: argparse.Namespace) -> int:
    key_id = _module(args).add_card_keys()
    print(f"card-data keys {key_id} added: they hash and seal from the next start")
    return 0


def _card_retire(args: argparse.Namespace) -> int:
    _module(args).retire_card_keys(args.key_id)
    print(f"card-data keys {args.key_id} retired")
    return 0


def _card_import(args: argparse.Namespace) -> int:
    from switch.store.crypto import load_card_keys

    key_file = load_card_keys(key_file=args.key_file, key_env=args.key_env)
    imported = _module(args).import_card_keys(key_file)
    listed = ", ".join(str(i) for i in imported) or "none (all were imported before)"
    print(f"card-data keys imported: {listed}; active: {key_file.active}")
    return 0


def _online_revoke(args: argparse.Namespace) -> int:
    info = _module(args).revoke_online_key(args.key_id)
    print(f"online key {info.owner} of {info.principal} revoked")
    return 0
