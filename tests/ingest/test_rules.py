"""Pure rules of the ingest (no I/O): token auth, content types, parsing, depth, stamping, wire format."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditpipe.wire import decode_value, encode
from schemas.events_v1 import RawEvent
from services.common.settings import IngestToken
from services.ingest.auth import authenticate, bearer, hash_token, may_write
from services.ingest.validation import Limits, Refusal, media_type, parse_body, stamp, too_deep, validate
from tests.ingest.conftest import example, examples

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


def test_parse_body_limits() -> None:
    lim = Limits(max_batch_events=2, max_body_bytes=1000)
    assert parse_body(b'{"a":1}', "json", False, lim) == [{"a": 1}]
    assert parse_body(b'{"a":1}\n\n{"b":2}\r\n', "ndjson", True, lim) == [{"a": 1}, {"b": 2}]
    for body, kind, batch, status in [
        (b"[1,2,3]", "json", True, 413),
        (b"{}\n{}\n{}", "ndjson", True, 413),
        (b"x" * 1001, "json", False, 413),
        (b"[]", "json", True, 422),
        (b"{}", "json", True, 422),
        (b"{}\n{", "ndjson", True, 400),
        (b"\xff", "json", False, 400),
        (b"  ", "json", False, 400),
    ]:
        with pytest.raises(Refusal) as e:
            parse_body(body, kind, batch, lim)
        assert e.value.status == status, body
    with pytest.raises(Refusal) as e:
        parse_body(b"{}\n{bad", "ndjson", True, lim)
    assert e.value.errors[0]["index"] == 1


def nest(n: int) -> object:
    v: object = 1
    for i in range(n):
        v = {"k": v} if i % 2 else [v]
    return v


@given(st.integers(min_value=0, max_value=60), st.integers(min_value=2, max_value=40))
def test_too_deep_matches_depth(n: int, limit: int) -> None:
    # the event object is depth 1; nest(n) adds n containers below it
    deep = too_deep({"p": nest(n)}, limit) is not None
    assert deep == (1 + n > limit)


def test_validate_names_fields_and_indexes() -> None:
    with pytest.raises(Refusal) as e:
        validate([example(), example(status="x"), {"org_id": "o"}], batch=True)
    fields = {(x["index"], x["field"]) for x in e.value.errors}
    assert (1, "status") in fields and (2, "action") in fields and (2, "occurred_at") in fields
    assert len(validate(examples(), batch=True)) == len(examples())


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


@pytest.mark.parametrize("ev", examples(), ids=lambda e: e["action"])
def test_wire_round_trip(ev: dict) -> None:
    e = RawEvent.model_validate({**ev, "event_id": str(uuid.uuid4()), "producer": "x"})
    key, value, headers = encode(e)
    assert key == e.org_id.encode()
    assert dict(headers) == {"content-type": b"application/json", "schema-version": b"1", "producer": b"x"}
    assert decode_value(value) == e
    assert None not in orjson.loads(value).values()  # absent, not null


@given(
    st.sampled_from(["request.payload", "request.query", "snapshot", "changes", "x"]),
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=4, max_value=30),
)
def test_event_walk_agrees_with_full_walk(where: str, n: int, limit: int) -> None:
    from services.ingest.validation import event_too_deep

    ev = example()
    if where.startswith("request."):
        ev["request"] = {**ev.get("request", {}), where.split(".")[1]: {"k": nest(n)}}
    elif where == "changes":
        ev["changes"] = [{"field": "f", "before": 1, "after": nest(n)}]
    else:
        ev[where] = {"k": nest(n)}
    assert (event_too_deep(ev, limit) is None) == (too_deep(ev, limit) is None)
