"""``switch top`` and ``switch status``: the running switch's state, read from its admin
interface (``GET /status``), drawn by ``console.py``.

``switch top`` redraws once a second until ``q`` or Ctrl-C; ``--once`` reads two
documents a second apart and prints that one frame (the same numbers as the live
console's, for scripts and tests). ``switch status`` prints one document's numbers
since the switch started, ``--json`` the document itself.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from switch.config import SwitchConfig, load_config, unreadable_config_hint
from switch.core.reconfig import ConfigChange
from switch.errors import ConfigError, ConfigUnreadable, StartupError

if TYPE_CHECKING:  # the commands import them as they run: `switch --help` need not
    from rich.console import Console

    from switch.admin.client import AdminClient
    from switch.admin.status import StatusDocument

NOT_A_TERMINAL_WIDTH: Final = 120
"""Columns for a frame printed to a file or a pipe (rich would take 80)."""
QUIT_KEYS: Final = b"qQ"


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Adds ``top`` and ``status`` to the ``switch`` command's sub-commands."""
    top = commands.add_parser(
        "top",
        help="a live console of a running switch",
        description="Per bank TPS, p50/p99, approvals, links, window, queue and SAF; per "
        "channel connections, TPS and refusals; the journal's commit p99. Read from the "
        "switch's admin interface once a second; q or Ctrl-C quits.",
    )
    top.add_argument(
        "--once",
        action="store_true",
        help="read two documents --interval apart, print that frame and exit",
    )
    top.add_argument(
        "--interval", type=float, default=1.0, help="seconds between readings (default 1)"
    )
    status = commands.add_parser(
        "status",
        help="the running switch's state, once",
        description="The running switch's state as a table, its numbers since it started "
        "(or the status document itself with --json).",
    )
    status.add_argument("--json", action="store_true", help="the status document as JSON")
    reload = commands.add_parser(
        "reload",
        help="make a running switch re-read its configuration file",
        description="Asks the running switch, through its admin interface, to re-read the "
        "configuration file it was started from (as SIGHUP does) and prints what it "
        "changed; a configuration that does not validate, or changes what only a restart "
        "can, is refused whole with the reasons (exit 2) and the running one stays. "
        "What changed is one line a key: `switch.max_in_flight 128 \u2192 256`, "
        "`banks.boc added`; --json prints the switch's answer itself.",
    )
    reload.add_argument(
        "--json", action="store_true", help="the switch's answer as JSON (changes key by key)"
    )
    trace = commands.add_parser(
        "trace",
        help="trace messages of a running switch field by field, or stop",
        description="Logs each message in and out of the chosen terminals, merchants or "
        "banks (or --all) field by field, as `trace` lines in the switch's log: card "
        "numbers masked, PIN blocks, keys and MACs never shown. At every worker, at once, "
        "until --off. Without options: who is traced now.",
    )
    trace.add_argument("--terminal", action="append", default=[], help="a terminal id (41)")
    trace.add_argument("--merchant", action="append", default=[], help="a merchant id (42)")
    trace.add_argument("--bank", action="append", default=[], help="a bank of [banks]")
    trace.add_argument("--all", action="store_true", help="every message")
    trace.add_argument("--off", action="store_true", help="stop tracing")
    for parser in (top, status, reload, trace):
        config_option(parser)
        parser.add_argument(
            "--url",
            help="the admin interface, http(s)://HOST:PORT (default: the config's [admin] host "
            "and port)",
        )
        add_token_option(parser)
    # The running switch judges its file (and remembers why it refused one): these
    # need of it only where the admin interface is, so a file being edited still does.
    top.set_defaults(handler=leniently(_top), needs_config=False)
    status.set_defaults(handler=leniently(_status), needs_config=False)
    reload.set_defaults(handler=leniently(_reload), needs_config=False)
    trace.set_defaults(handler=leniently(_trace), needs_config=False)


def _trace(args: argparse.Namespace, config: SwitchConfig) -> int:
    chosen = args.all or args.terminal or args.merchant or args.bank
    if args.off and chosen:
        print("switch: trace: --off with whom to trace: one or the other", file=sys.stderr)
        return 2

    def ask(client: AdminClient) -> int:
        if args.off:
            status, body = client.delete("/trace")
        elif chosen:
            selection = {
                "all": args.all, "terminals": args.terminal,
                "merchants": args.merchant, "banks": args.bank,
            }  # fmt: skip
            status, body = client.post("/trace", json.dumps(selection).encode())
        else:
            status, body = client.get("/trace")
        if status != 200:
            print(f"switch: trace: {status} {body.decode(errors='replace').strip()}",
                  file=sys.stderr)  # fmt: skip
            return 2
        sys.stdout.write(body.decode())
        return 0

    return with_client(args, config, ask)


def add_token_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token-file",
        help="the file holding the admin bearer token (default: the config's [admin] "
        "token_file, else the admin-token file the switch made)",
    )


def leniently(
    handler: Callable[[argparse.Namespace, SwitchConfig], int],
) -> Callable[[argparse.Namespace, SwitchConfig | None], int]:
    """The handler, given the config file as its types read it (no cross-checks)."""

    def with_config(args: argparse.Namespace, _: SwitchConfig | None) -> int:
        try:
            config = load_config(args.config, check=False)
        except ConfigError as exc:
            print(f"switch: {config_error_line(exc, args)}", file=sys.stderr)
            return 2
        return handler(args, config)

    return with_config


def config_error_line(exc: ConfigError, args: argparse.Namespace) -> str:
    """A config's error as printed; one that cannot be read says where its path came
    from (--config, $SWITCH_CONFIG or the default) and how to give another."""
    if isinstance(exc, ConfigUnreadable):
        return f"{exc} {unreadable_config_hint(getattr(args, 'config_origin', '--config'))}"
    return str(exc)


def _client(args: argparse.Namespace, config: SwitchConfig) -> AdminClient:
    """StartupError, with the one line to print, when there is nothing to ask."""
    from switch.admin.auth import client_token, token_from_file
    from switch.admin.client import AdminClient, admin_tls, admin_url

    if args.url is None and not config.admin.enabled:
        raise StartupError(
            f"{args.config}: [admin] enabled is false: the switch has no admin interface "
            "to read (enable it, or give --url)"
        )
    named = getattr(args, "token_file", None)
    token = token_from_file(Path(named)) if named else client_token(config)
    try:
        return AdminClient(args.url or admin_url(config), token=token, tls=admin_tls(config))
    except ValueError as exc:
        raise StartupError(f"--url: {exc}") from None


def _output() -> Console:
    from rich.console import Console

    terminal = sys.stdout.isatty()
    return Console(width=None if terminal else NOT_A_TERMINAL_WIDTH, highlight=False)


def _status(args: argparse.Namespace, config: SwitchConfig) -> int:
    return with_client(args, config, lambda client: _print_status(client, args.json))


def _reload(args: argparse.Namespace, config: SwitchConfig) -> int:
    return with_client(args, config, lambda client: _ask_to_reload(client, args.json))


class ReloadAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """The switch's answer to ``POST /reload`` (and ``GET /reload``), as read here."""

    accepted: bool
    version: int
    problems: list[str] = msgspec.field(default_factory=list)
    diff: list[ConfigChange] = msgspec.field(default_factory=list)


_reload_answer = msgspec.json.Decoder(ReloadAnswer)


def _ask_to_reload(client: AdminClient, as_json: bool) -> int:
    from switch.admin.client import AdminUnavailable

    status, body = client.post("/reload")
    if status not in (200, 422):
        raise AdminUnavailable(f"{client.url}/reload answered {status}")
    if as_json:
        sys.stdout.write(body.decode(errors="replace"))
    else:
        print("\n".join(reload_lines(_decode_answer(client, body))))
    return 0 if status == 200 else 2  # 422: refused, the lines say why


def _decode_answer(client: AdminClient, body: bytes) -> ReloadAnswer:
    from switch.admin.client import AdminUnavailable

    try:
        return _reload_answer.decode(body)
    except msgspec.DecodeError as exc:
        raise AdminUnavailable(f"{client.url}/reload: not a reload answer: {exc}") from None


def reload_lines(answer: ReloadAnswer) -> list[str]:
    """What ``switch reload`` prints: taken or refused, then what changed, a key a line."""
    if not answer.accepted:
        lines = [f"refused: {problem}" for problem in answer.problems]
        lines.append(f"the running configuration stays (version {answer.version}); the file "
                     "would have changed:" if answer.diff else
                     f"the running configuration stays (version {answer.version})")  # fmt: skip
        lines.extend(f"  {change.describe()}" for change in answer.diff)
        return lines
    if not answer.diff:
        return [f"reloaded: nothing changed (configuration version {answer.version})"]
    lines = [f"reloaded: configuration version {answer.version}"]
    lines.extend(f"  {change.describe()}" for change in answer.diff)
    return lines


def running_config_notes(config: SwitchConfig) -> list[str]:
    """What a reload of ``config``'s file would change in the switch running it, asked
    of its admin interface (``GET /reload``, which changes nothing), a note a line; none
    when no switch answers there, or when it runs from another file."""
    from switch.admin.auth import client_token
    from switch.admin.client import AdminClient, AdminUnavailable, admin_url

    if not config.admin.enabled or config.source is None:
        return []
    token = client_token(config)
    if token is None:
        return []
    try:
        client = AdminClient(admin_url(config), token=token)
    except ValueError:
        return []
    try:
        running = client.status()
        if Path(running.config.path).resolve() != Path(config.source):
            return [f"the running switch reads {running.config.path}, not this file: a reload "
                    "does not read it"]  # fmt: skip
        status, body = client.get("/reload")
        if status not in (200, 422):
            return [f"the running switch cannot say what a reload would change ({status})"]
        answer = _decode_answer(client, body)
    except AdminUnavailable:
        return []  # no switch answers: nothing runs this file
    finally:
        client.close()
    notes = [f"a reload would be refused: {problem}" for problem in answer.problems]
    if not answer.diff:
        notes.append("the running switch has this configuration (a reload changes nothing)")
    notes.extend(f"a reload changes {change.describe()}" for change in answer.diff)
    return notes


def _print_status(client: AdminClient, as_json: bool) -> int:
    from switch.admin import console
    from switch.admin.status import status_encoder

    document = client.status()
    if as_json:
        sys.stdout.write(status_encoder.encode(document).decode() + "\n")
    else:
        _output().print(console.render(console.frame(None, document)))
    return 0


def _top(args: argparse.Namespace, config: SwitchConfig) -> int:
    if args.interval <= 0:
        print("switch: --interval must be more than 0", file=sys.stderr)
        return 2
    if args.once:
        return with_client(args, config, lambda client: _print_once(client, args.interval))
    return with_client(args, config, lambda client: _live(client, args.interval))


def with_client(
    args: argparse.Namespace, config: SwitchConfig, action: Callable[[AdminClient], int]
) -> int:
    from switch.admin.client import AdminUnavailable

    try:
        client = _client(args, config)
    except StartupError as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    try:
        return action(client)
    except AdminUnavailable as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _print_once(client: AdminClient, interval_s: float) -> int:
    from switch.admin import console

    first = client.status()
    time.sleep(interval_s)
    _output().print(console.render(console.frame(first, client.status())))
    return 0


def _live(client: AdminClient, interval_s: float) -> int:
    """Redraws until q or Ctrl-C (exit 0 either way, the terminal as it was). A switch
    that stops answering is said so above the last frame, and asked again."""
    from rich.console import Console
    from rich.live import Live

    from switch.admin import console
    from switch.admin.client import AdminUnavailable

    keys = sys.stdin.fileno() if sys.stdin.isatty() else None
    saved: list[Any] | None = termios.tcgetattr(keys) if keys is not None else None
    previous: StatusDocument | None = None
    shown: console.Frame | None = None
    try:
        if keys is not None:
            tty.setcbreak(keys)  # keys arrive one at a time, unechoed; Ctrl-C still works
        with Live(console=Console(), screen=True, auto_refresh=False) as live:
            while True:
                error = None
                try:
                    current = client.status()
                except AdminUnavailable as exc:
                    error = str(exc)
                else:
                    shown = console.frame(previous, current)
                    previous = current
                live.update(console.render(shown, error=error), refresh=True)
                if _quit_within(keys, interval_s):
                    return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if keys is not None and saved is not None:
            termios.tcsetattr(keys, termios.TCSADRAIN, saved)


def _quit_within(keys: int | None, seconds: float) -> bool:
    """Waits ``seconds`` for q on ``keys`` (a terminal in cbreak mode); True if pressed."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if keys is None:
            time.sleep(left)
            return False
        readable, _, _ = select.select([keys], [], [], left)
        if readable:
            pressed = os.read(keys, 32)
            if not pressed:  # the terminal went away: no more keys to wait for
                keys = None
            elif any(key in QUIT_KEYS for key in pressed):
                return True
    return False
