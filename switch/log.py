"""structlog, configured once: JSON lines on stdout, card data redacted.

Processors run in this order: contextvars merged first (trio copies them into each
task, so connection and link context follows the work), level, events logged at a
bounded rate, ISO UTC timestamp, an exception as a one-line field, the redaction step,
then JSON. The redaction step is the guarantee behind PCI DSS 3.3: even if a full card
number reaches a log call by mistake, only its masked form is written.

Every line of the stream is one JSON object: the standard library's ``logging`` (trio
logs accept errors through it, with tracebacks) is routed through the same processors,
and :func:`log_uncaught_exceptions` does the same for exceptions nothing caught, in any
thread, and for warnings.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, MutableMapping
from types import TracebackType
from typing import Any, BinaryIO, Final, Literal, TextIO

import msgspec
import structlog

from switch.core.model import mask_pan
from switch.core.validate import DIGIT_RUN, TRACK2_SHAPE, card_number_digits
from switch.errors import SwitchError

SENSITIVE_KEYS: Final = frozenset({"track2", "pin_block", "cvv2", "cvv", "pin", "track"})
UNSCANNED_KEYS: Final = frozenset(
    {"event", "level", "timestamp", "rrn", "original_rrn", "stan", "bank_stan", "merchant"}
)
"""Keys whose values are switch-assigned numbers or ids, never card data: an RRN or a
merchant id that happens to pass the Luhn check must not be masked."""


_WITHOUT_DIGITS: Final = str.maketrans("", "", "0123456789")


def _mask_match(match: re.Match[str]) -> str:
    digits = card_number_digits(match)
    return mask_pan(digits) if digits is not None else match.group(0)


def redact_text(text: str) -> str:
    """Masks anything that looks like track 2 or a Luhn-valid card number (what
    ``switch.core.validate.holds_card_data`` detects)."""
    # Both need at least 12 digits (0-9): a text with fewer is let through untouched,
    # without the two scans (the transaction line's masked card number, a peer).
    if len(text) < 12 or len(text) - len(text.translate(_WITHOUT_DIGITS)) < 12:
        return text
    text = TRACK2_SHAPE.sub("<track2 redacted>", text)
    return DIGIT_RUN.sub(_mask_match, text)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes):
        return "<bytes redacted>"
    if isinstance(value, dict):
        return {key: _redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    return value


def redact_card_data(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: drops sensitive keys and masks card numbers in values."""
    for key in list(event_dict):
        if key in SENSITIVE_KEYS:
            event_dict[key] = "<redacted>"
        elif key not in UNSCANNED_KEYS:
            event_dict[key] = _redact(event_dict[key])
    return event_dict


def describe_exception(exc: BaseException) -> str:
    """An exception in one line: ``Type: message (file:line in function)`` at the frame
    that raised it, and each of a group's exceptions, ``; `` between them. The
    switch's own errors (SwitchError) say what is wrong in their message alone."""
    return "; ".join(_describe_one(leaf) for leaf in exception_leaves(exc))


def exception_leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions an exception group holds, however nested (trio's nurseries nest
    them); an exception that is not a group is its own leaf."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from exception_leaves(inner)
    else:
        yield exc


def _describe_one(exc: BaseException) -> str:
    message = " ".join(str(exc).split())  # a multi-line message on one line
    if isinstance(exc, SwitchError):
        return message or type(exc).__name__
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" ({_short_path(last.filename)}:{last.lineno} in {last.name})"
    return text


def _short_path(filename: str) -> str:
    """The path from the package on (``trio/...``, ``switch/...``): enough to find it."""
    parts = filename.split("/")
    for marker, keep_marker in (("site-packages", False), ("switch", True), ("lib", False)):
        if marker in parts[:-1]:
            index = len(parts) - 1 - parts[::-1].index(marker)
            return "/".join(parts[index if keep_marker else index + 1 :])
    return "/".join(parts[-2:])


def one_line_exception(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``exc_info`` becomes an ``exception`` field of one line
    (a traceback of many lines would break the stream into lines that are not JSON)."""
    exc_info = event_dict.pop("exc_info", None)
    event_dict.pop("stack_info", None)
    if not exc_info:
        return event_dict
    if isinstance(exc_info, BaseException):
        exc: BaseException | None = exc_info
    elif isinstance(exc_info, tuple):
        exc = exc_info[1]
    else:
        exc = sys.exc_info()[1]
    if exc is not None:
        event_dict["exception"] = describe_exception(exc)
    return event_dict


class RateLimitedEvents:
    """structlog processor: each named event (or stdlib logger) is written at most once
    per its interval and per channel; the line written says in ``count`` how many
    happened since the last one (itself included). The rest are dropped, so a storm of
    the same event (a refused connection per attacker) cannot flood the log."""

    def __init__(self, intervals_s: dict[str, float]) -> None:
        self._intervals_s = intervals_s
        self._next_at: dict[tuple[str, object], float] = {}
        self._dropped: dict[tuple[str, object], int] = {}

    def __call__(
        self, _logger: object, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        name = event_dict.get("logger") or event_dict.get("event")
        interval_s = self._intervals_s.get(name) if isinstance(name, str) else None
        if interval_s is None:
            return event_dict
        key = (str(name), event_dict.get("channel"))
        now = time.monotonic()
        if now < self._next_at.get(key, 0.0):
            self._dropped[key] = self._dropped.get(key, 0) + 1
            raise structlog.DropEvent
        self._next_at[key] = now + interval_s
        event_dict["count"] = self._dropped.pop(key, 0) + 1
        return event_dict


STDLIB_RATE_LIMITED_S: Final = {"trio.serve_listeners": 1.0}
"""Standard-library loggers that repeat themselves: trio logs every failed accept
(EMFILE: every 0.1 s while it lasts), each with a traceback."""


_json_encoder: Final = msgspec.json.Encoder()


def _serialize(event_dict: Any, **_kw: Any) -> bytes:
    try:
        return _json_encoder.encode(event_dict)
    except TypeError:
        return _json_encoder.encode({key: str(value) for key, value in event_dict.items()})


class _ToStructlog(logging.Handler):
    """Hands standard-library records to structlog: same processors, same stream."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = max(logging.DEBUG, min(logging.CRITICAL, record.levelno // 10 * 10))
            message = " ".join(record.getMessage().split())  # a warning's source line too
            structlog.get_logger().log(level, message, logger=record.name, exc_info=record.exc_info)
        except Exception:
            pass  # nowhere left to report a failure to log


class LevelFilter:
    """structlog processor, first in line: drops what is below the level, which a
    reload may change while the switch runs (a logger's own filtering is fixed when it
    is first used, and the switch's loggers are cached)."""

    __slots__ = ("threshold",)

    def __init__(self, level: str) -> None:
        self.threshold = _numeric(level)

    def __call__(
        self, _logger: object, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if _METHOD_LEVELS.get(method, logging.INFO) < self.threshold:
            if event_dict.get("event") in ALWAYS_LOGGED:
                return event_dict
            raise structlog.DropEvent
        return event_dict


ALWAYS_LOGGED: Final = frozenset({"trace"})
"""Debug lines written whatever the level: the message trace's (switch.net.trace), which
an operator switched on, or the level "debug" did."""


_METHOD_LEVELS: Final = {
    "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
    "warn": logging.WARNING, "error": logging.ERROR, "exception": logging.ERROR,
    "critical": logging.CRITICAL, "fatal": logging.CRITICAL,
}  # fmt: skip


def _numeric(level: str) -> int:
    return logging.getLevelNamesMapping()[level.upper()]


def event_first(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the event's name leads its line (a person reads it first,
    and ``grep '^{"event":"txn"'`` finds the transactions)."""
    return {"event": event_dict.pop("event", None), **event_dict}


def _console_renderer() -> structlog.dev.ConsoleRenderer:
    """One line for a person at a terminal: the event, its time and level, then the
    rest as key=value, without colours (a log may end up in a file). Its exception
    key is renamed: the console renderer would print one on lines of its own."""
    plain = {"key_style": None, "value_style": "", "reset_style": "", "value_repr": str}
    return structlog.dev.ConsoleRenderer(
        columns=[
            structlog.dev.Column("event", structlog.dev.KeyValueColumnFormatter(**plain)),  # type: ignore[arg-type]
            structlog.dev.Column("timestamp", structlog.dev.KeyValueColumnFormatter(**plain)),  # type: ignore[arg-type]
            structlog.dev.Column(
                "level",
                structlog.dev.KeyValueColumnFormatter(**plain, prefix="[", postfix="]"),  # type: ignore[arg-type]
            ),
            structlog.dev.Column(
                "",
                structlog.dev.KeyValueColumnFormatter(
                    key_style="", value_style="", reset_style="", value_repr=repr
                ),
            ),
        ],
    )


def _exception_inline(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if "exception" in event_dict:
        event_dict["error"] = event_dict.pop("exception")
    return event_dict


_level_filter = LevelFilter("info")
"""The process's one level filter: structlog's configuration is the process's too."""


class _JsonLines:
    """Where :func:`info_line` writes, while the process logs JSON lines: the stream's
    own structlog logger (its lock is the stream's, shared with structlog's), and the
    events that are rate limited (those take structlog's way)."""

    output: structlog.BytesLogger | None = None
    rate_limited: frozenset[str] = frozenset()


_stamper: Final = structlog.processors.TimeStamper(fmt="iso", utc=True)


def info_line(event: str, fields: dict[str, Any]) -> None:
    """``structlog.get_logger().info(event, **fields)``, written as configure_logging's
    JSON chain writes it (the same keys in the same order, the contextvars, the level,
    the timestamp, card data redacted), without the chain's nine steps: for the one
    line per transaction. ``fields`` is taken (changed in place). Falls back to the
    chain when the process is not configured for JSON lines or the event is rate
    limited."""
    output = _JsonLines.output
    if output is None or event in _JsonLines.rate_limited:
        structlog.get_logger().info(event, **fields)
        return
    if _level_filter.threshold > logging.INFO:
        return
    structlog.contextvars.merge_contextvars(None, "info", fields)
    fields["level"] = "info"
    _stamper(None, "info", fields)
    redact_card_data(None, "info", fields)
    output.msg(_serialize({"event": event, **fields}))


def debug_enabled() -> bool:
    """Whether the process logs at level debug (``[log] level = "debug"``)."""
    return _level_filter.threshold <= logging.DEBUG


def set_log_level(level: str) -> None:
    """Changes the level of every logger of the process, at once (a reload)."""
    _level_filter.threshold = _numeric(level)
    logging.getLogger().setLevel(_level_filter.threshold)


def configure_logging(
    level: str = "info",
    *,
    stream: BinaryIO | None = None,
    rate_limited_events: Iterable[str] = (),
    format: Literal["json", "console"] = "json",
) -> None:
    """Configures structlog for the whole process, and routes the standard library's
    logging through it; call once, from the CLI. ``rate_limited_events`` are written at
    most once a second (per channel), with a count. ``format``: JSON lines (for
    machines, the default) or structlog's console lines (for a person)."""
    intervals_s = dict(STDLIB_RATE_LIMITED_S)
    intervals_s.update((event, 1.0) for event in rate_limited_events)
    renderer: Any = (
        _console_renderer()
        if format == "console"
        else structlog.processors.JSONRenderer(serializer=_serialize)
    )
    set_log_level(level)
    structlog.configure(
        processors=[
            _level_filter,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            RateLimitedEvents(intervals_s),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            one_line_exception,
            redact_card_data,
            event_first,
            *([_exception_inline] if format == "console" else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=(
            structlog.BytesLoggerFactory(stream or sys.stdout.buffer)
            if format == "json"
            else structlog.WriteLoggerFactory(_text(stream))
        ),
        cache_logger_on_first_use=True,
    )
    _JsonLines.output = (
        structlog.BytesLogger(stream or sys.stdout.buffer) if format == "json" else None
    )
    _JsonLines.rate_limited = frozenset(intervals_s)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_ToStructlog())


def _text(stream: BinaryIO | None) -> TextIO:
    """The console renderer writes text: the binary stream wrapped, line-buffered."""
    if stream is None:
        return sys.stdout
    return io.TextIOWrapper(stream, encoding="utf-8", line_buffering=True)


def log_uncaught_exceptions() -> None:
    """Exceptions nothing caught (in the main thread, in other threads, and those
    Python can only ignore, in finalizers) and warnings become one log line each,
    instead of a traceback on stderr. For the long-running commands."""
    log = structlog.get_logger()

    def main_thread(
        kind: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        log.critical("uncaught_exception", exc_info=exc.with_traceback(tb))

    def other_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            thread = args.thread.name if args.thread is not None else None
            log.critical("uncaught_exception", thread=thread, exc_info=args.exc_value)

    def unraisable(args: Any) -> None:
        if args.exc_value is not None:
            where = repr(args.object) if args.object is not None else None
            log.error(
                "exception_ignored", message=args.err_msg, where=where, exc_info=args.exc_value
            )

    sys.excepthook = main_thread
    threading.excepthook = other_thread
    sys.unraisablehook = unraisable
    logging.captureWarnings(True)
