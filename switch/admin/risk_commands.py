"""``switch risk card-hash|test|hits`` (risk.md, "Journal, metrics, operator").

``card-hash`` prints look-up hashes of card numbers read on standard input, under the
config's active card key; ``test`` evaluates a rules file on one request after a
history, contacting nothing; ``hits`` lists the last hits from the journal (every
worker's), newest first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from switch.config import SwitchConfig
from switch.core.ledger import LedgerError
from switch.core.merchants import MerchantBook, parse_merchants
from switch.core.risk import RulesError, load_rules
from switch.core.risktest import DryRunError, TestRequest, decode_request, dry_run
from switch.errors import ConfigError

PAGE = 500
"""Journal rows read at a time by ``hits``."""


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    risk = commands.add_parser(
        "risk",
        help="risk rules: card hashes, a dry run of a rules file, the last hits",
        description="The risk rules (risk.md).",
    )
    actions = risk.add_subparsers(required=True, metavar="ACTION")
    card_hash = actions.add_parser(
        "card-hash",
        help="card numbers (stdin, one a line) as rules name them",
        description="Reads card numbers on standard input, one a line, and prints each "
        "one's look-up hash under the config's active card key (lowercase hexadecimal, "
        "one a line, in the same order): what a blocklist of key card lists. A line that "
        "is not 12-19 digits prints nothing and exits 2, naming its line number.",
    )
    config_option(card_hash)
    card_hash.set_defaults(handler=_card_hash)
    test = actions.add_parser(
        "test",
        help="a rules file on one request, contacting nothing",
        description="Evaluates the rules of --file on the request --request (a JSON object "
        "or a file holding one: channel, kind, funding, merchant_id, terminal_id, pan or "
        "card_hash, customer_id, device_id, amount, time) after the requests of --history "
        "(JSON lines, each with outcome: approved, declined or removed), the MCC from the "
        "config's merchants file; prints each rule's hit, pass or out of scope, then the "
        "outcome: approve, review ID..., or decline CODE ID. An invalid rules file: one "
        "line a fault and exit 2.",
    )
    test.add_argument("--file", required=True, help="the rules file (TOML)")
    test.add_argument("--request", required=True, help="the request: JSON, or a file of it")
    test.add_argument("--history", help="earlier requests: a file of JSON lines")
    config_option(test)
    test.set_defaults(handler=_test)
    hits = actions.add_parser(
        "hits",
        help="the last rule hits, newest first",
        description="The last hits of the risk rules from the journal, newest first: time "
        "(UTC), rule, mode, action, channel, merchant, terminal, masked card, amount (fen), "
        "RRN or online id, code.",
    )
    hits.add_argument("--rule", help="only this rule's")
    hits.add_argument("--mode", choices=["enforce", "shadow"], help="only this mode's")
    hits.add_argument("--last", type=int, default=50, help="how many (default 50)")
    hits.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    config_option(hits)
    hits.set_defaults(handler=_hits)


def _vault(config: SwitchConfig) -> Any:
    from switch.store.crypto import CardVault, load_card_keys

    key_file = config.journal.key_file
    return CardVault(
        load_card_keys(
            key_file=config.path(key_file) if key_file else None, key_env=config.journal.key_env
        )
    )


def _card_hash(args: argparse.Namespace, config: SwitchConfig) -> int:
    try:
        vault = _vault(config)
    except ConfigError as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    lines = sys.stdin.read().splitlines()
    for number, line in enumerate(lines, 1):
        pan = line.strip()
        if not (pan.isascii() and pan.isdigit() and 12 <= len(pan) <= 19):
            print(f"switch: line {number}: not a card number (12-19 digits)", file=sys.stderr)
            return 2
    print("\n".join(vault.card_hashes(line.strip())[0] for line in lines))
    return 0


def _test(args: argparse.Namespace, config: SwitchConfig) -> int:
    path = Path(args.file)
    try:
        data = path.read_bytes()
        rules = load_rules(
            data, source=str(path), read_beside=lambda name: (path.parent / name).read_bytes()
        )
    except OSError as exc:
        print(f"switch: {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except RulesError as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    try:
        text = args.request
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text()
        request = decode_request(text, source="request")
        history = list(_history(args.history))
        merchants = _merchants(config)
        vault = _vault(config) if _needs_cards(request, history) else None

        def card_hashes(pan: str) -> tuple[str, ...]:
            assert vault is not None
            return tuple(vault.card_hashes(pan))

        def mcc_of(merchant_id: str) -> str | None:
            terms = merchants.terms(merchant_id)
            return terms.mcc if terms is not None else None

        results, verdict = dry_run(
            rules, request, history, now=time.time(),
            utc_offset_h=config.switch.utc_offset_h, card_hashes=card_hashes, mcc_of=mcc_of,
        )  # fmt: skip
    except (DryRunError, ConfigError) as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"switch: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    width = max((len(rule_id) for rule_id, _ in results), default=0)
    for rule_id, result in results:
        print(f"{rule_id:<{width}}  {result}")
    print(verdict.trail())
    return 0


def _merchants(config: SwitchConfig) -> MerchantBook:
    """The config's merchants file (every merchant, no MCC, when it names none)."""
    named = config.settlement.merchants_file
    if not named:
        return MerchantBook.open_to_all()
    path = config.path(named)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"settlement.merchants_file: cannot read {path}: {exc}") from exc
    return parse_merchants(text, source=str(path))


def _needs_cards(request: TestRequest, history: list[tuple[str, TestRequest]]) -> bool:
    return request.pan is not None or any(line.pan is not None for _, line in history)


def _history(named: str | None) -> Iterator[tuple[str, TestRequest]]:
    if named is None:
        return
    with open(named, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if line.strip():
                source = f"{named}:{number}"
                yield source, decode_request(line, source=source)


def _hits(args: argparse.Namespace, config: SwitchConfig) -> int:
    from switch.store import open_operator_journal
    from switch.store.port import OperatorError

    if args.last < 1:
        print("switch: --last: at least 1", file=sys.stderr)
        return 2
    found: list[dict[str, Any]] = []
    try:
        journal = open_operator_journal(config)
        try:
            before = 1e18  # after any time
            while len(found) < args.last:
                rows = journal.risk_marked(before, PAGE)
                for row in rows:
                    found.extend(_row_hits(row, args.rule, args.mode))
                if len(rows) < PAGE:
                    break
                before = rows[-1]["created_at"]
        finally:
            journal.close()
    except (OperatorError, ConfigError) as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 1
    try:
        found.extend(_desk_hits(config, args.last, args.rule, args.mode))
    except LedgerError as exc:
        print(f"switch: {exc}", file=sys.stderr)
        return 1
    found.sort(key=lambda hit: hit["at"], reverse=True)  # stable: a row's hits in order
    found = [{k: v for k, v in hit.items() if k != "at"} for hit in found[: args.last]]
    if args.json:
        print(json.dumps(found, indent=1))
        return 0
    for hit in found:
        print(
            f"{hit['time']}  {hit['rule']:<20} {hit['mode']:<7} {hit['action']:<7} "
            f"{hit['channel']:<6} {hit['merchant']:<15} {hit['terminal'] or '-':<8} "
            f"{hit['pan']:<19} {hit['amount_fen']:>10} {hit['rrn'] or hit['online_id'] or '-'} "
            f"{hit['code'] or '-'}"
        )
    return 0


def _desk_hits(
    config: SwitchConfig, last: int, rule: str | None, mode: str | None
) -> list[dict[str, Any]]:
    """The hits of the desk requests that have no journal row (withdrawals, credit
    conversions: their records in the ledger's database), up to ``last``, newest first;
    none where there is no ledger yet."""
    from switch.store import open_ledger_store

    sqlite_ledger = config.path(config.journal.path).with_name("ledger.sqlite3")
    if config.journal.backend != "postgresql" and not sqlite_ledger.exists():
        return []
    store = open_ledger_store(config)
    found: list[dict[str, Any]] = []
    store.open()
    try:
        before = 1e18
        while len(found) < last:
            events = store.risk_events_marked(before, PAGE)
            for event in events:
                row = {
                    "created_at": event.received_at, "risk_rule": event.risk_rule,
                    "risk_review": event.risk_review, "risk_shadow": event.risk_shadow,
                    "code": event.code, "channel": event.channel, "merchant_id": "",
                    "terminal_id": None, "pan_masked": "", "amount": event.amount,
                    "rrn": event.rrn or None, "online_id": event.online_id,
                }  # fmt: skip
                found.extend(_row_hits(row, rule, mode))
            if len(events) < PAGE:
                break
            before = events[-1].received_at
    finally:
        store.close()
    return found


def _row_hits(row: dict[str, Any], rule: str | None, mode: str | None) -> list[dict[str, Any]]:
    """The hits a journal row records: the deciding rule, the review rules, the shadow
    hits (with the action and code each would have taken)."""
    marks: list[tuple[str, str, str, str | None]] = []
    if row["risk_rule"]:
        marks.append((row["risk_rule"], "enforce", "decline", row["code"]))
    for review in (row["risk_review"] or "").split(","):
        if review:
            marks.append((review, "enforce", "review", None))
    for shadow in (row["risk_shadow"] or "").split(","):
        if shadow:
            rule_id, action, *code = shadow.split(":")
            marks.append((rule_id, "shadow", action, code[0] if code else None))
    return [
        {
            "at": row["created_at"],
            "time": datetime.fromtimestamp(row["created_at"], UTC).isoformat(timespec="seconds"),
            "rule": rule_id,
            "mode": rule_mode,
            "action": action,
            "channel": row["channel"],
            "merchant": row["merchant_id"],
            "terminal": row["terminal_id"] if row["channel"] == "pos" else None,
            "pan": row["pan_masked"],
            "amount_fen": row["amount"],
            "rrn": row["rrn"],
            "online_id": row["online_id"],
            "code": code,
        }
        for rule_id, rule_mode, action, code in marks
        if (rule is None or rule_id == rule) and (mode is None or rule_mode == mode)
    ]
