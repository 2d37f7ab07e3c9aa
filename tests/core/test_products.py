"""The product table (switch.core.products): its wire identities are unique and
round-trip through the real mappings, the settlement SQL's kind lists are the table's,
an unknown kind is an error, and risk.md's pre-authorisation rows are the table's."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, get_args

import msgspec
import pytest

from switch.core import products
from switch.core.bank import BankTrace, Institution, OriginalData, reversal_request
from switch.core.bank import bank_request as to_bank
from switch.core.batch import UploadKind, upload_records
from switch.core.book import TransactionBook, TxnRecord
from switch.core.clock import Stamp
from switch.core.model import KIND_NAMES, PRODUCT_OF, REQUEST_TYPES, BankBound, Card
from switch.core.online import request_from_online
from switch.core.pos import request_from_pos, response_mti
from switch.core.products import PRODUCTS, Product, UnknownProduct
from switch.errors import TransactionRefused
from switch.store import questions
from switch.store.postgresql import settlement as pg_settlement
from switch.store.settlement_sql import settlement_sql
from switch.store.sqlite import settlement as sqlite_settlement
from switch.wire import online as wire
from switch.wire.samples import POS_SALE_FIELDS

STAMP = Stamp.at(datetime(2025, 11, 22, 6, 30, 15, tzinfo=UTC).timestamp(), 8)
INSTITUTION = Institution(acquirer_id="48990000")
SALE_SENT = OriginalData(mti="0200", stan="000007", transmission="1122063015")
PAN = "6222021000111122221"

SALE: dict[int, str | bytes] = dict(POS_SALE_FIELDS)
BALANCE = {**SALE, 3: "310000", 60: "01000042"}
del BALANCE[4]
VOID = {**SALE, 3: "200000", 11: "000125", 37: "532614000123", 60: "23000042",
        61: "0000420001231122"}  # fmt: skip
REFUND = {**VOID, 4: "000000002500", 60: "25000042"}
REVERSAL = {**SALE, 39: "98", 61: "0000420001231122"}
POS_FIELDS = {
    "sale": ("0200", SALE), "balance": ("0200", BALANCE), "void": ("0200", VOID),
    "refund": ("0220", REFUND), "reversal": ("0400", REVERSAL),
}  # fmt: skip
CARD = wire.Card(pan=PAN, expiry="2812")
ONLINE = {
    "purchase": wire.Purchase(id="o-1", merchant_id="SHOP01", amount=100, currency="CNY",
                              card=CARD),
    "balance": wire.Balance(id="o-2", merchant_id="SHOP01", card=CARD),
    "void": wire.Void(id="o-3", merchant_id="SHOP01", original_id="o-1"),
    "refund": wire.Refund(id="o-4", merchant_id="SHOP01", original_id="o-1", amount=50),
}  # fmt: skip

# risk.md's "Pre-authorisation and completion" rows, as the table has them.
PREAUTH_ROWS = (
    Product(kind="preauth", pos_mti="0100", pos_code="03", pos_condition="06",
            pos_type="10", response_mti="0110", online_type="preauth", bank_mti="0100",
            bank_code="03", bank_condition="06", bank_response_mti="0110", counts="none",
            holds=True, risk_kind="preauth"),
    Product(kind="preauth_void", pos_mti="0100", pos_code="20", pos_condition="06",
            pos_type="11", response_mti="0110", online_type="preauth_void",
            bank_mti="0100", bank_code="02", bank_condition="06", bank_response_mti="0110",
            original="reference", original_kinds=("preauth",), reserves="whole",
            counts="none", sends_original_auth=True),
    Product(kind="completion", pos_mti="0200", pos_code="00", pos_condition="06",
            pos_type="20", response_mti="0210", online_type="completion",
            bank_mti="0200", bank_code="00", bank_condition="06", bank_response_mti="0210",
            original="authorisation", original_kinds=("preauth",),
            reserves="hold", counts="debit", sends_original_auth=True, risk_kind="preauth"),
    Product(kind="completion_void", pos_mti="0200", pos_code="20", pos_condition="06",
            pos_type="21", response_mti="0210", bank_mti="0200", bank_code="02",
            bank_response_mti="0210", original="reference",
            original_kinds=("completion",), reserves="whole", counts="cancels"),
)  # fmt: skip


def _resolved(request: BankBound) -> BankBound:
    """As the lifecycle resolves a request against its original: card, amount and
    currency filled in."""
    return msgspec.structs.replace(
        request,
        card=request.card or Card(pan=PAN),
        amount=request.amount if request.amount is not None else 10000,
        currency=request.currency or "156",
    )


# -- the wire identities -----------------------------------------------------------------


def test_every_wire_identity_names_one_product() -> None:
    with_pos = [row for row in PRODUCTS.values() if row.pos_mti is not None]
    assert len(products.BY_POS) + len(products.BY_POS_PAYCODE) == len(with_pos)
    # Online only: the app's wallet_pay (on the ledger) and wallet_topup (wallet.md), and
    # the payment to a card (credit.md), which the app's cobrand_convert makes.
    online_only = {row.kind for row in PRODUCTS.values() if row.pos_mti is None}
    assert online_only == {"wallet_pay", "wallet_topup", "card_payment"}
    # A payment code's products share their card twins' POS identities (field 2 tells
    # them apart), and go to no bank.
    for kind in ("onus_sale", "onus_void", "onus_refund"):
        row = PRODUCTS[kind]
        assert row.destination == "ledger" and row.bank_code is None
        assert products.by_pos(row.pos_mti or "", row.pos_code or "", None, "paycode") is row
        twin = products.by_pos(row.pos_mti or "", row.pos_code or "", None)
        assert twin is not None and twin.pos_type == row.pos_type and twin.destination == "bank"
    assert len(products.BY_ONLINE_TYPE) == 9
    assert set(ONLINE) <= products.BY_ONLINE_TYPE.keys()
    # the reversal is its original's code; a completion void is a void to the bank
    assert len(products.BY_BANK) == 8
    assert KIND_NAMES.keys() >= PRODUCT_OF.keys() and REQUEST_TYPES.keys() == PRODUCTS.keys()
    # A second row with an identity already taken is refused when the table compiles.
    sale = PRODUCTS["sale"]
    twin = msgspec.structs.replace(sale, kind="twin", online_type="twin")
    with pytest.raises(ValueError, match="names both sale and twin"):
        products.compile_pos([sale, twin])
    with pytest.raises(ValueError, match="online type 'purchase'"):
        products.compile_online([sale, msgspec.structs.replace(twin, online_type="purchase")])
    # On the bank's wire only rows the bank treats alike may share one.
    with pytest.raises(ValueError, match="sale and twin, which differ"):
        products.compile_bank([sale, msgspec.structs.replace(twin, counts="credit")])
    assert products.compile_bank([sale, twin])[("0200", "00", None)] is sale


@pytest.mark.parametrize("kind", ["sale", "balance", "void", "refund"])
def test_pos_identity_to_product_to_bank_message_to_response(kind: str) -> None:
    row = PRODUCTS[kind]
    mti, fields = POS_FIELDS[kind]
    assert (mti, str(fields[3])[:2], str(fields[60])[:2]) == (row.pos_mti, row.pos_code,
                                                             row.pos_type)  # fmt: skip
    request = request_from_pos(mti, fields)
    assert PRODUCT_OF[type(request)] is row
    assert products.by_pos(mti, str(fields[3])[:2], str(fields[25])) is row
    assert response_mti(mti) == row.response_mti
    original = SALE_SENT if row.original != "none" else None
    bank_mti, bank_fields = to_bank(
        _resolved(request),  # type: ignore[arg-type]
        BankTrace(stan="000008", rrn="532614000124", stamp=STAMP), INSTITUTION, original,
    )  # fmt: skip
    assert (bank_mti, str(bank_fields[3])[:2]) == (row.bank_mti, row.bank_code)
    assert products.by_bank(bank_mti, str(bank_fields[3]), str(bank_fields[25])) is row
    assert products.EXPECTED_RESPONSE[bank_mti] == row.bank_response_mti
    assert row in products.BY_RESPONSE[row.bank_response_mti]


def test_the_reversal_round_trips() -> None:
    row = PRODUCTS["reversal"]
    request = request_from_pos("0400", REVERSAL)
    assert PRODUCT_OF[type(request)] is row and response_mti("0400") == row.response_mti
    # Any product a terminal may reverse: its 60.1 is the original's.
    for kind in ("sale", "balance", "void", "refund"):
        type_code = PRODUCTS[kind].pos_type
        reversal = request_from_pos("0400", {**REVERSAL, 60: f"{type_code}000042"})
        assert PRODUCT_OF[type(reversal)] is row
    sale = TxnRecord(
        kind="sale", rrn="532614000123", bank="icbc", channel="pos", request_mti="0200",
        terminal_id="POS00001", merchant_id="M", stan="000123", batch="000042",
        local_date="1122", pan_masked="", pan_hmac=b"", pan_sealed=b"", amount=10000,
        currency="156", bank_processing_code="000000", sent=SALE_SENT,
    )  # fmt: skip
    subject = sale.reversal_subject(PAN)
    assert subject is not None
    bank_mti, _ = reversal_request(subject, "000009", STAMP, INSTITUTION)
    assert bank_mti == row.bank_mti and products.EXPECTED_RESPONSE[bank_mti] == "0410"


@pytest.mark.parametrize("type_", list(ONLINE))
def test_online_type_to_product(type_: str) -> None:
    row = products.BY_ONLINE_TYPE[type_]
    request = request_from_online(ONLINE[type_], terminal_id="ONLINE01", stan="000001")  # type: ignore[arg-type]
    assert PRODUCT_OF[type(request)] is row
    assert request.processing_code[:2] == row.pos_code


# -- what the table decides elsewhere ----------------------------------------------------


def _kind_conditions(sql: str) -> list[frozenset[str]]:
    """The kinds named by every ``kind = '...'`` or ``kind IN (...)`` of ``sql``."""
    found = re.findall(r"kind\s*(?:=\s*'(\w+)'|IN\s*\(([^)]*)\))", sql)
    return [frozenset([one] if one else re.findall(r"'(\w+)'", several)) for one, several in found]


def _statements(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, tuple | list):
        return [text for item in value for text in _statements(item)]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _statements(item)]
    if isinstance(value, msgspec.Struct):
        return [text for name in value.__struct_fields__
                for text in _statements(getattr(value, name))]  # fmt: skip
    return []


@pytest.mark.parametrize("engine", [sqlite_settlement, pg_settlement], ids=["sqlite", "pg"])
def test_the_settlement_kind_lists_are_the_tables(engine: Any) -> None:
    dialect = next(v for v in vars(engine).values() if type(v).__name__ == "Dialect")
    statements = _statements(settlement_sql(dialect))
    lists = {
        "debit": frozenset(products.kinds(counts="debit")),
        "credit": frozenset(products.kinds(counts="credit")),
        "cancels": frozenset(products.kinds(counts="cancels")),
        "settled": frozenset(products.kinds(settled=True)),
        "at banks": frozenset(products.kinds(settled=True, destination="bank")),
        "on the ledger": frozenset(products.kinds(settled=True, destination="ledger")),
    }
    # On-us payments settle as card sales of their merchant (wallet.md), matched against
    # the ledger rather than a bank's file; top-ups as card sales of the top-up merchant;
    # a payment to a card (credit.md) as money returned to a card, direction C.
    assert lists == {
        "debit": {"sale", "completion", "onus_sale", "wallet_pay", "wallet_topup",
                  "onus_completion"},
        "credit": {"refund", "onus_refund", "card_payment"},
        "cancels": {"void", "completion_void", "onus_void", "onus_completion_void"},
        "settled": {"sale", "void", "refund", "completion", "completion_void", "onus_sale",
                    "onus_void", "onus_refund", "wallet_pay", "wallet_topup", "card_payment",
                    "onus_completion", "onus_completion_void"},
        "at banks": {"sale", "void", "refund", "completion", "completion_void",
                     "card_payment", "wallet_topup"},
        "on the ledger": {"onus_sale", "onus_void", "onus_refund", "wallet_pay",
                          "onus_completion", "onus_completion_void"},
    }  # fmt: skip
    named = [kinds for sql in statements for kinds in _kind_conditions(sql)]
    # ... and the settlement's own name for a bank's record it never sent.
    unknown = frozenset({products.UNKNOWN_KIND})
    # Every kind that settles is a candidate either at a bank or on the ledger.
    assert lists["settled"] == lists["at banks"] | lists["on the ledger"]
    used = {kinds for name, kinds in lists.items() if name != "settled"}
    assert named and set(named) == {*used, unknown}
    assert products.UNKNOWN_KIND not in PRODUCTS
    # The candidates of a date: every kind that settles, none that does not; those
    # carried out at a bank from the banks' files, the on-us ones from the ledger.
    assert any(products.kind_sql("kind", settled=True, destination="bank") in sql
               for sql in statements)  # fmt: skip
    assert any(products.kind_sql("t.kind", settled=True, destination="ledger") in sql
               and "ledger_transfer" in sql for sql in statements)  # fmt: skip
    assert "'balance'" not in "".join(statements)
    assert "'preauth'" not in "".join(statements)  # never paid, never matched
    # A terminal's upload maps 60.1 to kinds as the table does.
    assert any(products.upload_case_sql("u.kind") in sql for sql in statements)
    assert products.upload_case_sql("u.kind") == (
        "CASE u.kind WHEN '22' THEN 'sale' WHEN '25' THEN 'refund' "
        "WHEN '20' THEN 'completion' END"
    )
    totals = questions._BATCH_TOTALS
    assert set(_kind_conditions(totals)) == {lists["debit"], lists["credit"]}


def test_batch_uploads_take_the_kinds_that_count() -> None:
    """A 0320 record's kind is the 60.1 of a product that counts as a debit or credit."""
    assert set(get_args(UploadKind)) == set(products.UPLOAD_KINDS) == {"22", "25", "20"}
    assert {row.kind for row in products.UPLOAD_KINDS.values()} == {
        "sale", "refund", "completion"
    }  # fmt: skip
    with pytest.raises(TransactionRefused, match="'23' is none of 22"):
        upload_records("01" + "23" + "000123" + "000000010000")


def test_the_store_writes_no_kind_by_hand() -> None:
    """The kind lists in switch/store/ are generated: no product's kind is compared in its
    source (``kind = 'sale'``); other columns named kind (the clock's) are not products."""
    import pathlib

    import switch.store

    named = {*PRODUCTS, products.UNKNOWN_KIND}
    root = pathlib.Path(switch.store.__file__).parent
    for path in root.rglob("*.py"):
        written = {kind for kinds in _kind_conditions(path.read_text()) for kind in kinds}
        assert not written & named, path


def test_an_unknown_kind_is_an_error() -> None:
    with pytest.raises(UnknownProduct, match="'layaway'"):
        products.product("layaway")
    with pytest.raises(UnknownProduct, match="'99'"):
        products.by_bank("0200", "990000")
    assert products.by_pos("0200", "99", "00") is None  # answered 40 by the POS mapping
    # The book never takes a record of a kind it does not know for a void or a refund.
    book = TransactionBook(max_records=10)
    sale = TxnRecord(
        kind="sale", rrn="000000000001", bank="icbc", channel="pos", request_mti="0200",
        terminal_id="T", merchant_id="M", stan="000001", batch="000001", local_date="1122",
        pan_masked="", pan_hmac=b"", pan_sealed=b"", amount=100, currency="156",
        bank_processing_code="000000", state="approved",
    )  # fmt: skip
    book.add(sale)
    odd = msgspec.structs.replace(sale, kind="layaway", rrn="000000000002", stan="000002",
                                  original_rrn=sale.rrn, state="sending")  # fmt: skip
    book.add(odd)
    with pytest.raises(UnknownProduct):
        book.settle(odd, state="approved", code="00")


# -- the pre-authorisation rows fit --------------------------------------------------------


def test_the_preauth_rows_are_the_tables() -> None:
    for row in PREAUTH_ROWS:
        assert PRODUCTS[row.kind] == row
    assert len(products.compile_online(PRODUCTS.values())) == 9
    # A completion and a sale share 0200 and 3 = 00xxxx: 25 tells them apart.
    assert products.by_pos("0200", "00", "06").kind == "completion"  # type: ignore[union-attr]
    assert products.by_pos("0200", "00", "00").kind == "sale"  # type: ignore[union-attr]
    assert products.by_pos("0200", "20", "06").kind == "completion_void"  # type: ignore[union-attr]
    assert products.by_pos("0100", "03", "06").kind == "preauth"  # type: ignore[union-attr]
    assert products.by_bank("0200", "000000", "06").kind == "completion"
    assert products.by_bank("0200", "000000", "00").kind == "sale"
    # A completion void is a void to the bank (bank-h2h.md).
    assert products.by_bank("0200", "020000", "06").kind == "void"
    assert products.by_bank("0100", "020000", "06").kind == "preauth_void"
    # Settlement: a completion is paid like a sale, its void cancels it; a
    # pre-authorisation and its void are never paid.
    assert products.kinds_sql(counts="debit") == (
        "'sale', 'onus_sale', 'completion', 'onus_completion', 'wallet_pay', 'wallet_topup'"
    )
    assert products.kinds(settled=True) == ("sale", "void", "refund", "onus_sale", "onus_void",
                                            "onus_refund", "completion", "completion_void",
                                            "onus_completion", "onus_completion_void",
                                            "card_payment", "wallet_pay",
                                            "wallet_topup")  # fmt: skip
    assert products.kinds(counts="cancels") == (
        "void", "onus_void", "completion_void", "onus_completion_void"
    )
