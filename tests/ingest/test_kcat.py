"""A producer in another language: kcat publishes a raw event following docs/wire-format.md; it arrives
contract-valid with the documented key and headers, exactly like one the ingest would have written."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import orjson
import pytest

from auditpipe.wire import decode_value
from tests.ingest.conftest import example, make_topic, read_topic

pytestmark = pytest.mark.kafka


async def test_kcat_producer_follows_the_wire_format(kafka_settings) -> None:
    kcat = shutil.which("kcat")
    assert kcat, "kcat is missing: run deploy/local/system-deps.sh (Debian package kcat)"
    topic = make_topic(kafka_settings)
    ev = example(event_id=str(uuid.uuid4()), producer="billing-go", received_at="2026-11-22T10:00:01Z")
    line = orjson.dumps(ev)
    # the command from docs/wire-format.md
    r = subprocess.run(  # noqa: ASYNC221 - a short CLI call in a test
        [
            kcat,
            "-P",
            "-b",
            kafka_settings.kafka_bootstrap,
            "-t",
            topic,
            "-k",
            ev["org_id"],
            "-H",
            "content-type=application/json",
            "-H",
            "schema-version=1",
            "-H",
            "producer=billing-go",
            "-X",
            "acks=all",
            "-X",
            "enable.idempotence=true",
        ],
        input=line + b"\n",
        capture_output=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr.decode()
    (rec,) = await read_topic(kafka_settings, topic, 1, settle_s=0.3)
    assert rec.key == b"org-acme"
    assert dict(rec.headers) == {
        "content-type": b"application/json",
        "schema-version": b"1",
        "producer": b"billing-go",
    }
    got = decode_value(rec.value)
    assert str(got.event_id) == ev["event_id"] and got.producer == "billing-go"
    assert got.model_dump(mode="json", exclude_none=True)["request"] == ev["request"]
