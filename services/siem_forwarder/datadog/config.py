"""Datadog Logs destination config.

API limits (docs.datadoghq.com/api/latest/logs/send-logs; docs/forwarder.md): ``POST /api/v2/logs`` on the
site's intake host (``https://http-intake.logs.<site>``), header ``DD-API-KEY``, JSON array of log items.
Per request: at most 1000 entries, 5 MB uncompressed; a single log over 1 MB is truncated by Datadog (we
dead-letter it instead, so nothing is silently cut); timestamps older than 18 h are dropped by Datadog.
Datadog recommends gzip (``Content-Encoding: gzip``; the limits apply to the uncompressed body).
202 = accepted. 408/429/5xx retry; 413 = too large (the batch is split and resent); other 4xx permanent.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, HttpUrl, SecretStr, field_validator

from services.siem_forwarder.util.config import BatchConfig, DestinationConfig, secret_from_env

MAX_ENTRIES = 1000
MAX_PAYLOAD_BYTES = 5 * 1000 * 1000
MAX_LOG_BYTES = 1000 * 1000


class DatadogConfig(DestinationConfig):
    type: Literal["datadog"]
    site: str = Field(
        default="datadoghq.com", description="datadoghq.com, datadoghq.eu, us3.datadoghq.com, ..."
    )
    url: HttpUrl | None = Field(default=None, description="override the intake base URL (tests, proxies)")
    api_key_env: str = Field(description="environment variable holding the API key")
    service: str = "auditpipe"
    ddsource: str = "auditpipe"
    hostname: str | None = None
    tags: list[str] = Field(default_factory=list, description="extra ddtags, key:value")
    compress: bool = Field(
        default=True, description="gzip the body (Content-Encoding: gzip), as Datadog advises"
    )
    batch: BatchConfig = Field(
        default_factory=lambda: BatchConfig(max_events=MAX_ENTRIES, max_bytes=4_000_000)
    )

    @field_validator("batch")
    @classmethod
    def _limits(cls, b: BatchConfig) -> BatchConfig:
        if b.max_events > MAX_ENTRIES:
            raise ValueError(f"batch.max_events must be <= {MAX_ENTRIES} (Datadog limit)")
        if b.max_bytes > MAX_PAYLOAD_BYTES - MAX_LOG_BYTES:
            raise ValueError(
                f"batch.max_bytes must be <= {MAX_PAYLOAD_BYTES - MAX_LOG_BYTES} (5 MB payload limit)"
            )
        return b

    def base_url(self) -> str:
        return str(self.url).rstrip("/") if self.url else f"https://http-intake.logs.{self.site}"

    def request_max_bytes(self) -> int:
        return MAX_PAYLOAD_BYTES

    def api_key(self) -> SecretStr:
        s = secret_from_env(self.api_key_env, f"{self.name}.api_key_env")
        assert s is not None
        return s

    def check_secrets(self) -> None:
        self.api_key()

    def build(self) -> tuple[Any, Any]:
        from services.siem_forwarder.datadog.client import DatadogClient
        from services.siem_forwarder.datadog.encoder import DatadogEncoder

        return DatadogEncoder(self), DatadogClient(self)
