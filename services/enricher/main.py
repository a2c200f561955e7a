"""Run the enricher: prepare (topics, switch reconciliation), then one faust worker in this process."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import faust

from schemas.topics import (
    DEADLETTER,
    ENRICHER_CHANGELOG,
    ENRICHER_LEADER,
    ENRICHER_STATE,
    EVENTS,
    ORG_SWITCH,
    RAW,
    spec_as,
)
from services.common.kafka import ensure_topics, kafka_ready, make_admin, report_group_lag
from services.common.logging import configure_logging, get_logger, log
from services.common.runtime import serve_health, tune_gc_for_throughput
from services.common.settings import Settings
from services.enricher.app import create_app
from services.enricher.switch import reconcile

logger = get_logger("services.enricher")


async def prepare(settings: Settings) -> int:
    """Create missing topics, reconcile the org switch; return the raw topic's partition count."""
    es = settings.enricher
    wanted = [
        spec_as(RAW, es.raw_topic),
        spec_as(EVENTS, es.events_topic),
        spec_as(DEADLETTER, es.deadletter_topic),
        spec_as(ORG_SWITCH, es.switch_topic),
        spec_as(ENRICHER_STATE, es.state_topic),
    ]
    await ensure_topics(settings, wanted)
    changed = await reconcile(settings)
    if changed:
        log(logger, logging.INFO, "audit switch events emitted", orgs=changed)
    admin = make_admin(settings)
    await admin.start()
    try:
        meta = await admin.describe_topics([es.raw_topic])
        partitions = len(meta[0]["partitions"])
    finally:
        await admin.close()
    # faust's own topics, created before faust declares them so they get the cluster's replication factor
    # (faust would use topic_replication_factor=1); the changelog has as many partitions as the raw topic.
    group = es.consumer_group
    changelog = spec_as(ENRICHER_CHANGELOG, f"{group}-suppressed_daily-changelog")
    await ensure_topics(
        settings,
        [replace(changelog, partitions=partitions), spec_as(ENRICHER_LEADER, f"{group}-__assignor-__leader")],
    )
    return partitions


def run(settings: Settings, rules: Any = None) -> int:
    """Run one worker in this process (``rules`` replaces the enricher's rules: benchmarks only)."""
    configure_logging("enricher", settings.log_level)
    try:
        partitions = asyncio.run(prepare(settings))
    except Exception as e:  # noqa: BLE001 - one line, no traceback
        log(logger, logging.ERROR, "enricher cannot start", error=f"{type(e).__name__}: {e}"[:500])
        return 1
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_app(settings, partitions, rules)
    es = settings.enricher

    async def ready() -> tuple[bool, dict]:
        ok = await kafka_ready(settings)
        assigned = len(app.consumer.assignment()) if ok and app.consumer else 0
        return ok, {"kafka": ok, "assigned_partitions": assigned}

    loop.run_until_complete(serve_health(es.web_host, es.web_port, ready, "enricher"))
    # faust owns the consumer: report the group's lag from the broker's committed offsets.
    lag_task = loop.create_task(report_group_lag(settings, "enricher", es.consumer_group, es.raw_topic))  # noqa: F841, RUF006
    log(
        logger,
        logging.INFO,
        "enricher starting",
        raw_topic=es.raw_topic,
        events_topic=es.events_topic,
        group=es.consumer_group,
        partitions=partitions,
        hash_mode=es.hash_mode,
        web_port=es.web_port,
    )
    worker = faust.Worker(app, loop=loop, loglevel=settings.log_level, quiet=True, override_logging=False)
    tune_gc_for_throughput()
    try:
        worker.execute_from_commandline()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def run_workers(settings: Settings, n: int) -> int:
    """``n`` worker processes (``python -m services.enricher``) in the enricher's one consumer group.

    Scale is by processes: one worker uses one core (faust runs one event loop). Worker ``i`` serves
    health and metrics on ``web_port + i`` and keeps faust's data under ``data_dir/<i>``. SIGTERM and
    Ctrl-C are passed on; when one worker exits, the others are stopped and this returns its exit code, so
    a supervisor (``auditpipe run``, systemd, Kubernetes) restarts the group.
    """
    import os
    import signal
    import subprocess
    import sys
    import time

    configure_logging("enricher", settings.log_level)
    es = settings.enricher
    procs = []
    for i in range(n):
        (es.data_dir / str(i)).mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "AUDITPIPE_ENRICHER__WEB_PORT": str(es.web_port + i),
            "AUDITPIPE_ENRICHER__DATA_DIR": str(es.data_dir / str(i)),
            "AUDITPIPE_ENRICHER__WORKERS": "1",
        }
        procs.append(subprocess.Popen([sys.executable, "-m", "services.enricher"], env=env))
    log(logger, logging.INFO, "enricher workers started", workers=n, pids=[p.pid for p in procs])

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    while all(p.poll() is None for p in procs):
        time.sleep(0.2)
    code = next(p.returncode for p in procs if p.poll() is not None) or 0
    forward(signal.SIGTERM, None)
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
    log(logger, logging.INFO, "enricher workers stopped", exit_code=code)
    return code
