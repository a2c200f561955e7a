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

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

SCHEMA_VERSION = 1

# An event's JSON is at most this many bytes (the ingest's ``max_event_bytes`` cannot be set higher).
# Scrubbing can grow an event (a short secret becomes an 86-character indicator; at worst about 11x for a
# payload of tiny sensitive keys), and the enriched topic accepts records up to 8 MiB: this bound keeps
# every valid event storable.
MAX_EVENT_BYTES = 256 * 1024
# Numbers without a fraction (integers, and floats such as 3e20) anywhere in an event, including
# free-form JSON (payload, query, snapshot, changes), must lie within ±(2**53 - 1): RFC 8785, which defines
# content_hash, represents numbers as IEEE doubles, exact only there, and JSON Schema calls every such
# number an integer. Producers check it with :func:`unsafe_integer_path` (the ingest, the client and the
# enricher do) and the middleware, which records end users' requests, keeps such numbers as decimal
# strings (:func:`coerce_unsafe_integers`).
SAFE_INTEGER = 2**53 - 1

# Free-form JSON values (payload, query, snapshot, before/after): any JSON whose integers lie within
# ±(2**53 - 1) (SAFE_INTEGER, below), nested at most as deep as the ingest allows. Validated as Any (fast,
# in Rust) plus one walk (``unsafe_integer_path``); the JSON Schema says the same with a recursive
# definition, which :func:`with_json_values` puts where pydantic leaves a marker.
JSON_VALUE_MARK = "x-auditpipe-json-value"
JSONValue = Annotated[Any, WithJsonSchema({JSON_VALUE_MARK: True})]

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
        try:
            return v.astimezone(UTC)
        except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 is past year 9999 in UTC
            raise ValueError("time is out of range once converted to UTC") from None


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


def json_value_schema(ref: str) -> dict[str, Any]:
    """The JSON Schema of a free-form value, recursive through ``ref`` (where this schema is stored).

    JSON Schema counts a number without fraction as an integer whatever its spelling (``3e20`` too),
    and so does the contract (:func:`is_unsafe_number`).
    """
    return {
        "description": "Any JSON value; numbers without fraction within ±(2**53-1)",
        "anyOf": [
            {"type": "null"},
            {"type": "boolean"},
            {"type": "string"},
            {"type": "integer", "minimum": -SAFE_INTEGER, "maximum": SAFE_INTEGER},
            {"type": "number", "not": {"type": "integer"}},
            {"type": "array", "items": {"$ref": ref}},
            {"type": "object", "additionalProperties": {"$ref": ref}},
        ],
    }


def with_json_values(schema: dict[str, Any], ref: str, defs: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (from pydantic) with every free-form marker replaced by ``{"$ref": ref}``, and the
    recursive definition added to ``defs`` under the last segment of ``ref``."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get(JSON_VALUE_MARK) is True:
                return {**{k: v for k, v in node.items() if k != JSON_VALUE_MARK}, "$ref": ref}
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out = walk(schema)
    defs[ref.rsplit("/", 1)[-1]] = json_value_schema(ref)
    return out


def is_unsafe_number(v: Any) -> bool:
    """An integer, or a float without fraction, outside ±(2**53 - 1) (booleans are not numbers here)."""
    t = type(v)
    if t is int:
        return not -SAFE_INTEGER <= v <= SAFE_INTEGER
    if t is float:
        return v.is_integer() and not -SAFE_INTEGER <= v <= SAFE_INTEGER
    return False


def unsafe_integer_path(value: Any, path: str = "") -> str | None:
    """Dotted path of the first number without fraction outside ±(2**53 - 1) in ``value``, or None."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        v, p = stack.pop()
        t = type(v)
        if t is int or t is float:
            if is_unsafe_number(v):
                return p
        elif t is dict:
            stack.extend((x, f"{p}.{k}" if p else str(k)) for k, x in v.items())
        elif t is list:
            stack.extend((x, f"{p}.{i}" if p else str(i)) for i, x in enumerate(v))
    return None


def coerce_unsafe_integers(value: Any) -> Any:
    """``value`` (JSON data) with every number outside the contract's range replaced by its decimal text."""
    t = type(value)
    if t is int or t is float:
        return str(value) if is_unsafe_number(value) else value
    if t is dict:
        return {k: coerce_unsafe_integers(v) for k, v in value.items()}
    if t is list:
        return [coerce_unsafe_integers(v) for v in value]
    return value


# A record of audit.raw.v1 holds one event (a JSON object) or an envelope: a JSON array of 1..N events
# that a producer sent together (the ingest writes one per request and org, the client one per flush
# and org). Each event of an envelope is validated, enriched, dead-lettered or suppressed on its own.
RawRecord = RawEvent | Annotated[list[RawEvent], Field(min_length=1)]


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


class EnricherSwitchState(BaseModel):
    """The enricher's record of an org's audit switch as set in its settings (topic
    ``audit.enricher.state.v1``, compacted, key = org_id; written and read only by the enricher).

    A change is recorded with ``emitted: false`` before its ``organization:audit_config_update`` event is
    published and again with ``emitted: true`` after, so a crash in between re-emits the same event.
    """

    model_config = ConfigDict(extra="ignore")

    audit_enabled: bool
    before: bool | None = None
    changed_at: datetime | None = None
    event_id: uuid.UUID | None = None
    emitted: bool | None = None
