"""The config blocks every destination shares (``batch``, ``retry``, ``filter``, ``fields``) and the base
class each destination's ``config.py`` extends. Secrets are never in the file: ``*_env`` names an
environment variable that holds them."""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from services.siem_forwarder.util.retry import RetryConfig

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class SecretMissing(ValueError):
    pass


def secret_from_env(var: str | None, what: str) -> SecretStr | None:
    """Read a secret from the environment variable ``var``; a named but unset/empty variable is an error."""
    if not var:
        return None
    val = os.environ.get(var)
    if not val:
        raise SecretMissing(f"{what}: environment variable {var} is not set")
    return SecretStr(val)


class BatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_events: int = Field(default=500, ge=1, le=100_000)
    max_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_seconds: float = Field(default=1.0, gt=0)


class FilterConfig(BaseModel):
    """Which events go to this destination. Empty list = all. ``actions`` entries are fnmatch patterns."""

    model_config = ConfigDict(extra="forbid")
    orgs: list[str] = Field(default_factory=list)
    actions: list[str] = Field(default_factory=list)
    event_types: list[str] = Field(default_factory=list)
    exclude_actions: list[str] = Field(default_factory=list)


class FieldsConfig(BaseModel):
    """Field mapping applied before the destination's own encoding: drop and rename dotted paths."""

    model_config = ConfigDict(extra="forbid")
    exclude: list[str] = Field(default_factory=list, description="dotted paths, e.g. request.payload")
    rename: dict[str, str] = Field(default_factory=dict, description="dotted path -> dotted path")


class DestinationConfig(BaseModel):
    """Base of every destination's config: shared blocks + name/type."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: str
    enabled: bool = True
    batch: BatchConfig = Field(default_factory=BatchConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    fields: FieldsConfig = Field(default_factory=FieldsConfig)
    dead_letter_topic: str | None = Field(
        default=None, description="default audit.deadletter.v1.forwarder.<name>"
    )
    consumer_group: str | None = Field(default=None, description="default auditpipe-forwarder-<name>")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must match [a-z0-9][a-z0-9_-]* (used in topic and group names)")
        return v

    def dlq_topic(self) -> str:
        return self.dead_letter_topic or f"audit.deadletter.v1.forwarder.{self.name}"

    def group(self) -> str:
        return self.consumer_group or f"auditpipe-forwarder-{self.name}"

    def check_secrets(self) -> None:
        """Raise :class:`SecretMissing` when a referenced environment variable is unset."""

    def request_max_bytes(self) -> int | None:
        """The vendor's limit on one request's body, enforced on the *encoded* events (None = no limit)."""
        return None

    def build(self) -> tuple[Any, Any]:  # (encoder, client)
        raise NotImplementedError
