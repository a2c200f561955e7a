"""Elasticsearch ``_bulk`` as documented: NDJSON action/document pairs ending in a newline, answered with
200 and ``{"took", "errors", "items": [{"create": {"_index", "_id", "status", "error"?}}]}``. ``create`` on
an existing ``_id`` -> item 409 ``version_conflict_engine_exception``; a document the mapping refuses ->
item 400 ``document_parsing_exception``; ``reject_items_next(n)`` -> n items 429
``es_rejected_execution_exception`` (a full write queue)."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.siem_forwarder.receivers import POISON_ACTION
from tests.siem_forwarder.receivers.base import HttpReceiver


class ElasticReceiver(HttpReceiver):
    def __init__(self, port: int, api_key: str) -> None:
        super().__init__(port)
        self.api_key = api_key
        self.docs: dict[str, dict] = {}
        self.item_429 = 0
        self.conflicts = 0

    def routes(self) -> list[Route]:
        return [Route("/", self.info, methods=["GET"]), Route("/_bulk", self.bulk, methods=["POST"])]

    def reject_items_next(self, n: int) -> None:
        self.item_429 += n

    def _auth(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"ApiKey {self.api_key}":
            return JSONResponse(
                {"error": {"type": "security_exception", "reason": "unable to authenticate"}, "status": 401},
                401,
            )
        return None

    async def info(self, request: Request) -> Response:
        if (r := self._auth(request)) is not None:
            return r
        return JSONResponse(
            {"name": "local", "version": {"number": "8.15.0"}, "tagline": "You Know, for Search"}
        )

    async def bulk(self, request: Request) -> Response:
        if (r := self.injected_failure()) is not None:
            return r
        if (r := self._auth(request)) is not None:
            return r
        if "ndjson" not in request.headers.get("content-type", ""):
            return JSONResponse({"error": "Content-Type header [] is not supported", "status": 406}, 406)
        raw = await request.body()
        self.bodies.append(raw)
        text = raw.decode()
        if not text.endswith("\n"):
            return JSONResponse(
                {
                    "error": {
                        "type": "illegal_argument_exception",
                        "reason": "The bulk request must be terminated by a newline [\\n]",
                    },
                    "status": 400,
                },
                400,
            )
        lines = text.split("\n")[:-1]
        if len(lines) % 2:
            return JSONResponse({"error": {"type": "illegal_argument_exception"}, "status": 400}, 400)
        items, errors = [], False
        for i in range(0, len(lines), 2):
            action, doc = json.loads(lines[i]), json.loads(lines[i + 1])
            meta = action.get("create")
            if meta is None or "_id" not in meta or "_index" not in meta:
                return JSONResponse(
                    {"error": {"type": "action_request_validation_exception"}, "status": 400}, 400
                )
            _id, idx = meta["_id"], meta["_index"]
            if self.item_429 > 0:
                self.item_429 -= 1
                errors = True
                items.append(
                    {
                        "create": {
                            "_index": idx,
                            "_id": _id,
                            "status": 429,
                            "error": {
                                "type": "es_rejected_execution_exception",
                                "reason": "rejected execution",
                            },
                        }
                    }
                )
            elif doc.get("audit", {}).get("action") == POISON_ACTION:
                errors = True
                items.append(
                    {
                        "create": {
                            "_index": idx,
                            "_id": _id,
                            "status": 400,
                            "error": {
                                "type": "document_parsing_exception",
                                "reason": "failed to parse field [audit.action]",
                            },
                        }
                    }
                )
            elif _id in self.docs:
                errors = True
                self.conflicts += 1
                items.append(
                    {
                        "create": {
                            "_index": idx,
                            "_id": _id,
                            "status": 409,
                            "error": {
                                "type": "version_conflict_engine_exception",
                                "reason": f"[{_id}]: version conflict, document already exists",
                            },
                        }
                    }
                )
            else:
                self.docs[_id] = doc
                self.accept(_id)
                items.append(
                    {"create": {"_index": idx, "_id": _id, "_version": 1, "result": "created", "status": 201}}
                )
        return JSONResponse({"took": 1, "errors": errors, "items": items})
