"""schemas/topics: every file loads, its environments are sound, and every topic the code names has a file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schemas.topics import (
    ENRICHER_CHANGELOG,
    ENRICHER_LEADER,
    FORWARDER_DEADLETTER,
    RAW,
    load_template,
    load_topics,
)
from services.common.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_cluster_environment_replicates_every_topic_and_tolerates_one_broker_down() -> None:
    for spec in [*load_topics().values(), load_template(FORWARDER_DEADLETTER)]:
        local, cluster = spec.for_environment("local"), spec.for_environment("cluster")
        assert (local.replication_factor, local.min_insync_replicas) == (1, 1), spec.name
        assert cluster.replication_factor == 3 and cluster.min_insync_replicas == 2, spec.name
        assert cluster.partitions == local.partitions == spec.partitions, spec.name
        assert cluster.configs()["min.insync.replicas"] == "2"


def test_unknown_environment_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown topic environment"):
        load_topics()[RAW].for_environment("staging")


def test_enricher_internal_topics_follow_the_raw_topic() -> None:
    topics = load_topics()
    s = Settings()
    assert ENRICHER_CHANGELOG == f"{s.enricher.consumer_group}-suppressed_daily-changelog"
    assert ENRICHER_LEADER == f"{s.enricher.consumer_group}-__assignor-__leader"
    assert topics[ENRICHER_CHANGELOG].partitions == topics[RAW].partitions
    assert topics[ENRICHER_CHANGELOG].cleanup_policy == "compact"


def test_forwarder_dead_letter_template_names_the_destination_topic() -> None:
    from services.siem_forwarder.config import ForwarderConfig
    from services.siem_forwarder.service import dead_letter_specs

    cfg = ForwarderConfig.model_validate(
        {
            "destinations": [
                {"name": "splunk-eu", "type": "webhook", "url": "http://127.0.0.1:1/x", "secret_env": "X"}
            ]
        }
    )
    (spec,) = dead_letter_specs(cfg)
    assert spec.name == "audit.deadletter.v1.forwarder.splunk-eu" == cfg.destinations[0].dlq_topic()
    assert spec.for_environment("cluster").replication_factor == 3
    assert load_template(FORWARDER_DEADLETTER).with_name(destination="x").name.endswith(".forwarder.x")


def test_every_topic_named_in_settings_has_a_file() -> None:
    s = Settings()
    names = set(load_topics())
    for topic in (
        s.enricher.raw_topic,
        s.enricher.events_topic,
        s.enricher.deadletter_topic,
        s.enricher.switch_topic,
        s.enricher.state_topic,
        s.query_api.switch_topic,
    ):
        assert topic in names, topic
    # every literal audit.* topic name in the services' code is a contract topic
    code = "\n".join(p.read_text() for p in (REPO / "services").rglob("*.py"))
    for name in set(re.findall(r"[\"'](audit\.[a-z.\-]+\.v\d)[\"']", code)):
        assert name in names, name
