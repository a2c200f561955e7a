"""OTLP/HTTP JSON client: one ``ExportLogsServiceRequest`` per batch under one resource and scope."""

from __future__ import annotations

import orjson

from services.siem_forwarder.otlp.config import RETRYABLE, OtlpConfig
from services.siem_forwarder.otlp.encoder import attr
from services.siem_forwarder.util.delivery import Delivery
from services.siem_forwarder.util.http import TransportError, make_http, post, probe_http, whole_request


class OtlpClient:
    def __init__(self, config: OtlpConfig) -> None:
        self.config = config
        self.url = str(config.endpoint).rstrip("/") + "/v1/logs"
        self.http = make_http(config.retry.request_timeout_s, config.verify_tls)
        self.headers = {**config.headers, "Content-Type": "application/json"}
        self.headers.update({k: v.get_secret_value() for k, v in config.secret_headers().items()})
        res_attrs = {"service.name": config.service_name, **config.resource_attributes}
        self._prefix = orjson.dumps([attr(k, v) for k, v in res_attrs.items()])

    def body(self, items: list[bytes]) -> bytes:
        return (
            b'{"resourceLogs":[{"resource":{"attributes":'
            + self._prefix
            + b'},"scopeLogs":[{"scope":{"name":"auditpipe.forwarder"},"logRecords":['
            + b",".join(items)
            + b"]}]}]}"
        )

    async def send(self, items: list[bytes]) -> Delivery:
        n = len(items)
        try:
            res = await post(self.http, self.url, self.body(items), self.headers)
        except TransportError as e:
            return Delivery.retry_all(n, str(e))
        d = whole_request(n, res, retryable=RETRYABLE)
        if d.retry or d.dead or not res.text:
            return d
        try:
            partial = orjson.loads(res.text).get("partialSuccess") or {}
            rejected = int(partial.get("rejectedLogRecords") or 0)
        except (orjson.JSONDecodeError, AttributeError, ValueError):
            return d
        if rejected > 0:
            return Delivery.split_all(
                n, f"partialSuccess: {rejected} rejected: {partial.get('errorMessage', '')}"
            )
        return d

    async def probe(self) -> str:
        return await probe_http(self.http, "POST", self.url, self.headers, self.body([]))

    async def aclose(self) -> None:
        await self.http.aclose()
