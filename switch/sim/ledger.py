"""The simulated bank's decisions and ledger, as plain Python (no I/O, no trio).

:class:`SimulatedBank` takes one decoded bank-h2h.md request (its MTI and fields) and the
state of the link it came on (:class:`LinkSession`, owned by the server) and returns the
response to send, or None when the bank must never answer. All money is in fen.

Test hooks, chosen by the last two digits of a sale's amount in fen: 05, 51, 54 and 61
decline the sale with that response code; 68 makes the bank never answer it. A payment
to a card (credit.md, 0200 with 3 = 280030) takes the same hooks, and 12 besides (the
bank takes no payments to that card); else it is applied: the card's balance grows by
its amount, a reversal takes it back, and it clears as a ``C`` record. A sale or
balance inquiry whose 14 is before the bank's current month is declined 54. Anything
else is approved while the card's balance allows. Void, refund and reversal ignore
these hooks.

Transactions are keyed like the bank-h2h.md field 90 that refers back to them:
(PAN, 11, 7, 32, 33), with 32 and 33 zero-padded on the left to 11 digits (an absent
33 is eleven zeros). The MTI of field 90 is not part of the key: a sale, a void and a
refund are all 0200s and their keys never collide, because each has its own 11/7.
A reversal without a card number (neither 2 nor 35: the switch reverses a record of
the bank's clearing file that it never sent, so it never had the card) names its
original by (37, 11, 7, 32, 33) instead: 37 and field 90 without its MTI.

Clearing (settlement.md, bank-h2h.md "Cutover and clearing"): every approved sale,
void and refund and every applied reversal becomes a detail record of the open
business date. A cutover (0800, 70 = 201, 15 = the date closed) is answered 00 and
hands the server that date's clearing file to deliver (:class:`ClearingDelivery`);
the next date opens at once. ``clearing_faults`` (settable at any time) makes the
file wrong on purpose.

Pre-authorisations (0100, risk.md): an approved one holds its amount on the card (the
available balance is reduced by every open hold); its void or reversal releases the
hold; a completion (0200 with 25 = 06 naming it in 90) releases it and charges its own
amount; a completion's void or reversal holds it again. Holds and their voids are in
no clearing file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Final, Literal

import msgspec

from switch.config import ClearingFaults, SimulatorSection
from switch.core import bank as bankmsg
from switch.core import products
from switch.core.calendar import date_from_mmdd, mmdd
from switch.core.model import mask_pan
from switch.core.validate import luhn_valid
from switch.security import algorithms as alg
from switch.security.errors import SecurityError
from switch.wire.clearing import (
    ClearingHeader,
    ClearingRecord,
    Direction,
    encode_header,
    encode_record,
    encode_trailer,
    trailer_totals,
)

FieldValues = Mapping[int, str | bytes]
TxKey = tuple[str, str, str, str, str]
"""(PAN, STAN, transmission date-time, acquirer id, forwarding id) of one transaction."""
Reference = tuple[str, str, str, str, str]
"""(RRN, STAN, transmission date-time, acquirer id, forwarding id): a transaction as a
reversal without a card names it."""

ECHOED_FIELDS: Final = (2, 3, 4, 7, 11, 32, 37, 41, 42, 49)
"""What every response copies from its request (bank-h2h.md, "Messages")."""

_FINANCIAL_FIELDS: Final = (3, 4, 7, 11, 12, 13, 22, 25, 32, 37, 41, 42, 49)
_REVERSAL_FIELDS: Final = (3, 4, 7, 11, 32, 37, 41, 42, 49, 90)
_NETWORK_FIELDS: Final = (7, 11, 70)

SIGN_ON: Final = "001"
SIGN_OFF: Final = "002"
KEY_CHANGE: Final = "101"
PIN_TRIES: Final = 3
"""Wrong PINs in a row after which a card is refused 75 (the third is answered 75)."""
CUTOVER: Final = "201"
ECHO_TEST: Final = "301"

HOOK_DECLINES: Final = frozenset({"05", "51", "54", "61"})
HOOK_NO_ANSWER: Final = "68"
HOOK_NO_PAYMENTS: Final = "12"
"""A payment to a card whose amount ends in 12 is refused 12 (no payments to it)."""

_ID_WIDTH: Final = 11
_ORIGINAL_DATA_WIDTH: Final = 42

EXTRA_TERMINAL: Final = "SIMPOS01"
EXTRA_MERCHANT: Final = "SIMMERCHANT0001"
EXTRA_BIN: Final = "622202"
"""The sales a ``clearing_faults.extra_records`` bank adds: a terminal, merchant and
card range of its own; their RRNs begin with S, which the switch's (all digits) never
do."""


class LinkKeys:
    """A link's ZPK and ZAK at the bank. The simulator is the bank: it holds them in the
    clear, in memory only, and never logs them."""

    __slots__ = ("_zak", "_zpk")

    def __init__(self, zpk: bytes, zak: bytes) -> None:
        self._zpk = zpk
        self._zak = alg.X919Key(zak)

    def __repr__(self) -> str:
        return "LinkKeys(<hidden>)"

    def mac(self, mab: bytes) -> bytes:
        return self._zak.mac(mab)

    def pin(self, block: bytes, pan: str) -> str:
        """The PIN of a format 0 block under the ZPK (SecurityError if it is none)."""
        return alg.pin_from_clear_block(alg.ecb_decrypt("3des", self._zpk, block), pan)


class LinkSession:
    """What the bank knows about one TCP link: whether it has signed on, and its keys
    since its latest key change."""

    __slots__ = ("keys", "signed_on")

    def __init__(self) -> None:
        self.signed_on = False
        self.keys: LinkKeys | None = None


class ClearingDelivery(msgspec.Struct, frozen=True):
    """A clearing file to deliver once its cutover has been answered."""

    business_date: date
    data: bytes


class BankReply(msgspec.Struct, frozen=True):
    """A response for the codec to encode: its MTI and field values, and for a
    cutover the clearing file to deliver after it."""

    mti: str
    fields: dict[int, str | bytes]
    clearing: ClearingDelivery | None = None

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

    - ``payments``, ``reversed_payments``: payments to cards applied (credit.md), and
      those undone by a reversal; not in ``net``.

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
    payments: int = 0
    reversed_payments: int = 0
    net: int = 0
    approvals: int = 0
    voids: int = 0
    refunds: int = 0
    declines: int = 0
    reversals: int = 0
    unmatched_reversals: int = 0


class _Hold:
    """An approved pre-authorisation: its amount held on the card while ``open``."""

    __slots__ = ("amount", "pan", "reversed", "state")

    def __init__(self, pan: str, amount: int) -> None:
        self.pan = pan
        self.amount = amount
        self.state: Literal["open", "voided", "completed"] = "open"
        self.reversed = False


class _HoldVoid:
    """An approved pre-authorisation void."""

    __slots__ = ("hold", "reversed")

    def __init__(self, hold: _Hold) -> None:
        self.hold = hold
        self.reversed = False


class _Sale:
    __slots__ = ("amount", "hold", "pan", "refunded", "refunds", "reversed", "void")
    direction: Final = "D"

    def __init__(self, pan: str, amount: int, hold: _Hold | None = None) -> None:
        self.pan = pan
        self.amount = amount
        self.hold = hold
        """The pre-authorisation a completion completed (held again while the
        completion is voided or reversed)."""
        self.reversed = False
        self.void: _Adjustment | None = None
        """The void standing against this sale, if any."""
        self.refunds: list[_Adjustment] = []
        self.refunded = 0
        """The sum of the refunds standing against this sale."""

    @property
    def refundable(self) -> int:
        return self.amount - self.refunded


class _Payment(_Sale):
    """An applied payment to the card (credit.md): money in, reversible, never voided
    or refunded."""

    __slots__ = ()
    direction: Final = "C"  # type: ignore[misc]


class _Adjustment:
    """An approved void or refund of a sale."""

    __slots__ = ("amount", "kind", "reversed", "sale")
    direction: Final = "C"

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

    def __init__(
        self,
        sim: SimulatorSection,
        *,
        institution_id: str = "0",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        zmk: bytes | None = None,
    ) -> None:
        self._zmk = zmk
        """The bank's ZMK (clear: the simulator is the bank). None: no key change is
        taken and no MAC or PIN is checked."""
        self._pins = sim.pins
        self._default_pin = sim.pin
        self._wrong_pins: dict[str, int] = {}
        self.mac_failures = 0
        """Requests answered A0: their MAC did not verify."""
        self._opening_balance = sim.opening_balance
        self._currency = sim.currency
        self._institution_id = institution_id
        """The bank's own id, in its clearing files' header."""
        self._clock = clock
        """Now, timezone-aware: the year of a cutover's MMDD and a file's created time."""
        self.clearing_faults: ClearingFaults = sim.clearing
        """Read at each cutover, so a test may change it between two."""
        self._applied: dict[TxKey, _Sale | _Adjustment | _Hold | _HoldVoid] = {}
        """Every approved sale, void and refund, by its own key."""
        self._by_reference: dict[Reference, TxKey] = {}
        """The same, for reversals that carry no card."""
        self._reversed_unseen: set[TxKey] = set()
        """Keys reversed before the bank saw their original (a reversal overtook it)."""
        self._unseen_references: set[Reference] = set()
        """Cardless reversals of what the bank never saw (counted once)."""
        self._spent: dict[str, int] = {}
        """Net fen that moved from each card, by PAN."""
        self._held: dict[str, int] = {}
        """Fen held on each card by open pre-authorisations, by PAN."""
        self._auth_seq = 0
        self._totals = _Counters()
        self._open_records: list[ClearingRecord] = []
        """The open business date's clearing records, in the order applied."""
        self._carried: list[ClearingRecord] = []
        """Records a ``next_date_rrns`` fault moved out of the last file into the next;
        they are not moved again."""
        self._last_closed: date | None = None
        self._institutions = ("0" * _ID_WIDTH, "0" * _ID_WIDTH)
        """32 and 33 of the latest approved request: the acquirer whose sales an
        ``extra_records`` fault invents."""
        self._extra_seq = 0
        self.refuse_advices: str | None = sim.refuse_advices
        """Tests: answer every advice with this 39 instead of accepting it (00)."""
        self._advices: dict[Reference, str] = {}
        """Each advice's answer, by 37, 41 and 42 (bank-h2h.md: a repeat of one already
        answered gets the same answer and is applied once)."""
        self.advices_received = 0

    # -- queries -------------------------------------------------------------------

    def totals(self) -> LedgerTotals:
        return self._totals.snapshot()

    def balance(self, pan: str) -> int:
        """The card's available balance in fen (less what open holds keep)."""
        return self._opening_balance - self._spent.get(pan, 0) - self._held.get(pan, 0)

    def held(self, pan: str) -> int:
        """Fen held on the card by open pre-authorisations."""
        return self._held.get(pan, 0)

    def open_records(self) -> list[ClearingRecord]:
        """The clearing records of the open business date so far (before faults)."""
        return [*self._carried, *self._open_records]

    @property
    def last_closed(self) -> date | None:
        """The latest business date cut over."""
        return self._last_closed

    # -- requests ------------------------------------------------------------------

    def respond(
        self,
        mti: str,
        fields: FieldValues,
        link: LinkSession,
        *,
        keys: LinkKeys | None = None,
    ) -> BankReply | None:
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
            if mti in ("0200", "0100"):
                return self._financial(mti, reply_mti, fields, keys or link.keys)
            if mti in ("0400", "0401"):
                return self._reversal(mti, reply_mti, fields)
            if mti in ("0220", "0221"):
                return self._advice(reply_mti, fields)
        except _FormatError:
            if mti == "0200":
                self._totals.declines += 1
            return _reply(reply_mti, fields, "30")
        # An MTI this bank does not take at all is an invalid transaction (12); a known
        # MTI asking for a function the bank does not offer (an unknown processing code
        # or network management code) gets 40, function not supported.
        return _reply(reply_mti, fields, "12")

    def check_mac(
        self,
        mti: str,
        fields: FieldValues,
        message: bytes,
        link: LinkSession,
        *,
        fail: bool = False,
    ) -> BankReply | None:
        """The refusal of a request that must carry a MAC (bank-h2h.md): 91 on a link
        that has not changed its keys, A0 when its MAC does not verify (not applied);
        None when it may go on to :meth:`respond`. ``fail``: take its MAC as failing
        (a test hook: the bank's keys no longer the switch's)."""
        if self._zmk is None or mti not in bankmsg.MAC_REQUEST_MTIS or not link.signed_on:
            return None
        reply_mti = response_mti(mti)
        assert reply_mti is not None
        if link.keys is None:
            return _reply(reply_mti, fields, "91")
        split = bankmsg.split_mac(message, fields)
        if fail or split is None or not alg.macs_equal(link.keys.mac(split[0]), split[1]):
            self.mac_failures += 1
            return _reply(reply_mti, fields, "A0")
        return None

    def _key_change(self, reply_mti: str, fields: FieldValues, link: LinkSession) -> BankReply:
        """48: the new ZPK and ZAK under the ZMK with their KCVs; 00 when both KCVs
        match (the link's keys from then on), else 30."""
        field_48 = _text(fields, 48)
        if self._zmk is None or field_48 is None or len(field_48) != 80:
            return _reply(reply_mti, fields, "30", echo_70=True)
        try:
            raw = bytes.fromhex(field_48)
        except ValueError:
            return _reply(reply_mti, fields, "30", echo_70=True)
        zpk = alg.unwrap_key("3des", self._zmk, raw[:16])
        zak = alg.unwrap_key("3des", self._zmk, raw[20:36])
        if not (
            alg.macs_equal(alg.kcv("3des", zpk), raw[16:20])
            and alg.macs_equal(alg.kcv("3des", zak), raw[36:40])
        ):
            return _reply(reply_mti, fields, "30", echo_70=True)
        link.keys = LinkKeys(zpk, zak)
        return _reply(reply_mti, fields, "00", echo_70=True)

    def _pin_refused(self, fields: FieldValues, pan: str, keys: LinkKeys | None) -> str | None:
        """55 for a PIN in 52 that is not the card's (or no PIN block at all), 75 from
        the third wrong one in a row on; None when right, or when there is no 52."""
        block = fields.get(52)
        if block is None or keys is None:
            return None
        if self._wrong_pins.get(pan, 0) >= PIN_TRIES:
            return "75"
        try:
            right = isinstance(block, bytes) and alg.macs_equal(
                keys.pin(block, pan).encode(), self._pins.get(pan, self._default_pin).encode()
            )
        except SecurityError:
            right = False
        if right:
            self._wrong_pins.pop(pan, None)
            return None
        self._wrong_pins[pan] = tries = self._wrong_pins.get(pan, 0) + 1
        return "75" if tries >= PIN_TRIES else "55"

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
            link.signed_on, link.keys = True, None  # a key change must follow
        elif code == SIGN_OFF:
            link.signed_on, link.keys = False, None
        elif code == CUTOVER:
            return self._cutover(reply_mti, fields)
        elif code == KEY_CHANGE:
            return self._key_change(reply_mti, fields, link)
        elif code != ECHO_TEST:
            return _reply(reply_mti, fields, "40", echo_70=True)
        return _reply(reply_mti, fields, "00", echo_70=True)

    # -- cutover and clearing --------------------------------------------------------

    def _cutover(self, reply_mti: str, fields: FieldValues) -> BankReply:
        text = _text(fields, 15)
        now = self._clock()
        try:
            if text is None or len(text) != 4 or not text.isdigit():
                raise ValueError(text)
            closed = date_from_mmdd(text, now.date())
        except ValueError:
            return _reply(reply_mti, fields, "30", echo_70=True)
        reply = _reply(reply_mti, fields, "00", echo_70=True)
        if self._last_closed is not None and closed <= self._last_closed:
            return reply  # a repeat (or an older date): it changes nothing
        data = self._close(closed, now)
        return BankReply(reply.mti, reply.fields, ClearingDelivery(closed, data))

    def _close(self, closed: date, now: datetime) -> bytes:
        """The clearing file of ``closed``; the next date opens with nothing in it but
        what a fault moved there."""
        faults = self.clearing_faults
        moving = set(faults.next_date_rrns)
        records = list(self._carried)
        carried: list[ClearingRecord] = []
        for record in self._open_records:
            (carried if record.rrn in moving else records).append(record)
        records.extend(self._extra_sales(closed, faults.extra_records))
        dropped, bumped = set(faults.drop_rrns), set(faults.amount_rrns)
        written = [
            msgspec.structs.replace(record, amount=record.amount + 1)
            if record.rrn in bumped
            else record
            for record in records
            if record.rrn not in dropped
        ]
        count, debits, credits = trailer_totals(written)
        if faults.corrupt_trailer:
            count += 1
        header = ClearingHeader(closed, self._institution_id, now)
        self._open_records, self._carried, self._last_closed = [], carried, closed
        return b"".join(
            [
                encode_header(header),
                *map(encode_record, written),
                encode_trailer(count, debits, credits),
            ]
        )

    def _extra_sales(self, business_date: date, count: int) -> list[ClearingRecord]:
        """``count`` approved sales of this acquirer that the switch never sent, applied
        here (a reversal of one finds it) and cleared."""
        records = []
        acquirer, forwarding = self._institutions
        for _ in range(count):
            self._extra_seq += 1
            seq = self._extra_seq
            pan = _luhn_complete(f"{EXTRA_BIN}{seq:012d}")
            stan = f"{seq % 1_000_000:06d}"
            second = seq % 86_400
            transmission = (
                f"{mmdd(business_date)}{second // 3600:02d}{second // 60 % 60:02d}{second % 60:02d}"
            )
            rrn = f"S{business_date:%y%m%d}{seq % 100_000:05d}"
            amount = 1_000 + seq * 137 % 99_000
            key = (pan, stan, transmission, acquirer, forwarding)
            self._applied[key] = _Sale(pan, amount)
            self._by_reference[(rrn, stan, transmission, acquirer, forwarding)] = key
            self._move(pan, amount)
            self._totals.approved += amount
            self._totals.approvals += 1
            records.append(
                ClearingRecord(
                    mti="0200",
                    processing_code="000000",
                    stan=stan,
                    transmission=transmission,
                    rrn=rrn,
                    amount=amount,
                    currency=self._currency,
                    response_code="00",
                    auth_code=self._next_auth_code(),
                    terminal_id=EXTRA_TERMINAL,
                    merchant_id=EXTRA_MERCHANT,
                    masked_pan=mask_pan(pan),
                    direction="D",
                )
            )
        return records

    # -- 0200 ----------------------------------------------------------------------

    def _financial(
        self, mti: str, reply_mti: str, fields: FieldValues, keys: LinkKeys | None = None
    ) -> BankReply | None:
        # The product a message is, by its MTI and processing code, as the switch's own
        # table says (the simulator speaks the same bank-h2h.md).
        try:
            product = products.by_bank(mti, _required(fields, 3), _text(fields, 25))
        except products.UnknownProduct:
            self._totals.declines += 1
            return _reply(reply_mti, fields, "40")
        _require(fields, _FINANCIAL_FIELDS)
        pan = _pan(fields)
        amount = _amount(fields)
        refused = self._pin_refused(fields, pan, keys)
        if refused is not None:
            self._totals.declines += 1
            return _reply(reply_mti, fields, refused)
        if product.original == "none" and self._expired(fields):
            self._totals.declines += 1
            return _reply(reply_mti, fields, "54")
        if not product.carries_amount:
            return self._balance_inquiry(reply_mti, fields, pan)
        cleared = _clearing_fields(fields)
        key = _own_key(fields, pan)
        if product.original == "none" and product.counts == "credit":
            code = self._payment(key, pan, amount)
        elif product.original == "none":
            code = self._sale(key, pan, amount, hold=product.holds)
        else:
            original = _original_key(fields, pan)
            if product.reserves == "hold":
                apply = self._complete
            elif product.reserves == "whole":
                holds = isinstance(self._applied.get(original), _Hold)
                apply = self._release if holds else self._void
            else:
                apply = self._refund
            code = apply(key, original, amount)
        if code is None:
            return None
        if code != "00":
            self._totals.declines += 1
            return _reply(reply_mti, fields, code)
        # The settlement date is the request's transmission date (field 7's MMDD): a
        # simulator has no business day of its own, and this keeps replies repeatable.
        auth_code = self._next_auth_code()
        extra = {38: auth_code, 15: _required(fields, 7)[:4]}
        self._by_reference[(cleared.rrn, *key[1:])] = key
        self._institutions = (key[3], key[4])
        if mti == "0200":  # a 0100 (a hold, its void) is in no clearing file
            direction: Direction = "D" if product.counts == "debit" else "C"
            self._open_records.append(cleared.record("0200", amount, auth_code, pan, direction))
        return _reply(reply_mti, fields, "00", extra=extra)

    def _expired(self, fields: FieldValues) -> bool:
        """Whether the expiry in 14 (YYMM, 20YY), when sent, is before this month by the
        bank's own date; 14 that is not YYMM is a format error."""
        expiry = _text(fields, 14)
        if expiry is None:
            return False
        expiry = _digits(expiry, 14)
        if len(expiry) != 4 or not 1 <= int(expiry[2:]) <= 12:
            raise _FormatError("field 14 is not YYMM")
        today = self._clock()
        return (2000 + int(expiry[:2]), int(expiry[2:])) < (today.year, today.month)

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

    def _sale(self, key: TxKey, pan: str, amount: int, *, hold: bool = False) -> str | None:
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
        if hold:
            self._applied[key] = _Hold(pan, amount)
            self._held[pan] = self._held.get(pan, 0) + amount
            return "00"
        sale = _Sale(pan, amount)
        self._applied[key] = sale
        self._move(pan, amount)
        self._totals.approved += amount
        self._totals.approvals += 1
        return "00"

    def _payment(self, key: TxKey, pan: str, amount: int) -> str | None:
        """A payment to the card: its hooks (12, 05, 51, 54, 61 decline; 68 no answer),
        else the card's balance grows by ``amount``."""
        if amount <= 0:
            return "13"
        refused = self._check_new(key)
        if refused is not None:
            return refused
        hook = f"{amount % 100:02d}"
        if hook == HOOK_NO_ANSWER:
            return None
        if hook in HOOK_DECLINES or hook == HOOK_NO_PAYMENTS:
            return hook
        self._applied[key] = _Payment(pan, amount)
        self._move(pan, -amount)
        self._totals.payments += amount
        return "00"

    def _original_sale(self, original: TxKey) -> _Sale | None:
        record = self._applied.get(original)
        return record if isinstance(record, _Sale) and not isinstance(record, _Payment) else None

    def _release(self, key: TxKey, original: TxKey, amount: int) -> str:
        """A pre-authorisation void: the hold of an open one is released."""
        hold = self._applied.get(original)
        if not isinstance(hold, _Hold):
            return "25"
        if hold.reversed or hold.state != "open":
            return "12"
        if amount != hold.amount:
            return "64"
        refused = self._check_new(key)
        if refused is not None:
            return refused
        hold.state = "voided"
        self._held[hold.pan] -= hold.amount
        self._applied[key] = _HoldVoid(hold)
        return "00"

    def _complete(self, key: TxKey, original: TxKey, amount: int) -> str:
        """A completion: the hold is released and ``amount`` charged (51 if the card
        cannot bear it without the hold)."""
        hold = self._applied.get(original)
        if not isinstance(hold, _Hold):
            return "25"
        if hold.reversed or hold.state != "open":
            return "12"
        if amount <= 0:
            return "13"
        if amount > self.balance(hold.pan) + hold.amount:
            return "51"
        refused = self._check_new(key)
        if refused is not None:
            return refused
        hold.state = "completed"
        self._held[hold.pan] -= hold.amount
        completion = _Sale(hold.pan, amount, hold)
        self._applied[key] = completion
        self._move(hold.pan, amount)
        self._totals.approved += amount
        self._totals.approvals += 1
        return "00"

    def _hold_again(self, sale: _Sale) -> None:
        """A completion no longer stands (voided, reversed): its hold is back."""
        hold = sale.hold
        if hold is not None and hold.state == "completed" and not hold.reversed:
            hold.state = "open"
            self._held[hold.pan] = self._held.get(hold.pan, 0) + hold.amount

    def _complete_again(self, sale: _Sale) -> None:
        """A completion stands again (its void reversed): its hold is consumed."""
        hold = sale.hold
        if hold is not None and hold.state == "open":
            hold.state = "completed"
            self._held[hold.pan] -= hold.amount

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
        self._hold_again(sale)
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

    # -- 0220 / 0221 ---------------------------------------------------------------

    def _advice(self, reply_mti: str, fields: FieldValues) -> BankReply:
        """A sale the switch stood in for: posted as approved at its 12/13 (00), or
        refused when ``refuse_advices`` says so. Once per 37, 41 and 42."""
        _require(fields, _FINANCIAL_FIELDS)
        self.advices_received += 1
        cleared = _clearing_fields(fields)
        identity = (cleared.rrn, cleared.terminal_id, cleared.merchant_id, "", "")
        answered = self._advices.get(identity)
        if answered is not None:
            return _reply(reply_mti, fields, answered)
        if self.refuse_advices is not None:
            if self.refuse_advices not in ("91", "96"):  # those say "send it again"
                self._advices[identity] = self.refuse_advices
            return _reply(reply_mti, fields, self.refuse_advices)
        pan = _pan(fields)
        amount = _amount(fields)
        key = _own_key(fields, pan)
        sale = _Sale(pan, amount)
        self._applied[key] = sale
        self._move(pan, amount)
        self._totals.approved += amount
        self._totals.approvals += 1
        self._by_reference[(cleared.rrn, *key[1:])] = key
        self._advices[identity] = "00"
        # Listed once, as 0220, with the 11 and 7 of the send accepted (settlement.md).
        auth_code = _text(fields, 38) or ""
        self._open_records.append(cleared.record("0220", amount, auth_code, pan, "D"))
        return _reply(reply_mti, fields, "00")

    # -- 0400 / 0401 ---------------------------------------------------------------

    def _reversal(self, mti: str, reply_mti: str, fields: FieldValues) -> BankReply:
        _require(fields, _REVERSAL_FIELDS)
        cleared = _clearing_fields(fields)
        if 2 in fields or 35 in fields:
            original: TxKey | None = _original_key(fields, _pan(fields))
            reference = None
        else:
            reference = _original_reference(fields, cleared.rrn)
            original = self._by_reference.get(reference)
        record = None if original is None else self._applied.get(original)
        if isinstance(record, _Hold | _HoldVoid):
            if not record.reversed:  # a 0100's reversal: in no clearing file
                self._reverse_hold(record)
                self._totals.reversals += 1
            return _reply(reply_mti, fields, "00")
        if record is None:
            # Never seen (bank-h2h.md: answered 00 all the same). Remember it, so that
            # an original arriving after its reversal is refused rather than applied.
            if original is not None and original not in self._reversed_unseen:
                self._reversed_unseen.add(original)
                self._totals.unmatched_reversals += 1
            elif reference is not None and reference not in self._unseen_references:
                self._unseen_references.add(reference)
                self._totals.unmatched_reversals += 1
        elif not record.reversed:
            if isinstance(record, _Sale):
                self._reverse_sale(record)
                pan = record.pan
            else:
                self._reverse_adjustment(record)
                pan = record.sale.pan
            self._totals.reversals += 1
            direction: Direction = "C" if record.direction == "D" else "D"
            self._open_records.append(cleared.record(mti, record.amount, "", pan, direction))
        # The reversal undoes the whole original, whatever amount field 4 carries.
        return _reply(reply_mti, fields, "00")

    def _reverse_hold(self, record: _Hold | _HoldVoid) -> None:
        """A pre-authorisation's reversal releases an open hold (one completed stays
        completed: its completion is reversed on its own); a void's holds it again."""
        record.reversed = True
        if isinstance(record, _Hold):
            if record.state == "open":
                self._held[record.pan] -= record.amount
            return
        hold = record.hold
        if hold.state == "voided" and not hold.reversed:
            hold.state = "open"
            self._held[hold.pan] = self._held.get(hold.pan, 0) + hold.amount

    def _reverse_sale(self, sale: _Sale) -> None:
        # A reversed sale never happened, so whatever hung on it goes with it.
        if sale.void is not None:
            self._reverse_adjustment(sale.void)
        for refund in sale.refunds:
            if not refund.reversed:
                self._reverse_adjustment(refund)
        sale.reversed = True
        if isinstance(sale, _Payment):  # the money paid in leaves the card again
            self._move(sale.pan, sale.amount)
            self._totals.reversed_payments += sale.amount
            return
        self._move(sale.pan, -sale.amount)
        self._totals.reversed += sale.amount
        self._hold_again(sale)

    def _reverse_adjustment(self, adjustment: _Adjustment) -> None:
        adjustment.reversed = True
        sale = adjustment.sale
        self._move(sale.pan, adjustment.amount)
        if adjustment.kind == "void":
            sale.void = None
            self._totals.reversed_voids += adjustment.amount
            self._complete_again(sale)
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
        "payments",
        "refunded",
        "refunds",
        "reversals",
        "reversed",
        "reversed_payments",
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
        self.payments = self.reversed_payments = 0

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
            payments=self.payments,
            reversed_payments=self.reversed_payments,
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


def _original_data(fields: FieldValues) -> str:
    data = _digits(_required(fields, 90), 90)
    if len(data) != _ORIGINAL_DATA_WIDTH:
        raise _FormatError("field 90 is not 42 digits")
    return data


def _original_key(fields: FieldValues, pan: str) -> TxKey:
    """The key of the transaction that field 90 refers to."""
    data = _original_data(fields)
    return (pan, data[4:10], data[10:20], data[20:31], data[31:42])


def _original_reference(fields: FieldValues, rrn: str) -> Reference:
    """The transaction that 37 and field 90 name, for a reversal without a card."""
    data = _original_data(fields)
    return (rrn, data[4:10], data[10:20], data[20:31], data[31:42])


class _ClearingFields(msgspec.Struct, frozen=True, gc=False):
    """What a request gives its clearing record, checked before anything is applied."""

    processing_code: str
    stan: str
    transmission: str
    rrn: str
    currency: str
    terminal_id: str
    merchant_id: str

    def record(
        self, mti: str, amount: int, auth_code: str, pan: str, direction: Direction
    ) -> ClearingRecord:
        return ClearingRecord(
            mti=mti,
            processing_code=self.processing_code,
            stan=self.stan,
            transmission=self.transmission,
            rrn=self.rrn,
            amount=amount,
            currency=self.currency,
            response_code="00",
            auth_code=auth_code,
            terminal_id=self.terminal_id,
            merchant_id=self.merchant_id,
            masked_pan=mask_pan(pan),
            direction=direction,
        )


def _clearing_fields(fields: FieldValues) -> _ClearingFields:
    """3, 11, 7, 37, 49, 41 and 42 as a clearing record holds them; a value that does
    not fit its column is a format error (the h2h codec never lets one through)."""
    return _ClearingFields(
        processing_code=_fixed_digits(fields, 3, 6),
        stan=_fixed_digits(fields, 11, 6),
        transmission=_fixed_digits(fields, 7, 10),
        rrn=_column_text(fields, 37, 12),
        currency=_fixed_digits(fields, 49, 3),
        terminal_id=_column_text(fields, 41, 8),
        merchant_id=_column_text(fields, 42, 15),
    )


def _fixed_digits(fields: FieldValues, number: int, width: int) -> str:
    value = _required(fields, number)
    if len(value) != width or not (value.isascii() and value.isdigit()):
        raise _FormatError(f"field {number} is not {width} digits")
    return value


def _column_text(fields: FieldValues, number: int, width: int) -> str:
    value = _required(fields, number).rstrip(" ")
    if len(value) > width or not (value.isascii() and value.isprintable()):
        raise _FormatError(f"field {number} is not at most {width} printable characters")
    return value


def _luhn_complete(partial: str) -> str:
    """``partial`` and the check digit that makes it a valid card number."""
    return next(partial + d for d in "0123456789" if luhn_valid(partial + d))
