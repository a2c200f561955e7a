"""``auditpipe migrate --cluster``: the cluster form of every migration, as text (what a replicated cluster
with Keeper runs ON CLUSTER) and for real on two local chdb-core servers as two shards behind
``Distributed`` tables (no Keeper: per-node DDL, plain engines), with the sink's own write path and the
query API reading through them.

The two servers use private ports 20590-20593 (run under the ports lock).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from services.common.clickhouse import make_client
from services.common.migrations import SHARD_KEYS, cluster_statements, discover
from services.common.settings import Settings
from services.common.stack.process import stop
from services.sink.records import Key
from services.sink.writer import insert_records, lookup, remember
from tests.sink.helpers import record

REPO = Path(__file__).resolve().parents[2]
CLUSTER = "two"
SHARDS = [(20590, 20591), (20592, 20593)]  # (http, native) per shard


# ------------------------------------------------------------------------------ DDL text (no server)
def _all(replicated: bool, on_cluster: bool) -> list[tuple[str, bool]]:
    return [
        (" ".join(st.sql.split()), st.every_node)
        for m in discover()
        for st in cluster_statements(m, "audit", "auditpipe", replicated=replicated, on_cluster=on_cluster)
    ]


def test_every_table_of_the_migrations_has_a_sharding_key() -> None:
    created = {
        s.split("audit.", 1)[1].split()[0]
        for m in discover()
        for s in m.statements("audit")
        if s.startswith("CREATE TABLE")
    }
    assert created == set(SHARD_KEYS)


def test_replicated_form_creates_local_replicated_tables_and_distributed_ones() -> None:
    sql = _all(replicated=True, on_cluster=True)
    ddl = [s for s, every in sql if every]
    assert all(" ON CLUSTER auditpipe" in s for s in ddl)
    text = "\n".join(s for s, _ in sql)
    assert (
        "CREATE TABLE IF NOT EXISTS audit.events_local ON CLUSTER auditpipe ( event_id UUID," in text
        and "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/audit/events_local', "
        "'{replica}', inserted_at) PARTITION BY toYYYYMM(occurred_at) "
        "ORDER BY (org_id, occurred_at, event_id)"
        in text
    )
    assert (
        "CREATE TABLE IF NOT EXISTS audit.events ON CLUSTER auditpipe AS audit.events_local "
        "ENGINE = Distributed(auditpipe, audit, events_local, cityHash64(org_id))" in text
    )
    assert (
        "ReplicatedMergeTree('/clickhouse/tables/{shard}/audit/event_conflicts_local', '{replica}')" in text
    )
    assert "audit.event_ids_local ON CLUSTER auditpipe" in text and "ENGINE = EmbeddedRocksDB" in text
    assert "Distributed(auditpipe, audit, event_ids_local, cityHash64(event_id))" in text
    # the materialized views fire on each shard's local inserts
    assert (
        "CREATE MATERIALIZED VIEW IF NOT EXISTS audit.events_input_mv ON CLUSTER auditpipe "
        "TO audit.events_local" in text
    )
    assert "FROM audit.events_input_local )" in text
    assert "TO audit.events_by_time_local AS SELECT" in text and "FROM audit.events_local" in text
    # the constraint and settings go to the local table; reads through the Distributed one
    assert "ALTER TABLE audit.events_local ON CLUSTER auditpipe ADD CONSTRAINT IF NOT EXISTS" in text
    assert (
        "CREATE VIEW IF NOT EXISTS audit.events_dedup ON CLUSTER auditpipe "
        "AS SELECT * FROM audit.events FINAL" in text
    )
    # backfills run once, through the Distributed tables
    once = [s for s, every in sql if not every]
    assert once and all(s.startswith("INSERT INTO audit.") and "_local" not in s for s in once)
    assert not any("ENGINE = ReplacingMergeTree" in s or "ENGINE = MergeTree" in s for s in ddl)


def test_per_node_form_without_replication() -> None:
    text = "\n".join(s for s, _ in _all(replicated=False, on_cluster=False))
    assert "ON CLUSTER" not in text and "Replicated" not in text
    assert "CREATE TABLE IF NOT EXISTS audit.events_local ( event_id UUID," in text
    assert "ENGINE = ReplacingMergeTree(inserted_at)" in text


def test_cli_refuses_bad_cluster_arguments() -> None:
    for args, msg in (
        (["--nodes", "http://127.0.0.1:1"], "--nodes and --no-replication need --cluster NAME"),
        (["--cluster", "two; DROP"], "is not a ClickHouse cluster name"),
        (["--cluster", "two", "--nodes", "127.0.0.1:8123"], "is not http(s)://host:port"),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "services.cli", "migrate", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# ------------------------------------------------------------------------- two shards, for real
def _config(http: int, native: int) -> str:
    shards = "".join(
        f"<shard><replica><host>127.0.0.1</host><port>{n}</port></replica></shard>" for _, n in SHARDS
    )
    return (
        "<clickhouse>\n"
        "  <listen_host>127.0.0.1</listen_host>\n"
        f"  <http_port>{http}</http_port>\n  <tcp_port>{native}</tcp_port>\n"
        f"  <remote_servers><{CLUSTER}>{shards}</{CLUSTER}></remote_servers>\n"
        "  <users_config>users.xml</users_config>\n"
        "</clickhouse>\n"
    )


# The profile docs/operations.md asks for on a cluster: an insert into a Distributed table returns when the
# shards have the rows (the sink commits offsets only then), and a Distributed table inside IN reads each
# shard's local table (the side tables are sharded by org like events).
USERS = """<clickhouse>
  <profiles><default>
    <distributed_foreground_insert>1</distributed_foreground_insert>
    <distributed_product_mode>local</distributed_product_mode>
  </default></profiles>
  <users><default><password></password><profile>default</profile><networks><ip>127.0.0.1</ip></networks>
  </default></users>
</clickhouse>
"""


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    root = tmp_path_factory.mktemp("chcluster")
    procs = []
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for i, (http, native) in enumerate(SHARDS):
        d = root / f"shard{i + 1}"
        (d / "data").mkdir(parents=True)
        (d / "config.xml").write_text(_config(http, native))
        (d / "users.xml").write_text(USERS)
        log = open(d / "stdout.log", "wb")  # noqa: SIM115 - lives as long as the server
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "services.common.stack.ch_server", "--data", str(d / "data"), "--tcp"],
                cwd=d,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
    urls = [f"http://127.0.0.1:{h}" for h, _ in SHARDS]
    try:
        deadline = time.monotonic() + 90
        for u in urls:
            while True:
                try:
                    with urllib.request.urlopen(f"{u}/?query=SELECT%201", timeout=2):  # noqa: S310
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
        yield urls
    finally:
        for p in procs:
            stop(p.pid, None, timeout_s=20)


def _migrate(urls: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, AUDITPIPE_CLICKHOUSE_URL=urls[0], AUDITPIPE_CLICKHOUSE_DATABASE="audit")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "migrate",
            "--cluster",
            CLUSTER,
            "--nodes",
            ",".join(urls),
            "--no-replication",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.clickhouse
def test_two_shards_behind_distributed_tables(shards: list[str]) -> None:
    r = _migrate(shards)
    assert r.returncode == 0, r.stderr
    assert "applied 0001_events" in r.stdout and "applied 0014_event_conflicts" in r.stdout
    again = _migrate(shards)
    assert again.returncode == 0 and "nothing to apply" in again.stdout, again.stdout + again.stderr

    a, b = (make_client(Settings(clickhouse_url=u)) for u in shards)
    # The cluster as the services see it: every node knows both shards.
    assert a.query(f"SELECT count() FROM system.clusters WHERE cluster = '{CLUSTER}'").result_rows[0][0] == 2

    # The sink's own write path, unchanged: record bytes into events_input, through the Distributed table.
    recs = [record(i, org=f"org-{i % 20}") for i in range(1000)]
    inserted, rejected = insert_records(a, "audit.events_input", recs, "cluster-test-batch-1")
    assert (inserted, rejected) == (1000, [])
    local = [int(c.query("SELECT count() FROM audit.events_local").result_rows[0][0]) for c in (a, b)]
    assert sum(local) == 1000 and min(local) > 0, local
    # every org entirely on one shard (sharded by org, so FINAL de-duplicates per shard)
    orgs = [
        set(r[0] for r in c.query("SELECT DISTINCT org_id FROM audit.events_local").result_rows)
        for c in (a, b)
    ]
    assert not orgs[0] & orgs[1] and len(orgs[0] | orgs[1]) == 20

    # A redelivered batch (other boundaries, other token) is collapsed by FINAL through the Distributed table.
    insert_records(a, "audit.events_input", recs[:300], "cluster-test-batch-2")
    assert a.query("SELECT count() FROM audit.events FINAL").result_rows[0][0] == 1000
    assert a.query("SELECT count() FROM audit.events_dedup").result_rows[0][0] == 1000
    assert b.query("SELECT uniqExact(event_id) FROM audit.events_by_time").result_rows[0][0] == 1000
    assert b.query("SELECT uniqExact(event_id) FROM audit.events_by_target").result_rows[0][0] == 1000

    # first content wins: event_ids entries written and looked up through the Distributed table (the ids
    # travel as external data to both shards), sharded by event id
    keys = []
    for v in recs:
        d = orjson.loads(v)
        keys.append(Key(d["event_id"], d["org_id"], d["content_hash"], d["occurred_at"]))
    remember(a, "audit.event_ids", keys, datetime.now(UTC))
    found = lookup(b, "audit.event_ids", [k.event_id for k in keys[:500]])
    assert set(found) == {k.event_id for k in keys[:500]}
    assert all(found[k.event_id].content_hash == k.content_hash for k in keys[:500])
    per_shard = [int(c.query("SELECT count() FROM audit.event_ids_local").result_rows[0][0]) for c in (a, b)]
    assert sum(per_shard) == 1000 and min(per_shard) > 0

    # The query API, unchanged, reads through the Distributed table.
    from fastapi.testclient import TestClient

    from services.query_api.main import create_app

    token = "view_cluster_test_token_0123456789"
    s = Settings(
        clickhouse_url=shards[1],
        query_api={"tokens": [{"principal": "t", "sha256": hashlib.sha256(token.encode()).hexdigest()}]},
        tokens_file=Path(shards[0].replace("http://", "/nonexistent/")),
    )
    auth = {"Authorization": f"Bearer {token}"}
    since = "2000-01-01T00:00:00Z"
    with TestClient(create_app(s)) as client:

        def search(**params: object) -> list[dict]:
            got = client.get("/api/events", params={"since": since, "limit": 500, **params}, headers=auth)
            assert got.status_code == 200, got.text
            return got.json()["events"]

        # one org (events' own sort key), a target across orgs (events_by_target), free text across orgs
        # (events_by_time): each through its Distributed table, de-duplicated
        org7 = search(org="org-7")
        assert len(org7) == 50 and {e["org_id"] for e in org7} == {"org-7"}
        by_target = search(target_id="t-5")
        assert len(by_target) == sum(1 for i in range(1000) if i % 101 == 5)
        by_text = search(q="change number 77")
        assert len(by_text) == sum(1 for i in range(1000) if "change number 77" in f"change number {i}")
        one = client.get(f"/api/events/{org7[0]['event_id']}", headers=auth)
        assert one.status_code == 200 and one.json()["event_id"] == org7[0]["event_id"]
        assert len(one.json()["content_hash"]) == 64
