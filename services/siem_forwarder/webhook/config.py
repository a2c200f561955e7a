"""Webhook destination config.

Protocol (the Stripe/GitHub style; docs/forwarder.md): ``POST`` a JSON array of events to ``url``. Each
request carries ``X-Auditpipe-Timestamp: <unix seconds>`` and ``X-Auditpipe-Signature: sha256=<hex>``
where the hex is HMAC-SHA256(secret, timestamp + "." + body): a receiver recomputes it (rejecting
forgeries) and rejects timestamps outside its tolerance (replays). Limits are the receiver's:
``batch.max_bytes`` default 1 MB. 2xx = done; 408/429/5xx retry honouring ``Retry-After``; other 4xx ->
dead letter.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, HttpUrl, SecretStr

from services.siem_forwarder.util.config import DestinationConfig, secret_from_env

SIGNATURE_HEADER = "X-Auditpipe-Signature"
TIMESTAMP_HEADER = "X-Auditpipe-Timestamp"


class WebhookConfig(DestinationConfig):
    type: Literal["webhook"]
    url: HttpUrl
    secret_env: str = Field(description="environment variable holding the HMAC secret")
    headers: dict[str, str] = Field(default_factory=dict, description="extra, non-secret headers")
    verify_tls: bool = True

    def secret(self) -> SecretStr:
        s = secret_from_env(self.secret_env, f"{self.name}.secret_env")
        assert s is not None
        return s

    def check_secrets(self) -> None:
        self.secret()

    def build(self) -> tuple[Any, Any]:
        from services.siem_forwarder.webhook.client import WebhookClient
        from services.siem_forwarder.webhook.encoder import WebhookEncoder

        return WebhookEncoder(self), WebhookClient(self)
