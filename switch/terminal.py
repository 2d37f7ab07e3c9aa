"""A POS terminal's side of pos-cup.md, as pure functions: the messages a terminal
sends, and what it keeps of its batch to settle it. The CLI's smoke test, the tests and
the bench all speak through these."""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from switch.core.batch import (
    BatchTotals,
    UploadRecord,
    upload_end_field48,
    upload_field48,
)
from switch.wire.framing import PosEnvelope, join_pos_frame, split_pos_frame
from switch.wire.iso8583 import FieldValue, Iso8583Codec, Iso8583Message

DEFAULT_ENVELOPE: Final = PosEnvelope(
    tpdu=bytes.fromhex("6000030000"), header=bytes.fromhex("603100310730")
)
"""The TPDU and header of pos-cup.md's sample sale."""


PREAUTH_CONDITION: Final = "06"
"""Field 25 of a pre-authorisation, its void, a completion and a completion void."""

PAYCODE_ENTRY_MODE: Final = "032"
"""Field 22 of a scanned payment code (wallet.md)."""


class Terminal(msgspec.Struct, frozen=True, kw_only=True):
    terminal_id: str = "POS00001"
    merchant_id: str = "898310048990001"
    batch: int = 1
    envelope: PosEnvelope = DEFAULT_ENVELOPE

    def _base(self, stan: int, reserved_type: str, network_code: str = "") -> dict[int, FieldValue]:
        return {
            11: f"{stan:06d}",
            41: self.terminal_id,
            42: self.merchant_id,
            60: f"{reserved_type}{self.batch:06d}{network_code}",
        }

    def sign_on(self, stan: int, layout: str = "003") -> tuple[str, dict[int, FieldValue]]:
        """The 0800 asking for working keys in ``layout`` (60.3: 003 ``3des``, 005
        ``sm4``, 001 single DES where allowed: security.md)."""
        return "0800", self._base(stan, "00", layout)

    def echo(self, stan: int) -> tuple[str, dict[int, FieldValue]]:
        return "0820", self._base(stan, "00", "301")

    def _financial(
        self,
        stan: int,
        reserved_type: str,
        processing_code: str,
        pan: str,
        amount: int,
        *,
        expiry: str | None,
        currency: str,
    ) -> dict[int, FieldValue]:
        fields = self._base(stan, reserved_type)
        fields.update(
            {2: pan, 3: processing_code, 4: f"{amount:012d}", 22: "021", 25: "00", 49: currency}
        )
        if expiry is not None:
            fields[14] = expiry
        return fields

    def sale(
        self,
        stan: int,
        pan: str,
        amount: int,
        *,
        expiry: str | None = "2812",
        currency: str = "156",
    ) -> tuple[str, dict[int, FieldValue]]:
        return "0200", self._financial(
            stan, "22", "000000", pan, amount, expiry=expiry, currency=currency
        )

    def balance(
        self, stan: int, pan: str, *, expiry: str | None = "2812", currency: str = "156"
    ) -> tuple[str, dict[int, FieldValue]]:
        return "0200", self._financial(
            stan, "01", "310000", pan, 0, expiry=expiry, currency=currency
        )

    def void(
        self, stan: int, pan: str, amount: int, original_rrn: str, original_stan: int
    ) -> tuple[str, dict[int, FieldValue]]:
        return "0200", self._referencing(stan, "23", pan, amount, original_rrn, original_stan)

    def refund(
        self, stan: int, pan: str, amount: int, original_rrn: str, original_stan: int
    ) -> tuple[str, dict[int, FieldValue]]:
        return "0220", self._referencing(stan, "25", pan, amount, original_rrn, original_stan)

    def _referencing(
        self,
        stan: int,
        reserved_type: str,
        pan: str,
        amount: int,
        original_rrn: str,
        original_stan: int,
    ) -> dict[int, FieldValue]:
        """A void's or refund's fields: 37 and 61 name the sale (pos-cup.md)."""
        fields = self._financial(
            stan, reserved_type, "200000", pan, amount, expiry=None, currency="156"
        )
        fields[37] = original_rrn
        fields[61] = f"{self.batch:06d}{original_stan:06d}"
        return fields

    # -- pre-authorisation and completion (risk.md): 25 = 06 -------------------------

    def preauth(
        self, stan: int, pan: str, amount: int, *, expiry: str | None = "2812"
    ) -> tuple[str, dict[int, FieldValue]]:
        """A pre-authorisation: 0100, 3 = 030000, 60.1 = 10."""
        fields = self._financial(stan, "10", "030000", pan, amount, expiry=expiry, currency="156")
        fields[25] = PREAUTH_CONDITION
        return "0100", fields

    def preauth_void(
        self, stan: int, pan: str, amount: int, rrn: str, auth_code: str, original_stan: int,
        *, original_batch: int | None = None,
    ) -> tuple[str, dict[int, FieldValue]]:  # fmt: skip
        """A pre-authorisation void: 0100, 3 = 200000, 60.1 = 11; 37 and 38 are the
        pre-authorisation's, 61 names it."""
        fields = self._referencing(stan, "11", pan, amount, rrn, original_stan)
        return "0100", self._held(fields, auth_code, original_stan, original_batch)

    def completion(
        self, stan: int, pan: str, amount: int, auth_code: str, original_stan: int,
        original_date: str, *, original_batch: int | None = None, rrn: str | None = None,
    ) -> tuple[str, dict[int, FieldValue]]:  # fmt: skip
        """A completion: 0200, 3 = 000000, 60.1 = 20; 38 is the pre-authorisation's,
        61 its batch, STAN and date (MMDD of its approval's 13); 37 optional."""
        fields = self._financial(stan, "20", "000000", pan, amount, expiry=None, currency="156")
        if rrn is not None:
            fields[37] = rrn
        fields = self._held(fields, auth_code, original_stan, original_batch)
        fields[61] = f"{fields[61]!s}{original_date}"
        return "0200", fields

    def completion_void(
        self, stan: int, pan: str, amount: int, rrn: str, auth_code: str, original_stan: int,
        *, original_batch: int | None = None,
    ) -> tuple[str, dict[int, FieldValue]]:  # fmt: skip
        """A completion void: 0200, 3 = 200000, 60.1 = 21; 37 and 38 the completion's."""
        fields = self._referencing(stan, "21", pan, amount, rrn, original_stan)
        return "0200", self._held(fields, auth_code, original_stan, original_batch)

    def _held(
        self, fields: dict[int, FieldValue], auth_code: str, original_stan: int,
        original_batch: int | None,
    ) -> dict[int, FieldValue]:  # fmt: skip
        batch = self.batch if original_batch is None else original_batch
        fields[25] = PREAUTH_CONDITION
        fields[38] = auth_code
        fields[61] = f"{batch:06d}{original_stan:06d}"
        return fields

    def reversal(
        self, original: tuple[str, dict[int, FieldValue]], *, reason: str = "98", date: str = ""
    ) -> tuple[str, dict[int, FieldValue]]:
        """The 0400 for an earlier request: same 2, 3, 4, 11 and 60; 61 names it."""
        _, fields = original
        reversal = {n: v for n, v in fields.items() if n not in (14, 35, 52, 53, 62, 64)}
        reversal[39] = reason
        reversal[61] = f"{self.batch:06d}{fields[11]!s}{date}"
        return "0400", reversal

    def code_sale(
        self, stan: int, code: str, amount: int, *, currency: str = "156"
    ) -> tuple[str, dict[int, FieldValue]]:
        """A sale paid by a scanned payment code (wallet.md): 2 = the code, 22 = 032,
        no 14, 35, 52, 53 or 55."""
        fields = self._financial(
            stan, "22", "000000", code, amount, expiry=None, currency=currency
        )
        fields[22] = PAYCODE_ENTRY_MODE
        return "0200", fields

    def code_void(
        self, stan: int, code: str, amount: int, original_rrn: str, original_stan: int
    ) -> tuple[str, dict[int, FieldValue]]:
        mti, fields = self.void(stan, code, amount, original_rrn, original_stan)
        fields[22] = PAYCODE_ENTRY_MODE
        return mti, fields

    def code_refund(
        self, stan: int, code: str, amount: int, original_rrn: str, original_stan: int
    ) -> tuple[str, dict[int, FieldValue]]:
        mti, fields = self.refund(stan, code, amount, original_rrn, original_stan)
        fields[22] = PAYCODE_ENTRY_MODE
        return mti, fields

    def settlement(self, stan: int, totals: BatchTotals) -> tuple[str, dict[int, FieldValue]]:
        """The 0500 that closes this batch with the terminal's ``totals``."""
        fields = self._base(stan, "00", "201")
        fields[48] = totals.field48()
        fields[49] = "156"
        return "0500", fields

    def batch_upload(
        self,
        stan: int,
        records: tuple[UploadRecord, ...] | list[UploadRecord],
        *,
        last_total: int | None = None,
    ) -> tuple[str, dict[int, FieldValue]]:
        """A 0320 with 1 to 8 ``records``; with ``last_total`` instead, the last one
        (60.3 = 202), which says how many were uploaded in all and carries none."""
        if last_total is None:
            fields = self._base(stan, "00", "201")
            fields[48] = upload_field48(records)
        else:
            if records:
                raise ValueError("the last 0320 carries the total of records, not records")
            fields = self._base(stan, "00", "202")
            fields[48] = upload_end_field48(last_total)
        return "0320", fields


EntryKind = Literal["sale", "void", "refund", "completion"]


DEBITS: Final = ("sale", "completion")
"""What counts in 48.1/48.2 while standing (pos-cup.md)."""
UPLOAD_KIND: Final[dict[str, Literal["22", "25", "20"]]] = {
    "sale": "22", "refund": "25", "completion": "20",
}  # fmt: skip
"""A standing entry's 0320 record kind (its 60.1)."""


class BatchEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One transaction the switch approved, as the terminal saw it."""

    kind: EntryKind
    stan: int
    amount: int
    """In fen."""
    rrn: str
    """Field 37 of its approval."""
    original_rrn: str | None = None
    """A void's or refund's sale."""
    reversed: bool = False
    """The terminal sent a reversal of it."""


class TerminalBatch(msgspec.Struct, frozen=True, kw_only=True):
    """What a terminal keeps of its current batch to settle it (pos-cup.md, "Batch
    settlement"): its approved sales, voids and refunds, and which it reversed."""

    terminal_id: str = "POS00001"
    merchant_id: str = "898310048990001"
    batch: int = 1
    entries: tuple[BatchEntry, ...] = ()

    @property
    def terminal(self) -> Terminal:
        """The terminal that sends this batch's messages."""
        return Terminal(
            terminal_id=self.terminal_id, merchant_id=self.merchant_id, batch=self.batch
        )

    def _with(self, entry: BatchEntry) -> TerminalBatch:
        return msgspec.structs.replace(self, entries=(*self.entries, entry))

    def with_sale(self, stan: int, amount: int, rrn: str) -> TerminalBatch:
        return self._with(BatchEntry(kind="sale", stan=stan, amount=amount, rrn=rrn))

    def with_completion(self, stan: int, amount: int, rrn: str) -> TerminalBatch:
        """An approved completion: a debit, as a sale; voided by a completion void."""
        return self._with(BatchEntry(kind="completion", stan=stan, amount=amount, rrn=rrn))

    def with_void(self, stan: int, amount: int, rrn: str, original_rrn: str) -> TerminalBatch:
        return self._with(
            BatchEntry(kind="void", stan=stan, amount=amount, rrn=rrn, original_rrn=original_rrn)
        )

    def with_refund(self, stan: int, amount: int, rrn: str, original_rrn: str) -> TerminalBatch:
        return self._with(
            BatchEntry(kind="refund", stan=stan, amount=amount, rrn=rrn, original_rrn=original_rrn)
        )

    def with_reversal(self, stan: int) -> TerminalBatch:
        """The transaction of STAN ``stan`` reversed (a 0400 repeats its STAN); one not
        in the batch (never approved) changes nothing."""
        entries = tuple(
            msgspec.structs.replace(entry, reversed=True) if entry.stan == stan else entry
            for entry in self.entries
        )
        return msgspec.structs.replace(self, entries=entries)

    def sale(self, rrn: str) -> BatchEntry | None:
        """The batch's sale approved with ``rrn``, if there is one."""
        return next((e for e in self.entries if e.kind == "sale" and e.rrn == rrn), None)

    def _standing(self) -> list[BatchEntry]:
        """Sales neither voided nor reversed, refunds not reversed: what counts."""
        voided = {
            entry.original_rrn
            for entry in self.entries
            if entry.kind == "void" and not entry.reversed
        }
        return [
            entry
            for entry in self.entries
            if not entry.reversed
            and (entry.kind == "refund" or (entry.kind in DEBITS and entry.rrn not in voided))
        ]

    def totals(self) -> BatchTotals:
        """48.1-48.4 of its 0500: standing sales are debits, standing refunds credits."""
        standing = self._standing()
        sales = [entry.amount for entry in standing if entry.kind in DEBITS]
        refunds = [entry.amount for entry in standing if entry.kind == "refund"]
        return BatchTotals(
            debit_fen=sum(sales),
            debit_count=len(sales),
            credit_fen=sum(refunds),
            credit_count=len(refunds),
        )

    def upload_records(self) -> tuple[UploadRecord, ...]:
        """What a batch upload carries: each standing sale (22) and refund (25)."""
        return tuple(
            UploadRecord(
                kind=UPLOAD_KIND[entry.kind],
                stan=f"{entry.stan:06d}",
                amount=entry.amount,
            )
            for entry in self._standing()
        )

    def upload_messages(self, first_stan: int) -> list[tuple[str, dict[int, FieldValue]]]:
        """Its batch upload: 0320s of up to 8 records, then the last one (60.3 = 202)
        with their number; STANs from ``first_stan`` on, 999999 then 000001."""
        records = self.upload_records()
        chunks = [records[start : start + 8] for start in range(0, len(records), 8)]
        stans = [(first_stan - 1 + index) % 999_999 + 1 for index in range(len(chunks) + 1)]
        terminal = self.terminal
        messages = [
            terminal.batch_upload(stans[index], chunk) for index, chunk in enumerate(chunks)
        ]
        messages.append(terminal.batch_upload(stans[-1], (), last_total=len(records)))
        return messages

    def next_batch(self) -> TerminalBatch:
        """The batch after this one, empty: a sign-on's rule, 999999 then 000000."""
        return TerminalBatch(
            terminal_id=self.terminal_id,
            merchant_id=self.merchant_id,
            batch=(self.batch + 1) % 1_000_000,
        )


def encode_pos_request(
    codec: Iso8583Codec, terminal: Terminal, message: tuple[str, dict[int, FieldValue]]
) -> bytes:
    """A frame's payload (no length prefix): envelope + ISO 8583 message."""
    mti, fields = message
    return join_pos_frame(terminal.envelope, codec.encode(mti, fields))


def decode_pos_response(codec: Iso8583Codec, payload: bytes) -> tuple[PosEnvelope, Iso8583Message]:
    envelope, data = split_pos_frame(payload)
    return envelope, codec.decode(data)


# -- the terminal's keys (security.md) ----------------------------------------------------

DEMO_TMK: Final = bytes.fromhex("CA5D92598DCA48CE8A4C76361A9269E9")
"""security.md's sample TMK (``3des``, KCV 43C6CC): the demo configuration's ``*``
terminal entry. Published, so never a real terminal's key."""
MAC_MTIS: Final = frozenset({"0100", "0200", "0220", "0320", "0400", "0500"})
BATCH_CHECKED_MTIS: Final = frozenset({"0100", "0200", "0220"})
LAYOUT_CIPHERS: Final[dict[str, tuple[str, str, str]]] = {
    "003": ("3des", "3des", "des"),
    "005": ("sm4", "sm4", "sm4"),
    "001": ("3des", "des", "des"),
}
SECURITY_CONTROL: Final = {"003": "2600000000000000", "005": "2400000000000000",
                           "001": "2000000000000000"}  # fmt: skip
KEY_SETS_KEPT: Final = 16
"""Key sets a terminal still verifies responses with (requests sent before a sign-on)."""


class TerminalKeyError(Exception):
    """Field 62 of an 0810 does not open under the TMK to keys matching their KCVs."""


class TerminalKeySet(msgspec.Struct, frozen=True):
    """The working keys of one sign-on, as the terminal holds them (clear: a terminal's
    keys are its own; none of this is the switch's)."""

    layout: str
    pik: bytes
    mak: bytes
    batch: str

    def __repr__(self) -> str:
        return f"TerminalKeySet({self.layout}, batch={self.batch})"

    __str__ = __repr__


class TerminalSecurity:
    """A terminal's side of security.md: its TMK, the key sets of its sign-ons, the MAC
    of its requests, the check of its responses' MACs and its PIN blocks. Sans-IO; the
    key sets may be saved to and restored from a (0600) state file by the caller."""

    def __init__(self, tmk: bytes, cipher: str = "3des", *, layout: str | None = None) -> None:
        from switch.security import algorithms as alg

        if cipher not in ("3des", "sm4") or len(tmk) != 16:
            raise ValueError("a TMK is 16 bytes, 3des or sm4")
        self._alg = alg
        self.tmk = tmk
        self.cipher = cipher
        self.layout = layout or ("005" if cipher == "sm4" else "003")
        if LAYOUT_CIPHERS[self.layout][0] != cipher:
            raise ValueError(f"60.3 = {self.layout} is not for a {cipher} TMK")
        self.key_sets: list[TerminalKeySet] = []
        """Newest first."""

    def __repr__(self) -> str:
        return f"TerminalSecurity({self.cipher}, {self.layout}, sets={len(self.key_sets)})"

    @classmethod
    def demo(cls) -> TerminalSecurity:
        return cls(DEMO_TMK, "3des")

    @property
    def current(self) -> TerminalKeySet | None:
        return self.key_sets[0] if self.key_sets else None

    def needs_sign_on(
        self, mti: str, fields: dict[int, FieldValue], keys: TerminalKeySet | None = None
    ) -> bool:
        """No keys (``keys``, else the newest), or (``3des``) a request outside the
        keys' batch (answered 12)."""
        current = keys or self.current
        if current is None:
            return True
        if self.layout != "005" and mti in BATCH_CHECKED_MTIS:
            reserved = fields.get(60)
            return not isinstance(reserved, str) or reserved[2:8] != current.batch
        return False

    def accept_sign_on(self, field_62: bytes, batch: str) -> TerminalKeySet:
        """The keys of an 0810 (39 = 00): both opened under the TMK and checked against
        their KCVs (:class:`TerminalKeyError` else: the terminal keeps neither)."""
        alg = self._alg
        tmk_cipher, pik_cipher, mak_cipher = LAYOUT_CIPHERS[self.layout]
        pik_len, mak_len = alg.KEY_BYTES[pik_cipher], alg.KEY_BYTES[mak_cipher]
        size = {"003": 40, "005": 40, "001": 24}[self.layout]
        if len(field_62) != size:
            raise TerminalKeyError(f"field 62 of 60.3 = {self.layout} is {size} bytes")
        pik = alg.unwrap_key(tmk_cipher, self.tmk, field_62[:pik_len])
        mak_at = pik_len + 4
        mak = alg.unwrap_key(tmk_cipher, self.tmk, field_62[mak_at : mak_at + mak_len])
        if alg.kcv(pik_cipher, pik) != field_62[pik_len:mak_at] or alg.kcv(
            mak_cipher, mak
        ) != field_62[-4:]:
            raise TerminalKeyError("a working key does not match its KCV")
        keys = TerminalKeySet(layout=self.layout, pik=pik, mak=mak, batch=batch)
        self.key_sets = [keys, *self.key_sets[: KEY_SETS_KEPT - 1]]
        return keys

    def _mac(self, keys: TerminalKeySet, mab: bytes) -> bytes:
        cipher = "sm4" if keys.layout == "005" else "des"
        return self._alg.pos_mac(cipher, keys.mak, mab)  # type: ignore[arg-type]

    def mac(self, mab: bytes, keys: TerminalKeySet | None = None) -> bytes:
        """Field 64 of ``mab`` under the MAK of ``keys`` (else the newest)."""
        current = keys or self.current
        if current is None:
            raise TerminalKeyError("no working keys: sign on first")
        return self._mac(current, mab)

    def encode(
        self,
        codec: Iso8583Codec,
        mti: str,
        fields: dict[int, FieldValue],
        keys: TerminalKeySet | None = None,
    ) -> bytes:
        """The ISO 8583 message with its 64 under the MAK of ``keys`` (else the newest;
        a message that takes one; others as they are)."""
        current = keys or self.current
        if mti not in MAC_MTIS or current is None:
            return codec.encode(mti, fields)
        encoded = codec.encode(mti, {**fields, 64: bytes(8)})
        mab = encoded[:-8]
        return mab + self._mac(current, mab)

    def verify(
        self, data: bytes, fields: dict[int, FieldValue], first: TerminalKeySet | None = None
    ) -> bool | None:
        """Whether a response's 64 verifies under ``first`` or one of the recent MAKs;
        None when it carries none."""
        mac = fields.get(64)
        if not isinstance(mac, bytes):
            return None
        if len(mac) != 8 or not data.endswith(mac):
            return False
        mab = data[:-8]
        candidates = [first] if first is not None else []
        return any(
            self._alg.macs_equal(self._mac(keys, mab), mac)
            for keys in (*candidates, *self.key_sets)
        )

    def pin_fields(
        self, pin: str, pan: str, keys: TerminalKeySet | None = None
    ) -> dict[int, FieldValue]:
        """The PIN of a request under the PIK of ``keys`` (else the newest): 52 and 53
        (``3des``), or 62 and 53 (``sm4``)."""
        current = keys or self.current
        if current is None:
            raise TerminalKeyError("no working keys: sign on first")
        alg = self._alg
        pik_cipher = LAYOUT_CIPHERS[current.layout][1]
        size = alg.pin_block_bytes(pik_cipher)
        block = alg.ecb_encrypt(pik_cipher, current.pik, alg.clear_pin_block(pin, pan, size))
        return {62 if current.layout == "005" else 52: block, 53: SECURITY_CONTROL[current.layout]}

    # -- a state file (the CLI's session) -----------------------------------------------

    def state(self) -> bytes:
        return msgspec.json.encode({"layout": self.layout, "sets": self.key_sets})

    def restore(self, state: bytes) -> None:
        loaded = msgspec.json.decode(state, type=dict[str, object])
        if loaded.get("layout") != self.layout:
            return
        self.key_sets = msgspec.convert(loaded.get("sets", []), list[TerminalKeySet])


def with_pin(
    message: tuple[str, dict[int, FieldValue]],
    security: TerminalSecurity,
    pin: str,
    keys: TerminalKeySet | None = None,
) -> tuple[str, dict[int, FieldValue]]:
    """``message`` with a PIN: 22's third digit 1 and the PIN fields of the key set."""
    mti, fields = message
    entry_mode = str(fields.get(22, "021"))
    out = {**fields, 22: entry_mode[:2] + "1"}
    pan = str(fields.get(2) or str(fields.get(35, "")).partition("=")[0])
    out.update(security.pin_fields(pin, pan, keys))
    return mti, out
