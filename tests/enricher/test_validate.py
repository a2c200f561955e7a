"""The validator derived from the contract (services/enricher/rules/validate.py) accepts exactly what the
model accepts and returns what ``model_dump(mode="json")`` returns, keys in the same order; and the
enricher gives byte-identical results on the fast path and on the model path, NaN and infinity (which
send a record to the model path) included."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from schemas.events_v1 import RawEvent
from services.common.settings import EnricherSettings
from services.enricher.rules.enrich import Enricher, Results
from services.enricher.rules.validate import CANONICAL_UUID, event_from_json, events_from_json
from tests.enricher.strategies import json_value, raw_events

EXAMPLES = sorted(Path("schemas/examples/raw").glob("*.json"))
MANY = TypeAdapter(list[RawEvent])
NON_FINITE = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999", b"1" + b"0" * 400 + b".5"]
MARK = "__non_finite__"
FIELDS = list(RawEvent.model_fields)


def model(value: bytes) -> Any:
    try:
        return orjson.dumps(MANY.dump_python(MANY.validate_json(value), mode="json"))
    except ValidationError:
        return "refused"


def fast(value: bytes) -> Any:
    try:
        return orjson.dumps(events_from_json(value))  # no OPT_SORT_KEYS: the key order must match too
    except ValidationError:
        return "refused"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_the_examples_validate_to_the_models_dump(path: Path) -> None:
    value = path.read_bytes()
    assert orjson.dumps(event_from_json(value)) == orjson.dumps(
        RawEvent.model_validate_json(value).model_dump(mode="json")
    )
    assert fast(b"[" + value + b"]") == model(b"[" + value + b"]") != "refused"


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_events, min_size=1, max_size=3))
def test_valid_events_validate_to_the_models_dump(events: list[dict]) -> None:
    value = orjson.dumps(events)
    assert fast(value) == model(value) != "refused"


def _event_with(base: dict, field: str, value: Any) -> dict:
    return {**base, field: value}


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=raw_events,
    field=st.sampled_from([*FIELDS, "extra_field"]),
    value=st.one_of(
        json_value,
        st.sampled_from(
            [
                "2026-11-22T10:00:00+02:00",
                "2026-11-22 10:00",
                "1999-12-31T23:59:59Z",
                "2200-01-01T00:00:00Z",
                "9999-12-31T23:00:00-05:00",
                1_764_000_000,
                "1764000000",
                "{12345678-1234-5678-1234-567812345678}",
                "12345678123456781234567812345678",
                "urn:uuid:12345678-1234-5678-1234-567812345678",
                "user",
                "robot",
                "201",
                201.0,
                2.5,
                "deployment:create",
                {"type": "user", "id": "u"},
                {"type": "ROBOT"},
                {"field": "x", "before": 1},
                [{"field": "x"}, {"field": ""}],
                {"k": "v" * 9000},
                {"method": "POST", "query": {"a": [1, 2]}, "headers": {"a": 1}},
                {"user_agent": "x" * 3000},
            ]
        ),
    ),
)
def test_acceptance_and_output_match_the_model_on_altered_events(base: dict, field: str, value: Any) -> None:
    """One field replaced by anything: refused by both, or accepted by both with the same data."""
    data = orjson.dumps([_event_with(base, field, value)])
    assert fast(data) == model(data)


def _edge_time(*parts: int) -> datetime:
    try:
        return datetime(*parts)
    except ValueError:  # e.g. 2100-02-29: not a leap year
        return datetime(parts[0], parts[1], 28, *parts[3:])


TIME_FORMS = [
    lambda d: f"{d:%Y-%m-%dT%H:%M:%S}Z",
    lambda d: f"{d:%Y-%m-%dT%H:%M:%S}.{d.microsecond:06d}Z",
    lambda d: f"{d:%Y-%m-%dT%H:%M:%S}.{d.microsecond // 1000:03d}Z",
    lambda d: f"{d:%Y-%m-%dT%H:%M:%S}.000000Z",
    lambda d: f"{d:%Y-%m-%dT%H:%M:%S}+00:00",
    lambda d: f"{d:%Y-%m-%dT%H:%M:%S}.{d.microsecond:06d}-01:00",
    lambda d: f"{d:%Y-%m-%d %H:%M:%S}Z",
    lambda d: f"{d:%Y-%m-%dT%H:%M:%S}z",
    lambda d: f"{d:%Y-%m-%dT%H:%M:%S}",
    lambda d: f"{d:%Y-%m-%dT%H:%M:%S}.{d.microsecond:06d}1Z",
]


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=raw_events,
    when=st.one_of(
        st.datetimes(min_value=datetime(1999, 12, 31), max_value=datetime(2200, 1, 2)),
        st.builds(  # the edges: month ends, leap days, the range's limits
            _edge_time,
            st.sampled_from([1999, 2000, 2024, 2100, 2199, 2200]),
            st.sampled_from([1, 2, 12]),
            st.sampled_from([1, 28, 29, 31]),
            st.sampled_from([0, 23]),
            st.sampled_from([0, 59]),
            st.sampled_from([0, 59]),
            st.sampled_from([0, 1, 10, 120000, 999999]),
        ),
    ),
    form=st.sampled_from(range(len(TIME_FORMS))),
    field=st.sampled_from(["occurred_at", "received_at"]),
)
def test_times_in_any_form_validate_to_the_models_dump(
    base: dict, when: datetime, form: int, field: str
) -> None:
    """The fast branch (a time already in pydantic's UTC form) accepts and returns what the model does."""
    data = orjson.dumps([{**base, field: TIME_FORMS[form](when)}])
    assert fast(data) == model(data)


@settings(max_examples=600)
@given(
    base=raw_events,
    parts=st.tuples(
        st.sampled_from([1999, 2000, 2023, 2024, 2100, 2199, 2200]),
        st.sampled_from([0, 1, 2, 4, 12, 13]),
        st.sampled_from([0, 1, 28, 29, 30, 31, 32]),
        st.sampled_from([0, 23, 24]),
        st.sampled_from([0, 59, 60]),
        st.sampled_from([0, 59, 60]),
        st.sampled_from(["", ".000000", ".5", ".120000", ".000001", ".1234567", "."]),
    ),
    field=st.sampled_from(["occurred_at", "received_at"]),
)
def test_time_texts_valid_or_not_are_judged_like_the_model(base: dict, parts: tuple, field: str) -> None:
    y, mo, d, h, mi, sec, frac = parts
    text = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{sec:02d}{frac}Z"
    data = orjson.dumps([{**base, field: text}])
    assert fast(data) == model(data)


@settings(max_examples=300)
@given(
    base=raw_events,
    event_id=st.one_of(
        st.uuids().map(str),
        st.uuids().map(lambda u: str(u).upper()),
        st.uuids().map(lambda u: u.hex),
        st.uuids().map(lambda u: "{" + str(u) + "}"),
        st.from_regex(CANONICAL_UUID, fullmatch=True),
        st.from_regex(r"[0-9a-fA-F-]{30,40}", fullmatch=True),
    ),
)
def test_event_ids_in_any_form_validate_to_the_models_dump(base: dict, event_id: str) -> None:
    data = orjson.dumps([{**base, "event_id": event_id}])
    assert fast(data) == model(data)


@pytest.mark.parametrize(
    "value",
    [b"[]", b"{}", b"[1]", b"[null]", b'[{"occurred_at": "2026-11-22T10:00:00Z"}]', b"[", b"nope", b'"x"'],
)
def test_malformed_records_are_refused_by_both(value: bytes) -> None:
    assert fast(value) == model(value)


# -- the enricher on both paths -----------------------------------------------------------------------
KEY = "k" * 32


def enrichers(paths: tuple[str, ...] = ()) -> tuple[Enricher, Enricher]:
    s = EnricherSettings(
        hash_mode="hmac", hmac_key=KEY, trusted_proxies=["10.0.0.0/8"], sensitive_paths=paths
    )
    on, off = Enricher.from_settings(s), Enricher.from_settings(s)
    off.fast_validation = False
    return on, off


def results(e: Enricher, value: bytes) -> tuple[Any, ...]:
    r = Results()
    e.process_record(value, r, topic="t", partition=2, offset=7, timestamp_ms=1_764_400_000_123)
    return r.events, [d.model_dump(mode="json") for d in r.dead], dict(r.suppressed)


def with_non_finite(event: dict, where: str, literal: bytes) -> bytes:
    """``event`` as JSON with a non-finite number literal at ``where``."""
    event = orjson.loads(orjson.dumps(event))
    if where == "payload":
        event.setdefault("request", {})["payload"] = {"n": MARK}
    elif where == "sensitive payload":
        event.setdefault("request", {})["payload"] = {"password": {"n": [MARK]}}
    elif where == "query":
        event.setdefault("request", {})["query"] = {"q": MARK}
    elif where == "snapshot":
        event["snapshot"] = {"a": [1, MARK]}
    elif where == "change":
        event["changes"] = [{"field": "replicas", "before": 1, "after": MARK}]
    elif where == "sensitive change":
        event["changes"] = [{"field": "api_key", "before": MARK}]
    else:  # a listed path
        event.setdefault("request", {})["payload"] = {"listed": MARK}
    return orjson.dumps(event).replace(f'"{MARK}"'.encode(), literal)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(raw_events, min_size=1, max_size=3),
    envelope=st.booleans(),
    where=st.sampled_from(
        ["payload", "sensitive payload", "query", "snapshot", "change", "sensitive change", "listed"]
    ),
    literal=st.sampled_from(NON_FINITE),
    poison=st.booleans(),
)
def test_the_enricher_gives_the_same_bytes_on_both_paths(
    events: list[dict], envelope: bool, where: str, literal: bytes, poison: bool
) -> None:
    on, off = enrichers(("request.payload.listed",))
    if poison:
        parts = [with_non_finite(events[-1], where, literal)]
        parts = [orjson.dumps(e) for e in events[:-1]] + parts
    else:
        parts = [orjson.dumps(e) for e in events]
    value = b"[" + b",".join(parts) + b"]" if envelope else parts[-1]
    got, expected = results(on, value), results(off, value)
    assert got == expected
    assert got[0] or got[1]  # something came out


@pytest.mark.parametrize("literal", NON_FINITE)
def test_a_non_finite_number_is_stored_as_null_like_before(literal: bytes) -> None:
    on, off = enrichers()
    event = {"occurred_at": "2026-11-22T10:00:00Z", "org_id": "o", "action": "a:b", "event_id": None}
    value = with_non_finite(event, "snapshot", literal)
    (key, record), *_ = results(on, b"[" + value + b"]")[0]
    assert orjson.loads(record)["snapshot"] == {"a": [1, None]}
    assert results(on, value) == results(off, value)


def test_the_walk_leaves_no_non_finite_number_for_the_serialiser() -> None:
    """The canonical bytes must not depend on how orjson writes NaN: the walk writes null itself."""
    from services.enricher.rules.sensitive import Walk

    on, _ = enrichers()
    doc = event_from_json(
        with_non_finite(
            {"occurred_at": "2026-11-22T10:00:00Z", "org_id": "o", "action": "a:b"}, "snapshot", b"NaN"
        )
    )
    on.scrubber.scrub_event(doc, Walk(event_id="e"))
    assert doc["snapshot"] == {"a": [1, None]}


def test_contract_shapes_it_cannot_mirror_fail_loudly() -> None:
    """A model validator, a custom __init__ or an alias would be silently lost in a typed dict: refused."""
    from pydantic import BaseModel, ConfigDict, Field, model_validator

    from services.enricher.rules.validate import _plain

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class WithModelValidator(Strict):
        a: int = 0

        @model_validator(mode="after")
        def check(self) -> WithModelValidator:
            return self

    class WithAlias(Strict):
        a: int = Field(default=0, alias="b")

    class Lenient(BaseModel):
        a: int = 0

    class Outer(Strict):
        inner: WithModelValidator | None = None

    for model in (WithModelValidator, WithAlias, Lenient, Outer):
        with pytest.raises(TypeError):
            _plain(model.__pydantic_core_schema__)
