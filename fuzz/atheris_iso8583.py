"""libFuzzer (atheris) harness for the POS side of the wire: the 2-byte framer, the
POS envelope, the ISO 8583 codec of both shipped dialects, and the mapping of a decoded
POS message into the model. Run by hand (see fuzz/README.md); not part of the suite.

Any exception other than the declared ones (FramingError, MessageDecodeError,
TransactionRefused) is a finding: atheris stops and writes the input to crash-<sha1>.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

with atheris.instrument_imports(include=["switch"]):
    from switch.core.pos import request_from_pos
    from switch.errors import FramingError, MessageDecodeError, TransactionRefused
    from switch.terminal import Terminal, encode_pos_request
    from switch.wire.dialect import load_dialects
    from switch.wire.framing import LengthPrefixedFramer, split_pos_frame
    from switch.wire.iso8583 import Iso8583Codec

CODECS = {
    name: Iso8583Codec(dialect)
    for name, dialect in load_dialects(REPO / "conf" / "dialects").items()
}
POS_CODEC = CODECS["cup-pos"]
BANK_CODEC = CODECS["h2h-ascii"]


def check_codec(codec: Iso8583Codec, data: bytes) -> None:
    try:
        message = codec.decode(data)
    except MessageDecodeError as exc:
        assert exc.field is None or 1 <= exc.field <= 128, exc.field
        return
    # What decodes, re-encodes (modulo an empty secondary bitmap) and decodes the same.
    assert codec.decode(codec.encode(message.mti, message.fields)) == message


def check_framer(data: bytes, step: int) -> None:
    """The same frames whether fed at once or ``step`` bytes at a time."""
    whole = LengthPrefixedFramer(prefix_bytes=2, max_frame_bytes=2048)
    pieces = LengthPrefixedFramer(prefix_bytes=2, max_frame_bytes=2048)
    frames_whole: list[bytes] = []
    frames_pieces: list[bytes] = []
    failed_whole = failed_pieces = False
    whole.feed(data)
    try:
        while (frame := whole.next_frame()) is not None:
            frames_whole.append(frame)
    except FramingError:
        failed_whole = True
    for start in range(0, len(data), step):
        pieces.feed(data[start : start + step])
        try:
            while (frame := pieces.next_frame()) is not None:
                frames_pieces.append(frame)
        except FramingError:
            failed_pieces = True
            break
    assert (frames_whole, failed_whole) == (frames_pieces, failed_pieces)
    assert data.startswith(b"".join(whole.frame(frame) for frame in frames_whole))


def check_pos_message(data: bytes) -> None:
    """A POS frame's payload: envelope, then the message, then its mapping."""
    try:
        _, message = split_pos_frame(data)
    except FramingError:
        return
    try:
        decoded = POS_CODEC.decode(message)
    except MessageDecodeError:
        return
    with contextlib.suppress(TransactionRefused):
        request_from_pos(decoded.mti, decoded.fields)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    selector, rest = data[0], data[1:]
    target = selector % 4
    if target == 0:
        check_codec(POS_CODEC, rest)
    elif target == 1:
        check_codec(BANK_CODEC, rest)
    elif target == 2:
        check_framer(rest, selector // 4 + 1)
    else:
        check_pos_message(rest)


def write_seeds(folder: Path) -> None:
    """A starting corpus: pos-cup.md's sample sale and a few other requests."""
    folder.mkdir(parents=True, exist_ok=True)
    terminal = Terminal()
    pan = "6222021000111122221"
    messages = [
        terminal.sale(123, pan, 10000),
        terminal.balance(124, pan),
        terminal.void(125, pan, 10000, "532614000123", 123),
        terminal.sign_on(126),
    ]
    for index, message in enumerate(messages):
        payload = encode_pos_request(POS_CODEC, terminal, message)
        iso = payload[11:]
        (folder / f"pos-codec-{index}").write_bytes(b"\x00" + iso)
        (folder / f"pos-frame-{index}").write_bytes(b"\x03" + payload)
        (folder / f"framer-{index}").write_bytes(
            b"\x06" + len(payload).to_bytes(2, "big") + payload
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write-seeds":
        write_seeds(Path(sys.argv[2]))
        sys.exit(0)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
