"""The forwarder process: one :class:`DestinationRunner` task per enabled destination, a shared producer
for dead letters, the health/metrics server. A runner that crashes is restarted after a pause; it never
takes the others down."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace

from auditpipe.backoff import Backoff, sleep_unless_stopped
from schemas.topics import FORWARDER_DEADLETTER, TopicSpec, load_template
from services.common.kafka import ensure_topics, kafka_ready, make_producer
from services.common.logging import get_logger, log
from services.common.runtime import serve_health, stop_health
from services.common.settings import Settings
from services.siem_forwarder.config import ForwarderConfig
from services.siem_forwarder.util.config import DestinationConfig
from services.siem_forwarder.util.runner import DestinationRunner

LOG = get_logger("auditpipe.forwarder")
STABLE_S = 60.0  # a runner that ran this long before crashing restarts after the shortest delay


def dead_letter_specs(cfg: ForwarderConfig) -> list[TopicSpec]:
    """Each enabled destination's dead-letter topic, as ``schemas/topics/templates`` describes it."""
    base = load_template(FORWARDER_DEADLETTER)
    return [
        replace(base.with_name(destination=d.name), name=d.dlq_topic(), producers=[f"forwarder:{d.name}"])
        for d in cfg.destinations
        if d.enabled
    ]


@dataclass
class Forwarder:
    settings: Settings
    config: ForwarderConfig
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    runners: dict[str, DestinationRunner] = field(default_factory=dict)
    crashes: dict[str, str] = field(default_factory=dict)

    async def run(self, serve: bool = True) -> None:
        await ensure_topics(self.settings, dead_letter_specs(self.config))
        producer = make_producer(self.settings)
        await producer.start()
        server = None
        try:
            if serve:
                fs = self.settings.forwarder
                server = await serve_health(fs.host, fs.port, self.ready, "forwarder")
            tasks = [
                asyncio.create_task(self._supervise(d, producer), name=f"forwarder-{d.name}")
                for d in self.config.destinations
                if d.enabled
            ]
            await asyncio.gather(*tasks)
        finally:
            if server is not None:
                await stop_health(server)
            await producer.stop()

    async def _supervise(self, d: DestinationConfig, producer: object) -> None:
        """Run the destination; restart it after a crash with the shared backoff (1 s doubling to 60 s)."""
        backoff = Backoff(initial_s=1.0, cap_s=60.0, jitter="equal")
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                encoder, client = d.build()  # e.g. an unreadable CA file fails here: retried, isolated
                runner = DestinationRunner(
                    self.settings,
                    d,
                    self.config.topic,
                    producer,
                    encoder,
                    client,
                    self.stop,  # type: ignore[arg-type]
                )
                self.runners[d.name] = runner
                await runner.run()
            except Exception as e:  # noqa: BLE001 - isolate destinations from each other
                self.crashes[d.name] = f"{type(e).__name__}: {e}"
                if d.name in self.runners:
                    self.runners[d.name].status.state = "crashed"
                    self.runners[d.name].status.last_error = self.crashes[d.name]
                if time.monotonic() - started >= STABLE_S:
                    backoff.reset()
                delay = backoff.next_delay()
                log(
                    LOG,
                    logging.ERROR,
                    "destination runner crashed; restarting",
                    destination=d.name,
                    error=repr(e),
                    restart_in_s=round(delay, 2),
                )
                await sleep_unless_stopped(delay, self.stop)

    async def ready(self) -> tuple[bool, dict]:
        ok = await kafka_ready(self.settings, timeout_s=2.0)
        detail = {
            "kafka": ok,
            "destinations": {
                n: {
                    "state": r.status.state,
                    "last_success": r.status.last_success,
                    "delivered": r.status.delivered,
                    "dead_lettered": r.status.dead_lettered,
                    "last_error": r.status.last_error,
                }
                for n, r in self.runners.items()
            },
            "crashed": self.crashes,
        }
        return ok, detail
