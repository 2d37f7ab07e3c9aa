"""The statements each change of the journal port writes, for either engine: which
tables a change touches, in which order within a group (the ranks), with which values.
Each engine gives its own SQL for them (:class:`Statements`) and what it adds of its
own to a row (PostgreSQL: the worker that wrote a transaction, the claimant of an
attempt's result)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec

from switch.store.port import (
    AdviceAttempted,
    AdviceQueued,
    BankOnlyFound,
    BatchRecordsUploaded,
    BatchSettled,
    BatchUploadEnded,
    Change,
    HoldMoved,
    OnlineResultKept,
    OnlineResultsPurged,
    ReversalAttempted,
    ReversalQueued,
    RiskMarked,
    TxnStarted,
    TxnUpdated,
)
from switch.store.rows import event_line, txn_values
from switch.store.stip_claim import RECENT_S as STIP_RECENT_S


class Write(NamedTuple):
    """One statement and its parameters. ``rank`` orders statements within a group so
    that, for example, every insert of a row runs before any update of it; writes of
    equal rank keep the order they were given in."""

    rank: int
    statement: str
    parameters: tuple[Any, ...]


# Statement ranks: within a group, rows are inserted before they are updated.
_RANK_INSERT_TXN, _RANK_UPDATE_TXN = 10, 30
_RANK_INSERT_SAF, _RANK_UPDATE_SAF, _RANK_IDEMPOTENCY, _RANK_PURGE = 40, 50, 60, 70
# An advice is queued after its sale's row is written (or updated, after a bank's 91).
_RANK_INSERT_ADVICE, _RANK_UPDATE_ADVICE, _RANK_TXN_ADVICE = 41, 51, 52
# A stand-in's caps are claimed once every advice row and state of the group is written.
_RANK_TAKE_STIP_CAP, _RANK_CHECK_STIP_CAP = 53, 54
# A settlement answered anew clears the batch's upload before records of one are put.
_RANK_SETTLE_BATCH, _RANK_CLEAR_UPLOAD, _RANK_UPLOAD, _RANK_END_UPLOAD = 80, 81, 90, 95


class Statements(msgspec.Struct, frozen=True, kw_only=True):
    """An engine's SQL for each write, its parameters in the order writes_of gives."""

    insert_txn: str
    """Parameters: the row's values (``TXN_COLUMNS``), its history (its first event's
    line), then the engine's ``txn_extra``."""
    insert_txn_once: str
    """The same, doing nothing when the RRN is there already."""
    update_txn: str
    """Parameters: state, code, auth_code, balance, refunded, voided, reversed,
    hold_state, updated_at, the event's line (appended to the row's history), rrn."""
    move_hold: str
    """Parameters: hold_state, updated_at, the event's line, rrn."""
    mark_risk: str
    """An on-us payment's customer, funding and risk columns (parameters: customer_id,
    funding, risk_version, risk_rule, risk_review, risk_shadow, updated_at, rrn)."""
    insert_saf: str
    update_saf: str
    put_idempotency: str
    purge_idempotency: str
    put_batch_settlement: str
    clear_batch_upload: str
    put_batch_upload: str
    end_batch_upload: str
    insert_advice: str
    """Parameters: rrn, bank, reason, next_attempt_at, created_at, updated_at,
    local_time, entry_mode, condition_code, mcc."""
    update_advice: str
    """Parameters: state, attempts, next_attempt_at, last_result, accepted_date,
    updated_at, id."""
    txn_advice: str
    """Parameters: stand_in (kept when None), advice_state, bank_mti, bank_stan,
    transmission (each kept when None), updated_at, the event's line, rrn."""
    take_stip_cap: str
    check_stip_cap: str
    """A stood-in approval's claim on its bank's caps (``store/stip_claim.py``)."""
    flag: Callable[[bool], Any]
    """A boolean as the engine stores it."""


def writes_of(
    change: Change,
    sql: Statements,
    *,
    txn_extra: tuple[Any, ...] = (),
    attempt_extra: tuple[Any, ...] = (),
) -> tuple[Write, ...]:
    """The statements one change writes; ``txn_extra`` ends each inserted txn row,
    ``attempt_extra`` each recorded attempt's parameters."""
    match change:
        # A transaction's events ride on the statement that writes its row (its
        # history, design.md): no row of their own, no page of their own in the WAL.
        case TxnStarted(record=record, at=at):
            started = event_line(at, record.state, record.code, None)
            values: tuple[Any, ...] = (*txn_values(record, at), started, *txn_extra)
            return (Write(_RANK_INSERT_TXN, sql.insert_txn, values),)
        case TxnUpdated():
            values = (
                change.state, change.code, change.auth_code, change.balance, change.refunded,
                sql.flag(change.voided), sql.flag(change.reversed), change.hold_state, change.at,
                event_line(change.at, change.state, change.code, change.detail), change.rrn,
            )  # fmt: skip
            return (Write(_RANK_UPDATE_TXN, sql.update_txn, values),)
        case HoldMoved(rrn=rrn, hold_state=hold_state, at=at, detail=detail):
            line = event_line(at, "approved", None, detail)
            return (Write(_RANK_UPDATE_TXN, sql.move_hold, (hold_state, at, line, rrn)),)
        case RiskMarked():
            values = (
                change.customer_id, change.funding, change.risk_version, change.risk_rule,
                change.risk_review, change.risk_shadow, change.at, change.rrn,
            )  # fmt: skip
            return (Write(_RANK_UPDATE_TXN, sql.mark_risk, values),)
        case ReversalQueued(rrn=rrn, bank=bank, reason=reason, at=at):
            return (Write(_RANK_INSERT_SAF, sql.insert_saf, (rrn, bank, reason, at, at, at)),)
        case ReversalAttempted():
            values = (
                change.state, change.attempts, change.next_attempt_at, change.result, change.at,
                change.saf_id, *attempt_extra,
            )  # fmt: skip
            return (Write(_RANK_UPDATE_SAF, sql.update_saf, values),)
        case AdviceQueued(rrn=rrn, bank=bank, reason=reason, at=at):
            advice = (
                rrn, bank, reason, at, at, at, change.local_time, change.entry_mode,
                change.condition_code, change.mcc,
            )  # fmt: skip
            line = event_line(at, "approved", "00", f"stood in ({reason}): advice queued")
            queued = (
                Write(_RANK_INSERT_ADVICE, sql.insert_advice, advice),
                Write(_RANK_TXN_ADVICE, sql.txn_advice,
                      (reason, "queued", None, None, None, at, line, rrn)),
            )  # fmt: skip
            caps = change.caps
            if caps is None:
                return queued
            card_fen, card_count, pending_fen = caps
            check = (
                card_fen, card_count, card_count, rrn, bank, at - STIP_RECENT_S, pending_fen,
                bank, at, bank,
            )  # fmt: skip
            return (
                *queued,
                Write(_RANK_TAKE_STIP_CAP, sql.take_stip_cap, (bank, at)),
                Write(_RANK_CHECK_STIP_CAP, sql.check_stip_cap, check),
            )
        case AdviceAttempted():
            sent = change.sent
            values = (
                change.state, change.attempts, change.next_attempt_at, change.result,
                change.accepted_date, change.at, change.advice_id,
            )  # fmt: skip
            detail = f"advice {change.state} after {change.attempts} sent: {change.result}"
            txn = (
                None, change.state, sent.mti if sent else None, sent.stan if sent else None,
                sent.transmission if sent else None, change.at,
                event_line(change.at, "approved", None, detail), change.rrn,
            )  # fmt: skip
            return (
                Write(_RANK_UPDATE_ADVICE, sql.update_advice, values),
                Write(_RANK_TXN_ADVICE, sql.txn_advice, txn),
            )  # fmt: skip
        case OnlineResultKept():
            values = (
                change.merchant_id, change.online_id, change.fingerprint, change.response,
                change.at,
            )  # fmt: skip
            return (Write(_RANK_IDEMPOTENCY, sql.put_idempotency, values),)
        case BankOnlyFound(record=record, reason=reason, at=at):
            return (
                Write(_RANK_INSERT_TXN, sql.insert_txn_once,
                      (*txn_values(record, at), None, *txn_extra)),
                Write(_RANK_INSERT_SAF, sql.insert_saf,
                      (record.rrn, record.bank, reason, at, at, at)),
            )  # fmt: skip
        case OnlineResultsPurged(before=before):
            return (Write(_RANK_PURGE, sql.purge_idempotency, (before,)),)
        case BatchSettled(settled=settled):
            batch_key = (settled.terminal_id, settled.merchant_id, settled.batch)
            values = (
                *batch_key, settled.terminal_totals.field48(saturate=True),
                settled.switch_totals.field48(saturate=True), settled.result,
                settled.business_date, settled.rrn, settled.settled_at,
            )  # fmt: skip
            return (
                Write(_RANK_SETTLE_BATCH, sql.put_batch_settlement, values),
                Write(_RANK_CLEAR_UPLOAD, sql.clear_batch_upload, batch_key),
            )
        case BatchRecordsUploaded(records=records, at=at):
            batch_key = (change.terminal_id, change.merchant_id, change.batch)
            rows = [(*batch_key, record.kind, record.stan, record.amount, at) for record in records]
            return tuple(Write(_RANK_UPLOAD, sql.put_batch_upload, row) for row in rows)
        case BatchUploadEnded(total=total):
            values = (total, change.terminal_id, change.merchant_id, change.batch)
            return (Write(_RANK_END_UPLOAD, sql.end_batch_upload, values),)
    raise AssertionError(f"unknown change {type(change).__name__}")
