"""deploy/prometheus and deploy/grafana: every service is scraped, and the alert rules and the dashboard
use only metric names (and labels) the services really register."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from services.common.settings import Settings
from tests.deploy.helpers import (
    DEPLOY,
    K8S,
    SERVICES,
    compose,
    k8s_by_kind,
    load_yaml,
    metrics,
    promql_metrics,
)

PROM = DEPLOY / "prometheus"
DASH = DEPLOY / "grafana" / "dashboards" / "auditpipe.json"
# Labels Prometheus adds to every series, or that histogram_quantile needs.
TARGET_LABELS = {"job", "instance", "le", "pod", "namespace"}


def _alert_rules() -> list[dict]:
    return [r for g in load_yaml(PROM / "alerts.yml")["groups"] for r in g["rules"]]


def _dashboard_exprs() -> list[str]:
    d = json.loads(DASH.read_text())
    return [t["expr"] for p in d["panels"] for t in p.get("targets", [])]


def _check_expr(expr: str) -> set[str]:
    known = metrics()
    used = promql_metrics(expr)
    assert used, f"no metric in {expr!r}"
    unknown = {m for m in used if m != "up" and m not in known}
    assert not unknown, f"{sorted(unknown)} not registered by any services/*/metrics.py ({expr!r})"
    assert expr.count("(") == expr.count(")"), expr
    # Labels used for grouping or matching belong to one of the metrics in the expression.
    allowed = set(TARGET_LABELS)
    for m in used - {"up"}:
        allowed |= known[m]
    for group in re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)", expr):
        for label in filter(None, (x.strip() for x in group.split(","))):
            assert label in allowed, f"label {label} not on {sorted(used)} ({expr!r})"
    for label in re.findall(r"[{,]\s*([a-z_]+)\s*(?:=~|!=|!~|=)", expr):
        assert label in allowed, f"label {label} not on {sorted(used)} ({expr!r})"
    return used


def test_metric_collection_is_not_empty() -> None:
    known = metrics()
    for name in ("auditpipe_consumer_lag_messages", "auditpipe_ingest_requests_total"):
        assert name in known
    assert {"service", "group", "topic", "partition"} == known["auditpipe_consumer_lag_messages"]


def test_compose_prometheus_scrapes_every_service_at_its_settings_port() -> None:
    cfg = load_yaml(PROM / "prometheus.yml")
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    s = Settings()
    for name, (_cmd, section, _host, port_field) in SERVICES.items():
        job = jobs[f"auditpipe-{name}"]
        (sd,) = job["dns_sd_configs"]
        assert sd["names"] == [name], "the compose service name"
        assert sd["port"] == getattr(getattr(s, section), port_field)
        assert job.get("metrics_path", "/metrics") == "/metrics"
    mounts = compose()["services"]["prometheus"]["volumes"]
    rule_files = cfg["rule_files"]
    for rf in rule_files:
        assert any(v.endswith(f":{rf}:ro") for v in mounts), rf


def test_k8s_prometheus_config_names_jobs_after_components() -> None:
    cfg = load_yaml(PROM / "prometheus-k8s.yml")
    (job,) = cfg["scrape_configs"]
    relabel = {r.get("target_label"): r for r in job["relabel_configs"] if r.get("target_label")}
    assert relabel["job"]["replacement"] == "auditpipe-$1"
    comps = {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        for d in k8s_by_kind("Deployment").values()
    }
    assert comps == set(SERVICES)
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [
        load_yaml(K8S / "kustomization.yaml")["namespace"]
    ]


def test_alert_rules_are_well_formed_and_use_real_metrics() -> None:
    rules = _alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    used: set[str] = set()
    for r in rules:
        assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
        assert r["annotations"]["summary"], r["alert"]
        if "for" in r:
            assert re.fullmatch(r"\d+[smh]", r["for"])
        used |= _check_expr(r["expr"])
    # The cases the operators asked for.
    required = {
        "AuditpipeServiceDown": "up",
        "AuditpipeConsumerLagGrowing": "auditpipe_consumer_lag_messages",
        "AuditpipeDeadLettersIncreasing": "auditpipe_sink_dead_lettered_total",
        "AuditpipeSinkInsertFailing": "auditpipe_sink_insert_retries_total",
        "AuditpipeDestinationLastSuccessTooOld": "auditpipe_forwarder_last_success_timestamp_seconds",
        "AuditpipeSinkConflicts": "auditpipe_sink_conflicts_total",
    }
    by_name = {r["alert"]: r for r in rules}
    for alert, metric in required.items():
        assert metric in promql_metrics(by_name[alert]["expr"]), alert
    assert "auditpipe_enricher_dead_letters_total" in used
    assert "auditpipe_forwarder_dead_lettered_events_total" in used


def test_dashboard_uses_real_metrics_and_covers_every_stage() -> None:
    exprs = _dashboard_exprs()
    used: set[str] = set()
    for e in exprs:
        used |= _check_expr(e)
    for must in (
        "auditpipe_ingest_events_accepted_total",
        "auditpipe_enricher_events_total",
        "auditpipe_sink_rows_inserted_total",
        "auditpipe_consumer_lag_messages",
        "auditpipe_sink_dead_lettered_total",
        "auditpipe_enricher_dead_letters_total",
        "auditpipe_sink_insert_duration_seconds_bucket",
        "auditpipe_forwarder_sent_events_total",
        "auditpipe_forwarder_retried_events_total",
        "auditpipe_forwarder_dead_lettered_events_total",
        "auditpipe_forwarder_last_success_timestamp_seconds",
    ):
        assert must in used, must


def test_dashboard_structure_and_provisioning() -> None:
    d = json.loads(DASH.read_text())
    assert d["uid"] and d["title"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}"
    (var,) = [v for v in d["templating"]["list"] if v["name"] == "datasource"]
    ds = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    assert var["current"]["value"] == ds["uid"]
    assert ds["url"] == "http://prometheus:9090"
    prov = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "auditpipe.yml")
    path = prov["providers"][0]["options"]["path"]
    assert f"../grafana/dashboards:{path}:ro" in compose()["services"]["grafana"]["volumes"]


def test_dashboard_json_is_what_the_generator_writes(tmp_path) -> None:
    out = tmp_path / "d.json"
    subprocess.run(
        [sys.executable, str(DEPLOY / "grafana" / "generate_dashboard.py"), str(out)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    assert out.read_text() == DASH.read_text(), "run python deploy/grafana/generate_dashboard.py"


@pytest.mark.parametrize(
    "expr",
    [
        "rate(auditpipe_sink_rows_insertd_total[5m])",
        "sum by (destination) (auditpipe_sink_paused)",
        'auditpipe_consumer_lag_messages{topik="x"}',
    ],
)
def test_checker_catches_wrong_names_and_labels(expr: str) -> None:
    with pytest.raises(AssertionError):
        _check_expr(expr)


def test_every_registered_metric_follows_the_naming_convention() -> None:
    """auditpipe_<service>_<what>_<unit>: one prefix per service, histograms carry their unit."""
    from prometheus_client import Histogram

    from services.common.metrics import REGISTRY

    metrics()  # imports every module that declares metrics
    services = "ingest|enricher|sink|forwarder|query_api|integrity"
    collectors = {id(c): c for c in REGISTRY._names_to_collectors.values()}.values()  # noqa: SLF001
    assert len(collectors) > 20
    for c in collectors:
        name = c._name  # noqa: SLF001
        assert re.fullmatch(rf"auditpipe_(consumer_lag_messages|({services})_[a-z0-9_]+)", name), name
        if isinstance(c, Histogram):
            assert name.endswith(("_seconds", "_bytes")), f"{name}: histogram without a unit"


def test_operations_doc_lists_exactly_the_registered_metrics() -> None:
    """The metrics table in docs/operations.md is complete and names no metric that does not exist."""
    from prometheus_client import Counter

    from services.common.metrics import REGISTRY
    from tests.deploy.helpers import ROOT

    metrics()
    documented = {}
    for line in (ROOT / "docs" / "operations.md").read_text().splitlines():
        m = re.match(r"^\| `(auditpipe_[a-z0-9_]+)` \|\s*(\w+)\s*\|([^|]*)\|", line)
        if m:
            documented[m.group(1)] = (m.group(2), {x.strip() for x in m.group(3).split(",") if x.strip()})
    registered = {}
    for c in {id(c): c for c in REGISTRY._names_to_collectors.values()}.values():  # noqa: SLF001
        name = c._name + ("_total" if isinstance(c, Counter) else "")  # noqa: SLF001
        registered[name] = (c._type, set(c._labelnames))  # noqa: SLF001
    assert set(documented) == set(registered), (
        f"undocumented: {sorted(set(registered) - set(documented))}; "
        f"gone: {sorted(set(documented) - set(registered))}"
    )
    for name, (kind, labels) in registered.items():
        assert documented[name] == (kind, labels), name
