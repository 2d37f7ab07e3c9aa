"""``switch settle cutoff|run|status`` and ``switch ledger balance``: the business day
of a running switch, through its admin interface (``/settlement``, ``/ledger``,
``/ledger/onus``).

Each prints a short table, or with ``--json`` the document the switch answered.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from switch.admin.commands import add_token_option, leniently, with_client
from switch.config import SwitchConfig
from switch.core.calendar import date_from_mmdd

if TYPE_CHECKING:  # the commands import it as they run: `switch --help` need not
    from switch.admin.client import AdminClient


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    settle = commands.add_parser(
        "settle",
        help="the business day: cut-off, settlement, its status",
        description="Settlement of the running switch (settlement.md), through its admin "
        "interface.",
    )
    actions = settle.add_subparsers(dest="settle_action", required=True, metavar="ACTION")
    cutoff = actions.add_parser(
        "cutoff",
        help="close the current business date now",
        description="Closes the open business date at once (the next one begins), and "
        "sends every bank its cutover; the date then settles when every bank's clearing "
        "file is in, or at settle_deadline.",
    )
    run = actions.add_parser(
        "run",
        help="settle a closed date now",
        description="Settles a closed business date now, with the clearing files that "
        "have arrived (a bank's missing file holds its transactions as switch_only). "
        "Settling a date again writes the same files and posts nothing twice.",
    )
    run.add_argument(
        "--date",
        required=True,
        type=_date_argument,
        help="the date, YYYY-MM-DD, or MMDD for the date of that month and day nearest the "
        "switch's local date (UTC + [switch] utc_offset_h)",
    )
    status = actions.add_parser(
        "status",
        help="a date's files, categories and totals",
        description="Which banks' files arrived, which were rejected and why, the count "
        "and amounts of each category, the payouts' totals.",
    )
    status.add_argument(
        "--date",
        type=_date_argument,
        help="the date, YYYY-MM-DD or MMDD (as settle run's; default: the latest closed)",
    )
    ledger = commands.add_parser(
        "ledger",
        help="the settlement ledger's and the on-us ledger's balances",
        description="Double-entry balances (settlement.md's accounts) of both ledgers, "
        "each under its own heading. The settlement ledger (the settlement store): "
        "bank_clearing:<name> what banks owe, merchant:<id> what is owed to merchants "
        "(0 once paid), carried:<id> negative balances carried, merchant_fee_income, "
        "payouts. The on-us ledger (wallets, the credit line, points): posted and "
        "pending sums of wallet:<c>, credit_receivable:<c> and points:<c> (each kind "
        "summed on one line, wallet:*, with how many accounts), merchant:<id>, "
        "bank_clearing:<bank>, the income, loss and points_issued accounts.",
    )
    ledger_actions = ledger.add_subparsers(dest="ledger_action", required=True, metavar="ACTION")
    balance = ledger_actions.add_parser(
        "balance", help="every account's balance in both ledgers, or one account's"
    )
    balance.add_argument(
        "--account",
        help="only this account, in either ledger, e.g. merchant:898310048990001 or "
        "wallet:C100000001",
    )
    for parser in (cutoff, run, status, balance):
        config_option(parser)
        parser.add_argument("--url", help="the admin interface, http(s)://HOST:PORT")
        add_token_option(parser)
        parser.add_argument("--json", action="store_true", help="the switch's answer as JSON")
    cutoff.set_defaults(handler=leniently(_asking(_cutoff_target)))
    run.set_defaults(handler=leniently(_asking(_run_target)))
    status.set_defaults(handler=leniently(_asking(_status_target)))
    balance.set_defaults(handler=leniently(_ledger_balance))
    for parser in (cutoff, run, status, balance):
        parser.set_defaults(needs_config=False)


def _cutoff_target(args: argparse.Namespace) -> tuple[str, str]:
    return "POST", "/settlement/cutoff"


def _run_target(args: argparse.Namespace) -> tuple[str, str]:
    return "POST", f"/settlement/run?date={args.date}"


def _status_target(args: argparse.Namespace) -> tuple[str, str]:
    return "GET", f"/settlement?date={args.date}" if args.date else "/settlement"


LEDGERS: Final = {
    "settlement": ("/ledger", "settlement ledger (settlement store)"),
    "onus": ("/ledger/onus", "on-us ledger (wallets, credit line, points)"),
}
"""``switch ledger balance``'s two ledgers: the key of each in its --json document, its
admin path and its heading."""


def _ledger_balance(args: argparse.Namespace, config: SwitchConfig) -> int:
    """Both ledgers' balances, each under its heading (``--json``: one document, a list
    per ledger, null for one the switch cannot show); exit 2 when neither can be."""
    query = f"?account={urllib.parse.quote(args.account)}" if args.account else ""

    def ask(client: AdminClient) -> int:
        from switch.admin.client import AdminUnavailable

        documents: dict[str, Any] = {}
        problems: dict[str, str] = {}
        for name, (path, _) in LEDGERS.items():
            status, body = client.get(path + query)
            if status >= 500 and status != 503:
                raise AdminUnavailable(f"{client.url}{path} answered {status}")
            document = json.loads(body)
            if status == 200:
                documents[name] = document
            else:
                documents[name] = None
                problems[name] = str(document.get("error", status))
        if len(problems) == len(LEDGERS):
            for name, problem in problems.items():
                print(f"switch: {LEDGERS[name][1]}: {problem}", file=sys.stderr)
            return 2
        if args.json:
            sys.stdout.write(json.dumps(documents, indent=2) + "\n")
        else:
            _print_ledgers(documents, problems)
        return 0

    return with_client(args, config, ask)


def _date_argument(text: str) -> str:
    """``--date`` as typed: a date YYYY-MM-DD, or MMDD (as ``journal find`` takes it),
    whose year is found once the config is read (:func:`_business_date`)."""
    if len(text) == 4 and text.isascii() and text.isdigit():
        try:
            date(2000, int(text[:2]), int(text[2:]))  # a leap year: 0229 is a date
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a month and day MMDD") from None
        return text
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date YYYY-MM-DD (or a month and day MMDD)"
        ) from None


def _business_date(text: str, config: SwitchConfig) -> str:
    """``--date`` as a date YYYY-MM-DD: MMDD is the date of that month and day nearest
    the switch's local date (a business date is never months away from today)."""
    if len(text) != 4:
        return text
    offset = timedelta(hours=config.switch.utc_offset_h)
    today = (datetime.now(UTC) + offset).date()
    try:
        return date_from_mmdd(text, today).isoformat()
    except ValueError:  # 0229 with no leap year within a year of today
        raise ValueError(f"--date {text}: no such date within a year of {today}") from None


def _readable(document: Any) -> Any:
    """The switch's answer with its times (``*_at``: epoch seconds) in ISO 8601 UTC, as
    every command prints times."""
    if isinstance(document, dict):
        return {
            key: datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")
            if key.endswith("_at") and type(value) in (int, float)
            else _readable(value)
            for key, value in document.items()
        }
    if isinstance(document, list):
        return [_readable(item) for item in document]
    return document


def _asking(
    target: Callable[[argparse.Namespace], tuple[str, str]],
    printer: Callable[[Any], None] | None = None,
) -> Callable[[argparse.Namespace, SwitchConfig], int]:
    def handler(args: argparse.Namespace, config: SwitchConfig) -> int:
        if getattr(args, "date", None):
            try:
                args.date = _business_date(args.date, config)
            except ValueError as exc:
                print(f"switch: {exc}", file=sys.stderr)
                return 2
        method, path = target(args)

        def ask(client: AdminClient) -> int:
            from switch.admin.client import AdminUnavailable

            status, body = client.post(path) if method == "POST" else client.get(path)
            if status >= 500 and status != 503:
                raise AdminUnavailable(f"{client.url}{path} answered {status}")
            document = json.loads(body)
            if status != 200:
                print(f"switch: {document.get('error', status)}", file=sys.stderr)
                return 2
            document = _readable(document)
            if args.json:
                sys.stdout.write(json.dumps(document, indent=2) + "\n")
            else:
                (printer or _print_status)(document)
            return 0

        return with_client(args, config, ask)

    return handler


def _print_status(status: dict[str, Any]) -> None:
    def fen(value: int) -> str:
        return f"{value / 100:,.2f}"

    closed = "closed" if status["closed_at"] else "open"
    settled = "settled" if status["settled_at"] else "not settled"
    print(f"business date {status['business_date']}: {closed}"
          f"{' (forced)' if status['forced'] else ''}, {settled}")  # fmt: skip
    for bank, code in sorted(status["cutovers"].items()):
        print(f"  cutover {bank}: {code}")
    for file in status["files"]:
        why = f": {file['reason']}" if file["reason"] else f", {file['records']} records"
        print(f"  file {file['name']}: {file['status']}{why}")
    if status["missing"]:
        print(f"  files missing: {', '.join(status['missing'])}")
    for row in status["categories"]:
        print(f"  {row['category']:<17} {row['action']:<16} {row['count']:>9}  "
              f"switch {fen(row['switch_fen'])}  bank {fen(row['bank_fen'])}")  # fmt: skip
    print(f"  merchants {status['merchants']}: sales {fen(status['sales_fen'])}, refunds "
          f"{fen(status['refunds_fen'])}, fees {fen(status['fees_fen'])}, paid "
          f"{fen(status['payout_fen'])}, carried {fen(status['carried_out_fen'])}, held "
          f"{fen(status['held_fen'])}; reversals queued {status['reversals_queued']}")  # fmt: skip


def _print_ledgers(documents: dict[str, Any], problems: dict[str, str]) -> None:
    for name, (_, heading) in LEDGERS.items():
        if name != "settlement":
            print()
        print(f"{heading}:")
        rows = documents[name]
        if rows is None:
            print(f"  not shown: {problems[name]}")
        elif name == "settlement":
            _print_ledger(rows)
        else:
            _print_onus(rows)


def _print_ledger(balances: list[dict[str, Any]]) -> None:
    print(f"{'account':<40} {'debit':>16} {'credit':>16} {'balance':>16}")
    for row in balances:
        print(f"{row['account']:<40} {row['debit_fen'] / 100:>16,.2f} "
              f"{row['credit_fen'] / 100:>16,.2f} {row['balance_fen'] / 100:>16,.2f}")  # fmt: skip


def _print_onus(balances: list[dict[str, Any]]) -> None:
    """Posted and pending sums, fen as yuan, points as they are; a customer kind's line
    (``wallet:*``) says how many accounts it sums."""

    def amount(row: dict[str, Any], key: str) -> str:
        value = row[key]
        return f"{value / 100:>16,.2f}" if row["unit"] == "fen" else f"{value:>13,} pt"

    print(f"{'account':<40} {'debit':>16} {'credit':>16} {'balance':>16} "
          f"{'pending debit':>16} {'pending credit':>16}")  # fmt: skip
    for row in balances:
        name = row["account"]
        if name.endswith(":*"):
            name = f"{name} ({row['accounts']:,})"
        print(f"{name:<40} {amount(row, 'debits_posted')} {amount(row, 'credits_posted')} "
              f"{amount(row, 'balance')} {amount(row, 'debits_pending')} "
              f"{amount(row, 'credits_pending')}")  # fmt: skip
