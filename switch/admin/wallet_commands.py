"""``switch wallet open|balance|history|topup|pay|paycode`` and ``switch qr
create|status``: wallet.md's online requests sent to the running switch as the wallet
app's back end (an app key; by default the DEMO key ``demo-app`` of ``app:wallet``) and a
merchant's back end (``demo-m-<merchant>``) send them, each in a signed envelope
(security.md), its signed answer checked and printed (switch.admin.credit_commands'
way); ``switch qr render`` draws a payload in the terminal (segno).

Three stay operator-side, straight through the ledger store the config names, because
no online request does what they do: ``verify`` checks the whole store's invariants
(every wallet and account, not one app's), ``withdrawals`` writes a closed date's file
again, and ``demo-topup`` credits a wallet with no card sale behind it (demo switch
only)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from switch.admin.credit_commands import _key as app_key
from switch.admin.credit_commands import signed_options, signed_request
from switch.config import SwitchConfig
from switch.core import ledger
from switch.core.ledger import LedgerError, TransferKey, TransferSpec
from switch.core.wallet import CUSTOMER_ID, HISTORY_LIMIT, HISTORY_MAX
from switch.online_cli import DEFAULT_MERCHANT
from switch.online_cli import _key as merchant_key
from switch.wire.emvqr import QrMalformed, QrOtherNetwork, decode, render_terminal

DEMO_CARD: Final = "6222021000111122221"
QR_MAX: Final = 512


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    wallet = commands.add_parser(
        "wallet",
        help="wallets through the running switch: open, balance, history, topup, pay, "
        "paycode; verify, withdrawals, demo-topup on the ledger store",
        description="wallet.md's requests, signed under an app key and sent to the running "
        "switch's online port; the answer is printed once its signature is verified. The "
        "key: --key-id and --secret-file, or by default the DEMO key demo-app of "
        "app:wallet (a switch with [security] demo_keys = true takes it). Amounts are in "
        "yuan (e.g. 88.00). verify, withdrawals and demo-topup work on the ledger store "
        "the config names: no online request does what they do.",
    )
    actions = wallet.add_subparsers(dest="wallet_action", required=True, metavar="ACTION")
    common = signed_options(config_option, "the DEMO app key demo-app")
    common.add_argument("customer_id")
    opening = actions.add_parser(
        "open", parents=[common], help="open a wallet (balance 0), or set its class",
        description="wallet_open: opens a wallet for the key's app principal, or sets the "
        "class of one it opened (its balance and counts kept); another app's is 03.",
    )  # fmt: skip
    opening.add_argument("--class", dest="wallet_class", type=int, choices=(1, 2, 3),
                         required=True, help="PBOC payment-account class")  # fmt: skip
    actions.add_parser(
        "balance", parents=[common], help="a wallet's class, balance, what its class allows"
    )
    history = actions.add_parser("history", parents=[common],
                                 help="a wallet's posted movements, newest first")  # fmt: skip
    history.add_argument("--limit", type=int, default=HISTORY_LIMIT,
                         help=f"1..{HISTORY_MAX} (default {HISTORY_LIMIT})")  # fmt: skip
    history.add_argument("--cursor", help="a page's next, to read on")
    topup = actions.add_parser(
        "topup", parents=[common], help="top a wallet up from a debit card",
        description="wallet_topup: a sale on the card to its bank; the wallet is credited "
        "only if the bank approves.",
    )  # fmt: skip
    topup.add_argument("--amount", required=True, help="in yuan, e.g. 500.00")
    topup.add_argument("--card", default=DEMO_CARD, help="the debit card's number")
    topup.add_argument("--expiry", default="2812", help="the card's expiry YYMM")
    topup.add_argument("--cvv2", help="the card's CVV2 (sent, never stored)")
    pay = actions.add_parser(
        "pay", parents=[common], help="pay a merchant's QR from the wallet (or credit)",
        description="wallet_pay: the QR payload a merchant shows (`switch qr create`); "
        "--amount for a static QR, none (or the same) for a dynamic one.",
    )  # fmt: skip
    pay.add_argument("qr", help="the QR payload (1..512 characters)")
    pay.add_argument("--amount", help="in yuan: a static QR's (a dynamic one has its own)")
    issue = actions.add_parser(
        "paycode", parents=[common],
        help="issue a payment code for a wallet (what the app shows to scan)",
        description="paycode_issue: a one-time payment code (wallet.md: 19 digits, open "
        "for [wallet] paycode_ttl_s seconds); a cashier pays it with `switch pos sale "
        "--code`.",
    )  # fmt: skip
    for parser in (pay, issue):
        parser.add_argument("--funding", choices=("wallet", "credit"), default="wallet",
                            help="the wallet's balance, or the credit line")  # fmt: skip
        parser.add_argument("--verification", choices=("A", "B", "C"), default="B",
                            help="the customer verification tier (default B)")  # fmt: skip
        parser.add_argument("--instalments", type=int, choices=(3, 6, 12, 24),
                            help="with --funding credit: the plan (credit.md)")  # fmt: skip
    for parser in actions.choices.values():
        parser.set_defaults(handler=_wallet)
    verify = actions.add_parser(
        "verify", help="check the on-us ledger's invariants (on the ledger store)",
        description="Checks the whole ledger store: debits equal credits per unit and "
        "phase, each account's sums equal its transfers', its movements add up to its "
        "balance, no wallet below zero. Prints ok, or each problem (exit status 1). "
        "Operator-side: it reads every account, which no online request does.",
    )  # fmt: skip
    config_option(verify)
    verify.set_defaults(handler=_verify)
    demo = actions.add_parser(
        "demo-topup", help="credit a wallet as an approved top-up would (demo switch only)",
        description="Posts a top-up (bank_clearing:<bank> to the wallet) with no card "
        "sale behind it, to try payments on the demo, straight in the ledger store. "
        "Refused unless the config uses the demo keys ([security] demo_keys = true): a "
        "real wallet is funded by a bank-approved top-up only (`switch wallet topup`).",
    )  # fmt: skip
    demo.add_argument("customer_id")
    demo.add_argument("--amount", required=True, help="in yuan, e.g. 500.00")
    demo.add_argument("--bank", default="icbc", help="the bank of the clearing account")
    config_option(demo)
    demo.set_defaults(handler=_demo_topup)
    filing = actions.add_parser(
        "withdrawals", help="write a business date's withdrawals file (again)",
        description="Writes withdrawals-<YYYYMMDD>.csv of a closed business date in "
        "[settlement] out_dir, as the date's close does (wallet.md): each row posted "
        "withdrawals_payable to payouts once; written again, the same bytes. "
        "Operator-side: a file for the custodian bank, no app's request.",
    )  # fmt: skip
    filing.add_argument("business_date", help="YYYY-MM-DD")
    config_option(filing)
    filing.set_defaults(handler=_withdrawals)

    qr = commands.add_parser(
        "qr", help="merchants' QR codes through the running switch: create, status; render",
        description="qr_create and qr_status signed under a merchant key and sent to the "
        "running switch (default: the DEMO key demo-m-<merchant>); render draws a payload.",
    )  # fmt: skip
    qr_actions = qr.add_subparsers(dest="qr_action", required=True, metavar="ACTION")
    merchant = signed_options(config_option, "the DEMO key demo-m-<merchant>")
    merchant.add_argument("--merchant", default=DEFAULT_MERCHANT, help="merchant_id")
    create = qr_actions.add_parser(
        "create", parents=[merchant], help="a dynamic QR (with --amount) or a static one",
        description="qr_create: prints the QR's id and payload (the payload last, alone "
        "on its line); --render draws it as a QR code in the terminal to scan.",
    )  # fmt: skip
    create.add_argument("--amount", help="in yuan: a dynamic QR for this amount")
    create.add_argument("--expires-s", type=int, help="30..3600, with --amount only")
    create.add_argument("--order-id", help="the merchant's order, 1..25 printable ASCII")
    status = qr_actions.add_parser(
        "status", parents=[merchant], help="a QR's state and payments",
    )  # fmt: skip
    status.add_argument("qr_id")
    for parser in (create, status):
        parser.add_argument("--render", action="store_true",
                            help="draw the payload as a QR code (not with --json)")  # fmt: skip
        parser.set_defaults(handler=_qr)
    render = qr_actions.add_parser(
        "render", help="draw a payload as a QR code in the terminal",
        description="Draws an EMVCo payload as a QR code in block characters; a payload "
        "whose CRC is wrong is drawn too, with a warning on stderr.",
    )  # fmt: skip
    render.add_argument("payload")
    render.add_argument("--gui", default="CN.COM.CHINABANK", help="the GUI of template 26")
    render.set_defaults(handler=_render, needs_config=False)


def _request_id(args: argparse.Namespace) -> str:
    return str(args.request_id or f"cli-{time.time_ns() // 1_000_000}")


def _yuan(text: str | None, name: str) -> int | None:
    """A yuan amount in fen (raises ValueError naming the option)."""
    if text is None:
        return None
    from switch.cli import parse_amount  # the CLI's yuan, read as `switch pos` reads them

    try:
        return parse_amount(text)
    except ValueError as exc:
        raise ValueError(f"{name} {text!r}: {exc}") from None


def wallet_body(args: argparse.Namespace) -> dict[str, Any]:
    """The request's map (wallet.md's table), or ValueError naming what the switch
    would refuse with ``error`` 30."""
    action = args.wallet_action
    if not CUSTOMER_ID.fullmatch(args.customer_id):
        raise ValueError("customer_id: 1..32 of [A-Za-z0-9._:-]")
    kind = "paycode_issue" if action == "paycode" else f"wallet_{action}"
    body: dict[str, Any] = {"type": kind, "id": _request_id(args),
                            "customer_id": args.customer_id}  # fmt: skip
    if action == "open":
        body["class"] = args.wallet_class
    elif action == "history":
        if not 1 <= args.limit <= HISTORY_MAX:
            raise ValueError(f"--limit: 1..{HISTORY_MAX}")
        body["limit"] = args.limit
        if args.cursor is not None:
            body["cursor"] = args.cursor
    elif action == "topup":
        card = {"pan": args.card, "expiry": args.expiry}
        if args.cvv2 is not None:
            card["cvv2"] = args.cvv2
        body.update({"amount": _yuan(args.amount, "--amount"), "card": card})
    elif action in ("pay", "paycode"):
        if action == "pay":
            if not 1 <= len(args.qr) <= QR_MAX:
                raise ValueError(f"qr: 1..{QR_MAX} characters")
            body["qr"] = args.qr
        body.update({"funding": args.funding, "verification": args.verification})
        if action == "pay" and args.amount is not None:
            body["amount"] = _yuan(args.amount, "--amount")
        if args.instalments is not None:
            if args.funding != "credit":
                raise ValueError("--instalments: with --funding credit only")
            body["instalments"] = args.instalments
    return body


def _wallet(args: argparse.Namespace, config: SwitchConfig) -> int:
    try:
        body = wallet_body(args)
        key = app_key(args)
    except (ValueError, OSError) as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    show = _show_history if args.wallet_action == "history" else None
    return signed_request(args, config, body, key, show)


def _show_history(answer: dict[str, Any]) -> None:
    for item in answer.get("items") or []:
        print(f"{item['time']}  {item['kind']:<8} {item['amount'] / 100:>12,.2f}  "
              f"balance {item['balance_after'] / 100:,.2f}  {item['rrn']} "
              f"{item.get('merchant_id') or ''}".rstrip())  # fmt: skip
    if answer.get("next"):
        print(f"next: {answer['next']}")


def qr_body(args: argparse.Namespace) -> dict[str, Any]:
    """qr_create's or qr_status's map, or ValueError naming the field."""
    body: dict[str, Any] = {"type": f"qr_{args.qr_action}", "id": _request_id(args),
                            "merchant_id": args.merchant}  # fmt: skip
    if args.qr_action == "status":
        body["qr_id"] = args.qr_id
        return body
    amount = _yuan(args.amount, "--amount")
    if amount is not None:
        body["amount"] = amount
    if args.expires_s is not None:
        if amount is None:
            raise ValueError("--expires-s: with --amount only (a dynamic QR)")
        if not 30 <= args.expires_s <= 3600:
            raise ValueError("--expires-s: 30..3600")
        body["expires_s"] = args.expires_s
    if args.order_id is not None:
        body["order_id"] = args.order_id
    return body


def _qr(args: argparse.Namespace, config: SwitchConfig) -> int:
    if args.render and args.json:
        print("switch: --render draws on the terminal; not with --json", file=sys.stderr)
        return 2
    try:
        body = qr_body(args)
        key = merchant_key(args)
    except (ValueError, OSError) as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    return signed_request(args, config, body, key, lambda answer: _show_qr(answer, args))


def _show_qr(answer: dict[str, Any], args: argparse.Namespace) -> None:
    from switch.admin.credit_commands import _print

    payload = answer.get("qr")
    shown = {k: v for k, v in answer.items() if k not in ("type", "approved", "qr")}
    _print(shown)
    if isinstance(payload, str):
        print(f"qr: {payload}")  # last, alone: what a shell takes to pay it
        if args.render:
            sys.stdout.write(render_terminal(payload))


def _today(config: SwitchConfig) -> str:
    return (datetime.now(UTC) + timedelta(hours=config.switch.utc_offset_h)).date().isoformat()


def _demo_topup(args: argparse.Namespace, config: SwitchConfig) -> int:
    from switch.store import open_ledger_store  # the ledger: only here

    if not config.security.demo_keys:
        print("switch: demo-topup: only on a demo switch ([security] demo_keys = true)",
              file=sys.stderr)  # fmt: skip
        return 2
    from switch.cli import parse_amount  # the CLI's yuan, read as `switch pos` reads them

    if not CUSTOMER_ID.fullmatch(args.customer_id):
        print("switch: customer_id: 1..32 of [A-Za-z0-9._:-]", file=sys.stderr)
        return 2
    try:
        amount = parse_amount(args.amount)
    except ValueError as exc:
        print(f"switch: --amount {args.amount!r}: {exc}", file=sys.stderr)
        return 2
    at = datetime.now(UTC).timestamp()
    store = open_ledger_store(config)
    try:
        store.open()
        store.wallet(args.customer_id, None, _today(config))  # 14 if there is none
        store.transfer(TransferSpec(
            key=TransferKey("demo", f"topup-{at:.6f}", "topup"),
            debit=f"bank_clearing:{args.bank}", credit=ledger.wallet_account(args.customer_id),
            amount=amount, kind="topup",
        ), at)  # fmt: skip
        view = store.wallet(args.customer_id, None, _today(config))
    except LedgerError as exc:
        print(f"switch: {exc} ({exc.response_code})", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(f"balance: {view.balance}")
    return 0


def _withdrawals(args: argparse.Namespace, config: SwitchConfig) -> int:
    from datetime import date

    import trio

    from switch.net.withdrawals import WithdrawalsFiles
    from switch.store import open_ledger_store  # the ledger: only here

    try:
        date.fromisoformat(args.business_date)
    except ValueError:
        print(f"switch: business_date {args.business_date!r}: YYYY-MM-DD", file=sys.stderr)
        return 2
    store = open_ledger_store(config)
    try:
        store.open()
        files = WithdrawalsFiles(store, config.settlement_out_dir(),
                                 lambda: datetime.now(UTC).timestamp())  # fmt: skip
        path = trio.run(files.close, args.business_date)
    except LedgerError as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    if path is None:
        print("switch: the withdrawals file could not be written (see the log)", file=sys.stderr)
        return 1
    print(f"written: {path}")
    return 0


def _verify(args: argparse.Namespace, config: SwitchConfig) -> int:
    from switch.store import open_ledger_store  # the ledger: only here

    store = open_ledger_store(config)
    try:
        store.open()
        problems = store.verify()
    except LedgerError as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    for problem in problems:
        print(f"problem: {problem}")
    if not problems:
        print("ok: the ledger balances")
    return 1 if problems else 0


def _render(args: argparse.Namespace, config: SwitchConfig | None) -> int:
    try:
        decode(args.payload, args.gui)
    except (QrMalformed, QrOtherNetwork) as exc:
        print(f"switch: warning: {exc}", file=sys.stderr)
    sys.stdout.write(render_terminal(args.payload))
    return 0
