"""`make demo`'s program on private ports: it ends with the summary and answers its three questions."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


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
    finally:
        subprocess.run([*cli, "stack", "down"], env=env, capture_output=True, timeout=120)
