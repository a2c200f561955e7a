"""``AuditMiddleware``: a pure ASGI middleware that reports a Starlette/FastAPI app's mutating calls.

    app.add_middleware(
        AuditMiddleware,
        client=AsyncAuditClient("kafka", bootstrap_servers="127.0.0.1:9092"),
        org_id=lambda request: request.state.org_id,
        actor=lambda request: {"type": "user", "id": request.state.user_id},
    )

For every request whose method is in ``methods`` (POST, PUT, PATCH, DELETE by default) it records the
method, path, query, JSON body (read up to ``max_payload_bytes`` before the app runs and replayed to
it; larger or non-JSON bodies are recorded as ``metadata.payload_*`` facts instead: ``payload_bytes`` is
the count of bytes seen, a lower bound when the app did not read a truncated body to its end), the
response status, the actor returned by ``actor(request)``, the
TCP peer and the raw X-Forwarded-For header. The event is built after the response has been sent and only
enqueued in the client's bounded buffer: the response never waits for Kafka or the ingest.

``org_id(request)`` returning None excludes the call explicitly (e.g. an unauthenticated request); this
is counted in ``skipped``. Any failure to build or buffer an event is logged at ERROR with the event and
counted in ``errors``; it never fails the host app's response.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auditpipe.client import AsyncAuditClient
from schemas.events_v1 import Actor, RawEvent

logger = logging.getLogger("auditpipe.middleware")

VERBS = {"POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
_ID_LIKE = re.compile(r"(\d|^[0-9a-f]{8,}$|^[0-9a-f-]{32,36}$)", re.I)
_BAD = re.compile(r"[^A-Za-z0-9_.\-]")


def default_action(method: str, path: str) -> str:
    """``<entity>:<verb>`` from the last path segment that is not an id, e.g. POST /projects/7/deployments
    -> ``deployments:create``; DELETE /projects/p-7 -> ``projects:delete``."""
    segs = [s for s in path.split("/") if s]
    entity = next((s for s in reversed(segs) if not _ID_LIKE.search(s)), "http")
    entity = _BAD.sub("_", entity)[:128] or "http"
    verb = VERBS.get(method.upper(), _BAD.sub("_", method.lower()) or "call")
    return f"{entity}:{verb}"


class AuditMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        client: AsyncAuditClient,
        org_id: Callable[[Request], str | None] | str,
        actor: Callable[[Request], Actor | dict[str, Any] | None] | None = None,
        methods: Iterable[str] = ("POST", "PUT", "PATCH", "DELETE"),
        max_payload_bytes: int = 64 * 1024,
        action: Callable[[Request], str] | None = None,
        source: str = "api",
        exclude_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.client = client
        self.org_id = org_id
        self.actor = actor
        self.methods = frozenset(m.upper() for m in methods)
        self.max_payload_bytes = max_payload_bytes
        self.action = action
        self.source = source
        self.exclude_paths = tuple(exclude_paths)
        self.emitted = 0
        self.skipped = 0
        self.errors = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"].upper() not in self.methods
            or scope.get("path", "").startswith(self.exclude_paths or ("\0",))
        ):
            await self.app(scope, receive, send)
            return
        started = datetime.now(UTC)
        body = bytearray()
        seen = 0
        status: int | None = None
        cap = self.max_payload_bytes

        def account(msg: Message) -> None:
            nonlocal seen
            if msg["type"] == "http.request":
                chunk = msg.get("body", b"")
                seen += len(chunk)
                if seen <= cap:
                    body.extend(chunk)

        # Read the body up to the cap before the app runs (replayed to it unchanged), so the payload is
        # recorded even when the app does not read it. Beyond the cap the body streams through untouched.
        early: list[Message] = []
        while True:
            msg = await receive()
            account(msg)
            early.append(msg)
            if msg["type"] != "http.request" or not msg.get("more_body") or seen > cap:
                break

        async def receive_wrapper() -> Message:
            if early:
                return early.pop(0)
            msg = await receive()
            account(msg)
            return msg

        async def send_wrapper(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception:
            await self._emit(scope, started, bytes(body), seen, status or 500)
            raise
        await self._emit(scope, started, bytes(body), seen, status)

    async def _emit(
        self, scope: Scope, started: datetime, body: bytes, seen: int, status: int | None
    ) -> None:
        ev: RawEvent | None = None
        try:
            ev = self.build(scope, started, body, seen, status)
            if ev is None:
                self.skipped += 1
                return
            await self.client.emit_prepared(self.client.prepare(ev))
            self.emitted += 1
        except Exception as e:  # noqa: BLE001 - never fail the host app's response
            self.errors += 1
            logger.error(
                "audit event not buffered: %r; event=%s",
                e,
                ev.model_dump_json(exclude_none=True)
                if ev is not None
                else f"{scope['method']} {scope['path']}",
            )

    def build(
        self, scope: Scope, started: datetime, body: bytes, seen: int, status: int | None
    ) -> RawEvent | None:
        """The raw event of one call (pure apart from the app's callables); None = excluded by org_id."""
        request = Request(scope)
        org = self.org_id if isinstance(self.org_id, str) else self.org_id(request)
        if not org:
            return None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        meta: dict[str, str] = {}
        payload: Any = None
        if seen:
            ctype = headers.get("content-type", "")
            if seen > self.max_payload_bytes:
                meta["payload_truncated"] = "true"
                meta["payload_bytes"] = str(seen)
            elif "json" in ctype:
                try:
                    payload = orjson.loads(body)
                except orjson.JSONDecodeError:
                    meta["payload_unparsed"] = "invalid JSON"
                    meta["payload_bytes"] = str(seen)
            else:
                if ctype:
                    meta["payload_content_type"] = ctype[:256]
                meta["payload_bytes"] = str(seen)
        qs = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        query = {k: v[0] if len(v) == 1 else v for k, v in qs.items()} or None
        actor = self.actor(request) if self.actor is not None else None
        client = scope.get("client")
        method = scope["method"].upper()
        path = scope.get("path", "")
        return RawEvent.model_validate(
            {
                "occurred_at": started,
                "org_id": org,
                "actor": actor.model_dump(exclude_none=True) if isinstance(actor, Actor) else actor,
                "action": self.action(request) if self.action else default_action(method, path),
                "event_type": VERBS.get(method),
                "source": self.source,
                "status": status,
                "request": {
                    "method": method,
                    "path": path[:8192],
                    "query": query,
                    "payload": payload,
                    "user_agent": headers.get("user-agent", "")[:2048] or None,
                    "peer_ip": client[0] if client else None,
                    "x_forwarded_for": headers.get("x-forwarded-for"),
                },
                "metadata": meta,
            }
        )
