"""TLS on the online listener and the admin interface (security.md, "TLS and the admin
interface"): TLS 1.2 or later, with the certificate and key their section names.

Start-up reads and checks both files (:func:`server_context`): a key file not of mode
0600, or a certificate or key that does not load, stops it with one line naming the
file. A connection's handshake is bounded by its listener's read deadline
(:func:`accept_tls`): a peer that never finishes it, or speaks plain TCP to a TLS port,
costs its own connection and nothing else.
"""

from __future__ import annotations

import ssl
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Final

from switch.errors import StartupError

if TYPE_CHECKING:  # imported where used: a client's context (an operator command) needs neither
    import trio

MINIMUM_VERSION: Final = ssl.TLSVersion.TLSv1_2
KEY_FILE_MODE: Final = 0o600


def server_context(label: str, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The server side's context for ``[label]``'s certificate chain and key (PEM):
    TLS 1.2 or later, no compression, the server's cipher order. StartupError, one
    line naming the file, when the key file is not of mode 0600 or either does not
    load."""
    from cryptography import x509

    try:
        mode = stat.S_IMODE(key_file.stat().st_mode)
    except OSError as exc:
        raise StartupError(
            f"[{label}] tls_key_file {key_file} cannot be read: {exc.strerror}"
        ) from exc
    if mode != KEY_FILE_MODE:
        raise StartupError(
            f"[{label}] tls_key_file {key_file} is of mode {mode:04o}: it must be 0600 "
            f"(readable by the switch's user only: chmod 600 {key_file})"
        )
    try:
        chain = cert_file.read_bytes()
    except OSError as exc:
        raise StartupError(
            f"[{label}] tls_cert_file {cert_file} cannot be read: {exc.strerror}"
        ) from exc
    try:
        x509.load_pem_x509_certificates(chain)
    except ValueError as exc:
        raise StartupError(
            f"[{label}] tls_cert_file {cert_file} is not a PEM certificate chain"
        ) from exc
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        # A key under a passphrase fails here rather than prompting on a terminal.
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except ssl.SSLError as exc:  # the certificate loads: the key is at fault
        if exc.reason == "KEY_VALUES_MISMATCH":
            why = f"is not the key of tls_cert_file {cert_file}"
        else:
            why = "is not a PEM private key (without a passphrase)"
        raise StartupError(f"[{label}] tls_key_file {key_file} {why}") from exc
    except OSError as exc:
        raise StartupError(
            f"[{label}] tls_key_file {key_file} cannot be read: {exc.strerror}"
        ) from exc
    return context


def _no_passphrase() -> bytes:
    return b""


async def accept_tls(
    stream: trio.SocketStream,
    context: ssl.SSLContext,
    *,
    deadline_s: float,
    https: bool = False,
) -> trio.SSLStream[trio.SocketStream]:
    """``stream`` wrapped in TLS, once its handshake is done within ``deadline_s``;
    trio.TooSlowError past it, trio.BrokenResourceError when the peer does not speak
    TLS 1.2 or later (the caller closes ``stream``)."""
    import trio

    wrapped = trio.SSLStream(stream, context, server_side=True, https_compatible=https)
    with trio.fail_after(deadline_s):
        await wrapped.do_handshake()
    return wrapped


def client_context(cafile: Path | None = None) -> ssl.SSLContext:
    """A client's context: the system's certificate authorities, or ``cafile``'s (a
    self-signed certificate is its own authority; a certificate of the chain a server
    presents will do as well), names checked, TLS 1.2 or later."""
    context = ssl.create_default_context(cafile=str(cafile) if cafile is not None else None)
    context.minimum_version = MINIMUM_VERSION
    if cafile is not None:
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context
