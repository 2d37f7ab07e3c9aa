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

A :class:`RiskEngine` holds the running set and the velocity windows (per rule and key
value, bucketed counts and amounts, :class:`Window`). :meth:`RiskEngine.evaluate` takes
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
import re
from collections import OrderedDict, deque
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
_VALUES_FILE = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
_COMMENT = re.compile(r"(^|\s)#.*$")

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
_RULE_PATH = re.compile(r"^\.rules\[(?P<index>\d+)\](?:\.(?P<key>[A-Za-z_]+))?(?P<rest>.*)$")


def _explain(message: str, data: bytes, source: str) -> str:
    """msgspec's ``... - at `$.rules[3].mode``` as ``file: rule 'x': key mode: ...``."""
    match = _AT.match(message)
    text, path = (match["text"], match["path"] or "") if match else (message, "")
    rule = _RULE_PATH.match(path)
    if rule is None:
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
        named = _FIELD.match(text)
        if named is None:
            return f"{source}: {name}: {text}"
        problem = "unknown key" if named["what"] == "contains unknown" else "missing key"
        return f"{source}: {name}: key {named['key']}: {problem}"
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
        "counter_identity",
        "counts_attempts",
        "decides",
        "id",
        "key",
        "kind",
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
        self.counter_identity = (
            spec.id,
            spec.kind,
            spec.key,
            spec.window,
            spec.counts,
            frozenset(channels),
            frozenset(fundings),
            frozenset(kinds),
        )
        """What must stay unchanged for the rule to keep its counters across a reload."""

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
        self.velocity: tuple[tuple[str, tuple[Rule, ...]], ...] = ()


class RuleSet:
    """A checked, compiled rules file: immutable, swapped whole on reload."""

    __slots__ = ("_bin_lengths", "_bins", "_blocks", "_scopes", "rules", "source", "version")

    def __init__(self, rules: Sequence[Rule], *, version: str, source: str = "") -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
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
            groups: dict[str, list[Rule]] = {}
            for rule in mine:
                if rule.kind == "velocity":
                    assert rule.key is not None
                    groups.setdefault(rule.key, []).append(rule)
            scope.velocity = tuple((key, tuple(rules)) for key, rules in groups.items())
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
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        return None

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
            shown = "a value" if spec.key == "card" and len(value) >= 12 else repr(value)
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
    amount); given back once at most."""

    __slots__ = ("amount", "entries", "spent")

    def __init__(self, entries: list[tuple[Window, str, int]], amount: int) -> None:
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


class _Series:
    """One key value's buckets in a window, oldest first: [index, count, amount]."""

    __slots__ = ("amount", "buckets", "count")

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque()
        self.count = 0
        self.amount = 0

    def expire(self, floor: int) -> None:
        buckets = self.buckets
        while buckets and buckets[0][0] < floor:
            _, count, amount = buckets.popleft()
            self.count -= count
            self.amount -= amount

    def add(self, index: int, amount: int) -> None:
        buckets = self.buckets
        if buckets and buckets[-1][0] == index:
            bucket = buckets[-1]
            bucket[1] += 1
            bucket[2] += amount
        elif not buckets or buckets[-1][0] < index:
            buckets.append([index, 1, amount])
        else:  # out of order (a rebuild): find its place among at most 61
            for position, bucket in enumerate(buckets):
                if bucket[0] == index:
                    bucket[1] += 1
                    bucket[2] += amount
                    break
                if bucket[0] > index:
                    buckets.insert(position, [index, 1, amount])
                    break
        self.count += 1
        self.amount += amount

    def take(self, index: int, amount: int) -> bool:
        for position, bucket in enumerate(self.buckets):
            if bucket[0] == index:
                if bucket[1] <= 0:
                    return False
                taken = min(amount, bucket[2])
                bucket[1] -= 1
                bucket[2] -= taken
                self.count -= 1
                self.amount -= taken
                if bucket[1] == 0:
                    del self.buckets[position]
                return True
        return False


class Window:
    """A rule's counts and amounts per key value: rolling (buckets of W/60, kept while
    any of their moments is within W of now) or the local calendar date.

    Memory is bounded: at most 61 buckets a key value (one for ``day``), at most
    ``max_keys`` key values (past it the one counted longest ago is forgotten), and a
    key value whose buckets have all left is dropped when met, or as each new entry
    comes (two of the oldest looked at each time).
    """

    __slots__ = ("_series", "bucket_s", "evicted", "max_keys", "shift_s", "span")

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
        self._series: OrderedDict[str, _Series] = OrderedDict()

    def index(self, moment: float) -> int:
        return int((moment + self.shift_s) // self.bucket_s)

    def floor(self, now: float) -> int:
        """The oldest bucket still in the window at ``now``: bucket i holds moments up
        to (i + 1) x bucket, within W of now while i >= index(now) - 60."""
        return self.index(now) - self.span

    def totals(self, key: str, now: float) -> tuple[int, int]:
        series = self._series.get(key)
        if series is None:
            return 0, 0
        series.expire(self.floor(now))
        if not series.buckets:
            del self._series[key]
            return 0, 0
        return series.count, series.amount

    def add(self, key: str, moment: float, amount: int, now: float) -> int | None:
        """Counts one entry at ``moment``; its bucket, or None when it has left already."""
        floor = self.floor(now)
        index = self.index(min(moment, now))
        if index < floor:
            return None
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        else:
            self._series.move_to_end(key)
        series.expire(floor)
        series.add(index, amount)
        self._sweep(floor)
        return index

    def take(self, key: str, index: int, amount: int, now: float) -> bool:
        """Removes one entry of ``amount`` from bucket ``index`` if the window still
        holds it there."""
        series = self._series.get(key)
        if series is None or index < self.floor(now):
            return False
        taken = series.take(index, amount)
        if not series.buckets:
            del self._series[key]
        return taken

    def _sweep(self, floor: int) -> None:
        series = self._series
        for _ in range(2):
            oldest = next(iter(series.values()))
            if oldest.buckets and oldest.buckets[-1][0] >= floor:
                break
            series.popitem(last=False)
        while len(series) > self.max_keys:
            series.popitem(last=False)
            self.evicted += 1

    def compact(self, now: float) -> None:
        """Drops what has left and orders key values by their newest bucket (after a
        rebuild, which adds out of order)."""
        floor = self.floor(now)
        kept = []
        for key, series in self._series.items():
            series.expire(floor)
            if series.buckets:
                kept.append((series.buckets[-1][0], key, series))
        kept.sort(key=lambda item: item[0])
        self._series = OrderedDict((key, series) for _, key, series in kept)
        while len(self._series) > self.max_keys:
            self._series.popitem(last=False)
            self.evicted += 1

    def snapshot(self, now: float) -> dict[str, tuple[tuple[int, int, int], ...]]:
        """What the window holds at ``now``, key value by key value (tests, reports)."""
        floor = self.floor(now)
        return {
            key: held
            for key, series in self._series.items()
            if (held := tuple((i, c, a) for i, c, a in series.buckets if i >= floor))
        }

    def statistics(self) -> dict[str, int]:
        return {
            "keys": len(self._series),
            "buckets": sum(len(series.buckets) for series in self._series.values()),
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


def _identities(rules: RuleSet) -> dict[str, tuple[object, ...]]:
    return {rule.id: rule.counter_identity for rule in rules.rules}


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


class RiskEngine:
    """The running rule set and its windows; every method is synchronous and takes the
    time it acts at."""

    __slots__ = ("_hits", "_windows", "max_keys", "rules", "utc_offset_h")

    def __init__(
        self, rules: RuleSet, *, utc_offset_h: int = 8, max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        self.rules = rules
        self.utc_offset_h = utc_offset_h
        self.max_keys = max_keys
        self._windows: dict[str, Window] = {
            rule.id: self._window(rule) for rule in rules.velocity_rules()
        }
        self._hits: dict[str, int] = {}

    def _window(self, rule: Rule) -> Window:
        assert rule.window is not None
        return Window(rule.window, utc_offset_h=self.utc_offset_h, max_keys=self.max_keys)

    def window(self, rule_id: str) -> Window:
        return self._windows[rule_id]

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
        checked = self._blocklists(rules, request, scope_index, hits)
        counted: list[tuple[Rule, Window, str]] = []
        if not request.completion:
            checked += self._others(rules._scopes[scope_index], request, now, hits, counted)
        hits.sort(key=lambda rule: rule.order)
        decider = next((rule for rule in hits if rule.decides), None)
        hold = None
        entries: list[tuple[Window, str, int]] = []
        for rule, window, key in counted:
            if rule.counts_attempts:
                window.add(key, now, request.amount, now)
            elif decider is None:
                index = window.add(key, now, request.amount, now)
                if index is not None:
                    entries.append((window, key, index))
        if entries:
            hold = Hold(entries, request.amount)
        for rule in hits:
            self._hits[rule.id] = self._hits.get(rule.id, 0) + 1
        shadow = tuple(Hit(r.id, r.mode, r.action, r.code) for r in hits if r.shadow)
        review = tuple(r.id for r in hits if not r.shadow and r.action == "review")
        every = tuple(Hit(r.id, r.mode, r.action, r.code) for r in hits)
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

    @staticmethod
    def _blocklists(
        rules: RuleSet, request: RiskRequest, scope_index: int, hits: list[Rule]
    ) -> int:
        checked = 0
        blocks = rules._blocks
        found: list[Rule] = []
        if blocks:
            for key, value in _key_values(request):
                table = blocks.get(key)
                if table is None or value is None:
                    continue
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
            checked += 1
            if rule.in_scope(scope_index) and rule not in hits:
                hits.append(rule)
        return checked

    def _others(
        self,
        scope: _Scope,
        request: RiskRequest,
        now: float,
        hits: list[Rule],
        counted: list[tuple[Rule, Window, str]],
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
        for key_name, group in scope.velocity:
            key = _velocity_key(request, key_name)
            if key is None:
                continue
            for rule in group:
                checked += 1
                window = self._windows[rule.id]
                count, total = window.totals(key, now)
                if (rule.max_count is not None and count + 1 > rule.max_count) or (
                    rule.max_fen is not None and total + amount > rule.max_fen
                ):
                    hits.append(rule)
                counted.append((rule, window, key))
        return checked

    # counting after the fact

    def release(self, hold: Hold | None, now: float) -> None:
        """The request was declined (by its bank) or timed out: its reservation goes.
        Once only; a window that no longer holds it (left, or replaced) is untouched."""
        if hold is None or hold.spent:
            return
        hold.spent = True
        for window, key, index in hold.entries:
            window.take(key, index, hold.amount, now)

    def remove(self, original: RiskRequest, received: float, now: float) -> int:
        """An approved original was voided, reversed or expired: it leaves the
        ``approved`` windows that still hold it (never the ``attempts`` ones). Returns
        how many windows it left."""
        if original.completion or not self.rules.rules:
            return 0
        scope = self.rules._scopes[
            _SCOPE_INDEX[(original.channel, original.funding, original.kind)]
        ]
        taken = 0
        for key_name, group in scope.velocity:
            key = _velocity_key(original, key_name)
            if key is None:
                continue
            for rule in group:
                if rule.counts_attempts:
                    continue
                window = self._windows[rule.id]
                taken += window.take(key, window.index(min(received, now)), original.amount, now)
        return taken

    def history_since(self, now: float, rule_ids: Iterable[str] | None = None) -> float:
        """The earliest receipt time a rebuild at ``now`` needs (of the named velocity
        rules, or all): what came before has left every window."""
        earliest = now
        wanted = None if rule_ids is None else set(rule_ids)
        for rule_id, window in self._windows.items():
            if wanted is None or rule_id in wanted:
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
        wanted = set(self._windows) if rule_ids is None else set(rule_ids) & set(self._windows)
        if not wanted:
            return 0
        scopes = self.rules._scopes
        counted = 0
        for event in events:
            request = event.request
            if request.completion or (until is not None and event.received >= until):
                continue
            scope = scopes[_SCOPE_INDEX[(request.channel, request.funding, request.kind)]]
            stands = event.outcome == "approved"
            for key_name, group in scope.velocity:
                key = _velocity_key(request, key_name)
                if key is None:
                    continue
                for rule in group:
                    if rule.id not in wanted or not (stands or rule.counts_attempts):
                        continue
                    window = self._windows[rule.id]
                    if window.add(key, event.received, request.amount, now) is not None:
                        counted += 1
        for rule_id in wanted:
            self._windows[rule_id].compact(now)
        return counted

    # reload

    def apply(self, new: RuleSet, now: float) -> Reload:
        """Swaps ``new`` in whole, between requests. A velocity rule whose counter
        identity is unchanged keeps its window; the others start empty and are named in
        ``rebuild`` (with ``since``/``until``: the requests to count, :meth:`rebuild`)."""
        added, removed, changed, kept = diff(self.rules, new)
        old_identity = _identities(self.rules)
        windows: dict[str, Window] = {}
        rebuild: list[str] = []
        for rule in new.velocity_rules():
            window = self._windows.get(rule.id)
            if window is not None and old_identity.get(rule.id) == rule.counter_identity:
                windows[rule.id] = window
            else:
                windows[rule.id] = self._window(rule)
                rebuild.append(rule.id)
        self.rules = new
        self._windows = windows
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
            "windows": {rule_id: w.statistics() for rule_id, w in self._windows.items()},
        }


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
