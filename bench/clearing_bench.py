"""How long a bank clearing file (settlement.md) takes to decode, and to encode.

``python -m bench.clearing_bench [--records N] [--repeats R]`` builds a file of N detail
records (1,000,000 by default), then times
:func:`decode_clearing_file` and :func:`encode_clearing_file` on it, best of R, and
prints one JSON line. The records vary in STAN, RRN, amount and direction, and some
have padded text fields, as a real day's do.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, date, datetime

import msgspec

from switch.wire.clearing import (
    ClearingHeader,
    ClearingRecord,
    decode_clearing_file,
    encode_clearing_file,
)


class ClearingTiming(msgspec.Struct, frozen=True, kw_only=True):
    records: int
    file_bytes: int
    decode_s: float
    decode_cpu_s: float
    """The process's CPU time for the best decode: what other load on the machine
    adds to decode_s, it does not."""
    encode_s: float
    decode_records_per_s: float


def sample_records(count: int) -> list[ClearingRecord]:
    return [
        ClearingRecord(
            mti="0200" if n % 10 else "0400",
            processing_code="000000",
            stan=f"{n % 1_000_000:06d}",
            transmission="1122063015",
            rrn=f"{532614000000 + n:012d}",
            amount=100 + n % 99_900,
            currency="156",
            response_code="00",
            auth_code=f"{n % 1_000_000:06d}" if n % 10 else "",
            terminal_id=f"POS{n % 500:05d}",
            merchant_id=f"8983100489{n % 90_000:05d}" if n % 3 else "SHOP01",
            masked_pan="622202*********2221" if n % 2 else "622848******0001",
            direction="D" if n % 10 else "C",
        )
        for n in range(count)
    ]


def _best(repeats: int, operation: Callable[[], object]) -> tuple[float, float]:
    """The shortest of ``repeats`` runs: (wall seconds, CPU seconds)."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        operation()
        best = min(best, (time.perf_counter() - start, time.process_time() - start_cpu))
    return best


def run(records: int, repeats: int) -> ClearingTiming:
    created = datetime(2025, 11, 22, 15, 0, tzinfo=UTC)
    header = ClearingHeader(date(2025, 11, 22), "1020000", created)
    rows = sample_records(records)
    data = encode_clearing_file(header, rows)
    assert decode_clearing_file(data).records == tuple(rows)
    decode_s, decode_cpu_s = _best(repeats, lambda: decode_clearing_file(data))
    encode_s, _ = _best(repeats, lambda: encode_clearing_file(header, rows))
    return ClearingTiming(
        records=records,
        file_bytes=len(data),
        decode_s=round(decode_s, 3),
        decode_cpu_s=round(decode_cpu_s, 3),
        encode_s=round(encode_s, 3),
        decode_records_per_s=round(records / decode_s),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(msgspec.json.encode(run(args.records, args.repeats)).decode())


if __name__ == "__main__":
    main()
