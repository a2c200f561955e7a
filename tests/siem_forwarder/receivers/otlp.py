"""An OTLP/HTTP logs receiver that validates with the official schema: the body is parsed into
``opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest`` by ``google.protobuf.json_format``
(unknown fields refused), so a wrong field name or type is a 400, as from the OpenTelemetry Collector."""

from __future__ import annotations

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.siem_forwarder.receivers import POISON_ACTION
from tests.siem_forwarder.receivers.base import HttpReceiver


class OtlpReceiver(HttpReceiver):
    def __init__(self, port: int, header: tuple[str, str]) -> None:
        super().__init__(port)
        self.header = header
        self.records: list[object] = []
        self.resources: list[dict] = []
        self.partial_success = False  # refuse poison records with 200 + partialSuccess instead of 400

    def routes(self) -> list[Route]:
        return [Route("/v1/logs", self.logs, methods=["POST"])]

    async def logs(self, request: Request) -> Response:
        if (r := self.injected_failure()) is not None:
            return r
        if request.headers.get(self.header[0]) != self.header[1]:
            return JSONResponse({"code": 16, "message": "unauthenticated"}, status_code=401)
        if request.headers.get("content-type") != "application/json":
            return JSONResponse({"code": 3, "message": "unsupported content type"}, status_code=415)
        req = ExportLogsServiceRequest()
        raw = await request.body()
        self.bodies.append(raw)
        try:
            json_format.Parse(raw, req)
        except json_format.ParseError as e:
            return JSONResponse({"code": 3, "message": str(e)}, status_code=400)
        ids, rejected = [], 0
        for rl in req.resource_logs:
            self.resources.append({a.key: a.value.string_value for a in rl.resource.attributes})
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    attrs = {a.key: a for a in rec.attributes}
                    if "event.id" not in attrs or rec.time_unix_nano == 0:
                        return JSONResponse({"code": 3, "message": "record without event.id/time"}, 400)
                    if rec.event_name == POISON_ACTION:
                        if self.partial_success:
                            rejected += 1
                            continue
                        return JSONResponse({"code": 3, "message": "invalid log record"}, status_code=400)
                    ids.append(attrs["event.id"].value.string_value)
                    self.records.append(rec)
        for eid in ids:
            self.accept(eid)
        resp = ExportLogsServiceResponse()
        if rejected:
            resp.partial_success.rejected_log_records = rejected
            resp.partial_success.error_message = "invalid log record"
        body = json_format.MessageToJson(resp)
        return Response(orjson.dumps(orjson.loads(body or "{}")), media_type="application/json")
