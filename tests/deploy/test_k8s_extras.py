"""deploy/k8s/extras: the optional operator resources (Strimzi Kafka, Altinity ClickHouse) agree with the
settings ConfigMap, the topic contract and the consumer groups from settings."""

from __future__ import annotations

from schemas.topics import load_topics
from services.common.settings import Settings
from tests.deploy.helpers import K8S, k8s_by_kind, load_yaml_all

EXTRAS = K8S / "extras"


def _settings_env() -> dict[str, str]:
    return k8s_by_kind("ConfigMap")["auditpipe-settings"]["data"]


def _strimzi() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for name in ("strimzi-kafka.yaml", "strimzi-topics.yaml", "strimzi-users.yaml"):
        for d in load_yaml_all(EXTRAS / name):
            assert d["apiVersion"].startswith("kafka.strimzi.io/"), d["kind"]
            out.setdefault(d["kind"], []).append(d)
    return out


def test_configmap_points_at_the_strimzi_bootstrap_service() -> None:
    res = _strimzi()
    (kafka,) = res["Kafka"]
    name, ns = kafka["metadata"]["name"], kafka["metadata"]["namespace"]
    (tls,) = kafka["spec"]["kafka"]["listeners"]
    assert tls["tls"] and tls["authentication"]["type"] == "scram-sha-512"
    assert _settings_env()["AUDITPIPE_KAFKA_BOOTSTRAP"] == f"{name}-kafka-bootstrap.{ns}.svc:{tls['port']}"
    for kind in ("KafkaNodePool", "KafkaTopic", "KafkaUser"):
        for d in res[kind]:
            assert d["metadata"]["labels"]["strimzi.io/cluster"] == name, d["metadata"]["name"]
            assert d["metadata"]["namespace"] == ns
    assert kafka["spec"]["kafka"]["config"]["min.insync.replicas"] == 2
    assert kafka["spec"]["kafkaExporter"]["groupRegex"] == "auditpipe-.*"


def test_kafka_user_acls_cover_every_topic_and_group_auditpipe_uses() -> None:
    """Together the users may do what auditpipe does (who may do what: tests/deploy/test_kafka_security)."""
    acls = [a for u in _strimzi()["KafkaUser"] for a in u["spec"]["authorization"]["acls"]]

    def allowed(kind: str, name: str, op: str) -> bool:
        for a in acls:
            r = a["resource"]
            if r["type"] != kind or op not in a["operations"]:
                continue
            if r.get("patternType") == "prefix" and name.startswith(r["name"]):
                return True
            if r.get("patternType", "literal") == "literal" and r["name"] in (name, "*"):
                return True
        return False

    s = Settings()
    for topic in [*load_topics(), s.enricher.state_topic, "audit.deadletter.v1.forwarder.splunk"]:
        assert allowed("topic", topic, "Write"), topic  # Write implies Describe
    for topic in [t for t in load_topics() if t != "audit.deadletter.v1"] + [s.enricher.state_topic]:
        assert allowed("topic", topic, "Read"), topic
    for group in (s.enricher.consumer_group, s.sink.consumer_group, "auditpipe-forwarder-splunk"):
        assert allowed("group", group, "Read"), group
    # faust's changelog topics are named after the enricher's group
    assert allowed("topic", f"{s.enricher.consumer_group}-suppressed_daily-changelog", "Write")


def test_configmap_points_at_the_clickhouse_operator_service() -> None:
    docs = {d["kind"]: d for d in load_yaml_all(EXTRAS / "clickhouse-installation.yaml")}
    chi = docs["ClickHouseInstallation"]
    name, ns = chi["metadata"]["name"], chi["metadata"]["namespace"]
    assert _settings_env()["AUDITPIPE_CLICKHOUSE_URL"] == f"http://clickhouse-{name}.{ns}.svc:8123"
    users = chi["spec"]["configuration"]["users"]
    assert f"{_settings_env()['AUDITPIPE_CLICKHOUSE_USER']}/k8s_secret_password" in users
    (cluster,) = chi["spec"]["configuration"]["clusters"]
    assert cluster["name"] == "auditpipe", "the cluster name the DDL in docs/operations.md uses"
    assert cluster["layout"]["replicasCount"] >= 2
    keeper = docs["ClickHouseKeeperInstallation"]
    (node,) = chi["spec"]["configuration"]["zookeeper"]["nodes"]
    assert node["host"] == f"keeper-{keeper['metadata']['name']}.{ns}.svc"


def test_network_policies_select_real_pods_and_named_ports() -> None:
    deps = k8s_by_kind("Deployment")
    pods = {n: d["spec"]["template"] for n, d in deps.items()}
    port_names = {p["name"] for t in pods.values() for c in t["spec"]["containers"] for p in c["ports"]}
    policies = load_yaml_all(EXTRAS / "networkpolicy.yaml")
    assert policies[0]["spec"]["podSelector"] == {} and policies[0]["spec"]["policyTypes"] == ["Ingress"]
    assert "ingress" not in policies[0]["spec"], "the first policy denies all ingress"
    for pol in policies[1:]:
        sel = pol["spec"]["podSelector"]
        labels = [t["metadata"]["labels"] for t in pods.values()]
        if "matchLabels" in sel:
            matched = [lab for lab in labels if sel["matchLabels"].items() <= lab.items()]
        else:
            (expr,) = sel["matchExpressions"]
            matched = [lab for lab in labels if lab.get(expr["key"]) in expr["values"]]
        assert matched, pol["metadata"]["name"]
        for rule in pol["spec"]["ingress"]:
            for p in rule["ports"]:
                assert p["port"] in port_names, p
