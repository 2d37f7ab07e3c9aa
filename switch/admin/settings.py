"""The ``[admin]`` section of the switch's config: where the admin interface listens,
who may read it, and the bounds on what one client can make it hold.

Here rather than in ``switch.config`` so the admin interface keeps its settings with
its code; ``SwitchConfig`` names it as one section like the others.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

import msgspec
from msgspec import Meta

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) can only be reached from this machine;
    any other name counts as reachable from the network."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AdminSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False
    """Off unless asked for: a config without [admin] opens no port of its own."""
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8585
    token_file: str | None = None
    """A file (relative to the config file) holding the bearer token requests must
    carry; required when ``host`` is not loopback. Without one the switch makes its own
    at start-up, ``admin-token`` in the folder of ``[journal] path`` (on either engine),
    readable by its user only, which the ``switch`` commands read."""
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    """The certificate chain and private key (PEM, relative to the config file; both or
    neither, the key file of mode 0600): with them the interface speaks only HTTPS, TLS
    1.2 or later, and the ``switch`` commands trust that certificate. Required when
    ``host`` is not loopback."""
    max_connections: Annotated[int, Meta(ge=1, le=1024)] = 8
    """Admin connections at once; at the cap a new one takes the place of the one that
    has waited longest for a request, and is closed at accept only when every one is
    being answered."""
    head_deadline_s: Annotated[float, Meta(gt=0)] = 2.0
    """A request's head (request line and headers) must arrive within this, and an
    idle kept-alive connection is closed after it (408 when a head was begun)."""
    max_request_bytes: Annotated[int, Meta(ge=1024)] = 16384
    """A request's head and body together at most; beyond it 431 or 413, then closed."""
    read_deadline_s: Annotated[float, Meta(gt=0)] = 5.0
    """A request must arrive whole within this; a client that does not read its answer
    for as long is closed."""
    wallet_totals_interval_s: Annotated[float, Meta(ge=0)] = 60.0
    """The wallets' total in the metrics is read again at most this often: the read
    sums every wallet's account (0: at every scrape)."""

    def __post_init__(self) -> None:
        if self.enabled and self.token_file is None and not is_loopback(self.host):
            raise ValueError(
                f"[admin] host {self.host!r} is not loopback: token_file is required "
                "(a file holding the bearer token clients must send)"
            )
