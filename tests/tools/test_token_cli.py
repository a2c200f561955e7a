"""``auditpipe token create|list|revoke`` end to end: a real ingest and a real query API (processes) pick up
created, revoked and expired tokens without a restart; settings tokens keep working beside the file;
every create and revoke is an audit event on Kafka (no secret in it); listing shows no secret; without
Kafka nothing changes."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from services.common.tokens import hash_secret, read_file
from tests.conftest import run_sync
from tests.ingest.conftest import make_topic, read_topic
from tests.tools.helpers import base_env, cli, port, service

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.e2e]


def event(org: str) -> dict:
    return {"occurred_at": datetime.now(UTC).isoformat(), "org_id": org, "action": "deployment:create"}


def test_tokens_take_effect_in_running_services_without_restart(
    kafka_settings, ch_settings, tmp_path: Path
) -> None:  # noqa: ANN001
    raw = make_topic(kafka_settings)
    audit = make_topic(kafka_settings)
    tokens = tmp_path / "secrets" / "tokens.json"
    ingest_port, api_port = port(), None
    settings_token = "settings-token-0123456789"
    env = base_env(
        AUDITPIPE_TOKENS_FILE=str(tokens),
        AUDITPIPE_INGEST__TOPIC=raw,
        AUDITPIPE_QUERY_API__AUDIT_TOPIC=audit,
        AUDITPIPE_CLICKHOUSE_DATABASE=ch_settings.clickhouse_database,
        AUDITPIPE_INGEST__PORT=str(ingest_port),
        AUDITPIPE_QUERY_API__TOKENS=json.dumps(
            [{"principal": "ops", "sha256": hash_secret(settings_token), "roles": ["EventView"]}]
        ),
    )
    with service(["ingest"], env, f"http://127.0.0.1:{ingest_port}/healthz"):
        api_port = port()
        env_api = dict(env, AUDITPIPE_QUERY_API__PORT=str(api_port))
        with service(["api"], env_api, f"http://127.0.0.1:{api_port}/healthz"):
            ingest = f"http://127.0.0.1:{ingest_port}/v1/events"
            me = f"http://127.0.0.1:{api_port}/api/me"

            def write(tok: str, org: str = "org-acme") -> int:
                return httpx.post(
                    ingest, json=event(org), headers={"Authorization": f"Bearer {tok}"}
                ).status_code

            def whoami(tok: str) -> httpx.Response:
                return httpx.get(me, headers={"Authorization": f"Bearer {tok}"})

            assert whoami(settings_token).json()["principal"] == "ops"  # settings tokens beside the file

            # create an ingest token: the secret alone on stdout, the rest on stderr
            r = cli(
                "token",
                "create",
                "ingest",
                "--producer",
                "billing",
                "--org",
                "org-acme",
                "--by",
                "alice",
                env=env,
            )
            assert r.returncode == 0, r.stderr
            ing_secret = r.stdout.strip()
            assert ing_secret.startswith("api_ing_") and "\n" not in ing_secret
            assert "shown once" in r.stderr and "billing" in r.stderr
            assert write(ing_secret) == 202 and write(ing_secret, "org-beta") == 403
            assert write("api_ing_not-a-token") == 401

            # a query token, scoped
            r = cli(
                "token", "create", "query", "--principal", "bob", "--role", "EventView",
                "--org", "org-acme", "--project", "proj-web", "--json", "--by", "alice", env=env,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            created = json.loads(r.stdout)
            q_secret = created["token"]
            body = whoami(q_secret).json()
            assert body["principal"] == "bob" and body["scope"] == {
                "org": "org-acme", "projects": ["proj-web"], "environments": []
            }  # fmt: skip

            # the file holds hashes only, 0600
            text = tokens.read_text()
            assert ing_secret not in text and q_secret not in text and hash_secret(q_secret) in text
            assert tokens.stat().st_mode & 0o777 == 0o600

            # listing: ids and scopes, never a secret or a hash
            r = cli("token", "list", env=env)
            assert r.returncode == 0, r.stderr
            assert created["id"] in r.stdout and "billing" in r.stdout and "(settings)" in r.stdout
            r = cli("token", "list", "--json", env=env)
            listed = json.loads(r.stdout)
            assert {x["source"] for x in listed} == {"file", "settings"}
            for secret in (ing_secret, q_secret, hash_secret(ing_secret), hash_secret(q_secret)):
                assert secret not in r.stdout

            # an expiring token works, then stops working, without a restart
            r = cli(
                "token", "create", "query", "--principal", "temp", "--org", "*", "--expires", "4s", env=env
            )
            assert r.returncode == 0, r.stderr
            temp = r.stdout.strip()
            assert whoami(temp).status_code == 200
            time.sleep(4.5)
            assert whoami(temp).status_code == 401
            assert "expired" in cli("token", "list", "--all", env=env).stdout

            # revoke both; the services refuse them on the next request
            ing_id = next(t.id for t in read_file(tokens).tokens if t.kind == "ingest")
            r = cli("token", "revoke", ing_id, "--reason", "rotated", "--by", "alice", env=env)
            assert r.returncode == 0 and ing_id in r.stdout, r.stderr
            assert write(ing_secret) == 401
            assert cli("token", "revoke", created["id"], env=env).returncode == 0
            assert whoami(q_secret).status_code == 401
            assert whoami(settings_token).status_code == 200

            r = cli("token", "revoke", "tok_000000000000", env=env)
            assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no token tok_000000000000" in r.stderr

    # every create and revoke is an audit event, published before the file changed
    recs = run_sync(read_topic(kafka_settings, audit, 5, settle_s=1.0))
    evs = [orjson.loads(r.value) for r in recs]
    got = sorted((e["action"], e["org_id"], e["target"]["name"]) for e in evs)
    assert got == [
        ("audit_token:create", "*", "temp"),
        ("audit_token:create", "org-acme", "billing"),
        ("audit_token:create", "org-acme", "bob"),
        ("audit_token:revoke", "org-acme", "billing"),
        ("audit_token:revoke", "org-acme", "bob"),
    ]
    revoke = next(e for e in evs if e["action"] == "audit_token:revoke" and e["target"]["name"] == "billing")
    assert revoke["actor"]["name"] == "alice" and revoke["metadata"]["reason"] == "rotated"
    assert revoke["target"]["id"] == ing_id and revoke["producer"] == "auditpipe-cli"
    raw_all = b"".join(r.value for r in recs)
    for secret in (ing_secret, q_secret, temp):
        assert secret.encode() not in raw_all


def test_without_kafka_no_token_is_created(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    env = base_env(AUDITPIPE_TOKENS_FILE=str(tokens), AUDITPIPE_KAFKA_BOOTSTRAP="127.0.0.1:1")
    r = cli("token", "create", "query", "--principal", "x", "--org", "*", env=env)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "audit event could not be recorded" in r.stderr
    assert not tokens.exists() or read_file(tokens).tokens == []


@pytest.mark.parametrize(
    "args,msg",
    [
        (["ingest", "--producer", "p"], "--org is required"),
        (["ingest", "--org", "a"], "--producer is required"),
        (["query", "--principal", "p", "--org", "a", "--org", "b"], "one organisation or all"),
        (["query", "--principal", "p", "--org", "a", "--expires", "yesterday"], "--expires"),
        (["query", "--principal", "p", "--org", "a", "--expires", "2001-01-01"], "in the future"),
        (["ingest", "--producer", "p", "--org", "a", "--role", "Manager"], "query tokens only"),
    ],
)
def test_bad_flags_are_one_line_exit_2(tmp_path: Path, args: list[str], msg: str) -> None:
    env = base_env(AUDITPIPE_TOKENS_FILE=str(tmp_path / f"{uuid.uuid4().hex}.json"))
    r = cli("token", "create", *args, env=env)
    assert r.returncode == 2 and msg in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
