"""Webhook client: JSON array body, signed per request (fresh timestamp on every attempt)."""

from __future__ import annotations

import time

from services.siem_forwarder.util.delivery import Delivery
from services.siem_forwarder.util.http import make_http, probe_http, send_whole
from services.siem_forwarder.webhook.config import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookConfig
from services.siem_forwarder.webhook.encoder import sign


class WebhookClient:
    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self.url = str(config.url)
        self.http = make_http(config.retry.request_timeout_s, config.verify_tls)
        self._secret = config.secret().get_secret_value().encode()

    def _headers(self, body: bytes) -> dict[str, str]:
        ts = str(int(time.time()))
        return {
            **self.config.headers,
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: ts,
            SIGNATURE_HEADER: sign(self._secret, ts, body),
        }

    async def send(self, items: list[bytes]) -> Delivery:
        body = b"[" + b",".join(items) + b"]"
        return await send_whole(self.http, self.url, body, self._headers(body), len(items))

    async def probe(self) -> str:
        body = b"[]"
        return await probe_http(self.http, "POST", self.url, self._headers(body), body)

    async def aclose(self) -> None:
        await self.http.aclose()
