"""``_bulk`` client with per-item results: 201/200/409 -> confirmed; 429/5xx -> resend those items;
other item failures -> dead letter with the item's error."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from services.siem_forwarder.elasticsearch.config import ElasticsearchConfig
from services.siem_forwarder.util.delivery import Delivery
from services.siem_forwarder.util.http import TransportError, make_http, post, probe_http, whole_request
from services.siem_forwarder.util.retry import DEFAULT_RETRYABLE


def item_outcomes(n: int, response: dict[str, Any]) -> Delivery:
    """Pure: per-item bulk results -> Delivery (409 on create = already indexed = success)."""
    items = response.get("items")
    if not isinstance(items, list) or len(items) != n:
        return Delivery.retry_all(
            n, f"bulk response has {len(items) if isinstance(items, list) else 'no'} items for {n}"
        )
    d = Delivery()
    for i, it in enumerate(items):
        res = next(iter(it.values())) if isinstance(it, dict) and it else {}
        status = int(res.get("status", 0))
        if 200 <= status < 300 or status == 409:
            continue
        detail = orjson.dumps({"status": status, "error": res.get("error")}).decode()
        if status in DEFAULT_RETRYABLE or status == 0:
            d.retry.append(i)
            d.error = detail
        else:
            d.dead[i] = detail
    return d


class ElasticsearchClient:
    def __init__(self, config: ElasticsearchConfig) -> None:
        self.config = config
        self.base = str(config.url).rstrip("/")
        self.http = make_http(config.retry.request_timeout_s, config.verify_tls)
        self.headers = {"Content-Type": "application/x-ndjson"}
        key, pw = config.api_key(), config.password()
        if key is not None:
            self.headers["Authorization"] = f"ApiKey {key.get_secret_value()}"
        elif config.username:
            raw = f"{config.username}:{pw.get_secret_value() if pw else ''}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()

    async def send(self, items: list[bytes]) -> Delivery:
        n = len(items)
        try:
            res = await post(self.http, f"{self.base}/_bulk", b"".join(items), self.headers)
        except TransportError as e:
            return Delivery.retry_all(n, str(e))
        d = whole_request(n, res)
        if d.retry or d.dead:
            return d
        try:
            body = orjson.loads(res.text)
        except orjson.JSONDecodeError:
            return Delivery.retry_all(n, f"bulk response is not JSON: {res.text[:200]}")
        if not body.get("errors"):
            return Delivery.ok()
        return item_outcomes(n, body)

    async def probe(self) -> str:
        return await probe_http(self.http, "GET", f"{self.base}/", self.headers)

    async def aclose(self) -> None:
        await self.http.aclose()
