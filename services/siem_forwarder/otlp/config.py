"""OTLP logs destination config.

Protocol (OpenTelemetry OTLP spec; docs/forwarder.md): ``POST <endpoint>/v1/logs`` with an
``ExportLogsServiceRequest`` in the protobuf JSON mapping (``Content-Type: application/json``; field names
lowerCamelCase, 64-bit integers as strings, enums as integers). 200 = done, and the body may report
``partialSuccess.rejectedLogRecords``: the spec forbids retrying a partial success, so we bisect the batch
to find the rejected records and dead-letter them (accepted ones may be resent: duplicates, never loss).
Retryable: 429, 502, 503, 504 honouring ``Retry-After``; other statuses are not retryable. No size limit in
the spec; collectors commonly cap requests (the Collector's default is 20 MiB): ``batch.max_bytes`` 4 MB.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, HttpUrl, SecretStr

from services.siem_forwarder.util.config import BatchConfig, DestinationConfig, secret_from_env

RETRYABLE = frozenset({429, 502, 503, 504})


class OtlpConfig(DestinationConfig):
    type: Literal["otlp"]
    endpoint: HttpUrl = Field(description="base URL; /v1/logs is appended")
    headers: dict[str, str] = Field(default_factory=dict, description="non-secret headers")
    headers_env: dict[str, str] = Field(
        default_factory=dict, description="header name -> environment variable holding its value"
    )
    service_name: str = "auditpipe"
    resource_attributes: dict[str, str] = Field(default_factory=dict)
    verify_tls: bool = True
    batch: BatchConfig = Field(default_factory=lambda: BatchConfig(max_bytes=4 * 1024 * 1024))

    def secret_headers(self) -> dict[str, SecretStr]:
        out = {}
        for header, var in self.headers_env.items():
            s = secret_from_env(var, f"{self.name}.headers_env.{header}")
            assert s is not None
            out[header] = s
        return out

    def check_secrets(self) -> None:
        self.secret_headers()

    def build(self) -> tuple[Any, Any]:
        from services.siem_forwarder.otlp.client import OtlpClient
        from services.siem_forwarder.otlp.encoder import OtlpEncoder

        return OtlpEncoder(self), OtlpClient(self)
