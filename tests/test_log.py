"""The log stream is JSON lines only: the standard library's logging, exceptions and
crashes each come out as one line, never as a traceback of many."""

from __future__ import annotations

import json
import logging
import math
import resource
import signal
from pathlib import Path

import pytest
import structlog
import trio

from switch.errors import ConfigError
from switch.log import describe_exception, info_line, set_log_level
from switch.startup import Startup
from tests.conftest import LogSink, make_config
from tests.switch_process import Process, demo_config, write_config


def test_stdlib_logging_with_a_traceback_is_one_json_line(log_sink: LogSink) -> None:
    try:
        raise OSError(24, "Too many open files")
    except OSError:
        # What trio's serve_listeners does when accept fails.
        logging.getLogger("tests.accept").error(
            "accept returned %s; retrying", "EMFILE", exc_info=True
        )
    (line,) = b"".join(log_sink.lines).splitlines()
    record = json.loads(line)
    assert record["event"] == "accept returned EMFILE; retrying"
    assert record["logger"] == "tests.accept" and record["level"] == "error"
    assert record["exception"].startswith("OSError: [Errno 24] Too many open files (tests/")
    assert "test_log.py" in record["exception"]


def test_a_card_number_typed_in_groups_is_masked_in_the_log(log_sink: LogSink) -> None:
    """The log's detector (shared with the online channel's check of free text) finds a
    card number as people type it, in groups, and leaves date-like numbers alone."""
    structlog.get_logger().warning(
        "typed", note="card 6222 0210 0011 1122 221 or 6222-0210-0011-1122-221",
        order="ORD-2025-11-22-0001",
    )  # fmt: skip
    (line,) = b"".join(log_sink.lines).splitlines()
    record = json.loads(line)
    assert record["note"] == "card 622202*********2221 or 622202*********2221"
    assert record["order"] == "ORD-2025-11-22-0001"


def test_the_shortest_card_number_and_track2_are_masked_at_the_digit_count_s_edge(
    log_sink: LogSink,
) -> None:
    """A text is only scanned when it holds 12 digits or more: a 12-digit card number
    (with nothing else numeric beside it) is still masked, and track 2 too."""
    structlog.get_logger().warning(
        "short", note="card 622202100013 end", t2="x 622202100013=2512 y", ip="127.0.0.1:5555"
    )
    (line,) = b"".join(log_sink.lines).splitlines()
    record = json.loads(line)
    assert record["note"] == "card 622202**0013 end"
    assert record["t2"] == "x <track2 redacted> y"
    assert record["ip"] == "127.0.0.1:5555"


def test_the_transaction_line_is_the_chain_s_line_without_the_chain(log_sink: LogSink) -> None:
    """info_line writes what structlog's processors would (key order, contextvars, level,
    timestamp's form, card data redacted, bytes withheld), and nothing below the level."""
    fields: dict[str, object] = {
        "channel": "pos", "kind": "sale", "terminal": "B0000001", "merchant": "898110048990001",
        "pan": "622202*********2221", "amount_fen": 100, "rrn": "532614000123", "code": "05",
        "latency_ms": 1.25, "journal_ms": None,
        "reason": "bank said: card 6222021000111122221 refused", "blob": b"\x01\x02",
        "track2": "6222021000111122221=2512", "peer": "ignored: the call's own wins",
    }  # fmt: skip
    with structlog.contextvars.bound_contextvars(peer="127.0.0.1:4242", connection=7):
        structlog.get_logger().info("txn", **fields)
        info_line("txn", dict(fields))
    chain, direct = (json.loads(line) for line in b"".join(log_sink.lines).splitlines())
    assert direct["reason"] == "bank said: card 622202*********2221 refused"
    assert direct["blob"] == "<bytes redacted>" and direct["track2"] == "<redacted>"
    assert direct["connection"] == 7 and direct["peer"] == "ignored: the call's own wins"
    assert len(direct["timestamp"]) == len(chain["timestamp"])
    assert direct["timestamp"].endswith("Z")
    del chain["timestamp"], direct["timestamp"]
    assert list(direct.items()) == list(chain.items())
    log_sink.lines.clear()
    set_log_level("warning")
    try:
        info_line("txn", dict(fields))
    finally:
        set_log_level("info")
    assert log_sink.lines == []


def test_an_exception_group_is_described_in_one_line() -> None:
    try:
        raise ExceptionGroup(
            "nursery", [ValueError("first\nline"), ExceptionGroup("inner", [KeyError("k")])]
        )
    except ExceptionGroup as group:
        text = describe_exception(group)
    # Leaves in order, each on one line (these were never raised: no frame to name).
    assert text == "ValueError: first line; KeyError: 'k'"
    # The switch's own errors say what is wrong in their words alone.
    assert describe_exception(ConfigError("banks.icbc.dialect: no dialect 'x'")) == (
        "banks.icbc.dialect: no dialect 'x'"
    )


def test_a_crash_after_the_switch_started_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], log_sink: LogSink
) -> None:
    startup = Startup(make_config())

    async def crash_while_serving(started: Startup) -> None:
        started.listening()
        async with trio.open_nursery() as nursery:  # a task's error, as nurseries raise it
            nursery.start_soon(_fail)

    assert startup.run(crash_while_serving) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("switch: stopped by an error: RuntimeError: the disk went away (")
    (crashed,) = log_sink.events("switch_crashed")
    assert crashed["exception"].startswith("RuntimeError: the disk went away (")
    assert "Traceback" not in log_sink.text()


async def _fail() -> None:
    await trio.lowlevel.checkpoint()
    raise RuntimeError("the disk went\naway")


def _descriptor_limit(count: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


@pytest.mark.slow
async def test_trio_accept_errors_in_a_real_process_are_one_json_line(tmp_path: Path) -> None:
    """A bank simulator with 16 descriptors, sent 24 connections: trio's accept fails
    with EMFILE and logs it through the standard library, every 0.1 s, each time with a
    traceback. The log has it as a JSON line with the exception on one line, at most
    once a second."""
    config = write_config(tmp_path, demo_config(tmp_path), "sim.toml")
    sim = await Process.start(
        ["sim-bank", "--config", str(config), "--bank", "icbc", "--port", "0"],
        tmp_path,
        name="sim",
        preexec_fn=lambda: _descriptor_limit(16),
    )
    streams: list[trio.SocketStream] = []
    try:
        port = int((await sim.wait_for_event("simulator_started"))["port"])
        for _ in range(24):
            streams.append(await trio.open_tcp_stream("127.0.0.1", port))
        began = trio.current_time()
        emfile = await sim.wait_for(lambda r: r.get("logger") == "trio.serve_listeners")
        assert "EMFILE" in emfile["event"]
        assert "Too many open files" in emfile["exception"]
        await trio.sleep(0.5)  # trio retries every 0.1 s: let it fail a few times more
    finally:
        for stream in streams:
            await stream.aclose()
        sim.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await sim.process.wait() == 0, sim.output()
    logged_s = trio.current_time() - began
    accept_lines = [r for r in sim.records() if r.get("logger") == "trio.serve_listeners"]
    assert len(accept_lines) <= 1 + math.ceil(logged_s)  # at most one a second
    assert "Traceback" not in sim.output()
    assert all("\n" not in str(value) for r in sim.records() for value in r.values())
