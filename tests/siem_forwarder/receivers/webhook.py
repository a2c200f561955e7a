"""A webhook receiver as a careful integrator writes one: recompute HMAC-SHA256(secret, timestamp + "." +
raw body) and compare in constant time, refuse timestamps older/newer than 5 minutes (replays), then
accept the JSON array. Written independently of the forwarder's signing code."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.siem_forwarder.receivers import POISON_ACTION
from tests.siem_forwarder.receivers.base import HttpReceiver

TOLERANCE_S = 300


class WebhookReceiver(HttpReceiver):
    def __init__(self, port: int, secret: str) -> None:
        super().__init__(port)
        self.secret = secret.encode()
        self.forged = 0

    def routes(self) -> list[Route]:
        return [Route("/hook", self.hook, methods=["POST"])]

    async def hook(self, request: Request) -> Response:
        if (r := self.injected_failure()) is not None:
            return r
        body = await request.body()
        self.bodies.append(body)
        ts = request.headers.get("x-auditpipe-timestamp", "")
        sig = request.headers.get("x-auditpipe-signature", "")
        expected = "sha256=" + hmac.new(self.secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        if (
            not ts.isdigit()
            or abs(time.time() - int(ts)) > TOLERANCE_S
            or not hmac.compare_digest(sig, expected)
        ):
            self.forged += 1
            return JSONResponse({"error": "bad signature"}, status_code=401)
        events = json.loads(body)
        if not isinstance(events, list):
            return JSONResponse({"error": "expected a JSON array"}, status_code=400)
        if any(e.get("action") == POISON_ACTION for e in events):
            return JSONResponse({"error": "unprocessable event"}, status_code=400)
        for e in events:
            self.accept(e["event_id"])
        return Response(status_code=204)
