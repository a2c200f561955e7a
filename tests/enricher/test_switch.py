"""The per-org switch against the real broker: each turn is one audited event, a restart adds none."""

from __future__ import annotations

import uuid

import orjson
import pytest

from schemas.events_v1 import EnrichedEvent
from schemas.integrity import verify
from schemas.topics import EVENTS
from services.common.settings import Settings
from services.enricher.switch import reconcile
from tests.enricher.helpers import read_all

pytestmark = pytest.mark.kafka


async def test_switch_off_on_is_audited_once_each(kafka_settings: Settings, topic_names) -> None:  # noqa: ANN001
    topics = topic_names(EVENTS)
    state = f"test.enricher.state.{uuid.uuid4().hex[:8]}"

    def with_orgs(*orgs: str) -> Settings:
        es = kafka_settings.enricher.model_copy(
            update={"events_topic": topics[EVENTS], "state_topic": state, "audit_disabled_orgs": list(orgs)}
        )
        return kafka_settings.model_copy(update={"enricher": es})

    assert await reconcile(with_orgs()) == []  # nothing known, nothing off: no event
    assert await reconcile(with_orgs("org-a", "org-b")) == ["org-a", "org-b"]
    assert await reconcile(with_orgs("org-a", "org-b")) == []  # restart, same settings: nothing new
    assert await reconcile(with_orgs("org-b")) == ["org-a"]  # org-a back on

    events = [orjson.loads(v) for _, v in await read_all(topics[EVENTS])]
    assert len(events) == 3
    for doc in events:
        EnrichedEvent.model_validate(doc)
        assert verify(doc)
        assert doc["action"] == "organization:audit_config_update" and doc["actor"]["type"] == "system"
    turns = sorted((e["org_id"], e["changes"][0]["before"], e["changes"][0]["after"]) for e in events)
    assert turns == [("org-a", False, True), ("org-a", True, False), ("org-b", True, False)]
    assert len({e["event_id"] for e in events}) == 3
    last = {k.decode(): orjson.loads(v)["audit_enabled"] for k, v in await read_all(state)}
    assert last == {"org-a": True, "org-b": False}
