"""Event contract v1: what producers send (RawEvent) and what is stored and forwarded (EnrichedEvent).

This module is the single definition of the contract. JSON Schema files in ``schemas/jsonschema/`` are
generated from it (``python -m schemas.generate``) and a test fails when they drift.

Evolution rule: within v1 only additive, optional fields are allowed. Producers are validated strictly
(unknown top-level fields are refused with an error naming them, so nothing is dropped silently);
consumers of ``audit.events.v1`` ignore fields they do not know (``EnrichedEvent.model_validate`` with
``extra="ignore"`` semantics via :func:`parse_enriched`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 1

# Free-form JSON values (payload, snapshot, before/after) are bounded in depth by the ingest; the
# contract only says "any JSON".
JSONValue = Any

ShortStr = Annotated[str, Field(max_length=1024)]
IdStr = Annotated[str, Field(min_length=1, max_length=256)]


class ActorType(StrEnum):
    user = "user"
    api_token = "api_token"
    service = "service"
    system = "system"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Actor(_Strict):
    type: ActorType | None = Field(
        default=None,
        description="user | api_token | service | system; the enricher decides when absent",
    )
    id: IdStr | None = Field(default=None, description="Stable id of the person, token or service")
    name: ShortStr | None = Field(default=None, description="Display name (or the API token's name)")
    email: ShortStr | None = Field(default=None, description="E-mail of a person, when known")


class Target(_Strict):
    type: ShortStr | None = Field(
        default=None, description="Entity type, e.g. environment; derived from the action when absent"
    )
    id: IdStr | None = Field(default=None, description="Id of the affected resource")
    name: ShortStr | None = Field(default=None, description="Name of the affected resource")


class Request(_Strict):
    method: Annotated[str, Field(max_length=16)] | None = Field(default=None, description="HTTP method")
    path: Annotated[str, Field(max_length=8192)] | None = Field(default=None, description="URL path")
    query: dict[str, JSONValue] | None = Field(default=None, description="Query parameters")
    payload: JSONValue = Field(default=None, description="The request body as JSON, size-capped")
    user_agent: Annotated[str, Field(max_length=2048)] | None = Field(default=None)
    headers: dict[str, str] | None = Field(
        default=None, description="Selected request headers (lower-case names) used for classification"
    )
    peer_ip: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="TCP peer address seen by the producer or the ingest"
    )
    x_forwarded_for: Annotated[str, Field(max_length=16384)] | None = Field(
        default=None, description="Raw X-Forwarded-For header, unparsed"
    )


class Change(_Strict):
    field: Annotated[str, Field(min_length=1, max_length=1024)]
    before: JSONValue = None
    after: JSONValue = None


ACTION_PATTERN = r"^[A-Za-z0-9_.\-/]+:[A-Za-z0-9_.\-]+$"


class RawEvent(_Strict):
    """One API call, as a producer reports it (topic ``audit.raw.v1``)."""

    schema_version: Literal[1] = Field(default=1, description="Contract major version")
    event_id: uuid.UUID | None = Field(
        default=None,
        description="Producer-chosen UUID for idempotency; assigned at ingest (or by the enricher, "
        "deterministically from topic/partition/offset) when absent",
    )
    occurred_at: datetime = Field(description="When the call happened (RFC 3339; UTC assumed if naive)")
    received_at: datetime | None = Field(default=None, description="When the ingest received it")
    org_id: IdStr = Field(description="Organisation (tenant); the Kafka key")
    project_id: IdStr | None = None
    environment_id: IdStr | None = None
    actor: Actor | None = Field(default=None, description="Who; absent means the system did it")
    action: Annotated[str, Field(max_length=256, pattern=ACTION_PATTERN)] = Field(
        description="<entity>:<verb>, e.g. deployment:create"
    )
    event_type: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="create, update, delete, trigger, cancel, rollback, login, access, ..."
    )
    target: Target | None = None
    source: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="The tool: console, api, cli, terraform, git, webhook, system, ..."
    )
    status: Annotated[int, Field(ge=100, le=599)] | None = Field(
        default=None, description="HTTP status of the call"
    )
    change: Annotated[str, Field(max_length=4096)] | None = Field(
        default=None, description="Short human description of the change"
    )
    request: Request | None = None
    metadata: dict[str, Annotated[str, Field(max_length=8192)]] = Field(default_factory=dict)
    changes: list[Change] = Field(default_factory=list, max_length=10_000)
    snapshot: dict[str, JSONValue] | None = Field(default=None, description="Object state after the event")
    producer: Annotated[str, Field(max_length=256)] | None = Field(
        default=None, description="Which ingest token or client sent it (set by the ingest)"
    )

    @field_validator("occurred_at", "received_at")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return v
        if v.tzinfo is None:
            return v.replace(tzinfo=UTC)
        return v.astimezone(UTC)


class EnrichedActor(Actor):
    model_config = ConfigDict(extra="ignore")

    type: ActorType = Field(description="Always set after enrichment")


class EnrichedTarget(Target):
    model_config = ConfigDict(extra="ignore")

    type: Annotated[str, Field(max_length=1024)] = Field(description="Always set after enrichment")


class EnrichedEvent(RawEvent):
    """The trusted record (topic ``audit.events.v1``, table ``audit.events``)."""

    model_config = ConfigDict(extra="ignore")

    event_id: uuid.UUID
    received_at: datetime
    actor: EnrichedActor
    target: EnrichedTarget
    event_type: Annotated[str, Field(max_length=64)]
    source: Annotated[str, Field(max_length=64)]
    client_ip: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="Resolved from peer and X-Forwarded-For by the trusted-proxy rule"
    )
    sensitive_paths: list[str] = Field(
        default_factory=list, description="Paths whose values were replaced by an indicator"
    )
    content_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="SHA-256 of the RFC 8785 canonical JSON of this event without content_hash"
    )
    enriched_at: datetime


class DeadLetter(BaseModel):
    """Anything that could not be processed (topic ``audit.deadletter.v1``)."""

    model_config = ConfigDict(extra="ignore")

    schema_version: Literal[1] = 1
    stage: str = Field(description="ingest | enricher | sink | forwarder:<destination>")
    reason: str = Field(description="Machine-readable reason, e.g. validation_error, clickhouse_bad_data")
    error: str = Field(description="Human-readable detail (secrets scrubbed)")
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    event_id: str | None = None
    org_id: str | None = None
    original: str | None = Field(
        default=None, description="Original message bytes (UTF-8, or base64 with 'base64:' prefix)"
    )
    response: str | None = Field(default=None, description="Destination response, for forwarder letters")
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def parse_raw(data: bytes | str | dict[str, Any]) -> RawEvent:
    if isinstance(data, dict):
        return RawEvent.model_validate(data)
    return RawEvent.model_validate_json(data)


def parse_enriched(data: bytes | str | dict[str, Any]) -> EnrichedEvent:
    if isinstance(data, dict):
        return EnrichedEvent.model_validate(data)
    return EnrichedEvent.model_validate_json(data)


class OrgSwitch(BaseModel):
    """An organisation's audit switch as set through the query API (topic ``audit.org-switch.v1``).

    Compacted, keyed by org_id: the latest record per org is the state. Written by the query API
    (``PUT /api/settings/retention``, after its audit event was acknowledged); followed by every enricher
    worker, which stores no event of an org whose latest record says ``audit_enabled: false`` (nor of an
    org listed in ``enricher.audit_disabled_orgs``).
    """

    model_config = ConfigDict(extra="ignore")

    schema_version: Literal[1] = 1
    org_id: IdStr
    audit_enabled: bool
    changed_by: str = Field(description="Principal that made the change")
    changed_at: datetime
