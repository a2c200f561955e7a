"""Elasticsearch / OpenSearch destination config.

API limits (Elastic bulk API docs; docs/forwarder.md): ``POST /_bulk``, NDJSON pairs of action line
(``{"create":{"_index":…,"_id":event_id}}``) and document, ending with a newline; ``http.max_content_length``
defaults to 100 MB — keep batches to a few MB (``batch.max_bytes`` default 5 MB). HTTP 200 may still carry
per-item failures: ``errors`` and each item's ``status`` are read. Item 409 on ``create`` with our ``_id`` =
already indexed (a resend is idempotent: success). Item 429 / 5xx = resend only those items; other item
4xx = that event is dead-lettered. Auth: API key (``Authorization: ApiKey …``) or basic auth. OpenSearch
speaks the same bulk API.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, HttpUrl, SecretStr

from services.siem_forwarder.util.config import BatchConfig, DestinationConfig, secret_from_env


class ElasticsearchConfig(DestinationConfig):
    type: Literal["elasticsearch"]
    url: HttpUrl
    index: str = Field(default="auditpipe-events", description="index or data stream name")
    api_key_env: str | None = None
    username: str | None = None
    password_env: str | None = None
    verify_tls: bool = True
    batch: BatchConfig = Field(default_factory=lambda: BatchConfig(max_bytes=5 * 1024 * 1024))

    def api_key(self) -> SecretStr | None:
        return secret_from_env(self.api_key_env, f"{self.name}.api_key_env")

    def password(self) -> SecretStr | None:
        return secret_from_env(self.password_env, f"{self.name}.password_env")

    def check_secrets(self) -> None:
        self.api_key()
        self.password()

    def build(self) -> tuple[Any, Any]:
        from services.siem_forwarder.elasticsearch.client import ElasticsearchClient
        from services.siem_forwarder.elasticsearch.encoder import ElasticsearchEncoder

        return ElasticsearchEncoder(self), ElasticsearchClient(self)
