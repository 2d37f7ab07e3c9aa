"""Risk rules (risk.md, "Risk rules" to "Actions, shadow mode and reload"), sans-IO.

The rules file is decoded once into frozen Structs (:class:`RuleSpec`), checked as a
whole (:func:`compile_rules`: one fault refuses the file, naming file, rule and key) and
compiled into a :class:`RuleSet` of indexes, so that a request meets only the rules
that can apply to it:

- per scope (channel x funding x kind, 40 of them), the ``mcc``, ``amount_cap`` and
  ``velocity`` rules in scope, the ``velocity`` ones grouped by key, so a group whose
  key the request has no value for is skipped whole; ``mcc`` ``deny`` rules by MCC;
- ``blocklist`` rules merged into one dict per key (value -> rules), the ``bin`` ones
  one dict per prefix length, as ``routing.BinTable``: a look-up costs the same
  whatever the lists' sizes, and only the rules whose list holds the value are seen.

A :class:`RiskEngine` holds the running set and the velocity windows (bucketed counts
and amounts per key value, :class:`Window`; one per distinct key, window, counts and
scope, shared by the rules that count the same requests). :meth:`RiskEngine.evaluate` takes
the request and ``now`` (the request's receipt stamp, epoch seconds: windows follow
the switch's clock, never a clock read here), counts it as risk.md says and returns a
:class:`Verdict`; :meth:`RiskEngine.release` gives a reservation back (declined, timed
out), :meth:`RiskEngine.remove` takes an approved original out (void, reversal,
expiry); :meth:`RiskEngine.rebuild` counts past requests (from the journal, read by the
caller); :meth:`RiskEngine.apply` swaps a new set in whole and says which windows must
be rebuilt. Nothing here reads a clock, a file or a socket: the caller reads the files
and hands their bytes in (:func:`load_rules`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from bisect import insort
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import product
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from switch.errors import ConfigError

Channel = Literal["pos", "online"]
Funding = Literal["card", "cobrand", "wallet", "credit"]
RiskKind = Literal["sale", "preauth", "conversion", "topup", "withdrawal"]
Mode = Literal["enforce", "shadow"]
RuleKind = Literal["amount_cap", "velocity", "blocklist", "mcc"]
Action = Literal["decline", "review"]
DeclineCode = Literal["61", "65", "57", "59", "62"]
KeyName = Literal["card", "terminal", "merchant", "customer", "device", "bin"]
WindowName = Literal["1m", "1h", "24h", "day"]
Counts = Literal["approved", "attempts"]
Outcome = Literal["approve", "review", "decline"]
PastOutcome = Literal["approved", "declined", "removed"]

CHANNELS: Final[tuple[Channel, ...]] = ("pos", "online")
FUNDINGS: Final[tuple[Funding, ...]] = ("card", "cobrand", "wallet", "credit")
KINDS: Final[tuple[RiskKind, ...]] = ("sale", "preauth", "conversion", "topup", "withdrawal")
SCOPES: Final = tuple(product(CHANNELS, FUNDINGS, KINDS))
"""Every (channel, funding, kind) a request can have; a rule's scope is a subset."""
_SCOPE_INDEX: Final = {scope: index for index, scope in enumerate(SCOPES)}
_ALL_SCOPES: Final = (1 << len(SCOPES)) - 1

KIND_RANK: Final[dict[str, int]] = {"blocklist": 0, "mcc": 1, "amount_cap": 2, "velocity": 3}
"""The order rules are evaluated in (then file order within a kind)."""
WINDOW_S: Final[dict[str, int]] = {"1m": 60, "1h": 3600, "24h": 86400}
"""Rolling windows; ``day`` is the local calendar date."""
BUCKETS_PER_WINDOW: Final = 60
"""A rolling window W is counted in buckets of W/60 (risk.md allows at most that): an
entry leaves up to one bucket late, never early."""
DEFAULT_MAX_KEYS: Final = 1 << 20
"""Key values a window holds at most (a card, a terminal...): past it the value seen
longest ago is forgotten (counted in ``statistics()['evicted']``)."""
MAX_BIN_DIGITS: Final = 11
REBUILD_BATCH: Final = 65_536
"""Entries a rebuild gathers before counting them window by window."""
NO_LIMIT: Final = 1 << 128
"""A limit a rule does not set (above any count or amount)."""
VELOCITY_KEYS: Final = frozenset({"card", "terminal", "merchant", "customer", "device"})
BLOCKLIST_KEYS: Final = VELOCITY_KEYS | {"bin"}
CARD_FUNDING: Final = frozenset({"card", "cobrand"})
"""Fundings with a card number, where ``bin`` rules apply."""

RuleId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9._-]{1,32}$")]
Mcc = Annotated[str, Meta(pattern=r"^[0-9]{4}$")]
Fen = Annotated[int, Meta(ge=0)]

_HASH = re.compile(r"^[0-9a-f]{64}$")
_BIN = re.compile(r"^[0-9]{1,11}$")
_MERCHANT = re.compile(r"^[\x21-\x7e]{1,15}$")
_TERMINAL = re.compile(r"^[\x21-\x2e\x30-\x7e]{1,15}/[\x21-\x7e]{1,8}$")
_CUSTOMER = re.compile(r"^[A-Za-z0-9._:-]{1,32}$")
_DEVICE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_VALUE_FORMS: Final[dict[str, tuple[re.Pattern[str], str]]] = {
    "card": (_HASH, "a card's look-up hash (64 hexadecimal characters)"),
    "bin": (_BIN, "a card-number prefix of 1-11 digits"),
    "terminal": (_TERMINAL, "<merchant id>/<terminal id>"),
    "merchant": (_MERCHANT, "a merchant id (1-15 printable characters)"),
    "customer": (_CUSTOMER, "a customer_id (1-32 of [A-Za-z0-9._:-])"),
    "device": (_DEVICE, "a device_id (1-64 of [A-Za-z0-9._:-])"),
}
Counter = tuple[str, str, str, int]
"""(key, window, counts, scope mask): one window's identity."""
_VALUES_FILE = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
_COMMENT = re.compile(r"(^|\s)#.*$")
_DIGIT_RUN = re.compile(r"[0-9]{12}")

# -- the file ------------------------------------------------------------------------


class RuleSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One table of the file's ``rules`` array, as written (risk.md's table of keys)."""

    id: RuleId
    mode: Mode
    kind: RuleKind
    action: Action
    code: DeclineCode | None = None
    channels: tuple[Channel, ...] | None = None
    funding: tuple[Funding, ...] | None = None
    kinds: tuple[RiskKind, ...] | None = None
    max_fen: Fen | None = None
    key: KeyName | None = None
    window: WindowName | None = None
    counts: Counts | None = None
    max_count: Annotated[int, Meta(ge=0)] | None = None
    values: tuple[str, ...] | None = None
    values_file: str | None = None
    allow: tuple[Mcc, ...] | None = None
    deny: tuple[Mcc, ...] | None = None


class RulesFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    rules: tuple[RuleSpec, ...] = ()


class RulesError(ConfigError):
    """The rules file is refused whole; the text names the file, the rule and the key."""


_KEYS_OF_KIND: Final[dict[str, frozenset[str]]] = {
    "amount_cap": frozenset({"max_fen"}),
    "velocity": frozenset({"max_fen", "key", "window", "counts", "max_count"}),
    "blocklist": frozenset({"key", "values", "values_file"}),
    "mcc": frozenset({"allow", "deny"}),
}
_KIND_KEYS: Final = frozenset().union(*_KEYS_OF_KIND.values())


def decode_rules_file(data: bytes, *, source: str) -> RulesFile:
    """The file's rules as written, each checked alone (keys, types, values); a fault
    raises RulesError naming ``source``, the rule (its id, else its position) and the
    key."""
    try:
        return msgspec.toml.decode(data, type=RulesFile)
    except msgspec.ValidationError as exc:
        raise RulesError(_explain(str(exc), data, source)) from None
    except msgspec.DecodeError as exc:
        raise RulesError(f"{source}: not TOML: {exc}") from None


_AT = re.compile(r"^(?P<text>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_FIELD = re.compile(r"^Object (?P<what>contains unknown|missing required) field `(?P<key>[^`]*)`$")
_PROBLEM: Final = {"contains unknown": "unknown key", "missing required": "missing key"}
_RULE_PATH = re.compile(r"^\.rules\[(?P<index>\d+)\](?:\.(?P<key>[A-Za-z_]+))?(?P<rest>.*)$")


def _explain(message: str, data: bytes, source: str) -> str:
    """msgspec's ``... - at `$.rules[3].mode``` as ``file: rule 'x': key mode: ...``."""
    match = _AT.match(message)
    text, path = (match["text"], match["path"] or "") if match else (message, "")
    rule = _RULE_PATH.match(path)
    named = _FIELD.match(text)
    if rule is None:
        if not path and named is not None:  # the file's own keys: only ``rules``
            return f"{source}: key {named['key']}: {_PROBLEM[named['what']]}"
        return f"{source}: {text}" + (f" (at {path.lstrip('.')})" if path else "")
    name = f"rule #{int(rule['index']) + 1}"
    try:
        raw = msgspec.toml.decode(data)["rules"][int(rule["index"])]
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            name = f"rule {raw['id']!r}"
    except (msgspec.DecodeError, LookupError, TypeError):
        pass
    key = rule["key"]
    if key is None:  # the table itself: an unknown or missing key, named in the text
        if named is None:
            return f"{source}: {name}: {text}"
        return f"{source}: {name}: key {named['key']}: {_PROBLEM[named['what']]}"
    return f"{source}: {name}: key {key}{rule['rest']}: {text}"


def values_files(rules: RulesFile) -> list[str]:
    """The values files the rules name, each once, in the order first named: the caller
    reads them (beside the rules file) and hands their bytes to :func:`compile_rules`."""
    names: list[str] = []
    for spec in rules.rules:
        if spec.values_file is not None and spec.values_file not in names:
            names.append(spec.values_file)
    return names


def ruleset_version(data: bytes, files: Sequence[bytes]) -> str:
    """12 hexadecimal digits of the SHA-256 of the rules file then its values files, in
    order (risk.md): each journaled request names the set it met."""
    digest = hashlib.sha256(data)
    for content in files:
        digest.update(content)
    return digest.hexdigest()[:12]


def load_rules(data: bytes, *, source: str, read_beside: Callable[[str], bytes]) -> RuleSet:
    """Decodes, checks and compiles the rules file ``data``; ``read_beside(name)`` gives
    a values file's bytes (the caller's I/O; an OSError refuses the file naming it)."""
    rules = decode_rules_file(data, source=source)
    contents: dict[str, bytes] = {}
    for name in values_files(rules):
        if not _VALUES_FILE.match(name) or name in (".", ".."):
            spec = next(spec for spec in rules.rules if spec.values_file == name)
            raise RulesError(
                f"{source}: rule {spec.id!r}: key values_file: {name!r} is not the name of "
                "a file beside the rules file"
            )
        try:
            contents[name] = read_beside(name)
        except OSError as exc:
            spec = next(spec for spec in rules.rules if spec.values_file == name)
            reason = exc.strerror or str(exc)
            raise RulesError(
                f"{source}: rule {spec.id!r}: key values_file: cannot read {name}: {reason}"
            ) from None
    return compile_rules(
        rules,
        contents,
        source=source,
        version=ruleset_version(data, list(contents.values())),
    )


# -- compiled rules ------------------------------------------------------------------


class Rule:
    """A rule as the engine runs it: its spec plus what evaluation reads, flattened."""

    __slots__ = (
        "action",
        "allow",
        "code",
        "counter",
        "counter_identity",
        "counts_attempts",
        "decides",
        "id",
        "key",
        "kind",
        "limit_count",
        "limit_fen",
        "max_count",
        "max_fen",
        "mccs",
        "mode",
        "order",
        "scope_mask",
        "shadow",
        "spec",
        "values",
        "window",
    )

    def __init__(self, spec: RuleSpec, position: int, values: frozenset[str]) -> None:
        self.spec = spec
        self.id = spec.id
        self.mode = spec.mode
        self.kind = spec.kind
        self.action = spec.action
        self.code = spec.code
        self.shadow = spec.mode == "shadow"
        self.decides = spec.mode == "enforce" and spec.action == "decline"
        self.order = KIND_RANK[spec.kind] * 1_000_000 + position
        self.key = spec.key
        self.max_fen = spec.max_fen
        self.max_count = spec.max_count
        self.limit_count = NO_LIMIT if spec.max_count is None else spec.max_count
        self.limit_fen = NO_LIMIT if spec.max_fen is None else spec.max_fen
        self.window = spec.window
        self.counts_attempts = spec.counts == "attempts"
        self.values = values
        self.allow = spec.allow is not None
        self.mccs = frozenset(spec.allow if spec.allow is not None else spec.deny or ())
        channels = spec.channels or CHANNELS
        fundings = spec.funding or FUNDINGS
        kinds = spec.kinds or KINDS
        mask = 0
        for scope in product(channels, fundings, kinds):
            mask |= 1 << _SCOPE_INDEX[scope]
        self.scope_mask = mask
        self.counter: Counter = (
            spec.key or "",
            spec.window or "",
            spec.counts or "",
            self.scope_mask,
        )
        """What a velocity rule counts: rules with the same key, window, counts and scope
        count the very same requests, so they share one window."""
        self.counter_identity = (spec.id, spec.kind, *self.counter)
        """What must stay unchanged for the rule to keep its counters across a reload
        (risk.md: ``id``, ``kind``, ``key``, ``window``, ``counts`` and scope)."""

    def in_scope(self, scope_index: int) -> bool:
        return bool(self.scope_mask >> scope_index & 1)

    def __repr__(self) -> str:
        return f"Rule({self.id!r}, {self.kind}, {self.mode}, {self.action})"


class _Scope:
    """The rules of one (channel, funding, kind) other than the blocklists."""

    __slots__ = ("amount_caps", "mcc_allow", "mcc_deny", "velocity")

    def __init__(self) -> None:
        self.mcc_allow: tuple[Rule, ...] = ()
        self.mcc_deny: dict[str, tuple[Rule, ...]] = {}
        self.amount_caps: tuple[Rule, ...] = ()
        self.velocity: tuple[tuple[str, tuple[tuple[Counter, bool, tuple[Rule, ...]], ...]], ...]
        self.velocity = ()
        """Per key: per window (its counter, whether it counts attempts), its rules."""


class RuleSet:
    """A checked, compiled rules file: immutable, swapped whole on reload."""

    __slots__ = (
        "_bin_lengths",
        "_bins",
        "_blocks",
        "_by_id",
        "_scopes",
        "rules",
        "source",
        "version",
    )

    def __init__(self, rules: Sequence[Rule], *, version: str, source: str = "") -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._by_id = {rule.id: rule for rule in self.rules}
        self.version = version
        self.source = source
        scopes = [_Scope() for _ in SCOPES]
        for index, scope in enumerate(scopes):
            mine = [rule for rule in self.rules if rule.in_scope(index)]
            scope.mcc_allow = tuple(r for r in mine if r.kind == "mcc" and r.allow)
            deny: dict[str, list[Rule]] = {}
            for rule in mine:
                if rule.kind == "mcc" and not rule.allow:
                    for mcc in sorted(rule.mccs):
                        deny.setdefault(mcc, []).append(rule)
            scope.mcc_deny = {mcc: tuple(rules) for mcc, rules in deny.items()}
            scope.amount_caps = tuple(r for r in mine if r.kind == "amount_cap")
            groups: dict[str, dict[Counter, list[Rule]]] = {}
            for rule in mine:
                if rule.kind == "velocity":
                    assert rule.key is not None
                    groups.setdefault(rule.key, {}).setdefault(rule.counter, []).append(rule)
            scope.velocity = tuple(
                (
                    key,
                    tuple(
                        (counter, counter[2] == "attempts", tuple(rules))
                        for counter, rules in counters.items()
                    ),
                )
                for key, counters in groups.items()
            )
        self._scopes = tuple(scopes)
        blocks: dict[str, dict[str, list[Rule]]] = {}
        bins: dict[int, dict[str, list[Rule]]] = {}
        for rule in self.rules:
            if rule.kind != "blocklist":
                continue
            for value in rule.values:
                if rule.key == "bin":
                    table = bins.setdefault(len(value), {})
                else:
                    assert rule.key is not None
                    table = blocks.setdefault(rule.key, {})
                listed = table.setdefault(value, [])
                if rule not in listed:
                    listed.append(rule)
        self._blocks = {
            key: {value: tuple(rules) for value, rules in table.items()}
            for key, table in blocks.items()
        }
        self._bin_lengths = tuple(sorted(bins))
        self._bins = tuple({v: tuple(r) for v, r in bins[n].items()} for n in self._bin_lengths)

    @classmethod
    def empty(cls) -> RuleSet:
        """No rules file: every request goes on; its version is empty."""
        return cls((), version="")

    def get(self, rule_id: str) -> Rule | None:
        return self._by_id.get(rule_id)

    def velocity_rules(self) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules if rule.kind == "velocity")

    def __len__(self) -> int:
        return len(self.rules)


def compile_rules(
    rules: RulesFile,
    values: Mapping[str, bytes],
    *,
    source: str,
    version: str,
) -> RuleSet:
    """Checks what decoding alone cannot (which keys each kind takes, ids unique, the
    blocklists' values) and compiles the set; RulesError names file, rule and key."""
    seen: set[str] = set()
    compiled: list[Rule] = []
    for position, spec in enumerate(rules.rules):

        def fault(key: str, text: str, spec: RuleSpec = spec) -> RulesError:
            return RulesError(f"{source}: rule {spec.id!r}: key {key}: {text}")

        if spec.id in seen:
            raise fault("id", "the id is used by an earlier rule")
        seen.add(spec.id)
        _check_keys(spec, fault)
        listed: frozenset[str] = frozenset()
        if spec.kind == "blocklist":
            listed = _blocklist_values(spec, values, fault)
        compiled.append(Rule(spec, position, listed))
    return RuleSet(compiled, version=version, source=source)


def _check_keys(spec: RuleSpec, fault: Callable[[str, str], RulesError]) -> None:
    allowed = _KEYS_OF_KIND[spec.kind]
    for key in sorted(_KIND_KEYS - allowed):
        if getattr(spec, key) is not None:
            raise fault(key, f"does not apply to a rule of kind {spec.kind}")
    if spec.action == "decline" and spec.code is None:
        raise fault("code", "a decline rule needs its response code")
    if spec.action == "review" and spec.code is not None:
        raise fault("code", "only a decline rule has a response code")
    for key in ("channels", "funding", "kinds"):
        if getattr(spec, key) == ():
            raise fault(key, "an empty scope matches nothing (leave the key out for all)")
    if spec.kind == "amount_cap" and spec.max_fen is None:
        raise fault("max_fen", "an amount_cap rule needs its limit")
    if spec.kind == "velocity":
        for key in ("key", "window", "counts"):
            if getattr(spec, key) is None:
                raise fault(key, "a velocity rule needs it")
        if spec.key not in VELOCITY_KEYS:
            raise fault("key", f"a velocity rule counts by one of {sorted(VELOCITY_KEYS)}")
        if spec.max_count is None and spec.max_fen is None:
            raise fault("max_count", "a velocity rule needs max_count, max_fen or both")
    if spec.kind == "blocklist":
        if spec.key is None:
            raise fault("key", "a blocklist rule needs it")
        if (spec.values is None) == (spec.values_file is None):
            raise fault("values", "a blocklist rule has exactly one of values and values_file")
    if spec.kind == "mcc" and (spec.allow is None) == (spec.deny is None):
        raise fault("allow", "an mcc rule has exactly one of allow and deny")


def _blocklist_values(
    spec: RuleSpec, files: Mapping[str, bytes], fault: Callable[[str, str], RulesError]
) -> frozenset[str]:
    assert spec.key is not None
    pattern, form = _VALUE_FORMS[spec.key]
    if spec.values is not None:
        lines = [(f"values[{n}]", value) for n, value in enumerate(spec.values)]
    else:
        assert spec.values_file is not None
        content = files.get(spec.values_file)
        if content is None:
            raise fault("values_file", f"{spec.values_file} was not read")
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise fault("values_file", f"{spec.values_file} is not UTF-8 text") from None
        lines = []
        for number, line in enumerate(text.splitlines(), start=1):
            value = _COMMENT.sub("", line).strip()
            if value:
                lines.append((f"values_file: {spec.values_file} line {number}", value))
    accepted: set[str] = set()
    for place, value in lines:
        candidate = value.lower() if spec.key == "card" else value
        if not pattern.match(candidate):
            # Never echoed when it could be a card number (or a card's hash) pasted by
            # mistake: the message goes to the log and /status.
            hidden = spec.key == "card" or _DIGIT_RUN.search(value)
            shown = f"a {len(value)}-character value" if hidden else repr(value)
            raise fault(place, f"{shown} is not {form}")
        accepted.add(candidate)
    return frozenset(accepted)


# -- the request and the answer --------------------------------------------------------


class RiskRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What the rules read of a request, after validation, routing and the look-up of
    any original (risk.md, "Evaluation and counting").

    A completion (``completion=True``) is given as its pre-authorisation (kind
    ``preauth``, that channel and funding) and meets only the blocklist rules, counting
    nowhere.
    """

    channel: Channel
    kind: RiskKind
    funding: Funding
    amount: int
    """Fen."""
    merchant_id: str
    terminal_id: str | None = None
    mcc: str | None = None
    """The merchant's MCC from the merchants file (None: ``mcc`` rules do not apply)."""
    card: tuple[str, ...] = ()
    """The card's look-up hashes (:func:`card_hashes`), the active key's first: a
    blocklist matches any, windows count by the first."""
    pan_prefix: str = ""
    """The card number's first digits, up to 11 (``bin`` rules; bank cards only)."""
    customer_id: str | None = None
    device_id: str | None = None
    completion: bool = False

    def __repr__(self) -> str:
        # The prefix may be more of a card number than a log may hold (first 6).
        shown = self.pan_prefix[:6]
        return (
            f"RiskRequest({self.channel}, {self.kind}, {self.funding}, {self.amount}, "
            f"merchant={self.merchant_id!r}, terminal={self.terminal_id!r}, "
            f"bin={shown!r}, customer={self.customer_id!r}, device={self.device_id!r}, "
            f"completion={self.completion})"
        )


class Hit(msgspec.Struct, frozen=True, gc=False):
    """A rule that hit: for the hits metric (``rule``, ``mode``, ``action``) and the
    journal's shadow hits (with the code it would have answered)."""

    rule: str
    mode: Mode
    action: Action
    code: DeclineCode | None = None


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """The rules' answer for one request."""

    outcome: Outcome
    code: str | None = None
    """The deciding rule's response code (``decline`` only)."""
    rule: str | None = None
    """The deciding rule's id (``decline`` only)."""
    review: tuple[str, ...] = ()
    """The ``enforce`` ``review`` rules that hit (the request goes on, flagged)."""
    shadow: tuple[Hit, ...] = ()
    """The ``shadow`` rules that hit, with the action each would have taken."""
    hits: tuple[Hit, ...] = ()
    """Every rule that hit, in evaluation order (the hits metric)."""
    version: str = ""
    """The rule set's version, journaled with the request."""
    checked: int = 0
    """Rules looked at: those the indexes gave for this request (tests, the bench)."""
    hold: Hold | None = None
    """The ``approved`` windows' reservation: :meth:`RiskEngine.release` it when the
    request is declined or times out; it stands when approved."""

    @property
    def declined(self) -> bool:
        return self.outcome == "decline"

    def trail(self) -> str:
        """``approve``, ``review ID...`` or ``decline CODE ID`` (``switch risk test``)."""
        if self.outcome == "decline":
            return f"decline {self.code} {self.rule}"
        if self.outcome == "review":
            return "review " + " ".join(self.review)
        return "approve"

    def log_fields(self) -> dict[str, str]:
        """``risk_rule``, ``risk_review``, ``risk_shadow`` for the log line, each absent
        when empty (risk.md, "Journal, metrics, operator")."""
        fields: dict[str, str] = {}
        if self.rule is not None:
            fields["risk_rule"] = self.rule
        if self.review:
            fields["risk_review"] = ",".join(self.review)
        if self.shadow:
            fields["risk_shadow"] = ",".join(hit.rule for hit in self.shadow)
        return fields

    def journal_fields(self) -> dict[str, str | None]:
        """What the journal row keeps: the set's version, the deciding rule, the review
        rules, the shadow hits with the action (and code) each would have taken."""
        return {
            "risk_version": self.version or None,
            "risk_rule": self.rule,
            "risk_review": ",".join(self.review) or None,
            "risk_shadow": ",".join(
                f"{hit.rule}:{hit.action}" + (f":{hit.code}" if hit.code else "")
                for hit in self.shadow
            )
            or None,
        }


APPROVE: Final = Verdict(outcome="approve")


class Hold:
    """A request's reservation in the ``approved`` windows (window, key value, bucket,
    slots) of ``amount``; given back once at most."""

    __slots__ = ("amount", "entries", "spent")

    def __init__(
        self, entries: list[tuple[Window, str, int, tuple[int, ...]]], amount: int
    ) -> None:
        self.entries = entries
        self.amount = amount
        self.spent = False

    def __repr__(self) -> str:
        return f"Hold({len(self.entries)} windows, {self.amount}, spent={self.spent})"


class PastRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request from the journal, to rebuild the windows: ``approved`` (it stands,
    in flight included), ``declined`` (by a rule, the bank, or timed out) or
    ``removed`` (approved, then voided, reversed or expired)."""

    request: RiskRequest
    received: float
    """Its receipt stamp, epoch seconds."""
    outcome: PastOutcome


# -- windows ---------------------------------------------------------------------------


ENTRY: Final = 1 << 64
"""A window's count and amount for a key value are one int, count x 2**64 + amount: one
dict read gives both (amounts in fen stay far below 2**64)."""
_AMOUNT: Final = ENTRY - 1
SLOT_BITS: Final = 128
"""Several counters of one key and length share a :class:`Window`, each in a slot of
its ints: slot s is bits 128 s to 128 s + 127 (count x 2**64 + amount), so one dict
read gives every counter's, and one addition counts a request in all of them."""
_SLOT: Final = (1 << SLOT_BITS) - 1
_COUNT: Final = (1 << 64) - 1


def slot_factor(slots: Iterable[int]) -> int:
    """What ``ENTRY + amount`` is multiplied by to count it in each of ``slots``."""
    return sum(1 << (SLOT_BITS * slot) for slot in slots)


def _slots_of(factor: int) -> tuple[int, ...]:
    slots, slot = [], 0
    while factor:
        if factor & 1:
            slots.append(slot)
        factor >>= SLOT_BITS
        slot += 1
    return tuple(slots)


class Window:
    """Counts and amounts per key value over a rolling window (buckets of W/60, a bucket
    kept while any moment it covers is within W of now: an entry leaves up to one bucket
    late, never early) or over the local calendar date (one bucket).

    Each bucket is a plain dict (key value -> count and amount, :data:`ENTRY`) and the
    window keeps their sums per key value: a look-up is one dict read, an entry two
    writes, and a bucket that leaves subtracts what it held, once. Memory is bounded: at
    most 61 buckets (one for ``day``) and ``max_keys`` key values; past that the oldest
    buckets leave early, whole (``statistics()['evicted']``). The dicts hold only
    strings and ints, which the garbage collector does not traverse.
    """

    __slots__ = (
        "_buckets",
        "_expire_at",
        "_newest",
        "_newest_end",
        "_newest_index",
        "_newest_start",
        "_order",
        "_totals",
        "bucket_s",
        "evicted",
        "max_keys",
        "shift_s",
        "span",
    )

    def __init__(self, window: str, *, utc_offset_h: int, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if window == "day":
            self.bucket_s = 86400
            self.shift_s = utc_offset_h * 3600
            self.span = 0
        else:
            self.bucket_s = WINDOW_S[window] // BUCKETS_PER_WINDOW
            self.shift_s = 0
            self.span = BUCKETS_PER_WINDOW
        if max_keys < 1:
            raise ValueError("a window holds at least one key value")
        self.max_keys = max_keys
        self.evicted = 0
        self._order: list[int] = []
        """The buckets' indexes, oldest first."""
        self._buckets: dict[int, dict[str, int]] = {}
        self._totals: dict[str, int] = {}
        self._expire_at = math.inf
        """When the oldest bucket leaves."""
        self._newest: dict[str, int] | None = None
        self._newest_index = 0
        self._newest_start = self._newest_end = 0.0
        """The newest bucket and the moments it covers: most entries go there."""

    def index(self, moment: float) -> int:
        return int((moment + self.shift_s) // self.bucket_s)

    def floor(self, now: float) -> int:
        """The oldest bucket still in the window at ``now``: bucket i covers moments up
        to (i + 1) x bucket, within W of now while i >= index(now) - 60."""
        return self.index(now) - self.span

    def expire(self, now: float) -> None:
        """Drops the buckets that have left by ``now``."""
        if now < self._expire_at:
            return
        floor = self.floor(now)
        order = self._order
        while order and order[0] < floor:
            self._drop(order[0])
        self._reset_expiry()

    def _reset_expiry(self) -> None:
        order = self._order
        self._expire_at = (
            (order[0] + self.span + 1) * self.bucket_s - self.shift_s if order else math.inf
        )

    def _drop(self, index: int) -> None:
        """The bucket leaves: what it held leaves the sums."""
        self._order.remove(index)
        bucket = self._buckets.pop(index)
        if index == self._newest_index:
            self._newest = None
        totals = self._totals
        for key, held in bucket.items():
            left = totals[key] - held
            if left >= ENTRY:
                totals[key] = left
            else:
                del totals[key]

    def held(self, key: str, now: float, slot: int = 0) -> tuple[int, int]:
        """(count, amount) slot ``slot`` holds for ``key`` at ``now``."""
        held = self.peek(key, now) >> (SLOT_BITS * slot) & _SLOT
        return held >> 64, held & _AMOUNT

    def peek(self, key: str, now: float) -> int:
        """What the window holds for ``key`` at ``now``, as count x ENTRY + amount."""
        if now >= self._expire_at:
            self.expire(now)
        return self._totals.get(key, 0)

    def count(self, key: str, now: float, amount: int) -> int:
        """Counts one entry now (slot 0); what the window held for ``key`` before it."""
        return self.count_packed(key, now, ENTRY + amount)

    def count_packed(self, key: str, now: float, entry: int) -> int:
        """Counts ``entry`` (``ENTRY + amount`` times a :func:`slot_factor`) now; what
        the window held for ``key`` before it, every slot."""
        if now >= self._expire_at:
            self.expire(now)
        totals = self._totals
        held = totals.get(key, 0)
        bucket = self._newest
        if bucket is not None and self._newest_start <= now < self._newest_end:
            bucket[key] = bucket.get(key, 0) + entry
            totals[key] = held + entry
            if len(totals) > self.max_keys:
                self._evict()
        else:
            self.add_packed(key, now, entry, now)
        return held

    def load(self, entries: Iterable[tuple[str, float, int]], now: float) -> int:
        """Counts past entries (key value, moment, amount) in any order, as :meth:`add`
        would one by one (a rebuild); returns how many were still in the window."""
        return self.load_packed(((k, m, ENTRY + a) for k, m, a in entries), now)

    def load_packed(self, entries: Iterable[tuple[str, float, int]], now: float) -> int:
        """:meth:`load` of (key value, moment, packed entry)."""
        self.expire(now)
        floor = self.floor(now)
        shift, size = self.shift_s, self.bucket_s
        buckets, totals, order = self._buckets, self._totals, self._order
        max_keys = self.max_keys
        counted = 0
        for key, moment, entry in entries:
            index = int(((moment if moment < now else now) + shift) // size)
            if index < floor:
                continue
            bucket = buckets.get(index)
            if bucket is None:
                bucket = buckets[index] = {}
                insort(order, index)
            bucket[key] = bucket.get(key, 0) + entry
            totals[key] = totals.get(key, 0) + entry
            counted += 1
            if len(totals) > max_keys:
                self._evict()
                floor = max(floor, order[0] if order else floor)
        self._newest = None  # found again by the next add
        self._reset_expiry()
        return counted

    def add(self, key: str, moment: float, amount: int, now: float) -> int | None:
        """Counts one entry at ``moment`` (taken as ``now`` if later; slot 0); its
        bucket, or None when that bucket has left already."""
        return self.add_packed(key, moment, ENTRY + amount, now)

    def add_packed(self, key: str, moment: float, entry: int, now: float) -> int | None:
        """:meth:`add` of a packed entry (``ENTRY + amount`` times a slot factor)."""
        if now >= self._expire_at:
            self.expire(now)
        if moment > now:
            moment = now
        bucket = self._newest
        if bucket is not None and self._newest_start <= moment < self._newest_end:
            index = self._newest_index
        else:
            index = self.index(moment)
            if index < self.floor(now):
                return None
            bucket = self._buckets.get(index)
            if bucket is None:
                bucket = self._buckets[index] = {}
                insort(self._order, index)
                if index == self._order[0]:
                    self._reset_expiry()
            if index == self._order[-1]:
                self._newest, self._newest_index = bucket, index
                self._newest_start = index * self.bucket_s - self.shift_s
                self._newest_end = self._newest_start + self.bucket_s
        bucket[key] = bucket.get(key, 0) + entry
        totals = self._totals
        totals[key] = totals.get(key, 0) + entry
        if len(totals) > self.max_keys:
            self._evict()
            return index if index in self._buckets else None
        return index

    def _evict(self) -> None:
        while len(self._totals) > self.max_keys and self._order:
            self._drop(self._order[0])
            self.evicted += 1
        self._reset_expiry()

    def take(
        self, key: str, index: int, amount: int, now: float, slots: Sequence[int] = (0,)
    ) -> int:
        """Removes one entry of ``amount`` from bucket ``index`` in each of ``slots``
        that still holds one there; how many did."""
        self.expire(now)
        bucket = self._buckets.get(index)
        if bucket is None or key not in bucket:
            return 0
        held = bucket[key]
        entry = taken = 0
        for slot in slots:
            shift = SLOT_BITS * slot
            field = held >> shift & _SLOT
            if field >= ENTRY:
                entry += (ENTRY + min(amount, field & _AMOUNT)) << shift
                taken += 1
        if not entry:
            return 0
        if held - entry >= ENTRY:
            bucket[key] = held - entry
        else:
            del bucket[key]
            if not bucket:
                self._drop(index)  # empty: nothing left in it to subtract
                self._reset_expiry()
        left = self._totals[key] - entry
        if left >= ENTRY:
            self._totals[key] = left
        else:
            del self._totals[key]
        return taken

    def snapshot(self, now: float, slot: int = 0) -> dict[str, tuple[tuple[int, int, int], ...]]:
        """What slot ``slot`` holds at ``now``: per key value, its (bucket, count,
        amount) oldest first (tests, reports)."""
        floor = self.floor(now)
        shift = SLOT_BITS * slot
        kept: dict[str, list[tuple[int, int, int]]] = {}
        for index in self._order:
            if index >= floor:
                for key, packed in self._buckets[index].items():
                    held = packed >> shift & _SLOT
                    if held:
                        kept.setdefault(key, []).append((index, held >> 64, held & _AMOUNT))
        return {key: tuple(entries) for key, entries in sorted(kept.items())}

    def clear(self, slot: int) -> None:
        """Empties slot ``slot`` (its counter is gone: the slot is given to another)."""
        mask = ~(_SLOT << (SLOT_BITS * slot))
        for table in (self._totals, *self._buckets.values()):
            for key in list(table):
                left = table[key] & mask
                if left:
                    table[key] = left
                else:
                    del table[key]
        for index in [index for index in self._order if not self._buckets[index]]:
            self._drop(index)
        self._newest = None
        self._reset_expiry()

    def statistics(self) -> dict[str, int]:
        return {
            "keys": len(self._totals),
            "buckets": len(self._order),
            "entries": sum(len(bucket) for bucket in self._buckets.values()),
            "evicted": self.evicted,
        }


# -- the engine ------------------------------------------------------------------------


class Reload(msgspec.Struct, frozen=True, kw_only=True):
    """What :meth:`RiskEngine.apply` did: the rules added, removed, changed or kept
    (counters kept: same ``id``, ``kind``, ``key``, ``window``, ``counts`` and scope),
    and the velocity rules whose windows start empty and must be rebuilt from the
    requests received from ``since`` until ``until`` (the moment of the swap; those
    after it were counted as they came)."""

    version: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    rebuild: tuple[str, ...] = ()
    since: float = 0.0
    until: float = 0.0


def diff(old: RuleSet, new: RuleSet) -> tuple[list[str], list[str], list[str], list[str]]:
    """(added, removed, changed, kept) rule ids: ``kept`` keep their counters (unchanged
    counter identity), ``changed`` are in both sets with another identity or content."""
    before, after = {r.id: r for r in old.rules}, {r.id: r for r in new.rules}
    added = [rule_id for rule_id in after if rule_id not in before]
    removed = [rule_id for rule_id in before if rule_id not in after]
    changed, kept = [], []
    for rule_id, rule in after.items():
        if rule_id not in before:
            continue
        if before[rule_id].counter_identity == rule.counter_identity:
            kept.append(rule_id)
        if before[rule_id].spec != rule.spec or before[rule_id].values != rule.values:
            changed.append(rule_id)
    return added, removed, changed, kept


class WindowView:
    """One counter's window: its slot of the :class:`Window` it shares with the other
    counters of its key and length (what tests, reports and the bench read)."""

    __slots__ = ("slot", "window")

    def __init__(self, window: Window, slot: int) -> None:
        self.window = window
        self.slot = slot

    def held(self, key: str, now: float) -> tuple[int, int]:
        return self.window.held(key, now, self.slot)

    def snapshot(self, now: float) -> dict[str, tuple[tuple[int, int, int], ...]]:
        return self.window.snapshot(now, self.slot)

    def statistics(self) -> dict[str, int]:
        return self.window.statistics()


_Check = tuple[int, tuple[Rule, ...]]
"""A counter's slot shift and the rules that read it."""
_Plan = tuple[Window, int, int, tuple[int, ...], tuple[_Check, ...]]
"""A window as one scope uses it: the slot factors of the counters in scope that count
attempts and that reserve approvals, the latter's slots, and each counter's rules."""
_ScopePlan = tuple[tuple[str, tuple[_Plan, ...]], ...]
"""Per velocity key, the windows a scope's requests count in."""


class RiskEngine:
    """The running rule set and its windows; every method is synchronous and takes the
    time it acts at. Velocity rules that count the same requests (same key, window,
    counts and scope) share one counter (:attr:`Rule.counter`); the counters of one key
    and window length share one :class:`Window`, each in a slot of it, so a request
    costs a dict read or two per key and length, not per counter."""

    __slots__ = (
        "_hits",
        "_plans",
        "_slots",
        "_views",
        "_windows",
        "max_keys",
        "rules",
        "utc_offset_h",
    )

    def __init__(
        self, rules: RuleSet, *, utc_offset_h: int = 8, max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        self.rules = rules
        self.utc_offset_h = utc_offset_h
        self.max_keys = max_keys
        self._windows: dict[tuple[str, str], Window] = {}
        """(key, window) -> the window its counters share."""
        self._slots: dict[Counter, tuple[Window, int]] = {}
        self._views: dict[Counter, WindowView] = {}
        self._plans: tuple[_ScopePlan, ...] = ()
        self._layout(rules)
        self._hits: dict[str, int] = {}

    def _layout(self, rules: RuleSet) -> list[Counter]:
        """Gives each counter of ``rules`` a slot (those that had one keep it, a gone
        one's slot is emptied and given again), compiles each scope's plan; returns the
        counters that start empty."""
        wanted = {rule.counter: rule for rule in rules.velocity_rules()}
        for counter in [c for c in self._slots if c not in wanted]:
            window, slot = self._slots.pop(counter)
            self._views.pop(counter, None)
            window.clear(slot)
        used: dict[Window, set[int]] = {}
        for window, slot in self._slots.values():
            used.setdefault(window, set()).add(slot)
        fresh: list[Counter] = []
        for counter, rule in wanted.items():
            if counter in self._slots:
                continue
            assert rule.key is not None and rule.window is not None
            found = self._windows.get((rule.key, rule.window))
            if found is None:
                found = self._windows[(rule.key, rule.window)] = Window(
                    rule.window, utc_offset_h=self.utc_offset_h, max_keys=self.max_keys
                )
            window = found
            taken = used.setdefault(window, set())
            slot = next(n for n in range(len(taken) + 1) if n not in taken)
            taken.add(slot)
            self._slots[counter] = (window, slot)
            fresh.append(counter)
        for name in [n for n, w in self._windows.items() if not used.get(w)]:
            del self._windows[name]
        self._plans = tuple(self._plan(scope) for scope in rules._scopes)
        return fresh

    def _plan(self, scope: _Scope, wanted: set[Counter] | None = None) -> _ScopePlan:
        plan: list[tuple[str, tuple[_Plan, ...]]] = []
        for key_name, counters in scope.velocity:
            by_window: dict[Window, tuple[list[int], list[int], list[_Check]]] = {}
            for counter, attempts, rules in counters:
                if wanted is not None and counter not in wanted:
                    continue
                window, slot = self._slots[counter]
                tries, approved, checks = by_window.setdefault(window, ([], [], []))
                (tries if attempts else approved).append(slot)
                checks.append((SLOT_BITS * slot, rules))
            if by_window:
                plan.append((key_name, tuple(
                    (window, slot_factor(tries), slot_factor(approved), tuple(approved),
                     tuple(checks))
                    for window, (tries, approved, checks) in by_window.items()
                )))  # fmt: skip
        return tuple(plan)

    def window(self, rule_id: str) -> WindowView:
        """The window a velocity rule counts in."""
        rule = self.rules.get(rule_id)
        if rule is None or rule.kind != "velocity":
            raise KeyError(rule_id)
        view = self._views.get(rule.counter)
        if view is None:
            view = self._views[rule.counter] = WindowView(*self._slots[rule.counter])
        return view

    # evaluation

    def evaluate(self, request: RiskRequest, now: float) -> Verdict:
        """Every rule in the request's scope, counted as risk.md says: ``attempts``
        windows count it whatever happens; ``approved`` ones reserve it unless an
        ``enforce`` rule declines it (the verdict's ``hold``)."""
        rules = self.rules
        if not rules.rules:
            return APPROVE
        scope_index = _SCOPE_INDEX[(request.channel, request.funding, request.kind)]
        hits: list[Rule] = []
        checked = _blocklists(rules, request, scope_index, hits)
        reserve: list[tuple[Window, str, int, tuple[int, ...]]] = []
        if not request.completion:
            checked += self._others(
                rules._scopes[scope_index], self._plans[scope_index], request, now, hits,
                reserve,
            )  # fmt: skip
        if len(hits) > 1:
            hits.sort(key=_ORDER)
        decider = None
        for rule in hits:
            if rule.decides:
                decider = rule
                break
        hold = None
        if reserve and decider is None:
            entries: list[tuple[Window, str, int, tuple[int, ...]]] = []
            entry = ENTRY + request.amount
            for window, key, factor, slots in reserve:
                index = window.add_packed(key, now, entry * factor, now)
                if index is not None:
                    entries.append((window, key, index, slots))
            if entries:
                hold = Hold(entries, request.amount)
        if not hits:
            return Verdict(outcome="approve", version=rules.version, checked=checked, hold=hold)
        counts = self._hits
        for rule in hits:
            counts[rule.id] = counts.get(rule.id, 0) + 1
        every = tuple(Hit(r.id, r.mode, r.action, r.code) for r in hits)
        shadow = tuple(hit for rule, hit in zip(hits, every, strict=True) if rule.shadow)
        review = tuple(r.id for r in hits if not r.shadow and r.action == "review")
        if decider is not None:
            return Verdict(
                outcome="decline",
                code=decider.code,
                rule=decider.id,
                review=review,
                shadow=shadow,
                hits=every,
                version=rules.version,
                checked=checked,
            )
        return Verdict(
            outcome="review" if review else "approve",
            review=review,
            shadow=shadow,
            hits=every,
            version=rules.version,
            checked=checked,
            hold=hold,
        )

    def _others(
        self,
        scope: _Scope,
        plan: _ScopePlan,
        request: RiskRequest,
        now: float,
        hits: list[Rule],
        reserve: list[tuple[Window, str, int, tuple[int, ...]]],
    ) -> int:
        checked = 0
        mcc = request.mcc
        if mcc is not None:
            for rule in scope.mcc_allow:
                checked += 1
                if mcc not in rule.mccs:
                    hits.append(rule)
            for rule in scope.mcc_deny.get(mcc, ()):
                checked += 1
                hits.append(rule)
        amount = request.amount
        for rule in scope.amount_caps:
            checked += 1
            if amount > rule.max_fen:  # type: ignore[operator]
                hits.append(rule)
        entry = ENTRY + amount
        count_mask, amount_mask = _COUNT, _AMOUNT
        for key_name, windows in plan:
            key = _velocity_key(request, key_name)
            if key is None:
                continue
            for window, tries, approved, slots, checks in windows:
                if tries:  # counted whatever happens: read and count at once
                    held = window.count_packed(key, now, entry * tries)
                else:
                    held = window.peek(key, now)
                if approved:
                    reserve.append((window, key, approved, slots))
                if not held:  # nothing yet for this key: only this request counts
                    for _, group in checks:
                        checked += len(group)
                        for rule in group:
                            if rule.limit_count < 1 or amount > rule.limit_fen:
                                hits.append(rule)
                    continue
                for shift, group in checks:
                    field = held >> shift
                    count = (field >> 64 & count_mask) + 1  # counting this request
                    total = (field & amount_mask) + amount
                    checked += len(group)
                    for rule in group:
                        if count > rule.limit_count or total > rule.limit_fen:
                            hits.append(rule)
        return checked

    # counting after the fact

    def release(self, hold: Hold | None, now: float) -> None:
        """The request was declined (by its bank) or timed out: its reservation goes.
        Once only; a window that no longer holds it (left, or replaced) is untouched."""
        if hold is None or hold.spent:
            return
        hold.spent = True
        for window, key, index, slots in hold.entries:
            window.take(key, index, hold.amount, now, slots)

    def remove(self, original: RiskRequest, received: float, now: float) -> int:
        """An approved original was voided, reversed or expired: it leaves the
        ``approved`` windows that still hold it (never the ``attempts`` ones). Returns
        how many windows it left."""
        if original.completion or not self.rules.rules:
            return 0
        plan = self._plans[_SCOPE_INDEX[(original.channel, original.funding, original.kind)]]
        taken = 0
        for key_name, windows in plan:
            key = _velocity_key(original, key_name)
            if key is None:
                continue
            for window, _, approved, slots, _ in windows:
                if approved:
                    index = window.index(min(received, now))
                    taken += window.take(key, index, original.amount, now, slots)
        return taken

    def _counters(self, rule_ids: Iterable[str] | None) -> set[Counter]:
        if rule_ids is None:
            return set(self._slots)
        wanted = (self.rules.get(rule_id) for rule_id in rule_ids)
        return {rule.counter for rule in wanted if rule is not None and rule.kind == "velocity"}

    def history_since(self, now: float, rule_ids: Iterable[str] | None = None) -> float:
        """The earliest receipt time a rebuild at ``now`` needs (for the named velocity
        rules, or all): what came before has left every window."""
        earliest = now
        for counter in self._counters(rule_ids):
            window = self._slots[counter][0]
            earliest = min(earliest, window.floor(now) * window.bucket_s - window.shift_s)
        return float(earliest)

    def rebuild(
        self,
        events: Iterable[PastRequest],
        now: float,
        *,
        rule_ids: Iterable[str] | None = None,
        until: float | None = None,
    ) -> int:
        """Counts past requests into the windows of ``rule_ids`` (all when None), as
        evaluation would have: ``attempts`` windows every request in scope, ``approved``
        ones those that stand. Requests received at or after ``until`` are skipped
        (counted live since a reload). Returns the number of entries counted."""
        wanted = self._counters(rule_ids)
        if not wanted:
            return 0
        # Per scope, once: the wanted counters' windows by key and their slot factors.
        plans = [
            self._plan(scope, wanted) if rule_ids is not None else self._plans[index]
            for index, scope in enumerate(self.rules._scopes)
        ]
        counted = 0
        batch: dict[Window, list[tuple[str, float, int]]] = {}
        held = 0
        for event in events:
            request = event.request
            received = event.received
            if request.completion or (until is not None and received >= until):
                continue
            stands = event.outcome == "approved"
            entry = ENTRY + request.amount
            for key_name, windows in plans[
                _SCOPE_INDEX[(request.channel, request.funding, request.kind)]
            ]:
                key = _velocity_key(request, key_name)
                if key is None:
                    continue
                for window, tries, approved, _, checks in windows:
                    factor = tries + approved if stands else tries
                    if factor:
                        entries = batch.get(window)
                        if entries is None:
                            entries = batch[window] = []
                        entries.append((key, received, entry * factor))
                        held += len(checks)
            if held >= REBUILD_BATCH:
                counted += sum(window.load_packed(e, now) for window, e in batch.items())
                batch.clear()
                held = 0
        counted += sum(window.load_packed(e, now) for window, e in batch.items())
        return counted

    # reload

    def apply(self, new: RuleSet, now: float) -> Reload:
        """Swaps ``new`` in whole, between requests. A velocity rule whose counter (key,
        window, counts, scope) ran before keeps it, so a rule whose ``id``, ``kind``,
        ``key``, ``window``, ``counts`` and scope are unchanged keeps its counts; the
        others start empty and are named in ``rebuild`` (with ``since`` and ``until``:
        the requests to count with :meth:`rebuild`)."""
        added, removed, changed, kept = diff(self.rules, new)
        fresh = set(self._layout(new))
        rebuild = [rule.id for rule in new.velocity_rules() if rule.counter in fresh]
        self.rules = new
        self._hits = {rule_id: n for rule_id, n in self._hits.items() if new.get(rule_id)}
        return Reload(
            version=new.version,
            added=tuple(added),
            removed=tuple(removed),
            changed=tuple(changed),
            kept=tuple(kept),
            rebuild=tuple(rebuild),
            since=self.history_since(now, rebuild) if rebuild else now,
            until=now,
        )

    def statistics(self) -> dict[str, object]:
        return {
            "version": self.rules.version,
            "rules": len(self.rules),
            "hits": dict(self._hits),
            "windows": {
                rule.id: self._slots[rule.counter][0].statistics()
                for rule in self.rules.velocity_rules()
            },
        }


def _blocklists(rules: RuleSet, request: RiskRequest, scope_index: int, hits: list[Rule]) -> int:
    """The blocklist rules whose list holds one of the request's values: one dict look-up
    a key (a card: one a look-up key; a BIN: one a prefix length), whatever the lists'
    sizes. Returns how many rules were looked at."""
    found: list[Rule] = []
    blocks = rules._blocks
    if blocks:
        for key, value in _key_values(request):
            table = blocks.get(key)
            if table is not None and value is not None:
                listed = table.get(value)
                if listed:
                    found.extend(listed)
        cards = blocks.get("card")
        if cards is not None:
            for card_hash in request.card:
                listed = cards.get(card_hash)
                if listed:
                    found.extend(listed)
    if rules._bin_lengths and request.funding in CARD_FUNDING:
        pan = request.pan_prefix[:MAX_BIN_DIGITS]
        for length, table in zip(rules._bin_lengths, rules._bins, strict=True):
            if length > len(pan):
                break
            listed = table.get(pan[:length])
            if listed:
                found.extend(listed)
    for rule in found:
        if rule.in_scope(scope_index) and rule not in hits:
            hits.append(rule)
    return len(found)


def _order(rule: Rule) -> int:
    return rule.order


_ORDER: Final = _order


def _key_values(request: RiskRequest) -> tuple[tuple[str, str | None], ...]:
    """The request's value for each blocklist key but ``card`` and ``bin`` (looked up
    apart: a card has one hash per look-up key, a BIN one prefix per length)."""
    return (
        ("terminal", _terminal(request)),
        ("merchant", request.merchant_id or None),
        ("customer", request.customer_id),
        ("device", request.device_id),
    )


def _terminal(request: RiskRequest) -> str | None:
    if not request.terminal_id:
        return None
    return f"{request.merchant_id}/{request.terminal_id}"


def _velocity_key(request: RiskRequest, key: str) -> str | None:
    if key == "card":
        return request.card[0] if request.card else None
    if key == "terminal":
        return _terminal(request)
    if key == "merchant":
        return request.merchant_id or None
    if key == "customer":
        return request.customer_id
    if key == "device":
        return request.device_id
    raise ValueError(f"no velocity key {key!r}")


# -- card hashes -----------------------------------------------------------------------


def card_hash(lookup_key: bytes, pan: str) -> str:
    """A card's look-up hash (security.md): HMAC-SHA256 under the look-up key of the
    card number's digits in ASCII, 64 lowercase hexadecimal characters."""
    if not pan.isascii() or not pan.isdigit():
        raise ValueError("a card number is digits only")
    return hmac.new(lookup_key, pan.encode("ascii"), hashlib.sha256).hexdigest()


def card_hashes(lookup_keys: Sequence[bytes], pan: str) -> tuple[str, ...]:
    """The card's hash under each look-up key held, the active key's first
    (:attr:`RiskRequest.card`): a listed hash matches under any of them."""
    return tuple(card_hash(key, pan) for key in lookup_keys)
