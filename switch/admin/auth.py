"""Who may read the admin interface: on loopback anyone on this machine; with a
``token_file``, only a request carrying ``Authorization: Bearer <token>``."""

from __future__ import annotations

import hmac
import stat
import string
from pathlib import Path
from typing import Final

import structlog

from switch.config import SwitchConfig
from switch.errors import StartupError

log = structlog.get_logger()

MIN_TOKEN_CHARS: Final = 16
TOKEN_CHARACTERS: Final = frozenset(string.ascii_letters + string.digits + "-._~+/=")
"""RFC 6750's token68: what a bearer token may hold and still be sent as a header."""


def read_token(config: SwitchConfig) -> str | None:
    """The switch's bearer token, from ``[admin] token_file`` (None without one), read
    at start-up: see :func:`token_from_file`; a file others may read is warned of."""
    section = config.admin
    if section.token_file is None:
        return None
    path = config.path(section.token_file)
    token = token_from_file(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "admin_token_file_readable",
            path=str(path),
            mode=oct(stat.S_IMODE(mode)),
            note="other users can read the admin token: chmod 600",
        )
    return token


def token_from_file(path: Path) -> str:
    """The bearer token a file holds (surrounding white space dropped): StartupError
    naming the file when it cannot be read, is empty, too short or holds what no
    header can carry."""
    where = f"[admin] token_file {path}"
    try:
        text = path.read_text(encoding="ascii")
    except OSError as exc:
        raise StartupError(f"{where} cannot be read: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise StartupError(f"{where} is not a bearer token: not ASCII text") from None
    token = text.strip()
    if not token:
        raise StartupError(f"{where} is empty")
    if len(token) < MIN_TOKEN_CHARS:
        raise StartupError(f"{where}: the token is shorter than {MIN_TOKEN_CHARS} characters")
    if not set(token) <= TOKEN_CHARACTERS:
        raise StartupError(
            f"{where}: the token holds characters a bearer token cannot (letters, digits "
            "and -._~+/= only)"
        )
    return token


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries the token (compared in constant time)."""
    if header is None:
        return False
    scheme, _, presented = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())
