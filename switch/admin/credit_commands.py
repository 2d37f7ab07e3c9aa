"""``switch credit open|status|statement|plans|repay|convert``: credit.md's online
requests sent to the running switch as the app back end sends them, each in a signed
envelope (security.md) under an app key, its signed answer checked and printed. The key:
``--key-id`` with ``--secret-file`` (the file ``switch keys online new`` delivered), or,
without them, the DEMO key of ``app:wallet`` that a switch with ``[security] demo_keys =
true`` takes. The customer is the app's: a wallet another app principal opened is
``error`` 03 here as online.

Nothing here opens the ledger store: the running switch checks, decides and records each
request (its business date, its RRNs, its idempotency per app and ``id``), and closing
business dates is its cut-off's."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from switch.config import SwitchConfig
from switch.core.wallet import CUSTOMER_ID
from switch.online_cli import _masked, _tls, exchanged

if TYPE_CHECKING:  # the commands import them as they run: `switch --help` need not
    from switch.net.clients import OnlineKey

RESPONSE_TIMEOUT_S: Final = 30.0
TERMS: Final = ("3", "6", "12", "24")


def signed_options(config_option: Callable[[argparse.ArgumentParser], None],
                    key_default: str) -> argparse.ArgumentParser:  # fmt: skip
    """The options of every command sent as a signed online request."""
    common = argparse.ArgumentParser(add_help=False)
    config_option(common)
    common.add_argument("--host", help="switch host (default: the config's [online] host)")
    common.add_argument("--port", type=int, help="switch online port (default: the config's)")
    common.add_argument(
        "--id", dest="request_id",
        help="the request's id, its idempotency key (default: a new one each time): the "
        "same id again answers the first's result and changes nothing",
    )  # fmt: skip
    common.add_argument("--key-id", help=f"the key's id (default: {key_default})")
    common.add_argument("--secret-file", type=Path,
                        help="the key secret: the file of `switch keys online new`")  # fmt: skip
    common.add_argument("--ca-file", type=Path,
                        help="speak TLS, trusting this certificate (default: the config's "
                        "[online] tls_cert_file when it names one)")  # fmt: skip
    common.add_argument("--json", action="store_true", help="the whole answer as JSON")
    return common


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    credit = commands.add_parser(
        "credit",
        help="credit accounts through the running switch: open, status, statement, plans, "
        "repay, convert",
        description="credit.md's requests, signed under an app key and sent to the running "
        "switch's online port; the answer is printed once its signature is verified. The "
        "key: --key-id and --secret-file, or by default the DEMO key of app:wallet (a "
        "switch with [security] demo_keys = true takes it).",
    )
    actions = credit.add_subparsers(dest="credit_action", required=True, metavar="ACTION")
    common = signed_options(config_option, "the DEMO app key")
    common.add_argument("customer_id")
    opening = actions.add_parser(
        "open", parents=[common], help="open the credit account of a customer with a wallet",
        description="credit_open: the customer's wallet must exist, opened by the key's app "
        "(14; another app's: 03); one account a customer (12). It opens on the switch's "
        "business date.",
    )  # fmt: skip
    opening.add_argument("--limit", dest="limit_fen", type=int, required=True,
                         help="the credit limit in fen, 0..100000000")  # fmt: skip
    opening.add_argument("--statement-day", type=int, help="1..28 (default: [credit])")
    opening.add_argument("--grace-days", type=int, help="1..20 (default: [credit])")
    status = actions.add_parser(
        "status", parents=[common], help="the account: limit, available, due, overdue"
    )
    statement = actions.add_parser("statement", parents=[common], help="a statement made")
    statement.add_argument("period", help="YYYY-MM")
    plans = actions.add_parser(
        "plans", parents=[common], help="the plans with anything unbilled or unpaid"
    )
    plans.add_argument("--purchase-id", help="that plan (finished or not), with its schedule")
    repay = actions.add_parser(
        "repay", parents=[common], help="repay from the customer's wallet, or a debit card",
        description="credit_repay: AMOUNT fen, 1 to the payoff, from the wallet (counted in "
        "its class limit) or, with --card, by a sale to a debit card's bank; allocated as "
        "credit.md says (penalties, overdue fees and principal, the rest billed, then "
        "prepayment, --purchase-id first).",
    )  # fmt: skip
    repay.add_argument("amount", type=int, help="fen, 1 to the payoff")
    repay.add_argument("--purchase-id", help="prepay this purchase first")
    repay.add_argument("--card", help="repay by this debit card (a sale to its bank) "
                       "instead of from the wallet")  # fmt: skip
    repay.add_argument("--expiry", default="2812", help="the card's expiry YYMM")
    repay.add_argument("--cvv2", help="the card's CVV2 (sent, never stored)")
    convert = actions.add_parser(
        "convert", parents=[common], help="turn a purchase into instalments",
        description="credit_convert: a plan of a purchase without one, until the close of "
        "its first due date.",
    )  # fmt: skip
    convert.add_argument("purchase_id")
    convert.add_argument("instalments", choices=TERMS)
    for parser in (opening, status, statement, plans, repay, convert):
        parser.set_defaults(handler=_credit)


def _problem(args: argparse.Namespace) -> str | None:
    """What the switch would refuse with ``error`` 30, said before anything is sent."""
    if not CUSTOMER_ID.fullmatch(args.customer_id):
        return "customer_id: 1..32 of [A-Za-z0-9._:-]"
    action = args.credit_action
    if action == "open":
        if not 0 <= args.limit_fen <= 100_000_000:
            return "--limit: 0..100000000"
        if args.statement_day is not None and not 1 <= args.statement_day <= 28:
            return "--statement-day: 1..28"
        if args.grace_days is not None and not 1 <= args.grace_days <= 20:
            return "--grace-days: 1..20"
    if action == "repay" and not 1 <= args.amount <= 10**12 - 1:
        return "amount: 1..999999999999"
    if action == "statement" and not (
        len(args.period) == 7 and args.period[4] == "-" and args.period.replace("-", "").isdigit()
    ):
        return "period: YYYY-MM"
    return None


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    """The request's map (credit.md's "Online requests"), its keys in the spec's order."""
    action = args.credit_action
    body: dict[str, Any] = {
        "type": f"credit_{action}",
        "id": args.request_id or f"cli-{time.time_ns() // 1_000_000}",
        "customer_id": args.customer_id,
    }
    if action == "open":
        body["limit_fen"] = args.limit_fen
        for name in ("statement_day", "grace_days"):
            if getattr(args, name) is not None:
                body[name] = getattr(args, name)
    elif action == "statement":
        body["period"] = args.period
    elif action == "plans" and args.purchase_id is not None:
        body["purchase_id"] = args.purchase_id
    elif action == "repay" and args.card is not None:
        card = {"pan": args.card, "expiry": args.expiry}
        if args.cvv2 is not None:
            card["cvv2"] = args.cvv2
        body.update({"amount": args.amount, "from": "card", "card": card})
        if args.purchase_id is not None:
            body["purchase_id"] = args.purchase_id
    elif action == "repay":
        body.update({"amount": args.amount, "from": "wallet"})
        if args.purchase_id is not None:
            body["purchase_id"] = args.purchase_id
    elif action == "convert":
        body.update({"purchase_id": args.purchase_id, "instalments": int(args.instalments)})
    return body


def _key(args: argparse.Namespace) -> OnlineKey:
    from switch.net.clients import OnlineKey

    if args.secret_file is None:
        if args.key_id is not None:
            raise ValueError("--key-id needs --secret-file (the key's secret)")
        print("switch: signing with the DEMO key of app:wallet (published secret; only a "
              "switch with [security] demo_keys = true takes it)", file=sys.stderr)  # fmt: skip
        return OnlineKey.demo_app()
    if args.key_id is None:
        raise ValueError("--secret-file needs --key-id (the key's id)")
    return OnlineKey.from_file(args.key_id, args.secret_file)


def _credit(args: argparse.Namespace, config: SwitchConfig) -> int:
    problem = _problem(args)
    if problem is not None:
        print(f"switch: {problem}", file=sys.stderr)
        return 2
    try:
        key = _key(args)
    except (ValueError, OSError) as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    return signed_request(args, config, request_body(args), key)


def signed_request(
    args: argparse.Namespace,
    config: SwitchConfig,
    body: dict[str, Any],
    key: OnlineKey,
    show: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """``body`` sent under ``key`` to the switch ``args`` (--host, --port, --ca-file)
    name, its verified answer printed: as JSON with ``args.json``, else by ``show``
    (default: its fields one a line). Exit status 0 when approved (``code`` 00), 2 when
    answered otherwise (the message and code on stderr), 1 with no answer."""
    import trio

    from switch.net.clients import OnlineClient

    try:
        tls = _tls(args, config)
    except (ValueError, OSError) as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    host = args.host or config.online.host
    port = args.port or config.online.port

    async def send() -> tuple[bytes, bool]:
        client = await OnlineClient.connect(host, port, tls=tls, key=key)
        try:
            with trio.fail_after(RESPONSE_TIMEOUT_S):
                await client.send_raw(msgspec.msgpack.encode(body))
                return await client.receive_raw(), client.last_signed
        finally:
            await client.aclose()

    def send_and_decode() -> tuple[dict[str, Any], bool]:
        raw, signed = trio.run(send)
        return msgspec.msgpack.decode(raw, type=dict[str, Any]), signed

    sent = exchanged(send_and_decode, host, port)
    if sent is None:
        return 1
    answer, signed = sent
    answer = _masked(answer)  # no card number printed back
    if answer.get("code") != "00":
        where = "" if signed else " (unsigned)"
        print(f"switch: {answer.get('message', '')} ({answer.get('code')}){where}",
              file=sys.stderr)  # fmt: skip
        if args.json:
            sys.stdout.write(json.dumps(answer, ensure_ascii=False, indent=2) + "\n")
        return 2
    if args.json:
        sys.stdout.write(json.dumps(answer, ensure_ascii=False, indent=2) + "\n")
    elif show is not None:
        show(answer)
    else:
        _print({k: v for k, v in answer.items() if k not in ("type", "approved")})
    return 0


def _print(value: object, indent: str = "") -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                print(f"{indent}{key}:")
                _print(item, indent + "  ")
            else:
                print(f"{indent}{key}: {item}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                print(f"{indent}-")
                _print(item, indent + "  ")
            else:
                print(f"{indent}- {item}")
