"""Kafka security in the deployment files: TLS and SCRAM everywhere, an authorizer that denies by default,
and one ACL table (deploy/kafka/acls.yaml) that the compose setup script, the Strimzi KafkaUsers,
docs/security.md and the topic contracts in schemas/topics all agree with. (The same table is applied to
a real broker in tests/common/test_kafka_security.py.)"""

from __future__ import annotations

import re

import pytest

from schemas.topics import load_topics
from services.common.settings import Settings
from tests.deploy import kafka_acls as K
from tests.deploy.helpers import K8S, compose, k8s_by_kind, load_yaml_all

# schemas/topics names its producers and consumers in prose; the leading word is the component
NOT_A_PRINCIPAL = {"operators"}  # super-user tooling, not a component with a Kafka user
SAME_AS = {
    "any": "auditpipe.client"
}  # "any Kafka producer following docs/wire-format.md": a trusted producer


def _components(entries: list[str]) -> set[str]:
    out = set()
    for e in entries:
        word = re.match(r"[\w.]+", e.strip()).group(0)  # type: ignore[union-attr]
        if word not in NOT_A_PRINCIPAL:
            out.add(SAME_AS.get(word, word))
    return out


def _allowed(topic: str, op: str) -> set[str]:
    """Components whose principal holds ``op`` on ``topic`` by a literal or a prefixed ACL (as the
    broker's authorizer matches them)."""
    return {
        e["component"]
        for e in K.table().values()
        for a in e["acls"]
        if a["type"] == "topic"
        and (a["name"] == topic if a.get("pattern", "literal") == "literal" else topic.startswith(a["name"]))
        and op in a["ops"]
    }


# ------------------------------------------------------------------------------------ one table
def test_generated_copies_match_the_table() -> None:
    assert K.script_block() in K.SCRIPT.read_text(), "python -m tests.deploy.kafka_acls"
    assert K.USERS.read_text() == K.users_yaml(), "python -m tests.deploy.kafka_acls"
    assert K.doc_table() in K.DOC.read_text(), "python -m tests.deploy.kafka_acls"


@pytest.mark.parametrize("topic", sorted(load_topics()))
def test_only_a_topics_producers_write_it_and_only_its_consumers_read_it(topic: str) -> None:
    spec = load_topics()[topic]
    assert _allowed(topic, "Write") == _components(spec.producers), topic
    assert _allowed(topic, "Read") == _components(spec.consumers), topic


def test_the_powers_the_issue_names() -> None:
    assert _allowed("audit.events.v1", "Write") == {"enricher"}
    assert _allowed("audit.org-switch.v1", "Write") == {"query_api"}
    assert _allowed("audit.raw.v1", "Write") == {
        "ingest",
        "query_api",
        "sink",
        "archive",
        "sealer",
        "auditpipe.client",
    }
    # nobody holds cluster-wide powers or wildcards
    for p, e in K.table().items():
        for a in e["acls"]:
            assert a["type"] in ("topic", "group"), (p, a)
            assert a["name"] not in ("*", "") and "All" not in a["ops"], (p, a)


def test_every_acl_names_a_resource_auditpipe_uses() -> None:
    s = Settings()
    topics = set(load_topics()) | {s.enricher.state_topic}
    prefixes = {f"{s.enricher.consumer_group}-", "audit.deadletter.v1.forwarder."}
    groups = {s.enricher.consumer_group, s.sink.consumer_group}
    for p, e in K.table().items():
        for a in e["acls"]:
            pattern = a.get("pattern", "literal")
            if a["type"] == "topic":
                assert (a["name"] in topics) if pattern == "literal" else (a["name"] in prefixes), (p, a)
            else:
                assert (
                    (a["name"] in groups) if pattern == "literal" else a["name"] == "auditpipe-forwarder-"
                ), (p, a)


def test_forwarder_groups_and_dead_letters_match_the_prefixes(tmp_path) -> None:  # noqa: ANN001
    """The forwarder's default group and dead-letter topic per destination fall under its prefix ACLs."""
    from services.siem_forwarder.config import load_config

    cfg = k8s_by_kind("ConfigMap")["auditpipe-forwarder-config"]["data"]["forwarder.yaml"]
    (tmp_path / "forwarder.yaml").write_text(cfg)
    dests = load_config(tmp_path / "forwarder.yaml").destinations
    assert dests
    for d in dests:
        assert d.group().startswith("auditpipe-forwarder-") and d.dlq_topic().startswith(
            "audit.deadletter.v1.forwarder."
        ), d.name


# ------------------------------------------------------------------------------------ compose
def _broker() -> dict[str, str]:
    return {k: str(v) for k, v in compose()["services"]["kafka"]["environment"].items()}


def test_compose_broker_has_no_plaintext_and_denies_by_default() -> None:
    env = _broker()
    protocols = dict(x.split(":") for x in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = {x.split("://")[0] for x in env["KAFKA_LISTENERS"].split(",")}
    assert listeners == set(protocols)
    assert set(protocols.values()) <= {"SSL", "SASL_SSL"}, protocols
    for name, proto in protocols.items():
        if proto == "SSL":  # certificate listeners: a client certificate is required
            assert env[f"KAFKA_LISTENER_NAME_{name}_SSL_CLIENT_AUTH"] == "required", name
        else:
            assert "ScramLoginModule" in env[f"KAFKA_LISTENER_NAME_{name}_SCRAM___SHA___512_SASL_JAAS_CONFIG"]
    assert protocols[env["KAFKA_INTER_BROKER_LISTENER_NAME"]] == "SSL"
    assert protocols[env["KAFKA_CONTROLLER_LISTENER_NAMES"]] == "SSL"
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert set(env["KAFKA_SUPER_USERS"].split(";")) == {"User:kafka", "User:auditpipe-admin"}
    assert env["KAFKA_SSL_KEYSTORE_TYPE"] == env["KAFKA_SSL_TRUSTSTORE_TYPE"] == "PEM"
    # the certificate subjects make-certs.sh issues map to exactly those super users
    script = (K.DEPLOY / "kafka" / "make-certs.sh").read_text()
    assert 'issue kafka "/CN=kafka"' in script and 'issue admin "/CN=auditpipe-admin"' in script
    assert env["KAFKA_SSL_PRINCIPAL_MAPPING_RULES"].startswith("RULE:^CN=([^,]+)$$/$$1/")


def test_compose_services_each_use_their_own_scram_user() -> None:
    svcs = compose()["services"]
    for svc, principal in K.PRINCIPAL_OF.items():
        if svc == "archive":
            continue  # runs inside the sink in compose
        env = svcs[svc]["environment"]
        assert env["AUDITPIPE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", svc
        assert env["AUDITPIPE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", svc
        assert env["AUDITPIPE_KAFKA_SASL_USERNAME"] == principal, svc
        assert env["AUDITPIPE_KAFKA_SASL_PASSWORD"].startswith("${" + K.password_var(principal) + ":?"), svc
        mounts = {v.split(":")[1] for v in svcs[svc]["volumes"]}
        assert env["AUDITPIPE_KAFKA_SSL_CAFILE"] in mounts, svc
    job = svcs["topics"]["environment"]
    for principal in K.table():
        assert job[K.password_var(principal)].startswith("${" + K.password_var(principal) + ":?")
    example = (K.COMPOSE_DIR / ".env.example").read_text()
    for principal in K.table():
        assert f"{K.password_var(principal)}=CHANGE_ME" in example, principal


# ------------------------------------------------------------------------------------ Kubernetes
def test_k8s_workloads_each_use_their_own_kafka_user() -> None:
    cm = k8s_by_kind("ConfigMap")["auditpipe-settings"]["data"]
    assert cm["AUDITPIPE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    workloads = {**k8s_by_kind("Deployment"), **k8s_by_kind("CronJob")}
    for svc, principal in K.PRINCIPAL_OF.items():
        doc = workloads[f"auditpipe-{svc}"]
        spec = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"] if doc["kind"] == "CronJob" else (
            doc["spec"]["template"]["spec"]
        )  # fmt: skip
        (c,) = spec["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert env["AUDITPIPE_KAFKA_SASL_USERNAME"]["value"] == principal
        assert env["AUDITPIPE_KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
        ref = env["AUDITPIPE_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "auditpipe-kafka-users", "key": principal}
        mount = next(m for m in c["volumeMounts"] if m["name"] == "kafka-ca")
        assert cm["AUDITPIPE_KAFKA_SSL_CAFILE"] == f"{mount['mountPath']}/ca.crt"
        vol = next(v for v in spec["volumes"] if v["name"] == "kafka-ca")
        assert vol["secret"]["secretName"] == "auditpipe-kafka-ca"
    secrets = {d["metadata"]["name"]: d for d in load_yaml_all(K8S / "secret.example.yaml")}
    assert set(K.PRINCIPAL_OF.values()) <= set(secrets["auditpipe-kafka-users"]["stringData"])


def test_strimzi_cluster_has_only_tls_scram_and_simple_authorization() -> None:
    (kafka,) = [d for d in load_yaml_all(K8S / "extras" / "strimzi-kafka.yaml") if d["kind"] == "Kafka"]
    spec = kafka["spec"]["kafka"]
    for lis in spec["listeners"]:
        assert lis["tls"] is True and lis["authentication"]["type"] == "scram-sha-512", lis["name"]
    assert spec["authorization"]["type"] == "simple"
    assert spec["config"]["auto.create.topics.enable"] is False
    users = {d["metadata"]["name"] for d in load_yaml_all(K.USERS)}
    assert users == set(K.table())
