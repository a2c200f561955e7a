"""The per-org switch against the real broker: each turn is one audited event, a restart adds none."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.events_v1 import EnrichedEvent, OrgSwitch
from schemas.integrity import verify, verify_record
from schemas.topics import EVENTS, ORG_SWITCH, spec_as
from services.common.kafka import ensure_topics
from services.common.settings import Settings
from services.enricher.rules.switch import effective_disabled, parse_org_switch, switch_event
from services.enricher.switch import SwitchFollower, reconcile
from tests.enricher.helpers import produce, read_all


@pytest.mark.kafka
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
    last = {k.decode(): orjson.loads(v) for k, v in await read_all(state)}
    assert {o: r["audit_enabled"] for o, r in last.items()} == {"org-a": True, "org-b": False}
    assert all(r["emitted"] is True for r in last.values())
    for key, value in await read_all(topics[EVENTS]):  # keyed by event id, canonical bytes
        assert key == orjson.loads(value)["event_id"].encode() and verify_record(value, strict=True)


@pytest.mark.kafka
async def test_a_change_recorded_but_not_emitted_is_emitted_again_identically(
    kafka_settings: Settings,
    topic_names,  # noqa: ANN001
) -> None:
    """A crash between recording a new state and publishing its event: the next start publishes exactly
    the event the state record describes (same id, same time, same bytes), once."""
    topics = topic_names(EVENTS)
    state = f"test.enricher.state.{uuid.uuid4().hex[:8]}"
    es = kafka_settings.enricher.model_copy(
        update={"events_topic": topics[EVENTS], "state_topic": state, "audit_disabled_orgs": ["org-c"]}
    )
    settings = kafka_settings.model_copy(update={"enricher": es})
    eid = str(uuid.uuid4())
    at = "2026-11-29T10:00:00+00:00"
    rec = {"audit_enabled": False, "before": None, "changed_at": at, "event_id": eid, "emitted": False}
    await produce(state, [(b"org-c", orjson.dumps(rec))])
    assert await reconcile(settings) == ["org-c"]
    assert await reconcile(settings) == []
    (got,) = await read_all(topics[EVENTS])
    assert got[1] == switch_event(
        "org-c", None, False, event_id=uuid.UUID(eid), at=datetime.fromisoformat(at)
    )


# ---------------------------------------------------------------- the switch set through the query API
def _rec(org: str, enabled: bool) -> tuple[bytes, bytes]:
    rec = OrgSwitch(org_id=org, audit_enabled=enabled, changed_by="ana", changed_at=datetime.now(UTC))
    return org.encode(), rec.model_dump_json().encode()


def test_parse_org_switch_takes_only_a_record_for_its_key() -> None:
    key, value = _rec("org-a", False)
    assert parse_org_switch(key, value) == OrgSwitch.model_validate_json(value)
    assert parse_org_switch(b"org-b", value) is None  # key and body disagree
    assert parse_org_switch(None, value) is None
    assert parse_org_switch(key, None) is None  # tombstone
    assert parse_org_switch(key, b"{not json") is None
    assert parse_org_switch(key, b'{"org_id": "org-a"}') is None  # audit_enabled missing
    future = orjson.dumps({**orjson.loads(value), "reason": "incident 42"})  # unknown fields: ignored
    assert parse_org_switch(key, future).audit_enabled is False


orgs = st.sampled_from(["org-a", "org-b", "org-c", "org-d"])


@given(settings_off=st.frozensets(orgs), api=st.dictionaries(orgs, st.booleans()))
def test_effective_disabled_is_settings_plus_api_off(
    settings_off: frozenset[str], api: dict[str, bool]
) -> None:
    got = effective_disabled(settings_off, api)
    assert settings_off <= got  # the API cannot lift an operator's override
    for org in ("org-a", "org-b", "org-c", "org-d"):
        assert (org in got) == (org in settings_off or api.get(org) is False)


@pytest.mark.kafka
async def test_follower_loads_the_topic_then_follows_it_live(kafka_settings: Settings) -> None:
    topic = f"test.org-switch.{uuid.uuid4().hex[:8]}"
    es = kafka_settings.enricher.model_copy(
        update={"switch_topic": topic, "audit_disabled_orgs": ["org-ops"]}
    )
    s = kafka_settings.model_copy(update={"enricher": es})
    await ensure_topics(s, [spec_as(ORG_SWITCH, topic)])
    await produce(
        topic, [_rec("org-a", False), _rec("org-b", False), (b"org-c", b"garbage"), _rec("org-b", True)]
    )
    seen: list[frozenset[str]] = []
    follower = SwitchFollower(s, seen.append)
    task = asyncio.create_task(follower.run())
    try:
        await asyncio.wait_for(follower.ready.wait(), 20)
        assert follower.disabled() == {"org-ops", "org-a"}
        assert seen[-1] == {"org-ops", "org-a"}
        await produce(topic, [_rec("org-c", False), _rec("org-a", True), _rec("org-ops", True)])
        for _ in range(100):
            if seen[-1] == {"org-ops", "org-c"}:
                break
            await asyncio.sleep(0.1)
        assert seen[-1] == {"org-ops", "org-c"}  # org-ops stays off: settings win
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
