"""Datadog Logs client: one JSON array per request; 202 confirms the batch."""

from __future__ import annotations

import gzip

from services.siem_forwarder.datadog.config import DatadogConfig
from services.siem_forwarder.util.delivery import Delivery
from services.siem_forwarder.util.http import make_http, probe_http, send_whole


class DatadogClient:
    def __init__(self, config: DatadogConfig) -> None:
        self.config = config
        self.url = f"{config.base_url()}/api/v2/logs"
        self.http = make_http(config.retry.request_timeout_s)
        self.headers = {"DD-API-KEY": config.api_key().get_secret_value(), "Content-Type": "application/json"}

    async def send(self, items: list[bytes]) -> Delivery:
        body = b"[" + b",".join(items) + b"]"
        headers = self.headers
        if self.config.compress:
            body = gzip.compress(body, compresslevel=1)
            headers = {**headers, "Content-Encoding": "gzip"}
        return await send_whole(self.http, self.url, body, headers, len(items))

    async def probe(self) -> str:
        # An empty array is a valid, empty submission: reachability + key check without sending data.
        return await probe_http(self.http, "POST", self.url, self.headers, b"[]")

    async def aclose(self) -> None:
        await self.http.aclose()
