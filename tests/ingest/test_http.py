"""Events sent over HTTP arrive on the raw topic as sent (contract-valid), stamped by the ingest, one
envelope per request and org (keyed by its first event id, so one org spreads over the partitions)."""

from __future__ import annotations

import uuid

import orjson
import pytest

from schemas.events_v1 import RawEvent
from tests.ingest.conftest import auth, example, examples, read_topic

pytestmark = pytest.mark.kafka


def _by_id(records: list) -> dict[str, tuple[bytes, RawEvent, dict]]:
    out = {}
    for r in records:
        ev = RawEvent.model_validate_json(r.value)  # contract-valid, or this raises
        out[str(ev.event_id)] = (r.key, ev, {k: v for k, v in r.headers})
    return out


async def test_single_and_batch_json_and_ndjson_arrive_in_envelopes(http, ingest_cfg, raw_topic) -> None:
    sent = examples()
    single = sent[0]
    r = await http.post("/v1/events", json=single, headers=auth("tok-any"))
    assert r.status_code == 202, r.text
    (single_id,) = r.json()["accepted"]

    batch = [{**e, "event_id": str(uuid.uuid4())} for e in sent]
    r = await http.post("/v1/events/batch", json=batch, headers=auth("tok-any"))
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == [e["event_id"] for e in batch]  # producer ids kept, in order

    nd = b"\n".join(orjson.dumps(e) for e in sent) + b"\n"
    r = await http.post(
        "/v1/events/batch", content=nd, headers={**auth("tok-any"), "content-type": "application/x-ndjson"}
    )
    assert r.status_code == 202, r.text
    nd_ids = r.json()["accepted"]
    assert len(nd_ids) == len(sent)

    want = 1 + 2 * len(sent)
    recs = await read_topic(ingest_cfg, raw_topic, want, settle_s=0.5)
    got = _by_id(recs)
    assert len(recs) == want and len(got) == want

    for sent_ev, eid in [
        (single, single_id),
        *zip(batch, [e["event_id"] for e in batch]),
        *zip(sent, nd_ids),
    ]:
        key, ev, headers = got[eid]
        assert ev.org_id == sent_ev["org_id"]
        assert headers["content-type"] == b"application/json" and headers["schema-version"] == b"1"
        assert headers["producer"] == b"svc-any" and ev.producer == "svc-any"
        assert ev.received_at is not None
        # as sent: every field the producer gave comes back with the same value
        dumped = ev.model_dump(mode="json", exclude_none=True)
        original = RawEvent.model_validate(sent_ev).model_dump(mode="json", exclude_none=True)
        for k, v in original.items():
            if k in ("event_id", "metadata", "request"):
                continue
            assert dumped[k] == v, k
        for k, v in (original.get("request") or {}).items():
            assert dumped["request"][k] == v
        assert ev.metadata["ingest_peer_ip"] == "203.0.113.9"
        for mk, mv in original["metadata"].items():
            assert ev.metadata[mk] == mv

    # a request's events travel as one record per org (an envelope when several), keyed by its first event
    records: dict[tuple[int, int], list] = {}
    for r in recs:
        records.setdefault((r.partition, r.offset), []).append(r)
    assert len(records) < want  # envelopes, not a record per event
    for held in records.values():
        evs = [RawEvent.model_validate_json(r.value) for r in held]
        assert len({e.org_id for e in evs}) == 1 and held[0].envelope == len(held)
        assert held[0].key == str(evs[0].event_id).encode()


async def test_peer_and_forwarded_for_recorded_producer_view_wins(http, ingest_cfg, raw_topic) -> None:
    # 1. no peer info from the producer: the ingest's TCP peer and raw XFF header are the call's
    ev = example(org_id="org-acme", request={"method": "POST", "path": "/x"})
    r = await http.post(
        "/v1/events", json=ev, headers={**auth(), "x-forwarded-for": "198.51.100.1, 10.0.0.2"}
    )
    assert r.status_code == 202
    id1 = r.json()["accepted"][0]
    # 2. the producer describes its own caller: kept; the ingest's view goes to metadata
    ev2 = example(org_id="org-beta", producer="i-am-someone-else")
    ev2["request"] = {"peer_ip": "192.0.2.7", "x_forwarded_for": "192.0.2.99"}
    r = await http.post("/v1/events", json=ev2, headers={**auth(), "x-forwarded-for": "10.9.9.9"})
    assert r.status_code == 202
    id2 = r.json()["accepted"][0]

    got = {}
    for rec in await read_topic(ingest_cfg, raw_topic, want_ids={id1, id2}):
        e = RawEvent.model_validate_json(rec.value)
        got[str(e.event_id)] = e
    e1, e2 = got[id1], got[id2]
    assert e1.request.peer_ip == "203.0.113.9" and e1.request.x_forwarded_for == "198.51.100.1, 10.0.0.2"
    assert e1.request.method == "POST" and e1.producer == "svc-acme"
    assert e2.request.peer_ip == "192.0.2.7" and e2.request.x_forwarded_for == "192.0.2.99"
    assert e2.metadata["ingest_peer_ip"] == "203.0.113.9"
    assert e2.metadata["ingest_x_forwarded_for"] == "10.9.9.9"
    assert e2.producer == "svc-acme" and e2.metadata["producer_claimed"] == "i-am-someone-else"


async def test_health_ready_metrics_openapi(http) -> None:
    assert (await http.get("/healthz")).json()["status"] == "ok"
    r = await http.get("/readyz")
    assert r.status_code == 200 and r.json()["kafka"] is True
    m = (await http.get("/metrics")).text
    assert "auditpipe_ingest_requests_total" in m and "auditpipe_ingest_publish_latency_seconds" in m
    doc = (await http.get("/openapi.json")).json()
    assert "/v1/events" in doc["paths"] and "RawEvent" in doc["components"]["schemas"]
