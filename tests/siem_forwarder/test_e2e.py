"""End to end through the real broker and the real ``auditpipe forwarder`` process: enriched events on a
unique topic reach three destinations at once while one of them (Splunk HEC) is down for 20 s. The other
two are not delayed (time-to-deliver measured per event), the downed one catches up, every event reaches
every destination, and SIGTERM ends the process cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import time
from pathlib import Path

import httpx
import pytest
import yaml

from schemas.integrity import verify
from services.common.kafka import make_producer
from tests.siem_forwarder.conftest import wait_until
from tests.siem_forwarder.events import encode, make_event
from tests.siem_forwarder.harness import Harness, destination_block
from tests.siem_forwarder.test_cli import AUDITPIPE

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

HEALTH_PORT = 19820
OUTAGE_S = 20.0


async def test_three_destinations_one_down_for_20s(kafka_settings, events_topic, tmp_path: Path) -> None:
    hs = {k: Harness(k, tmp_path) for k in ("splunk_hec", "datadog", "otlp")}
    for i, h in enumerate(hs.values()):
        h.port = h.receiver.port = 19811 + i
    blocks = []
    for k, h in hs.items():
        b = destination_block(k, f"e2e-{k.replace('_', '-')}-{events_topic[-8:]}", h.port)
        b["retry"] = {"initial_backoff_s": 0.2, "max_backoff_s": 2.0, "request_timeout_s": 3.0}
        blocks.append(b)
    path = tmp_path / "forwarder.yaml"
    path.write_text(yaml.safe_dump({"topic": events_topic, "destinations": blocks}))
    await hs["datadog"].start()
    await hs["otlp"].start()  # Splunk HEC starts down
    env = {**os.environ, "AUDITPIPE_FORWARDER__PORT": str(HEALTH_PORT), "AUDITPIPE_LOG_LEVEL": "WARNING"}
    proc = await asyncio.create_subprocess_exec(
        AUDITPIPE,
        "forwarder",
        "--config",
        str(path),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=open(tmp_path / "forwarder.log", "wb"),  # noqa: ASYNC230
    )
    producer = make_producer(kafka_settings)
    await producer.start()
    produced: dict[str, float] = {}
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(200):
                try:
                    r = await http.get(f"http://127.0.0.1:{HEALTH_PORT}/readyz")
                    if r.status_code == 200 and len(r.json()["destinations"]) == 3:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError((tmp_path / "forwarder.log").read_text()[-3000:])
            t0 = time.time()
            # 20 waves of 10 events, one per second, while HEC is down
            while time.time() - t0 < OUTAGE_S:
                wave = [make_event(i) for i in range(10)]
                futs = [await producer.send(events_topic, encode(e), key=b"org_1") for e in wave]
                await asyncio.gather(*futs)
                now = time.time()
                produced.update({e["event_id"]: now for e in wave})
                await asyncio.sleep(1.0)
            await hs["splunk_hec"].up()
            up_at = time.time()
            ids = set(produced)
            try:
                await wait_until(lambda: all(ids <= set(h.received()) for h in hs.values()), 30, "catch-up")
            except AssertionError:
                pass  # reported per destination below
            for k, h in hs.items():
                missing = ids - set(h.received())
                assert not missing, f"{k} is missing {len(missing)} events"
            metrics = (await http.get(f"http://127.0.0.1:{HEALTH_PORT}/metrics")).text
            ready = (await http.get(f"http://127.0.0.1:{HEALTH_PORT}/readyz")).json()

        lat = {k: [h.first_seen()[i] - produced[i] for i in ids] for k, h in hs.items()}
        report = {
            k: {"median": round(statistics.median(v), 3), "max": round(max(v), 3)} for k, v in lat.items()
        }
        print("time-to-deliver (s):", json.dumps(report))
        # The healthy destinations were not held back by the dead one.
        for k in ("datadog", "otlp"):
            assert report[k]["max"] < 5.0, report
        # The downed one caught up after it came back: its events were delivered only after up_at.
        assert min(hs["splunk_hec"].first_seen()[i] for i in ids) >= up_at - 0.5
        assert report["splunk_hec"]["max"] >= OUTAGE_S - 3
        assert max(hs["splunk_hec"].first_seen()[i] for i in ids) - up_at < 15, report
        hec_name = blocks[0]["name"]
        assert f'auditpipe_forwarder_retried_events_total{{destination="{hec_name}"}}' in metrics
        assert f'auditpipe_forwarder_sent_events_total{{destination="{hec_name}"}} ' in metrics
        assert ready["destinations"][hec_name]["delivered"] >= len(ids)
        # What arrived is the enriched event itself, hash intact (OTLP body carries it as JSON).
        body = json.loads(hs["otlp"].receiver.records[0].body.string_value)
        assert verify(body)
    finally:
        await producer.stop()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise
            assert code == 0, (tmp_path / "forwarder.log").read_text()[-3000:]
        for h in hs.values():
            await h.stop()
