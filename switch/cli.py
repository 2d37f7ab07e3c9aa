"""The ``switch`` command: run the switch, run a bank simulator, or send one POS message.

Config is loaded once here and passed down.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import getpass
import json
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

import switch
from switch.admin.commands import add_commands as add_admin_commands
from switch.admin.commands import config_error_line, leniently
from switch.admin.credit_commands import add_commands as add_credit_commands
from switch.admin.risk_commands import add_commands as add_risk_commands
from switch.admin.settle_commands import add_commands as add_settle_commands
from switch.admin.wallet_commands import add_commands as add_wallet_commands
from switch.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    SwitchConfig,
    config_argument,
    load_config,
)
from switch.core.clock import MAX_SPEED
from switch.core.validate import MAX_AMOUNT
from switch.errors import ConfigError
from switch.files import PRIVATE_UMASK, write_private
from switch.online_cli import add_commands as add_online_commands
from switch.security.commands import add_commands as add_key_store_commands

if TYPE_CHECKING:
    from switch import startup
    from switch.app import SwitchApp
    from switch.core.clock import BusinessClock
    from switch.store.port import OperatorJournal
    from switch.terminal import Terminal, TerminalBatch, TerminalSecurity
    from switch.wire.iso8583 import FieldValue, Iso8583Message

# A command imports what it runs when it runs (each handler below, and those of the
# modules above): parsing the command line, and a command that only talks to a running
# switch, stay clear of the switch's own modules (tests/test_cli_imports.py).

SWITCH_INTERVAL_S = 0.0005
GC_GEN0_THRESHOLD = 50_000
_YUAN = re.compile(r"[0-9]+(?:\.[0-9]+)?")
"""An amount as an operator types it: yuan, and decimals if any."""


def main(argv: Sequence[str] | None = None) -> int:
    """The command; ``argv`` None: the process's own command line (``sys.argv``)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if hasattr(args, "config"):  # --config, else $SWITCH_CONFIG, else conf/switch.toml
        args.config, args.config_origin = config_argument(args.config, os.environ)
    if args.private_files and argv is None:
        # Every file a command makes (journal, settlement database, payouts, clearing
        # and batch files, key files) is its owner's only: 0600 in folders made 0700.
        # Only as the process's own command: the umask is the whole process's, and a
        # caller of main() (a test) keeps its own; the files are made 0600 anyway.
        os.umask(PRIVATE_UMASK)
    config: SwitchConfig | None = None
    if args.needs_config:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"switch: {config_error_line(exc, args)}", file=sys.stderr)
            return 2
    try:
        result: int = args.handler(args, config)
    except BrokenPipeError:
        # The reader went away (`| head`): nothing left to say, and no one to say it to.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return result


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("payswitch")
    except metadata.PackageNotFoundError:  # run from a source tree never installed
        return switch.__version__


class _VersionAction(argparse.Action):
    """argparse's ``version``, the version read (importlib.metadata) only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"switch {_version()}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switch",
        description="A payment switch: POS (ISO 8583) and online (MessagePack) channels "
        "routed by card BIN to bank host-to-host links.",
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="show program's version number and exit"
    )
    # The demo keeps the caller's umask: as root its PostgreSQL cluster's folders must
    # stay reachable by the server's account; its switch and banks set their own.
    parser.set_defaults(needs_config=True, private_files=True)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run the switch", description="Run the switch until SIGINT or SIGTERM."
    )
    _config_option(run)
    run.add_argument(
        "--workers",
        type=_positive,
        help="processes sharing the POS and online ports (default: [switch] workers); more "
        "than 1 starts a supervisor and needs a journal the workers can share",
    )
    run.add_argument(
        "--worker-index",
        type=int,
        help="run as worker I of --workers (what the supervisor starts; not for operators)",
    )
    # The listeners' ports as the supervisor bound them (a configured 0 made one port).
    run.add_argument("--pos-port", type=int, help=argparse.SUPPRESS)
    run.add_argument("--online-port", type=int, help=argparse.SUPPRESS)
    # The supervisor's folder where the workers answer worker 0's admin (admin/peers.py).
    run.add_argument("--peers-dir", help=argparse.SUPPRESS)
    _clock_options(run)
    # When the supervisor's business clock read --clock (epoch seconds): its workers'.
    run.add_argument("--clock-anchor", type=float, help=argparse.SUPPRESS)
    run.set_defaults(handler=_run)

    sim = commands.add_parser(
        "sim-bank",
        help="run one bank simulator on its own",
        description="Run a bank simulator speaking bank-h2h.md on the bank's host and port "
        "from the config, with the bank's [banks.NAME.sim] settings.",
    )
    _config_option(sim)
    sim.add_argument("--bank", required=True, help="the bank's name in the config, e.g. icbc")
    sim.add_argument("--port", type=int, help="listen on this port instead of the config's")
    _clock_options(sim)
    sim.add_argument(
        "--totals-file",
        help="write the ledger's totals (JSON, in fen) here when the simulator stops",
    )
    sim.set_defaults(handler=_sim_bank)

    demo = commands.add_parser(
        "demo",
        help="run the demo: the switch and its banks as processes, on a journal of choice",
        description="Run the demo: each bank of the config as a `switch sim-bank` process "
        "and `switch run` with --workers, from a config written to "
        "<var>/demo-<journal>.toml (<var>: the folder of the config's [journal] path, the "
        "demo's var/; the operator commands take it as --config, or from SWITCH_CONFIG: "
        "the demo prints the `export SWITCH_CONFIG=...` line once it is ready). With --journal "
        "postgresql, a local PostgreSQL server is installed if missing (Debian, as root), "
        "its cluster kept in <var>/postgresql between runs. SIGINT or SIGTERM stops the "
        "switch (it drains), the banks, then the server.",
    )
    _config_option(demo)
    demo.add_argument(
        "--journal",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="the config's SQLite journal (default; 1 worker), or a local PostgreSQL server's",
    )
    demo.add_argument(
        "--workers", type=_positive, help="switch processes (default: [switch] workers)"
    )
    demo.set_defaults(handler=_demo, private_files=False)

    journal = commands.add_parser(
        "journal", help="read the journal", description="Read transactions from the journal."
    )
    journal_commands = journal.add_subparsers(required=True, metavar="ACTION")
    show = journal_commands.add_parser(
        "show",
        help="one transaction, its history and reversal",
        description="One transaction one field a line (amounts in yuan, and in fen), its "
        "history as events saying what happened to it (voided by void RRN ..., its refund "
        "RRN ... reversed (no final answer (68)) ...), and its reversal; times in ISO 8601 "
        "UTC. --json: the same as JSON, amounts in fen (amount_fen).",
    )
    show.add_argument("rrn", help="the retrieval reference number (field 37 of its response)")
    find = journal_commands.add_parser(
        "find",
        help="a terminal's transactions on a local date",
        description="A terminal's transactions on a date of the switch's local time (UTC + "
        "[switch] utc_offset_h), the date in their field 13 and RRN; times shown in UTC. A "
        "row each: time, RRN, kind, state, code, amount in yuan, card, STAN, bank and "
        "notes (voided, refunded, reversed, the original's RRN); --json: every field, "
        "amounts in fen (amount_fen).",
    )
    find.add_argument("--terminal", required=True, help="terminal id (field 41)")
    find.add_argument(
        "--date",
        required=True,
        help="the switch's local date (UTC + [switch] utc_offset_h): YYYY-MM-DD for that "
        "local day, or MMDD for that day in any year",
    )
    for parser_ in (show, find):
        _config_option(parser_)
        parser_.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    show.set_defaults(handler=_journal_show)
    find.set_defaults(handler=_journal_find)

    saf = commands.add_parser(
        "saf",
        help="the store-and-forward queues: reversals, and advices of stood-in sales",
        description="List queued reversals or advices, or put one back in its queue.",
    )
    saf_commands = saf.add_subparsers(required=True, metavar="ACTION")
    saf_list = saf_commands.add_parser("list", help="reversals not yet delivered")
    saf_list.add_argument("--bank", help="only this bank's")
    saf_list.add_argument(
        "--state",
        choices=["pending", "manual", "delivered", "queued", "sent", "accepted", "refused",
                 "cancelled"],
        help="only this state's (reversals: pending, manual, delivered; advices: queued, "
        "sent, manual, accepted, refused, cancelled)",
    )  # fmt: skip
    saf_list.add_argument(
        "--kind", choices=["reversal", "advice"], default="reversal",
        help="reversals (the default) or advices of stood-in sales (ids A<n>)",
    )  # fmt: skip
    saf_retry = saf_commands.add_parser(
        "retry", help="send a reversal again (e.g. a manual one), or a manual advice (A<n>)"
    )
    saf_retry.add_argument("id", help="the id from `saf list`: a reversal's n, an advice's A<n>")
    for parser_ in (saf_list, saf_retry):
        _config_option(parser_)
        parser_.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    saf_list.set_defaults(handler=_saf_list)
    saf_retry.set_defaults(handler=_saf_retry)

    keys = commands.add_parser(
        "keys",
        help="card data keys; the key store (TMKs, ZMKs, online keys, the LMK)",
        description="Make card data key files; load, list and rotate the keys of the key "
        "store (security.md).",
    )
    keys_commands = keys.add_subparsers(required=True, metavar="ACTION")
    keys_new = keys_commands.add_parser(
        "new",
        help="a new card key file",
        description="A new card key file (fresh random keys): written to --out, created "
        "0600 and never over an existing file, or printed on stdout.",
    )
    keys_new.add_argument("--out", help="write it to this new file (mode 0600)")
    keys_new.add_argument("--config", help=argparse.SUPPRESS)  # accepted, as before; unused
    keys_new.set_defaults(handler=_keys_new, needs_config=False)
    add_key_store_commands(keys_commands)

    pid = commands.add_parser(
        "pid",
        help="the pid of the switch running on the config's journal",
        description="Print the pid of the process that holds the config's SQLite journal "
        "now (its lock, as the kernel has it), e.g. `kill -HUP $(switch pid)`; nothing, "
        "and exit 1, when no process holds it. The pid in the lock file is only valid "
        "while the lock is held: a switch that was killed leaves its pid there, which may "
        "by then be another process's.",
    )
    _config_option(pid)
    pid.set_defaults(handler=_pid)

    config_command = commands.add_parser(
        "config", help="the configuration", description="Check a configuration file."
    )
    config_commands = config_command.add_subparsers(required=True, metavar="ACTION")
    check = config_commands.add_parser(
        "check",
        help="validate everything `switch run` would, starting nothing",
        description="Validate a configuration as `switch run` would (its keys and types, "
        "dialects, routes, the card key file, the journal, the ports, the file "
        "descriptors) without starting anything: one line per problem, exit 2; `ok` and "
        "exit 0 when there is none. A switch running on the journal is no problem (the "
        "file is checked before it is reloaded): its journal, and the ports its `switch "
        "run` processes listen on, are each a `note:` line, and so is each key a reload "
        "of the file would change (`a reload changes switch.max_in_flight 128 \u2192 "
        "256`), asked of the switch's admin interface.",
    )
    _config_option(check)
    # Read as its types allow: the cross-checks are what it reports, all of them.
    check.set_defaults(handler=leniently(_config_check), needs_config=False)

    pos = commands.add_parser(
        "pos",
        help="send one POS message to a running switch and print the response",
        description="The operator's smoke test: send one pos-cup.md message and print the "
        "decoded response (card numbers masked), as JSON. The terminal's batch is kept in a "
        "batch file between commands (--batch-file): approved sales, voids and refunds are "
        "recorded in it, and `settle` settles it.",
    )
    pos_messages = pos.add_subparsers(required=True, metavar="MESSAGE")
    connection = argparse.ArgumentParser(add_help=False)
    _config_option(connection)
    connection.add_argument("--host", help="switch host (default: the config's [pos] host)")
    connection.add_argument("--port", type=int, help="switch POS port (default: the config's)")
    connection.add_argument("--terminal", default="POS00001", help="terminal id (field 41)")
    connection.add_argument("--merchant", default="898310048990001", help="merchant id (field 42)")
    connection.add_argument(
        "--stan",
        type=int,
        help="trace number (field 11), 1 to 999999; by default a new one each time, since "
        "a repeat of the same terminal, batch and STAN is answered as a duplicate",
    )
    connection.add_argument(
        "--batch",
        type=int,
        help="batch number (field 60.2); default: the batch file's (1 for a new one). "
        "Another batch than the file's is refused while the file holds transactions",
    )
    connection.add_argument(
        "--batch-file",
        help="the terminal's batch, kept between commands (JSON; default: "
        f"{BATCH_FILE_PATTERN} in the folder of the config's [journal] path, the "
        "demo's var/)",
    )
    connection.add_argument(
        "--tmk-file",
        help="the terminal's TMK: a file (mode 0600) of 32 hexadecimal characters, the key "
        "the operator loaded with `switch keys load-tmk`. Default: security.md's published "
        "DEMO TMK, which only a switch with [security] demo_terminals takes",
    )
    connection.add_argument(
        "--tmk-cipher", choices=("3des", "sm4"), default="3des", help="the TMK's cipher"
    )
    connection.add_argument(
        "--layout",
        choices=("003", "005", "001"),
        help="60.3 of the sign-on: 003 (3des, default for a 3des TMK), 005 (sm4), 001 (single "
        "DES, where the terminal's entry allows it)",
    )
    connection.add_argument(
        "--keys-file",
        help="the terminal's working keys between commands (mode 0600; default: "
        f"{KEYS_FILE_PATTERN} beside the batch file). A command signs on first when it has "
        "none, or none of its batch",
    )
    card_number = argparse.ArgumentParser(add_help=False)
    card_number.add_argument("--pan", default="6222021000111122221", help="card number")
    card_number.add_argument(
        "--code",
        help="a payment code (wallet.md: `switch wallet paycode`) instead of a card: field "
        "2 = the code, 22 = 032, no expiry",
    )
    card = argparse.ArgumentParser(add_help=False, parents=[card_number])
    card.add_argument("--expiry", default="2812", help="card expiry YYMM")
    card.add_argument(
        "--pin",
        nargs="?",
        const="",
        help="send the card's PIN (4-12 digits), encrypted under the terminal's PIK; "
        "--pin alone asks for it without echo. Without --pin, 22 says no PIN is sent",
    )
    sale = pos_messages.add_parser(
        "sale",
        parents=[connection, card],
        help="a sale (0200, 000000)",
        description="Send a sale and print the response; its field 37 is the RRN that "
        "`switch journal show` and `switch pos void --rrn` take. Approved, it is recorded "
        "in the batch file.",
    )
    sale.add_argument(
        "--amount",
        default="100.00",
        help="amount in yuan, more than 0, at most 2 decimals, e.g. 100.00 (default)",
    )
    balance = pos_messages.add_parser(
        "balance",
        parents=[connection, card],
        help="a balance inquiry (0200, 310000)",
        description="Send a balance inquiry and print the response (the balance in field 54).",
    )
    void = pos_messages.add_parser(
        "void",
        parents=[connection, card_number],
        help="a sale void (0200, 200000)",
        description="Void a sale of the batch and print the response. Approved, it is "
        "recorded in the batch file, and the sale no longer counts in its totals.",
    )
    refund = pos_messages.add_parser(
        "refund",
        parents=[connection, card_number],
        help="a refund (0220, 200000)",
        description="Refund (part of) a sale and print the response. Approved, it is "
        "recorded in the batch file as a credit.",
    )
    for parser_ in (void, refund):
        parser_.add_argument(
            "--rrn", required=True, help="the sale's RRN (field 37 of its approval)"
        )
        parser_.add_argument(
            "--original-stan",
            type=int,
            help="the sale's STAN (field 61.2; default: as the batch file recorded it)",
        )
    void.add_argument(
        "--amount", help="the sale's amount in yuan (default: as the batch file recorded it)"
    )
    refund.add_argument(
        "--amount", required=True, help="the amount in yuan, at most what is left of the sale"
    )
    preauth = pos_messages.add_parser(
        "preauth",
        parents=[connection, card],
        help="a pre-authorisation (0100, 030000; risk.md)",
        description="Hold an amount on the card and print the response: its 37 and 38 "
        "(and 13, its date) name it to `complete` and `preauth-void`. A pre-authorisation "
        "counts in no batch total.",
    )
    preauth.add_argument("--amount", default="100.00", help="amount in yuan (default 100.00)")
    complete = pos_messages.add_parser(
        "complete",
        parents=[connection, card_number],
        help="a completion of a pre-authorisation (0200, 000000, 25 = 06)",
        description="Complete a pre-authorisation (up to [preauth] completion_max_pct of "
        "it) and print the response. Approved, it is recorded in the batch file as a debit.",
    )
    complete.add_argument("--amount", required=True, help="the amount in yuan")
    complete.add_argument(
        "--original-date",
        required=True,
        help="the pre-authorisation's date, MMDD (field 13 of its approval)",
    )
    complete.add_argument("--rrn", help="the pre-authorisation's RRN (field 37; optional)")
    preauth_void = pos_messages.add_parser(
        "preauth-void",
        parents=[connection, card_number],
        help="a pre-authorisation void (0100, 200000)",
        description="Release a pre-authorisation's hold and print the response.",
    )
    complete_void = pos_messages.add_parser(
        "complete-void",
        parents=[connection, card_number],
        help="a completion void (0200, 200000, 25 = 06)",
        description="Void a completion and print the response: its pre-authorisation is open "
        "again. Approved, it is recorded in the batch file, and the completion no longer "
        "counts in its totals.",
    )
    for parser_ in (preauth_void, complete_void):
        parser_.add_argument("--rrn", required=True, help="the original's RRN (field 37)")
        parser_.add_argument("--amount", required=True, help="the original's amount in yuan")
    for parser_ in (complete, preauth_void, complete_void):
        parser_.add_argument(
            "--auth", required=True,
            help="the authorisation code (field 38) of the pre-authorisation "
            "(complete-void: of the completion)",
        )  # fmt: skip
        parser_.add_argument(
            "--original-stan", type=int, required=True, help="the original's STAN (field 61.2)"
        )
        parser_.add_argument(
            "--original-batch", type=int,
            help="the original's batch (field 61.1; default: this batch)",
        )  # fmt: skip
    echo = pos_messages.add_parser(
        "echo",
        parents=[connection],
        help="an echo test (0820)",
        description="Send an echo test and print the response.",
    )
    signon = pos_messages.add_parser(
        "signon",
        parents=[connection],
        help="a sign-on (0800)",
        description="Send a sign-on and print the response (the new batch in field 60). The "
        "batch file keeps its batch: a terminal takes a new one when it settles.",
    )
    settle = pos_messages.add_parser(
        "settle",
        parents=[connection],
        help="settle the batch file's batch (0500; 0320 upload when not balanced)",
        description="Send the batch settlement (0500) with the batch file's totals (approved "
        "sales neither voided nor reversed, approved refunds) and print the answer, 48.5 "
        "included. When the switch's totals differ (48.5 = 2), upload the batch: 0320s of up "
        "to 8 records, then the last one (60.3 = 202) with their number. The batch is then "
        "closed: after a balanced settlement, or an unbalanced one whose upload was all "
        "answered 00, the batch file starts the next batch (its number + 1, empty); "
        "otherwise it keeps the batch, to be settled again. The STAN of each upload follows "
        "the settlement's.",
    )
    for name, parser_ in (
        ("sale", sale), ("balance", balance), ("void", void), ("refund", refund),
        ("echo", echo), ("signon", signon), ("preauth", preauth), ("complete", complete),
        ("preauth-void", preauth_void), ("complete-void", complete_void),
    ):  # fmt: skip
        parser_.set_defaults(handler=_pos, message=name)
    settle.set_defaults(handler=_pos_settle, message="settle")
    add_online_commands(commands, _config_option, parse_amount)  # signed online requests

    decode = commands.add_parser(
        "decode",
        help="a frame in hex, field by field (card data masked, secrets hidden)",
        description="Prints a frame's fields as the message trace logs them: a POS frame "
        "(2-byte length, TPDU, header, ISO 8583), a bank frame (2-byte length, ISO 8583 of "
        "the bank's dialect), an online frame (4-byte length, MessagePack) or a MessagePack "
        "map alone; the kind is recognised unless --kind says it. Card numbers are masked; "
        "PIN blocks, keys, MACs, expiry and CVV2 never shown.",
    )
    _config_option(decode)
    decode.add_argument(
        "hex", nargs="*", help="the frame in hex (spaces allowed); - or none: stdin"
    )
    decode.add_argument("--kind", choices=("pos", "bank", "online", "msgpack"))
    decode.add_argument(
        "--bank", help="whose dialect a bank frame is in (default: the first bank's)"
    )
    decode.set_defaults(handler=_decode)

    add_settle_commands(commands, _config_option)  # settle, ledger: the business day's
    add_risk_commands(commands, _config_option)  # risk: card-hash, test, hits
    add_admin_commands(commands, _config_option)  # top, status, reload: the admin interface's
    add_wallet_commands(commands, _config_option)  # wallet, qr: signed online requests
    add_credit_commands(commands, _config_option)  # credit: signed requests to the switch
    return parser


def _config_check(args: argparse.Namespace, config: SwitchConfig) -> int:
    from switch import startup, supervisor
    from switch.admin.commands import running_config_notes
    from switch.log import configure_logging

    # Its output is its verdict (notes and "ok" on stdout, problems on stderr): what
    # building the parts would log as they start (the DEMO keys' warning, key events)
    # is for `switch run`, and only an error of theirs is shown here, on stderr.
    configure_logging("error", stream=sys.stderr.buffer, format="console")
    checked = startup.preflight(
        config, sqlite_workers_for_tests=supervisor.sqlite_workers_for_tests()
    )
    notes = list(checked.notes)  # a running switch's own journal and ports
    if not checked.problems:
        notes.extend(running_config_notes(config))  # and what a reload would change in it
    for note in notes:
        print(f"note: {args.config}: {note}")
    for problem in checked.problems:
        print(f"switch: {args.config}: {problem}", file=sys.stderr)
    if checked.problems:
        return 2
    print(f"ok: {args.config}")
    return 0


def _decode(args: argparse.Namespace, config: SwitchConfig) -> int:
    from switch.app import Codecs
    from switch.errors import SwitchError
    from switch.wire import dump

    text = " ".join(args.hex) if args.hex and args.hex != ["-"] else sys.stdin.read()
    try:
        data = bytes.fromhex("".join(text.split()))
    except ValueError:
        print("switch: decode: the frame is not hexadecimal (two digits a byte)", file=sys.stderr)
        return 2
    banks = list(config.banks)
    bank = args.bank or (banks[0] if banks else None)
    if args.bank is not None and args.bank not in config.banks:
        print(f"switch: decode: --bank {args.bank} is not in [banks] ({', '.join(banks)})",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        codecs = Codecs(config.dialects_path())
        kind = args.kind or dump.identify(data)
        wanted = {"pos": config.pos.dialect}
        if bank is not None:
            wanted["bank"] = config.banks[bank].dialect
        lines = dump.decode_lines(
            data, kind, {role: codecs.get(name) for role, name in wanted.items()}
        )
    except (ValueError, KeyError, msgspec.DecodeError, SwitchError) as exc:
        print(f"switch: decode: {dump.mask_card_numbers(str(exc))}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help=f"switch config file (default: ${CONFIG_ENV} if set, else {DEFAULT_CONFIG} in "
        "the current folder)",
    )


def _clock_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clock",
        metavar="START",
        help="run on a simulated business clock from START (ISO 8601 with its UTC offset, "
        "e.g. 2027-01-31T22:59:00+08:00): every date and time the switch stamps or "
        "decides by follows it; timeouts and other protections stay on real time. A "
        "journal keeps the kind of clock it was first run on",
    )
    parser.add_argument(
        "--clock-speed",
        metavar="N",
        help=f"the simulated clock runs N times real time (default 1; at most "
        f"{MAX_SPEED:g}, a day a second): 1440 is a day a minute",
    )


def business_clock(args: argparse.Namespace) -> BusinessClock:
    """The business clock of ``--clock`` and ``--clock-speed`` (the real one without
    them); ValueError, one line naming the option, when they are wrong."""
    from switch.core.clock import BusinessClock, parse_clock_start

    if args.clock is None:
        if args.clock_speed is not None:
            raise ValueError("--clock-speed needs --clock START: the real clock has one speed")
        return BusinessClock.real()
    try:
        start = parse_clock_start(args.clock)
    except ValueError as exc:
        raise ValueError(f"--clock: {exc}") from None
    text = args.clock_speed if args.clock_speed is not None else "1"
    try:
        speed = float(text)
    except ValueError:
        speed = math.nan
    if not (math.isfinite(speed) and 0 < speed <= MAX_SPEED):
        raise ValueError(
            f"--clock-speed: {text!r} is not a number above 0 and at most {MAX_SPEED:g}"
        )
    anchor = getattr(args, "clock_anchor", None)
    elapsed_s = max(0.0, time.time() - anchor) if anchor is not None else 0.0
    return BusinessClock.simulated(start, speed, elapsed_s=elapsed_s)


def _clock_argv(args: argparse.Namespace) -> list[str]:
    """A worker's clock options: the supervisor's clock, read from the same moment."""
    if args.clock is None:
        return []
    return [
        "--clock", args.clock, "--clock-speed", args.clock_speed or "1",
        "--clock-anchor", repr(time.time()),
    ]  # fmt: skip


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not 1 or more")
    return value


def _run(args: argparse.Namespace, config: SwitchConfig) -> int:
    import structlog

    from switch import startup, supervisor
    from switch.core.workers import Worker

    workers: int = args.workers if args.workers is not None else config.switch.workers
    try:
        clock = business_clock(args)
    except ValueError as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    if workers > 1 and args.worker_index is None:
        return supervisor.supervise(config, workers, _clock_argv(args))
    try:
        worker = Worker(
            index=args.worker_index or 0,
            count=workers,
            pos_port=args.pos_port,
            online_port=args.online_port,
            own_journal=workers > 1 and supervisor.sqlite_workers_for_tests(),
            peers_dir=args.peers_dir if workers > 1 else None,
            host=config.switch.host_id,
            hosts=config.switch.hosts,
        )
    except ValueError as exc:
        print(f"switch: {exc} (--worker-index, --workers, [switch] host_id and hosts)",
              file=sys.stderr)  # fmt: skip
        return 2
    if not worker.alone:
        structlog.contextvars.bind_contextvars(worker=worker.index)  # on every line
    if worker.hosts > 1:
        structlog.contextvars.bind_contextvars(host=worker.host)
    try:
        # logging, fds, keys, the admin token, the journal's lock, ports
        started = startup.prepare(config, worker, clock)
    except Exception as exc:
        return startup.refuse(exc)
    try:
        # The journal's worker thread must take the GIL back from the busy trio thread
        # after each SQLite call; at the default 5 ms switch interval every such
        # hand-back can stall a group commit (and the requests waiting on it) by up to
        # 5 ms.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        # Full collections stop the event loop for as long as they take to walk every
        # tracked object: fewer of them (a larger first-generation threshold), and none
        # of the objects made at start-up, which live as long as the process (gc.freeze).
        gc.set_threshold(GC_GEN0_THRESHOLD, 20, 50)
        return started.run(_run_switch)
    finally:
        started.close()


async def _run_switch(started: startup.Startup) -> None:
    import trio

    from switch import supervisor

    app = started.app
    assert app is not None, "prepared"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_shutdown_on_signal, app)
        nursery.start_soon(supervisor.stop_with_parent)  # a worker's, or a demo's switch
        await nursery.start(app.run)
        started.listening()  # the listeners hold their ports now
        gc.freeze()  # what start-up made (config, codecs, the book loaded) stays
        await app.stopped.wait()
        nursery.cancel_scope.cancel()


async def _shutdown_on_signal(app: SwitchApp) -> None:
    """SIGINT and SIGTERM drain the switch; SIGHUP reloads its configuration file.

    A worker (workers > 1) keeps its handlers through the drain: its supervisor's
    SIGTERM and its own, when the supervisor has ended (supervisor.stop_with_parent),
    may both come, and the drain is bounded anyway. One process leaves them at the
    first, as ever (a second signal ends it at once)."""
    import structlog
    import trio

    draining = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            structlog.get_logger().info("signal_received", signal=signal.Signals(signum).name)
            if signum == signal.SIGHUP:
                if not draining:
                    await app.reload()  # says in the log what it did, or why not
                continue
            if not draining:
                app.shutdown()
                draining = True
            if app.worker.alone:
                return


def _demo(args: argparse.Namespace, config: SwitchConfig) -> int:
    from switch.devtools.demo import run_demo  # psycopg and the server's tools: only here

    workers: int = args.workers if args.workers is not None else config.switch.workers
    return run_demo(config, journal=args.journal, workers=workers)


def _sim_bank(args: argparse.Namespace, config: SwitchConfig) -> int:
    import structlog
    import trio

    from switch import supervisor
    from switch.app import Codecs
    from switch.errors import StartupError
    from switch.log import configure_logging, describe_exception, log_uncaught_exceptions
    from switch.sim.server import BankSimulator

    log = structlog.get_logger()
    bank = config.banks.get(args.bank)
    if bank is None:
        print(f"switch: no bank {args.bank!r} in {args.config}", file=sys.stderr)
        return 2
    try:
        clock = business_clock(args)
    except ValueError as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    if args.port is not None:
        bank = msgspec.structs.replace(bank, port=args.port)
    configure_logging(config.log.level, format=config.log.format)
    log_uncaught_exceptions()
    codec = Codecs(config.dialects_path()).get(bank.dialect)
    simulator = BankSimulator(
        args.bank, bank, codec, clearing_dir=config.clearing_dir(args.bank), clock=clock
    )
    totals_file = Path(args.totals_file) if args.totals_file else None

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            try:
                port = await nursery.start(simulator.serve)
            except OSError as exc:  # trio's bind error does not say where
                where = f"[banks.{args.bank}] port {bank.port} on {bank.host}"
                raise StartupError(f"{where} cannot be listened on: {exc.strerror}") from exc
            log.info("simulator_started", bank=args.bank, port=port, clock=clock.describe())
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                nursery.start_soon(supervisor.stop_with_parent)  # a demo's bank
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

    try:
        trio.run(serve)
    except Exception as exc:
        log.critical("simulator_failed", exc_info=exc)
        print(f"switch: {describe_exception(exc)}", file=sys.stderr)
        return 2
    if totals_file is not None:
        write_private(totals_file, msgspec.json.encode(simulator.totals()))
    return 0


def _operator(
    config: SwitchConfig,
    action: Callable[[OperatorJournal], list[dict[str, Any]]],
    as_json: bool,
    *,
    printed: bool = False,
) -> int:
    """``action`` on the config's journal, its rows printed (unless it ``printed``)."""
    from switch import ops
    from switch.store import open_operator_journal

    try:
        journal = open_operator_journal(config)
        try:
            rows = action(journal)
        finally:
            journal.close()
    except ops.OperatorError as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ops.UnknownBank) else 1
    except ConfigError as exc:  # a journal the config cannot name (a DSN not set)
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    if not printed:
        ops.print_rows(rows, as_json=as_json)
    return 0


def _journal_show(args: argparse.Namespace, config: SwitchConfig) -> int:
    from switch import ops

    def show(journal: OperatorJournal) -> list[dict[str, Any]]:
        found = ops.journal_show(journal, args.rrn)
        if not args.json:
            print("\n".join(ops.show_lines(found)))
        return [found]

    return _operator(config, show, args.json, printed=not args.json)


def _journal_find(args: argparse.Namespace, config: SwitchConfig) -> int:
    from switch import ops

    offset = config.switch.utc_offset_h
    try:
        ops.local_day(args.date, utc_offset_h=offset)
    except ValueError as exc:
        print(f"switch: --date {args.date!r}: {exc}", file=sys.stderr)
        return 2

    def find(journal: OperatorJournal) -> list[dict[str, Any]]:
        rows = ops.journal_find(journal, args.terminal, args.date, utc_offset_h=offset)
        return rows if args.json else ops.find_rows(rows)

    return _operator(config, find, args.json)


def _saf_list(args: argparse.Namespace, config: SwitchConfig) -> int:
    from switch import ops

    if args.kind == "advice":
        return _operator(
            config,
            lambda journal: ops.advice_list(journal, bank=args.bank, state=args.state),
            args.json,
        )
    return _operator(
        config,
        lambda journal: ops.saf_list(
            journal, bank=args.bank, state=args.state, banks=list(config.banks)
        ),
        args.json,
    )


def _saf_retry(args: argparse.Namespace, config: SwitchConfig) -> int:
    from switch import ops

    given = str(args.id)
    if given[:1] in ("A", "a") and given[1:].isdigit():
        advice_id = int(given[1:])
        return _operator(config, lambda journal: [ops.advice_retry(journal, advice_id)], args.json)
    if not given.isdigit():
        print(f"switch saf retry: {given!r} is neither a reversal's id (n) nor an advice's "
              "(A<n>)", file=sys.stderr)  # fmt: skip
        return 2
    return _operator(config, lambda journal: [ops.saf_retry(journal, int(given))], args.json)


def _pid(args: argparse.Namespace, config: SwitchConfig) -> int:
    if config.journal.backend != "sqlite":
        print(f"switch: {args.config}: the journal is on PostgreSQL: no lock file names the "
              "switch; use `switch reload`", file=sys.stderr)  # fmt: skip
        return 2
    from switch.store.sqlite import LockFile

    lock = LockFile(config.path(config.journal.path))
    holder = lock.holder()
    if holder is None:
        print(f"switch: no switch holds journal {lock.journal_path} ({lock.path} is not "
              "locked)", file=sys.stderr)  # fmt: skip
        return 1
    print(holder)
    return 0


def _keys_new(args: argparse.Namespace, config: SwitchConfig | None) -> int:
    from switch.store.crypto import new_key_file_text, write_new_key_file

    if args.out is None:
        print(new_key_file_text(), end="")
        return 0
    try:
        write_new_key_file(Path(args.out))
    except FileExistsError:
        why = "exists, not overwritten (its keys may be needed to open what they sealed)"
        print(f"switch: --out {args.out}: {why}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"switch: --out {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


def parse_amount(text: str) -> int:
    """An amount in yuan as the operator types it (``100``, ``100.5``, ``100.00``), in
    fen; ValueError saying why it is not one. Never rounded: a third decimal is refused."""
    if text.startswith("-") and _YUAN.fullmatch(text[1:]):
        raise ValueError("must be more than 0")
    if not _YUAN.fullmatch(text):
        raise ValueError("not an amount in yuan (digits, a point and at most 2 decimals)")
    whole, _, decimals = text.partition(".")
    if len(decimals) > 2:
        raise ValueError("more than 2 decimals: fen are the smallest unit")
    fen = int(whole) * 100 + int(decimals.ljust(2, "0"))
    if fen == 0:
        raise ValueError("must be more than 0")
    if fen > MAX_AMOUNT:
        raise ValueError(
            f"more than field 4 holds: at most {MAX_AMOUNT // 100}.{MAX_AMOUNT % 100:02d} "
            f"({len(str(MAX_AMOUNT))} digits in fen)"
        )
    return fen


BATCH_FILE_PATTERN = "pos-batch-<terminal>-<merchant>.json"
_UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9_-]")
RESPONSE_TIMEOUT_S = 30.0


class BatchFileError(Exception):
    """The batch file cannot be used for this command; says why, in one line."""


def _batch_file(args: argparse.Namespace, config: SwitchConfig) -> Path:
    if args.batch_file:
        return Path(args.batch_file)
    terminal, merchant = (
        _UNSAFE_IN_FILE_NAME.sub("_", name) for name in (args.terminal, args.merchant)
    )
    name = BATCH_FILE_PATTERN.replace("<terminal>", terminal).replace("<merchant>", merchant)
    return config.path(config.journal.path).parent / name


def _load_batch(path: Path, args: argparse.Namespace) -> TerminalBatch:
    """The terminal's batch from its file (a new batch 1 if there is none), moved to
    ``--batch`` when that is another batch and the file holds no transaction."""
    from switch.terminal import TerminalBatch

    if path.exists():
        try:
            batch = msgspec.json.decode(path.read_bytes(), type=TerminalBatch)
        except (OSError, msgspec.DecodeError) as exc:
            raise BatchFileError(f"--batch-file {path}: cannot be read: {exc}") from None
    else:
        batch = TerminalBatch(terminal_id=args.terminal, merchant_id=args.merchant)
    if (batch.terminal_id, batch.merchant_id) != (args.terminal, args.merchant):
        raise BatchFileError(
            f"--batch-file {path}: holds terminal {batch.terminal_id} of merchant "
            f"{batch.merchant_id}, not {args.terminal} of {args.merchant}"
        )
    if args.batch is not None and args.batch != batch.batch:
        if not 0 <= args.batch <= 999_999:
            raise BatchFileError(f"--batch {args.batch}: must be 0 to 999999")
        if batch.entries:
            raise BatchFileError(
                f"--batch {args.batch}: {path} holds batch {batch.batch:06d}, not settled "
                f"({len(batch.entries)} recorded): settle it first, or name another "
                "--batch-file"
            )
        batch = msgspec.structs.replace(batch, batch=args.batch)
    return batch


def _save_batch(path: Path, batch: TerminalBatch) -> None:
    """Written beside and renamed, so a crash leaves the old file or the new one; 0600."""
    data = msgspec.json.format(msgspec.json.encode(batch)) + b"\n"
    write_private(path, data, partial=path.with_name(path.name + ".tmp"))


def _printable(response: Iso8583Message) -> dict[str, Any]:
    """A response as the pos commands print it: card numbers masked, bytes in hex; the
    working keys of a sign-on (62) by their KCVs only."""
    from switch.core.model import mask_pan
    from switch.core.online import MESSAGES

    fields = {
        str(number): mask_pan(value)
        if number == 2 and isinstance(value, str)
        else (value.hex() if isinstance(value, bytes) else value)
        for number, value in sorted(response.fields.items())
        if number != 62
    }
    keys = response.fields.get(62)
    if isinstance(keys, bytes):
        fields["62"] = f"working keys under the TMK ({len(keys)} bytes; not shown)"
    code = response.fields.get(39)
    return {
        "mti": response.mti,
        "response_code": code,
        "meaning": MESSAGES.get(str(code), "unknown"),
        "approved": code == "00",
        "fields": fields,
    }


def _check_stan(args: argparse.Namespace) -> bool:
    """Whether ``--stan`` is one (and a new one if it was not given)."""
    if args.stan is not None and not 1 <= args.stan <= 999_999:
        print(f"switch: --stan {args.stan}: must be 1 to 999999", file=sys.stderr)
        return False
    if args.stan is None:
        args.stan = time.time_ns() // 1_000_000 % 999_999 + 1
    return True


def _pos(args: argparse.Namespace, config: SwitchConfig) -> int:
    import trio

    from switch.app import Codecs
    from switch.errors import MessageEncodeError
    from switch.net.clients import MacMismatch, PosClient
    from switch.terminal import encode_pos_request

    amount = 0
    if args.message in AMOUNT_MESSAGES and args.amount is not None:
        try:
            amount = parse_amount(args.amount)
        except ValueError as exc:
            print(f"switch: --amount {args.amount!r}: {exc}", file=sys.stderr)
            return 2
    if not _check_stan(args):
        return 2
    path = _batch_file(args, config)
    try:
        batch = _load_batch(path, args)
        message = _pos_message(args, batch, amount)
    except BatchFileError as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    codec = Codecs(config.dialects_path()).get(config.pos.dialect)
    terminal = batch.terminal
    try:
        encode_pos_request(codec, terminal, message)  # refused here, before connecting
    except MessageEncodeError as exc:
        print(f"switch: cannot send this {args.message}: {exc}", file=sys.stderr)
        return 2
    host = args.host or config.pos.host
    port = args.port or config.pos.port
    try:
        security, keys_file = _terminal_security(args, path)
        pin = _pin(args)
    except BatchFileError as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2

    async def send() -> Iso8583Message:
        client = await PosClient.connect(host, port, codec, terminal, security=security, pin=pin)
        client.keys = security.current  # the keys file's: on a 77 or A0 it signs on again
        try:
            with trio.fail_after(RESPONSE_TIMEOUT_S):
                return await client.request(message)
        finally:
            await client.aclose()

    try:
        response = trio.run(send)
    except (OSError, EOFError, trio.TooSlowError, MacMismatch) as exc:
        print(f"switch: no response from {host}:{port}: {exc!r}", file=sys.stderr)
        return 1
    _save_keys(keys_file, security)
    print(json.dumps(_printable(response), indent=2))
    recorded = _recorded(args, batch, message, response)
    if recorded is not batch:
        try:
            _save_batch(path, recorded)
        except OSError as exc:
            print(f"switch: --batch-file {path}: not recorded: {exc}", file=sys.stderr)
            return 1
    return 0


KEYS_FILE_PATTERN = "pos-keys-<terminal>-<merchant>.json"


def _default_layout(args: argparse.Namespace) -> str:
    return "005" if args.tmk_cipher == "sm4" else "003"


def _terminal_security(
    args: argparse.Namespace, batch_file: Path
) -> tuple[TerminalSecurity, Path]:
    """The terminal's TMK (``--tmk-file``, else the DEMO TMK) and its working keys from
    its keys file, if any."""
    from switch.terminal import DEMO_TMK, TerminalSecurity

    if args.tmk_file:
        tmk_path = Path(args.tmk_file)
        try:
            if tmk_path.stat().st_mode & 0o077:
                raise BatchFileError(f"--tmk-file {tmk_path}: must be mode 0600")
            text = tmk_path.read_text().strip()
            tmk = bytes.fromhex(text)
        except (OSError, ValueError) as exc:
            raise BatchFileError(f"--tmk-file {tmk_path}: cannot be read: {exc}") from None
        if len(tmk) != 16:
            raise BatchFileError(f"--tmk-file {tmk_path}: 32 hexadecimal characters expected")
    else:
        tmk = DEMO_TMK
    layout = args.layout or _default_layout(args)
    try:
        security = TerminalSecurity(tmk, args.tmk_cipher, layout=layout)
    except ValueError as exc:
        raise BatchFileError(f"--layout {layout}: {exc}") from None
    if args.keys_file:
        keys_file = Path(args.keys_file)
    else:
        name = batch_file.name.replace("pos-batch-", "pos-keys-", 1)
        if name == batch_file.name:
            name = f"{batch_file.stem}.keys.json"
        keys_file = batch_file.with_name(name)
    if keys_file.exists():  # unreadable: it signs on again
        with contextlib.suppress(OSError, msgspec.DecodeError, msgspec.ValidationError):
            security.restore(keys_file.read_bytes())
    return security, keys_file


def _save_keys(path: Path, security: TerminalSecurity) -> None:
    """The terminal's working keys, for its next command (mode 0600)."""
    try:
        write_private(path, security.state(), partial=path.with_name(path.name + ".tmp"))
    except OSError as exc:
        print(f"switch: --keys-file {path}: not kept: {exc}", file=sys.stderr)


def _pin(args: argparse.Namespace) -> str | None:
    pin = getattr(args, "pin", None)
    if pin == "":
        pin = getpass.getpass("PIN: ")
    if pin is not None and not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
        raise BatchFileError("--pin: a PIN is 4 to 12 digits")
    return pin


def _pos_message(
    args: argparse.Namespace, batch: TerminalBatch, amount: int
) -> tuple[str, dict[int, FieldValue]]:
    terminal = batch.terminal
    if args.message in ("void", "refund"):
        sale = batch.sale(args.rrn)
        original_stan = args.original_stan or (sale.stan if sale is not None else None)
        if args.message == "void" and not amount and sale is not None:
            amount = sale.amount
        if original_stan is None or not amount:
            missing = "--original-stan" if original_stan is None else "--amount"
            raise BatchFileError(
                f"{missing} is needed: the batch file has no sale of RRN {args.rrn} to take it from"
            )
        if args.code:
            make = terminal.code_void if args.message == "void" else terminal.code_refund
            return make(args.stan, args.code, amount, args.rrn, original_stan)
        if args.message == "void":
            mti, fields = terminal.void(args.stan, args.pan, amount, args.rrn, original_stan)
        else:
            mti, fields = terminal.refund(args.stan, args.pan, amount, args.rrn, original_stan)
        fields[22] = "022"  # the sale's card, no PIN
        return mti, fields
    if args.message in HELD_MESSAGES:
        mti, fields = _held_message(args, terminal, amount)
        if getattr(args, "pin", None) is None:
            fields[22] = str(fields.get(22, "022"))[:2] + "2"  # no PIN sent
        return mti, fields
    if args.message == "sale" and args.code:
        return terminal.code_sale(args.stan, args.code, amount)
    if args.message in ("sale", "balance"):
        if args.message == "sale":
            mti, fields = terminal.sale(args.stan, args.pan, amount, expiry=args.expiry)
        else:
            mti, fields = terminal.balance(args.stan, args.pan, expiry=args.expiry)
        if args.pin is None:
            fields[22] = "022"  # no PIN sent (security.md: a PIN goes with 22's digit 3 = 1)
        return mti, fields
    if args.message == "echo":
        return terminal.echo(args.stan)
    return terminal.sign_on(args.stan, args.layout or _default_layout(args))


AMOUNT_MESSAGES = frozenset({"sale", "void", "refund", "preauth", "complete", "preauth-void",
                             "complete-void"})  # fmt: skip
HELD_MESSAGES = frozenset({"preauth", "complete", "preauth-void", "complete-void"})
"""`switch pos` messages of risk.md's pre-authorisation and completion."""
RECORDED_MESSAGES = frozenset({"sale", "void", "refund", "complete", "complete-void"})
"""What the batch file records once approved: what counts in the batch's totals."""


def _held_message(
    args: argparse.Namespace, terminal: Terminal, amount: int
) -> tuple[str, dict[int, FieldValue]]:
    """A pre-authorisation, its void, a completion or a completion void (risk.md)."""
    if args.message == "preauth":
        return terminal.preauth(args.stan, args.pan, amount, expiry=args.expiry)
    original = (args.auth, args.original_stan)
    batch = {"original_batch": args.original_batch}
    if args.message == "complete":
        return terminal.completion(args.stan, args.pan, amount, *original, args.original_date,
                                   rrn=args.rrn, **batch)  # fmt: skip
    if args.message == "preauth-void":
        return terminal.preauth_void(args.stan, args.pan, amount, args.rrn, *original, **batch)
    return terminal.completion_void(args.stan, args.pan, amount, args.rrn, *original, **batch)


def _recorded(
    args: argparse.Namespace,
    batch: TerminalBatch,
    message: tuple[str, dict[int, FieldValue]],
    response: Iso8583Message,
) -> TerminalBatch:
    """The batch with an approved sale, void or refund recorded in it."""
    if response.fields.get(39) != "00" or args.message not in RECORDED_MESSAGES:
        return batch
    rrn, amount = str(response.fields.get(37, "")), int(str(message[1][4]))
    if args.message == "sale":
        return batch.with_sale(args.stan, amount, rrn)
    if args.message == "complete":
        return batch.with_completion(args.stan, amount, rrn)
    if args.message in ("void", "complete-void"):
        return batch.with_void(args.stan, amount, rrn, args.rrn)
    return batch.with_refund(args.stan, amount, rrn, args.rrn)


def _pos_settle(args: argparse.Namespace, config: SwitchConfig) -> int:
    import trio

    from switch.app import Codecs
    from switch.core.batch import BALANCED, NOT_BALANCED
    from switch.net.clients import MacMismatch, PosClient

    if not _check_stan(args):
        return 2
    path = _batch_file(args, config)
    try:
        batch = _load_batch(path, args)
    except BatchFileError as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    terminal, totals = batch.terminal, batch.totals()
    try:
        settlement = terminal.settlement(args.stan, totals)
        upload = batch.upload_messages(args.stan % 999_999 + 1)
    except ValueError as exc:  # more than field 48 holds
        print(f"switch: batch {batch.batch:06d} cannot be settled: {exc}", file=sys.stderr)
        return 2
    codec = Codecs(config.dialects_path()).get(config.pos.dialect)
    host = args.host or config.pos.host
    port = args.port or config.pos.port
    uploaded: list[Iso8583Message] = []
    try:
        security, keys_file = _terminal_security(args, path)
    except BatchFileError as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2

    async def send() -> Iso8583Message:
        client = await PosClient.connect(host, port, codec, terminal, security=security)
        client.keys = security.current
        try:
            with trio.fail_after(RESPONSE_TIMEOUT_S):
                answer = await client.request(settlement)
            if answer.fields.get(39) != "00" or _batch_result(answer) != NOT_BALANCED:
                return answer
            for message in upload:  # each answered 00, or the upload stops there
                with trio.fail_after(RESPONSE_TIMEOUT_S):
                    uploaded.append(await client.request(message))
                if uploaded[-1].fields.get(39) != "00":
                    break
            return answer
        finally:
            await client.aclose()

    try:
        answer = trio.run(send)
    except (OSError, EOFError, trio.TooSlowError, MacMismatch) as exc:
        print(f"switch: no response from {host}:{port}: {exc!r}", file=sys.stderr)
        return 1
    _save_keys(keys_file, security)
    result = _batch_result(answer) if answer.fields.get(39) == "00" else None
    upload_complete = len(uploaded) == len(upload) and all(
        response.fields.get(39) == "00" for response in uploaded
    )
    closed = result == BALANCED or (result == NOT_BALANCED and upload_complete)
    printed = _printable(answer) | {
        "batch": f"{batch.batch:06d}",
        "totals": msgspec.structs.asdict(totals),
        "balanced": None if result is None else result == BALANCED,
        "upload": None
        if result != NOT_BALANCED
        else {
            "records": len(batch.upload_records()),
            "answers": [_printable(response) for response in uploaded],
            "complete": upload_complete,
        },
        "next_batch": f"{batch.next_batch().batch:06d}" if closed else None,
        "batch_file": str(path),
    }
    print(json.dumps(printed, indent=2))
    if closed:
        try:
            _save_batch(path, batch.next_batch())
        except OSError as exc:
            print(f"switch: --batch-file {path}: next batch not recorded: {exc}", file=sys.stderr)
            return 1
    return 0


def _batch_result(answer: Iso8583Message) -> str | None:
    """48.5 of a 0510."""
    from switch.core.batch import RESULT_AT

    field48 = answer.fields.get(48)
    return field48[RESULT_AT] if isinstance(field48, str) and len(field48) > RESULT_AT else None
