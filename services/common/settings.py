"""The one settings model of auditpipe.

Sources, highest priority first: keyword arguments, environment variables (prefix ``AUDITPIPE_``, nested
fields with ``__``, e.g. ``AUDITPIPE_INGEST__PORT=8080``), the config file named by ``AUDITPIPE_CONFIG``
(TOML or YAML, same structure as the model, lower-case keys), then defaults.

Secrets are ``SecretStr`` and are masked by :func:`masked_dump`; they are never logged.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import types
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

_HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


class SettingsError(Exception):
    """An invalid setting; ``str()`` is one line naming it."""


class IngestToken(BaseModel):
    """An ingest bearer token, stored as the SHA-256 hex of the token (never the token itself).

    ``orgs`` must be written out in production (``["*"]`` for any org): a token without it is refused
    there, so no token silently writes every organisation (see :func:`production_problems`).
    """

    producer: str = Field(min_length=1, description="Producer name recorded in every event it sends")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256(token) in hex")
    orgs: list[str] = Field(
        default_factory=lambda: ["*"],
        description="org_ids it may write; * = any (required in production, * only when written out)",
    )


class IngestSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    tokens: list[IngestToken] = Field(default_factory=list)
    max_batch_events: int = Field(default=1000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    max_event_bytes: int = Field(
        default=256 * 1024,
        ge=512,
        le=256 * 1024,
        description="Largest event as stored (the contract's limit: 256 KiB)",
    )
    envelope_max_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=8 * 1024 * 1024,
        description="Largest Kafka record the ingest writes (events of one org are sent together up to this)",
    )
    max_json_depth: int = Field(default=32, ge=2, le=1000)
    publish_deadline_s: float = Field(default=5.0, gt=0)
    retry_after_s: int = Field(default=5, ge=1)
    topic: str = Field(default="audit.raw.v1", min_length=1, description="Raw topic (tests use their own)")
    max_concurrent_requests: int = Field(
        default=64, ge=1, description="Requests in flight before new ones get 503 + Retry-After (admission)"
    )
    max_inflight_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="Request body bytes in flight before new requests get 503 + Retry-After (admission)",
    )
    request_deadline_s: float = Field(
        default=15.0,
        gt=0,
        description="A request not answered within this (body upload included) gets 503 + Retry-After",
    )

    @model_validator(mode="after")
    def _deadline_after_publish(self) -> IngestSettings:
        if self.request_deadline_s <= self.publish_deadline_s:
            raise ValueError("AUDITPIPE_INGEST__REQUEST_DEADLINE_S: must be longer than the publish deadline")
        return self


# The development default of enricher.indicator_secret; production refuses it.
DEV_INDICATOR_SECRET = "auditpipe-development-indicator-secret"


class EnricherSettings(BaseModel):
    trusted_proxies: list[str] = Field(default_factory=list, description="Addresses or CIDR ranges")
    hash_mode: Literal["indicator", "hmac"] = "indicator"
    hmac_key: SecretStr | None = None
    indicator_secret: SecretStr = Field(
        default=SecretStr(DEV_INDICATOR_SECRET),
        description="Secret from which indicator salts are derived (per event and path), so re-enriching "
        "a record gives the same bytes; at least 16 characters; production refuses the default",
    )
    sensitive_paths: list[str] = Field(default_factory=list, description="e.g. request.payload.password")
    sensitive_key_patterns: list[str] = Field(
        default_factory=lambda: [
            "password",
            "passwd",
            "secret",
            "token",
            "api_key",
            "apikey",
            "private_key",
            "authorization",
            "cookie",
            "set-cookie",
            "credential",
            "access_key",
            "client_secret",
        ]
    )
    audit_disabled_orgs: list[str] = Field(default_factory=list, description="Orgs with audit switched off")
    consumer_group: str = Field(default="auditpipe-enricher", description="faust app id = consumer group")
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535, description="/healthz /readyz /metrics")
    workers: int = Field(default=1, ge=1)
    raw_topic: str = Field(default="audit.raw.v1", min_length=1)
    events_topic: str = Field(default="audit.events.v1", min_length=1)
    deadletter_topic: str = Field(default="audit.deadletter.v1", min_length=1)
    state_topic: str = Field(
        default="audit.enricher.state.v1", min_length=1, description="Compacted: last known org switch state"
    )
    switch_topic: str = Field(
        default="audit.org-switch.v1",
        min_length=1,
        description="Compacted: the org audit switch set through the query API (followed live)",
    )
    data_dir: Path = Field(default=Path(".stack/enricher"), description="faust data directory")
    session_timeout_s: float = Field(default=10.0, ge=6.0, description="Kafka group session timeout")
    commit_interval_s: float = Field(default=1.0, gt=0, description="faust offset commit interval")
    max_in_flight: int = Field(
        default=50_000,
        ge=1,
        le=1_000_000,
        description="Events taken and not yet acked (outputs awaiting the broker) before consumption pauses",
    )
    batch_max_records: int = Field(
        default=100, ge=1, le=10_000, description="Raw records (events or envelopes) taken per batch"
    )
    batch_max_wait_s: float = Field(
        default=0.02, gt=0, le=5, description="Longest wait to fill a batch before processing what came"
    )
    compression: Literal["none", "lz4", "zstd", "snappy", "gzip"] = Field(
        default="zstd",
        description="Compression of the enriched records (measured choice: docs/operations.md)",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        import ipaddress

        for e in v:
            try:
                ipaddress.ip_network(e.strip().strip("[]"), strict=False)
            except ValueError:
                raise ValueError(f"'{e}' is not an address or CIDR range") from None
        return v

    @field_validator("hmac_key", "indicator_secret")
    @classmethod
    def _key_len(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return v


class SinkSettings(BaseModel):
    topic: str = Field(default="audit.events.v1", description="Topic the sink consumes")
    deadletter_topic: str = Field(default="audit.deadletter.v1", description="Where bad rows go")
    consumer_group: str = "auditpipe-sink"
    table: str = Field(default="events", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    # ClickHouse guidance: thousands to ~100k rows per insert, about one insert per second per writer.
    # Half a second keeps an event queryable within a second (measured p99 0.7 s at half the sustained
    # rate, 2.8 s with 1 s batches, which wait for the insert in flight when the box is busy) for a
    # second insert per second, which costs ClickHouse about a quarter more CPU per event.
    batch_max_rows: int = Field(default=50_000, ge=1, le=1_000_000)
    batch_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    batch_max_seconds: float = Field(
        default=0.5, gt=0, description="Longest wait from a batch's first message to its insert"
    )
    retry_initial_backoff_s: float = Field(default=0.5, gt=0)
    session_timeout_s: float = Field(
        default=10.0,
        ge=6,
        le=300,
        description="Consumer group session: how soon a dead sink's partitions move",
    )
    retry_max_backoff_s: float = Field(default=5.0, gt=0)
    host: str = "127.0.0.1"
    port: int = Field(default=8082, ge=1, le=65535)
    archive_enabled: bool = Field(default=True, description="Run the archive job on a schedule in the sink")
    archive_interval_s: float = Field(default=3600.0, gt=0)


class RetentionSettings(BaseModel):
    default_days: int = Field(default=90, ge=1, le=3650)
    self_hosted: bool = False
    archive_dir: Path = Path(".stack/archives")
    archive_gzip: bool = False
    delete_min_age_days: int = Field(default=30, ge=0)
    snapshot_lag_s: float = Field(
        default=300.0,
        ge=0,
        description="An archive run only takes rows stored at least this long before it started",
    )
    audit_topic: str = Field(default="audit.raw.v1", description="Where archive runs/deletions are audited")

    @property
    def max_days(self) -> int:
        return 3650 if self.self_hosted else 365


class IntegritySettings(BaseModel):
    """Tamper evidence: signed, chained digests of what was stored (docs/integrity.md)."""

    enabled: bool = Field(
        default=True,
        description="Seal windows into signed digests (`auditpipe seal`, part of `auditpipe run`); the "
        "archive job then never deletes a row before it is sealed",
    )
    window_s: int = Field(
        default=3600, ge=1, le=86_400, description="Length of a sealed window (by storage time), per org"
    )
    grace_s: float = Field(
        default=120.0,
        ge=0,
        le=86_400,
        description="A window is sealed once ClickHouse's clock and the sink's committed progress have "
        "passed its end by this much (covers inserts in flight and clock skew)",
    )
    interval_s: float = Field(default=60.0, gt=0, description="How often the sealer looks for due windows")
    verify_parallelism: int = Field(
        default=2, ge=1, le=64, description="Organisations verified side by side (one ClickHouse query each)"
    )
    verify_publication_wait_s: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="How long verification waits for a place that lacks an org's newest digests, which "
        "other places hold, to receive them (the sealer publishes to ClickHouse, the topic and the files "
        "one after another) before reporting missing_newest_digests",
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="Ed25519 private key (PKCS#8 PEM, or base64 of the 32-byte seed) that signs digests",
    )
    signing_key_file: Path | None = Field(
        default=None, description="File holding the signing key (same formats); preferred over the variable"
    )
    dev_key_file: Path = Field(
        default=Path(".stack/integrity/signing.key"),
        description="Development only: the signing key created on first use when none is configured",
    )
    public_keys: list[str] = Field(
        default_factory=list,
        description="Other trusted Ed25519 public keys (PEM or base64 of 32 bytes): rotated-out keys, and "
        "the current one on machines that verify without the private key",
    )
    digest_topic: str = Field(
        default="audit.digests.v1", min_length=1, description="Append-only topic of signed digests"
    )
    audit_topic: str = Field(
        default="audit.raw.v1", min_length=1, description="Where seals and verifications are audited"
    )
    digest_dir: Path | None = Field(
        default=None, description="Digest files' root (default: retention.archive_dir, beside the archives)"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8084, ge=1, le=65535, description="Sealer /healthz /readyz /metrics")

    @field_validator("public_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        import base64
        import binascii

        for i, k in enumerate(v):
            k = k.strip()
            if k.startswith("-----BEGIN PUBLIC KEY-----"):
                continue
            try:
                ok = len(base64.b64decode(k, validate=True)) == 32
            except (binascii.Error, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"entry {i} is neither a PEM public key nor base64 of 32 bytes")
        return v


class ForwarderSettings(BaseModel):
    config_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8083, ge=1, le=65535)


class QueryToken(BaseModel):
    """A query-API bearer token (stored hashed) mapped to a principal and its permissions."""

    principal: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    roles: list[Literal["EventView", "Manager"]] = Field(default_factory=lambda: ["EventView"])
    org: str | None = Field(default=None, description="Restrict to one org; None = all orgs")
    projects: list[str] = Field(default_factory=list, description="Empty = all projects")
    environments: list[str] = Field(default_factory=list, description="Empty = all environments")


class QueryApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=1, le=65535)
    tokens: list[QueryToken] = Field(default_factory=list)
    page_size_default: int = Field(default=50, ge=1)
    page_size_max: int = Field(default=500, ge=1)
    query_timeout_s: float = Field(default=30.0, gt=0)
    dedup: Literal["auto", "final", "limit_by"] = Field(
        default="auto",
        description="How reads hide duplicates: FINAL, LIMIT 1 BY event_id, or auto (LIMIT BY when a "
        "skip index drives the query: target_id or q; FINAL otherwise; see docs/query_api.md)",
    )
    audit_topic: str = Field(default="audit.raw.v1", description="Where audit events of sensitive actions go")
    switch_topic: str = Field(
        default="audit.org-switch.v1", description="Where the org audit switch is published for the enricher"
    )
    facet_top: int = Field(default=20, ge=1, le=1000, description="Values per facet")
    max_concurrent_requests: int = Field(
        default=64, ge=1, description="Requests in flight before new ones get 503 + Retry-After (admission)"
    )
    request_deadline_s: float = Field(
        default=40.0,
        gt=0,
        description="A request whose answer has not started by then gets 503 + Retry-After",
    )
    retry_after_s: int = Field(default=5, ge=1, description="Retry-After of overload answers (503, 429)")
    export_timeout_s: float = Field(
        default=900.0, gt=0, description="An export still streaming after this is cut (and audited as such)"
    )
    export_max_per_principal: int = Field(
        default=2, ge=1, description="Concurrent exports of one principal before 429 + Retry-After"
    )
    export_max_concurrent: int = Field(
        default=8, ge=1, description="Concurrent exports of all principals before 429 + Retry-After"
    )

    @model_validator(mode="after")
    def _deadline_after_query(self) -> QueryApiSettings:
        if self.request_deadline_s <= self.query_timeout_s:
            raise ValueError("AUDITPIPE_QUERY_API__REQUEST_DEADLINE_S: must be longer than the query timeout")
        return self


class CliSettings(BaseModel):
    """How ``auditpipe events`` reaches the query API and whose token it uses."""

    api_url: str | None = Field(
        default=None,
        description="Query API base URL; default http://<query_api.host>:<query_api.port>",
    )
    token: SecretStr | None = Field(
        default=None, description="Query API token of the person using the CLI (secret)"
    )
    token_file: Path = Field(
        default=Path("~/.config/auditpipe/token"),
        description="File holding that token when AUDITPIPE_CLI__TOKEN is unset (must not be "
        "readable by group or others)",
    )
    timeout_s: float = Field(default=30.0, gt=0, description="Per-request timeout")

    @field_validator("api_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+(/[^\s]*)?$", v):
            raise ValueError(f"'{v}' is not an http(s):// URL")
        return v.rstrip("/") if v else v


class StackSettings(BaseModel):
    state_dir: Path = Path(".stack")
    cache_dir: Path = Field(
        default_factory=lambda: (
            Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "auditpipe"
        )
    )
    kafka_version: str = "4.1.1"
    kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    kafka_heap: str = Field(default="1g", description="heap of each local Kafka node (-Xms/-Xmx)")
    kafka_nodes: int = Field(
        default=1,
        ge=1,
        le=5,
        description=(
            "local Kafka nodes (`auditpipe stack up --kafka-nodes N`): each a broker+controller; node i "
            "listens on the i-th address of kafka_bootstrap (or the first port + 2(i-1)) and on "
            "kafka_controller_port + 2(i-1)"
        ),
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AUDITPIPE_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    env: Literal["development", "production"] = Field(
        default="development",
        description="production refuses missing or placeholder secrets and tokens, and unencrypted Kafka",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="JSON log level"
    )
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="Comma-separated host:port list")
    kafka_topics_environment: Literal["auto", "local", "cluster"] = Field(
        default="auto",
        description=(
            "which values of schemas/topics a service uses when it creates a missing topic: local (one "
            "broker: replication factor 1), cluster (replication factor 3, min.insync.replicas 2), auto "
            "(cluster when the cluster has at least 3 brokers)"
        ),
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="Kafka security protocol for every client (production: SSL or SASL_SSL)",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism (required with SASL_SSL / SASL_PLAINTEXT)"
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password (secret)")
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        description="PEM file of the CA(s) that signed the brokers' certificates (default: system)",
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="Client certificate chain, PEM (mutual TLS; may also hold the key)"
    )
    kafka_ssl_keyfile: Path | None = Field(default=None, description="Client private key, PEM")
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None, description="Password of an encrypted client key (secret)"
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Check that the broker certificate names the broker (production: true)"
    )
    clickhouse_url: str = Field(default="http://127.0.0.1:8123", description="ClickHouse HTTP(S) interface")
    clickhouse_database: str = Field(default="audit", description="Database holding audit.events")
    clickhouse_user: str = Field(default="default", description="ClickHouse user")
    clickhouse_password: SecretStr = Field(default=SecretStr(""), description="ClickHouse password (secret)")
    tokens_file: Path = Field(
        default=Path(".stack/tokens.json"),
        description="Ingest and query tokens made by `auditpipe token` (SHA-256 only), read beside the "
        "tokens of ingest.tokens / query_api.tokens and reloaded when it changes",
    )

    ingest: IngestSettings = Field(default_factory=IngestSettings)
    enricher: EnricherSettings = Field(default_factory=EnricherSettings)
    sink: SinkSettings = Field(default_factory=SinkSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    integrity: IntegritySettings = Field(default_factory=IntegritySettings)
    forwarder: ForwarderSettings = Field(default_factory=ForwarderSettings)
    query_api: QueryApiSettings = Field(default_factory=QueryApiSettings)
    stack: StackSettings = Field(default_factory=StackSettings)
    cli: CliSettings = Field(default_factory=CliSettings)

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, v: str) -> str:
        parts = [p.strip() for p in v.split(",") if p.strip()]
        if not parts:
            raise ValueError("must be a comma-separated list of host:port")
        for p in parts:
            m = _HOSTPORT.match(p)
            if not m or not (0 < int(m.group(2)) < 65536):
                raise ValueError(f"'{p}' is not host:port")
        return ",".join(parts)

    @field_validator("clickhouse_url")
    @classmethod
    def _ch_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/:\s]+(:\d{1,5})?/?$", v):
            raise ValueError(f"'{v}' is not an http(s)://host[:port] URL")
        return v.rstrip("/")

    @field_validator("clickhouse_database")
    @classmethod
    def _db(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", v):
            raise ValueError("must be an identifier ([A-Za-z_][A-Za-z0-9_]*)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.enricher.hash_mode == "hmac" and not (
            self.enricher.hmac_key and self.enricher.hmac_key.get_secret_value()
        ):
            raise ValueError("enricher.hash_mode=hmac needs AUDITPIPE_ENRICHER__HMAC_KEY")
        problems = kafka_security_problems(self)
        if self.env == "production":
            problems += production_problems(self)
        if problems:
            name, msg = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ValueError(f"{name}: {msg}{more}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _ConfigFileSource(settings_cls))

    # Convenience accessors -------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> list[str]:
        return self.kafka_bootstrap.split(",")

    @property
    def kafka_port(self) -> int:
        return int(self.bootstrap_servers[0].rsplit(":", 1)[1])

    @property
    def clickhouse_host(self) -> str:
        return self.clickhouse_url.split("://", 1)[1].split(":")[0].rstrip("/")

    @property
    def clickhouse_port(self) -> int:
        rest = self.clickhouse_url.split("://", 1)[1]
        if ":" in rest:
            return int(rest.split(":")[1].rstrip("/"))
        return 8443 if self.clickhouse_url.startswith("https") else 8123

    @property
    def clickhouse_secure(self) -> bool:
        return self.clickhouse_url.startswith("https")


# -- safety rules (pure) -------------------------------------------------------------------------------
# Values shipped as examples in deploy/ and docs/, and other stand-ins nobody should run with. A value is a
# placeholder when it is empty, contains CHANGE_ME (any case, - or _), is a <template> or "…", or is one of
# these words.
_PLACEHOLDER_WORDS = frozenset(
    {"secret", "password", "changeme", "change_me", "change-me", "test-password", "example", "xxx", "todo"}
)
_PLACEHOLDER = re.compile(r"change[_-]?me|^<.*>$|^\.\.\.$|^…$|^\s*$", re.IGNORECASE)


def is_placeholder(value: str) -> bool:
    """True for empty values, CHANGE_ME-style placeholders and the example words shipped in docs."""
    return bool(_PLACEHOLDER.search(value)) or value.strip().lower() in _PLACEHOLDER_WORDS


def is_placeholder_hash(sha256_hex: str) -> bool:
    """True for a token hash that is no real SHA-256 of a secret: the hash of a placeholder word (or of
    nothing), or a hex string of at most two distinct digits ("aaaa…", "0000…")."""
    import hashlib

    if len(set(sha256_hex)) <= 2:
        return True
    words = {"", "token", *_PLACEHOLDER_WORDS, "CHANGE_ME"}
    return sha256_hex in {hashlib.sha256(w.encode()).hexdigest() for w in words}


def kafka_security_problems(s: Settings) -> list[tuple[str, str]]:
    """Kafka security settings that contradict each other (any env): (setting, one-line reason)."""
    out: list[tuple[str, str]] = []
    proto = s.kafka_security_protocol
    sasl = proto.startswith("SASL_")
    if sasl:
        if s.kafka_sasl_mechanism is None:
            out.append(("AUDITPIPE_KAFKA_SASL_MECHANISM", f"required with {proto}"))
        if not s.kafka_sasl_username:
            out.append(("AUDITPIPE_KAFKA_SASL_USERNAME", f"required with {proto}"))
        if s.kafka_sasl_password is None:
            out.append(("AUDITPIPE_KAFKA_SASL_PASSWORD", f"required with {proto}"))
    elif s.kafka_sasl_mechanism is not None:
        out.append(
            ("AUDITPIPE_KAFKA_SASL_MECHANISM", f"only used with SASL_SSL or SASL_PLAINTEXT, not {proto}")
        )
    if not proto.endswith("SSL"):
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", "kafka_ssl_key_password"):
            if getattr(s, name) is not None:
                out.append((f"AUDITPIPE_{name.upper()}", f"only used with SSL or SASL_SSL, not {proto}"))
    if s.kafka_ssl_keyfile is not None and s.kafka_ssl_certfile is None:
        out.append(("AUDITPIPE_KAFKA_SSL_KEYFILE", "needs AUDITPIPE_KAFKA_SSL_CERTFILE"))
    return out


def production_problems(s: Settings) -> list[tuple[str, str]]:
    """What env=production refuses: (setting, one-line reason), in the order they are reported."""
    out: list[tuple[str, str]] = []
    if s.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        out.append(
            (
                "AUDITPIPE_KAFKA_SECURITY_PROTOCOL",
                f"{s.kafka_security_protocol} is unencrypted; production needs SSL or SASL_SSL",
            )
        )
    if not s.kafka_ssl_check_hostname:
        out.append(("AUDITPIPE_KAFKA_SSL_CHECK_HOSTNAME", "production checks the broker's certificate name"))
    secrets: list[tuple[str, SecretStr | None]] = [
        ("AUDITPIPE_CLICKHOUSE_PASSWORD", s.clickhouse_password),
        ("AUDITPIPE_KAFKA_SASL_PASSWORD", s.kafka_sasl_password if s.kafka_sasl_mechanism else None),
        ("AUDITPIPE_KAFKA_SSL_KEY_PASSWORD", s.kafka_ssl_key_password),
        ("AUDITPIPE_ENRICHER__HMAC_KEY", s.enricher.hmac_key),
    ]
    for name, secret in secrets:
        if name == "AUDITPIPE_CLICKHOUSE_PASSWORD" or secret is not None:
            if secret is None or is_placeholder(secret.get_secret_value()):
                out.append((name, "empty or a placeholder/example value; set the real secret"))
    # No token at all is not refused: it is closed (every call 401), and the first token of a production
    # deployment is often made with `auditpipe token create` into tokens_file, a command that has to
    # start under these very settings. The ingest and the query API warn at start instead.
    for i, t in enumerate(s.ingest.tokens):
        if "orgs" not in t.model_fields_set:
            out.append(
                (
                    f"AUDITPIPE_INGEST__TOKENS ([{i}].orgs)",
                    f'token of {t.producer!r} must list its orgs (["*"] = any)',
                )
            )
        elif not t.orgs:
            out.append((f"AUDITPIPE_INGEST__TOKENS ([{i}].orgs)", f"token of {t.producer!r} lists no org"))
        if is_placeholder_hash(t.sha256) or is_placeholder(t.producer):
            out.append((f"AUDITPIPE_INGEST__TOKENS ([{i}].sha256)", "a placeholder/example token"))
    for i, q in enumerate(s.query_api.tokens):
        if is_placeholder_hash(q.sha256) or is_placeholder(q.principal):
            out.append((f"AUDITPIPE_QUERY_API__TOKENS ([{i}].sha256)", "a placeholder/example token"))
    if s.enricher.hash_mode == "indicator" and (
        s.enricher.indicator_secret.get_secret_value() == DEV_INDICATOR_SECRET
        or is_placeholder(s.enricher.indicator_secret.get_secret_value())
    ):
        out.append(
            (
                "AUDITPIPE_ENRICHER__INDICATOR_SECRET",
                "the development default or a placeholder; set a secret of its own",
            )
        )
    i = s.integrity
    if i.enabled and i.signing_key is None and i.signing_key_file is None:
        # (a file path, not the key: only the sealer mounts the file; the others verify with public keys)
        out.append(
            (
                "AUDITPIPE_INTEGRITY__SIGNING_KEY_FILE",
                "production with integrity.enabled needs a signing key (this variable or "
                "AUDITPIPE_INTEGRITY__SIGNING_KEY); the development key is made only outside production",
            )
        )
    elif i.signing_key is not None and is_placeholder(i.signing_key.get_secret_value()):
        out.append(("AUDITPIPE_INTEGRITY__SIGNING_KEY", "a placeholder/example value; set the real key"))
    return out


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Reads the file named by AUDITPIPE_CONFIG (TOML or YAML)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        path = os.environ.get("AUDITPIPE_CONFIG")
        if path:
            p = Path(path)
            if not p.is_file():
                raise SettingsError(f"AUDITPIPE_CONFIG: file not found: {path}")
            text = p.read_text()
            try:
                if p.suffix in (".yaml", ".yml"):
                    data = yaml.safe_load(text) or {}
                else:
                    data = tomllib.loads(text)
            except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
                raise SettingsError(f"AUDITPIPE_CONFIG: cannot parse {path}: {str(e).splitlines()[0]}") from e
            if not isinstance(data, dict):
                raise SettingsError(f"AUDITPIPE_CONFIG: {path} must hold a mapping")
            self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


ENV_PREFIX = "AUDITPIPE_"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings section a field holds (``X`` or ``X | None``), if any."""
    union = get_origin(annotation) in (Union, types.UnionType)
    for a in (annotation, *(get_args(annotation) if union else ())):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _json_kind(annotation: Any) -> str | None:
    """'object' or 'array' when the environment must hold JSON for this field, else None."""
    if _model_of(annotation) is not None:
        return "object"
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        kinds = [k for a in get_args(annotation) if (k := _json_kind(a))]
        return kinds[0] if kinds else None
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple, set, frozenset):
        return "array"
    if origin is dict or annotation is dict:
        return "object"
    return None


def _env_name(loc: tuple[Any, ...]) -> tuple[str, str]:
    """(variable, detail) of an error location: the leading field names form the variable
    (``AUDITPIPE_INGEST__TOKENS``), the rest (``[0].sha256``) says where inside its value."""
    model: type[BaseModel] | None = Settings
    names: list[str] = []
    rest = list(loc)
    while rest and model is not None and isinstance(rest[0], str) and rest[0] in model.model_fields:
        name = rest.pop(0)
        names.append(name)
        model = _model_of(model.model_fields[name].annotation)
    detail = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in rest).lstrip(".")
    return (ENV_PREFIX + "__".join(n.upper() for n in names) if names else ENV_PREFIX + "*"), detail


# "AUDITPIPE_X: why" or "AUDITPIPE_X (where inside its value): why"
_NAMED = re.compile(r"^(AUDITPIPE_[A-Z0-9_]+(?: \([^)]*\))?): (.*)$", re.S)


def _describe(err: ValidationError) -> str:
    e = err.errors(include_input=False, include_url=False)[0]
    name, detail = _env_name(tuple(e.get("loc", ())))
    msg = e.get("msg", "invalid").replace("Value error, ", "")
    where = f" ({detail})" if detail else ""
    m = _NAMED.match(msg)
    if m:  # a rule over several fields names the setting at the start of its message
        name, msg, where = m.group(1), m.group(2), ""
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"invalid setting {name}{where}: {msg}{more}"


def undecodable_env(env: Mapping[str, str]) -> tuple[str, str] | None:
    """The first ``AUDITPIPE_*`` variable that must hold JSON (a section, a list, a mapping) and does not,
    with what is wrong; None when every such variable parses. Names are matched case-insensitively, as
    the settings sources do; variables that name no setting are ignored (as the sources ignore them)."""
    for var in sorted(env):
        if not var.upper().startswith(ENV_PREFIX):
            continue
        parts = var[len(ENV_PREFIX) :].lower().split("__")
        model: type[BaseModel] | None = Settings
        kind: str | None = None
        for i, part in enumerate(parts):
            field = model.model_fields.get(part) if model is not None else None
            if field is None:
                kind = None
                break
            if i < len(parts) - 1:
                model = _model_of(field.annotation)
            else:
                kind = _json_kind(field.annotation)
        if kind is None or not env[var]:
            continue
        try:
            json.loads(env[var])
        except ValueError as e:
            why = f"{e.msg} at position {e.pos}" if isinstance(e, json.JSONDecodeError) else str(e)
            return var.upper(), f"not valid JSON ({why}); expected a JSON {kind}"
    return None


def load_settings(**overrides: Any) -> Settings:
    """Build the settings or raise :class:`SettingsError` with one line naming the bad setting.

    Two kinds of failure: a value that does not validate (pydantic names the field), and a nested value
    in the environment that is not JSON at all, which the settings sources report only by section; for
    that one the environment is searched for the variable that does not parse.
    """
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise SettingsError(_describe(e)) from None
    except SourceError as e:
        bad = undecodable_env(os.environ)
        if bad is not None:
            raise SettingsError(f"invalid setting {bad[0]}: {bad[1]}") from None
        raise SettingsError(f"invalid settings: {str(e).splitlines()[0]}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def masked_dump(settings: Settings) -> dict[str, Any]:
    """Effective settings as plain data with every secret masked."""

    def walk(v: Any) -> Any:
        if isinstance(v, SecretStr):
            return "**********" if v.get_secret_value() else ""
        if isinstance(v, BaseModel):
            return {k: walk(getattr(v, k)) for k in type(v).model_fields}
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return walk(settings)
