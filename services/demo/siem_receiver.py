"""A local SIEM for the demo: a Splunk-HEC-compatible receiver that keeps what it was sent.

``POST /services/collector/event`` with ``Authorization: Splunk <token>`` and a body of concatenated
HEC event objects (as Splunk documents it) answers ``{"text":"Success","code":0}``; ``GET /stats``
(same token) reports how many events and distinct event ids arrived, and the last few events.
Bounded: it remembers event ids (for the count) and the last 100 events only.
"""

from __future__ import annotations

import collections
import hmac

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def split_concatenated(body: bytes) -> list[dict]:
    """HEC bodies are JSON objects back to back (optionally whitespace-separated)."""
    import json

    dec = json.JSONDecoder()
    text = body.decode("utf-8")
    out, i = [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        obj, i = dec.raw_decode(text, i)
        out.append(obj)


def make_app(token: str) -> Starlette:
    state = {"events": 0, "ids": set(), "last": collections.deque(maxlen=100)}

    def authorised(req: Request) -> bool:
        return hmac.compare_digest(req.headers.get("authorization", ""), f"Splunk {token}")

    async def collect(req: Request) -> JSONResponse:
        if not authorised(req):
            return JSONResponse({"text": "Invalid authorization", "code": 3}, status_code=401)
        try:
            items = split_concatenated(await req.body())
        except (ValueError, UnicodeDecodeError):
            return JSONResponse({"text": "Invalid data format", "code": 6}, status_code=400)
        for it in items:
            ev = it.get("event") if isinstance(it, dict) else None
            if not isinstance(ev, dict):
                return JSONResponse({"text": "Event field is required", "code": 12}, status_code=400)
            state["events"] += 1
            if ev.get("event_id"):
                state["ids"].add(ev["event_id"])
            state["last"].append(ev)
        return JSONResponse({"text": "Success", "code": 0})

    async def stats(req: Request) -> JSONResponse:
        if not authorised(req):
            return JSONResponse({"text": "Invalid authorization", "code": 3}, status_code=401)
        return JSONResponse(
            {
                "events": state["events"],
                "distinct_event_ids": len(state["ids"]),
                "last": list(state["last"])[-5:],
            }
        )

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"text": "HEC is healthy", "code": 17})

    return Starlette(
        routes=[
            Route("/services/collector/event", collect, methods=["POST"]),
            Route("/services/collector/health", health, methods=["GET"]),
            Route("/stats", stats, methods=["GET"]),
        ]
    )


def body_of(events: list[dict]) -> bytes:
    return b"".join(orjson.dumps({"event": e}) for e in events)
