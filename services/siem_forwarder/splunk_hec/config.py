"""Splunk HEC destination config.

API limits (Splunk docs; docs/forwarder.md): ``POST /services/collector/event``, body = JSON event objects
concatenated; header ``Authorization: Splunk <token>``. The server's ``max_content_length`` (commonly 1 MB
in older releases, configurable) bounds a request: ``batch.max_bytes`` defaults to 900 KB. HTTP 200 means
*accepted*, not indexed; with indexer acknowledgement (``ack = true``) every request carries
``X-Splunk-Request-Channel: <uuid>`` and the returned ``ackId`` is polled at ``/services/collector/ack``
until it is true — only then is the batch "delivered". 429/5xx/timeouts retry; 400/401/403 are permanent.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, HttpUrl, SecretStr

from services.siem_forwarder.util.config import BatchConfig, DestinationConfig, secret_from_env

MAX_CONTENT_LENGTH = 1024 * 1024


class SplunkHecConfig(DestinationConfig):
    type: Literal["splunk_hec"]
    url: HttpUrl = Field(description="base URL, e.g. https://splunk.example.com:8088")
    token_env: str = Field(description="environment variable holding the HEC token")
    index: str | None = None
    sourcetype: str = "auditpipe:event"
    source: str = "auditpipe"
    host: str | None = None
    ack: bool = Field(default=False, description="indexer acknowledgement: delivered = indexed")
    ack_poll_interval_s: float = Field(default=0.5, gt=0)
    ack_timeout_s: float = Field(default=60.0, gt=0)
    verify_tls: bool = True
    max_content_length: int = Field(
        default=MAX_CONTENT_LENGTH, ge=1024, description="the server's max_content_length (limits.conf)"
    )
    batch: BatchConfig = Field(default_factory=lambda: BatchConfig(max_bytes=900 * 1024))

    def request_max_bytes(self) -> int:
        return self.max_content_length

    def token(self) -> SecretStr:
        s = secret_from_env(self.token_env, f"{self.name}.token_env")
        assert s is not None
        return s

    def check_secrets(self) -> None:
        self.token()

    def build(self) -> tuple[Any, Any]:
        from services.siem_forwarder.splunk_hec.client import SplunkHecClient
        from services.siem_forwarder.splunk_hec.encoder import SplunkHecEncoder

        return SplunkHecEncoder(self), SplunkHecClient(self)
