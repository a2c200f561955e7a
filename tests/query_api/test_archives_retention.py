"""Archives (list, download, delete with the 30-day rule) and retention settings; every sensitive action is
published to a (per-test) audit.raw.v1 topic before it happens, with the principal as actor."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from fastapi.testclient import TestClient

from schemas.events_v1 import OrgSwitch, RawEvent
from services.archive.rules import org_dir_name
from services.common.audit_events import AuditUnavailable
from services.common.kafka import make_consumer
from services.common.settings import Settings
from services.query_api.archives import deletable
from services.query_api.main import create_app
from tests.conftest import run_sync
from tests.query_api.conftest import auth

pytestmark = [pytest.mark.clickhouse, pytest.mark.kafka]


async def _read(settings: Settings, topic: str, n: int, timeout_s: float = 20) -> list[dict]:
    c = make_consumer(settings, topic, group_id=None)
    await c.start()
    out: list[dict] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(out) < n and asyncio.get_running_loop().time() < deadline:
            batch = await c.getmany(timeout_ms=500)
            for msgs in batch.values():
                out += [orjson.loads(m.value) for m in msgs]
    finally:
        await c.stop()
    return out


@pytest.fixture
def audited(api_settings: Settings, kafka_settings: Settings, topic_names):  # noqa: ANN001, ANN201
    topic = topic_names("audit.raw.v1")["audit.raw.v1"]
    switch = f"test.org-switch.{uuid.uuid4().hex[:8]}"  # created by the API itself (compacted)
    qa = api_settings.query_api.model_copy(update={"audit_topic": topic, "switch_topic": switch})
    ret = api_settings.retention.model_copy(update={"audit_topic": topic})  # the sink's deletion audit
    s = api_settings.model_copy(update={"query_api": qa, "retention": ret})
    with TestClient(create_app(s)) as c:
        yield c, s, topic


def _write_archive(root, org: str, day: str, age_days: float, body: bytes, gz: bool = False):  # noqa: ANN001, ANN202
    """A day file plus its manifest, laid out as services.archive writes them."""
    d = root / org_dir_name(org)
    d.mkdir(parents=True, exist_ok=True)
    name = f"events-{day}.jsonl" + (".gz" if gz else "")
    data = gzip.compress(body) if gz else body
    (d / name).write_bytes(data)
    created = datetime.now(UTC) - timedelta(days=age_days)
    manifest = {
        "org_id": org, "file": f"{org_dir_name(org)}/{name}", "day": day, "rows": body.count(b"\n"),
        "sha256": hashlib.sha256(body).hexdigest(), "file_sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data), "created_at": created.isoformat(), "gzip": gz,
    }  # fmt: skip
    (d / (name + ".manifest.json")).write_bytes(orjson.dumps(manifest))
    return name


def test_archives_list_download_delete_audited(audited) -> None:  # noqa: ANN001
    client, s, topic = audited
    root = s.retention.archive_dir
    old = _write_archive(root, "org-acme", "2026-01-01", 45, b'{"event_id":"1"}\n')
    new = _write_archive(root, "org-acme", "2026-11-01", 3, b'{"event_id":"2"}\n', gz=True)
    _write_archive(root, "org-other", "2026-01-01", 45, b'{"event_id":"3"}\n')

    r = client.get("/api/events/archives", params={"org": "org-acme"}, headers=auth("viewer"))
    files = {f["filename"]: f for f in r.json()["archives"]}
    assert set(files) == {old, new}
    assert files[old]["deletable"] and not files[new]["deletable"]
    # a token scoped to org-acme sees only its org, whatever it asks for
    r = client.get("/api/events/archives", headers=auth("acme"))
    assert {f["org_id"] for f in r.json()["archives"]} == {"org-acme"}
    assert (
        client.get("/api/events/archives", params={"org": "org-other"}, headers=auth("acme")).status_code
        == 404
    )
    # project-scoped tokens cannot read whole-org day files
    assert client.get("/api/events/archives", headers=auth("acme_web_prod")).status_code == 403

    r = client.get(f"/api/events/archives/{old}", params={"org": "org-acme"}, headers=auth("acme"))
    assert r.status_code == 200 and r.content == b'{"event_id":"1"}\n'
    assert (
        client.get(
            f"/api/events/archives/{old}", params={"org": "org-other"}, headers=auth("acme")
        ).status_code
        == 404
    )
    for bad in ("..%2F..%2Fetc%2Fpasswd", "events-2026-01-01.jsonl.bak", "events-x.jsonl"):
        r = client.get(f"/api/events/archives/{bad}", params={"org": "org-acme"}, headers=auth("viewer"))
        assert r.status_code in (404, 422), bad
    r = client.get(
        "/api/events/archives/events-2026-01-01.jsonl", params={"org": "../org-acme"}, headers=auth("viewer")
    )
    assert r.status_code in (404, 422)  # never outside the archive folder

    # deletion: Manager only, 30-day rule, audited
    assert (
        client.delete(f"/api/events/archives/{old}?org=org-acme", headers=auth("viewer")).status_code == 403
    )
    r = client.delete(f"/api/events/archives/{new}?org=org-acme", headers=auth("acme_mgr"))
    assert r.status_code == 409 and "30 days" in r.json()["detail"]
    assert (root / "org-acme" / new).exists()
    r = client.delete(f"/api/events/archives/{old}?org=org-acme", headers=auth("acme"))
    assert r.status_code == 403
    r = client.delete(f"/api/events/archives/{old}?org=org-acme", headers=auth("acme_mgr"))
    assert r.status_code == 200, r.text
    assert not (root / "org-acme" / old).exists()
    assert (root / "org-other" / old).exists()

    msgs = run_sync(_read(s, topic, 2))
    evs = [RawEvent.model_validate(m) for m in msgs]
    assert [(e.action, e.actor.id, e.org_id, e.target.id) for e in evs] == [
        ("audit_archive:download", "acme", "org-acme", f"org-acme/{old}"),
        ("audit_archive:delete", "acme_mgr", "org-acme", f"org-acme/{old}"),
    ]


def test_retention_bounds_manager_only_and_audited(audited) -> None:  # noqa: ANN001
    client, s, topic = audited
    r = client.get("/api/settings/retention", params={"org": "org-acme"}, headers=auth("acme_mgr"))
    assert r.json()["retention_days"] == s.retention.default_days and r.json()["audit_enabled"] is True
    url = "/api/settings/retention?org=org-acme"
    assert (
        client.put(url, json={"retention_days": 30, "audit_enabled": True}, headers=auth("acme")).status_code
        == 403
    )
    for days in (0, 366, -1):
        r = client.put(url, json={"retention_days": days, "audit_enabled": True}, headers=auth("acme_mgr"))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "retention_days", days
    r = client.put(url, json={"retention_days": "many", "audit_enabled": True}, headers=auth("acme_mgr"))
    assert r.status_code == 422
    r = client.put(
        "/api/settings/retention?org=org-other",
        json={"retention_days": 30, "audit_enabled": True},
        headers=auth("acme_mgr"),
    )
    assert r.status_code == 404
    r = client.put(url, json={"retention_days": 365, "audit_enabled": False}, headers=auth("acme_mgr"))
    assert r.status_code == 200, r.text
    assert r.json()["retention_days"] == 365 and r.json()["audit_enabled"] is False
    assert r.json()["updated_by"] == "acme_mgr"
    r = client.get("/api/settings/retention", headers=auth("acme_mgr"))
    assert r.json()["retention_days"] == 365 and r.json()["audit_enabled"] is False
    msgs = run_sync(_read(s, topic, 1))
    ev = RawEvent.model_validate(msgs[0])
    assert ev.action == "audit_settings:update" and ev.actor.id == "acme_mgr" and ev.org_id == "org-acme"
    assert {c.field: (c.before, c.after) for c in ev.changes} == {
        "retention_days": (s.retention.default_days, 365),
        "audit_enabled": (True, False),
    }
    # the switch is published for the enricher, on a compacted topic the API created itself
    recs = [OrgSwitch.model_validate(m) for m in run_sync(_read(s, s.query_api.switch_topic, 1))]
    assert [(r.org_id, r.audit_enabled, r.changed_by) for r in recs] == [("org-acme", False, "acme_mgr")]
    assert run_sync(_topic_config(s, s.query_api.switch_topic))["cleanup.policy"] == "compact"
    # a retention-only change publishes no switch record; switching back on publishes one
    r = client.put(url, json={"retention_days": 200, "audit_enabled": False}, headers=auth("acme_mgr"))
    assert r.status_code == 200
    r = client.put(url, json={"retention_days": 200, "audit_enabled": True}, headers=auth("acme_mgr"))
    assert r.status_code == 200 and r.json()["audit_enabled"] is True
    recs = [OrgSwitch.model_validate(m) for m in run_sync(_read(s, s.query_api.switch_topic, 3, timeout_s=5))]
    assert [(r.org_id, r.audit_enabled) for r in recs] == [("org-acme", False), ("org-acme", True)]


def test_switch_not_applied_when_it_cannot_be_published(audited, monkeypatch) -> None:  # noqa: ANN001
    """Audit event written, switch record refused: 503 and the stored settings stay as they were."""
    client, s, _topic = audited
    audit = client.app.state.audit

    async def refuse(*_a: object, **_kw: object) -> None:
        raise AuditUnavailable("test")

    monkeypatch.setattr(audit, "send", refuse)
    monkeypatch.setattr(audit, "publish", lambda ev: asyncio.sleep(0))  # the audit event itself goes through
    url = "/api/settings/retention?org=org-acme"
    r = client.put(url, json={"retention_days": 30, "audit_enabled": False}, headers=auth("acme_mgr"))
    assert r.status_code == 503 and "switch" in r.json()["detail"]
    now = client.get(url, headers=auth("acme_mgr")).json()
    assert now["audit_enabled"] is True and now["retention_days"] == s.retention.default_days


async def _topic_config(settings: Settings, topic: str) -> dict[str, str]:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        res = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        return {name: value for name, value, *_ in res[0].resources[0][4]}
    finally:
        await admin.close()


def test_self_hosted_allows_ten_years(api_settings: Settings) -> None:
    ret = api_settings.retention.model_copy(update={"self_hosted": True})
    s = api_settings.model_copy(update={"retention": ret})
    with TestClient(create_app(s)) as client:
        r = client.get("/api/settings/retention?org=org-acme", headers=auth("manager"))
        assert r.json()["max_days"] == 3650
        r = client.put("/api/settings/retention?org=org-acme", json={"retention_days": 3651, "audit_enabled": True},  # noqa: E501
                       headers=auth("manager"))  # fmt: skip
        assert r.status_code == 422


def test_sensitive_action_refused_when_audit_cannot_be_written(api_settings: Settings) -> None:
    s = api_settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:19799"})  # nothing listens there
    qa = s.query_api.model_copy(update={"audit_topic": "audit.raw.v1"})
    s = s.model_copy(update={"query_api": qa})
    name = _write_archive(s.retention.archive_dir, "org-acme", "2026-01-01", 45, b"{}\n")
    with TestClient(create_app(s)) as client:
        app_audit = client.app.state.audit
        app_audit.timeout_s = 2
        r = client.delete(f"/api/events/archives/{name}?org=org-acme", headers=auth("manager"))
        assert r.status_code == 503
        assert (s.retention.archive_dir / "org-acme" / name).exists()
        r = client.put("/api/settings/retention?org=org-acme", json={"retention_days": 10, "audit_enabled": True},  # noqa: E501
                       headers=auth("manager"))  # fmt: skip
        assert r.status_code == 503
        assert (
            client.get("/api/settings/retention?org=org-acme", headers=auth("manager")).json()[
                "retention_days"
            ]
            != 10
        )


def test_archive_rules_are_pure(api_settings: Settings) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert deletable(now - timedelta(days=30), now, 30)
    assert not deletable(now - timedelta(days=29, hours=23), now, 30)
    from services.query_api import archives as A

    for bad in ("../events-2026-01-01.jsonl", "events-2026-01-01.json", "x/events-2026-01-01.jsonl", ""):
        with pytest.raises(A.ArchiveError):
            A.get(api_settings, bad, "org-acme")
