"""The simulated bank's decisions and ledger, as plain Python (no I/O, no trio).

:class:`SimulatedBank` takes one decoded bank-h2h.md request (its MTI and fields) and the
state of the link it came on (:class:`LinkSession`, owned by the server) and returns the
response to send, or None when the bank must never answer. All money is in fen.

Test hooks, chosen by the last two digits of a sale's amount in fen: 05, 51, 54 and 61
decline the sale with that response code; 68 makes the bank never answer it. Anything
else is approved while the card's balance allows. Void, refund and reversal ignore
these hooks.

Transactions are keyed like the bank-h2h.md field 90 that refers back to them:
(PAN, 11, 7, 32, 33), with 32 and 33 zero-padded on the left to 11 digits (an absent
33 is eleven zeros). The MTI of field 90 is not part of the key: a sale, a void and a
refund are all 0200s and their keys never collide, because each has its own 11/7.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

import msgspec

from switch.config import SimulatorSection

FieldValues = Mapping[int, str | bytes]
TxKey = tuple[str, str, str, str, str]
"""(PAN, STAN, transmission date-time, acquirer id, forwarding id) of one transaction."""

ECHOED_FIELDS: Final = (2, 3, 4, 7, 11, 32, 37, 41, 42, 49)
"""What every response copies from its request (bank-h2h.md, "Messages")."""

_FINANCIAL_FIELDS: Final = (3, 4, 7, 11, 12, 13, 22, 25, 32, 37, 41, 42, 49)
_REVERSAL_FIELDS: Final = (3, 4, 7, 11, 32, 37, 41, 42, 49, 90)
_NETWORK_FIELDS: Final = (7, 11, 70)

SIGN_ON: Final = "001"
SIGN_OFF: Final = "002"
ECHO_TEST: Final = "301"

HOOK_DECLINES: Final = frozenset({"05", "51", "54", "61"})
HOOK_NO_ANSWER: Final = "68"

_ID_WIDTH: Final = 11
_ORIGINAL_DATA_WIDTH: Final = 42


class LinkSession:
    """What the bank knows about one TCP link: whether it has signed on."""

    __slots__ = ("signed_on",)

    def __init__(self) -> None:
        self.signed_on = False


class BankReply(msgspec.Struct, frozen=True):
    """A response for the codec to encode: its MTI and field values."""

    mti: str
    fields: dict[int, str | bytes]

    @property
    def response_code(self) -> str:
        code = self.fields.get(39, "")
        return code if isinstance(code, str) else code.decode("ascii", "replace")


class LedgerTotals(msgspec.Struct, frozen=True, kw_only=True):
    """The ledger in fen, and counts, since the bank started.

    Amounts only ever grow; an undo shows up in a ``reversed_*`` amount:

    - ``approved``: every approved sale.
    - ``voided``, ``refunded``: every approved void and refund.
    - ``reversed``: sales undone by a reversal.
    - ``reversed_voids``, ``reversed_refunds``: voids and refunds undone, by a reversal of
      their own or because the sale they hung on was reversed.

    ``net`` is the money that moved from cardholders to merchants::

        net = approved - reversed - voided + reversed_voids - refunded + reversed_refunds

    Counts: ``approvals``, ``voids``, ``refunds`` are approved requests of each kind;
    ``declines`` are 0200s on a signed-on link answered other than 00 (a sale the bank
    never answers is not one); ``reversals`` are reversals that undid
    something, ``unmatched_reversals`` those whose original the bank had never seen.
    A repeated reversal counts once.
    """

    approved: int = 0
    voided: int = 0
    refunded: int = 0
    reversed: int = 0
    reversed_voids: int = 0
    reversed_refunds: int = 0
    net: int = 0
    approvals: int = 0
    voids: int = 0
    refunds: int = 0
    declines: int = 0
    reversals: int = 0
    unmatched_reversals: int = 0


class _Sale:
    __slots__ = ("amount", "pan", "refunded", "refunds", "reversed", "void")

    def __init__(self, pan: str, amount: int) -> None:
        self.pan = pan
        self.amount = amount
        self.reversed = False
        self.void: _Adjustment | None = None
        """The void standing against this sale, if any."""
        self.refunds: list[_Adjustment] = []
        self.refunded = 0
        """The sum of the refunds standing against this sale."""

    @property
    def refundable(self) -> int:
        return self.amount - self.refunded


class _Adjustment:
    """An approved void or refund of a sale."""

    __slots__ = ("amount", "kind", "reversed", "sale")

    def __init__(self, kind: Literal["void", "refund"], sale: _Sale, amount: int) -> None:
        self.kind = kind
        self.sale = sale
        self.amount = amount
        self.reversed = False


class _FormatError(Exception):
    """A request lacks a mandatory field or has one the bank cannot read: answer 30."""


class SimulatedBank:
    """An issuing bank's host: decides every request and keeps the ledger.

    One instance serves every link of a simulator; each link brings its own
    :class:`LinkSession`. Decisions take effect when :meth:`respond` returns.
    """

    def __init__(self, sim: SimulatorSection) -> None:
        self._opening_balance = sim.opening_balance
        self._currency = sim.currency
        self._applied: dict[TxKey, _Sale | _Adjustment] = {}
        """Every approved sale, void and refund, by its own key."""
        self._reversed_unseen: set[TxKey] = set()
        """Keys reversed before the bank saw their original (a reversal overtook it)."""
        self._spent: dict[str, int] = {}
        """Net fen that moved from each card, by PAN."""
        self._auth_seq = 0
        self._totals = _Counters()

    # -- queries -------------------------------------------------------------------

    def totals(self) -> LedgerTotals:
        return self._totals.snapshot()

    def balance(self, pan: str) -> int:
        """The card's available balance in fen."""
        return self._opening_balance - self._spent.get(pan, 0)

    # -- requests ------------------------------------------------------------------

    def respond(self, mti: str, fields: FieldValues, link: LinkSession) -> BankReply | None:
        """The bank's answer to one request on ``link``, or None to never answer.

        A message that is itself a response (odd third MTI digit) or has an MTI that
        cannot be read is never answered: there is nothing to address the answer to.
        """
        reply_mti = response_mti(mti)
        if reply_mti is None:
            return None
        if mti == "0800" and _text(fields, 70) == SIGN_ON:
            return self._network(reply_mti, fields, link)
        if not link.signed_on:
            return _reply(reply_mti, fields, "91")
        try:
            if mti == "0800":
                return self._network(reply_mti, fields, link)
            if mti == "0200":
                return self._financial(reply_mti, fields)
            if mti in ("0400", "0401"):
                return self._reversal(reply_mti, fields)
        except _FormatError:
            if mti == "0200":
                self._totals.declines += 1
            return _reply(reply_mti, fields, "30")
        # An MTI this bank does not take at all is an invalid transaction (12); a known
        # MTI asking for a function the bank does not offer (an unknown processing code
        # or network management code) gets 40, function not supported.
        return _reply(reply_mti, fields, "12")

    def busy(self, mti: str, fields: FieldValues) -> BankReply | None:
        """The 91 a host answers at once when it has no capacity; touches nothing."""
        reply_mti = response_mti(mti)
        return None if reply_mti is None else _reply(reply_mti, fields, "91")

    # -- network management --------------------------------------------------------

    def _network(self, reply_mti: str, fields: FieldValues, link: LinkSession) -> BankReply:
        if any(number not in fields for number in _NETWORK_FIELDS):
            return _reply(reply_mti, fields, "30", echo_70=True)
        code = _text(fields, 70)
        if code == SIGN_ON:
            link.signed_on = True
        elif code == SIGN_OFF:
            link.signed_on = False
        elif code != ECHO_TEST:
            return _reply(reply_mti, fields, "40", echo_70=True)
        return _reply(reply_mti, fields, "00", echo_70=True)

    # -- 0200 ----------------------------------------------------------------------

    def _financial(self, reply_mti: str, fields: FieldValues) -> BankReply | None:
        processing = _required(fields, 3)
        kind = processing[:2]
        if kind not in ("00", "31", "02", "20"):
            self._totals.declines += 1
            return _reply(reply_mti, fields, "40")
        _require(fields, _FINANCIAL_FIELDS)
        pan = _pan(fields)
        amount = _amount(fields)
        if kind == "31":
            return self._balance_inquiry(reply_mti, fields, pan)
        key = _own_key(fields, pan)
        if kind == "00":
            code = self._sale(key, pan, amount)
        else:
            original = _original_key(fields, pan)
            code = (self._void if kind == "02" else self._refund)(key, original, amount)
        if code is None:
            return None
        if code != "00":
            self._totals.declines += 1
            return _reply(reply_mti, fields, code)
        # The settlement date is the request's transmission date (field 7's MMDD): a
        # simulator has no business day of its own, and this keeps replies repeatable.
        extra = {38: self._next_auth_code(), 15: _required(fields, 7)[:4]}
        return _reply(reply_mti, fields, "00", extra=extra)

    def _balance_inquiry(self, reply_mti: str, fields: FieldValues, pan: str) -> BankReply:
        balance = self.balance(pan)
        sign = "C" if balance >= 0 else "D"
        # ISO 8583 additional amounts: account type 10, amount type 02 (available),
        # currency, sign, 12-digit amount.
        amounts = f"1002{self._currency}{sign}{abs(balance):012d}"
        return _reply(reply_mti, fields, "00", extra={54: amounts})

    def _check_new(self, key: TxKey) -> str | None:
        if key in self._applied:
            return "94"  # the same transaction twice: duplicate transmission
        if key in self._reversed_unseen:
            # Its reversal overtook it: the switch has given up on it, so it must never
            # take effect here.
            return "12"
        return None

    def _sale(self, key: TxKey, pan: str, amount: int) -> str | None:
        if amount <= 0:
            return "13"
        refused = self._check_new(key)
        if refused is not None:
            return refused
        hook = f"{amount % 100:02d}"
        if hook == HOOK_NO_ANSWER:
            return None
        if hook in HOOK_DECLINES:
            return hook
        if amount > self.balance(pan):
            return "51"
        sale = _Sale(pan, amount)
        self._applied[key] = sale
        self._move(pan, amount)
        self._totals.approved += amount
        self._totals.approvals += 1
        return "00"

    def _original_sale(self, original: TxKey) -> _Sale | None:
        record = self._applied.get(original)
        return record if isinstance(record, _Sale) else None

    def _void(self, key: TxKey, original: TxKey, amount: int) -> str:
        sale = self._original_sale(original)
        if sale is None:
            return "25"
        if sale.reversed or sale.void is not None or sale.refunded:
            # Already voided or reversed; a sale with standing refunds cannot be voided
            # in full either, or the refunded money would come back twice.
            return "12"
        if amount != sale.amount:
            return "64"
        refused = self._check_new(key)
        if refused is not None:
            return refused
        void = _Adjustment("void", sale, amount)
        sale.void = void
        self._applied[key] = void
        self._move(sale.pan, -amount)
        self._totals.voided += amount
        self._totals.voids += 1
        return "00"

    def _refund(self, key: TxKey, original: TxKey, amount: int) -> str:
        sale = self._original_sale(original)
        if sale is None:
            return "25"
        if sale.reversed or sale.void is not None:
            return "12"
        if amount <= 0:
            return "13"
        if amount > sale.refundable:
            return "61"
        refused = self._check_new(key)
        if refused is not None:
            return refused
        refund = _Adjustment("refund", sale, amount)
        sale.refunds.append(refund)
        sale.refunded += amount
        self._applied[key] = refund
        self._move(sale.pan, -amount)
        self._totals.refunded += amount
        self._totals.refunds += 1
        return "00"

    # -- 0400 / 0401 ---------------------------------------------------------------

    def _reversal(self, reply_mti: str, fields: FieldValues) -> BankReply:
        _require(fields, _REVERSAL_FIELDS)
        original = _original_key(fields, _pan(fields))
        record = self._applied.get(original)
        if record is None:
            # Never seen (bank-h2h.md: answered 00 all the same). Remember it, so that
            # an original arriving after its reversal is refused rather than applied.
            if original not in self._reversed_unseen:
                self._reversed_unseen.add(original)
                self._totals.unmatched_reversals += 1
        elif not record.reversed:
            if isinstance(record, _Sale):
                self._reverse_sale(record)
            else:
                self._reverse_adjustment(record)
            self._totals.reversals += 1
        # The reversal undoes the whole original, whatever amount field 4 carries.
        return _reply(reply_mti, fields, "00")

    def _reverse_sale(self, sale: _Sale) -> None:
        # A reversed sale never happened, so whatever hung on it goes with it.
        if sale.void is not None:
            self._reverse_adjustment(sale.void)
        for refund in sale.refunds:
            if not refund.reversed:
                self._reverse_adjustment(refund)
        sale.reversed = True
        self._move(sale.pan, -sale.amount)
        self._totals.reversed += sale.amount

    def _reverse_adjustment(self, adjustment: _Adjustment) -> None:
        adjustment.reversed = True
        sale = adjustment.sale
        self._move(sale.pan, adjustment.amount)
        if adjustment.kind == "void":
            sale.void = None
            self._totals.reversed_voids += adjustment.amount
        else:
            sale.refunded -= adjustment.amount
            self._totals.reversed_refunds += adjustment.amount

    # -- helpers -------------------------------------------------------------------

    def _move(self, pan: str, amount: int) -> None:
        """Records ``amount`` fen more (or, if negative, less) spent on the card."""
        self._spent[pan] = self._spent.get(pan, 0) + amount

    def _next_auth_code(self) -> str:
        self._auth_seq = self._auth_seq % 999_999 + 1
        return f"{self._auth_seq:06d}"


class _Counters:
    """The mutable twin of :class:`LedgerTotals`."""

    __slots__ = (
        "approvals",
        "approved",
        "declines",
        "refunded",
        "refunds",
        "reversals",
        "reversed",
        "reversed_refunds",
        "reversed_voids",
        "unmatched_reversals",
        "voided",
        "voids",
    )

    def __init__(self) -> None:
        self.approved = self.voided = self.refunded = 0
        self.reversed = self.reversed_voids = self.reversed_refunds = 0
        self.approvals = self.voids = self.refunds = self.declines = 0
        self.reversals = self.unmatched_reversals = 0

    def snapshot(self) -> LedgerTotals:
        net = (
            self.approved
            - self.reversed
            - self.voided
            + self.reversed_voids
            - self.refunded
            + self.reversed_refunds
        )
        return LedgerTotals(
            approved=self.approved,
            voided=self.voided,
            refunded=self.refunded,
            reversed=self.reversed,
            reversed_voids=self.reversed_voids,
            reversed_refunds=self.reversed_refunds,
            net=net,
            approvals=self.approvals,
            voids=self.voids,
            refunds=self.refunds,
            declines=self.declines,
            reversals=self.reversals,
            unmatched_reversals=self.unmatched_reversals,
        )


def response_mti(mti: str) -> str | None:
    """The response MTI of a request MTI (0200 -> 0210, 0401 -> 0410), or None when
    ``mti`` is not a request."""
    if len(mti) != 4 or not mti.isdigit() or int(mti[2]) % 2:
        return None
    return f"{mti[:2]}{int(mti[2]) + 1}0"


def _reply(
    reply_mti: str,
    fields: FieldValues,
    code: str,
    *,
    echo_70: bool = False,
    extra: Mapping[int, str] | None = None,
) -> BankReply:
    """The response: the echoed fields of the request, 39, and ``extra``."""
    values: dict[int, str | bytes] = {n: fields[n] for n in ECHOED_FIELDS if n in fields}
    if echo_70 and 70 in fields:
        values[70] = fields[70]
    values[39] = code
    if extra:
        values.update(extra)
    return BankReply(reply_mti, dict(sorted(values.items())))


def _text(fields: FieldValues, number: int) -> str | None:
    value = fields.get(number)
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value


def _required(fields: FieldValues, number: int) -> str:
    value = _text(fields, number)
    if value is None:
        raise _FormatError(f"field {number} is missing")
    return value


def _require(fields: FieldValues, numbers: tuple[int, ...]) -> None:
    for number in numbers:
        if number not in fields:
            raise _FormatError(f"field {number} is missing")


def _digits(value: str, number: int) -> str:
    value = value.strip()
    if not value.isdigit():
        raise _FormatError(f"field {number} is not numeric")
    return value


def _pan(fields: FieldValues) -> str:
    """Field 2, else the PAN part of track 2 (field 35)."""
    pan = _text(fields, 2)
    if pan is not None:
        return _digits(pan, 2)
    track = _text(fields, 35)
    if track is None:
        raise _FormatError("neither field 2 nor field 35 is present")
    for separator in ("=", "D", "d"):
        if separator in track:
            return _digits(track.split(separator, 1)[0], 35)
    raise _FormatError("field 35 has no separator")


def _amount(fields: FieldValues) -> int:
    return int(_digits(_required(fields, 4), 4))


def _institution(fields: FieldValues, number: int) -> str:
    value = _text(fields, number)
    return "0" * _ID_WIDTH if value is None else _digits(value, number).zfill(_ID_WIDTH)


def _own_key(fields: FieldValues, pan: str) -> TxKey:
    return (
        pan,
        _digits(_required(fields, 11), 11),
        _digits(_required(fields, 7), 7),
        _institution(fields, 32),
        _institution(fields, 33),
    )


def _original_key(fields: FieldValues, pan: str) -> TxKey:
    """The key of the transaction that field 90 refers to."""
    data = _digits(_required(fields, 90), 90)
    if len(data) != _ORIGINAL_DATA_WIDTH:
        raise _FormatError("field 90 is not 42 digits")
    return (pan, data[4:10], data[10:20], data[20:31], data[31:42])
