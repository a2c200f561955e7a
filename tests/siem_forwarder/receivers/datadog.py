"""Datadog Logs intake as documented: ``POST /api/v2/logs``, header ``DD-API-KEY`` (403 when wrong),
JSON array of log items, optionally ``Content-Encoding: gzip``; at most 1000 entries and 5 MB
uncompressed (413 otherwise); 202 on success."""

from __future__ import annotations

import gzip
import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.siem_forwarder.receivers import POISON_ACTION
from tests.siem_forwarder.receivers.base import HttpReceiver

MAX_ENTRIES = 1000
MAX_BYTES = 5 * 1000 * 1000


class DatadogReceiver(HttpReceiver):
    def __init__(self, port: int, api_key: str) -> None:
        super().__init__(port)
        self.api_key = api_key
        self.max_entries = MAX_ENTRIES
        self.gzipped = 0

    def routes(self) -> list[Route]:
        return [Route("/api/v2/logs", self.logs, methods=["POST"])]

    async def logs(self, request: Request) -> Response:
        if (r := self.injected_failure()) is not None:
            return r
        if request.headers.get("dd-api-key") != self.api_key:
            return JSONResponse({"errors": [{"status": "403", "title": "Forbidden"}]}, status_code=403)
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
            self.gzipped += 1
        self.bodies.append(body)
        if len(body) > MAX_BYTES:
            return JSONResponse(
                {"errors": [{"status": "413", "title": "Payload Too Large"}]}, status_code=413
            )
        try:
            items = json.loads(body)
        except json.JSONDecodeError:
            return JSONResponse({"errors": [{"status": "400", "title": "Bad Request"}]}, status_code=400)
        if not isinstance(items, list):
            items = [items]
        if len(items) > self.max_entries:
            return JSONResponse(
                {"errors": [{"status": "413", "title": "Payload Too Large"}]}, status_code=413
            )
        for it in items:
            if not isinstance(it, dict) or not isinstance(it.get("message", ""), str):
                return JSONResponse({"errors": [{"status": "400", "title": "Bad Request"}]}, status_code=400)
            if (it.get("audit") or {}).get("action") == POISON_ACTION:
                return JSONResponse({"errors": [{"status": "400", "title": "Bad Request"}]}, status_code=400)
        for it in items:
            self.accept(it["audit"]["event_id"])
        return JSONResponse({}, status_code=202)
