"""The POS channel: where a terminal's ISO 8583 frame enters the switch and its
answer leaves (pos-cup.md)."""

from __future__ import annotations

import msgspec
import trio

from switch.core import pos
from switch.core.clock import WALL_CLOCK, BusinessClock, Stamp
from switch.core.model import (
    KIND_NAMES,
    BatchSettlement,
    BatchUpload,
    Echo,
    Origin,
    Outcome,
    Request,
    Reversal,
    SignOn,
)
from switch.core.terminal_keys import MAC_MTIS, KeySet, MacRefused, TerminalKeys
from switch.errors import MessageDecodeError, MessageEncodeError, TransactionRefused
from switch.net.channel import CloseConnection, Reply, log_transaction
from switch.net.switchboard import Switchboard
from switch.security.software import security_event
from switch.wire.framing import TPDU_ID, PosEnvelope, join_pos_frame, split_pos_frame
from switch.wire.iso8583 import FieldValue, Iso8583Codec, Iso8583Message

DATED_MTIS = frozenset({"0100", "0200", "0220", "0400", "0500"})
"""Financial requests and batch settlement: their answers carry the business date in
field 15, refusals included (pos-cup.md)."""
REQUEST_CLASSES = "0246"
"""MTI third digit of requests, advices and notifications: the messages a terminal
sends. A response class from a terminal (1, 3, 5) cannot be answered."""


class PosWork(msgspec.Struct, gc=False):
    envelope: PosEnvelope
    message: Iso8583Message
    request: Request
    stamp: Stamp
    origin: Origin
    keys: KeySet | None = None
    """The key set whose MAK verified the request: its answer is MAC'd under it."""


class PosProtocol:
    name = "pos"
    prefix_bytes = 2

    def __init__(
        self,
        codec: Iso8583Codec,
        switchboard: Switchboard,
        *,
        acquirer_id: str,
        utc_offset_h: int,
        clock: BusinessClock = WALL_CLOCK,
        keys: TerminalKeys | None = None,
    ) -> None:
        self.codec = codec
        self.switchboard = switchboard
        self.keys = keys
        """Terminals' working keys (security.md); None: no sign-on keys and no MAC (a
        protocol built for a test of the codec alone)."""
        self.acquirer_id = acquirer_id
        self.utc_offset_h = utc_offset_h
        self.clock = clock

    def accept(self, frame: bytes, origin: Origin) -> PosWork | bytes:
        envelope, data = split_pos_frame(frame)
        if envelope.tpdu[0] != TPDU_ID:
            # Not pos-cup.md's frame at all: nothing in it can be trusted to answer.
            raise CloseConnection(f"TPDU id {envelope.tpdu[0]:#04x}, not {TPDU_ID:#04x}")
        received_at = origin.received_at
        stamp = self.clock.stamp(self.utc_offset_h)  # business time
        try:
            message = self.codec.decode(data)
        except MessageDecodeError as exc:
            return self._format_error(envelope, exc, stamp, received_at)
        if message.mti[2] not in REQUEST_CLASSES:
            raise CloseConnection(f"terminal sent a response message {message.mti}")
        if not isinstance(message.fields.get(11), str) or not isinstance(
            message.fields.get(41), str
        ):
            # An answer without 11 and 41 cannot be matched by the terminal: as for a
            # message that cannot be parsed, close the connection (pos-cup.md).
            raise CloseConnection("message without field 11 or 41")
        fields = message.fields
        keys: KeySet | None = None
        if self.keys is not None and message.mti in MAC_MTIS:
            try:
                terminal = pos.acceptor_ids(fields)[0]
            except TransactionRefused as exc:
                outcome = Outcome(code=exc.response_code, message=str(exc), field=exc.field)
                self._log(None, outcome, message, received_at)
                return self._reply(envelope, message.mti, fields, outcome, stamp)
            try:
                keys = self.keys.verify(terminal, data, fields, received_at)
            except MacRefused as exc:
                if exc.event is not None:
                    security_event(
                        exc.event, channel=self.name, terminal=terminal, stan=str(fields[11])
                    )
                outcome = Outcome(code=exc.response_code, message=str(exc))
                self._log(None, outcome, message, received_at)
                return self._reply(envelope, message.mti, fields, outcome, stamp)
        # Mapping and validation happen here, before admission: a request that fails
        # them is answered at once and never takes one of the switch's in-flight slots.
        try:
            if keys is not None:
                assert self.keys is not None
                self.keys.check_after_mac(
                    keys, str(fields.get(42, "")).rstrip(), message.mti, fields.get(60)
                )
            request = pos.request_from_pos(
                message.mti,
                fields,
                today=stamp.local.date(),  # the date of the answer's 13
                paycode_prefix=self.switchboard.paycode_prefix,
            )
            if keys is not None:
                assert self.keys is not None
                pin = self.keys.pin(keys, message.mti, fields)
                if pin is not None:
                    request = pos.with_pin(request, pin.block, pin.pik)
            if not isinstance(request, SignOn | Echo):
                self.switchboard.check_merchant(request.acceptor.merchant_id)
            elif isinstance(request, SignOn) and self.keys is not None:
                return self._sign_on(envelope, message, request, stamp, origin)
        except TransactionRefused as exc:
            outcome = Outcome(code=exc.response_code, message=str(exc), field=exc.field)
            self._log(None, outcome, message, received_at)
            return self._reply(envelope, message.mti, fields, outcome, stamp, keys=keys)
        if isinstance(request, SignOn | Echo):  # nothing to wait for: never shed
            outcome = self.switchboard.network_management(request, stamp, origin)
            self._log(request, outcome, message, received_at)
            return self._reply(envelope, message.mti, fields, outcome, stamp)
        return PosWork(envelope, message, request, stamp, origin, keys)

    def _sign_on(
        self,
        envelope: PosEnvelope,
        message: Iso8583Message,
        request: SignOn,
        stamp: Stamp,
        origin: Origin,
    ) -> bytes:
        """security.md's sign-on: 97, 03 or 40 from the terminal's entry, the sign-on
        limits (91), then fresh keys under its TMK in 62 (in force from this answer)."""
        assert self.keys is not None
        reserved = str(message.fields.get(60, ""))
        layout = reserved[8:11]
        terminal = request.acceptor.terminal_id
        tmk = self.keys.check_sign_on(terminal, request.acceptor.merchant_id, layout)
        outcome = self.switchboard.network_management(request, stamp, origin)
        extra: dict[int, FieldValue] = {}
        if outcome.code == "00" and outcome.batch is not None:
            keys = self.keys.sign_on(tmk, terminal, layout, outcome.batch, origin.received_at)
            extra[62] = keys.field_62()
        self._log(request, outcome, message, origin.received_at)
        return self._reply(envelope, message.mti, message.fields, outcome, stamp, extra=extra)

    def sheddable(self, work: PosWork) -> bool:
        return not isinstance(work.request, Reversal)

    def busy(self, work: PosWork, reason: str) -> bytes:
        message = work.message
        outcome = Outcome(code="91", message=reason)
        return self._reply(
            work.envelope, message.mti, message.fields, outcome, work.stamp, keys=work.keys
        )

    async def respond(self, work: PosWork) -> Reply:
        message = work.message
        outcome = await self.switchboard.process(work.request, work.stamp, work.origin)
        if not outcome.shed:  # refusals at the door are counted, not logged one by one
            self._log(work.request, outcome, message, work.origin.received_at)
        payload = self._reply(
            work.envelope, message.mti, message.fields, outcome, work.stamp, keys=work.keys
        )
        return Reply(payload, shed=outcome.shed)

    def _format_error(
        self, envelope: PosEnvelope, exc: MessageDecodeError, stamp: Stamp, received_at: float
    ) -> bytes:
        """30 when the MTI, 11 and 41 could be read; otherwise the connection closes."""
        fields = pos.format_error_fields(exc.fields, stamp, self.acquirer_id, mti=exc.mti or "")
        if exc.mti is None or fields is None or exc.mti[2] not in REQUEST_CLASSES:
            raise CloseConnection(f"unreadable message: {exc}")
        outcome = Outcome(code="30", message=str(exc))
        log_transaction(
            None,
            outcome,
            stats=self.switchboard.stats,
            channel=self.name,
            kind="unreadable",
            received_at=received_at,
            terminal=str(exc.fields.get(41)),
            stan=str(exc.fields.get(11)),
        )
        return self._encode(envelope, pos.response_mti(exc.mti), fields)

    def _reply(
        self,
        envelope: PosEnvelope,
        mti: str,
        request_fields: dict[int, FieldValue],
        outcome: Outcome,
        stamp: Stamp,
        *,
        keys: KeySet | None = None,
        extra: dict[int, FieldValue] | None = None,
    ) -> bytes:
        if outcome.settlement_date is None and mti in DATED_MTIS:
            outcome = msgspec.structs.replace(
                outcome, settlement_date=self.switchboard.business_date(stamp)
            )
        fields = pos.answer_fields(mti, request_fields, outcome, stamp, self.acquirer_id)
        if extra:
            fields.update(extra)
        return self._encode(envelope, pos.response_mti(mti), fields, keys=keys)

    def _encode(
        self,
        envelope: PosEnvelope,
        mti: str,
        fields: dict[int, FieldValue],
        *,
        keys: KeySet | None = None,
    ) -> bytes:
        """The answer's frame; with ``keys``, MAC'd under their MAK (security.md: the
        answer to a request whose MAC verified carries 64, whatever its code)."""
        try:
            if keys is None or self.keys is None:
                return join_pos_frame(envelope.reply(), self.codec.encode(mti, fields))
            encoded = self.codec.encode(mti, {**fields, 64: bytes(8)})
        except MessageEncodeError as exc:
            raise CloseConnection(f"cannot encode the answer: {exc}") from None
        mab = encoded[:-8]
        return join_pos_frame(envelope.reply(), mab + self.keys.mac(keys, mab))

    def _log(
        self, request: Request | None, outcome: Outcome, message: Iso8583Message, received_at: float
    ) -> None:
        fields = message.fields
        log_transaction(
            request,
            outcome,
            stats=self.switchboard.stats,
            channel=self.name,
            kind=KIND_NAMES[type(request)] if request is not None else message.mti,
            received_at=received_at,
            terminal=str(fields.get(41, "")).rstrip(),
            merchant=str(fields.get(42, "")).rstrip(),
            stan=str(fields.get(11, "")),
            extra=_batch_facts(request, outcome),
        )


def _batch_facts(request: Request | None, outcome: Outcome) -> dict[str, object] | None:
    """What a settlement's or upload's line adds: which batch, and what became of it."""
    if isinstance(request, BatchSettlement):
        return {"batch": request.batch, "batch_result": outcome.batch_result}
    if isinstance(request, BatchUpload):
        return {"batch": request.batch, "records": len(request.records), "total": request.total}
    return None


_ = trio  # the protocol's coroutines run under trio, in the channel's nursery
