"""Builds the FastAPI app: routers, the viewer's static files, metrics, error bodies."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from clickhouse_connect import common
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from services.common.clickhouse import make_client
from services.common.logging import log
from services.common.metrics import counter, histogram
from services.common.settings import Settings, get_settings
from services.common.tokens import TokenStore
from services.query_api.audit import AuditPublisher
from services.query_api.routes import archives, conflicts, events, health, me, retention, timeline
from services.query_api.routes import integrity as integrity_routes

STATIC = Path(__file__).parent / "static"

REQUEST_SECONDS = histogram(
    "query_api",
    "request_seconds",
    "Query API request latency",
    ("route", "status"),
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10),
)
ERRORS = counter("query_api", "errors_total", "Requests that failed with a server error", ("route",))


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

    # archives and timeline before events: they must match before /api/events/{event_id}
    routers = (health, me, archives, timeline, events, retention, conflicts, integrity_routes)
    for r in routers:
        app.include_router(r.router)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def viewer() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.middleware("http")
    async def observe(request: Request, call_next):  # noqa: ANN001, ANN202
        t0 = time.perf_counter()
        route = request.url.path
        try:
            response: Response = await call_next(request)
        except Exception as e:  # noqa: BLE001 - never a stack trace to the caller
            ERRORS.labels(route).inc()
            import logging

            log(
                logging.getLogger("query_api"),
                logging.ERROR,
                "request failed",
                path=route,
                error=type(e).__name__,
            )
            response = JSONResponse({"detail": "internal error"}, status_code=500)
        r = request.scope.get("route")
        name = getattr(r, "path", "other")
        REQUEST_SECONDS.labels(name, str(response.status_code)).observe(time.perf_counter() - t0)
        return response

    return app
