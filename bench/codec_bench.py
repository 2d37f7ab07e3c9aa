"""ISO 8583 codec micro-benchmarks: the switch's codec against pyiso8583, same messages.

Per dialect, the pair of operations the switch does per transaction on that side:

- ``cup-pos``: decode pos-cup.md's sample sale request, encode its sample approval.
- ``h2h-ascii``: encode bank-h2h.md's sample sale, decode the simulator's approval of it.

Both codecs are first checked to produce the same bytes and values, so the comparison is
of equal work. pyiso8583 comes with the ``dev`` extra; without it the comparison is
reported as unavailable and only our own timings are given.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec

from bench.pyiso_oracle import pyiso_spec
from bench.runconfig import DIALECTS_DIR
from switch.wire.dialect import load_dialects
from switch.wire.framing import split_pos_frame
from switch.wire.iso8583 import FieldValue, Iso8583Codec
from switch.wire.samples import BANK_SALE_FIELDS, POS_SALE_FRAME
from switch.wire.samples import POS_SALE_APPROVAL_FIELDS as POS_APPROVAL_FIELDS

BANK_APPROVAL_FIELDS: Final[dict[int, FieldValue]] = {
    # What a bank echoes (bank-h2h.md, "Messages"), plus 15, 38 and 39.
    **{n: v for n, v in BANK_SALE_FIELDS.items() if n in (2, 3, 4, 7, 11, 32, 37, 41, 42, 49)},
    15: "1122",
    38: "000001",
    39: "00",
}


class OperationTiming(msgspec.Struct, frozen=True, kw_only=True):
    operation: str
    ours_ns: float
    pyiso_ns: float | None
    ratio: float | None
    """pyiso8583's time over ours: how many times faster the switch's codec is."""


class DialectTiming(msgspec.Struct, frozen=True, kw_only=True):
    dialect: str
    operations: list[OperationTiming]
    pair: OperationTiming
    """Both operations together: the per-transaction cost on that side."""
    same_results: bool | None
    """Whether pyiso8583 produced the same bytes and values (None: not installed)."""


class CodecReport(msgspec.Struct, frozen=True, kw_only=True):
    pyiso8583: str | None
    """pyiso8583's version, or None when it is not installed."""
    dialects: list[DialectTiming]
    note: str = ""


def time_per_op_ns(operation: Callable[[], object], *, target_s: float, repeats: int) -> float:
    """The best of ``repeats`` timed loops, each sized to take about ``target_s``, in ns
    per call (timeit's method: the minimum is the least disturbed by other work)."""
    loops = 1
    while True:  # calibrate
        elapsed = _timed_loop(operation, loops)
        if elapsed >= target_s / 4 or loops >= 1 << 24:
            break
        loops *= 4
    loops = max(1, int(loops * target_s / max(elapsed, 1e-9)))
    return min(_timed_loop(operation, loops) for _ in range(repeats)) / loops * 1e9


def _timed_loop(operation: Callable[[], object], loops: int) -> float:
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(loops):
            operation()
        return time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def _pyiso_document(mti: str, fields: dict[int, FieldValue]) -> dict[str, str]:
    # The sample messages hold no b or z fields, so every value passes as it is.
    return {"t": mti, **{str(number): str(value) for number, value in fields.items()}}


class _Case(msgspec.Struct, frozen=True):
    """One dialect's two operations as closures for both codecs."""

    dialect: str
    names: tuple[str, str]
    ours: tuple[Callable[[], object], Callable[[], object]]
    pyiso: tuple[Callable[[], object], Callable[[], object]] | None
    same_results: bool | None


def _cases(pyiso: Any) -> list[_Case]:
    dialects = load_dialects(DIALECTS_DIR)
    pos = Iso8583Codec(dialects["cup-pos"])
    bank = Iso8583Codec(dialects["h2h-ascii"])
    pos_sale = split_pos_frame(POS_SALE_FRAME[2:])[1]
    bank_approval = bank.encode("0210", BANK_APPROVAL_FIELDS)
    pos_ours = (lambda: pos.decode(pos_sale), lambda: pos.encode("0210", POS_APPROVAL_FIELDS))
    bank_ours = (lambda: bank.encode("0200", BANK_SALE_FIELDS), lambda: bank.decode(bank_approval))
    if pyiso is None:
        return [
            _Case("cup-pos", ("decode sale", "encode approval"), pos_ours, None, None),
            _Case("h2h-ascii", ("encode sale", "decode approval"), bank_ours, None, None),
        ]
    pos_spec, bank_spec = pyiso_spec(dialects["cup-pos"]), pyiso_spec(dialects["h2h-ascii"])
    pos_doc = _pyiso_document("0210", POS_APPROVAL_FIELDS)
    bank_doc = _pyiso_document("0200", BANK_SALE_FIELDS)
    pos_theirs = (
        lambda: pyiso.decode(pos_sale, pos_spec),
        lambda: pyiso.encode(pos_doc, pos_spec),
    )
    bank_theirs = (
        lambda: pyiso.encode(bank_doc, bank_spec),
        lambda: pyiso.decode(bank_approval, bank_spec),
    )
    pos_same = (
        bytes(pyiso.encode(dict(pos_doc), pos_spec)[0]) == pos.encode("0210", POS_APPROVAL_FIELDS)
        and _fields_of(pyiso.decode(pos_sale, pos_spec)[0]) == pos.decode(pos_sale).fields
    )
    bank_same = (
        bytes(pyiso.encode(dict(bank_doc), bank_spec)[0]) == bank.encode("0200", BANK_SALE_FIELDS)
        and _fields_of(pyiso.decode(bank_approval, bank_spec)[0]) == BANK_APPROVAL_FIELDS
    )
    return [
        _Case("cup-pos", ("decode sale", "encode approval"), pos_ours, pos_theirs, pos_same),
        _Case("h2h-ascii", ("encode sale", "decode approval"), bank_ours, bank_theirs, bank_same),
    ]


def _fields_of(document: dict[str, str]) -> dict[int, FieldValue]:
    return {int(k): v for k, v in document.items() if k.isdigit() and k != "1"}


def _timing(name: str, ours_ns: float, pyiso_ns: float | None) -> OperationTiming:
    return OperationTiming(
        operation=name,
        ours_ns=round(ours_ns, 1),
        pyiso_ns=None if pyiso_ns is None else round(pyiso_ns, 1),
        ratio=None if pyiso_ns is None else round(pyiso_ns / ours_ns, 2),
    )


def run_codec_bench(*, target_s: float = 0.2, repeats: int = 5) -> CodecReport:
    pyiso: Any
    try:
        from importlib.metadata import version

        import iso8583 as pyiso

        pyiso_version: str | None = version("pyiso8583")
    except ImportError:
        pyiso, pyiso_version = None, None
    results: list[DialectTiming] = []
    for case in _cases(pyiso):
        operations: list[OperationTiming] = []
        totals = [0.0, 0.0]
        for index, name in enumerate(case.names):
            ours = time_per_op_ns(case.ours[index], target_s=target_s, repeats=repeats)
            theirs = (
                None
                if case.pyiso is None
                else time_per_op_ns(case.pyiso[index], target_s=target_s, repeats=repeats)
            )
            operations.append(_timing(name, ours, theirs))
            totals[0] += ours
            totals[1] += theirs or 0.0
        pair = _timing(" + ".join(case.names), totals[0], totals[1] if case.pyiso else None)
        results.append(
            DialectTiming(
                dialect=case.dialect,
                operations=operations,
                pair=pair,
                same_results=case.same_results,
            )
        )
    note = "" if pyiso is not None else "pyiso8583 is not installed (pip install -e '.[dev]')"
    return CodecReport(pyiso8583=pyiso_version, dialects=results, note=note)
