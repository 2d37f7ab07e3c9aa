"""``switch online``: one signed online request from the command line, as a merchant's
back end sends it (online.md in security.md's envelope), and its answer printed once
its signature and timestamp are checked. For operators' smoke tests and merchants'
developers; ``switch pos`` is its POS twin.

The key is the principal's: ``--key-id`` with ``--secret-file`` (the file ``switch keys
online new`` delivered), or, without them, the DEMO key ``demo-m-<merchant>`` that a
switch with ``[security] demo_keys = true`` takes.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec

from switch.config import SwitchConfig

if TYPE_CHECKING:  # the commands import them as they run: `switch --help` need not
    from switch.net.clients import OnlineKey
    from switch.wire import online as wire

T = TypeVar("T")

RESPONSE_TIMEOUT_S: Final = 30.0
DEFAULT_MERCHANT: Final = "898310048990001"


def exchanged(run: Callable[[], T], host: str, port: int) -> T | None:
    """``run``'s answer, or None once the one line saying why there is none is printed."""
    import trio

    from switch.net.clients import UnverifiedAnswer

    # What ends an exchange with no answer the command can show.
    no_answer = (OSError, EOFError, trio.TooSlowError, trio.BrokenResourceError,
                 msgspec.DecodeError)  # fmt: skip
    try:
        return run()
    except UnverifiedAnswer as exc:
        print(f"switch: the answer is not the switch's (taken as no answer): {exc}",
              file=sys.stderr)  # fmt: skip
    except no_answer as exc:
        print(f"switch: no response from {host}:{port}: {exc!r}", file=sys.stderr)
    return None


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config_option: Callable[[argparse.ArgumentParser], None],
    parse_amount: Callable[[str], int],
) -> None:
    online = commands.add_parser(
        "online",
        help="send one signed online request to a running switch and print the answer",
        description="Send one online.md request in a signed envelope (security.md) and print "
        "the answer as JSON, once its signature and timestamp are verified (card numbers "
        "masked). The key: --key-id and --secret-file, or by default the DEMO key "
        "demo-m-<merchant> of a switch with [security] demo_keys = true.",
    )
    requests = online.add_subparsers(required=True, metavar="REQUEST")
    common = argparse.ArgumentParser(add_help=False)
    config_option(common)
    common.add_argument("--host", help="switch host (default: the config's [online] host)")
    common.add_argument("--port", type=int, help="switch online port (default: the config's)")
    common.add_argument("--merchant", default=DEFAULT_MERCHANT, help="merchant_id")
    common.add_argument(
        "--id", help="the request's id (idempotency key; default: a new one each time)"
    )
    common.add_argument("--key-id", help="the online key's id (default: demo-m-<merchant>)")
    common.add_argument(
        "--secret-file",
        type=Path,
        help="the key's secret: the file `switch keys online new` wrote (64 hex characters)",
    )
    common.add_argument(
        "--ca-file",
        type=Path,
        help="speak TLS, trusting this certificate (default: the config's [online] "
        "tls_cert_file when it names one, else plain TCP)",
    )
    card = argparse.ArgumentParser(add_help=False)
    card.add_argument("--card", default="6222021000111122221", help="card number")
    card.add_argument("--expiry", default="2812", help="card expiry YYMM")
    card.add_argument("--cvv2", help="the card's CVV2 (3 digits; sent, never stored)")
    purchase = requests.add_parser(
        "purchase", parents=[common, card], help="a purchase",
        description="A card purchase; its id is what status, void and refund name.",
    )  # fmt: skip
    purchase.add_argument("--amount", default="1.00", help="amount in yuan, e.g. 1.00")
    purchase.add_argument("--currency", default="CNY", help="ISO 4217 alpha code")
    balance = requests.add_parser("balance", parents=[common, card], help="a balance inquiry")
    status = requests.add_parser(
        "status", parents=[common], help="the stored result of an earlier request"
    )
    void = requests.add_parser("void", parents=[common], help="void a purchase")
    refund = requests.add_parser("refund", parents=[common], help="refund (part of) a purchase")
    refund.add_argument("--amount", required=True, help="amount in yuan to refund")
    for parser in (status, void, refund):
        parser.add_argument("--original-id", required=True, help="the id of the purchase")
    for name, parser in (
        ("purchase", purchase), ("balance", balance), ("status", status), ("void", void),
        ("refund", refund),
    ):  # fmt: skip
        parser.set_defaults(
            handler=lambda args, config, _name=name: _online(args, config, _name, parse_amount)
        )
    send = requests.add_parser(
        "send", parents=[common], help="any request type, its fields given one by one",
        description="Any online.md request, e.g. wallet.md's: `switch online send "
        "wallet_open --field customer_id=C100000001 --field class:=2`. Each --field is "
        "NAME=TEXT (a string) or NAME:=JSON (a number, true, a map...); amounts are "
        "integers in fen. Without --key-id the DEMO key of the request's "
        "principal signs it: demo-m-<merchant_id> when the fields name a merchant_id, "
        "else demo-app (app:wallet).",
    )  # fmt: skip
    send.add_argument("type", help="the request's type, e.g. wallet_balance, qr_create")
    send.add_argument("--field", action="append", default=[], metavar="NAME=TEXT|NAME:=JSON",
                      help="a field of the request (repeat for each)")  # fmt: skip
    send.set_defaults(handler=_send)


def _request(args: argparse.Namespace, name: str, amount: int) -> wire.OnlineRequest:
    from switch.wire import online as wire

    request_id = args.id or f"cli-{time.time_ns() // 1_000_000}"
    merchant = args.merchant
    if name in ("purchase", "balance"):
        card = wire.Card(pan=args.card, expiry=args.expiry, cvv2=args.cvv2)
        if name == "balance":
            return wire.Balance(id=request_id, merchant_id=merchant, card=card)
        return wire.Purchase(
            id=request_id, merchant_id=merchant, amount=amount, currency=args.currency, card=card
        )
    if name == "status":
        return wire.Status(id=request_id, merchant_id=merchant, original_id=args.original_id)
    if name == "void":
        return wire.Void(id=request_id, merchant_id=merchant, original_id=args.original_id)
    return wire.Refund(
        id=request_id, merchant_id=merchant, original_id=args.original_id, amount=amount
    )


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """``send``'s body: ``type``, ``id`` and each ``--field``."""
    body: dict[str, Any] = {
        "type": args.type,
        "id": args.id or f"cli-{time.time_ns() // 1_000_000}",
    }
    for item in args.field:
        raw = item.partition("=")[0].endswith(":")  # NAME:=JSON
        name, sep, text = item.partition(":=" if raw else "=")
        if not sep or not name:
            raise ValueError(f"--field {item!r}: NAME=TEXT or NAME:=JSON")
        if not raw:
            body[name] = text
            continue
        try:
            body[name] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--field {item!r}: {exc}") from None
    return body


def _send(args: argparse.Namespace, config: SwitchConfig) -> int:
    import trio

    from switch.net.clients import OnlineClient, OnlineKey

    try:
        body = _fields(args)
        merchant = body.get("merchant_id")
        if args.secret_file is None and args.key_id is None and not isinstance(merchant, str):
            print("switch: signing with the DEMO key demo-app (published secret; only a "
                  "switch with [security] demo_keys = true takes it)", file=sys.stderr)  # fmt: skip
            key = OnlineKey.demo_app()
        else:
            if isinstance(merchant, str):
                args.merchant = merchant
            key = _key(args)
        tls = _tls(args, config)
    except (ValueError, OSError, ssl.SSLError) as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    host = args.host or config.online.host
    port = args.port or config.online.port

    async def exchange() -> tuple[dict[str, Any], bool]:
        client = await OnlineClient.connect(host, port, tls=tls, key=key)
        try:
            with trio.fail_after(RESPONSE_TIMEOUT_S):
                await client.send_raw(msgspec.msgpack.encode(body))
                answer = msgspec.msgpack.decode(await client.receive_raw())
                return answer, client.last_signed
        finally:
            await client.aclose()

    exchange_done = exchanged(lambda: trio.run(exchange), host, port)
    if exchange_done is None:
        return 1
    answer, signed = exchange_done
    if not isinstance(answer, dict):
        print(f"switch: the answer is not a map: {answer!r}", file=sys.stderr)
        return 1
    print(json.dumps(_masked({**answer, "signed": signed}), indent=2, ensure_ascii=False))
    return 0


def _masked(answer: dict[str, Any]) -> dict[str, Any]:
    """``printable``'s masking for any answer: card numbers in its free text masked."""
    from switch.core.model import mask_pan

    for name in ("message", "memo", "order_id"):
        if isinstance(answer.get(name), str):
            answer[name] = " ".join(
                mask_pan(word) if word.isdigit() and 12 <= len(word) <= 19 else word
                for word in answer[name].split(" ")
            )
    return answer


def _key(args: argparse.Namespace) -> OnlineKey:
    from switch.net.clients import OnlineKey

    if args.secret_file is None:
        if args.key_id is not None:
            raise ValueError("--key-id needs --secret-file (the key's secret)")
        print(
            f"switch: signing with the DEMO key demo-m-{args.merchant} (published secret; "
            "only a switch with [security] demo_keys = true takes it)",
            file=sys.stderr,
        )
        return OnlineKey.demo_merchant(args.merchant)
    if args.key_id is None:
        raise ValueError("--secret-file needs --key-id (the key's id)")
    return OnlineKey.from_file(args.key_id, args.secret_file)


def _tls(args: argparse.Namespace, config: SwitchConfig) -> ssl.SSLContext | None:
    ca_file = args.ca_file
    if ca_file is None and config.online.tls_cert_file is not None:
        ca_file = config.path(config.online.tls_cert_file)
    if ca_file is None:
        return None
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def printable(response: wire.OnlineResponse, *, signed: bool) -> dict[str, Any]:
    from switch.core.model import mask_pan

    answer: dict[str, Any] = msgspec.to_builtins(response)
    answer["signed"] = signed
    for name in ("message", "memo", "order_id"):  # never print a card number back
        if isinstance(answer.get(name), str):
            answer[name] = " ".join(
                mask_pan(word) if word.isdigit() and 12 <= len(word) <= 19 else word
                for word in answer[name].split(" ")
            )
    return answer


def _online(
    args: argparse.Namespace, config: SwitchConfig, name: str, parse_amount: Callable[[str], int]
) -> int:
    import trio

    from switch.net.clients import OnlineClient

    amount = 0
    if getattr(args, "amount", None) is not None:
        try:
            amount = parse_amount(args.amount)
        except ValueError as exc:
            print(f"switch: --amount {args.amount!r}: {exc}", file=sys.stderr)
            return 2
    try:
        key = _key(args)
        request = _request(args, name, amount)
        tls = _tls(args, config)
    except (ValueError, OSError, ssl.SSLError) as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    host = args.host or config.online.host
    port = args.port or config.online.port

    async def send() -> tuple[wire.OnlineResponse, bool]:
        client = await OnlineClient.connect(host, port, tls=tls, key=key)
        try:
            with trio.fail_after(RESPONSE_TIMEOUT_S):
                return await client.request(request), client.last_signed
        finally:
            await client.aclose()

    sent = exchanged(lambda: trio.run(send), host, port)
    if sent is None:
        return 1
    response, signed = sent
    print(json.dumps(printable(response, signed=signed), indent=2))
    return 0
