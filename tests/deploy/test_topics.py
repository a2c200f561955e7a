"""Topic creation in the deployment files matches the contract in schemas/topics/*.yaml."""

from __future__ import annotations

import re

from schemas.topics import load_topics
from services.common.settings import Settings
from tests.deploy.helpers import COMPOSE_DIR, K8S, compose, load_yaml_all


def _script_topics() -> dict[str, tuple[int, int, str, str]]:
    text = (COMPOSE_DIR / "kafka" / "create-topics.sh").read_text()
    out = {}
    for m in re.finditer(r"^create_topic (\S+) (\d+) (-?\d+) (\S+)(.*)$", text, re.M):
        out[m.group(1)] = (int(m.group(2)), int(m.group(3)), m.group(4), m.group(5).strip())
    return out


def _extra_topics() -> set[str]:
    """Topics beyond schemas/topics that the services are configured to use (the enricher's state)."""
    return {Settings().enricher.state_topic}


def test_topic_init_script_creates_every_contract_topic_as_defined() -> None:
    made = _script_topics()
    specs = load_topics()
    assert set(specs) <= set(made), f"missing: {set(specs) - set(made)}"
    for name, spec in specs.items():
        partitions, retention, compression, _extra = made[name]
        assert partitions == spec.partitions, name
        assert retention == spec.retention_ms, name
        assert compression == spec.compression, name
        assert ("cleanup.policy=compact" in _extra) == (spec.cleanup_policy == "compact"), name
    assert set(made) - set(specs) <= _extra_topics()
    state = Settings().enricher.state_topic
    assert "cleanup.policy=compact" in made[state][3]


def test_topic_init_job_runs_the_script_against_the_broker() -> None:
    job = compose()["services"]["topics"]
    targets = {}
    for name in ("create-topics.sh", "create-acls.sh", "admin.properties"):
        mount = next(v for v in job["volumes"] if v.startswith(f"./kafka/{name}:"))
        targets[name] = mount.split(":")[1]
    # topics first, then users and ACLs; as the super user over the mutual-TLS listener
    assert job["entrypoint"][-1] == f"{targets['create-topics.sh']} && {targets['create-acls.sh']}"
    assert job["environment"]["BOOTSTRAP"] == "kafka:9094"
    assert job["environment"]["ADMIN_CONFIG"] == targets["admin.properties"]
    script = (COMPOSE_DIR / "kafka" / "create-topics.sh").read_text()
    assert "--if-not-exists" in script, "must be idempotent"
    assert 'RF="${REPLICATION_FACTOR:-1}"' in script


def test_strimzi_topics_match_the_contract() -> None:
    docs = {d["metadata"]["name"]: d for d in load_yaml_all(K8S / "extras" / "strimzi-topics.yaml")}
    for name, spec in load_topics().items():
        d = docs[name]
        assert d["kind"] == "KafkaTopic"
        assert d["spec"]["partitions"] == spec.partitions
        assert int(d["spec"]["config"]["retention.ms"]) == spec.retention_ms
        assert d["spec"]["config"]["compression.type"] == spec.compression
        assert d["spec"]["config"].get("cleanup.policy", "delete") == spec.cleanup_policy, name
        assert d["spec"]["replicas"] >= 3 and d["spec"]["config"]["min.insync.replicas"] >= 2
    assert set(docs) - set(load_topics()) <= _extra_topics()
