"""libFuzzer (atheris) harness for the online side of the wire: the 4-byte framer and
the MessagePack request decoder, then the mapping of a decoded request into the model.
Run by hand (see fuzz/README.md); not part of the suite.

Any exception other than the declared ones (FramingError, OnlineDecodeError,
TransactionRefused) is a finding: atheris stops and writes the input to crash-<sha1>.
FUZZ_TOLERATE names builtin exceptions of decode_request to look past (known bugs).
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sys
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

with atheris.instrument_imports(include=["switch"]):
    import msgspec

    from switch.core.online import request_from_online
    from switch.errors import FramingError, TransactionRefused
    from switch.wire import online as wire
    from switch.wire.framing import LengthPrefixedFramer


TOLERATED: tuple[type[BaseException], ...] = tuple(
    getattr(builtins, name) for name in os.environ.get("FUZZ_TOLERATE", "").split(",") if name
)
"""Builtin exceptions to look past (FUZZ_TOLERATE=UnicodeDecodeError,RecursionError):
known bugs, so that a run can find others."""


def check_request(payload: bytes) -> None:
    try:
        request = wire.decode_request(payload)
    except wire.OnlineDecodeError:
        return
    except TOLERATED:
        return
    assert wire.decode_request(wire.encode_request(request)) == request
    if isinstance(request, wire.Status):
        return
    with contextlib.suppress(TransactionRefused):
        request_from_online(request, terminal_id="ONLINE01", stan="000001")


def test_one_input(data: bytes) -> None:
    if data[:1] == b"\x00":
        # A 4-byte-framed stream: every frame in it is a request.
        framer = LengthPrefixedFramer(prefix_bytes=4, max_frame_bytes=65536)
        framer.feed(data[1:])
        try:
            while (frame := framer.next_frame()) is not None:
                check_request(frame)
        except FramingError:
            pass
    else:
        check_request(data[1:])


def write_seeds(folder: Path) -> None:
    """A starting corpus: one request of each type."""
    folder.mkdir(parents=True, exist_ok=True)
    card = {"pan": "6222021000111122221", "expiry": "2812", "cvv2": "123"}
    requests = [
        {
            "type": "purchase",
            "id": "order-1",
            "merchant_id": "898310048990001",
            "amount": 10000,
            "currency": "CNY",
            "card": card,
            "order_id": "o-1",
            "memo": "m",
        },
        {"type": "balance", "id": "b-1", "merchant_id": "M1", "card": card},
        {"type": "void", "id": "v-1", "merchant_id": "M1", "original_id": "order-1"},
        {"type": "refund", "id": "r-1", "merchant_id": "M1", "original_id": "o", "amount": 5},
        {"type": "status", "id": "s-1", "merchant_id": "M1", "original_id": "order-1"},
    ]
    for index, request in enumerate(requests):
        payload = msgspec.msgpack.encode(request)
        (folder / f"request-{index}").write_bytes(b"\x01" + payload)
        (folder / f"framed-{index}").write_bytes(
            b"\x00" + len(payload).to_bytes(4, "big") + payload
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write-seeds":
        write_seeds(Path(sys.argv[2]))
        sys.exit(0)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
