"""``python -m benchmarks.sink.table [--rows N]``: query times on the events table design.

Fills a scratch database (all migrations applied) with N synthetic events generated inside ClickHouse
(100 orgs, 1k actors, 10k targets, 60 days, 1.5 % redelivered duplicates), then times the query-API issue's
query shapes through ``events_dedup`` (FINAL) — median of 5 runs, rows read per query — with and without
``do_not_merge_across_partitions_select_final`` (safe here: duplicates share occurred_at, so they are
always in the same monthly partition).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid

from services.common.clickhouse import make_client
from services.common.migrations import migrate
from services.common.settings import load_settings

FILL = """
INSERT INTO {db}.events
SELECT
    generateUUIDv4(n) AS event_id,
    concat('org-', toString(cityHash64(n, 1) % 100)) AS org_id,
    now64(3, 'UTC') - toIntervalMillisecond(cityHash64(n, 2) % (60 * 86400000)) AS occurred_at,
    occurred_at AS received_at, occurred_at AS enriched_at,
    concat('proj-', toString(cityHash64(n, 3) % 50)) AS project_id,
    concat('env-', toString(cityHash64(n, 4) % 200)) AS environment_id,
    ['user', 'user', 'user', 'api_token', 'system'][1 + cityHash64(n, 5) % 5] AS actor_type,
    concat('u-', toString(cityHash64(n, 6) % 1000)) AS actor_id,
    concat('User ', toString(cityHash64(n, 6) % 1000)) AS actor_name,
    '' AS actor_email,
    ['deployment:create', 'deployment:cancel', 'service:update', 'environment:delete', 'environment:create',
     'variable:update', 'project:update', 'user:login', 'certificate:export_private_key',
     'workflow:update'][1 + cityHash64(n, 7) % 10] AS action,
    splitByChar(':', action)[2] AS event_type,
    splitByChar(':', action)[1] AS target_type,
    concat('t-', toString(cityHash64(n, 8) % 10000)) AS target_id,
    concat('target name ', toString(cityHash64(n, 8) % 10000)) AS target_name,
    ['console', 'api', 'cli', 'terraform', 'git'][1 + cityHash64(n, 9) % 5] AS source,
    200 AS status,
    concat('Changed ', ['replicas', 'image', 'memory', 'domain'][1 + cityHash64(n, 10) % 4], ' of target ',
           toString(cityHash64(n, 8) % 10000)) AS change,
    IPv4NumToString(toUInt32(3405803776 + cityHash64(n, 11) % 65536)) AS client_ip,
    toIPv6(client_ip) AS client_ip_v6,
    'POST' AS request_method, concat('/api/targets/', target_id) AS request_path, '{{}}' AS request_query,
    concat('{{"n":', toString(n), ',"pad":"', repeat('x', 200), '"}}') AS request_payload,
    'Mozilla/5.0' AS user_agent, '10.0.0.5' AS peer_ip, '' AS x_forwarded_for,
    map('i', toString(n)) AS metadata, '' AS changes, '' AS snapshot, 'bench' AS producer,
    [] AS sensitive_paths, lower(hex(SHA256(toString(n)))) AS content_hash, 1 AS schema_version,
    concat('{{"event_id":"', toString(event_id), '","pad":"', repeat('y', 300), '"}}') AS event_json,
    now64(3, 'UTC') AS inserted_at
FROM (SELECT number AS n FROM numbers({start}, {count}))
"""

QUERIES = {
    "one org, last 24 h, newest 50": (
        "SELECT event_id, occurred_at, action, actor_name, target_name FROM {db}.events_dedup "
        "WHERE org_id = {{org:String}} AND occurred_at >= now64(3, 'UTC') - INTERVAL 1 DAY "
        "ORDER BY occurred_at DESC, event_id DESC LIMIT 50"
    ),
    "one org + one actor, 30 days": (
        "SELECT event_id, occurred_at, action FROM {db}.events_dedup WHERE org_id = {{org:String}} "
        "AND actor_id = {{actor:String}} AND occurred_at >= now64(3, 'UTC') - INTERVAL 30 DAY "
        "ORDER BY occurred_at DESC LIMIT 50"
    ),
    "one target id, 60 days (all orgs)": (
        "SELECT event_id, occurred_at, action FROM {db}.events_dedup WHERE target_id = {{target:String}} "
        "AND occurred_at >= now64(3, 'UTC') - INTERVAL 60 DAY ORDER BY occurred_at DESC LIMIT 50"
    ),
    "one org + target id, 60 days": (
        "SELECT event_id, occurred_at, action FROM {db}.events_dedup WHERE org_id = {{org:String}} "
        "AND target_id = {{target:String}} ORDER BY occurred_at DESC LIMIT 50"
    ),
    "q text, one org, 7 days": (
        "SELECT event_id, occurred_at, action FROM {db}.events_dedup WHERE org_id = {{org:String}} "
        "AND occurred_at >= now64(3, 'UTC') - INTERVAL 7 DAY "
        "AND lower(concat(target_id, ' ', target_name, ' ', "
        "action, ' ', change)) LIKE concat('%', lower({{q:String}}), '%') ORDER BY occurred_at DESC LIMIT 50"
    ),
    "deep page (cursor), one org": (
        "SELECT event_id, occurred_at FROM {db}.events_dedup WHERE org_id = {{org:String}} "
        "AND (occurred_at, event_id) < ({{ts:DateTime64(3, 'UTC')}}, {{id:UUID}}) "
        "ORDER BY occurred_at DESC, event_id DESC LIMIT 50"
    ),
    "facets, one org, 7 days": (
        "SELECT action, count() FROM {db}.events_dedup WHERE org_id = {{org:String}} "
        "AND occurred_at >= now64(3, 'UTC') - INTERVAL 7 DAY GROUP BY action ORDER BY count() DESC"
    ),
    "client IP range, one org, 60 days": (
        "SELECT event_id, occurred_at FROM {db}.events_dedup WHERE org_id = {{org:String}} "
        "AND isIPAddressInRange(client_ip, {{cidr:String}}) ORDER BY occurred_at DESC LIMIT 50"
    ),
}


def main(rows: int) -> int:
    s = load_settings()
    db = f"bench_table_{uuid.uuid4().hex[:8]}"
    client = make_client(s, send_receive_timeout=900)
    migrate(client, db)
    try:
        t0 = time.perf_counter()
        step = 1_000_000
        for start in range(0, rows, step):
            client.command(FILL.format(db=db, start=start, count=min(step, rows - start)))
        # redelivered duplicates: 1.5 % of the events again, later inserted_at, same key
        dup = max(1, rows * 15 // 1000)
        client.command(FILL.format(db=db, start=0, count=dup))
        print(f"filled {rows + dup:,} rows in {time.perf_counter() - t0:.1f} s", flush=True)
        parts = client.query(
            f"SELECT count(), sum(rows) FROM system.parts WHERE database = '{db}' AND active"
        ).result_rows
        print(f"active parts: {parts[0][0]}", flush=True)
        ts, ev = client.query(
            f"SELECT occurred_at, event_id FROM {db}.events WHERE org_id = 'org-7' "  # noqa: S608
            "ORDER BY occurred_at DESC, event_id DESC LIMIT 1 OFFSET 5000"
        ).result_rows[0]
        params = {
            "org": "org-7",
            "actor": "u-42",
            "target": "t-4242",
            "q": "replicas of target 42",
            "ts": ts,
            "id": ev,
            "cidr": "203.0.120.0/24",
        }
        print(f"\n{'query':<36} {'FINAL ms':>9} {'+no-cross-part ms':>18} {'rows read':>12} {'result':>7}")
        for name, sql in QUERIES.items():
            q = sql.format(db=db)
            used = {k: v for k, v in params.items() if "{" + k + ":" in q}
            out = []
            for extra in ({}, {"do_not_merge_across_partitions_select_final": 1}):
                times = []
                read = n = 0
                for _ in range(5):
                    t = time.perf_counter()
                    r = client.query(q, parameters=used, settings=extra)
                    times.append((time.perf_counter() - t) * 1000)
                    read = int(r.summary.get("read_rows", 0))
                    n = len(r.result_rows)
                out.append((statistics.median(times), read, n))
            print(f"{name:<36} {out[0][0]:>9.1f} {out[1][0]:>18.1f} {out[0][1]:>12,} {out[0][2]:>7}")
        return 0
    finally:
        client.command(f"DROP DATABASE IF EXISTS {db} SYNC")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    sys.exit(main(ap.parse_args().rows))
