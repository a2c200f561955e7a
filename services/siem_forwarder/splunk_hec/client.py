"""Splunk HEC client: POST the concatenated events; with ``ack`` on, poll ``/services/collector/ack`` until
the request's ``ackId`` is true (indexed). An ack that never arrives within ``ack_timeout_s`` means the
batch is sent again (transient): duplicates are possible, loss is not."""

from __future__ import annotations

import asyncio
import uuid

import orjson

from services.siem_forwarder.splunk_hec.config import SplunkHecConfig
from services.siem_forwarder.util.delivery import Delivery
from services.siem_forwarder.util.http import (
    TransportError,
    make_http,
    post,
    probe_http,
    whole_request,
)


class SplunkHecClient:
    def __init__(self, config: SplunkHecConfig) -> None:
        self.config = config
        self.base = str(config.url).rstrip("/")
        self.http = make_http(config.retry.request_timeout_s, config.verify_tls)
        self.channel = str(uuid.uuid4())
        self.headers = {
            "Authorization": f"Splunk {config.token().get_secret_value()}",
            "Content-Type": "application/json",
        }
        if config.ack:
            self.headers["X-Splunk-Request-Channel"] = self.channel

    async def send(self, items: list[bytes]) -> Delivery:
        n = len(items)
        try:
            res = await post(
                self.http, f"{self.base}/services/collector/event", b"\n".join(items), self.headers
            )
        except TransportError as e:
            return Delivery.retry_all(n, str(e))
        d = whole_request(n, res)
        if d.retry or d.dead or not self.config.ack:
            return d
        try:
            ack_id = int(orjson.loads(res.text)["ackId"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return Delivery.retry_all(n, f"ack enabled but no ackId in response: {res.text[:200]}")
        return await self._wait_ack(ack_id, n)

    async def _wait_ack(self, ack_id: int, n: int) -> Delivery:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.ack_timeout_s
        body = orjson.dumps({"acks": [ack_id]})
        while loop.time() < deadline:
            try:
                res = await post(self.http, f"{self.base}/services/collector/ack", body, self.headers)
            except TransportError as e:
                return Delivery.retry_all(n, f"ack poll: {e}")
            if res.status == 200:
                try:
                    if orjson.loads(res.text)["acks"].get(str(ack_id)) is True:
                        return Delivery.ok()
                except (orjson.JSONDecodeError, KeyError, AttributeError):
                    return Delivery.retry_all(n, f"ack poll: bad response {res.text[:200]}")
            elif whole_request(n, res).dead:
                return Delivery.retry_all(n, f"ack poll refused: {res.describe()}")
            await asyncio.sleep(self.config.ack_poll_interval_s)
        return Delivery.retry_all(n, f"ackId {ack_id} not indexed within {self.config.ack_timeout_s}s")

    async def probe(self) -> str:
        # An empty-body POST with a valid token answers 400 "No data"; a bad token answers 401/403.
        return await probe_http(self.http, "POST", f"{self.base}/services/collector/event", self.headers, b"")

    async def aclose(self) -> None:
        await self.http.aclose()
