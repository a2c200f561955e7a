"""Contract tests: generated JSON Schemas match the models, examples are valid, topics are consistent."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from schemas import generate
from schemas.events_v1 import MAX_EVENT_BYTES, EnrichedEvent, RawEvent, parse_raw
from schemas.integrity import content_hash_of, verify
from schemas.topics import DEADLETTER, ENRICHER_STATE, EVENTS, ORG_SWITCH, RAW, load_topics

ROOT = Path(__file__).resolve().parents[2] / "schemas"
RAW_EXAMPLES = sorted((ROOT / "examples" / "raw").glob("*.json"))


def test_jsonschema_files_match_models() -> None:
    for name, text in generate.render().items():
        on_disk = (ROOT / "jsonschema" / name).read_text()
        assert on_disk == text, f"{name} drifted from the models: run `make schemas` and commit"


def test_there_are_examples() -> None:
    assert len(RAW_EXAMPLES) >= 5


@pytest.mark.parametrize("path", RAW_EXAMPLES, ids=lambda p: p.stem)
def test_raw_examples_valid_in_model_and_jsonschema(path: Path) -> None:
    data = json.loads(path.read_text())
    ev = parse_raw(data)
    assert ev.org_id and ":" in ev.action
    schema = json.loads((ROOT / "jsonschema" / "raw_event.v1.json").read_text())
    jsonschema.validate(data, schema)


def test_unknown_top_level_field_is_refused_by_name() -> None:
    data = json.loads(RAW_EXAMPLES[0].read_text())
    data["colour"] = "blue"
    with pytest.raises(Exception) as ei:
        RawEvent.model_validate(data)
    assert "colour" in str(ei.value)


def test_naive_timestamps_are_utc() -> None:
    ev = RawEvent.model_validate({"occurred_at": "2026-01-01T00:00:00", "org_id": "o", "action": "a:b"})
    assert ev.occurred_at.utcoffset().total_seconds() == 0


def test_action_must_be_entity_colon_verb() -> None:
    with pytest.raises(Exception, match="action"):
        RawEvent.model_validate({"occurred_at": "2026-01-01T00:00:00Z", "org_id": "o", "action": "delete"})


def test_enriched_consumers_ignore_unknown_fields_and_hash_verifies() -> None:
    body = {
        "event_id": "7d1f8f5c-0c52-4b0a-9b55-1f8f6f0d0a11",
        "occurred_at": "2026-11-20T09:15:02.123Z",
        "received_at": "2026-11-20T09:15:02.200Z",
        "enriched_at": "2026-11-20T09:15:02.300Z",
        "org_id": "org-acme",
        "actor": {"type": "user", "id": "u-1", "name": "Ada"},
        "action": "environment:delete",
        "event_type": "delete",
        "target": {"type": "environment", "id": "env-1"},
        "source": "console",
        "future_field": {"added": "in v1.3"},
    }
    body["content_hash"] = content_hash_of(body)
    assert verify(body)
    ev = EnrichedEvent.model_validate(body)
    assert ev.event_type == "delete"
    body["action"] = "environment:create"
    assert not verify(body)


def test_topic_files_define_every_topic_with_its_key() -> None:
    topics = load_topics()
    assert {RAW, EVENTS, DEADLETTER, ORG_SWITCH, ENRICHER_STATE} <= set(topics)
    for t in topics.values():
        assert t.partitions >= 1 and (t.retention_ms > 0 or t.retention_ms == -1)  # -1: kept forever
        assert t.schema.startswith("none") or (ROOT.parent / t.schema).exists(), t.schema
        raw = yaml.safe_load((ROOT / "topics" / f"{t.name}.yaml").read_text())
        assert raw["key"] and raw["producers"] and raw["consumers"]
    # every copy of an event id on one partition; compacted state keyed by org
    assert yaml.safe_load((ROOT / "topics" / f"{EVENTS}.yaml").read_text())["key"].startswith("event_id")
    for name in (ORG_SWITCH, ENRICHER_STATE):
        assert topics[name].cleanup_policy == "compact"
        assert yaml.safe_load((ROOT / "topics" / f"{name}.yaml").read_text())["key"].startswith("org_id")
    # room for the worst growth of a maximal event through scrubbing
    assert topics[EVENTS].max_message_bytes and topics[EVENTS].max_message_bytes >= 11 * MAX_EVENT_BYTES


@pytest.mark.parametrize("t", ["9999-12-31T23:00:00-05:00", "0001-01-01T01:00:00+05:00"])
def test_times_out_of_range_in_utc_are_a_validation_error_not_a_crash(t: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as e:
        RawEvent.model_validate({"org_id": "o", "action": "a:b", "occurred_at": t})
    assert e.value.errors()[0]["loc"] == ("occurred_at",)


@pytest.mark.parametrize(
    ("t", "ok"),
    [
        ("1999-12-31T23:59:59.999Z", False),
        ("2000-01-01T00:00:00Z", True),
        ("2000-01-01T01:00:00+02:00", False),  # 1999-12-31T23:00Z
        ("1970-01-01T00:00:00Z", False),  # a producer's zero timestamp
        ("0005-01-02T01:00:01Z", False),
        ("2199-12-31T23:59:59.999Z", True),
        ("2200-01-01T00:00:00Z", False),
        ("2199-12-31T23:00:00-02:00", False),  # 2200-01-01T01:00Z
    ],
)
def test_occurred_at_must_be_a_time_the_store_holds(t: str, ok: bool) -> None:
    from pydantic import ValidationError

    data = {"org_id": "o", "action": "a:b", "occurred_at": t}
    if ok:
        assert RawEvent.model_validate(data).occurred_at.utcoffset().total_seconds() == 0
        return
    with pytest.raises(ValidationError) as e:
        RawEvent.model_validate(data)
    assert e.value.errors()[0]["loc"] == ("occurred_at",)


def test_occurred_at_bounds_are_those_of_the_table_constraint() -> None:
    import re

    from schemas.events_v1 import OCCURRED_AT_END, OCCURRED_AT_MIN

    sql = (ROOT / "clickhouse" / "0004_events_time_constraint.sql").read_text()
    low, high = re.findall(r"toDateTime64\('([\d-]+) 00:00:00', 3, 'UTC'\)", sql)
    assert (low, high) == (OCCURRED_AT_MIN.date().isoformat(), OCCURRED_AT_END.date().isoformat())
    assert "occurred_at >=" in sql and "occurred_at <" in sql


_json = st.recursive(
    st.none() | st.booleans() | st.text(max_size=5) | st.integers() | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=30,
)


@given(_json)
def test_coerce_unsafe_integers_leaves_only_safe_numbers_and_keeps_the_rest(value: object) -> None:
    from schemas.events_v1 import coerce_unsafe_integers, is_unsafe_number, unsafe_integer_path

    before = json.dumps(value, sort_keys=True)
    out = coerce_unsafe_integers(value)
    assert unsafe_integer_path(out) is None
    assert json.dumps(value, sort_keys=True) == before  # the input is not changed

    def same(a: object, b: object) -> bool:  # equal except unsafe numbers -> their decimal text
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list):
            return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
        if type(a) in (int, float) and is_unsafe_number(a):
            return b == str(a)
        return type(a) is type(b) and a == b

    assert same(value, out)


def test_coerce_unsafe_integers_at_any_depth() -> None:
    from schemas.events_v1 import coerce_unsafe_integers

    deep: object = 2**60
    for i in range(5000):
        deep = [deep] if i % 2 else {"k": deep}
    out = coerce_unsafe_integers(deep)
    for i in reversed(range(5000)):
        out = out[0] if i % 2 else out["k"]
    assert out == str(2**60)
