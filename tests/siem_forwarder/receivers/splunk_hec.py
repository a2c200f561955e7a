"""Splunk HEC as documented: ``POST /services/collector/event`` with ``Authorization: Splunk <token>``,
body = concatenated JSON event objects (each needs ``event``; ``time`` numeric epoch), answers
``{"text":"Success","code":0}``; errors ``{"text":...,"code":N}`` (2 token required 401, 4 invalid token
403, 5 no data 400, 6 invalid data format 400 with ``invalid-event-number``, 10 data channel missing 400,
12 event field required 400). With indexer acknowledgement on, a request must carry
``X-Splunk-Request-Channel`` and is answered with an ``ackId``; ``POST /services/collector/ack`` with
``{"acks":[…]}`` answers ``{"acks":{"<id>":true|false}}`` — here an ack turns true on the second poll."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.siem_forwarder.receivers import POISON_ACTION
from tests.siem_forwarder.receivers.base import HttpReceiver


def split_concatenated(text: str) -> list[object]:
    dec = json.JSONDecoder()
    out, i = [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        obj, i = dec.raw_decode(text, i)
        out.append(obj)


class HecReceiver(HttpReceiver):
    def __init__(self, port: int, token: str, ack: bool = False) -> None:
        super().__init__(port)
        self.token = token
        self.ack = ack
        self.next_ack = 0
        self.acks: dict[int, tuple[list[str], int]] = {}  # ackId -> (event ids, polls so far)
        self.max_content_length = 1024 * 1024  # limits.conf [http_input] max_content_length
        self.too_large = 0
        self.ack_after_polls = 2  # an ackId turns true on this poll (a huge number: never indexed)

    def routes(self) -> list[Route]:
        return [
            Route("/services/collector/event", self.event, methods=["POST"]),
            Route("/services/collector/ack", self.ack_status, methods=["POST"]),
        ]

    def _auth(self, request: Request) -> Response | None:
        auth = request.headers.get("authorization")
        if not auth:
            return JSONResponse({"text": "Token is required", "code": 2}, status_code=401)
        if auth != f"Splunk {self.token}":
            return JSONResponse({"text": "Invalid token", "code": 4}, status_code=403)
        if self.ack and not request.headers.get("x-splunk-request-channel"):
            return JSONResponse({"text": "Data channel is missing", "code": 10}, status_code=400)
        return None

    async def event(self, request: Request) -> Response:
        if (r := self.injected_failure()) is not None:
            return r
        if (r := self._auth(request)) is not None:
            return r
        raw = await request.body()
        self.bodies.append(raw)
        if len(raw) > self.max_content_length:
            self.too_large += 1
            return JSONResponse({"text": "Content length exceeded", "code": 27}, status_code=413)
        text = raw.decode("utf-8")
        if not text.strip():
            return JSONResponse({"text": "No data", "code": 5}, status_code=400)
        try:
            events = split_concatenated(text)
        except json.JSONDecodeError:
            return JSONResponse({"text": "Invalid data format", "code": 6, "invalid-event-number": 0}, 400)
        ids = []
        for i, ev in enumerate(events):
            if not isinstance(ev, dict) or "event" not in ev:
                return JSONResponse(
                    {"text": "Event field is required", "code": 12, "invalid-event-number": i}, 400
                )
            if not isinstance(ev.get("time", 0), int | float) or ev["event"].get("action") == POISON_ACTION:
                return JSONResponse(
                    {"text": "Invalid data format", "code": 6, "invalid-event-number": i}, 400
                )
            ids.append(ev["event"]["event_id"])
        for eid in ids:
            self.accept(eid)
        if self.ack:
            self.next_ack += 1
            self.acks[self.next_ack] = (ids, 0)
            return JSONResponse({"text": "Success", "code": 0, "ackId": self.next_ack})
        return JSONResponse({"text": "Success", "code": 0})

    async def ack_status(self, request: Request) -> Response:
        if (r := self._auth(request)) is not None:
            return r
        body = json.loads(await request.body())
        out = {}
        for a in body["acks"]:
            ids, polls = self.acks.get(a, ([], 0))
            self.acks[a] = (ids, polls + 1)
            out[str(a)] = polls + 1 >= self.ack_after_polls
        return JSONResponse({"acks": out})
