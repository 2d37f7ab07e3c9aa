"""What the admin interface answers: one handler per path and method.

A new endpoint is one entry in :func:`admin_routes`' table; the server (``server.py``)
does the HTTP (h11), the token, 404 for a path not in the table and 405 for a method
not listed under its path.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry

from switch.admin.collect import StatusCollector
from switch.admin.metrics import exposition
from switch.admin.port import SwitchView
from switch.admin.status import status_encoder
from switch.core.calendar import DateNotBegun
from switch.core.ledger import LedgerError
from switch.net.trace import TraceSelection, selection_decoder
from switch.store.settlement_port import SettlementError

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


def _query_date(request: AdminRequest) -> str | None:
    """``date=YYYY-MM-DD`` of the query string, or None (absent or not a date)."""
    values = urllib.parse.parse_qs(request.query).get("date")
    if not values:
        return None
    try:
        return date.fromisoformat(values[0]).isoformat()
    except ValueError:
        return None


def _no_settlement(not_running: bool) -> AdminResponse:
    if not_running:
        return json_response(503, {"error": "settlement is not running yet"})
    return json_response(400, {"error": "date must be given as date=YYYY-MM-DD"})


def json_response(status: int, document: dict[str, Any]) -> AdminResponse:
    return AdminResponse(status=status, body=json.dumps(document).encode() + b"\n")


def admin_routes(
    switch: SwitchView, status: StatusCollector, registry: CollectorRegistry
) -> RouteTable:
    """Every endpoint of the admin interface."""

    async def healthz(request: AdminRequest) -> AdminResponse:
        # Answering at all is the proof: this runs on the event loop it reports on.
        return json_response(200, {"status": "ok", "uptime_s": status.uptime_s()})

    async def readyz(request: AdminRequest) -> AdminResponse:
        await status.refresh_workers()  # several workers: is each running and ready
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
        result = await switch.reload()
        return AdminResponse(
            status=200 if result.accepted else 422, body=msgspec.json.encode(result) + b"\n"
        )

    async def reload_plan(request: AdminRequest) -> AdminResponse:
        """What ``POST /reload`` would do now, doing nothing: 200 with what would change
        key by key, or 422 with why it would be refused (``switch config check``)."""
        result = await switch.reload(dry_run=True)
        return AdminResponse(
            status=200 if result.accepted else 422, body=msgspec.json.encode(result) + b"\n"
        )

    async def trace_show(request: AdminRequest) -> AdminResponse:
        """Who the message trace follows now."""
        answer = await switch.trace(None)
        return AdminResponse(status=200, body=msgspec.json.encode(answer) + b"\n")

    async def trace_set(request: AdminRequest) -> AdminResponse:
        """Traces what the body names (``{"all": true}``, or ``terminals``,
        ``merchants``, ``banks``: lists), at every worker, from now on; 400 naming what
        is wrong in the body."""
        try:
            selection = selection_decoder.decode(request.body or b"{}")
        except msgspec.DecodeError as exc:
            return json_response(400, {"error": f"the trace selection: {exc}"})
        if (problem := selection.problem()) is not None:
            return json_response(400, {"error": f"the trace selection: {problem}"})
        answer = await switch.trace(selection)
        return AdminResponse(status=200, body=msgspec.json.encode(answer) + b"\n")

    async def trace_stop(request: AdminRequest) -> AdminResponse:
        answer = await switch.trace(TraceSelection())
        return AdminResponse(status=200, body=msgspec.json.encode(answer) + b"\n")

    async def cutoff(request: AdminRequest) -> AdminResponse:
        """Closes the open business date now (``switch settle cutoff``): 200 with the
        date closed and its cutovers; 409 when the open date's own day has not begun
        (an early close opened it: one early close a day)."""
        service = switch.settlement
        if service is None:
            return json_response(503, {"error": "settlement is not running yet"})
        try:
            closed = await service.close_now()
        except DateNotBegun as exc:
            return json_response(409, {"error": str(exc)})
        status = await service.status(closed.business_date.isoformat())
        return AdminResponse(status=200, body=msgspec.json.encode(status) + b"\n")

    async def settle_run(request: AdminRequest) -> AdminResponse:
        """Settles a closed date now (``switch settle run``); idempotent. A date that
        is not closed (in the future, or before the journal's first) is 422: the request
        names no date that can be settled."""
        service = switch.settlement
        business_date = _query_date(request)
        if service is None or business_date is None:
            return _no_settlement(service is None)
        try:
            status = await service.settle(business_date)
        except SettlementError as exc:
            return json_response(422, {"error": str(exc)})
        return AdminResponse(status=200, body=msgspec.json.encode(status) + b"\n")

    async def settle_status(request: AdminRequest) -> AdminResponse:
        service = switch.settlement
        if service is None:
            return _no_settlement(True)
        business_date = _query_date(request)
        if business_date is None:
            if "date=" in request.query:
                return _no_settlement(False)
            business_date = await service.latest_closed_date()
            if business_date is None:
                return json_response(404, {"error": "no business date has closed yet"})
        status = await service.status(business_date)
        if not service.knows(status):
            why = f"unknown date: the switch has no business day {business_date}"
            return json_response(404, {"error": why})
        return AdminResponse(status=200, body=msgspec.json.encode(status) + b"\n")

    async def ledger(request: AdminRequest) -> AdminResponse:
        service = switch.settlement
        if service is None:
            return _no_settlement(True)
        account = urllib.parse.parse_qs(request.query).get("account", [None])[0]
        balances = await service.ledger_balances(account)
        document = [
            {"account": b.account, "debit_fen": b.debit_fen, "credit_fen": b.credit_fen,
             "balance_fen": b.balance_fen}
            for b in balances
        ]  # fmt: skip
        return AdminResponse(status=200, body=json.dumps(document).encode() + b"\n")

    async def onus_ledger(request: AdminRequest) -> AdminResponse:
        credit = switch.credit
        if credit is None:
            return json_response(503, {"error": "the on-us ledger is not open here"})
        account = urllib.parse.parse_qs(request.query).get("account", [None])[0]
        try:
            balances = await credit.balances(account)
        except LedgerError as exc:
            return json_response(503, {"error": f"the on-us ledger cannot be read: {exc}"})
        document = [
            {"account": b.account, "unit": b.unit, "accounts": b.accounts,
             "debits_posted": b.debits_posted, "credits_posted": b.credits_posted,
             "balance": b.balance, "debits_pending": b.debits_pending,
             "credits_pending": b.credits_pending}
            for b in balances
        ]  # fmt: skip
        return AdminResponse(status=200, body=json.dumps(document).encode() + b"\n")

    return {
        "/settlement/cutoff": {"POST": cutoff},
        "/settlement/run": {"POST": settle_run},
        "/settlement": {"GET": settle_status},
        "/ledger": {"GET": ledger},
        "/ledger/onus": {"GET": onus_ledger},
        "/healthz": {"GET": healthz},
        "/readyz": {"GET": readyz},
        "/trace": {"GET": trace_show, "POST": trace_set, "DELETE": trace_stop},
        "/metrics": {"GET": metrics},
        "/status": {"GET": status_document},
        "/reload": {"POST": reload, "GET": reload_plan},
    }
