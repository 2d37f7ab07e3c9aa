"""Who may use the admin interface: a request carrying ``Authorization: Bearer <token>``.

The token is ``[admin] token_file``'s; without one (loopback only) the switch makes one
at its first start, in a file only its user can read (``admin-token`` in the folder of
``[journal] path``, on either engine), which the ``switch`` commands read
from the same place. On loopback the read-only probes (``OPEN_ON_LOOPBACK``) need none.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import stat
import string
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from switch.admin.settings import is_loopback
from switch.config import SwitchConfig
from switch.errors import StartupError

MIN_TOKEN_CHARS: Final = 16
TOKEN_CHARACTERS: Final = frozenset(string.ascii_letters + string.digits + "-._~+/=")
"""RFC 6750's token68: what a bearer token may hold and still be sent as a header."""


OPEN_ON_LOOPBACK: Final = frozenset({"/healthz", "/readyz", "/metrics", "/status"})
"""GET paths that need no token when the admin listens on loopback: the numbers a
monitor scrapes, nothing that changes state or shows money."""
DEFAULT_TOKEN_FILE: Final = "admin-token"
GENERATED_TOKEN_BYTES: Final = 32


def token_path(config: SwitchConfig) -> Path:
    """Where the switch's token is: ``[admin] token_file``, else ``admin-token`` in the
    folder of ``[journal] path`` (the switch's own folder, where settlement's files go
    too, whichever the journal's engine)."""
    section = config.admin
    if section.token_file is not None:
        return config.path(section.token_file)
    return config.path(config.journal.path).parent / DEFAULT_TOKEN_FILE


def read_token(config: SwitchConfig, *, create: bool = True) -> str | None:
    """The switch's bearer token: ``[admin] token_file``'s (see :func:`token_from_file`),
    else the generated one, made now if there is none yet (with ``create``; else None).
    A file others may read is warned of."""
    path = token_path(config)
    if config.admin.token_file is None and not path.exists():
        if not create:
            return None
        _generate(path)
    token = token_from_file(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        import structlog  # the switch's log: a command reading its token need not load it

        structlog.get_logger().warning(
            "admin_token_file_readable",
            path=str(path),
            mode=oct(stat.S_IMODE(mode)),
            note="other users can read the admin token: chmod 600",
        )
    return token


def _generate(path: Path) -> None:
    """A new random token in ``path``, readable by this user only; written whole to a
    file of its own, then linked into place (another process of the switch doing the
    same at once: the first one's stays)."""
    where = f"[admin] token (no token_file): {path}"
    token = secrets.token_urlsafe(GENERATED_TOKEN_BYTES)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as out:
            out.write(token + "\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another process's came first
            os.link(temporary, path)
    except OSError as exc:
        raise StartupError(f"{where} cannot be written: {exc.strerror}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    import structlog

    structlog.get_logger().info("admin_token_created", path=str(path))


def client_token(config: SwitchConfig) -> str | None:
    """The token a ``switch`` command sends to the config's switch: its token file's,
    or None when there is none yet (the switch has not started: nothing to ask)."""
    path = token_path(config)
    if config.admin.token_file is None and not path.exists():
        return None
    return token_from_file(path)


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


def foreign_host(host: str, port: int) -> str | None:
    """Why a Host header does not name a loopback listener on ``port`` (a page whose
    own name was made to resolve to 127.0.0.1, say), or None when it does."""
    try:
        parts = urlsplit(f"//{host.strip()}")
        named_port = parts.port
    except ValueError:
        return f"Host {host!r} is not host[:port]"
    if not parts.hostname or not is_loopback(parts.hostname):
        return f"Host {host!r} is not this admin interface's: a loopback name or address only"
    if named_port is not None and named_port != port:
        return f"Host {host!r} names another port than this admin interface's {port}"
    return None


def foreign_origin(origin: str, host: str | None) -> str | None:
    """Why an Origin header is not the admin interface's own (``http://`` and the
    request's Host), or None when it is."""
    try:
        parts = urlsplit(origin.strip())
        origin_port = parts.port or 80
        host_parts = urlsplit(f"//{(host or '').strip()}")
        host_port = host_parts.port or 80
    except ValueError:
        return f"Origin {origin!r} is not this admin interface's"
    same = (
        parts.scheme == "http"
        and parts.hostname is not None
        and parts.hostname == host_parts.hostname
        and origin_port == host_port
    )
    return None if same else f"Origin {origin!r} is not this admin interface's: refused"
