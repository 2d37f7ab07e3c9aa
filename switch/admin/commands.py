"""``switch top`` and ``switch status``: the running switch's state, read from its admin
interface (``GET /status``), drawn by ``console.py``.

``switch top`` redraws once a second until ``q`` or Ctrl-C; ``--once`` reads two
documents a second apart and prints that one frame (the same numbers as the live
console's, for scripts and tests). ``switch status`` prints one document's numbers
since the switch started, ``--json`` the document itself.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.live import Live

from switch.admin import console
from switch.admin.auth import client_token, token_from_file
from switch.admin.client import AdminClient, AdminUnavailable, admin_url
from switch.admin.status import StatusDocument, status_encoder
from switch.config import SwitchConfig, load_config
from switch.errors import ConfigError, StartupError

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
        "can, is refused whole with the reasons (exit 2) and the running one stays.",
    )
    for parser in (top, status, reload):
        config_option(parser)
        parser.add_argument(
            "--url",
            help="the admin interface, http://HOST:PORT (default: the config's [admin] host "
            "and port)",
        )
        add_token_option(parser)
    # The running switch judges its file (and remembers why it refused one): these
    # need of it only where the admin interface is, so a file being edited still does.
    top.set_defaults(handler=leniently(_top), needs_config=False)
    status.set_defaults(handler=leniently(_status), needs_config=False)
    reload.set_defaults(handler=leniently(_reload), needs_config=False)


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
            print(f"switch: {exc}", file=sys.stderr)
            return 2
        return handler(args, config)

    return with_config


def _client(args: argparse.Namespace, config: SwitchConfig) -> AdminClient:
    """StartupError, with the one line to print, when there is nothing to ask."""
    if args.url is None and not config.admin.enabled:
        raise StartupError(
            f"{args.config}: [admin] enabled is false: the switch has no admin interface "
            "to read (enable it, or give --url)"
        )
    named = getattr(args, "token_file", None)
    token = token_from_file(Path(named)) if named else client_token(config)
    try:
        return AdminClient(args.url or admin_url(config), token=token)
    except ValueError as exc:
        raise StartupError(f"--url: {exc}") from None


def _output() -> Console:
    terminal = sys.stdout.isatty()
    return Console(width=None if terminal else NOT_A_TERMINAL_WIDTH, highlight=False)


def _status(args: argparse.Namespace, config: SwitchConfig) -> int:
    return with_client(args, config, lambda client: _print_status(client, args.json))


def _reload(args: argparse.Namespace, config: SwitchConfig) -> int:
    return with_client(args, config, _ask_to_reload)


def _ask_to_reload(client: AdminClient) -> int:
    status, body = client.post("/reload")
    sys.stdout.write(body.decode(errors="replace"))
    if status == 200:
        return 0
    if status == 422:
        return 2  # refused: the body says why
    raise AdminUnavailable(f"{client.url}/reload answered {status}")


def _print_status(client: AdminClient, as_json: bool) -> int:
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
    first = client.status()
    time.sleep(interval_s)
    _output().print(console.render(console.frame(first, client.status())))
    return 0


def _live(client: AdminClient, interval_s: float) -> int:
    """Redraws until q or Ctrl-C (exit 0 either way, the terminal as it was). A switch
    that stops answering is said so above the last frame, and asked again."""
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
