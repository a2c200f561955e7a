"""Through the real broker: raw in -> enriched out; invalid in -> dead letter; the canary nowhere."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from schemas.events_v1 import DeadLetter, EnrichedEvent, OrgSwitch
from schemas.integrity import verify
from schemas.topics import DEADLETTER, EVENTS, RAW
from tests.enricher.helpers import EnricherProcess, enricher_env, produce, read_all, topics_matching, wait_for

pytestmark = pytest.mark.kafka

PORT = 19510
HMAC_KEY = "hmac-key-" + uuid.uuid4().hex  # must appear nowhere either
EXAMPLES = Path(__file__).resolve().parents[2] / "schemas/examples/raw"


def canary_event(canary: str, aws_canary: str) -> dict:
    """The canary in every place a secret can hide."""
    pem = f"-----BEGIN PRIVATE KEY-----\nMII{canary}\n-----END PRIVATE KEY-----"
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-11-22T10:00:00Z",
        "org_id": "org-canary",
        "actor": {"id": "u-1", "name": f"Ada {aws_canary}", "email": "ada@x.test"},
        "action": "variable:update",
        "target": {"id": "var-1", "name": f"var {aws_canary}"},
        "change": f"rotated {aws_canary} and {pem}",
        "request": {
            "method": "PUT",
            "path": f"/api/vars/{aws_canary}",
            "query": {"access_token": canary, "page": "1"},
            "payload": {"password": canary, "nested": [{"deep": {"client_secret": canary}}], "pem": pem},
            "user_agent": f"curl/8 {aws_canary}",
            "headers": {"authorization": f"Bearer {canary}", "cookie": f"sid={canary}", "x-note": aws_canary},
            "peer_ip": "10.1.2.3",
            "x_forwarded_for": "198.51.100.9, 10.9.9.9",
        },
        "metadata": {"secret": canary, "note": aws_canary, "key": pem},
        "changes": [
            {"field": "api_key", "before": canary, "after": canary + "2"},
            {"field": "config", "before": {"token": canary}, "after": {"private_key": pem}},
        ],
        "snapshot": {"db": {"password": canary}, "blob": pem},
    }


async def test_raw_in_enriched_out_dead_letters_and_canary_nowhere(topic_names, tmp_path: Path) -> None:  # noqa: ANN001
    topics = topic_names(RAW, EVENTS, DEADLETTER)
    suffix = uuid.uuid4().hex[:8]
    canary = f"CANARY{uuid.uuid4().hex}"
    aws_canary = "AKIA" + uuid.uuid4().hex[:16].upper()
    env = enricher_env(
        topics,
        suffix,
        PORT,
        AUDITPIPE_ENRICHER__TRUSTED_PROXIES='["10.0.0.0/8"]',
        AUDITPIPE_ENRICHER__AUDIT_DISABLED_ORGS='["org-off"]',
        AUDITPIPE_ENRICHER__HASH_MODE="hmac",
        AUDITPIPE_ENRICHER__HMAC_KEY=HMAC_KEY,
        AUDITPIPE_LOG_LEVEL="DEBUG",
    )
    dep = orjson.loads((EXAMPLES / "deployment_create_user_console.json").read_bytes())
    dep["event_id"] = str(uuid.uuid4())
    dep["request"]["peer_ip"] = "10.0.0.5"
    no_id = {"occurred_at": "2026-11-22T10:00:00Z", "org_id": "org-acme", "action": "project:delete"}
    off = {**no_id, "org_id": "org-off", "event_id": str(uuid.uuid4())}
    invalid = {"org_id": "org-acme", "action": "broken", "request": {"payload": {"password": canary}}}
    unparseable = b'{"org_id": "org-acme", "password": "' + canary.encode() + b'", ' + aws_canary.encode()
    ev = canary_event(canary, aws_canary)
    await produce(
        topics[RAW],
        [
            (b"org-acme", orjson.dumps(dep)),
            (b"org-canary", orjson.dumps(ev)),
            (b"org-acme", orjson.dumps(no_id)),
            (b"org-off", orjson.dumps(off)),
            (b"org-acme", orjson.dumps(invalid)),
            (b"org-acme", unparseable),
        ],
    )
    proc = EnricherProcess(env, tmp_path / "enricher.log").start()
    try:
        recs = await wait_for(topics[EVENTS], lambda r: len(r) >= 4, timeout_s=60)
        dls = await wait_for(topics[DEADLETTER], lambda r: len(r) >= 2, timeout_s=20)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{PORT}/metrics")).text
            ready = (await http.get(f"http://127.0.0.1:{PORT}/readyz")).json()
    finally:
        code = proc.stop()
    logs = proc.logs()
    assert code == 0, logs[-3000:]
    assert ready["ready"] is True

    events = {e["event_id"]: e for e in (orjson.loads(v) for _, v in recs)}
    assert len(events) == 4, sorted(e["action"] for e in events.values())
    for doc in events.values():
        EnrichedEvent.model_validate(doc)
        assert verify(doc), doc["action"]

    d = events[dep["event_id"]]
    assert (d["client_ip"], d["event_type"], d["source"], d["actor"]["type"], d["target"]["type"]) == (
        "203.0.113.7",
        "create",
        "console",
        "user",
        "deployment",
    )

    c = events[ev["event_id"]]
    assert c["client_ip"] == "198.51.100.9"
    assert c["event_type"] == "update" and c["source"] == "api" and c["target"]["type"] == "variable"
    want = hmac.new(HMAC_KEY.encode(), canary.encode(), hashlib.sha256).hexdigest()
    assert c["request"]["payload"]["password"] == f"[sensitive:hmac-sha256:{want}]"  # key holder can check
    assert {
        "request.payload.password",
        "request.query.access_token",
        "request.headers.authorization",
        "metadata.secret",
        "changes[0].before",
        "changes[0].after",
        "changes[1].before.token",
        "changes[1].after.private_key",
        "snapshot.db.password",
        "change",
        "target.name",
        "actor.name",
        "request.path",
        "request.user_agent",
        "metadata.note",
    } <= set(c["sensitive_paths"])

    derived = [e for e in events.values() if e["action"] == "project:delete"]
    assert len(derived) == 1 and derived[0]["actor"]["type"] == "system"
    switch = [e for e in events.values() if e["action"] == "organization:audit_config_update"]
    assert len(switch) == 1 and switch[0]["org_id"] == "org-off" and switch[0]["changes"][0]["after"] is False
    assert not any(e["org_id"] == "org-off" and e["action"] == "project:delete" for e in events.values())

    letters = [DeadLetter.model_validate(orjson.loads(v)) for _, v in dls]
    assert sorted(dl.reason for dl in letters) == ["invalid_json", "validation_error"]
    for dl in letters:
        assert dl.stage == "enricher" and dl.source_topic == topics[RAW] and dl.source_offset is not None
        assert dl.original and "[sensitive:" in dl.original

    assert 'auditpipe_enricher_suppressed_events{day="2026-11-22",org_id="org-off"} 1.0' in metrics
    assert 'auditpipe_enricher_dead_letters_total{reason="validation_error"} 1.0' in metrics
    lag = [x for x in metrics.splitlines() if x.startswith("auditpipe_consumer_lag_messages{")]
    assert any('service="enricher"' in x and f'topic="{topics[RAW]}"' in x for x in lag), lag

    # the canary (and the HMAC key) nowhere: every topic this test's enricher wrote, and its logs
    written = await topics_matching(topics[EVENTS], topics[DEADLETTER], suffix)
    assert topics[EVENTS] in written and any("changelog" in t for t in written), written
    for t in written:
        for key, value in await read_all(t):
            blob = (key or b"") + b"|" + (value or b"")
            for secret in (canary, aws_canary, HMAC_KEY):
                assert secret.encode() not in blob, f"{secret[:8]}... found in topic {t}"
    assert "dead letter" in logs
    for secret in (canary, aws_canary, HMAC_KEY):
        assert secret not in logs, f"{secret[:8]}... found in the enricher's logs"


async def test_switch_set_through_the_api_is_followed_live(topic_names, tmp_path: Path) -> None:  # noqa: ANN001
    """org-quiet is switched off on the API's topic before start: its event is not stored; switched back
    on while the worker runs: its next event is stored, without a restart."""
    topics = topic_names(RAW, EVENTS, DEADLETTER)
    suffix = uuid.uuid4().hex[:8]
    env = enricher_env(topics, suffix, PORT + 2)
    switch = env["AUDITPIPE_ENRICHER__SWITCH_TOPIC"]

    def rec(enabled: bool) -> tuple[bytes, bytes]:
        r = OrgSwitch(
            org_id="org-quiet", audit_enabled=enabled, changed_by="ana", changed_at=datetime.now(UTC)
        )
        return b"org-quiet", r.model_dump_json().encode()

    def raw(org: str) -> tuple[bytes, bytes]:
        ev = {"event_id": str(uuid.uuid4()), "occurred_at": "2026-11-22T10:00:00Z", "org_id": org}
        return org.encode(), orjson.dumps({**ev, "action": "project:update"})

    await produce(switch, [rec(False)])  # auto-created here; the enricher's own start creates it compacted
    a, b = raw("org-quiet"), raw("org-loud")
    await produce(topics[RAW], [a, b])
    proc = EnricherProcess(env, tmp_path / "enricher.log").start()
    try:
        recs = await wait_for(topics[EVENTS], lambda r: len(r) >= 1, timeout_s=60)
        async with httpx.AsyncClient() as http:
            for _ in range(100):  # org-quiet's event was processed: counted as not stored
                metrics = (await http.get(f"http://127.0.0.1:{PORT + 2}/metrics")).text
                if 'auditpipe_enricher_suppressed_events{day="2026-11-22",org_id="org-quiet"} 1.0' in metrics:
                    break
                await asyncio.sleep(0.2)
        assert 'org_id="org-quiet"} 1.0' in metrics
        await produce(switch, [rec(True)])
        for _ in range(100):  # the follower logs each change it applies
            if proc.logs().count("org audit switch") >= 2:
                break
            await asyncio.sleep(0.2)
        c = raw("org-quiet")
        await produce(topics[RAW], [c])
        recs = await wait_for(topics[EVENTS], lambda r: len(r) >= 2, timeout_s=30)
    finally:
        code = proc.stop()
    assert code == 0, proc.logs()[-3000:]
    stored = sorted(orjson.loads(v)["event_id"] for _, v in recs)
    assert stored == sorted(orjson.loads(x[1])["event_id"] for x in (b, c))  # never a
