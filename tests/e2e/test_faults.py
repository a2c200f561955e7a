"""The fault suite: 100k events through the whole pipeline (real processes, real Kafka and ClickHouse)
while, in turn, every service is killed with kill -9, the broker restarts, ClickHouse stops for 30 s and
the SIEM destination is down for 30 s. At the end every accepted event is in ClickHouse exactly once as the
query API shows it, and at the destination at least once; and ``auditpipe verify`` finds the store intact
against the digests the sealer signed throughout (docs/integrity.md). Recovery times are printed (and
written to ``test-artifacts/e2e-recovery.json``).

Runs on its own ports (19900-19910) and state folder, never on the shared local stack.
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
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.common.clickhouse import make_client
from services.common.stack.manager import CH_MARKER, KAFKA_MARKER
from services.common.stack.process import read_pid, stop
from services.demo.run import ThreadedServer
from services.supervisor.local import LocalPipeline, Ports

N_EVENTS = int(os.environ.get("AUDITPIPE_E2E_EVENTS", "100000"))
BATCH = 500
PORTS = Ports.offset(19900)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class Receiver:
    """A webhook SIEM endpoint that remembers every event id it was given."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ids: set[str] = set()
        self.total = 0
        self.lock = threading.Lock()
        self.server: ThreadedServer | None = None

    def app(self) -> Starlette:
        async def hook(req: Request) -> JSONResponse:
            events = orjson.loads(await req.body())
            with self.lock:
                self.total += len(events)
                self.ids.update(e["event_id"] for e in events)
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def start(self) -> None:
        self.server = ThreadedServer(self.app(), self.port).start()

    def stop(self) -> None:
        if self.server:
            self.server.stop()
            self.server = None

    def count(self) -> int:
        with self.lock:
            return len(self.ids)


class Producer(threading.Thread):
    """Sends N events in batches to the ingest, re-sending a batch (same ids) until it is answered 202."""

    def __init__(self, url: str, token: str, n: int, rate_per_s: float) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.n, self.rate = url, token, n, rate_per_s
        self.accepted: set[str] = set()
        self.errors = 0
        self.last_ok = time.monotonic()
        self.stop_flag = threading.Event()

    def batches(self):  # noqa: ANN201
        now = datetime.now(UTC).isoformat()
        for start in range(0, self.n, BATCH):
            out = []
            for i in range(start, min(self.n, start + BATCH)):
                out.append(
                    {
                        "event_id": str(uuid.uuid4()),
                        "occurred_at": now,
                        "org_id": f"org-e2e-{i % 10}",
                        "project_id": f"proj-{i % 7}",
                        "actor": {"type": "user", "id": f"u-{i % 50}", "name": "E2E"},
                        "action": "deployment:create",
                        "target": {"id": f"dep-{i}", "name": f"deployment {i}"},
                        "status": 201,
                        "change": "fault suite",
                        "request": {
                            "method": "POST",
                            "path": "/api/deployments",
                            "payload": {"n": i},
                            "peer_ip": "10.0.0.7",
                            "x_forwarded_for": f"198.51.100.{i % 250}, 10.0.0.7",
                        },
                    }
                )
            yield out

    def run(self) -> None:
        t0 = time.monotonic()
        sent = 0
        with httpx.Client(timeout=15) as h:
            for batch in self.batches():
                while not self.stop_flag.is_set():
                    try:
                        r = h.post(
                            self.url,
                            content=orjson.dumps(batch),
                            headers={
                                "Authorization": f"Bearer {self.token}",
                                "Content-Type": "application/json",
                            },
                        )
                        if r.status_code == 202:
                            self.accepted.update(e["event_id"] for e in batch)
                            self.last_ok = time.monotonic()
                            break
                        self.errors += 1
                    except httpx.HTTPError:
                        self.errors += 1
                    time.sleep(0.5)
                sent += len(batch)
                ahead = sent / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)


def wait_for(pred, timeout_s: float, step: float = 0.5) -> float:  # noqa: ANN001
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    raise TimeoutError(f"condition not met within {timeout_s}s")


@pytest.mark.e2e
@pytest.mark.kafka
@pytest.mark.clickhouse
def test_no_event_lost_or_duplicated_under_faults(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    secret_env = "AUDITPIPE_E2E_WEBHOOK_SECRET"
    receiver = Receiver(PORTS.siem)
    forwarder_cfg = (
        "[[destinations]]\n"
        'name = "e2e-webhook"\n'
        'type = "webhook"\n'
        f'url = "http://127.0.0.1:{PORTS.siem}/hook"\n'
        f'secret_env = "{secret_env}"\n'
        "[destinations.batch]\nmax_events = 1000\n"
    )
    pipe = LocalPipeline(
        state_dir=tmp_path / "pipe",
        ports=PORTS,
        forwarder_config=forwarder_cfg,
        kafka_heap="768m",
        extra_env={
            secret_env: "e2e-secret-0123456789abcdef",
            "AUDITPIPE_LOG_LEVEL": "WARNING",
            # the sealer runs throughout (part of `auditpipe run`), with short windows; its own audit
            # events (`audit_digest:seal`) go to a side topic so the orgs' events stay exactly the
            # producer's, as the export check below requires
            "AUDITPIPE_INTEGRITY__AUDIT_TOPIC": "audit.fault-suite.seal-audit",
            "AUDITPIPE_INTEGRITY__WINDOW_S": "10",
            "AUDITPIPE_INTEGRITY__GRACE_S": "3",
            "AUDITPIPE_INTEGRITY__INTERVAL_S": "2",
        },
    )
    s = pipe.settings()
    recovery: dict[str, float] = {}
    try:
        pipe.up()
        receiver.start()
        pipe.start(wait_s=240)
        ch = make_client(s, database=s.clickhouse_database)

        def stored() -> int:
            return int(ch.query("SELECT uniqExact(event_id) FROM events").result_rows[0][0])

        def stored_safe() -> int:
            try:
                return stored()
            except Exception:  # noqa: BLE001 - ClickHouse may be the thing that is down
                return -1

        producer = Producer(
            f"http://127.0.0.1:{PORTS.ingest}/v1/events/batch",
            pipe.ingest_token,
            N_EVENTS,
            rate_per_s=float(os.environ.get("AUDITPIPE_E2E_RATE", "800")),
        )
        producer.start()
        wait_for(lambda: stored_safe() > 0, 120)

        # (a) every service killed with kill -9 once; recovery = until it answers /healthz again and the
        # pipeline moved on (new rows stored).
        for svc in ("ingest", "enricher", "sink", "forwarder", "api"):
            before = stored_safe()
            pid = pipe.kill9(svc)
            t0 = time.monotonic()
            wait_for(
                lambda svc=svc, pid=pid: pipe.child_pids().get(svc) not in (None, pid) and pipe.healthy(svc),
                120,
                0.2,
            )
            if producer.is_alive():
                wait_for(lambda b=before: stored_safe() > b, 180, 0.2)
            recovery[f"kill -9 {svc}"] = round(time.monotonic() - t0, 2)
            time.sleep(2)

        # (b) the broker restarts (SIGTERM, then up again with its data).
        stack = pipe.stack()
        stop(read_pid(stack.kdir / "pid"), KAFKA_MARKER, timeout_s=60)
        time.sleep(3)
        t0 = time.monotonic()
        stack.kafka_up()
        before = stored_safe()
        wait_for(lambda: stored_safe() > before or stored_safe() >= N_EVENTS, 240, 0.5)
        recovery["kafka broker restart"] = round(time.monotonic() - t0, 2)

        # (c) ClickHouse stopped for 30 s.
        stop(read_pid(stack.cdir / "pid"), CH_MARKER, timeout_s=30)
        time.sleep(30)
        t0 = time.monotonic()
        stack.ch_up()
        wait_for(lambda: stack.ch_version() is not None, 60, 0.2)
        before_ch = stored_safe()
        wait_for(lambda: stored_safe() > before_ch or stored_safe() >= N_EVENTS, 240, 0.5)
        recovery["clickhouse down 30 s"] = round(time.monotonic() - t0, 2)

        # (d) the SIEM destination is down for 30 s.
        receiver.stop()
        time.sleep(30)
        t0 = time.monotonic()
        before_r = receiver.count()
        receiver.start()
        wait_for(lambda: receiver.count() > before_r or receiver.count() >= N_EVENTS, 240, 0.2)
        recovery["siem destination down 30 s"] = round(time.monotonic() - t0, 2)

        producer.join(timeout=900)
        assert not producer.is_alive(), "producer did not finish"
        accepted = producer.accepted
        assert len(accepted) == N_EVENTS

        t_drain = time.monotonic()
        wait_for(lambda: stored_safe() >= N_EVENTS and receiver.count() >= N_EVENTS, 900, 1.0)
        recovery["drain after last event"] = round(time.monotonic() - t_drain, 2)

        # Exactly once as the query API shows it: export everything and count.
        seen: list[str] = []
        with httpx.stream(
            "GET",
            f"http://127.0.0.1:{PORTS.api}/api/events/export",
            params={"format": "jsonl", "since": "2000-01-01T00:00:00Z"},
            headers={"Authorization": f"Bearer {pipe.viewer_token}"},
            timeout=600,
        ) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line:
                    seen.append(orjson.loads(line)["event_id"])
        assert len(seen) == len(set(seen)), f"{len(seen) - len(set(seen))} duplicates in the query API export"
        assert set(seen) == accepted, (
            f"missing {len(accepted - set(seen))}, unexpected {len(set(seen) - accepted)}"
        )
        # At least once at the destination.
        assert accepted <= receiver.ids, f"{len(accepted - receiver.ids)} events never reached the SIEM"
        recovery["siem duplicates (at-least-once)"] = receiver.total - len(receiver.ids)
        recovery["producer retries"] = producer.errors

        # Tamper evidence after all of it: sealed past the last stored row, then verified clean.
        last = ch.query("SELECT max(inserted_at) FROM events").result_rows[0][0]
        t_seal = time.monotonic()
        wait_for(
            lambda: ch.query("SELECT count() > 0 AND max(horizon) > {t:DateTime64(3, 'UTC')} FROM seal_runs",
                             parameters={"t": last}).result_rows[0][0] == 1,
            300,
            1.0,
        )  # fmt: skip
        recovery["sealed past the last event"] = round(time.monotonic() - t_seal, 2)
        from services.integrity.topic import read_digests
        from services.integrity.verify import verify

        rep = verify(s, asyncio.run(read_digests(s)))
        recovery["verify"] = rep.summary()
        assert rep.ok, rep.to_dict()["findings"][:20]
        assert rep.events >= N_EVENTS
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "e2e-recovery.json").write_text(json.dumps(recovery, indent=2))
        with capsys.disabled():  # shown in CI's output even when the test passes
            print("\nfault suite: recovery times (s), counts")
            for k, v in recovery.items():
                print(f"  {k:<34} {v}")
        receiver.stop()
        pipe.down()
