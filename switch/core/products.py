"""Products as data: one row per financial product, which every part of the switch reads.

A product is what a terminal or client asks for (a sale, a balance inquiry, a void, a
refund, a terminal's reversal). Its row says how it is recognised on each wire, whether
it acts on an original and how it finds it, what it reserves on that original while the
bank decides, where it goes, which message answers it, how it counts in batch totals
and in settlement, and whether it is reversed when it gets no final answer. The POS and
online mappings (``core/pos.py``, ``core/online.py``), the lifecycle, the book, the bank
messages (``core/bank.py``), batch uploads (``core/batch.py``), the settlement SQL's
kind lists (``store/``) and the bank simulator read it; none of them names a product.

The look-ups are compiled once, at import, into dicts keyed the way each wire names a
product: the request path does dict gets, never a scan of the table.

Pure data, no I/O; it imports nothing of the switch, so every layer may import it. The
canonical request Struct of each kind is ``switch.core.model``'s (``REQUEST_TYPES``).

The pre-authorisation rows (risk.md, "Pre-authorisation and completion") use two
values of their own: ``original="authorisation"`` (a completion finds its
pre-authorisation by merchant, card, 38 and 61 on POS, by its ``original_id`` online)
and ``reserves="hold"`` (a completion takes 1 fen up to the pre-authorisation's
``completion_max_pct``, one at a time), and one column, ``holds`` (an approved
pre-authorisation is ``open`` until completed, voided, reversed or expired: the book's
rules and the expiry at the cut-off read it).

A completion (0200, 00, 25 = 06) and a sale (0200, 00, any other 25) share MTI and
processing code, on POS and towards the bank: the look-ups try the row that names 25
first, then the one that takes any 25 (two dict gets at most). A completion void is a
void to the bank (bank-h2h.md): rows may share a bank identity when they agree on what
the bank does with it, and the first declared stands for both. A completion uploads as
kind 20 (its 60.1) and settles like a sale because its ``counts`` is "debit"; a
pre-authorisation and its void count nowhere, so they are in no batch total, upload or
settlement kind list.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

import msgspec

Original = Literal["none", "reference", "trace", "authorisation"]
"""How a product finds the original it acts on: ``none`` (it acts on a card: the card
is checked, expiry included, and its BIN routes it); ``reference`` (by the original's
RRN in 37 on POS, its request id online: an approved, live transaction of one of
``original_kinds`` of the same merchant, whose bank it goes to); ``trace`` (a
terminal's reversal: the terminal's own earlier request by terminal, merchant, batch
and STAN in 61; answered 00 whatever it names); ``authorisation`` (a completion: the
pre-authorisation of the same merchant and card with 38 and 61.3, also 61.1, 61.2 and
37 when given; online by its request id)."""

Reserves = Literal["none", "whole", "remaining", "hold"]
"""What a product reserves on its original while the bank decides, and releases (or
makes final) with the answer: ``whole`` (the original itself: its amount exactly,
else 64, and nothing of it refunded, else 12; a void), ``remaining`` (part of what is
left of the original's amount, else 61; a refund), ``hold`` (an ``open``
pre-authorisation, one completion at a time: 1 fen up to its amount times its
``completion_max_pct``, else 61; not open, 12)."""

Counts = Literal["debit", "credit", "cancels", "none"]
"""How an approved, standing product counts in a terminal's batch totals (48.1-48.4),
its upload (0320) and the date's settlement: a ``debit`` (the merchant is paid it,
less the fee), a ``credit`` (it returns money), ``cancels`` (it undoes its original:
the original counts nowhere once it is approved; settled, it cancels its original
paid the same day, else returns money like a credit), or ``none`` (never paid)."""

Destination = Literal["bank", "ledger"]
"""Where a product is carried out: at a bank (its card's, or its original's), or on the
switch's own ledger (wallet.md: an on-us payment from a wallet, its void and refund),
where the switch itself decides, with no bank, link or reversal queue."""

Instrument = Literal["card", "paycode", "wallet"]
"""What names the customer on the wire: a card (2 or 35), a consumer payment code
(wallet.md: 2 = the code, 22 = ``032``), or the app's ``customer_id`` (wallet.md's
``wallet_pay``: the customer's wallet, named by the app principal; online only). On POS
a paycode product has the same MTI, 3, 25 and 60.1 as its card twin: field 2's prefix
tells them apart (``by_pos``)."""

LEDGER_BANK: Final = "on-us"
"""The ``bank`` of a ledger product's journal record (settlement.md's ``bank`` =
``on-us`` of on-us lines): no bank link, route or store-and-forward queue has it."""


class Product(msgspec.Struct, frozen=True, kw_only=True):
    """One product's row."""

    kind: str
    """Its name in the journal (``txn.kind``), the logs and the settlement SQL."""
    pos_mti: str | None = None
    """POS request MTI (pos-cup.md); None: not offered on POS."""
    pos_code: str | None = None
    """POS field 3's first two digits; None: as its original's (any)."""
    pos_condition: str | None = None
    """POS field 25 that tells it apart; None: any 25 another row does not claim."""
    pos_type: str | None = None
    """POS field 60.1; None: its original's (one of a reversible product's)."""
    online_type: str | None = None
    """The online request's ``type`` (online.md); None: not offered online."""
    bank_mti: str
    """The MTI it leaves for the bank with (bank-h2h.md)."""
    bank_code: str | None = None
    """Field 3's first two digits towards the bank (the rest is the request's own);
    None: its original's."""
    bank_condition: str | None = None
    """Field 25 that tells it apart towards the bank (a completion's 06, where a sale
    has the same MTI and 3); None: the request's own, any."""
    response_mti: str | None = None
    """The MTI that answers it on the terminal's wire (None: not offered on POS)."""
    bank_response_mti: str
    """The only MTI that answers it from the bank (bank-h2h.md): another is no final
    answer, and it is reversed."""
    original: Original = "none"
    original_kinds: tuple[str, ...] = ()
    """The kinds of original it may act on (``reference``)."""
    reserves: Reserves = "none"
    destination: Destination = "bank"
    instrument: Instrument = "card"
    counts: Counts = "none"
    carries_amount: bool = True
    """Whether the request carries an amount (POS field 4; online ``amount``, where an
    online request acting on an original may leave it out: then its original's)."""
    holds: bool = False
    """Approved, it holds its amount on the card for a completion: it is ``open`` until
    completed, voided, reversed or expired (``core/book.py``'s ``hold_state``), goes to
    its card's own bank (never a route's secondary), and at the cut-off that ends its
    ``expiry_days`` one still open is expired and reversed."""
    own_bank: bool = False
    """It goes to its card's own bank, never a route's secondary (as a hold does): a
    top-up, whose wallet credit is booked against that bank's clearing account before
    the sale leaves (wallet.md); a payment to a card, whose money is for that bank's
    card account (credit.md)."""
    sends_original_auth: bool = False
    """Towards the bank it carries its original's authorisation code in 38
    (bank-h2h.md: a pre-authorisation void, a completion)."""
    reversed_on_no_answer: bool = True
    """Whether the switch reverses it at its bank when it may have got there and got no
    final answer (and whether a terminal may reverse it: its 60.1 is one a 0400 may
    name)."""
    risk_kind: str | None = None
    """The kind the risk rules see it as (risk.md: ``sale``, ``preauth``, ...); None:
    it meets no rule (voids, refunds, balance inquiries, pre-authorisation voids). A
    completion (``original="authorisation"``) is seen as its pre-authorisation's kind
    and meets only the blocklists, counting nowhere."""

    @property
    def online_code(self) -> str:
        """Field 3 of an online request of this product (online requests carry none):
        its POS code, no account types."""
        return f"{self.pos_code}0000"


UNKNOWN_KIND: Final = "unknown"
"""The kind of a bank's record the switch never sent whose MTI and processing code name
no product (settlement reverses it, and it is journaled under this kind): no row has
it, so it is in no list of kinds that count."""


class UnknownProduct(LookupError):
    """A kind or wire identity that names no product: our own data or a peer's that
    the table does not know, never taken for another product."""


PRODUCTS: Final[dict[str, Product]] = {
    product.kind: product
    for product in (
        Product(
            kind="sale", pos_mti="0200", pos_code="00", pos_type="22", response_mti="0210",
            online_type="purchase", bank_mti="0200", bank_code="00", bank_response_mti="0210",
            counts="debit", risk_kind="sale",
        ),
        Product(
            kind="balance", pos_mti="0200", pos_code="31", pos_type="01", response_mti="0210",
            online_type="balance", bank_mti="0200", bank_code="31", bank_response_mti="0210",
            carries_amount=False,
        ),
        Product(
            kind="void", pos_mti="0200", pos_code="20", pos_type="23", response_mti="0210",
            online_type="void", bank_mti="0200", bank_code="02", bank_response_mti="0210",
            original="reference", original_kinds=("sale", "completion"), reserves="whole",
            counts="cancels",
        ),
        Product(
            kind="refund", pos_mti="0220", pos_code="20", pos_type="25", response_mti="0230",
            online_type="refund", bank_mti="0200", bank_code="20", bank_response_mti="0210",
            original="reference", original_kinds=("sale", "completion"), reserves="remaining",
            counts="credit",
        ),
        # On-us (wallet.md): a payment code's sale, void and refund, on the ledger. The
        # bank columns are their card twins' (nothing is sent: compiled into no bank
        # look-up); not reversed on no answer: a pending transfer without a journaled
        # answer is voided (core.ledger.recovery), no bank holds anything to reverse.
        Product(
            kind="onus_sale", pos_mti="0200", pos_code="00", pos_type="22",
            response_mti="0210", bank_mti="0200", bank_response_mti="0210",
            destination="ledger", instrument="paycode", counts="debit",
            reversed_on_no_answer=False, risk_kind="sale",
        ),
        Product(
            kind="onus_void", pos_mti="0200", pos_code="20", pos_type="23",
            response_mti="0210", bank_mti="0200", bank_response_mti="0210",
            original="reference", original_kinds=("onus_sale", "wallet_pay", "onus_completion"),
            reserves="whole", destination="ledger", instrument="paycode", counts="cancels",
            reversed_on_no_answer=False,
        ),
        Product(
            kind="onus_refund", pos_mti="0220", pos_code="20", pos_type="25",
            response_mti="0230", bank_mti="0200", bank_response_mti="0210",
            original="reference", original_kinds=("onus_sale", "wallet_pay", "onus_completion"),
            reserves="remaining", destination="ledger", instrument="paycode", counts="credit",
            reversed_on_no_answer=False,
        ),
        Product(
            kind="preauth", pos_mti="0100", pos_code="03", pos_condition="06", pos_type="10",
            response_mti="0110", online_type="preauth", bank_mti="0100", bank_code="03",
            bank_condition="06", bank_response_mti="0110", holds=True, risk_kind="preauth",
        ),
        Product(
            kind="preauth_void", pos_mti="0100", pos_code="20", pos_condition="06",
            pos_type="11", response_mti="0110", online_type="preauth_void", bank_mti="0100",
            bank_code="02", bank_condition="06", bank_response_mti="0110",
            original="reference", original_kinds=("preauth",), reserves="whole",
            sends_original_auth=True,
        ),
        Product(
            kind="completion", pos_mti="0200", pos_code="00", pos_condition="06",
            pos_type="20", response_mti="0210", online_type="completion", bank_mti="0200",
            bank_code="00", bank_condition="06", bank_response_mti="0210",
            original="authorisation", original_kinds=("preauth",), reserves="hold",
            counts="debit", sends_original_auth=True, risk_kind="preauth",
        ),
        Product(
            kind="completion_void", pos_mti="0200", pos_code="20", pos_condition="06",
            pos_type="21", response_mti="0210", bank_mti="0200", bank_code="02",
            bank_response_mti="0210", original="reference", original_kinds=("completion",),
            reserves="whole", counts="cancels",
        ),
        # risk.md's "On-us funding": a pre-authorisation by payment code, its void, its
        # completion and the completion's void, on the ledger (their card twins' wire
        # identities with 2 = a code, 22 = 032). The pre-authorisation's pending
        # transfer is the hold (``core/onus_hold.py``): it stands while ``open``.
        Product(
            kind="onus_preauth", pos_mti="0100", pos_code="03", pos_condition="06",
            pos_type="10", response_mti="0110", bank_mti="0100", bank_response_mti="0110",
            destination="ledger", instrument="paycode", holds=True,
            reversed_on_no_answer=False, risk_kind="preauth",
        ),
        Product(
            kind="onus_preauth_void", pos_mti="0100", pos_code="20", pos_condition="06",
            pos_type="11", response_mti="0110", bank_mti="0100", bank_response_mti="0110",
            original="reference", original_kinds=("onus_preauth",), reserves="whole",
            destination="ledger", instrument="paycode", reversed_on_no_answer=False,
        ),
        Product(
            kind="onus_completion", pos_mti="0200", pos_code="00", pos_condition="06",
            pos_type="20", response_mti="0210", bank_mti="0200", bank_response_mti="0210",
            original="authorisation", original_kinds=("onus_preauth",), reserves="hold",
            destination="ledger", instrument="paycode", counts="debit",
            reversed_on_no_answer=False, risk_kind="preauth",
        ),
        Product(
            kind="onus_completion_void", pos_mti="0200", pos_code="20", pos_condition="06",
            pos_type="21", response_mti="0210", bank_mti="0200", bank_response_mti="0210",
            original="reference", original_kinds=("onus_completion",), reserves="whole",
            destination="ledger", instrument="paycode", counts="cancels",
            reversed_on_no_answer=False,
        ),
        # credit.md's payment to a card (bank-h2h.md: 0200, 3 = 280030): the co-brand
        # conversion's payment of a sale to the card's bank for its holder. Offered on no
        # terminal wire (the app's ``cobrand_convert`` makes it, ``core/cobrand.py``);
        # settles as money returned to the card (direction C), like a refund.
        Product(
            kind="card_payment", bank_mti="0200", bank_code="28", bank_response_mti="0210",
            counts="credit", own_bank=True, risk_kind="conversion",
        ),
        Product(
            kind="reversal", pos_mti="0400", response_mti="0410", bank_mti="0400",
            bank_response_mti="0410", original="trace", reversed_on_no_answer=False,
        ),
        # wallet.md's app requests that are transactions. ``wallet_pay``: a merchant's
        # QR paid from the customer's wallet, on the ledger (the merchant voids and
        # refunds it as it does a payment-code sale: ``onus_void``, ``onus_refund``);
        # online only, by the app principal. ``wallet_topup``: a card sale of
        # ``[wallet] topup_merchant_id`` to the card's bank, a card sale in every
        # respect (the bank sees a sale: its bank identity is the sale's), seen by
        # the risk rules as a ``topup`` (risk.md); the wallet is credited beside it
        # (``switch.net.wallet``) only once its approval is journaled.
        Product(
            kind="wallet_pay", pos_code="00", online_type="wallet_pay", bank_mti="0200",
            bank_response_mti="0210", destination="ledger", instrument="wallet",
            counts="debit", reversed_on_no_answer=False, risk_kind="sale",
        ),
        Product(
            kind="wallet_topup", pos_code="00", online_type="wallet_topup", bank_mti="0200",
            bank_code="00", bank_response_mti="0210", counts="debit", risk_kind="topup",
            own_bank=True,
        ),
    )
}  # fmt: skip
"""Every product, by kind."""


def product(kind: str) -> Product:
    """The row of ``kind``; UnknownProduct if there is none (never another's)."""
    try:
        return PRODUCTS[kind]
    except KeyError:
        raise UnknownProduct(f"no product of kind {kind!r}") from None


# -- look-ups, compiled once ------------------------------------------------------------

PosKey = tuple[str, str | None, str | None]
"""(MTI, 3[:2] or None, 25 or None)."""
BankKey = tuple[str, str, str | None]
"""(MTI, 3[:2], 25 or None)."""

_BANK_EFFECT: Final = ("original", "reserves", "counts", "carries_amount")
"""What rows that share a bank identity must agree on: the bank does the same with
either (a completion void is a void to the bank)."""


def compile_pos(
    rows: Iterable[Product], instrument: Instrument = "card"
) -> dict[PosKey, Product]:
    """POS identity -> product of ``instrument``; ValueError if two rows share one."""
    compiled: dict[PosKey, Product] = {}
    for row in rows:
        if row.pos_mti is None or row.instrument != instrument:
            continue
        key = (row.pos_mti, row.pos_code, row.pos_condition)
        if key in compiled:
            raise ValueError(f"POS {key!r} names both {compiled[key].kind} and {row.kind}")
        compiled[key] = row
    return compiled


def compile_online(rows: Iterable[Product]) -> dict[str, Product]:
    """Online type -> product; ValueError if two rows share one."""
    compiled: dict[str, Product] = {}
    for row in rows:
        if row.online_type is None:
            continue
        if row.online_type in compiled:
            raise ValueError(f"online type {row.online_type!r} names two products")
        if row.pos_code is None:
            raise ValueError(f"online product {row.kind} has no processing code")
        compiled[row.online_type] = row
    return compiled


def compile_bank(rows: Iterable[Product]) -> dict[BankKey, Product]:
    """Bank identity -> product. Rows may share one only when they agree on what the
    bank does with it (``_BANK_EFFECT``): the first row declared stands for them;
    else ValueError."""
    compiled: dict[BankKey, Product] = {}
    for row in rows:
        if row.bank_code is None:
            continue
        key = (row.bank_mti, row.bank_code, row.bank_condition)
        first = compiled.setdefault(key, row)
        if any(getattr(first, name) != getattr(row, name) for name in _BANK_EFFECT):
            raise ValueError(f"bank {key!r} is {first.kind} and {row.kind}, which differ")
    return compiled


BY_POS: Final = compile_pos(PRODUCTS.values())
BY_POS_PAYCODE: Final = compile_pos(PRODUCTS.values(), "paycode")
"""POS identity -> the product of a request whose field 2 is a payment code."""
LEDGER_TWINS: Final[dict[str, Product]] = {
    BY_POS[key].kind: row for key, row in BY_POS_PAYCODE.items() if key in BY_POS
}
"""A card product's kind -> its on-us twin (same wire identity, on the ledger): what an
online void or refund, which names its original by id and carries no card, becomes when
that original is on-us (``onus_sale``)."""
POS_MTIS: Final = frozenset(row.pos_mti for row in PRODUCTS.values() if row.pos_mti)
"""The MTIs of POS financial requests."""
BY_ONLINE_TYPE: Final = compile_online(PRODUCTS.values())
BY_BANK: Final = compile_bank(PRODUCTS.values())
BY_RESPONSE: Final[dict[str, tuple[Product, ...]]] = {
    mti: tuple(row for row in PRODUCTS.values() if row.bank_response_mti == mti)
    for mti in sorted({row.bank_response_mti for row in PRODUCTS.values()})
}
"""A bank's response MTI -> the products it may answer."""
EXPECTED_RESPONSE: Final[dict[str, str]] = {
    row.bank_mti: row.bank_response_mti for row in PRODUCTS.values()
}
"""Bank request MTI -> the only MTI that answers it (bank-h2h.md)."""
REVERSIBLE_TYPES: Final = frozenset(
    row.pos_type for row in PRODUCTS.values() if row.reversed_on_no_answer and row.pos_type
)
"""The 60.1 of every product a terminal's reversal may name."""
UPLOAD_KINDS: Final[dict[str, Product]] = {
    row.pos_type: row
    for row in PRODUCTS.values()
    if row.counts in ("debit", "credit") and row.pos_type is not None and row.instrument == "card"
}
"""A 0320 record's kind (the uploaded transaction's 60.1) -> its product: those that
count in batch totals as a debit or a credit."""


NAMES_ORIGINAL_AUTH: Final = frozenset(
    row.kind
    for row in PRODUCTS.values()
    if row.original == "authorisation"
    or (
        row.pos_condition is not None
        and any(
            PRODUCTS[kind].holds or PRODUCTS[kind].reserves == "hold"
            for kind in row.original_kinds
            if kind in PRODUCTS
        )
    )
)
"""The products whose POS request names its original's authorisation code in 38 (a
pre-authorisation void, a completion, a completion void): it must be the original's."""


HELD_KINDS: Final = frozenset(
    row.kind for row in PRODUCTS.values() if row.holds or row.kind in NAMES_ORIGINAL_AUTH
)
"""A pre-authorisation, its void, a completion and a completion void."""


def by_pos(
    mti: str, code: str, condition: str | None, instrument: Instrument = "card"
) -> Product | None:
    """The product a POS request is, by MTI, 3[:2] and 25 (None: no such product), among
    those of its ``instrument`` (a payment code in field 2: ``paycode``). Its 60.1 is
    checked against the row's afterwards, so that a wrong one is refused naming field
    60."""
    table = BY_POS if instrument == "card" else BY_POS_PAYCODE
    return (
        table.get((mti, code, condition))
        or table.get((mti, code, None))
        or table.get((mti, None, None))
    )


def by_bank(mti: str, code: str, condition: str | None = None) -> Product:
    """The product of a bank message by MTI, 3[:2] and 25 (None: not known, as in a
    clearing record); UnknownProduct if none."""
    table = BY_BANK
    row = table.get((mti, code[:2], condition)) or table.get((mti, code[:2], None))
    if row is None:
        raise UnknownProduct(f"no product is a bank {mti} with processing code {code[:2]!r}")
    return row


def kinds(
    *,
    counts: Counts | None = None,
    settled: bool = False,
    destination: Destination | None = None,
) -> tuple[str, ...]:
    """The kinds that count as ``counts``, or (``settled``) every kind that settles
    (those that count as a debit, a credit or cancel their original); of those, with
    ``destination``, only the ones carried out there (a bank, or the ledger: on-us)."""
    return tuple(
        row.kind
        for row in PRODUCTS.values()
        if ((settled and row.counts != "none") or (counts is not None and row.counts == counts))
        and (destination is None or row.destination == destination)
    )


def kinds_sql(
    *,
    counts: Counts | None = None,
    settled: bool = False,
    destination: Destination | None = None,
) -> str:
    """:func:`kinds` as an SQL list of literals, for ``kind IN (...)``: e.g. ``'sale'``.
    Kinds are the table's own names (letters and underscores), never input."""
    names = kinds(counts=counts, settled=settled, destination=destination)
    if not names:
        raise ValueError(f"no product counts as {counts!r}: the SQL would match nothing")
    for name in names:
        if not name.replace("_", "").isalpha():
            raise ValueError(f"kind {name!r} is not a plain name")
    return ", ".join(f"'{name}'" for name in names)


def kind_sql(
    column: str,
    *,
    counts: Counts | None = None,
    settled: bool = False,
    destination: Destination | None = None,
) -> str:
    """An SQL condition that ``column`` is one of :func:`kinds`: ``column = 'sale'`` for
    one (as a partial index's condition is written), ``column IN (...)`` for several."""
    names = kinds_sql(counts=counts, settled=settled, destination=destination)
    return f"{column} = {names}" if "," not in names else f"{column} IN ({names})"


def upload_case_sql(column: str) -> str:
    """SQL mapping a 0320 record's kind in ``column`` to the journal's kind; NULL for
    one that names no product."""
    whens = " ".join(f"WHEN '{code}' THEN '{row.kind}'" for code, row in UPLOAD_KINDS.items())
    return f"CASE {column} {whens} END"


def upload_code_sql(column: str) -> str:
    """SQL mapping a journal kind in ``column`` to the 0320 record kind it uploads as."""
    whens = " ".join(
        f"WHEN '{row.kind}' THEN '{row.pos_type}'"
        for row in PRODUCTS.values()
        if row.counts in ("debit", "credit") and row.pos_type is not None
    )
    return f"CASE {column} {whens} END"


RISK_KINDS: Final = tuple(row.kind for row in PRODUCTS.values() if row.risk_kind is not None)
"""The kinds whose requests the risk rules count (the journal's rows a rebuild reads)."""
