"""The ingest HTTP API (FastAPI): ``POST /v1/events``, ``POST /v1/events/batch``, health, readiness, metrics.

Each request: authenticate -> content type -> bounded body -> parse -> bounds -> validate -> authorise orgs
-> stamp -> publish and await acks -> 202 (all acked) or 503 (listing accepted and not accepted ids).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from schemas.events_v1 import RawEvent, with_json_values
from services.common.admission import ingest_limits
from services.common.http_security import protect
from services.common.kafka import kafka_ready
from services.common.logging import log
from services.common.metrics import render
from services.common.settings import IngestToken, Settings
from services.common.tokens import TokenStore
from services.ingest import auth
from services.ingest.metrics import EVENTS_ACCEPTED, EVENTS_REJECTED, REQUESTS
from services.ingest.publisher import Publisher
from services.ingest.validation import (
    Limits,
    Refusal,
    encode_all,
    forwarded_for,
    media_type,
    parse_events,
    stamp,
)

logger = logging.getLogger("auditpipe.ingest")

READY_CACHE_S = 2.0


class Accepted(BaseModel):
    accepted: list[str] = Field(description="event_ids acknowledged by Kafka, in request order")


class ErrorItem(BaseModel):
    index: int | None = Field(default=None, description="Item index in a batch")
    field: str = Field(description="Dotted path of the invalid field ('' = the item or body itself)")
    message: str
    type: str | None = None


class ErrorBody(BaseModel):
    error: str = Field(description="Machine-readable code, see docs/ingest.md")
    message: str
    errors: list[ErrorItem] = Field(default_factory=list)


class Unavailable(BaseModel):
    error: str = "unavailable"
    message: str
    accepted: list[str] = Field(description="Acknowledged: do not resend (resending is harmless)")
    not_accepted: list[str] = Field(description="Not acknowledged in time: resend them (same event_id)")


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed JSON or non-UTF-8 body"},
    401: {"model": ErrorBody, "description": "Missing or unknown bearer token"},
    403: {"model": ErrorBody, "description": "The token may not write an event's org_id"},
    413: {"model": ErrorBody, "description": "Body, batch or event too large"},
    415: {"model": ErrorBody, "description": "Content-Type not supported"},
    422: {"model": ErrorBody, "description": "Events do not match the raw event contract v1"},
    503: {"model": Unavailable, "description": "Kafka did not acknowledge in time; Retry-After is set"},
}


def _body_doc(batch: bool, max_items: int = 1) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/RawEvent"}
    array = {"type": "array", "items": ref, "minItems": 1, "maxItems": max_items}
    content: dict[str, Any] = {"application/json": {"schema": array if batch else ref}}
    if batch:
        content["application/x-ndjson"] = {"schema": {"type": "string", "description": "one event per line"}}
    return {"requestBody": {"required": True, "content": content}}


class IngestApp:
    """Holds what the routes need: settings, the token list, limits, the publisher and a readiness cache."""

    def __init__(self, settings: Settings, topic: str | None = None) -> None:
        self.settings = settings
        self.cfg = settings.ingest
        self.topic = topic or settings.ingest.topic
        self.limits = Limits(
            max_batch_events=self.cfg.max_batch_events,
            max_body_bytes=self.cfg.max_body_bytes,
            max_event_bytes=self.cfg.max_event_bytes,
            max_json_depth=self.cfg.max_json_depth,
        )
        self.publisher = Publisher(settings, self.topic)
        self.tokens = TokenStore(settings)  # settings tokens + the tokens file, reloaded when it changes
        self._ready: tuple[float, bool] = (0.0, False)

    # -- steps ---------------------------------------------------------------------------------
    def authenticate(self, request: Request) -> IngestToken:
        tok = auth.authenticate(auth.bearer(request.headers.get("authorization")), self.tokens.ingest())
        if tok is None:
            missing = auth.bearer(request.headers.get("authorization")) is None
            raise Refusal(
                401,
                "unauthorized",
                "bearer token required" if missing else "bearer token not recognised",
            )
        return tok

    async def read_body(self, request: Request) -> bytes:
        limit = self.limits.max_body_bytes
        cl = request.headers.get("content-length")
        if cl is not None:
            if not cl.strip().isdigit():
                raise Refusal(400, "bad_request", "invalid Content-Length")
            if int(cl) > limit:
                raise Refusal(413, "body_too_large", f"body exceeds {limit} bytes")
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limit:
                raise Refusal(413, "body_too_large", f"body exceeds {limit} bytes")
        return bytes(buf)

    @staticmethod
    def authorise(tok: IngestToken, events: list[RawEvent], batch: bool) -> None:
        bad = [
            {
                **({"index": i} if batch else {}),
                "field": "org_id",
                "message": f"token may not write org {e.org_id!r}",
            }
            for i, e in enumerate(events)
            if not auth.may_write(tok, e.org_id)
        ]
        if bad:
            raise Refusal(403, "forbidden_org", "token may not write these orgs", bad[:100])

    async def handle(self, request: Request, batch: bool) -> Response:
        endpoint = "batch" if batch else "single"
        n_items: int | None = None
        body = b""
        try:
            tok = self.authenticate(request)
            kind = media_type(request.headers.get("content-type"), batch)
            body = await self.read_body(request)
            events = parse_events(body, kind, batch, self.limits)
            n_items = len(events)
            self.authorise(tok, events, batch)
            now = datetime.now(UTC)
            peer = request.client.host if request.client else None
            xff = forwarded_for(request.headers.getlist("x-forwarded-for"))
            for e in events:
                stamp(e, producer=tok.producer, peer_ip=peer, x_forwarded_for=xff, now=now)
            records = encode_all(events, self.limits, self.cfg.envelope_max_bytes)
        except Refusal as r:
            EVENTS_REJECTED.labels(r.code).inc(n_items or _count_items(body, batch))
            REQUESTS.labels(endpoint, str(r.status)).inc()
            headers = {"WWW-Authenticate": 'Bearer realm="auditpipe-ingest"'} if r.status == 401 else None
            return JSONResponse(r.body(), status_code=r.status, headers=headers)

        ids = [str(e.event_id) for e in events]
        outcome = await self.publisher.publish(ids, records, self.cfg.publish_deadline_s)
        EVENTS_ACCEPTED.inc(len(outcome.accepted))
        if outcome.complete:
            REQUESTS.labels(endpoint, "202").inc()
            return JSONResponse({"accepted": outcome.accepted}, status_code=202)
        EVENTS_REJECTED.labels("kafka_unavailable").inc(len(outcome.not_accepted))
        REQUESTS.labels(endpoint, "503").inc()
        log(
            logger,
            logging.WARNING,
            "publish incomplete",
            producer=tok.producer,
            accepted=len(outcome.accepted),
            not_accepted=len(outcome.not_accepted),
            error=outcome.error,
        )
        return JSONResponse(
            {
                "error": "unavailable",
                "message": outcome.error or "kafka unavailable",
                "accepted": outcome.accepted,
                "not_accepted": outcome.not_accepted,
            },
            status_code=503,
            headers={"Retry-After": str(self.cfg.retry_after_s)},
        )

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        at, ok = self._ready
        if time.monotonic() - at > READY_CACHE_S:
            ok = await kafka_ready(self.settings, timeout_s=2.0)
            self._ready = (time.monotonic(), ok)
        producer = self.publisher.started
        stalled = self.publisher.stalled
        return ok and producer and not stalled, {"kafka": ok, "producer": producer, "stalled_sends": stalled}


def _count_items(body: bytes, batch: bool) -> int:
    """How many events a refused request held (for the rejection counter; only on the error path)."""
    if not batch or not body:
        return 1
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return max(1, len([x for x in body.split(b"\n") if x.strip()]))
    return len(data) if isinstance(data, list) and data else 1


def create_app(settings: Settings, topic: str | None = None) -> FastAPI:
    """The ingest app; ``topic`` defaults to ``settings.ingest.topic`` (audit.raw.v1)."""
    state = IngestApp(settings, topic)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.publisher.start()
        try:
            yield
        finally:
            await state.publisher.close()

    app = FastAPI(
        title="auditpipe ingest",
        version="1",
        lifespan=lifespan,
        description="Publishes raw API-call events to Kafka (audit.raw.v1). See docs/ingest.md.",
    )
    app.state.ingest = state

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=Accepted,
        responses=_ERRORS,
        openapi_extra=_body_doc(False),
        summary="Publish one event",
    )
    async def post_event(request: Request) -> Response:
        return await state.handle(request, batch=False)

    @app.post(
        "/v1/events/batch",
        status_code=202,
        response_model=Accepted,
        responses=_ERRORS,
        openapi_extra=_body_doc(True, settings.ingest.max_batch_events),
        summary="Publish a batch (JSON array or NDJSON), all or nothing",
    )
    async def post_batch(request: Request) -> Response:
        return await state.handle(request, batch=True)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": "ingest"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        ok, detail = await state.ready()
        return JSONResponse({"ready": ok, "service": "ingest", **detail}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, ctype = render()
        return Response(body, media_type=ctype)

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> Response:  # never a stack trace to the caller
        log(logger, logging.ERROR, "unhandled error", error=repr(exc))
        return JSONResponse({"error": "internal", "message": "internal error"}, status_code=500)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        raw = RawEvent.model_json_schema(ref_template="#/components/schemas/{model}")
        raw = with_json_values(raw, "#/components/schemas/JSONValue", schemas)
        schemas.update(raw.pop("$defs", {}))
        schemas["RawEvent"] = raw
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
    protect(app, "ingest", ingest_limits(settings))  # overload answered 503 + Retry-After; security headers
    return app


def app_from_settings() -> FastAPI:
    """Factory for ``uvicorn --factory`` (``auditpipe ingest --workers N``): settings from the environment."""
    from services.common.logging import configure_logging
    from services.common.runtime import tune_gc_for_throughput
    from services.common.settings import get_settings

    s = get_settings()
    configure_logging("ingest", s.log_level)
    app = create_app(s)
    tune_gc_for_throughput()  # a batch of 500 validated events is ~100k containers for a moment
    return app
