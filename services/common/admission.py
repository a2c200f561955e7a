"""Admission control for the HTTP services: a pure-ASGI limiter that answers overload early and cheaply.

A request is admitted only while fewer than ``max_requests`` requests are in flight and the request
bodies they declared (``Content-Length``; a body without one counts as ``unknown_body_bytes``) stay within
``max_body_bytes``; otherwise it is answered at once, before its body is read::

    503 Service Unavailable
    Retry-After: <retry_after_s>
    {"error": "overloaded", "message": "…", "retry_after_s": 5}

An admitted request that has not started its response after ``deadline_s`` (a slow upload, a stuck
dependency) is cancelled and answered ``503`` with ``{"error": "deadline", …}`` and the same
``Retry-After``, so no caller waits past the documented deadline and no slot is held forever. A response
that has started (a streamed export) is not cut by this limiter.

Health, readiness and metrics paths are never limited: probes must answer under overload. Memory stays
bounded because both the number of requests and the bytes of their bodies are. Rejections are counted in
``auditpipe_<service>_admission_rejected_total{reason}``, the load in ``auditpipe_<service>_in_flight_*``.

Pure ASGI (no BaseHTTPMiddleware): the check costs two integer comparisons and runs before routing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from services.common.metrics import counter, gauge
from services.common.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

_REJECTED = "Requests answered 503 by admission control (requests, body_bytes, deadline)"
_IN_FLIGHT = "Requests admitted and not finished"
_IN_FLIGHT_BYTES = "Request body bytes declared by admitted requests"
# (rejected, in flight, in-flight body bytes) per HTTP service: auditpipe_<service>_...
METRICS = {
    "ingest": (
        counter("ingest", "admission_rejected_total", _REJECTED, ("reason",)),
        gauge("ingest", "in_flight_requests", _IN_FLIGHT),
        gauge("ingest", "in_flight_body_bytes", _IN_FLIGHT_BYTES),
    ),
    "query_api": (
        counter("query_api", "admission_rejected_total", _REJECTED, ("reason",)),
        gauge("query_api", "in_flight_requests", _IN_FLIGHT),
        gauge("query_api", "in_flight_body_bytes", _IN_FLIGHT_BYTES),
    ),
}


@dataclass(frozen=True)
class Limits:
    max_requests: int
    max_body_bytes: int
    unknown_body_bytes: int
    deadline_s: float | None
    retry_after_s: int


def overloaded(active: int, body_bytes: int, cost: int, limits: Limits) -> str | None:
    """Why a request costing ``cost`` body bytes must wait (pure): 'requests', 'body_bytes' or None."""
    if active >= limits.max_requests:
        return "requests"
    if body_bytes + cost > limits.max_body_bytes and body_bytes > 0:
        return "body_bytes"  # one request alone is always admitted: its own size limit is the app's job
    return None


def body_cost(scope: Scope, unknown: int) -> int:
    """Body bytes a request declares (Content-Length), ``unknown`` when it may send a body without one."""
    for k, v in scope.get("headers", ()):
        if k == b"content-length":
            return int(v) if v.isdigit() else unknown
    return unknown if scope.get("method") in ("POST", "PUT", "PATCH") else 0


class AdmissionLimiter:
    """``app.add_middleware(AdmissionLimiter, service="ingest", limits=Limits(...))``."""

    def __init__(self, app: ASGIApp, *, service: str, limits: Limits) -> None:
        self.app = app
        self.service = service
        self.limits = limits
        self.active = 0
        self.body_bytes = 0
        self._rejected, self._in_flight, self._in_flight_bytes = METRICS[service]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        cost = body_cost(scope, self.limits.unknown_body_bytes)
        why = overloaded(self.active, self.body_bytes, cost, self.limits)
        if why is not None:
            self._rejected.labels(why).inc()
            await self._refuse(send, "overloaded", f"server busy ({why}); retry later")
            return
        self.active += 1
        self.body_bytes += cost
        self._in_flight.set(self.active)
        self._in_flight_bytes.set(self.body_bytes)
        try:
            await self._run(scope, receive, send)
        finally:
            self.active -= 1
            self.body_bytes -= cost
            self._in_flight.set(self.active)
            self._in_flight_bytes.set(self.body_bytes)

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        deadline = self.limits.deadline_s
        if deadline is None:
            await self.app(scope, receive, send)
            return
        # asyncio.timeout on this very task, switched off when the response starts: no extra task, event
        # or future per request (benchmarks/hardening: +8 us per request in all, +18 with a watcher task)
        limit = asyncio.timeout(deadline)
        started = False

        async def send_started(message: Message) -> None:
            nonlocal started
            if not started and message["type"] == "http.response.start":
                started = True
                limit.reschedule(None)
            await send(message)

        try:
            async with limit:
                await self.app(scope, receive, send_started)
        except TimeoutError:
            if started or not limit.expired():
                raise  # the app's own timeout, or after the answer began: not ours to hide
            self._rejected.labels("deadline").inc()
            await self._refuse(send, "deadline", f"not answered within {deadline:g} s; retry later")

    async def _refuse(self, send: Send, error: str, message: str) -> None:
        retry = self.limits.retry_after_s
        body = orjson.dumps({"error": error, "message": message, "retry_after_s": retry})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry).encode()),
        ]  # no "connection: close": the server drains and discards the unread body, the client keeps its
        # connection and reads this answer instead of a reset
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def ingest_limits(settings: Settings) -> Limits:
    """The ingest's limits: bodies up to ``max_body_bytes`` each; a request that has not been answered
    within ``request_deadline_s`` (longer than the publish deadline) gets 503."""
    cfg = settings.ingest
    return Limits(
        max_requests=cfg.max_concurrent_requests,
        max_body_bytes=cfg.max_inflight_body_bytes,
        unknown_body_bytes=cfg.max_body_bytes,
        deadline_s=cfg.request_deadline_s,
        retry_after_s=cfg.retry_after_s,
    )


def query_api_limits(settings: Settings) -> Limits:
    """The query API's limits: tiny bodies (retention settings), long answers only by streaming."""
    cfg = settings.query_api
    return Limits(
        max_requests=cfg.max_concurrent_requests,
        max_body_bytes=1024 * 1024,
        unknown_body_bytes=64 * 1024,
        deadline_s=cfg.request_deadline_s,
        retry_after_s=cfg.retry_after_s,
    )
