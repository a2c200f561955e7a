"""One harness per destination: builds the destination's config pointing at its local receiver and
offers the same controls to the conformance suite (transient failure, permanent refusal, outage)."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import orjson

from services.siem_forwarder.config import parse_config
from services.siem_forwarder.util.config import DestinationConfig
from tests.siem_forwarder.events import make_event
from tests.siem_forwarder.receivers import POISON_ACTION
from tests.siem_forwarder.receivers.base import HttpReceiver
from tests.siem_forwarder.receivers.datadog import DatadogReceiver
from tests.siem_forwarder.receivers.elasticsearch import ElasticReceiver
from tests.siem_forwarder.receivers.otlp import OtlpReceiver
from tests.siem_forwarder.receivers.rsyslog import Rsyslog
from tests.siem_forwarder.receivers.splunk_hec import HecReceiver
from tests.siem_forwarder.receivers.webhook import WebhookReceiver

# Our port range is 19800-19899.
PORTS = {
    "splunk_hec": 19801,
    "splunk_hec_ack": 19802,
    "datadog": 19803,
    "elasticsearch": 19804,
    "webhook": 19805,
    "otlp": 19806,
    "syslog_tcp": 19807,
    "syslog_tls": 19808,
}
KINDS = list(PORTS)

TEST_RETRY = {"initial_backoff_s": 0.1, "max_backoff_s": 0.5, "request_timeout_s": 3.0}
TEST_BATCH = {"max_events": 100, "max_seconds": 0.2}

os.environ.setdefault("FWD_TEST_HEC_TOKEN", "hec-" + uuid.uuid4().hex)
os.environ.setdefault("FWD_TEST_DD_KEY", "dd-" + uuid.uuid4().hex)
os.environ.setdefault("FWD_TEST_ES_KEY", "es-" + uuid.uuid4().hex)
os.environ.setdefault("FWD_TEST_HOOK_SECRET", "hook-" + uuid.uuid4().hex)
os.environ.setdefault("FWD_TEST_OTLP_AUTH", "Bearer otlp-" + uuid.uuid4().hex)


def destination_block(kind: str, name: str, port: int, cert: Path | None = None) -> dict[str, Any]:
    """The config-file block for ``kind`` pointing at a local receiver on ``port``."""
    base: dict[str, Any] = {"name": name, "batch": dict(TEST_BATCH), "retry": dict(TEST_RETRY)}
    url = f"http://127.0.0.1:{port}"
    if kind.startswith("splunk_hec"):
        return {
            **base,
            "type": "splunk_hec",
            "url": url,
            "token_env": "FWD_TEST_HEC_TOKEN",
            "index": "audit",
            "ack": kind.endswith("_ack"),
            "ack_poll_interval_s": 0.05,
        }
    if kind == "datadog":
        return {
            **base,
            "type": "datadog",
            "url": url,
            "api_key_env": "FWD_TEST_DD_KEY",
            "hostname": "fwd-test",
        }
    if kind == "elasticsearch":
        return {**base, "type": "elasticsearch", "url": url, "api_key_env": "FWD_TEST_ES_KEY"}
    if kind == "webhook":
        return {**base, "type": "webhook", "url": f"{url}/hook", "secret_env": "FWD_TEST_HOOK_SECRET"}
    if kind == "otlp":
        return {
            **base,
            "type": "otlp",
            "endpoint": url,
            "headers_env": {"Authorization": "FWD_TEST_OTLP_AUTH"},
            "resource_attributes": {"deployment.environment": "test"},
        }
    if kind.startswith("syslog"):
        tls = kind.endswith("_tls")
        blk = {
            **base,
            "type": "syslog",
            "host": "127.0.0.1",
            "port": port,
            "tls": tls,
            "hostname": "fwd-test",
        }
        if tls:
            blk.update({"ca_file": str(cert), "server_name": "localhost"})
        return blk
    raise ValueError(kind)


class Harness:
    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.port = PORTS[kind]
        self.receiver: HttpReceiver | Rsyslog
        if kind.startswith("splunk_hec"):
            self.receiver = HecReceiver(
                self.port, os.environ["FWD_TEST_HEC_TOKEN"], ack=kind.endswith("_ack")
            )
        elif kind == "datadog":
            self.receiver = DatadogReceiver(self.port, os.environ["FWD_TEST_DD_KEY"])
        elif kind == "elasticsearch":
            self.receiver = ElasticReceiver(self.port, os.environ["FWD_TEST_ES_KEY"])
        elif kind == "webhook":
            self.receiver = WebhookReceiver(self.port, os.environ["FWD_TEST_HOOK_SECRET"])
        elif kind == "otlp":
            self.receiver = OtlpReceiver(self.port, ("authorization", os.environ["FWD_TEST_OTLP_AUTH"]))
        else:
            self.receiver = Rsyslog(tmp / kind, self.port, tls=kind.endswith("_tls"))

    @property
    def is_syslog(self) -> bool:
        return isinstance(self.receiver, Rsyslog)

    def config(self, name: str) -> DestinationConfig:
        cert = self.receiver.cert if isinstance(self.receiver, Rsyslog) else None
        cfg = parse_config({"destinations": [destination_block(self.kind, name, self.port, cert)]})
        return cfg.destinations[0]

    async def start(self) -> None:
        await self.receiver.start()

    async def stop(self) -> None:
        await self.receiver.stop()

    async def down(self) -> None:
        await self.receiver.down()

    async def up(self) -> None:
        await self.receiver.up()

    async def transient(self, n: int = 2) -> None:
        """The next sends fail transiently: HTTP 503 with Retry-After: 1; syslog: receiver down for 1.5 s."""
        if isinstance(self.receiver, Rsyslog):
            await self.receiver.down()

            async def later() -> None:
                await asyncio.sleep(1.5)
                await self.receiver.up()

            self._up_task = asyncio.create_task(later())
        else:
            self.receiver.fail_next(503, n, retry_after=1)

    async def settle(self) -> None:
        t = getattr(self, "_up_task", None)
        if t is not None:
            await t

    def poison_event(self) -> dict[str, Any]:
        """An event the destination refuses permanently (HTTP: the vendor's 400; syslog: over max size)."""
        if self.is_syslog:
            return make_event(999, extra_bytes=70 * 1024)
        return make_event(999, action=POISON_ACTION)

    def received(self) -> list[str]:
        if isinstance(self.receiver, Rsyslog):
            return self.receiver.poll()
        return self.receiver.received

    def carries(self, record: bytes) -> bool:
        """Whether ``record`` reached the receiver byte for byte (syslog: as MSG; OTLP: as a body string;
        otherwise as a JSON value inside a request body)."""
        if isinstance(self.receiver, Rsyslog):
            self.receiver.poll()
            return any(line["msg"].encode() == record for line in self.receiver.lines)
        if isinstance(self.receiver, OtlpReceiver):
            text = record.decode()
            return any(
                lr["body"]["stringValue"] == text
                for b in self.receiver.bodies
                for rl in orjson.loads(b)["resourceLogs"]
                for sl in rl["scopeLogs"]
                for lr in sl["logRecords"]
            )
        return any(record in b for b in self.receiver.bodies)

    def first_seen(self) -> dict[str, float]:
        self.received()
        return self.receiver.first_seen
