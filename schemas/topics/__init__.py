"""Topic definitions: one YAML file per topic, read by the stack (topic creation) and the services."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).parent

RAW = "audit.raw.v1"
EVENTS = "audit.events.v1"
DEADLETTER = "audit.deadletter.v1"


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
        )
    return out
