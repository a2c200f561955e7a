"""Builds the FastAPI app: routers, the viewer's static files, metrics, error bodies."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from clickhouse_connect import common
from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.admission import query_api_limits
from services.common.audit_events import AuditPublisher
from services.common.clickhouse import make_client
from services.common.http_security import protect
from services.common.logging import log
from services.common.metrics import counter, histogram
from services.common.settings import Settings, get_settings
from services.common.tokens import TokenStore
from services.query_api.export import ExportSlots
from services.query_api.routes import archives, conflicts, events, health, me, retention, timeline
from services.query_api.routes import integrity as integrity_routes

STATIC = Path(__file__).parent / "static"
logger = logging.getLogger("query_api")

REQUEST_SECONDS = histogram(
    "query_api",
    "request_seconds",
    "Query API request latency",
    ("route", "status"),
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10),
)
ERRORS = counter("query_api", "errors_total", "Requests that failed with a server error", ("route",))


class Observe:
    """Latency per route and status, and the error body of unexpected failures (pure ASGI).

    A failure before the response started answers ``500 {"detail": "internal error"}`` (logged, never a
    stack trace to the caller). A failure after it started (an export cut at its time limit, ClickHouse
    failing mid-stream) ends the connection without the final chunk, so the client sees an incomplete
    transfer and never takes a cut file for a whole one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        started = False

        async def observed(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, observed)
        except Exception as e:  # noqa: BLE001 - never a stack trace to the caller
            ERRORS.labels(getattr(scope.get("route"), "path", "other")).inc()
            err = f"{type(e).__name__}: {e}"[:300]
            log(logger, logging.ERROR, "request failed", path=scope["path"], error=err, after_start=started)
            if not started:
                body = b'{"detail":"internal error"}'
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json")]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
        finally:
            route = getattr(scope.get("route"), "path", "other")
            REQUEST_SECONDS.labels(route, str(status)).observe(time.perf_counter() - t0)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.audit.close()

    app = FastAPI(
        title="auditpipe query API",
        version="1",
        description="Who did what, where and when: search, details, export, archives, retention.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    # clickhouse-connect reads ahead up to http_buffer_size (10 MB compressed by default, ~100 MB once
    # decoded): 2 MB keeps a streaming export's memory flat (measured in test_export_memory)
    common.set_setting("http_buffer_size", 2 * 1024 * 1024)
    app.state.clickhouse = make_client(
        settings, send_receive_timeout=int(settings.query_api.query_timeout_s) + 30
    )
    app.state.audit = AuditPublisher(settings, settings.query_api.audit_topic)
    app.state.tokens = TokenStore(settings)
    qa = settings.query_api
    app.state.export_slots = ExportSlots(qa.export_max_per_principal, qa.export_max_concurrent)

    # archives and timeline before events: they must match before /api/events/{event_id}
    routers = (health, me, archives, timeline, events, retention, conflicts, integrity_routes)
    for r in routers:
        app.include_router(r.router)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def viewer() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.exception_handler(UnicodeDecodeError)
    async def not_utf8(_request: object, _exc: UnicodeDecodeError) -> JSONResponse:
        # FastAPI reads a body without Content-Type as JSON and lets a non-UTF-8 body's UnicodeDecodeError
        # escape (a 500); with a JSON Content-Type the same body is its 400 "error parsing the body"
        return JSONResponse({"detail": "the body is not UTF-8 JSON"}, status_code=400)

    app.add_middleware(Observe)

    # outermost: overload answered before routing, security headers on every response (those too)
    protect(app, "query_api", query_api_limits(settings), no_store=("/api",))
    return app
