"""``auditpipe demo``: the whole pipeline on local defaults, driven by a simulated platform.

1. the stack (Kafka + ClickHouse) is up and migrated; every service runs under the supervisor with demo
   tokens, trusted proxies and a SIEM destination (a local Splunk-HEC-compatible receiver);
2. the simulated platform reports its API calls through all three producer paths: a week of history over
   HTTP to the ingest, its API tokens' work with the Python client straight to Kafka, and live calls to
   its own API captured by the ASGI middleware — every call arriving through a proxy chain with
   X-Forwarded-For;
3. it prints events produced / enriched / stored / forwarded, the viewer and API addresses with the demo
   tokens, and three analyst questions answered by the query API; then it keeps the pipeline running
   (with a trickle of live calls) until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from auditpipe import AuditClient
from schemas.topics import EVENTS
from services.common.clickhouse import make_client
from services.common.kafka import topic_end_offsets
from services.common.settings import Settings, get_settings
from services.demo import scenario
from services.demo.platform import platform_app
from services.demo.siem_receiver import make_app as make_receiver
from services.supervisor.local import LocalPipeline, Ports

HEC_TOKEN_ENV = "AUDITPIPE_DEMO_HEC_TOKEN"


def ports_from(s: Settings, siem_port: int = 8088) -> Ports:
    return Ports(
        kafka=s.kafka_port,
        kafka_controller=s.stack.kafka_controller_port,
        clickhouse=s.clickhouse_port,
        ingest=s.ingest.port,
        api=s.query_api.port,
        sink=s.sink.port,
        forwarder=s.forwarder.port,
        enricher=s.enricher.web_port,
        siem=siem_port,
        seal=s.integrity.port,
    )


class ThreadedServer:
    """A uvicorn server in a daemon thread (the demo's SIEM receiver and platform app)."""

    def __init__(self, app: Any, port: int) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
        )
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.server.started:
            raise RuntimeError("demo server did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _sum_end_offsets(settings: Settings, topic: str) -> int:
    return sum(asyncio.run(topic_end_offsets(settings, topic)).values())


class Demo:
    def __init__(self, settings: Settings, live_every_s: float = 5.0, siem_port: int = 8088) -> None:
        self.s = settings
        self.run_id = uuid.uuid4().hex[:8]
        self.rng = random.Random(7)
        self.hec_token = os.environ.get(HEC_TOKEN_ENV) or uuid.uuid4().hex
        self.ports = ports_from(settings, siem_port)
        self.live_every_s = live_every_s
        forwarder = (
            "[[destinations]]\n"
            'name = "local-siem"\n'
            'type = "splunk_hec"\n'
            f'url = "http://127.0.0.1:{self.ports.siem}"\n'
            f'token_env = "{HEC_TOKEN_ENV}"\n'
            'sourcetype = "auditpipe:event"\n'
        )
        state = Path(settings.stack.state_dir).resolve()
        self.pipeline = LocalPipeline(
            state_dir=state / "demo",
            ports=self.ports,
            forwarder_config=forwarder,
            extra_env={
                HEC_TOKEN_ENV: self.hec_token,
                # the tokens file `auditpipe token create` writes with the same settings (walkthrough)
                "AUDITPIPE_TOKENS_FILE": str(Path(settings.tokens_file).expanduser().resolve()),
                "AUDITPIPE_STACK__STATE_DIR": str(state),
                "AUDITPIPE_STACK__KAFKA_HEAP": settings.stack.kafka_heap,
            },
        )
        self.produced = 0
        self.servers: list[ThreadedServer] = []

    # --------------------------------------------------------------- steps
    def start(self) -> None:
        print("bringing up Kafka + ClickHouse and migrating ...", flush=True)
        self.pipeline.up()
        self.events_before = _sum_end_offsets(self.pipeline.settings(), EVENTS)
        self.t0 = scenario.now_utc()
        self.servers.append(ThreadedServer(make_receiver(self.hec_token), self.ports.siem).start())
        print(
            "starting ingest, enricher, sink, forwarder and query API under `auditpipe run` ...", flush=True
        )
        self.pipeline.start(wait_s=180)
        ingest = f"http://127.0.0.1:{self.ports.ingest}"
        self.platform_port = self.ports.siem + 2
        self.servers.append(
            ThreadedServer(platform_app(ingest, self.pipeline.ingest_token), self.platform_port).start()
        )

    def produce(self) -> None:
        now = scenario.now_utc()
        ingest = f"http://127.0.0.1:{self.ports.ingest}"
        # 1) HTTP: a week of history, in batches, straight to the ingest.
        hist = scenario.history(now, self.rng, self.run_id)
        with httpx.Client(timeout=30) as h:
            for i in range(0, len(hist), 100):
                batch = hist[i : i + 100]
                r = h.post(
                    f"{ingest}/v1/events/batch",
                    json=batch,
                    headers={"Authorization": f"Bearer {self.pipeline.ingest_token}"},
                )
                if r.status_code != 202:
                    raise RuntimeError(f"ingest answered {r.status_code}: {r.text[:300]}")
                self.produced += len(batch)
        print(f"  HTTP ingest:        {len(hist):>5} events (a week of history)", flush=True)
        # 2) Python client, Kafka mode: today's work of the API tokens.
        tok = scenario.token_activity(now, self.rng, self.run_id)
        with AuditClient(
            "kafka", bootstrap_servers=self.s.kafka_bootstrap, producer="platform-scheduler"
        ) as c:
            for ev in tok:
                c.emit(ev)
        self.produced += len(tok)
        print(f"  client (Kafka):     {len(tok):>5} events (API tokens today)", flush=True)
        # 3) Middleware: live calls to the platform's API through the proxy chain (a 403 and a 409 on
        #    purpose among them).
        statuses = self.live(30, failing=True)
        ok = sum(1 for s in statuses if s < 400)
        refused = ", ".join(f"{s}" for s in sorted(s for s in statuses if s >= 400))
        print(
            f"  ASGI middleware:    {len(statuses):>5} events (live calls through the proxy chain: "
            f"{ok} succeeded, refused on purpose: {refused or 'none'})",
            flush=True,
        )

    def live(self, n: int, failing: bool = False) -> list[int]:
        """Make live calls to the platform; their HTTP statuses."""
        calls = scenario.live_calls(self.rng, n, failing=failing)
        statuses = []
        with httpx.Client(base_url=f"http://127.0.0.1:{self.platform_port}", timeout=10) as h:
            for c in calls:
                r = h.request(c["method"], c["path"], json=c["json"], headers=c["headers"])
                statuses.append(r.status_code)
        self.produced += len(calls)
        return statuses

    def api(self, path: str, **params: Any) -> dict[str, Any]:
        r = httpx.get(
            f"http://127.0.0.1:{self.ports.api}{path}",
            params=params,
            timeout=30,
            headers={"Authorization": f"Bearer {self.pipeline.viewer_token}"},
        )
        r.raise_for_status()
        return r.json()

    def counts(self) -> dict[str, int]:
        s = self.pipeline.settings()
        enriched = _sum_end_offsets(s, EVENTS) - self.events_before
        ch = make_client(s, database=s.clickhouse_database)
        stored = ch.query(
            "SELECT count() FROM events FINAL WHERE enriched_at >= {t0:DateTime64(3)}",
            parameters={"t0": self.t0.replace(tzinfo=None)},
        ).result_rows[0][0]
        stats = httpx.get(
            f"http://127.0.0.1:{self.ports.siem}/stats",
            timeout=5,
            headers={"Authorization": f"Splunk {self.hec_token}"},
        ).json()
        return {
            "produced": self.produced,
            "enriched": enriched,
            "stored": int(stored),
            "forwarded": int(stats["distinct_event_ids"]),
        }

    def wait_until_settled(self, timeout_s: float = 180.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout_s
        c = self.counts()
        while time.monotonic() < deadline:
            c = self.counts()
            if c["stored"] >= c["produced"] and c["forwarded"] >= c["produced"]:
                break
            time.sleep(1.0)
        return c

    def questions(self) -> list[tuple[str, str]]:
        now = scenario.now_utc()
        out = []
        week = (now - timedelta(days=7)).isoformat()
        r = self.api("/api/events", action="environment:delete", target_id="env-staging", since=week)
        ans = (
            "; ".join(
                f"{e.get('actor_name') or e.get('actor_id')} on {str(e.get('occurred_at'))[:16]} UTC "
                f"from {e.get('client_ip') or '?'} via {e.get('source')}"
                for e in r["events"]
            )
            or "nobody"
        )
        out.append(("Who deleted environment env-staging last week?", ans))

        today = now.replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
        f = self.api("/api/events/facets", actor="terraform-ci", since=today)
        actions = ", ".join(f"{x['value']} ×{x['count']}" for x in f["facets"].get("action", []))
        out.append(("Everything token terraform-ci did today?", f"{f['total']} events: {actions or 'none'}"))

        r = self.api("/api/events", action="variable:update", project="proj-api", limit=100)
        seen: dict[str, str] = {}
        for e in r["events"]:  # newest first: the latest change of each variable
            name = e.get("target_name") or e.get("target_id")
            if name in seen:
                continue
            detail = self.api(f"/api/events/{e['event_id']}")
            paths = detail.get("sensitive_paths") or detail.get("event", {}).get("sensitive_paths") or []
            if paths:
                when = str(e.get("occurred_at"))[:16]
                seen[name] = f"{name} by {e.get('actor_name')} at {when} ({len(paths)} values hidden)"
        out.append(("Which secrets changed in project proj-api?", "; ".join(seen.values()) or "none"))
        return out

    def summary(self, counts: dict[str, int]) -> str:
        p = self.ports
        lines = [
            "",
            "auditpipe demo — the pipeline is running",
            f"  events produced:  {counts['produced']}",
            f"  events enriched:  {counts['enriched']}   (audit.events.v1)",
            f"  events stored:    {counts['stored']}   (ClickHouse audit.events, de-duplicated)",
            f"  events forwarded: {counts['forwarded']}   (local Splunk HEC receiver, distinct event ids)",
            "",
            f"  web viewer:  http://127.0.0.1:{p.api}/   (token: {self.pipeline.viewer_token})",
            f"  manager token (archives, retention): {self.pipeline.manager_token}",
            f"  query API:   http://127.0.0.1:{p.api}/api/events   (OpenAPI: /docs)",
            f"  ingest:      http://127.0.0.1:{p.ingest}/v1/events  (token: {self.pipeline.ingest_token})",
            f"  SIEM (HEC):  http://127.0.0.1:{p.siem}/stats",
            "",
            "  from a terminal (README, 'The first ten minutes'):",
            f"    export AUDITPIPE_CLI__API_URL=http://127.0.0.1:{p.api}",
            f"    export AUDITPIPE_CLI__TOKEN={self.pipeline.viewer_token}",
            "    auditpipe events search --since 7d --action environment:delete",
            "    auditpipe token create query --principal you --role EventView --org org-acme",
            "",
        ]
        for q, a in self.questions():
            lines += [f"  Q: {q}", f"  A: {a}", ""]
        return "\n".join(lines)

    def stop(self) -> None:
        for srv in reversed(self.servers):
            with contextlib.suppress(Exception):
                srv.stop()
        self.pipeline.stop()


def run(seconds: float | None = None, siem_port: int = 8088) -> int:
    """Run the demo; ``seconds`` None = until Ctrl-C / SIGTERM."""
    demo = Demo(get_settings(), siem_port=siem_port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        demo.start()
        print("the simulated platform is producing events ...", flush=True)
        demo.produce()
        counts = demo.wait_until_settled()
        print(demo.summary(counts), flush=True)
        print("Ctrl-C stops the services (the stack stays up: `auditpipe stack down` stops it).", flush=True)
        deadline = None if seconds is None else time.monotonic() + seconds
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            stop.wait(demo.live_every_s)
            if not stop.is_set():
                demo.live(3)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        print("stopping services ...", flush=True)
        demo.stop()
