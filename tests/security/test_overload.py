"""Overload: what the HTTP services answer when asked for far more than they can do.

1. The ingest inside the real pipeline (ingest -> Kafka -> enricher -> Kafka -> sink -> ClickHouse, run by
   ``LocalPipeline`` as ``auditpipe run``): first its sustained rate is measured (closed loop), then a burst
   of ten times that rate is sent open loop. Every answer is 202, 429 or 503 with ``Retry-After`` (no other
   5xx, no client error, nothing slower than the documented request deadline), the process's memory
   stays bounded (RSS printed), and every event answered 202 (or listed as accepted in a 503) is then in
   ClickHouse.
2. The query API under 50 concurrent exports (25 principals x 2): the ones over the limits get 429 with
   Retry-After, the others complete with every row, memory stays bounded, and searches still answer.

Private ports 20220-20229 and private topics, consumer groups and database on the shared stack; run
under ``flock /tmp/auditpipe-private-ports.lock``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from schemas.topics import DEADLETTER, EVENTS, ORG_SWITCH, RAW, spec_as
from services.common.clickhouse import make_client
from services.common.kafka import ensure_topics
from services.common.migrations import migrate
from services.common.settings import Settings
from services.supervisor.local import LocalPipeline, Ports
from tests.conftest import run_sync
from tests.security.servers import query_env, rss_mb, serve

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.e2e]

EXAMPLE = (
    Path(__file__).resolve().parents[2]
    / "schemas"
    / "examples"
    / "raw"
    / "deployment_create_user_console.json"
)
# events per request: the size producers are told to use; fewer, larger requests keep the load
# generator (two cores shared with the pipeline) ahead of a 10x burst
BATCH = 500
REQUEST_DEADLINE_S = 10.0  # AUDITPIPE_INGEST__REQUEST_DEADLINE_S of the ingest under test


class RssSampler(threading.Thread):
    """Samples a process's RSS every 50 ms until stopped; ``peak`` and ``first`` in MB."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.first = rss_mb(pid)
        self.peak = self.first
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.wait(0.05):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(2)


@pytest.fixture(scope="module")
def pipeline(kafka_settings: Settings, clickhouse_settings: Settings, tmp_path_factory) -> Iterator[tuple]:  # noqa: ANN001
    sfx = uuid.uuid4().hex[:8]
    db = f"test_overload_{sfx}"
    ch = make_client(clickhouse_settings)
    migrate(ch, db)
    t = {name: f"test.overload.{name}.{sfx}" for name in (RAW, EVENTS, DEADLETTER, ORG_SWITCH)}
    state = f"test.overload.state.{sfx}"
    run_sync(ensure_topics(kafka_settings, [spec_as(n, t[n]) for n in t]))
    ch_port = clickhouse_settings.clickhouse_port
    ports = Ports(
        kafka=kafka_settings.kafka_port, kafka_controller=20229, clickhouse=ch_port,
        ingest=20220, api=20221, sink=20222, forwarder=20223, enricher=20224, siem=20225,
    )  # fmt: skip
    p = LocalPipeline(
        tmp_path_factory.mktemp("overload"),
        ports=ports,
        services=("ingest", "enricher", "sink"),
        extra_env={
            "AUDITPIPE_CLICKHOUSE_DATABASE": db,
            "AUDITPIPE_INGEST__TOPIC": t[RAW],
            "AUDITPIPE_INGEST__PUBLISH_DEADLINE_S": "5",
            "AUDITPIPE_INGEST__REQUEST_DEADLINE_S": str(REQUEST_DEADLINE_S),
            "AUDITPIPE_ENRICHER__RAW_TOPIC": t[RAW],
            "AUDITPIPE_ENRICHER__EVENTS_TOPIC": t[EVENTS],
            "AUDITPIPE_ENRICHER__DEADLETTER_TOPIC": t[DEADLETTER],
            "AUDITPIPE_ENRICHER__SWITCH_TOPIC": t[ORG_SWITCH],
            "AUDITPIPE_ENRICHER__STATE_TOPIC": state,
            "AUDITPIPE_ENRICHER__CONSUMER_GROUP": f"test-overload-enricher-{sfx}",
            "AUDITPIPE_SINK__TOPIC": t[EVENTS],
            "AUDITPIPE_SINK__DEADLETTER_TOPIC": t[DEADLETTER],
            "AUDITPIPE_SINK__CONSUMER_GROUP": f"test-overload-sink-{sfx}",
            "AUDITPIPE_SINK__ARCHIVE_ENABLED": "false",
            "AUDITPIPE_LOG_LEVEL": "WARNING",
        },
    )
    try:
        p.start(wait_s=180)
        yield p, ch, db
    finally:
        p.stop()
        ch.command(f"DROP DATABASE IF EXISTS {db} SYNC")


def _body() -> bytes:
    ev = json.loads(EXAMPLE.read_text())
    ev.pop("event_id", None)  # the ingest assigns one per event: one body for every request
    return orjson.dumps([ev] * BATCH)


def _request(port: int, token: str, body: bytes) -> bytes:
    """One pre-built HTTP/1.1 request: the load generator only writes bytes, so on this shared 2-core
    machine it can offer ten times what the ingest sustains (an HTTP client library could not)."""
    head = (
        f"POST /v1/events/batch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _post(port: int, request: bytes, timeout_s: float) -> tuple:
    """(status or None, seconds, headers, body or error) of one request on its own connection."""
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(request)
                await writer.drain()
                status = int((await reader.readline()).split()[1])
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    k, _, v = line.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
            finally:
                writer.close()
        return status, time.monotonic() - t0, headers, body
    except (OSError, TimeoutError, ValueError, IndexError, asyncio.IncompleteReadError) as e:
        return None, time.monotonic() - t0, {}, f"{type(e).__name__}: {e}"


async def _closed_loop(port: int, request: bytes, workers: int, seconds: float) -> tuple[int, set]:
    """Requests answered 202 by ``workers`` clients sending back to back for ``seconds``."""
    ok = 0
    accepted: set[str] = set()
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal ok
        while time.monotonic() < end:
            status, _t, _h, body = await _post(port, request, 60)
            if status == 202:
                ok += 1
                accepted.update(orjson.loads(body)["accepted"])
            else:
                await asyncio.sleep(0.2)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return ok, accepted


async def _burst(port: int, request: bytes, rate: float, seconds: float) -> tuple[list[tuple], float]:
    """Open loop: a request every 1/rate s for ``seconds``, whatever the answers; the results and how
    long issuing them took (to show the generator kept up)."""
    tasks = []
    t0 = time.monotonic()
    for i in range(int(rate * seconds)):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_post(port, request, REQUEST_DEADLINE_S + 30)))
    issued = time.monotonic() - t0
    return list(await asyncio.gather(*tasks)), issued


def test_ingest_burst_of_ten_times_its_rate(pipeline: tuple, capsys: pytest.CaptureFixture) -> None:
    p, ch, db = pipeline
    request = _request(p.ports.ingest, p.ingest_token, _body())
    pid = p.child_pids()["ingest"]
    assert pid

    ok, accepted = asyncio.run(_closed_loop(p.ports.ingest, request, workers=8, seconds=6))
    rate = ok / 6
    assert rate > 0
    sampler = RssSampler(pid)
    sampler.start()
    results, issued = asyncio.run(_burst(p.ports.ingest, request, rate=10 * rate, seconds=5))
    sampler.stop()

    statuses = Counter(r[0] for r in results)
    lat = sorted(r[1] for r in results)
    # The generator shares two cores with the overloaded pipeline and may fall a little behind its
    # schedule; what matters is that the burst it did send was far beyond what the ingest sustains.
    achieved = len(results) / issued / rate
    for status, _t, h, content in results:
        if status == 202:
            accepted.update(orjson.loads(content)["accepted"])
        elif status == 503 and b"not_accepted" in content:  # the ingest's own: some ids may be acked
            accepted.update(orjson.loads(content)["accepted"])
    with capsys.disabled():
        print(
            f"\ningest sustained {rate:.1f} req/s ({rate * BATCH:.0f} events/s); "
            f"burst {10 * rate:.0f} req/s for 5 s (issued in {issued:.1f} s: {achieved:.1f}x) "
            f"= {len(results)} requests: {dict(statuses)}; latency p50 {lat[len(lat) // 2]:.2f} s, "
            f"max {lat[-1]:.2f} s; ingest RSS {sampler.first:.0f} MB -> peak {sampler.peak:.0f} MB"
        )
    assert achieved >= 8, f"the load generator did not keep up: the burst was {achieved:.1f}x, not ~10x"
    assert set(statuses) <= {202, 429, 503}, [r for r in results if r[0] not in (202, 429, 503)][:3]
    assert statuses[429] + statuses[503] > 0, "a burst of 10x its rate was never refused"
    for status, _t, h, content in results:
        if status in (429, 503):
            assert int(h["retry-after"]) >= 1 and orjson.loads(content)["error"], content
    # the documented deadline: request_deadline_s from the moment the app has the request
    assert lat[-1] <= REQUEST_DEADLINE_S + 2, f"an answer took {lat[-1]:.1f} s"
    assert sampler.peak < 450, f"ingest RSS peaked at {sampler.peak:.0f} MB"

    # every event answered 202 is stored
    deadline = time.monotonic() + 240
    stored: set[str] = set()
    while time.monotonic() < deadline:
        stored = {str(r[0]) for r in ch.query(f"SELECT DISTINCT event_id FROM {db}.events").result_rows}
        if accepted <= stored:
            break
        time.sleep(2)
    missing = accepted - stored
    with capsys.disabled():
        print(f"accepted {len(accepted)} events, stored {len(stored & accepted)}")
    assert not missing, f"{len(missing)} accepted events not in ClickHouse"


# ---------------------------------------------------------------------------------- query API exports
def test_query_api_under_50_concurrent_exports(
    kafka_settings: Settings, clickhouse_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from services.common.settings import QueryApiSettings
    from services.sink.rows import COLUMNS, row_from_event
    from tests.query_api.conftest import make_event

    n_rows = 20_000
    db = f"test_exports_{uuid.uuid4().hex[:8]}"
    ch = make_client(clickhouse_settings)
    migrate(ch, db)
    ch.insert(f"{db}.events", [row_from_event(make_event(i)) for i in range(n_rows)], column_names=COLUMNS)
    tokens = {f"analyst-{i}": (f"analyst-token-{i}-0123456789", {"roles": ["EventView"]}) for i in range(25)}
    topic = f"test.exports.audit.{uuid.uuid4().hex[:8]}"
    env = query_env(
        kafka_settings.kafka_bootstrap, clickhouse_settings.clickhouse_url, db, topic, tmp_path, tokens
    )
    limits = QueryApiSettings()
    try:
        with serve("api", 20226, env) as api:
            sampler = RssSampler(api.pid)
            sampler.start()

            async def storm() -> tuple[list, list]:
                async with httpx.AsyncClient(
                    base_url=api.url, timeout=120, limits=httpx.Limits(max_connections=100)
                ) as c:

                    async def export(token: str) -> tuple:
                        h = {"Authorization": f"Bearer {token}"}
                        async with c.stream(
                            "GET", "/api/events/export", params={"format": "jsonl"}, headers=h
                        ) as r:
                            if r.status_code != 200:
                                return r.status_code, r.headers, await r.aread()
                            lines = 0
                            async for chunk in r.aiter_bytes():
                                lines += chunk.count(b"\n")
                            return 200, r.headers, lines

                    async def searches() -> list[int]:
                        h = {"Authorization": f"Bearer {tokens['analyst-0'][0]}"}
                        out = []
                        for _ in range(5):
                            out.append(
                                (await c.get("/api/events", params={"limit": 10}, headers=h)).status_code
                            )
                            await asyncio.sleep(0.2)
                        return out

                    jobs = [export(tok) for tok, _ in tokens.values() for _ in range(2)]
                    *done, looked = await asyncio.gather(*jobs, searches())
                    return done, looked

            results, looked = asyncio.run(storm())
            sampler.stop()
    finally:
        ch.command(f"DROP DATABASE IF EXISTS {db} SYNC")
    statuses = Counter(r[0] for r in results)
    with capsys.disabled():
        print(
            f"\nquery API, 50 concurrent exports of {n_rows} rows: {dict(statuses)}; "
            f"searches meanwhile {looked}; API RSS {sampler.first:.0f} MB -> peak {sampler.peak:.0f} MB "
            f"(limits: {limits.export_max_per_principal} per principal, {limits.export_max_concurrent} all)"
        )
    assert len(results) == 50 and set(statuses) <= {200, 429}
    assert statuses[429] > 0 and statuses[200] >= limits.export_max_concurrent
    for status, h, got in results:
        if status == 200:
            assert got == n_rows, "an admitted export must complete with every row"
        else:
            assert int(h["retry-after"]) >= 1 and orjson.loads(got)["error"] == "too_many_exports"
    assert set(looked) == {200}
    assert sampler.peak < sampler.first + 250, f"RSS grew {sampler.peak - sampler.first:.0f} MB"
