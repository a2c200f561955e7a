"""Pure rules of the ingest (no I/O): token auth, content types, parsing, depth, stamping, wire format."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from auditpipe.wire import (
    EventTooLarge,
    decode_value,
    encode,
    encode_value,
    envelope_records,
    envelopes,
    free_form_problem,
)
from schemas.events_v1 import RawEvent, RawRecord
from services.common.settings import IngestToken
from services.ingest.auth import authenticate, bearer, hash_token, may_write
from services.ingest.validation import Limits, Refusal, forwarded_for, media_type, parse_events, stamp
from tests.ingest.conftest import example, examples

RawRecord_adapter = TypeAdapter(RawRecord)

TOKS = [
    IngestToken(producer="a", sha256=hash_token("alpha"), orgs=["o1"]),
    IngestToken(producer="b", sha256=hash_token("beta"), orgs=["*"]),
]


def test_auth() -> None:
    assert bearer("Bearer alpha") == "alpha" and bearer("bearer  alpha ") == "alpha"
    assert bearer(None) is None and bearer("Basic x") is None and bearer("Bearer ") is None
    assert authenticate("alpha", TOKS).producer == "a"
    assert authenticate("beta", TOKS).producer == "b"
    assert authenticate("gamma", TOKS) is None and authenticate(None, TOKS) is None
    assert may_write(TOKS[0], "o1") and not may_write(TOKS[0], "o2") and may_write(TOKS[1], "anything")


@given(st.text(max_size=40))
def test_only_configured_tokens_authenticate(tok: str) -> None:
    got = authenticate(tok, TOKS)
    assert (got is not None) == (tok in ("alpha", "beta"))


@pytest.mark.parametrize(
    "ctype,batch,want",
    [
        ("application/json", False, "json"),
        ("Application/JSON; charset=UTF-8", False, "json"),
        ("application/x-ndjson", True, "ndjson"),
        ("application/jsonl", True, "ndjson"),
        ("application/x-ndjson", False, 415),
        ("text/plain", True, 415),
        (None, False, 415),
        ("application/json; charset=latin-1", False, 415),
    ],
)
def test_media_type(ctype, batch, want) -> None:  # noqa: ANN001
    if want == 415:
        with pytest.raises(Refusal) as e:
            media_type(ctype, batch)
        assert e.value.status == 415
    else:
        assert media_type(ctype, batch) == want


def test_parse_events_limits() -> None:
    lim = Limits(max_batch_events=2, max_body_bytes=100_000)
    one = orjson.dumps(example())
    assert [e.org_id for e in parse_events(one, "json", False, lim)] == [example()["org_id"]]
    assert len(parse_events(one + b"\n\n" + one + b"\r\n", "ndjson", True, lim)) == 2
    for body, kind, batch, status in [
        (b"[" + b",".join([one] * 3) + b"]", "json", True, 413),
        (b"\n".join([one] * 3), "ndjson", True, 413),
        (b"x" * 100_001, "json", False, 413),
        (b"[]", "json", True, 422),
        (one, "json", True, 422),
        (b"[" + one + b"]", "json", False, 422),
        (one + b"\n{", "ndjson", True, 400),
        (b"\xff", "json", False, 400),
        (b"  ", "json", False, 400),
    ]:
        with pytest.raises(Refusal) as e:
            parse_events(body, kind, batch, lim)
        assert e.value.status == status, body
    with pytest.raises(Refusal) as e:
        parse_events(one + b"\n{bad", "ndjson", True, lim)
    assert e.value.errors[0]["index"] == 1


def nest(n: int) -> object:
    v: object = 1
    for i in range(n):
        v = {"k": v} if i % 2 else [v]
    return v


def reference_depth(v: object) -> int:
    """Containers on the deepest path of ``v`` (a scalar is 0)."""
    if isinstance(v, dict):
        return 1 + max((reference_depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((reference_depth(x) for x in v), default=0)
    return 0


@given(
    st.sampled_from(["request.payload", "request.query", "snapshot", "changes"]),
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=4, max_value=30),
)
def test_free_form_depth_counts_from_the_event(where: str, n: int, limit: int) -> None:
    """The event object is level 1: request.payload's container is level 3, snapshot's 2, a change's
    before/after 4; a free-form value deeper than ``limit`` is named by its path."""
    ev = example()
    value = {"k": nest(n)}
    if where.startswith("request."):
        ev["request"] = {**ev.get("request", {}), where.split(".")[1]: value}
        base = 2
    elif where == "changes":
        ev["changes"] = [{"field": "f", "before": 1, "after": value}]
        base = 3
    else:
        ev[where] = value
        base = 1
    got = free_form_problem(RawEvent.model_validate(ev), limit)
    assert (got is not None) == (base + reference_depth(value) > limit)
    if got is not None:
        assert got[0].startswith(where if where != "changes" else "changes.0.after")


@given(
    st.integers() | st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["request.payload", "snapshot", "changes"]),
)
def test_numbers_beyond_the_contract_range_are_named(n: float, where: str) -> None:
    ev = example()
    if where == "request.payload":
        ev["request"] = {"payload": {"amount": [n]}}
    elif where == "snapshot":
        ev["snapshot"] = {"amount": n}
    else:
        ev["changes"] = [{"field": "amount", "before": None, "after": n}]
    got = free_form_problem(RawEvent.model_validate(ev))
    assert (got is not None) == (float(n).is_integer() and abs(n) > 2**53 - 1)
    if got is not None:
        assert "2**53" in got[1] and got[0].split(".")[0] == where.split(".")[0]


def test_parse_events_refuses_unsafe_integers_naming_the_field() -> None:
    body = orjson.dumps([example(), example(snapshot={"n": 2**60})])
    with pytest.raises(Refusal) as e:
        parse_events(body, "json", True, Limits())
    assert e.value.status == 422 and e.value.errors[0] == {
        "index": 1,
        "field": "snapshot.n",
        "message": "number without fraction outside ±(2**53-1), which RFC 8785 cannot represent exactly",
    }


def test_validation_names_fields_and_indexes() -> None:
    body = orjson.dumps([example(), example(status="x"), {"org_id": "o"}])
    with pytest.raises(Refusal) as e:
        parse_events(body, "json", True, Limits())
    fields = {(x["index"], x["field"]) for x in e.value.errors}
    assert (1, "status") in fields and (2, "action") in fields and (2, "occurred_at") in fields
    assert len(parse_events(orjson.dumps(examples()), "json", True, Limits())) == len(examples())


def test_stamp_rules() -> None:
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    bare = RawEvent.model_validate(example(request=None))
    s = stamp(bare, producer="p", peer_ip="10.0.0.1", x_forwarded_for="1.2.3.4", now=now)
    assert s.event_id is not None and s.received_at == now and s.producer == "p"
    assert s.request.peer_ip == "10.0.0.1" and s.request.x_forwarded_for == "1.2.3.4"
    assert s.metadata == {"ingest_peer_ip": "10.0.0.1", "ingest_x_forwarded_for": "1.2.3.4"}

    eid = uuid.uuid4()
    own = RawEvent.model_validate(
        example(event_id=str(eid), producer="liar", request={"peer_ip": "192.0.2.1", "method": "PUT"})
    )
    s = stamp(own, producer="p", peer_ip="10.0.0.1", x_forwarded_for=None, now=now)
    assert s.event_id == eid and s.request.peer_ip == "192.0.2.1" and s.request.x_forwarded_for is None
    assert s.metadata == {"ingest_peer_ip": "10.0.0.1", "producer_claimed": "liar"}
    RawEvent.model_validate(s.model_dump())  # still contract-valid


def test_repeated_forwarded_for_lines_are_one_list() -> None:
    assert forwarded_for([]) is None and forwarded_for(["  "]) is None
    assert forwarded_for(["203.0.113.7"]) == "203.0.113.7"
    assert forwarded_for(["203.0.113.7, 10.0.0.1", "10.0.0.2"]) == "203.0.113.7, 10.0.0.1, 10.0.0.2"


@pytest.mark.parametrize("ev", examples(), ids=lambda e: e["action"])
def test_wire_round_trip(ev: dict) -> None:
    e = RawEvent.model_validate({**ev, "event_id": str(uuid.uuid4()), "producer": "x"})
    key, value, headers = encode(e)
    assert key == str(e.event_id).encode()
    assert dict(headers) == {"content-type": b"application/json", "schema-version": b"1", "producer": b"x"}
    assert decode_value(value) == e
    assert None not in orjson.loads(value).values()  # absent, not null


@given(
    st.lists(st.tuples(st.sampled_from(["o1", "o2", "o3"]), st.integers(0, 3000)), min_size=1, max_size=60),
    st.integers(min_value=200, max_value=20_000),
)
def test_envelopes_hold_every_event_once_by_org_within_the_size(spec: list, max_bytes: int) -> None:
    events = [
        RawEvent.model_validate(example(org_id=org, event_id=str(uuid.uuid4()), change="x" * size))
        for org, size in spec
    ]
    values = [encode_value(e) for e in events]
    records = envelopes(zip(events, values, strict=True), max_bytes)
    seen: list[int] = []
    for (key, value, _), indexes in records:
        seen += indexes
        items = RawRecord_adapter.validate_json(value)
        items = items if isinstance(items, list) else [items]
        assert [str(i.event_id) for i in items] == [str(events[i].event_id) for i in indexes]
        assert len({i.org_id for i in items}) == 1
        assert key == str(events[indexes[0]].event_id).encode()
        assert len(value) <= max_bytes or len(indexes) == 1
        assert indexes == sorted(indexes)
    assert sorted(seen) == list(range(len(events)))


@given(
    st.lists(st.tuples(st.sampled_from(["o1", "o2", "o3"]), st.integers(0, 3000)), min_size=1, max_size=60),
    st.integers(min_value=200, max_value=20_000),
    st.integers(min_value=200, max_value=4_000),
)
def test_envelope_records_are_the_envelopes_of_the_encoded_events(
    spec: list, max_bytes: int, max_event_bytes: int
) -> None:
    """The one-call encoding of an org's events gives exactly the records of encoding them one by one,
    and an event over the size limit is named by its index in the batch."""
    events = [
        RawEvent.model_validate(example(org_id=org, event_id=str(uuid.uuid4()), change="x" * size))
        for org, size in spec
    ]
    values = [encode_value(e) for e in events]
    too_big = [i for i, v in enumerate(values) if len(v) > max_event_bytes]
    if too_big:
        with pytest.raises(EventTooLarge) as e:
            envelope_records(events, max_bytes, max_event_bytes)
        assert e.value.index in too_big and e.value.size == len(values[e.value.index])
        return
    assert envelope_records(events, max_bytes, max_event_bytes) == envelopes(
        zip(events, values, strict=True), max_bytes
    )


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=30,
)


@given(_JSON, st.integers(min_value=1, max_value=6), st.integers(min_value=1, max_value=8))
def test_the_path_free_check_agrees_with_the_walk_that_names_the_path(
    value: object, depth: int, limit: int
) -> None:
    """free_form_problem looks for problems without building paths and names the path only when one is
    found: the answer is exactly the full walk's."""
    from auditpipe.wire import _problem, _walk

    assert _problem(value, depth, limit, "x") == _walk(value, depth, limit, "x")
