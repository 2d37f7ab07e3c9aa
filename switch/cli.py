"""The ``switch`` command: run the switch, run a bank simulator, or send one POS message.

Config is loaded once here and passed down.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

import structlog
import trio

from switch.app import Codecs, SwitchApp
from switch.config import SwitchConfig, load_config
from switch.core.model import mask_pan
from switch.core.online import MESSAGES
from switch.errors import ConfigError
from switch.log import configure_logging
from switch.net.clients import PosClient
from switch.sim.server import BankSimulator
from switch.terminal import Terminal

DEFAULT_CONFIG = "conf/switch.toml"
log = structlog.get_logger()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    result: int = args.handler(args, config)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switch",
        description="A payment switch: POS (ISO 8583) and online (MessagePack) channels "
        "routed by card BIN to bank host-to-host links.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run the switch", description="Run the switch until SIGINT or SIGTERM."
    )
    _config_option(run)
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
    sim.set_defaults(handler=_sim_bank)

    pos = commands.add_parser(
        "pos",
        help="send one POS message to a running switch and print the response",
        description="The operator's smoke test: send one pos-cup.md message and print the "
        "decoded response (card numbers masked).",
    )
    pos.add_argument("message", choices=["sale", "balance", "echo", "signon"])
    _config_option(pos)
    pos.add_argument("--host", help="switch host (default: the config's [pos] host)")
    pos.add_argument("--port", type=int, help="switch POS port (default: the config's)")
    pos.add_argument("--pan", default="6222021000111122221", help="card number")
    pos.add_argument("--amount", default="100.00", help="amount in yuan, e.g. 100.00")
    pos.add_argument("--expiry", default="2812", help="card expiry YYMM")
    pos.add_argument("--terminal", default="POS00001", help="terminal id (field 41)")
    pos.add_argument("--merchant", default="898310048990001", help="merchant id (field 42)")
    pos.add_argument("--stan", type=int, default=1, help="trace number (field 11)")
    pos.add_argument("--batch", type=int, default=1, help="batch number (field 60.2)")
    pos.set_defaults(handler=_pos)
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"switch config file (default: {DEFAULT_CONFIG})"
    )


def _run(args: argparse.Namespace, config: SwitchConfig) -> int:
    try:
        app = SwitchApp(config)
    except (ConfigError, KeyError) as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log.level)
    trio.run(_run_switch, app)
    return 0


async def _run_switch(app: SwitchApp) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_shutdown_on_signal, app)
        await app.run()
        nursery.cancel_scope.cancel()


async def _shutdown_on_signal(app: SwitchApp) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("signal_received", signal=signal.Signals(signum).name)
            app.shutdown()
            return


def _sim_bank(args: argparse.Namespace, config: SwitchConfig) -> int:
    bank = config.banks.get(args.bank)
    if bank is None:
        print(f"switch: no bank {args.bank!r} in {args.config}", file=sys.stderr)
        return 2
    if args.port is not None:
        import msgspec

        bank = msgspec.structs.replace(bank, port=args.port)
    configure_logging(config.log.level)
    codec = Codecs(config.dialects_path()).get(bank.dialect)
    simulator = BankSimulator(args.bank, bank, codec)

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(simulator.serve)
            log.info("simulator_started", bank=args.bank, port=port)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

    trio.run(serve)
    return 0


def _pos(args: argparse.Namespace, config: SwitchConfig) -> int:
    try:
        amount = int(Decimal(args.amount) * 100)
    except InvalidOperation:
        print(f"switch: --amount {args.amount!r} is not an amount in yuan", file=sys.stderr)
        return 2
    codec = Codecs(config.dialects_path()).get(config.pos.dialect)
    terminal = Terminal(terminal_id=args.terminal, merchant_id=args.merchant, batch=args.batch)
    builders = {
        "sale": lambda: terminal.sale(args.stan, args.pan, amount, expiry=args.expiry),
        "balance": lambda: terminal.balance(args.stan, args.pan, expiry=args.expiry),
        "echo": lambda: terminal.echo(args.stan),
        "signon": lambda: terminal.sign_on(args.stan),
    }
    message = builders[args.message]()
    host = args.host or config.pos.host
    port = args.port or config.pos.port

    async def send() -> None:
        client = await PosClient.connect(host, port, codec, terminal)
        try:
            with trio.fail_after(30):
                response = await client.request(message)
        finally:
            await client.aclose()
        fields = {
            str(number): mask_pan(value)
            if number == 2 and isinstance(value, str)
            else (value.hex() if isinstance(value, bytes) else value)
            for number, value in sorted(response.fields.items())
        }
        code = response.fields.get(39)
        print(
            json.dumps(
                {
                    "mti": response.mti,
                    "response_code": code,
                    "meaning": MESSAGES.get(str(code), "unknown"),
                    "approved": code == "00",
                    "fields": fields,
                },
                indent=2,
            )
        )

    try:
        trio.run(send)
    except (OSError, EOFError, trio.TooSlowError) as exc:
        print(f"switch: no response from {host}:{port}: {exc!r}", file=sys.stderr)
        return 1
    return 0
