"""The operator's side of the admin interface: requests with the standard library's
``http.client`` (one kept-alive connection), for ``switch top``, ``switch status``, the
settlement and reload commands and the bench, each with the bearer token; a POST sends
a JSON object (``{}``), as the switch requires. Blocking: a command does one thing at a
time."""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import Final
from urllib.parse import urlsplit

import msgspec

from switch.admin.status import StatusDocument, status_decoder
from switch.config import SwitchConfig
from switch.errors import StartupError
from switch.tls import client_context

TIMEOUT_S: Final = 5.0
WILDCARD_HOSTS: Final = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}
"""An admin bound to every address is reached on loopback."""


class AdminUnavailable(Exception):
    """The switch did not answer, or answered with an error; says which."""


def admin_url(config: SwitchConfig) -> str:
    """Where the config's switch serves its admin interface (https when it names a
    certificate)."""
    host = WILDCARD_HOSTS.get(config.admin.host, config.admin.host)
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if config.tls_files("admin") else "http"
    return f"{scheme}://{host}:{config.admin.port}"


def admin_tls(config: SwitchConfig) -> ssl.SSLContext | None:
    """What a client of the config's switch trusts over https: the certificate the
    config names (a self-signed one is its own authority), else the system's
    authorities (None)."""
    files = config.tls_files("admin")
    if files is None:
        return None
    try:
        return client_context(files[0])
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(
            f"[admin] tls_cert_file {files[0]} cannot be trusted: {_reason(exc, TIMEOUT_S)}"
        ) from exc


class AdminClient:
    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        timeout_s: float = TIMEOUT_S,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: whom an https ``url`` is trusted to be (the system's certificate
        authorities by default); its certificate must name the URL's host."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s)://HOST:PORT address")
        self.url = url
        self._host = parts.hostname
        self._tls = (tls or client_context()) if parts.scheme == "https" else None
        self._port = parts.port or (443 if self._tls else 80)
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        self._timeout_s = timeout_s
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def get(self, path: str) -> tuple[int, bytes]:
        """The status and body of GET ``path``; AdminUnavailable when nothing answers.
        A kept-alive connection the switch has closed meanwhile is opened again once."""
        return self._request("GET", path)

    def post(self, path: str, body: bytes = b"{}") -> tuple[int, bytes]:
        """The status and body of POST ``path`` (its body ``{}`` unless given), as ``get``."""
        return self._request("POST", path, body)

    def delete(self, path: str) -> tuple[int, bytes]:
        return self._request("DELETE", path)

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self._connection is None:
                if self._tls is not None:
                    self._connection = http.client.HTTPSConnection(
                        self._host, self._port, timeout=self._timeout_s, context=self._tls
                    )
                else:
                    self._connection = http.client.HTTPConnection(
                        self._host, self._port, timeout=self._timeout_s
                    )
            try:
                headers = self._headers
                if body is not None:
                    headers = {**headers, "content-type": "application/json"}
                self._connection.request(method, path, body=body, headers=headers)
                response = self._connection.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                reused = attempt == 1 and isinstance(
                    exc, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError
                )
                if not reused:
                    raise AdminUnavailable(
                        f"{self.url}{path}: {_reason(exc, self._timeout_s)}"
                    ) from exc
        raise AssertionError("unreachable")

    def status(self) -> StatusDocument:
        status, body = self.get("/status")
        if status != 200:
            raise AdminUnavailable(f"{self.url}/status answered {status}: {_error(body)}")
        try:
            return status_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise AdminUnavailable(f"{self.url}/status: not a status document: {exc}") from exc


def _reason(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its certificate is not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _error(body: bytes) -> str:
    try:
        found = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body[:200].decode(errors="replace").strip()
    if isinstance(found, dict) and isinstance(found.get("error"), str):
        return str(found["error"])
    return body[:200].decode(errors="replace").strip()
