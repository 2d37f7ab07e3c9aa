"""The online channel's signed envelope (security.md, "Online channel authentication").

Every online frame holds one envelope: a MessagePack map of exactly ``key_id``, ``ts``,
``nonce``, ``body`` and ``sig``, where ``body`` is the MessagePack bytes of one request
or response of online.md and ``sig`` is HMAC-SHA256 under the key's secret of the
*signed bytes*: ``key_id``, 0x0A, ``ts`` in decimal ASCII, 0x0A, ``nonce``, 0x0A, then
``body`` as it is in the envelope.

Sans-IO: bytes in, :class:`Envelope` out, and back. The signed bytes and the HMAC are
the security module's business (:mod:`switch.security.algorithms`).
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Final

import msgspec
from msgspec import Meta

from switch.errors import MessageDecodeError

KEY_ID_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,64}\Z"
NONCE_PATTERN: Final = r"^[A-Za-z0-9]{16,32}\Z"
SIG_BYTES: Final = 32
MAX_SKEW_S: Final = 300
"""A request's ``ts`` at most this far from the switch's wall clock, either way."""
NONCE_MEMORY_S: Final = 600
"""A nonce accepted with a key is refused again for this long (10 minutes)."""
FIELDS: Final = ("key_id", "ts", "nonce", "body", "sig")

KeyId = Annotated[str, Meta(pattern=KEY_ID_PATTERN)]
Nonce = Annotated[str, Meta(pattern=NONCE_PATTERN)]
Timestamp = Annotated[int, Meta(ge=0)]
Signature = Annotated[bytes, Meta(min_length=SIG_BYTES, max_length=SIG_BYTES)]


class Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """One signed frame. Encoded in security.md's order: key_id, ts, nonce, body, sig."""

    key_id: KeyId
    ts: Timestamp
    nonce: Nonce
    body: bytes
    sig: Signature

    def __repr__(self) -> str:  # the body may hold a card number
        return f"Envelope(key_id={self.key_id!r}, ts={self.ts}, nonce={self.nonce!r})"

    __str__ = __repr__


class EnvelopeDecodeError(MessageDecodeError):
    """A frame that is no envelope (security.md's step 1: 30 naming the key). Carries the
    body's ``id`` when it can be read, for the unsigned error's ``id``."""

    def __init__(self, message: str, *, request_id: str | None, field: str | None) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.key = field


_decoder: Final = msgspec.msgpack.Decoder(Envelope)
_encoder: Final = msgspec.msgpack.Encoder()
_probe: Final = msgspec.msgpack.Decoder(dict[str, object])
_PATH_KEY: Final = re.compile(r"`\$\.([a-z_]+)`")
_FIELD_IN_TEXT: Final = re.compile(r"field `([a-z_]+)`")
_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")
NONCE_CHARS: Final = 20
"""The length of the nonces this switch makes (16-32 allowed)."""


def decode(frame: bytes) -> Envelope:
    """The envelope of a frame; raises only :class:`EnvelopeDecodeError`."""
    try:
        return _decoder.decode(frame)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH_KEY.search(text) or _FIELD_IN_TEXT.search(text)
        field = match.group(1) if match else None
        raise EnvelopeDecodeError(
            f"not a signed envelope: {text}", request_id=_probe_body_id(frame), field=field
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise EnvelopeDecodeError(
            f"not a signed envelope: {type(exc).__name__}: {exc}", request_id=None, field=None
        ) from None


def _probe_body_id(frame: bytes) -> str | None:
    """The ``id`` of an envelope's body, when the frame is a map with a readable one."""
    try:
        envelope = _probe.decode(frame)
        body = envelope.get("body")
        if not isinstance(body, bytes):
            return None
        found = _probe.decode(body).get("id")
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, AttributeError):
        return None
    return found if isinstance(found, str) and _REQUEST_ID.match(found) else None


def encode(envelope: Envelope) -> bytes:
    return _encoder.encode(envelope)


def new_nonce() -> str:
    """A fresh nonce from the OS's secure random source: 80 random bits as 20 lower-case
    hexadecimal characters (letters and digits, as the alphabet allows)."""
    return secrets.token_hex(NONCE_CHARS // 2)


def is_envelope(frame: bytes) -> bool:
    """Whether a frame (a client's answer) is an envelope rather than an unsigned error:
    a map with a ``sig``. Cheap; :func:`decode` is the check."""
    try:
        probe = _probe.decode(frame)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(probe, dict) and "sig" in probe and "body" in probe
