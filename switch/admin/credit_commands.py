"""``switch credit open|status|statement|plans|repay``: an operator's look at credit
accounts (credit.md) straight through the ledger store the config names, as ``switch
wallet`` does; not the running switch's admin interface (the credit requests are not
wired into the transaction path yet). Closing business dates is the running switch's
(its cut-off); these commands never close one."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import msgspec

from switch.config import SwitchConfig
from switch.core.credit.billing import account_view, plans_of, statement_of
from switch.core.credit.plan import CreditRefused
from switch.core.ledger import LedgerError, TransferKey
from switch.core.wallet import CUSTOMER_ID
from switch.store import open_ledger_store, open_settlement_store

OPERATOR_PRINCIPAL = "operator"
"""The principal of the transfers an operator's repayment posts (its ``--id`` keys it)."""


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    credit = commands.add_parser(
        "credit",
        help="credit accounts in the ledger store: open, status, statement, plans, repay",
        description="Credit accounts (credit.md) read and changed straight through the "
        "ledger store the config names (ledger.sqlite3 beside a SQLite journal, or the "
        "PostgreSQL journal's database).",
    )
    actions = credit.add_subparsers(dest="credit_action", required=True, metavar="ACTION")
    opening = actions.add_parser(
        "open", help="open a credit account for a customer with a wallet",
        description="Opens the customer's credit account; the wallet must exist, opened "
        "by --app. Its business date is the switch's open date (the settlement store's), "
        "or --date.",
    )  # fmt: skip
    opening.add_argument("customer_id")
    opening.add_argument("--limit", dest="limit_fen", type=int, required=True,
                         help="the credit limit in fen, 0..100000000")  # fmt: skip
    opening.add_argument("--app", required=True, help="the app principal of the wallet")
    opening.add_argument("--statement-day", type=int, help="1..28 (default: [credit])")
    opening.add_argument("--grace-days", type=int, help="1..20 (default: [credit])")
    opening.add_argument("--date", help="the opening business date, YYYY-MM-DD")
    status = actions.add_parser("status", help="the account: limit, available, due, overdue")
    status.add_argument("customer_id")
    statement = actions.add_parser("statement", help="a statement already made")
    statement.add_argument("customer_id")
    statement.add_argument("period", help="YYYY-MM")
    plans = actions.add_parser("plans", help="the plans with anything unbilled or unpaid")
    plans.add_argument("customer_id")
    plans.add_argument("--purchase-id", help="that plan, with its schedule")
    repay = actions.add_parser(
        "repay", help="repay from the customer's wallet",
        description="Repays AMOUNT fen from the customer's wallet on the account's current "
        "business date, allocated as credit.md says (penalties, overdue fees and "
        "principal, the rest billed, then prepayment). --id keys it: the same id again "
        "repays nothing more.",
    )  # fmt: skip
    repay.add_argument("customer_id")
    repay.add_argument("amount", type=int, help="fen, 1 to the payoff")
    repay.add_argument("--id", dest="request_id", required=True,
                       help="the repayment's reference (12 characters, as an RRN)")  # fmt: skip
    repay.add_argument("--purchase-id", help="prepay this purchase first")
    for parser in (opening, status, statement, plans, repay):
        config_option(parser)
        parser.add_argument("--json", action="store_true", help="the answer as JSON")
        parser.set_defaults(handler=_credit)


def _opening_date(args: argparse.Namespace, config: SwitchConfig) -> date:
    if args.date is not None:
        return date.fromisoformat(args.date)
    settlement = open_settlement_store(config)
    try:
        settlement.open()
        found = settlement.first_open_date()
    finally:
        settlement.close()
    if found is not None:
        return found
    return (datetime.now(UTC) + timedelta(hours=config.switch.utc_offset_h)).date()


def _problem(args: argparse.Namespace) -> str | None:
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
        if args.date is not None:
            try:
                date.fromisoformat(args.date)
            except ValueError:
                return "--date: YYYY-MM-DD"
    if action == "repay":
        if not 1 <= args.amount <= 10**12 - 1:
            return "amount: 1..999999999999"
        if not 1 <= len(args.request_id) <= 32:
            return "--id: 1..32 characters"
    if action == "statement" and not (
        len(args.period) == 7 and args.period[4] == "-" and args.period.replace("-", "").isdigit()
    ):
        return "period: YYYY-MM"
    return None


def _credit(args: argparse.Namespace, config: SwitchConfig) -> int:
    problem = _problem(args)
    if problem is not None:
        print(f"switch: {problem}", file=sys.stderr)
        return 2
    store = open_ledger_store(config)
    settings = config.credit
    now = datetime.now(UTC).timestamp()
    try:
        store.open()
        action = args.credit_action
        document: object
        if action == "open":
            document = store.credit_open(
                args.customer_id, args.app, args.limit_fen,
                statement_day=args.statement_day or settings.statement_day,
                grace_days=args.grace_days or settings.grace_days,
                business_date=_opening_date(args, config), at=now,
            )  # fmt: skip
        elif action == "status":
            document = account_view(store.credit_account(args.customer_id))
        elif action == "statement":
            book = store.credit_account(args.customer_id).book
            document = statement_of(book, args.period)
        elif action == "plans":
            book = store.credit_account(args.customer_id).book
            document = {"plans": plans_of(book, args.purchase_id)}
        else:
            repaid = store.credit_repay_from_wallet(
                args.customer_id, key=TransferKey(OPERATOR_PRINCIPAL, args.request_id, "repay"),
                rrn=args.request_id, amount_fen=args.amount, purchase_id=args.purchase_id,
                at=now,
            )  # fmt: skip
            allocated = repaid.allocation
            if allocated is None:
                print(f"switch: repayment {args.request_id} was made before", file=sys.stderr)
                return 1
            document = {
                "allocated": {
                    "penalty_fen": allocated.penalty_fen, "fee_fen": allocated.fee_fen,
                    "principal_fen": allocated.principal_fen,
                    "prepaid_fen": allocated.prepaid_fen,
                },
                "waived_fee_fen": allocated.waived_fee_fen,
                "account": repaid.account,
            }  # fmt: skip
    except CreditRefused as exc:
        print(f"switch: {exc.message} ({exc.code})", file=sys.stderr)
        return 2
    except LedgerError as exc:
        print(f"switch: {exc} ({exc.response_code})", file=sys.stderr)
        return 2
    finally:
        store.close()
    plain = json.loads(msgspec.json.encode(document))
    if args.json:
        sys.stdout.write(json.dumps(plain, ensure_ascii=False, indent=2) + "\n")
    else:
        _print(plain)
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
