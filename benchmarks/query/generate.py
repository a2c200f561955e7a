"""Fill a dedicated ClickHouse database with realistic audit events for the query benchmark.

100 orgs, 10 actors and 100 targets per org (1k actors, 10k targets), 60 days, 10 million events.

How: ~2,000 template events are built in Python as real :class:`EnrichedEvent` objects and mapped with
the sink's own ``row_from_event`` into a seed table (realistic request payloads, changes, snapshots,
metadata, user agents). ClickHouse then writes the 10M rows itself with ``INSERT ... SELECT FROM
numbers()`` joined to the seed, replacing the identifying columns (event id, org, time, project,
environment, actor, target, IP) and rebuilding ``event_json`` from the same values, so the stored JSON
agrees with the columns. 0.1% of events are inserted twice (at-least-once redelivery), so reads must
de-duplicate. Re-running skips when the database already holds the rows.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import orjson

from schemas.events_v1 import EnrichedEvent
from services.common.clickhouse import make_client
from services.common.migrations import migrate
from services.common.progress import bar
from services.common.settings import Settings
from services.sink.rows import COLUMNS, row_from_event

N_TEMPLATES = 2000
ORGS = 100
ACTORS_PER_ORG = 10
TARGETS_PER_ORG = 100
DAYS = 60

# action, event_type, target_type, typical sources
ACTIONS = [
    ("deployment:create", "create", "deployment", ["console", "api", "cli", "git"]),
    ("deployment:cancel", "cancel", "deployment", ["console", "api"]),
    ("deployment:rollback", "rollback", "deployment", ["console", "cli"]),
    ("environment:update", "update", "environment", ["console", "terraform"]),
    ("environment:create", "create", "environment", ["terraform", "api"]),
    ("environment:delete", "delete", "environment", ["terraform", "console"]),
    ("service:update", "update", "service", ["console", "webhook", "api"]),
    ("service:restart", "trigger", "service", ["console", "system"]),
    ("variable:update", "update", "variable", ["console", "terraform", "cli"]),
    ("variable:create", "create", "variable", ["console", "terraform"]),
    ("certificate:export_private_key", "access", "certificate", ["console"]),
    ("user:login", "login", "user", ["console"]),
    ("member:invite", "create", "member", ["console"]),
    ("api_token:create", "create", "api_token", ["console", "api"]),
    ("cluster:update", "update", "cluster", ["terraform", "console"]),
    ("project:update", "update", "project", ["console", "api"]),
]
UAS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15",
    "Terraform/1.9.5 terraform-provider-qovery/0.40.1",
    "qovery-cli/1.2.3 (linux; amd64)",
    "GitHub-Hookshot/5f3e1c2",
]
FIRST = ["Ada", "Grace", "Alan", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger"]
LAST = ["Lovelace", "Hopper", "Turing", "Torvalds", "Liskov", "Thompson", "Hamilton", "Ritchie", "Allen"]

# Columns replaced per generated row; event_json is rebuilt from them.
_OVERRIDDEN = {
    "event_id",
    "org_id",
    "occurred_at",
    "received_at",
    "enriched_at",
    "project_id",
    "environment_id",
    "actor",
    "target",
    "client_ip",
    "content_hash",
}


def _template(i: int, rnd: random.Random) -> EnrichedEvent:
    action, etype, ttype, sources = ACTIONS[i % len(ACTIONS)]
    source = rnd.choice(sources)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    release = f"{rnd.randint(1, 9)}.{rnd.randint(0, 30)}.{rnd.randint(0, 99)}"
    payload: dict = {"release": release, "environment": "env-production", "replicas": rnd.randint(1, 12)}
    if ttype == "variable":
        payload = {"key": f"DATABASE_URL_{i}", "value": "****", "scope": "ENVIRONMENT"}
    changes = [
        {"field": "replicas", "before": rnd.randint(1, 5), "after": rnd.randint(1, 12)},
        {"field": "image_tag", "before": f"v{release}", "after": f"v{release}-{i}"},
    ][: rnd.randint(0, 2)]
    status = rnd.choice([200, 200, 200, 201, 201, 204, 400, 403, 404, 409, 500])
    method = {"create": "POST", "delete": "DELETE", "login": "POST", "access": "GET"}.get(etype, "PUT")
    ev = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": now,
        "received_at": now,
        "enriched_at": now,
        "org_id": "org-000",
        "project_id": "org-000-proj-0",
        "environment_id": "env-production",
        "actor": {"type": "user", "id": "u-0", "name": "Ada Lovelace", "email": "ada@example.test"},
        "action": action,
        "event_type": etype,
        "target": {"type": ttype, "id": f"{ttype}-0", "name": f"{ttype} 0"},
        "source": source,
        "status": status,
        "change": f"{etype.capitalize()} {ttype} {rnd.choice(['web', 'api', 'worker', 'db', 'cron'])} "
        f"release {release}",
        "client_ip": "203.0.113.7",
        "request": {
            "method": method,
            "path": f"/api/organizations/org-000/{ttype}s/{ttype}-0",
            "query": {"dry_run": rnd.choice(["true", "false"]), "page": str(rnd.randint(1, 3))},
            "payload": payload,
            "user_agent": rnd.choice(UAS),
            "peer_ip": "10.0.0.5",
            "x_forwarded_for": "203.0.113.7, 10.0.0.5",
        },
        "metadata": {"release": release, "region": rnd.choice(["eu-west-3", "us-east-2", "ap-south-1"])},
        "changes": changes,
        "snapshot": {"id": f"{ttype}-0", "state": rnd.choice(["Queued", "Running", "Stopped"]), "v": release},
        "producer": rnd.choice(["console-backend", "api-gateway", "terraform-bridge"]),
        "sensitive_paths": ["request.payload.value"] if ttype == "variable" else [],
        "content_hash": "0" * 64,
    }
    return EnrichedEvent.model_validate(ev)


def _seed_rows(n: int) -> list[list]:
    rnd = random.Random(42)
    rows = []
    for i in range(n):
        ev = _template(i, rnd)
        row = row_from_event(ev)
        full = orjson.loads(row[-1])
        rest = {k: v for k, v in full.items() if k not in _OVERRIDDEN}
        row[-1] = orjson.dumps(rest).decode()[1:]  # '"schema_version":1,...}' (no opening brace)
        rows.append([*row, i])
    return rows


def _names_array(xs: list[str]) -> str:
    return "[" + ", ".join(f"'{x}'" for x in xs) + "]"


def _insert_select(db: str, start: int, count: int, horizon_ms: int) -> str:
    first, last = _names_array(FIRST), _names_array(LAST)
    # g.org, g.actor, g.target... derived from hashes of the row number: deterministic, uniform
    return f"""
INSERT INTO {db}.events ({", ".join(COLUMNS)})
WITH g AS (
    SELECT number,
           toUInt32(cityHash64(number, 1) % {ORGS}) AS org,
           toUInt32(cityHash64(number, 3) % {ACTORS_PER_ORG}) AS actor_local,
           toUInt32(cityHash64(number, 4) % {TARGETS_PER_ORG}) AS target_local,
           -- a target keeps one action (and so one target type): template index = target mod #actions
           toUInt32((org * {TARGETS_PER_ORG} + target_local) % {len(ACTIONS)}
                    + {len(ACTIONS)} * (cityHash64(number, 5) % {N_TEMPLATES // len(ACTIONS)})) AS tpl,
           cityHash64(number, 6) % 100 AS pct,
           now64(3) - toIntervalMillisecond(cityHash64(number, 2) % {horizon_ms}) AS t
    FROM numbers({start}, {count})
),
r AS (
    SELECT g.number, g.t, g.pct, s.*,
           generateUUIDv4(g.number) AS eid,
           concat('org-', leftPad(toString(g.org), 3, '0')) AS o,
           concat(o, '-proj-', toString(g.target_local % 5)) AS proj,
           ['env-production', 'env-staging', 'env-dev'][1 + g.target_local % 3] AS envi,
           g.org * {ACTORS_PER_ORG} + g.actor_local AS actor_n,
           g.pct < 5 AS is_system,
           if(is_system, 'system', if(g.actor_local = 9, 'api_token', 'user')) AS a_type,
           if(is_system, '', concat('u-', toString(actor_n))) AS a_id,
           if(is_system, 'system', if(a_type = 'api_token', concat('token ci-', toString(actor_n)),
              concat({first}[1 + actor_n % {len(FIRST)}], ' ', {last}[1 + intDiv(actor_n, 10) % {len(LAST)}],
                     ' ', toString(actor_n)))) AS a_name,
           if(a_type = 'user', concat('user', toString(actor_n), '@example.test'), '') AS a_email,
           concat('tgt-', toString(g.org * {TARGETS_PER_ORG} + g.target_local)) AS t_id,
           concat(['web', 'api', 'worker', 'db', 'cron'][1 + g.target_local % 5], '-',
                  toString(g.org * {TARGETS_PER_ORG} + g.target_local)) AS t_name,
           if(is_system, '',
              concat('198.51.', toString(actor_n % 250), '.', toString(1 + g.target_local % 200))) AS ip,
           g.t + toIntervalMillisecond(40 + g.pct) AS recv,
           recv + toIntervalMillisecond(15) AS enr,
           concat('{{"event_id":"', toString(eid), '","occurred_at":"',
                  formatDateTime(g.t, '%Y-%m-%dT%H:%i:%S.%fZ'), '","received_at":"',
                  formatDateTime(recv, '%Y-%m-%dT%H:%i:%S.%fZ'), '","org_id":"', o,
                  '","project_id":"', proj, '","environment_id":"', envi,
                  '","actor":{{"type":"', a_type, '","id":', if(a_id = '', 'null', concat('"', a_id, '"')),
                  ',"name":"', a_name, '","email":', if(a_email = '', 'null', concat('"', a_email, '"')),
                  '}},"target":{{"type":"', s.target_type, '","id":"', t_id, '","name":"', t_name, '"}},',
                  '"client_ip":', if(ip = '', 'null', concat('"', ip, '"')), ',"enriched_at":"',
                  formatDateTime(enr, '%Y-%m-%dT%H:%i:%S.%fZ'), '",', s.event_json) AS body
    FROM g INNER JOIN {db}.bench_seed AS s ON s.tpl = g.tpl
)
SELECT eid, o, t, recv, enr, proj, envi, a_type, a_id, a_name, a_email,
       action, event_type, target_type, t_id, t_name, source, status, change,
       ip, if(ip = '', toIPv6('::'), toIPv6(concat('::ffff:', ip))),
       request_method, request_path, request_query, request_payload, user_agent, peer_ip, x_forwarded_for,
       metadata, changes, snapshot, producer, sensitive_paths,
       lower(hex(SHA256(body))), schema_version,
       concat(substring(body, 1, length(body) - 1), ',"content_hash":"', lower(hex(SHA256(body))), '"}}')
FROM r
SETTINGS max_insert_threads = 2, max_threads = 2
"""


def generate(
    settings: Settings,
    db: str,
    total: int = 10_000_000,
    chunk: int = 1_000_000,
    progress: bool | None = None,
) -> bool:
    """Fill ``db`` (created and migrated if needed). Returns False when it was already filled.

    A progress bar (rows written, rate, time left) goes to stderr when it is a terminal, or as
    ``progress`` says; the generation takes minutes on a small machine."""
    client = make_client(settings, send_receive_timeout=1800)
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    migrate(client, db)
    have = int(client.command(f"SELECT count() FROM {db}.events"))
    if have >= total:
        return False
    if have:
        client.command(f"TRUNCATE TABLE {db}.events")
        client.command(f"TRUNCATE TABLE {db}.events_by_target")  # 0010, filled by its view on insert
    client.command(f"DROP TABLE IF EXISTS {db}.bench_seed")
    client.command(
        f"CREATE TABLE {db}.bench_seed ENGINE = MergeTree ORDER BY tpl AS "
        f"SELECT *, toUInt32(0) AS tpl FROM {db}.events WHERE 0"
    )
    client.insert(f"{db}.bench_seed", _seed_rows(N_TEMPLATES), column_names=[*COLUMNS, "tpl"])
    horizon_ms = DAYS * 86_400_000
    with bar(total, desc=f"generating {db}", unit="ev", force=progress) as pb:
        for start in range(0, total, chunk):
            n = min(chunk, total - start)
            client.command(_insert_select(db, start, n, horizon_ms))
            pb.update(n)
        # at-least-once redelivery: 0.1% of events arrive twice (same event_id and sort key)
        pb.set_postfix_str("redelivered copies")
        client.command(
            f"INSERT INTO {db}.events ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM {db}.events "
            f"WHERE cityHash64(event_id) % 1000 = 0"
        )
    client.command(f"DROP TABLE IF EXISTS {db}.bench_seed")
    return True


def time_range() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(days=DAYS), now
