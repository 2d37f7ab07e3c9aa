"""structlog, configured once: JSON lines on stdout, card data redacted.

Processors run in this order: contextvars merged first (trio copies them into each
task, so connection and link context follows the work), level, ISO UTC timestamp, the
redaction step, then JSON. The redaction step is the guarantee behind PCI DSS 3.3: even
if a full card number reaches a log call by mistake, only its masked form is written.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, BinaryIO, Final

import msgspec
import structlog

from switch.core.model import mask_pan
from switch.core.validate import luhn_valid

SENSITIVE_KEYS: Final = frozenset({"track2", "pin_block", "cvv2", "cvv", "pin", "track"})
UNSCANNED_KEYS: Final = frozenset(
    {"event", "level", "timestamp", "rrn", "original_rrn", "stan", "bank_stan", "merchant"}
)
"""Keys whose values are switch-assigned numbers or ids, never card data: an RRN or a
merchant id that happens to pass the Luhn check must not be masked."""
_DIGIT_RUN: Final = re.compile(r"(?<![0-9])[0-9]{12,19}(?![0-9])")
_TRACK2: Final = re.compile(r"[0-9]{12,19}[=Dd][0-9]+")


def _mask_match(match: re.Match[str]) -> str:
    digits = match.group(0)
    return mask_pan(digits) if luhn_valid(digits) else digits


def redact_text(text: str) -> str:
    """Masks anything that looks like track 2 or a Luhn-valid card number."""
    if len(text) < 12:
        return text
    text = _TRACK2.sub("<track2 redacted>", text)
    return _DIGIT_RUN.sub(_mask_match, text)


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


_json_encoder: Final = msgspec.json.Encoder()


def _serialize(event_dict: Any, **_kw: Any) -> bytes:
    try:
        return _json_encoder.encode(event_dict)
    except TypeError:
        return _json_encoder.encode({key: str(value) for key, value in event_dict.items()})


def configure_logging(level: str = "info", *, stream: BinaryIO | None = None) -> None:
    """Configures structlog for the whole process; call once, from the CLI."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_card_data,
            structlog.processors.JSONRenderer(serializer=_serialize),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.BytesLoggerFactory(stream or sys.stdout.buffer),
        cache_logger_on_first_use=True,
    )
