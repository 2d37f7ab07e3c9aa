"""``switch wallet open|balance|history|paycode|demo-topup|verify|withdrawals`` and ``switch qr
render``: an operator's look at wallets straight through the ledger store (wallet.md),
and a QR payload drawn in the terminal. Admin-side: they read and write the store the
config names, not the running switch's admin interface; the running switch pays the
codes they issue (``switch pos sale --code``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

from switch.config import SwitchConfig
from switch.core import ledger, paycode
from switch.core.ledger import LedgerError, TransferKey, TransferSpec
from switch.core.wallet import CUSTOMER_ID, HISTORY_LIMIT, HISTORY_MAX
from switch.store import open_ledger_store
from switch.wire.emvqr import QrMalformed, QrOtherNetwork, decode, render_terminal


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    wallet = commands.add_parser(
        "wallet",
        help="wallets in the ledger store: open, balance, history",
        description="Wallets (wallet.md) read and opened straight through the ledger store "
        "the config names (ledger.sqlite3 beside a SQLite journal, or the PostgreSQL "
        "journal's database).",
    )
    actions = wallet.add_subparsers(dest="wallet_action", required=True, metavar="ACTION")
    opening = actions.add_parser(
        "open", help="open a wallet (balance 0), or set its class",
        description="Opens a wallet for an app principal, or sets the class of one it "
        "opened (its balance and counts kept).",
    )  # fmt: skip
    opening.add_argument("customer_id")
    opening.add_argument("--class", dest="wallet_class", type=int, choices=(1, 2, 3),
                         required=True, help="PBOC payment-account class")  # fmt: skip
    opening.add_argument(
        "--app", required=True, help="the app principal that owns the wallet, e.g. app:wallet"
    )
    balance = actions.add_parser("balance", help="a wallet's class, balance and what is left")
    balance.add_argument("customer_id")
    history = actions.add_parser("history", help="a wallet's posted movements, newest first")
    history.add_argument("customer_id")
    history.add_argument("--limit", type=int, default=HISTORY_LIMIT,
                         help=f"1..{HISTORY_MAX} (default {HISTORY_LIMIT})")  # fmt: skip
    history.add_argument("--cursor", help="a page's next, to read on")
    verify = actions.add_parser(
        "verify", help="check the on-us ledger's invariants",
        description="Checks the whole ledger store: debits equal credits per unit and "
        "phase, each account's sums equal its transfers', its movements add up to its "
        "balance, no wallet below zero. Prints ok, or each problem (exit status 1).",
    )  # fmt: skip
    config_option(verify)
    verify.set_defaults(handler=_verify)
    issue = actions.add_parser(
        "paycode", help="issue a payment code for a wallet (what the app shows to scan)",
        description="Issues a one-time payment code (wallet.md: 19 digits, open for "
        "[wallet] paycode_ttl_s real seconds) for a wallet the app principal opened, as "
        "the app's paycode_issue would; a cashier pays it with `switch pos sale --code`.",
    )  # fmt: skip
    issue.add_argument("customer_id")
    issue.add_argument(
        "--app", required=True, help="the app principal that opened the wallet, e.g. app:wallet"
    )
    issue.add_argument("--verification", choices=("A", "B", "C"), default="B",
                       help="the customer verification tier behind it (default B)")  # fmt: skip
    config_option(issue)
    issue.set_defaults(handler=_paycode)
    topup = actions.add_parser(
        "demo-topup", help="credit a wallet as an approved top-up would (demo switch only)",
        description="Posts a top-up (bank_clearing:<bank> to the wallet) with no card "
        "sale behind it, to try payments on the demo. Refused unless the config uses "
        "the demo keys ([security] demo_keys = true): a real wallet is funded by a "
        "bank-approved top-up only.",
    )  # fmt: skip
    topup.add_argument("customer_id")
    topup.add_argument("--amount", required=True, help="in yuan, e.g. 500.00")
    topup.add_argument("--bank", default="icbc", help="the bank of the clearing account")
    config_option(topup)
    topup.set_defaults(handler=_demo_topup)
    filing = actions.add_parser(
        "withdrawals", help="write a business date's withdrawals file (again)",
        description="Writes withdrawals-<YYYYMMDD>.csv of a closed business date in "
        "[settlement] out_dir, as the date's close does (wallet.md): each row posted "
        "withdrawals_payable to payouts once; written again, the same bytes.",
    )  # fmt: skip
    filing.add_argument("business_date", help="YYYY-MM-DD")
    config_option(filing)
    filing.set_defaults(handler=_withdrawals)
    for parser in (opening, balance, history):
        config_option(parser)
        parser.add_argument("--json", action="store_true", help="the answer as JSON")
        parser.set_defaults(handler=_wallet)
    qr = commands.add_parser("qr", help="wallet QR payloads")
    qr_actions = qr.add_subparsers(dest="qr_action", required=True, metavar="ACTION")
    render = qr_actions.add_parser(
        "render", help="draw a payload as a QR code in the terminal",
        description="Draws an EMVCo payload as a QR code in block characters; a payload "
        "whose CRC is wrong is drawn too, with a warning on stderr.",
    )  # fmt: skip
    render.add_argument("payload")
    render.add_argument("--gui", default="CN.COM.CHINABANK", help="the GUI of template 26")
    render.set_defaults(handler=_render, needs_config=False)


def _today(config: SwitchConfig) -> str:
    return (datetime.now(UTC) + timedelta(hours=config.switch.utc_offset_h)).date().isoformat()


def _local(at: float, config: SwitchConfig) -> str:
    zone = timedelta(hours=config.switch.utc_offset_h)
    return datetime.fromtimestamp(at, timezone(zone)).isoformat(timespec="seconds")


def _wallet(args: argparse.Namespace, config: SwitchConfig) -> int:
    if not CUSTOMER_ID.fullmatch(args.customer_id):
        print("switch: customer_id: 1..32 of [A-Za-z0-9._:-]", file=sys.stderr)
        return 2
    if args.wallet_action == "history" and not 1 <= args.limit <= HISTORY_MAX:
        print(f"switch: --limit: 1..{HISTORY_MAX}", file=sys.stderr)
        return 2
    store = open_ledger_store(config)
    try:
        store.open()
        today = _today(config)
        if args.wallet_action == "open":
            view = store.open_wallet(args.customer_id, args.app, args.wallet_class, today,
                                     datetime.now(UTC).timestamp())  # fmt: skip
            document: dict[str, object] = {**_view(view)}
        elif args.wallet_action == "balance":
            document = _view(store.wallet(args.customer_id, None, today))
        else:
            page = store.history(args.customer_id, None, args.limit, args.cursor)
            document = {
                "items": [
                    {"time": _local(item.at, config), "kind": item.kind, "amount": item.amount,
                     "balance_after": item.balance_after, "rrn": item.rrn,
                     "merchant_id": item.merchant_id}
                    for item in page.items
                ],
                "next": page.next,
            }  # fmt: skip
    except LedgerError as exc:
        print(f"switch: {exc} ({exc.response_code})", file=sys.stderr)
        return 2
    finally:
        store.close()
    if args.json:
        sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    elif args.wallet_action == "history":
        for item in document["items"]:  # type: ignore[attr-defined]
            print(f"{item['time']}  {item['kind']:<8} {item['amount'] / 100:>12,.2f}  "
                  f"balance {item['balance_after'] / 100:,.2f}  {item['rrn']} "
                  f"{item['merchant_id']}".rstrip())  # fmt: skip
        if document["next"]:
            print(f"next: {document['next']}")
    else:
        for key, value in document.items():
            print(f"{key}: {value}")
    return 0


def _paycode(args: argparse.Namespace, config: SwitchConfig) -> int:
    if not CUSTOMER_ID.fullmatch(args.customer_id):
        print("switch: customer_id: 1..32 of [A-Za-z0-9._:-]", file=sys.stderr)
        return 2
    settings = config.wallet.paycodes()
    store = open_ledger_store(config)
    try:
        store.open()
        issued = store.issue_paycode(
            args.customer_id, args.app, "wallet", args.verification,
            datetime.now(UTC).timestamp(), settings, lambda: paycode.draw(settings.prefix),
        )  # fmt: skip
    except LedgerError as exc:
        print(f"switch: {exc} ({exc.response_code})", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(f"paycode: {issued.code}")
    print(f"expires: {_local(issued.expires_at, config)}")
    return 0


def _demo_topup(args: argparse.Namespace, config: SwitchConfig) -> int:
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


def _view(view: object) -> dict[str, object]:
    from switch.store.ledger_port import WalletView

    assert isinstance(view, WalletView)
    return {
        "customer_id": view.customer_id, "class": view.wallet_class, "balance": view.balance,
        "available": view.available, "class_left": view.class_left, "opened": view.opened,
    }  # fmt: skip


def _render(args: argparse.Namespace, config: SwitchConfig | None) -> int:
    try:
        decode(args.payload, args.gui)
    except (QrMalformed, QrOtherNetwork) as exc:
        print(f"switch: warning: {exc}", file=sys.stderr)
    sys.stdout.write(render_terminal(args.payload))
    return 0
