"""The message trace: each message in and out, field by field (switch.wire.dump: card
data masked, PIN blocks, keys and MACs never shown), as ``trace`` log lines.

Who is traced is chosen while the switch runs, through the admin interface (``POST
/trace``): every message, or those of some terminals (field 41), merchants (42, or an
online request's ``merchant_id``) or banks; ``DELETE /trace`` ends it. With ``[log]
level = "debug"`` every message is traced. A traced request's connection is traced
until it closes, so that its answers (an online result names no merchant) are too.

Its cost when nobody is traced is one attribute read a message (``active``); a traced
message is decoded again for its line. ``trace`` lines pass whatever the log level
(switch.log's filter): the operator asked for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec
import structlog

from switch.log import debug_enabled
from switch.wire import dump
from switch.wire.framing import split_pos_frame
from switch.wire.iso8583 import FieldValue, Iso8583Codec

log = structlog.get_logger()

MAX_SELECTED: Final = 100
"""Terminals, merchants and banks traced at once, at most (each list)."""


class TraceSelection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Who is traced (``POST /trace``'s body, ``GET /trace``'s answer)."""

    all: bool = False
    terminals: list[str] = msgspec.field(default_factory=list)
    merchants: list[str] = msgspec.field(default_factory=list)
    banks: list[str] = msgspec.field(default_factory=list)

    def problem(self) -> str | None:
        for name in ("terminals", "merchants", "banks"):
            values: list[str] = getattr(self, name)
            if len(values) > MAX_SELECTED:
                return f"{name}: at most {MAX_SELECTED}"
            if any(not value or len(value) > 40 for value in values):
                return f"{name}: each 1 to 40 characters"
        return None

    @property
    def empty(self) -> bool:
        return not (self.all or self.terminals or self.merchants or self.banks)


class TraceAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """``/trace``'s answer: the selection in force, and the workers that did not take
    it (a switch of several processes)."""

    selection: TraceSelection
    workers_not_answering: list[int] = msgspec.field(default_factory=list)


selection_decoder = msgspec.json.Decoder(TraceSelection)


class Tracer:
    """Decides which messages are traced and logs them (see the module)."""

    def __init__(
        self, pos_codec: Callable[[], Iso8583Codec | None] = lambda: None,
        bank_codec: Callable[[str], Iso8583Codec | None] = lambda bank: None,
    ) -> None:  # fmt: skip
        """The codecs are looked up when a message is traced (the config's, which a
        check of a config may not have)."""
        self.pos_codec = pos_codec
        self.bank_codec = bank_codec
        self.selection = TraceSelection()
        self._terminals: frozenset[str] = frozenset()
        self._merchants: frozenset[str] = frozenset()
        self._banks: frozenset[str] = frozenset()
        self._every = False
        self.active = False
        """Anything may be traced: read on every message, before anything else."""
        self.refresh()

    def select(self, selection: TraceSelection) -> None:
        self.selection = selection
        self._terminals = frozenset(selection.terminals)
        self._merchants = frozenset(selection.merchants)
        self._banks = frozenset(selection.banks)
        self.refresh()
        log.info(
            "trace_selected",
            all=selection.all,
            terminals=selection.terminals,
            merchants=selection.merchants,
            banks=selection.banks,
        )

    def refresh(self) -> None:
        """After the selection or the log level changed."""
        self._every = self.selection.all or debug_enabled()
        self.active = self._every or not self.selection.empty

    def _matches(self, fields: dict[str, str], bank: str | None = None) -> bool:
        return (
            self._every
            or (bank is not None and bank in self._banks)
            or fields.get("41", "").strip() in self._terminals
            or fields.get("42", "").strip() in self._merchants
            or fields.get("merchant_id", fields.get("body.merchant_id", "")) in self._merchants
        )

    def channel(self, channel: str, direction: str, payload: bytes, *, peer: str,
                traced: bool) -> bool:  # fmt: skip
        """A frame's payload in or out of the POS or online channel; whether it was
        traced (``traced``: its connection is)."""
        try:
            pos_codec = self.pos_codec() if channel == "pos" else None
            if pos_codec is not None:
                _, message = split_pos_frame(payload)
                decoded = pos_codec.decode(message)
                mti = decoded.mti
                fields = dump.iso_fields(mti, decoded.fields, pos_codec.dialect)
            else:
                mti = ""
                fields = dump.msgpack_fields(payload)
        except Exception as exc:  # what does not decode is shown as such
            if traced or self._every:
                why = dump.mask_card_numbers(str(exc))
                log.debug("trace", channel=channel, direction=direction, peer=peer,
                          undecodable=f"{len(payload)} bytes: {why}")  # fmt: skip
            return traced
        if not (traced or self._matches(fields)):
            return False
        log.debug("trace", channel=channel, direction=direction, peer=peer, mti=mti, fields=fields)
        return True

    def bank(self, bank: str, link: int, direction: str, mti: str,
             fields: dict[int, FieldValue]) -> None:  # fmt: skip
        """A message to or from a bank."""
        codec = self.bank_codec(bank)
        if codec is None:
            return
        shown = dump.iso_fields(mti, fields, codec.dialect)
        if self._matches(shown, bank):
            log.debug("trace", channel="bank", bank=bank, link=link, direction=direction,
                      mti=mti, fields=shown)  # fmt: skip
