"""Merchants and their terms (settlement.md, "Merchants"): who may transact, what the
switch tells the banks of them (field 18), and what each sale costs them.

The list is a CSV file read once at start-up (and on reload); a merchant that is not
listed takes the ``*`` row's terms, or is refused 03 where there is none.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from typing import Final

import msgspec

from switch.errors import ConfigError

COLUMNS: Final = ("merchant_id", "name", "mcc", "mdr_bps", "fee_min_fen", "fee_cap_fen", "account")
DEFAULT_PROFILE: Final = "*"
_MERCHANT_ID = re.compile(r"^[\x21-\x7e]{1,15}$")
_ACCOUNT = re.compile(r"^[\x21-\x7e]{1,32}$")
_MCC = re.compile(r"^[0-9]{4}$")


class MerchantTerms(msgspec.Struct, frozen=True, kw_only=True):
    merchant_id: str
    """As listed: the merchant's id, or ``*`` for the default profile."""
    name: str
    mcc: str | None
    """Merchant category code, sent to banks in field 18 (None: not sent)."""
    mdr_bps: int
    fee_min_fen: int = 0
    fee_cap_fen: int = 0
    account: str

    def fee(self, amount: int) -> int:
        """A sale's fee: ``amount * mdr_bps / 10000`` rounded half up to the fen, then
        raised to the minimum and lowered to the cap (each when not 0)."""
        fee = (amount * self.mdr_bps + 5000) // 10000
        if self.fee_min_fen:
            fee = max(fee, self.fee_min_fen)
        if self.fee_cap_fen:
            fee = min(fee, self.fee_cap_fen)
        return fee


class MerchantBook:
    """The merchants the switch serves, by id."""

    __slots__ = ("_by_id", "_default", "source")

    def __init__(self, merchants: Iterable[MerchantTerms], *, source: str = "") -> None:
        self._by_id = {terms.merchant_id: terms for terms in merchants}
        self._default = self._by_id.pop(DEFAULT_PROFILE, None)
        self.source = source

    @classmethod
    def open_to_all(cls) -> MerchantBook:
        """No merchants file: everyone is served, at no fee, paid to its own id."""
        return cls([MerchantTerms(merchant_id=DEFAULT_PROFILE, name="", mcc=None, mdr_bps=0,
                                  account="")], source="")  # fmt: skip

    def terms(self, merchant_id: str) -> MerchantTerms | None:
        """The merchant's terms, the default profile's if it is not listed, or None
        (refused 03)."""
        return self._by_id.get(merchant_id, self._default)

    def own_terms(self, merchant_id: str) -> MerchantTerms | None:
        """The merchant's terms if it is listed under its own id (not the ``*``
        profile's): only those have QR codes (wallet.md)."""
        return self._by_id.get(merchant_id)

    def account(self, merchant_id: str) -> str:
        """Where the merchant is paid: its listed account (an unlisted merchant on the
        default profile is paid to that profile's account, or to its own id if none)."""
        terms = self.terms(merchant_id)
        return terms.account if terms is not None and terms.account else merchant_id

    def listed(self) -> list[MerchantTerms]:
        """Every listed merchant and the default profile, by id."""
        default = [self._default] if self._default is not None else []
        return default + sorted(self._by_id.values(), key=lambda terms: terms.merchant_id)

    def __len__(self) -> int:
        return len(self._by_id)


def parse_merchants(text: str, *, source: str) -> MerchantBook:
    """The merchants of a CSV text (settlement.md's columns, header first); a bad row
    raises ConfigError naming the file, the line and the column."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(column.strip() for column in header) != COLUMNS:
        raise ConfigError(f"{source}: the header must be {','.join(COLUMNS)}")
    merchants: list[MerchantTerms] = []
    seen: set[str] = set()
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(COLUMNS):
            raise ConfigError(f"{source} line {line}: {len(row)} columns, not {len(COLUMNS)}")
        terms = _terms(dict(zip(COLUMNS, (cell.strip() for cell in row), strict=True)),
                       where=f"{source} line {line}")  # fmt: skip
        if terms.merchant_id in seen:
            raise ConfigError(f"{source} line {line}: merchant {terms.merchant_id} listed twice")
        seen.add(terms.merchant_id)
        merchants.append(terms)
    return MerchantBook(merchants, source=source)


def _terms(cells: dict[str, str], *, where: str) -> MerchantTerms:
    merchant_id = cells["merchant_id"]
    if merchant_id != DEFAULT_PROFILE and not _MERCHANT_ID.match(merchant_id):
        raise ConfigError(f"{where}: merchant_id {merchant_id!r} is not 1-15 characters")
    if not _MCC.match(cells["mcc"]):
        raise ConfigError(f"{where}: mcc {cells['mcc']!r} is not 4 digits")
    if not _ACCOUNT.match(cells["account"]):
        raise ConfigError(f"{where}: account {cells['account']!r} is not 1-32 characters")
    amounts = {}
    for column in ("mdr_bps", "fee_min_fen", "fee_cap_fen"):
        value = cells[column]
        if not value.isdigit():
            raise ConfigError(f"{where}: {column} {value!r} is not a whole number of fen/bps")
        amounts[column] = int(value)
    if amounts["mdr_bps"] > 10000:
        raise ConfigError(f"{where}: mdr_bps {amounts['mdr_bps']} is more than the whole sale")
    if amounts["fee_cap_fen"] and amounts["fee_min_fen"] > amounts["fee_cap_fen"]:
        raise ConfigError(f"{where}: fee_min_fen is above fee_cap_fen")
    return MerchantTerms(
        merchant_id=merchant_id, name=cells["name"], mcc=cells["mcc"], account=cells["account"],
        **amounts,
    )  # fmt: skip
