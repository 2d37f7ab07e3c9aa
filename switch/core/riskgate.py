"""The risk rules between the transaction lifecycle and the engine (risk.md), sans-IO.

:class:`RiskGate` holds the running :class:`~switch.core.risk.RiskEngine` and what the
operator reads of it: hits per rule, mode and action (the metric), hits per rule on the
local date (``/status``) and the evaluation times (the histogram); the last hits are
the journal's (``switch risk hits``). The lifecycle hands it a request at one point,
after routing and the look-up of any original and before anything goes to a bank
(:meth:`RiskGate.evaluate`); a decline's hold is never made, an approval's hold is given
back when the request ends without standing (:meth:`RiskGate.release`) and an approved
original leaves the ``approved`` windows when it is voided or reversed
(:meth:`RiskGate.remove`). :meth:`RiskGate.past` turns a journal row back into what a
rebuild counts. Nothing here reads a file, a socket or the business clock: times are
given; the evaluation's duration is measured with the timer it is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Literal

import msgspec

from switch.core import products
from switch.core.book import TxnRecord
from switch.core.model import BankBound
from switch.core.risk import (
    CARD_FUNDING,
    MAX_BIN_DIGITS,
    Funding,
    Hit,
    Hold,
    PastRequest,
    Reload,
    RiskEngine,
    RiskRequest,
    RuleSet,
    Verdict,
)

EVALUATION_BUCKETS_S: Final = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01)
"""The evaluation-time histogram's upper bounds (seconds)."""
MESSAGES: Final = {
    "61": "exceeds amount limit",
    "65": "exceeds frequency limit",
    "57": "transaction not permitted",
    "59": "suspected fraud",
    "62": "restricted card",
}
"""What a client is told of a rule's decline: the code's meaning, never the rule."""
ONUS_FUNDING: Final = frozenset({"wallet", "credit"})
"""The fundings of an on-us payment (wallet.md), named by its payment code."""


class RiskEvent(msgspec.Struct, frozen=True, kw_only=True):
    """What the rules saw of an app desk request that has no journal row (risk.md:
    ``wallet_withdraw``, kind ``withdrawal``; ``credit_convert``, kind ``conversion``),
    kept in the ledger's database in the same transaction as its step: what a rebuild
    and the other workers count (:meth:`RiskGate.past_event`) and what ``switch risk
    hits`` lists."""

    worker: int
    """The worker slot that judged it (its own windows counted it live)."""
    kind: str
    channel: str
    funding: str
    customer_id: str
    device_id: str | None
    amount: int
    received_at: float
    """Business time, epoch seconds: when its windows count it."""
    outcome: Literal["approved", "declined"]
    code: str | None
    """The answer's response code (None: approved)."""
    risk_version: str
    risk_rule: str | None = None
    risk_review: str | None = None
    risk_shadow: str | None = None
    online_id: str
    rrn: str = ""
    written_at: float
    """Wall time, stamped just before its commit: how the other workers follow."""
    id: int = 0
    """Its row's id (0: not written yet)."""


class RiskGate:
    """The running rules and their counts for the operator."""

    def __init__(
        self,
        engine: RiskEngine,
        *,
        card_hashes: Callable[[str], tuple[str, ...]],
        cobrand_bins: Sequence[str] = (),
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.engine = engine
        self.card_hashes = card_hashes
        """PAN -> its look-up hashes, the active key's first (``CardVault.card_hashes``)."""
        self.cobrand_bins = tuple(cobrand_bins)
        self.timer = timer
        self.hits: dict[tuple[str, str, str], int] = {}
        """(rule, mode, action) -> hits since start (the ``risk_hits_total`` counter)."""
        self.hits_today: dict[str, int] = {}
        self.today = -1
        self.evaluations = [0] * (len(EVALUATION_BUCKETS_S) + 1)
        self.evaluation_sum_s = 0.0
        self.reloads: dict[str, int] = {}
        """Reloads of the rules by result (``applied``, ``refused``)."""
        self.last_error: str | None = None
        """Why the last rules file read was refused (the running set stayed)."""
        self.worker = 0
        """This worker's slot: the mark on its :class:`RiskEvent` records."""
        self.removed: dict[str, float] = {}
        """RRN -> received, of the approved requests taken out of the windows (voided,
        reversed): each leaves once, whichever worker's row or act says so first."""

    @property
    def rules(self) -> RuleSet:
        return self.engine.rules

    # -- the request path ----------------------------------------------------------

    def funding(self, pan: str) -> Funding:
        """``cobrand`` for a PAN under ``[credit] cobrand_bins``, else ``card``."""
        for prefix in self.cobrand_bins:
            if pan.startswith(prefix):
                return "cobrand"
        return "card"

    def request_of(
        self, request: BankBound, pan: str, kind: str, mcc: str | None, *, completion: bool = False
    ) -> RiskRequest:
        acceptor = request.acceptor
        return RiskRequest(
            channel=acceptor.channel,
            kind=kind,  # type: ignore[arg-type]
            funding=self.funding(pan),
            amount=request.amount or 0,
            merchant_id=acceptor.merchant_id,
            terminal_id=acceptor.terminal_id if acceptor.channel == "pos" else None,
            mcc=mcc,
            card=self.card_hashes(pan),
            pan_prefix=pan[:MAX_BIN_DIGITS],
            device_id=request.device_id,
            completion=completion,
        )

    def onus_request_of(
        self, request: BankBound, kind: str, mcc: str | None, *, completion: bool = False
    ) -> RiskRequest:
        """An on-us payment's request as far as the switch knows it before its payment
        code is looked up on the ledger: :meth:`with_customer` completes it there. No
        ``card`` and no ``bin``: a payment code is not a card (risk.md)."""
        acceptor = request.acceptor
        return RiskRequest(
            channel=acceptor.channel,
            kind=kind,  # type: ignore[arg-type]
            funding="wallet",
            amount=request.amount or 0,
            merchant_id=acceptor.merchant_id,
            terminal_id=acceptor.terminal_id if acceptor.channel == "pos" else None,
            mcc=mcc,
            device_id=request.device_id,
            completion=completion,
        )

    @staticmethod
    def desk_request(kind: str, amount: int, device_id: str | None) -> RiskRequest:
        """An app desk request's (risk.md: ``wallet_withdraw``, ``credit_convert``), as
        far as it is known before its step on the ledger: online, no merchant, terminal,
        MCC, card or BIN; :meth:`with_customer` completes it in the step."""
        return RiskRequest(
            channel="online",
            kind=kind,  # type: ignore[arg-type]
            funding="wallet",
            amount=amount,
            merchant_id="",
            device_id=device_id,
        )

    @staticmethod
    def with_customer(request: RiskRequest, customer_id: str, funding: str) -> RiskRequest:
        """``request`` with the customer and funding its payment code named."""
        return msgspec.structs.replace(request, customer_id=customer_id, funding=funding)

    def judge(self, request: RiskRequest, now: float) -> Verdict:
        """The verdict on ``request`` received at ``now``; its hits are counted and kept
        for the operator."""
        began = self.timer()
        verdict = self.engine.evaluate(request, now)
        self._time(self.timer() - began)
        if verdict.hits:
            self._count(verdict.hits, now)
        return verdict

    def evaluate(self, request: RiskRequest, now: float, record: TxnRecord) -> Verdict:
        """The verdict on ``request`` received at ``now``, as :meth:`judge`, written on
        ``record``."""
        verdict = self.judge(request, now)
        self.mark(record, verdict)
        return verdict

    @staticmethod
    def mark(record: TxnRecord, verdict: Verdict) -> None:
        """Writes what the journal keeps of ``verdict`` on ``record``."""
        if verdict.version:
            fields = verdict.journal_fields()
            record.risk_version = fields["risk_version"]
            record.risk_rule = fields["risk_rule"]
            record.risk_review = fields["risk_review"]
            record.risk_shadow = fields["risk_shadow"]

    def release(self, hold: Hold | None, now: float) -> None:
        self.engine.release(hold, now)

    def remove(self, original: TxnRecord, now: float) -> int:
        """An approved original that was voided or reversed leaves the ``approved``
        windows (risk.md), once; one that met no rule is in none."""
        if original.rrn in self.removed:
            return 0
        past = self.past(original)
        if past is None:
            return 0
        self.removed[original.rrn] = past.received
        return self.engine.remove(past.request, past.received, now)

    def _time(self, seconds: float) -> None:
        self.evaluation_sum_s += seconds
        for index, bound in enumerate(EVALUATION_BUCKETS_S):
            if seconds <= bound:
                self.evaluations[index] += 1
                return
        self.evaluations[-1] += 1

    def _count(self, hits: Iterable[Hit], now: float) -> None:
        day = int((now + self.engine.utc_offset_h * 3600) // 86400)
        if day != self.today:
            self.today, self.hits_today = day, {}
        for hit in hits:
            key = (hit.rule, hit.mode, hit.action)
            self.hits[key] = self.hits.get(key, 0) + 1
            self.hits_today[hit.rule] = self.hits_today.get(hit.rule, 0) + 1

    # -- the journal's rows ----------------------------------------------------------

    def past(self, record: TxnRecord) -> PastRequest | None:
        """What a rebuild counts of a journal row (None: a kind that meets no rule, or
        a row the rules never saw)."""
        try:
            row = products.product(record.kind)
        except products.UnknownProduct:
            return None
        kind = row.risk_kind
        if kind is None or row.original == "authorisation" or len(record.pan_hmac) < 2:
            return None  # a completion counts nowhere
        if row.destination == "ledger":
            if record.customer_id is None or record.funding not in ONUS_FUNDING:
                return None  # its code was not found open: refused before the rules
            funding: Funding = record.funding  # type: ignore[assignment]
            card: tuple[str, ...] = ()
        else:
            funding = (
                "cobrand"
                if any(record.pan_masked.startswith(b) for b in self.cobrand_bins if len(b) <= 6)
                else "card"
            )
            card = (record.pan_hmac[1:].hex(),)
        request = RiskRequest(
            channel=record.channel,  # type: ignore[arg-type]
            kind=kind,  # type: ignore[arg-type]
            funding=funding,
            amount=record.amount,
            merchant_id=record.merchant_id,
            terminal_id=record.terminal_id if record.channel == "pos" else None,
            card=card,
            pan_prefix=record.pan_masked[:6] if funding in CARD_FUNDING else "",
            customer_id=record.customer_id,
            device_id=record.device_id,
        )
        if record.state in ("approved", "sending"):  # in flight stands, as live
            outcome = "removed" if record.voided or record.reversed else "approved"
        else:
            outcome = "declined"
        return PastRequest(request=request, received=record.received_at, outcome=outcome)  # type: ignore[arg-type]

    @staticmethod
    def event(
        request: RiskRequest,
        verdict: Verdict,
        *,
        worker: int,
        received: float,
        approved: bool,
        code: str | None,
        online_id: str,
        rrn: str,
        written_at: float,
    ) -> RiskEvent:
        """The record of a desk request judged to ``verdict`` (``request`` as judged:
        its customer, funding and amount)."""
        fields = verdict.journal_fields()
        return RiskEvent(
            worker=worker, kind=request.kind, channel=request.channel,
            funding=request.funding, customer_id=request.customer_id or "",
            device_id=request.device_id, amount=request.amount, received_at=received,
            outcome="approved" if approved else "declined", code=None if approved else code,
            risk_version=fields["risk_version"] or "", risk_rule=fields["risk_rule"],
            risk_review=fields["risk_review"], risk_shadow=fields["risk_shadow"],
            online_id=online_id, rrn=rrn, written_at=written_at,
        )  # fmt: skip

    @staticmethod
    def past_event(event: RiskEvent) -> PastRequest:
        """What a rebuild counts of a desk request's record."""
        request = RiskRequest(
            channel=event.channel,  # type: ignore[arg-type]
            kind=event.kind,  # type: ignore[arg-type]
            funding=event.funding,  # type: ignore[arg-type]
            amount=event.amount,
            merchant_id="",
            customer_id=event.customer_id or None,
            device_id=event.device_id,
        )
        return PastRequest(request=request, received=event.received_at, outcome=event.outcome)

    def rebuild(
        self,
        records: Iterable[TxnRecord],
        now: float,
        *,
        rule_ids: Iterable[str] | None = None,
        until: float | None = None,
    ) -> int:
        events = (past for past in map(self.past, records) if past is not None)
        return self.engine.rebuild(events, now, rule_ids=rule_ids, until=until)

    def apply(self, rules: RuleSet, now: float) -> Reload:
        reload = self.engine.apply(rules, now)
        self.hits_today = {k: n for k, n in self.hits_today.items() if rules.get(k)}
        return reload

    def hits_on_day_of(self, now: float) -> dict[str, int]:
        """Each rule's hits on the local date of ``now`` (none counted yet: empty)."""
        day = int((now + self.engine.utc_offset_h * 3600) // 86400)
        return dict(self.hits_today) if day == self.today else {}

    def statistics(self) -> dict[str, object]:
        return {
            "version": self.rules.version,
            "rules": len(self.rules),
            "hits_today": dict(self.hits_today),
            "last_error": self.last_error,
        }
