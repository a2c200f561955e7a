"""``/api/integrity`` through the real app (real ClickHouse and Kafka), and the viewer's indicator in
headless Chromium."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from services.common.clickhouse import make_client
from services.query_api.main import create_app
from tests.integrity.helpers import insert, integrity_settings, record
from tests.integrity.test_seal_verify import NOW, seal
from tests.query_api.conftest import TOKENS, auth, query_tokens
from tests.query_api.server import ROOT, env_for, free_port
from tests.sink.helpers import read_all

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


@pytest.fixture
async def api(ch_settings, topic_names, tmp_path):  # noqa: ANN001, ANN201
    topics = topic_names("audit.digests.v1", "audit.raw.v1")
    s = integrity_settings(ch_settings, topics, tmp_path)
    s = s.model_copy(
        update={
            "query_api": s.query_api.model_copy(
                update={"tokens": query_tokens(), "audit_topic": topics["audit.raw.v1"]}
            )
        }
    )
    vals = [record(i, org="org-acme") for i in range(30)] + [record(i, org="org-other") for i in range(5)]
    insert(s, vals, NOW - timedelta(minutes=5))
    await seal(s)
    return s, vals, topics


async def test_keys_status_and_a_verification_that_is_audited_and_recorded(api) -> None:  # noqa: ANN001
    s, vals, topics = api
    with TestClient(create_app(s)) as c:
        keys = c.get("/api/integrity/keys", headers=auth("viewer")).json()["keys"]
        assert keys[0]["status"] == "signing" and keys[0]["key_id"].startswith("ed25519:")
        assert "PRIVATE" not in json.dumps(keys)
        assert c.get("/api/integrity/keys").status_code == 401

        st = c.get("/api/integrity/status", headers=auth("acme")).json()
        assert st["org_id"] == "org-acme" and st["sealed_through"] and st["last_check"] is None
        until = (NOW - timedelta(minutes=3)).isoformat()
        assert c.get("/api/integrity/status", params={"until": until}, headers=auth("acme")).json()[
            "range_sealed"
        ]

        # who may run it
        assert c.get("/api/integrity", headers=auth("acme")).status_code == 403  # EventView only
        assert c.get("/api/integrity", headers=auth("acme_web_prod")).status_code == 403  # project-scoped
        assert (
            c.get("/api/integrity", params={"org": "org-other"}, headers=auth("acme_mgr")).status_code == 404
        )
        r = c.get("/api/integrity", headers=auth("manager"))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "org"]

        r = c.get("/api/integrity", headers=auth("acme_mgr"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["ok"] is True and body["events"] == 30 and body["summary"].startswith("integrity OK")
        st = c.get("/api/integrity/status", headers=auth("acme")).json()
        assert st["last_check"]["ok"] is True and st["last_check"]["checked_by"] == "acme_mgr"

        gone = orjson.loads(vals[3])["event_id"]
        make_client(s).command(
            f"DELETE FROM {s.clickhouse_database}.events WHERE event_id = {{e:UUID}}", parameters={"e": gone}
        )
        body = c.get("/api/integrity", params={"org": "org-acme"}, headers=auth("manager")).json()
        assert body["ok"] is False and body["counts"] == {"deleted_event": 1}
        assert body["findings"][0]["event_id"] == gone
        st = c.get("/api/integrity/status", params={"org": "org-acme"}, headers=auth("viewer")).json()
        assert st["last_check"]["ok"] is False
    audit = [orjson.loads(v) for v in await read_all(s, topics["audit.raw.v1"], 40)]
    verifs = [a for a in audit if a["action"] == "audit_integrity:verify"]
    assert [v["actor"]["id"] for v in verifs] == ["acme_mgr", "manager"]
    assert {v["org_id"] for v in verifs} == {"org-acme"}
    seals = [a for a in audit if a["action"] == "audit_digest:seal"]
    assert seals and all(a["snapshot"]["signature"] for a in seals)  # every SIEM gets the digests


@pytest.mark.browser
def test_viewer_shows_sealed_state_and_a_manager_verifies_from_the_ui(api, tmp_path) -> None:  # noqa: ANN001
    from playwright.sync_api import expect, sync_playwright

    s, _, _ = api
    port = free_port(20440, 20460)
    env = env_for(s)
    env.update(
        AUDITPIPE_INTEGRITY__SIGNING_KEY_FILE=str(s.integrity.signing_key_file),
        AUDITPIPE_INTEGRITY__DIGEST_TOPIC=s.integrity.digest_topic,
        AUDITPIPE_INTEGRITY__WINDOW_S=str(s.integrity.window_s),
        AUDITPIPE_QUERY_API__AUDIT_TOPIC=s.query_api.audit_topic,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "services.query_api.main:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"],
            )  # fmt: skip
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(base + "/")
                page.fill("#token", TOKENS["acme_mgr"][0])
                page.click("#token-form button[type=submit]")
                box = page.locator("#integrity-status")
                expect(box).to_contain_text("never verified", timeout=15_000)
                expect(box).to_contain_text("Sealed")
                page.click("#integrity-verify")
                expect(box).to_contain_text("verified intact", timeout=30_000)
                expect(box).to_have_class("integrity good")
                (ROOT / "test-artifacts").mkdir(exist_ok=True)
                page.screenshot(path=str(ROOT / "test-artifacts" / "viewer-integrity.png"))
                # an analyst sees the state but has no button
                page.click("#logout")
                page.fill("#token", TOKENS["acme"][0])
                page.click("#token-form button[type=submit]")
                expect(box).to_contain_text("verified intact", timeout=15_000)
                expect(page.locator("#integrity-verify")).to_have_count(0)
            finally:
                browser.close()
    finally:
        proc.terminate()
        proc.wait(10)
    assert not os.environ.get("AUDITPIPE_INTEGRITY__SIGNING_KEY")
