"""Tamper evidence over a real pipeline run (LocalPipeline: every service a real process, private Kafka and
ClickHouse on ports 20400-20409): sealed by ``auditpipe seal`` as `auditpipe run` starts it, verified by
``auditpipe verify`` as a user runs it. Clean after the run and after an archive-and-delete of a day; then
each tampering made directly on ClickHouse and on the files is reported precisely.

Run alone and under the private-ports lock: ``flock /tmp/auditpipe-private-ports.lock pytest ...``.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.digests_v1 import record_bytes, signing_bytes
from services.common.clickhouse import make_client
from services.integrity.keys import key_id
from services.supervisor.local import LocalPipeline, Ports
from tests.integrity.helpers import insert, record

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse]

PORTS = Ports.offset(20400)
ROOT = Path(__file__).resolve().parents[2]
WINDOW_S = 3


def wait_for(pred, timeout_s: float, step: float = 0.5) -> None:  # noqa: ANN001
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if pred():
            return
        time.sleep(step)
    raise TimeoutError(f"condition not met within {timeout_s}s")


def raw_events(n: int, history_day: datetime) -> list[dict]:
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        old = i % 10 == 0  # a tenth are history: happened 40 days ago (late events, then archived)
        out.append(
            {
                "event_id": str(uuid.uuid4()),
                "occurred_at": (history_day + timedelta(seconds=i) if old else now).isoformat(),
                "org_id": f"org-{'abc'[i % 3]}",
                "actor": {"type": "user", "id": f"u-{i % 7}", "name": f"User {i % 7}"},
                "action": "deployment:create",
                "target": {"id": f"dep-{i}", "name": f"deployment {i}"},
                "status": 201,
                "change": f"pipeline run {i}",
                "request": {"method": "POST", "path": "/api/deployments", "payload": {"n": i}},
            }
        )
    return out


def run_cli(pipe: LocalPipeline, *args: str) -> tuple[int, str]:
    env = dict(os.environ, **pipe.env())
    p = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return p.returncode, p.stdout + p.stderr


def verify_json(pipe: LocalPipeline) -> tuple[int, dict]:
    code, out = run_cli(pipe, "verify", "--json")
    return code, orjson.loads(out[: out.rindex("}") + 1])


def test_a_pipeline_run_verifies_clean_and_every_tampering_is_reported(tmp_path: Path) -> None:
    pipe = LocalPipeline(
        state_dir=tmp_path / "pipe",
        ports=PORTS,
        services=("ingest", "enricher", "sink", "api", "seal"),
        kafka_heap="512m",
        extra_env={
            "AUDITPIPE_LOG_LEVEL": "WARNING",
            "AUDITPIPE_INTEGRITY__WINDOW_S": str(WINDOW_S),
            "AUDITPIPE_INTEGRITY__GRACE_S": "2",
            "AUDITPIPE_INTEGRITY__INTERVAL_S": "1",
            "AUDITPIPE_RETENTION__DEFAULT_DAYS": "30",
            "AUDITPIPE_RETENTION__SNAPSHOT_LAG_S": "1",
            "AUDITPIPE_SINK__ARCHIVE_ENABLED": "false",  # archived below, on purpose
        },
    )
    s = pipe.settings()
    history_day = (datetime.now(UTC) - timedelta(days=40)).replace(hour=9, minute=0, second=0, microsecond=0)
    try:
        pipe.up()
        pipe.start(wait_s=240)
        ch = make_client(s, database=s.clickhouse_database)
        evs = raw_events(1500, history_day)
        with httpx.Client(timeout=30) as h:
            for i in range(0, len(evs), 250):
                r = h.post(
                    f"http://127.0.0.1:{PORTS.ingest}/v1/events/batch",
                    content=orjson.dumps(evs[i : i + 250]),
                    headers={
                        "Authorization": f"Bearer {pipe.ingest_token}",
                        "Content-Type": "application/json",
                    },
                )
                assert r.status_code == 202, r.text
        ids = {e["event_id"] for e in evs}

        def stored() -> int:
            return int(
                ch.query(
                    "SELECT uniqExact(event_id) FROM events WHERE event_id IN {ids:Array(UUID)}",
                    parameters={"ids": list(ids)},
                ).result_rows[0][0]
            )

        wait_for(lambda: stored() == len(ids), 300)
        last = ch.query("SELECT max(inserted_at) FROM events").result_rows[0][0]

        def sealed_past(t: datetime) -> bool:
            n, h = ch.query("SELECT count(), max(horizon) FROM seal_runs").result_rows[0]
            return bool(n) and h > t

        wait_for(lambda: sealed_past(last), 120)
        code, rep = verify_json(pipe)
        assert code == 0 and rep["ok"], rep
        assert (
            rep["events"] >= 1500
            and rep["digests"]["topic"] == rep["digests"]["files"] == rep["digests"]["clickhouse"]
        )

        # archive-and-delete the history day, then verify again: archived events are checked in the files
        code, out = run_cli(pipe, "archive", "run")
        assert code == 0 and "3 file(s), 150 row(s) deleted" in out, out
        code, rep = verify_json(pipe)
        assert code == 0 and rep["ok"], rep

        # freeze the pipeline, then tamper
        pipe.stop()
        by_org = {
            o: [str(r[0]) for r in ch.query(
                "SELECT event_id FROM sealed_events WHERE org_id = {o:String} "
                "AND event_id IN {ids:Array(UUID)} AND occurred_at > now() - INTERVAL 1 DAY "
                "ORDER BY event_id",
                parameters={"o": o, "ids": list(ids)},
            ).result_rows]
            for o in ("org-a", "org-b", "org-c")
        }  # fmt: skip
        changed, gone = by_org["org-b"][1], by_org["org-c"][0]  # org-a's newest window goes below
        # 1. a changed field of one stored event
        ch.command(
            "ALTER TABLE events UPDATE status = 200, "
            "event_json = replaceOne(event_json, '\"status\":201', '\"status\":200')"
            " WHERE event_id = {e:UUID} SETTINGS mutations_sync = 2",
            parameters={"e": changed},
        )
        # 2. a fake event with a self-consistent content_hash, stored among sealed rows
        t_fake = ch.query(
            "SELECT inserted_at FROM events WHERE event_id = {e:UUID}", parameters={"e": by_org["org-b"][0]}
        ).result_rows[0][0]
        fake = record(1, org="org-b", change="granted admin to mallory")
        insert(s, [fake], t_fake)
        # 3. one event deleted
        ch.command("DELETE FROM events WHERE event_id = {e:UUID}", parameters={"e": gone})
        # 4. the newest window of org-a: its events and its digest file deleted
        newest = ch.query("SELECT max(window_start) FROM sealed_events WHERE org_id = 'org-a'").result_rows[
            0
        ][0]
        newest_ids = [
            str(r[0])
            for r in ch.query(
                "SELECT event_id FROM sealed_events WHERE org_id = 'org-a' "
                "AND window_start = {w:DateTime64(3, 'UTC')} AND occurred_at > now() - INTERVAL 1 DAY",
                parameters={"w": newest},
            ).result_rows
        ]
        assert newest_ids  # (history events of that window are already archived: they stay checkable)
        ch.command("DELETE FROM events WHERE event_id IN {ids:Array(UUID)}", parameters={"ids": newest_ids})
        digest_files = sorted((tmp_path / "pipe" / "archives" / "org-a").glob("digests-*.jsonl"))
        digest_files[-1].unlink()
        # 5. a digest of org-c edited and re-signed with another key
        raw, ws = ch.query(
            "SELECT record, window_start FROM digests WHERE org_id = 'org-c' AND event_count > 1 "
            "ORDER BY window_start LIMIT 1"
        ).result_rows[0]
        rec = orjson.loads(raw)
        mallory = Ed25519PrivateKey.generate()
        forged = {**rec, "event_count": rec["event_count"] - 1, "key_id": key_id(mallory.public_key())}
        forged["signature"] = base64.b64encode(mallory.sign(signing_bytes(forged))).decode()
        ch.command(
            "ALTER TABLE digests UPDATE record = {r:String} WHERE org_id = 'org-c' "
            "AND window_start = {w:DateTime64(3, 'UTC')} SETTINGS mutations_sync = 2",
            parameters={"r": record_bytes(forged).decode(), "w": ws},
        )
        # 6. an archived day file edited
        day_file = next((tmp_path / "pipe" / "archives" / "org-b").glob("events-*.jsonl"))
        lines = day_file.read_bytes().split(b"\n")
        edited = orjson.loads(lines[2])["event_id"]
        lines[2] = lines[2].replace(b'"status":201', b'"status":204')
        day_file.write_bytes(b"\n".join(lines))

        code, rep = verify_json(pipe)
        assert code == 1 and not rep["ok"]
        f = rep["findings"]

        def ids_of(kind: str, org: str | None = None) -> set[str]:
            return {x.get("event_id") for x in f if x["kind"] == kind and (org is None or x["org_id"] == org)}

        assert ids_of("altered_event", "org-a") == set(), rep["counts"]
        assert ids_of("altered_event", "org-b") == {changed, edited}, rep["counts"]
        assert any(x["source"].startswith("archive:") for x in f if x.get("event_id") == edited)
        assert ids_of("inserted_event") == {orjson.loads(fake)["event_id"]}
        assert ids_of("deleted_event", "org-c") == {gone}
        assert ids_of("deleted_event", "org-a") == set(newest_ids)
        newest_missing = [x for x in f if x["kind"] == "missing_newest_digests" and x["org_id"] == "org-a"]
        assert [x["source"] for x in newest_missing] == ["files"]
        forged_f = [x for x in f if x["kind"] == "forged_signature"]
        assert (
            len(forged_f) == 1 and forged_f[0]["org_id"] == "org-c" and forged_f[0]["source"] == "clickhouse"
        )
        assert forged_f[0]["window_start"] == rec["window_start"] and "unknown key" in forged_f[0]["detail"]
        # the genuine digest (still on the topic and in the files) is gone from ClickHouse: "missing", or
        # "missing newest" when it was org-c's newest there
        missing = {
            (x["org_id"], x["source"], x["window_start"])
            for x in f
            if x["kind"] in ("missing_digest", "missing_newest_digests")
        }
        assert ("org-c", "clickhouse", rec["window_start"]) in missing, rep["counts"]
        allowed = {"altered_event", "inserted_event", "deleted_event", "missing_newest_digests",
                   "forged_signature", "missing_digest"}  # fmt: skip
        assert {x["kind"] for x in f} <= allowed, rep["counts"]
        summary = run_cli(pipe, "verify")[1].strip().splitlines()[-1]
        assert summary.startswith("integrity FAILED:") and "1 inserted event" in summary
    finally:
        pipe.down()
