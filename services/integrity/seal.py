"""Sealing: ``auditpipe seal`` (a process of its own; ``--once`` for one run).

One run:

1. republish stored digests whose publication did not complete (a crash or an outage last time);
2. pick the horizon ``H``: the newest multiple of ``integrity.window_s`` with ClickHouse's clock past
   ``H + grace`` and the sink's group committed past the first message stamped ``H + grace`` on every
   partition of its topic (topic.sink_has_passed) — so no row with ``inserted_at < H`` can still appear;
3. record the membership of every event stored in ``[previous H, H)`` (store.seal_membership: one
   INSERT ... SELECT, ids already sealed excluded);
4. for every org that has ever been sealed, one digest per window from its last digest up to ``H`` —
   count 0 for an idle window — each chained to the previous and signed (Merkle roots computed by
   ClickHouse);
5. store the digests in ClickHouse, then publish them: the digest topic, the digest files, one
   ``audit_digest:seal`` audit event each (to every SIEM destination like any event); mark them published;
6. record the run (``seal_runs``): the archive job may now delete rows stored before ``H``.

Crash safety: a window's digest is built once and stored before it is published; a later run re-publishes
the stored bytes, never a new digest for the same window (the audit event's id derives from the digest
hash, so a repeat is a duplicate the pipeline collapses). Step 3 is idempotent (already-sealed ids are
excluded) and only complete windows are ever digested (step 4 runs after step 3 finished).

Why a process of its own and not the sink's schedule: the signing key stays out of the sink (which scales
to many replicas and parses the whole stream), and a chain needs exactly one writer while the sink runs
N; sealing must neither stall nor be stalled by ingestion. Run exactly one sealer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from schemas.digests_v1 import (
    EMPTY_ROOT,
    GENESIS,
    Digest,
    b64,
    digest_hash,
    fmt_time,
    parse_time,
    record_bytes,
    signing_bytes,
)
from schemas.events_v1 import RawEvent
from services.common.audit_events import PRODUCER_ARCHIVE, SYSTEM, AuditPublisher, system_event
from services.common.clickhouse import make_client
from services.common.logging import log
from services.common.settings import Settings
from services.integrity import files, store, topic
from services.integrity import metrics as m
from services.integrity.keys import Signer, signer
from services.integrity.rules import align_down, windows

logger = logging.getLogger("auditpipe.integrity.seal")

_AUDIT_NS = uuid.UUID("5b0c3f8e-2a57-4d53-9d0e-6f1d6c0a9e11")
# How far back the horizon may step when the sink lags (one run seals up to this many windows less).
_MAX_STEPS_BACK = 48


@dataclass
class SealResult:
    horizon: datetime | None = None
    events: int = 0
    digests: list[dict[str, Any]] = field(default_factory=list)
    republished: int = 0
    waiting: str = ""


def build_digest(
    s: Signer,
    org_id: str,
    sequence: int,
    window: tuple[datetime, datetime],
    count: int,
    root: str,
    prev: str,
    sealed_at: datetime,
) -> dict[str, Any]:
    """A signed digest record (pure apart from the signature, which Ed25519 makes deterministic)."""
    rec: dict[str, Any] = {
        "schema_version": 1,
        "org_id": org_id,
        "sequence": sequence,
        "window_start": fmt_time(window[0]),
        "window_end": fmt_time(window[1]),
        "event_count": count,
        "merkle_root": root,
        "prev_digest_hash": prev,
        "sealed_at": fmt_time(sealed_at),
        "key_id": s.key_id,
    }
    rec["signature"] = b64(s.sign(signing_bytes(rec)))
    Digest.model_validate(rec)  # the contract, checked on the way out
    return rec


def audit_event(rec: dict[str, Any], h: str) -> RawEvent:
    """``audit_digest:seal``: the digest as an audit event (the whole record in ``snapshot``), so every
    SIEM destination holds a copy. Its id derives from the digest hash: a republished digest is a
    duplicate the pipeline collapses."""
    ev = system_event(
        org_id=rec["org_id"],
        actor=SYSTEM,
        action="audit_digest:seal",
        target_type="audit_digest",
        target_id=f"{rec['org_id']}/{rec['window_start']}",
        target_name=f"digest {rec['sequence']} of {rec['org_id']}",
        change=(
            f"Sealed {rec['event_count']} events stored {rec['window_start']} to {rec['window_end']}: "
            f"Merkle root {rec['merkle_root']}, signed by {rec['key_id']}"
        ),
        metadata={
            "digest_hash": h,
            "sequence": str(rec["sequence"]),
            "window_start": rec["window_start"],
            "window_end": rec["window_end"],
            "event_count": str(rec["event_count"]),
            "merkle_root": rec["merkle_root"],
            "key_id": rec["key_id"],
        },
        producer=PRODUCER_ARCHIVE,
        now=parse_time(rec["sealed_at"]),
    )
    return ev.model_copy(update={"event_id": uuid.uuid5(_AUDIT_NS, h), "snapshot": rec})


async def _publish(
    settings: Settings, client: Any, publisher: AuditPublisher, records: list[bytes], republish: bool
) -> None:
    """Topic, files, audit events, then mark published (each step repeatable)."""
    if not records:
        return
    parsed = [orjson.loads(r) for r in records]
    cfg = settings.integrity
    await topic.publish(
        publisher, cfg.digest_topic, [(d["org_id"], r) for d, r in zip(parsed, records, strict=True)]
    )
    base = files.root(settings)
    for d, r in zip(parsed, records, strict=True):
        await asyncio.to_thread(files.append, base, d["org_id"], parse_time(d["window_start"]), r, republish)
    for d in parsed:
        await publisher.publish(audit_event(d, digest_hash(d)))
    await asyncio.to_thread(
        store.mark_published,
        client,
        settings.clickhouse_database,
        [(d["org_id"], parse_time(d["window_start"]), digest_hash(d)) for d in parsed],
    )


def _heads(client: Any, db: str) -> dict[str, dict[str, Any]]:
    """The newest stored digest of every org."""
    rows = client.query(
        f"SELECT org_id, argMax(record, sequence) FROM {db}.digests GROUP BY org_id"  # noqa: S608
    ).result_rows
    return {str(o): orjson.loads(r) for o, r in rows}


async def _horizon(settings: Settings, client: Any, prev: datetime | None) -> tuple[datetime | None, str]:
    cfg = settings.integrity
    now = await asyncio.to_thread(store.server_now, client)
    h = align_down(now - timedelta(seconds=cfg.grace_s), cfg.window_s)
    why = ""
    for _ in range(_MAX_STEPS_BACK):
        if prev is not None and h <= prev:
            return None, why or "nothing new to seal yet"
        ok, why = await topic.sink_has_passed(settings, h + timedelta(seconds=cfg.grace_s))
        if ok:
            return h, ""
        h -= timedelta(seconds=cfg.window_s)
    return None, why


async def seal_once(settings: Settings, publisher: AuditPublisher, key: Signer | None = None) -> SealResult:
    """One sealing run (see the module docstring). ``publisher`` is the process's durable producer:
    its audit events go to its topic (``integrity.audit_topic``), digests to ``integrity.digest_topic``."""
    t0 = time.perf_counter()
    key = key or signer(settings)
    db = settings.clickhouse_database
    cfg = settings.integrity
    client = make_client(settings, send_receive_timeout=900)
    res = SealResult()
    await topic.ensure_digest_topic(settings)
    pending = await asyncio.to_thread(store.unpublished, client, db)
    if pending:
        await _publish(settings, client, publisher, pending, republish=True)
        res.republished = len(pending)
    prev = await asyncio.to_thread(store.last_horizon, client, db)
    h, why = await _horizon(settings, client, prev)
    if h is None:
        res.waiting = why
        return res
    res.horizon = h
    res.events = await asyncio.to_thread(store.seal_membership, client, db, prev, h, cfg.window_s)
    heads = await asyncio.to_thread(_heads, client, db)
    orgs = set(heads) | await asyncio.to_thread(store.sealed_orgs, client, db)
    lo = min([parse_time(d["window_end"]) for d in heads.values()] + ([prev] if prev else []), default=None)
    roots = await asyncio.to_thread(store.window_roots, client, db, None, lo, h)
    first_window: dict[str, datetime] = {}
    for o, ws in roots:
        if o not in heads and (o not in first_window or ws < first_window[o]):
            first_window[o] = ws
    sealed_at = await asyncio.to_thread(store.server_now, client)
    rows, records = [], []
    for org in sorted(orgs):
        head = heads.get(org)
        if head is not None:
            start, seq, prev_hash = parse_time(head["window_end"]), int(head["sequence"]), digest_hash(head)
        elif org in first_window:
            start, seq, prev_hash = first_window[org], 0, GENESIS
        else:
            continue  # sealed long ago under a lost digest table: verification reports it
        for ws, we in windows(start, h, cfg.window_s):
            r = roots.get((org, ws))
            seq += 1
            rec = build_digest(
                key,
                org,
                seq,
                (ws, we),
                r.count if r else 0,
                r.root if r else EMPTY_ROOT,
                prev_hash,
                sealed_at,
            )
            prev_hash = digest_hash(rec)
            raw = record_bytes(rec)
            rows.append(
                {
                    "org_id": org,
                    "sequence": seq,
                    "window_start": ws,
                    "window_end": we,
                    "event_count": rec["event_count"],
                    "digest_hash": prev_hash,
                    "record": raw,
                }
            )
            records.append(raw)
            res.digests.append(rec)
    await asyncio.to_thread(store.store_digests, client, db, rows)
    await _publish(settings, client, publisher, records, republish=False)
    await asyncio.to_thread(store.record_run, client, db, h, len(records), res.events)
    m.DIGESTS.inc(len(records))
    m.SEALED_EVENTS.inc(res.events)
    m.SEALED_HORIZON.set(h.timestamp())
    m.SEAL_SECONDS.observe(time.perf_counter() - t0)
    return res


async def seal_loop(settings: Settings, stop: asyncio.Event) -> None:
    """Seal every ``integrity.interval_s`` until ``stop``; a failed run is logged and retried next time."""
    key = signer(settings)
    log(logger, logging.INFO, "sealer started", key_id=key.key_id, window_s=settings.integrity.window_s)
    publisher = AuditPublisher(settings, settings.integrity.audit_topic)
    try:
        while not stop.is_set():
            try:
                res = await seal_once(settings, publisher, key)
                m.SEAL_RUNS.labels("ok" if res.horizon or not res.waiting else "waiting").inc()
                if res.horizon is not None:
                    log(
                        logger,
                        logging.INFO,
                        "sealed",
                        horizon=fmt_time(res.horizon),
                        events=res.events,
                        digests=len(res.digests),
                        republished=res.republished,
                    )
            except Exception as e:  # noqa: BLE001 - the next run retries; nothing half-done is lost
                m.SEAL_RUNS.labels("error").inc()
                log(logger, logging.ERROR, "seal run failed", error=" ".join(str(e).split())[:300])
            try:
                await asyncio.wait_for(stop.wait(), settings.integrity.interval_s)
            except TimeoutError:
                pass
    finally:
        await publisher.close()


async def run_sealer(settings: Settings, stop: asyncio.Event | None = None, health: bool = True) -> None:
    """``auditpipe seal``: the loop plus /healthz /readyz /metrics on ``integrity.host:port``."""
    from services.common.kafka import kafka_ready
    from services.common.runtime import install_stop_signals, serve_health, stop_health

    stop = stop or asyncio.Event()
    install_stop_signals(stop)

    async def ready() -> tuple[bool, dict]:
        k = await kafka_ready(settings, timeout_s=2.0)

        def ping() -> bool:
            try:
                make_client(settings, send_receive_timeout=3).command("SELECT 1")
                return True
            except Exception:  # noqa: BLE001
                return False

        c = await asyncio.to_thread(ping)
        return k and c, {"kafka": k, "clickhouse": c}

    server = (
        await serve_health(settings.integrity.host, settings.integrity.port, ready, "seal")
        if health
        else None
    )
    try:
        await seal_loop(settings, stop)
    finally:
        if server is not None:
            await stop_health(server)
