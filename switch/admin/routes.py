"""What the admin interface answers: one handler per path and method.

A new endpoint is one entry in :func:`admin_routes`' table; the server (``server.py``)
does the HTTP (h11), the token, 404 for a path not in the table and 405 for a method
not listed under its path.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client import CollectorRegistry

from switch.admin.collect import StatusCollector
from switch.admin.metrics import exposition
from switch.admin.status import status_encoder

if TYPE_CHECKING:
    from switch.app import SwitchApp

JSON = "application/json"


class AdminRequest(msgspec.Struct, frozen=True, kw_only=True):
    method: str
    path: str
    """The target without its query string."""
    query: str
    headers: dict[str, str]
    """Names in lower case."""
    body: bytes


class AdminResponse(msgspec.Struct, frozen=True, kw_only=True):
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[AdminRequest], Awaitable[AdminResponse]]
RouteTable = dict[str, dict[str, Handler]]
"""Path, then method, to its handler."""


def json_response(status: int, document: dict[str, Any]) -> AdminResponse:
    return AdminResponse(status=status, body=json.dumps(document).encode() + b"\n")


def admin_routes(
    app: SwitchApp, status: StatusCollector, registry: CollectorRegistry
) -> RouteTable:
    """Every endpoint of the admin interface."""

    async def healthz(request: AdminRequest) -> AdminResponse:
        # Answering at all is the proof: this runs on the event loop it reports on.
        return json_response(200, {"status": "ok", "uptime_s": status.uptime_s()})

    async def readyz(request: AdminRequest) -> AdminResponse:
        not_ready = status.not_ready()
        return json_response(
            503 if not_ready else 200, {"ready": not not_ready, "not_ready": not_ready}
        )

    async def metrics(request: AdminRequest) -> AdminResponse:
        await status.refresh()
        body, content_type = exposition(registry, request.headers.get("accept", ""))
        return AdminResponse(status=200, body=body, content_type=content_type)

    async def status_document(request: AdminRequest) -> AdminResponse:
        await status.refresh()
        return AdminResponse(status=200, body=status_encoder.encode(status.document()))

    async def reload(request: AdminRequest) -> AdminResponse:
        """Re-reads the configuration file (as SIGHUP does): 200 with what changed, or
        422 with why it was refused (and the running configuration stays)."""
        result = await app.reload()
        return AdminResponse(
            status=200 if result.accepted else 422, body=msgspec.json.encode(result) + b"\n"
        )

    return {
        "/healthz": {"GET": healthz},
        "/readyz": {"GET": readyz},
        "/metrics": {"GET": metrics},
        "/status": {"GET": status_document},
        "/reload": {"POST": reload},
    }
