"""Scale-out on a real Kafka cluster: 100k events through three brokers and two instances of every service
while, in turn, (a) the leader broker of the busiest partition is killed with ``kill -9`` and restarted
30 s later, (b) all three brokers are restarted one by one (rolling), (c) one instance of each service is
killed with ``kill -9``. At the end every accepted event is in ClickHouse exactly once as the query API
shows it and at the SIEM receiver at least once, no partition is under-replicated, and recovery times are
printed (and written to ``test-artifacts/e2e-cluster.json``).

The producer round-robins its batches over the two ingest instances (as a client with a list of URLs or
a load balancer would) and re-sends a batch (same ids) until one answers 202. That answer means
``acks=all`` on topics with ``min.insync.replicas=2``: checked at the start (topic configs, the ingest's
producer settings) and shown at the end: with two of the three brokers stopped, the ingest answers 503,
never 202, and the events it refused are not in the record.

Private ports 20500-20549 and its own state folder; never the shared local stack. ~8-10 min on 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from auditpipe.wire import DURABLE_PRODUCER_CONFIG
from services.common.clickhouse import make_client
from services.common.kafka import make_consumer, topic_end_offsets
from services.supervisor.local import LocalPipeline, Ports
from tests.e2e.test_faults import Receiver, wait_for

N_EVENTS = int(os.environ.get("AUDITPIPE_E2E_CLUSTER_EVENTS", "100000"))
RATE = float(os.environ.get("AUDITPIPE_E2E_CLUSTER_RATE", "450"))
BATCH = 500
PORTS = Ports.cluster(20500)
STRIDE = 20
INSTANCES = {"ingest": 2, "enricher": 2, "sink": 2, "forwarder": 2, "api": 2}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _event(i: int, now: str, org: str) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": now,
        "org_id": org,
        "actor": {"type": "user", "id": f"u-{i % 50}", "name": "Cluster"},
        "action": "deployment:create",
        "target": {"id": f"dep-{i}", "name": f"deployment {i}"},
        "status": 201,
        "request": {"method": "POST", "path": "/api/deployments", "payload": {"n": i}, "peer_ip": "10.0.0.7"},
    }


class Producer(threading.Thread):
    """Sends N events in batches, alternating between the ingest URLs; a batch that was not answered 202
    is re-sent (same ids) to the next URL until one is."""

    def __init__(self, urls: list[str], token: str, n: int, rate_per_s: float) -> None:
        super().__init__(daemon=True)
        self.urls, self.token, self.n, self.rate = urls, token, n, rate_per_s
        self.accepted: set[str] = set()
        self.errors = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        now = datetime.now(UTC).isoformat()
        k = 0
        with httpx.Client(timeout=20) as h:
            for start in range(0, self.n, BATCH):
                # one big org and nine small ones: the big one must spread over every partition
                batch = [
                    _event(i, now, "org-big" if i % 2 else f"org-{i % 9}")
                    for i in range(start, start + BATCH)
                ]
                body = orjson.dumps(batch)
                while not self.stop_flag.is_set():
                    url = self.urls[k % len(self.urls)]
                    k += 1
                    try:
                        r = h.post(
                            url,
                            content=body,
                            headers={
                                "Authorization": f"Bearer {self.token}",
                                "Content-Type": "application/json",
                            },
                        )
                        if r.status_code == 202:
                            self.accepted.update(e["event_id"] for e in batch)
                            break
                        self.errors += 1
                    except httpx.HTTPError:
                        self.errors += 1
                    time.sleep(0.3)
                ahead = (start + BATCH) / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)


async def _describe(bootstrap: str, topics: list[str]) -> tuple[list[dict], dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    await admin.start()
    try:
        desc = await admin.describe_topics(topics)
        cfg = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topics[0])])
    finally:
        await admin.close()
    entries = cfg[0].to_object()["resources"][0]["config_entries"]
    return desc, {e["config_names"]: e["config_value"] for e in entries}


async def _partitions_holding(settings, topic: str, needle: bytes) -> set[int]:  # noqa: ANN001
    """Partitions of ``topic`` with a record containing ``needle`` (reads the whole topic, no group)."""
    ends = await topic_end_offsets(settings, topic)
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    found: set[int] = set()
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        todo = {p for p, end in ends.items() if end > 0}
        while todo:
            batches = await consumer.getmany(timeout_ms=2000)
            if not batches:
                break
            for tp, records in batches.items():
                for r in records:
                    if needle in (r.value or b""):
                        found.add(tp.partition)
                    if r.offset + 1 >= ends[tp.partition]:
                        todo.discard(tp.partition)
    finally:
        await consumer.stop()
    return found


@pytest.mark.e2e
@pytest.mark.kafka
@pytest.mark.clickhouse
def test_cluster_scale_out_loses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    secret_env = "AUDITPIPE_E2E_WEBHOOK_SECRET"
    receiver = Receiver(PORTS.siem)
    forwarder_cfg = (
        "[[destinations]]\n"
        'name = "cluster-webhook"\n'
        'type = "webhook"\n'
        f'url = "http://127.0.0.1:{PORTS.siem}/hook"\n'
        f'secret_env = "{secret_env}"\n'
        "[destinations.batch]\nmax_events = 1000\n"
    )
    pipe = LocalPipeline(
        state_dir=tmp_path / "pipe",
        ports=PORTS,
        forwarder_config=forwarder_cfg,
        kafka_heap="384m",
        kafka_nodes=3,
        instances=INSTANCES,
        port_stride=STRIDE,
        extra_env={secret_env: "e2e-secret-0123456789abcdef", "AUDITPIPE_LOG_LEVEL": "WARNING"},
    )
    s = pipe.settings()
    bootstrap = s.kafka_bootstrap
    report: dict[str, object] = {}
    t_start = time.monotonic()
    try:
        pipe.up()
        stack = pipe.stack()
        receiver.start()
        pipe.start(wait_s=300)
        report["start (stack, migrations, 10 processes)"] = round(time.monotonic() - t_start, 1)
        ch = make_client(s, database=s.clickhouse_database)

        # Only min.insync.replicas brokers' acknowledgement counts as accepted.
        desc, cfg = asyncio.run(_describe(bootstrap, ["audit.raw.v1", "audit.events.v1"]))
        assert cfg["min.insync.replicas"] == "2"
        assert all(len(p["replicas"]) == 3 for t in desc for p in t["partitions"])
        assert DURABLE_PRODUCER_CONFIG["acks"] == "all" and DURABLE_PRODUCER_CONFIG["enable_idempotence"]

        def stored() -> int:
            try:
                return int(ch.query("SELECT uniqExact(event_id) FROM events").result_rows[0][0])
            except Exception:  # noqa: BLE001
                return -1

        def urp() -> int | None:
            return stack.status()[0].under_replicated

        ingest_urls = [f"http://127.0.0.1:{PORTS.ingest + i * STRIDE}/v1/events/batch" for i in range(2)]
        producer = Producer(ingest_urls, pipe.ingest_token, N_EVENTS, RATE)
        producer.start()
        wait_for(lambda: stored() > 0, 180)

        # (a) kill -9 the leader of the busiest partition; restart it 30 s later.
        ends = asyncio.run(topic_end_offsets(s, "audit.raw.v1"))
        busiest = max(ends, key=lambda p: ends[p])
        desc, _ = asyncio.run(_describe(bootstrap, ["audit.raw.v1"]))
        leader = next(p["leader"] for p in desc[0]["partitions"] if p["partition"] == busiest)
        before = stored()
        stack.kill_node(leader, hard=True)
        t0 = time.monotonic()
        wait_for(lambda: stored() > before, 120, 0.5)
        report[f"kill -9 broker {leader} (leader of raw partition {busiest}): pipeline moving"] = round(
            time.monotonic() - t0, 1
        )
        time.sleep(max(0.0, 30 - (time.monotonic() - t0)))
        stack.node_up(leader)
        t1 = time.monotonic()
        wait_for(lambda: urp() == 0, 180, 1.0)
        report[f"broker {leader} back: in sync again"] = round(time.monotonic() - t1, 1)

        # (b) rolling restart: each broker stopped (SIGTERM) and started, the next one once all is in sync.
        t0 = time.monotonic()
        for node in (1, 2, 3):
            stack.kill_node(node, hard=False)
            stack.node_up(node)
            wait_for(lambda: urp() == 0 and stack.node_pid(node) is not None, 180, 1.0)
        report["rolling restart of 3 brokers"] = round(time.monotonic() - t0, 1)

        # (c) one instance of each service killed with kill -9.
        for svc in ("ingest-2", "enricher-2", "sink", "forwarder-2", "api-2"):
            before = stored()
            pid = pipe.kill9(svc)
            t0 = time.monotonic()
            wait_for(
                lambda svc=svc, pid=pid: pipe.child_pids().get(svc) not in (None, pid) and pipe.healthy(svc),
                120,
                0.2,
            )
            if producer.is_alive():
                wait_for(lambda b=before: stored() > b, 180, 0.2)
            report[f"kill -9 {svc}"] = round(time.monotonic() - t0, 1)

        producer.join(timeout=900)
        assert not producer.is_alive(), "producer did not finish"
        accepted = set(producer.accepted)
        assert len(accepted) == N_EVENTS

        t0 = time.monotonic()
        wait_for(lambda: stored() >= N_EVENTS and receiver.count() >= N_EVENTS, 900, 1.0)
        report["drain after the last event"] = round(time.monotonic() - t0, 1)

        # (d) with two brokers stopped, nothing is acknowledged: the ingest answers 503, never 202.
        for node in (2, 3):
            stack.kill_node(node, hard=True)
        refused = [_event(i, datetime.now(UTC).isoformat(), "org-refused") for i in range(20)]
        r = httpx.post(
            ingest_urls[0],
            content=orjson.dumps(refused),
            headers={"Authorization": f"Bearer {pipe.ingest_token}", "Content-Type": "application/json"},
            timeout=60,
        )
        report["one broker of 3 left: ingest answer"] = r.status_code
        assert r.status_code != 202, "the ingest acknowledged events that only one broker holds"
        for node in (2, 3):
            stack.node_up(node)
        seen_urp: list[int | None] = []
        wait_for(lambda: seen_urp.append(urp()) or seen_urp[-1] == 0, 240, 1.0)
        report["under-replicated partitions at the end"] = seen_urp[-1]

        # Exactly once as the query API shows it.
        seen: list[str] = []
        with httpx.stream(
            "GET",
            f"http://127.0.0.1:{PORTS.api}/api/events/export",
            params={"format": "jsonl", "since": "2000-01-01T00:00:00Z"},
            headers={"Authorization": f"Bearer {pipe.viewer_token}"},
            timeout=600,
        ) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if line:
                    seen.append(orjson.loads(line)["event_id"])
        # A refused request may still have reached the leader's log and be committed once the followers
        # are back (a produce timeout is not a rollback): its producer was told to retry, and a retry is a
        # harmless duplicate. It is never counted as accepted.
        refused_ids = {e["event_id"] for e in refused}
        assert len(seen) == len(set(seen)), f"{len(seen) - len(set(seen))} duplicates in the query API export"
        got = set(seen) - refused_ids
        report["refused events committed after the brokers returned"] = len(set(seen) & refused_ids)
        assert got == accepted, f"missing {len(accepted - got)}, unexpected {len(got - accepted)}"
        assert accepted <= receiver.ids, f"{len(accepted - receiver.ids)} events never reached the SIEM"
        # the big org's envelopes were spread over every partition of the raw topic
        big = asyncio.run(_partitions_holding(s, "audit.raw.v1", b'"org_id":"org-big"'))
        report["raw partitions holding the big org"] = f"{len(big)} of {len(ends)}"
        assert big == set(ends)
        report["siem duplicates (at-least-once)"] = receiver.total - len(receiver.ids)
        report["producer retries"] = producer.errors
        report["total"] = round(time.monotonic() - t_start, 1)
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "e2e-cluster.json").write_text(json.dumps(report, indent=2))
        with capsys.disabled():
            print("\ncluster suite: recovery times (s), counts")
            for k, v in report.items():
                print(f"  {k:<64} {v}")
        receiver.stop()
        pipe.down()
