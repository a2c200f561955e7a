"""`make demo`'s program on private ports: it ends with the summary and answers its three questions, and
what it stored is what a person opening the viewer would expect: real statuses (mostly 2xx, the
deliberate 403 and 409 of the live calls), every action ``<entity>:<verb>`` with a known entity, target
ids and projects filled, plausible actors and sources."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import clickhouse_connect
import pytest

from services.demo import scenario

ENTITIES = {"project", "environment", "deployment", "service", "variable", "user", "certificate"}
PROJECT_ENTITIES = {"project", "environment", "deployment", "service", "variable"}
SOURCES = {"console", "api", "cli", "terraform", "webhook", "system"}
ACTORS = {p.name for p in scenario.PEOPLE} | {t["name"] for t in scenario.TOKENS} | {"system"}


def check_stored_events(rows: list[dict]) -> None:
    """What a person checks on the viewer's first screen."""
    assert rows
    statuses = [r["status"] for r in rows]
    ok = sum(1 for s in statuses if 200 <= s < 300)
    assert ok >= 0.9 * len(rows), sorted(set(statuses))
    assert 422 not in statuses
    live = [r for r in rows if r["route"]]  # the middleware records the matched route; nobody else does
    assert len(live) >= 30
    live_failed = sorted(r["status"] for r in live if r["status"] >= 400)
    assert live_failed == [403, 409], live_failed  # the two deliberate refusals, nothing else
    for r in rows:
        entity, _, verb = r["action"].partition(":")
        assert entity in ENTITIES and re.fullmatch(r"[a-z_]+", verb), r["action"]
        assert r["target_type"] == entity, (r["action"], r["target_type"])
        assert r["target_id"], r["action"]
        if entity in PROJECT_ENTITIES:
            assert r["project_id"], r["action"]
        assert r["source"] in SOURCES, r["source"]
        assert r["actor_type"] in ("user", "api_token", "system"), r["actor_type"]
        assert r["actor_name"] in ACTORS, r["actor_name"]
        if r["actor_type"] == "system":
            assert r["source"] in ("webhook", "system"), r
    for r in live:
        assert r["actor_type"] == "user" and r["source"] == "console"
        assert r["client_ip"] in {p.ip for p in scenario.PEOPLE}  # behind the proxy chain
        assert r["route"].startswith("/api/projects/{project_id}/"), r["route"]
    assert {"webhook", "system"} <= {r["source"] for r in rows}  # the triggers view has content


@pytest.mark.e2e
@pytest.mark.kafka
@pytest.mark.clickhouse
def test_demo_runs_the_pipeline_and_answers(tmp_path) -> None:
    env = dict(
        os.environ,
        AUDITPIPE_KAFKA_BOOTSTRAP="127.0.0.1:19970",
        AUDITPIPE_STACK__KAFKA_CONTROLLER_PORT="19971",
        AUDITPIPE_CLICKHOUSE_URL="http://127.0.0.1:19972",
        AUDITPIPE_INGEST__PORT="19973",
        AUDITPIPE_QUERY_API__PORT="19974",
        AUDITPIPE_SINK__PORT="19975",
        AUDITPIPE_FORWARDER__PORT="19976",
        AUDITPIPE_ENRICHER__WEB_PORT="19977",
        AUDITPIPE_INTEGRITY__PORT="19979",
        AUDITPIPE_STACK__STATE_DIR=str(tmp_path / "stack"),
        AUDITPIPE_STACK__KAFKA_HEAP="512m",
    )
    cli = [sys.executable, "-m", "services.cli"]
    try:
        r = subprocess.run(
            [*cli, "demo", "--seconds", "1", "--siem-port", "19978"],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        out = r.stdout
        print(out[-3000:])
        assert r.returncode == 0, r.stderr[-3000:]
        counts = {
            k: int(v) for k, v in re.findall(r"events (produced|enriched|stored|forwarded):\s+(\d+)", out)
        }
        assert set(counts) == {"produced", "enriched", "stored", "forwarded"}
        assert counts["produced"] > 200
        assert counts["stored"] == counts["produced"]
        assert counts["enriched"] >= counts["produced"] and counts["forwarded"] >= counts["produced"]
        answers = re.findall(r"A: (.*)", out)
        assert len(answers) == 3 and all(a and a != "none" and a != "nobody" for a in answers), answers
        assert "Grace Hopper" in answers[0] and "203.0.113.41" in answers[0]  # client IP behind the proxies
        assert "terraform-ci" in out and "DB_PASSWORD" in answers[2]
        assert "http://127.0.0.1:19974/" in out
        for secret in ("hunter2-demo-secret", "s3cr3t-db-pa55", "BEGIN PRIVATE KEY"):
            assert secret not in out
        assert "refused on purpose: 403, 409" in out

        ch = clickhouse_connect.get_client(host="127.0.0.1", port=19972)
        res = ch.query(
            "SELECT action, status, target_type, target_id, project_id, actor_type, actor_name, source, "
            "client_ip, metadata['route'] AS route FROM audit.events FINAL"
        )
        rows = [dict(zip(res.column_names, r, strict=True)) for r in res.result_rows]
        assert len(rows) >= counts["stored"]  # plus the trickle of live calls after the summary
        check_stored_events(rows)
        stored = ch.query("SELECT event_json FROM audit.events FINAL").result_rows
        for secret in scenario.SECRET_VALUES:
            assert not any(secret in r[0] for r in stored), secret  # scrubbed before storage
    finally:
        subprocess.run([*cli, "stack", "down"], env=env, capture_output=True, timeout=120)
