"""Topic definitions: one YAML file per topic, read by the stack (topic creation) and the services.

Each file holds the topic's values for the single-node development broker (``partitions``,
``replication_factor``, ``min_insync_replicas``) and, under ``environments``, what changes elsewhere:
``cluster`` is a Kafka cluster of three or more brokers (replication factor 3, ``min.insync.replicas``
2, so one broker can be lost without refusing an ``acks=all`` write or losing an acknowledged one).
:meth:`TopicSpec.for_environment` applies them; ``ensure_topics`` picks the environment from the
setting ``kafka_topics_environment`` (``auto``: ``cluster`` when the cluster has three or more brokers).

Topics whose name is made at run time (one per forwarder destination) are described once in
``templates/`` with a ``{placeholder}`` in the name (:func:`load_template`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

HERE = Path(__file__).parent

RAW = "audit.raw.v1"
EVENTS = "audit.events.v1"
DEADLETTER = "audit.deadletter.v1"
ORG_SWITCH = "audit.org-switch.v1"
DIGESTS = "audit.digests.v1"
ENRICHER_STATE = "audit.enricher.state.v1"
ENRICHER_CHANGELOG = "auditpipe-enricher-suppressed_daily-changelog"
ENRICHER_LEADER = "auditpipe-enricher-__assignor-__leader"
FORWARDER_DEADLETTER = "audit.deadletter.v1.forwarder.{destination}"  # a template (templates/)
ENVIRONMENTS = ("local", "cluster")
_OVERRIDABLE = ("partitions", "replication_factor", "min_insync_replicas")


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
    min_insync_replicas: int = 1
    # environment name -> overrides of partitions / replication_factor / min_insync_replicas
    environments: dict[str, dict[str, int]] = field(default_factory=dict, compare=False)

    def configs(self) -> dict[str, str]:
        """Topic configs for creating it."""
        out = {
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": self.cleanup_policy,
            "min.insync.replicas": str(self.min_insync_replicas),
        }
        if self.max_message_bytes is not None:
            out["max.message.bytes"] = str(self.max_message_bytes)
        return out

    def for_environment(self, env: str) -> TopicSpec:
        """This topic as created in ``env`` (``local``: the values at the top of the file)."""
        if env not in ENVIRONMENTS:
            raise ValueError(f"unknown topic environment {env!r}; one of {', '.join(ENVIRONMENTS)}")
        over = self.environments.get(env, {})
        return replace(self, **{k: int(v) for k, v in over.items()})

    def with_name(self, **values: str) -> TopicSpec:
        """A template's spec with its ``{placeholders}`` filled in."""
        return replace(self, name=self.name.format(**values))


def _spec(path: Path) -> TopicSpec:
    d = yaml.safe_load(path.read_text())
    envs = d.get("environments") or {}
    for env, over in envs.items():
        if env not in ENVIRONMENTS or not set(over) <= set(_OVERRIDABLE):
            raise ValueError(f"{path.name}: environments.{env} may set {', '.join(_OVERRIDABLE)} only")
    return TopicSpec(
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
        min_insync_replicas=int(d.get("min_insync_replicas", 1)),
        environments={str(k): dict(v) for k, v in envs.items()},
    )


def load_topics() -> dict[str, TopicSpec]:
    """Every topic with a fixed name (the stack creates them all)."""
    out: dict[str, TopicSpec] = {}
    for path in sorted(HERE.glob("*.yaml")):
        spec = _spec(path)
        out[spec.name] = spec
    return out


def load_template(name: str) -> TopicSpec:
    """The spec of a topic family named at run time, e.g. :data:`FORWARDER_DEADLETTER`."""
    for path in sorted((HERE / "templates").glob("*.yaml")):
        spec = _spec(path)
        if spec.name == name:
            return spec
    raise KeyError(name)


def spec_as(logical: str, name: str) -> TopicSpec:
    """The contract of topic ``logical`` under the configured (or a test's) ``name``."""
    return replace(load_topics()[logical], name=name)
