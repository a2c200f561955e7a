"""Topic definitions: one YAML file per topic, read by the stack (topic creation) and the services."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import yaml

HERE = Path(__file__).parent

RAW = "audit.raw.v1"
EVENTS = "audit.events.v1"
DEADLETTER = "audit.deadletter.v1"
ORG_SWITCH = "audit.org-switch.v1"
DIGESTS = "audit.digests.v1"
ENRICHER_STATE = "audit.enricher.state.v1"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    retention_ms: int
    compression: str
    producers: list[str]
    consumers: list[str]
    schema: str
    cleanup_policy: str = "delete"
    max_message_bytes: int | None = None

    def configs(self) -> dict[str, str]:
        """Topic configs for creating it."""
        out = {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}
        if self.max_message_bytes is not None:
            out["max.message.bytes"] = str(self.max_message_bytes)
        return out


def load_topics() -> dict[str, TopicSpec]:
    out: dict[str, TopicSpec] = {}
    for path in sorted(HERE.glob("*.yaml")):
        d = yaml.safe_load(path.read_text())
        out[d["name"]] = TopicSpec(
            name=d["name"],
            partitions=int(d["partitions"]),
            replication_factor=int(d.get("replication_factor", 1)),
            retention_ms=int(d["retention_ms"]),
            compression=str(d.get("compression", "producer")),
            producers=list(d.get("producers", [])),
            consumers=list(d.get("consumers", [])),
            schema=str(d["schema"]),
            cleanup_policy=str(d.get("cleanup_policy", "delete")),
            max_message_bytes=int(d["max_message_bytes"]) if "max_message_bytes" in d else None,
        )
    return out


def spec_as(logical: str, name: str) -> TopicSpec:
    """The contract of topic ``logical`` under the configured (or a test's) ``name``."""
    return replace(load_topics()[logical], name=name)
