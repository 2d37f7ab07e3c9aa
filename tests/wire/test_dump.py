"""``switch decode`` and the message trace over every sample frame of the specs: each
field shown, card numbers masked, PIN blocks, keys, MACs and signatures never."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from switch import cli
from switch.log import debug_enabled
from switch.net.trace import Tracer, TraceSelection
from switch.wire import dump
from switch.wire.dialect import load_dialects
from switch.wire.iso8583 import Iso8583Codec
from tests.conftest import DIALECTS, REPO, LogSink
from tests.wire.spec_samples import CARD_NUMBERS, SECRETS, SPEC_FRAMES

CONFIG = str(REPO / "conf" / "switch.toml")
CODECS = {name: Iso8583Codec(dialect) for name, dialect in load_dialects(DIALECTS).items()}
POS, BANK = CODECS["cup-pos"], CODECS["h2h-ascii"]


def assert_nothing_secret(text: str) -> None:
    upper = text.upper()
    for pan in CARD_NUMBERS:
        assert pan not in text, pan
    for secret in SECRETS:
        assert secret not in upper, secret
        assert secret.encode().hex().upper() not in upper, secret  # as ASCII, in hex


def masked(pan: str) -> str:
    return dump.mask_number(pan)


def frames() -> list[tuple[str, bytes]]:
    return [(spec, bytes.fromhex(text)) for spec, text in SPEC_FRAMES]


SPECS = Path(os.environ.get("SWITCH_SPEC_DIR", "/work/shared/spec"))


def test_the_samples_are_every_spec_frame() -> None:
    assert len(SPEC_FRAMES) == 28
    if not SPECS.is_dir():
        pytest.skip(f"the published specs are not at {SPECS} (SWITCH_SPEC_DIR) to compare")
    found = []
    for path in sorted(SPECS.glob("*.md")):
        for block in re.findall(r"```[a-z]*\n(.*?)```", path.read_text(), re.S):
            for frame in re.split(r"\n\s*\n", block.strip()):
                compact = "".join(frame.split())
                if compact and re.fullmatch(r"[0-9a-fA-F]+", compact) and len(compact) % 2 == 0:
                    found.append((path.name, compact))
    assert found == SPEC_FRAMES  # each, in the specs' order, to the byte
    assert {dump.identify(data) for _, data in frames()} == {"pos", "bank", "online", "msgpack"}


@pytest.mark.parametrize(("spec", "data"), frames(), ids=[f"{s}-{i}" for i, (s, _) in
                                                           enumerate(frames())])  # fmt: skip
def test_decode_prints_each_spec_frame_field_by_field_masked(
    spec: str, data: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["decode", "--config", CONFIG, data.hex()]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert_nothing_secret(out)
    kind = dump.identify(data)
    lines = out.splitlines()
    if kind in ("pos", "bank"):
        codec = POS if kind == "pos" else BANK
        message = codec.decode(data[2 + (11 if kind == "pos" else 0) :])
        assert f"MTI {message.mti}" in lines
        numbers = [int(line.split()[0]) for line in lines[lines.index(f"MTI {message.mti}") + 1 :]]
        assert numbers == sorted(message.fields)  # every field, one line each
        if 2 in message.fields:
            assert masked(str(message.fields[2])) in out
        for number in (52, 62, 64, 128):
            if number in message.fields:
                row = next(line for line in lines if line.split()[0] == str(number))
                assert row.endswith(f"[hidden: {len(message.fields[number])} bytes]"), row
    else:
        assert any(line.split()[0] in ("type", "body.type") for line in lines), out
        for pan in CARD_NUMBERS:
            if pan.encode() in data:
                assert masked(pan) in out


def test_decode_refuses_what_is_no_frame_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["decode", "--config", CONFIG, "0xZZ"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert cli.main(["decode", "--config", CONFIG, "00021234"]) == 2
    err = capsys.readouterr().err
    assert "not a frame of the switch's" in err and err.count("\n") == 1
    # A POS frame cut short: the codec's problem, one line, no card number in it.
    sale = frames()[4][1]
    cut = (len(sale) - 12).to_bytes(2, "big") + sale[2:-10]
    assert cli.main(["decode", "--config", CONFIG, "--kind", "pos", cut.hex()]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("switch: decode:")
    assert_nothing_secret(err)


@pytest.fixture
def trace_log(log_sink: LogSink) -> LogSink:
    """The session's log (at level info, as a switch runs)."""
    assert not debug_enabled()
    return log_sink


def records(sink: LogSink) -> list[dict[str, Any]]:
    return sink.events()


def trace_frame(tracer: Tracer, data: bytes) -> None:
    kind = dump.identify(data)
    if kind == "pos":
        tracer.channel("pos", "in", data[2:], peer="127.0.0.1:1", traced=False)
    elif kind == "bank":
        message = BANK.decode(data[2:])
        tracer.bank("icbc", 0, "in", message.mti, message.fields)
    else:
        tracer.channel("online", "in", data[4:] if kind == "online" else data,
                       peer="127.0.0.1:2", traced=False)  # fmt: skip


def test_the_trace_logs_every_spec_frame_masked_at_level_info(trace_log: LogSink) -> None:
    tracer = Tracer(lambda: POS, lambda bank: BANK)
    for _, data in frames():
        trace_frame(tracer, data)
    assert [r for r in records(trace_log) if r["event"] == "trace"] == []  # nobody chosen
    tracer.select(TraceSelection(all=True))
    for _, data in frames():
        trace_frame(tracer, data)
    traced = [r for r in records(trace_log) if r["event"] == "trace"]
    assert len(traced) == len(SPEC_FRAMES)
    assert {r["level"] for r in traced} == {"debug"}  # written though the level is info
    assert all("fields" in r and r["fields"] for r in traced)
    assert_nothing_secret(trace_log.text())
    sale = traced[4]  # pos-cup.md's sale
    assert sale["mti"] == "0200" and sale["fields"]["2"] == masked("6222021000111122221")
    assert sale["fields"]["14"] == "[hidden: 4 bytes]"
    assert sale["fields"]["41"] == "POS00001"


def test_the_trace_follows_only_whom_it_was_told(trace_log: LogSink) -> None:
    tracer = Tracer(lambda: POS, lambda bank: BANK if bank == "icbc" else None)
    tracer.select(TraceSelection(terminals=["POS00007"]))
    by_spec = frames()
    pos_frames = [data for _, data in by_spec if dump.identify(data) == "pos"]
    for data in pos_frames:
        trace_frame(tracer, data)
    traced = [r for r in records(trace_log) if r["event"] == "trace"]
    assert {r["fields"]["41"] for r in traced} == {"POS00007"}  # risk.md's hotel terminal
    assert len(traced) == 3
    # A bank: its messages, whatever their terminal.
    tracer.select(TraceSelection(banks=["icbc"]))
    bank_frames = [data for _, data in by_spec if dump.identify(data) == "bank"]
    for data in bank_frames:
        trace_frame(tracer, data)
    traced = [r for r in records(trace_log) if r["event"] == "trace"]
    assert len([r for r in traced if r["channel"] == "bank"]) == len(bank_frames)
    # A merchant online (body.merchant_id).
    tracer.select(TraceSelection(merchants=["898310048990001"]))
    before = len(traced)
    for _, data in by_spec:
        if dump.identify(data) == "online":
            trace_frame(tracer, data)
    traced = [r for r in records(trace_log) if r["event"] == "trace"]
    assert len(traced) == before + 1  # the purchase; its result names no merchant
    tracer.select(TraceSelection())
    assert not tracer.active
